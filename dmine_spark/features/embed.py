"""The Spark adapter of the encoder: an iterator pandas UDF and a pyspark.ml stage.

The UDF carries only the :class:`~dmine_spark.features.encoder.ModelSpec`
(a few strings) to the executors; each Python worker builds its encoder on
first use through :func:`~dmine_spark.features.encoder.get_encoder` and keeps
it for every later task, since dmine sessions turn Python worker reuse on.
No model object is ever pickled into a closure or broadcast.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace

import pandas as pd
from pyspark import Accumulator, AccumulatorParam, StorageLevel, keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param.shared import HasInputCol, HasOutputCol, Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType, StringType

from dmine_spark.analyze.tables import merge_new_keys
from dmine_spark.features.encoder import DEFAULT_MODEL, ModelSpec

__all__ = [
    "embed_udf",
    "embed_column",
    "resolve_spec",
    "embed_missing",
    "embed_partitions",
    "EmbedReport",
    "StatsParam",
    "Embedder",
]


def _task_cpus() -> int:
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return max(1, int(ctx.cpus())) if ctx is not None else 1


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
    """Adds dictionaries of numbers key by key: encoder telemetry from every worker."""

    def zero(self, value: dict[str, float]) -> dict[str, float]:
        return {}

    def addInPlace(self, a: dict[str, float], b: dict[str, float]) -> dict[str, float]:  # noqa: N802
        for k, v in b.items():
            a[k] = a.get(k, 0) + v
        return a


def embed_udf(spec: ModelSpec, batch_size: int = 64, max_tokens: int = 2048, stats: Accumulator | None = None):  # noqa: ANN201
    """Build the pandas UDF that embeds a string column with ``spec``'s model.

    ``stats``, an accumulator made with :class:`StatsParam`, receives rows,
    tokens, padding, model loads and seconds from every task.
    """

    def embed_batches(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        from dmine_spark.features.encoder import get_encoder, is_loaded

        encoder = None
        for texts in batches:
            if encoder is None:  # loaded on the first batch, so an empty partition never loads a model
                device = _task_device(spec)
                fresh = not is_loaded(spec, device)
                # torch threads follow spark.task.cpus, so concurrent tasks never oversubscribe the cores
                encoder = get_encoder(spec, num_threads=_task_cpus(), device=device)
                if stats is not None and fresh:
                    stats.add({"model_loads": 1, "load_seconds": encoder.stats.load_seconds})
            before = encoder.stats.copy()
            vectors = encoder.encode(texts, batch_size=batch_size, max_tokens=max_tokens)
            if stats is not None:
                d = encoder.stats.minus(before)
                stats.add(
                    {
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
            yield pd.Series(list(vectors), index=texts.index, dtype=object)

    return F.pandas_udf(embed_batches, ArrayType(FloatType()))


def embed_column(
    col: Column | str, spec: ModelSpec, batch_size: int = 64, max_tokens: int = 2048, stats: Accumulator | None = None
) -> Column:
    """Column of float32 vectors (``array<float>``) for the text column ``col``."""
    return embed_udf(spec, batch_size, max_tokens, stats)(F.col(col) if isinstance(col, str) else col)


def resolve_spec(spark: SparkSession, spec: ModelSpec) -> ModelSpec:
    """Fix ``device`` and ``precision`` on the driver, so cache keys name what executors will run.

    A GPU is used when Spark schedules GPUs to tasks, or in local mode when
    this machine has one; ``auto`` precision is then bf16, else fp32.
    """
    if spec.device == "auto":
        conf = spark.sparkContext.getConf()
        gpu = float(conf.get("spark.task.resource.gpu.amount", "0") or 0) > 0
        if not gpu and spark.sparkContext.master.startswith("local"):
            import torch

            gpu = torch.cuda.is_available()
        spec = replace(spec, device="cuda" if gpu else "cpu")
    if spec.precision == "auto":
        spec = replace(spec, precision="bf16" if spec.device == "cuda" else "fp32")
    return spec


@dataclass
class EmbedReport:
    """What one cached embedding pass did."""

    rows: int
    unique_texts: int
    embedded: int
    seconds: float
    stats: dict[str, float] = field(default_factory=dict)

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
        & (F.col("pooling") == spec.pooling)
        & (F.col("normalized") == spec.normalize)
    )


def text_key(col: Column | str) -> Column:
    """The cache key of a text: SHA-256 of its exact characters."""
    return F.sha2(F.col(col) if isinstance(col, str) else col, 256)


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


def embed_missing(
    spark: SparkSession,
    texts: DataFrame,
    spec: ModelSpec,
    cache_table: str,
    *,
    batch_size: int = 64,
    max_tokens: int = 2048,
    records_per_partition: int = 2000,
    progress: Callable[[int], AbstractContextManager[object]] | None = None,
    run_id: str = "",
) -> EmbedReport:
    """Embed the distinct texts of ``texts.text`` that ``cache_table`` lacks, and append them to it.

    Identical texts are embedded once; texts already cached under the same
    model, precision, length and pooling are not embedded at all.
    """
    t0 = time.perf_counter()
    keyed = texts.select(text_key("text").alias("text_key"), "text")
    # one pass: the distinct texts, how many rows share each, and whether the cache has them
    status = keyed.groupBy("text_key").agg(F.first("text").alias("text"), F.count(F.lit(1)).alias("n"))
    if spark.catalog.tableExists(cache_table):
        known = spark.table(cache_table).where(cache_filter(spec)).select("text_key", F.lit(True).alias("cached"))
        status = status.join(known.dropDuplicates(["text_key"]), "text_key", "left")
    else:
        status = status.withColumn("cached", F.lit(None).cast("boolean"))
    status = status.persist(StorageLevel.MEMORY_AND_DISK)
    acc = spark.sparkContext.accumulator({}, StatsParam())
    try:
        counts = status.agg(
            F.count(F.lit(1)).alias("unique"),
            F.sum("n").alias("rows"),
            F.count(F.when(F.col("cached").isNull(), 1)).alias("missing"),
        ).first()
        n_unique, n_rows, n_missing = int(counts["unique"]), int(counts["rows"] or 0), int(counts["missing"])
        missing = status.where(F.col("cached").isNull()).select("text_key", "text")
        if n_missing:
            sc = spark.sparkContext
            slots = sc.defaultParallelism // max(1, int(sc.getConf().get("spark.task.cpus", "1") or 1))
            parts = embed_partitions(n_missing, records_per_partition, slots)
            spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(min(records_per_partition, 10000)))
            out = missing.repartition(parts).select(
                "text_key",
                embed_column("text", spec, batch_size, max_tokens, acc).alias("embedding"),
                F.lit(spec.model).alias("model"),
                F.lit(spec.precision).alias("precision"),
                F.lit(spec.max_length).alias("max_length"),
                F.lit(spec.pooling).alias("pooling"),
                F.lit(spec.normalize).alias("normalized"),
                F.lit(run_id).alias("run_id"),
                F.current_timestamp().alias("created_at"),
            )
            with progress(n_missing) if progress else nullcontext():
                # Delta: MERGE on the full key, so runs that embed the same texts at once never store one twice
                merge_new_keys(out, cache_table, ["text_key", *CACHE_KEY_COLUMNS])
    finally:
        status.unpersist()
    return EmbedReport(
        rows=n_rows,
        unique_texts=n_unique,
        embedded=n_missing,
        seconds=time.perf_counter() - t0,
        stats=dict(acc.value),
    )


class Embedder(Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable):
    """pyspark.ml stage: adds an embedding column computed by a local BERT-family model."""

    model = Param(Params._dummy(), "model", "installed model package or local model directory", TypeConverters.toString)
    maxLength = Param(Params._dummy(), "maxLength", "tokens kept per text", TypeConverters.toInt)
    pooling = Param(Params._dummy(), "pooling", "'mean' or 'cls'", TypeConverters.toString)
    normalize = Param(Params._dummy(), "normalize", "L2-normalise vectors", TypeConverters.toBoolean)
    batchSize = Param(Params._dummy(), "batchSize", "texts per model call", TypeConverters.toInt)
    device = Param(Params._dummy(), "device", "'auto', 'cpu' or 'cuda'", TypeConverters.toString)
    precision = Param(Params._dummy(), "precision", "'auto', 'fp32', 'bf16', 'fp16' or 'int8'", TypeConverters.toString)
    maxTokens = Param(Params._dummy(), "maxTokens", "padded tokens per model call", TypeConverters.toInt)
    backend = Param(Params._dummy(), "backend", "'auto', 'torch', 'openvino' or 'onnxruntime'", TypeConverters.toString)

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
    ) -> "Embedder":
        return self._set(**self._input_kwargs)

    def spec(self) -> ModelSpec:
        """The model spec these Params describe (validated)."""
        return ModelSpec(
            model=self.getOrDefault("model"),
            max_length=self.getOrDefault("maxLength"),
            pooling=self.getOrDefault("pooling"),
            normalize=self.getOrDefault("normalize"),
            device=self.getOrDefault("device"),
            precision=self.getOrDefault("precision"),
            backend=self.getOrDefault("backend"),
        )

    def _transform(self, dataset: DataFrame) -> DataFrame:
        in_col, out_col = self.getInputCol(), self.getOutputCol()
        fields = {f.name: f.dataType for f in dataset.schema.fields}
        if in_col not in fields:
            raise ValueError(f"Embedder: input column {in_col!r} not found in {sorted(fields)}")
        if not isinstance(fields[in_col], StringType):
            raise TypeError(f"Embedder: input column {in_col!r} must be a string, got {fields[in_col].simpleString()}")
        if out_col in fields:
            raise ValueError(f"Embedder: output column {out_col!r} already exists")
        spec = resolve_spec(dataset.sparkSession, self.spec())
        col = embed_column(in_col, spec, self.getOrDefault("batchSize"), self.getOrDefault("maxTokens"))
        return dataset.withColumn(out_col, col)
