"""Every prepare step on generated dirty data: each injected fault ends where it must, and rows reconcile."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import functions as F

from dmine_spark.config import load_config
from dmine_spark.prepare.pii_rules import mask_text
from dmine_spark.runner.run import run_stages
from dmine_spark.tools.datagen import generate, read_manifest
from tests.conftest import DATASETS, REPO

pytestmark = pytest.mark.slow

CONF = REPO / "conf" / "base" / "pipelines" / "generated.yaml"
ROWS = 12_000


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("gen") / "csv"
    generate(out, ROWS, fmt="csv", seed=11, datasets_dir=DATASETS, chunk_rows=5_000)
    return out, read_manifest(out)


@pytest.fixture(scope="module")
def prepared(spark, generated):
    out, _ = generated
    cfg = load_config(CONF, [f"sources.gen.path={out}/*.csv", "database=dmine_gen"])
    run, reports = run_stages(spark, cfg, progress=False)
    return cfg, run, reports


def _rules(spark, cfg, stage: str) -> dict[str, int]:
    q = spark.table(cfg.table("quarantine")).where(F.col("stage") == stage)
    return {r["rule"]: r["count"] for r in q.groupBy("rule").count().collect()}


def test_every_row_accounted_for(prepared, generated) -> None:
    _, manifest = generated
    _, run, _ = prepared
    c = run.counts
    assert c["rows_in"] == manifest["rows"] == ROWS
    assert c["rows_in"] == c["rows_clean"] + c["rows_quarantined"] + c["rows_duplicate"]


def test_ingest_quarantine_matches_the_injected_faults(spark, prepared, generated) -> None:
    cfg, _, _ = prepared
    _, m = generated
    rules = _rules(spark, cfg, "ingest")
    malformed = sum(v for k, v in m["details"].items() if k.startswith("malformed:"))
    # CSV: broken quoting and extra/missing fields do not parse; a non-number in a number column is a wrong type
    assert rules.get("malformed_record", 0) + rules.get("wrong_type", 0) == malformed
    assert rules.get("invalid_encoding", 0) == m["counts"]["bad_encoding"]
    assert rules.get("missing_required_field", 0) == m["details"]["null:text"]
    wrong = spark.table(cfg.table("quarantine")).where("rule = 'wrong_type'").first()
    if wrong is not None:
        assert wrong.reason.startswith("column ") and "is not a valid" in wrong.reason


def test_clean_quarantine_and_duplicates(spark, prepared, generated) -> None:
    cfg, run, _ = prepared
    _, m = generated
    assert _rules(spark, cfg, "clean") == {"text_too_long": m["counts"]["overlong"]}
    raw = spark.table(cfg.table("raw")).select("id", "faults", "dup_of")
    dup = spark.table(cfg.table("dup")).join(raw, "id")
    # every injected exact copy is found, and it points at the row it copies
    exact = dup.where("faults = 'dup'")
    assert exact.count() == m["counts"]["dup"]
    assert exact.where(F.col("kept_id") != F.concat(F.lit("gen:"), F.col("dup_of"))).count() == 0
    # near copies: exact once cleaned (case, whitespace) or found by MinHash LSH
    near_rows = raw.where(F.col("faults").startswith("near_dup")).count()
    found = dup.where(F.col("faults").startswith("near_dup")).count()
    assert near_rows == m["counts"]["near_dup"]
    # a typo in a 40-character text moves its 5-character shingles' Jaccard below 0.8, so not every edit counts
    assert found / near_rows >= 0.75
    assert run.counts["clean.rows_near_duplicate"] > 0
    near = spark.table(cfg.table("dup")).where("rule = 'near_duplicate'")
    assert near.where(F.col("jaccard") < cfg.near_dup.threshold).count() == 0
    rules = {r["rule"] for r in spark.table(cfg.table("dup")).select("rule").distinct().collect()}
    assert rules == {"exact_duplicate", "near_duplicate"}


def test_no_pii_left_in_clean_text(spark, prepared, generated) -> None:
    cfg, run, _ = prepared
    _, m = generated
    texts = [r.text for r in spark.table(cfg.table("clean")).select("text").collect()]
    left = sum(sum(mask_text(t)[1].values()) for t in texts)
    assert left == 0
    masked = {t: run.counts[f"pii.{t}"] for t in ("email", "phone", "card", "iban", "cn_id")}
    assert all(v > 0 for v in masked.values()), masked
    # decoy order numbers (Luhn fails) stay in the text
    decoys = spark.table(cfg.table("raw")).where(F.col("faults").contains("pii:order_number")).count()
    assert decoys == m["details"]["pii:order_number"] > 0
    kept = spark.table(cfg.table("clean")).where(F.col("text").rlike(r"\b[0-9]{16}\b")).count()
    assert kept > 0


def test_quality_table(spark, prepared) -> None:
    cfg, run, _ = prepared
    q = spark.table(cfg.table("quality")).where(F.col("run_id") == run.run_id)
    metrics = {(r.step, r.metric) for r in q.select("step", "metric").distinct().collect()}
    for want in [
        ("ingest", "rows"),
        ("ingest", "quarantined"),
        ("ingest", "null_rate"),
        ("ingest", "empty_rate"),
        ("clean", "rows"),
        ("clean", "text_length"),
        ("clean", "language"),
        ("clean", "pii_masked"),
    ]:
        assert want in metrics
    langs = {r.key: r.value for r in q.where("metric = 'language'").collect()}
    assert langs.get("en", 0) > langs.get("zh", 0) > 0
    null_rate = {r.key: r.value for r in q.where("metric = 'null_rate'").collect()}
    assert 0 < null_rate["label"] < 0.05
    rows = {r.key: r.value for r in q.where("step = 'ingest' AND metric = 'rows'").collect()}
    assert rows["rows_in"] == rows["rows_out"] + rows["quarantined"] == ROWS


def test_feature_table_keyed_by_row_id(spark, prepared) -> None:
    cfg, run, _ = prepared
    feat = spark.table(cfg.table("feat"))
    clean = spark.table(cfg.table("clean"))
    assert feat.count() == clean.count() == run.counts["rows_clean"]
    assert feat.join(clean, "id", "left_anti").count() == 0
    width = len(feat.first()["features"])
    assert width > 65536  # hashed words plus one-hot, numeric and time columns


def test_the_saved_feature_pipeline_rebuilds_the_feature_table(spark, prepared) -> None:
    from pyspark.testing import assertDataFrameEqual

    from dmine_spark.mine.store import ModelStore

    cfg, run, _ = prepared
    model, version = ModelStore(cfg.paths.models).load(run.labels["features.model_version"])
    assert version.startswith(f"{cfg.task}-features@v")
    tabular = [*cfg.features.categorical, *cfg.features.numeric, *cfg.features.time]
    rows = spark.table(cfg.table("clean")).select("id", "text", "label").orderBy("id").limit(50)
    rows = rows.join(spark.table(cfg.table("raw")).select("id", *tabular), "id")
    rebuilt = model.transform(rows).select("id", "features")
    stored = spark.table(cfg.table("feat")).join(rows.select("id"), "id").select("id", "features")
    assertDataFrameEqual(rebuilt, stored)


def test_quarantine_view_per_source(spark, prepared) -> None:
    cfg, _, _ = prepared
    view = f"{cfg.table('quarantine')}_gen"
    assert spark.table(view).count() == spark.table(cfg.table("quarantine")).count()
