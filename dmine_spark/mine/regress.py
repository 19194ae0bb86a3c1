"""Regression with MLlib on text embeddings plus tabular features: ``linear`` or ``gbt``.

:func:`fit_regressor` assembles the embedding vector (if any) with a tabular
feature pipeline of its own (categorical index + one-hot, numeric imputation +
scaling; built by :mod:`dmine_spark.features.tabular`), fitted on the training
rows only, and fits ``LinearRegression`` or ``GBTRegressor`` on the result.
:func:`regression_scores` gives RMSE, MAE and R² in one aggregation.
"""

from __future__ import annotations

from typing import Any

from pyspark import keyword_only
from pyspark.ml import Pipeline, PipelineModel, Transformer
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.functions import array_to_vector
from pyspark.ml.linalg import VectorUDT
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DataType

from dmine_spark.config import REGRESSORS as _REGRESSORS
from dmine_spark.config import FeaturesConfig, TextFeaturesConfig
from dmine_spark.config.estimators import check_params
from dmine_spark.features.tabular import build_feature_pipeline
from dmine_spark.io.schema import ColumnSpec, SchemaChecked

__all__ = ["REGRESSORS", "ArrayToVector", "fit_regressor", "regression_scores"]

REGRESSORS = tuple(_REGRESSORS)


class ArrayToVector(
    SchemaChecked, Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable
):
    """pyspark.ml stage: an ``array<float>`` column (an embedding) as an MLlib dense vector column."""

    @keyword_only
    def __init__(self, *, inputCol: str = "embedding", outputCol: str = "features") -> None:
        super().__init__()
        self._setDefault(inputCol="embedding", outputCol="features")
        self._set(**self._input_kwargs)

    def _input_columns(self) -> dict[str, ColumnSpec]:
        return {self.getInputCol(): ((ArrayType,), "an array of numbers")}

    def _output_columns(self) -> list[tuple[str, DataType]]:
        return [(self.getOutputCol(), VectorUDT())]

    def _transform(self, dataset: DataFrame) -> DataFrame:
        self.transformSchema(dataset.schema)
        return dataset.withColumn(self.getOutputCol(), array_to_vector(F.col(self.getInputCol())))


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
    est = _estimator(model, p, seed)
    est.setFeaturesCol("_reg_features").setLabelCol(target).setPredictionCol("prediction")
    stages.append(est)
    return Pipeline(stages=stages).fit(train.where(F.col(target).isNotNull()))


def _estimator(model: str, p: dict[str, Any], seed: int) -> Any:
    spec = _REGRESSORS[model]
    try:
        check_params(spec, p)
    except ValueError as exc:
        raise ValueError(f"regress.params: {exc}") from None
    cls = spec.load_class()
    params = {**spec.defaults, **p}
    if "seed" in dir(cls):
        params.setdefault("seed", seed)
    return cls(**params)


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
