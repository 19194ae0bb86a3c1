"""Pure metric helpers, checked against scikit-learn."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from sklearn.metrics import f1_score


def _triples(y: list, p: list) -> list[tuple]:
    return [(a, b, n) for (a, b), n in Counter(zip(y, p, strict=True)).items()]


def test_classification_scores_match_sklearn() -> None:
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    from dmine_spark.mine.metrics import classification_scores

    rng = random.Random(5)
    labels = ["card", "loan", "top_up", "atm"]
    y = [rng.choice(labels) for _ in range(800)]
    p = [t if rng.random() < 0.6 else rng.choice(labels + ["other"]) for t in y]
    s = classification_scores(_triples(y, p))
    true = sorted(set(y))
    pr, rc, f1, sup = precision_recall_fscore_support(y, p, labels=true, zero_division=0)
    assert s["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert s["macro_f1"] == pytest.approx(f1.mean())
    assert s["weighted_f1"] == pytest.approx(f1_score(y, p, labels=true, average="weighted"))
    for i, lab in enumerate(true):
        assert s["per_class"][lab]["precision"] == pytest.approx(pr[i])
        assert s["per_class"][lab]["recall"] == pytest.approx(rc[i])
        assert s["per_class"][lab]["support"] == sup[i]
    cm = s["confusion"]
    assert cm.labels == true + ["other"]
    assert (cm.matrix == confusion_matrix(y, p, labels=cm.labels)).all()
    assert sum(n for _, _, n in cm.as_rows()) == 800


def test_cluster_agreement_matches_sklearn() -> None:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    from dmine_spark.mine.metrics import cluster_agreement

    rng = random.Random(11)
    y = [rng.randrange(4) for _ in range(1000)]
    perm = {0: 3, 1: 0, 2: 2, 3: 1}
    c = [perm[t] if rng.random() < 0.8 else rng.randrange(5) for t in y]
    s = cluster_agreement(_triples(y, c))
    assert s["nmi"] == pytest.approx(normalized_mutual_info_score(y, c))
    assert s["ari"] == pytest.approx(adjusted_rand_score(y, c))
    # the matching undoes the permutation: accuracy is the share kept, plus lucky random draws
    direct = sum(perm[t] == k for t, k in zip(y, c, strict=True)) / len(y)
    assert s["hungarian_accuracy"] == pytest.approx(direct)
    assert cluster_agreement([])["rows"] == 0.0
    assert cluster_agreement([("a", 1, 5), ("b", 2, 5)])["hungarian_accuracy"] == 1.0


def test_argmax_labels_takes_the_class_axis() -> None:
    import numpy as np

    from dmine_spark.mine.finetune import argmax_labels

    probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3], [0.2, 0.3, 0.5]])
    assert argmax_labels(probs, ["neg", "pos", "neu"]) == ["pos", "neg", "neu"]
    with pytest.raises(ValueError, match="class scores"):
        argmax_labels(probs, ["a", "b"])


def test_regression_and_mining_config_validation() -> None:
    from dmine_spark.config import ClassifyConfig, ClusterConfig, FinetuneConfig, RegressConfig

    assert ClusterConfig(k=None).k is None
    with pytest.raises(ValueError, match="k_range"):
        ClusterConfig(k_range=(5, 2, 1))
    with pytest.raises(ValueError):
        ClassifyConfig(model="svm_rbf")
    assert ClassifyConfig(model="logreg", params={"regParam": 0.1}).estimator_params()["regParam"] == 0.1
    assert ClassifyConfig(model="sk_hgb").estimator_params() == {}
    with pytest.raises(ValueError):
        RegressConfig(model="forest")
    with pytest.raises(ValueError):
        FinetuneConfig(val_fraction=1.5)


def test_classification_scores_edge_cases() -> None:
    from dmine_spark.mine.metrics import classification_scores

    empty = classification_scores([])
    assert empty["rows"] == 0 and empty["accuracy"] == 0.0 and empty["macro_f1"] == 0.0
    assert classification_scores([("a", "a", 5), ("b", "b", 2)])["macro_f1"] == 1.0
    assert classification_scores([("a", "b", 3)])["macro_f1"] == 0.0
    assert classification_scores([("a", "a", 3), (None, "a", 9)])["rows"] == 3  # rows without a truth are skipped


def test_a_training_split_needs_two_classes() -> None:
    from dmine_spark.mine.metrics import training_classes_error

    assert training_classes_error("classify", "train", {"a": 3, "b": 1}) is None
    one = training_classes_error("classify (task t)", "train", {"a": 12})
    assert one.startswith("classify (task t): training split 'train' has 1 class(es) (a: 12 rows)")
    none = training_classes_error("finetune", "train", {})
    assert "0 class(es) (no labelled rows)" in none


def test_folds_drop_to_the_smallest_class_but_not_below_two() -> None:
    from dmine_spark.mine.metrics import cv_folds_for

    assert cv_folds_for({"a": 10, "b": 5}, 5) == (5, None)
    assert cv_folds_for({"a": 10, "b": 3}, 5) == (
        3,
        "cross-validation folds reduced from 5 to 3: class 'b' has 3 training rows",
    )
    assert cv_folds_for({"a": 10, "b": 1}, 3)[0] == 2
    assert cv_folds_for({"a": 10, "b": 1}, 2) == (2, None)


def test_unseen_labels_are_counted_per_label() -> None:
    from dmine_spark.mine.metrics import unseen_labels

    cells = [("a", "a", 5), ("c", "a", 2), ("c", "b", 1), ("d", "b", 4), (None, "a", 9)]
    assert unseen_labels(cells, ["a", "b"]) == {"c": 3, "d": 4}


def test_the_rows_left_error_names_each_empty_source_and_its_rules() -> None:
    from dmine_spark.analyze.record import rows_left_error

    views = {"train": "db.quarantine_t_train", "test": "db.quarantine_t_test"}
    ok = {"train": {"clean": 5, "quarantine:wrong_type": 2}}
    assert rows_left_error("t", ok, views) is None
    empty = {
        "train": {"clean": 5},
        "test": {"quarantine:invalid_encoding": 10, "quarantine:malformed_record": 2},
        "none": {},
    }
    assert rows_left_error("t", empty, views) == (
        "no clean rows for task t: source test: 12 of 12 quarantined (invalid_encoding 10, malformed_record 2); "
        "see db.quarantine_t_test"
    )
    dups = {"train": {"clean": 0, "duplicate:exact_duplicate": 3}}
    assert (
        rows_left_error("t", dups, views) == "no clean rows for task t: source train: 0 of 3 quarantined, 3 duplicates"
    )
