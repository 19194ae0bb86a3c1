"""Clustering of embedding features with MLlib KMeans, and cluster names from their terms.

Each cluster is described by its top terms under class-based TF-IDF: a term
scores high in a cluster when it is frequent there and rare across clusters.
The first three terms make the cluster's name.
"""

from __future__ import annotations

from pyspark.ml.clustering import KMeans, KMeansModel
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.feature import StopWordsRemover
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from dmine_spark.config import ClusterConfig

__all__ = ["fit_kmeans", "silhouette", "cluster_terms"]


def fit_kmeans(df: DataFrame, cfg: ClusterConfig, *, features_col: str = "features") -> KMeansModel:
    """Fit KMeans with ``cfg.k`` clusters (k-means|| initialisation, fixed seed)."""
    return KMeans(k=cfg.k, maxIter=cfg.max_iter, seed=cfg.seed, featuresCol=features_col, predictionCol="cluster").fit(
        df
    )


def silhouette(assigned: DataFrame, *, features_col: str = "features") -> float:
    """Cosine silhouette of a clustering (1 is best)."""
    return float(
        ClusteringEvaluator(featuresCol=features_col, predictionCol="cluster", distanceMeasure="cosine").evaluate(
            assigned
        )
    )


def cluster_terms(
    assigned: DataFrame,
    *,
    text_col: str = "text",
    cluster_col: str = "cluster",
    top_n: int = 8,
    min_chars: int = 3,
    stop_words: list[str] | None = None,
) -> DataFrame:
    """Size, top terms (class-based TF-IDF) and a short name for each cluster.

    Returns columns ``cluster``, ``size``, ``name`` and ``top_terms`` (an
    array of strings, best first).
    """
    stops = stop_words if stop_words is not None else StopWordsRemover.loadDefaultStopWords("english")
    term = F.explode(F.split(F.lower(F.col(text_col)), r"[^\p{L}\p{N}']+")).alias("term")
    tokens = assigned.select(F.col(cluster_col).alias("cluster"), term).where(
        (F.char_length("term") >= min_chars) & ~F.col("term").isin(stops) & ~F.col("term").rlike(r"^[\d']+$")
    )
    tf = tokens.groupBy("cluster", "term").count()
    everywhere = Window.partitionBy()
    scored = (
        tf.withColumn("cluster_words", F.sum("count").over(Window.partitionBy("cluster")))
        .withColumn("term_total", F.sum("count").over(Window.partitionBy("term")))
        .withColumn("avg_words", F.sum("count").over(everywhere) / F.size(F.collect_set("cluster").over(everywhere)))
        .withColumn(
            "score", F.col("count") / F.col("cluster_words") * F.log1p(F.col("avg_words") / F.col("term_total"))
        )
    )
    ranked = scored.withColumn(
        "rank", F.row_number().over(Window.partitionBy("cluster").orderBy(F.desc("score"), F.asc("term")))
    ).where(F.col("rank") <= top_n)
    terms = ranked.groupBy("cluster").agg(
        F.transform(F.array_sort(F.collect_list(F.struct("rank", "term"))), lambda s: s["term"]).alias("top_terms")
    )
    sizes = assigned.groupBy(F.col(cluster_col).alias("cluster")).agg(F.count(F.lit(1)).alias("size"))
    return (
        sizes.join(terms, "cluster", "left")
        .withColumn("top_terms", F.coalesce("top_terms", F.array().cast("array<string>")))
        .withColumn("name", F.array_join(F.slice("top_terms", 1, 3), " / "))
        .select("cluster", "size", "name", "top_terms")
        .orderBy(F.desc("size"))
    )
