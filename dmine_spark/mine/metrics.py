"""Evaluation from contingency counts: what Spark hands back after one ``groupBy().count()``.

Scoring a table of millions of rows needs only the ``(truth, prediction, count)``
triples of one small aggregation. Everything here is plain Python and numpy over
those triples, so it is unit-tested without a JVM and agrees with scikit-learn
(``tests/unit/test_metrics.py`` checks it against ``sklearn.metrics``):

* :func:`classification_scores`: accuracy, macro-F1, weighted-F1, and per-class
  precision, recall, F1 and support, plus the confusion matrix;
* :func:`cluster_agreement`: NMI (arithmetic mean normalisation, as scikit-learn's
  default), ARI, and Hungarian-matched accuracy of clusters against labels.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Confusion",
    "cv_folds_for",
    "training_classes_error",
    "unseen_labels",
    "confusion",
    "classification_scores",
    "cluster_agreement",
    "hungarian_accuracy",
]

Triple = tuple[Any, Any, int]


@dataclass
class Confusion:
    """A confusion matrix: ``matrix[i, j]`` rows whose truth is ``labels[i]`` and prediction ``labels[j]``.

    ``labels`` are the true labels (sorted) followed by any label that was only
    ever predicted.
    """

    labels: list[str]
    matrix: np.ndarray
    true_labels: list[str] = field(default_factory=list)

    def as_rows(self) -> list[tuple[str, str, int]]:
        """Non-zero cells as (truth, prediction, count)."""
        out = []
        for i, a in enumerate(self.labels):
            for j, b in enumerate(self.labels):
                if self.matrix[i, j]:
                    out.append((a, b, int(self.matrix[i, j])))
        return out


def confusion(pairs: Iterable[Triple]) -> Confusion:
    """Build the confusion matrix from (truth, prediction, count) triples; ``None`` truths are skipped."""
    counts: dict[tuple[str, str], int] = {}
    for t, p, n in pairs:
        if t is None:
            continue
        key = (str(t), "" if p is None else str(p))
        counts[key] = counts.get(key, 0) + int(n)
    true_labels = sorted({t for t, _ in counts})
    extra = sorted({p for _, p in counts} - set(true_labels))
    labels = true_labels + extra
    pos = {lab: i for i, lab in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for (t, p), n in counts.items():
        m[pos[t], pos[p]] += n
    return Confusion(labels=labels, matrix=m, true_labels=true_labels)


def classification_scores(pairs: Iterable[Triple]) -> dict[str, Any]:
    """Accuracy, macro/weighted F1, per-class precision/recall/F1/support and the confusion matrix.

    Macro averages run over the true labels: a true label that is never
    predicted scores 0, labels seen only as predictions are not averaged (as
    scikit-learn does with ``labels=`` the true labels).
    """
    cm = confusion(pairs)
    m = cm.matrix
    k = len(cm.true_labels)
    n = int(m.sum())
    tp = np.diag(m)[:k].astype(float)
    predicted = m.sum(0)[:k].astype(float)
    support = m.sum(1)[:k].astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    per_class = {
        lab: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, lab in enumerate(cm.true_labels)
    }
    return {
        "rows": n,
        "accuracy": float(tp.sum() / n) if n else 0.0,
        "macro_f1": float(f1.mean()) if k else 0.0,
        "macro_precision": float(precision.mean()) if k else 0.0,
        "macro_recall": float(recall.mean()) if k else 0.0,
        "weighted_f1": float((f1 * support).sum() / support.sum()) if support.sum() else 0.0,
        "per_class": per_class,
        "confusion": cm,
    }


def _contingency(pairs: Iterable[Triple]) -> np.ndarray:
    rows: dict[Any, int] = {}
    cols: dict[Any, int] = {}
    cells: list[tuple[int, int, int]] = []
    for a, b, n in pairs:
        if a is None or b is None:
            continue
        i = rows.setdefault(a, len(rows))
        j = cols.setdefault(b, len(cols))
        cells.append((i, j, int(n)))
    c = np.zeros((len(rows), len(cols)), dtype=np.int64)
    for i, j, n in cells:
        c[i, j] += n
    return c


def hungarian_accuracy(pairs: Iterable[Triple]) -> float:
    """Accuracy after matching each cluster to at most one label, the matching that maximises agreement."""
    from scipy.optimize import linear_sum_assignment

    c = _contingency(pairs)
    if c.size == 0:
        return 0.0
    r, k = linear_sum_assignment(-c)
    return float(c[r, k].sum() / c.sum())


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def cluster_agreement(pairs: Iterable[Triple]) -> dict[str, float]:
    """NMI, ARI and Hungarian-matched accuracy of (label, cluster, count) triples."""
    pairs = list(pairs)
    c = _contingency(pairs)
    n = int(c.sum())
    if n == 0:
        return {"nmi": 0.0, "ari": 0.0, "hungarian_accuracy": 0.0, "rows": 0.0}
    a, b = c.sum(1), c.sum(0)
    nz = c > 0
    mi = float((c[nz] / n * np.log(c[nz] * n / np.outer(a, b)[nz])).sum())
    ha, hb = _entropy(a), _entropy(b)
    nmi = 1.0 if ha == hb == 0 else (mi / ((ha + hb) / 2) if ha + hb > 0 else 0.0)

    def comb2(x: np.ndarray | int) -> np.ndarray | float:
        return np.asarray(x, dtype=float) * (np.asarray(x, dtype=float) - 1) / 2

    index = float(comb2(c).sum())
    sa, sb, total = float(comb2(a).sum()), float(comb2(b).sum()), float(comb2(n))
    expected = sa * sb / total if total else 0.0
    top = (sa + sb) / 2
    ari = 1.0 if top == expected else (index - expected) / (top - expected)
    return {"nmi": max(0.0, nmi), "ari": ari, "hungarian_accuracy": hungarian_accuracy(pairs), "rows": float(n)}


def cluster_majority_labels(pairs: Iterable[Triple]) -> dict[Any, Any]:
    """Each cluster's most frequent label, from (label, cluster, count) triples (ties: the smallest label)."""
    best: dict[Any, tuple[int, Any]] = {}
    for label, cluster, n in pairs:
        have = best.get(cluster)
        if have is None or n > have[0] or (n == have[0] and str(label) < str(have[1])):
            best[cluster] = (int(n), label)
    return {c: lab for c, (_, lab) in best.items()}


