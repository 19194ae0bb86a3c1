"""Near-duplicate texts: MinHash signatures, banded LSH candidates, exact Jaccard, connected groups.

:func:`near_duplicates` finds rows whose (already cleaned) texts share most of
their character shingles and keeps one row per group:

1. Each text is lowercased and its whitespace collapsed; its shingles are the
   distinct substrings of ``shingle`` characters (the whole text when it is
   shorter). Rows with the same normalised text are folded into one *node*
   (the row with the smallest id) before any hashing, so exact copies never
   multiply candidate pairs.
2. Every node gets ``num_bands * rows_per_band`` min-hashes (MinHash, Broder
   1997): with ``signatures="numpy"`` (the default) a Python worker takes an
   Arrow batch of texts at a time, hashes all their shingles with numpy
   (:func:`char_shingle_hashes`) and takes, for each function
   ``((a * x + b) mod 2**64) >> 32`` of a universal family seeded by
   ``seed``, the minimum over each text's shingles for the whole batch at
   once (:func:`minhash_signatures`); ``signatures="mllib"`` uses
   ``HashingTF(binary=True)`` and MLlib's ``MinHashLSH`` on the Spark
   shingle hashes instead (about 20 times slower; kept as the baseline of
   ``dmine bench neardup``). The hashes are cut into ``num_bands`` bands of
   ``rows_per_band`` (banding, Leskovec, Rajaraman & Ullman, *Mining of
   Massive Datasets*, ch. 3); two nodes are candidates when all hashes of at
   least one band agree, which happens with probability
   ``1 - (1 - J**r)**b`` for Jaccard ``J`` (``approxSimilarityJoin`` would
   OR single hashes, which floods short texts with candidates), and the
   candidates come from a self-join on (band, band key).
3. Every distinct candidate pair is verified with the exact Jaccard of the two
   shingle sets; pairs at or above ``threshold`` are edges. With ``"numpy"``
   each pair's two texts and min-hash sketches (the low 16 bits of each
   min-hash) are joined to it; a Python worker drops the pairs whose sketches
   agree too rarely for a pair at the threshold (:func:`sketch_cutoff`: a
   pair at exactly the threshold is dropped with probability at most 1e-4),
   then hashes and compares the shingles of the rest for a whole Arrow batch
   of pairs at once (:func:`shingle_jaccard`: exact up to a 47-bit collision
   within one pair);
   with ``"mllib"`` the sets are Spark ``xxhash64`` arrays
   (:func:`shingle_hashes`) compared with ``array_intersect`` and
   ``array_union``. The min-hashes only choose which pairs are verified: a
   collision among them can cost a candidate, never add an edge.
4. Groups are the connected components of the edges: on the driver with
   SciPy's ``connected_components`` (:func:`component_minima`) up to two
   million edges, else in Spark (min-label propagation with pointer jumping,
   lineage cut every round); the representative of a group is its smallest
   id and is kept, every other row is a duplicate.

Every input row ends in exactly one of ``kept`` and ``dups``. Rows whose text
is null or empty after normalisation are never near-duplicates and are kept.
Ids are compared as their Spark type (strings lexically).

References
----------
A. Z. Broder, "On the resemblance and containment of documents",
Compression and Complexity of Sequences, 1997.
J. Leskovec, A. Rajaraman and J. D. Ullman, *Mining of Massive Datasets*,
chapter 3, "Finding Similar Items" (locality-sensitive hashing by banding).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, BinaryType, DoubleType, LongType, StringType, StructField, StructType

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "EMPTY_HASH",
    "NearDupResult",
    "band_keys",
    "candidate_probability",
    "char_shingle_hashes",
    "choose_bands",
    "minhash_parameters",
    "minhash_signatures",
    "near_duplicates",
    "normalize",
    "shingle_hashes",
    "shingle_jaccard",
    "sketch_cutoff",
    "component_minima",
]

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


EMPTY_HASH = (1 << 32) - 1
"""The min-hash of an empty set (a non-empty set reaches it with probability ``2**-32`` per function)."""

_ROWS_PER_SLICE = 1024  # texts shingled at once in a Python worker
_CHUNK = 1 << 18  # elements per slice of minhash_signatures
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_POLY = np.uint64(0x100000001B3)  # the FNV-1a 64-bit prime: the base of the rolling shingle hash


def _mix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, in place on a ``uint64`` array (a bijection that spreads every input bit)."""
    x ^= x >> np.uint64(30)
    x *= _MIX1
    x ^= x >> np.uint64(27)
    x *= _MIX2
    x ^= x >> np.uint64(31)
    return x


