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

Files land whole or not at all. A landing folder's stream never reads a
writer's temporary name (:func:`is_temporary`: ``*.tmp``, ``*._COPYING_``,
``*.crdownload``, ``*.part``, and hidden ``.``/``_`` names). Spark records
each file once and never reads it again, so before a batch is scored every
file in it must have gone ``stream.settle_seconds`` unmodified, and a file
whose size or modification time changed after Spark listed it is read again
whole in that batch (and said so). A file still changing after
:data:`SETTLE_LIMIT_SECONDS` stops the stream with that batch uncommitted, in
one line; a file that changes after its batch was scored is reported, not
scored again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from dmine_spark.analyze.runs import RunRecorder
from dmine_spark.config import ConfigError, Layer, PipelineConfig, SourceConfig
from dmine_spark.deploy.score import load_scoring_model, record, score_rows
from dmine_spark.deploy.trends import Watermarks, model_labels, record_trends, update_trends
from dmine_spark.io.tables import append_table, ensure_database, set_table_format, table_format
from dmine_spark.prepare.ingest import CORRUPT_COL, _atomic, parse_schema, source_rows

__all__ = ["stream", "stream_reader", "checkpoint_dir", "stream_id", "is_temporary", "TEMPORARY_SUFFIXES"]

log = logging.getLogger(__name__)

FAULT_ENV = "DMINE_STREAM_FAULT"  # tests: "after_write:<batch id>" exits hard between a batch's write and its commit

TEMPORARY_SUFFIXES = (".tmp", "._COPYING_", ".crdownload", ".part")
"""Names writers give a file until it is whole (``hdfs dfs -put`` writes ``._COPYING_``); never read."""

SETTLE_LIMIT_SECONDS = 300.0
"""A batch waits at most this long for its files to stop changing, then stops the stream."""

_REMEMBERED_FILES = 1_000  # files of earlier batches checked for a later change at each batch, newest first


def checkpoint_dir(cfg: PipelineConfig) -> Path:
    """Where the stream keeps its progress: ``stream.checkpoint`` or ``<work_dir>/checkpoints/<task>/stream``."""
    if cfg.stream.checkpoint:
        return Path(cfg.stream.checkpoint).resolve()
    return cfg.paths.checkpoint(cfg.task)


def stream_id(checkpoint: Path) -> str:
    """A stable name for the stream of ``checkpoint``: the same across restarts, different per checkpoint."""
    return "dmine-stream-" + hashlib.sha256(str(checkpoint).encode()).hexdigest()[:12]


def _template(cfg: PipelineConfig) -> tuple[str, SourceConfig]:
    name = cfg.stream.source or cfg.text_sources()[0]
    if name not in cfg.sources:
        raise ConfigError(f"stream.source: no source named {name!r} (sources: {', '.join(cfg.sources)})")
    return name, cfg.sources[name]


def is_temporary(name: str) -> bool:
    """Whether a landed file's name says it is not ready: a temporary suffix, or hidden (``.`` or ``_`` first).

    Hidden names are Hadoop's convention, which Spark's file source already follows.
    """
    return name.startswith((".", "_")) or name.lower().endswith(tuple(x.lower() for x in TEMPORARY_SUFFIXES))


def _ready(name: Column) -> Column:
    hidden = name.startswith(".") | name.startswith("_")
    for suffix in TEMPORARY_SUFFIXES:
        hidden = hidden | F.lower(name).endswith(suffix.lower())
    return ~hidden


def _file_reader(reader: Any, cfg: PipelineConfig) -> Any:
    """``reader`` (``spark.read`` or ``spark.readStream``) set up for the stream source's landed files."""
    name, src = _template(cfg)
    schema = parse_schema(src.schema_ddl, f"sources.{name}.schema")
    fmt = src.format if src.format in ("csv", "json", "parquet") else "parquet"
    if fmt in ("csv", "json"):
        raw = [StructField(f.name, StringType() if _atomic(f) else f.dataType, True) for f in schema]
        return (
            reader.format(fmt)
            .schema(StructType([*raw, StructField(CORRUPT_COL, StringType(), True)]))
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", CORRUPT_COL)
            .options(**src.options)
        )
    return reader.format(fmt).schema(schema).options(**src.options)


