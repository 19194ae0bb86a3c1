"""Evaluation of predictions held in DataFrames: one small aggregation, then :mod:`dmine_spark.mine.metrics`."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from dmine_spark.mine.metrics import classification_scores, cluster_agreement

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
        The classes the model knows; with two of them, ROC AUC is added
        (``labels[1]`` is the positive class).

    Returns
    -------
    (dict, list)
        ``accuracy``, ``macro_f1``, ``weighted_f1``, ``macro_precision``,
        ``macro_recall``, ``rows``, per-class ``precision.<label>``,
        ``recall.<label>``, ``f1.<label>`` (and ``auc``); the confusion cells as
        (truth, prediction, count).
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
    if len(labels) == 2:
        pos = labels[1]
        scored = pred.select(
            F.when(F.col(prediction_col) == pos, F.col("probability"))
            .otherwise(1 - F.col("probability"))
            .alias("score"),
            (F.col(label_col) == pos).cast("double").alias("y"),
        )
        values["auc"] = BinaryClassificationEvaluator(rawPredictionCol="score", labelCol="y").evaluate(scored)
    return values, s["confusion"].as_rows()


def cluster_label_agreement(assigned: DataFrame, *, label_col: str = "label") -> dict[str, float]:
    """NMI, ARI and Hungarian-matched accuracy of ``cluster`` against ``label_col`` (empty when no row has a label)."""
    rows = assigned.where(F.col(label_col).isNotNull()).groupBy(label_col, "cluster").count().collect()
    if not rows:
        return {}
    agree = cluster_agreement((r[0], r[1], int(r[2])) for r in rows)
    return {k: agree[k] for k in ("nmi", "ari", "hungarian_accuracy")}
