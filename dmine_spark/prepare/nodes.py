"""The prepare step's nodes: sources → raw and quarantine rows; raw → clean, duplicate and quarantined rows.

A node computes and returns DataFrames (lazy, or persisted where the caller
reads them more than once); it reads no catalog table, writes none and
records nothing. The runner (:mod:`dmine_spark.runner`) writes what a node
returns and hands it to the recorder (:mod:`dmine_spark.analyze.record`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import reduce

from pyspark import StorageLevel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DateType, NumericType, TimestampNTZType, TimestampType

from dmine_spark.config import CleanConfig, ConfigError, LanguageConfig, NearDupConfig, PiiConfig
from dmine_spark.prepare.clean import CleanResult, TextCleaner, apply_near_duplicates, clean_frame, text_rows
from dmine_spark.prepare.ingest import IngestResult

__all__ = [
    "Attach",
    "InteractionColumns",
    "IngestOutput",
    "CleanOutput",
    "ingest",
    "interaction_rows",
    "attach_texts",
    "clean",
]


@dataclass(frozen=True)
class Attach:
    """An ``item_text`` source: its rows' text joins the ``target`` source's row whose id is their ``on`` column."""

    source: str
    target: str
    target_id: str
    on: str
    sep: str = ". "


@dataclass(frozen=True)
class InteractionColumns:
    """The interactions' columns: user, item, time and (optional) value."""

    user: str
    item: str
    time: str
    value: str | None = None


@dataclass
class IngestOutput:
    """What ingest made of the sources.

    ``raw`` holds every parsed, complete row of the text sources (``id``,
    ``split``, ``source``, ``source_file``, the declared columns,
    ``pii_counts`` when masking), attached texts joined in; ``quarantine``
    every other row (``id``, ``split`` = the source, ``source_file``,
    ``rule``, ``reason``, ``raw``); ``interactions`` the interactions
    sources' kept rows (:func:`interaction_rows`); ``attached`` the
    ``item_text`` rows joined onto a text row; ``totals`` every row read, per
    source, counted independently of the outputs so a lost row shows.
    """

    raw: DataFrame
    quarantine: DataFrame
    totals: dict[str, DataFrame]
    pii_types: list[str] = field(default_factory=list)
    encodings: dict[str, IngestResult] = field(default_factory=dict)
    """The sources decoded from another encoding (their ``encoding`` and per-file ``files``)."""
    interactions: DataFrame | None = None
    attached: DataFrame | None = None
    """``source`` of each item_text row that joined a text row (for the row accounting)."""


def interaction_rows(rows: DataFrame, cols: InteractionColumns, where: str) -> DataFrame:
    """``id, split, source, source_file, user_id, item_id, value, ts``: an interactions source's rows, typed.

    ``user_id`` and ``item_id`` are strings (an item id is the items
    source's ``id_col`` value), ``value`` a double (1.0 without a value
    column) and ``ts`` a timestamp (numbers are epoch seconds).

    Raises
    ------
    ConfigError
        When the time column is neither a number, a date nor a timestamp.
    """
    t = rows.schema[cols.time].dataType
    if isinstance(t, NumericType):
        ts = F.timestamp_seconds(F.col(cols.time))
    elif isinstance(t, (TimestampType, TimestampNTZType, DateType)):
        ts = F.col(cols.time).cast("timestamp")
    else:
        raise ConfigError(
            f"recommend.time_col: column {cols.time!r} of {where} is {t.simpleString().upper()}; declare it "
            "TIMESTAMP, or a number of epoch seconds (LONG)"
        )
    return rows.select(
        "id",
        "split",
        "source",
        "source_file",
        F.col(cols.user).cast("string").alias("user_id"),
        F.col(cols.item).cast("string").alias("item_id"),
        (F.col(cols.value).cast("double") if cols.value else F.lit(1.0)).alias("value"),
        ts.alias("ts"),
    )


