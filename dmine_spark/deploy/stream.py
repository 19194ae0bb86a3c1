"""Structured Streaming scoring: ``dmine stream`` scores files as they land (or a Kafka topic).

Each micro-batch goes through :func:`~dmine_spark.deploy.score.score_rows`:
the source's ingest rules, then the model version's cleaner, embedder (through
the embedding cache) and head, then ``quarantine_<task>`` and ``pred_<task>``
(stage ``stream``).

Exactly once: the checkpoint records which files (or offsets) each batch
holds, and a batch replayed after a crash writes nothing twice. Every row a
batch writes carries its ``batch_key`` (``<stream id>:<batch id>``); a
replayed batch whose predictions are already in the table is skipped, its
quarantine rows are first deleted and rewritten (Delta), and with Delta the
predictions append is also a transaction keyed by (stream id, batch id)
(``txnAppId``/``txnVersion``), which Delta applies at most once.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from dmine_spark.analyze.runs import RunRecorder
from dmine_spark.config import ConfigError, Layer, PipelineConfig, SourceConfig
from dmine_spark.deploy.score import load_scoring_model, record, score_rows
from dmine_spark.io.tables import append_table, ensure_database, set_table_format, table_format
from dmine_spark.prepare.ingest import CORRUPT_COL, _atomic, parse_schema, source_rows

__all__ = ["stream", "stream_reader", "checkpoint_dir", "stream_id"]

FAULT_ENV = "DMINE_STREAM_FAULT"  # tests: "after_write:<batch id>" exits hard between a batch's write and its commit


def checkpoint_dir(cfg: PipelineConfig) -> Path:
    """Where the stream keeps its progress: ``stream.checkpoint`` or ``<work_dir>/checkpoints/<task>/stream``."""
    if cfg.stream.checkpoint:
        return Path(cfg.stream.checkpoint).resolve()
    return cfg.paths.checkpoint(cfg.task)


def stream_id(checkpoint: Path) -> str:
    """A stable name for the stream of ``checkpoint``: the same across restarts, different per checkpoint."""
    return "dmine-stream-" + hashlib.sha256(str(checkpoint).encode()).hexdigest()[:12]


def _template(cfg: PipelineConfig) -> tuple[str, SourceConfig]:
    name = cfg.stream.source or next(iter(cfg.sources))
    if name not in cfg.sources:
        raise ConfigError(f"stream.source: no source named {name!r} (sources: {', '.join(cfg.sources)})")
    return name, cfg.sources[name]


def stream_reader(spark: SparkSession, cfg: PipelineConfig, landing: str | None = None) -> tuple[DataFrame, str]:
    """The streaming DataFrame of new input rows (declared columns as read, ``_origin``) and the input's name."""
    name, src = _template(cfg)
    sc = cfg.stream
    schema = parse_schema(src.schema_ddl, f"sources.{name}.schema")
    raw_schema = StructType([StructField(f.name, StringType() if _atomic(f) else f.dataType, True) for f in schema])
    if sc.kafka is not None and landing is None:
        from dmine_spark.spark.jars import package

        k = sc.kafka
        try:
            reader = (
                spark.readStream.format("kafka")
                .option("kafka.bootstrap.servers", k.bootstrap_servers)
                .option("subscribe", k.topic)
                .option("startingOffsets", k.starting_offsets)
                .options(**{f"kafka.{key}" if not key.startswith("kafka.") else key: v for key, v in k.options.items()})
            )
            if sc.max_offsets_per_trigger:
                reader = reader.option("maxOffsetsPerTrigger", sc.max_offsets_per_trigger)
            df = reader.load()
        except Exception as exc:  # the connector is missing: one line that says how to get it
            if "kafka" in str(exc).lower() and ("not find" in str(exc) or "DATA_SOURCE_NOT_FOUND" in str(exc)):
                raise ConfigError(
                    f"stream.kafka: the Kafka connector ({package('kafka').coordinate}) is not on the classpath; "
                    "run `dmine jars fetch kafka` once, then start the stream again"
                ) from None
            raise
        value = F.col("value").cast("string")
        origin = F.format_string("kafka:%s:%d:%d", F.col("topic"), F.col("partition"), F.col("offset"))
        if k.value_format == "json":
            parsed = F.from_json(value, raw_schema)
            cols = [parsed[f.name].alias(f.name) for f in raw_schema]
            corrupt = F.when(parsed.isNull() & value.isNotNull(), value).alias(CORRUPT_COL)
            return df.select(*cols, corrupt, origin.alias("_origin")), f"kafka:{k.topic}"
        text_field = cfg.text_col
        cols = [(value if f.name == text_field else F.lit(None).cast(f.dataType)).alias(f.name) for f in raw_schema]
        return df.select(*cols, F.lit(None).cast("string").alias(CORRUPT_COL), origin.alias("_origin")), (
            f"kafka:{k.topic}"
        )
    folder = landing or sc.landing
    if not folder:
        raise ConfigError("stream.landing: no landing folder given (set stream.landing or pass --landing)")
    Path(folder).mkdir(parents=True, exist_ok=True)
    fmt = src.format if src.format in ("csv", "json", "parquet") else "parquet"
    reader = spark.readStream.format(fmt).option("maxFilesPerTrigger", sc.max_files_per_trigger)
    if fmt in ("csv", "json"):
        reader = (
            reader.schema(raw_schema.add(CORRUPT_COL, "string"))
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", CORRUPT_COL)
            .options(**src.options)
        )
    else:
        reader = reader.schema(schema).options(**src.options)
    df = reader.load(str(Path(folder).resolve()))
    return df.select("*", F.col("_metadata.file_path").alias("_origin")), str(folder)


