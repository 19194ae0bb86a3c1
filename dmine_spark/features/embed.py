"""The Spark adapter of the encoder: an iterator pandas UDF, the embedding cache and a pyspark.ml stage.

The UDF carries only the :class:`~dmine_spark.features.encoder.ModelSpec`
(a few strings) to the executors; each Python worker builds its encoder on
first use through :func:`~dmine_spark.features.encoder.get_encoder` and keeps
it for every later task, since dmine sessions turn Python worker reuse on.
No model object is ever pickled into a closure or broadcast.

:class:`EmbeddingCache` owns the cache table: it embeds only the texts the
table lacks (:meth:`~EmbeddingCache.fill`) and joins vectors back by the
text's key (:meth:`~EmbeddingCache.lookup`, keyed by
:func:`~dmine_spark.prepare.clean.text_key`). The embed stage, training,
batch and streaming scoring, monitoring and the :class:`Embedder` stage of a
saved model all go through it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark import Accumulator, AccumulatorParam, StorageLevel, keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param.shared import HasInputCol, HasOutputCol, Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DataType, FloatType, StringType

from dmine_spark.config import ConfigError, EmbedConfig, Layer, PipelineConfig
from dmine_spark.features.encoder import (
    DEFAULT_MODEL,
    SPARKNLP_BACKENDS,
    ModelSpec,
    model_archive_name,
    resolve_model_dir,
)
from dmine_spark.io.schema import ColumnSpec, SchemaChecked
from dmine_spark.io.tables import merge_new_keys
from dmine_spark.prepare.clean import text_key

log = logging.getLogger(__name__)

__all__ = [
    "embed_udf",
    "shipped_model_dir",
    "embed_column",
    "encode_on_driver",
    "resolve_spec",
    "spec_from_config",
    "cache_table",
    "check_model",
    "embed_partitions",
    "cache_filter",
    "CACHE_KEY_COLUMNS",
    "EmbedReport",
    "EmbeddingCache",
    "covered_seconds",
    "StatsParam",
    "Embedder",
]


def _task_cpus() -> int:
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return max(1, int(ctx.cpus())) if ctx is not None else 1


def shipped_model_dir(model: str) -> Path | None:
    """On a Spark executor, the copy of ``model`` shipped with ``--archives`` (see ``spark-submit.sh``), if any."""
    from pyspark import SparkFiles

    if not getattr(SparkFiles, "_is_running_on_worker", False):
        return None
    d = Path(SparkFiles.getRootDirectory()) / model_archive_name(model)
    return d if (d / "config.json").is_file() else None


def _worker_spec(spec: ModelSpec) -> ModelSpec:
    """``spec`` as this worker loads it: from the shipped copy of the model when there is one."""
    shipped = shipped_model_dir(spec.model)
    return replace(spec, model=str(shipped)) if shipped is not None else spec


def _task_device(spec: ModelSpec) -> str | None:
    """The GPU Spark assigned to this task (``cuda:<address>``), if any and if wanted."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is None or spec.device == "cpu":
        return None
    gpus = ctx.resources().get("gpu")
    if gpus is not None and gpus.addresses:
        return f"cuda:{gpus.addresses[0]}"
    return None


