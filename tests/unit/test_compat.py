"""The Spark lines: which one runs, the jars that match it, and the one-line refusals (no JVM)."""

from __future__ import annotations

import pytest

from dmine_spark import compat
from dmine_spark.config import ConfigError
from dmine_spark.spark import jars


@pytest.mark.parametrize(
    ("version", "line", "scala"),
    [("3.5.0", "3.5", "2.12"), ("3.5.9", "3.5", "2.12"), ("4.0.1", "4.x", "2.13"), ("4.2.1", "4.x", "2.13")],
)
def test_each_supported_version_has_its_line(version: str, line: str, scala: str) -> None:
    got = compat.line_for(version)
    assert (got.name, got.scala) == (line, scala)


@pytest.mark.parametrize("version", ["3.4.4", "3.3.0", "4.3.0", "5.0.0"])
def test_unsupported_versions_name_the_supported_lines(version: str) -> None:
    with pytest.raises(compat.UnsupportedSpark, match=r"not supported; dmine_spark runs on the 3\.5 line .* 4\.x line"):
        compat.line_for(version)


def test_the_installed_pyspark_is_a_supported_line() -> None:
    import pyspark

    assert compat.current_line() == compat.line_for(pyspark.__version__)


@pytest.mark.parametrize(
    ("version", "delta", "kafka"),
    [
        ((3, 5, 9), "io.delta:delta-spark_2.12:3.3.3", "org.apache.spark:spark-sql-kafka-0-10_2.12:3.5.7"),
        ((4, 0, 1), "io.delta:delta-spark_2.13:4.0.1", "org.apache.spark:spark-sql-kafka-0-10_2.13:4.0.1"),
        ((4, 1, 0), "io.delta:delta-spark_2.13:4.3.1", "org.apache.spark:spark-sql-kafka-0-10_2.13:4.1.0"),
        ((4, 2, 1), "io.delta:delta-spark_2.13:4.4.0", "org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0"),
    ],
)
def test_jars_follow_the_spark_minor(version: tuple[int, int, int], delta: str, kafka: str) -> None:
    pkgs = jars.packages(version)
    assert (pkgs["delta"].coordinate, pkgs["kafka"].coordinate) == (delta, kafka)
    # Spark NLP exists for the 3.5 line only, as an explicit, checksummed list
    assert ("sparknlp" in pkgs) == (version[:2] == (3, 5))


def test_spark_nlp_is_an_explicit_checksummed_list() -> None:
    pkg = jars.packages((3, 5, 9))["sparknlp"]
    coords = [j.coordinate for j in pkg.pinned]
    assert coords[0] == "com.johnsnowlabs.nlp:spark-nlp_2.12:5.5.3" == pkg.coordinate
    assert "com.amazonaws:aws-java-sdk-core:1.12.500" in coords and "org.tensorflow:ndarray:0.4.0" in coords
    assert all(len(j.sha256) == 64 for j in pkg.pinned)
    assert pkg.pinned[0].url() == (
        "https://repo1.maven.org/maven2/com/johnsnowlabs/nlp/spark-nlp_2.12/5.5.3/spark-nlp_2.12-5.5.3.jar"
    )
    assert pkg.folder == "spark-nlp_2.12-5.5.3"


def test_a_pinned_jar_with_another_checksum_is_refused(tmp_path, monkeypatch) -> None:
    import http.server
    import threading

    # a local repository serving a jar whose bytes are not the pinned ones
    jar = jars.PinnedJar("org.example:thing:1.0", "0" * 64)
    path = tmp_path / "repo" / "org" / "example" / "thing" / "1.0"
    path.mkdir(parents=True)
    (path / "thing-1.0.jar").write_bytes(b"PK not the pinned jar")
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path / "repo"), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dest = tmp_path / "cache"
        dest.mkdir()
        with pytest.raises(jars.MissingJars, match=r"org.example:thing:1.0: SHA-256 .* does not match the pinned"):
            jars._download(jar, dest, f"http://127.0.0.1:{server.server_port}")
        assert list(dest.iterdir()) == []  # nothing half-written stays in the cache
    finally:
        server.shutdown()


@pytest.mark.spark4
def test_spark_nlp_on_the_4x_line_names_the_35_line() -> None:
    from dmine_spark.prepare.sparknlp import require_sparknlp

    with pytest.raises(jars.MissingJars, match=r"Spark NLP has no build for Spark 4.* `bash dev.sh setup --spark 3.5`"):
        jars.package("sparknlp")
    with pytest.raises(ConfigError, match=r"^embed.backend: sparknlp: Spark NLP has no build for Spark 4.*3\.5 line"):
        require_sparknlp(None, "embed.backend")


@pytest.mark.parametrize(
    ("runtime", "line"),
    [("15.4.x-cpu-ml-scala2.12", "3.5"), ("16.4.x-scala2.12", "3.5"), ("17.3.x-cpu-ml-scala2.13", "4.x")],
)
def test_databricks_runtimes_map_to_lines(runtime: str, line: str) -> None:
    assert compat.databricks_line(runtime).name == line


@pytest.mark.parametrize(
    ("runtime", "error"),
    [("13.3.x-scala2.12", r"Spark 3\.4 or older.*14\.3 LTS or newer"), ("16.4.x-scala2.13", r"Scala 2\.12, not 2\.13")],
)
def test_databricks_runtimes_off_the_lines_are_refused(runtime: str, error: str) -> None:
    with pytest.raises(compat.UnsupportedSpark, match=error):
        compat.databricks_line(runtime)
