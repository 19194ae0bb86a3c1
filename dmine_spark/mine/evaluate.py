"""Evaluation of predictions held in DataFrames: one small aggregation, then :mod:`dmine_spark.mine.metrics`."""

from __future__ import annotations

from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from dmine_spark.mine.metrics import classification_scores, cluster_agreement, unseen_labels

__all__ = ["classification_metrics", "cluster_label_agreement"]


def classification_metrics(
    pred: DataFrame, labels: list[str], *, label_col: str = "label", prediction_col: str = "prediction"
) -> tuple[dict[str, float], list[tuple[str, str, int]]]:
    """Scores of predictions against labels, and the confusion matrix's non-zero cells.

    Parameters
    ----------
    pred : DataFrame
        Rows with ``label_col``, ``prediction_col`` and ``probability`` (the
        predicted label's score); rows without a label are left out.
    labels : list of str
        The classes the model knows. ROC AUC is added only for a genuinely
        binary task: two known classes (``labels[1]`` is the positive
        class), both present among the rows, and no other true label.

    Returns
    -------
    (dict, list)
        ``accuracy``, ``macro_f1``, ``weighted_f1``, ``macro_precision``,
        ``macro_recall``, ``rows``, per-class ``precision.<label>``,
        ``recall.<label>``, ``f1.<label>`` (and ``auc``); ``unseen_label_rows``
        and ``unseen_labels`` (rows whose true label the model never saw in
        training: they count as errors in ``accuracy`` and the macro
        averages) and ``accuracy_known`` (accuracy over the other rows); the
        confusion cells as (truth, prediction, count).
    """
    from pyspark.ml.evaluation import BinaryClassificationEvaluator

    pred = pred.where(F.col(label_col).isNotNull())
    rows = pred.groupBy(label_col, prediction_col).count().collect()
    s = classification_scores((r[0], r[1], int(r[2])) for r in rows)
    values: dict[str, float] = {
        k: float(s[k]) for k in ("accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall", "rows")
    }
    for lab, pc in s["per_class"].items():
        for k in ("precision", "recall", "f1"):
            values[f"{k}.{lab}"] = pc[k]
    cells = s["confusion"].as_rows()
    unseen = unseen_labels(cells, labels)
    n_unseen = sum(unseen.values())
    values["unseen_label_rows"] = float(n_unseen)
    values["unseen_labels"] = float(len(unseen))
    known_rows = values["rows"] - n_unseen
    correct = sum(n for t, p, n in cells if t == p)
    values["accuracy_known"] = correct / known_rows if known_rows else 0.0
    truths = {t for t, _, _ in cells}
    if len(labels) == 2 and truths == {str(lab) for lab in labels}:
        pos = labels[1]
        scored = pred.select(
            F.when(F.col(prediction_col) == pos, F.col("probability"))
            .otherwise(1 - F.col("probability"))
            .alias("score"),
            (F.col(label_col) == pos).cast("double").alias("y"),
        )
        values["auc"] = BinaryClassificationEvaluator(rawPredictionCol="score", labelCol="y").evaluate(scored)
    return values, cells


def label_cluster_counts(assigned: DataFrame, *, label_col: str = "label") -> list[tuple[Any, int, int]]:
    """``(label, cluster, rows)`` for every pair that occurs among the labelled rows (one Spark job)."""
    rows = assigned.where(F.col(label_col).isNotNull()).groupBy(label_col, "cluster").count().collect()
    return [(r[0], r[1], int(r[2])) for r in rows]


def cluster_label_agreement(
    assigned: DataFrame, *, label_col: str = "label", counts: list[tuple[Any, int, int]] | None = None
) -> dict[str, float]:
    """NMI, ARI and Hungarian-matched accuracy of ``cluster`` against ``label_col`` (empty when no row has a label).

    ``counts`` are :func:`label_cluster_counts`' triples when the caller has them already.
    """
    rows = label_cluster_counts(assigned, label_col=label_col) if counts is None else counts
    if not rows:
        return {}
    agree = cluster_agreement(rows)
    return {k: agree[k] for k in ("nmi", "ari", "hungarian_accuracy")}
