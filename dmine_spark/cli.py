"""The ``dmine`` command line: run the pipeline or one stage, list tables, query with SQL."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from dmine_spark import __version__
from dmine_spark import serve as serve_cmds
from dmine_spark.config import ConfigError, SparkProfile, default_work_dir, load_config, load_profile
from dmine_spark.spark import profiles as profile_cmds

__all__ = ["main"]

STAGE_COMMANDS = ("ingest", "clean", "features", "embed", "classify", "regress", "finetune", "cluster")

log = logging.getLogger("dmine_spark")


def _conf_dir_for(config_path: Path) -> Path | None:
    """The ``conf`` folder a pipeline config lives in, so profiles are found from any cwd."""
    for parent in config_path.resolve().parents:
        if parent.name == "conf":
            return parent
    return None


def _profile(name: str, conf_dir: Path | None, *, required: bool) -> SparkProfile:
    try:
        return load_profile(name, conf_dir)
    except ConfigError:
        if required:
            raise
        return SparkProfile()


def _session(  # noqa: ANN202
    profile: SparkProfile,
    work_dir: Path,
    app: str,
    *,
    packages: list[str] | None = None,
    table_format: str = "auto",
    extra_jars: list[str] | None = None,
):
    from dmine_spark.spark.session import build_session

    return build_session(
        profile, work_dir, app_name=app, packages=packages, table_format=table_format, extra_jars=extra_jars
    )


def _cmd_pipeline(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.set)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    profile = _profile(args.profile or cfg.profile, _conf_dir_for(Path(args.config)), required=True)
    stages = None if args.command == "run" else [args.command]
    if args.command == "run" and args.stages:
        stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    work_dir = cfg.resolved_work_dir()
    out = sys.stdout
    out.write(f"dmine {args.command}: {cfg.name} (task {cfg.task}) -> database {cfg.database}, work dir {work_dir}\n")
    out.flush()
    spark = _session(
        profile, work_dir, f"dmine-{cfg.name}", packages=cfg.spark_packages(), table_format=cfg.tables.format
    )
    from dmine_spark.spark.jobs import run_stages

    def show(report) -> None:  # noqa: ANN001
        out.write(f"  {report.stage:<9} {report.summary}  [{report.seconds:.1f}s]\n")
        out.flush()

    run, reports = run_stages(spark, cfg, stages, command=args.command, on_report=show, progress=not args.quiet)
    total = sum(r.seconds for r in reports)
    out.write(f"run {run.run_id} finished in {total:.1f}s\n")
    if "rows_in" in run.counts:
        c = run.counts
        out.write(
            f"rows: {c['rows_in']:,} in = {c['rows_clean']:,} clean + {c['rows_quarantined']:,} quarantined"
            f" + {c['rows_duplicate']:,} duplicates\n"
        )
    if "report" in run.labels:
        out.write(f"report: {run.labels['report']}\n")
    if "mlflow.run_id" in run.labels:
        out.write(f"mlflow: run {run.labels['mlflow.run_id']} in {run.labels['mlflow.tracking_uri']}\n")
    if args.command == "run":
        out.write(f'query the results: dmine sql "SELECT * FROM {cfg.table("metrics")} ORDER BY created_at DESC"\n')
    return 0


def _deploy_session(args: argparse.Namespace):  # noqa: ANN202
    cfg = load_config(args.config, args.set)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    profile = _profile(args.profile or cfg.profile, _conf_dir_for(Path(args.config)), required=True)
    spark = _session(
        profile,
        cfg.resolved_work_dir(),
        f"dmine-{args.command}-{cfg.name}",
        packages=cfg.spark_packages(),
        table_format=cfg.tables.format,
        extra_jars=["kafka"] if args.command == "stream" and cfg.stream.kafka and not args.landing else None,
    )
    return cfg, spark


def _cmd_score(args: argparse.Namespace) -> int:
    cfg, spark = _deploy_session(args)
    from dmine_spark.deploy.score import score_batch

    run, res = score_batch(spark, cfg, args.input, model_ref=args.model, source=args.source, fmt=args.format)
    sys.stdout.write(
        f"dmine score: {res.rows_in:,} rows = {res.scored:,} scored + {res.quarantined:,} quarantined; "
        f"{res.embedded:,} of {res.unique_texts:,} unique texts embedded (the rest from the cache); "
        f"{res.model_version}; {res.seconds:.1f}s\n"
        f"run {run.run_id}: predictions in {cfg.table('predictions')}\n"
    )
    return 0


def _cmd_stream(args: argparse.Namespace) -> int:
    cfg, spark = _deploy_session(args)
    from dmine_spark.deploy.stream import stream

    def echo(msg: str) -> None:
        sys.stdout.write(msg + "\n")
        sys.stdout.flush()

    n = stream(
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


def _cmd_monitor(args: argparse.Namespace) -> int:
    cfg, spark = _deploy_session(args)
    from dmine_spark.deploy.monitor import CHECKS, monitor

    res = monitor(spark, cfg, args.input, model_ref=args.model, source=args.source, fmt=args.format)
    out = sys.stdout
    out.write(
        f"dmine monitor: {res.batch_rows:,} batch rows against {res.baseline_rows:,} baseline rows "
        f"({res.model_version}); {res.rows_in:,} read, {res.quarantined:,} quarantined\n"
    )
    for metric, (th, value) in CHECKS.items():
        flag = "DRIFT" if metric in res.drifted else "ok"
        shown = f"{res.measures[value]:.4f}" + (
            f" (PSI {res.measures['psi']:.4f} - noise {res.measures['psi_noise']:.4f})" if metric == "psi" else ""
        )
        out.write(f"  {metric:<15} {shown:<48} threshold {res.thresholds[th]:<8g} {flag}\n")
    out.write(
        f"run {res.run_id}: drift {'found in ' + ', '.join(res.drifted) if res.drift else 'not found'}; "
        f"rows in {cfg.table('monitor')}\n"
    )
    return 1 if res.drift and args.fail_on_drift else 0


def _sql_work_dir(args: argparse.Namespace) -> Path:
    return Path(args.work_dir).resolve() if args.work_dir else default_work_dir()


def _cmd_sql(args: argparse.Namespace) -> int:
    work_dir = _sql_work_dir(args)
    if not (work_dir / "metastore_db").exists():
        raise ConfigError(f"no dmine catalog in {work_dir}; run `dmine run <config>` first or pass --work-dir")
    spark = _session(_profile(args.profile, None, required=False), work_dir, "dmine-sql")
    from pyspark.errors import AnalysisException, ParseException

    # pyspark logs every failed query as a JSON record; the one-line error below says it all
    logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)
    try:
        df = spark.sql(args.query)
    except (AnalysisException, ParseException) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"sql: {first}") from None
    rows = df.limit(args.max_rows).collect()
    cols = df.columns
    if args.format == "json":
        for r in rows:
            sys.stdout.write(json.dumps(r.asDict(recursive=True), default=str, ensure_ascii=False) + "\n")
    elif args.format == "tsv":
        sys.stdout.write("\t".join(cols) + "\n")
        for r in rows:
            sys.stdout.write("\t".join("" if v is None else str(v) for v in r) + "\n")
    else:
        cells = [[("NULL" if v is None else str(v)) for v in r] for r in rows]
        widths = [min(60, max([len(c)] + [len(row[i]) for row in cells])) for i, c in enumerate(cols)]
        line = lambda vals: "  ".join(v[:60].ljust(w) for v, w in zip(vals, widths, strict=True)).rstrip()  # noqa: E731
        sys.stdout.write(line(cols) + "\n")
        for row in cells:
            sys.stdout.write(line(row) + "\n")
        sys.stdout.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")
    return 0


def _cmd_tables(args: argparse.Namespace) -> int:
    work_dir = _sql_work_dir(args)
    if not (work_dir / "metastore_db").exists():
        raise ConfigError(f"no dmine catalog in {work_dir}; run `dmine run <config>` first or pass --work-dir")
    spark = _session(_profile(args.profile, None, required=False), work_dir, "dmine-tables")
    from dmine_spark.analyze.tables import list_tables

    tables = list_tables(spark, args.database)
    if not tables:
        sys.stdout.write(f"no tables in database {args.database}\n")
    for name, n in tables:
        sys.stdout.write(f"{name:<40} {n:>12,} rows\n")
    return 0


def _cmd_jars(args: argparse.Namespace) -> int:
    from dmine_spark.spark import jars

    names = args.names or sorted(jars.PACKAGES)
    for name in names:
        if name not in jars.PACKAGES:
            raise ConfigError(f"jars: unknown package {name!r}; known: {', '.join(sorted(jars.PACKAGES))}")
    if args.action == "list":
        for name in names:
            pkg = jars.PACKAGES[name]
            state = f"{len(jars.jar_files(name))} jars" if jars.have(name) else "not fetched"
            sys.stdout.write(f"{name:<8} {pkg.coordinate:<40} {state}  ({pkg.what})\n")
        sys.stdout.write(f"jar cache: {jars.jars_dir()}\n")
        return 0
    for name in names:
        try:
            files = jars.fetch(name, force=args.force, echo=lambda m: sys.stdout.write(m + "\n"))
        except jars.MissingJars as exc:
            raise ConfigError(f"jars fetch {name}: {exc}") from None
        sys.stdout.write(f"{name}: {len(files)} jars in {files[0].parent if files else jars.jars_dir()}\n")
    return 0


def _cmd_bench_prepare(args: argparse.Namespace) -> int:
    from dmine_spark.bench_prepare import bench_prepare

    datasets = Path(args.datasets)
    if not datasets.is_dir():
        raise ConfigError(f"bench: --datasets {datasets} is not a directory")
    try:
        sizes = [int(float(x)) for x in (args.sizes or "1000000,10000000,20000000").split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"bench prepare: --sizes {args.sizes!r}: expected row counts like 1e6,1e7") from None

    def echo(m: str) -> None:
        sys.stdout.write(m + "\n")
        sys.stdout.flush()

    work = Path(args.work_dir) if args.work_dir else default_work_dir()
    res = bench_prepare(datasets, sizes, work_dir=work, pandas_rows=args.pandas_rows, echo=echo)
    for key in ("spark_vs_pandas",):
        if key in res:
            sys.stdout.write(f"{key:<18} {res[key]:.3f}\n")
    for key, value in res.get("time_ratio", {}).items():
        sys.stdout.write(f"time ratio {key:<10} {value:.2f}\n")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from dmine_spark import bench

    if args.what == "prepare":
        return _cmd_bench_prepare(args)
    if args.gpu:
        if not args.model:
            raise ConfigError("bench --gpu: --model DIR (a local model directory) is required")
        res = bench.bench_gpu(args.model, args.rows or 200_000)
        sys.stdout.write(
            f"gpu core: {res['rows_per_s']:,.0f} rows/s on {res['device']} ({res['precision']}, {res['rows']:,} rows)\n"
        )
    else:
        datasets = Path(args.datasets)
        if not datasets.is_dir():
            raise ConfigError(f"bench: --datasets {datasets} is not a directory")

        def echo(m: str) -> None:
            sys.stdout.write(m + "\n")
            sys.stdout.flush()

        res = bench.bench_embed(datasets, args.rows or 20_000, echo=echo)
        if args.accuracy:
            res.update(bench.bench_int8_accuracy(datasets, echo=echo))
        keys = (
            "ratio_vs_st",
            "ratio_vs_naive",
            "int8_ratio_vs_st",
            "rerun_ratio",
            "mfu_fp32",
            "gemm_efficiency",
            "int8_accuracy_loss_pt",
        )
        for key in keys:
            if key in res:
                sys.stdout.write(f"{key:<18} {res[key]:.3f}\n")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    return 0


def _cmd_datagen(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from dmine_spark import datagen

    rates = {f.name: getattr(args, f"rate_{f.name}") for f in fields(datagen.FaultRates)}
    out = sys.stdout

    def progress(done: int, total: int) -> None:
        if total > args.chunk_rows:
            out.write(f"  {done:,}/{total:,} rows\n")
            out.flush()

    try:
        res = datagen.generate(
            args.out,
            args.rows,
            fmt=args.format,
            seed=args.seed,
            datasets_dir=args.datasets,
            rates=datagen.FaultRates(**{k: v for k, v in rates.items() if v is not None}),
            chunk_rows=args.chunk_rows,
            on_chunk=progress,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    m = res.manifest
    out.write(
        f"datagen: {m['rows']:,} rows -> {res.out} ({m['format']}, {len(m['files'])} files) "
        f"in {res.seconds:.1f}s, {res.rows_per_s:,.0f} rows/s\n"
    )
    out.write("  faults: " + ", ".join(f"{k} {v:,}" for k, v in m["counts"].items()) + "\n")
    out.write(f"  manifest: {res.out / datagen.MANIFEST}\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dmine", description="dmine_spark: mine business text with Spark.")
    p.add_argument("--version", action="version", version=f"dmine_spark {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def pipeline_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("config", help="pipeline config YAML, e.g. conf/base/pipelines/banking77.yaml")
        sp.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config key, e.g. embed.batch_size=32",
        )
        sp.add_argument("--profile", help="Spark profile in conf/base/spark (default: the config's)")
        sp.add_argument(
            "--work-dir", help="catalog and warehouse folder (default: the config's, $DMINE_WORK_DIR or ./dmine_work)"
        )
        sp.add_argument("-q", "--quiet", action="store_true", help="no live progress lines")

    sp = sub.add_parser("run", help="run the pipeline's enabled stages (ingest, clean, embed, classify, cluster...)")
    pipeline_args(sp)
    sp.add_argument("--stages", help="comma-separated subset of stages, in order")
    for name in STAGE_COMMANDS:
        pipeline_args(sub.add_parser(name, help=f"run the {name} stage alone, from and to the catalog tables"))

    def input_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--input", required=True, help="a catalog table (db.table) or a file or folder path")
        sp.add_argument(
            "--source", help="the config source whose schema and options the input shares (default: the first)"
        )
        sp.add_argument(
            "--format", choices=["csv", "json", "parquet"], help="file format (default: from the path or the source)"
        )

    sp = sub.add_parser(
        "score", help="batch scoring: embed what the cache lacks, classify, append to predictions_<task>"
    )
    pipeline_args(sp)
    sp.add_argument("--model", help="<name>@v<N> (default: the latest <task>-<classify.model>)")
    input_args(sp)
    sp = sub.add_parser(
        "stream", help="streaming scoring of files landing in a folder (or a Kafka topic), exactly once"
    )
    pipeline_args(sp)
    sp.add_argument("--model", help="<name>@v<N> (default: stream.model, else the latest <task>-<classify.model>)")
    sp.add_argument("--landing", help="the landing folder (default: stream.landing)")
    sp.add_argument("--available-now", action="store_true", help="score what has landed so far, then stop")
    sp.add_argument("--timeout", type=float, help="stop after this many seconds")
    sp = sub.add_parser("monitor", help="drift of a new batch against the training baseline, into the monitor table")
    pipeline_args(sp)
    sp.add_argument("--model", help="<name>@v<N> (default: the latest <task>-<classify.model>)")
    input_args(sp)
    sp.add_argument("--fail-on-drift", action="store_true", help="exit 1 when drift is found")

    def catalog_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--work-dir", help="catalog folder (default: $DMINE_WORK_DIR or ./dmine_work)")
        sp.add_argument("--profile", default="local", help="Spark profile (default: local)")

    sp = sub.add_parser("sql", help="run a SQL query against the dmine catalog")
    sp.add_argument("query")
    sp.add_argument("--format", choices=["table", "tsv", "json"], default="table")
    sp.add_argument("--max-rows", type=int, default=100)
    catalog_args(sp)
    sp = sub.add_parser(
        "bench", help="benchmarks: `dmine bench embed` (embedding engine), `dmine bench prepare` (prepare at scale)"
    )
    sp.add_argument("what", choices=["embed", "prepare"])
    sp.add_argument("--sizes", help="prepare: row counts, default 1000000,10000000,20000000")
    sp.add_argument("--pandas-rows", type=int, help="prepare: rows for the pandas baseline (default: smallest size)")
    sp.add_argument("--work-dir", help="prepare: where generated data and outputs go (default: the work dir)")
    sp.add_argument("--rows", type=int, help="texts to embed (default 20,000; 200,000 with --gpu)")
    sp.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    sp.add_argument("--datasets", default=os.environ.get("DMINE_DATASETS", "../shared/datasets"))
    sp.add_argument("--accuracy", action="store_true", help="also BANKING77 accuracy of fp32 against int8 vectors")
    sp.add_argument("--gpu", action="store_true", help="encoder core alone on a CUDA GPU, no Spark")
    sp.add_argument("--model", help="local model directory for --gpu")
    from dataclasses import fields

    from dmine_spark.datagen import FaultRates

    sp = sub.add_parser("datagen", help="generate N rows from the real datasets, with faults counted in a manifest")
    sp.add_argument("--rows", type=int, required=True, help="number of rows")
    sp.add_argument("--out", required=True, help="new output folder for the part files and _manifest.json")
    sp.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    sp.add_argument("--seed", type=int, default=0, help="same seed, same files (default 0)")
    sp.add_argument("--datasets", default=os.environ.get("DMINE_DATASETS", "../shared/datasets"))
    sp.add_argument("--chunk-rows", type=int, default=200_000, help="rows per part file (default 200,000)")
    for f in fields(FaultRates):
        sp.add_argument(
            f"--rate-{f.name.replace('_', '-')}", type=float, metavar="R", help=f"{f.name} rate (default {f.default})"
        )
    sp = sub.add_parser("jars", help="JVM packages (Delta Lake) in the local jar cache: fetch them once, or list")
    sp.add_argument("action", choices=["fetch", "list"])
    sp.add_argument("names", nargs="*", help="packages (default: all)")
    sp.add_argument("--force", action="store_true", help="fetch again even when cached")
    sp = sub.add_parser("tables", help="list the tables of a dmine database with row counts")
    sp.add_argument("--database", default="dmine")
    catalog_args(sp)
    profile_cmds.add_parser(sub)
    serve_cmds.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        if args.command in ("run", *STAGE_COMMANDS):
            return _cmd_pipeline(args)
        if args.command == "sql":
            return _cmd_sql(args)
        if args.command in ("score", "stream", "monitor"):
            return {"score": _cmd_score, "stream": _cmd_stream, "monitor": _cmd_monitor}[args.command](args)
        if args.command == "bench":
            return _cmd_bench(args)
        if args.command == "datagen":
            return _cmd_datagen(args)
        if args.command == "jars":
            return _cmd_jars(args)
        if args.command in profile_cmds.COMMANDS:
            return profile_cmds.run(args)
        if args.command in serve_cmds.COMMANDS:
            return serve_cmds.run(args)
        return _cmd_tables(args)
    except (ConfigError, LookupError, FileNotFoundError) as exc:
        msg = exc.args[0] if isinstance(exc, LookupError) and exc.args else str(exc)
        sys.stderr.write(f"dmine: error: {msg}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("dmine: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
