"""Drift monitoring: ``dmine monitor`` compares a new batch with the training baseline.

The baseline is the training split the model learned from (its embeddings
from the catalog, its labels, the model's predictions on it). The batch is
read, cleaned, masked and embedded (through the embedding cache) exactly as
``dmine score`` does, and classified by the same model version, but nothing
is appended to the predictions table. The measures are those of
:mod:`dmine_spark.deploy.drift`; each is compared with its threshold from the
``monitor.thresholds`` config section, one row per measure goes to
``<database>.monitor``, and the run row in ``runs`` says whether drift was found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dmine_spark.analyze.runs import RunRecorder
from dmine_spark.config import ConfigError, Layer, PipelineConfig
from dmine_spark.deploy.drift import Baseline, drift_measures, fit_baseline
from dmine_spark.deploy.score import input_source, load_scoring_model, score_rows
from dmine_spark.io.tables import append_table, ensure_database, read_table, set_table_format
from dmine_spark.mine.textmodel import embedder_of, head_of, open_set_of
from dmine_spark.prepare.ingest import read_source

__all__ = ["MONITOR_SCHEMA", "MonitorResult", "baseline_of", "monitor"]

MONITOR_SCHEMA = (
    "run_id STRING, pipeline STRING, task STRING, model_version STRING, input STRING, metric STRING, "
    "value DOUBLE, threshold DOUBLE, drift BOOLEAN, baseline_rows BIGINT, batch_rows BIGINT, created_at TIMESTAMP"
)

# measure -> (the threshold it is compared with, the value compared); PSI is compared above its noise level
CHECKS = {
    "centroid_shift": ("centroid_shift", "centroid_shift"),
    "mean_shift": ("mean_shift", "mean_shift"),
    "psi": ("psi", "psi_excess"),
    "ood_rate": ("ood_rate", "ood_rate"),
}


@dataclass
class MonitorResult:
    """One monitored batch: every measure, which ones drifted, and the row counts."""

    run_id: str
    model_version: str
    measures: dict[str, float]
    thresholds: dict[str, float]
    drifted: list[str]
    baseline_rows: int
    batch_rows: int
    rows_in: int
    quarantined: int
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def drift(self) -> bool:
        return bool(self.drifted)


def _collect(df: DataFrame, cols: list[str]) -> list:
    return df.select(*cols).collect()


def baseline_of(spark: SparkSession, cfg: PipelineConfig, model: PipelineModel) -> Baseline:
    """The training baseline: a sample of the baseline split's embeddings, labels and predictions.

    Raises
    ------
    ConfigError
        When the model embeds no text, or the baseline split has no embedded row.
    """
    m = cfg.monitor
    embedder = embedder_of(model)
    cache = embedder.cache(spark) if embedder is not None else None
    if cache is None or not cache.exists():
        raise ConfigError("monitor: the model has no embedding cache to read the baseline from; run the pipeline first")
    rows = read_table(spark, cfg.table(Layer.CLEAN)).where(F.col("split") == m.baseline_split)
    base = cache.lookup(rows.select("id", "label", "text_key")).where(F.col("embedding").isNotNull())
    n = base.count()
    if n == 0:
        raise ConfigError(
            f"monitor.baseline_split: no embedded rows in split {m.baseline_split!r} of {cfg.table(Layer.CLEAN)}"
        )
    if n > m.sample_rows:
        base = base.sample(fraction=min(1.0, 1.2 * m.sample_rows / n), seed=m.seed).limit(m.sample_rows)
    scored = head_of(model).transform(base)
    open_head = open_set_of(model)
    if open_head is not None:
        scored = open_head.transform(scored)
    got = _collect(scored, ["embedding", "label", "prediction"])
    vectors = np.asarray([r["embedding"] for r in got], dtype=np.float32)
    baseline = fit_baseline(
        vectors,
        [r["label"] for r in got],
        [r["prediction"] for r in got],
        quantile=m.ood_quantile,
        seed=m.seed,
    )
    if open_head is not None:  # the model's own open-set decision is the OOD definition
        baseline.open_label = open_head.getOrDefault("unknownLabel")
        known = open_head.info.get("val_known_recall")
        baseline.ood_expected = 1.0 - float(known) if known is not None else None
        if open_head.getOrDefault("method") == "knn":
            baseline.reference = open_head.memory()
            baseline.ood_distance = 1.0 - float(open_head.getOrDefault("threshold"))
        else:
            baseline.ood_distance = float("nan")
    return baseline


def monitor(
    spark: SparkSession,
    cfg: PipelineConfig,
    where: str,
    *,
    model_ref: str | None = None,
    source: str | None = None,
    fmt: str | None = None,
) -> MonitorResult:
    """Compare the batch at ``where`` (table or path) with the training baseline and record the result."""
    model, version = load_scoring_model(cfg, model_ref)
    if embedder_of(model) is None:
        raise ConfigError(f"--model {version}: monitoring compares embeddings, and this model embeds no text")
    name, src = input_source(spark, cfg, where, source=source, fmt=fmt)
    ensure_database(spark, cfg.database)
    set_table_format(spark, cfg.tables.format)
    run = RunRecorder(spark, cfg, "monitor")
    run.label("monitor.input", where)
    run.label("monitor.model_version", version)
    th = cfg.monitor.thresholds
    thresholds = {k: float(getattr(th, k)) for k in CHECKS}
    try:
        with run.stage("monitor"):
            baseline = baseline_of(spark, cfg, model)
            got = read_source(
                spark,
                name,
                src,
                required=sorted({cfg.text_col, *src.required}),
                label_col=cfg.label_col,
                labels=None,  # a shifted batch may carry labels the model never saw
                staging=str(cfg.paths.staging),
            )
            kept: dict[str, list] = {}

            def store(cfg: PipelineConfig, scored: DataFrame, quarantined: DataFrame) -> None:
                kept["rows"] = _collect(scored.limit(cfg.monitor.sample_rows), ["embedding", "prediction"])

            res = score_rows(
                spark,
                cfg,
                got.rows,
                got.quarantine,
                model,
                version,
                run.run_id,
                store=store,
                with_embedding=True,
                stage="monitor",
            )
            batch = kept.get("rows", [])
            if not batch:
                raise ConfigError(f"--input {where}: no row of the batch survived ingest and cleaning to compare")
            vectors = np.asarray([r["embedding"] for r in batch], dtype=np.float32)
            measures = drift_measures(baseline, vectors, [r["prediction"] for r in batch])
        drifted = [k for k, (t, v) in CHECKS.items() if measures[v] > thresholds[t]]
        now = datetime.now(timezone.utc)
        rows = [
            (
                run.run_id,
                cfg.name,
                cfg.task,
                version,
                where,
                metric,
                float(value),
                thresholds.get(metric) if metric in CHECKS else None,
                (metric in drifted) if metric in CHECKS else None,
                len(baseline.vectors),
                len(vectors),
                now,
            )
            for metric, value in measures.items()
        ]
        append_table(spark.createDataFrame(rows, MONITOR_SCHEMA), cfg.table(Layer.MONITOR))
        for k, v in measures.items():
            run.measure(f"monitor.{k}", v)
        run.count("rows_in", res.rows_in)
        run.count("monitor.rows_scored", res.scored)
        run.count("monitor.rows_quarantined", res.quarantined)
        run.count("monitor.baseline_rows", len(baseline.vectors))
        run.count("monitor.batch_rows", len(vectors))
        run.count("embed.embedded", res.embedded)
        run.label("monitor.drift", "true" if drifted else "false")
        run.label("monitor.drifted", ",".join(drifted))
    except BaseException as exc:
        run.finish("failed", f"{type(exc).__name__}: {exc}"[:2000])
        raise
    run.finish("ok")
    return MonitorResult(
        run_id=run.run_id,
        model_version=version,
        measures=measures,
        thresholds=thresholds,
        drifted=drifted,
        baseline_rows=len(baseline.vectors),
        batch_rows=len(vectors),
        rows_in=res.rows_in,
        quarantined=res.quarantined,
    )
