"""Near-duplicate texts: MinHash signatures, banded LSH candidates, exact Jaccard, connected groups.

:func:`near_duplicates` finds rows whose (already cleaned) texts share most of
their character shingles and keeps one row per group:

1. Each text is lowercased and its whitespace collapsed; its shingles are the
   distinct substrings of ``shingle`` characters (the whole text when it is
   shorter), built with Spark SQL built-ins and kept as 64-bit hashes, so the
   Jaccard similarities below are exact up to a 64-bit hash collision.
   Rows with the same normalised text are folded into one *node* (the row
   with the smallest id) before any hashing, so exact copies never multiply
   candidate pairs.
2. ``HashingTF(binary=True)`` and MLlib's ``MinHashLSH`` give every node
   ``num_bands * rows_per_band`` min-hashes. ``approxSimilarityJoin`` would
   OR single hashes, which floods short texts with candidates; here the
   hashes are cut into ``num_bands`` bands of ``rows_per_band``, two nodes
   are candidates when all hashes of at least one band agree (probability
   ``1 - (1 - J**r)**b`` for Jaccard ``J``), and the self-join runs on
   (band, band key).
3. Every distinct candidate pair is verified with the exact Jaccard of the two
   shingle sets (``array_intersect``/``array_union`` sizes); pairs at or above
   ``threshold`` are edges.
4. Groups are the connected components of the edges (min-label propagation
   with pointer jumping, lineage cut every round); the representative of a
   group is its smallest id and is kept, every other row is a duplicate.

Every input row ends in exactly one of ``kept`` and ``dups``. Rows whose text
is null or empty after normalisation are never near-duplicates and are kept.
Ids are compared as their Spark type (strings lexically).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

__all__ = ["NearDupResult", "candidate_probability", "choose_bands", "near_duplicates", "normalize", "shingle_hashes"]

log = logging.getLogger(__name__)

RULE = "near_duplicate"


def normalize(col: Column) -> Column:
    """Lowercase and collapse every run of whitespace to one space, trimmed."""
    return F.trim(F.regexp_replace(F.lower(col), r"[\s\p{Z}]+", " "))


def shingle_hashes(col: Column, k: int = 5) -> Column:
    """64-bit hashes of the distinct character ``k``-shingles of ``col`` as written (normalise first).

    A text shorter than ``k`` characters is one shingle, itself; an empty or
    null text gives an empty array. Each shingle is hashed from ``k``
    shifted views of the character array, so the work is linear in the text
    length (a ``substring`` per position would rescan the UTF-8 bytes from
    the start every time).
    """
    chars = F.split(col, "")
    n = F.coalesce(F.char_length(col), F.lit(0))
    m = n - k + 1
    windows = F.arrays_zip(*[F.slice(chars, j + 1, F.greatest(m, F.lit(1))) for j in range(k)])
    return (
        F.when(n == 0, F.array().cast("array<bigint>"))
        .when(n < k, F.array(F.xxhash64(col)))
        .otherwise(F.array_distinct(F.transform(windows, lambda w: F.xxhash64(w))))
    )


def candidate_probability(jaccard: float, num_bands: int, rows_per_band: int) -> float:
    """Probability that two texts of this Jaccard similarity share at least one band."""
    return 1.0 - (1.0 - jaccard**rows_per_band) ** num_bands


def choose_bands(threshold: float, *, recall: float = 0.95, max_hashes: int = 64) -> tuple[int, int]:
    """``(num_bands, rows_per_band)`` for a similarity ``threshold``.

    Among the settings with at most ``max_hashes`` min-hashes that make a pair
    at exactly ``threshold`` a candidate with probability ``recall`` or more,
    the one with the most rows per band: the fewest candidates below the
    threshold, so the least verification work. Pairs above the threshold are
    found with higher probability (0.8 -> 0.95, 0.9 -> 0.999 with the
    defaults for 0.8). The budget is small because computing min-hashes is
    the costly step (MLlib hashes every shingle once per hash function),
    while verifying a candidate pair is cheap.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"near_duplicates: threshold must be in (0, 1], got {threshold!r}")
    best = (max_hashes, 1)
    for r in range(1, max_hashes + 1):
        p = threshold**r
        if p <= 0.0:
            break
        b = 1
        while candidate_probability(threshold, b, r) < recall and b * r <= max_hashes:
            b += 1
        if b * r > max_hashes:
            break
        best = (b, r)
    return best


