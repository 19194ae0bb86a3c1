"""One user's recommendations from the latest saved recommender: ``dmine recommend CONFIG --user ID``.

The recommend stage saves its four recommenders as ``<task>-recs-<kind>``
versions (:class:`~dmine_spark.mine.recommender.Recommender`, each holding
the frames it scores from). :func:`recommend_users` loads one and ranks the
unseen items of the given users in Spark: the same code that filled
``recs_<task>``, so a user's list here is that table's list from the same
version (a user the model never saw gets the hybrid's or popularity's
cold-start list; ALS and content have no vector for them).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from dmine_spark.config import ConfigError, Layer, PipelineConfig
from dmine_spark.mine.recommender import Recommender
from dmine_spark.mine.store import ModelStore

__all__ = ["recommender_name", "load_recommender", "recommend_users"]


def recommender_name(task: str, kind: str) -> str:
    """The model store name of a task's ``kind`` recommender (``<task>-recs-<kind>``)."""
    return f"{task}-recs-{kind}"


def load_recommender(cfg: PipelineConfig, version: str | None = None) -> tuple[Recommender, str]:
    """The served recommender (``recommend.serve``), or ``version`` (``<task>-recs-<kind>@vN``), and its version.

    Raises
    ------
    LookupError
        When the recommend stage has not saved one yet.
    ConfigError
        When ``version`` is not a recommender.
    """
    store = ModelStore(cfg.paths.models)
    ref = version or recommender_name(cfg.task, cfg.recommend.serve)
    try:
        model, found = store.load(ref)
    except FileNotFoundError:
        raise LookupError(
            f"no saved recommender {ref!r} under {store.root}; run the recommend stage first (dmine run CONFIG)"
        ) from None
    rec = model.stages[-1] if model.stages else None
    if not isinstance(rec, Recommender):
        raise ConfigError(f"--model: {found} is not a recommender (give <task>-recs-<kind>[@vN])")
    return rec, found


def recommend_users(
    spark: SparkSession, cfg: PipelineConfig, users: Sequence[str], *, k: int | None = None, version: str | None = None
) -> tuple[str, pd.DataFrame]:
    """Each of ``users``' top ``k`` unseen items, with the item's text.

    Parameters
    ----------
    users : sequence of str
        User ids as the interactions source writes them.
    k : int, optional
        Items per user (default: ``recommend.k``).
    version : str, optional
        ``<task>-recs-<kind>@vN`` (default: the latest of ``recommend.serve``).

    Returns
    -------
    (str, pandas.DataFrame)
        The model version and ``user_id, rank, item_id, score, text`` rows, best first per user.

    Raises
    ------
    ConfigError
        When ``k`` is below 1.
    """
    if k is not None and k < 1:
        raise ConfigError(f"recommend --k: expected a number of items of at least 1, got {k}")
    rec, found = load_recommender(cfg, version)
    who = spark.createDataFrame([(str(u),) for u in users], "user_id STRING")
    got = rec.recommend(who, k or cfg.recommend.k)
    items = cfg.recommend.items
    if items and spark.catalog.tableExists(cfg.table(Layer.CLEAN)):
        texts = spark.table(cfg.table(Layer.CLEAN)).where(F.col("source") == items)
        texts = texts.select(F.expr(f"substring(id, {len(items) + 2})").alias("item_id"), "text")
        got = got.join(texts, "item_id", "left")
    else:
        got = got.withColumn("text", F.lit(None).cast("string"))
    pdf = got.select("user_id", "rank", "item_id", "score", "text").toPandas()
    return found, pdf.sort_values(["user_id", "rank"]).reset_index(drop=True)
