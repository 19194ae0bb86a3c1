"""Delta Lake result tables: MERGE into the embedding cache, time travel, versions per run, a reader beside a writer."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from dmine_spark.config import ConfigError, SparkProfile
from dmine_spark.io.tables import (
    merge_new_keys,
    set_table_format,
    table_provider,
    track_versions,
    write_table,
)
from dmine_spark.spark import jars
from dmine_spark.spark.session import build_session

pytestmark = pytest.mark.slow

DB = "dmine_delta_it"


@pytest.fixture(scope="module")
def dspark(spark):
    """The test session, which runs Delta Lake when its jars are cached (`dmine jars fetch delta`)."""
    from dmine_spark.io.tables import delta_enabled

    if not delta_enabled(spark):
        msg = f"Delta Lake jars not in {jars.jars_dir()}; run `dmine jars fetch delta` (bash dev.sh setup does)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    spark.sql(f"CREATE DATABASE IF NOT EXISTS {DB}")
    prev = spark.conf.get("spark.dmine.tables.format", "parquet")
    set_table_format(spark, "delta")
    yield spark
    spark.conf.set("spark.dmine.tables.format", prev)


def _keys(n0: int, n1: int, tag: str = "a"):
    return [(f"k{i:04d}", "m", f"{tag}{i}") for i in range(n0, n1)]


def test_missing_jars_name_the_fetch_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DMINE_JARS_DIR", str(tmp_path / "empty"))
    with pytest.raises(jars.MissingJars, match=r"dmine jars fetch delta"):
        jars.jar_files("delta")
    # the session a `dmine run` with tables.format: delta would start refuses before any JVM starts
    with pytest.raises(ConfigError, match=r"^tables\.format: delta: .*dmine jars fetch delta"):
        build_session(SparkProfile(), tmp_path / "work", table_format="delta")
    assert not jars.have("delta")  # so `auto` means Parquet
    # a cache holding another version is refused, not used
    folder = tmp_path / "empty" / "delta" / jars.package("delta").folder
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"coordinate": "io.delta:x:0", "jars": []}))
    with pytest.raises(jars.MissingJars, match=r"holds io\.delta:x:0"):
        jars.jar_files("delta")


def test_merge_never_stores_a_key_twice(dspark) -> None:
    name = f"{DB}.merge_keys"
    dspark.sql(f"DROP TABLE IF EXISTS {name}")
    schema = "key STRING, model STRING, value STRING"
    merge_new_keys(dspark.createDataFrame(_keys(0, 100), schema), name, ["key", "model"])
    # the same keys again, with new values: nothing changes (first write wins)
    merge_new_keys(dspark.createDataFrame(_keys(0, 100, "b"), schema), name, ["key", "model"])
    # overlapping and new keys, and a duplicate row offered twice in one batch of new keys
    batch = _keys(50, 150, "c") + [("k0149", "m", "c149-again")]
    merge_new_keys(dspark.createDataFrame(batch, schema), name, ["key", "model"])
    df = dspark.table(name)
    assert table_provider(dspark, name) == "delta"
    assert df.count() == df.select("key", "model").distinct().count() == 150
    assert {r["value"][0] for r in df.collect()} == {"a", "c"}
    assert df.where("key = 'k0000'").first()["value"] == "a0"


def test_concurrent_merges_leave_one_row_per_key(dspark) -> None:
    """Two writers offering overlapping keys at the same moment: Delta's commit protocol plus retry."""
    name = f"{DB}.merge_race"
    dspark.sql(f"DROP TABLE IF EXISTS {name}")
    schema = "key STRING, model STRING, value STRING"
    merge_new_keys(dspark.createDataFrame(_keys(0, 10), schema), name, ["key", "model"])
    errors: list[BaseException] = []

    def writer(lo: int, hi: int, tag: str) -> None:
        try:
            for step in range(3):
                merge_new_keys(dspark.createDataFrame(_keys(lo + step, hi + step, tag), schema), name, ["key", "model"])
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=writer, args=(0, 300, "x")),
        threading.Thread(target=writer, args=(100, 400, "y")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    df = dspark.table(name)
    assert df.count() == df.select("key").distinct().count() == 402


def test_time_travel_by_version_and_timestamp(dspark) -> None:
    name = f"{DB}.travel"
    dspark.sql(f"DROP TABLE IF EXISTS {name}")
    with track_versions() as seen:
        write_table(dspark.range(5).withColumn("run", F.lit("r1")), name)
        v1 = seen[name]
        time.sleep(1.1)  # commit timestamps have millisecond resolution; keep the two apart
        write_table(dspark.range(7).withColumn("run", F.lit("r2")), name)
        v2 = seen[name]
    assert v2 == v1 + 1
    hist = {r["version"]: r["timestamp"] for r in dspark.sql(f"DESCRIBE HISTORY {name}").collect()}
    assert dspark.table(name).count() == 7
    old = dspark.sql(f"SELECT * FROM {name} VERSION AS OF {v1}")
    assert old.count() == 5 and {r["run"] for r in old.collect()} == {"r1"}
    ts = hist[v1].strftime("%Y-%m-%d %H:%M:%S.%f")
    at = dspark.sql(f"SELECT * FROM {name} TIMESTAMP AS OF '{ts}'")
    assert {r["run"] for r in at.collect()} == {"r1"}


def test_parquet_history_table_is_converted_in_place(dspark) -> None:
    """A history table written as Parquet by an earlier run becomes Delta with its rows kept."""
    name = f"{DB}.history"
    dspark.sql(f"DROP TABLE IF EXISTS {name}")
    dspark.range(3).write.format("parquet").saveAsTable(name)
    assert table_provider(dspark, name) == "parquet"
    write_table(dspark.range(3, 5), name, mode="append")
    assert table_provider(dspark, name) == "delta"
    assert sorted(r["id"] for r in dspark.table(name).collect()) == [0, 1, 2, 3, 4]


_READER = """
import json, os, sys
from pyspark.sql import SparkSession
from dmine_spark.spark.jars import delta_conf
b = SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
for k, v in delta_conf({}).items():
    b = b.config(k, v)
spark = b.getOrCreate()
path, log, stop = sys.argv[1:4]
while not os.path.exists(stop):
    try:
        rec = {"n": spark.read.format("delta").load(path).count()}
    except Exception as exc:
        rec = {"error": str(exc).splitlines()[0]}
    with open(log, "a") as fh:
        fh.write(json.dumps(rec) + "\\n")
"""


def test_reader_in_another_process_sees_whole_versions(dspark, tmp_path: Path) -> None:
    """While this process overwrites and appends, another process reads: every read is one committed version."""
    name = f"{DB}.shared"
    dspark.sql(f"DROP TABLE IF EXISTS {name}")
    write_table(dspark.range(1000).withColumn("part", F.col("id") % 7), name)
    path = dspark.sql(f"DESCRIBE DETAIL {name}").first()["location"]
    log, stop = tmp_path / "reads.jsonl", tmp_path / "stop"
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER, path, str(log), str(stop)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def reads() -> list[dict]:
        return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []

    sizes, n, deadline = {1000}, 1000, time.time() + 240
    try:
        # the reader's JVM starts on idle cores: the writes begin with its first read
        while not reads() and time.time() < deadline and reader.poll() is None:
            time.sleep(0.2)
        # keep writing until the reader has read at least 8 times, the later ones during the writes
        while len(reads()) < 8 and time.time() < deadline and reader.poll() is None:
            n = 2000 if n == 1000 else 1000
            write_table(dspark.range(n).withColumn("part", F.col("id") % 7), name)
            write_table(dspark.range(n, n + 500).withColumn("part", F.col("id") % 7), name, mode="append")
            sizes |= {n, n + 500}
    finally:
        stop.touch()
        _, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err[-2000:]
    got = reads()
    assert len(got) >= 8, (len(got), err[-2000:])
    assert not [r for r in got if "error" in r], got[:3]
    assert {r["n"] for r in got} <= sizes, {r["n"] for r in got} - sizes