def _fault(point: str, batch_id: int) -> None:
    if os.environ.get(FAULT_ENV) == f"{point}:{batch_id}":
        sys.stderr.write(f"dmine stream: {FAULT_ENV}={point}:{batch_id}: exiting hard\n")
        sys.stderr.flush()
        os._exit(3)


def stream(
    spark: SparkSession,
    cfg: PipelineConfig,
    *,
    landing: str | None = None,
    model_ref: str | None = None,
    available_now: bool = False,
    timeout: float | None = None,
    echo: Any = print,
) -> int:
    """Run the scoring stream until stopped (or, ``available_now``, until the input so far is scored).

    Returns the number of micro-batches this process scored.
    """
    model, version = load_scoring_model(cfg, model_ref or cfg.stream.model)
    ensure_database(spark, cfg.database)
    set_table_format(spark, cfg.tables.format)
    name, src = _template(cfg)
    df, what = stream_reader(spark, cfg, landing)
    ckpt = checkpoint_dir(cfg)
    sid = stream_id(ckpt)
    predictions, quarantine = cfg.table(Layer.PRED), cfg.table(Layer.QUARANTINE)
    required = sorted({cfg.text_col, *[c for c in src.required if c != cfg.label_col]})
    done: list[int] = []

    def written(table: str, key: str) -> bool:
        if not spark.catalog.tableExists(table) or "batch_key" not in spark.table(table).columns:
            return False
        return not spark.table(table).where(F.col("batch_key") == key).isEmpty()

    def process(batch: DataFrame, batch_id: int) -> None:
        t0 = time.perf_counter()
        key = f"{sid}:{batch_id}"
        if written(predictions, key):
            echo(f"batch {batch_id}: already written before a restart, skipped")
            return
        got = source_rows(
            batch,
            F.col("_origin"),
            name,
            src,
            required=required,
            label_col=cfg.label_col,
            labels=None,
            id_prefix=F.lit(f"b{batch_id}"),
        )
        run = RunRecorder(spark, cfg, "stream")
        run.label("stream.id", sid)
        run.label("stream.input", what)
        run.count("stream.batch_id", batch_id)

        def store(cfg: PipelineConfig, scored: DataFrame, quarantined: DataFrame) -> None:
            delta = table_format(spark) == "delta"
            # quarantine first: the predictions are what marks the batch as written
            if delta and spark.catalog.tableExists(quarantine) and "batch_key" in spark.table(quarantine).columns:
                spark.sql(f"DELETE FROM {quarantine} WHERE batch_key = '{key}'")
                append_table(quarantined, quarantine)
            elif not written(quarantine, key):
                append_table(quarantined, quarantine)
            cols = spark.table(predictions).columns if spark.catalog.tableExists(predictions) else []
            if delta and cols and set(cols) >= set(scored.columns):
                # a Delta transaction keyed by (stream, batch): applied at most once, whatever happens after
                scored.select(*cols).write.format("delta").mode("append").option("txnAppId", sid).option(
                    "txnVersion", batch_id
                ).saveAsTable(predictions)
            else:
                append_table(scored, predictions)
            _fault("after_write", batch_id)

        try:
            with run.stage("stream"):
                total = batch.count()
                res = score_rows(
                    spark,
                    cfg,
                    got.rows,
                    got.quarantine,
                    model,
                    version,
                    run.run_id,
                    batch_key=key,
                    store=store,
                    stage="stream",
                )
            record(run, res, "stream")
            run.count("rows_in", total)
            if total != res.rows_in:
                raise RuntimeError(f"stream batch {batch_id} lost rows: {total} read, {res.rows_in} accounted for")
            latency = time.perf_counter() - t0
            run.measure("stream.batch_seconds", latency)
        except BaseException as exc:
            run.finish("failed", f"{type(exc).__name__}: {exc}"[:2000])
            raise
        run.finish("ok")
        _fault("after_commit", batch_id)
        done.append(batch_id)
        echo(
            f"batch {batch_id}: {total:,} rows, {res.scored:,} scored, {res.quarantined:,} quarantined, "
            f"{res.embedded:,} embedded, {latency:.1f}s"
        )

    writer = (
        df.writeStream.queryName(sid.replace("-", "_")).foreachBatch(process).option("checkpointLocation", str(ckpt))
    )
    writer = (
        writer.trigger(availableNow=True)
        if available_now
        else writer.trigger(processingTime=f"{cfg.stream.trigger_seconds} seconds")
    )
    from pyspark.errors import StreamingQueryException

    query = writer.start()
    echo(f"dmine stream: {what} -> {predictions} with {version}, checkpoint {ckpt}")
    try:
        query.awaitTermination(timeout)
    except StreamingQueryException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RuntimeError(f"stream stopped by an error: {first}") from exc
    finally:
        if query.isActive:
            query.stop()
    return len(done)