def attach_texts(
    rows: DataFrame, extra: DataFrame, a: Attach, *, text_col: str
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """Join ``extra``'s texts (an ``item_text`` source) onto the ``a.target`` rows of ``rows`` they name.

    Each target row's text becomes ``text + sep + t1, t2, ...``: its attached
    texts trimmed, each distinct one once, in file order.

    Returns
    -------
    (DataFrame, DataFrame, DataFrame)
        ``rows`` with the texts joined; the ``extra`` rows that joined
        (``id``, ``source``); the ones naming no kept target row, as
        quarantine rows (rule ``unknown_item``).
    """
    prefix = f"{a.target}:"
    keyed = (
        extra.withColumn("_seq", F.monotonically_increasing_id())
        .withColumn("_key", F.concat(F.lit(prefix), F.col(a.on).cast("string")))
        .withColumn("_t", F.trim(F.col(text_col)))
    )
    targets = rows.where(F.col("source") == a.target).select(F.col("id").alias("_key"))
    matched = keyed.join(targets, "_key", "left_semi")
    unknown = keyed.join(targets, "_key", "left_anti")
    texts = matched.groupBy("_key").agg(
        F.array_join(
            F.array_distinct(F.transform(F.array_sort(F.collect_list(F.struct("_seq", "_t"))), lambda x: x["_t"])),
            ", ",
        ).alias("_attached")
    )
    joined = rows.join(texts, rows["id"] == texts["_key"], "left").select(
        *[
            F.when(F.col("_attached").isNotNull(), F.concat_ws(a.sep, F.col(c), F.col("_attached")))
            .otherwise(F.col(c))
            .alias(c)
            if c == text_col
            else F.col(c)
            for c in rows.columns
        ]
    )
    quarantine = unknown.select(
        "id",
        "split",
        "source_file",
        F.lit("unknown_item").alias("rule"),
        F.format_string(
            f"{a.on} '%s' is no kept row's {a.target_id} in source {a.target}", F.col(a.on).cast("string")
        ).alias("reason"),
        F.to_json(F.struct(F.col(a.on), F.col(text_col))).alias("raw"),
    )
    return joined, matched.select("id", "source"), quarantine


def ingest(
    sources: dict[str, IngestResult],
    *,
    text_col: str,
    label_col: str | None,
    pii: PiiConfig,
    roles: dict[str, str] | None = None,
    attach: list[Attach] | None = None,
    interaction_cols: InteractionColumns | None = None,
) -> IngestOutput:
    """Union the text sources' rows, join attached texts, type the interactions; mask PII in the text.

    Parameters
    ----------
    sources : dict
        Each source's :class:`~dmine_spark.prepare.ingest.IngestResult`, by name.
    roles : dict, optional
        Each source's role (``text``, ``interactions``, ``item_text``); default: all ``text``.
    attach : list of Attach, optional
        The ``item_text`` sources and the text source each joins.
    interaction_cols : InteractionColumns, optional
        The columns of the ``interactions`` sources.

    Raises
    ------
    ConfigError
        When ``label_col`` is not a column of some text source, or an interactions source's time column has
        a type that is not a time.
    """
    roles = roles or {}
    text = {n: r for n, r in sources.items() if roles.get(n, "text") == "text"}
    for name, res in text.items():
        if label_col and label_col not in res.rows.columns:
            raise ConfigError(f"label_col: column {label_col!r} is not declared in sources.{name}.schema")
    rows = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), [r.rows for r in text.values()])
    quarantines = [r.quarantine for r in sources.values()]
    attached = []
    for a in attach or []:
        rows, matched, unknown = attach_texts(rows, sources[a.source].rows, a, text_col=text_col)
        attached.append(matched)
        quarantines.append(unknown)
    quarantine = reduce(lambda a, b: a.unionByName(b), quarantines)
    inter = [
        interaction_rows(r.rows, interaction_cols, f"sources.{n}")
        for n, r in sources.items()
        if roles.get(n) == "interactions" and interaction_cols is not None
    ]
    types = list(pii.types) if pii.enabled else []
    if types:
        from dmine_spark.prepare.pii import mask_pii

        rows = rows.withColumn("_pii", mask_pii(F.col(text_col), types)).select(
            *[F.col("_pii.text").alias(c) if c == text_col else F.col(c) for c in rows.columns],
            F.col("_pii.counts").alias("pii_counts"),
        )
        quarantine = quarantine.withColumn("raw", mask_pii(F.col("raw"), types)["text"])
    quarantine = quarantine.select("id", "split", "source_file", "rule", "reason", F.col("raw").cast("string"))
    # a column stored under another name than its file's keeps that name as its comment
    renamed = {k: v for r in text.values() for k, v in r.renamed.items()}
    if renamed:
        rows = rows.select(
            *[
                F.col(c).alias(c, metadata={"comment": f"source column {renamed[c]}"}) if c in renamed else F.col(c)
                for c in rows.columns
            ]
        )
    return IngestOutput(
        raw=rows,
        quarantine=quarantine,
        totals={n: r.total for n, r in sources.items()},
        pii_types=types,
        encodings={n: r for n, r in sources.items() if r.encoding},
        interactions=reduce(lambda a, b: a.unionByName(b), inter) if inter else None,
        attached=reduce(lambda a, b: a.unionByName(b), attached) if attached else None,
    )


