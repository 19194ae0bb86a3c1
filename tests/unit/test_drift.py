"""Drift measures on synthetic embeddings whose truth is known (no JVM)."""

from __future__ import annotations

import numpy as np
import pytest

from dmine_spark.config import MonitorThresholds
from dmine_spark.deploy.drift import (
    centroid_shift,
    dimension_shift,
    drift_measures,
    fit_baseline,
    nearest_neighbor_distance,
    psi,
    psi_noise,
)


def _clusters(rng: np.random.Generator, n: int, centers: np.ndarray, spread: float = 0.05):
    k = rng.integers(0, len(centers), size=n)
    x = centers[k] + spread * rng.standard_normal((n, centers.shape[1]))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), [f"c{i}" for i in k]


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(0)
    # like sentence embeddings: every class shares one mean direction, then its own
    common = rng.standard_normal(32)
    centers = common / np.linalg.norm(common) + 0.8 * rng.standard_normal((12, 32)) / np.sqrt(32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    return rng, centers


def test_centroid_shift_is_zero_for_the_same_rows_and_grows_with_a_shift(world) -> None:
    rng, centers = world
    x, _ = _clusters(rng, 2000, centers)
    assert centroid_shift(x, x) == pytest.approx(0.0, abs=1e-6)
    other = np.roll(centers, 5, axis=1)  # the same geometry, other directions
    y, _ = _clusters(rng, 2000, other)
    assert centroid_shift(x, y) > 0.2


def test_dimension_shift_is_in_baseline_sds(world) -> None:
    rng, _ = world
    x = rng.standard_normal((5000, 8))
    y = rng.standard_normal((5000, 8)) + np.array([1.0, 0, 0, 0, 0, 0, 0, 0])
    d = dimension_shift(x, y)
    assert d["max_dim_shift"] == pytest.approx(1.0, abs=0.1)
    assert d["mean_shift"] == pytest.approx(1.0 / 8, abs=0.05)
    assert d["std_ratio"] == pytest.approx(1.0, abs=0.05)


def test_psi_noise_matches_the_psi_of_two_samples_of_one_distribution() -> None:
    rng = np.random.default_rng(1)
    classes = [f"k{i}" for i in range(20)]
    p = rng.dirichlet(np.ones(20) * 5)
    values = [psi(list(rng.choice(classes, 2000, p=p)), list(rng.choice(classes, 400, p=p))) for _ in range(200)]
    expected = psi_noise(20, 2000, 400)
    assert np.mean(values) == pytest.approx(expected, rel=0.25)
    shifted = rng.dirichlet(np.ones(20))
    assert psi(list(rng.choice(classes, 2000, p=p)), list(rng.choice(classes, 400, p=shifted))) > 3 * expected


def test_psi_of_identical_samples_is_zero_and_unseen_classes_count() -> None:
    a = ["x"] * 50 + ["y"] * 50
    assert psi(a, a) == pytest.approx(0.0, abs=1e-12)
    assert psi(a, ["z"] * 100) > 5


def test_ood_rate_is_near_one_minus_q_in_distribution_and_high_outside(world) -> None:
    rng, centers = world
    x, labels = _clusters(rng, 5000, centers)
    base = fit_baseline(x, labels, labels, quantile=0.99)
    new, new_labels = _clusters(rng, 3000, centers)
    m = drift_measures(base, new, new_labels)
    assert m["ood_rate"] < 0.03
    far, _ = _clusters(rng, 1000, -centers)  # the opposite directions
    assert (nearest_neighbor_distance(far, base.reference) > base.ood_distance).mean() > 0.9
    assert drift_measures(base, far, labels[:1000])["ood_rate"] > 0.9


def test_default_thresholds_pass_a_fresh_sample_and_flag_a_shifted_one(world) -> None:
    rng, centers = world
    th = MonitorThresholds()
    x, labels = _clusters(rng, 5000, centers)
    base = fit_baseline(x, labels, labels)
    same, same_labels = _clusters(rng, 500, centers)
    m = drift_measures(base, same, same_labels)
    assert m["centroid_shift"] < th.centroid_shift
    assert m["mean_shift"] < th.mean_shift
    assert m["psi_excess"] < th.psi
    assert m["ood_rate"] < th.ood_rate
    # a batch from only two of the classes, further spread out
    few = centers[:2]
    shifted, shifted_labels = _clusters(rng, 500, few, spread=0.6)
    m = drift_measures(base, shifted, shifted_labels)
    assert m["centroid_shift"] > th.centroid_shift
    assert m["psi_excess"] > th.psi


def test_fit_baseline_refuses_mismatched_or_tiny_input(world) -> None:
    rng, centers = world
    x, labels = _clusters(rng, 10, centers)
    with pytest.raises(ValueError, match="at least 20"):
        fit_baseline(x, labels, labels)
    x, labels = _clusters(rng, 100, centers)
    with pytest.raises(ValueError, match="one entry per baseline row"):
        fit_baseline(x, labels[:-1], labels)


def test_ood_rate_of_a_model_with_an_open_set_stage_is_its_own_unknown_share(world) -> None:
    rng, centers = world
    x, labels = _clusters(rng, 500, centers)
    base = fit_baseline(x, labels, labels)
    base.open_label, base.ood_expected = "unknown", 0.04
    preds = ["unknown"] * 30 + list(labels[:70])
    m = drift_measures(base, x[:100], preds)
    assert m["ood_rate"] == pytest.approx(0.30)
    assert m["ood_expected"] == pytest.approx(0.04)
