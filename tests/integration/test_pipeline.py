"""The whole pipeline on a slice of the real BANKING77, with dirty rows mixed in."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from dmine_spark.config import load_config
from dmine_spark.spark.jobs import run_stages
from tests.conftest import PIPELINE_CONF

pytestmark = pytest.mark.slow

# Injected into the training file: how many of each kind, and where they must end up.
MALFORMED = ['"unterminated quote,card_arrival,extra', "only one field"]
MISSING = [",card_arrival", '"where is my money",']
EMPTY = ['"<p>  </p>",card_arrival', '"\u200b\u200b",top_up_failed']


def _lines(rows: list[dict[str, str]]) -> list[str]:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    for r in rows:
        w.writerow([r["text"], r["category"]])
    return buf.getvalue().splitlines(keepends=True)


@pytest.fixture(scope="module")
def dirty_slice(banking77: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Every 4th training row and every 3rd test row, plus known dirty records in train."""
    with open(banking77 / "train.csv", newline="", encoding="utf-8") as fh:
        train = list(csv.DictReader(fh))[::4]
    with open(banking77 / "test.csv", newline="", encoding="utf-8") as fh:
        test = list(csv.DictReader(fh))[::3]
    dups = [dict(r, text="  " + r["text"].upper() + " ") for r in train[:5]]  # same text once cleaned and case-folded
    d = tmp_path_factory.mktemp("banking77_dirty")
    body = _lines(train) + _lines(dups)
    body += [line + "\n" for line in MALFORMED[1:] + MISSING + EMPTY]
    (d / "train.csv").write_text("text,category\n" + "".join(body) + MALFORMED[0] + "\n", encoding="utf-8")
    (d / "test.csv").write_text("text,category\n" + "".join(_lines(test)), encoding="utf-8")
    return {"dir": d, "train": len(train) + len(dups), "test": len(test), "labels": {r["category"] for r in train}}


@pytest.fixture(scope="module")
def pipeline_run(spark, dirty_slice):  # noqa: ANN001, ANN201
    d = dirty_slice["dir"]
    cfg = load_config(
        PIPELINE_CONF,
        [f"sources.train.path={d}/train.csv", f"sources.test.path={d}/test.csv", "cluster.k=12", "database=dmine_it"],
    )
    run, reports = run_stages(spark, cfg, progress=False)
    return cfg, run, reports


def test_counts_reconcile_and_dirty_rows_are_quarantined(spark, pipeline_run, dirty_slice) -> None:  # noqa: ANN001
    cfg, run, _ = pipeline_run
    c = run.counts
    n_train_lines = dirty_slice["train"] + len(MALFORMED) + len(MISSING) + len(EMPTY)
    assert c["ingest.rows_in.train"] == n_train_lines
    assert c["ingest.rows_in.test"] == dirty_slice["test"]
    assert c["rows_in"] == c["rows_clean"] + c["rows_quarantined"] + c["rows_duplicate"]
    assert c["rows_quarantined"] == len(MALFORMED) + len(MISSING) + len(EMPTY)
    assert c["rows_duplicate"] >= 5
    q = spark.table(cfg.table("quarantine"))
    rules = {(r["stage"], r["rule"]): r["count"] for r in q.groupBy("stage", "rule").count().collect()}
    assert rules == {
        ("ingest", "malformed_record"): len(MALFORMED),
        ("ingest", "missing_required_field"): len(MISSING),
        ("clean", "empty_text"): len(EMPTY),
    }
    raws = {r["raw"] for r in q.where("rule = 'malformed_record'").collect()}
    assert "only one field" in raws
    assert q.where(F.col("reason").isNull() | F.col("source_file").isNull()).count() == 0
    dup = spark.table(cfg.table("dup"))
    assert dup.count() == c["rows_duplicate"]
    kept = spark.table(cfg.table("clean")).select(F.col("id").alias("kept_id"))
    assert dup.join(kept, "kept_id", "left_anti").count() == 0  # every duplicate points at a kept row


def test_result_tables(spark, pipeline_run, dirty_slice) -> None:  # noqa: ANN001
    cfg, run, _ = pipeline_run
    tables = {t.name for t in spark.catalog.listTables(cfg.database)}
    assert {
        "raw_banking77",
        "clean_banking77",
        "quarantine_banking77",
        "dup_banking77",
        "emb_banking77",
        "pred_banking77",
        "cluster_banking77",
        "cluster_terms_banking77",
        "metrics",
        "runs",
    } <= tables
    pred = spark.table(cfg.table("pred"))
    assert pred.columns[:6] == ["id", "split", "text", "label", "prediction", "probability"]
    assert pred.count() == dirty_slice["test"]  # every test row is scored, repeats included
    assert pred.where("probability < 0 OR probability > 1 OR prediction IS NULL").count() == 0
    emb = spark.table(cfg.table("emb"))
    assert emb.count() == run.counts["rows_clean"]
    assert emb.select(F.size("embedding").alias("d")).distinct().collect()[0]["d"] == 384
    terms = spark.table(cfg.table("cluster_terms")).collect()
    assert len(terms) == 12
    assert sum(r["size"] for r in terms) == run.counts["rows_clean"]
    assert all(r["name"] and len(r["top_terms"]) >= 3 for r in terms)


