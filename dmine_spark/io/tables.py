"""Catalog I/O: every table dmine_spark reads or writes goes through this module.

Table names come from :class:`~dmine_spark.config.Layer` (one database, a
prefix per layer). Most layers hold the current state of a task and are
replaced by each run; history layers (``pred_``, ``metrics``, ``runs``,
``quality``, ``monitor``, ``emb_cache``) are appended to and keep every run's
rows under its ``run_id``. ``quarantine_<task>_<source>`` are views over a
task's quarantine table, one per source.

Tables are Delta Lake tables when the session runs Delta and the pipeline's
``tables.format`` resolves to ``delta`` (see :func:`set_table_format`), else
Parquet. With Delta every write is a new table version: each run records the
version it wrote of each table (``runs.table_versions``), and
``SELECT ... FROM t VERSION AS OF n`` reads any run's results back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dmine_spark.config import ConfigError

__all__ = [
    "FORMAT_CONF",
    "PREDICTION_SCHEMA",
    "QUARANTINE_SCHEMA",
    "prediction_rows",
    "quarantine_rows",
    "delta_enabled",
    "ensure_database",
    "set_table_format",
    "table_format",
    "table_provider",
    "write_table",
    "append_table",
    "replace_partition",
    "merge_new_keys",
    "upsert_rows",
    "track_versions",
    "read_table",
    "list_tables",
]

# the session's table format for dmine writes: "delta" or "parquet"
FORMAT_CONF = "spark.dmine.tables.format"

_versions: ContextVar[dict[str, int] | None] = ContextVar("dmine_table_versions", default=None)

_DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"

PREDICTION_SCHEMA = (
    ("id", "string"),
    ("split", "string"),
    ("source_file", "string"),
    ("text", "string"),
    ("label", "string"),
    ("prediction", "string"),
    ("probability", "double"),
    ("open_score", "double"),
    ("answer_id", "string"),
    ("answer_score", "double"),
    ("answer_by", "string"),
    ("model_version", "string"),
    ("stage", "string"),
    ("run_id", "string"),
    ("batch_key", "string"),
    ("event_time", "timestamp"),
    ("scored_at", "timestamp"),
)
"""Columns of the predictions table ``pred_<task>``, appended to by classify, finetune, score and stream.

``open_score`` is the open-set score of a model with ``classify.open_set``; ``answer_id``, ``answer_score`` and
``answer_by`` are the matched reply template of a model with ``answers`` (null otherwise)."""

QUARANTINE_SCHEMA = (
    ("run_id", "string"),
    ("stage", "string"),
    ("id", "string"),
    ("split", "string"),
    ("source_file", "string"),
    ("rule", "string"),
    ("reason", "string"),
    ("raw", "string"),
    ("batch_key", "string"),
)
"""Columns of ``quarantine_<task>``: the command's stage, the row and why it was refused."""


def _conform(df: DataFrame, schema: tuple[tuple[str, str], ...], values: dict[str, object]) -> DataFrame:
    cols = []
    for name, kind in schema:
        if name in values:
            col = F.lit(values[name])
        elif name in df.columns:
            col = F.col(name)
        else:
            col = F.lit(None)
        cols.append(col.cast(kind).alias(name))
    return df.select(*cols)


def prediction_rows(
    df: DataFrame,
    *,
    run_id: str,
    model_version: str | None,
    stage: str,
    batch_key: str | None = None,
    extra: tuple[str, ...] = (),
) -> DataFrame:
    """``df``'s predictions in the columns of :data:`PREDICTION_SCHEMA` (then ``extra``), stamped with their origin."""
    values = {"run_id": run_id, "model_version": model_version, "stage": stage, "batch_key": batch_key}
    out = _conform(df, PREDICTION_SCHEMA + tuple((c, df.schema[c].dataType.simpleString()) for c in extra), values)
    return out.withColumn("scored_at", F.current_timestamp())


def quarantine_rows(df: DataFrame, *, run_id: str, stage: str, batch_key: str | None = None) -> DataFrame:
    """``df``'s refused rows in the columns of :data:`QUARANTINE_SCHEMA`."""
    return _conform(df, QUARANTINE_SCHEMA, {"run_id": run_id, "stage": stage, "batch_key": batch_key})


def delta_enabled(spark: SparkSession) -> bool:
    """Whether ``spark`` was started with Delta Lake's SQL extension."""
    return _DELTA_EXTENSION in spark.sparkContext.getConf().get("spark.sql.extensions", "")


def ensure_database(spark: SparkSession, database: str) -> None:
    """Create ``database`` in the catalog if it is not there."""
    if not spark.catalog.databaseExists(database):
        spark.sql(f"CREATE DATABASE IF NOT EXISTS `{database}`")


def _q(name: str) -> str:
    """``db.table`` quoted for SQL (a table may be named like a keyword: ``history``)."""
    return ".".join(f"`{part}`" for part in name.split("."))


