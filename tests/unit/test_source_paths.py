"""The pre-run check of a source path reads it as Spark does, a Hadoop glob; no JVM."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmine_spark.config import ConfigError, load_config
from dmine_spark.config.load import expand_braces, local_matches
from tests.conftest import PIPELINE_CONF, REPO


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(REPO)  # the config's other source is a path relative to the repository
    for name in ("a.jsonl", "b.jsonl", "x.csv", "y.csv", "z.csv", "a.csv", "c.csv", "sub/q.csv", "*.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("text\nhello\n", encoding="utf-8")
    return tmp_path


def _train_path(path: str):
    return load_config(PIPELINE_CONF, [f"sources.train.path={path}"]).sources["train"].path


@pytest.mark.parametrize(
    ("pattern", "matched"),
    [
        ("{a,b}.jsonl", ["a.jsonl", "b.jsonl"]),
        ("{x,{y,z}}.csv", ["x.csv", "y.csv", "z.csv"]),
        ("{x,{y,nothing}}.csv", ["x.csv", "y.csv"]),  # Spark reads what the alternatives match
        ("[ab].csv", ["a.csv"]),
        ("[^ax-z].csv", ["c.csv"]),  # Hadoop's negation, [!...] in Python
        ("?.jsonl", ["a.jsonl", "b.jsonl"]),
        ("{sub/q,a}.csv", ["a.csv", "sub/q.csv"]),  # a group may hold a folder
        ("\\*.txt", ["*.txt"]),  # an escaped star is itself
        ("sub", ["sub"]),  # a folder
    ],
)
def test_hadoop_globs_pass_the_check(data: Path, pattern: str, matched: list[str]) -> None:
    assert local_matches(f"{data}/{pattern}") == [f"{data}/{m}" for m in matched]
    assert _train_path(f"{data}/{pattern}") == f"{data}/{pattern}"
    assert local_matches(f"file://{data}/{pattern}") == [f"{data}/{m}" for m in matched]


@pytest.mark.parametrize("pattern", ["missing.csv", "{m,n}.jsonl", "{x,{n,o}}.jsonl", "[de].csv", "sub/*.jsonl"])
def test_a_pattern_that_matches_nothing_fails_in_one_line(data: Path, pattern: str) -> None:
    with pytest.raises(ConfigError) as err:
        _train_path(f"{data}/{pattern}")
    assert str(err.value) == f"{PIPELINE_CONF}: sources.train.path: no file matches '{data}/{pattern}'"


def test_a_group_never_closed_is_one_line(data: Path) -> None:
    with pytest.raises(ConfigError) as err:
        _train_path(f"{data}/{{a,b.jsonl")
    assert str(err.value) == (
        f"{PIPELINE_CONF}: sources.train.path: '{data}/{{a,b.jsonl' is not a glob Spark reads: a '{{' is never closed"
    )


def test_braces_expand_as_hadoop_reads_them() -> None:
    assert expand_braces("d/{a,{b,c{1,2}}}.x") == ["d/a.x", "d/b.x", "d/c1.x", "d/c2.x"]
    assert expand_braces("{a,b}{1,2}") == ["a1", "a2", "b1", "b2"]
    assert expand_braces("a,b}") == ["a,b}"]  # outside a group, a comma and a } are themselves
    assert expand_braces("{a,}x") == ["ax", "x"]
    assert expand_braces("\\{a,b\\}") == ["\\{a,b\\}"]  # escaped: no group


def test_other_file_systems_are_left_to_spark() -> None:
    for path in ("hdfs://nn/data/{a,b}.csv", "s3a://bucket/x.csv", "dbfs:/mnt/x.csv", "abfss://c@a.dfs/x"):
        assert local_matches(path) is None