def _landed(df: DataFrame) -> DataFrame:
    # a filter on the file name prunes files before they are opened: a temporary file renamed meanwhile is no error
    return df.where(_ready(F.col("_metadata.file_name"))).select(
        "*",
        F.col("_metadata.file_path").alias("_origin"),
        F.col("_metadata.file_size").alias("_file_size"),
        F.unix_millis(F.col("_metadata.file_modification_time")).alias("_file_mtime"),
    )


def stream_reader(spark: SparkSession, cfg: PipelineConfig, landing: str | None = None) -> tuple[DataFrame, str]:
    """The streaming DataFrame of new input rows and the input's name.

    Its columns are the source's declared columns as read, then ``_origin``;
    a landing folder's rows also carry ``_file_size`` and ``_file_mtime``
    (milliseconds), their file as Spark listed it. Files with a temporary or
    hidden name (:func:`is_temporary`) are not read.
    """
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
    reader = _file_reader(spark.readStream.option("maxFilesPerTrigger", sc.max_files_per_trigger), cfg)
    return _landed(reader.load(str(Path(folder).resolve()))), str(folder)


def _key(uri: str) -> tuple[str, str, str]:
    # Spark writes file:/x in _metadata and file:///x in its log, and escapes both
    parts = urlsplit(uri)
    return parts.scheme or "file", parts.netloc, unquote(parts.path)


def _shown(uri: str) -> str:
    scheme, netloc, path = _key(uri)
    return path if scheme == "file" else f"{scheme}://{netloc}{path}"