def char_shingle_hashes(texts: Sequence[str], k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of the character ``k``-shingles of each text, for a whole batch at once.

    The shingles are those of :func:`shingle_hashes` (every run of ``k``
    characters; the whole text when it is shorter; none for an empty text),
    but hashed in numpy with a polynomial rolling hash over the Unicode code
    points and the splitmix64 finaliser, so the hash values differ from
    Spark's ``xxhash64``. A shingle repeated in a text keeps its repeats
    (a minimum does not count them).

    Parameters
    ----------
    texts : sequence of str, length n
        The texts as written (normalise first); no ``None``.
    k : int
        Characters per shingle, at least 1.

    Returns
    -------
    hashes : numpy.ndarray of uint64, shape (m,)
        The shingle hashes of every text, text after text.
    offsets : numpy.ndarray of int64, shape (n + 1,)
        Text ``i`` owns ``hashes[offsets[i]:offsets[i + 1]]``.

    Raises
    ------
    ValueError
        If ``k`` is not a positive integer.
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"char_shingle_hashes: k must be a positive integer, got {k!r}")
    n = len(texts)
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=n)
    # each text is followed by k - 1 NUL characters, so a window never reads into the next text, and a
    # text shorter than k is one window: itself, padded
    pad = "\0" * (k - 1)
    joined = pad.join(texts) + pad
    padded = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths + (k - 1), out=starts[1:])
    span = max(len(padded) - k + 1, 0)
    h = np.zeros(span, dtype=np.uint64)
    for j in range(k):
        h *= _POLY
        h += padded[j : j + span]
    h += np.uint64(k)  # shingles of different lengths never share a polynomial by construction
    _mix64(h)
    windows = np.where(lengths > 0, np.maximum(lengths - k + 1, 1), 0)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(windows, out=offsets[1:])
    take = np.arange(int(offsets[-1]), dtype=np.int64) + np.repeat(starts[:-1] - offsets[:-1], windows)
    return h[take], offsets


_PAIR_BITS = 16  # pairs per slice of shingle_jaccard: 2**16; the pair index takes the top 16 bits of a key


def shingle_jaccard(texts_a: Sequence[str], texts_b: Sequence[str], k: int = 5) -> np.ndarray:
    """Exact Jaccard similarity of the character ``k``-shingle sets of each pair of texts, a batch at once.

    The shingles are those of :func:`char_shingle_hashes`. Every shingle of
    a slice of pairs becomes one 64-bit key: the pair's index (top 16 bits),
    47 bits of the shingle's hash, and its side (lowest bit, 0 for ``a``).
    One ``numpy.sort`` of all keys puts each pair's equal shingles side by
    side, ``a`` before ``b``: the distinct shingles of a pair are its runs
    of equal keys up to the side bit (``|A | B|``), and the runs holding
    both sides are ``|A & B|``. The similarity is exact up to a collision of
    two distinct shingles of one pair in 47 bits (probability about
    ``m**2 / 2**48`` for ``m`` shingles: about 1e-9 for a pair of
    250-character texts).

    Parameters
    ----------
    texts_a, texts_b : sequence of str, length n each
        The pairs' texts as written (normalise first); no ``None``.
    k : int
        Characters per shingle, at least 1.

    Returns
    -------
    numpy.ndarray of float64, shape (n,)
        ``|A & B| / |A | B|`` per pair, in [0, 1]; 0.0 when both texts are empty.

    Raises
    ------
    ValueError
        If the two sequences differ in length or ``k`` is not a positive integer.
    """
    n = len(texts_a)
    if len(texts_b) != n:
        raise ValueError(f"shingle_jaccard: {n} texts in texts_a but {len(texts_b)} in texts_b")
    out = np.zeros(n, dtype=np.float64)
    top = np.uint64(64 - _PAIR_BITS)
    middle = np.uint64(((1 << (64 - _PAIR_BITS)) - 1) & ~1)
    one = np.uint64(1)
    step = 1 << _PAIR_BITS
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        m = hi - lo
        ha, oa = char_shingle_hashes(texts_a[lo:hi], k)
        hb, ob = char_shingle_hashes(texts_b[lo:hi], k)
        if len(ha) + len(hb) == 0:
            continue
        pair = np.arange(m, dtype=np.uint64)
        ka = (np.repeat(pair, np.diff(oa)) << top) | (ha & middle)
        kb = (np.repeat(pair, np.diff(ob)) << top) | (hb & middle) | one
        keys = np.sort(np.concatenate([ka, kb]))
        owner = (keys >> top).view(np.int64)
        # neighbours that differ only in the side bit are one shingle in both sets (sorted: a, then b)
        step_bits = np.empty(len(keys), dtype=np.uint64)
        step_bits[0] = 2
        np.bitwise_xor(keys[1:], keys[:-1], out=step_bits[1:])
        union = np.bincount(owner[step_bits > one], minlength=m)
        inter = np.bincount(owner[step_bits == one], minlength=m)
        np.divide(inter, union, out=out[lo:hi], where=union > 0)
    return out


