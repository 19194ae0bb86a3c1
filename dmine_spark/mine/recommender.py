"""The recommenders as saved models, and the evaluation protocol the recommend stage and its benchmark share.

:class:`Recommender` is one fitted recommender (popularity, ALS, content-based
or the hybrid ranker) as a pyspark.ml ``Model``: it holds the frames it scores
from (user and item vectors, the interactions it has seen) and, for the
hybrid, the fitted ranker, and it is saved and loaded like any stage of a
``PipelineModel``, so each is a numbered version in the model store.

:func:`evaluate_recommenders` runs the protocol of
:mod:`dmine_spark.mine.recommend` (time split per user, cold-start items,
ALS grid on validation, the hybrid ranker fitted on the validation window,
every model refitted on training + validation and ranked for the test) and
returns the figures; :func:`fit_recommenders` fits the four models on every
interaction for serving.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyspark.ml import Model, PipelineModel
from pyspark.ml.param.shared import Param, Params, TypeConverters
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dmine_spark.config import RecommendConfig
from dmine_spark.io.persist import Persisted
from dmine_spark.mine import recommend as R

__all__ = [
    "KINDS",
    "Recommender",
    "Evaluation",
    "interactions_frame",
    "evaluate_recommenders",
    "fit_recommenders",
    "similar_items",
]

KINDS = ("popularity", "als", "content", "hybrid")
"""The recommenders, baseline first."""

# the frames each kind scores from; the hybrid holds its three parts' frames and the interactions
_FRAMES = {
    "popularity": ("popularity", "history"),
    "als": ("users", "items", "history"),
    "content": ("users", "items", "history"),
    "hybrid": ("als_users", "als_items", "profiles", "items", "popularity", "history"),
}


class Recommender(Persisted, Model):
    """One fitted recommender: each user's top ``k`` items it has not interacted with.

    ``kind`` is ``popularity`` (every user gets the most liked items),
    ``als`` (the dot product of MLlib ALS factors), ``content`` (the cosine of
    the user's profile, a recency-weighted mean embedding of the items they
    liked, to each item's text embedding) or ``hybrid`` (the three parts' top
    ``candidates`` each, re-ranked by a fitted ranker over
    :data:`~dmine_spark.mine.recommend.FEATURES`).

    ``transform`` takes rows with ``user_id`` and returns ``user_id, rank,
    item_id, score`` (``rank`` 1..k), the model's recommendations for those
    users; a user the model never saw gets the popularity model's list (and
    none from ALS or content, which have no vector for them).

    Frames (``frames``): ``history`` (``user_id, item_id, ts, positive``;
    ``ts`` in epoch seconds) is never recommended back; ``users``/``items``
    (``*_id, vector``) for ALS and content; ``popularity``
    (:func:`~dmine_spark.mine.recommend.popularity_scores`); the hybrid's
    ``als_users, als_items, profiles, items, popularity`` and, optionally,
    ``genres`` (``item_id, genre``).
    """

    kind = Param(Params._dummy(), "kind", "popularity, als, content or hybrid", TypeConverters.toString)
    k = Param(Params._dummy(), "k", "items per user", TypeConverters.toInt)
    candidates = Param(Params._dummy(), "candidates", "hybrid: candidates per part", TypeConverters.toInt)
    recentDays = Param(Params._dummy(), "recentDays", "hybrid: days of recent popularity", TypeConverters.toFloat)
    maxItems = Param(Params._dummy(), "maxItems", "most items broadcast", TypeConverters.toInt)

    def __init__(
        self,
        kind: str = "popularity",
        k: int = 10,
        candidates: int = 50,
        recent_days: float = 90.0,
        max_items: int = 1_000_000,
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"recommend: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self._setDefault(kind="popularity", k=10, candidates=50, recentDays=90.0, maxItems=1_000_000)
        self._set(kind=kind, k=k, candidates=candidates, recentDays=recent_days, maxItems=max_items)
        self.frames: dict[str, DataFrame] = {}
        self.ranker: PipelineModel | None = None
        self.now: float = 0.0
        self.info: dict[str, Any] = {}

    @classmethod
    def of(
        cls, kind: str, frames: dict[str, DataFrame], *, r: RecommendConfig, ranker: Any = None, now: float = 0.0
    ) -> Recommender:
        """A recommender of ``kind`` over ``frames``, with the recommend section's ``k``, candidates and limits."""
        missing = [f for f in _FRAMES[kind] if f not in frames]
        if missing:
            raise ValueError(f"recommend: a {kind} recommender needs the frames {', '.join(missing)}")
        rec = cls(kind, r.k, r.candidates, r.recent_days, r.max_items)
        rec.frames = dict(frames)
        rec.ranker = ranker
        rec.now = float(now)
        return rec

    # ------------------------------------------------------------------ scoring

    def _seen(self) -> DataFrame:
        return self.frames["history"].select("user_id", "item_id")

    def _users(self, users: DataFrame | None) -> DataFrame:
        known = self.frames["history"].select("user_id").distinct()
        return known if users is None else users.select("user_id").distinct()

    def _part(self, kind: str) -> Recommender:
        f = self.frames
        frames = {
            "popularity": {"popularity": f["popularity"], "history": f["history"]},
            "als": {"users": f["als_users"], "items": f["als_items"], "history": f["history"]},
            "content": {"users": f["profiles"], "items": f["items"], "history": f["history"]},
        }[kind]
        part = Recommender(kind, self.getOrDefault("k"), max_items=self.getOrDefault("maxItems"))
        part.frames = frames
        return part

    def recommend(self, users: DataFrame | None = None, k: int | None = None) -> DataFrame:
        """``user_id, rank, item_id, score``: the top ``k`` unseen items of ``users`` (default: every user seen).

        Parameters
        ----------
        users : DataFrame, optional
            ``user_id`` rows.
        k : int, optional
            Items per user (default: the model's ``k``).
        """
        k = k or self.getOrDefault("k")
        kind = self.getOrDefault("kind")
        who = self._users(users)
        max_items = self.getOrDefault("maxItems")
        if kind == "popularity":
            one = who.withColumn("vector", F.array(F.lit(1.0)))
            return R.top_k_unseen(one, self.frames["popularity"], k, seen=self._seen(), max_items=max_items)
        if kind in ("als", "content"):
            vectors = self.frames["users"].join(who, "user_id")
            return R.top_k_unseen(
                vectors, self.frames["items"], k, seen=self._seen(), cosine=kind == "content", max_items=max_items
            )
        n = self.getOrDefault("candidates")
        pool = None
        for part in ("popularity", "als", "content"):
            got = self._part(part).recommend(who, n).select("user_id", "item_id")
            pool = got if pool is None else pool.unionByName(got)
        return self.rank_pairs(pool.distinct(), k)

    def features(self, pairs: DataFrame) -> DataFrame:
        """The hybrid ranker's features of ``pairs`` (``user_id, item_id``)."""
        f = self.frames
        return R.candidate_features(
            pairs,
            f["history"],
            als_users=f["als_users"],
            als_items=f["als_items"],
            profiles=f["profiles"],
            item_vectors=f["items"],
            popularity=f["popularity"],
            item_genres=f.get("genres"),
            now=self.now,
            recent_days=self.getOrDefault("recentDays"),
        )

    def rank_pairs(self, pairs: DataFrame, k: int | None = None) -> DataFrame:
        """Hybrid: ``user_id, rank, item_id, score``, each user's top ``k`` of the given candidate ``pairs``.

        Raises
        ------
        ValueError
            When the model is not a fitted hybrid.
        """
        if self.getOrDefault("kind") != "hybrid" or self.ranker is None:
            raise ValueError("recommend: only a fitted hybrid recommender ranks candidate pairs")
        from pyspark.ml.functions import vector_to_array

        scored = self.ranker.transform(self.features(pairs)).select(
            "user_id", "item_id", vector_to_array("probability")[1].alias("score")
        )
        return R.ranked(scored, k or self.getOrDefault("k"))

    def _transform(self, dataset: DataFrame) -> DataFrame:
        return self.recommend(dataset)

    # ------------------------------------------------------------------ persistence

    def _state_metadata(self) -> dict[str, Any]:
        return {"frames": sorted(self.frames), "ranker": self.ranker is not None, "now": self.now, "info": self.info}

    def _save_state(self, path: str, spark: SparkSession) -> None:
        for name, df in self.frames.items():
            df.write.mode("overwrite").parquet(str(Path(path) / "frames" / name))
        if self.ranker is not None:
            self.ranker.write().overwrite().save(str(Path(path) / "ranker"))

    def _load_state(self, path: str, state: dict[str, Any], spark: SparkSession) -> None:
        self.frames = {n: spark.read.parquet(str(Path(path) / "frames" / n)) for n in state.get("frames", [])}
        self.ranker = PipelineModel.load(str(Path(path) / "ranker")) if state.get("ranker") else None
        self.now = float(state.get("now", 0.0))
        self.info = dict(state.get("info", {}))

    def copy(self, extra: dict | None = None) -> Recommender:
        that = super().copy(extra)
        that.frames, that.ranker, that.now, that.info = dict(self.frames), self.ranker, self.now, dict(self.info)
        return that


