"""Sentiment per entity over time, and the alerts its shifts raise, in Spark.

The monitored rows are predictions with an event time (``id, text,
prediction, probability, event_time``). :func:`entity_rows` finds the
entities each text mentions (:mod:`dmine_spark.features.entities`),
:func:`wide_series` counts each entity's texts per class in event-time windows
(Spark's ``window()``), :func:`detect` applies the alert rules of
:mod:`dmine_spark.mine.alerts` to each entity's series (one pandas group per
entity, ``applyInPandas``) and :func:`with_examples` adds the texts that
drove each alert.

An alert's id is a hash of (entity, window start, rule), so deciding the
alerts of the same windows again gives the same ids: ``alerts_<task>`` takes
only ids it does not hold (:func:`new_alerts`), which makes a replayed
micro-batch or a re-run add nothing twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from dmine_spark.config import ConfigError, TrendsConfig, interval_seconds
from dmine_spark.features.entities import dictionary_frame, match_entities
from dmine_spark.mine.alerts import ShareRule, VolumeRule, detect_series

__all__ = [
    "ALERT_SCHEMA",
    "SERIES_SCHEMA",
    "RuleSpec",
    "rule_specs",
    "event_time",
    "load_dictionary",
    "entity_rows",
    "wide_series",
    "detect",
    "with_examples",
    "new_alerts",
    "to_long",
    "from_long",
    "TrendsOutput",
    "trends",
]

SERIES_SCHEMA = (
    "entity STRING, window_start TIMESTAMP, window_end TIMESTAMP, label STRING, n BIGINT, volume BIGINT, share DOUBLE"
)
"""``sentiment_ts_<task>``: one row per entity, window and class; ``share`` = ``n / volume``."""

ALERT_SCHEMA = (
    "alert_id STRING, entity STRING, window_start TIMESTAMP, window_end TIMESTAMP, rule STRING, label STRING, "
    "observed DOUBLE, baseline DOUBLE, score DOUBLE, volume BIGINT"
)
"""An alert as :func:`detect` finds it; ``alerts_<task>`` adds ``examples``, ``run_id``, ``stage`` and ``created_at``."""


@dataclass(frozen=True)
class RuleSpec:
    """One configured rule as the detector applies it: its rule object and the class it watches."""

    rule: ShareRule | VolumeRule
    label: str | None

    @property
    def name(self) -> str:
        return self.rule.name


def rule_specs(cfg: TrendsConfig) -> list[RuleSpec]:
    """The configured rules with their defaults filled in."""
    out = []
    for r in cfg.rules:
        if r.kind == "volume":
            rule: ShareRule | VolumeRule = VolumeRule(
                baseline_windows=r.baseline_windows,
                threshold=r.threshold if r.threshold is not None else 5.0,
                min_volume=r.min_volume if r.min_volume is not None else 20,
                cooldown_windows=r.cooldown_windows,
            )
        else:
            rule = ShareRule(
                label=cfg.rule_label(r) or cfg.label,
                method=r.method,
                baseline_windows=r.baseline_windows,
                threshold=r.threshold,
                drift=r.drift,
                min_volume=r.min_volume if r.min_volume is not None else 10,
                min_baseline_volume=r.min_baseline_volume,
                cooldown_windows=r.cooldown_windows,
            )
        out.append(RuleSpec(rule, cfg.rule_label(r)))
    return out


def event_time(df: DataFrame, col: str) -> Column:
    """``col`` of ``df`` as a timestamp: timestamps and dates as they are, numbers as epoch seconds, strings parsed.

    Raises
    ------
    ConfigError
        When ``df`` has no column ``col``.
    """
    if col not in df.columns:
        raise ConfigError(f"trends.time_col: the rows have no column {col!r} (columns: {', '.join(df.columns)})")
    kind = df.schema[col].dataType
    if isinstance(kind, T.NumericType):
        return F.timestamp_seconds(F.col(col).cast("double"))
    if isinstance(kind, T.StringType):
        return F.try_to_timestamp(F.col(col))
    return F.col(col).cast("timestamp")


def load_dictionary(spark: SparkSession, where: str) -> DataFrame:
    """The entity dictionary at ``where`` (a CSV file with header ``entity,name``, or a catalog table).

    Raises
    ------
    ConfigError
        When it is missing or lacks the ``entity`` or ``name`` column.
    """
    from pathlib import Path

    if Path(where).exists():
        df = spark.read.option("header", True).option("multiLine", True).option("escape", '"').csv(where)
    elif spark.catalog.tableExists(where):
        df = spark.table(where)
    else:
        raise ConfigError(f"trends.entities.dictionary: {where} is neither a file nor a catalog table")
    missing = [c for c in ("entity", "name") if c not in df.columns]
    if missing:
        raise ConfigError(
            f"trends.entities.dictionary: {where} has no column {', '.join(missing)}; "
            "it needs a header 'entity,name' (one row per name or alias)"
        )
    try:
        return dictionary_frame(spark, [(r["entity"], r["name"]) for r in df.select("entity", "name").collect()])
    except ValueError as exc:
        raise ConfigError(f"trends.entities.dictionary: {where}: {exc}") from None


def entity_rows(rows: DataFrame, cfg: TrendsConfig, dictionary: DataFrame | None = None) -> DataFrame:
    """``id, entity, match``: each entity each row's ``text`` mentions (see :func:`match_entities`)."""
    if not cfg.entities.cashtags and dictionary is None:
        raise ConfigError("trends.entities: set cashtags: true or a dictionary, or no text has an entity")
    return match_entities(rows.select("id", "text"), dictionary, cashtags=cfg.entities.cashtags)


