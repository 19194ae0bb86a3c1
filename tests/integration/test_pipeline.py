"""The whole pipeline on a slice of the real BANKING77, with dirty rows mixed in (the shared ``pipeline_run``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from dmine_spark.config import Layer
from dmine_spark.features.encoder import auto_precision
from dmine_spark.io.tables import PREDICTION_SCHEMA, delta_enabled, table_provider
from dmine_spark.runner.run import run_stages
from tests.conftest import EMPTY, MALFORMED, MISSING, REPO

pytestmark = pytest.mark.slow


def _this_run(spark, cfg, run, layer: Layer, stage: str | None = None):
    df = spark.table(cfg.table(layer)).where(F.col("run_id") == run.run_id)
    return df.where(F.col("stage") == stage) if stage else df


def test_counts_reconcile(pipeline_run, dirty_slice) -> None:
    _, run, _, _ = pipeline_run
    c = run.counts
    assert c["ingest.rows_in.train"] == dirty_slice["train"] + len(MALFORMED) + len(MISSING) + len(EMPTY)
    assert c["ingest.rows_in.test"] == dirty_slice["test"]
    assert c["rows_in"] == c["rows_clean"] + c["rows_quarantined"] + c["rows_duplicate"]


def test_dirty_rows_are_quarantined_with_their_rule(spark, pipeline_run) -> None:
    cfg, run, _, _ = pipeline_run
    q = spark.table(cfg.table(Layer.QUARANTINE)).where(F.col("run_id") == run.run_id)
    assertDataFrameEqual(
        q.groupBy("stage", "rule").count(),
        spark.createDataFrame(
            [
                ("ingest", "malformed_record", len(MALFORMED)),
                ("ingest", "missing_required_field", len(MISSING)),
                ("clean", "empty_text", len(EMPTY)),
            ],
            "stage STRING, rule STRING, count LONG",
        ),
    )
    assert "only one field" in {r["raw"] for r in q.where("rule = 'malformed_record'").collect()}
    assert q.where(F.col("reason").isNull() | F.col("source_file").isNull()).isEmpty()


def test_every_duplicate_points_at_a_kept_row(spark, pipeline_run) -> None:
    cfg, run, _, _ = pipeline_run
    dup = spark.table(cfg.table(Layer.DUP))
    assert dup.count() == run.counts["rows_duplicate"] >= 5
    kept = spark.table(cfg.table(Layer.CLEAN)).select(F.col("id").alias("kept_id"))
    assert dup.join(kept, "kept_id", "left_anti").isEmpty()


def test_result_tables_are_in_the_catalog(spark, pipeline_run) -> None:
    cfg, _, _, _ = pipeline_run
    tables = {t.name for t in spark.catalog.listTables(cfg.database)}
    expected = {
        "raw",
        "clean",
        "quarantine",
        "dup",
        "emb",
        "pred",
        "confusion",
        "cluster",
        "cluster_terms",
        "neighbors",
    }
    assert {f"{layer}_banking77" for layer in expected} | {"metrics", "runs", "quality", "emb_cache"} <= tables


def test_every_test_row_is_predicted_once_in_the_predictions_layout(spark, pipeline_run, dirty_slice) -> None:
    cfg, run, _, _ = pipeline_run
    pred = _this_run(spark, cfg, run, Layer.PRED, "classify")
    assert pred.columns == [name for name, _ in PREDICTION_SCHEMA]
    assert pred.count() == pred.select("id").distinct().count() == dirty_slice["test"]  # repeats included
    assert pred.where("probability < 0 OR probability > 1 OR prediction IS NULL").isEmpty()
    assert {r["model_version"] for r in pred.select("model_version").distinct().collect()} == {
        run.labels["classify.model_version"]
    }


def test_the_embedding_view_has_a_vector_per_clean_row(spark, pipeline_run) -> None:
    cfg, run, _, _ = pipeline_run
    emb = spark.table(cfg.table(Layer.EMB))
    assert emb.count() == run.counts["rows_clean"]
    assert emb.where(F.size("embedding") != 384).isEmpty()


def test_clusters_are_named_and_cover_every_clean_row(spark, pipeline_run) -> None:
    cfg, run, _, _ = pipeline_run
    terms = spark.table(cfg.table(Layer.CLUSTER_TERMS)).collect()
    assert len(terms) == 12
    assert sum(r["size"] for r in terms) == run.counts["rows_clean"]
    assert all(r["name"] and len(r["top_terms"]) >= 3 for r in terms)
    assert run.labels["cluster.model_version"].startswith("banking77-cluster-kmeans@v")


def test_accuracy_is_above_the_floor_and_matches_the_predictions(spark, pipeline_run) -> None:
    cfg, run, reports, _ = pipeline_run
    # ~2,500 training rows (a quarter of BANKING77, every intent present): frozen MiniLM + LR reaches ~0.87
    m = {r["metric"]: r["value"] for r in _this_run(spark, cfg, run, Layer.METRICS).collect()}
    assert m["accuracy"] >= 0.82 and m["macro_f1"] >= 0.80
    pred = _this_run(spark, cfg, run, Layer.PRED, "classify")
    assert m["accuracy"] == pytest.approx(pred.where("label = prediction").count() / pred.count())
    assert 0.0 < m["silhouette_cosine"] < 1.0
    assert [r.stage for r in reports] == ["ingest", "clean", "embed", "classify", "cluster", "search"]


def test_the_runs_table_records_the_run(spark, pipeline_run) -> None:
    cfg, run, _, _ = pipeline_run
    rows = _this_run(spark, cfg, run, Layer.RUNS).collect()
    assert len(rows) == 1
    r = rows[0]
    assert r["status"] == "ok" and r["config_hash"] == cfg.config_hash()
    assert set(r["stage_seconds"]) == {"ingest", "clean", "embed", "classify", "cluster", "search"}
    assert r["counts"]["rows_in"] == run.counts["rows_in"]
    assert r["measures"]["embed.rows_per_s"] > 0
    assert r["ended_at"] >= r["started_at"]


def test_the_console_runs_and_the_report_show_the_same_durations(spark, pipeline_run, capsys) -> None:
    """Each duration is measured once: the console prints it, ``runs`` records it and the report reads it there."""
    from dmine_spark.cli.pipeline import print_end, print_stage

    cfg, run, reports, _ = pipeline_run
    capsys.readouterr()
    for report in reports:
        print_stage(report)
    print_end(run, cfg, "run")
    out = capsys.readouterr().out
    console = dict(re.findall(r"^  (\w+) .*\[(\d+\.\d)s\]$", out, re.M))
    total = re.search(r"^run \S+ finished in (\d+\.\d)s$", out, re.M).group(1)
    row = _this_run(spark, cfg, run, Layer.RUNS).first()
    assert console == {k: f"{v:.1f}" for k, v in row["stage_seconds"].items()}
    assert total == f"{row['seconds']:.1f}" and row["seconds"] >= sum(row["stage_seconds"].values())
    page = Path(run.labels["report"]).read_text(encoding="utf-8")
    meta = re.search(r" · (\d+\.\d)s \(([^)]*)\) · Spark ", page)
    assert meta.group(1) == total
    assert dict(re.findall(r"(\w+) (\d+\.\d)s", meta.group(2))) == console
    # the embed line's encoding rate is the one in runs and in the report's throughput table
    line = next(x for x in out.splitlines() if x.startswith("  embed "))
    rate = re.search(r"embedded in (\d+\.\d)s of encoding \(([\d,]+) texts/s", line)
    assert rate.group(1) == f"{row['measures']['embed.encode_wall_seconds']:.1f}"
    assert rate.group(2) == f"{row['measures']['embed.rows_per_s']:,.0f}"
    cell = re.search(r"<td>texts/s encoding</td><td class=\"n\">([\d,.]+)</td>", page).group(1)
    assert f"{float(cell.replace(',', '')):,.0f}" == rate.group(2)


@pytest.fixture(scope="module")
def classify_again(spark, pipeline_run):
    """The classify stage alone, run once more after the pipeline, from the tables the pipeline left."""
    cfg, _, _, _ = pipeline_run
    return run_stages(spark, cfg, ["classify"], command="classify", progress=False)


def test_a_stage_alone_reads_from_the_catalog(spark, pipeline_run, classify_again) -> None:
    cfg, first, _, _ = pipeline_run
    run, reports = classify_again
    assert reports[0].values["accuracy"] == pytest.approx(first.measures["classify.accuracy"], abs=0.02)
    assert _this_run(spark, cfg, run, Layer.RUNS).first()["command"] == "classify"


def test_an_embed_rerun_embeds_nothing_and_keeps_the_vectors(spark, pipeline_run) -> None:
    cfg, first, _, _ = pipeline_run
    before = spark.table(cfg.table(Layer.EMB)).select("id", "embedding").orderBy("id").limit(50).collect()
    run, reports = run_stages(spark, cfg, ["embed"], command="embed", progress=False)
    c = run.counts
    assert c["embed.embedded"] == 0 and c.get("embed.model_loads", 0) == 0
    # every row came from the cache: no rate, neither printed nor recorded
    assert c["embed.cached_rows"] == c["embed.rows"] and run.measures["embed.cache_hit_ratio"] == 1.0
    assert "embed.rows_per_s" not in run.measures and "/s" not in reports[0].summary
    assert c["embed.cache_hits"] == c["embed.unique_texts"] == first.counts["embed.unique_texts"]
    assert first.counts["embed.embedded"] == first.counts["embed.unique_texts"] <= first.counts["embed.rows"]
    assert first.counts["embed.tokens"] > 0 and first.labels["embed.device"] == f"cpu/{auto_precision('cpu')}/openvino"
    after = spark.table(cfg.table(Layer.EMB)).where(F.col("id").isin([r.id for r in before]))
    assertDataFrameEqual(
        after.select("id", "embedding"), spark.createDataFrame(before, "id STRING, embedding ARRAY<FLOAT>")
    )


LOAD_IN_A_FRESH_SESSION = """
import json, sys
from pyspark.ml import PipelineModel
from pyspark.sql import SparkSession
spark = SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false").getOrCreate()
model = PipelineModel.load(sys.argv[1])
df = spark.createDataFrame([(t,) for t in json.loads(sys.argv[2])], "text STRING")
rows = model.transform(df).select("text", "prediction", "probability").collect()
print("RESULT " + json.dumps([r.asDict() for r in rows]))
"""


def test_a_saved_model_version_loads_with_pipeline_model_in_a_fresh_session(spark, pipeline_run) -> None:
    """Another process, with its own Spark and no dmine catalog, loads the model and scores raw text."""
    cfg, run, _, _ = pipeline_run
    version = run.labels["classify.model_version"]
    path = cfg.paths.models / version.replace("@", "/") / "model"
    pred = _this_run(spark, cfg, run, Layer.PRED, "classify").orderBy("id").limit(20).collect()
    texts = [r["text"] for r in pred]
    proc = subprocess.run(
        [sys.executable, "-c", LOAD_IN_A_FRESH_SESSION, str(path), json.dumps(texts)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[len("RESULT ") :])
    assert [g["prediction"] for g in got] == [r["prediction"] for r in pred]
    assert [g["probability"] for g in got] == pytest.approx([r["probability"] for r in pred], abs=1e-4)


def test_delta_run_results_can_be_read_back_by_version(spark, pipeline_run, classify_again) -> None:
    """With Delta (the default when its jars are cached) every table a run wrote is named with its version
    in ``runs.table_versions``, and that version still reads back the run's rows after later runs."""
    import os

    if not delta_enabled(spark):
        if os.environ.get("CI"):
            pytest.fail("the test session runs without Delta Lake; `dmine jars fetch delta` fills the jar cache")
        pytest.skip("Delta Lake jars not cached")
    cfg, first, _, _ = pipeline_run
    assert first.labels["tables.format"] == "delta"
    versions = spark.table(cfg.table(Layer.RUNS)).where(f"run_id = '{first.run_id}'").first()["table_versions"]
    for layer in ("raw", "clean", "quarantine", "dup", "pred", "confusion", "cluster", "cluster_terms", "metrics"):
        assert cfg.table(layer) in versions, layer
        assert table_provider(spark, cfg.table(layer)) == "delta", layer
    assert table_provider(spark, cfg.table(Layer.EMB_CACHE)) == "delta"
    pred_v = versions[cfg.table(Layer.PRED)]
    again, _ = classify_again
    later = spark.table(cfg.table(Layer.RUNS)).where(f"run_id = '{again.run_id}'").first()["table_versions"]
    assert later[cfg.table(Layer.PRED)] > pred_v
    old = spark.sql(f"SELECT DISTINCT run_id FROM {cfg.table(Layer.PRED)} VERSION AS OF {pred_v}").collect()
    assert [r["run_id"] for r in old] == [first.run_id]
    assert _this_run(spark, cfg, again, Layer.PRED, "classify").count() == first.counts["ingest.rows_out.test"]
    # the embedding cache holds each key once, after the first run and every re-run
    cache = spark.table(cfg.table(Layer.EMB_CACHE))
    assert cache.count() == cache.select("text_key", "model", "precision", "max_length", "pooling").distinct().count()
