"""``dmine score``, ``dmine stream`` and ``dmine monitor``: a saved model version on new data."""

from __future__ import annotations

import argparse

from dmine_spark.cli.common import echo, input_args, pipeline_args, pipeline_session
from dmine_spark.cli.registry import command
from dmine_spark.config import Layer

__all__ = ["score", "stream", "monitor"]


def _score_args(sp: argparse.ArgumentParser) -> None:
    pipeline_args(sp)
    sp.add_argument("--model", help="<name>@v<N> (default: the latest <task>-<classify.model>)")
    input_args(sp)


@command("score", "batch scoring: embed what the cache lacks, classify, append to pred_<task>", _score_args)
def score(args: argparse.Namespace) -> int:
    cfg, spark = pipeline_session(args)
    from dmine_spark.deploy.score import score_batch

    run, res = score_batch(spark, cfg, args.input, model_ref=args.model, source=args.source, fmt=args.format)
    echo(
        f"dmine score: {res.rows_in:,} rows = {res.scored:,} scored + {res.quarantined:,} quarantined; "
        f"{res.embedded:,} of {res.unique_texts:,} unique texts embedded (the rest from the cache); "
        f"{res.model_version}; {res.seconds:.1f}s"
    )
    echo(f"run {run.run_id}: predictions in {cfg.table(Layer.PRED)}")
    return 0


def _stream_args(sp: argparse.ArgumentParser) -> None:
    pipeline_args(sp)
    sp.add_argument("--model", help="<name>@v<N> (default: stream.model, else the latest <task>-<classify.model>)")
    sp.add_argument("--landing", help="the landing folder (default: stream.landing)")
    sp.add_argument("--available-now", action="store_true", help="score what has landed so far, then stop")
    sp.add_argument("--timeout", type=float, help="stop after this many seconds")


@command("stream", "streaming scoring of files landing in a folder (or a Kafka topic), exactly once", _stream_args)
def stream(args: argparse.Namespace) -> int:
    cfg, spark = pipeline_session(
        args, extra_jars=lambda cfg: ["kafka"] if cfg.stream.kafka is not None and not args.landing else None
    )
    from dmine_spark.deploy.stream import stream as run_stream

    n = run_stream(
        spark,
        cfg,
        landing=args.landing,
        model_ref=args.model,
        available_now=args.available_now,
        timeout=args.timeout,
        echo=echo,
    )
    echo(f"dmine stream: stopped after {n} micro-batches")
    return 0


def _monitor_args(sp: argparse.ArgumentParser) -> None:
    _score_args(sp)
    sp.add_argument("--fail-on-drift", action="store_true", help="exit 1 when drift is found")


@command("monitor", "drift of a new batch against the training baseline, into the monitor table", _monitor_args)
def monitor(args: argparse.Namespace) -> int:
    cfg, spark = pipeline_session(args)
    from dmine_spark.deploy.monitor import CHECKS
    from dmine_spark.deploy.monitor import monitor as run_monitor

    res = run_monitor(spark, cfg, args.input, model_ref=args.model, source=args.source, fmt=args.format)
    echo(
        f"dmine monitor: {res.batch_rows:,} batch rows against {res.baseline_rows:,} baseline rows "
        f"({res.model_version}); {res.rows_in:,} read, {res.quarantined:,} quarantined"
    )
    for metric, (th, value) in CHECKS.items():
        flag = "DRIFT" if metric in res.drifted else "ok"
        shown = f"{res.measures[value]:.4f}" + (
            f" (PSI {res.measures['psi']:.4f} - noise {res.measures['psi_noise']:.4f})" if metric == "psi" else ""
        )
        echo(f"  {metric:<15} {shown:<48} threshold {res.thresholds[th]:<8g} {flag}")
    echo(
        f"run {res.run_id}: drift {'found in ' + ', '.join(res.drifted) if res.drift else 'not found'}; "
        f"rows in {cfg.table(Layer.MONITOR)}"
    )
    return 1 if res.drift and args.fail_on_drift else 0
