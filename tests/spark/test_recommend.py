"""The recommenders' Spark parts on real MovieLens interactions: the split, top k of unseen items, ranking metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pyspark.sql import functions as F

from dmine_spark.mine import recommend as R
from tests.conftest import DATASETS

MOVIELENS = DATASETS / "movielens_latest_small"


@pytest.fixture(scope="module")
def interactions(spark):
    if not (MOVIELENS / "ratings.csv").is_file():
        pytest.fail(f"MovieLens not found at {MOVIELENS}; set DMINE_DATASETS to the shared datasets folder")
    ratings = spark.read.csv(
        str(MOVIELENS / "ratings.csv"), header=True, schema="userId INT, movieId INT, rating DOUBLE, timestamp LONG"
    )
    # the first 120 users: every split part, a few thousand interactions
    return ratings.where("userId <= 120").select(
        F.col("userId").alias("user_id"),
        F.col("movieId").alias("item_id"),
        F.col("rating").alias("value"),
        F.col("timestamp").alias("ts"),
    )


@pytest.fixture(scope="module")
def split(interactions):
    return R.split_interactions(interactions, test_fraction=0.2, val_fraction=0.1, cold_item_fraction=0.05)


def test_every_interaction_lands_in_one_part_and_cold_items_only_in_the_cold_part(interactions, split) -> None:
    parts = {n: getattr(split, n) for n in ("train", "val", "test", "cold_test")}
    counts = {n: df.count() for n, df in parts.items()}
    assert sum(counts.values()) == interactions.count()
    assert all(counts.values())
    cold = split.cold_items
    for name in ("train", "val", "test"):
        assert parts[name].join(cold, "item_id").isEmpty(), name
    assert split.cold_test.join(cold, "item_id", "left_anti").isEmpty()
    assert split.cold_test.select("item_id").distinct().count() == cold.count()


def test_each_users_held_out_interactions_come_after_their_training_ones(split) -> None:
    last_train = split.train.groupBy("user_id").agg(F.max("ts").alias("t_train"))
    first_val = split.val.groupBy("user_id").agg(F.min("ts").alias("t_val"))
    first_test = split.test.groupBy("user_id").agg(F.min("ts").alias("t_test"))
    assert last_train.join(first_val, "user_id").where("t_val < t_train").isEmpty()
    assert last_train.join(first_test, "user_id").where("t_test < t_train").isEmpty()
    # about a fifth of each user's warm interactions is held out for test
    sizes = (
        split.train.unionByName(split.val)
        .groupBy("user_id")
        .count()
        .join(split.test.groupBy("user_id").agg(F.count("*").alias("n_test")), "user_id")
        .collect()
    )
    for r in sizes:
        share = r["n_test"] / (r["count"] + r["n_test"])
        assert 0.15 <= share <= 0.25, (r["user_id"], share)


def test_top_k_never_returns_a_seen_item_and_equals_a_full_sort(spark, split) -> None:
    rng = np.random.default_rng(3)
    item_ids = [r[0] for r in split.train.select("item_id").distinct().orderBy("item_id").collect()]
    user_ids = [r[0] for r in split.train.select("user_id").distinct().orderBy("user_id").collect()]
    iv = rng.normal(size=(len(item_ids), 8))
    uv = rng.normal(size=(len(user_ids), 8))
    items = spark.createDataFrame(
        [(i, v.tolist()) for i, v in zip(item_ids, iv, strict=True)], "item_id INT, vector ARRAY<DOUBLE>"
    )
    users = spark.createDataFrame(
        [(u, v.tolist()) for u, v in zip(user_ids, uv, strict=True)], "user_id INT, vector ARRAY<DOUBLE>"
    )
    seen = split.train.select("user_id", "item_id")
    recs = R.top_k_unseen(users, items, 10, seen=seen)
    assert recs.join(seen, ["user_id", "item_id"]).isEmpty()
    got = {}
    for r in recs.collect():
        got.setdefault(r["user_id"], []).append((r["rank"], r["item_id"], r["score"]))
    seen_by = {}
    for r in seen.collect():
        seen_by.setdefault(r["user_id"], set()).add(r["item_id"])
    for u, vec in list(zip(user_ids, uv, strict=True))[:30]:
        scores = iv @ vec
        order = [item_ids[j] for j in np.argsort(-scores, kind="stable") if item_ids[j] not in seen_by[u]][:10]
        ranked = sorted(got[u])
        assert [r for r, _, _ in ranked] == list(range(1, 11))
        assert [i for _, i, _ in ranked] == order
        assert [s for _, _, s in ranked] == pytest.approx(
            sorted(scores[[item_ids.index(i) for i in order]])[::-1], rel=1e-5
        )


def test_tied_scores_rank_the_same_however_the_items_are_partitioned(spark, split) -> None:
    # popularity has many ties (items liked equally often): the cut at k must not depend on partitioning
    pop = R.popularity_scores(split.train)
    users = split.train.select("user_id").distinct().withColumn("vector", F.array(F.lit(1.0)))
    seen = split.train.select("user_id", "item_id")
    one = R.top_k_unseen(users, pop.repartition(1), 25, seen=seen).collect()
    other = R.top_k_unseen(users, pop.orderBy(F.desc("item_id")).repartition(3, "item_id"), 25, seen=seen).collect()
    assert sorted(one) == sorted(other)
    scores = [r["score"] for r in one]
    assert len(set(scores)) < len(scores)  # the case has ties


def test_ranking_metrics_match_their_definitions_on_a_hand_made_case(spark) -> None:
    recs = spark.createDataFrame(
        [(1, 1, 10), (1, 2, 20), (1, 3, 30), (2, 1, 40), (2, 2, 50), (2, 3, 60)], "user_id INT, rank INT, item_id INT"
    )
    test = spark.createDataFrame(
        [(1, 20, True), (1, 99, True), (2, 70, True), (2, 40, False), (3, 10, True)],
        "user_id INT, item_id INT, positive BOOLEAN",
    )
    m = R.ranking_metrics(recs, test, 3, catalogue_size=12)
    # user 1: one hit (rank 2) of 2 relevant; user 2: no hit (40 is not a positive); user 3: no recommendations
    assert m["users"] == 3
    assert m["precision_at_k"] == pytest.approx((1 / 3) / 3)
    assert m["recall_at_k"] == pytest.approx((1 / 2) / 3)
    idcg = 1 + 1 / math.log2(3)
    assert m["ndcg_at_k"] == pytest.approx((1 / math.log2(3)) / idcg / 3)
    assert m["map_at_k"] == pytest.approx((1 / 2) / 2 / 3)
    assert m["coverage"] == pytest.approx(6 / 12)


def test_als_on_implicit_feedback_recommends_better_than_popularity(spark, split) -> None:
    """The collaborative model learns something the popularity baseline does not (validation window, NDCG@10)."""
    users = R.dense_index(split.train, "user_id", "u")
    items = R.dense_index(split.train, "item_id", "i")
    seen = split.train.select("user_id", "item_id")
    model = R.fit_als(split.train, users, items, R.AlsParams(rank=16, reg_param=0.05, alpha=1.0, max_iter=8))
    uv, iv = R.als_vectors(model, users, items)
    als = R.ranking_metrics(R.top_k_unseen(uv, iv, 10, seen=seen), split.val, 10)
    one = split.train.select("user_id").distinct().withColumn("vector", F.array(F.lit(1.0)))
    pop = R.ranking_metrics(R.top_k_unseen(one, R.popularity_scores(split.train), 10, seen=seen), split.val, 10)
    assert als["users"] == pop["users"] > 50
    assert als["ndcg_at_k"] > pop["ndcg_at_k"] > 0.0


def test_candidate_features_and_the_hybrid_ranker_score_every_candidate(spark, split) -> None:
    rng = np.random.default_rng(5)
    item_ids = [r[0] for r in split.train.select("item_id").distinct().orderBy("item_id").collect()]
    cold_ids = [r[0] for r in split.cold_items.orderBy("item_id").collect()]
    vec = {i: rng.normal(size=4) for i in item_ids + cold_ids}
    item_vectors = spark.createDataFrame([(i, v.tolist()) for i, v in vec.items()], "item_id INT, vector ARRAY<DOUBLE>")
    users = R.dense_index(split.train, "user_id", "u")
    items = R.dense_index(split.train, "item_id", "i")
    model = R.fit_als(split.train, users, items, R.AlsParams(rank=4, max_iter=3))
    au, ai = R.als_vectors(model, users, items)
    profiles = R.user_profiles(split.train, item_vectors)
    pop = R.popularity_scores(split.train)
    genres = spark.createDataFrame([(i, f"g{i % 3}") for i in vec], "item_id INT, genre STRING")
    seen = split.train.select("user_id", "item_id")
    pairs = R.top_k_unseen(au, ai, 20, seen=seen).select("user_id", "item_id")
    cold_pairs = profiles.select("user_id").limit(5).crossJoin(split.cold_items)
    now = split.train.agg(F.max("ts")).first()[0]
    feats = R.candidate_features(
        pairs.unionByName(cold_pairs),
        split.train,
        als_users=au,
        als_items=ai,
        profiles=profiles,
        item_vectors=item_vectors,
        popularity=pop,
        item_genres=genres,
        now=now,
    ).persist()
    assert feats.count() == pairs.count() + cold_pairs.count()
    for f in R.FEATURES:
        assert feats.where(F.col(f).isNull()).isEmpty(), f
    cold = feats.join(split.cold_items, "item_id")
    assert cold.where("als_score != 0 OR log_popularity != 0 OR has_interactions != 0").isEmpty()
    assert cold.where("content_score = 0").count() < cold.count()  # content scores cold items
    # als_score is the dot product of the factors
    r = feats.join(split.cold_items, "item_id", "left_anti").first()
    u = np.array(au.where(F.col("user_id") == r["user_id"]).first()["vector"])
    i = np.array(ai.where(F.col("item_id") == r["item_id"]).first()["vector"])
    assert r["als_score"] == pytest.approx(float(u @ i), rel=1e-4)
    ranker = R.HybridRanker().fit(feats, split.val.where("positive"))
    scored = ranker.score(feats)
    assert scored.count() == feats.count()
    assert scored.where("score < 0 OR score > 1 OR score IS NULL").isEmpty()
    assert set(ranker.importances) == set(R.FEATURES)
    with pytest.raises(ValueError, match="logreg or gbt"):
        R.HybridRanker(model_type="forest").fit(feats, split.val.where("positive"))