@dataclass
class CleanOutput:
    """Every raw row once, decided: clean, duplicate or quarantined.

    ``decided`` is persisted (the accounting reads it several times); call
    :meth:`release` once the outputs are written.
    """

    result: CleanResult
    near_dup: bool
    pii_types: list[str]
    language: bool
    _cached: list[DataFrame] = field(default_factory=list)
    overlap: DataFrame | None = None
    """Eval rows whose text a training split also holds (``id, split, train_split, kept_id``), when checked."""
    overlap_dropped: bool = False
    """Whether those rows were dropped from evaluation (as duplicates, rule ``train_test_overlap``)."""

    @property
    def decided(self) -> DataFrame:
        return self.result.decided

    @property
    def clean(self) -> DataFrame:
        """Clean rows: ``id, split, source, source_file, text, label``, language columns, ``text_key``, ``text_hash``, ``truncated``."""
        return self.result.clean.drop("_dedup")

    @property
    def duplicates(self) -> DataFrame:
        """Removed duplicates with the ``kept_id`` they repeat, ``rule`` and ``jaccard``."""
        return self.result.duplicates.drop("_dedup")

    @property
    def quarantine(self) -> DataFrame:
        """Rows a clean rule refused, in the quarantine table's columns (``split`` names the source)."""
        return self.result.refused

    def release(self) -> None:
        for df in self._cached:
            df.unpersist()
        self._cached.clear()


