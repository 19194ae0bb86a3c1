"""Pure metric helpers, checked against scikit-learn."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from sklearn.metrics import f1_score

from dmine_spark.mine.classify import macro_f1_from_counts


def test_macro_f1_matches_sklearn() -> None:
    rng = random.Random(3)
    labels = ["a", "b", "c", "d"]
    y = [rng.choice(labels) for _ in range(500)]
    p = [t if rng.random() < 0.7 else rng.choice(labels + ["e"]) for t in y]
    counts = Counter(zip(y, p, strict=True))
    ours = macro_f1_from_counts((a, b, n) for (a, b), n in counts.items())
    assert ours == pytest.approx(f1_score(y, p, labels=sorted(set(y)), average="macro"))


def test_macro_f1_edge_cases() -> None:
    assert macro_f1_from_counts([]) == 0.0
    assert macro_f1_from_counts([("a", "a", 5), ("b", "b", 2)]) == 1.0
    assert macro_f1_from_counts([("a", "b", 3)]) == 0.0
