"""The pre-run path check and Spark agree on what a Hadoop glob matches."""

from __future__ import annotations

from pathlib import Path

from dmine_spark.config.load import local_matches

PATTERNS = [
    "{a,b}.jsonl",
    "{x,{y,z}}.csv",
    "{x,{y,nothing}}.csv",
    "[ab].csv",
    "[^ax-z].csv",
    "?.jsonl",
    "{sub/q,a}.csv",
    "{sub/*,{x,y}}.csv",
]


def test_spark_reads_the_files_the_check_finds(spark, tmp_path: Path) -> None:
    for name in ("a.jsonl", "b.jsonl", "x.csv", "y.csv", "z.csv", "a.csv", "c.csv", "sub/q.csv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("hello\n", encoding="utf-8")
    for pattern in PATTERNS:
        path = f"{tmp_path}/{pattern}"
        listed = sorted(r.path.removeprefix("file:") for r in spark.read.format("binaryFile").load(path).collect())
        assert listed == local_matches(path), pattern
