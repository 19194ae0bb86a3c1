"""Trends as new rows are scored: ``dmine score`` and each micro-batch of ``dmine stream``.

A scored batch's predictions (with their ``event_time``) get their entities
(``entities_<task>``, keyed by the batch), then every window they touch is
counted again from all the monitored predictions in it and replaced in
``sentiment_ts_<task>``, and the alerts of the windows that closed are
decided and published (:func:`~dmine_spark.analyze.alerts.publish`).

The monitored predictions are those of the same kind of run: ``dmine score``
runs together (stage ``score``), or one stream (its ``batch_key`` prefix).

Event-time windows with a watermark (``dmine stream``): the watermark is the
latest event time seen in earlier batches minus ``trends.watermark``, as in
Spark's own watermarking. A window is *closed* once the watermark passes its
end: its alerts are decided then, and never again. A row whose window had
already closed when it arrived is *late*: counted (``trends.late_rows``), not
added. The watermark after each batch is kept next to the stream's
checkpoint (``<checkpoint>/trends/<batch id>``), so a batch replayed after a
crash sees the watermark it saw the first time; every write is keyed
(entities by batch, windows by entity and start, alerts by their id), so the
replay writes nothing twice and loses nothing. ``dmine score`` closes every
window it touches.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from dmine_spark.analyze.alerts import Published, publish
from dmine_spark.config import Layer, PipelineConfig, interval_seconds
from dmine_spark.io.tables import append_table, upsert_rows
from dmine_spark.mine import trends as tr

__all__ = ["TrendsStep", "Watermarks", "update_trends", "model_labels", "record_trends"]


def model_labels(cfg: PipelineConfig, model: Any) -> list[str]:
    """The classes a scoring model predicts (its head's ``labels``), else the config's ``labels``."""
    from dmine_spark.mine.textmodel import head_of

    head = head_of(model)
    labels = head.getOrDefault("labels") if head is not None and head.hasParam("labels") else None
    return list(labels or cfg.labels or [])


class Watermarks:
    """The stream's watermark after each batch, in ``<checkpoint>/trends/<batch id>`` (JSON)."""

    def __init__(self, checkpoint: Path) -> None:
        self.folder = Path(checkpoint) / "trends"

    def before(self, batch_id: int) -> datetime | None:
        """The watermark the latest batch before ``batch_id`` left (None: no batch yet)."""
        if not self.folder.is_dir():
            return None
        earlier = sorted(int(p.name) for p in self.folder.iterdir() if p.name.isdigit() and int(p.name) < batch_id)
        if not earlier:
            return None
        value = json.loads((self.folder / str(earlier[-1])).read_text(encoding="utf-8"))["watermark"]
        return datetime.fromisoformat(value) if value else None

    def save(self, batch_id: int, watermark: datetime | None) -> None:
        """Record the watermark after ``batch_id`` (written to a temporary name, then renamed)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{batch_id}.tmp"
        tmp.write_text(json.dumps({"watermark": watermark.isoformat() if watermark else None}), encoding="utf-8")
        tmp.replace(self.folder / str(batch_id))


@dataclass
class TrendsStep:
    """What one batch did to the trends."""

    rows: int = 0
    rows_without_time: int = 0
    rows_with_entity: int = 0
    late_rows: int = 0
    windows_updated: int = 0
    windows_closed: int = 0
    watermark: datetime | None = None
    published: Published | None = None


def _utc(ts: datetime | None) -> datetime | None:
    if ts is None:
        return None
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


def update_trends(
    spark: SparkSession,
    cfg: PipelineConfig,
    *,
    batch: DataFrame,
    scope: Column,
    key: str,
    stage: str,
    run_id: str,
    labels: list[str],
    watermark_before: datetime | None = None,
    streaming: bool = False,
    echo: Any = None,
) -> TrendsStep:
    """Entities, windows and alerts of one scored batch (see the module's text).

    Parameters
    ----------
    batch : DataFrame
        The batch's predictions as written: ``id, text, prediction, probability, event_time``.
    scope : Column
        Which rows of ``pred_<task>`` (and ``entities_<task>``) are monitored together with the batch.
    key : str
        The batch's key in ``entities_<task>`` (its ``batch_key``).
    labels : list of str
        The classes the model predicts.
    watermark_before : datetime, optional
        ``streaming``: the watermark before this batch (None: no window closed yet).
    streaming : bool
        False (``dmine score``): every window the batch touches closes.

    Returns
    -------
    TrendsStep
    """
    t = cfg.trends
    ents_table, ts_table = cfg.table(Layer.ENTITIES), cfg.table(Layer.SENTIMENT_TS)
    rows = batch.select("id", "run_id", "text", "prediction", "probability", "event_time").persist(
        StorageLevel.MEMORY_AND_DISK
    )
    out = TrendsStep()
    try:
        have = spark.catalog.tableExists(ents_table) and "batch_key" in spark.table(ents_table).columns
        if not (have and not spark.table(ents_table).where(F.col("batch_key") == key).isEmpty()):
            dictionary = tr.load_dictionary(spark, t.entities.dictionary) if t.entities.dictionary else None
            # an entity row carries its prediction's run id (a replayed batch's predictions keep their first one)
            found = tr.entity_rows(rows, t, dictionary).join(rows.select("id", "run_id"), "id")
            append_table(found.select("*", F.lit(key).alias("batch_key"), F.lit(stage).alias("stage")), ents_table)
        ents = spark.table(ents_table).where(F.col("batch_key") == key).select("id", "run_id", "entity", "match")
        ents = ents.persist(StorageLevel.MEMORY_AND_DISK)
        step = interval_seconds(t.window)
        w = F.window("event_time", t.window)
        mine = (
            rows.join(ents.select("id", "run_id", "entity"), ["id", "run_id"])
            .where(F.col("event_time").isNotNull())
            .select("id", "entity", "event_time", w.start.alias("window_start"), w.end.alias("window_end"))
        )
        wm0 = _utc(watermark_before)
        late = F.lit(False) if wm0 is None else F.col("window_end") <= F.lit(wm0)
        mine = mine.withColumn("late", late).persist(StorageLevel.MEMORY_AND_DISK)
        stats = rows.agg(
            F.count("*").alias("n"),
            F.count_if(F.col("event_time").isNull()).alias("no_time"),
            F.max(F.unix_micros("event_time")).alias("newest"),
        ).first()
        out.rows, out.rows_without_time = int(stats["n"]), int(stats["no_time"])
        out.rows_with_entity = ents.select("id").distinct().count()
        out.late_rows = mine.where("late").select("id").distinct().count()
        touched = mine.where(~F.col("late")).select("entity", "window_start").distinct().persist()
        bounds = touched.agg(F.min("window_start"), F.max("window_start")).first()
        if bounds[0] is not None:
            lo, hi = bounds[0], bounds[1] + timedelta(seconds=step)
            scoped = spark.table(cfg.table(Layer.PRED)).where(scope & F.col("event_time").between(lo, hi))
            scoped_ents = spark.table(ents_table).where(scope)
            wide = tr.wide_series(scoped, scoped_ents, t.window, labels).join(
                touched, ["entity", "window_start"], "left_semi"
            )
            long = tr.to_long(wide, labels).withColumn("run_id", F.lit(run_id)).persist(StorageLevel.MEMORY_AND_DISK)
            out.windows_updated = long.select("entity", "window_start").distinct().count()
            upsert_rows(long, ts_table, ["entity", "window_start", "label"])
            long.unpersist()
        # as epoch microseconds: a collected timestamp is in the Python process's zone, not Spark's
        newest = None if stats["newest"] is None else datetime.fromtimestamp(stats["newest"] / 1e6, timezone.utc)
        if streaming:
            delay = timedelta(seconds=interval_seconds(t.watermark, "trends.watermark"))
            cand = newest - delay if newest is not None else None
            wm1 = max([x for x in (wm0, cand) if x is not None], default=None)
        else:
            wm1 = None  # dmine score: every window touched is decided now
        out.watermark = wm1
        ts = spark.table(ts_table) if spark.catalog.tableExists(ts_table) else None
        if ts is not None:
            if streaming:
                if wm1 is None:
                    closing = ts.limit(0)
                else:
                    closing = ts.where(F.col("window_end") <= F.lit(wm1))
                    if wm0 is not None:
                        closing = closing.where(F.col("window_end") > F.lit(wm0))
                entities = closing.select("entity").distinct()
                decided = ts.where(F.col("window_end") <= F.lit(wm1)) if wm1 is not None else ts.limit(0)
            else:
                entities = touched.select("entity").distinct()
                decided = ts
            out.windows_closed = (
                closing.select("entity", "window_start").distinct().count() if streaming else (touched.count())
            )
            series = tr.from_long(decided.join(entities, "entity", "left_semi"), labels)
            found = tr.detect(series, tr.rule_specs(t), labels, t.window).persist(StorageLevel.MEMORY_AND_DISK)
            if not found.isEmpty():
                pred_rows = spark.table(cfg.table(Layer.PRED)).where(scope)
                alerts = tr.with_examples(found, pred_rows, spark.table(ents_table).where(scope), t.window, t.examples)
            else:
                alerts = found.withColumn("examples", F.array().cast("array<string>"))
            out.published = publish(cfg, alerts, run_id=run_id, stage=stage, echo=echo)
            found.unpersist()
        touched.unpersist()
        mine.unpersist()
        ents.unpersist()
    finally:
        rows.unpersist()
    return out


def record_trends(run: Any, step: TrendsStep) -> None:
    """Put a batch's trends counts in the run's telemetry (``trends.*``)."""
    run.count("trends.rows", step.rows)
    run.count("trends.rows_without_time", step.rows_without_time)
    run.count("trends.rows_with_entity", step.rows_with_entity)
    run.count("trends.rows_without_entity", step.rows - step.rows_with_entity)
    run.count("trends.late_rows", step.late_rows)
    run.count("trends.windows_updated", step.windows_updated)
    run.count("trends.windows_closed", step.windows_closed)
    if step.watermark is not None:
        run.label("trends.watermark", step.watermark.isoformat())
    if step.published is not None:
        run.count("trends.alerts_new", step.published.new)
        run.count("trends.webhook_delivered", step.published.delivered)
        run.count("trends.webhook_failed", step.published.failed)
