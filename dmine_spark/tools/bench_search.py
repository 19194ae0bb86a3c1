"""``dmine bench search``: exact top-10 search in Spark and the HNSW index, against brute-force numpy, in one run.

The vectors are real: every BANKING77 question (train and test), the AG News
test articles (title and description) and the Twitter financial news
training tweets, embedded once with the default model (about 30,000 texts,
kept in ``<work_dir>/bench/`` for later runs). ``rows`` corpus vectors and
``rows`` query vectors are drawn from that pool in turn (the queries in the
reverse order), each with Gaussian noise of standard deviation 0.01 per
dimension and normalised again, so repeats are near, not exact, duplicates.

Measured: exact top-10 of every query in Spark (blocked, no broadcast), as
seconds and query rows/s; brute-force single-process numpy
(:func:`~dmine_spark.mine.neighbors.block_topk`) on the first
``baseline_rows`` queries; the faiss HNSW index's build seconds, query rows/s
and recall@10 against the exact answers of Spark; and BANKING77's 1-NN label
agreement (each test question's nearest training question, exact).
"""

from __future__ import annotations

import csv
import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["load_pool", "perturbed", "bench_search"]

log = logging.getLogger(__name__)


def _texts(datasets: Path) -> dict[str, list[list[str]]]:
    def rows(path: Path, **kw: Any) -> list[list[str]]:
        with open(path, newline="", encoding="utf-8") as fh:
            return list(csv.reader(fh, **kw))

    b_train = rows(datasets / "banking77" / "train.csv")[1:]
    b_test = rows(datasets / "banking77" / "test.csv")[1:]
    ag = [[f"{r[1]}. {r[2]}", r[0]] for r in rows(datasets / "ag_news_test" / "test.csv")]
    tw = rows(datasets / "twitter_financial_news_sentiment" / "sent_train.csv")[1:]
    return {"banking77_train": b_train, "banking77_test": b_test, "ag_news": ag, "twitter": tw}


def load_pool(datasets: Path, cache_dir: Path, echo: Callable[[str], None] = log.info) -> dict[str, Any]:
    """The embedded texts of the benchmark, by dataset, with BANKING77's labels; embedded once and kept.

    Returns
    -------
    dict
        ``vectors`` (dataset → float32 array (n, 384)), ``labels`` (BANKING77 train and test) and ``seconds`` of embedding (0 when read back).
    """
    from dmine_spark.features.encoder import ModelSpec, get_encoder

    parts = _texts(datasets)
    digest = hashlib.sha256("\n".join(r[0] for p in parts.values() for r in p).encode()).hexdigest()[:16]
    path = cache_dir / f"search_pool_{digest}.npz"
    labels = {
        "banking77_train": [r[1] for r in parts["banking77_train"]],
        "banking77_test": [r[1] for r in parts["banking77_test"]],
    }
    if path.is_file():
        with np.load(path) as z:
            return {"vectors": {k: z[k] for k in parts}, "labels": labels, "seconds": 0.0}
    encoder = get_encoder(ModelSpec(device="cpu", precision="fp32"))
    t0 = time.perf_counter()
    vectors = {}
    for name, rows in parts.items():
        echo(f"  embedding {len(rows):,} {name} texts")
        vectors[name] = encoder.encode([r[0] for r in rows])
    seconds = time.perf_counter() - t0
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.savez(path, **vectors)
    return {"vectors": vectors, "labels": labels, "seconds": seconds}


def perturbed(pool: np.ndarray, n: int, seed: int, sigma: float = 0.01) -> np.ndarray:
    """``n`` rows of ``pool`` in turn, each with N(0, ``sigma``) noise per dimension, L2-normalised (float32)."""
    from dmine_spark.mine.neighbors import normalize_rows

    rng = np.random.default_rng(seed)
    base = pool[np.arange(n) % len(pool)]
    return normalize_rows(base + rng.normal(scale=sigma, size=base.shape).astype(np.float32))


