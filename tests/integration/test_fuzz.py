"""The fuzz corpus (issue 16, item 11) through the whole pipeline: no crash, every record accounted for exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from dmine_spark.config import load_config
from dmine_spark.runner.run import run_stages
from dmine_spark.tools.fuzz import generate_corpus
from tests.conftest import DATASETS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzz_run(spark, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("fuzz") / "corpus"
    manifest = generate_corpus(out, 10_000, datasets_dir=DATASETS, seed=3)
    cfg = load_config(manifest["config"], [f"work_dir={out.parent / 'work'}", "database=dmine_fuzz_it"])
    run, reports = run_stages(spark, cfg, progress=False)
    return manifest, cfg, run, reports


def test_the_corpus_has_every_kind_and_ten_thousand_records(fuzz_run) -> None:
    manifest, cfg, _, _ = fuzz_run
    assert manifest["rows"] >= 10_000
    assert set(manifest["records"]) == set(cfg.sources)


def test_every_record_of_every_source_is_accounted_for(fuzz_run) -> None:
    manifest, cfg, run, reports = fuzz_run
    assert [r.stage for r in reports] == ["ingest", "clean", "embed", "classify", "cluster"]
    for source, n in manifest["records"].items():
        assert run.counts[f"ingest.rows_in.{source}"] == n, source
    c = run.counts
    assert c["rows_in"] == manifest["rows"]
    assert c["rows_in"] == c["rows_clean"] + c["rows_quarantined"] + c["rows_duplicate"]


def test_each_fault_kind_lands_where_it_belongs(spark, fuzz_run) -> None:
    from dmine_spark.config import Layer

    manifest, cfg, run, _ = fuzz_run
    q = spark.table(cfg.table(Layer.QUARANTINE)).where(f"run_id = '{run.run_id}'")
    rules = {(r.split, r.rule) for r in q.collect()}
    assert ("edge", "malformed_record") in rules  # the quotes that never close, each alone
    assert {r.id for r in q.where("split = 'edge' AND rule = 'malformed_record'").collect()} == {
        "edge:edge.csv:2",
        f"edge:edge.csv:{_line(manifest, 'opens one in the middle')}",
        f"edge:edge.csv:{_line(manifest, 'and on the last line')}",
    }
    assert ("zh_gbk", "invalid_encoding") in rules
    assert ("nested", "malformed_record") in rules and ("named", "malformed_record") in rules
    assert ("edge", "empty_text") in rules  # nothing but zero-width characters
    assert run.counts["classify.unseen_label_rows"] > 0
    assert run.counts["clean.train_test_overlap"] > 0
    clean = spark.table(cfg.table(Layer.CLEAN))
    assert clean.where("split = 'test'").count() > 0 and clean.where("split = 'train'").count() > 0
    assert clean.where("length(text) > 2000").count() == 0  # 1 MB texts truncated to clean.max_chars


def _line(manifest: dict, start: str) -> int:
    text = (Path(manifest["config"]).parent / "edge.csv").read_text(encoding="utf-8")
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith('"' + start))
