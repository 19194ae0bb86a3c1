"""Saving and loading pyspark.ml stages that hold state beyond their Params.

A pure-Python stage whose state is all in Params uses pyspark's
``DefaultParamsWritable``. A fitted model also holds learned state: an MLlib
model inside it, a scikit-learn artefact, cluster centres. :class:`Persisted`
saves such a stage the way pyspark saves its own (``metadata/`` with the
class, uid and Params, so ``PipelineModel.load`` finds it), plus whatever the
stage writes beside it, and loads it back in a fresh session.
"""

from __future__ import annotations

from typing import Any

from pyspark.ml.util import DefaultParamsReader, DefaultParamsWriter, MLReadable, MLReader, MLWritable, MLWriter
from pyspark.sql import SparkSession

from dmine_spark.compat import ml_io_context

__all__ = ["Persisted", "class_path", "load_class"]


def class_path(obj: object) -> str:
    """``module.Class`` of ``obj``'s class, as saved in a stage's metadata."""
    return f"{type(obj).__module__}.{type(obj).__name__}"


def load_class(path: str) -> type:
    """The class named ``module.Class`` (what :func:`class_path` saved)."""
    module, _, name = path.rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


class _StateWriter(MLWriter):
    def __init__(self, instance: Persisted) -> None:
        super().__init__()
        self.instance = instance

    def saveImpl(self, path: str) -> None:
        DefaultParamsWriter.saveMetadata(
            self.instance,
            path,
            ml_io_context(self.sparkSession),
            extraMetadata={"dmine": self.instance._state_metadata()},
        )
        self.instance._save_state(path, self.sparkSession)


class _StateReader(MLReader):
    def __init__(self, cls: type[Persisted]) -> None:
        super().__init__()
        self.cls = cls

    def load(self, path: str) -> Persisted:
        metadata = DefaultParamsReader.loadMetadata(path, ml_io_context(self.sparkSession))
        instance = load_class(metadata["class"])()
        instance._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(instance, metadata)
        instance._load_state(path, metadata.get("dmine", {}), self.sparkSession)
        return instance


class Persisted(MLReadable, MLWritable):
    """Mixin: a stage saved as pyspark metadata plus the state its own hooks write and read.

    Subclasses implement :meth:`_state_metadata` (JSON-able facts kept in the
    metadata file), :meth:`_save_state` (files beside it) and
    :meth:`_load_state` (the reverse of both).
    """

    def write(self) -> MLWriter:
        return _StateWriter(self)

    @classmethod
    def read(cls) -> MLReader:
        return _StateReader(cls)

    def _state_metadata(self) -> dict[str, Any]:
        return {}

    def _save_state(self, path: str, spark: SparkSession) -> None:
        return None

    def _load_state(self, path: str, state: dict[str, Any], spark: SparkSession) -> None:
        return None
