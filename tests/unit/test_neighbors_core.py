"""The numpy core of nearest-neighbour search: block top-k, the merge of blocks, recall@k (no JVM)."""

from __future__ import annotations

import numpy as np
import pytest

from dmine_spark.mine.neighbors import (
    HnswParams,
    NeighborIndex,
    block_topk,
    label_agreement,
    merge_topk,
    normalize_rows,
    recall_at_k,
)


def _brute(q: np.ndarray, c: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = normalize_rows(q) @ normalize_rows(c).T
    order = np.lexsort((np.broadcast_to(np.arange(len(c)), s.shape), -s), axis=1)[:, :k]
    return order, np.take_along_axis(s, order, axis=1)


@pytest.fixture(scope="module")
def vectors() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng.normal(size=(300, 24)).astype(np.float32), rng.normal(size=(1000, 24)).astype(np.float32)


def test_normalize_rows_gives_unit_rows_and_keeps_zero_rows() -> None:
    x = normalize_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert x.dtype == np.float32
    assert np.allclose(x, [[0.6, 0.8], [0.0, 0.0]])


def test_block_topk_equals_brute_force_in_small_chunks(vectors) -> None:
    q, c = vectors
    pos, score = block_topk(normalize_rows(q), normalize_rows(c), 10, chunk_rows=64)
    want_pos, want_score = _brute(q, c, 10)
    assert (pos == want_pos).all()
    assert np.allclose(score, want_score, atol=1e-5)
    assert (np.diff(score, axis=1) <= 0).all()


def test_block_topk_keeps_every_row_of_a_small_corpus(vectors) -> None:
    q, c = vectors
    pos, score = block_topk(normalize_rows(q[:5]), normalize_rows(c[:3]), 10)
    assert pos.shape == (5, 3) and sorted(pos[0]) == [0, 1, 2]


def test_block_topk_excludes_a_querys_own_row(vectors) -> None:
    _, c = vectors
    cn = normalize_rows(c)
    plain, _ = block_topk(cn[:50], cn, 3)
    assert (plain[:, 0] == np.arange(50)).all()  # each vector is its own nearest
    pos, _ = block_topk(cn[:50], cn, 3, exclude=np.arange(50))
    assert not (pos == np.arange(50)[:, None]).any()
    assert (pos[:, 0] == plain[:, 1]).all()


def test_merging_block_winners_equals_one_search_over_the_whole_corpus(vectors) -> None:
    q, c = vectors
    qn, cn = normalize_rows(q), normalize_rows(c)
    ids, scores = [], []
    for start in range(0, len(c), 300):  # four corpus blocks, the last one short
        pos, s = block_topk(qn, cn[start : start + 300], 10)
        ids.append(pos + start)
        scores.append(s)
    got_ids, got_scores = merge_topk(np.hstack(ids), np.hstack(scores), 10)
    want_ids, want_scores = _brute(q, c, 10)
    assert (got_ids == want_ids).all()
    assert np.allclose(got_scores, want_scores, atol=1e-5)


def test_recall_at_k_counts_the_true_neighbours_found() -> None:
    assert recall_at_k([[1, 2, 3], [4, 5, 6]], [[1, 2, 3], [4, 5, 6]]) == 1.0
    assert recall_at_k([[1, 2, 9], [7, 8, 9]], [[1, 2, 3], [4, 5, 6]]) == pytest.approx((2 / 3 + 0) / 2)
    assert recall_at_k([[3, 2, 1]], [[1, 2, 3]]) == 1.0  # order does not matter
    with pytest.raises(ValueError, match="same queries"):
        recall_at_k([[1]], [[1], [2]])


def test_label_agreement_is_the_share_of_matching_first_neighbours() -> None:
    assert label_agreement(["a", "b", "c", "a"], ["a", "b", "x", "x"]) == 0.5
    with pytest.raises(ValueError):
        label_agreement([], [])


def test_an_hnsw_index_finds_nearly_every_exact_neighbour(vectors) -> None:
    q, c = vectors
    index = NeighborIndex.from_vectors(c, [f"c{i}" for i in range(len(c))], params=HnswParams(m=16), threads=1)
    pos, score = index.search(q, 10)
    want, want_score = _brute(q, c, 10)
    assert recall_at_k(pos, want) >= 0.95
    assert np.allclose(score[:, 0], want_score[:, 0], atol=1e-4)
    exact = NeighborIndex.from_vectors(c, list(range(len(c))), kind="exact")
    assert (exact.search(q, 10)[0] == want).mean() > 0.999  # exact, but for float ties
    with pytest.raises(ValueError, match="3 ids for 1000 vectors"):
        NeighborIndex.from_vectors(c, [1, 2, 3])


def test_the_benchmarks_vectors_are_near_copies_of_the_pool_in_turn() -> None:
    from dmine_spark.tools.bench_search import perturbed

    pool = normalize_rows(np.random.default_rng(3).normal(size=(7, 384)))
    x = perturbed(pool, 20, seed=1)
    assert x.shape == (20, 384) and np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    cos = (x * pool[np.arange(20) % 7]).sum(axis=1)
    assert (cos > 0.97).all() and (cos < 1.0).all()  # sigma 0.01 over 384 dimensions: about 0.98
    assert np.array_equal(perturbed(pool, 20, seed=1), x)
