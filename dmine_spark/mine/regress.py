"""Regression with MLlib on text embeddings plus tabular features: ``linear`` or ``gbt``.

:func:`fit_regressor` assembles the embedding vector (if any) with a tabular
feature pipeline of its own (categorical index + one-hot, numeric imputation +
scaling; built by :mod:`dmine_spark.features.tabular`), fitted on the training
rows only, and fits ``LinearRegression`` or ``GBTRegressor`` on the result.
:func:`regression_scores` gives RMSE, MAE and R² in one aggregation.
"""

from __future__ import annotations

from typing import Any

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

__all__ = ["REGRESSORS", "fit_regressor", "regression_scores"]

REGRESSORS = ("linear", "gbt")


def fit_regressor(
    train: DataFrame,
    model: str,
    *,
    target: str = "target",
    embedding_col: str | None = "features",
    categorical: list[str] | None = None,
    numeric: list[str] | None = None,
    params: dict[str, Any] | None = None,
    seed: int = 42,
) -> PipelineModel:
    """Fit ``model`` (``linear`` or ``gbt``) to predict ``target`` from the embedding and tabular columns.

    The returned ``PipelineModel`` adds ``prediction`` to any frame with the
    same input columns.
    """

    from dmine_spark.features.tabular import FeaturesConfig, TextFeaturesConfig, build_feature_pipeline

    categorical, numeric = list(categorical or []), list(numeric or [])
    if target in categorical + numeric:
        raise ValueError(f"regress: the target {target!r} is also listed as a feature")
    if model not in REGRESSORS:
        raise ValueError(f"regress.model: unknown regressor {model!r}; choose from {', '.join(REGRESSORS)}")
    stages: list = []
    inputs: list[str] = []
    if categorical or numeric:
        tab = build_feature_pipeline(
            FeaturesConfig(text=TextFeaturesConfig(kind="none"), categorical=categorical, numeric=numeric)
        )
        stages += tab.getStages()
        # the feature pipeline ends in its own assembler writing "features"; rename it to keep ours free
        last = stages[-1]
        last.setOutputCol("_tabular")
        inputs.append("_tabular")
    if embedding_col:
        inputs.insert(0, embedding_col)
    if not inputs:
        raise ValueError("regress: no features (set embedding or tabular columns)")
    # every input is non-null here (numeric columns are imputed, categorical ones keep a bucket for nulls)
    stages.append(VectorAssembler(inputCols=inputs, outputCol="_reg_features"))
    p = dict(params or {})
    try:
        est = _estimator(model, p, seed)
    except TypeError as exc:
        raise ValueError(f"regress.params: {exc}") from None
    est.setFeaturesCol("_reg_features").setLabelCol(target).setPredictionCol("prediction")
    stages.append(est)
    return Pipeline(stages=stages).fit(train.where(F.col(target).isNotNull()))


def _estimator(model: str, p: dict[str, Any], seed: int) -> Any:
    from pyspark.ml.regression import GBTRegressor, LinearRegression

    if model == "linear":
        # regParam acts on standardised features; embedding dimensions have a spread of about 0.05,
        # so 0.5 is a mild ridge (about alpha = 0.001 n on the raw vectors)
        est = LinearRegression(**{"maxIter": 100, "regParam": 0.5, "elasticNetParam": 0.0, **p})
    else:
        est = GBTRegressor(**{"maxIter": 60, "maxDepth": 5, "stepSize": 0.1, "seed": seed, **p})
    return est


def regression_scores(
    pred: DataFrame, *, target: str = "target", prediction_col: str = "prediction"
) -> dict[str, float]:
    """RMSE, MAE, R² and the row count, from one aggregation over rows that have a target."""
    err = F.col(prediction_col) - F.col(target)
    r = (
        pred.where(F.col(target).isNotNull())
        .agg(
            F.count(F.lit(1)).alias("n"),
            F.sum(err * err).alias("sse"),
            F.sum(F.abs(err)).alias("sae"),
            F.avg(F.col(target)).alias("mean"),
            F.var_pop(F.col(target)).alias("var"),
        )
        .first()
    )
    n = int(r["n"] or 0)
    if n == 0:
        return {"rows": 0.0, "rmse": float("nan"), "mae": float("nan"), "r2": float("nan")}
    mse = r["sse"] / n
    var = r["var"] or 0.0
    return {
        "rows": float(n),
        "rmse": mse**0.5,
        "mae": r["sae"] / n,
        "r2": 1.0 - mse / var if var > 0 else float("nan"),
    }