def set_table_format(spark: SparkSession, fmt: str) -> str:
    """Make ``fmt`` (``auto``, ``delta`` or ``parquet``) the format of this session's dmine writes.

    ``auto`` is Delta when the session runs Delta Lake. Returns the format set.
    """
    on = delta_enabled(spark)
    if fmt == "delta" and not on:
        raise ConfigError(
            "tables.format: delta: this Spark session runs without Delta Lake "
            "(fetch its jars with `dmine jars fetch delta`, then start a new session)"
        )
    resolved = "delta" if fmt == "delta" or (fmt == "auto" and on) else "parquet"
    spark.conf.set(FORMAT_CONF, resolved)
    return resolved


def table_format(spark: SparkSession) -> str:
    """The format new dmine tables get in this session."""
    return spark.conf.get(FORMAT_CONF, "parquet") or "parquet"


def table_provider(spark: SparkSession, name: str) -> str | None:
    """``delta``, ``parquet``... for an existing table; None for a view or a missing table."""
    if not spark.catalog.tableExists(name):
        return None
    for row in spark.sql(f"DESCRIBE TABLE EXTENDED {_q(name)}").collect():
        if row["col_name"] == "Provider":
            return str(row["data_type"]).lower()
    return None


@contextmanager
def track_versions(seen: dict[str, int] | None = None) -> Iterator[dict[str, int]]:
    """Collect into ``seen``, for the writes inside the block, the Delta version each table was left at."""
    seen = {} if seen is None else seen
    token = _versions.set(seen)
    try:
        yield seen
    finally:
        _versions.reset(token)


def _note_version(spark: SparkSession, name: str, fmt: str) -> None:
    """Record the version a Delta write left ``name`` at, inside :func:`track_versions`."""
    seen = _versions.get()
    if seen is not None and fmt == "delta":
        seen[name] = int(spark.sql(f"DESCRIBE HISTORY {_q(name)} LIMIT 1").first()["version"])


def _prepare(spark: SparkSession, name: str, *, keep: bool) -> str:
    """The format to write ``name`` in; a table of the other format is converted (``keep``) or dropped."""
    fmt = table_format(spark)
    have = table_provider(spark, name)
    if have is None or have == fmt:
        return fmt
    if keep and fmt == "delta" and have == "parquet":
        # history tables keep their rows: Parquet is converted in place, from now on versioned
        spark.sql(f"CONVERT TO DELTA {_q(name)}")
        return fmt
    if keep:
        return have  # a Delta history table is never turned back into Parquet
    spark.sql(f"DROP TABLE {_q(name)}")
    return fmt


def write_table(df: DataFrame, name: str, *, mode: str = "overwrite") -> None:
    """Save ``df`` as the catalog table ``name`` (``db.table``) in the session's table format.

    ``overwrite`` replaces the rows (with Delta, as a new version: earlier
    ones stay readable with ``VERSION AS OF``); ``append`` adds to them.
    """
    spark = df.sparkSession
    fmt = _prepare(spark, name, keep=mode == "append")
    writer = df.write.mode(mode).format(fmt)
    if fmt == "delta" and mode == "overwrite":
        writer = writer.option("overwriteSchema", "true")
    writer.saveAsTable(name)
    _note_version(spark, name, fmt)


def replace_partition(df: DataFrame, name: str, column: str, value: str) -> None:
    """Replace the rows of ``name`` whose ``column`` is ``value`` by ``df``, leaving the others.

    ``name`` is partitioned by ``column`` when created here. Delta does this in
    one commit (``replaceWhere``); Parquet by dynamic partition overwrite.
    """
    spark = df.sparkSession
    df = df.where(F.col(column) == value)
    fmt = _prepare(spark, name, keep=False)
    if not spark.catalog.tableExists(name):
        df.write.format(fmt).partitionBy(column).saveAsTable(name)
        _note_version(spark, name, fmt)
        return
    if fmt == "delta":
        cols = spark.table(name).columns
        literal = value.replace("'", "''")
        df.select(*cols).write.format("delta").mode("overwrite").option(
            "replaceWhere", f"`{column}` = '{literal}'"
        ).saveAsTable(name)
        _note_version(spark, name, fmt)
        return
    prev = spark.conf.get("spark.sql.sources.partitionOverwriteMode")
    spark.conf.set("spark.sql.sources.partitionOverwriteMode", "dynamic")
    try:
        # insertInto is by position: the table's partition column comes last
        df.select(*spark.table(name).columns).write.insertInto(name, overwrite=True)
        if df.isEmpty():
            spark.sql(f"ALTER TABLE {_q(name)} DROP IF EXISTS PARTITION (`{column}`='{value}')")
    finally:
        spark.conf.set("spark.sql.sources.partitionOverwriteMode", prev)


