"""The BANKING77 pipeline with ``classify.open_set``: ten intents only the test split has are the open class."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import functions as F

from dmine_spark.analyze.report import render_report
from dmine_spark.config import Layer, load_config
from dmine_spark.mine.textmodel import head_of, open_set_of
from dmine_spark.runner.run import run_stages
from tests.conftest import PIPELINE_CONF, csv_lines, read_csv_rows


@pytest.fixture(scope="module")
def open_run(spark, banking77: Path, tmp_path_factory: pytest.TempPathFactory):
    every = read_csv_rows(banking77 / "train.csv")
    open_intents = sorted({r["category"] for r in every})[::8]  # 10 of the 77 intents
    train = [r for r in every[::2] if r["category"] not in open_intents]
    test = read_csv_rows(banking77 / "test.csv")[::3]
    d = tmp_path_factory.mktemp("open_set")
    (d / "train.csv").write_text("text,category\n" + "".join(csv_lines(train)), encoding="utf-8")
    (d / "test.csv").write_text("text,category\n" + "".join(csv_lines(test)), encoding="utf-8")
    cfg = load_config(
        PIPELINE_CONF,
        [
            f"sources.train.path={d}/train.csv",
            f"sources.test.path={d}/test.csv",
            "database=dmine_open",
            f"work_dir={tmp_path_factory.mktemp('open_work')}",
            "classify.open_set.method=knn",
            "cluster.k=12",
        ],
    )
    run, reports = run_stages(spark, cfg, ["ingest", "clean", "embed", "classify", "cluster"], progress=False)
    n_open = sum(r["category"] in open_intents for r in test)
    return cfg, run, {r.stage: r for r in reports}, n_open


def test_metrics_give_open_set_figures_and_the_stage_line_says_what_became_unknown(spark, open_run) -> None:
    cfg, run, reports, n_open = open_run
    m = {
        r["metric"]: r["value"]
        for r in spark.table(cfg.table(Layer.METRICS)).where(F.col("run_id") == run.run_id).collect()
    }
    for key in ("accuracy", "macro_f1", "open_precision", "open_recall", "open_f1", "accuracy_known", "open_threshold"):
        assert key in m, key
    assert m["open_rows"] == n_open
    assert m["open_recall"] > 0.6 and m["open_precision"] > 0.4
    # the open rows count as right when answered unknown: a closed head would be capped at 1 - 0.13
    assert m["accuracy"] > 0.75 and m["accuracy_known"] > 0.75
    line = reports["classify"].summary
    assert "are the open class 'unknown'" in line and "open recall" in line


def test_predictions_carry_the_open_score_and_the_saved_model_keeps_its_open_set_stage(spark, open_run) -> None:
    cfg, run, _, _ = open_run
    pred = spark.table(cfg.table(Layer.PRED)).where((F.col("run_id") == run.run_id) & (F.col("stage") == "classify"))
    assert pred.where("open_score IS NULL").isEmpty()
    assert pred.where("prediction = 'unknown'").count() > 0
    from dmine_spark.mine.store import ModelStore

    model, _ = ModelStore(cfg.paths.models).load(f"{cfg.task}-{cfg.classify.model}")
    assert open_set_of(model) is not None and head_of(model) is not open_set_of(model)


def test_the_report_draws_open_class_precision_and_recall_against_the_threshold(spark, open_run) -> None:
    cfg, run, _, _ = open_run
    curve = spark.table(cfg.table(Layer.OPEN_CURVE)).where(F.col("run_id") == run.run_id).collect()
    assert len(curve) == 21
    page = render_report(spark, cfg, run.run_id)
    assert "<h2>Open-set detection</h2>" in page and 'id="fig-open-set"' in page


def test_the_readme_query_groups_unanswered_questions_by_nearest_cluster(spark, open_run) -> None:
    import re

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    query = re.search(r'dmine sql "(SELECT t\.name AS nearest_cluster.*?)"', readme, re.S).group(1)
    got = spark.sql(query.replace("dmine.", "dmine_open.")).collect()
    assert got and all(r["questions"] > 0 and r["nearest_cluster"] for r in got)
    cfg, run, _, _ = open_run
    unknown = spark.table(cfg.table(Layer.PRED)).where("stage = 'classify' AND prediction = 'unknown'").count()
    assert sum(r["questions"] for r in got) <= unknown


def test_every_question_gets_a_template_or_none_and_unknown_ones_never_by_intent(spark, open_run) -> None:
    cfg, run, reports, _ = open_run
    rows = spark.table(cfg.table(Layer.ANSWER)).where(F.col("run_id") == run.run_id).collect()
    pred = spark.table(cfg.table(Layer.PRED)).where((F.col("run_id") == run.run_id) & (F.col("stage") == "classify"))
    assert len(rows) == pred.count()
    routes = {r["answer_by"] for r in rows}
    assert routes <= {"intent", "similarity", "none"} and {"intent", "none"} <= routes
    for r in rows:
        if r["answer_by"] == "intent":
            assert r["answer_intent"] == r["prediction"] != "unknown" and r["probability"] >= 0.5
        elif r["answer_by"] == "similarity":
            assert r["answer_score"] >= 0.5
        else:
            assert r["answer_id"] is None and r["answer_score"] is None
    m = {
        r["metric"]: r["value"]
        for r in spark.table(cfg.table(Layer.METRICS)).where(F.col("run_id") == run.run_id).collect()
    }
    # a confident intent's own template is the right one for nearly every question answered that way
    assert m["answer_accuracy_by_intent"] > 0.9
    assert "answers (22 templates)" in reports["classify"].summary