def bench_search(
    datasets: Path,
    rows: int = 100_000,
    *,
    work_dir: Path,
    k: int = 10,
    baseline_rows: int = 5_000,
    block_rows: int = 8192,
    echo: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Run the search benchmark (see the module's docstring) and return its figures."""
    from pyspark.sql import SparkSession

    from dmine_spark.mine.neighbors import HnswParams, NeighborIndex, block_topk, normalize_rows, recall_at_k

    pool = load_pool(datasets, work_dir / "bench", echo)
    vec = pool["vectors"]
    everything = np.vstack([vec[k_] for k_ in ("banking77_train", "banking77_test", "ag_news", "twitter")])
    corpus, queries = perturbed(everything, rows, 1), perturbed(everything[::-1], rows, 2)
    res: dict[str, Any] = {"rows": rows, "queries": rows, "k": k, "pool": len(everything), "dims": corpus.shape[1]}
    res["pool_embed_seconds"] = pool["seconds"]

    # BANKING77: each test question's nearest training question, exact
    pos, _ = block_topk(normalize_rows(vec["banking77_test"]), normalize_rows(vec["banking77_train"]), 1)
    train_labels = np.asarray(pool["labels"]["banking77_train"])
    res["banking77_knn_top1_accuracy"] = float(
        np.mean(train_labels[pos[:, 0]] == np.asarray(pool["labels"]["banking77_test"]))
    )
    echo(f"banking77 1-NN label agreement: {res['banking77_knn_top1_accuracy']:.4f} (3,080 test vs 10,003 train)")

    # the baseline: brute force in one process on a subset of the queries
    nb = min(baseline_rows, rows)
    t0 = time.perf_counter()
    block_topk(queries[:nb], corpus, k)
    res["numpy_seconds"] = time.perf_counter() - t0
    res["numpy_rows_per_s"] = nb / res["numpy_seconds"]
    echo(f"numpy brute force: {nb:,} queries in {res['numpy_seconds']:.1f}s, {res['numpy_rows_per_s']:,.0f} rows/s")

    from dmine_spark.mine.neighbors import exact_topk

    spark = SparkSession.getActiveSession()
    if spark is None:
        raise RuntimeError("bench search needs an active SparkSession")
    ids = np.arange(rows, dtype=np.int64)

    def frame(x: np.ndarray):
        import pandas as pd

        return spark.createDataFrame(pd.DataFrame({"id": ids, "embedding": list(x)}), "id LONG, embedding ARRAY<FLOAT>")

    qdf, cdf = frame(queries).cache(), frame(corpus).cache()
    qdf.count(), cdf.count()
    t0 = time.perf_counter()
    exact = exact_topk(qdf, cdf, k, block_rows=block_rows, broadcast_max_rows=0).toPandas()
    res["spark_exact_seconds"] = time.perf_counter() - t0
    res["spark_exact_rows_per_s"] = rows / res["spark_exact_seconds"]
    res["spark_vs_numpy"] = res["spark_exact_rows_per_s"] / res["numpy_rows_per_s"]
    echo(
        f"spark exact top-{k}: {rows:,} x {rows:,} in {res['spark_exact_seconds']:.1f}s, "
        f"{res['spark_exact_rows_per_s']:,.0f} rows/s ({res['spark_vs_numpy']:.2f}x numpy, "
        f"{spark.sparkContext.defaultParallelism} slots)"
    )
    qdf.unpersist(), cdf.unpersist()
    truth = exact.sort_values(["id", "rank"]).groupby("id").neighbor_id.apply(list)

    p = HnswParams()
    t0 = time.perf_counter()
    index = NeighborIndex.from_vectors(corpus, ids.tolist(), params=p, k=k)
    res["index_build_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    found, _ = index.search(queries, k)
    res["index_query_seconds"] = time.perf_counter() - t0
    res["index_rows_per_s"] = rows / res["index_query_seconds"]
    res["index_recall_at_10"] = recall_at_k(found[truth.index.to_numpy()], truth.tolist())
    res["index_params"] = {"m": p.m, "ef_construction": p.ef_construction, "ef_search": p.ef_search}
    res["index_vs_spark_exact"] = res["index_rows_per_s"] / res["spark_exact_rows_per_s"]
    echo(
        f"faiss HNSW (M={p.m}, efConstruction={p.ef_construction}, efSearch={p.ef_search}): built in "
        f"{res['index_build_seconds']:.1f}s; {res['index_rows_per_s']:,.0f} query rows/s on the driver; "
        f"recall@{k} {res['index_recall_at_10']:.4f} against exact"
    )
    return res
