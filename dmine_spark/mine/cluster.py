"""Clustering of embedding features, with names and exemplars for each cluster.

Four algorithms share one fitted stage (:func:`fit_clusters` returns a
:class:`ClusterModel`, a pyspark.ml ``Model`` whose ``transform`` adds a
``cluster`` column):

* MLlib ``KMeans``, ``BisectingKMeans`` and ``GaussianMixture``, fitted by Spark
  (the mixture on the first ``gmm_dims`` principal components, since full
  covariances in the embedding's 384 dimensions are singular on real samples);
* scikit-learn ``HDBSCAN``, fitted on the driver from a seeded sample of at most
  ``sample_max_rows`` rows; every other row joins the cluster whose centroid
  (of the sample's members) is nearest by cosine, so every row gets a real
  cluster.

When ``k`` is not given, :func:`sweep_k` fits each ``k`` of ``k_range`` on a
sample and keeps the one with the best cosine silhouette.

Each cluster is described by its terms (:func:`cluster_terms`: words and word
n-grams scored by class-based TF-IDF, those common in the cluster and typical
of it first, picked by maximal marginal relevance so that they say different
things; the first three make the cluster's name), and by the ``exemplars``
texts closest to its centroid (:func:`cluster_exemplars`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
from pyspark import keyword_only
from pyspark.ml import Model
from pyspark.ml.clustering import BisectingKMeans, GaussianMixture, KMeans
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.feature import StopWordsRemover
from pyspark.ml.functions import vector_to_array
from pyspark.ml.linalg import VectorUDT
from pyspark.ml.param.shared import HasFeaturesCol, HasPredictionCol, Param, Params, TypeConverters
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DataType, IntegerType

from dmine_spark.config import ClusterConfig
from dmine_spark.config.features import WORD_PATTERN
from dmine_spark.io.persist import Persisted, class_path, load_class
from dmine_spark.io.schema import ColumnSpec, SchemaChecked
from dmine_spark.mine.classify import vector_column
from dmine_spark.mine.naming import Candidate, mmr_select, word_overlap_matrix

__all__ = [
    "fit_clusters",
    "ClusterModel",
    "sweep_k",
    "distinct_vectors",
    "silhouette",
    "centroids",
    "cluster_terms",
    "pick_terms",
    "english_stop_words",
    "PHRASE_PARTICLES",
    "cluster_exemplars",
]


_X, _C = "_dmine_x", "_dmine_cluster"


class ClusterModel(Persisted, SchemaChecked, Model, HasFeaturesCol, HasPredictionCol):
    """A fitted clustering as a pyspark.ml ``Model``: ``transform`` adds an integer cluster per row.

    ``featuresCol`` is an ``array<float>`` embedding or an MLlib vector. MLlib
    algorithms keep their fitted model (saved in ``mllib/``); ``hdbscan``
    keeps the unit-length centroids of its clusters (in the metadata) and
    gives each row the cluster of largest cosine similarity.
    """

    algorithm = Param(Params._dummy(), "algorithm", "kmeans, bisecting_kmeans, gmm or hdbscan", TypeConverters.toString)
    k = Param(Params._dummy(), "k", "number of clusters", TypeConverters.toInt)

    @keyword_only
    def __init__(
        self, *, featuresCol: str = "embedding", predictionCol: str = "cluster", algorithm: str = "kmeans", k: int = 2
    ) -> None:
        super().__init__()
        self._setDefault(featuresCol="embedding", predictionCol="cluster", algorithm="kmeans", k=2)
        self._set(**self._input_kwargs)
        self._mllib: Any = None
        self._centers: np.ndarray | None = None
        self._center_ids: list[int] = []
        self.sweep: dict[int, float] = {}
        self.k_requested: int | None = None  # the k asked for, when more than the distinct vectors (not saved)

    @property
    def n_clusters(self) -> int:
        """The number of clusters (for hdbscan: found in the sample)."""
        return int(self.getOrDefault("k"))

    def copy(self, extra: dict | None = None) -> ClusterModel:
        that = super().copy(extra)
        that._mllib, that._centers, that._center_ids, that.sweep = (
            self._mllib,
            self._centers,
            list(self._center_ids),
            dict(self.sweep),
        )
        return that

    def _state_metadata(self) -> dict[str, Any]:
        state: dict[str, Any] = {"sweep": {str(k): v for k, v in self.sweep.items()}}
        if self._mllib is not None:
            state["mllib_class"] = class_path(self._mllib)
        else:
            state["centers"] = np.asarray(self._centers, dtype=float).tolist()
            state["center_ids"] = list(self._center_ids)
        return state

    def _save_state(self, path: str, spark: SparkSession) -> None:
        if self._mllib is not None:
            self._mllib.write().overwrite().save(f"{path}/mllib")

    def _load_state(self, path: str, state: dict[str, Any], spark: SparkSession) -> None:
        self.sweep = {int(k): float(v) for k, v in state.get("sweep", {}).items()}
        if "mllib_class" in state:
            self._mllib = load_class(state["mllib_class"]).load(f"{path}/mllib")
        else:
            self._centers = np.asarray(state["centers"], dtype=np.float32)
            self._center_ids = [int(i) for i in state["center_ids"]]

    def _input_columns(self) -> dict[str, ColumnSpec]:
        return {self.getFeaturesCol(): ((ArrayType, VectorUDT), "an array<float> embedding or an MLlib vector")}

    def _output_columns(self) -> list[tuple[str, DataType]]:
        return [(self.getPredictionCol(), IntegerType())]

    def _transform(self, dataset: DataFrame) -> DataFrame:
        self.transformSchema(dataset.schema)
        col, out = self.getFeaturesCol(), self.getPredictionCol()
        if self._mllib is None:
            return _nearest_center(dataset, self._centers, self._center_ids, col, out)
        staged = dataset.withColumn(_X, vector_column(dataset, col))
        scored = self._mllib.transform(staged).withColumn(out, F.col(_C).cast("int"))
        return scored.drop(*[c for c in (_X, _C, "_gmm_probability", "_gmm_pca") if c in scored.columns])


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _nearest_center(df: DataFrame, centers: np.ndarray, ids: list[int], features_col: str, out: str) -> DataFrame:
    """Each row's cluster is the centroid of largest cosine similarity (an Arrow UDF; the centres are small)."""
    c = _unit(np.asarray(centers, dtype=np.float32))
    cid = np.asarray(ids, dtype=np.int32)

    @F.pandas_udf(IntegerType())
    def nearest(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        for s in batches:
            if len(s) == 0:
                yield pd.Series([], dtype="int32")
                continue
            x = np.stack(s.to_numpy()).astype(np.float32, copy=False)
            yield pd.Series(cid[(x @ c.T).argmax(axis=1)])

    arr = (
        vector_to_array(F.col(features_col), "float32")
        if isinstance(df.schema[features_col].dataType, VectorUDT)
        else F.col(features_col)
    )
    return df.withColumn(out, nearest(arr))


def _mllib(algorithm: str, k: int, cfg: ClusterConfig) -> Any:
    common = {"k": k, "maxIter": cfg.max_iter, "seed": cfg.seed, "featuresCol": _X, "predictionCol": _C}
    if algorithm == "kmeans":
        return KMeans(**common)
    if algorithm == "bisecting_kmeans":
        return BisectingKMeans(**common)
    if algorithm == "gmm":
        # full covariances in 384 dimensions are singular on any realistic sample; fit them on PCA components
        from pyspark.ml import Pipeline
        from pyspark.ml.feature import PCA

        gmm = GaussianMixture(probabilityCol="_gmm_probability", **{**common, "featuresCol": "_gmm_pca"})
        return Pipeline(stages=[PCA(k=cfg.gmm_dims, inputCol=_X, outputCol="_gmm_pca"), gmm])
    raise ValueError(f"cluster.algorithm: {algorithm!r} is not an MLlib algorithm")


def _sample(df: DataFrame, rows: int, seed: int) -> DataFrame:
    n = df.count()
    return df if n <= rows else df.sample(fraction=min(1.0, 1.05 * rows / n), seed=seed).limit(rows)


def distinct_vectors(df: DataFrame, *, features_col: str = "features", at_most: int) -> int:
    """How many distinct vectors ``df``'s ``features_col`` holds, counted up to ``at_most`` (no more is needed).

    Vectors are compared by a 64-bit hash of their values (``xxhash64``), so only 8 bytes a row are shuffled.
    """
    col = F.col(features_col)
    values = col if isinstance(df.schema[features_col].dataType, ArrayType) else vector_to_array(col, "float32")
    return df.select(F.xxhash64(values).alias("_h")).distinct().limit(at_most).count()


def sweep_k(
    df: DataFrame, cfg: ClusterConfig, *, features_col: str = "features", max_k: int | None = None
) -> dict[int, float]:
    """Cosine silhouette of each ``k`` in ``cfg.k_range`` (up to ``max_k``), each fitted on the same seeded sample.

    A ``k`` above ``max_k`` (the distinct vectors there are) cannot be fitted and is skipped; when the
    whole range lies above it, ``max_k`` itself is the one ``k`` tried.
    """
    first, last, step = cfg.k_range
    ks = [k for k in range(first, last + 1, step) if max_k is None or k <= max_k] or [max_k]
    sample = _sample(df.select(vector_column(df, features_col).alias(_X)), cfg.sweep_sample_rows, cfg.seed).cache()
    try:
        out = {}
        for k in ks:
            algo = "kmeans" if cfg.algorithm == "hdbscan" else cfg.algorithm
            model = _mllib(algo, k, cfg).fit(sample)
            assigned = model.transform(sample).withColumn("cluster", F.col(_C).cast("int"))
            out[k] = silhouette(assigned, features_col=_X)
        return out
    finally:
        sample.unpersist()


def fit_clusters(df: DataFrame, cfg: ClusterConfig, *, features_col: str = "features") -> ClusterModel:
    """Fit ``cfg.algorithm`` on ``df``'s ``features_col``; ``k`` comes from :func:`sweep_k` when ``cfg.k`` is null.

    MLlib cannot fit more clusters than there are distinct vectors, so ``k``
    (given, or the sweep's range) is checked against them first: with
    ``cfg.too_few_points: cap`` a larger ``k`` becomes that number and the
    model's ``k_requested`` keeps the one asked for; with ``error`` it is a
    one-line error.

    Raises
    ------
    ValueError
        Fewer than two distinct vectors; ``k`` above them with ``too_few_points: error``;
        hdbscan with too few rows, or finding only noise.
    """
    sweep: dict[int, float] = {}
    k = cfg.k
    if cfg.algorithm == "hdbscan":
        return _fit_hdbscan(df, cfg, features_col)
    wanted = k if k is not None else cfg.k_range[1]
    distinct = distinct_vectors(df, features_col=features_col, at_most=wanted + 1)
    if distinct < 2:
        raise ValueError(
            f"cluster: the rows hold {distinct} distinct vector(s); clustering needs at least 2 distinct texts"
        )
    requested = None
    if k is not None and k > distinct:
        if cfg.too_few_points == "error":
            raise ValueError(
                f"cluster.k: {k} clusters asked of {distinct} distinct vectors; lower cluster.k, "
                "or set cluster.too_few_points: cap"
            )
        requested, k = k, distinct
    if k is None:
        sweep = sweep_k(df, cfg, features_col=features_col, max_k=distinct)
        k = max(sweep, key=lambda kk: (sweep[kk], -kk))
    model = ClusterModel(featuresCol=features_col, algorithm=cfg.algorithm, k=int(k))
    model.k_requested = requested
    model._mllib = _mllib(cfg.algorithm, int(k), cfg).fit(df.select(vector_column(df, features_col).alias(_X)))
    model.sweep = sweep
    return model


def _fit_hdbscan(df: DataFrame, cfg: ClusterConfig, features_col: str) -> ClusterModel:
    from sklearn.cluster import HDBSCAN

    x_col = vector_to_array(vector_column(df, features_col), "float32").alias("x")
    pdf = _sample(df.select(x_col), cfg.sample_max_rows, cfg.seed)
    x = np.stack(pdf.toPandas()["x"].to_numpy()).astype(np.float32)
    if len(x) < cfg.min_cluster_size:
        raise ValueError(f"cluster: hdbscan needs at least min_cluster_size={cfg.min_cluster_size} rows, got {len(x)}")
    labels = HDBSCAN(min_cluster_size=cfg.min_cluster_size, copy=True).fit_predict(_unit(x))
    ids = sorted(int(v) for v in set(labels.tolist()) if v >= 0)
    if not ids:
        raise ValueError("cluster: hdbscan found no cluster in the sample (all noise); lower min_cluster_size")
    model = ClusterModel(featuresCol=features_col, algorithm="hdbscan", k=len(ids))
    model._centers = np.stack([x[labels == i].mean(axis=0) for i in ids])
    model._center_ids = ids
    return model


def silhouette(assigned: DataFrame, *, features_col: str = "features") -> float:
    """Cosine silhouette of a clustering (1 is best)."""
    return float(
        ClusteringEvaluator(featuresCol=features_col, predictionCol="cluster", distanceMeasure="cosine").evaluate(
            assigned
        )
    )


def centroids(assigned: DataFrame, *, features_col: str = "features") -> DataFrame:
    """The mean feature vector of each cluster (``cluster``, ``centroid`` as an array of doubles)."""
    from pyspark.ml.stat import Summarizer

    return assigned.groupBy("cluster").agg(vector_to_array(Summarizer.mean(F.col(features_col))).alias("centroid"))


def _dot(a: Any, b: Any) -> Any:
    return F.aggregate(F.zip_with(a, b, lambda x, y: x * y), F.lit(0.0), lambda acc, v: acc + v)


def cluster_exemplars(
    assigned: DataFrame, *, n: int = 3, text_col: str = "text", features_col: str = "features"
) -> DataFrame:
    """The ``n`` distinct texts closest (by cosine) to each cluster's centroid: ``cluster``, ``exemplars``."""
    cents = centroids(assigned, features_col=features_col)
    v = vector_to_array(F.col(features_col))
    scored = (
        assigned.select("cluster", F.col(text_col).alias("text"), v.alias("v"))
        .join(F.broadcast(cents), "cluster")
        .select(
            "cluster",
            "text",
            (
                _dot(F.col("v"), F.col("centroid"))
                / F.sqrt(_dot(F.col("v"), F.col("v")) * _dot(F.col("centroid"), F.col("centroid")) + F.lit(1e-24))
            ).alias("cos"),
        )
        .groupBy("cluster", "text")
        .agg(F.max("cos").alias("cos"))
    )
    w = Window.partitionBy("cluster").orderBy(F.desc("cos"), F.asc("text"))
    top = scored.withColumn("rank", F.row_number().over(w)).where(F.col("rank") <= n)
    return top.groupBy("cluster").agg(
        F.transform(F.array_sort(F.collect_list(F.struct("rank", "text"))), lambda s: s["text"]).alias("exemplars")
    )


def _ngrams(words: Any, n: int) -> Any:
    """The ``n``-word runs of the array column ``words``, each joined by one space (empty when it is shorter)."""
    runs = F.transform(
        F.sequence(F.lit(1), F.size(words) - n + 1), lambda i: F.array_join(F.slice(words, i, F.lit(n)), " ")
    )
    return F.when(F.size(words) >= n, runs).otherwise(F.array().cast("array<string>"))


def english_stop_words() -> list[str]:
    """Spark's English stop words (``StopWordsRemover``), the terms' default."""
    return list(StopWordsRemover.loadDefaultStopWords("english"))


PHRASE_PARTICLES = ("up", "down", "out", "off", "in", "on", "back", "over", "away")
"""Stop words that may end a word n-gram (phrasal verbs: "top up", "cash out", "log in")."""


def cluster_terms(
    assigned: DataFrame,
    *,
    text_col: str = "text",
    cluster_col: str = "cluster",
    top_n: int = 8,
    min_chars: int = 3,
    stop_words: list[str] | None = None,
    ngram_max: int = 2,
    min_term_share: float = 0.1,
    min_term_lift: float = 2.0,
    candidates: int = 30,
    diversity: float = 0.5,
    name_terms: int = 3,
    term_vectors: Callable[[list[str]], np.ndarray] | None = None,
    centroid_vectors: Mapping[int, np.ndarray] | None = None,
) -> DataFrame:
    """Size, top terms and a short name for each cluster.

    Candidate terms are words (:data:`~dmine_spark.config.features.WORD_PATTERN`,
    the TF-IDF features' own) and word n-grams up to ``ngram_max`` words. A
    word term has at least ``min_chars`` characters and is not a stop word or
    a number; an n-gram starts with such a word and ends with one, or with a
    particle of :data:`PHRASE_PARTICLES` ("top up"), and repeats no word. Each candidate is
    counted once per text, and scored by class-based TF-IDF (Grootendorst
    2022) weighted by the share of the term's texts that fall in the cluster.

    The terms of a cluster are picked on the driver from its ``candidates``
    best-scored terms, those in at least ``min_term_share`` of its texts
    with a lift of at least ``min_term_lift`` first (or, for a cluster so
    large that no term could reach that lift, halfway between 1 and the
    largest possible), the others only filling the list, by maximal marginal relevance
    (:func:`dmine_spark.mine.naming.mmr_select`) so that they say different
    things. Without ``term_vectors``, relevance is the score and two terms
    are alike by the stems their words share; with it (KeyBERT-style),
    relevance is the cosine of the term's embedding to the cluster's
    centroid and likeness the larger of the stems shared and the cosine
    between terms.

    Parameters
    ----------
    assigned : DataFrame
        Rows with ``text_col`` and an integer ``cluster_col``.
    top_n : int
        Terms kept per cluster (``top_terms``).
    min_chars : int
        Shortest word term.
    stop_words : list of str, optional
        Default: Spark's English list.
    ngram_max : int
        Longest n-gram, in words (1: words only).
    min_term_share : float
        In [0, 1]: the share of a cluster's texts a term must occur in to rank ahead.
    min_term_lift : float
        How many times likelier than in all texts a term must be in the cluster's texts to rank ahead
        (its lift; "said" in every news topic has a lift near 1).
    candidates : int
        Best-scored terms per cluster the choice is made from.
    diversity : float
        MMR's weight on unlikeness, in [0, 1].
    name_terms : int
        Terms joined into ``name``.
    term_vectors : callable, optional
        ``list of n terms -> ndarray (n, dim)``: unit-length term embeddings.
    centroid_vectors : mapping of int to ndarray (dim,), optional
        Each cluster's centroid; needed with ``term_vectors``.

    Returns
    -------
    DataFrame
        ``cluster``, ``size``, ``name`` (the first ``name_terms`` terms joined
        by " / ") and ``top_terms`` (an array of strings, in the order picked),
        largest cluster first.
    """
    spark = assigned.sparkSession
    stops = stop_words if stop_words is not None else english_stop_words()
    enders = [w for w in stops if w not in PHRASE_PARTICLES]
    words = F.regexp_extract_all(F.lower(F.col(text_col)), F.lit(WORD_PATTERN), F.lit(0))
    grams = [words] + [_ngrams(words, n) for n in range(2, ngram_max + 1)]
    per_text = assigned.select(
        F.col(cluster_col).alias("cluster"), F.explode(F.array_distinct(F.flatten(F.array(*grams)))).alias("term")
    )
    parts = F.split("term", " ")
    first, last = F.get(parts, 0), F.element_at(parts, -1)
    one = F.size(parts) == 1
    content = lambda w: ~w.isin(stops) & ~w.rlike(r"^[\p{N}'’]+$")  # noqa: E731
    valid = F.when(one, content(first) & (F.char_length(first) >= min_chars)).otherwise(
        content(first)
        & (F.char_length(first) >= 2)
        & ~last.isin(enders)
        & ~last.rlike(r"^[\p{N}'’]+$")
        & (F.size(F.array_distinct(parts)) == F.size(parts))  # not "ap ap"
    )
    docs = per_text.groupBy("cluster", "term").count().where(valid)
    sizes = assigned.groupBy(F.col(cluster_col).alias("cluster")).agg(F.count(F.lit(1)).alias("size"))
    everywhere = Window.partitionBy()
    scored = (
        docs.join(F.broadcast(sizes.withColumn("all_rows", F.sum("size").over(everywhere))), "cluster")
        .withColumn("cluster_words", F.sum("count").over(Window.partitionBy("cluster")))
        .withColumn("term_total", F.sum("count").over(Window.partitionBy("term")))
        .withColumn("avg_words", F.sum("count").over(everywhere) / F.size(F.collect_set("cluster").over(everywhere)))
        .withColumn(
            "score",
            F.col("count")
            / F.col("cluster_words")
            * F.log1p(F.col("avg_words") / F.col("term_total"))
            # the share of the term's texts that fall in this cluster: words common to every cluster
            # ("said", "new") sink below the ones that mark it out
            * (F.col("count") / F.col("term_total")),
        )
        .withColumn("share", F.col("count") / F.col("size"))
        # lift: how much likelier the term is in this cluster's texts than in all texts
        .withColumn("lift", F.col("share") / (F.col("term_total") / F.col("all_rows")))
        # the lift asked for, or less where the cluster is so large that no term could reach it
        # (a cluster of half the texts has lifts of at most 2)
        .withColumn("lift_needed", F.least(F.lit(min_term_lift), (1 + F.col("all_rows") / F.col("size")) / 2))
        .withColumn("covers", (F.col("share") >= min_term_share) & (F.col("lift") >= F.col("lift_needed")))
    )
    ranked = scored.withColumn(
        "rank",
        F.row_number().over(
            Window.partitionBy("cluster").orderBy(
                F.desc("covers"), F.desc("score"), F.desc(F.size(F.split("term", " "))), F.asc("term")
            )
        ),
    ).where(F.col("rank") <= candidates)
    by_cluster: dict[int, list[Candidate]] = {}
    lift_needed: dict[int, float] = {}
    # in rank order: of equal scores (a word seen only inside one phrase) the longer term comes first
    rows = ranked.select("cluster", "rank", "term", "score", "share", "lift", "lift_needed").collect()
    for r in sorted(rows, key=lambda r: r["rank"]):
        by_cluster.setdefault(int(r["cluster"]), []).append(
            Candidate(r["term"], float(r["score"]), float(r["share"]), float(r["lift"]))
        )
        lift_needed[int(r["cluster"])] = float(r["lift_needed"])
    picked = {
        c: pick_terms(
            rows,
            top_n,
            min_share=min_term_share,
            min_lift=lift_needed[c],
            diversity=diversity,
            term_vectors=term_vectors,
            centroid=None if centroid_vectors is None else centroid_vectors.get(c),
        )
        for c, rows in by_cluster.items()
    }
    terms = spark.createDataFrame([(c, t) for c, t in picked.items()], "cluster int, top_terms array<string>")
    return (
        sizes.join(terms, "cluster", "left")
        .withColumn("top_terms", F.coalesce("top_terms", F.array().cast("array<string>")))
        .withColumn("name", F.array_join(F.slice("top_terms", 1, name_terms), " / "))
        .select("cluster", "size", "name", "top_terms")
        .orderBy(F.desc("size"))
    )


def pick_terms(
    cands: list[Candidate],
    n: int,
    *,
    min_share: float = 0.0,
    min_lift: float = 0.0,
    diversity: float = 0.5,
    term_vectors: Callable[[list[str]], np.ndarray] | None = None,
    centroid: np.ndarray | None = None,
) -> list[str]:
    """``n`` terms of one cluster from its candidates, by maximal marginal relevance.

    Relevance is the candidate's score over the best score (or, with
    ``term_vectors`` and ``centroid``, the cosine of its embedding to the
    centroid), plus 1 for a candidate in at least ``min_share`` of the
    cluster's texts with a lift of at least ``min_lift``: terms common in
    the cluster and typical of it come first, the others only fill in. Two
    candidates are alike by the stems their words share
    (:func:`~dmine_spark.mine.naming.word_overlap`), or with embeddings by
    the larger of that and their cosine; a term whose stems all occur in a
    picked term, or the reverse, comes after every other candidate.

    Parameters
    ----------
    cands : list of Candidate, length m
    n : int
        Terms to pick.
    min_share : float
        The share of the cluster's texts a term needs to rank ahead.
    min_lift : float
        The lift (share in the cluster over share in all texts) a term needs to rank ahead.
    diversity : float
        MMR's weight on unlikeness, in [0, 1].
    term_vectors : callable, optional
        ``list of m terms -> ndarray (m, dim)``.
    centroid : ndarray of shape (dim,), optional

    Returns
    -------
    list of str
        Best first; fewer than ``n`` when there are fewer candidates.
    """
    if not cands:
        return []
    texts = [c.term for c in cands]
    bonus = np.array([1.0 if c.share >= min_share and c.lift >= min_lift else 0.0 for c in cands])
    words = word_overlap_matrix(texts)
    if term_vectors is not None and centroid is not None:
        vecs = np.asarray(term_vectors(texts), dtype=np.float64)
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        cen = np.asarray(centroid, dtype=np.float64)
        cen /= max(float(np.linalg.norm(cen)), 1e-12)
        rel, sim = vecs @ cen, np.maximum(vecs @ vecs.T, words)
    else:
        top = max(c.score for c in cands) or 1.0
        rel, sim = np.array([c.score / top for c in cands]), words
    # a term whose stems all occur in a picked one (or the reverse) comes last: not 'rates' beside 'exchange rates'
    return [texts[i] for i in mmr_select((rel + bonus).tolist(), sim, n, diversity=diversity, defer_at=1.0)]
