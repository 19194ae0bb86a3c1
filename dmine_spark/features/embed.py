"""The Spark adapter of the encoder: an iterator pandas UDF and a pyspark.ml stage.

The UDF carries only the :class:`~dmine_spark.features.encoder.ModelSpec`
(a few strings) to the executors; each Python worker builds its encoder on
first use through :func:`~dmine_spark.features.encoder.get_encoder` and keeps
it for every later task, since dmine sessions turn Python worker reuse on.
No model object is ever pickled into a closure or broadcast.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param.shared import HasInputCol, HasOutputCol, Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, FloatType, StringType

from dmine_spark.features.encoder import DEFAULT_MODEL, ModelSpec

__all__ = ["embed_udf", "embed_column", "Embedder"]


def _task_cpus() -> int:
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return max(1, int(ctx.cpus())) if ctx is not None else 1


def embed_udf(spec: ModelSpec, batch_size: int = 64):  # noqa: ANN201 - a pandas_udf object
    """Build the pandas UDF that embeds a string column with ``spec``'s model."""

    def embed_batches(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        from dmine_spark.features.encoder import get_encoder

        # torch threads follow spark.task.cpus, so concurrent tasks never oversubscribe the cores
        encoder = get_encoder(spec, num_threads=_task_cpus())
        for texts in batches:
            vectors = encoder.encode(texts, batch_size=batch_size)
            yield pd.Series(list(vectors), index=texts.index, dtype=object)

    return F.pandas_udf(embed_batches, ArrayType(FloatType()))


def embed_column(col: Column | str, spec: ModelSpec, batch_size: int = 64) -> Column:
    """Column of float32 vectors (``array<float>``) for the text column ``col``."""
    return embed_udf(spec, batch_size)(F.col(col) if isinstance(col, str) else col)


class Embedder(Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable):
    """pyspark.ml stage: adds an embedding column computed by a local BERT-family model."""

    model = Param(Params._dummy(), "model", "installed model package or local model directory", TypeConverters.toString)
    maxLength = Param(Params._dummy(), "maxLength", "tokens kept per text", TypeConverters.toInt)
    pooling = Param(Params._dummy(), "pooling", "'mean' or 'cls'", TypeConverters.toString)
    normalize = Param(Params._dummy(), "normalize", "L2-normalise vectors", TypeConverters.toBoolean)
    batchSize = Param(Params._dummy(), "batchSize", "texts per model call", TypeConverters.toInt)
    device = Param(Params._dummy(), "device", "'auto', 'cpu' or 'cuda'", TypeConverters.toString)

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
        return dataset.withColumn(out_col, embed_column(in_col, self.spec(), self.getOrDefault("batchSize")))
