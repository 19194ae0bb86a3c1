"""Recommendations from interactions and item text: splits, four recommenders and ranking evaluation, in Spark.

The e-commerce use case: users' interactions (ratings, clicks, purchases) are
the supervision signal and the items' text says what an item is about.

* :func:`split_interactions`: a time-based split per user (each user's last
  interactions are held out for test, the ones before them for validation)
  and a **cold-start** item set, whose interactions are all held out, so only
  a recommender that reads item text can recommend those items.
* Four recommenders, each scoring every (user, item) pair it can:
  :func:`popularity_scores` (the baseline every recommender must beat),
  :func:`fit_als` (Spark MLlib's alternating least squares on implicit
  feedback: Hu, Koren & Volinsky 2008, "Collaborative Filtering for Implicit
  Feedback Datasets", ICDM), :func:`user_profiles` (content-based: the
  recency-weighted mean embedding of the items a user liked, scored by cosine)
  and :class:`HybridRanker` (a logistic-regression ranker over candidate
  features: the ALS and content scores, all-time and recent popularity, the
  item's age and the user's genre affinities, trained on the validation
  window).
* :func:`top_k_unseen`: each user's top ``k`` items by a dot product of a user
  vector and item vectors, with every item the user has already interacted
  with left out, computed per user partition against a broadcast item matrix.
* :func:`ranking_metrics`: precision@k, recall@k, NDCG@k and MAP@k from
  ``pyspark.ml.evaluation.RankingEvaluator`` plus catalogue coverage.

A rating of at least ``positive_min`` (4.0 on MovieLens' 0.5–5 scale) is a
positive interaction; every interaction, positive or not, counts as seen.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pyspark.ml.evaluation import RankingEvaluator
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, IntegerType, StructField, StructType

from dmine_spark.mine.neighbors import normalize_rows, rank_columns

__all__ = [
    "RANKING_METRICS",
    "InteractionSplit",
    "split_interactions",
    "dense_index",
    "topk_excluding",
    "top_k_unseen",
    "popularity_scores",
    "AlsParams",
    "fit_als",
    "als_vectors",
    "select_als",
    "user_profiles",
    "ranking_metrics",
    "random_recall_at_k",
    "HybridRanker",
    "FEATURES",
    "candidate_features",
    "pair_scores",
    "ranked",
]

# RankingEvaluator's metric names for the figures dmine_spark reports, by the name it reports them under
RANKING_METRICS = {
    "precision_at_k": "precisionAtK",
    "recall_at_k": "recallAtK",
    "ndcg_at_k": "ndcgAtK",
    "map_at_k": "meanAveragePrecisionAtK",
}

_SECONDS_PER_DAY = 86_400.0


# --------------------------------------------------------------------------- splits


@dataclass
class InteractionSplit:
    """Interactions cut into training, validation and test windows, plus the cold-start part.

    Every frame has ``user_id, item_id, value, ts, positive``.

    Attributes
    ----------
    train, val, test : DataFrame
        Each user's earliest interactions, the ones after them, and the last
        ones (warm items only: cold items appear in none of the three).
    cold_items : DataFrame
        ``item_id`` of the cold-start items.
    cold_test : DataFrame
        Every interaction with a cold-start item.
    """

    train: DataFrame
    val: DataFrame
    test: DataFrame
    cold_items: DataFrame
    cold_test: DataFrame

    @property
    def train_val(self) -> DataFrame:
        """Training and validation windows together: what the models are refitted on before the test."""
        return self.train.unionByName(self.val)


def split_interactions(
    interactions: DataFrame,
    *,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    cold_item_fraction: float = 0.05,
    min_user_interactions: int = 5,
    positive_min: float = 4.0,
    seed: int = 42,
) -> InteractionSplit:
    """A time-based split per user and a cold-start item set.

    Parameters
    ----------
    interactions : DataFrame
        ``user_id, item_id, value, ts``: one row per interaction, ``ts`` in
        seconds (any numeric or timestamp type), ``value`` the rating or weight.
    test_fraction, val_fraction : float
        Share of each user's interactions (by time, latest last; ties by
        ``item_id``) held out for test and, just before them, for validation.
        A user with fewer than ``min_user_interactions`` interactions keeps
        them all in training.
    cold_item_fraction : float
        Share of the items with a positive interaction that become cold-start
        items, chosen by a seeded hash of the id: all their interactions go to
        ``cold_test`` and none to training (0: no cold-start part).
    positive_min : float
        A ``value`` of at least this is a positive interaction.
    seed : int
        Seed of the cold-start choice.

    Returns
    -------
    InteractionSplit

    Raises
    ------
    ValueError
        When the fractions leave nothing for training.
    """
    if not 0.0 < test_fraction < 1.0 or not 0.0 <= val_fraction < 1.0 or test_fraction + val_fraction >= 1.0:
        raise ValueError(
            f"recommend: test_fraction ({test_fraction}) and val_fraction ({val_fraction}) must leave a training part"
        )
    if not 0.0 <= cold_item_fraction < 1.0:
        raise ValueError(f"recommend: cold_item_fraction must be in [0, 1), got {cold_item_fraction}")
    rows = interactions.select(
        "user_id",
        "item_id",
        F.col("value").cast("double").alias("value"),
        F.col("ts").cast("double").alias("ts"),  # a timestamp casts to its epoch seconds
    ).withColumn("positive", F.col("value") >= F.lit(positive_min))
    # cold-start items: a seeded share of the items that have a positive interaction
    liked = rows.where("positive").select("item_id").distinct()
    bucket = F.pmod(F.xxhash64(F.col("item_id").cast("string"), F.lit(seed)), F.lit(1_000_000)) / F.lit(1_000_000.0)
    cold_items = liked.where(bucket < F.lit(cold_item_fraction)).select("item_id")
    cold_ids = F.broadcast(cold_items.withColumn("_cold", F.lit(True)))
    tagged = rows.join(cold_ids, "item_id", "left").withColumn("_cold", F.coalesce(F.col("_cold"), F.lit(False)))
    cold_test = tagged.where("_cold").drop("_cold")
    warm = tagged.where(~F.col("_cold")).drop("_cold")
    w = Window.partitionBy("user_id").orderBy("ts", "item_id")
    n = F.count(F.lit(1)).over(Window.partitionBy("user_id"))
    pos = (F.row_number().over(w) - 1) / n  # 0 for the first interaction, just below 1 for the last
    part = (
        F.when(n < min_user_interactions, F.lit("train"))
        .when(pos >= F.lit(1.0 - test_fraction), F.lit("test"))
        .when(pos >= F.lit(1.0 - test_fraction - val_fraction), F.lit("val"))
        .otherwise(F.lit("train"))
    )
    cols = ["user_id", "item_id", "value", "ts", "positive"]
    split = warm.withColumn("_part", part).select(*cols, "_part").persist()
    return InteractionSplit(
        train=split.where("_part = 'train'").select(*cols),
        val=split.where("_part = 'val'").select(*cols),
        test=split.where("_part = 'test'").select(*cols),
        cold_items=cold_items,
        cold_test=cold_test.select(*cols),
    )


def dense_index(ids: DataFrame, col: str, out: str) -> DataFrame:
    """``col`` and ``out``: a dense 0-based int index of the distinct values of ``col`` (MLlib ALS needs ints).

    The order is ``col``'s sort order, so the index is the same on every run
    for the same values.
    """
    distinct = ids.select(col).distinct().where(F.col(col).isNotNull()).orderBy(col)
    schema = StructType([distinct.schema[col], StructField(out, IntegerType(), False)])
    return distinct.rdd.zipWithIndex().map(lambda p: (p[0][0], int(p[1]))).toDF(schema)


# --------------------------------------------------------------------------- scoring


def topk_excluding(scores: np.ndarray, exclude: Sequence[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best columns of each row of ``scores``, leaving out each row's ``exclude`` columns.

    Parameters
    ----------
    scores : ndarray of shape (n, m)
        Scores of n users for m items (modified in place: excluded cells become ``-inf``).
    exclude : sequence of n int arrays
        Per row, the column positions never returned (the user's seen items).
    k : int
        Items kept per row.

    Returns
    -------
    (ndarray of shape (n, min(k, m)), ndarray of shape (n, min(k, m)))
        Column positions (int64; -1 where fewer than k columns are left) and
        scores (float32), best first, ties by ascending position.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    n, m = scores.shape
    kk = min(k, m)
    for i, cols in enumerate(exclude):
        if len(cols):
            scores[i, cols] = -np.inf
    if kk == 0:
        return np.full((n, 0), -1, dtype=np.int64), np.zeros((n, 0), dtype=np.float32)
    return rank_columns(scores, kk)


def _items_matrix(items: DataFrame, vec_col: str, cosine: bool, max_items: int) -> tuple[np.ndarray, np.ndarray]:
    n = items.count()
    if n > max_items:
        raise ValueError(
            f"recommend: {n:,} items to score is more than max_items ({max_items:,}); raise recommend.max_items "
            "if the driver and each executor can hold that many item vectors"
        )
    # in id order, whatever the partitioning: ties then go to the lower id, the same on every run and reload
    pdf = items.select("item_id", F.col(vec_col).alias("v")).toPandas().sort_values("item_id", kind="stable")
    ids = pdf["item_id"].to_numpy()
    mat = np.stack([np.asarray(v, dtype=np.float32) for v in pdf["v"]]) if len(pdf) else np.zeros((0, 1), np.float32)
    return ids, (normalize_rows(mat) if cosine and len(mat) else mat)


def top_k_unseen(
    users: DataFrame,
    items: DataFrame,
    k: int,
    *,
    seen: DataFrame | None = None,
    vec_col: str = "vector",
    cosine: bool = False,
    max_items: int = 1_000_000,
    chunk_rows: int = 512,
) -> DataFrame:
    """Each user's ``k`` best items by the dot product (or cosine) of user and item vectors, seen items left out.

    The item matrix is collected once and broadcast; each partition of users
    is scored in chunks of ``chunk_rows`` users (``chunk_rows x items`` float32
    scores at a time), so no user-item matrix is ever materialised in Spark.

    Parameters
    ----------
    users : DataFrame
        ``user_id`` and ``vec_col`` (``array<float>``/``array<double>``).
    items : DataFrame
        ``item_id`` and ``vec_col``, of the users' width.
    k : int
        Items per user.
    seen : DataFrame, optional
        ``user_id, item_id`` pairs never recommended (the user's own interactions).
    cosine : bool
        Normalise both sides to unit length first.
    max_items : int
        Most items broadcast (``max_items x d`` float32 on every executor).

    Returns
    -------
    DataFrame
        ``user_id, rank, item_id, score``; ``rank`` 1..k (int), ``score`` a double; equal scores are
        ranked by ascending ``item_id``, so the lists do not depend on how ``items`` is partitioned.

    Raises
    ------
    ValueError
        When there are more than ``max_items`` items.
    """
    spark = users.sparkSession
    item_ids, mat = _items_matrix(items, vec_col, cosine, max_items)
    pos_of = pd.Series(np.arange(len(item_ids)), index=item_ids)
    shared = spark.sparkContext.broadcast((item_ids, mat, pos_of))
    u = users.select("user_id", F.col(vec_col).alias("v"))
    if seen is not None:
        seen_lists = seen.groupBy("user_id").agg(F.collect_set("item_id").alias("seen"))
        u = u.join(seen_lists, "user_id", "left")
    else:
        u = u.withColumn("seen", F.lit(None).cast(f"array<{items.schema['item_id'].dataType.simpleString()}>"))
    schema = StructType(
        [
            users.schema["user_id"],
            StructField("rank", IntegerType()),
            StructField("item_id", items.schema["item_id"].dataType),
            StructField("score", DoubleType()),
        ]
    )

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        ids, imat, where = shared.value
        if len(ids) == 0:
            return
        for b in batches:
            for start in range(0, len(b), chunk_rows):
                c = b.iloc[start : start + chunk_rows]
                umat = np.stack([np.asarray(v, dtype=np.float32) for v in c["v"]])
                if cosine:
                    umat = normalize_rows(umat)
                excl = [
                    where.reindex(s).dropna().to_numpy(dtype=np.int64) if s is not None and len(s) else _NONE
                    for s in c["seen"]
                ]
                pos, top = topk_excluding(umat @ imat.T, excl, k)
                rank = np.broadcast_to(np.arange(1, pos.shape[1] + 1), pos.shape)
                keep = pos >= 0
                yield pd.DataFrame(
                    {
                        "user_id": np.repeat(c["user_id"].to_numpy(), pos.shape[1])[keep.ravel()],
                        "rank": rank[keep].astype(np.int32),
                        "item_id": ids[pos[keep]],
                        "score": top[keep].astype(np.float64),
                    }
                )

    return u.where(F.col("v").isNotNull()).mapInPandas(score, schema)


_NONE = np.zeros(0, dtype=np.int64)


# --------------------------------------------------------------------------- the recommenders


def popularity_scores(train: DataFrame) -> DataFrame:
    """``item_id, popularity``: each item's positive interactions in ``train`` (items with none are left out).

    Also as ``vector`` (``[log1p(popularity)]``) for :func:`top_k_unseen`
    with a user vector of ``[1.0]``: the same ranking for every user, seen
    items removed per user.
    """
    counts = train.where("positive").groupBy("item_id").agg(F.count(F.lit(1)).cast("double").alias("popularity"))
    return counts.withColumn("vector", F.array(F.log1p("popularity")))


@dataclass(frozen=True)
class AlsParams:
    """Settings of one MLlib ALS fit on implicit feedback (``implicitPrefs``)."""

    rank: int = 64
    reg_param: float = 0.05
    alpha: float = 10.0
    max_iter: int = 10
    seed: int = 42

    def label(self) -> str:
        return f"rank={self.rank}, regParam={self.reg_param}, alpha={self.alpha}"


def fit_als(train: DataFrame, users: DataFrame, items: DataFrame, params: AlsParams) -> ALSModel:
    """MLlib ALS on ``train``'s positive interactions (preference 1; confidence ``1 + alpha``).

    Parameters
    ----------
    train : DataFrame
        Interactions (``user_id, item_id, positive``).
    users, items : DataFrame
        :func:`dense_index` of the user and item ids (``user_id, u`` and ``item_id, i``).

    Returns
    -------
    ALSModel
        Factors by the dense indexes ``u`` and ``i``.
    """
    data = train.where("positive").join(users, "user_id").join(items, "item_id").select("u", "i", F.lit(1.0).alias("r"))
    als = ALS(
        userCol="u",
        itemCol="i",
        ratingCol="r",
        implicitPrefs=True,
        rank=params.rank,
        regParam=params.reg_param,
        alpha=params.alpha,
        maxIter=params.max_iter,
        seed=params.seed,
        coldStartStrategy="drop",
        nonnegative=False,
    )
    return als.fit(data)


def als_vectors(model: ALSModel, users: DataFrame, items: DataFrame) -> tuple[DataFrame, DataFrame]:
    """The model's user and item factors by original id: (``user_id, vector``), (``item_id, vector``)."""
    u = model.userFactors.join(users, F.col("id") == F.col("u")).select("user_id", F.col("features").alias("vector"))
    i = model.itemFactors.join(items, F.col("id") == F.col("i")).select("item_id", F.col("features").alias("vector"))
    return u, i


def user_profiles(
    interactions: DataFrame, item_vectors: DataFrame, *, half_life_days: float | None = 365.0
) -> DataFrame:
    """Content-based user profiles: each user's recency-weighted mean embedding of the items they liked.

    Parameters
    ----------
    interactions : DataFrame
        ``user_id, item_id, ts, positive``; only positive interactions count.
    item_vectors : DataFrame
        ``item_id, vector``: the items' text embeddings (unit length).
    half_life_days : float or None
        A like ``half_life_days`` older than the user's latest one weighs half
        as much (``ts`` in seconds); None weighs all likes alike.

    Returns
    -------
    DataFrame
        ``user_id, vector``: the weighted mean (``array<double>``, not normalised: scoring uses cosine).
    """
    liked = interactions.where("positive").join(item_vectors, "item_id")
    latest = F.max("ts").over(Window.partitionBy("user_id"))
    if half_life_days:
        age_days = (latest - F.col("ts")) / F.lit(_SECONDS_PER_DAY)
        weight = F.pow(F.lit(0.5), age_days / F.lit(float(half_life_days)))
    else:
        weight = F.lit(1.0)
    from pyspark.ml.functions import array_to_vector, vector_to_array
    from pyspark.ml.stat import Summarizer

    weighted = liked.select("user_id", array_to_vector("vector").alias("_v"), weight.alias("_w"))
    mean = weighted.groupBy("user_id").agg(Summarizer.mean(F.col("_v"), F.col("_w")).alias("_m"))
    return mean.select("user_id", vector_to_array("_m").alias("vector"))


# --------------------------------------------------------------------------- evaluation


def _relevant(test: DataFrame) -> DataFrame:
    return test.where("positive").groupBy("user_id").agg(F.collect_set("item_id").alias("relevant"))


def ranking_metrics(
    recs: DataFrame, test: DataFrame, k: int, *, catalogue_size: int | None = None, item_index: DataFrame | None = None
) -> dict[str, float]:
    """precision@k, recall@k, NDCG@k and MAP@k of ``recs`` against ``test``'s positives, and catalogue coverage.

    Computed by ``pyspark.ml.evaluation.RankingEvaluator`` over the users with
    at least one positive interaction in ``test``; a user without
    recommendations counts with an empty list (all zeros).

    Parameters
    ----------
    recs : DataFrame
        ``user_id, rank, item_id``.
    test : DataFrame
        Held-out interactions (``user_id, item_id, positive``).
    k : int
        The cut-off.
    catalogue_size : int, optional
        Items that could be recommended: ``coverage`` is the share of them in
        anyone's top k (left out when None).
    item_index : DataFrame, optional
        ``item_id, i`` (:func:`dense_index`); item ids must be numeric for
        RankingEvaluator, so other ids are mapped through it.

    Returns
    -------
    dict
        ``precision_at_k, recall_at_k, ndcg_at_k, map_at_k`` (and ``coverage``), floats in [0, 1];
        ``users``, the number of users evaluated.
    """
    top = recs.where(F.col("rank") <= k).persist()  # read twice: the metrics and the coverage
    rel = test.where("positive")
    if item_index is not None:
        top = top.join(item_index, "item_id").withColumn("item_id", F.col("i"))
        rel = rel.join(item_index, "item_id").withColumn("item_id", F.col("i"))
    relevant = _relevant(rel)
    ranked = top.groupBy("user_id").agg(
        F.transform(F.array_sort(F.collect_list(F.struct("rank", "item_id"))), lambda s: s["item_id"]).alias("ranked")
    )
    frame = (
        relevant.join(ranked, "user_id", "left")
        .select(
            F.coalesce(F.col("ranked"), F.array()).cast("array<double>").alias("prediction"),
            F.col("relevant").cast("array<double>").alias("label"),
        )
        .persist()
    )
    users = frame.count()
    out: dict[str, float] = {"users": float(users)}
    for name, metric in RANKING_METRICS.items():
        if users == 0:
            out[name] = 0.0
            continue
        ev = RankingEvaluator(predictionCol="prediction", labelCol="label", metricName=metric, k=k)
        out[name] = float(ev.evaluate(frame))
    frame.unpersist()
    if catalogue_size:
        out["coverage"] = top.select("item_id").distinct().count() / catalogue_size
    top.unpersist()
    return out


def random_recall_at_k(candidates: int, k: int) -> float:
    """Expected recall@k of a uniformly random ranking of ``candidates`` items, for any user.

    Each relevant item lands in a random top k with probability
    ``min(k, n) / n`` (n candidates), so recall@k has that expectation
    whatever the number of relevant items: the baseline the cold-start
    figures are divided by.
    """
    return min(k, candidates) / candidates if candidates > 0 else 0.0


# --------------------------------------------------------------------------- the hybrid


FEATURES = [
    "als_score",
    "content_score",
    "log_popularity",
    "log_recent_popularity",
    "item_age_days",
    "genre_affinity_max",
    "genre_affinity_mean",
    "has_interactions",
]


def pair_scores(
    pairs: DataFrame,
    users: DataFrame,
    items: DataFrame,
    *,
    out: str = "score",
    vec_col: str = "vector",
    cosine: bool = False,
    max_items: int = 1_000_000,
) -> DataFrame:
    """``user_id, item_id, <out>``: the dot product (or cosine) of each pair's user and item vectors.

    The item matrix is broadcast as in :func:`top_k_unseen`; each user's
    pairs are scored together in one matrix-vector product. A pair whose user
    or item has no vector gets null.
    """
    spark = pairs.sparkSession
    item_ids, mat = _items_matrix(items, vec_col, cosine, max_items)
    shared = spark.sparkContext.broadcast((mat, pd.Series(np.arange(len(item_ids)), index=item_ids)))
    grouped = (
        pairs.groupBy("user_id")
        .agg(F.collect_list("item_id").alias("items"))
        .join(users.select("user_id", F.col(vec_col).alias("v")), "user_id", "left")
    )
    schema = StructType(
        [
            pairs.schema["user_id"],
            StructField("item_id", pairs.schema["item_id"].dataType),
            StructField(out, DoubleType()),
        ]
    )

    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        imat, where = shared.value
        for b in batches:
            frames = []
            for uid, its, v in zip(b["user_id"], b["items"], b["v"], strict=True):
                its = np.asarray(its)
                vals = np.full(len(its), np.nan)
                if v is not None and len(imat):
                    u = np.asarray(v, dtype=np.float32)
                    if cosine:
                        n = np.linalg.norm(u)
                        u = u / n if n > 0 else u
                    at = where.reindex(its).to_numpy()
                    ok = ~np.isnan(at)
                    vals[ok] = imat[at[ok].astype(np.int64)] @ u
                frames.append(pd.DataFrame({"user_id": uid, "item_id": its, out: vals}))
            if frames:
                yield pd.concat(frames, ignore_index=True)

    return grouped.mapInPandas(score, schema)


def candidate_features(
    candidates: DataFrame,
    history: DataFrame,
    *,
    als_users: DataFrame | None,
    als_items: DataFrame | None,
    profiles: DataFrame,
    item_vectors: DataFrame,
    popularity: DataFrame,
    item_genres: DataFrame | None,
    now: float,
    recent_days: float = 90.0,
) -> DataFrame:
    """The hybrid ranker's features of each (user, candidate item) pair.

    Parameters
    ----------
    candidates : DataFrame
        ``user_id, item_id`` pairs to score.
    history : DataFrame
        The interactions the features are computed from (``user_id, item_id, ts, positive``).
    als_users, als_items : DataFrame or None
        ALS factors (``*_id, vector``); a pair without one has ``als_score`` 0.
    profiles, item_vectors : DataFrame
        Content profiles and item embeddings (``*_id, vector``); no vector: ``content_score`` 0.
    popularity : DataFrame
        :func:`popularity_scores` of ``history``.
    item_genres : DataFrame or None
        ``item_id, genre`` rows (one per genre of an item); None: affinities are 0.
    now : float
        The time the features are taken at (seconds): ``item_age_days`` is
        the days since the item's first interaction in ``history`` (0 for an
        item it never saw).
    recent_days : float
        ``log_recent_popularity`` counts the item's positive interactions in
        the ``recent_days`` before ``now`` (what is popular lately).

    Returns
    -------
    DataFrame
        ``user_id, item_id`` and the :data:`FEATURES` columns (doubles, never null).
    """
    # every feature reads the candidates: computed once (a pool of top-k lists is several Python scoring jobs)
    candidates = candidates.select("user_id", "item_id").localCheckpoint()
    out = candidates
    if als_users is not None and als_items is not None:
        out = out.join(pair_scores(candidates, als_users, als_items, out="als_score"), ["user_id", "item_id"], "left")
    else:
        out = out.withColumn("als_score", F.lit(0.0))
    content = pair_scores(candidates, profiles, item_vectors, out="content_score", cosine=True)
    out = out.join(content, ["user_id", "item_id"], "left")
    first_seen = history.groupBy("item_id").agg(
        F.min("ts").alias("_first"),
        F.count(
            F.when(F.col("positive") & (F.col("ts") >= F.lit(float(now) - recent_days * _SECONDS_PER_DAY)), 1)
        ).alias("_recent"),
    )
    out = (
        out.join(popularity.select("item_id", "popularity"), "item_id", "left")
        .withColumn("log_popularity", F.log1p(F.coalesce(F.col("popularity"), F.lit(0.0))))
        .withColumn("has_interactions", F.col("popularity").isNotNull().cast("double"))
        .drop("popularity")
        .join(first_seen, "item_id", "left")
        .withColumn(
            "item_age_days", F.coalesce((F.lit(float(now)) - F.col("_first")) / F.lit(_SECONDS_PER_DAY), F.lit(0.0))
        )
        .withColumn("log_recent_popularity", F.log1p(F.coalesce(F.col("_recent").cast("double"), F.lit(0.0))))
        .drop("_first", "_recent")
    )
    if item_genres is not None:
        liked = history.where("positive").join(item_genres, "item_id")
        per_user = liked.groupBy("user_id").agg(F.countDistinct("item_id").alias("_n"))
        affinity = (
            liked.groupBy("user_id", "genre")
            .agg(F.countDistinct("item_id").alias("_g"))
            .join(per_user, "user_id")
            .select("user_id", "genre", (F.col("_g") / F.col("_n")).alias("_aff"))
        )
        pair_aff = (
            candidates.join(item_genres, "item_id")
            .join(affinity, ["user_id", "genre"], "left")
            .groupBy("user_id", "item_id")
            .agg(
                F.max(F.coalesce("_aff", F.lit(0.0))).alias("genre_affinity_max"),
                F.avg(F.coalesce("_aff", F.lit(0.0))).alias("genre_affinity_mean"),
            )
        )
        out = out.join(pair_aff, ["user_id", "item_id"], "left")
    else:
        out = out.withColumn("genre_affinity_max", F.lit(None)).withColumn("genre_affinity_mean", F.lit(None))
    return out.select(
        "user_id", "item_id", *[F.coalesce(F.col(f).cast("double"), F.lit(0.0)).alias(f) for f in FEATURES]
    )


@dataclass
class HybridRanker:
    """A ranker over :func:`candidate_features`, fitted on the validation window.

    The candidates are the union of each base recommender's top items; a
    candidate is a positive example when the user liked it in the validation
    window. The model is MLlib's ``LogisticRegression`` on standardised
    features (``model_type="logreg"``, the default) or ``GBTClassifier``
    (``"gbt"``); the score is its positive probability. On MovieLens
    (``dmine bench recommend``) the logistic regression ranked better than
    the boosted trees on both the warm and the cold-start test, so it is the
    default.
    """

    model_type: str = "logreg"
    seed: int = 42
    model: Any = None
    importances: dict[str, float] = field(default_factory=dict)

    def fit(self, features: DataFrame, labels: DataFrame) -> HybridRanker:
        """Fit on ``features`` (:func:`candidate_features`) labelled by ``labels`` (``user_id, item_id`` positives).

        ``importances`` then holds the logistic regression's coefficients (on
        standardised features) or the trees' feature importances.

        Raises
        ------
        ValueError
            When ``model_type`` is neither ``logreg`` nor ``gbt``, or no candidate is a positive.
        """
        from pyspark.ml import Pipeline
        from pyspark.ml.classification import GBTClassifier, LogisticRegression
        from pyspark.ml.feature import StandardScaler, VectorAssembler

        pos = labels.select("user_id", "item_id").distinct().withColumn("label", F.lit(1.0))
        data = features.join(pos, ["user_id", "item_id"], "left").withColumn(
            "label", F.coalesce(F.col("label"), F.lit(0.0))
        )
        if data.where("label = 1.0").isEmpty():
            raise ValueError("recommend: no candidate is a liked item of the validation window; raise the candidates")
        if self.model_type == "gbt":
            stages = [
                VectorAssembler(inputCols=FEATURES, outputCol="features"),
                GBTClassifier(maxDepth=5, maxIter=60, stepSize=0.1, seed=self.seed, subsamplingRate=0.8),
            ]
        elif self.model_type == "logreg":
            stages = [
                VectorAssembler(inputCols=FEATURES, outputCol="_raw"),
                StandardScaler(inputCol="_raw", outputCol="features", withMean=True, withStd=True),
                LogisticRegression(regParam=0.01, maxIter=100),
            ]
        else:
            raise ValueError(f"recommend: ranker must be logreg or gbt, got {self.model_type!r}")
        self.model = Pipeline(stages=stages).fit(data)
        head = self.model.stages[-1]
        weights = head.featureImportances.toArray() if self.model_type == "gbt" else head.coefficients.toArray()
        self.importances = dict(zip(FEATURES, (float(w) for w in weights), strict=True))
        return self

    def score(self, features: DataFrame) -> DataFrame:
        """``user_id, item_id, score``: the fitted model's positive probability of each candidate."""
        from pyspark.ml.functions import vector_to_array

        got = self.model.transform(features)
        return got.select("user_id", "item_id", vector_to_array("probability")[1].alias("score"))


def ranked(scores: DataFrame, k: int) -> DataFrame:
    """``user_id, rank, item_id, score``: each user's ``k`` best scored items (ties by ascending ``item_id``)."""
    w = Window.partitionBy("user_id").orderBy(F.desc("score"), F.asc("item_id"))
    return (
        scores.withColumn("rank", F.row_number().over(w))
        .where(F.col("rank") <= k)
        .select("user_id", "rank", "item_id", "score")
    )


def select_als(
    split: InteractionSplit,
    users: DataFrame,
    items: DataFrame,
    grid: Sequence[AlsParams],
    k: int,
) -> tuple[AlsParams, list[tuple[AlsParams, float]]]:
    """The grid point with the best NDCG@k on the validation window (fitted on training), and every score."""
    tried: list[tuple[AlsParams, float]] = []
    seen = split.train.select("user_id", "item_id")
    for p in grid:
        model = fit_als(split.train, users, items, p)
        uv, iv = als_vectors(model, users, items)
        recs = top_k_unseen(uv, iv, k, seen=seen)
        tried.append((p, ranking_metrics(recs, split.val, k)["ndcg_at_k"]))
    best = max(tried, key=lambda t: (t[1], -math.log(t[0].rank)))
    return best[0], tried
