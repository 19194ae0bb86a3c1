"""Mining on real AG News: a scikit-learn head, BERT fine-tuning through TorchDistributor,
k=4 clustering with names, metrics, the HTML report and MLflow, in one pipeline run."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from dmine_spark.config import load_config
from dmine_spark.runner.run import run_stages
from tests.conftest import DATASETS, REPO

pytestmark = pytest.mark.slow

AG_CONF = REPO / "conf" / "base" / "pipelines" / "ag_news.yaml"
TOPICS = {"World", "Sports", "Business", "Sci/Tech"}


@pytest.fixture(scope="module")
def ag_run(spark, tmp_path_factory: pytest.TempPathFactory):
    if not (DATASETS / "ag_news_test" / "test.csv").is_file():
        pytest.fail(f"AG News not found under {DATASETS}")
    work = tmp_path_factory.mktemp("ag_work")
    cfg = load_config(
        AG_CONF,
        [
            f"sources.news.path={DATASETS}/ag_news_test/test.csv",
            "sources.news.sample=0.2",  # ~1,500 of the 7,600 items
            "sources.news.splits.train=0.8",
            "sources.news.splits.test=0.2",
            "database=dmine_mining",
            f"work_dir={work}",
            "classify.enabled=true",
            "classify.model=sk_linear_svc",
            "classify.grid.C=[0.1,1.0]",
            "finetune.enabled=true",
            "finetune.train_sample_rows=700",
            "finetune.epochs=1",
            "finetune.max_length=48",
            "finetune.batch_size=16",
            "finetune.lr=1e-4",
            "finetune.eval_every=10",
            "finetune.num_processes=2",  # two training processes (DDP over gloo)
        ],
    )
    run, reports = run_stages(spark, cfg, progress=False)
    return cfg, run, reports


def _metrics(spark, cfg, run, stage: str) -> dict[str, float]:
    rows = spark.table(cfg.table("metrics")).where((F.col("run_id") == run.run_id) & (F.col("stage") == stage))
    return {r["metric"]: r["value"] for r in rows.collect()}


def test_clusters_match_topics_and_have_names(spark, ag_run) -> None:
    cfg, run, reports = ag_run
    assert [r.stage for r in reports] == ["ingest", "clean", "embed", "classify", "finetune", "cluster"]
    m = _metrics(spark, cfg, run, "cluster")
    assert m["k"] == 4
    # k=4 KMeans on frozen MiniLM vectors recovers the four topics well above chance (0.25)
    assert m["hungarian_accuracy"] >= 0.7, m
    assert 0.0 < m["nmi"] <= 1.0 and -0.5 < m["ari"] <= 1.0
    assert 0.0 <= m["name_label_overlap"] <= 1.0  # topic labels (World, Sports...) are rarely a name's word
    summary = spark.table(cfg.table("cluster_terms")).collect()
    assert len(summary) == 4
    assert sum(r["size"] for r in summary) == run.counts["rows_clean"]
    texts = {r["text"] for r in spark.table(cfg.table("clean")).select("text").collect()}
    for r in summary:
        assert r["name"] and len(r["top_terms"]) >= 3
        assert len(r["exemplars"]) == 3 and set(r["exemplars"]) <= texts


def test_sklearn_head_with_grid_and_versioned_predictions(spark, ag_run) -> None:
    cfg, run, _ = ag_run
    m = _metrics(spark, cfg, run, "classify")
    assert m["accuracy"] >= 0.8, m
    assert {f"recall.{t}" for t in TOPICS} <= set(m)
    assert sum(1 for k in m if k.startswith("cv_f1[")) == 2  # one mean CV score per grid point
    version = run.labels["classify.model_version"]
    assert version.startswith("ag_news-sk_linear_svc@v")
    pred = spark.table(cfg.table("pred")).where((F.col("run_id") == run.run_id) & (F.col("stage") == "classify"))
    assert {r["model_version"] for r in pred.select("model_version").distinct().collect()} == {version}
    conf = spark.table(cfg.table("confusion")).where(F.col("run_id") == run.run_id)
    assert conf.agg(F.sum("count")).first()[0] == pred.count()
    per_metric = spark.table(cfg.table("metrics")).where(F.col("run_id") == run.run_id)
    assert per_metric.where(F.col("model_version").isNull()).count() == 0
    saved = Path(cfg.work_dir) / "models" / version.replace("@", "/") / "model" / "stages"
    assert len(list(saved.glob("*_ClassifierHead_*/model.skops"))) == 1  # a skops artefact, not a pickle


def test_finetune_saves_safetensors_and_scores_through_the_udf(spark, ag_run) -> None:
    cfg, run, _ = ag_run
    version = run.labels["finetune.model_version"]
    (hf,) = (Path(cfg.work_dir) / "models" / version.replace("@", "/") / "model" / "stages").glob("*_FineTuned*/hf")
    assert (hf / "model.safetensors").is_file() and not list(hf.glob("*.bin"))
    summary = json.loads((hf / "dmine_finetune.json").read_text())
    assert summary["processes"] == 2 and summary["train_rows"] > 500
    assert summary["history"] and summary["best_val_accuracy"] == max(h["val_accuracy"] for h in summary["history"])
    # the default head: mean-pooled embedding and a cosine classifier, started from a linear probe (step 0)
    assert summary["head"] == "pooled" and summary["history"][0]["step"] == 0
    assert (hf / "dmine_head.safetensors").is_file() and json.loads((hf / "dmine_head.json").read_text())["labels"]
    # the head re-fitted on the best checkpoint's features by rank 0, after the two processes finished
    assert summary["head_refit"]["val_accuracy_before"] == summary["best_val_accuracy"]
    assert 0.25 < summary["head_refit"]["val_accuracy"] <= 1.0
    labels = json.loads((hf / "config.json").read_text())["id2label"]
    assert set(labels.values()) == TOPICS
    m = _metrics(spark, cfg, run, "finetune")
    # one short epoch on ~630 rows already separates the four topics far above chance
    assert m["accuracy"] >= 0.6, m
    pred = spark.table(cfg.table("pred")).where((F.col("run_id") == run.run_id) & (F.col("stage") == "finetune"))
    n_test = spark.table(cfg.table("clean")).where("split = 'test'").count()
    assert pred.count() == n_test
    assert pred.where(~F.col("prediction").isin(*TOPICS) | (F.col("probability") <= 0.25)).count() == 0


def test_report_and_mlflow(spark, ag_run) -> None:
    import mlflow

    cfg, run, _ = ag_run
    report = Path(run.labels["report"])
    page = report.read_text(encoding="utf-8")
    for fig in ("fig-quality", "fig-confusion", "fig-clusters", "fig-throughput"):
        assert f'id="{fig}"' in page
    assert 'src="http' not in page and 'href="http' not in page  # self-contained
    client = mlflow.tracking.MlflowClient(run.labels["mlflow.tracking_uri"])
    mr = client.get_run(run.labels["mlflow.run_id"])
    assert mr.info.status == "FINISHED"
    assert mr.data.metrics["classify.accuracy"] == pytest.approx(run.measures["classify.accuracy"])
    assert mr.data.params["classify.model"] == "sk_linear_svc"
    arts = [a.path for a in client.list_artifacts(mr.info.run_id)]
    assert report.name in arts
    model = mlflow.sklearn.load_model(run.labels["mlflow.classifier_uri"])
    assert hasattr(model, "decision_function")


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_report_renders_in_headless_chromium(ag_run, tmp_path: Path) -> None:
    import os

    import numpy as np
    from matplotlib.image import imread

    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    _, run, _ = ag_run
    report = Path(run.labels["report"])
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=5000"]
    dom = subprocess.run(
        [*flags, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    # the page's own check: every figure decoded to a real image
    assert 'data-figures="4/4"' in dom, dom[:500]
    shot = tmp_path / "report.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1200,2400", report.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    img = imread(shot)
    assert img.shape[0] >= 2000 and img.shape[1] >= 1100
    assert float(np.std(img[..., :3])) > 0.05  # not a blank page