def training_classes_error(where: str, split: str, counts: dict[str, int]) -> str | None:
    """The one-line error for a training split a classifier cannot learn from, else ``None``.

    Parameters
    ----------
    where : str
        What trains, e.g. ``classify (task banking77)``.
    split : str
        The training split's name.
    counts : dict
        Rows per label in the training split.

    Returns
    -------
    str or None
        Set when the split has fewer than two labels.
    """
    if len(counts) >= 2:
        return None
    have = ", ".join(f"{lab}: {n:,} rows" for lab, n in sorted(counts.items())) or "no labelled rows"
    return (
        f"{where}: training split {split!r} has {len(counts)} class(es) ({have}); a classifier needs at least 2: "
        "add rows of other labels, or check the sources' label column and splits"
    )


def cv_folds_for(counts: dict[str, int], folds: int) -> tuple[int, str | None]:
    """Cross-validation folds that every class can fill, and a note when that is fewer than asked.

    Stratified k-fold needs each class in each fold: with a class of ``m <
    folds`` rows the folds drop to ``max(2, m)`` (scikit-learn's
    ``StratifiedKFold`` otherwise warns and leaves the class out of some folds).

    Returns
    -------
    (int, str or None)
        The folds to use, and the note saying why they were reduced.
    """
    if not counts:
        return folds, None
    label, smallest = min(counts.items(), key=lambda kv: (kv[1], kv[0]))
    if smallest >= folds:
        return folds, None
    used = max(2, smallest)
    if used >= folds:
        return folds, None
    return used, f"cross-validation folds reduced from {folds} to {used}: class {label!r} has {smallest} training rows"


def unseen_labels(pairs: Iterable[Triple], known: Iterable[str]) -> dict[str, int]:
    """Rows per true label that the model never saw in training (open-set rows), from (truth, prediction, count)."""
    known = {str(k) for k in known}
    out: dict[str, int] = {}
    for t, _, n in pairs:
        if t is not None and str(t) not in known:
            out[str(t)] = out.get(str(t), 0) + int(n)
    return out