def merge_new_keys(df: DataFrame, name: str, keys: list[str], *, retries: int = 5) -> None:
    """Add the rows of ``df`` whose ``keys`` are not in table ``name`` yet.

    With Delta this is ``MERGE ... WHEN NOT MATCHED THEN INSERT``: a key is
    never stored twice, however often or by how many runs at once it is offered (a merge that loses a
    race with another commit is retried, and then finds that run's keys).
    Parquet has no merge: the rows are appended, and callers must not offer
    keys the table already has.
    """
    spark = df.sparkSession
    df = df.dropDuplicates(keys)  # a key offered twice in one batch is stored once too
    fmt = _prepare(spark, name, keep=True)
    if fmt != "delta":
        if spark.catalog.tableExists(name):
            df.select(*spark.table(name).columns).write.insertInto(name)
        else:
            df.write.format(fmt).saveAsTable(name)
        _note_version(spark, name, fmt)
        return
    if not spark.catalog.tableExists(name):
        df.limit(0).write.format("delta").saveAsTable(name)
    view = f"_dmine_merge_{abs(hash((name, time.time_ns())))}"
    df.createOrReplaceTempView(view)
    on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    try:
        for attempt in range(retries + 1):
            try:
                spark.sql(f"MERGE INTO {_q(name)} t USING {view} s ON {on} WHEN NOT MATCHED THEN INSERT *")
                break
            except Exception as exc:  # Delta's ConcurrentAppendException and relatives, via Py4J
                if "Concurrent" not in str(exc) or attempt == retries:
                    raise
                time.sleep(0.2 * (attempt + 1))
    finally:
        spark.catalog.dropTempView(view)
    _note_version(spark, name, fmt)


def upsert_rows(df: DataFrame, name: str, keys: list[str]) -> None:
    """Make ``df``'s rows the rows of ``name`` for their ``keys``: replaced where held, added where not.

    ``df`` is taken in the table's columns (one it lacks is null).

    With Delta this is one ``MERGE ... WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *``.
    Parquet has no merge: the table is rewritten with the other keys' rows and ``df``'s (fine for the small
    aggregate tables this serves, such as ``sentiment_ts_<task>``).
    """
    spark = df.sparkSession
    df = df.dropDuplicates(keys)
    fmt = _prepare(spark, name, keep=True)
    if not spark.catalog.tableExists(name):
        write_table(df, name)
        return
    have = spark.table(name).schema
    df = df.select(
        *[F.col(f.name) if f.name in df.columns else F.lit(None).cast(f.dataType).alias(f.name) for f in have]
    )
    if fmt != "delta":
        kept = spark.table(name).join(df.select(*keys), keys, "left_anti")
        both = kept.unionByName(df).localCheckpoint()
        write_table(both, name)
        return
    view = f"_dmine_upsert_{abs(hash((name, time.time_ns())))}"
    df.createOrReplaceTempView(view)
    on = " AND ".join(f"t.`{k}` <=> s.`{k}`" for k in keys)
    try:
        spark.sql(
            f"MERGE INTO {_q(name)} t USING {view} s ON {on} WHEN MATCHED THEN UPDATE SET * "
            "WHEN NOT MATCHED THEN INSERT *"
        )
    finally:
        spark.catalog.dropTempView(view)
    _note_version(spark, name, fmt)


def append_table(df: DataFrame, name: str) -> None:
    """Append ``df`` to the history table ``name``, by column name.

    Columns that a newer dmine_spark added are first added to an older table
    (``ALTER TABLE ... ADD COLUMNS``; earlier rows read them as null), so
    history written by an older version is kept, never dropped.
    """
    spark = df.sparkSession
    fmt = _prepare(spark, name, keep=True)
    if not spark.catalog.tableExists(name):
        write_table(df, name, mode="overwrite")
        return
    have = {f.name.lower() for f in spark.table(name).schema.fields}
    missing = [f for f in df.schema.fields if f.name.lower() not in have]
    if missing:
        cols = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in missing)
        spark.sql(f"ALTER TABLE {_q(name)} ADD COLUMNS ({cols})")
    target = [f.name for f in spark.table(name).schema.fields]
    df = df.select(
        *[F.col(c) if c.lower() in {x.lower() for x in df.columns} else F.lit(None).alias(c) for c in target]
    )
    df.write.insertInto(name)
    _note_version(spark, name, fmt)


def read_table(spark: SparkSession, name: str) -> DataFrame:
    """Read catalog table ``name``, or fail with a line saying which stage makes it."""
    if not spark.catalog.tableExists(name):
        layer = name.split(".")[-1].split("_")[0]
        raise LookupError(
            f"table {name} does not exist yet; run the stage that writes the {layer}_ layer first (or `dmine run`)"
        )
    return spark.table(name)


def list_tables(spark: SparkSession, database: str) -> list[tuple[str, int | None]]:
    """Tables of ``database`` with their row counts."""
    if not spark.catalog.databaseExists(database):
        return []
    out = []
    for t in sorted(spark.catalog.listTables(database), key=lambda t: t.name):
        out.append((f"{database}.{t.name}", spark.table(f"{database}.{t.name}").count()))
    return out
