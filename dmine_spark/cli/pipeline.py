"""``dmine run`` and one command per stage, all from the stage table."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from dmine_spark.cli.common import echo, pipeline_args, pipeline_profile, pipeline_session, session
from dmine_spark.cli.registry import command
from dmine_spark.config import ConfigError, Layer, PipelineConfig, load_config
from dmine_spark.runner.stages import STAGES

if TYPE_CHECKING:
    from dmine_spark.analyze.record import StageReport
    from dmine_spark.analyze.runs import RunRecorder

__all__ = ["run_pipeline", "print_stage", "print_end", "search", "recommend"]


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
    from dmine_spark.analyze.tracking import warm_up

    warm_up(cfg)  # the MLflow store opens while the driver JVM starts
    spark = session(
        prof,
        work_dir,
        f"dmine-{cfg.name}",
        packages=cfg.spark_packages(),
        table_format=cfg.tables.format,
        extra_jars=cfg.jvm_packages(),
    )
    from dmine_spark.runner.run import run_stages

    run, _ = run_stages(spark, cfg, stages, command=args.command, on_report=print_stage, progress=not args.quiet)
    print_end(run, cfg, args.command)
    return 0


def print_stage(report: StageReport) -> None:
    """A stage's line, as soon as it ends."""
    echo(f"  {report.line()}")


def print_end(run: RunRecorder, cfg: PipelineConfig, command: str) -> None:
    """The run's closing lines: its recorded duration, the row accounting and where its results are."""
    echo(f"run {run.run_id} finished in {run.seconds:.1f}s")
    if "rows_in" in run.counts:
        c = run.counts
        elsewhere = "".join(
            f" + {c[key]:,} {what}"
            for key, what in (("rows_interactions", "interactions"), ("rows_attached", "attached texts"))
            if key in c
        )
        echo(
            f"rows: {c['rows_in']:,} in = {c['rows_clean']:,} clean + {c['rows_quarantined']:,} quarantined"
            f" + {c['rows_duplicate']:,} duplicates{elsewhere}"
        )
    if "report" in run.labels:
        echo(f"report: {run.labels['report']}")
    if "mlflow.run_id" in run.labels:
        echo(f"mlflow: run {run.labels['mlflow.run_id']} in {run.labels['mlflow.tracking_uri']}")
    if command == "run":
        echo(f'query the results: dmine sql "SELECT * FROM {cfg.table(Layer.METRICS)} ORDER BY created_at DESC"')


def _run_args(sp: argparse.ArgumentParser) -> None:
    pipeline_args(sp)
    sp.add_argument(
        "--stages", help=f"comma-separated subset of stages, in order ({', '.join(s.name for s in STAGES)})"
    )


command("run", "run the pipeline's enabled stages (ingest, clean, embed, classify, cluster...)", _run_args)(
    run_pipeline
)


def _search_args(sp: argparse.ArgumentParser) -> None:
    pipeline_args(sp)
    sp.add_argument("text", nargs="*", help="texts to look up in the latest <task>-index (none: run the search stage)")
    sp.add_argument("--k", type=int, help="neighbours per text (default: search.k)")
    sp.add_argument("--model", help="<task>-index@v<N> (default: the latest)")


def search(args: argparse.Namespace) -> int:
    """``dmine search CONFIG``: the search stage; ``dmine search CONFIG TEXT...``: each text's nearest rows."""
    if not args.text:
        return run_pipeline(args)
    if args.k is not None and args.k < 1:
        raise ConfigError(f"search --k: expected a number of neighbours of at least 1, got {args.k}")
    cfg, spark = pipeline_session(args)
    from dmine_spark.deploy.search import Searcher

    searcher = Searcher.from_config(cfg, spark, version=args.model)
    k = args.k or cfg.search.k
    found = searcher.query_many(args.text, k)
    echo(f"dmine search: {searcher.version}, {searcher.index.size:,} rows, top {k}")
    for i, text in enumerate(args.text):
        echo(f"{text!r}:")
        hits = found[found["query"] == i]
        if hits.empty:
            echo("  (nothing left of the text once cleaned)")
        for r in hits.itertuples(index=False):
            label = f"  [{r.label}]" if r.label is not None else ""
            echo(f"  {r.rank:>2}. {r.score:.4f}  {r.neighbor_id}{label}  {r.text}")
    return 0


def _recommend_args(sp: argparse.ArgumentParser) -> None:
    pipeline_args(sp)
    sp.add_argument(
        "--user",
        action="append",
        help="a user id: their top k from the latest recommender (repeatable; none: the stage)",
    )
    sp.add_argument("--k", type=int, help="items per user (default: recommend.k)")
    sp.add_argument("--model", help="<task>-recs-<kind>@v<N> (default: the latest of recommend.serve)")


def recommend(args: argparse.Namespace) -> int:
    """``dmine recommend CONFIG``: the recommend stage; ``--user ID``: that user's top k from the latest model."""
    if not args.user:
        return run_pipeline(args)
    if args.k is not None and args.k < 1:
        raise ConfigError(f"recommend --k: expected a number of items of at least 1, got {args.k}")
    cfg, spark = pipeline_session(args)
    from dmine_spark.deploy.recommend import recommend_users

    version, recs = recommend_users(spark, cfg, args.user, k=args.k, version=args.model)
    k = args.k or cfg.recommend.k
    echo(f"dmine recommend: {version}, top {k}")
    for user in args.user:
        echo(f"user {user}:")
        mine = recs[recs["user_id"] == str(user)]
        if mine.empty:
            echo("  (nothing to recommend: the model has no vector for this user; the hybrid and popularity have)")
        for r in mine.itertuples(index=False):
            text = r.text if isinstance(r.text, str) else ""
            echo(f"  {r.rank:>2}. {r.score:.4f}  {r.item_id}  {text[:100]}")
    return 0


for _stage in STAGES:
    if _stage.name == "search":  # the stage, or with texts a lookup in the index it saved
        command(_stage.name, f"{_stage.help}; with TEXT, the nearest rows of each text", _search_args)(search)
        continue
    if _stage.name == "recommend":  # the stage, or with --user one user's list from the saved recommender
        command(_stage.name, f"{_stage.help}; with --user ID, that user's top k", _recommend_args)(recommend)
        continue
    command(_stage.name, f"{_stage.help} (one stage, from and to the catalog tables)", pipeline_args)(run_pipeline)
