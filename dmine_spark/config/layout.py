"""Names as data: the table layers of the catalog and the layout of the work directory.

Every table name dmine_spark writes comes from :class:`Layer` (through
:meth:`dmine_spark.config.PipelineConfig.table`), and every file it keeps
outside the catalog from :class:`WorkDir`; no other module spells them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

__all__ = ["Layer", "WorkDir", "WORK_DIR_ENV", "default_work_dir"]

WORK_DIR_ENV = "DMINE_WORK_DIR"


class Layer(str, Enum):
    """A table layer: its value is the table name's prefix (``raw`` → ``<database>.raw_<task>``).

    Shared layers (:attr:`shared`) hold one table per database for every task
    (``<database>.metrics``). :attr:`stage` is the data-engineering layer the
    table belongs to (raw → intermediate → features → predictions → reporting).
    """

    RAW = "raw"
    QUARANTINE = "quarantine"
    CLEAN = "clean"
    DUP = "dup"
    FEAT = "feat"
    EMB = "emb"
    EMB_SCRATCH = "emb_scratch"
    EMB_CACHE = "emb_cache"
    PRED = "pred"
    REG = "reg"
    CLUSTER = "cluster"
    CLUSTER_TERMS = "cluster_terms"
    NEIGHBORS = "neighbors"
    INTERACTIONS = "interactions"
    RECS = "recs"
    SIMILAR_ITEMS = "similar_items"
    ENTITIES = "entities"
    SENTIMENT_TS = "sentiment_ts"
    ALERTS = "alerts"
    OPEN_CURVE = "open_curve"
    ANSWER = "answer"
    ANSWER_LIBRARY = "answer_library"
    CONFUSION = "confusion"
    METRICS = "metrics"
    RUNS = "runs"
    QUALITY = "quality"
    MONITOR = "monitor"

    @property
    def shared(self) -> bool:
        """One table for the whole database rather than one per task."""
        return self in _SHARED

    @property
    def stage(self) -> str:
        """``raw``, ``intermediate``, ``features``, ``predictions`` or ``reporting``."""
        return _STAGE[self]

    @property
    def history(self) -> bool:
        """Appended to by every run (a run's rows carry its ``run_id``) rather than replaced."""
        return self in _HISTORY


_SHARED = frozenset({Layer.EMB_CACHE, Layer.METRICS, Layer.RUNS, Layer.QUALITY, Layer.MONITOR})
_HISTORY = frozenset(
    {Layer.EMB_CACHE, Layer.PRED, Layer.OPEN_CURVE, Layer.METRICS, Layer.RUNS, Layer.QUALITY, Layer.MONITOR}
)
_STAGE = {
    Layer.RAW: "raw",
    Layer.QUARANTINE: "raw",
    Layer.CLEAN: "intermediate",
    Layer.DUP: "intermediate",
    Layer.FEAT: "features",
    Layer.EMB: "features",
    Layer.EMB_SCRATCH: "features",
    Layer.EMB_CACHE: "features",
    Layer.PRED: "predictions",
    Layer.REG: "predictions",
    Layer.CLUSTER: "predictions",
    Layer.CLUSTER_TERMS: "reporting",
    Layer.NEIGHBORS: "predictions",
    Layer.INTERACTIONS: "raw",
    Layer.RECS: "predictions",
    Layer.SIMILAR_ITEMS: "predictions",
    Layer.ENTITIES: "intermediate",
    Layer.SENTIMENT_TS: "reporting",
    Layer.ALERTS: "reporting",
    Layer.OPEN_CURVE: "reporting",
    Layer.ANSWER: "predictions",
    Layer.ANSWER_LIBRARY: "intermediate",
    Layer.CONFUSION: "reporting",
    Layer.METRICS: "reporting",
    Layer.RUNS: "reporting",
    Layer.QUALITY: "reporting",
    Layer.MONITOR: "reporting",
}


def default_work_dir() -> Path:
    """``$DMINE_WORK_DIR`` if set, else ``./dmine_work`` under the current directory."""
    return Path(os.environ.get(WORK_DIR_ENV) or "dmine_work").resolve()


@dataclass(frozen=True)
class WorkDir:
    """What dmine_spark keeps under a work directory besides the tables' data.

    Parameters
    ----------
    root : Path
        The work directory (``work_dir`` in a config, ``--work-dir``, ``$DMINE_WORK_DIR`` or ``./dmine_work``).
    """

    root: Path

    @classmethod
    def of(cls, path: str | os.PathLike[str] | None) -> WorkDir:
        """The work dir at ``path``, or the default one (:func:`default_work_dir`) when ``path`` is None."""
        return cls(Path(path).resolve() if path else default_work_dir())

    @property
    def warehouse(self) -> Path:
        """The catalog's table data (``spark.sql.warehouse.dir``)."""
        return self.root / "warehouse"

    @property
    def metastore(self) -> Path:
        """The embedded (Derby) metastore of the persistent catalog."""
        return self.root / "metastore_db"

    @property
    def models(self) -> Path:
        """The model store: ``<name>/v<N>/`` per saved model version."""
        return self.root / "models"

    @property
    def reports(self) -> Path:
        """HTML run reports."""
        return self.root / "reports"

    def report(self, run_id: str) -> Path:
        """The report of run ``run_id``."""
        return self.reports / f"{run_id}.html"

    @property
    def staging(self) -> Path:
        """Files of sources in another encoding, decoded to UTF-8 once per run (see ``prepare.encoding``)."""
        return self.root / "staging"

    def checkpoint(self, task: str) -> Path:
        """The streaming checkpoint of ``task`` (default of ``stream.checkpoint``)."""
        return self.root / "checkpoints" / task / "stream"

    def finetune(self, run_id: str) -> Path:
        """Fine-tuning scratch space of run ``run_id`` (training data and the best checkpoint)."""
        return self.root / "finetune" / run_id

    @property
    def mlflow_db(self) -> Path:
        """The default MLflow tracking store (a SQLite file)."""
        return self.root / "mlflow.db"

    @property
    def mlartifacts(self) -> Path:
        """Artefacts of the default MLflow store."""
        return self.root / "mlartifacts"
