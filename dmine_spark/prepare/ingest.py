"""Ingest: read a declared-schema source and split good rows from quarantined ones.

Files are read in Spark's PERMISSIVE mode with a corrupt-record column, so a
malformed line is kept (with its raw text) instead of failing the job or
vanishing. Rows missing a required field are quarantined too. Every input
row ends in exactly one of the two outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from dmine_spark.config import ConfigError, SourceConfig

__all__ = ["CORRUPT_COL", "IngestResult", "parse_schema", "read_source", "split_quarantine"]

CORRUPT_COL = "_corrupt_record"


@dataclass
class IngestResult:
    """The rows of one source: ``rows`` parsed and complete, ``quarantine`` not; ``total`` is all of them."""

    rows: DataFrame
    quarantine: DataFrame
    total: DataFrame


def parse_schema(ddl: str, where: str) -> StructType:
    """Parse a DDL schema string (``"text STRING, category STRING"``); needs a running Spark."""
    try:
        schema = StructType.fromDDL(ddl)
    except Exception:
        schema = None
    if not isinstance(schema, StructType) or not schema.fields:
        raise ConfigError(f"{where}: cannot parse schema {ddl!r}; expected e.g. 'text STRING, label STRING'")
    return schema


def read_source(
    spark: SparkSession,
    name: str,
    src: SourceConfig,
    *,
    required: list[str],
) -> IngestResult:
    """Read source ``name`` and split it into complete rows and quarantined ones.

    Every row gets ``id`` (``<name>:<n>``, stable for the same input files),
    ``split`` (the source name) and ``source_file``. Quarantined rows carry
    ``rule``, ``reason`` and ``raw`` (the malformed line, or the row as JSON).
    """
    where = f"sources.{name}"
    schema = parse_schema(src.schema_ddl, f"{where}.schema")
    names = [f.name for f in schema.fields]
    for col in required:
        if col not in names:
            raise ConfigError(f"{where}.schema: required column {col!r} is not declared (columns: {', '.join(names)})")
    reader = spark.read.format(src.format)
    if src.format in ("csv", "json"):
        reader = (
            reader.schema(schema.add(CORRUPT_COL, "string"))
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", CORRUPT_COL)
        )
    else:
        reader = reader.schema(schema)
    df = reader.options(**src.options).load(src.path)
    if src.sample is not None and src.sample < 1.0:
        df = df.sample(fraction=src.sample, seed=src.sample_seed)
    df = df.select(
        F.concat_ws(":", F.lit(name), F.monotonically_increasing_id().cast("string")).alias("id"),
        F.lit(name).alias("split"),
        F.col("_metadata.file_path").alias("source_file"),
        *[F.col(c) for c in names],
        (F.col(CORRUPT_COL) if CORRUPT_COL in df.columns else F.lit(None).cast("string")).alias(CORRUPT_COL),
    )
    return split_quarantine(df, names, required)


def split_quarantine(df: DataFrame, names: list[str], required: list[str]) -> IngestResult:
    """Send malformed rows and rows missing a ``required`` value to quarantine."""
    missing = [F.when(F.col(c).isNull() | (F.trim(F.col(c).cast("string")) == ""), F.lit(c)) for c in required]
    missing_list = F.concat_ws(", ", *missing) if missing else F.lit("")
    rule = (
        F.when(F.col(CORRUPT_COL).isNotNull(), F.lit("malformed_record"))
        .when(missing_list != "", F.lit("missing_required_field"))
        .otherwise(F.lit(None).cast("string"))
    )
    reason = F.when(
        F.col("rule") == "malformed_record", F.lit("record does not parse against the declared schema")
    ).when(
        F.col("rule") == "missing_required_field", F.concat(F.lit("required field is null or empty: "), missing_list)
    )
    tagged = df.withColumn("rule", rule).withColumn("reason", reason)
    raw = F.coalesce(F.col(CORRUPT_COL), F.to_json(F.struct(*[F.col(c) for c in names])))
    quarantine = tagged.where(F.col("rule").isNotNull()).select(
        "id", "split", "source_file", "rule", "reason", raw.alias("raw")
    )
    rows = tagged.where(F.col("rule").isNull()).drop(CORRUPT_COL, "rule", "reason")
    return IngestResult(rows=rows, quarantine=quarantine, total=df)
