"""Financial monitoring on replayed real texts: entities, sentiment over time and alerts, in batch, score and stream.

The replay (``dmine datagen --replay``) puts Twitter financial news texts on a
time line for a few cashtags, with one injected bearish episode each. One
pipeline run trains on the texts the replay never uses, classifies the
replay and runs the trends stage; ``dmine score`` adds rows; ``dmine stream``
scores the same replay landed as files, across a crash after a batch's
predictions and one after its alerts, with a webhook on loopback, and must
end with exactly the batch run's windows and alerts.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml
from pyspark.sql import functions as F

from dmine_spark.config import Layer, load_config
from dmine_spark.features.entities import CASHTAG
from dmine_spark.tools.replay import ReplayConfig, evaluate_alerts, replay
from tests.conftest import DATASETS, REPO

pytestmark = pytest.mark.slow

SHAPE = ReplayConfig(
    entities=3, windows=45, episodes_per_entity=1, warmup_windows=21, gap_windows=24, volume=(50, 70), sizes=(0.4,)
)


def _conf(out: Path, work: Path) -> dict:
    conf = yaml.safe_load((out / "pipeline.yaml").read_text())
    conf["sources"]["train"]["sample"] = 0.3  # a smaller training set: a quicker classifier, still a useful one
    conf["classify"] = {
        "model": "sk_logreg",
        "params": {"C": 10.0, "class_weight": "balanced"},
        "train_split": "train",
        "eval_split": "replay",
    }
    conf["embed"] = {"max_length": 64}
    conf.update(database="dmine_trends_it", work_dir=str(work))
    return conf


@pytest.fixture(scope="module")
def replayed(spark, tmp_path_factory: pytest.TempPathFactory):
    from dmine_spark.runner.run import run_stages

    out = tmp_path_factory.mktemp("trends") / "replay"
    manifest = replay(out, DATASETS, SHAPE, seed=5)
    conf = _conf(out, tmp_path_factory.mktemp("trends_work"))
    path = out / "batch.yaml"
    path.write_text(yaml.safe_dump(conf))
    cfg = load_config(path)
    run, reports = run_stages(spark, cfg, progress=False)
    return cfg, run, reports, manifest, out, conf


def test_every_replayed_text_gets_its_entity_and_the_counts_reconcile(spark, replayed) -> None:
    cfg, run, reports, manifest, _, _ = replayed
    c = run.counts
    pred = spark.table(cfg.table(Layer.PRED)).where((F.col("run_id") == run.run_id) & (F.col("split") == "replay"))
    n = pred.count()
    assert c["trends.rows"] == n > 0 and c["trends.rows_without_time"] == 0
    assert c["trends.rows_with_entity"] + c["trends.rows_without_entity"] == n
    assert c["trends.rows_with_entity"] == n  # every replayed text carries its entity's cashtag
    ents = spark.table(cfg.table(Layer.ENTITIES))
    assert {r[0] for r in ents.select("entity").distinct().collect()} == {e["entity"] for e in manifest["entities"]}
    assert ents.where(~F.col("match").startswith("$")).isEmpty()
    ts = spark.table(cfg.table(Layer.SENTIMENT_TS))
    per_window = ts.groupBy("entity", "window_start").agg(
        F.sum("n").alias("n"), F.max("volume").alias("volume"), F.sum("share").alias("share"), F.count("*").alias("k")
    )
    assert per_window.where((F.col("n") != F.col("volume")) | (F.abs(F.col("share") - 1) > 1e-9)).isEmpty()
    assert per_window.where(F.col("k") != 3).isEmpty()  # a row per class, zero counts included
    assert per_window.agg(F.sum("volume")).first()[0] == n
    assert any(r.stage == "trends" and "new)" in r.summary for r in reports)


def test_the_injected_episodes_are_detected_early_and_calm_windows_stay_quiet(spark, replayed) -> None:
    cfg, run, _, manifest, _, _ = replayed
    alerts = [r.asDict() for r in spark.table(cfg.table(Layer.ALERTS)).collect()]
    ev = evaluate_alerts(manifest, alerts)
    assert ev["episodes"] == 3
    assert ev["detected_within_2"] >= 2, ev
    assert ev["false_alerts"] <= 1, ev
    for a in alerts:
        assert a["run_id"] == run.run_id and a["stage"] == "trends"
        if a["rule"].startswith("share"):
            assert a["observed"] > a["baseline"] and 1 <= len(a["examples"]) <= 3
            assert all(f"${a['entity']}" in t for t in a["examples"])
    ids = [a["alert_id"] for a in alerts]
    assert len(ids) == len(set(ids))


def test_deciding_the_same_windows_again_adds_no_alert(spark, replayed) -> None:
    from dmine_spark.runner.run import run_stages

    cfg, _, _, _, _, _ = replayed
    table = cfg.table(Layer.ALERTS)
    before = spark.table(table).count()
    run, reports = run_stages(spark, cfg, ["trends"], progress=False)
    assert run.counts["trends.alerts_new"] == 0 and spark.table(table).count() == before
    assert run.counts["trends.alerts"] == before


class _Hook:
    """A webhook on loopback that keeps every alert it is sent."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outer.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/alerts"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