# --------------------------------------------------------------------------- the protocol


def interactions_frame(rows: DataFrame, positive_min: float) -> DataFrame:
    """``user_id, item_id, value, ts, positive`` with ``ts`` in epoch seconds (a double), from the interactions table."""
    return rows.select(
        F.col("user_id").cast("string").alias("user_id"),
        F.col("item_id").cast("string").alias("item_id"),
        F.col("value").cast("double").alias("value"),
        F.col("ts").cast("double").alias("ts"),
    ).withColumn("positive", F.col("value") >= F.lit(positive_min))


def _history(df: DataFrame) -> DataFrame:
    return df.select("user_id", "item_id", "ts", "positive")


def _grid(r: RecommendConfig) -> list[R.AlsParams]:
    g = r.als
    return [
        R.AlsParams(rank=rank, reg_param=reg, alpha=alpha, max_iter=g.max_iter, seed=r.seed)
        for rank in g.ranks
        for alpha in g.alphas
        for reg in g.reg_params
    ]


def _models(
    history: DataFrame,
    users: DataFrame,
    items_index: DataFrame,
    item_vectors: DataFrame,
    genres: DataFrame | None,
    als_params: R.AlsParams,
    r: RecommendConfig,
    ranker: Any = None,
    cached: list[DataFrame] | None = None,
) -> dict[str, Recommender]:
    """Popularity, ALS and content (and the hybrid when ``ranker`` is given) fitted on ``history``.

    The frames they score from are persisted and added to ``cached`` (the caller unpersists them).
    """
    h = _history(history).persist()
    als = R.fit_als(history, users, items_index, als_params)
    au, ai = R.als_vectors(als, users, items_index)
    au, ai = au.persist(), ai.persist()
    profiles = R.user_profiles(history, item_vectors, half_life_days=r.half_life_days).persist()
    popularity = R.popularity_scores(history).persist()
    if cached is not None:
        cached.extend([h, au, ai, profiles, popularity])
    now = history.agg(F.max("ts")).first()[0] or 0.0
    out = {
        "popularity": Recommender.of("popularity", {"popularity": popularity, "history": h}, r=r, now=now),
        "als": Recommender.of("als", {"users": au, "items": ai, "history": h}, r=r, now=now),
        "content": Recommender.of("content", {"users": profiles, "items": item_vectors, "history": h}, r=r, now=now),
    }
    frames = {
        "als_users": au,
        "als_items": ai,
        "profiles": profiles,
        "items": item_vectors,
        "popularity": popularity,
        "history": h,
        **({"genres": genres} if genres is not None else {}),
    }
    out["hybrid"] = Recommender.of("hybrid", frames, r=r, ranker=ranker, now=now)
    out["als"].info = {"params": als_params.label()}
    return out