def _status(spark: SparkSession, uri: str) -> tuple[int, int] | None:
    """(size, modification time in ms) of the file at ``uri`` now, through Hadoop as Spark sees it; None if gone."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(jvm.java.net.URI(uri))
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(path):
        return None
    st = fs.getFileStatus(path)
    return int(st.getLen()), int(st.getModificationTime())


def _listed_by_spark(ckpt: Path, batch_id: int) -> dict[str, int] | None:
    """The files Spark's file source gave ``batch_id``, with their modification times (ms) as it listed them.

    They are in its log, ``<checkpoint>/sources/0/<batch id>`` (``<batch id>.compact`` every tenth batch, which
    holds every batch so far): a ``v1`` line, then one JSON object per file. None when the log is not there.
    """
    for name in (str(batch_id), f"{batch_id}.compact"):
        p = ckpt / "sources" / "0" / name
        if p.is_file():
            lines = p.read_text(encoding="utf-8").splitlines()
            if not lines or lines[0] != "v1":
                return None
            entries = [json.loads(line) for line in lines[1:] if line.strip()]
            return {e["path"]: int(e["timestamp"]) for e in entries if e.get("batchId") == batch_id}
    return None


class _Files:
    """A landing folder's files: each is scored whole, and a later change to one is reported.

    A file's state is ``(origin, size, modification time in ms)`` as a batch read it; the size is None
    when the batch had no rows of it.
    """

    def __init__(self, spark: SparkSession, cfg: PipelineConfig, ckpt: Path, echo: Any) -> None:
        self.spark, self.cfg, self.ckpt, self.echo = spark, cfg, ckpt, echo
        self.settle = cfg.stream.settle_seconds
        self.scored: OrderedDict[tuple[str, str, str], tuple[str, int | None, int, int]] = OrderedDict()
        self.pending: dict[tuple[str, str, str], tuple[str, int | None, int]] = {}
        self.warned_no_log = False

    def _read(self, batch: DataFrame) -> dict[tuple[str, str, str], tuple[str, int | None, int]]:
        got = batch.groupBy("_origin").agg(F.max("_file_size").alias("size"), F.max("_file_mtime").alias("mtime"))
        return {_key(r["_origin"]): (r["_origin"], int(r["size"]), int(r["mtime"])) for r in got.collect()}

    def _still(self, seen: dict, deadline: float, batch_id: int, settle: float) -> dict:
        """The files' status once none has changed for ``settle`` seconds."""
        now = {k: _status(self.spark, uri) for k, (uri, _, _) in seen.items()}
        while settle > 0:
            newest = max((st[1] for st in now.values() if st), default=0)
            wait = min(settle, settle - (time.time() * 1000 - newest) / 1000)
            if wait <= 0:
                return now
            if time.monotonic() + wait > deadline:
                youngest = max((k for k in now if now[k]), key=lambda k: now[k][1])
                self._give_up(seen[youngest][0], batch_id)
            time.sleep(wait)
            again = {k: _status(self.spark, uri) for k, (uri, _, _) in seen.items()}
            if again == now:  # unchanged across the wait, whatever the file system's clock says
                return now
            now = again
        return now

    def _give_up(self, uri: str, batch_id: int) -> None:
        raise RuntimeError(
            f"stream batch {batch_id}: {_shown(uri)} is still being written after {SETTLE_LIMIT_SECONDS:.0f} s; "
            "land files atomically (write a temporary name such as <name>.tmp, or another folder, then rename it into "
            "the landing folder); the batch is not committed, and the next start reads the file again"
        )

    def whole(self, batch: DataFrame, batch_id: int) -> tuple[DataFrame, int]:
        """``batch`` with every file in it whole and settled, and how many files had to be read again."""
        seen: dict[tuple[str, str, str], tuple[str, int | None, int]] = self._read(batch)
        origins = {k: {v[0]} for k, v in seen.items()}
        listed = _listed_by_spark(self.ckpt, batch_id)
        if listed is None and not self.warned_no_log:
            # without Spark's list, a file that gave no rows when read cannot be checked
            log.warning(
                "stream: no file list of batch %d in %s; files without rows are not checked", batch_id, self.ckpt
            )
            self.warned_no_log = True
        for uri, mtime in (listed or {}).items():
            if not is_temporary(_key(uri)[2].rsplit("/", 1)[-1]):
                seen.setdefault(_key(uri), (uri, None, mtime))
        deadline = time.monotonic() + SETTLE_LIMIT_SECONDS
        again: set[tuple[str, str, str]] = set()
        while True:
            # a file that changed again after it was read again is waited for, even with no settle time
            now = self._still(seen, deadline, batch_id, max(self.settle, 1.0) if again else self.settle)
            stale = {
                k: now[k]
                for k, (_, size, mtime) in seen.items()
                if now[k] is not None and (now[k][1] != mtime or (size is not None and now[k][0] != size))
            }
            if not stale:
                break
            if time.monotonic() > deadline:
                self._give_up(seen[next(iter(stale))][0], batch_id)
            for k, (size, _) in stale.items():
                uri, was, _ = seen[k]
                then = "no rows" if was is None else f"{was:,} bytes"
                self.echo(
                    f"batch {batch_id}: {_shown(uri)} changed after Spark listed it ({then}, now {size:,} bytes): "
                    "read again whole; land files atomically (write <name>.tmp, then rename it)"
                )
            uris = [seen[k][0] for k in stale]
            fresh = _landed(_file_reader(self.spark.read, self.cfg).load(uris))
            read = self._read(fresh)
            drop = sorted({o for k in stale for o in origins.get(k, ())})
            batch = batch.where(~F.col("_origin").isin(drop)).unionByName(fresh)
            for k, (_, mtime) in stale.items():
                seen[k] = read.get(k, (seen[k][0], None, mtime))
                origins.setdefault(k, set()).add(seen[k][0])
            again |= set(stale)
        for k, (uri, _, _) in seen.items():
            if now[k] is None:
                self.echo(
                    f"batch {batch_id}: {_shown(uri)} was removed after Spark listed it; its rows as read are scored"
                )
        self.pending = seen
        return batch, len(again)

    def scored_now(self, batch_id: int) -> int:
        """Report the files of the batch just written that changed while it was scored, and remember the others."""
        batch = {k: (uri, size, mtime, batch_id) for k, (uri, size, mtime) in self.pending.items()}
        self.pending = {}
        changed = self.check_scored(batch_id, batch)
        for k, entry in batch.items():
            self.scored[k] = entry
            self.scored.move_to_end(k)
        while len(self.scored) > _REMEMBERED_FILES:
            self.scored.popitem(last=False)
        return changed

    def check_scored(self, batch_id: int | None = None, files: dict | None = None) -> int:
        """Report the files scored by this process (or ``files``) that changed since; returns how many."""
        files = self.scored if files is None else files
        changed = 0
        for k, (uri, size, mtime, scored_in) in list(files.items()):
            st = _status(self.spark, uri)
            if st is None or (st[1] == mtime and (size is None or st[0] == size)):
                continue
            del files[k]
            changed += 1
            then = "no rows" if size is None else f"{size:,} bytes"
            self.echo(
                f"{'stream' if batch_id is None else f'batch {batch_id}'}: {_shown(uri)} changed after batch "
                f"{scored_in} scored it ({then}, now {st[0]:,} bytes); the stream does not read a file twice: "
                "land the rows it did not score in a new file, atomically (write <name>.tmp, then rename it)"
            )
        return changed


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
    failed: list[BaseException] = []
    files = _Files(spark, cfg, ckpt, echo) if "_file_size" in df.columns else None

    def written(table: str, key: str) -> bool:
        if not spark.catalog.tableExists(table) or "batch_key" not in spark.table(table).columns:
            return False
        return not spark.table(table).where(F.col("batch_key") == key).isEmpty()

    marks = Watermarks(ckpt)
    labels = model_labels(cfg, model) if cfg.trends.enabled else []

    def trends(run: RunRecorder, key: str, batch_id: int) -> None:
        """The batch's entities, windows and closed windows' alerts: keyed writes, so a replay repeats nothing."""
        with run.stage("trends"):
            step = update_trends(
                spark,
                cfg,
                batch=spark.table(predictions).where(F.col("batch_key") == key),
                scope=F.col("batch_key").startswith(f"{sid}:"),
                key=key,
                stage="stream",
                run_id=run.run_id,
                labels=labels,
                watermark_before=marks.before(batch_id),
                streaming=True,
                echo=echo,
            )
        marks.save(batch_id, step.watermark)
        record_trends(run, step)
        _fault("after_trends", batch_id)
        wm = f", watermark {step.watermark:%Y-%m-%d %H:%M}" if step.watermark else ""
        new = step.published.new if step.published else 0
        echo(
            f"batch {batch_id}: trends: {step.windows_updated:,} windows updated, {step.windows_closed:,} closed, "
            f"{step.late_rows:,} late rows, {new:,} new alerts{wm}"
        )

    def process(batch: DataFrame, batch_id: int) -> None:
        t0 = time.perf_counter()
        key = f"{sid}:{batch_id}"
        if written(predictions, key):
            echo(f"batch {batch_id}: already written before a restart, skipped")
            if cfg.trends.enabled:  # the trends may not have been: they are keyed, so doing them again is safe
                run = RunRecorder(spark, cfg, "stream")
                run.label("stream.id", sid)
                run.label("stream.replayed_batch", key)
                try:
                    trends(run, key, batch_id)
                except BaseException as exc:
                    failed.append(exc)
                    run.finish("failed", f"{type(exc).__name__}: {exc}"[:2000])
                    raise
                run.finish("ok")
            return
        changed_before = files.check_scored(batch_id) if files else 0
        try:
            batch, read_again = files.whole(batch, batch_id) if files else (batch, 0)
        except BaseException as exc:
            failed.append(exc)
            raise
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
        arrival = datetime.now(timezone.utc).replace(tzinfo=None)  # the batch's rows arrived now (no time column)
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
                    arrival=arrival,
                )
            # the batch wrote through its own session: this one's cached listing of the tables is stale
            for table in (predictions, quarantine):
                if spark.catalog.tableExists(table):
                    spark.catalog.refreshTable(table)
            record(run, res, "stream")
            if cfg.trends.enabled:
                trends(run, key, batch_id)
            run.count("rows_in", total)
            if total != res.rows_in:
                raise RuntimeError(f"stream batch {batch_id} lost rows: {total} read, {res.rows_in} accounted for")
            if files:
                run.count("stream.files_read_again", read_again)
                run.count("stream.files_changed_after_scoring", changed_before + files.scored_now(batch_id))
            latency = time.perf_counter() - t0
            run.measure("stream.batch_seconds", latency)
        except BaseException as exc:
            failed.append(exc)
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
        # the batch's own error says what went wrong; Spark's wraps it in a Python traceback
        first = str(failed[-1] if failed else exc).strip().splitlines()
        raise RuntimeError(f"stream stopped by an error: {first[0] if first else type(exc).__name__}") from exc
    finally:
        if query.isActive:
            query.stop()
    if files:
        files.check_scored()
    return len(done)
