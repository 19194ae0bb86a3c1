"""Result tables in the Spark catalog: one database, table names that say their layer.

Data layers (``raw_``, ``clean_``, ``quarantine_``, ``dup_``, ``emb_``,
``pred_``, ``confusion_``, ``reg_``, ``cluster_``, ``cluster_terms_``) hold the current state of a task
and are overwritten by each run; ``metrics``, ``runs`` and ``quality`` keep
history and are appended to. ``quarantine_<task>_<source>`` are views over a
task's quarantine table, one per source.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

__all__ = ["LAYERS", "ensure_database", "write_table", "append_table", "read_table", "list_tables"]

LAYERS = (
    "raw",
    "clean",
    "quarantine",
    "dup",
    "feat",
    "emb",
    "pred",
    "pred_ft",
    "confusion",
    "reg",
    "cluster",
    "cluster_terms",
    "metrics",
    "runs",
    "quality",
)


def ensure_database(spark: SparkSession, database: str) -> None:
    """Create ``database`` in the catalog if it is not there."""
    if not spark.catalog.databaseExists(database):
        spark.sql(f"CREATE DATABASE IF NOT EXISTS `{database}`")


def write_table(df: DataFrame, name: str, *, mode: str = "overwrite") -> None:
    """Save ``df`` as the catalog table ``name`` (``db.table``) in Parquet."""
    df.write.mode(mode).format("parquet").saveAsTable(name)


def append_table(df: DataFrame, name: str) -> None:
    """Append ``df`` to the history table ``name``, by column name.

    Columns that a newer dmine_spark added are first added to an older table
    (``ALTER TABLE ... ADD COLUMNS``; earlier rows read them as null), so
    history written by an older version is kept, never dropped.
    """
    spark = df.sparkSession
    if not spark.catalog.tableExists(name):
        write_table(df, name, mode="overwrite")
        return
    have = {f.name.lower() for f in spark.table(name).schema.fields}
    missing = [f for f in df.schema.fields if f.name.lower() not in have]
    if missing:
        cols = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in missing)
        spark.sql(f"ALTER TABLE {name} ADD COLUMNS ({cols})")
    target = [f.name for f in spark.table(name).schema.fields]
    df = df.select(
        *[F.col(c) if c.lower() in {x.lower() for x in df.columns} else F.lit(None).alias(c) for c in target]
    )
    df.write.insertInto(name)


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
