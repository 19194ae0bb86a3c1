"""What a stage's wiring can ask the runner for: tables by layer, the sources, the embedding cache, the stages of a model."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from functools import cached_property

from pyspark.sql import DataFrame, SparkSession

from dmine_spark.analyze.runs import RunRecorder
from dmine_spark.config import Layer, PipelineConfig
from dmine_spark.features.embed import Embedder, EmbeddingCache, cache_table, check_model, spec_from_config
from dmine_spark.io.tables import read_table
from dmine_spark.mine.store import ModelStore
from dmine_spark.prepare.clean import TextCleaner
from dmine_spark.prepare.ingest import IngestResult, read_sources
from dmine_spark.spark.progress import Progress

__all__ = ["StageContext"]


class StageContext:
    """One stage's view of the run: the session, the config, the run's records and the stores."""

    def __init__(self, spark: SparkSession, cfg: PipelineConfig, run: RunRecorder, *, progress: bool = True) -> None:
        self.spark = spark
        self.cfg = cfg
        self.run = run
        self.show_progress = progress

    @cached_property
    def store(self) -> ModelStore:
        """The pipeline's model store (``<work_dir>/models``)."""
        return ModelStore(self.cfg.paths.models)

    def read(self, layer: Layer) -> DataFrame:
        """This task's table of ``layer``, or a one-line error saying which stage writes it."""
        return read_table(self.spark, self.cfg.table(layer))

    def sources(self) -> dict[str, IngestResult]:
        """Every configured source, read with its declared schema and split into rows and quarantine."""
        return read_sources(self.spark, self.cfg)

    @cached_property
    def cache(self) -> EmbeddingCache:
        """The embedding cache of this pipeline's ``embed`` settings."""
        e = self.cfg.embed
        check_model(e.model)
        return EmbeddingCache(
            self.spark,
            cache_table(self.cfg),
            spec_from_config(e),
            batch_size=e.batch_size,
            max_tokens=e.max_tokens,
            records_per_partition=e.records_per_partition,
        )

    def embedded(self, rows: DataFrame) -> DataFrame:
        """``rows`` (clean rows) with their cached ``embedding``; rows the cache lacks are left out.

        Raises
        ------
        LookupError
            When the embed stage has not filled the cache yet.
        """
        if not self.cache.exists():
            raise LookupError(
                f"table {self.cache.table} does not exist yet; run the embed stage first (or `dmine run`)"
            )
        return self.cache.lookup(rows).where("embedding IS NOT NULL")

    def cleaner(self) -> TextCleaner:
        """The cleaner of the clean step: the first stage of every model version."""
        return TextCleaner.from_config(self.cfg.clean, self.cfg.pii, inputCol="text", outputCol="text")

    def embedder(self) -> Embedder:
        """The embedder of the embed step, reading and filling the pipeline's cache."""
        return Embedder.from_config(self.cfg.embed, cache_table=cache_table(self.cfg))

    def progress(self, label: str) -> Callable[[int], AbstractContextManager[object]]:
        """A live progress line for ``label``'s Spark jobs, shown when the command is not quiet."""
        return lambda n: Progress(self.spark.sparkContext, label, n, enabled=self.show_progress)