def _windowed(rows: DataFrame, entities: DataFrame, window: str) -> DataFrame:
    # rows of several runs may share an id (two `dmine score` runs of one file): a run's entities are its own
    on = ["id", "run_id"] if "run_id" in rows.columns and "run_id" in entities.columns else ["id"]
    w = F.window("event_time", window)
    return (
        rows.join(entities.select(*on, "entity"), on)
        .where(F.col("event_time").isNotNull())
        .select("*", w.start.alias("window_start"), w.end.alias("window_end"))
    )


def to_long(wide: DataFrame, labels: list[str]) -> DataFrame:
    """:func:`wide_series` rows as ``sentiment_ts`` rows (:data:`SERIES_SCHEMA`)."""
    pairs = F.array(*[F.struct(F.lit(lab).alias("label"), F.col(f"n{i}").alias("n")) for i, lab in enumerate(labels)])
    return wide.select("entity", "window_start", "window_end", "volume", F.explode(pairs).alias("p")).select(
        "entity",
        "window_start",
        "window_end",
        F.col("p.label").alias("label"),
        F.col("p.n").cast("bigint").alias("n"),
        F.col("volume").cast("bigint").alias("volume"),
        (F.col("p.n") / F.col("volume")).cast("double").alias("share"),
    )


def wide_series(rows: DataFrame, entities: DataFrame, window: str, labels: list[str]) -> DataFrame:
    """``entity, window_start, window_end, volume, n0, n1, ...``: the count of each class of ``labels`` by position."""
    counts = [F.count_if(F.col("prediction") == lab).alias(f"n{i}") for i, lab in enumerate(labels)]
    return (
        _windowed(rows, entities, window)
        .groupBy("entity", "window_start", "window_end")
        .agg(F.count("*").alias("volume"), *counts)
    )


def from_long(ts: DataFrame, labels: list[str]) -> DataFrame:
    """``sentiment_ts`` rows back in :func:`wide_series`'s columns."""
    counts = [
        F.sum(F.when(F.col("label") == lab, F.col("n")).otherwise(0)).alias(f"n{i}") for i, lab in enumerate(labels)
    ]
    return ts.groupBy("entity", "window_start", "window_end").agg(F.max("volume").alias("volume"), *counts)


def detect(wide: DataFrame, specs: list[RuleSpec], labels: list[str], window: str) -> DataFrame:
    """Every alert the rules raise over each entity's series (:data:`ALERT_SCHEMA`).

    Parameters
    ----------
    wide : DataFrame
        :func:`wide_series` rows of the windows to decide (closed windows only, in a stream).
    specs : list of RuleSpec
    labels : list of str
        The classes, in the positions of ``wide``'s ``n`` columns.
    window : str
        The window length: windows without a text count as windows of volume 0.

    Raises
    ------
    ConfigError
        When a rule watches a class that is not among ``labels``.
    """
    for s in specs:
        if s.label is not None and s.label not in labels:
            raise ConfigError(
                f"trends: a rule watches class {s.label!r}, but the model predicts {', '.join(labels)}; set trends.label"
            )
    step = interval_seconds(window)
    index = {lab: i for i, lab in enumerate(labels)}

    def per_entity(pdf: pd.DataFrame) -> pd.DataFrame:
        return detect_series(pdf, [(s.rule, None if s.label is None else index[s.label]) for s in specs], step)

    cols = ["entity", "window_start", "volume", *[f"n{i}" for i in range(len(labels))]]
    found = (
        wide.select(*cols)
        .groupBy("entity")
        .applyInPandas(
            per_entity,
            "entity STRING, window_start TIMESTAMP, rule STRING, label_pos INT, observed DOUBLE, baseline DOUBLE, "
            "score DOUBLE, volume BIGINT",
        )
    )
    label = F.element_at(F.array(*[F.lit(x) for x in labels]), F.col("label_pos") + 1)
    return found.select(
        F.substring(
            F.sha2(F.concat_ws("|", "entity", F.date_format("window_start", "yyyy-MM-dd'T'HH:mm:ss"), "rule"), 256),
            1,
            20,
        ).alias("alert_id"),
        "entity",
        "window_start",
        (F.col("window_start") + F.expr(f"INTERVAL {step} SECONDS")).alias("window_end"),
        "rule",
        F.when(F.col("label_pos").isNotNull(), label).alias("label"),
        "observed",
        "baseline",
        "score",
        "volume",
    )


