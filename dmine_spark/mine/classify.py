"""Classifiers as pyspark.ml stages: MLlib and scikit-learn heads on an embedding or feature column.

Two families share one fitted stage, :class:`ClassifierHead` (a
pyspark.ml ``Model``): ``transform`` adds ``prediction`` (a label) and
``probability`` (the score of that label) to any frame with the features
column, an ``array<float>`` embedding or an MLlib vector.

* **MLlib** (``logreg``, ``mlp``, ``gbt_ovr``): trained and scored by Spark;
  ``gbt_ovr`` is gradient-boosted trees through ``OneVsRest``.
* **scikit-learn** (``sk_linear_svc``, ``sk_logreg``, ``sk_hgb``): trained on
  the driver from the training split, capped at ``sample_max_rows`` rows (a
  seeded sample beyond that, recorded in the run), and scored across the
  cluster by an iterator pandas UDF. The estimator is kept in skops format
  (never a pickle); the UDF carries those bytes, and each Python worker loads
  them once and keeps the estimator for later tasks.

A ``grid`` (parameter name → list of values) turns on model selection: k-fold
cross-validation on the training split (MLlib ``CrossValidator`` or
scikit-learn ``GridSearchCV``), scored by macro-F1; the best setting is
refitted on the whole split and the fold scores are kept in the head's
:attr:`ClassifierHead.info`. :class:`Classifier` is the matching ``Estimator``,
so a head also trains inside a pyspark.ml ``Pipeline``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
from pyspark import keyword_only
from pyspark.ml import Estimator, Model
from pyspark.ml.functions import array_to_vector, vector_to_array
from pyspark.ml.linalg import VectorUDT
from pyspark.ml.param.shared import (
    HasFeaturesCol,
    HasLabelCol,
    HasPredictionCol,
    HasProbabilityCol,
    HasSeed,
    Param,
    Params,
    TypeConverters,
)
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DataType, DoubleType, NumericType, StringType, StructField, StructType

from dmine_spark.config import CLASSIFIERS
from dmine_spark.config import Estimator as EstimatorSpec
from dmine_spark.config.estimators import check_params
from dmine_spark.io.files import loaded_once, read_bytes, write_bytes
from dmine_spark.io.persist import Persisted, class_path, load_class
from dmine_spark.io.schema import ColumnSpec, SchemaChecked
from dmine_spark.mine.metrics import cv_folds_for, training_classes_error

__all__ = [
    "MLLIB_CLASSIFIERS",
    "SKLEARN_CLASSIFIERS",
    "as_vector",
    "vector_column",
    "ClassifierHead",
    "Classifier",
    "fit_named_classifier",
    "sk_scores",
]

log = logging.getLogger(__name__)

MLLIB_CLASSIFIERS = tuple(n for n, e in CLASSIFIERS.items() if e.family == "mllib")
SKLEARN_CLASSIFIERS = tuple(n for n, e in CLASSIFIERS.items() if e.family == "sklearn")

# the fitted MLlib model's own columns, out of the way of the caller's
_X, _Y, _PRED, _PROB, _RAW = "_dmine_x", "_dmine_y", "_dmine_pred_idx", "_dmine_probability", "_dmine_raw"


def as_vector(df: DataFrame, array_col: str = "embedding", out_col: str = "features") -> DataFrame:
    """Add an MLlib vector column from an ``array<float>`` embedding column."""
    return df.withColumn(out_col, array_to_vector(F.col(array_col)))


def vector_column(df: DataFrame, col: str) -> Column:
    """``col`` as an MLlib vector, whether it is one or an ``array<float>``."""
    return array_to_vector(F.col(col)) if isinstance(df.schema[col].dataType, ArrayType) else F.col(col)


def _to_json(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value or {}, sort_keys=True, default=str)


# --------------------------------------------------------------------------- scikit-learn artefacts


def _sk_dumps(estimator: Any) -> bytes:
    import skops.io as sio

    return sio.dumps(estimator)


def _sk_loads(data: bytes) -> Any:
    """Load a skops artefact, trusting scikit-learn's own types and nothing else."""
    import skops.io as sio

    untrusted = sio.get_untrusted_types(data=data)
    foreign = [t for t in untrusted if not t.startswith("sklearn.")]
    if foreign:
        raise ValueError(f"the model artefact holds types outside scikit-learn: {', '.join(foreign)}")
    return sio.loads(data, trusted=untrusted)