def test_accuracy_floor_and_metrics_table(spark, pipeline_run) -> None:  # noqa: ANN001
    cfg, run, reports = pipeline_run
    # ~2,500 training rows (a quarter of BANKING77, every intent present): frozen MiniLM + LR reaches ~0.87
    m = {r["metric"]: r["value"] for r in spark.table(cfg.table("metrics")).where(f"run_id = '{run.run_id}'").collect()}
    assert m["accuracy"] >= 0.82
    assert m["macro_f1"] >= 0.80
    pred = spark.table(cfg.table("pred"))
    recomputed = pred.where("label = prediction").count() / pred.count()
    assert m["accuracy"] == pytest.approx(recomputed)
    assert 0.0 < m["silhouette_cosine"] < 1.0
    assert [r.stage for r in reports] == ["ingest", "clean", "embed", "classify", "cluster"]


def test_runs_table_records_the_run(spark, pipeline_run) -> None:  # noqa: ANN001
    cfg, run, _ = pipeline_run
    rows = spark.table(cfg.table("runs")).where(f"run_id = '{run.run_id}'").collect()
    assert len(rows) == 1
    r = rows[0]
    assert r["status"] == "ok" and r["config_hash"] == cfg.config_hash()
    assert set(r["stage_seconds"]) == {"ingest", "clean", "embed", "classify", "cluster"}
    assert r["counts"]["rows_in"] == run.counts["rows_in"]
    assert r["measures"]["embed.rows_per_s"] > 0
    assert r["ended_at"] >= r["started_at"]


def test_stage_alone_reads_from_catalog(spark, pipeline_run) -> None:  # noqa: ANN001
    """A single stage re-runs from the tables the earlier stages left."""
    cfg, first, _ = pipeline_run
    run, reports = run_stages(spark, cfg, ["classify"], command="classify", progress=False)
    assert reports[0].values["accuracy"] == pytest.approx(first.measures["classify.accuracy"], abs=0.02)
    assert spark.table(cfg.table("runs")).where("command = 'classify'").count() == 1


def test_embed_rerun_embeds_nothing(spark, pipeline_run) -> None:  # noqa: ANN001
    """Unchanged input: every text is a cache hit, no model runs, and the vectors are the same."""
    cfg, first, _ = pipeline_run
    before = {r["id"]: list(r["embedding"]) for r in spark.table(cfg.table("emb")).limit(50).collect()}
    run, reports = run_stages(spark, cfg, ["embed"], command="embed", progress=False)
    c = run.counts
    assert c["embed.embedded"] == 0 and c.get("embed.model_loads", 0) == 0
    assert c["embed.cache_hits"] == c["embed.unique_texts"] == first.counts["embed.unique_texts"]
    assert first.counts["embed.embedded"] == first.counts["embed.unique_texts"] <= first.counts["embed.rows"]
    assert first.counts["embed.tokens"] > 0 and first.labels["embed.device"] == "cpu/fp32/openvino"
    after = {
        r["id"]: list(r["embedding"])
        for r in spark.table(cfg.table("emb")).where(F.col("id").isin(list(before))).collect()
    }
    assert after == before


def test_delta_run_results_can_be_read_back_by_version(spark, pipeline_run) -> None:  # noqa: ANN001
    """With Delta (the default when its jars are cached) every table a run wrote is named with its version
    in ``runs.table_versions``, and that version still reads back the run's rows after later runs."""
    import os

    from dmine_spark.analyze.tables import table_provider
    from dmine_spark.spark.session import delta_enabled

    if not delta_enabled(spark):
        if os.environ.get("CI"):
            pytest.fail("the test session runs without Delta Lake; `dmine jars fetch delta` fills the jar cache")
        pytest.skip("Delta Lake jars not cached")
    cfg, first, _ = pipeline_run
    assert first.labels["tables.format"] == "delta"
    row = spark.table(cfg.table("runs")).where(f"run_id = '{first.run_id}'").first()
    versions = row["table_versions"]
    for layer in ("raw", "clean", "quarantine", "dup", "pred", "confusion", "cluster", "cluster_terms", "metrics"):
        assert cfg.table(layer) in versions, layer
        assert table_provider(spark, cfg.table(layer)) == "delta", layer
    assert table_provider(spark, cfg.table("emb_cache")) == "delta"
    pred_v = versions[cfg.table("pred")]
    again, _ = run_stages(spark, cfg, ["classify"], command="classify", progress=False)
    later = spark.table(cfg.table("runs")).where(f"run_id = '{again.run_id}'").first()["table_versions"]
    assert later[cfg.table("pred")] > pred_v
    old = spark.sql(f"SELECT DISTINCT run_id FROM {cfg.table('pred')} VERSION AS OF {pred_v}").collect()
    assert [r["run_id"] for r in old] == [first.run_id]
    now = spark.sql(f"SELECT DISTINCT run_id FROM {cfg.table('pred')}").collect()
    assert [r["run_id"] for r in now] == [again.run_id]
    # the embedding cache holds each key once, after the first run and every re-run
    cache = spark.table(cfg.table("emb_cache"))
    assert cache.count() == cache.select("text_key", "model", "precision", "max_length", "pooling").distinct().count()