def with_examples(alerts: DataFrame, rows: DataFrame, entities: DataFrame, window: str, k: int) -> DataFrame:
    """``alerts`` with ``examples``: up to ``k`` distinct texts of the alert's entity and window that drove it.

    For a share rule, the texts predicted as the watched class, most confident first; for a volume rule, the
    window's most confident texts of any class.
    """
    if k == 0:
        return alerts.withColumn("examples", F.array().cast("array<string>"))
    windowed = _windowed(rows, entities, window).select("entity", "window_start", "text", "prediction", "probability")
    keys = alerts.select("alert_id", "entity", "window_start", "label")
    hits = keys.join(windowed, ["entity", "window_start"]).where(
        F.col("label").isNull() | (F.col("prediction") == F.col("label"))
    )
    ranked = hits.dropDuplicates(["alert_id", "text"]).withColumn(
        "_r", F.row_number().over(Window.partitionBy("alert_id").orderBy(F.desc_nulls_last("probability"), "text"))
    )
    top = (
        ranked.where(F.col("_r") <= k)
        .groupBy("alert_id")
        .agg(F.array_sort(F.collect_list(F.struct("_r", "text"))).alias("_e"))
        .select("alert_id", F.transform("_e", lambda e: e["text"]).alias("examples"))
    )
    return alerts.join(top, "alert_id", "left").withColumn(
        "examples", F.coalesce("examples", F.array().cast("array<string>"))
    )


def new_alerts(alerts: DataFrame, table: str) -> DataFrame:
    """The rows of ``alerts`` whose ``alert_id`` the table ``table`` does not hold yet."""
    spark = alerts.sparkSession
    if not spark.catalog.tableExists(table):
        return alerts
    return alerts.join(spark.table(table).select("alert_id"), "alert_id", "left_anti")


@dataclass
class TrendsOutput:
    """The trends of a batch of predictions: entities, the series, the alerts (with examples) and counts."""

    entities: DataFrame
    series: DataFrame
    alerts: DataFrame
    counts: dict[str, int]
    labels: list[str]
    _cached: list[DataFrame]

    def release(self) -> None:
        """Unpersist what :func:`trends` cached; the runner calls it once the outputs are written."""
        for df in self._cached:
            df.unpersist()
        self._cached.clear()


def trends(rows: DataFrame, cfg: TrendsConfig, labels: list[str], dictionary: DataFrame | None = None) -> TrendsOutput:
    """Entities, the sentiment series and the alerts of ``rows``, every window closed (a batch).

    Parameters
    ----------
    rows : DataFrame
        Predictions with their event time: ``id, text, prediction, probability, event_time``.
    cfg : TrendsConfig
    labels : list of str
        The classes the model predicts.
    dictionary : DataFrame, optional
        :func:`load_dictionary`'s rows.

    Returns
    -------
    TrendsOutput
        ``counts``: ``rows``, ``rows_without_time``, ``rows_with_entity``, ``rows_without_entity``,
        ``entities``, ``windows`` (entity windows with texts), ``alerts``.
    """
    from pyspark import StorageLevel

    rows = rows.persist(StorageLevel.MEMORY_AND_DISK)
    ents = entity_rows(rows, cfg, dictionary).persist(StorageLevel.MEMORY_AND_DISK)
    wide = wide_series(rows, ents, cfg.window, labels).persist(StorageLevel.MEMORY_AND_DISK)
    found = detect(wide, rule_specs(cfg), labels, cfg.window)
    alerts = with_examples(found, rows, ents, cfg.window, cfg.examples).persist(StorageLevel.MEMORY_AND_DISK)
    n = rows.count()
    with_entity = ents.select("id").distinct().count()
    counts = {
        "rows": n,
        "rows_without_time": rows.where(F.col("event_time").isNull()).count(),
        "rows_with_entity": with_entity,
        "rows_without_entity": n - with_entity,
        "entity_mentions": ents.count(),
        "entities": ents.select("entity").distinct().count(),
        "windows": wide.count(),
        "alerts": alerts.count(),
    }
    return TrendsOutput(ents, to_long(wide, labels), alerts, counts, labels, [rows, ents, wide, alerts])
