"""MLflow tracking of dmine runs: params, metrics, the report and the models, loadable back.

By default the tracking store is a local SQLite file, ``<work_dir>/mlflow.db``,
with artefacts under ``<work_dir>/mlartifacts``; no server is needed. Set
``tracking.uri`` (or ``MLFLOW_TRACKING_URI``) to log to any other store, such
as a tracking server or Databricks.

What a dmine run logs to its MLflow run:

* params: the settings of the stages that ran (flattened ``section.key``);
* metrics: the run's measures (``classify.accuracy``, ``embed.rows_per_s``...)
  and every row it wrote to the ``metrics`` table;
* tags: the dmine run id, pipeline, task and model versions;
* models: the classifier (``mlflow.sklearn`` or ``mlflow.spark``) and the
  regressor (``mlflow.spark``), so ``mlflow.<flavor>.load_model`` gives them back;
* artefacts: the HTML report.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dmine_spark.config import PipelineConfig

__all__ = ["tracking_uri", "warm_up", "pinned_requirements", "Tracker"]

log = logging.getLogger(__name__)


def tracking_uri(cfg: PipelineConfig) -> str:
    """``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else a SQLite file in the work directory."""
    if cfg.tracking.uri:
        return cfg.tracking.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{cfg.paths.mlflow_db}"


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = str(v)[:500]
    return out


_METRIC_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


def _metric_key(name: str) -> str:
    return _METRIC_KEY.sub("_", name)[:250]


@contextmanager
def _connect_import_cannot_exit() -> Iterator[None]:
    """Keep pyspark's Spark Connect package from ending the process while MLflow logs a Spark model.

    ``mlflow.spark.log_model`` imports ``pyspark.ml.connect``. That package takes a process whose
    ``__main__`` has neither a file nor a spec (``python -c``, a pytest-xdist worker, an application
    that embeds Python) for pyspark's own doctest runner, and calls ``sys.exit(0)`` when grpcio is
    missing: the run would stop, with status 0, halfway through logging a model. Inside this block
    such a process counts as interactive (``sys.ps1``), so the import fails with the ``ImportError``
    that MLflow handles. Elsewhere nothing changes.
    """
    main = sys.modules.get("__main__")
    uninitialised = (
        main is not None
        and getattr(main, "__spec__", None) is None
        and not hasattr(main, "__file__")
        and not hasattr(sys, "ps1")
    )
    if not uninitialised:
        yield
        return
    sys.ps1 = ""
    try:
        yield
    finally:
        del sys.ps1


def pinned_requirements(*distributions: str) -> list[str]:
    """``name==version`` for each installed distribution (those not installed are left out).

    A logged model names what it needs to load. Given this list, MLflow does not
    infer it, which means loading the model again in a new Python process (and,
    for an MLlib model, a new JVM): seconds to tens of seconds per model.
    """
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in distributions:
        try:
            out.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return out


_warming: dict[str, threading.Thread] = {}


def warm_up(cfg: PipelineConfig) -> None:
    """Start opening ``cfg``'s tracking store in a background thread (when ``tracking.enabled``).

    Opening a SQLite store imports MLflow and checks its schema, seconds of Python
    work that a command can do while its Spark session starts (the driver JVM is
    another process). :class:`Tracker` waits for the thread, then finds the store
    in MLflow's own cache. A failure here is left for :class:`Tracker` to raise.
    """
    if not cfg.tracking.enabled:
        return
    uri = tracking_uri(cfg)
    if uri in _warming:
        return
    db = cfg.paths.mlflow_db if uri == f"sqlite:///{cfg.paths.mlflow_db}" else None

    def open_store() -> None:
        try:
            if db is not None:
                Path(db).parent.mkdir(parents=True, exist_ok=True)
            from mlflow.tracking import MlflowClient

            logging.getLogger("mlflow").setLevel(logging.WARNING)
            logging.getLogger("alembic").setLevel(logging.WARNING)
            MlflowClient(uri)
        except Exception as exc:  # Tracker opens the store again and says what is wrong
            log.debug("opening the tracking store %s ahead failed: %s", uri, exc)

    thread = threading.Thread(target=open_store, name="dmine-tracking-warm-up", daemon=True)
    _warming[uri] = thread
    thread.start()


class Tracker:
    """One MLflow run for one dmine run: open it, log to it, close it; logs after closing go by run id."""

    def __init__(self, cfg: PipelineConfig, dmine_run_id: str) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self.cfg = cfg
        self.uri = tracking_uri(cfg)
        warming = _warming.pop(self.uri, None)
        if warming is not None:
            warming.join()
        mlflow.set_tracking_uri(self.uri)
        self.client = MlflowClient(self.uri)
        name = cfg.tracking.experiment or cfg.name
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            location = None
            if self.uri.startswith("sqlite:///"):
                location = cfg.paths.mlartifacts.as_uri()
            exp_id = self.client.create_experiment(name, artifact_location=location)
        else:
            exp_id = exp.experiment_id
        self.experiment_id = exp_id
        run = self.client.create_run(
            exp_id,
            run_name=dmine_run_id,
            tags={"dmine.run_id": dmine_run_id, "dmine.pipeline": cfg.name, "dmine.task": cfg.task},
        )
        self.run_id = run.info.run_id

    def log_config(self, stages: list[str]) -> None:
        dump = self.cfg.model_dump(mode="json", by_alias=True)
        params = {"pipeline": self.cfg.name, "stages": ",".join(stages)}
        for section in ("clean", "embed", "classify", "regress", "cluster"):
            if section in stages or (section == "clean" and "clean" in stages):
                params.update(_flatten(dump.get(section) or {}, f"{section}."))
        for k, v in params.items():
            self.client.log_param(self.run_id, k, v)

    def log_metrics(self, values: dict[str, float]) -> None:
        import math

        for k, v in values.items():
            if v is not None and math.isfinite(float(v)):
                self.client.log_metric(self.run_id, _metric_key(k), float(v))

    def set_tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)

    def log_model(self, model: Any, name: str) -> str | None:
        """Log a classifier head (scikit-learn or MLlib) or an MLlib ``PipelineModel``; returns its model URI."""
        import mlflow
        from pyspark.ml import PipelineModel

        from dmine_spark.mine.classify import ClassifierHead

        with mlflow.start_run(run_id=self.run_id):
            if isinstance(model, ClassifierHead) and model.family == "sklearn":
                import mlflow.sklearn

                info = mlflow.sklearn.log_model(
                    model.sklearn_estimator(),
                    name=name,
                    pip_requirements=pinned_requirements("scikit-learn", "numpy", "scipy", "cloudpickle"),
                )
                self.client.set_tag(self.run_id, f"{name}.labels", ",".join(model.getOrDefault("labels"))[:5000])
            else:
                import mlflow.spark

                if isinstance(model, ClassifierHead):  # reads an MLlib vector column named features
                    mllib = model.mllib_model()
                    model = PipelineModel(stages=[mllib.copy({mllib.featuresCol: "features"})])
                pipe = model
                if not isinstance(pipe, PipelineModel):
                    return None
                with _connect_import_cannot_exit():
                    info = mlflow.spark.log_model(
                        pipe, artifact_path=name, pip_requirements=pinned_requirements("pyspark", "numpy")
                    )
        return info.model_uri

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)
