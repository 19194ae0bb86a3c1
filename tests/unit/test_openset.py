"""Open-set scores, thresholds and metrics: numpy only, checked against brute force and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from dmine_spark.mine.openset import (
    fit_knn_threshold,
    fit_quantile_threshold,
    nearest_similarity,
    open_set_curve,
    open_set_scores,
    youden_threshold,
)


def test_nearest_similarity_is_the_brute_force_maximum_cosine_in_chunks() -> None:
    rng = np.random.default_rng(0)
    x, m = rng.normal(size=(301, 16)), rng.normal(size=(57, 16))
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    mn = m / np.linalg.norm(m, axis=1, keepdims=True)
    np.testing.assert_allclose(nearest_similarity(x, m, chunk=64), (xn @ mn.T).max(1), rtol=1e-5, atol=1e-6)
    assert (nearest_similarity(x, np.zeros((0, 16))) == -1).all()


def test_youden_threshold_separates_two_clean_groups_and_maximises_j_on_overlap() -> None:
    t = youden_threshold(np.array([0.1, 0.2, 0.3, 0.8, 0.9]), np.array([False, False, False, True, True]))
    assert 0.3 < t < 0.8
    rng = np.random.default_rng(1)
    s = np.concatenate([rng.normal(1, 1, 400), rng.normal(-1, 1, 300)])
    k = np.arange(700) < 400
    t = youden_threshold(s, k)

    def j(th: float) -> float:
        return (s[k] >= th).mean() + (s[~k] < th).mean()

    assert j(t) >= max(j(c) for c in np.linspace(-3, 3, 601)) - 1e-9
    with pytest.raises(ValueError, match="known and of open"):
        youden_threshold(s, np.ones(700, dtype=bool))


def _blobs(
    rng: np.random.Generator, k: int, n: int, d: int = 32, spread: float = 0.35
) -> tuple[np.ndarray, np.ndarray]:
    centers = rng.normal(size=(k, d))
    labels = np.repeat(np.arange(k), n)
    x = centers[labels] + spread * rng.normal(size=(k * n, d))
    return x.astype(np.float32), labels.astype(str)


def test_knn_threshold_from_training_rows_alone_rejects_unseen_classes_and_keeps_known_ones() -> None:
    rng = np.random.default_rng(2)
    x, y = _blobs(rng, 12, 60)
    known = np.isin(y, [str(i) for i in range(8)])
    t, info = fit_knn_threshold(x[known], y[known], seed=3)
    assert info["rounds"] == 5 and info["val_known_recall"] > 0.9
    # fresh rows: of the 8 known classes and of the 4 never trained on
    fresh, fy = _blobs(np.random.default_rng(2), 12, 60)
    s = nearest_similarity(fresh, x[known])
    new_known = np.isin(fy, [str(i) for i in range(8)])
    assert (s[new_known] >= t).mean() > 0.9
    assert (s[~new_known] < t).mean() > 0.9
    with pytest.raises(ValueError, match="two classes"):
        fit_knn_threshold(x[:10], ["a"] * 10)


def test_quantile_threshold_keeps_the_asked_share_known() -> None:
    s = np.linspace(0, 1, 1001)
    t = fit_quantile_threshold(s, 0.95)
    assert (s >= t).mean() == pytest.approx(0.95, abs=0.002)
    with pytest.raises(ValueError, match="no rows"):
        fit_quantile_threshold(np.array([]), 0.9)


def test_open_set_scores_agree_with_scikit_learn_over_k_known_plus_open() -> None:
    truth = ["a"] * 10 + ["b"] * 10 + ["x"] * 6 + ["y"] * 4  # x and y were never trained on
    pred = ["a"] * 8 + ["unknown"] * 2 + ["b"] * 9 + ["a"] + ["unknown"] * 5 + ["b"] + ["unknown"] * 3 + ["a"]
    cells: dict[tuple[str, str], int] = {}
    for t, p in zip(truth, pred, strict=True):
        cells[(t, p)] = cells.get((t, p), 0) + 1
    got = open_set_scores([(t, p, n) for (t, p), n in cells.items()], ["a", "b"], "unknown")
    mapped = [t if t in ("a", "b") else "unknown" for t in truth]
    assert got["accuracy"] == pytest.approx(np.mean(np.array(mapped) == np.array(pred)))
    assert got["macro_f1"] == pytest.approx(f1_score(mapped, pred, average="macro"))
    assert got["open_recall"] == pytest.approx(8 / 10)
    assert got["open_precision"] == pytest.approx(8 / 10)
    assert got["accuracy_known"] == pytest.approx(17 / 20)
    assert got["open_rows"] == 10


def test_open_set_curve_trades_recall_for_precision_as_the_threshold_rises() -> None:
    rng = np.random.default_rng(4)
    s = np.concatenate([rng.normal(0.8, 0.05, 500), rng.normal(0.5, 0.1, 200)])
    is_open = np.arange(700) >= 500
    curve = open_set_curve(s, is_open, points=11)
    recalls = [p["open_recall"] for p in curve]
    assert recalls == sorted(recalls) and recalls[-1] > 0.95
    assert curve[0]["open_precision"] == pytest.approx(1.0)
    assert open_set_curve(np.array([]), np.array([], dtype=bool)) == []
