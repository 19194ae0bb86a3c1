"""Generated data read by Spark: malformed CSV records land in the corrupt-record column, as counted."""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import functions as F

from dmine_spark.tools.datagen import PARQUET_DDL, SCHEMA_DDL, FaultRates, generate
from tests.conftest import DATASETS

RATES = FaultRates(malformed=0.03, bad_encoding=0.01, null=0.02)


def test_permissive_csv_read_puts_exactly_the_malformed_rows_in_the_corrupt_column(spark, tmp_path: Path) -> None:
    res = generate(tmp_path / "csv", 5000, fmt="csv", seed=21, datasets_dir=DATASETS, rates=RATES, chunk_rows=2000)
    m = res.manifest
    assert m["schema_ddl"] == SCHEMA_DDL and len(m["files"]) == 3
    df = (
        spark.read.schema(SCHEMA_DDL + ", _corrupt_record STRING")
        .options(**m["spark_options"])
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", "_corrupt_record")
        .csv(str(res.out / "part-*.csv"))
        .cache()
    )
    assert df.count() == m["rows"] == 5000
    corrupt = df.where(F.col("_corrupt_record").isNotNull())
    assert corrupt.count() == m["counts"]["malformed"] > 100
    good = df.where(F.col("_corrupt_record").isNull())
    # no well-formed row was generated as malformed; every corrupt record is one generated row
    assert good.where(F.col("faults").contains("malformed")).count() == 0
    ids = corrupt.select(F.regexp_extract("_corrupt_record", r'^"(r[0-9]+)"', 1).alias("rid"))
    assert ids.where(F.col("rid") == "").count() == 0
    assert ids.distinct().count() == m["counts"]["malformed"]
    assert ids.join(good.select(F.col("record_id").alias("rid")), "rid").count() == 0
    assert good.select("record_id").distinct().count() == 5000 - m["counts"]["malformed"]
    # invalid UTF-8 is decoded to U+FFFD on the tagged rows only; typed columns parse everywhere else
    fffd = good.where(F.col("text").contains("\ufffd"))
    assert fffd.count() == m["counts"]["bad_encoding"]
    assert fffd.where(~F.col("faults").contains("bad_encoding")).count() == 0
    assert good.where(F.col("text").isNull()).count() == m["details"]["null:text"]
    assert good.where(F.col("rating").isNull()).count() == m["details"]["null:rating"]
    row = good.agg(F.min("created_at"), F.max("created_at"), F.min("rating"), F.max("rating")).first()
    assert str(row[0]) >= "2024-01-01" and str(row[1]) < "2026-01-01" and (row[2], row[3]) == (1, 5)
    assert good.where(F.col("text").contains("\n")).count() > 0  # embedded newlines survive multiLine
    df.unpersist()


def test_parquet_wrong_types_show_up_when_cast(spark, tmp_path: Path) -> None:
    res = generate(tmp_path / "pq", 4000, seed=22, datasets_dir=DATASETS, rates=RATES, chunk_rows=2000)
    m = res.manifest
    df = spark.read.schema(PARQUET_DDL).parquet(str(res.out))
    typed = df.select(
        "faults",
        *[
            (F.col(c).isNotNull() & F.col(c).try_cast(t).isNull()).alias(f"bad_{c}")
            for c, t in (("rating", "int"), ("amount", "double"), ("created_at", "timestamp"))
        ],
    )
    bad = typed.where(F.col("bad_rating") | F.col("bad_amount") | F.col("bad_created_at"))
    assert bad.count() == m["counts"]["malformed"] > 50
    assert bad.where(~F.col("faults").startswith("malformed:")).count() == 0
    assert typed.where("bad_rating").count() == m["details"]["malformed:bad_rating"]
    assert df.where(F.col("text").contains("\ufffd")).count() == m["counts"]["bad_encoding"]
