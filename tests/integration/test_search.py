"""The search stage and `dmine search` on the BANKING77 slice of the session's pipeline run: neighbours, 1-NN, index."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from tests.conftest import PIPELINE_CONF, REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def searched(pipeline_run):
    """The demo pipeline on the dirty slice (every stage, search on with k = 5), run once for the session."""
    cfg, run, reports, overrides = pipeline_run
    assert cfg.search.enabled and cfg.search.k == 5
    return cfg, run, next(r for r in reports if r.stage == "search"), overrides


def test_the_search_stage_writes_k_neighbours_per_query_and_the_1nn_agreement(spark, searched) -> None:
    from dmine_spark.config import Layer

    cfg, run, report, _ = searched
    table = spark.table(cfg.table(Layer.NEIGHBORS))
    assert {"id", "rank", "neighbor_id", "score", "model_version", "run_id"} <= set(table.columns)
    clean = spark.table(cfg.table(Layer.CLEAN))
    n_test = clean.where("split = 'test'").count()
    per_query = table.groupBy("id").agg(F.count("*").alias("n"), F.max("rank").alias("top"))
    assert per_query.count() == n_test == run.counts["search.query_rows"]
    assert per_query.where("n != 5 OR top != 5").isEmpty()
    corpus = clean.where("split = 'train'").select(F.col("id").alias("neighbor_id"))
    assert table.join(corpus, "neighbor_id", "left_anti").isEmpty()  # every neighbour is a training row
    assert table.select("model_version").distinct().first()[0] == "banking77-index@v1"
    metric = (
        spark.table(cfg.table(Layer.METRICS))
        .where((F.col("run_id") == run.run_id) & (F.col("metric") == "knn_top1_accuracy"))
        .first()
    )
    # a quarter of the training questions still puts a same-intent question first for most test questions
    assert 0.6 <= metric["value"] <= 1.0
    assert f"1-NN label agreement {metric['value']:.4f}" in report.line()


def test_the_report_shows_example_neighbours_with_their_texts(spark, searched) -> None:
    from dmine_spark.analyze.report import render_report

    cfg, run, _, _ = searched
    page = render_report(spark, cfg, run.run_id)
    assert "<h2>Example neighbours</h2>" in page
    section = page.split("<h2>Example neighbours</h2>", 1)[1].split("<h2>", 1)[0]
    assert section.count("<tr>") == 1 + 5 * 3  # the header, then 5 questions with their 3 nearest rows


def test_later_queries_run_no_spark_job_and_no_model_load(spark, searched) -> None:
    import dmine_spark as dm
    from dmine_spark.features.encoder import is_loaded

    cfg, *_ = searched
    searcher = dm.Searcher.load(cfg.task, spark=spark, work_dir=cfg.work_dir)
    first = searcher.query("my card still has not arrived", 3)
    assert list(first.columns) == ["rank", "score", "neighbor_id", "text", "label"]
    assert first["rank"].tolist() == [1, 2, 3] and first["score"].is_monotonic_decreasing
    assert first["label"].iloc[0] == "card_arrival"
    assert is_loaded(searcher.spec)
    tracker = spark.sparkContext.statusTracker()
    spark.sparkContext.setJobGroup("dmine-second-query", "second query")
    try:
        again = searcher.query("my card still has not arrived", 3)  # memoised
        new = searcher.query("Ｔｈｅ ATM ate my card, call me on +44 20 7946 0958", 3)  # cleaned on the driver
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    assert tracker.getJobIdsForGroup("dmine-second-query") == []
    assert again.equals(first)
    assert searcher.clean(["Ｔｈｅ ATM ate my card, call me on +44 20 7946 0958"]) == [
        "The ATM ate my card, call me on <PHONE>"
    ]
    assert new["label"].iloc[0] == "card_swallowed"


def test_dmine_search_prints_the_nearest_training_questions(searched) -> None:
    cfg, _, _, overrides = searched
    sets = [a for o in overrides for a in ("--set", o)]
    cmd = [sys.executable, "-m", "dmine_spark.cli", "search", str(PIPELINE_CONF), "I lost my card", "--k", "3", *sets]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("dmine search: banking77-index@v1,")
    assert lines[1] == "'I lost my card':"
    hits = lines[2:5]
    assert [h.split(".")[0].strip() for h in hits] == ["1", "2", "3"]
    assert any("lost_or_stolen_card" in h for h in hits)


def test_dmine_search_without_an_index_is_one_line(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "dmine_spark.cli", "search", str(PIPELINE_CONF), "hello", "--work-dir", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("dmine: error: no saved model named 'banking77-index'")
