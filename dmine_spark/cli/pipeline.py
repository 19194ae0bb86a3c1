"""``dmine run`` and one command per stage, all from the stage table."""

from __future__ import annotations

import argparse

from dmine_spark.cli.common import echo, pipeline_args, pipeline_profile, session
from dmine_spark.cli.registry import command
from dmine_spark.config import Layer, load_config
from dmine_spark.runner.stages import STAGES

__all__ = ["run_pipeline"]


def run_pipeline(args: argparse.Namespace) -> int:
    """Run the config's stages (``dmine run``) or one stage (``dmine <stage>``), printing a line per stage."""
    cfg = load_config(args.config, args.set)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    prof = pipeline_profile(args, cfg)
    stages = None if args.command == "run" else [args.command]
    if args.command == "run" and args.stages:
        stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    work_dir = cfg.resolved_work_dir()
    echo(f"dmine {args.command}: {cfg.name} (task {cfg.task}) -> database {cfg.database}, work dir {work_dir}")
    spark = session(
        prof,
        work_dir,
        f"dmine-{cfg.name}",
        packages=cfg.spark_packages(),
        table_format=cfg.tables.format,
        extra_jars=cfg.jvm_packages(),
    )
    from dmine_spark.runner.run import run_stages

    run, reports = run_stages(
        spark,
        cfg,
        stages,
        command=args.command,
        on_report=lambda r: echo(f"  {r.stage:<9} {r.summary}  [{r.seconds:.1f}s]"),
        progress=not args.quiet,
    )
    echo(f"run {run.run_id} finished in {sum(r.seconds for r in reports):.1f}s")
    if "rows_in" in run.counts:
        c = run.counts
        echo(
            f"rows: {c['rows_in']:,} in = {c['rows_clean']:,} clean + {c['rows_quarantined']:,} quarantined"
            f" + {c['rows_duplicate']:,} duplicates"
        )
    if "report" in run.labels:
        echo(f"report: {run.labels['report']}")
    if "mlflow.run_id" in run.labels:
        echo(f"mlflow: run {run.labels['mlflow.run_id']} in {run.labels['mlflow.tracking_uri']}")
    if args.command == "run":
        echo(f'query the results: dmine sql "SELECT * FROM {cfg.table(Layer.METRICS)} ORDER BY created_at DESC"')
    return 0


def _run_args(sp: argparse.ArgumentParser) -> None:
    pipeline_args(sp)
    sp.add_argument(
        "--stages", help=f"comma-separated subset of stages, in order ({', '.join(s.name for s in STAGES)})"
    )


command("run", "run the pipeline's enabled stages (ingest, clean, embed, classify, cluster...)", _run_args)(
    run_pipeline
)
for _stage in STAGES:
    command(_stage.name, f"{_stage.help} (one stage, from and to the catalog tables)", pipeline_args)(run_pipeline)
