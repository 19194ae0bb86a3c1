"""``dmine bench`` and ``dmine datagen``: measuring dmine_spark, and generating data at warehouse scale."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from dmine_spark.cli.common import datasets_dir, echo
from dmine_spark.cli.registry import command
from dmine_spark.config import ConfigError, default_work_dir

__all__ = ["bench", "datagen", "fuzz"]

_BENCH_KEYS = (
    "default_ratio_vs_st",
    "default_cosine_to_fp32",
    "ratio_vs_st",
    "ratio_vs_naive",
    "int8_ratio_vs_st",
    "rerun_ratio",
    "mfu_fp32",
    "gemm_efficiency",
    "int8_accuracy_loss_pt",
    "default_accuracy_loss_pt",
    "ratio_vs_sparknlp",
    "ratio_vs_sparknlp_bert",
)
_VARIANTS = ("st", "naive", "dmine_default", "dmine_fp32", "dmine_int8", "dmine_rerun", "sparknlp")


def _bench_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "what", choices=["embed", "prepare", "search", "openset", "recommend", "alerts", "neardup", "small"]
    )
    sp.add_argument(
        "--seed",
        type=int,
        default=2,
        help="alerts: the replay's seed (default 2; the default rules were chosen on seed 1)",
    )
    sp.add_argument("--seeds", type=int, default=5, help="openset: seeds per known-intent ratio (default 5)")
    sp.add_argument("--ranker", choices=["logreg", "gbt"], default="logreg", help="recommend: the hybrid's ranker")
    sp.add_argument("--sizes", help="prepare: row counts, default 1000000,10000000,20000000")
    sp.add_argument("--pandas-rows", type=int, help="prepare: rows for the pandas baseline (default: smallest size)")
    sp.add_argument(
        "--work-dir", help="prepare, neardup, small: where generated data and outputs go (default: the work dir)"
    )
    sp.add_argument(
        "--rows",
        type=int,
        help="texts to embed (default 20,000; 200,000 with --gpu); search: corpus and query vectors (100,000); "
        "neardup: generated rows (1,000,000)",
    )
    sp.add_argument(
        "--baseline-rows",
        type=int,
        help="neardup: rows for the MLlib baseline (default: --rows; 0: none); fewer rows also rerun numpy on them",
    )
    sp.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    sp.add_argument("--datasets", help="the shared datasets folder (default: $DMINE_DATASETS)")
    sp.add_argument(
        "--accuracy", action="store_true", help="also BANKING77 accuracy of fp32 against int8 and default vectors"
    )
    sp.add_argument("--gpu", action="store_true", help="encoder core alone on a CUDA GPU, no Spark")
    sp.add_argument("--model", help="local model directory for --gpu")
    sp.add_argument("--only", help=f"embed: a comma list of variants to run, of {','.join(_VARIANTS)} (default: all)")
    sp.add_argument("--repeat", type=int, default=3, help="small: runs of each case and variant (default 3)")
    sp.add_argument("--cases", help="small: a comma list of pipeline_1k,ingest_clean_20,sql (default: all)")
    sp.add_argument("--sparknlp-rows", type=int, default=2000, help="embed: texts for the Spark NLP rows (3.5 line)")


@command(
    "bench",
    "benchmarks: `dmine bench embed` (embedding engine), `dmine bench prepare` (prepare at scale), "
    "`dmine bench search` (nearest neighbours), `dmine bench openset` (BANKING77 open intent protocol), "
    "`dmine bench recommend` (MovieLens recommendation protocol), `dmine bench alerts` (alert recall and false "
    "alerts on the financial replay), `dmine bench neardup` (near-duplicate removal, numpy min-hashes against "
    "MLlib's, with precision and recall on injected copies), `dmine bench small` (whole commands on small inputs, "
    "JVM start included)",
    _bench_args,
)
def bench(args: argparse.Namespace) -> int:
    if args.what == "prepare":
        res = _bench_prepare(args)
    elif args.what == "search":
        res = _bench_search(args)
    elif args.what == "openset":
        res = _bench_openset(args)
    elif args.what == "recommend":
        res = _bench_recommend(args)
    elif args.what == "alerts":
        res = _bench_alerts(args)
    elif args.what == "neardup":
        res = _bench_neardup(args)
    elif args.what == "small":
        res = _bench_small(args)
    elif args.gpu:
        from dmine_spark.tools.bench import bench_gpu

        if not args.model:
            raise ConfigError("bench --gpu: --model DIR (a local model directory) is required")
        res = bench_gpu(args.model, args.rows or 200_000)
        echo(f"gpu core: {res['rows_per_s']:,.0f} rows/s on {res['device']} ({res['precision']}, {res['rows']:,} rows)")
    else:
        from dmine_spark.tools.bench import bench_embed, bench_int8_accuracy

        datasets = datasets_dir(args.datasets)
        variants = tuple(v.strip() for v in args.only.split(",")) if args.only else _VARIANTS
        unknown = [v for v in variants if v not in _VARIANTS]
        if unknown:
            raise ConfigError(f"bench --only: unknown variant {unknown[0]!r}; known: {', '.join(_VARIANTS)}")
        res = bench_embed(datasets, args.rows or 20_000, variants=variants, sparknlp_rows=args.sparknlp_rows, echo=echo)
        if args.accuracy:
            res.update(bench_int8_accuracy(datasets, echo=echo))
        for key in _BENCH_KEYS:
            if key in res:
                echo(f"{key:<18} {res[key]:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, default=str))
    return 0


def _bench_prepare(args: argparse.Namespace) -> dict:
    from dmine_spark.tools.bench_prepare import bench_prepare

    datasets = datasets_dir(args.datasets)
    try:
        sizes = [int(float(x)) for x in (args.sizes or "1000000,10000000,20000000").split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"bench prepare: --sizes {args.sizes!r}: expected row counts like 1e6,1e7") from None
    work = Path(args.work_dir) if args.work_dir else default_work_dir()
    res = bench_prepare(datasets, sizes, work_dir=work, pandas_rows=args.pandas_rows, echo=echo)
    if "spark_vs_pandas" in res:
        echo(f"{'spark_vs_pandas':<18} {res['spark_vs_pandas']:.3f}")
    for key, value in res.get("time_ratio", {}).items():
        echo(f"time ratio {key:<10} {value:.2f}")
    return res


def _bench_neardup(args: argparse.Namespace) -> dict:
    from dmine_spark.tools.bench_neardup import bench_neardup

    work = Path(args.work_dir) if args.work_dir else default_work_dir()
    try:
        return bench_neardup(
            datasets_dir(args.datasets),
            args.rows or 1_000_000,
            work_dir=work,
            baseline_rows=args.baseline_rows,
            echo=echo,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _bench_small(args: argparse.Namespace) -> dict:
    from dmine_spark.tools.bench_small import CASES, bench_small, summary_lines

    work = Path(args.work_dir) if args.work_dir else default_work_dir()
    cases = [c.strip() for c in args.cases.split(",") if c.strip()] if args.cases else list(CASES)
    try:
        res = bench_small(datasets_dir(args.datasets), work_dir=work, repeat=args.repeat, cases=cases, echo=echo)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        raise ConfigError(str(exc)) from None
    for line in summary_lines(res):
        echo(line)
    return res


def _bench_search(args: argparse.Namespace) -> dict:
    from dmine_spark.cli.common import profile, session
    from dmine_spark.tools.bench_search import bench_search

    work = Path(args.work_dir) if args.work_dir else default_work_dir()
    session(profile("local", None, required=False), work, "dmine-bench-search")
    res = bench_search(datasets_dir(args.datasets), args.rows or 100_000, work_dir=work, echo=echo)
    for key in ("spark_vs_numpy", "index_vs_spark_exact", "index_recall_at_10", "banking77_knn_top1_accuracy"):
        echo(f"{key:<28} {res[key]:.4f}")
    return res


def _bench_openset(args: argparse.Namespace) -> dict:
    from dmine_spark.cli.common import profile, session
    from dmine_spark.tools.bench_openset import bench_openset

    if args.seeds < 1:
        raise ConfigError(f"bench openset: --seeds {args.seeds}: at least 1")
    work = Path(args.work_dir) if args.work_dir else default_work_dir()
    session(profile("local", None, required=False), work, "dmine-bench-openset")
    return bench_openset(datasets_dir(args.datasets), work_dir=work, seeds=tuple(range(args.seeds)), echo=echo)


def _bench_alerts(args: argparse.Namespace) -> dict:
    from dmine_spark.cli.common import profile, session
    from dmine_spark.tools.bench_alerts import bench_alerts

    work = Path(args.work_dir) if args.work_dir else default_work_dir()
    session(profile("local", None, required=False), work, "dmine-bench-alerts")
    return bench_alerts(datasets_dir(args.datasets), work_dir=work, seed=args.seed, echo=echo)


def _bench_recommend(args: argparse.Namespace) -> dict:
    from dmine_spark.cli.common import profile, session
    from dmine_spark.tools.bench_recommend import bench_recommend

    work = Path(args.work_dir) if args.work_dir else default_work_dir()
    session(profile("local", None, required=False), work, "dmine-bench-recommend")
    return bench_recommend(datasets_dir(args.datasets), work_dir=work, ranker=args.ranker, echo=echo)


def _datagen_args(sp: argparse.ArgumentParser) -> None:
    from dmine_spark.tools.datagen import FaultRates

    sp.add_argument("--rows", type=int, help="number of rows (not with --replay)")
    sp.add_argument(
        "--replay",
        action="store_true",
        help="replay Twitter financial news texts over time with injected sentiment episodes (manifest, "
        "train.csv and pipeline.yaml in --out)",
    )
    sp.add_argument("--entities", type=int, default=12, help="--replay: cashtags replayed (default 12)")
    sp.add_argument("--windows", type=int, default=364, help="--replay: windows in the period (default 364)")
    sp.add_argument("--window-hours", type=int, default=24, help="--replay: hours per window (default 24)")
    sp.add_argument(
        "--episodes-per-entity", type=int, default=6, help="--replay: injected episodes per entity (default 6)"
    )
    sp.add_argument("--out", required=True, help="new output folder for the part files and _manifest.json")
    sp.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    sp.add_argument("--seed", type=int, default=0, help="same seed, same files (default 0)")
    sp.add_argument("--datasets", help="the shared datasets folder (default: $DMINE_DATASETS)")
    sp.add_argument("--chunk-rows", type=int, default=200_000, help="rows per part file (default 200,000)")
    for f in fields(FaultRates):
        sp.add_argument(
            f"--rate-{f.name.replace('_', '-')}", type=float, metavar="R", help=f"{f.name} rate (default {f.default})"
        )


@command("datagen", "generate N rows from the real datasets, with faults counted in a manifest", _datagen_args)
def datagen(args: argparse.Namespace) -> int:
    if args.replay:
        return _replay(args)
    if args.rows is None:
        raise ConfigError("datagen: give --rows N (or --replay)")
    from dmine_spark.tools import datagen as gen

    rates = {f.name: getattr(args, f"rate_{f.name}") for f in fields(gen.FaultRates)}

    def progress(done: int, total: int) -> None:
        if total > args.chunk_rows:
            echo(f"  {done:,}/{total:,} rows")

    try:
        res = gen.generate(
            args.out,
            args.rows,
            fmt=args.format,
            seed=args.seed,
            datasets_dir=datasets_dir(args.datasets),
            rates=gen.FaultRates(**{k: v for k, v in rates.items() if v is not None}),
            chunk_rows=args.chunk_rows,
            on_chunk=progress,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    m = res.manifest
    echo(
        f"datagen: {m['rows']:,} rows -> {res.out} ({m['format']}, {len(m['files'])} files) "
        f"in {res.seconds:.1f}s, {res.rows_per_s:,.0f} rows/s"
    )
    echo("  faults: " + ", ".join(f"{k} {v:,}" for k, v in m["counts"].items()))
    echo(f"  manifest: {res.out / gen.MANIFEST}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    from dmine_spark.tools.replay import MANIFEST, ReplayConfig, replay

    shape = ReplayConfig(
        entities=args.entities,
        windows=args.windows,
        window_hours=args.window_hours,
        episodes_per_entity=args.episodes_per_entity,
    )
    try:
        m = replay(args.out, datasets_dir(args.datasets), shape, seed=args.seed)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    echo(
        f"datagen --replay: {m['rows']:,} texts of {len(m['entities'])} entities over {m['windows']} windows of "
        f"{m['window_hours']} h, {len(m['episodes'])} episodes -> {args.out}/replay.csv"
    )
    echo(f"  training texts (never replayed): {m['train_rows']:,} in {args.out}/train.csv")
    echo(f"  manifest: {Path(args.out) / MANIFEST}")
    echo(f"  run it: dmine run {m['config']}")
    return 0


def _fuzz_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--rows", type=int, default=10_000, help="records in all (default 10,000; at least 1,000)")
    sp.add_argument("--out", required=True, help="new output folder for the sources, pipeline.yaml and manifest.json")
    sp.add_argument("--seed", type=int, default=0, help="same seed, same corpus (default 0)")
    sp.add_argument("--datasets", help="the shared datasets folder (default: $DMINE_DATASETS)")


@command("fuzz", "write a corpus of every input fault, with its pipeline config and exact record counts", _fuzz_args)
def fuzz(args: argparse.Namespace) -> int:
    from dmine_spark.tools.fuzz import generate_corpus

    try:
        m = generate_corpus(args.out, args.rows, datasets_dir=datasets_dir(args.datasets), seed=args.seed)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    echo(f"fuzz: {m['rows']:,} records -> {args.out}: " + ", ".join(f"{k} {v:,}" for k, v in m["records"].items()))
    echo(f"  run it: dmine run {m['config']}")
    return 0
