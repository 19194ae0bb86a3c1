"""``dmine bench alerts``: alert recall, delay and false alerts on the financial replay, against its manifest.

The replay (:mod:`dmine_spark.tools.replay`, ``dmine datagen --replay``) puts
validation texts of Twitter financial news on a time line for the dataset's
most frequent cashtags, with bearish episodes of known sizes injected. Its
``pipeline.yaml`` trains the classifier on the training split (never
replayed), classifies the replay and runs the trends stage with the default
rules; :func:`~dmine_spark.tools.replay.evaluate_alerts` compares the alerts
with the manifest.

The baseline in the same run is the same rules on the replay's *true*
labels (a perfect classifier): the ratio of the two recalls is what the
classifier's errors cost; the false alerts of both are reported.
"""

from __future__ import annotations

import csv
import re
import shutil
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from dmine_spark.config import Layer, load_config
from dmine_spark.features.entities import CASHTAG
from dmine_spark.mine.alerts import detect_series
from dmine_spark.mine.trends import rule_specs
from dmine_spark.tools.replay import LABELS, ReplayConfig, evaluate_alerts, replay

__all__ = ["true_label_alerts", "bench_alerts"]


def true_label_alerts(folder: Path, manifest: dict[str, Any], specs: list[Any]) -> list[dict[str, Any]]:
    """The alerts the rules ``specs`` raise on the replay's true labels (each entity's series, in pandas)."""
    with (folder / "replay.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    start = datetime.fromisoformat(manifest["start"]).replace(tzinfo=None)
    step = pd.Timedelta(hours=manifest["window_hours"])
    df = pd.DataFrame(rows)
    df["entity"] = [re.search(CASHTAG, t).group(1).upper() for t in df["text"]]
    at = pd.to_datetime(df["created_at"])
    df["window_start"] = start + ((at - start) // step) * step
    for i, lab in enumerate(LABELS):
        df[f"n{i}"] = (df["sentiment"] == lab).astype(int)
    wide = df.groupby(["entity", "window_start"]).agg(
        volume=("n0", "size"), **{f"n{i}": (f"n{i}", "sum") for i in range(len(LABELS))}
    )
    wide = wide.reset_index()
    index = {lab: i for i, lab in enumerate(LABELS)}
    rules = [(s.rule, None if s.label is None else index[s.label]) for s in specs]
    out: list[dict[str, Any]] = []
    for _, frame in wide.groupby("entity"):
        found = detect_series(frame, rules, int(step.total_seconds()))
        for r in found.to_dict("records"):
            pos = r["label_pos"]
            label = None if pos is None or pd.isna(pos) else LABELS[int(pos)]
            out.append({"entity": r["entity"], "window_start": r["window_start"], "rule": r["rule"], "label": label})
    return out


def bench_alerts(
    datasets: Path,
    *,
    work_dir: Path,
    seed: int = 2,
    shape: ReplayConfig | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Generate the replay, run its pipeline, and measure the alerts against the manifest and the true labels.

    Returns
    -------
    dict
        ``predicted`` and ``true_labels`` (:func:`evaluate_alerts` of each), ``recall_ratio`` (predicted over
        true-label recall within two windows), ``rows``, ``seconds`` and the replay's shape.
    """
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from dmine_spark.runner.run import run_stages

    shape = shape or ReplayConfig()
    folder = work_dir / "bench" / f"alerts-replay-seed{seed}"
    shutil.rmtree(folder, ignore_errors=True)
    manifest = replay(folder, datasets, shape, seed=seed)
    echo(
        f"replay: {manifest['rows']:,} texts, {len(manifest['entities'])} entities, {manifest['windows']} windows of "
        f"{manifest['window_hours']} h, {len(manifest['episodes'])} episodes (sizes {', '.join(map(str, shape.sizes))})"
    )
    cfg = load_config(folder / "pipeline.yaml", [f"work_dir={work_dir}", "database=dmine_bench_alerts"])
    spark = SparkSession.getActiveSession()
    if spark is None:
        raise RuntimeError("bench alerts: start a Spark session first")
    spark.sql(f"DROP TABLE IF EXISTS {cfg.table(Layer.ALERTS)}")  # the bench's own database: this run's alerts only
    t0 = time.perf_counter()
    run, reports = run_stages(spark, cfg, progress=False, command="bench")
    seconds = time.perf_counter() - t0
    for r in reports:
        echo(r.line())
    got = [r.asDict() for r in spark.table(cfg.table(Layer.ALERTS)).where(F.col("run_id") == run.run_id).collect()]
    predicted = evaluate_alerts(manifest, got)
    truth = evaluate_alerts(manifest, true_label_alerts(folder, manifest, rule_specs(cfg.trends)))
    ratio = predicted["recall_within_2"] / truth["recall_within_2"] if truth["recall_within_2"] else 0.0
    echo(f"{'episode size':<13} {'episodes':>8} {'within 2 windows':>17} {'mean delay':>10} {'true labels':>11}")
    for size, p in predicted["by_size"].items():
        t = truth["by_size"][size]
        delay = "-" if p["mean_delay"] is None else f"{p['mean_delay']:.2f}"
        echo(
            f"{'+' + size:<13} {p['episodes']:>8} {p['detected_within_2']:>8} ({p['recall_within_2']:.0%})"
            f" {delay:>10} {t['recall_within_2']:>10.0%}"
        )
    echo(
        f"false share alerts per 100 entity-weeks: {predicted['false_per_100_entity_weeks']:.2f} "
        f"({predicted['false_alerts']} in {predicted['calm_entity_weeks']:.0f} calm entity-weeks; true labels "
        f"{truth['false_per_100_entity_weeks']:.2f}); volume alerts {predicted['volume_false_per_100_entity_weeks']:.2f}"
    )
    echo(f"recall within 2 windows, predicted over true labels: {ratio:.3f}")
    return {
        "predicted": predicted,
        "true_labels": truth,
        "recall_ratio": ratio,
        "rows": manifest["rows"],
        "seconds": seconds,
        "model_version": run.labels.get("classify.model_version"),
        "accuracy": run.measures.get("classify.accuracy"),
        "shape": {k: getattr(shape, k) for k in ("entities", "windows", "window_hours", "volume", "sizes")},
        "seed": seed,
    }