@dataclass
class Evaluation:
    """The protocol's figures.

    Attributes
    ----------
    warm, cold : dict
        Recommender → ``precision_at_k, recall_at_k, ndcg_at_k, map_at_k,
        coverage, users`` on the warm test (warm users, warm catalogue) and
        the cold-start test (cold items only; popularity and ALS score 0).
    als_grid : dict
        Grid point label → validation NDCG@k; ``als_best`` the chosen one.
    ranker_weights : dict
        Feature → standardised coefficient (logreg) or importance (gbt).
    random_cold_recall : float
        Expected recall@k of a random ranking of the cold items.
    sizes : dict
        Interactions per part, items and cold items.
    """

    warm: dict[str, dict[str, float]]
    cold: dict[str, dict[str, float]]
    als_grid: dict[str, float]
    als_best: R.AlsParams
    ranker: Any
    ranker_weights: dict[str, float]
    random_cold_recall: float
    sizes: dict[str, int] = field(default_factory=dict)

    def ratios(self) -> dict[str, float]:
        """The targets as ratios: the hybrid's warm NDCG@k over each other's, cold recall@k over random."""
        w, c = self.warm, self.cold

        def over(a: float, b: float) -> float:
            return a / b if b > 0 else math.inf

        return {
            "hybrid_ndcg_vs_popularity": over(w["hybrid"]["ndcg_at_k"], w["popularity"]["ndcg_at_k"]),
            "hybrid_ndcg_vs_als": over(w["hybrid"]["ndcg_at_k"], w["als"]["ndcg_at_k"]),
            "hybrid_ndcg_vs_content": over(w["hybrid"]["ndcg_at_k"], w["content"]["ndcg_at_k"]),
            "cold_content_recall_vs_random": over(c["content"]["recall_at_k"], self.random_cold_recall),
            "cold_hybrid_recall_vs_random": over(c["hybrid"]["recall_at_k"], self.random_cold_recall),
        }


