"""The runner: for each stage, read its inputs, call its node, save its models, write its outputs, record it.

:func:`run_stages` runs stages in order inside one recorded run (a row in
``runs``, quality rows, an MLflow run and an HTML report when configured);
each stage's Spark jobs run in their own job group, so what Spark retried
is noted against the stage.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dmine_spark.analyze.record import Recording, StageReport
from dmine_spark.analyze.runs import RunRecorder, reconcile
from dmine_spark.config import ConfigError, Layer, PipelineConfig
from dmine_spark.io.tables import (
    append_table,
    ensure_database,
    prediction_rows,
    quarantine_rows,
    replace_partition,
    set_table_format,
    track_versions,
    write_table,
)
from dmine_spark.runner.context import StageContext
from dmine_spark.runner.stages import STAGES, Stage, Write, default_stages

__all__ = ["run_stages", "run_stage", "stage"]

log = logging.getLogger(__name__)

_BY_NAME = {s.name: s for s in STAGES}


def stage(name: str) -> Stage:
    """The stage called ``name``.

    Raises
    ------
    ConfigError
        When there is no such stage.
    """
    if name not in _BY_NAME:
        raise ConfigError(f"unknown stage {name!r}; stages are {', '.join(_BY_NAME)}")
    return _BY_NAME[name]


def _write(ctx: StageContext, w: Write, out: Any, stage_name: str, versions: dict[str, str]) -> None:
    cfg, run_id = ctx.cfg, ctx.run.run_id
    name = cfg.table(w.layer)
    if w.mode == "view":
        ctx.cache.create_view(name, cfg.table(Layer.CLEAN))
        return
    df: DataFrame | None = getattr(out, w.attr)
    if df is None:  # an output the config did not ask for (e.g. no answers section)
        return
    key = w.version(cfg) if callable(w.version) else w.version
    version = versions.get(key) if key else None
    if w.mode == "append":
        append_table(prediction_rows(df, run_id=run_id, model_version=version, stage=stage_name), name)
        return
    if w.mode == "quarantine":
        replace_partition(quarantine_rows(df, run_id=run_id, stage=stage_name), name, "stage", stage_name)
        for source in cfg.sources:
            ctx.spark.sql(
                f"CREATE OR REPLACE VIEW {cfg.quarantine_view(source)} AS SELECT * FROM {name} WHERE split = '{source}'"
            )
        return
    df = df.withColumn("run_id", F.lit(run_id))
    if version is not None:
        df = df.withColumn("model_version", F.lit(version))
    write_table(df, name)


def run_stage(ctx: StageContext, s: Stage) -> StageReport:
    """Run one stage: node, model saves, writes, recorder; the node's cached frames are released afterwards."""
    out = s.run(ctx)
    try:
        versions = {
            save.key: ctx.store.save(
                save.name(ctx.cfg), getattr(out, save.attr), run_id=ctx.run.run_id, **save.meta(ctx.cfg, out)
            )
            for save in s.saves
        }
        for w in s.writes:
            _write(ctx, w, out, s.name, versions)
        return s.record(Recording(ctx.spark, ctx.cfg, ctx.run, out, versions, ctx.store))
    finally:
        release = getattr(out, "release", None)
        if release is not None:
            release()