@dataclass
class NearDupResult:
    """The rows kept, the near-duplicates removed, the verified pairs and the figures of the run.

    ``dups`` has the id column, ``kept_id`` (the group's representative, its
    smallest id), ``group_id`` (the same id: it names the group), ``jaccard``
    (to the representative when that pair was verified, else to the matched
    neighbour), ``matched_id`` (that row) and ``rule``. ``pairs`` holds the
    verified edges between distinct normalised texts (``id_a < id_b``,
    ``jaccard``). ``dups`` and ``pairs`` are materialised (lineage cut), so
    using them, or ``kept``, does not run the detection again.
    """

    kept: DataFrame
    dups: DataFrame
    pairs: DataFrame
    stats: dict[str, Any] = field(default_factory=dict)


def _check_input(df: DataFrame, id_col: str, text_col: str) -> None:
    fields = {f.name: f for f in df.schema.fields}
    for role, name in (("id_col", id_col), ("text_col", text_col)):
        if name not in fields:
            raise ValueError(f"near_duplicates: {role} {name!r} not found in columns {sorted(fields)}")
    if id_col == text_col:
        raise ValueError(f"near_duplicates: id_col and text_col are both {id_col!r}")
    if not isinstance(fields[text_col].dataType, StringType):
        raise TypeError(
            f"near_duplicates: text column {text_col!r} must be a string, got {fields[text_col].dataType.simpleString()}"
        )
    for name in ("kept_id", "group_id", "jaccard", "matched_id", "rule"):
        if name == id_col:
            raise ValueError(f"near_duplicates: id column may not be called {name!r} (an output column)")


def _cut(df: DataFrame) -> DataFrame:
    """Materialise ``df`` and drop its lineage (reliable checkpoint when a checkpoint dir is set)."""
    sc = df.sparkSession.sparkContext
    return df.checkpoint(eager=True) if sc.getCheckpointDir() else df.localCheckpoint(eager=True)


def _components(edges: DataFrame, max_iterations: int) -> tuple[DataFrame, int, bool]:
    """Smallest node id of each node's connected component: ``(node, comp)``, iterations, converged."""
    both = edges.select(F.col("a").alias("src"), F.col("b").alias("dst")).unionByName(
        edges.select(F.col("b").alias("src"), F.col("a").alias("dst"))
    )
    both = _cut(both)
    labels = _cut(
        both.groupBy("src").agg(F.least(F.min("dst"), F.col("src")).alias("comp")).withColumnRenamed("src", "node")
    )
    iterations, converged = 0, False
    while iterations < max_iterations:
        iterations += 1
        # every node takes the smallest label among its neighbours
        nb = (
            both.join(labels.withColumnRenamed("node", "dst").withColumnRenamed("comp", "nb_comp"), "dst")
            .groupBy("src")
            .agg(F.min("nb_comp").alias("nb_comp"))
        )
        step = labels.join(nb, labels["node"] == nb["src"]).select("node", F.least("comp", "nb_comp").alias("comp"))
        # pointer jumping: a node's label takes its label's label, halving chains each round
        hop = step.alias("s").join(step.alias("t"), F.col("s.comp") == F.col("t.node"), "left")
        jumped = _cut(
            hop.select(
                F.col("s.node").alias("node"),
                F.coalesce(F.least(F.col("s.comp"), F.col("t.comp")), F.col("s.comp")).alias("comp"),
            )
        )
        changed = (
            jumped.alias("n").join(labels.alias("o"), "node").where(F.col("n.comp") != F.col("o.comp")).limit(1).count()
        )
        labels.unpersist()
        labels = jumped
        if changed == 0:
            converged = True
            break
    both.unpersist()
    return labels, iterations, converged


