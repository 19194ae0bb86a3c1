"""Whole runs on inputs that leave a stage little or nothing to work with (issue 16): real Spark, real model."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from dmine_spark.config import ConfigError, Layer, load_config
from dmine_spark.runner.run import run_stages
from tests.conftest import DATASETS, PIPELINE_CONF, read_csv_rows

pytestmark = pytest.mark.slow


def _write(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "category"])
        w.writerows(rows)
    return path


def _config(tmp_path: Path, train: Path, test: Path, database: str, *extra: str):
    return load_config(
        PIPELINE_CONF,
        [
            f"sources.train.path={train}",
            f"sources.test.path={test}",
            f"database={database}",
            f"work_dir={tmp_path / 'work'}",
            "report.enabled=false",
            "tracking.enabled=false",
            "answers=null",  # reply templates are tested in test_openset_pipeline and test_deploy
            *extra,
        ],
    )


def _last_run(spark, cfg):
    return spark.table(cfg.table(Layer.RUNS)).orderBy(F.col("started_at").desc()).first()


def test_a_source_with_every_row_quarantined_stops_the_run_in_one_line(spark, banking77: Path, tmp_path: Path) -> None:
    rows = read_csv_rows(banking77 / "train.csv")
    train = _write(tmp_path / "train.csv", [(r["text"], r["category"]) for r in rows[:30]])
    test = _write(tmp_path / "test.csv", [("", r["category"]) for r in rows[30:42]])  # every text blank
    cfg = _config(tmp_path, train, test, "dmine_edge_empty")
    with pytest.raises(ConfigError) as err:
        run_stages(spark, cfg, progress=False)
    assert str(err.value) == (
        "no clean rows for task banking77: source test: 12 of 12 quarantined (missing_required_field 12); "
        "see dmine_edge_empty.quarantine_banking77_test"
    )
    # the stage that ran wrote its tables, and the run is on record as failed
    assert spark.table(cfg.quarantine_view("test")).count() == 12
    assert spark.table(cfg.table(Layer.RAW)).where("source = 'train'").count() == 30
    last = _last_run(spark, cfg)
    assert last["status"] == "failed" and "no clean rows" in last["error"]


def test_a_source_emptied_by_the_clean_rules_stops_the_run_too(spark, banking77: Path, tmp_path: Path) -> None:
    rows = read_csv_rows(banking77 / "train.csv")
    train = _write(tmp_path / "train.csv", [(r["text"] + " " + "x" * 300, r["category"]) for r in rows[:20]])
    test = _write(tmp_path / "test.csv", [(r["text"], r["category"]) for r in rows[20:30]])
    cfg = _config(tmp_path, train, test, "dmine_edge_short", "clean.max_chars=200", "clean.on_too_long=quarantine")
    with pytest.raises(ConfigError, match=r"^no clean rows for task banking77: source train: 20 of 20 quarantined \("):
        run_stages(spark, cfg, progress=False)


def test_labels_seen_only_in_the_test_split_are_said_and_recorded(spark, banking77: Path, tmp_path: Path) -> None:
    keep = {"card_arrival": 25, "pin_blocked": 25}
    train_rows, test_rows = [], []
    for r in read_csv_rows(banking77 / "train.csv"):
        if keep.get(r["category"], 0) > 0:
            keep[r["category"]] -= 1
            train_rows.append((r["text"], r["category"]))
    for r in read_csv_rows(banking77 / "test.csv"):
        if r["category"] in ("card_arrival", "pin_blocked", "exchange_rate"):
            test_rows.append((r["text"], r["category"]))
    test_rows = [t for t in test_rows if t[1] != "exchange_rate"][:20] + [
        t for t in test_rows if t[1] == "exchange_rate"
    ][:7]
    cfg = _config(
        tmp_path,
        _write(tmp_path / "train.csv", train_rows),
        _write(tmp_path / "test.csv", test_rows),
        "dmine_edge_open",
    )
    run, reports = run_stages(spark, cfg, ["ingest", "clean", "embed", "classify"], progress=False)
    line = reports[-1].summary
    assert "1 test label(s) never seen in training, 7 rows counted as errors: exchange_rate (7)" in line
    assert "AUC" not in line
    last = _last_run(spark, cfg)
    assert last["counts"]["classify.unseen_label_rows"] == 7
    assert last["labels"]["classify.unseen_labels"] == "exchange_rate"
    q = spark.table(cfg.table(Layer.QUALITY)).where(f"run_id = '{run.run_id}' AND metric = 'unseen_label'").collect()
    assert [(r.source, r.step, r.key, r.value) for r in q] == [("test", "classify", "exchange_rate", 7.0)]
    m = {r.metric: r.value for r in spark.table(cfg.table(Layer.METRICS)).where(f"run_id = '{run.run_id}'").collect()}
    assert m["unseen_label_rows"] == 7 and "auc" not in m
    assert m["accuracy"] <= 20 / 27


def test_the_encoding_a_source_was_decoded_from_is_in_runs_and_quality(spark, tmp_path: Path) -> None:
    with open(DATASETS / "zh_waimai_10k" / "waimai_10k.csv", encoding="utf-8", newline="") as fh:
        reviews = [r["review"] for r in csv.DictReader(fh)][:80]
    rows = [(t, "card_arrival" if i % 2 else "pin_blocked") for i, t in enumerate(reviews)]
    body = "text,category\n" + "".join('"' + t.replace('"', '""') + f'",{lab}\n' for t, lab in rows)
    # one corrupt byte sequence in the middle of a real GB18030 file
    half = body.encode("gb18030").split(b"\n")
    data = b"\n".join(half[:40]) + b'\n"bad \x81\x20",pin_blocked\n' + b"\n".join(half[40:])
    (tmp_path / "train.csv").write_bytes(data)
    (tmp_path / "test.csv").write_bytes(body.encode("utf-8"))
    cfg = _config(
        tmp_path, tmp_path / "train.csv", tmp_path / "test.csv", "dmine_edge_enc", "sources.train.encoding=auto"
    )
    run, _ = run_stages(spark, cfg, ["ingest"], progress=False)
    last = _last_run(spark, cfg)
    assert last["labels"]["ingest.encoding.train"] == "auto: GB18030 (1 file)"
    assert "ingest.encoding.test" not in last["labels"]
    q = spark.table(cfg.table(Layer.QUALITY)).where(f"run_id = '{run.run_id}' AND step = 'ingest'")
    got = {
        (r.metric, r.key.rsplit("/", 1)[-1], r.value)
        for r in q.where("metric IN ('encoding', 'invalid_bytes')").collect()
    }
    assert got == {("encoding", "gb18030", 1.0), ("invalid_bytes", "train.csv", 1.0)}
    reason = spark.table(cfg.quarantine_view("train")).first()["reason"]
    assert reason.startswith(
        "column text holds bytes that are not valid GB18030 (detected); 1 invalid byte sequence(s)"
    )


@pytest.mark.parametrize("leakage", ["report", "drop"])
def test_train_test_leakage_across_sources_is_reported_or_dropped(
    spark, banking77: Path, tmp_path: Path, leakage: str
) -> None:
    rows = [(r["text"], r["category"]) for r in read_csv_rows(banking77 / "train.csv")[:40]]
    test_rows = [(r["text"], r["category"]) for r in read_csv_rows(banking77 / "test.csv")[:20]]
    # three training texts reach the test source: once as written, once upper-cased, once with spaces around
    leaked = [rows[0], (rows[1][0].upper(), rows[1][1]), ("  " + rows[2][0] + " ", rows[2][1])]
    cfg = _config(
        tmp_path,
        _write(tmp_path / "train.csv", rows),
        _write(tmp_path / "test.csv", test_rows + leaked),
        f"dmine_edge_leak_{leakage}",
        f"clean.leakage={leakage}",
    )
    run, reports = run_stages(spark, cfg, ["ingest", "clean"], progress=False)
    line = reports[-1].summary
    assert "train/test leakage: 3 test rows repeat a train text" in line
    assert run.counts["clean.train_test_overlap"] == 3
    q = spark.table(cfg.table(Layer.QUALITY)).where(f"run_id = '{run.run_id}' AND metric = 'train_test_overlap'")
    assert [(r.source, r.key, r.value) for r in q.collect()] == [("test", "train", 3.0)]
    clean_test = spark.table(cfg.table(Layer.CLEAN)).where("split = 'test'").count()
    dups = spark.table(cfg.table(Layer.DUP)).where("rule = 'train_test_overlap'")
    if leakage == "drop":
        assert "dropped from evaluation" in line
        assert clean_test == 20 and dups.count() == 3
        assert {r.kept_id for r in dups.collect()} <= {
            r.id for r in spark.table(cfg.table(Layer.CLEAN)).where("split = 'train'").collect()
        }
    else:
        assert "kept (clean.leakage: drop" in line
        assert clean_test == 23 and dups.count() == 0
    assert (
        run.counts["rows_in"]
        == run.counts["rows_clean"] + run.counts["rows_quarantined"] + run.counts["rows_duplicate"]
    )


def test_source_columns_named_with_spaces_and_dots_work_end_to_end(spark, banking77: Path, tmp_path: Path) -> None:
    import json

    rows = read_csv_rows(banking77 / "train.csv")[::150][:60]  # the file is sorted by intent: take many
    test = read_csv_rows(banking77 / "test.csv")[::150][:20]
    for name, part in (("train", rows), ("test", test)):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(
                json.dumps({"ticket.text": r["text"], "the label": r["category"], "ticket id": f"{name}-{i}"}) + "\n"
                for i, r in enumerate(part)
            ),
            encoding="utf-8",
        )
    source = {
        "format": "json",
        "schema": "`ticket.text` STRING, `the label` STRING, `ticket id` STRING",
        "required": ["ticket.text", "the label"],
        "id_col": "ticket id",
        "derive": {"text length": "length(`ticket.text`)"},
    }
    cfg = load_config(
        PIPELINE_CONF,
        [
            f"sources={json.dumps({n: {**source, 'path': str(tmp_path / f'{n}.jsonl')} for n in ('train', 'test')})}",
            "text_col=ticket.text",
            "label_col=the label",
            "database=dmine_edge_names",
            f"work_dir={tmp_path / 'work'}",
            "answers=null",
            "report.enabled=false",
            "tracking.enabled=false",
        ],
    )
    assert (cfg.text_col, cfg.label_col, cfg.sources["train"].id_col) == ("ticket_text", "the_label", "ticket_id")
    run, reports = run_stages(spark, cfg, ["ingest", "clean", "embed", "classify"], progress=False)
    raw = spark.table(cfg.table(Layer.RAW))
    assert {"ticket_text", "the_label", "ticket_id", "text_length"} <= set(raw.columns)
    assert raw.schema["ticket_text"].metadata.get("comment") == "source column ticket.text"
    first = raw.where("id = 'train:train-0'").first()
    assert first.ticket_text == rows[0]["text"] and first.text_length == len(rows[0]["text"])
    assert run.counts["rows_clean"] == 80
    assert "accuracy" in reports[-1].summary


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("task=x; DROP TABLE dmine.runs", "task"),
        ("database=dmine`; DROP DATABASE x", "database"),
        ("sources.train.schema=`a``b` STRING, `a``b ` STRING", "would both be stored as"),
        ("sources.train.schema=`...` STRING", "has no character dmine_spark can store"),
        ("sources.train.schema=`text STRING", "a backtick is not closed"),
        (
            """sources={"train' OR '1'='1": {"path": "x.csv", "schema": "text STRING"}}""",
            "must be a lowercase identifier",
        ),
        ('sources.train.splits={"a\'--": 0.5, b: 0.5}', "must be a lowercase identifier"),
    ],
)
def test_identifiers_that_reach_sql_are_checked_before_spark_starts(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(PIPELINE_CONF, [override])
    assert message in str(err.value) and "\n" not in str(err.value)