def evaluate_recommenders(
    interactions: DataFrame,
    item_vectors: DataFrame,
    genres: DataFrame | None,
    r: RecommendConfig,
    *,
    echo: Callable[[str], None] = lambda s: None,
    cached: list[DataFrame] | None = None,
) -> Evaluation:
    """The evaluation protocol (module docstring) on ``interactions``.

    Parameters
    ----------
    interactions : DataFrame
        :func:`interactions_frame` rows.
    item_vectors : DataFrame
        ``item_id, vector``: every item's text embedding (unit length).
    genres : DataFrame or None
        ``item_id, genre`` (the hybrid's genre affinities).
    r : RecommendConfig
        ``k``, ``candidates``, the split fractions, the ALS grid, the ranker.
    echo : callable
        Told each step's figures (the split, the ALS grid, the ranker's weights).
    cached : list, optional
        Gets the frames persisted on the way (the caller unpersists them).

    Returns
    -------
    Evaluation

    Raises
    ------
    ValueError
        When the validation window holds no liked candidate to fit the ranker on.
    """
    k = r.k
    split = R.split_interactions(
        interactions,
        test_fraction=r.test_fraction,
        val_fraction=r.val_fraction,
        cold_item_fraction=r.cold_item_fraction,
        min_user_interactions=r.min_user_interactions,
        positive_min=r.positive_min,
        seed=r.seed,
    )
    users = R.dense_index(interactions, "user_id", "u").persist()
    items = R.dense_index(interactions, "item_id", "i").persist()
    warm_vectors = item_vectors.join(split.cold_items, "item_id", "left_anti").persist()
    if cached is not None:
        cached.extend([users, items, warm_vectors, split.train, split.val, split.test])
    sizes = {
        "train": split.train.count(),
        "val": split.val.count(),
        "test": split.test.count(),
        "cold_items": split.cold_items.count(),
        "cold_test": split.cold_test.count(),
        "items_with_text": item_vectors.count(),
    }
    echo(
        f"split: train {sizes['train']:,}, validation {sizes['val']:,}, test {sizes['test']:,}; "
        f"{sizes['cold_items']:,} cold-start items with {sizes['cold_test']:,} interactions"
    )
    best, tried = R.select_als(split, users, items, _grid(r), k)
    echo(f"ALS grid (validation NDCG@{k}): " + "; ".join(f"{p.label()}: {s:.4f}" for p, s in tried))

    m_train = _models(split.train, users, items, warm_vectors, genres, best, r, cached=cached)
    pool = m_train["hybrid"]
    candidates = None
    for part in ("popularity", "als", "content"):
        got = m_train[part].recommend(None, r.candidates).select("user_id", "item_id")
        candidates = got if candidates is None else candidates.unionByName(got)
    feats = pool.features(candidates.distinct()).persist()
    ranker = R.HybridRanker(model_type=r.ranker, seed=r.seed).fit(feats, split.val.where("positive"))
    feats.unpersist()
    echo(f"hybrid ranker ({r.ranker}): " + ", ".join(f"{n} {w:+.3f}" for n, w in ranker.importances.items()))

    m = _models(split.train_val, users, items, warm_vectors, genres, best, r, ranker=ranker.model, cached=cached)
    n_warm = warm_vectors.count()
    warm = {name: R.ranking_metrics(m[name].recommend(None, k), split.test, k, catalogue_size=n_warm) for name in KINDS}
    cold_vectors = item_vectors.join(split.cold_items, "item_id")
    n_cold = cold_vectors.count()
    cold_content = m["content"].copy()
    cold_content.frames["items"] = cold_vectors
    hybrid_cold = m["hybrid"].copy()
    hybrid_cold.frames["items"] = item_vectors  # the content score of a cold item needs its vector
    cold_pairs = m["content"].frames["users"].select("user_id").crossJoin(cold_vectors.select("item_id"))
    zero = {"precision_at_k": 0.0, "recall_at_k": 0.0, "ndcg_at_k": 0.0, "map_at_k": 0.0, "coverage": 0.0}
    cold = {
        "popularity": dict(zero),
        "als": dict(zero),
        "content": R.ranking_metrics(cold_content.recommend(None, k), split.cold_test, k, catalogue_size=n_cold),
        "hybrid": R.ranking_metrics(hybrid_cold.rank_pairs(cold_pairs, k), split.cold_test, k, catalogue_size=n_cold),
    }
    return Evaluation(
        warm=warm,
        cold=cold,
        als_grid={p.label(): s for p, s in tried},
        als_best=best,
        ranker=ranker.model,
        ranker_weights=ranker.importances,
        random_cold_recall=R.random_recall_at_k(n_cold, k),
        sizes=sizes,
    )