def near_duplicates(
    df: DataFrame,
    *,
    id_col: str = "id",
    text_col: str = "text",
    threshold: float = 0.8,
    shingle: int = 5,
    num_bands: int | None = None,
    rows_per_band: int | None = None,
    seed: int = 42,
    num_features: int = 1 << 20,
    max_iterations: int = 30,
) -> NearDupResult:
    """Find near-duplicate texts and keep one row per group.

    Parameters
    ----------
    df : DataFrame
        Rows with a unique, non-null ``id_col`` and a string ``text_col``
        (cleaned text: markup, entities and control characters removed).
    threshold : float
        Smallest Jaccard similarity of two shingle sets that makes them
        near-duplicates, in (0, 1].
    shingle : int
        Characters per shingle.
    num_bands, rows_per_band : int, optional
        LSH banding; by default :func:`choose_bands` for ``threshold``.
    seed : int
        Seed of the min-hash functions (same seed, same candidates).
    num_features : int
        ``HashingTF`` dimension the shingle hashes are folded into.
    max_iterations : int
        Bound on connected-components rounds; if reached, a warning is logged
        and ``stats["converged"]`` is False (a large group may then be split,
        but every row is still in exactly one output).

    Returns
    -------
    NearDupResult
        ``kept`` (the input columns of every row not removed), ``dups``,
        ``pairs`` and ``stats``: ``rows``, ``texts`` (distinct non-empty
        normalised texts), ``candidate_pairs``, ``verified_pairs``,
        ``dup_rows``, ``groups`` (with two or more rows), ``iterations``,
        ``converged``, ``num_bands``, ``rows_per_band``.
    """
    from pyspark.ml.feature import HashingTF, MinHashLSH
    from pyspark.ml.functions import vector_to_array

    _check_input(df, id_col, text_col)
    if not isinstance(shingle, int) or shingle < 1:
        raise ValueError(f"near_duplicates: shingle must be a positive integer, got {shingle!r}")
    if (num_bands is None) != (rows_per_band is None):
        raise ValueError("near_duplicates: give both num_bands and rows_per_band, or neither")
    if num_bands is None:
        num_bands, rows_per_band = choose_bands(threshold)
    else:
        choose_bands(threshold)  # validates the threshold
        if num_bands < 1 or rows_per_band < 1:
            raise ValueError(
                f"near_duplicates: num_bands and rows_per_band must be at least 1, got {num_bands}, {rows_per_band}"
            )
    b, r = num_bands, rows_per_band
    cached: list[DataFrame] = []
    seconds: dict[str, float] = {}
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        seconds[name] = round(now - clock[0], 2)
        clock[0] = now

    base = df.select(F.col(id_col).alias("id"), normalize(F.col(text_col)).alias("norm")).persist()
    cached.append(base)
    problems = base.agg(
        F.count("*").alias("rows"),
        F.sum(F.col("id").isNull().cast("long")).alias("null_ids"),
        F.count_distinct("id").alias("ids"),
    ).first()
    if problems["null_ids"]:
        raise ValueError(f"near_duplicates: id column {id_col!r} has {problems['null_ids']} null values")
    if problems["ids"] != problems["rows"]:
        raise ValueError(
            f"near_duplicates: id column {id_col!r} is not unique ({problems['rows'] - problems['ids']} repeated ids)"
        )

    # one node per distinct normalised text: its smallest id
    with_node = (
        base.where(F.length("norm") > 0)
        .withColumn("node", F.min("id").over(Window.partitionBy("norm")))
        .select("id", "node", "norm")
    )
    with_node = with_node.persist()
    cached.append(with_node)
    nodes = with_node.where(F.col("id") == F.col("node")).select(
        "node", shingle_hashes(F.col("norm"), shingle).alias("sh")
    )
    nodes = nodes.persist()
    cached.append(nodes)
    n_texts = nodes.count()
    lap("shingles")

    tf = HashingTF(inputCol="sh", outputCol="features", numFeatures=num_features, binary=True)
    lsh = MinHashLSH(inputCol="features", outputCol="hashes", numHashTables=b * r, seed=seed)
    featured = tf.transform(nodes.select("node", "sh"))
    hashed = lsh.fit(featured).transform(featured)
    # the hashes become one array before the explode, so each row converts its vectors once, not once per band
    signatures = hashed.select("node", F.flatten(F.transform("hashes", lambda v: vector_to_array(v))).alias("hs"))
    bands = signatures.select("node", "hs", F.explode(F.sequence(F.lit(0), F.lit(b - 1))).alias("band")).select(
        "node", "band", F.xxhash64(F.slice("hs", F.col("band") * r + 1, r)).alias("key")
    )
    candidates = (
        bands.alias("x")
        .join(bands.alias("y"), ["band", "key"])
        .where(F.col("x.node") < F.col("y.node"))
        .select(F.col("x.node").alias("a"), F.col("y.node").alias("b"))
        .distinct()
    )
    candidates = candidates.persist()
    cached.append(candidates)
    n_candidates = candidates.count()
    lap("candidates")

    sa = nodes.select(F.col("node").alias("a"), F.col("sh").alias("sa"))
    sb = nodes.select(F.col("node").alias("b"), F.col("sh").alias("sb"))
    inter = F.size(F.array_intersect("sa", "sb"))
    union = F.size(F.array_union("sa", "sb"))
    pairs = (
        candidates.join(sa, "a")
        .join(sb, "b")
        .select("a", "b", (inter / union).alias("jaccard"))
        .where(F.col("jaccard") >= threshold)
    )
    pairs = _cut(pairs)
    n_pairs = pairs.count()
    lap("verify")

    comps, iterations, converged = _components(pairs.select("a", "b"), max_iterations)
    if not converged:
        log.warning(
            "near_duplicates: groups did not settle in %d rounds; raise max_iterations (rows stay accounted for)",
            max_iterations,
        )
    lap("groups")

    # the representative of a row: its node's component, or the node itself
    placed = with_node.join(comps, "node", "left").select("id", "node", F.coalesce("comp", "node").alias("kept_id"))
    edges = pairs.select(F.col("a").alias("node"), F.col("b").alias("other"), "jaccard").unionByName(
        pairs.select(F.col("b").alias("node"), F.col("a").alias("other"), "jaccard")
    )
    # for a node that is not the representative: the edge to the representative if verified, else its best edge
    best = (
        edges.join(comps, "node")
        .groupBy("node")
        .agg(F.max(F.struct((F.col("other") == F.col("comp")).alias("to_rep"), "jaccard", F.col("other"))).alias("m"))
        .select("node", F.col("m.jaccard").alias("edge_jaccard"), F.col("m.other").alias("edge_other"))
    )
    dups = (
        placed.where(F.col("id") != F.col("kept_id"))
        .join(best, "node", "left")
        .select(
            F.col("id").alias(id_col),
            "kept_id",
            F.col("kept_id").alias("group_id"),
            F.when(F.col("id") != F.col("node"), F.lit(1.0)).otherwise(F.col("edge_jaccard")).alias("jaccard"),
            F.when(F.col("id") != F.col("node"), F.col("node")).otherwise(F.col("edge_other")).alias("matched_id"),
            F.lit(RULE).alias("rule"),
        )
    )
    dups = _cut(dups)
    totals = dups.agg(F.count("*").alias("rows"), F.count_distinct("kept_id").alias("groups")).first()
    n_dups, groups = totals["rows"], totals["groups"]
    lap("assign")
    for frame in cached:
        frame.unpersist()
    kept = df.join(dups.select(id_col), id_col, "left_anti")
    stats = {
        "rows": problems["rows"],
        "texts": n_texts,
        "candidate_pairs": n_candidates,
        "verified_pairs": n_pairs,
        "dup_rows": n_dups,
        "groups": groups,
        "iterations": iterations,
        "converged": converged,
        "num_bands": b,
        "rows_per_band": r,
        "seconds": seconds,
    }
    log.info("near_duplicates: %s", stats)
    pairs_out = pairs.select(F.col("a").alias("id_a"), F.col("b").alias("id_b"), "jaccard")
    return NearDupResult(kept=kept, dups=dups, pairs=pairs_out, stats=stats)