def run_stages(
    spark: SparkSession,
    cfg: PipelineConfig,
    stages: list[str] | None = None,
    *,
    command: str = "run",
    on_report: Callable[[StageReport], None] | None = None,
    progress: bool = True,
) -> tuple[RunRecorder, list[StageReport]]:
    """Run ``stages`` (default: all enabled, in order) as one run, recorded in ``runs``.

    Parameters
    ----------
    spark : SparkSession
    cfg : PipelineConfig
    stages : list of str, optional
        Stage names in the order to run them (see :data:`~dmine_spark.runner.stages.STAGES`).
    command : str
        What the run is called in ``runs`` (``run``, a stage name, ``bench``).
    on_report : callable, optional
        Called with each stage's report as soon as the stage ends.
    progress : bool
        Live progress lines for the embed stage.

    Returns
    -------
    (RunRecorder, list of StageReport)
        The run's records and each stage's report.

    Raises
    ------
    ConfigError
        An unknown stage or a configuration mistake found while running.
    RuntimeError
        When rows do not reconcile.
    """
    names = stages or default_stages(cfg)
    chosen = [stage(n) for n in names]
    ensure_database(spark, cfg.database)
    fmt = set_table_format(spark, cfg.tables.format)
    run = RunRecorder(spark, cfg, command)
    run.label("tables.format", fmt)
    ctx = StageContext(spark, cfg, run, progress=progress)
    reports: list[StageReport] = []
    tracker = _start_tracking(cfg, run, names, command)
    try:
        for s in chosen:
            with run.stage(s.name), track_versions(run.table_versions):
                report = run_stage(ctx, s)
            report.seconds = run.stage_seconds[s.name]
            reports.append(report)
            if on_report:
                on_report(report)
        if "ingest" in names and "clean" in names:
            counts = {
                "rows_in": run.counts["ingest.rows_in"],
                "rows_clean": run.counts["clean.rows_out"],
                "rows_quarantined": run.counts["ingest.rows_quarantined"] + run.counts["clean.rows_quarantined"],
                "rows_duplicate": run.counts["clean.rows_duplicate"],
                **{
                    f"rows_{k}": run.counts[f"ingest.rows_{k}"]
                    for k in ("interactions", "attached")
                    if f"ingest.rows_{k}" in run.counts
                },
            }
            for k, v in counts.items():
                run.count(k, v)
            if reconcile(counts) != 0:
                raise RuntimeError(f"row counts do not reconcile: {counts}")
        if tracker is not None:
            _track(tracker, spark, cfg, run, reports)
        if cfg.report.enabled and command != "bench":
            run.label("report", str(cfg.paths.report(run.run_id)))
    except BaseException as exc:
        run.finish("failed", f"{type(exc).__name__}: {exc}"[:2000])
        if tracker is not None:
            tracker.end("FAILED")
        raise
    run.finish("ok")
    if cfg.report.enabled and command != "bench":
        from dmine_spark.analyze.report import write_report

        path = write_report(spark, cfg, run.run_id)
        log.info("report: %s", path)
        if tracker is not None:
            tracker.log_artifact(path)
    if tracker is not None:
        tracker.end()
    return run, reports


def _start_tracking(cfg: PipelineConfig, run: RunRecorder, stages: list[str], command: str) -> Any:
    """Open the MLflow run of this dmine run (``tracking.enabled``), or ``None``."""
    if not cfg.tracking.enabled or command == "bench":
        return None
    from dmine_spark.analyze.tracking import Tracker

    tracker = Tracker(cfg, run.run_id)
    tracker.log_config(stages)
    run.label("mlflow.run_id", tracker.run_id)
    run.label("mlflow.tracking_uri", tracker.uri)
    return tracker


def _track(
    tracker: Any, spark: SparkSession, cfg: PipelineConfig, run: RunRecorder, reports: list[StageReport]
) -> None:
    values: dict[str, float] = {f"seconds.{k}": v for k, v in run.stage_seconds.items()}
    values.update(run.measures)
    values.update({k: float(v) for k, v in run.counts.items()})
    if spark.catalog.tableExists(cfg.table(Layer.METRICS)):
        for r in spark.table(cfg.table(Layer.METRICS)).where(F.col("run_id") == run.run_id).collect():
            values[f"{r['stage']}.{r['split']}.{r['metric']}"] = r["value"]
    tracker.log_metrics(values)
    for k in ("classify.model_version", "regress.model_version", "embed.model", "embed.precision"):
        if k in run.labels:
            tracker.set_tag(k, run.labels[k])
    if cfg.tracking.log_models:
        for rep in reports:
            for name, model in rep.models.items():
                try:
                    uri = tracker.log_model(model, name)
                except Exception as exc:  # the model is saved in the model store either way
                    log.warning("MLflow could not log the %s: %s", name, exc)
                    run.label(f"mlflow.{name}_error", f"{type(exc).__name__}: {exc}"[:500])
                    continue
                if uri:
                    run.label(f"mlflow.{name}_uri", uri)