def minhash_parameters(num_hashes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``(a, b)`` of the min-hash functions ``h_i(x) = ((a_i * x + b_i) mod 2**64) >> 32``.

    Parameters
    ----------
    num_hashes : int
        Functions wanted, at least 1.
    seed : int
        Same seed, same functions.

    Returns
    -------
    a, b : numpy.ndarray of uint64, shape (num_hashes,)
        Random 64-bit multipliers (odd) and increments.

    Raises
    ------
    ValueError
        If ``num_hashes < 1``.
    """
    if num_hashes < 1:
        raise ValueError(f"minhash_parameters: num_hashes must be at least 1, got {num_hashes!r}")
    rng = np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, 0x4D696E48])
    a = rng.integers(0, 1 << 64, num_hashes, dtype=np.uint64, endpoint=False) | np.uint64(1)
    b = rng.integers(0, 1 << 64, num_hashes, dtype=np.uint64, endpoint=False)
    return a, b


def minhash_signatures(hashes: np.ndarray, offsets: np.ndarray, num_hashes: int, seed: int) -> np.ndarray:
    """MinHash signatures (Broder 1997) of a batch of hashed sets, all sets at once.

    Each 64-bit element hash is folded to 32 bits, ``x = (hash ^ (hash >> 32)) mod 2**32``;
    function ``i`` maps it to ``((a_i * x + b_i) mod 2**64) >> 32``, the
    multiply-add-shift family of Dietzfelbinger (1996), strongly universal
    on 32-bit keys (``a_i``, ``b_i`` from :func:`minhash_parameters`). The
    set's min-hash ``i`` is the smallest value over its elements, taken for
    the whole batch at once with ``numpy.minimum.reduceat`` over the
    flattened hashes. Two sets agree on one min-hash with probability close
    to their Jaccard similarity. The family needs two array operations per
    element and function where ``(a * x + b) mod p`` with a Mersenne prime
    needs six; it measured about twice as fast.

    Parameters
    ----------
    hashes : numpy.ndarray of uint64, shape (m,)
        The element hashes of every set, set after set (repeats allowed).
    offsets : numpy.ndarray of int, shape (n + 1,)
        Set ``i`` owns ``hashes[offsets[i]:offsets[i + 1]]``; non-decreasing,
        ``offsets[0] == 0`` and ``offsets[-1] == m``.
    num_hashes : int
        Min-hashes per set (``num_bands * rows_per_band``).
    seed : int
        Seed of the functions: the same seed gives the same signatures.

    Returns
    -------
    numpy.ndarray of uint32, shape (n, num_hashes)
        The min-hashes; an empty set's row is all :data:`EMPTY_HASH`.

    Raises
    ------
    ValueError
        If ``offsets`` does not describe ``hashes``, or ``num_hashes < 1``.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    offsets = np.asarray(offsets, dtype=np.int64)
    if (
        offsets.ndim != 1
        or len(offsets) < 1
        or offsets[0] != 0
        or offsets[-1] != len(hashes)
        or np.any(np.diff(offsets) < 0)
    ):
        raise ValueError("minhash_signatures: offsets must rise from 0 to len(hashes)")
    a, b = minhash_parameters(num_hashes, seed)
    n = len(offsets) - 1
    out = np.full((n, num_hashes), EMPTY_HASH, dtype=np.uint32)
    # sets in slices of about _CHUNK elements, so the working arrays stay in the processor's cache
    first = 0
    while first < n:
        last = max(int(np.searchsorted(offsets, offsets[first] + _CHUNK, side="right")) - 1, first + 1)
        last = min(last, n)
        lo, hi = int(offsets[first]), int(offsets[last])
        part = offsets[first : last + 1] - lo
        filled = np.flatnonzero(part[1:] > part[:-1])
        if len(filled):
            out[first + filled] = _minhash_chunk(hashes[lo:hi], part[:-1][filled], a, b)
        first = last
    return out


def _minhash_chunk(hashes: np.ndarray, starts: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Min-hashes of the non-empty sets beginning at ``starts`` of ``hashes``: ``(len(starts), len(a))`` uint32."""
    s32 = np.uint64(32)
    x = (hashes ^ (hashes >> s32)) & np.uint64(0xFFFFFFFF)
    mins = np.empty((len(starts), len(a)), dtype=np.uint32)
    v = np.empty_like(x)
    for i in range(len(a)):
        np.multiply(x, a[i], out=v)  # wraps modulo 2**64
        v += b[i]
        # the smallest 64-bit value has the smallest top half: min, then shift
        mins[:, i] = np.minimum.reduceat(v, starts) >> s32
    return mins


def band_keys(signatures: np.ndarray, num_bands: int, rows_per_band: int) -> np.ndarray:
    """One 64-bit key per LSH band: a hash of the band's ``rows_per_band`` min-hashes.

    Parameters
    ----------
    signatures : numpy.ndarray of uint32, shape (n, num_bands * rows_per_band)
        From :func:`minhash_signatures`.
    num_bands, rows_per_band : int
        The banding; band ``j`` holds min-hashes ``j * rows_per_band`` up to
        ``(j + 1) * rows_per_band - 1``.

    Returns
    -------
    numpy.ndarray of int64, shape (n, num_bands)
        Equal keys in one band for equal min-hashes there (and, up to a
        64-bit collision, only for them). The band's index is hashed into
        its keys, so keys of different bands differ (up to a collision) and
        one key column can stand for (band, key).

    Raises
    ------
    ValueError
        If the signatures do not have ``num_bands * rows_per_band`` columns.
    """
    n, width = signatures.shape
    if width != num_bands * rows_per_band:
        raise ValueError(f"band_keys: signatures have {width} min-hashes, not {num_bands} bands x {rows_per_band} rows")
    cube = signatures.reshape(n, num_bands, rows_per_band).astype(np.uint64)
    key = np.empty((n, num_bands), dtype=np.uint64)
    key[:] = (np.arange(num_bands, dtype=np.uint64) << np.uint64(32)) | np.uint64(rows_per_band)
    for j in range(rows_per_band):
        key *= _POLY
        key += cube[:, :, j]
        _mix64(key)
    return key.view(np.int64)


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
    defaults for 0.8). The budget is small because every shingle is hashed
    once per function, and more bands mean more rows in the self-join.
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


_LOCAL_EDGES = 2_000_000  # verified edges up to which the groups are found on the driver


def component_minima(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smallest node of each node's connected component, for an undirected edge list.

    The components come from ``scipy.sparse.csgraph.connected_components``
    over the edges as a sparse graph; nodes are ranked by their order
    (``numpy.unique``: numbers by value, strings by code point, which is
    Spark's order of UTF-8 strings).

    Parameters
    ----------
    a, b : numpy.ndarray, shape (m,)
        The edges' two ends (any orderable dtype, ``object`` for strings).

    Returns
    -------
    nodes, comps : numpy.ndarray, shape (n,)
        Every node that ends an edge, sorted, and its component's smallest node.

    Raises
    ------
    ValueError
        If ``a`` and ``b`` differ in length.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(a) != len(b):
        raise ValueError(f"component_minima: {len(a)} edge starts but {len(b)} edge ends")
    nodes, index = np.unique(np.concatenate([a, b]), return_inverse=True)
    n, m = len(nodes), len(a)
    if n == 0:
        return nodes, nodes.copy()
    graph = coo_matrix((np.ones(m, dtype=np.int8), (index[:m], index[m:])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    first = np.full(labels.max() + 1, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n))  # the nodes are sorted: the smallest index is the smallest node
    return nodes, nodes[first[labels]]


def _local_components(edges: DataFrame) -> DataFrame:
    """``(node, comp)`` of ``edges`` (``a``, ``b``) found on the driver (:func:`component_minima`)."""
    import pandas as pd

    frame = edges.select("a", "b").toPandas()
    nodes, comps = component_minima(frame["a"].to_numpy(), frame["b"].to_numpy())
    key = edges.schema["a"].dataType
    schema = StructType([StructField("node", key, False), StructField("comp", key, False)])
    return _cut(edges.sparkSession.createDataFrame(pd.DataFrame({"node": nodes, "comp": comps}), schema))


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


def sketch_cutoff(num_hashes: int, threshold: float, miss: float = 1e-4) -> int:
    """Fewest agreeing min-hashes a candidate pair needs before its exact Jaccard is computed.

    Two sets of Jaccard similarity ``J`` agree on each of ``num_hashes``
    independent min-hashes with probability ``J`` (Broder 1997), so the
    agreements of a pair at the threshold follow ``Binomial(num_hashes,
    threshold)``; the cutoff is the largest count that such a pair falls
    below with probability at most ``miss``. A pair above the threshold
    falls below it less often still.

    Parameters
    ----------
    num_hashes : int
        Min-hashes per signature, at least 1.
    threshold : float
        The Jaccard threshold, in (0, 1].
    miss : float
        Largest probability of dropping a pair at exactly the threshold.

    Returns
    -------
    int
        The cutoff, in ``[0, num_hashes]``.
    """
    below, cutoff = 0.0, 0
    for c in range(num_hashes + 1):
        p = math.comb(num_hashes, c) * threshold**c * (1.0 - threshold) ** (num_hashes - c)
        if below + p > miss:
            break
        below += p
        cutoff = c + 1
    return cutoff


def _arrow_band_keys(
    batches: Iterator[pa.RecordBatch], *, shingle: int, num_bands: int, rows_per_band: int, seed: int
) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body: ``(node, norm)`` in, ``(node, norm, keys, sketch)`` out.

    ``keys`` holds one band key per band; ``sketch`` the low 16 bits of every
    min-hash, ``2 * num_bands * rows_per_band`` bytes (a min is small, so its
    low bits are the random ones).
    """
    import pyarrow as pa

    width = num_bands * rows_per_band
    for batch in batches:
        n = batch.num_rows
        if n == 0:
            continue
        texts = batch.column(1).to_pylist()
        keys = np.empty((n, num_bands), dtype=np.int64)
        sketch = np.empty((n, width), dtype=np.uint16)
        for lo in range(0, n, _ROWS_PER_SLICE):  # small slices stay in the processor's cache
            hashes, offsets = char_shingle_hashes(texts[lo : lo + _ROWS_PER_SLICE], shingle)
            sig = minhash_signatures(hashes, offsets, width, seed)
            keys[lo : lo + _ROWS_PER_SLICE] = band_keys(sig, num_bands, rows_per_band)
            sketch[lo : lo + _ROWS_PER_SLICE] = sig  # the low 16 bits
        lists = pa.FixedSizeListArray.from_arrays(pa.array(keys.ravel()), num_bands).cast(pa.list_(pa.int64()))
        offsets32 = pa.py_buffer((np.arange(n + 1, dtype=np.int32) * (2 * width)).tobytes())
        sketches = pa.Array.from_buffers(pa.binary(), n, [None, offsets32, pa.py_buffer(sketch.tobytes())])
        yield pa.RecordBatch.from_arrays(
            [batch.column(0), batch.column(1), lists, sketches], names=["node", "norm", "keys", "sketch"]
        )


def _sketch_matrix(column: pa.Array, width: int) -> np.ndarray:
    """The ``(n, width)`` uint16 sketches of a binary Arrow column written by :func:`_arrow_band_keys`."""
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int32)[column.offset : column.offset + len(column) + 1]
    data = np.frombuffer(column.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data.view(np.uint16).reshape(len(column), width)


def _arrow_sketch_filter(batches: Iterator[pa.RecordBatch], *, width: int, cutoff: int) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body: ``(a, b, sa, sb)`` in, ``(a, b)`` out for the pairs whose sketches agree on at
    least ``cutoff`` min-hashes (:func:`sketch_cutoff`)."""
    import pyarrow as pa

    for batch in batches:
        if batch.num_rows == 0:
            continue
        agree = (_sketch_matrix(batch.column(2), width) == _sketch_matrix(batch.column(3), width)).sum(axis=1)
        likely = np.flatnonzero(agree >= cutoff)
        if len(likely):
            yield pa.RecordBatch.from_arrays(
                [batch.column(0).take(likely), batch.column(1).take(likely)], names=["a", "b"]
            )


def _arrow_verify(batches: Iterator[pa.RecordBatch], *, shingle: int, threshold: float) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body: ``(a, b, ta, tb)`` in, ``(a, b, jaccard)`` out for the pairs at ``threshold`` or above."""
    import pyarrow as pa

    for batch in batches:
        if batch.num_rows == 0:
            continue
        jaccard = shingle_jaccard(batch.column(2).to_pylist(), batch.column(3).to_pylist(), shingle)
        keep = pa.array(jaccard >= threshold)
        if not keep.true_count:
            continue
        yield pa.RecordBatch.from_arrays(
            [batch.column(0).filter(keep), batch.column(1).filter(keep), pa.array(jaccard).filter(keep)],
            names=["a", "b", "jaccard"],
        )


def _numpy_schema(nodes: DataFrame, *fields: StructField) -> StructType:
    return StructType([StructField("node", nodes.schema["node"].dataType, False), *fields])


def _numpy_bands(nodes: DataFrame, num_bands: int, rows_per_band: int, seed: int, shingle: int) -> DataFrame:
    """``(node, norm, keys, sketch)`` of ``nodes`` (``node``, ``norm``) from numpy min-hashes, in Arrow batches."""
    schema = _numpy_schema(
        nodes,
        StructField("norm", StringType(), False),
        StructField("keys", ArrayType(LongType(), False), False),
        StructField("sketch", BinaryType(), False),
    )
    body = functools.partial(
        _arrow_band_keys, shingle=shingle, num_bands=num_bands, rows_per_band=rows_per_band, seed=seed
    )
    return nodes.select("node", "norm").mapInArrow(body, schema)


def _numpy_verify(candidates: DataFrame, keyed: DataFrame, shingle: int, threshold: float, width: int) -> DataFrame:
    """``(a, b, jaccard)``: the ``candidates`` at ``threshold`` or above, exact Jaccard from the texts of ``keyed``.

    Two passes: the pairs meet their 2-byte-per-hash sketches first and only the
    pairs the sketch filter keeps meet their texts, so the texts of the pairs
    it drops are never shuffled.
    """
    key = keyed.schema["node"].dataType
    pair = [StructField("a", key, False), StructField("b", key, False)]
    sketch_a = keyed.select(F.col("node").alias("a"), F.col("sketch").alias("sa"))
    sketch_b = keyed.select(F.col("node").alias("b"), F.col("sketch").alias("sb"))
    with_sketches = candidates.join(sketch_a, "a").join(sketch_b, "b").select("a", "b", "sa", "sb")
    likely = with_sketches.mapInArrow(
        functools.partial(_arrow_sketch_filter, width=width, cutoff=sketch_cutoff(width, threshold)),
        StructType(pair),
    )
    text_a = keyed.select(F.col("node").alias("a"), F.col("norm").alias("ta"))
    text_b = keyed.select(F.col("node").alias("b"), F.col("norm").alias("tb"))
    with_texts = likely.join(text_a, "a").join(text_b, "b").select("a", "b", "ta", "tb")
    return with_texts.mapInArrow(
        functools.partial(_arrow_verify, shingle=shingle, threshold=threshold),
        StructType([*pair, StructField("jaccard", DoubleType(), False)]),
    )


def _mllib_bands(sets: DataFrame, num_bands: int, rows_per_band: int, seed: int, num_features: int) -> DataFrame:
    """``(node, band, key)`` from MLlib's ``MinHashLSH`` over ``HashingTF(binary=True)`` of ``sets`` (``node``, ``sh``)."""
    from pyspark.ml.feature import HashingTF, MinHashLSH
    from pyspark.ml.functions import vector_to_array

    b, r = num_bands, rows_per_band
    tf = HashingTF(inputCol="sh", outputCol="features", numFeatures=num_features, binary=True)
    lsh = MinHashLSH(inputCol="features", outputCol="hashes", numHashTables=b * r, seed=seed)
    featured = tf.transform(sets.select("node", "sh"))
    hashed = lsh.fit(featured).transform(featured)
    # the hashes become one array before the explode, so each row converts its vectors once, not once per band
    signatures = hashed.select("node", F.flatten(F.transform("hashes", lambda v: vector_to_array(v))).alias("hs"))
    return signatures.select("node", "hs", F.explode(F.sequence(F.lit(0), F.lit(b - 1))).alias("band")).select(
        "node", "band", F.xxhash64(F.slice("hs", F.col("band") * r + 1, r)).alias("key")
    )


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
    signatures: Literal["numpy", "mllib"] = "numpy",
    num_features: int = 1 << 20,
    max_iterations: int = 30,
) -> NearDupResult:
    """Find near-duplicate texts and keep one row per group.

    Parameters
    ----------
    df : DataFrame
        Rows with a unique, non-null ``id_col`` and a string ``text_col``
        (cleaned text: markup, entities and control characters removed).
    id_col, text_col : str
        The id column (any orderable Spark type) and the text column.
    threshold : float
        Smallest Jaccard similarity of two shingle sets that makes them
        near-duplicates, in (0, 1].
    shingle : int
        Characters per shingle.
    num_bands, rows_per_band : int, optional
        LSH banding; by default :func:`choose_bands` for ``threshold``.
    seed : int
        Seed of the min-hash functions (same seed, same candidates).
    signatures : {"numpy", "mllib"}
        How the min-hashes are computed: ``"numpy"`` (vectorised over Arrow
        batches, the default) or ``"mllib"`` (``HashingTF`` + ``MinHashLSH``,
        the slower baseline). The two use different hash functions, so they
        may verify slightly different candidate pairs; the edges found are
        exact Jaccard similarities either way. ``"mllib"`` keeps the earlier
        releases' whole path as a baseline: no sketch filter, shingle arrays
        compared in Spark, groups found in Spark.
    num_features : int
        With ``signatures="mllib"`` only: the ``HashingTF`` dimension the
        shingle hashes are folded into (ignored by ``"numpy"``).
    max_iterations : int
        Bound on connected-components rounds in Spark (more than two million
        edges; ``stats["iterations"]`` is 0 when the driver found the groups);
        if reached, a warning is logged
        and ``stats["converged"]`` is False (a large group may then be split,
        but every row is still in exactly one output).

    Returns
    -------
    NearDupResult
        ``kept`` (the input columns of every row not removed), ``dups``,
        ``pairs`` and ``stats``: ``rows``, ``texts`` (distinct non-empty
        normalised texts), ``candidate_pairs``, ``verified_pairs``,
        ``dup_rows``, ``groups`` (with two or more rows), ``iterations``,
        ``converged``, ``num_bands``, ``rows_per_band``, ``signatures`` and
        ``seconds`` (wall time of each step: ``shingles`` (normalising,
        folding exact copies and the input checks; with ``"mllib"`` also the
        Spark shingle hashes of every text), ``candidates`` (min-hashes,
        bands and the self-join), ``verify``, ``groups``, ``assign``).

    Raises
    ------
    ValueError
        If a column is missing or misnamed, the ids are null or repeated,
        ``threshold`` is outside (0, 1], ``shingle`` or the banding is not a
        positive integer, only one of ``num_bands`` and ``rows_per_band`` is
        given, or ``signatures`` is unknown.
    TypeError
        If ``text_col`` is not a string column.
    """
    _check_input(df, id_col, text_col)
    if signatures not in ("numpy", "mllib"):
        raise ValueError(f"near_duplicates: signatures must be 'numpy' or 'mllib', got {signatures!r}")
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

    # one node per distinct normalised text: its smallest id; the input checks and the text count ride on the
    # same pass, which also fills the cache
    base = df.select(F.col(id_col).alias("id"), normalize(F.col(text_col)).alias("norm"))
    # the window sorts by the text's 64-bit hash first, so two rows' long texts are compared whole only when
    # their hashes are equal (copies, or a hash collision, which the text itself then tells apart)
    same_text = Window.partitionBy(F.xxhash64("norm"), "norm")
    with_node = base.withColumn("node", F.when(F.length("norm") > 0, F.min("id").over(same_text))).persist()
    cached.append(with_node)
    problems = with_node.agg(
        F.count("*").alias("rows"),
        F.sum(F.col("id").isNull().cast("long")).alias("null_ids"),
        # distinct 64-bit hashes prove distinct ids; only when they do not is the (slower) string check run
        F.count_distinct(F.xxhash64("id")).alias("id_hashes"),
        F.sum((F.col("id") == F.col("node")).cast("long")).alias("texts"),
    ).first()
    if problems["null_ids"]:
        for frame in cached:
            frame.unpersist()
        raise ValueError(f"near_duplicates: id column {id_col!r} has {problems['null_ids']} null values")
    ids = problems["id_hashes"]
    if ids != problems["rows"]:
        ids = with_node.agg(F.count_distinct("id")).first()[0]
    if ids != problems["rows"]:
        for frame in cached:
            frame.unpersist()
        raise ValueError(f"near_duplicates: id column {id_col!r} is not unique ({problems['rows'] - ids} repeated ids)")
    n_texts = problems["texts"] or 0
    nodes = with_node.where(F.col("id") == F.col("node")).select("node", "norm")
    if signatures == "mllib":
        sets = nodes.select("node", shingle_hashes(F.col("norm"), shingle).alias("sh")).persist()
        cached.append(sets)
        sets.count()
        lap("shingles")
        pairs_of = _mllib_bands(sets, b, r, seed, num_features)
        join_on = ["band", "key"]
    else:
        lap("shingles")
        # the texts spread over every core first: the folded texts may sit in a single partition (adaptive
        # execution merges small shuffle outputs), and the min-hashes are the Python workers' main work
        parts = 2 * max(2, df.sparkSession.sparkContext.defaultParallelism)
        spread = nodes.repartition(parts)
        # kept hash-partitioned and sorted by node: the verify step's four joins on node then shuffle and sort
        # only the pairs' side
        keyed = (
            _numpy_bands(spread, b, r, seed, shingle).repartition(parts, "node").sortWithinPartitions("node").persist()
        )
        cached.append(keyed)
        # the band is hashed into each key: one long column to shuffle and join on
        pairs_of = keyed.select("node", F.explode("keys").alias("key"))
        join_on = ["key"]

    candidates = (
        pairs_of.alias("x")
        .join(pairs_of.alias("y"), join_on)
        .where(F.col("x.node") < F.col("y.node"))
        .select(F.col("x.node").alias("a"), F.col("y.node").alias("b"))
        .distinct()
    )
    candidates = candidates.persist()
    cached.append(candidates)
    n_candidates = candidates.count()
    lap("candidates")

    if signatures == "numpy":
        # each pair's two texts side by side; their shingles are hashed and compared in the Python worker
        pairs = _numpy_verify(candidates, keyed, shingle, threshold, b * r)
    else:
        sa = sets.select(F.col("node").alias("a"), F.col("sh").alias("sa"))
        sb = sets.select(F.col("node").alias("b"), F.col("sh").alias("sb"))
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

    if signatures == "numpy" and n_pairs <= _LOCAL_EDGES:  # the MLlib baseline keeps the Spark rounds
        comps, iterations, converged = _local_components(pairs), 0, True
    else:
        comps, iterations, converged = _components(pairs.select("a", "b"), max_iterations)
    if not converged:
        log.warning(
            "near_duplicates: groups did not settle in %d rounds; raise max_iterations (rows stay accounted for)",
            max_iterations,
        )
    lap("groups")

    # the representative of a row: its node's component, or the node itself
    placed = (
        with_node.where(F.col("node").isNotNull())
        .join(comps, "node", "left")
        .select("id", "node", F.coalesce("comp", "node").alias("kept_id"))
    )
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
        "signatures": signatures,
        "seconds": seconds,
    }
    log.info("near_duplicates: %s", stats)
    pairs_out = pairs.select(F.col("a").alias("id_a"), F.col("b").alias("id_b"), "jaccard")
    return NearDupResult(kept=kept, dups=dups, pairs=pairs_out, stats=stats)
