"""``dmine bench neardup``: exact then near-duplicate removal on generated rows, numpy min-hashes against MLlib's.

:func:`dmine_spark.tools.datagen.generate` writes ``rows`` rows of dirty data
from the real datasets (Parquet, cached under ``<work_dir>/bench_data`` by
size and seed, shared with ``dmine bench prepare``). Its ``faults`` column
tags every injected copy (``dup``, or ``near_dup:<edit>`` for a copy with one
small edit) and ``dup_of`` names the row it copies.

One timed run is the step the clean stage runs on a source: exact duplicates
first (rows with the same normalised text, :func:`~dmine_spark.prepare.neardup.normalize`,
keep their smallest ``record_id``), then :func:`~dmine_spark.prepare.neardup.near_duplicates`
on the rows left (threshold 0.8, 5-character shingles, the default banding).
The rows are spread over twice the cores first, as a read of many files
would be. It runs with ``signatures="numpy"`` on ``rows`` rows and with the
baseline of earlier releases (``signatures="mllib"``: MLlib min-hashes,
Spark array verification, groups in Spark) on ``baseline_rows`` rows (the first rows of
the same data, fewer when the baseline would take too long; the numpy path
then also runs on those rows, so the ratio compares one size), in one Spark
session, after an untimed 20,000-row warm-up of the numpy path. Rows/s is
generated rows over the seconds of both steps.

Scores (:func:`neardup_scores`), against the generator's tags:

recall
    Of the injected ``near_dup`` rows that the exact step left (an edit of
    case or whitespace makes an exact copy once normalised; those are the
    exact step's), the share that the near-duplicate step removed into the
    group of the row they copy.
precision
    Of the rows the near-duplicate step removed, the share that are injected
    copies removed into the group of the row they copy. A removed row that
    was not injected counts as an error even when it is a real
    near-duplicate already present in the source datasets, so this is a
    lower bound.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["bench_neardup", "neardup_scores", "run_dedup"]

WARMUP_ROWS = 20_000
SEED = 7
THRESHOLD = 0.8


def neardup_scores(
    faults: Mapping[str, str | None],
    dup_of: Mapping[str, str | None],
    exact: Mapping[str, str],
    near: Mapping[str, str],
) -> dict[str, Any]:
    """Precision and recall of the near-duplicate step against the generator's injected copies.

    Parameters
    ----------
    faults : mapping of str to str or None
        Every generated row's ``record_id`` to its ``faults`` tags (comma-separated, or None).
    dup_of : mapping of str to str or None
        ``record_id`` to the ``record_id`` an injected copy repeats (None for other rows).
    exact : mapping of str to str
        The rows the exact step removed, to the row each one is a copy of.
    near : mapping of str to str
        The rows the near-duplicate step removed, to their group's kept row (``kept_id``).

    Returns
    -------
    dict
        ``precision`` and ``recall`` (None when there is nothing to divide), ``near_removed`` (rows
        the near step removed), ``near_removed_injected`` (of them, injected copies in their source's
        group), ``injected_near_dup`` (rows tagged ``near_dup``), ``near_dup_exact`` (of them, removed
        by the exact step), ``near_dup_found`` (of the others, removed into their source's group).
    """

    def rep(rid: str) -> str:
        first = exact.get(rid, rid)
        return near.get(first, first)

    def copied(rid: str) -> bool:
        src = dup_of.get(rid)
        return src is not None and rep(rid) == rep(src)

    injected = [rid for rid, tags in faults.items() if tags and any(t.startswith("near_dup") for t in tags.split(","))]
    left = [rid for rid in injected if rid not in exact]
    found = sum(rid in near and copied(rid) for rid in left)
    correct = sum(bool(faults.get(rid)) and copied(rid) for rid in near)
    return {
        "precision": correct / len(near) if near else None,
        "recall": found / len(left) if left else None,
        "near_removed": len(near),
        "near_removed_injected": correct,
        "injected_near_dup": len(injected),
        "near_dup_exact": len(injected) - len(left),
        "near_dup_found": found,
    }


def run_dedup(spark: Any, data_dir: Path, rows: int, signatures: str) -> dict[str, Any]:
    """Time exact then near-duplicate removal on the first ``rows`` generated rows of ``data_dir``.

    Parameters
    ----------
    spark : SparkSession
        The session to run in.
    data_dir : Path
        A folder written by :func:`~dmine_spark.tools.datagen.generate` (Parquet).
    rows : int
        Rows used (in ``record_id`` order; at most the folder's rows).
    signatures : {"numpy", "mllib"}
        Passed to :func:`~dmine_spark.prepare.neardup.near_duplicates`.

    Returns
    -------
    dict
        ``rows``, ``seconds`` (both steps), ``exact_seconds``, ``near_seconds``, ``rows_per_s``,
        ``near_rows_per_s`` (rows given to the near step over its seconds), ``exact_removed``,
        ``near_stats`` (its ``stats``) and the scores of :func:`neardup_scores`.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from dmine_spark.prepare.neardup import near_duplicates, normalize

    every = spark.read.parquet(str(data_dir / "*.parquet"))
    df = every.orderBy("record_id").limit(rows) if rows else every
    # spread over the cores as a read of many files would be (a limit leaves one partition)
    parts = 2 * max(2, spark.sparkContext.defaultParallelism)
    df = df.select("record_id", "text", "faults", "dup_of").repartition(parts).persist()
    n = df.count()
    truth = df.select("record_id", "faults", "dup_of").toPandas()

    t0 = time.perf_counter()
    norm = normalize(F.col("text"))
    first = F.when(F.length(norm) > 0, F.min("record_id").over(Window.partitionBy(norm)))
    marked = df.select("record_id", "text", first.alias("_first")).persist()
    removed = marked.where(F.col("_first") != F.col("record_id")).select("record_id", "_first").toPandas()
    left = marked.where(F.col("_first").isNull() | (F.col("_first") == F.col("record_id"))).select("record_id", "text")
    t1 = time.perf_counter()
    res = near_duplicates(left, id_col="record_id", text_col="text", threshold=THRESHOLD, signatures=signatures)
    near = res.dups.select("record_id", "kept_id").toPandas()
    t2 = time.perf_counter()
    n_left = res.stats["rows"]
    marked.unpersist()
    df.unpersist()

    scores = neardup_scores(
        dict(zip(truth["record_id"], truth["faults"], strict=True)),
        dict(zip(truth["record_id"], truth["dup_of"], strict=True)),
        dict(zip(removed["record_id"], removed["_first"], strict=True)),
        dict(zip(near["record_id"], near["kept_id"], strict=True)),
    )
    return {
        "rows": n,
        "signatures": signatures,
        "seconds": t2 - t0,
        "exact_seconds": t1 - t0,
        "near_seconds": t2 - t1,
        "rows_per_s": n / (t2 - t0),
        "near_rows_per_s": n_left / (t2 - t1),
        "exact_removed": len(removed),
        "near_stats": res.stats,
        **scores,
    }


def bench_neardup(
    datasets: Path,
    rows: int,
    *,
    work_dir: Path,
    baseline_rows: int | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Generate (or reuse) ``rows`` rows, run the numpy path on them and the MLlib baseline on ``baseline_rows``.

    Parameters
    ----------
    datasets : Path
        The shared datasets folder.
    rows : int
        Generated rows, at least 1,000.
    work_dir : Path
        Where generated data (``bench_data/rows<N>_seed7``) and the Spark catalog go.
    baseline_rows : int, optional
        Rows for the MLlib baseline (default: ``rows``; 0: no baseline).
    echo : callable
        Where progress lines go.

    Returns
    -------
    dict
        ``numpy`` and ``mllib`` (from :func:`run_dedup`); when the baseline ran on fewer rows,
        ``numpy_baseline_rows`` (numpy on those rows too), ``ratio_across_sizes`` and ``note``;
        ``ratio`` (numpy rows/s over MLlib rows/s on the same rows) and ``near_ratio`` (the near
        step alone) when both ran; ``cores``, ``threshold``, ``seed``, ``data``.

    Raises
    ------
    ValueError
        If ``rows`` is below 1,000 or ``baseline_rows`` above ``rows``.
    """
    from dmine_spark.config import load_profile
    from dmine_spark.spark.session import build_session
    from dmine_spark.tools.bench_prepare import bench_data

    if rows < 1000:
        raise ValueError(f"bench neardup: --rows {rows}: at least 1,000")
    baseline_rows = rows if baseline_rows is None else baseline_rows
    if not 0 <= baseline_rows <= rows:
        raise ValueError(f"bench neardup: --baseline-rows {baseline_rows}: between 0 and --rows ({rows})")
    work_dir = Path(work_dir).resolve()

    data = bench_data(work_dir / "bench_data", rows, SEED, datasets, echo=echo)
    spark = build_session(load_profile("local"), work_dir / "bench_catalog", app_name="dmine-bench-neardup")
    res: dict[str, Any] = {"cores": os.cpu_count(), "threshold": THRESHOLD, "seed": SEED, "data": str(data)}
    runs = [("numpy", rows), ("mllib", baseline_rows)]
    if 0 < baseline_rows < rows:
        runs.append(("numpy", baseline_rows))  # the same rows as the baseline, for a ratio at one size
    try:
        run_dedup(spark, data, min(WARMUP_ROWS, rows), "numpy")  # untimed: JIT and Python workers
        for name, n in runs:
            if not n:
                continue
            echo(f"{name:<6} {n:,} rows ...")
            r = run_dedup(spark, data, n if n < rows else 0, name)
            key = name if n == rows or name == "mllib" else f"{name}_baseline_rows"
            res[key] = r
            echo(
                f"{name:<6} {r['rows']:>11,} rows {r['seconds']:8.1f}s {r['rows_per_s']:10,.0f} rows/s "
                f"(exact {r['exact_seconds']:.1f}s, near {r['near_seconds']:.1f}s: {r['near_rows_per_s']:,.0f} rows/s)  "
                f"precision {_fmt(r['precision'])}  recall {_fmt(r['recall'])}  "
                f"steps {r['near_stats']['seconds']}"
            )
    finally:
        spark.stop()
    if "numpy" in res and "mllib" in res:
        same = res.get("numpy_baseline_rows", res["numpy"])
        res["ratio"] = same["rows_per_s"] / res["mllib"]["rows_per_s"]
        res["near_ratio"] = same["near_rows_per_s"] / res["mllib"]["near_rows_per_s"]
        echo(
            f"ratio numpy/mllib on {res['mllib']['rows']:,} rows: {res['ratio']:.2f} (near step alone {res['near_ratio']:.2f})"
        )
        if baseline_rows < rows:
            res["ratio_across_sizes"] = res["numpy"]["rows_per_s"] / res["mllib"]["rows_per_s"]
            res["note"] = (
                f"the MLlib baseline ran on the first {baseline_rows:,} rows only; numpy on {rows:,} rows against "
                f"it: {res['ratio_across_sizes']:.2f} (favours the baseline: candidate pairs grow faster than rows)"
            )
            echo(f"note: {res['note']}")
    return res


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"
