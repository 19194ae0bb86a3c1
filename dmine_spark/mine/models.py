"""Classifiers by name, fitted on a feature column, saved as numbered versions, scored in Spark.

Two families share one interface (:class:`ClassifierModel`):

* **MLlib** (``logreg``, ``mlp``, ``gbt_ovr``): a ``StringIndexer`` + estimator
  ``PipelineModel``, trained and scored by Spark; ``gbt_ovr`` is gradient-boosted
  trees through ``OneVsRest``.
* **scikit-learn** (``sk_linear_svc``, ``sk_logreg``, ``sk_hgb``): trained on the
  driver from the training split, capped at ``sample_max_rows`` rows (a seeded,
  stratified-by-chance sample beyond that, recorded in the run), and scored
  across the cluster by an iterator pandas UDF. The UDF carries only the path of
  the saved artefact; each Python worker loads it once (keyed by path and
  modification time) and keeps it, so no model object travels in a closure.

A ``grid`` (parameter name → list of values) turns on model selection: k-fold
cross-validation on the training split (MLlib ``CrossValidator`` or scikit-learn
``GridSearchCV``), scored by macro-F1, and the best setting is refitted on the
whole split. The fold scores are kept in :attr:`ClassifierModel.selection`.

:class:`ModelStore` keeps saved models as ``<root>/<name>/v<N>/`` with a
``meta.json``; ``name@vN`` is the version string written beside every prediction.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.ml import PipelineModel
from pyspark.ml.feature import IndexToString, StringIndexer
from pyspark.ml.functions import vector_to_array
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType, StructField, StructType

__all__ = [
    "MLLIB_CLASSIFIERS",
    "SKLEARN_CLASSIFIERS",
    "CLASSIFIERS",
    "ClassifierModel",
    "fit_named_classifier",
    "load_classifier",
    "ModelStore",
]

MLLIB_CLASSIFIERS = ("logreg", "mlp", "gbt_ovr")
SKLEARN_CLASSIFIERS = ("sk_linear_svc", "sk_logreg", "sk_hgb")
CLASSIFIERS = MLLIB_CLASSIFIERS + SKLEARN_CLASSIFIERS


def _mllib_estimator(name: str, params: dict[str, Any], n_features: int, n_classes: int, seed: int) -> Any:
    from pyspark.ml.classification import (
        GBTClassifier,
        LogisticRegression,
        MultilayerPerceptronClassifier,
        OneVsRest,
    )

    common = {"featuresCol": "features", "labelCol": "_label_idx", "predictionCol": "_pred_idx"}
    if name == "logreg":
        p = {"maxIter": 200, "regParam": 0.001, "family": "multinomial", **params}
        return LogisticRegression(probabilityCol="_probability", rawPredictionCol="_raw", **common, **p)
    if name == "mlp":
        p = {"maxIter": 200, "seed": seed, "blockSize": 128, **params}
        hidden = [int(h) for h in p.pop("hidden", [256])]
        return MultilayerPerceptronClassifier(
            layers=[n_features, *hidden, n_classes],
            probabilityCol="_probability",
            rawPredictionCol="_raw",
            **common,
            **p,
        )
    if name == "gbt_ovr":
        p = {"maxIter": 20, "maxDepth": 4, "seed": seed, **params}
        gbt = GBTClassifier(**p)
        return OneVsRest(classifier=gbt, rawPredictionCol="_raw", **common)
    raise ValueError(f"classify.model: {name!r} is not an MLlib classifier ({', '.join(MLLIB_CLASSIFIERS)})")


def _sklearn_estimator(name: str, params: dict[str, Any], seed: int) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    if name == "sk_linear_svc":
        return LinearSVC(**{"C": 1.0, "max_iter": 5000, "random_state": seed, **params})
    if name == "sk_logreg":
        return LogisticRegression(**{"C": 10.0, "max_iter": 2000, **params})
    if name == "sk_hgb":
        return HistGradientBoostingClassifier(**{"max_iter": 200, "random_state": seed, **params})
    raise ValueError(f"classify.model: {name!r} is not a scikit-learn classifier ({', '.join(SKLEARN_CLASSIFIERS)})")


def _param_grid(estimator: Any, grid: dict[str, list[Any]]) -> list[Any]:
    from pyspark.ml.tuning import ParamGridBuilder

    target = estimator.getClassifier() if hasattr(estimator, "getClassifier") else estimator
    b = ParamGridBuilder()
    for key, values in grid.items():
        if not target.hasParam(key):
            raise ValueError(f"classify.grid: {key!r} is not a parameter of {type(target).__name__}")
        b = b.addGrid(target.getParam(key), list(values))
    maps = b.build()
    if target is not estimator:  # OneVsRest: the grid sets the inner classifier's params on copies
        return [{estimator.classifier: target.copy(m)} for m in maps]
    return maps


def _feature_size(df: DataFrame, features_col: str) -> int:
    row = df.select(F.size(vector_to_array(F.col(features_col))).alias("n")).first()
    if row is None:
        raise ValueError("classify: the training split is empty")
    return int(row["n"])


@dataclass
class ClassifierModel:
    """A fitted classifier of either family: ``transform`` adds ``prediction`` and ``probability``."""

    name: str
    labels: list[str]
    pipeline: PipelineModel | None = None  # MLlib
    estimator: Any = None  # scikit-learn
    path: str | None = None  # where the scikit-learn artefact is saved (what the scoring UDF loads)
    params: dict[str, Any] = field(default_factory=dict)
    selection: list[dict[str, Any]] = field(default_factory=list)
    train_rows: int = 0
    sampled: bool = False

    @property
    def family(self) -> str:
        return "mllib" if self.pipeline is not None else "sklearn"

    def transform(self, df: DataFrame, *, features_col: str = "features") -> DataFrame:
        """Score ``df``: adds ``prediction`` (a label) and ``probability`` (the score of that label)."""
        if self.pipeline is not None:
            return _mllib_predict(self.pipeline, self.labels, df)
        if self.path is None:
            raise ValueError("a scikit-learn model must be saved (ModelStore.save) before Spark can score with it")
        return _sklearn_predict(df, self.path, features_col)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "name": self.name,
            "family": self.family,
            "labels": self.labels,
            "params": self.params,
            "selection": self.selection,
            "train_rows": self.train_rows,
            "sampled": self.sampled,
        }
        if self.pipeline is not None:
            self.pipeline.write().overwrite().save(str(path / "mllib"))
        else:
            import joblib

            tmp = path / f".model.{os.getpid()}.joblib"
            joblib.dump({"estimator": self.estimator, "labels": self.labels}, tmp)
            os.replace(tmp, path / "model.joblib")
            self.path = str(path / "model.joblib")
        (path / "model.json").write_text(json.dumps(meta, indent=2, default=str))


def load_classifier(path: str | Path) -> ClassifierModel:
    """Load what :meth:`ClassifierModel.save` wrote."""
    path = Path(path)
    meta_file = path / "model.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"no saved classifier in {path} (model.json missing)")
    meta = json.loads(meta_file.read_text())
    common = {
        "name": meta["name"],
        "labels": meta["labels"],
        "params": meta.get("params", {}),
        "selection": meta.get("selection", []),
        "train_rows": meta.get("train_rows", 0),
        "sampled": meta.get("sampled", False),
    }
    if meta["family"] == "mllib":
        return ClassifierModel(pipeline=PipelineModel.load(str(path / "mllib")), **common)
    import joblib

    art = joblib.load(path / "model.joblib")
    return ClassifierModel(estimator=art["estimator"], path=str(path / "model.joblib"), **common)


def _mllib_predict(model: PipelineModel, labels: list[str], df: DataFrame) -> DataFrame:
    decode = IndexToString(inputCol="_pred_idx", outputCol="prediction", labels=labels)
    scored = decode.transform(model.transform(df))
    if "_probability" in scored.columns:
        prob = F.array_max(vector_to_array(F.col("_probability")))
    else:  # OneVsRest gives per-class margins only: their softmax, as a score
        raw_col = "_raw" if "_raw" in scored.columns else "rawPrediction"
        raw = vector_to_array(F.col(raw_col))
        top = F.array_max(raw)
        prob = F.lit(1.0) / F.aggregate(raw, F.lit(0.0), lambda acc, x: acc + F.exp(x - top))
    drop = [c for c in ("_label_idx", "_pred_idx", "_probability", "_raw", "rawPrediction") if c in scored.columns]
    return scored.withColumn("probability", prob.cast("double")).drop(*drop)


_SK_CACHE: dict[tuple[str, float], dict[str, Any]] = {}
_SK_LOCK = threading.Lock()


def _sk_artifact(path: str) -> dict[str, Any]:
    """This worker's copy of the artefact at ``path``, loaded once (reloaded if the file changes)."""
    import joblib

    key = (path, os.path.getmtime(path))
    with _SK_LOCK:
        art = _SK_CACHE.get(key)
        if art is None:
            art = _SK_CACHE[key] = joblib.load(path)
    return art