_DUMP = """
import json, sys
from dmine_spark.api import Pipeline
spark = Pipeline.from_yaml(sys.argv[1]).session()
for name, query in json.loads(sys.argv[2]).items():
    rows = [r.asDict(recursive=True) for r in spark.sql(query).collect()]
    print("DUMP " + json.dumps({name: rows}, default=str))
"""


def _query(config: Path, work: Path, queries: dict[str, str]) -> dict[str, list[dict]]:
    """Each query's rows, read by one process on the stream's catalog (one JVM start for them all)."""
    res = subprocess.run(
        [sys.executable, "-c", _DUMP, str(config), json.dumps(queries)],
        cwd=REPO,
        env={**os.environ, "DMINE_WORK_DIR": str(work)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    out: dict[str, list[dict]] = {}
    for line in res.stdout.splitlines():
        if line.startswith("DUMP "):
            out.update(json.loads(line[5:]))
    return out


def test_the_stream_ends_with_the_batch_windows_and_alerts_across_crashes(spark, replayed, tmp_path: Path) -> None:
    cfg, run, _, manifest, out, conf = replayed
    with (out / "replay.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    landing = tmp_path / "landing"
    landing.mkdir()
    parts = 2
    size = -(-len(rows) // parts)
    for i in range(parts):
        chunk = rows[i * size : (i + 1) * size]
        with (landing / f"part-{i}.csv").open("w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(chunk)
    late = [{**r, "doc_id": f"late{j}"} for j, r in enumerate(rows[:20])]  # their windows closed long ago
    with (landing / "part-9-late.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(late)
    work = tmp_path / "work"
    shutil.copytree(Path(cfg.resolved_work_dir()) / "models", work / "models")
    hook = _Hook()
    sconf = {
        **conf,
        "work_dir": str(work),
        "stream": {"landing": str(landing), "max_files_per_trigger": 1, "source": "replay"},
        "trends": {**conf["trends"], "webhook": {"url": hook.url, "retries": 1, "backoff_seconds": 0}},
    }
    config = tmp_path / "stream.yaml"
    config.write_text(yaml.safe_dump(sconf))
    version = run.labels["classify.model_version"]
    cmd = [sys.executable, "-m", "dmine_spark.cli", "stream", str(config), "--model", version, "--available-now"]
    env = {**os.environ, "DMINE_WORK_DIR": str(work)}
    # dies after batch 1's predictions; then after the late batch's trends (both before the checkpoint commits)
    for fault in ("after_write:1", "after_trends:2"):
        res = subprocess.run(
            cmd, cwd=REPO, env={**env, "DMINE_STREAM_FAULT": fault}, capture_output=True, text=True, timeout=900
        )
        assert res.returncode == 3, res.stdout[-3000:] + res.stderr[-3000:]
    last = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert last.returncode == 0, last.stdout[-3000:] + last.stderr[-3000:]
    assert "already written before a restart, skipped" in last.stdout

    db, task = conf["database"], conf["task"]
    newest = max(datetime.fromisoformat(r["created_at"]) for r in rows)
    watermark = newest - timedelta(days=1)
    got = _query(
        config,
        work,
        {
            "alerts": f"SELECT alert_id, entity, window_start, rule, label FROM {db}.alerts_{task}",
            "ts": f"SELECT entity, date_format(window_start, 'yyyy-MM-dd HH:mm:ss') AS w, label, n "
            f"FROM {db}.sentiment_ts_{task} WHERE window_end <= '{watermark}'",
            "runs": f"SELECT counts FROM {db}.runs WHERE command = 'stream'",
        },
    )
    ids = [a["alert_id"] for a in got["alerts"]]
    assert len(ids) == len(set(ids)) > 0
    # every alert was sent once: none twice after a restart, none lost by the crash before the alerts
    assert sorted(b["alert_id"] for b in hook.bodies) == sorted(ids)

    # the windows the stream closed are the batch run's windows, with the same counts and the same alerts
    batch_ts = (
        spark.table(cfg.table(Layer.SENTIMENT_TS))
        .where(F.col("window_end") <= F.lit(watermark))
        .select("entity", F.date_format("window_start", "yyyy-MM-dd HH:mm:ss").alias("w"), "label", "n")
        .collect()
    )
    stream_counts = {(r["entity"], r["w"], r["label"]): r["n"] for r in got["ts"]}
    assert stream_counts == {(r["entity"], r["w"], r["label"]): r["n"] for r in batch_ts}
    batch_alerts = {
        r["alert_id"]
        for r in spark.table(cfg.table(Layer.ALERTS))
        .where((F.col("stage") == "trends") & (F.col("window_end") <= F.lit(watermark)))
        .collect()
    }
    assert set(ids) == batch_alerts
    assert evaluate_alerts(manifest, got["alerts"])["detected"] >= 1
    # the late file's rows are counted, not added
    assert sum((r["counts"] or {}).get("trends.late_rows", 0) for r in got["runs"]) == len(late)


def test_score_adds_its_rows_windows_with_their_event_time(spark, replayed, tmp_path: Path) -> None:
    from dmine_spark.deploy.score import score_batch

    cfg, run, _, manifest, out, _ = replayed
    with (out / "replay.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))[:150]
    new = tmp_path / "new.csv"
    with new.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    srun, res = score_batch(spark, cfg, str(new), model_ref=run.labels["classify.model_version"], source="replay")
    assert res.scored == 150 and srun.counts["trends.rows_with_entity"] == 150
    pred = spark.table(cfg.table(Layer.PRED)).where(F.col("run_id") == srun.run_id)
    assert pred.where(F.col("event_time").isNull()).isEmpty()
    ents = spark.table(cfg.table(Layer.ENTITIES)).where(F.col("stage") == "score")
    assert ents.count() == 150
    # the windows the scored rows fall in now count them (the run's own rows of those windows were replaced)
    first = min(r["created_at"] for r in rows)[:10]
    ts = spark.table(cfg.table(Layer.SENTIMENT_TS)).where(F.to_date("window_start") == first)
    got = {r["entity"]: r["volume"] for r in ts.select("entity", "volume").distinct().collect()}
    want: dict[str, int] = {}
    for r in rows:
        if r["created_at"][:10] == first:
            e = re.search(CASHTAG, r["text"]).group(1)
            want[e] = want.get(e, 0) + 1
    assert got == want


def test_the_notebook_shows_alerts_shares_and_the_evaluation(spark, replayed, monkeypatch, capsys) -> None:
    import runpy

    import matplotlib

    matplotlib.use("Agg")
    cfg, _, _, _, out, _ = replayed
    monkeypatch.setenv("DMINE_NOTEBOOK_RUN", "0")
    monkeypatch.setenv("DMINE_NOTEBOOK_REPLAY", str(out))
    monkeypatch.setenv("DMINE_NOTEBOOK_SET", f"database={cfg.database};work_dir={cfg.work_dir}")
    monkeypatch.chdir(REPO)
    runpy.run_path(str(REPO / "notebooks" / "finance_alerts.py"), init_globals={"spark": spark})
    shown = capsys.readouterr().out
    assert "episodes +0.4:" in shown and "detected within two windows" in shown
    assert "false alerts:" in shown and "bearish_share" in shown and "example" in shown


def test_the_report_shows_the_shares_with_alerts_and_the_alert_table(spark, replayed) -> None:
    from dmine_spark.analyze.report import render_report

    cfg, run, _, _, _, _ = replayed
    page = render_report(spark, cfg, run.run_id)
    assert "<h2>Sentiment over time and alerts</h2>" in page and 'id="fig-trends"' in page
    n = spark.table(cfg.table(Layer.ALERTS)).count()
    assert f"<h3>Alerts ({n:,} in {cfg.table(Layer.ALERTS)}" in page
    assert "share_zscore:bearish" in page or "share_cusum:bearish" in page
