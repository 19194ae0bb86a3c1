"""The driver JVM's class-data archive: which options a driver gets, and where the archive lives; no JVM."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmine_spark.config import SparkProfile
from dmine_spark.spark import classcache
from dmine_spark.spark import session as spark_session


@pytest.fixture
def archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "driver.jsa"
    path.write_bytes(b"recorded")
    monkeypatch.delenv("DMINE_JVM_ARCHIVE_RECORD", raising=False)
    monkeypatch.setenv("DMINE_JVM_ARCHIVE", str(path))
    return path


def test_a_driver_maps_the_archive_quietly(archive: Path, tmp_path: Path) -> None:
    opts = spark_session.driver_java_options(tmp_path).split()
    assert f"-XX:SharedArchiveFile={archive}" in opts
    # a stale archive is ignored by the JVM; its warning about that stays off the console
    assert "-Xlog:cds=off" in opts and "-Xlog:cds+dynamic=off" in opts


def test_the_archive_can_be_turned_off_and_a_missing_one_is_no_option(
    archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DMINE_JVM_ARCHIVE", "off")
    assert "Archive" not in spark_session.driver_java_options(tmp_path)
    monkeypatch.setenv("DMINE_JVM_ARCHIVE", str(tmp_path / "nowhere.jsa"))
    assert "Archive" not in spark_session.driver_java_options(tmp_path)


def test_recording_replaces_using(archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DMINE_JVM_ARCHIVE_RECORD", str(tmp_path / "new.jsa"))
    opts = spark_session.driver_java_options(tmp_path)
    assert f"-XX:ArchiveClassesAtExit={tmp_path / 'new.jsa'}" in opts and "SharedArchiveFile" not in opts


def test_a_profiles_own_archive_options_win(archive: Path, tmp_path: Path) -> None:
    own = SparkProfile(conf={"spark.driver.extraJavaOptions": "-XX:SharedArchiveFile=/opt/mine.jsa"})
    opts = spark_session.driver_java_options(tmp_path, own)
    assert opts.count("SharedArchiveFile") == 1 and "/opt/mine.jsa" in opts


def test_each_java_and_spark_install_has_its_own_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DMINE_JARS_DIR", str(tmp_path / "cache"))
    spark = tmp_path / "spark"
    (spark / "jars").mkdir(parents=True)
    (spark / "jars" / "spark-core_2.13-4.2.0.jar").write_bytes(b"")
    monkeypatch.setenv("SPARK_HOME", str(spark))
    first = classcache.archive_path()
    assert first is not None and first.parent == tmp_path / "cache" / "jvm" and first.suffix == ".jsa"
    assert classcache.archive_path() == first  # stable for one install
    (spark / "jars" / "spark-core_2.13-4.2.0.jar").rename(spark / "jars" / "spark-core_2.12-3.5.6.jar")
    assert classcache.archive_path() != first
    # without an archive for this install, a driver starts as before
    monkeypatch.delenv("DMINE_JVM_ARCHIVE", raising=False)
    assert classcache.archive_java_options() == ""


def test_without_java_there_is_no_archive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert classcache.archive_path() is None