def sk_scores(estimator: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Predicted class index and its score: ``predict_proba`` if the model has it, else the softmax of margins."""
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


def _sklearn_predict(df: DataFrame, path: str, features_col: str) -> DataFrame:
    out_schema = StructType([StructField("prediction", StringType()), StructField("probability", DoubleType())])

    @F.pandas_udf(out_schema)
    def score(batches: Iterator[pd.Series]) -> Iterator[pd.DataFrame]:
        art = _sk_artifact(path)
        est, labels = art["estimator"], np.asarray(art["labels"], dtype=object)
        classes = list(est.classes_)
        for s in batches:
            if len(s) == 0:
                yield pd.DataFrame({"prediction": pd.Series([], dtype=object), "probability": []})
                continue
            x = np.stack(s.to_numpy()).astype(np.float32, copy=False)
            idx, prob = sk_scores(est, x)
            pred = labels[np.asarray(classes)[idx].astype(int)]
            yield pd.DataFrame({"prediction": pred, "probability": prob.astype(float)})

    col = "_dmine_score"
    return (
        df.withColumn(col, score(vector_to_array(F.col(features_col), "float32")))
        .withColumn("prediction", F.col(f"{col}.prediction"))
        .withColumn("probability", F.col(f"{col}.probability"))
        .drop(col)
    )


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
) -> ClassifierModel:
    """Fit classifier ``name`` (see :data:`CLASSIFIERS`) on ``train``'s ``features_col`` and ``label_col``.

    With ``grid``, the setting with the best mean macro-F1 over ``folds``
    cross-validation folds is refitted on all of ``train``.
    """
    params = dict(params or {})
    grid = dict(grid or {})
    if name not in CLASSIFIERS:
        raise ValueError(f"classify.model: unknown classifier {name!r}; choose from {', '.join(CLASSIFIERS)}")
    train = train.select(F.col(label_col).cast("string").alias("label"), F.col(features_col).alias("features")).where(
        F.col("label").isNotNull()
    )
    if name in MLLIB_CLASSIFIERS:
        return _fit_mllib(train, name, params, grid, folds, seed)
    return _fit_sklearn(train, name, params, grid, folds, sample_max_rows, seed)


def _fit_mllib(
    train: DataFrame, name: str, params: dict[str, Any], grid: dict[str, list[Any]], folds: int, seed: int
) -> ClassifierModel:
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml.tuning import CrossValidator

    indexer = StringIndexer(inputCol="label", outputCol="_label_idx", handleInvalid="error").fit(train)
    labels = list(indexer.labels)
    est = _mllib_estimator(name, params, _feature_size(train, "features"), len(labels), seed)
    indexed = indexer.transform(train)
    selection: list[dict[str, Any]] = []
    if grid:
        maps = _param_grid(est, grid)
        ev = MulticlassClassificationEvaluator(labelCol="_label_idx", predictionCol="_pred_idx", metricName="f1")
        cv = CrossValidator(estimator=est, estimatorParamMaps=maps, evaluator=ev, numFolds=folds, seed=seed)
        cvm = cv.fit(indexed)
        combos = [dict(zip(grid.keys(), vals, strict=True)) for vals in _grid_values(grid)]
        selection = [{"params": c, "cv_f1": float(m)} for c, m in zip(combos, cvm.avgMetrics, strict=True)]
        best = int(np.argmax(cvm.avgMetrics))
        params = {**params, **combos[best]}
        fitted = cvm.bestModel
    else:
        fitted = est.fit(indexed)
    pipeline = PipelineModel(stages=[indexer, fitted])
    return ClassifierModel(
        name=name, labels=labels, pipeline=pipeline, params=params, selection=selection, train_rows=indexed.count()
    )


def _grid_values(grid: dict[str, list[Any]]) -> list[tuple[Any, ...]]:
    # ParamGridBuilder enumerates the last key fastest, like itertools.product over the keys in order
    import itertools

    return list(itertools.product(*grid.values()))


def _fit_sklearn(
    train: DataFrame,
    name: str,
    params: dict[str, Any],
    grid: dict[str, list[Any]],
    folds: int,
    sample_max_rows: int,
    seed: int,
) -> ClassifierModel:
    n = train.count()
    sampled = n > sample_max_rows
    if sampled:
        train = train.sample(fraction=min(1.0, 1.05 * sample_max_rows / n), seed=seed).limit(sample_max_rows)
    pdf = train.select("label", vector_to_array(F.col("features"), "float32").alias("x")).toPandas()
    if pdf.empty:
        raise ValueError("classify: the training split is empty")
    x = np.stack(pdf["x"].to_numpy()).astype(np.float32, copy=False)
    labels = sorted(pdf["label"].unique().tolist())
    pos = {lab: i for i, lab in enumerate(labels)}
    y = pdf["label"].map(pos).to_numpy()
    est = _sklearn_estimator(name, params, seed)
    selection: list[dict[str, Any]] = []
    if grid:
        from sklearn.model_selection import GridSearchCV, StratifiedKFold

        bad = [k for k in grid if k not in est.get_params()]
        if bad:
            raise ValueError(f"classify.grid: {bad[0]!r} is not a parameter of {type(est).__name__}")
        search = GridSearchCV(
            est, grid, scoring="f1_macro", cv=StratifiedKFold(folds, shuffle=True, random_state=seed), n_jobs=1
        )
        search.fit(x, y)
        selection = [
            {"params": p, "cv_f1": float(s)}
            for p, s in zip(search.cv_results_["params"], search.cv_results_["mean_test_score"], strict=True)
        ]
        est = search.best_estimator_
        params = {**params, **search.best_params_}
    else:
        est.fit(x, y)
    return ClassifierModel(
        name=name, labels=labels, estimator=est, params=params, selection=selection, train_rows=len(y), sampled=sampled
    )


class ModelStore:
    """Saved models as numbered versions: ``<root>/<name>/v<N>/`` with ``meta.json``.

    Versions only grow; a save never overwrites an earlier version, so any
    prediction's ``model_version`` (``name@vN``) can be loaded back later.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def versions(self, name: str) -> list[int]:
        d = self.root / name
        if not d.is_dir():
            return []
        return sorted(int(p.name[1:]) for p in d.iterdir() if p.name.startswith("v") and p.name[1:].isdigit())

    def path(self, name: str, version: int | None = None) -> Path:
        """The directory of ``name`` at ``version`` (default: the latest)."""
        vs = self.versions(name)
        if not vs:
            raise FileNotFoundError(f"no saved model named {name!r} under {self.root}")
        v = vs[-1] if version is None else version
        if v not in vs:
            raise FileNotFoundError(f"model {name!r} has no version {v}; saved versions: {vs}")
        return self.root / name / f"v{v}"

    def save(self, name: str, model: ClassifierModel | PipelineModel | str | Path, **meta: Any) -> str:
        """Save ``model`` (a classifier or any fitted MLlib pipeline) as the next version of ``name``.

        Returns ``name@vN``.
        """
        (self.root / name).mkdir(parents=True, exist_ok=True)
        while True:  # claim the next number atomically, so concurrent saves never share one
            v = (self.versions(name) or [0])[-1] + 1
            d = self.root / name / f"v{v}"
            try:
                d.mkdir()
                break
            except FileExistsError:
                continue
        if isinstance(model, (str, Path)):  # a Hugging Face model directory (a fine-tuned classifier)
            import shutil

            shutil.copytree(model, d / "hf")
            kind, family = "hf-sequence-classification", "huggingface"
        elif isinstance(model, PipelineModel):  # any other fitted MLlib pipeline (the regressors)
            model.write().overwrite().save(str(d / "mllib"))
            kind, family = type(model.stages[-1]).__name__, "mllib-pipeline"
        else:
            model.save(d)
            kind, family = model.name, model.family
        info = {
            "name": name,
            "version": v,
            "model": kind,
            "family": family,
            "created_at": datetime.now(timezone.utc).isoformat(),
            "created_unix": time.time(),
            **meta,
        }
        (d / "meta.json").write_text(json.dumps(info, indent=2, default=str))
        return f"{name}@v{v}"

    def _dir(self, ref: str) -> tuple[str, Path]:
        name, _, ver = ref.partition("@")
        version = None if ver in ("", "latest") else int(ver.lstrip("v"))
        return name, self.path(name, version)

    def load(self, ref: str) -> tuple[Any, str]:
        """Load ``name`` or ``name@vN`` (``name@latest`` too); returns the model and its ``name@vN``."""
        name, d = self._dir(ref)
        if (d / "hf").is_dir():
            return d / "hf", f"{name}@{d.name}"
        if not (d / "model.json").is_file() and (d / "mllib").is_dir():
            return PipelineModel.load(str(d / "mllib")), f"{name}@{d.name}"
        return load_classifier(d), f"{name}@{d.name}"

    def meta(self, ref: str) -> dict[str, Any]:
        """The ``meta.json`` of ``ref`` (``name``, ``name@vN`` or ``name@latest``)."""
        return json.loads((self._dir(ref)[1] / "meta.json").read_text())

    def update_meta(self, ref: str, **values: Any) -> None:
        """Add ``values`` to the ``meta.json`` of ``ref`` (e.g. the metrics measured after saving)."""
        path = self._dir(ref)[1] / "meta.json"
        meta = json.loads(path.read_text())
        meta.update(values)
        path.write_text(json.dumps(meta, indent=2, default=str))
