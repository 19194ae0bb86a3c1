"""One path from text to prediction: a saved model is cleaner → featurizer → head, as a ``PipelineModel``.

Every model version the pipeline trains is a pyspark.ml ``PipelineModel``
whose first stage is the :class:`~dmine_spark.prepare.clean.TextCleaner` that
cleaned its training text (in place, on ``text``), then an
:class:`~dmine_spark.features.embed.Embedder` (or the feature pipeline), then
the fitted head. ``PipelineModel.load(path).transform(df)`` therefore scores
any frame with a ``text`` column. Training, batch and streaming scoring and
monitoring all score through :func:`predict_clean`, which runs the stages
after the cleaner on rows the clean step already cleaned.
"""

from __future__ import annotations

from pyspark.ml import PipelineModel, Transformer
from pyspark.sql import DataFrame

from dmine_spark.features.embed import Embedder, EmbedReport
from dmine_spark.mine.answers import AnswerMatcher
from dmine_spark.mine.openset import OpenSetHead
from dmine_spark.prepare.clean import TextCleaner

__all__ = ["text_model", "cleaner_of", "embedder_of", "head_of", "open_set_of", "with_cache", "predict_clean"]


def text_model(cleaner: TextCleaner, *stages: Transformer) -> PipelineModel:
    """The ``PipelineModel`` of a model version: ``cleaner`` then ``stages`` (featurizers, then the head)."""
    return PipelineModel(stages=[cleaner, *stages])


def cleaner_of(model: PipelineModel) -> TextCleaner | None:
    """The model's :class:`TextCleaner` (its first stage), if it has one."""
    first = model.stages[0] if model.stages else None
    return first if isinstance(first, TextCleaner) else None


def embedder_of(model: PipelineModel) -> Embedder | None:
    """The model's :class:`Embedder`, if it embeds text."""
    return next((s for s in model.stages if isinstance(s, Embedder)), None)


def head_of(model: PipelineModel) -> Transformer:
    """The model's head: the classifier, clusterer or regressor (the last stage before open-set and answer stages)."""
    return next(s for s in reversed(model.stages) if not isinstance(s, (OpenSetHead, AnswerMatcher)))


def open_set_of(model: PipelineModel) -> OpenSetHead | None:
    """The model's open-set stage (``classify.open_set``), if it has one."""
    return next((s for s in model.stages if isinstance(s, OpenSetHead)), None)


def with_cache(model: PipelineModel, cache_table: str) -> PipelineModel:
    """A copy of ``model`` whose embedder reads and fills ``cache_table`` (the scoring pipeline's cache)."""
    stages = [s.copy({s.cacheTable: cache_table}) if isinstance(s, Embedder) else s for s in model.stages]
    return PipelineModel(stages=stages)


def predict_clean(model: PipelineModel, clean: DataFrame, *, run_id: str = "") -> tuple[DataFrame, EmbedReport | None]:
    """Score rows whose ``text`` the model's cleaner (or the clean step) already cleaned.

    Parameters
    ----------
    model : PipelineModel
        A model version (:func:`text_model`).
    clean : DataFrame
        Rows with the cleaned ``text`` (and whatever else the featurizer reads).
    run_id : str
        Recorded with the vectors the embedder adds to its cache.

    Returns
    -------
    (DataFrame, EmbedReport or None)
        ``clean`` with the head's outputs (and the featurizer's: ``embedding``),
        and the embedding cache's report (None when the model embeds nothing or has no cache).
    """
    stages = model.stages[1:] if cleaner_of(model) is not None else model.stages
    report = None
    out = clean
    for stage in stages:
        if isinstance(stage, Embedder):
            out, report = stage.embed(out, run_id=run_id)
        else:
            out = stage.transform(out)
    return out, report