class StatsParam(AccumulatorParam):
    """Adds dictionaries key by key: encoder telemetry from every worker (numbers add up, lists join)."""

    def zero(self, value: dict[str, float]) -> dict[str, float]:
        return {}

    def addInPlace(self, a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
        for k, v in b.items():
            a[k] = a.get(k, [] if isinstance(v, list) else 0) + v
        return a


def covered_seconds(spans: list[tuple[float, float]]) -> float:
    """Seconds during which at least one of the ``(start, end)`` spans runs: tasks that overlap count once."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def embed_udf(spec: ModelSpec, batch_size: int = 64, max_tokens: int = 2048, stats: Accumulator | None = None):
    """Build the pandas UDF that embeds a string column with ``spec``'s model.

    The UDF returns ``array<float>`` vectors (``spec.max_length`` tokens,
    pooled, L2-normalised if ``spec.normalize``); a null text gets a null vector.
    ``stats``, an accumulator made with :class:`StatsParam`, receives rows,
    tokens, padding, model loads and seconds from every task, and the
    ``(start, end)`` clock times of each encoder call as ``encode_spans``.
    """

    def embed_batches(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        from dmine_spark.features.encoder import get_encoder, is_loaded

        encoder = None
        for texts in batches:
            if encoder is None:  # loaded on the first batch, so an empty partition never loads a model
                local = _worker_spec(spec)
                device = _task_device(local)
                fresh = not is_loaded(local, device)
                # torch threads follow spark.task.cpus, so concurrent tasks never oversubscribe the cores
                encoder = get_encoder(local, num_threads=_task_cpus(), device=device)
                if stats is not None and fresh:
                    stats.add({"model_loads": 1, "load_seconds": encoder.stats.load_seconds})
            before = encoder.stats.copy()
            present = texts.notna().to_numpy()
            started = time.time()  # a clock the driver can line up with other tasks' spans
            vectors = encoder.encode(texts[present], batch_size=batch_size, max_tokens=max_tokens)
            if stats is not None:
                d = encoder.stats.minus(before)
                stats.add(
                    {
                        # the encoder's own seconds from its start: the span never counts the call's overhead
                        "encode_spans": [(started, started + d.encode_seconds)],
                        "rows": d.rows,
                        "tokens": d.tokens,
                        "padded_tokens": d.padded_tokens,
                        "truncated": d.truncated,
                        "batches": d.batches,
                        "oom_splits": d.oom_splits,
                        "encode_seconds": d.encode_seconds,
                        f"rows@{encoder.device}/{encoder.precision}/{encoder.backend}": d.rows,
                    }
                )
            out: list[np.ndarray | None] = list(vectors)
            if not present.all():
                out = [None] * len(texts)
                for i, v in zip(np.flatnonzero(present), vectors, strict=True):
                    out[i] = v
            yield pd.Series(out, index=texts.index, dtype=object)

    return F.pandas_udf(embed_batches, ArrayType(FloatType()))


def encode_on_driver(spec: ModelSpec, texts: list[str], *, batch_size: int = 64, max_tokens: int = 2048) -> np.ndarray:
    """Embed a few ``texts`` in this process with the model settings ``spec`` (a resolved cache spec).

    For small sets the driver needs as a whole (reply templates, a query):
    the same model, pooling, normalisation and precision as the cache, so the
    vectors match the cache's; on the CPU when the driver has no GPU.

    Returns
    -------
    ndarray of shape (len(texts), dim), float32
    """
    from dmine_spark.features.encoder import get_encoder

    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    device = spec.device
    if device == "cuda":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return get_encoder(spec, device=device).encode(texts, batch_size=batch_size, max_tokens=max_tokens)


def embed_column(
    col: Column | str, spec: ModelSpec, batch_size: int = 64, max_tokens: int = 2048, stats: Accumulator | None = None
) -> Column:
    """Column of float32 vectors (``array<float>``) for the text column ``col``."""
    return embed_udf(spec, batch_size, max_tokens, stats)(F.col(col) if isinstance(col, str) else col)


def resolve_spec(spark: SparkSession, spec: ModelSpec) -> ModelSpec:
    """Fix ``device`` and ``precision`` on the driver, so cache keys name what executors will run.

    A GPU is used when Spark schedules GPUs to tasks, or in local mode when
    this machine has one; ``auto`` precision is then bf16. On CPUs ``auto`` is
    :func:`~dmine_spark.features.encoder.auto_precision` of an executor's CPU:
    bf16 where it computes bf16 natively (AMX or AVX512-BF16), else fp32. Local mode reads this
    machine's flags; on a cluster one single-task job reads an executor's (a
    cluster is taken to have one kind of CPU; if the job fails, fp32).
    """
    if spec.backend in SPARKNLP_BACKENDS:  # Spark NLP's ONNX engine: fp32 on the executors' CPUs
        return replace(spec, device="cpu", precision="fp32")
    if spec.device == "auto":
        conf = spark.sparkContext.getConf()
        gpu = float(conf.get("spark.task.resource.gpu.amount", "0") or 0) > 0
        if not gpu and spark.sparkContext.master.startswith("local"):
            import torch

            gpu = torch.cuda.is_available()
        spec = replace(spec, device="cuda" if gpu else "cpu")
    if spec.precision == "auto":
        spec = replace(spec, precision=_executor_auto_precision(spark, spec))
    return spec


def _executor_auto_precision(spark: SparkSession, spec: ModelSpec) -> str:
    """``auto_precision`` on an executor's CPU (this machine's in local mode)."""
    from dmine_spark.features.encoder import auto_precision

    if spec.device == "cuda" or spark.sparkContext.master.startswith("local"):
        return auto_precision(spec.device, spec.head)
    head = spec.head
    try:
        return spark.sparkContext.parallelize([0], 1).map(lambda _: _auto_precision_here(head)).first()
    except Exception as exc:  # an executor that cannot say runs what every CPU can
        log.warning("embed.precision auto: could not read an executor's CPU flags (%s); using fp32", exc)
        return "fp32"


def _auto_precision_here(head: str) -> str:
    from dmine_spark.features.encoder import auto_precision

    return auto_precision("cpu", head)


@dataclass
class EmbedReport:
    """What one cached embedding pass did.

    ``rows`` texts were offered, ``unique_texts`` distinct ones; the vectors
    of ``cached_rows`` rows were in the cache, and ``embedded`` texts were
    embedded now. ``seconds`` is the whole pass, lookups included;
    ``encode_wall_seconds`` the clock time during which at least one task
    was encoding (model loads and writes left out), so ``embedded /
    encode_wall_seconds`` is the encoding throughput. The encoders' own
    ``stats["encode_seconds"]`` add up every task's time instead.
    """

    rows: int
    unique_texts: int
    embedded: int
    seconds: float
    stats: dict[str, float] = field(default_factory=dict)
    cached_rows: int = 0
    encode_wall_seconds: float = 0.0

    @property
    def cache_hits(self) -> int:
        return self.unique_texts - self.embedded


CACHE_KEY_COLUMNS = ("model", "precision", "max_length", "pooling", "normalized")


def cache_filter(spec: ModelSpec) -> Column:
    """Rows of the embedding cache made with ``spec`` (resolved)."""
    return (
        (F.col("model") == spec.model)
        & (F.col("precision") == spec.precision)
        & (F.col("max_length") == spec.max_length)
        & (F.col("pooling") == spec.pooling_key)
        & (F.col("normalized") == spec.normalize)
    )


def embed_partitions(rows: int, records_per_partition: int, slots: int) -> int:
    """How many partitions the texts to embed are spread over: a whole number of waves of ``slots`` tasks.

    Each partition holds at most ``records_per_partition`` rows, and the count
    is rounded up to a multiple of the task slots, so no wave leaves a core
    idle: 6,000 texts at 2,000 a partition on 2 cores make 4 partitions, not
    3 (measured: 3 partitions took 27.9 s and 4 took 22.3 s, each with about
    20.5 s of encoding per core).
    """
    slots = max(1, slots)
    waves = max(1, math.ceil(rows / (records_per_partition * slots)))
    return waves * slots


def spec_from_config(e: EmbedConfig) -> ModelSpec:
    """The model spec of a pipeline's ``embed`` section (device and precision still unresolved)."""
    return ModelSpec(
        model=e.model,
        max_length=e.max_length,
        pooling=e.pooling,
        normalize=e.normalize,
        device=e.device,
        precision=e.precision,
        backend=e.backend,
    )


