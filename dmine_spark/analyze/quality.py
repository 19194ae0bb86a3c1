"""The data-quality table: one set of rows per run and source, in long form.

``<database>.quality`` has one row per (run, source, step, metric, key) with a
numeric value, so a dashboard or a SQL query can follow any measure across
runs::

    SELECT run_id, key, value FROM dmine.quality
    WHERE task = 'banking77' AND source = 'train' AND metric = 'null_rate'

Metrics written by the prepare stages:

========================  ==========  ====================================
metric                    key         value
========================  ==========  ====================================
``rows``                  step name   rows in / out / quarantined, per step
``quarantined``           rule        rows quarantined by that rule
``null_rate``             column      share of null values in the raw rows
``empty_rate``            column      share of blank strings in the raw rows
``text_length``           ``p50``...  characters of the cleaned text
``language``              language    rows detected in that language
``pii_masked``            type        values masked (``email``, ``card``...)
========================  ==========  ====================================
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timezone

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from dmine_spark.io.tables import write_table

__all__ = [
    "QUALITY_SCHEMA",
    "LENGTH_QUANTILES",
    "QualityRows",
    "column_profile",
    "profile_aggs",
    "profile_rates",
    "length_quantiles",
    "group_counts",
]

QUALITY_SCHEMA = (
    "run_id STRING, pipeline STRING, task STRING, source STRING, step STRING, metric STRING, key STRING,"
    " value DOUBLE, created_at TIMESTAMP"
)
LENGTH_QUANTILES = (0.0, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)


class QualityRows:
    """Collects quality figures during a run and appends them to the quality table once."""

    def __init__(self, run_id: str, pipeline: str, task: str) -> None:
        self.run_id, self.pipeline, self.task = run_id, pipeline, task
        self.rows: list[tuple[str, str, str, str, float]] = []

    def add(self, source: str, step: str, metric: str, key: str, value: float) -> None:
        self.rows.append((source, step, metric, key, float(value)))

    def extend(self, source: str, step: str, metric: str, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.add(source, step, metric, key, value)

    def write(self, spark: SparkSession, table: str) -> int:
        """Append the collected rows to ``table``; returns how many."""
        if not self.rows:
            return 0
        now = datetime.now(timezone.utc)
        data = [(self.run_id, self.pipeline, self.task, *r[:4], r[4], now) for r in self.rows]
        write_table(spark.createDataFrame(data, QUALITY_SCHEMA), table, mode="append")
        n = len(self.rows)
        self.rows = []
        return n


def profile_aggs(df: DataFrame, columns: Iterable[str]) -> list[Column]:
    """The aggregations :func:`column_profile` groups by: ``_n`` rows, ``null__<col>`` and ``empty__<col>`` counts.

    Another aggregation can carry them beside its own (one pass over the table); :func:`profile_rates`
    turns each group's row into rates.
    """
    aggs = [F.count(F.lit(1)).alias("_n")]
    for c in columns:
        aggs.append(F.sum(F.col(c).isNull().cast("long")).alias(f"null__{c}"))
        if isinstance(df.schema[c].dataType, StringType):
            aggs.append(F.sum((F.trim(F.col(c)) == "").cast("long")).alias(f"empty__{c}"))
    return aggs


def profile_rates(counts: dict[str, float], columns: Iterable[str]) -> dict[str, dict[str, float]]:
    """``{"null_rate": {col: r}, "empty_rate": {col: r}, "rows": {"profiled": n}}`` from :func:`profile_aggs`' counts.

    ``counts`` may be the sum of several groups' rows (rates of their union).
    """
    cols = list(columns)
    n = counts.get("_n") or 0
    return {
        "null_rate": {c: (counts.get(f"null__{c}") or 0) / n if n else 0.0 for c in cols},
        "empty_rate": {c: (counts.get(f"empty__{c}") or 0) / n if n else 0.0 for c in cols if f"empty__{c}" in counts},
        "rows": {"profiled": float(n)},
    }


def column_profile(
    df: DataFrame, columns: Iterable[str], *, by: str = "split"
) -> dict[str, dict[str, dict[str, float]]]:
    """Null and blank-string rates of ``columns`` per value of ``by``, in one pass.

    Returns ``{group: {"null_rate": {col: r}, "empty_rate": {col: r}, "rows": {"profiled": n}}}``.
    """
    cols = list(columns)
    rows = df.groupBy(by).agg(*profile_aggs(df, cols)).collect()
    return {r[by]: profile_rates(r.asDict(), cols) for r in rows}


def length_quantiles(
    df: DataFrame, text_col: str = "text", *, by: str = "split", counts: dict[str, int] | None = None
) -> dict[str, dict[str, float]]:
    """Approximate quantiles (:data:`LENGTH_QUANTILES`) of the text length in characters, per ``by``.

    ``counts``, when given, is filled with the rows of each group, counted in the same pass.
    """
    qs = list(LENGTH_QUANTILES)
    rows = (
        df.groupBy(by)
        .agg(
            F.percentile_approx(F.char_length(F.col(text_col)), qs, 10000).alias("q"),
            F.avg(F.char_length(text_col)),
            F.count(F.lit(1)).alias("_n"),
        )
        .collect()
    )
    out = {}
    for r in rows:
        if counts is not None:
            counts[r[by]] = int(r["_n"])
        vals = {
            ("min" if q == 0 else "max" if q == 1 else f"p{int(q * 100)}"): float(v)
            for q, v in zip(qs, r["q"], strict=True)
        }
        vals["mean"] = float(r[2] or 0.0)
        out[r[by]] = vals
    return out


def group_counts(df: DataFrame, key: str, *, by: str = "split") -> dict[str, dict[str, float]]:
    """Rows per value of ``key`` (``language``, ``rule``...) per ``by``."""
    out: dict[str, dict[str, float]] = {}
    for r in df.groupBy(by, key).count().collect():
        out.setdefault(r[by], {})[str(r[key])] = float(r["count"])
    return out
