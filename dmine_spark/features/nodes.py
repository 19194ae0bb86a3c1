"""The features step's nodes: the feature table, and the embedding of clean texts into the cache.

Nodes compute; they read and write no catalog table and record nothing
(:mod:`dmine_spark.prepare.nodes` says more). The embedding cache is the one
store a node touches: it is a memo of the encoder, shared by every command,
and :class:`~dmine_spark.features.embed.EmbeddingCache` is its only door.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from pyspark import StorageLevel
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from dmine_spark.config import ConfigError, FeaturesSection
from dmine_spark.features.embed import EmbeddingCache, EmbedReport
from dmine_spark.features.encoder import ModelSpec
from dmine_spark.features.tabular import feature_table, fit_features

__all__ = ["FeaturesOutput", "EmbedOutput", "features", "embed"]


@dataclass
class FeaturesOutput:
    """The fitted feature pipeline and the feature table of every clean row (``id``, family vectors, ``features``, ``split``)."""

    model: PipelineModel
    table: DataFrame
    _rows: DataFrame

    def release(self) -> None:
        self._rows.unpersist()


def features(clean: DataFrame, raw: DataFrame | None, section: FeaturesSection, *, has_label: bool) -> FeaturesOutput:
    """Fit the feature pipeline on ``section.fit_split`` and apply it to every clean row.

    Text features use the cleaned text; categorical, numeric and time
    columns come from ``raw`` (joined on the row id; needed only when the
    section names such columns).

    Raises
    ------
    ConfigError
        A configured column is not in any source, or the fit split does not exist.
    """
    tabular = [*section.categorical, *section.numeric, *section.time]
    rows = clean.select("id", "split", "text", "label")
    if tabular:
        if raw is None:
            raise ValueError("features: tabular columns are configured, so the raw rows are needed")
        missing = [c for c in tabular if c not in raw.columns]
        if missing:
            raise ConfigError(f"features: column {missing[0]!r} is not declared in any source schema")
        rows = rows.join(raw.select("id", *tabular), "id")
    splits = {r["split"] for r in rows.select("split").distinct().collect()}
    if section.fit_split not in splits:
        raise ConfigError(f"features.fit_split: split {section.fit_split!r} not among {sorted(splits)}")
    label = "label" if has_label else None
    rows = rows.persist(StorageLevel.MEMORY_AND_DISK)
    model = fit_features(rows.where(F.col("split") == section.fit_split), section, label_col=label)
    table = feature_table(model, rows, label_col=label).join(rows.select("id", "split"), "id")
    return FeaturesOutput(model=model, table=table, _rows=rows)


@dataclass
class EmbedOutput:
    """What embedding the clean texts did, and the resolved model settings the vectors are keyed by."""

    report: EmbedReport
    spec: ModelSpec


def embed(
    clean: DataFrame,
    cache: EmbeddingCache,
    *,
    progress: Callable[[int], AbstractContextManager[object]] | None = None,
    run_id: str = "",
) -> EmbedOutput:
    """Embed the clean texts the cache lacks (identical texts once), adding them to it."""
    return EmbedOutput(cache.fill(clean.select("text"), "text", progress=progress, run_id=run_id), cache.spec)