def cache_table(cfg: PipelineConfig) -> str:
    """The embedding cache of ``cfg``: the database's shared ``emb_cache``, or the task's scratch table
    (``embed.cache: false``)."""
    return cfg.table(Layer.EMB_CACHE if cfg.embed.cache else Layer.EMB_SCRATCH)


def check_model(model: str) -> None:
    """Fail in one line, before Spark works, when ``model`` is neither an installed package nor a local directory.

    Raises
    ------
    ConfigError
        Naming the model and how to install or point to it.
    """
    try:
        resolve_model_dir(model)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None


def _sql_literal(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


class EmbeddingCache:
    """Vectors of texts in a catalog table, keyed by the text and the model settings.

    The table has one row per (``text_key``, model, precision, max length,
    pooling, normalisation) with its ``embedding``; every task of a database
    shares it, so identical texts are embedded once and a re-run embeds nothing.

    Parameters
    ----------
    spark : SparkSession
    table : str
        The cache table, ``<database>.emb_cache`` (created on first fill).
    spec : ModelSpec
        The model settings; device and precision are resolved here
        (:func:`resolve_spec`), so the key names what executors run.
    batch_size, max_tokens : int
        Model call limits of the embedding UDF.
    records_per_partition : int
        Most texts per embedding task.
    """

    def __init__(
        self,
        spark: SparkSession,
        table: str,
        spec: ModelSpec,
        *,
        batch_size: int = 64,
        max_tokens: int = 2048,
        records_per_partition: int = 2000,
    ) -> None:
        self.spark = spark
        self.table = table
        self.spec = resolve_spec(spark, spec)
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.records_per_partition = records_per_partition

    def exists(self) -> bool:
        return self.spark.catalog.tableExists(self.table)

    def filter_sql(self) -> str:
        """The SQL condition for this spec's rows (the same test as :func:`cache_filter`)."""
        s = self.spec
        values = (s.model, s.precision, s.max_length, s.pooling_key, s.normalize)
        return " AND ".join(f"{c} = {_sql_literal(v)}" for c, v in zip(CACHE_KEY_COLUMNS, values, strict=True))

    def vectors(self) -> DataFrame:
        """``text_key, embedding``: one vector per text key under this spec."""
        return (
            self.spark.table(self.table)
            .where(cache_filter(self.spec))
            .select("text_key", "embedding")
            .dropDuplicates(["text_key"])
        )

    def fill(
        self,
        texts: DataFrame,
        text_col: str = "text",
        *,
        progress: Callable[[int], AbstractContextManager[object]] | None = None,
        run_id: str = "",
    ) -> EmbedReport:
        """Embed the distinct non-null texts of ``text_col`` that the table lacks, and add them to it.

        Returns
        -------
        EmbedReport
            Rows offered, distinct texts, how many were embedded now (the rest
            were cache hits), seconds, and the encoders' telemetry.
        """
        spark = self.spark
        spec = self.spec
        t0 = time.perf_counter()
        text = F.col(text_col)
        keyed = texts.where(text.isNotNull()).select(text_key(text).alias("text_key"), text.alias("text"))
        # one pass: the distinct texts, how many rows share each, and whether the cache has them
        status = keyed.groupBy("text_key").agg(F.first("text").alias("text"), F.count(F.lit(1)).alias("n"))
        if self.exists():
            known = self.vectors().select("text_key", F.lit(True).alias("cached"))
            status = status.join(known, "text_key", "left")
        else:
            status = status.withColumn("cached", F.lit(None).cast("boolean"))
        status = status.persist(StorageLevel.MEMORY_AND_DISK)
        acc = spark.sparkContext.accumulator({}, StatsParam())
        try:
            counts = status.agg(
                F.count(F.lit(1)).alias("unique"),
                F.sum("n").alias("rows"),
                F.count(F.when(F.col("cached").isNull(), 1)).alias("missing"),
                F.sum(F.when(F.col("cached").isNotNull(), F.col("n"))).alias("cached_rows"),
            ).first()
            n_unique, n_rows, n_missing = int(counts["unique"]), int(counts["rows"] or 0), int(counts["missing"])
            cached_rows = int(counts["cached_rows"] or 0)
            job_seconds = 0.0
            missing = status.where(F.col("cached").isNull()).select("text_key", "text")
            if n_missing:
                sc = spark.sparkContext
                slots = sc.defaultParallelism // max(1, int(sc.getConf().get("spark.task.cpus", "1") or 1))
                parts = embed_partitions(n_missing, self.records_per_partition, slots)
                spark.conf.set(
                    "spark.sql.execution.arrow.maxRecordsPerBatch", str(min(self.records_per_partition, 10000))
                )
                spread = missing.repartition(parts)
                if spec.backend in SPARKNLP_BACKENDS:
                    from dmine_spark.features.sparknlp import sparknlp_embed

                    vectors = sparknlp_embed(spread, "text", spec, "embedding", batch_size=self.batch_size)
                else:
                    vectors = spread.withColumn(
                        "embedding", embed_column("text", spec, self.batch_size, self.max_tokens, acc)
                    )
                out = vectors.select(
                    "text_key",
                    "embedding",
                    F.lit(spec.model).alias("model"),
                    F.lit(spec.precision).alias("precision"),
                    F.lit(spec.max_length).alias("max_length"),
                    F.lit(spec.pooling_key).alias("pooling"),
                    F.lit(spec.normalize).alias("normalized"),
                    F.lit(run_id).alias("run_id"),
                    F.current_timestamp().alias("created_at"),
                )
                job_started = time.perf_counter()
                with progress(n_missing) if progress else nullcontext():
                    # Delta: MERGE on the full key, so runs that embed the same texts at once never store one twice
                    merge_new_keys(out, self.table, ["text_key", *CACHE_KEY_COLUMNS])
                job_seconds = time.perf_counter() - job_started
        finally:
            status.unpersist()
        stats = dict(acc.value)
        spans = stats.pop("encode_spans", [])
        return EmbedReport(
            rows=n_rows,
            unique_texts=n_unique,
            embedded=n_missing,
            seconds=time.perf_counter() - t0,
            stats=stats,
            cached_rows=cached_rows,
            # Spark NLP's engine reports no spans: the embedding job's own seconds are the nearest measure
            encode_wall_seconds=covered_seconds(spans) if spans else job_seconds,
        )

    def lookup(self, df: DataFrame, text_col: str = "text", out_col: str = "embedding") -> DataFrame:
        """``df`` with ``out_col``: each row's cached vector (null where the text is null or not cached).

        The key is read from a ``text_key`` column when ``df`` has one (the
        clean table stores it), else derived with :func:`text_key`.
        """
        key = F.col("text_key") if "text_key" in df.columns else text_key(F.col(text_col))
        vectors = self.vectors().select(F.col("text_key").alias("_dmine_key"), F.col("embedding").alias(out_col))
        return df.join(vectors, key == F.col("_dmine_key"), "left").drop("_dmine_key")

    def create_view(self, view: str, clean_table: str) -> None:
        """``view``: ``id, split, embedding, model, precision`` of every row of ``clean_table`` (by its ``text_key``)."""
        spark = self.spark
        if spark.catalog.tableExists(view) and spark.catalog.getTable(view).tableType != "VIEW":
            spark.sql(f"DROP TABLE {view}")
        spark.sql(
            f"""CREATE OR REPLACE VIEW {view} AS
            SELECT c.id, c.split, e.embedding, e.model, e.precision
            FROM {clean_table} c
            JOIN (SELECT text_key, first(embedding) AS embedding, first(model) AS model,
                         first(precision) AS precision
                  FROM {self.table} WHERE {self.filter_sql()} GROUP BY text_key) e
            ON c.text_key = e.text_key"""
        )


class Embedder(SchemaChecked, Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable):
    """pyspark.ml stage: adds an ``array<float>`` embedding of ``inputCol`` from a local BERT-family model.

    With ``cacheTable`` set (a saved model version sets it to its pipeline's
    ``<database>.emb_cache``), the stage embeds only the texts that table
    lacks, adds them to it, and reads every vector from it
    (:class:`EmbeddingCache`); when the table's database does not exist in the
    session's catalog, it embeds directly. A null text gets a null vector.
    """

    model = Param(Params._dummy(), "model", "installed model package or local model directory", TypeConverters.toString)
    maxLength = Param(Params._dummy(), "maxLength", "tokens kept per text", TypeConverters.toInt)
    pooling = Param(Params._dummy(), "pooling", "'mean' or 'cls'", TypeConverters.toString)
    normalize = Param(Params._dummy(), "normalize", "L2-normalise vectors", TypeConverters.toBoolean)
    batchSize = Param(Params._dummy(), "batchSize", "texts per model call", TypeConverters.toInt)
    device = Param(Params._dummy(), "device", "'auto', 'cpu' or 'cuda'", TypeConverters.toString)
    precision = Param(Params._dummy(), "precision", "'auto', 'fp32', 'bf16', 'fp16' or 'int8'", TypeConverters.toString)
    maxTokens = Param(Params._dummy(), "maxTokens", "padded tokens per model call", TypeConverters.toInt)
    backend = Param(
        Params._dummy(),
        "backend",
        "'auto', 'torch', 'openvino', 'onnxruntime', 'sparknlp' or 'sparknlp-bert'",
        TypeConverters.toString,
    )
    cacheTable = Param(
        Params._dummy(),
        "cacheTable",
        "embedding cache table, <database>.emb_cache ('' for none)",
        TypeConverters.toString,
    )
    recordsPerPartition = Param(
        Params._dummy(), "recordsPerPartition", "most texts per embedding task", TypeConverters.toInt
    )

    @keyword_only
    def __init__(
        self,
        *,
        inputCol: str = "text",
        outputCol: str = "embedding",
        model: str = DEFAULT_MODEL,
        maxLength: int = 128,
        pooling: str = "mean",
        normalize: bool = True,
        batchSize: int = 64,
        device: str = "auto",
        precision: str = "auto",
        maxTokens: int = 2048,
        backend: str = "auto",
        cacheTable: str = "",
        recordsPerPartition: int = 2000,
    ) -> None:
        super().__init__()
        self._setDefault(
            inputCol="text",
            outputCol="embedding",
            model=DEFAULT_MODEL,
            maxLength=128,
            pooling="mean",
            normalize=True,
            batchSize=64,
            device="auto",
            precision="auto",
            maxTokens=2048,
            backend="auto",
            cacheTable="",
            recordsPerPartition=2000,
        )
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(
        self,
        *,
        inputCol: str = "text",
        outputCol: str = "embedding",
        model: str = DEFAULT_MODEL,
        maxLength: int = 128,
        pooling: str = "mean",
        normalize: bool = True,
        batchSize: int = 64,
        device: str = "auto",
        precision: str = "auto",
        maxTokens: int = 2048,
        backend: str = "auto",
        cacheTable: str = "",
        recordsPerPartition: int = 2000,
    ) -> Embedder:
        return self._set(**self._input_kwargs)

    @classmethod
    def from_config(
        cls, e: EmbedConfig, *, cache_table: str = "", inputCol: str = "text", outputCol: str = "embedding"
    ) -> Embedder:
        """The stage a pipeline's ``embed`` section describes, reading and filling ``cache_table``."""
        return cls(
            inputCol=inputCol,
            outputCol=outputCol,
            model=e.model,
            maxLength=e.max_length,
            pooling=e.pooling,
            normalize=e.normalize,
            batchSize=e.batch_size,
            device=e.device,
            precision=e.precision,
            maxTokens=e.max_tokens,
            backend=e.backend,
            cacheTable=cache_table,
            recordsPerPartition=e.records_per_partition,
        )

    def spec(self) -> ModelSpec:
        """The model spec these Params describe (validated, device and precision not yet resolved)."""
        return ModelSpec(
            model=self.getOrDefault("model"),
            max_length=self.getOrDefault("maxLength"),
            pooling=self.getOrDefault("pooling"),
            normalize=self.getOrDefault("normalize"),
            device=self.getOrDefault("device"),
            precision=self.getOrDefault("precision"),
            backend=self.getOrDefault("backend"),
        )

    def cache(self, spark: SparkSession) -> EmbeddingCache | None:
        """The :class:`EmbeddingCache` of ``cacheTable`` in ``spark``'s catalog, or None (no table set, or no database)."""
        table = self.getOrDefault("cacheTable")
        if not table:
            return None
        database = table.rsplit(".", 1)[0] if "." in table else None
        if database and not spark.catalog.databaseExists(database):
            return None
        return EmbeddingCache(
            spark,
            table,
            self.spec(),
            batch_size=self.getOrDefault("batchSize"),
            max_tokens=self.getOrDefault("maxTokens"),
            records_per_partition=self.getOrDefault("recordsPerPartition"),
        )

    def _input_columns(self) -> dict[str, ColumnSpec]:
        return {self.getInputCol(): ((StringType,), "a string")}

    def _output_columns(self) -> list[tuple[str, DataType]]:
        return [(self.getOutputCol(), ArrayType(FloatType()))]

    def embed(self, dataset: DataFrame, *, run_id: str = "") -> tuple[DataFrame, EmbedReport | None]:
        """:meth:`transform`, and the :class:`EmbedReport` of the cache fill (None without a cache)."""
        self.transformSchema(dataset.schema)
        in_col, out_col = self.getInputCol(), self.getOutputCol()
        cache = self.cache(dataset.sparkSession)
        if cache is not None:
            report = cache.fill(dataset.select(in_col), in_col, run_id=run_id)
            return cache.lookup(dataset, in_col, out_col), report
        spec = resolve_spec(dataset.sparkSession, self.spec())
        if spec.backend in SPARKNLP_BACKENDS:
            from dmine_spark.features.sparknlp import sparknlp_embed

            return sparknlp_embed(dataset, in_col, spec, out_col, batch_size=self.getOrDefault("batchSize")), None
        col = embed_column(in_col, spec, self.getOrDefault("batchSize"), self.getOrDefault("maxTokens"))
        return dataset.withColumn(out_col, col), None

    def _transform(self, dataset: DataFrame) -> DataFrame:
        return self.embed(dataset)[0]
