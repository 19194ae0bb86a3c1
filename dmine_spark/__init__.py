"""dmine_spark: turn raw business text in a warehouse into mined knowledge, with Spark.

The package follows the five steps of the mining pipeline, over a catalog
I/O layer and a typed config:

- ``dmine_spark.prepare``: ingest (declared schemas, quarantine) and clean;
- ``dmine_spark.features``: feature tables, the Spark-free encoder core and its Spark adapter;
- ``dmine_spark.mine``: classifiers, clusterers, regressors, fine-tuning, the model store;
- ``dmine_spark.analyze``: run records, quality, the report, MLflow;
- ``dmine_spark.deploy``: batch and streaming scoring, drift monitoring.

``dmine_spark.runner`` wires the steps' nodes into stages, ``dmine_spark.cli``
is the ``dmine`` command and ``dmine_spark.tools`` holds the benchmarks, the
data generator and the SQL endpoint. The names below are the public API;
they load on first use, so ``import dmine_spark`` starts nothing heavy.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    "Pipeline": "dmine_spark.api",
    "RunResult": "dmine_spark.api",
    "load_model": "dmine_spark.api",
    "embed": "dmine_spark.api",
    "session": "dmine_spark.api",
    "ConfigError": "dmine_spark.config",
    "Layer": "dmine_spark.config",
    "PipelineConfig": "dmine_spark.config",
    "load_config": "dmine_spark.config",
    "TextCleaner": "dmine_spark.prepare.clean",
    "Embedder": "dmine_spark.features.embed",
    "Classifier": "dmine_spark.mine.classify",
    "ClassifierHead": "dmine_spark.mine.classify",
    "ClusterModel": "dmine_spark.mine.cluster",
    "FineTunedClassifier": "dmine_spark.mine.finetune",
    "NeighborIndex": "dmine_spark.mine.neighbors",
    "Searcher": "dmine_spark.deploy.search",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dmine_spark' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
