"""The numpy core of the recommenders (JVM-free): top k with seen items left out, the random baseline."""

from __future__ import annotations

import numpy as np

from dmine_spark.mine.recommend import random_recall_at_k, topk_excluding


def test_seen_columns_are_never_returned_and_ties_go_to_the_lower_position() -> None:
    scores = np.array([[0.9, 0.5, 0.5, 0.1], [0.2, 0.8, 0.3, 0.8]], dtype=np.float32)
    pos, top = topk_excluding(scores.copy(), [np.array([0]), np.array([], dtype=np.int64)], 2)
    assert pos.tolist() == [[1, 2], [1, 3]]
    assert np.allclose(top, [[0.5, 0.5], [0.8, 0.8]])


def test_a_row_with_fewer_unseen_columns_than_k_is_padded_with_minus_one() -> None:
    pos, top = topk_excluding(np.ones((1, 3), dtype=np.float32), [np.array([0, 2])], 3)
    assert pos.tolist() == [[1, -1, -1]]
    assert top[0, 0] == 1.0 and not np.isfinite(top[0, 1:]).any()


def test_topk_equals_a_full_sort_on_random_scores() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(50, 200)).astype(np.float32)
    seen = [rng.choice(200, size=rng.integers(0, 40), replace=False) for _ in range(50)]
    pos, _ = topk_excluding(scores.copy(), seen, 10)
    for i in range(50):
        s = scores[i].copy()
        s[seen[i]] = -np.inf
        assert pos[i].tolist() == np.argsort(-s, kind="stable")[:10].tolist()


def test_random_recall_is_k_over_the_candidates() -> None:
    assert random_recall_at_k(400, 10) == 10 / 400
    assert random_recall_at_k(5, 10) == 1.0
    assert random_recall_at_k(0, 10) == 0.0


def test_movie_texts_are_title_genres_and_distinct_tags() -> None:
    import pytest

    from dmine_spark.tools.bench_recommend import item_texts
    from tests.conftest import DATASETS

    movielens = DATASETS / "movielens_latest_small"
    if not (movielens / "movies.csv").is_file():
        pytest.fail(f"MovieLens not found at {movielens}; set DMINE_DATASETS to the shared datasets folder")
    ids, texts, genres = item_texts(movielens)
    assert len(ids) == len(texts) == len(genres) == 9742
    toy = texts[ids.index(1)]
    assert toy.startswith("Toy Story (1995) Adventure Animation Children Comedy Fantasy")
    assert toy.count("pixar") == 1  # the tag applied by several users appears once
