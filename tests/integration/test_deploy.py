"""Deployment on real data: batch scoring, streaming scoring (exactly once across crashes), drift monitoring."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from dmine_spark.config import ConfigError, Layer
from dmine_spark.io.tables import PREDICTION_SCHEMA
from tests.conftest import DATASETS, PIPELINE_CONF, REPO, read_csv_rows

pytestmark = pytest.mark.slow

TASK = "banking77"
DB = "dmine_it"


def _write(path: Path, rows: list[dict[str, str]], cols: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def trained(pipeline_run, dirty_slice):
    """The shared pipeline run's classifier, and the test rows that run never saw."""
    cfg, run, _, overrides = pipeline_run
    return cfg, overrides, run.labels["classify.model_version"], dirty_slice["held_out"], dirty_slice["dir"]


def _new_batch(held_out: list[dict[str, str]], path: Path, n: int = 300) -> tuple[Path, int]:
    """``n`` held-out rows plus rows that must be quarantined (empty, markup only) and one with an e-mail address."""
    rows = [dict(r) for r in held_out[:n]]
    rows[0]["text"] = "please refund me, my address is jane.doe@example.com " + rows[0]["text"]
    rows += [{"text": "", "category": "card_arrival"}, {"text": "<p> </p>", "category": "card_arrival"}]
    return _write(path, rows, ["text", "category"]), 2


def test_score_appends_predictions_and_reuses_the_cache(spark, trained, tmp_path: Path) -> None:
    from dmine_spark.deploy.score import score_batch

    cfg, _, version, held_out, _ = trained
    batch, n_bad = _new_batch(held_out, tmp_path / "new.csv")
    run, res = score_batch(spark, cfg, str(batch), model_ref=version)
    assert res.rows_in == 302 and res.scored == 300 and res.quarantined == n_bad
    # the pipeline embedded the training slice; a held-out text may repeat one of those texts
    assert res.unique_texts == 300 and 290 <= res.embedded <= 300
    pred = spark.table(cfg.table(Layer.PRED)).where(F.col("run_id") == run.run_id)
    assert pred.count() == 300 and pred.select("id").distinct().count() == 300
    assert {r["model_version"] for r in pred.select("model_version").distinct().collect()} == {version}
    acc = pred.where(F.col("label") == F.col("prediction")).count() / 300
    assert acc > 0.85, acc
    masked = pred.where(F.col("text").contains("jane.doe")).count()
    assert masked == 0 and pred.where(F.col("text").contains("<EMAIL>")).count() == 1
    q = spark.table(cfg.table(Layer.QUARANTINE)).where((F.col("stage") == "score") & (F.col("run_id") == run.run_id))
    assert q.count() == n_bad and {r["rule"] for r in q.collect()} == {"missing_required_field", "empty_text"}
    row = spark.table(cfg.table(Layer.RUNS)).where(F.col("run_id") == run.run_id).first()
    assert row["command"] == "score" and row["status"] == "ok"
    assert row["counts"]["score.rows_in"] == 302 and row["counts"]["score.rows_scored"] == 300
    # the model version carries the reply templates: every scored question is in answer_<task>
    answered = spark.table(cfg.table(Layer.ANSWER)).where(F.col("run_id") == run.run_id).collect()
    assert len(answered) == 300 and {r["stage"] for r in answered} == {"score"}
    assert all(r["answer_text"] for r in answered if r["answer_by"] != "none")
    assert any(r["answer_by"] == "intent" for r in answered)

    again, res2 = score_batch(spark, cfg, str(batch))  # the latest version by default
    assert res2.embedded == 0 and res2.unique_texts == 300
    assert spark.table(cfg.table(Layer.PRED)).where(F.col("run_id") == again.run_id).count() == 300
    first = {r["id"]: r["prediction"] for r in pred.collect()}
    second = spark.table(cfg.table(Layer.PRED)).where(F.col("run_id") == again.run_id).collect()
    assert sum(first.get(r["id"]) == r["prediction"] for r in second) == 300


