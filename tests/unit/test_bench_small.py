"""``dmine bench small``: which commands each case and variant times, and the ratios it reports (no JVM)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from dmine_spark.tools import bench_small as bs


@pytest.fixture
def datasets(tmp_path: Path) -> Path:
    d = tmp_path / "datasets" / "banking77"
    d.mkdir(parents=True)
    for split, n in (("train", 2000), ("test", 400)):
        with (d / f"{split}.csv").open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["text", "category"])
            w.writerows([f"text {i}", f"intent_{i % 77}"] for i in range(n))
    return tmp_path / "datasets"


def test_each_case_times_every_variant_with_its_own_settings(
    datasets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[list[str], dict[str, str]]] = []
    seconds = {"no_archive": 30.0, "spark_no_archive": 20.0, "spark": 12.0}

    def fake(cmd: list[str], env: dict[str, str]) -> float:
        calls.append((cmd, env))
        engine = "spark" if "--engine" in cmd else "dmine"
        archive = env.get("DMINE_JVM_ARCHIVE") != "off"
        if "sql" in cmd:
            return 1.0 if engine == "dmine" else seconds["spark" if archive else "spark_no_archive"]
        return 15.0 if archive else seconds["no_archive"]

    monkeypatch.setattr(bs, "_timed", fake)
    monkeypatch.setenv("DMINE_JVM_ARCHIVE", "off")  # the caller's own setting does not leak into the variants
    res = bs.bench_small(datasets, work_dir=tmp_path / "w", repeat=2, echo=lambda _: None)
    # 2 cases x 2 variants x 2 runs of pipelines, and 3 sql variants x 2 runs on the first pipeline's catalog
    assert len(calls) == 8 + 6
    runs = [c for c, _ in calls if "run" in c]
    assert all("--stages" in c for c in runs)
    assert sum("ingest,clean,embed,classify" in c for c in runs) == 4 and sum("ingest,clean" in c for c in runs) == 4
    assert len({c[c.index("--work-dir") + 1] for c in runs}) == 8  # a fresh work dir each run
    sql = [c for c, _ in calls if "sql" in c]
    first_catalog = runs[0][runs[0].index("--work-dir") + 1]
    assert all(c[c.index("--work-dir") + 1] == first_catalog for c in sql)
    assert res["pipeline_1k"]["dmine"]["median_s"] == 15.0 and res["pipeline_1k"]["dmine"]["runs_s"] == [15.0, 15.0]
    assert res["ratio"]["pipeline_1k"] == {"dmine": 2.0, "no_archive": 1.0}
    assert res["ratio"]["sql"] == {"dmine": 20.0, "spark": pytest.approx(20 / 12), "spark_no_archive": 1.0}
    lines = bs.summary_lines(res)
    assert lines[0].split() == ["case", "variant", "median", "s", "range", "s", "ratio"]
    assert any(line.split()[:2] == ["sql", "dmine"] and line.endswith("20.00x") for line in lines)
    # the inputs: 800 + 200 and 10 + 10 rows, spread over many intents
    train = list(csv.DictReader((tmp_path / "w" / "bench_small" / "inputs" / "pipeline_1k_train.csv").open()))
    assert len(train) == 800 and len({r["category"] for r in train}) == 77
    assert (
        len(list(csv.DictReader((tmp_path / "w" / "bench_small" / "inputs" / "ingest_clean_20_test.csv").open()))) == 10
    )


def test_sql_alone_first_makes_its_catalog(datasets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(bs, "_timed", lambda cmd, env: calls.append(cmd) or 1.0)
    res = bs.bench_small(datasets, work_dir=tmp_path, repeat=1, cases=["sql"], echo=lambda _: None)
    assert "run" in calls[0] and all("sql" in c for c in calls[1:]) and len(calls) == 4
    assert set(res) == {"repeat", "sql", "ratio"}


def test_bad_arguments_are_one_line(datasets: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown case 'huge'"):
        bs.bench_small(datasets, work_dir=tmp_path, cases=["huge"])
    with pytest.raises(ValueError, match="--repeat must be at least 1"):
        bs.bench_small(datasets, work_dir=tmp_path, repeat=0)
    with pytest.raises(FileNotFoundError, match="banking77"):
        bs.bench_small(tmp_path / "nowhere", work_dir=tmp_path)
