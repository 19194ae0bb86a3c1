"""Classification on embedding features with Spark MLlib.

``fit_classifier`` returns a fitted ``PipelineModel`` (label indexing,
logistic regression, label decoding) that scores any DataFrame with the same
feature column; ``evaluate`` computes accuracy and macro-F1 on its output.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.feature import IndexToString, StringIndexer
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from dmine_spark.config import ClassifyConfig

__all__ = ["as_vector", "fit_classifier", "predict", "evaluate", "macro_f1_from_counts"]


def as_vector(df: DataFrame, array_col: str = "embedding", out_col: str = "features") -> DataFrame:
    """Add an MLlib vector column from an ``array<float>`` embedding column."""
    return df.withColumn(out_col, array_to_vector(F.col(array_col)))


def fit_classifier(
    train: DataFrame, cfg: ClassifyConfig, *, label_col: str = "label", features_col: str = "features"
) -> PipelineModel:
    """Fit label indexing + multinomial logistic regression on ``train``."""
    indexer = StringIndexer(inputCol=label_col, outputCol="_label_idx", handleInvalid="keep")
    lr = LogisticRegression(
        featuresCol=features_col,
        labelCol="_label_idx",
        predictionCol="_pred_idx",
        probabilityCol="_probability",
        rawPredictionCol="_raw",
        maxIter=cfg.max_iter,
        regParam=cfg.reg_param,
        elasticNetParam=cfg.elastic_net_param,
        family="multinomial",
    )
    return Pipeline(stages=[indexer, lr]).fit(train)


def predict(model: PipelineModel, df: DataFrame) -> DataFrame:
    """Score ``df``: adds ``prediction`` (the label name) and ``probability`` (of that label)."""
    indexer = model.stages[0]
    decode = IndexToString(inputCol="_pred_idx", outputCol="prediction", labels=indexer.labels)
    scored = decode.transform(model.transform(df))
    probs = vector_to_array(F.col("_probability"))
    return scored.withColumn("probability", F.array_max(probs).cast("double")).drop(
        "_label_idx", "_pred_idx", "_probability", "_raw"
    )


def macro_f1_from_counts(pairs: Iterable[tuple[str, str, int]]) -> float:
    """Macro-averaged F1 over the true labels, from (label, prediction, count) triples.

    A label that is never predicted scores F1 = 0; labels that appear only as
    predictions are not averaged (as in scikit-learn with ``labels`` = true labels).
    """
    tp: dict[str, int] = defaultdict(int)
    fp: dict[str, int] = defaultdict(int)
    fn: dict[str, int] = defaultdict(int)
    labels: set[str] = set()
    for label, pred, n in pairs:
        labels.add(label)
        if label == pred:
            tp[label] += n
        else:
            fn[label] += n
            fp[pred] += n
    if not labels:
        return 0.0
    total = 0.0
    for lab in labels:
        denom = 2 * tp[lab] + fp[lab] + fn[lab]
        total += (2 * tp[lab] / denom) if denom else 0.0
    return total / len(labels)


def evaluate(pred: DataFrame, *, label_col: str = "label", prediction_col: str = "prediction") -> dict[str, float]:
    """Accuracy, macro-F1 and row count of a scored DataFrame (one small aggregation)."""
    rows = pred.groupBy(label_col, prediction_col).count().collect()
    pairs = [(r[0], r[1], int(r[2])) for r in rows]
    n = sum(c for _, _, c in pairs)
    correct = sum(c for a, b, c in pairs if a == b)
    return {
        "accuracy": correct / n if n else 0.0,
        "macro_f1": macro_f1_from_counts(pairs),
        "rows": float(n),
    }
