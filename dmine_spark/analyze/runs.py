"""Run telemetry: one row per command in the ``runs`` table.

A :class:`RunRecorder` times each stage, collects row counts and measures
(rows/s, accuracy...) while the run goes, and appends a single row when it
ends, failed runs included.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

from pyspark import SparkContext
from pyspark.sql import SparkSession
from pyspark.sql.types import (
    DoubleType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from dmine_spark.analyze.quality import QualityRows
from dmine_spark.config import Layer, PipelineConfig
from dmine_spark.io.tables import append_table, track_versions

__all__ = ["RUNS_SCHEMA", "RunRecorder", "reconcile"]

log = logging.getLogger(__name__)

RUNS_SCHEMA = StructType(
    [
        StructField("run_id", StringType(), False),
        StructField("pipeline", StringType(), False),
        StructField("task", StringType(), False),
        StructField("command", StringType(), False),
        StructField("config_hash", StringType(), False),
        StructField("status", StringType(), False),
        StructField("started_at", TimestampType(), False),
        StructField("ended_at", TimestampType(), False),
        StructField("seconds", DoubleType(), False),
        StructField("stage_seconds", MapType(StringType(), DoubleType()), False),
        StructField("counts", MapType(StringType(), LongType()), False),
        StructField("measures", MapType(StringType(), DoubleType()), False),
        StructField("labels", MapType(StringType(), StringType()), False),
        StructField("spark_master", StringType(), True),
        StructField("error", StringType(), True),
        # Delta tables only: the version this run left each table it wrote at (read back with VERSION AS OF)
        StructField("table_versions", MapType(StringType(), LongType()), True),
    ]
)


def reconcile(counts: dict[str, int]) -> int:
    """Rows unaccounted for: ``rows_in - clean - quarantined - duplicates - interactions - attached`` (0 when all add up).

    ``rows_interactions`` (kept in ``interactions_<task>``) and ``rows_attached``
    (``item_text`` rows joined onto a text row) count only where such sources exist.
    """
    kept_elsewhere = counts.get("rows_interactions", 0) + counts.get("rows_attached", 0)
    return (
        counts["rows_in"]
        - counts["rows_clean"]
        - counts["rows_quarantined"]
        - counts["rows_duplicate"]
        - kept_elsewhere
    )


def _executor_count(sc: SparkContext) -> int:
    """Executors alive now (the driver not counted; 0 in local mode)."""
    infos = sc._jsc.sc().statusTracker().getExecutorInfos()
    return max(len(infos) - 1, 0)


def _failed_task_total(sc: SparkContext) -> int | None:
    """Tasks that have failed so far in this application, on every executor, lost ones included.

    Spark's status tracker shows only a stage's latest attempt, so a task that failed with its
    executor before the stage was re-attempted would not be counted from it. Each executor's
    summary in the status store (``ExecutorSummary.failedTasks``, kept for dead executors too)
    counts every attempt. None when the store cannot be read (then the tracker's figure stands).
    """
    try:
        seq = sc._jsc.sc().statusStore().executorList(False)
        return int(sum(seq.apply(i).failedTasks() for i in range(seq.size())))
    except Exception:  # a JVM without the store API: the tracker's count is the fallback
        return None


class RunRecorder:
    """Collects one command's telemetry and writes it to ``<database>.runs``."""

    def __init__(self, spark: SparkSession, cfg: PipelineConfig, command: str) -> None:
        self.spark = spark
        self.cfg = cfg
        self.command = command
        self.run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]
        self.started_at = datetime.now(timezone.utc)
        self._t0 = time.perf_counter()
        # the run's duration, measured once by finish(): the console and the report show this value
        self.seconds: float | None = None
        self.stage_seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.measures: dict[str, float] = {}
        self.labels: dict[str, str] = {}
        self.table_versions: dict[str, int] = {}
        self.quality = QualityRows(self.run_id, cfg.name, cfg.task)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time stage ``name`` and note what Spark retried in it.

        The stage's Spark jobs run in their own job group; when it ends, tasks
        that failed (a lost executor, say) and stage attempts beyond the first
        are counted as ``<stage>.failed_tasks`` and ``<stage>.stage_retries``,
        and the run's ``spark.failed_tasks`` / ``spark.stage_retries`` add them up.
        """
        sc = self.spark.sparkContext
        group = f"dmine-{self.run_id}-{name}"
        sc.setJobGroup(group, f"dmine {self.cfg.name}: {name}")
        executors = _executor_count(sc)
        failed_before = _failed_task_total(sc)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + time.perf_counter() - t0
            sc.setLocalProperty("spark.jobGroup.id", None)
            sc.setLocalProperty("spark.job.description", None)
            self._note_retries(name, group, executors, failed_before)

    def _note_retries(self, name: str, group: str, executors_before: int, failed_before: int | None = None) -> None:
        tracker = self.spark.sparkContext.statusTracker()
        failed = retries = 0
        for job_id in tracker.getJobIdsForGroup(group):
            job = tracker.getJobInfo(job_id)
            for sid in job.stageIds if job is not None else []:
                info = tracker.getStageInfo(sid)
                if info is not None:
                    failed += info.numFailedTasks
                    retries += info.currentAttemptId
        failed_after = _failed_task_total(self.spark.sparkContext)
        if failed_before is not None and failed_after is not None:
            failed = max(failed, failed_after - failed_before)  # failures in earlier attempts of a stage too
        after = _executor_count(self.spark.sparkContext)
        if failed or retries:
            self.count(f"{name}.failed_tasks", failed)
            self.count(f"{name}.stage_retries", retries)
            self.count("spark.failed_tasks", failed)
            self.count("spark.stage_retries", retries)
            self.label(f"{name}.retried", f"{failed} failed tasks re-run, {retries} stage re-attempts")
        if after < executors_before:
            self.count(f"{name}.executors_lost", executors_before - after)
            self.count("spark.executors_lost", executors_before - after)

    def count(self, key: str, n: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + int(n)

    def measure(self, key: str, value: float) -> None:
        self.measures[key] = float(value)

    def label(self, key: str, value: str) -> None:
        self.labels[key] = str(value)

    def finish(self, status: str = "ok", error: str | None = None) -> None:
        """Append the quality rows gathered so far and this run's row to ``runs``."""
        with track_versions(self.table_versions):
            self.quality.write(self.spark, self.cfg.table(Layer.QUALITY))
        self.seconds = time.perf_counter() - self._t0
        ended = datetime.now(timezone.utc)
        row = (
            self.run_id,
            self.cfg.name,
            self.cfg.task,
            self.command,
            self.cfg.config_hash(),
            status,
            self.started_at,
            ended,
            self.seconds,
            self.stage_seconds,
            self.counts,
            self.measures,
            self.labels,
            self.spark.sparkContext.master,
            error,
            dict(self.table_versions),
        )
        df = self.spark.createDataFrame([row], RUNS_SCHEMA)
        name = self.cfg.table(Layer.RUNS)
        append_table(df, name)  # a runs table written by an older dmine_spark gains the new columns
        log.info("run %s %s in %.1fs", self.run_id, status, self.seconds)
