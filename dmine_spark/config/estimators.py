"""The estimators a config can name, and the parameters each one takes.

``classify.model``, ``regress.model`` and their ``params`` / ``grid`` keys are
checked here when the config loads, against the estimator's own parameter
names (MLlib ``Param`` attributes, scikit-learn ``__init__`` arguments), so a
typo is a one-line error naming the key instead of a ``TypeError`` from the
estimator once Spark has started. The mining stages build their estimators
from the same table.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Estimator", "CLASSIFIERS", "REGRESSORS", "estimator_params", "check_params"]


@dataclass(frozen=True)
class Estimator:
    """A named estimator: its library, its class and the defaults dmine_spark gives it.

    Parameters
    ----------
    name : str
        The name a config uses (``classify.model: sk_logreg``).
    family : {"mllib", "sklearn"}
        Who trains it: Spark MLlib (distributed) or scikit-learn (on the driver).
    cls : str
        Import path of the estimator class whose parameters ``params`` set.
    defaults : dict
        Parameters dmine_spark sets unless ``params`` says otherwise.
    extra : tuple of str
        Keys dmine_spark itself reads (``mlp``'s ``hidden`` layer sizes).
    wrapper : str, optional
        The class the estimator is wrapped in (``OneVsRest`` for ``gbt_ovr``).
    """

    name: str
    family: str
    cls: str
    defaults: dict[str, Any] = field(default_factory=dict)
    extra: tuple[str, ...] = ()
    wrapper: str | None = None

    @property
    def class_name(self) -> str:
        return self.cls.rsplit(".", 1)[1]

    def load_class(self) -> type:
        """The estimator class (imported on first use: pyspark and scikit-learn are heavy)."""
        module, _, name = self.cls.rpartition(".")
        return getattr(importlib.import_module(module), name)

    def load_wrapper(self) -> type | None:
        """The wrapper class (``OneVsRest``), if any."""
        if self.wrapper is None:
            return None
        module, _, name = self.wrapper.rpartition(".")
        return getattr(importlib.import_module(module), name)


_MLC = "pyspark.ml.classification"
CLASSIFIERS: dict[str, Estimator] = {
    "logreg": Estimator(
        "logreg", "mllib", f"{_MLC}.LogisticRegression", {"maxIter": 200, "regParam": 0.001, "family": "multinomial"}
    ),
    "mlp": Estimator(
        "mlp", "mllib", f"{_MLC}.MultilayerPerceptronClassifier", {"maxIter": 200, "blockSize": 128}, ("hidden",)
    ),
    "gbt_ovr": Estimator(
        "gbt_ovr", "mllib", f"{_MLC}.GBTClassifier", {"maxIter": 20, "maxDepth": 4}, wrapper=f"{_MLC}.OneVsRest"
    ),
    "sk_linear_svc": Estimator("sk_linear_svc", "sklearn", "sklearn.svm.LinearSVC", {"C": 1.0, "max_iter": 5000}),
    "sk_logreg": Estimator(
        "sk_logreg", "sklearn", "sklearn.linear_model.LogisticRegression", {"C": 10.0, "max_iter": 2000}
    ),
    "sk_hgb": Estimator("sk_hgb", "sklearn", "sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 200}),
}
"""Classifiers by the name ``classify.model`` takes."""

REGRESSORS: dict[str, Estimator] = {
    # regParam acts on standardised features; embedding dimensions have a spread of about 0.05,
    # so 0.5 is a mild ridge (about alpha = 0.001 n on the raw vectors)
    "linear": Estimator(
        "linear",
        "mllib",
        "pyspark.ml.regression.LinearRegression",
        {"maxIter": 100, "regParam": 0.5, "elasticNetParam": 0.0},
    ),
    "gbt": Estimator(
        "gbt", "mllib", "pyspark.ml.regression.GBTRegressor", {"maxIter": 60, "maxDepth": 5, "stepSize": 0.1}
    ),
}
"""Regressors by the name ``regress.model`` takes."""

# MLlib parameters that name columns or the network's shape: dmine_spark sets them itself
_RESERVED = frozenset(
    {
        "featuresCol",
        "labelCol",
        "predictionCol",
        "probabilityCol",
        "rawPredictionCol",
        "leafCol",
        "weightCol",
        "validationIndicatorCol",
        "layers",
    }
)


def estimator_params(est: Estimator) -> frozenset[str]:
    """The parameter names ``params`` may set for ``est`` (its own ones, less those dmine_spark sets).

    MLlib's are the class's ``Param`` attributes (read without a SparkContext);
    scikit-learn's are its ``__init__`` arguments.
    """
    return _param_names(est.cls, est.family) | frozenset(est.extra)


@functools.cache
def _param_names(cls_path: str, family: str) -> frozenset[str]:
    module, _, name = cls_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    if family == "mllib":
        from pyspark.ml.param import Param

        return frozenset({n for n in dir(cls) if isinstance(getattr(cls, n, None), Param)} - _RESERVED)
    return frozenset(p for p in inspect.signature(cls).parameters if p not in ("self", "args", "kwargs"))


def check_params(est: Estimator, keys: Iterable[str]) -> None:
    """Refuse a ``params`` or ``grid`` key that ``est`` does not take.

    Raises
    ------
    ValueError
        ``'maxIterr' is not a parameter of LogisticRegression (it takes: ...)``, or a column
        parameter that dmine_spark sets itself.
    """
    known = estimator_params(est)
    for key in keys:
        if key in _RESERVED and est.family == "mllib":
            raise ValueError(f"{key!r} is set by dmine_spark, not by the config")
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ValueError(
                f"{key!r} is not a parameter of {est.class_name}{hint} (it takes: {', '.join(sorted(known))})"
            )