def _sk_estimator(digest: str, data: bytes) -> Any:
    """This process's copy of the estimator in ``data``, loaded once per artefact."""
    return loaded_once("sklearn", digest, data, _sk_loads)


def sk_scores(estimator: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class index and its score: ``predict_proba`` if the model has it, else the softmax of margins.

    Parameters
    ----------
    estimator : fitted scikit-learn classifier
    x : ndarray of shape (n, d)

    Returns
    -------
    (ndarray of shape (n,), ndarray of shape (n,))
        The position of the chosen class in ``estimator.classes_`` and its score in [0, 1].
    """
    if hasattr(estimator, "predict_proba"):
        p = estimator.predict_proba(x)
    else:
        d = estimator.decision_function(x)
        if d.ndim == 1:  # binary margins
            d = np.stack([-d, d], axis=1)
        d = d - d.max(axis=1, keepdims=True)
        p = np.exp(d)
        p /= p.sum(axis=1, keepdims=True)
    idx = p.argmax(axis=1)
    return idx, p[np.arange(len(idx)), idx]


# --------------------------------------------------------------------------- the fitted head


class ClassifierHead(Persisted, SchemaChecked, Model, HasFeaturesCol, HasPredictionCol, HasProbabilityCol):
    """A fitted classifier (MLlib or scikit-learn) as a pyspark.ml ``Model``.

    ``transform`` adds ``predictionCol`` (the label, a string) and
    ``probabilityCol`` (its score, a double in [0, 1]) for each row of
    ``featuresCol`` (``array<float>`` or an MLlib vector of the training
    width). A null feature gets a null prediction. Saved with
    ``write().save(path)`` (or inside a ``PipelineModel``): Params and facts in
    ``metadata/``, the MLlib model in ``mllib/`` or the scikit-learn estimator
    as ``model.skops``.
    """

    labels = Param(Params._dummy(), "labels", "the class labels, by class index", TypeConverters.toListString)
    estimator = Param(Params._dummy(), "estimator", "the estimator's name (classify.model)", TypeConverters.toString)

    @keyword_only
    def __init__(
        self,
        *,
        featuresCol: str = "embedding",
        predictionCol: str = "prediction",
        probabilityCol: str = "probability",
        labels: list[str] | None = None,
        estimator: str = "",
    ) -> None:
        super().__init__()
        self._setDefault(
            featuresCol="embedding", predictionCol="prediction", probabilityCol="probability", labels=[], estimator=""
        )
        self._set(**self._input_kwargs)
        self._mllib: Any = None  # the fitted pyspark.ml classification model
        self._artifact: bytes | None = None  # the scikit-learn estimator, skops format
        self._num_features = 0
        self.info: dict[str, Any] = {}

    # -- state ------------------------------------------------------------------------------------------

    @property
    def family(self) -> str:
        """``mllib`` or ``sklearn``."""
        return CLASSIFIERS[self.getOrDefault("estimator")].family

    def sklearn_estimator(self) -> Any:
        """The fitted scikit-learn estimator (scikit-learn heads only)."""
        if self._artifact is None:
            raise ValueError("ClassifierHead: this head is not a scikit-learn model")
        return _sk_estimator(hashlib.sha256(self._artifact).hexdigest(), self._artifact)

    def mllib_model(self) -> Any:
        """The fitted MLlib classification model (MLlib heads only)."""
        if self._mllib is None:
            raise ValueError("ClassifierHead: this head is not an MLlib model")
        return self._mllib

    def _state_metadata(self) -> dict[str, Any]:
        state = {"num_features": self._num_features, "info": self.info}
        if self._mllib is not None:
            state["mllib_class"] = class_path(self._mllib)
        return state

    def _save_state(self, path: str, spark: SparkSession) -> None:
        if self._mllib is not None:
            self._mllib.write().overwrite().save(f"{path}/mllib")
        elif self._artifact is not None:
            write_bytes(spark, f"{path}/model.skops", self._artifact)
        else:
            raise ValueError("ClassifierHead: nothing to save, the head is not fitted")

    def _load_state(self, path: str, state: dict[str, Any], spark: SparkSession) -> None:
        self._num_features = int(state.get("num_features", 0))
        self.info = dict(state.get("info", {}))
        if "mllib_class" in state:
            self._mllib = load_class(state["mllib_class"]).load(f"{path}/mllib")
            if hasattr(self._mllib, "models"):  # OneVsRest: its loader resets rawPredictionCol, its sub-models' is kept
                self._mllib.setRawPredictionCol(self._mllib.models[0].getRawPredictionCol())
        else:
            self._artifact = read_bytes(spark, f"{path}/model.skops")

    def copy(self, extra: dict | None = None) -> ClassifierHead:
        that = super().copy(extra)
        that._mllib, that._artifact, that._num_features, that.info = (
            self._mllib,
            self._artifact,
            self._num_features,
            dict(self.info),
        )
        return that

    # -- scoring ----------------------------------------------------------------------------------------

    def _input_columns(self) -> dict[str, ColumnSpec]:
        return {self.getFeaturesCol(): ((ArrayType, VectorUDT), "an array<float> embedding or an MLlib vector")}

    def _output_columns(self) -> list[tuple[str, DataType]]:
        return [(self.getPredictionCol(), StringType()), (self.getProbabilityCol(), DoubleType())]

    def _transform(self, dataset: DataFrame) -> DataFrame:
        self.transformSchema(dataset.schema)
        if self._mllib is None and self._artifact is None:
            raise ValueError("ClassifierHead: the head is not fitted")
        col = self.getFeaturesCol()
        if self._mllib is not None:
            return self._mllib_transform(dataset, col)
        return self._sklearn_transform(dataset, col)

    def _mllib_transform(self, df: DataFrame, col: str) -> DataFrame:
        labels = self.getOrDefault("labels")
        present = F.col(col).isNotNull()
        # nulls are scored as zeros (MLlib refuses nulls) and their outputs nulled again below
        zeros = array_to_vector(F.array_repeat(F.lit(0.0), self._num_features))
        staged = df.withColumn(_X, F.when(present, vector_column(df, col)).otherwise(zeros))
        scored = self._mllib.transform(staged)
        names = F.array(*[F.lit(lab) for lab in labels])
        pred = names[F.col(_PRED).cast("int")]
        if _PROB in scored.columns:
            prob = F.array_max(vector_to_array(F.col(_PROB)))
        else:  # OneVsRest gives per-class margins only: their softmax, as a score
            raw = vector_to_array(F.col(_RAW))
            top = F.array_max(raw)
            prob = F.lit(1.0) / F.aggregate(raw, F.lit(0.0), lambda acc, x: acc + F.exp(x - top))
        scored = scored.withColumn(self.getPredictionCol(), F.when(present, pred)).withColumn(
            self.getProbabilityCol(), F.when(present, prob.cast("double"))
        )
        return scored.drop(*[c for c in (_X, _PRED, _PROB, _RAW) if c in scored.columns])

    def _sklearn_transform(self, df: DataFrame, col: str) -> DataFrame:
        data = self._artifact
        digest = hashlib.sha256(data).hexdigest()
        labels = np.asarray(self.getOrDefault("labels"), dtype=object)
        out_schema = StructType([StructField("prediction", StringType()), StructField("probability", DoubleType())])

        @F.pandas_udf(out_schema)
        def score(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
            est = _sk_estimator(digest, data)  # once per Python worker, kept for later tasks
            classes = np.asarray(est.classes_).astype(int)
            for s in batches:
                pred = np.full(len(s), None, dtype=object)
                prob = np.full(len(s), np.nan)
                present = s.notna().to_numpy()
                if present.any():
                    x = np.stack(s[present].to_numpy()).astype(np.float32, copy=False)
                    idx, p = sk_scores(est, x)
                    pred[present] = labels[classes[idx]]
                    prob[present] = p
                yield pd.DataFrame({"prediction": pred, "probability": pd.array(prob, dtype="Float64")})

        tmp = "_dmine_score"
        arr = vector_to_array(F.col(col), "float32") if isinstance(df.schema[col].dataType, VectorUDT) else F.col(col)
        return (
            df.withColumn(tmp, score(arr))
            .withColumn(self.getPredictionCol(), F.col(f"{tmp}.prediction"))
            .withColumn(self.getProbabilityCol(), F.col(f"{tmp}.probability"))
            .drop(tmp)
        )


# --------------------------------------------------------------------------- fitting


def _mllib_estimator(spec: EstimatorSpec, params: dict[str, Any], n_features: int, n_classes: int, seed: int) -> Any:
    cls = spec.load_class()
    p = {**spec.defaults, **params}
    if "seed" in dir(cls):
        p.setdefault("seed", seed)
    if spec.name == "mlp":
        hidden = [int(h) for h in p.pop("hidden", [256])]
        p["layers"] = [n_features, *hidden, n_classes]
    cols = {"featuresCol": _X, "labelCol": _Y, "predictionCol": _PRED}
    wrapper = spec.load_wrapper()
    if wrapper is not None:  # OneVsRest reads its sub-models' margins from its own rawPredictionCol
        inner = cls(**p)
        inner._set(rawPredictionCol=_RAW)
        return wrapper(classifier=inner, rawPredictionCol=_RAW, **cols)
    return cls(probabilityCol=_PROB, rawPredictionCol=_RAW, **cols, **p)


def _sklearn_estimator(spec: EstimatorSpec, params: dict[str, Any], seed: int) -> Any:
    import inspect

    cls = spec.load_class()
    p = {**spec.defaults, **params}
    if "random_state" in inspect.signature(cls).parameters:
        p.setdefault("random_state", seed)
    return cls(**p)


def _param_grid(estimator: Any, grid: dict[str, list[Any]]) -> list[Any]:
    from pyspark.ml.tuning import ParamGridBuilder

    target = estimator.getClassifier() if hasattr(estimator, "getClassifier") else estimator
    b = ParamGridBuilder()
    for key, values in grid.items():
        b = b.addGrid(target.getParam(key), list(values))
    maps = b.build()
    if target is not estimator:  # OneVsRest: the grid sets the inner classifier's params on copies
        return [{estimator.classifier: target.copy(m)} for m in maps]
    return maps


def _grid_values(grid: dict[str, list[Any]]) -> list[tuple[Any, ...]]:
    # ParamGridBuilder enumerates the last key fastest, like itertools.product over the keys in order
    import itertools

    return list(itertools.product(*grid.values()))


def fit_named_classifier(
    train: DataFrame,
    name: str,
    *,
    params: dict[str, Any] | None = None,
    grid: dict[str, list[Any]] | None = None,
    folds: int = 3,
    sample_max_rows: int = 200_000,
    seed: int = 42,
    label_col: str = "label",
    features_col: str = "features",
    where: str = "classify",
    split: str = "train",
) -> ClassifierHead:
    """Fit classifier ``name`` (see :data:`dmine_spark.config.CLASSIFIERS`) on ``train``.

    Parameters
    ----------
    train : DataFrame
        Rows with ``features_col`` (``array<float>`` or vector, all of one
        width) and ``label_col``; rows without a label are left out.
    name : str
        ``logreg``, ``mlp``, ``gbt_ovr``, ``sk_linear_svc``, ``sk_logreg`` or ``sk_hgb``.
    params : dict, optional
        The estimator's own parameters, over dmine_spark's defaults.
    grid : dict, optional
        Values to try per parameter; the setting with the best mean macro-F1
        over ``folds`` cross-validation folds is refitted on all of ``train``.
    folds : int
        Cross-validation folds of ``grid``; reduced (with a note in
        ``info["notes"]``) when a class has fewer rows, see
        :func:`~dmine_spark.mine.metrics.cv_folds_for`.
    sample_max_rows : int
        scikit-learn trains on the driver from at most this many rows.
    where, split : str
        What trains and on which split, for the messages (``classify (task t)``, ``train``).

    Returns
    -------
    ClassifierHead
        Reading ``features_col``; ``info`` holds the parameters, the CV scores,
        the training rows, whether they were sampled, the rows per class and
        ``notes``.

    Raises
    ------
    ValueError
        An unknown classifier or parameter, or a training split with fewer
        than two classes (the same one line for every backend).
    """
    params = dict(params or {})
    grid = dict(grid or {})
    if name not in CLASSIFIERS:
        raise ValueError(f"classify.model: unknown classifier {name!r}; choose from {', '.join(CLASSIFIERS)}")
    spec = CLASSIFIERS[name]
    check_params(spec, params)
    check_params(spec, grid)
    if not isinstance(train.schema[label_col].dataType, (StringType, NumericType)):
        raise ValueError(f"classify: label column {label_col!r} must be a string or a number")
    rows = train.select(F.col(label_col).cast("string").alias("label"), F.col(features_col).alias("x")).where(
        F.col("label").isNotNull()
    )
    counts = {str(r["label"]): int(r["count"]) for r in rows.groupBy("label").count().collect()}
    error = training_classes_error(where, split, counts)
    if error:
        raise ValueError(error)
    notes = []
    if grid:
        folds, note = cv_folds_for(counts, folds)
        if note:
            notes.append(note)
            log.warning("%s: %s", where, note)
    head = ClassifierHead(featuresCol=features_col, estimator=name)
    if spec.family == "mllib":
        _fit_mllib(head, rows, spec, params, grid, folds, seed)
    else:
        _fit_sklearn(head, rows, spec, params, grid, folds, sample_max_rows, seed)
    head.info["class_rows"] = counts
    head.info["notes"] = notes
    return head


def _fit_mllib(
    head: ClassifierHead,
    rows: DataFrame,
    spec: EstimatorSpec,
    params: dict[str, Any],
    grid: dict[str, list[Any]],
    folds: int,
    seed: int,
) -> None:
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml.feature import StringIndexer
    from pyspark.ml.tuning import CrossValidator

    rows = rows.select("label", vector_column(rows, "x").alias(_X))
    indexer = StringIndexer(inputCol="label", outputCol=_Y, handleInvalid="error").fit(rows)
    labels = list(indexer.labels)
    first = rows.select(F.size(vector_to_array(F.col(_X))).alias("n")).first()
    if first is None:
        raise ValueError("classify: the training split is empty")
    n_features = int(first["n"])
    est = _mllib_estimator(spec, params, n_features, len(labels), seed)
    indexed = indexer.transform(rows).persist()
    try:
        selection: list[dict[str, Any]] = []
        if grid:
            ev = MulticlassClassificationEvaluator(labelCol=_Y, predictionCol=_PRED, metricName="f1")
            cv = CrossValidator(
                estimator=est, estimatorParamMaps=_param_grid(est, grid), evaluator=ev, numFolds=folds, seed=seed
            )
            cvm = cv.fit(indexed)
            combos = [dict(zip(grid.keys(), vals, strict=True)) for vals in _grid_values(grid)]
            selection = [{"params": c, "cv_f1": float(m)} for c, m in zip(combos, cvm.avgMetrics, strict=True)]
            params = {**params, **combos[int(np.argmax(cvm.avgMetrics))]}
            fitted = cvm.bestModel
        else:
            fitted = est.fit(indexed)
        train_rows = indexed.count()
    finally:
        indexed.unpersist()
    head._set(labels=labels)
    head._mllib, head._num_features = fitted, n_features
    head.info = {"params": params, "selection": selection, "train_rows": train_rows, "sampled": False}


def _fit_sklearn(
    head: ClassifierHead,
    rows: DataFrame,
    spec: EstimatorSpec,
    params: dict[str, Any],
    grid: dict[str, list[Any]],
    folds: int,
    sample_max_rows: int,
    seed: int,
) -> None:
    n = rows.count()
    sampled = n > sample_max_rows
    if sampled:
        rows = rows.sample(fraction=min(1.0, 1.05 * sample_max_rows / n), seed=seed).limit(sample_max_rows)
    x_col = vector_to_array(F.col("x"), "float32") if isinstance(rows.schema["x"].dataType, VectorUDT) else F.col("x")
    pdf = rows.select("label", x_col.alias("x")).toPandas()
    if pdf.empty:
        raise ValueError("classify: the training split is empty")
    x = np.stack(pdf["x"].to_numpy()).astype(np.float32, copy=False)
    labels = sorted(pdf["label"].unique().tolist())
    pos = {lab: i for i, lab in enumerate(labels)}
    y = pdf["label"].map(pos).to_numpy()
    est = _sklearn_estimator(spec, params, seed)
    selection: list[dict[str, Any]] = []
    if grid:
        from sklearn.model_selection import GridSearchCV, StratifiedKFold

        search = GridSearchCV(
            est, grid, scoring="f1_macro", cv=StratifiedKFold(folds, shuffle=True, random_state=seed), n_jobs=1
        )
        with warnings.catch_warnings():
            # a class smaller than the folds is reported once, in fit_named_classifier's note
            warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
            search.fit(x, y)
        selection = [
            {"params": p, "cv_f1": float(s)}
            for p, s in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"], strict=True)
        ]
        est = search.best_estimator_
        params = {**params, **search.best_params_}
    else:
        est.fit(x, y)
    head._set(labels=labels)
    head._artifact, head._num_features = _sk_dumps(est), x.shape[1]
    head.info = {"params": params, "selection": selection, "train_rows": len(y), "sampled": sampled}


class Classifier(Estimator, HasFeaturesCol, HasLabelCol, HasPredictionCol, HasProbabilityCol, HasSeed):
    """pyspark.ml ``Estimator`` of a :class:`ClassifierHead`: ``fit`` runs :func:`fit_named_classifier`.

    ``params`` and ``grid`` take dicts (kept as JSON strings, so the stage
    saves and loads like any other).
    """

    model = Param(Params._dummy(), "model", "classifier name (classify.model)", TypeConverters.toString)
    params = Param(Params._dummy(), "params", "estimator parameters (a dict, as JSON)", _to_json)
    grid = Param(Params._dummy(), "grid", "values to try per parameter (a dict, as JSON)", _to_json)
    folds = Param(Params._dummy(), "folds", "cross-validation folds", TypeConverters.toInt)
    sampleMaxRows = Param(
        Params._dummy(), "sampleMaxRows", "scikit-learn trains on at most this many rows", TypeConverters.toInt
    )

    @keyword_only
    def __init__(
        self,
        *,
        featuresCol: str = "embedding",
        labelCol: str = "label",
        predictionCol: str = "prediction",
        probabilityCol: str = "probability",
        model: str = "sk_logreg",
        params: dict[str, Any] | str | None = None,
        grid: dict[str, list[Any]] | str | None = None,
        folds: int = 3,
        sampleMaxRows: int = 200_000,
        seed: int = 42,
    ) -> None:
        super().__init__()
        self._setDefault(
            featuresCol="embedding",
            labelCol="label",
            predictionCol="prediction",
            probabilityCol="probability",
            model="sk_logreg",
            params="{}",
            grid="{}",
            folds=3,
            sampleMaxRows=200_000,
            seed=42,
        )
        kwargs = {k: v for k, v in self._input_kwargs.items() if v is not None}
        if kwargs.get("model") not in (None, *CLASSIFIERS):
            raise ValueError(f"Classifier: unknown model {kwargs['model']!r}; choose from {', '.join(CLASSIFIERS)}")
        self._set(**kwargs)

    def _fit(self, dataset: DataFrame) -> ClassifierHead:
        head = fit_named_classifier(
            dataset,
            self.getOrDefault("model"),
            params=json.loads(self.getOrDefault("params")),
            grid=json.loads(self.getOrDefault("grid")),
            folds=self.getOrDefault("folds"),
            sample_max_rows=self.getOrDefault("sampleMaxRows"),
            seed=self.getOrDefault("seed"),
            label_col=self.getLabelCol(),
            features_col=self.getFeaturesCol(),
        )
        return head._set(predictionCol=self.getPredictionCol(), probabilityCol=self.getProbabilityCol())