def test_score_reproduces_the_pipelines_predictions_row_for_row(spark, pipeline_run, trained) -> None:
    """Training and scoring share one path from text to prediction: scoring the test file again gives ``pred_``."""
    from dmine_spark.deploy.score import score_batch

    cfg, first, _, _ = pipeline_run
    _, _, version, _, data = trained
    run, res = score_batch(spark, cfg, str(data / "test.csv"), model_ref=version, source="test")
    assert res.embedded == 0  # every test text is in the cache since the pipeline ran
    cols = ["id", "split", "text", "label", "prediction", "probability", "model_version", "answer_id", "answer_by"]
    pred = spark.table(cfg.table(Layer.PRED))
    scored = pred.where((F.col("run_id") == run.run_id) & (F.col("stage") == "score")).select(*cols)
    trained_rows = pred.where((F.col("run_id") == first.run_id) & (F.col("stage") == "classify")).select(*cols)
    assert scored.count() == trained_rows.count() > 0
    assertDataFrameEqual(scored, trained_rows)


def test_scored_rows_have_the_predictions_tables_columns(spark, trained, tmp_path: Path) -> None:
    from dmine_spark.deploy.score import score_batch

    cfg, _, version, held_out, _ = trained
    batch, _ = _new_batch(held_out, tmp_path / "few.csv", 5)
    run, _ = score_batch(spark, cfg, str(batch), model_ref=version)
    pred = spark.table(cfg.table(Layer.PRED)).where(F.col("run_id") == run.run_id)
    assert pred.columns == [name for name, _ in PREDICTION_SCHEMA]
    assert {r["stage"] for r in pred.select("stage").distinct().collect()} == {"score"}


def test_score_reads_a_catalog_table(spark, trained) -> None:
    from dmine_spark.deploy.score import score_batch

    cfg, _, version, held_out, _ = trained
    rows = [(r["text"], r["category"]) for r in held_out[300:360]]
    spark.createDataFrame(rows, "text STRING, category STRING").write.mode("overwrite").saveAsTable(f"{DB}.incoming")
    run, res = score_batch(spark, cfg, f"{DB}.incoming", model_ref=version)
    assert res.rows_in == res.scored == 60 and res.quarantined == 0
    pred = spark.table(cfg.table(Layer.PRED)).where(F.col("run_id") == run.run_id)
    assert {r["source_file"] for r in pred.select("source_file").distinct().collect()} == {f"table:{DB}.incoming"}


def test_score_refuses_an_unknown_model_version_in_one_line(spark, trained, tmp_path: Path) -> None:
    from dmine_spark.deploy.score import score_batch

    cfg, _, version, held_out, _ = trained
    batch, _ = _new_batch(held_out, tmp_path / "new.csv", 10)
    name = version.split("@")[0]
    with pytest.raises(ConfigError, match=rf"--model {name}@v999: model '{name}' has no version 999"):
        score_batch(spark, cfg, str(batch), model_ref=f"{name}@v999")


