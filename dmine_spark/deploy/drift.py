"""Drift measures between a baseline and a new batch of embeddings and predictions: numpy only, no Spark.

Each measure comes with the value it would take from sampling noise alone
when it is known, so small batches are not flagged for being small.

- **centroid shift**: ``1 - cos(mean of baseline vectors, mean of batch vectors)``.
- **per-dimension shift**: ``|batch mean - baseline mean| / baseline SD`` per
  dimension, averaged (``mean_shift``) and at its largest (``max_dim_shift``),
  and the mean ratio of the SDs (``std_ratio``).
- **PSI** of the predicted classes, ``sum((q - p) * ln(q / p))``. With K
  classes and no drift its expected value is about ``(K - 1) * (1/n_base +
  1/n_batch)``: PSI is Jeffreys' divergence, which on counts behaves as a
  chi-square with K - 1 degrees of freedom scaled by that sum. The excess
  over this noise level is what is compared with the threshold.
- **out-of-distribution rate**: the share of batch texts the open-set
  decision calls unknown. With a model trained with ``classify.open_set``
  that is the model's own decision (its ``unknown`` predictions; expected at
  the validation share of known rows it called unknown). Otherwise it is the
  same ``knn`` score (:func:`~dmine_spark.mine.openset.nearest_similarity`):
  the cosine distance to the nearest baseline row beyond the ``q`` quantile of
  that distance on held-out baseline rows (expected ``1 - q`` without drift).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dmine_spark.mine.openset import nearest_similarity

__all__ = [
    "Baseline",
    "fit_baseline",
    "centroid_shift",
    "dimension_shift",
    "psi",
    "psi_noise",
    "nearest_neighbor_distance",
    "drift_measures",
]


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n == 0, 1.0, n)


def centroid_shift(base: np.ndarray, batch: np.ndarray) -> float:
    """``1 - cosine`` between the mean vectors of ``base`` and ``batch`` (rows are vectors)."""
    a, b = _unit(base.mean(axis=0)), _unit(batch.mean(axis=0))
    return float(1.0 - np.clip(a @ b, -1.0, 1.0))


def dimension_shift(base: np.ndarray, batch: np.ndarray) -> dict[str, float]:
    """Per-dimension mean shift in baseline SDs (mean and max) and the mean SD ratio."""
    mu_b, sd_b = base.mean(axis=0), base.std(axis=0)
    sd_b = np.where(sd_b < 1e-8, 1e-8, sd_b)
    z = np.abs(batch.mean(axis=0) - mu_b) / sd_b
    return {
        "mean_shift": float(z.mean()),
        "max_dim_shift": float(z.max()),
        "std_ratio": float((batch.std(axis=0) / sd_b).mean()),
    }


def _shares(labels: Sequence[str], classes: Sequence[str], eps: float) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    counts = np.zeros(len(classes))
    for lab in labels:
        counts[index[lab]] += 1
    shares = counts / max(counts.sum(), 1.0)
    shares = np.maximum(shares, eps)
    return shares / shares.sum()


def psi(base_labels: Sequence[str], batch_labels: Sequence[str], *, eps: float = 1e-4) -> float:
    """Population stability index of two samples of class labels (empty classes smoothed by ``eps``)."""
    classes = sorted(set(base_labels) | set(batch_labels))
    p, q = _shares(base_labels, classes, eps), _shares(batch_labels, classes, eps)
    return float(np.sum((q - p) * np.log(q / p)))


def psi_noise(n_classes: int, n_base: int, n_batch: int) -> float:
    """The PSI two samples of these sizes from one distribution over ``n_classes`` show on average."""
    if n_base <= 0 or n_batch <= 0:
        return float("inf")
    return float(max(n_classes - 1, 0) * (1.0 / n_base + 1.0 / n_batch))


def nearest_neighbor_distance(x: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cosine distance of each row of ``x`` (shape ``(n, d)``) to its nearest row of ``reference`` (``(m, d)``)."""
    return 1.0 - nearest_similarity(x, reference)


@dataclass
class Baseline:
    """What a batch is compared with: baseline vectors and predictions, the OOD reference rows and distance.

    With ``open_label`` set (a model with an open-set stage) a batch row is
    out of distribution when the model answered ``open_label``, and
    ``ood_expected`` is the share of known rows it calls unknown.
    """

    vectors: np.ndarray
    predictions: list[str]
    reference: np.ndarray
    ood_distance: float
    ood_quantile: float
    open_label: str | None = None
    ood_expected: float | None = None


def fit_baseline(
    vectors: np.ndarray,
    labels: Sequence[str],
    predictions: Sequence[str],
    *,
    quantile: float = 0.99,
    holdout: float = 0.2,
    seed: int = 42,
) -> Baseline:
    """The OOD reference is most baseline rows; the OOD distance is the ``quantile`` on the rows left out.

    Measuring the nearest-neighbour distance on rows the reference does not
    hold keeps the OOD rate of new in-distribution data near ``1 - quantile``.
    ``labels`` are kept for the caller's checks (one per row).
    """
    if len(vectors) != len(labels) or len(vectors) != len(predictions):
        raise ValueError("vectors, labels and predictions must have one entry per baseline row")
    if len(vectors) < 20:
        raise ValueError(f"the baseline has {len(vectors)} rows; at least 20 are needed")
    rng = np.random.default_rng(seed)
    held = rng.random(len(vectors)) < holdout
    reference = vectors[~held]
    dist = nearest_neighbor_distance(vectors[held], reference)
    return Baseline(
        vectors=vectors,
        predictions=list(predictions),
        reference=reference,
        ood_distance=float(np.quantile(dist, quantile)),
        ood_quantile=quantile,
    )


def drift_measures(baseline: Baseline, vectors: np.ndarray, predictions: Sequence[str]) -> dict[str, float]:
    """Every measure of the module docstring for one batch (``psi_excess`` is PSI above its noise level)."""
    if len(vectors) == 0:
        raise ValueError("the batch has no rows to compare")
    out = {"centroid_shift": centroid_shift(baseline.vectors, vectors)}
    out.update(dimension_shift(baseline.vectors, vectors))
    n_classes = len(set(baseline.predictions) | set(predictions))
    out["psi"] = psi(baseline.predictions, predictions)
    out["psi_noise"] = psi_noise(n_classes, len(baseline.predictions), len(predictions))
    out["psi_excess"] = max(out["psi"] - out["psi_noise"], 0.0)
    if baseline.open_label is not None:
        out["ood_rate"] = float(np.mean([p == baseline.open_label for p in predictions]))
        out["ood_expected"] = float(baseline.ood_expected or 0.0)
    else:
        d = nearest_neighbor_distance(vectors, baseline.reference)
        out["ood_rate"] = float((d > baseline.ood_distance).mean())
        out["ood_expected"] = 1.0 - baseline.ood_quantile
    if np.isfinite(baseline.ood_distance):
        out["ood_distance"] = baseline.ood_distance
    return out
