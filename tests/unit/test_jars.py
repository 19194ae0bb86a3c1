"""The local jar cache and the spark-submit arguments drawn from it (no JVM)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dmine_spark.spark import jars
from dmine_spark.spark.jars import delta_conf
from tests.conftest import PIPELINE_CONF


def _fake_cache(root: Path) -> list[Path]:
    pkg = jars.package("delta")
    d = root / "delta" / pkg.folder
    (d / "ivy" / "jars").mkdir(parents=True)
    files = [d / "ivy" / "jars" / n for n in ("io.delta_delta-spark.jar", "io.delta_delta-storage.jar")]
    for f in files:
        f.write_bytes(b"PK")
    meta = {"coordinate": pkg.coordinate, "jars": [str(f.relative_to(d)) for f in files]}
    (d / "manifest.json").write_text(json.dumps(meta))
    return files


def test_cached_jars_are_listed_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DMINE_JARS_DIR", str(tmp_path))
    files = _fake_cache(tmp_path)
    assert jars.jar_files("delta") == files and jars.have("delta")
    files[1].unlink()
    with pytest.raises(jars.MissingJars, match=r"delta-storage\.jar is missing.*dmine jars fetch delta"):
        jars.jar_files("delta")


def test_delta_conf_keeps_the_users_extensions_and_jars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DMINE_JARS_DIR", str(tmp_path))
    files = _fake_cache(tmp_path)
    conf = delta_conf({"spark.jars": "/opt/x.jar", "spark.sql.extensions": "com.example.Ext"})
    assert conf["spark.jars"].split(",") == ["/opt/x.jar", *map(str, files)]
    assert conf["spark.sql.extensions"] == "com.example.Ext,io.delta.sql.DeltaSparkSessionExtension"
    assert conf["spark.sql.catalog.spark_catalog"] == "org.apache.spark.sql.delta.catalog.DeltaCatalog"
    # applied twice, nothing is added twice
    assert delta_conf(conf) == conf


def test_submit_args_follow_the_configs_table_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DMINE_JARS_DIR", str(tmp_path))
    assert jars.submit_args(str(PIPELINE_CONF)) == []  # auto, nothing cached: Parquet, no arguments
    files = _fake_cache(tmp_path)
    args = jars.submit_args(str(PIPELINE_CONF))
    assert args[:2] == ["--jars", ",".join(map(str, files))]
    assert "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension" in args
    assert jars.submit_args(None) == args  # dmine sql / tables: whatever is cached
    parquet = tmp_path / "p.yaml"
    parquet.write_text(PIPELINE_CONF.read_text() + "\ntables:\n  format: parquet\n")
    assert jars.submit_args(str(parquet)) == []


def test_unknown_package_is_named() -> None:
    with pytest.raises(ValueError, match=r"unknown JVM package 'nlp'; dmine_spark knows: delta, kafka"):
        jars.jar_files("nlp")


def test_a_session_needing_uncached_jars_says_how_to_fetch_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dmine_spark.config import ConfigError, SparkProfile
    from dmine_spark.spark.session import build_session

    monkeypatch.setenv("DMINE_JARS_DIR", str(tmp_path))
    with pytest.raises(
        ConfigError, match=r"spark-sql-kafka-0-10_2.1\d:[\d.]+ jars are not in .*dmine jars fetch kafka`"
    ):
        build_session(SparkProfile(), tmp_path / "work", extra_jars=["kafka"])


def test_submit_args_add_the_kafka_jars_for_a_kafka_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    monkeypatch.setenv("DMINE_JARS_DIR", str(tmp_path))
    d = tmp_path / "kafka" / jars.package("kafka").folder
    (d / "ivy" / "jars").mkdir(parents=True)
    (d / "ivy" / "jars" / "spark-sql-kafka.jar").write_bytes(b"PK")
    meta = {"coordinate": jars.package("kafka").coordinate, "jars": ["ivy/jars/spark-sql-kafka.jar"]}
    (d / "manifest.json").write_text(json.dumps(meta))
    conf = yaml.safe_load(PIPELINE_CONF.read_text())
    conf["stream"] = {"kafka": {"bootstrap_servers": "broker:9092", "topic": "tickets"}}
    cfg = tmp_path / "kafka.yaml"
    cfg.write_text(yaml.safe_dump(conf))
    args = jars.submit_args(str(cfg))
    assert args[:2] == ["--jars", str(d / "ivy" / "jars" / "spark-sql-kafka.jar")]
    assert jars.submit_args(str(PIPELINE_CONF)) == []  # no Delta cached here, no Kafka in the config


@pytest.mark.sparknlp
def test_submit_args_add_spark_nlp_jars_for_its_backends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import yaml

    monkeypatch.setenv("DMINE_JARS_DIR", str(tmp_path))
    pkg = jars.package("sparknlp")
    d = tmp_path / "sparknlp" / pkg.folder
    d.mkdir(parents=True)
    for j in pkg.pinned:
        (d / j.file_name).write_bytes(b"PK")
    (d / "manifest.json").write_text(
        json.dumps({"coordinate": pkg.coordinate, "jars": [j.file_name for j in pkg.pinned]})
    )
    conf = yaml.safe_load(PIPELINE_CONF.read_text())
    conf["embed"]["backend"] = "sparknlp"
    cfg = tmp_path / "snlp.yaml"
    cfg.write_text(yaml.safe_dump(conf))
    args = jars.submit_args(str(cfg))
    assert args[:2] == ["--jars", ",".join(str(d / j.file_name) for j in pkg.pinned)]
    assert jars.submit_args(str(PIPELINE_CONF)) == []  # the built-in backends need none of them