def test_monitor_flags_a_shifted_batch_and_not_a_held_out_one(spark, trained, tmp_path: Path) -> None:
    from dmine_spark.deploy.monitor import monitor

    cfg, _, version, held_out, _ = trained
    same = _write(tmp_path / "held_out.csv", held_out[:800], ["text", "category"])
    tweets = read_csv_rows(DATASETS / "twitter_financial_news_sentiment" / "sent_valid.csv")[:800]
    shifted = _write(
        tmp_path / "tweets.csv", [{"text": r["text"], "category": r["label"]} for r in tweets], ["text", "category"]
    )

    ok = monitor(spark, cfg, str(same), model_ref=version)
    bad = monitor(spark, cfg, str(shifted), model_ref=version)
    print("\nheld-out BANKING77:", json.dumps(ok.measures), "\nTwitter financial news:", json.dumps(bad.measures))
    assert not ok.drift, ok.measures
    assert bad.drift and {"centroid_shift", "ood_rate"} <= set(bad.drifted), bad.measures
    assert bad.measures["ood_rate"] > 0.5 > 0.05 > ok.measures["ood_rate"]
    rows = spark.table(cfg.table(Layer.MONITOR)).where(F.col("run_id").isin(ok.run_id, bad.run_id)).collect()
    flagged = {(r["run_id"], r["metric"]) for r in rows if r["drift"]}
    assert {m for _, m in flagged if _ == bad.run_id} == set(bad.drifted)
    assert not [m for rid, m in flagged if rid == ok.run_id]
    runs = {r["run_id"]: r for r in spark.table(cfg.table(Layer.RUNS)).where(F.col("command") == "monitor").collect()}
    assert runs[bad.run_id]["labels"]["monitor.drift"] == "true"
    assert runs[ok.run_id]["labels"]["monitor.drift"] == "false"


def test_stream_scores_each_landed_row_once(spark, trained, tmp_path: Path) -> None:
    from dmine_spark.deploy.stream import stream

    cfg, _, version, held_out, _ = trained
    cfg = cfg.model_copy(deep=True)
    cfg.stream.checkpoint = str(tmp_path / "ckpt")
    landing = tmp_path / "landing"
    for i in range(3):
        _write(landing / f"part-{i}.csv", held_out[i * 40 : (i + 1) * 40], ["text", "category"])
    before = spark.table(cfg.table(Layer.PRED)).count() if spark.catalog.tableExists(cfg.table(Layer.PRED)) else 0
    lines: list[str] = []
    n = stream(spark, cfg, landing=str(landing), model_ref=version, available_now=True, echo=lines.append)
    assert n == 3, lines
    assert spark.table(cfg.table(Layer.PRED)).count() - before == 120
    # a file landing later is picked up by the next run; the ones already scored are not scored again
    _write(landing / "part-3.csv", held_out[120:150], ["text", "category"])
    assert stream(spark, cfg, landing=str(landing), model_ref=version, available_now=True, echo=lines.append) == 1
    assert spark.table(cfg.table(Layer.PRED)).count() - before == 150
    streamed = spark.table(cfg.table(Layer.ANSWER)).where(F.col("stage") == "stream")
    assert streamed.count() >= 150 and streamed.where("answer_by IS NULL").isEmpty()
    batches = spark.table(cfg.table(Layer.RUNS)).where(F.col("command") == "stream").collect()
    assert len(batches) >= 4 and all(r["measures"]["stream.batch_seconds"] > 0 for r in batches)


STREAM_FILES, STREAM_ROWS = 5, 50