def fit_recommenders(
    interactions: DataFrame,
    item_vectors: DataFrame,
    genres: DataFrame | None,
    r: RecommendConfig,
    ev: Evaluation,
    *,
    cached: list[DataFrame] | None = None,
) -> dict[str, Recommender]:
    """The four recommenders fitted on every interaction with the evaluation's choices, for serving.

    ALS uses the grid point validation chose; the hybrid the ranker fitted on
    the validation window. Every item with text can be recommended by the
    content and hybrid models, including items nobody has interacted with.
    """
    users = R.dense_index(interactions, "user_id", "u")
    items = R.dense_index(interactions, "item_id", "i")
    models = _models(interactions, users, items, item_vectors, genres, ev.als_best, r, ranker=ev.ranker, cached=cached)
    for name, model in models.items():
        model.info = {**model.info, "warm": ev.warm[name], "cold": ev.cold[name]}
    return models


def similar_items(item_vectors: DataFrame, k: int) -> DataFrame:
    """``item_id, rank, neighbor_id, score``: each item's ``k`` most similar other items by text cosine.

    The customer-service search's exact neighbours
    (:func:`~dmine_spark.mine.neighbors.exact_topk`, the items against
    themselves, each item's own row left out; blocked when the catalogue is
    too large to broadcast).
    """
    from dmine_spark.mine.neighbors import exact_topk

    got = exact_topk(item_vectors, item_vectors, k, id_col="item_id", vec_col="vector", exclude_self=True)
    return got.select(F.col("id").alias("item_id"), "rank", "neighbor_id", "score")