def clean(
    raw: DataFrame,
    *,
    text_col: str,
    label_col: str | None,
    dedup_sources: list[str],
    clean: CleanConfig,
    pii: PiiConfig,
    language: LanguageConfig,
    near_dup: NearDupConfig,
    overlap_pairs: list[tuple[str, str]] | None = None,
) -> CleanOutput:
    """Clean ``raw``'s text and decide each row (:func:`~dmine_spark.prepare.clean.clean_frame`).

    PII is masked again after normalisation (full-width digits, entities),
    the language is tagged (and filtered when configured), empty, over-long
    or filtered rows are quarantined, and exact then near duplicates are
    found. Duplicates count within a source: a text repeated in both a train
    and a test source stays in both, while the seeded splits of one source
    share one dedup, so no copy of a training row is left in its test split.
    Only sources in ``dedup_sources`` are deduplicated.

    ``overlap_pairs`` lists (training split, evaluation split) pairs: an
    evaluation row whose text (case-folded, as exact duplicates compare)
    is also a clean row of the training split is train/test leakage. Such
    rows are listed in ``overlap``, and with ``clean.leakage: drop`` they
    leave evaluation as duplicates (rule ``train_test_overlap``) of the
    training row.
    """
    source = F.col("source") if "source" in raw.columns else F.col("split")
    base = text_rows(raw, text_col=text_col, label_col=label_col, dedup=source.isin(dedup_sources))
    res = clean_frame(
        base,
        clean,
        text_col="text",
        dedup_groups=["source"],
        dedup_col="_dedup",
        cleaner=TextCleaner.from_config(clean, pii),
        language=language,
    )
    decided = res.decided.persist(StorageLevel.MEMORY_AND_DISK)
    cached = [decided]
    res = CleanResult(decided=decided, columns=res.columns)
    if near_dup.enabled:
        from dmine_spark.prepare.neardup import near_duplicates

        candidates = decided.where((F.col("outcome") == "clean") & F.col("_dedup")).select("id", "source", "text")
        sources = sorted(r["source"] for r in candidates.select("source").distinct().collect())
        found = [
            near_duplicates(
                candidates.where(F.col("source") == name),
                id_col="id",
                text_col="text",
                threshold=near_dup.threshold,
                shingle=near_dup.shingle,
                num_bands=near_dup.bands,
                rows_per_band=near_dup.rows_per_band,
                seed=near_dup.seed,
            ).dups.select("id", "kept_id", "jaccard")
            for name in sources
        ]
        if found:
            near = apply_near_duplicates(decided, reduce(lambda a, b: a.unionByName(b), found))
            near = near.persist(StorageLevel.MEMORY_AND_DISK)
            cached.append(near)
            res = CleanResult(decided=near, columns=res.columns)
    overlap = None
    if overlap_pairs:
        overlap = train_test_overlap(res.decided, overlap_pairs).persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(overlap)
        if clean.leakage == "drop":
            dropped = _drop_overlap(res.decided, overlap)
            dropped = dropped.persist(StorageLevel.MEMORY_AND_DISK)
            cached.append(dropped)
            res = CleanResult(decided=dropped, columns=res.columns)
    return CleanOutput(
        result=res,
        near_dup=near_dup.enabled,
        pii_types=list(pii.types) if pii.enabled else [],
        language=language.enabled,
        _cached=cached,
        overlap=overlap,
        overlap_dropped=bool(overlap_pairs) and clean.leakage == "drop",
    )


def train_test_overlap(decided: DataFrame, pairs: list[tuple[str, str]]) -> DataFrame:
    """Clean evaluation rows whose ``text_hash`` a clean row of the paired training split has.

    Parameters
    ----------
    decided : DataFrame
        The clean step's decided rows (``id, split, outcome, text_hash``).
    pairs : list of (str, str)
        (training split, evaluation split) pairs.

    Returns
    -------
    DataFrame
        ``id, split, train_split, kept_id`` (``kept_id``: the first training row with that text); an
        evaluation row paired with several training splits is listed once, under the first pair.
    """
    kept = decided.where(F.col("outcome") == "clean").select("id", "split", "text_hash")
    found = []
    for order, (train, evaluation) in enumerate(pairs):
        first = kept.where(F.col("split") == train).groupBy("text_hash").agg(F.min("id").alias("kept_id"))
        found.append(
            kept.where(F.col("split") == evaluation)
            .join(first, "text_hash")
            .select("id", "split", F.lit(train).alias("train_split"), "kept_id", F.lit(order).alias("_order"))
        )
    every = reduce(lambda a, b: a.unionByName(b), found)
    w = Window.partitionBy("id").orderBy("_order")
    return every.withColumn("_n", F.row_number().over(w)).where("_n = 1").drop("_n", "_order")


def _drop_overlap(decided: DataFrame, overlap: DataFrame) -> DataFrame:
    """Mark the evaluation rows of ``overlap`` as duplicates (rule ``train_test_overlap``) of their ``kept_id``."""
    o = overlap.select(F.col("id").alias("_o_id"), F.col("kept_id").alias("_o_kept"))
    joined = decided.join(o, decided["id"] == o["_o_id"], "left")
    hit = (F.col("outcome") == "clean") & F.col("_o_kept").isNotNull()
    return (
        joined.withColumn("kept_id", F.when(hit, F.col("_o_kept")).otherwise(F.col("kept_id")))
        .withColumn("dup_rule", F.when(hit, F.lit("train_test_overlap")).otherwise(F.col("dup_rule")))
        .withColumn("outcome", F.when(hit, F.lit("duplicate")).otherwise(F.col("outcome")))
        .drop("_o_id", "_o_kept")
    )