def test_stream_is_exactly_once_across_crashes(trained, tmp_path: Path) -> None:
    """Three processes on one checkpoint: one dies between a batch's write and its commit, one is killed."""
    cfg, overrides, version, held_out, _ = trained
    work = tmp_path / "work"
    shutil.copytree(Path(cfg.resolved_work_dir()) / "models", work / "models")
    landing = tmp_path / "landing"
    expected = set()
    for i in range(STREAM_FILES):
        rows = [
            {"ticket_id": f"f{i}r{j}", "text": r["text"], "category": r["category"]}
            for j, r in enumerate(held_out[i * STREAM_ROWS : (i + 1) * STREAM_ROWS])
        ]
        expected |= {r["ticket_id"] for r in rows}
        _write(landing / f"part-{i}.csv", rows, ["ticket_id", "text", "category"])
    conf = yaml.safe_load(PIPELINE_CONF.read_text())
    conf.update(task=TASK, database=DB, work_dir=str(work))
    conf["sources"] = {
        "landing": {
            "path": str(landing / "*.csv"),
            "format": "csv",
            "schema": "ticket_id STRING, text STRING, category STRING",
            "options": {"header": True, "multiLine": True, "escape": '"'},
            "id_col": "ticket_id",
            "required": ["text"],
        }
    }
    conf["stream"] = {"landing": str(landing), "max_files_per_trigger": 1}
    config = tmp_path / "stream.yaml"
    config.write_text(yaml.safe_dump(conf))
    cmd = [sys.executable, "-m", "dmine_spark.cli", "stream", str(config), "--model", version, "--available-now"]
    env = {**os.environ, "DMINE_WORK_DIR": str(work)}

    # 1: exits hard after batch 1's rows are written, before the checkpoint commits it
    first = subprocess.run(
        cmd, cwd=REPO, env={**env, "DMINE_STREAM_FAULT": "after_write:1"}, capture_output=True, text=True, timeout=600
    )
    assert first.returncode == 3, first.stdout[-2000:] + first.stderr[-2000:]
    assert "batch 0:" in first.stdout and "batch 1:" not in first.stdout

    # 2: killed (SIGKILL) once it has finished batch 3
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []

    def watch() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("batch 3:"):
                proc.send_signal(signal.SIGKILL)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    proc.wait(timeout=600)
    t.join(timeout=10)
    out = "".join(seen)
    assert proc.returncode == -signal.SIGKILL, out[-3000:]
    assert "batch 1: already written before a restart, skipped" in out

    # 3: runs to the end
    last = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert last.returncode == 0, last.stdout[-2000:] + last.stderr[-2000:]

    check = subprocess.run(
        [
            sys.executable,
            "-m",
            "dmine_spark.cli",
            "sql",
            f"SELECT id, batch_key FROM {DB}.pred_{TASK} WHERE stage = 'stream'",
            "--format",
            "json",
            "--max-rows",
            "100000",
            "--work-dir",
            str(work),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert check.returncode == 0, check.stderr[-2000:]
    got = [json.loads(line) for line in check.stdout.splitlines() if line.startswith("{")]
    ids = [r["id"].split(":", 1)[1] for r in got]
    assert len(ids) == len(set(ids)) == STREAM_FILES * STREAM_ROWS
    assert set(ids) == expected
    # one file per micro-batch, except that Spark may plan the files left after a restart as one batch
    assert 1 < len({r["batch_key"] for r in got}) <= STREAM_FILES


def _landing_cfg(cfg, tmp_path: Path):
    """The stream source with a ticket id per row, so that each scored row names its record."""
    cfg = cfg.model_copy(deep=True)
    name = cfg.stream.source or next(iter(cfg.sources))
    cfg.sources[name] = cfg.sources[name].model_copy(
        update={"schema_ddl": "ticket_id STRING, text STRING, category STRING", "id_col": "ticket_id", "dedup": False}
    )
    cfg.stream.checkpoint = str(tmp_path / "ckpt")
    cfg.stream.max_files_per_trigger = 20
    cfg.stream.settle_seconds = 0.5
    return cfg


def _tickets(held_out: list[dict[str, str]], tag: str, start: int, n: int) -> list[dict[str, str]]:
    return [{"ticket_id": f"{tag}r{j}", **r} for j, r in enumerate(held_out[start : start + n])]


def _csv(rows: list[dict[str, str]], header: bool = True) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["ticket_id", "text", "category"], lineterminator="\n")
    if header:
        w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def _streamed(spark, cfg) -> tuple[list[str], list[str], list]:
    """Ticket ids this checkpoint's stream scored, the files of the rows it quarantined, and its ``runs`` rows."""
    from dmine_spark.deploy.stream import checkpoint_dir, stream_id

    sid = stream_id(checkpoint_dir(cfg))
    mine = F.col("batch_key").startswith(sid + ":")
    scored = [r["id"].split(":", 1)[1] for r in spark.table(cfg.table(Layer.PRED)).where(mine).select("id").collect()]
    q = spark.table(cfg.table(Layer.QUARANTINE)).where(mine).select("source_file").collect()
    runs = spark.table(cfg.table(Layer.RUNS)).where(F.col("labels")["stream.id"] == sid).collect()
    return scored, [r["source_file"] for r in q], runs


def test_stream_skips_temporary_names_and_scores_renamed_files_once(spark, trained, tmp_path: Path) -> None:
    """A writer lands ``x.csv.tmp`` slowly, then renames it, while the stream runs: every row once, no temp row."""
    from dmine_spark.deploy.stream import stream

    cfg, _, version, held_out, _ = trained
    cfg = _landing_cfg(cfg, tmp_path)
    landing = tmp_path / "landing"
    landing.mkdir()
    landed = [_tickets(held_out, f"f{i}", i * 20, 20) for i in range(4)]
    (landing / "f0.csv").write_text(_csv(landed[0]), encoding="utf-8")
    never = ["stuck.csv.tmp", "put.csv._COPYING_", "get.csv.crdownload", "dl.csv.part", "_hidden.csv", ".dot.csv"]
    for i, name in enumerate(never):
        (landing / name).write_text(_csv(_tickets(held_out, f"t{i}", 100 + i * 5, 5)), encoding="utf-8")
    first_listing = tmp_path / "ckpt" / "sources" / "0" / "0"

    def writer() -> None:
        for i in (1, 2, 3):
            body, tmp = _csv(landed[i]), landing / f"f{i}.csv.tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(body[: len(body) // 2])  # cut mid-record
                fh.flush()
                give_up = time.monotonic() + 120
                while i == 1 and not first_listing.exists() and time.monotonic() < give_up:
                    time.sleep(0.1)  # until the stream has listed f1.csv.tmp half-written
                time.sleep(0.3)
                fh.write(body[len(body) // 2 :])
            os.replace(tmp, landing / f"f{i}.csv")

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    lines: list[str] = []
    stream(spark, cfg, landing=str(landing), model_ref=version, available_now=True, echo=lines.append)
    t.join(120)
    # the files renamed after the first run listed the folder are the second run's
    stream(spark, cfg, landing=str(landing), model_ref=version, available_now=True, echo=lines.append)
    scored, quarantined, runs = _streamed(spark, cfg)
    assert len(scored) == len(set(scored)) == 80 and not quarantined, lines
    assert set(scored) == {r["ticket_id"] for rows in landed for r in rows}
    assert not [x for x in lines if "changed after" in x], lines
    assert runs and all(r["counts"]["stream.files_read_again"] == 0 for r in runs)
    assert all(r["counts"]["stream.files_changed_after_scoring"] == 0 for r in runs)


def test_stream_reads_again_a_file_written_in_two_steps(spark, trained, tmp_path: Path, monkeypatch) -> None:
    """A file cut mid-record when Spark read it is read again whole; one changed after it was scored is reported."""
    import dmine_spark.deploy.stream as streaming

    cfg, _, version, held_out, _ = trained
    cfg = _landing_cfg(cfg, tmp_path)
    landing = tmp_path / "landing"
    landing.mkdir()
    slow = _tickets(held_out, "s", 0, 20) + [{"ticket_id": "s-empty", "text": "", "category": "card_arrival"}]
    grow, more = _tickets(held_out, "g", 40, 10), _tickets(held_out, "g", 50, 5)
    (landing / "grow.csv").write_text(_csv(grow), encoding="utf-8")
    body = _csv(slow)
    cut = body.index(slow[10]["ticket_id"] + ",") + 8  # inside record 10
    half, go, done = threading.Event(), threading.Event(), threading.Event()

    def writer() -> None:  # no temporary name: write half, flush, wait, write the rest
        with open(landing / "slow.csv", "w", encoding="utf-8") as fh:
            fh.write(body[:cut])
            fh.flush()
            half.set()
            go.wait(120)
            time.sleep(0.2)
            fh.write(body[cut:])
        done.set()

    real_status, real_scored = streaming._status, streaming._Files.scored_now

    def status(spark, uri: str):
        if uri.endswith("slow.csv") and not go.is_set():  # the batch has read the half: the writer goes on now
            go.set()
            done.wait(60)
        return real_status(spark, uri)

    def scored_now(self, batch_id: int) -> int:
        with open(landing / "grow.csv", "a", encoding="utf-8") as fh:  # rows added once the batch was written
            fh.write(_csv(more, header=False))
        return real_scored(self, batch_id)

    monkeypatch.setattr(streaming, "_status", status)
    monkeypatch.setattr(streaming._Files, "scored_now", scored_now)
    threading.Thread(target=writer, daemon=True).start()
    assert half.wait(30)
    lines: list[str] = []
    n = streaming.stream(spark, cfg, landing=str(landing), model_ref=version, available_now=True, echo=lines.append)
    assert n == 1 and done.is_set(), lines
    said = "\n".join(lines)
    assert f"slow.csv changed after Spark listed it ({cut:,} bytes, now {len(body):,} bytes): read again whole" in said
    scored, quarantined, runs = _streamed(spark, cfg)
    assert len(scored) == len(set(scored)) == 30, lines
    assert set(scored) == {r["ticket_id"] for r in slow[:20] + grow}
    assert len(quarantined) == 1 and quarantined[0].endswith("slow.csv")
    pred = spark.table(cfg.table(Layer.PRED)).where(F.col("source_file").endswith(str(landing / "slow.csv")))
    cut_row = pred.where(F.col("id").endswith(":sr10")).first()
    assert len(cut_row["text"]) >= 0.9 * len(slow[10]["text"])  # scored whole, not as cut
    # grow.csv changed after its batch was scored: said, with the bytes scored, and not scored again
    was = len(_csv(grow).encode())
    assert f"grow.csv changed after batch 0 scored it ({was:,} bytes, now" in said, said
    unread = (landing / "grow.csv").read_bytes()[was:].decode().splitlines()
    # every record is scored, quarantined, or reported as not read
    assert len(slow) + len(grow) + len(more) == len(scored) + len(quarantined) + len(unread)
    (run,) = runs
    assert run["counts"]["stream.rows_in"] == len(slow) + len(grow)
    assert run["counts"]["stream.files_read_again"] == 1
    assert run["counts"]["stream.files_changed_after_scoring"] == 1


KAFKA_READER = """
import sys
from dmine_spark.config import load_config, load_profile
from dmine_spark.deploy.stream import stream_reader
from dmine_spark.spark.session import build_session
cfg = load_config(sys.argv[1])
spark = build_session(load_profile("local", "conf"), sys.argv[2], extra_jars=["kafka"], table_format="parquet")
df, what = stream_reader(spark, cfg)
print("READER", what, df.isStreaming, ",".join(df.columns))
"""


def test_kafka_stream_reader_builds_with_the_cached_connector(tmp_path: Path) -> None:
    """The Kafka source resolves from the jar cache and yields the source's columns (no broker is started)."""
    from dmine_spark.spark.jars import have

    if not have("kafka"):
        if os.environ.get("CI"):
            pytest.fail("the Kafka connector is not in the jar cache; bash dev.sh setup fetches it")
        pytest.skip("the Kafka connector is not in the jar cache (dmine jars fetch kafka)")
    conf = yaml.safe_load(PIPELINE_CONF.read_text())
    conf["stream"] = {"kafka": {"bootstrap_servers": "127.0.0.1:9", "topic": "tickets"}}
    config = tmp_path / "kafka.yaml"
    config.write_text(yaml.safe_dump(conf))
    proc = subprocess.run(
        [sys.executable, "-c", KAFKA_READER, str(config), str(tmp_path / "work")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("READER "))
    assert line == "READER kafka:tickets True text,category,_corrupt_record,_origin"
