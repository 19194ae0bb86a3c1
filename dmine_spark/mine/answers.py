"""Answer matching: each classified question gets the best reply template of a library, or none.

A support team keeps reply templates, some written for one intent. For each
question, :func:`match_answers` picks a template in one of two ways:

* **by intent**: when the classifier predicted a known intent (not the
  open-set ``unknown``) with probability at least ``min_confidence`` and some
  templates answer that intent, the most similar of those templates;
* **by similarity**: otherwise the template whose embedding is most
  cosine-similar to the question's, when that similarity is at least
  ``min_score``; below it the question gets no answer (``answer_by = none``).
  A confident prediction of an intent no template answers is matched only
  against the general templates (those without an intent): a template written
  for another intent would answer the wrong question.

``answer_score`` is the cosine similarity of question and chosen template in
both cases. :class:`AnswerMatcher` is the pyspark.ml stage that does this in an
Arrow UDF, the library (ids, intents, embeddings) saved with the model version
and loaded once per Python worker; it runs after the classifier (and its
open-set stage), so ``run``, ``score`` and ``stream`` all answer.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
from pyspark import keyword_only
from pyspark.ml import Model
from pyspark.ml.functions import vector_to_array
from pyspark.ml.linalg import VectorUDT
from pyspark.ml.param.shared import HasFeaturesCol, HasPredictionCol, HasProbabilityCol, Param, Params, TypeConverters
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DataType, DoubleType, StringType, StructField, StructType

from dmine_spark.io.files import loaded_once, read_bytes, write_bytes
from dmine_spark.io.persist import Persisted
from dmine_spark.io.schema import ColumnSpec, SchemaChecked
from dmine_spark.mine.openset import unit_rows

__all__ = ["BY_INTENT", "BY_SIMILARITY", "BY_NONE", "match_answers", "AnswerMatcher"]

BY_INTENT, BY_SIMILARITY, BY_NONE = "intent", "similarity", "none"


def match_answers(
    questions: np.ndarray,
    predictions: Sequence[str | None],
    probabilities: Sequence[float | None],
    answers: np.ndarray,
    answer_intents: Sequence[str | None],
    *,
    min_confidence: float,
    min_score: float,
    unknown_label: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pick each question's template (see the module docstring).

    Parameters
    ----------
    questions : ndarray of shape (n, d)
        Question embeddings.
    predictions, probabilities : sequences of length n
        The classifier's label and its probability per question (None allowed).
    answers : ndarray of shape (m, d)
        Template embeddings.
    answer_intents : sequence of length m
        The intent each template answers, or None.
    min_confidence : float
        Probability a prediction needs for the intent route.
    min_score : float
        Cosine similarity the similarity route needs.
    unknown_label : str, optional
        The open-set label: never an intent to answer by.

    Returns
    -------
    (ndarray of int, ndarray of float, ndarray of object), each of shape (n,)
        The chosen template's position (-1 for none), the cosine similarity of
        question and template (NaN for none) and the route (``intent``,
        ``similarity`` or ``none``).
    """
    n = len(questions)
    idx = np.full(n, -1, dtype=np.int64)
    score = np.full(n, np.nan)
    by = np.full(n, BY_NONE, dtype=object)
    if n == 0 or len(answers) == 0:
        return idx, score, by
    sims = unit_rows(questions) @ unit_rows(answers).T  # (n, m)
    intents = np.asarray([None if v is None else str(v) for v in answer_intents], dtype=object)
    groups: dict[str, list[int]] = {}
    for pos, lab in enumerate(intents):
        if lab is not None:
            groups.setdefault(lab, []).append(pos)
    by_intent = {k: np.asarray(v) for k, v in groups.items()}
    general = np.flatnonzero(np.asarray([lab is None for lab in intents]))
    everything = np.arange(len(intents))
    for i in range(n):
        pred, prob = predictions[i], probabilities[i]
        confident = (
            pred is not None and pred != unknown_label and prob is not None and not np.isnan(prob)
            and prob >= min_confidence
        )  # fmt: skip
        cands = by_intent.get(str(pred)) if confident else None
        if cands is not None:
            j = int(cands[np.argmax(sims[i, cands])])
            idx[i], score[i], by[i] = j, sims[i, j], BY_INTENT
            continue
        pool = general if confident else everything
        if not len(pool):
            continue
        j = int(pool[np.argmax(sims[i, pool])])
        if sims[i, j] >= min_score:
            idx[i], score[i], by[i] = j, sims[i, j], BY_SIMILARITY
    return idx, score, by


def _load_library(data: bytes) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    got = np.load(io.BytesIO(data), allow_pickle=False)
    meta = json.loads(bytes(got["meta"]).decode("utf-8"))
    return np.asarray(meta["ids"], dtype=object), got["vectors"], meta["intents"]


def _library(digest: str, data: bytes) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """This process's copy of the templates in ``data`` (ids, embeddings, intents), loaded once per artefact."""
    return loaded_once("answer-library", digest, data, _load_library)


class AnswerMatcher(Persisted, SchemaChecked, Model, HasFeaturesCol, HasPredictionCol, HasProbabilityCol):
    """The stage that adds ``answer_id``, ``answer_score`` and ``answer_by`` to classified rows.

    Reads ``featuresCol`` (the question's embedding, ``array<float>`` or an
    MLlib vector), ``predictionCol`` and ``probabilityCol``. The templates
    (ids, intents and embeddings) are kept as ``library.npz`` beside the
    metadata. A row without an embedding gets no answer.
    """

    minConfidence = Param(Params._dummy(), "minConfidence", "probability for the intent route", TypeConverters.toFloat)
    minScore = Param(Params._dummy(), "minScore", "similarity for the similarity route", TypeConverters.toFloat)
    unknownLabel = Param(Params._dummy(), "unknownLabel", "the open-set label, never answered by intent", str)

    @keyword_only
    def __init__(
        self,
        *,
        featuresCol: str = "embedding",
        predictionCol: str = "prediction",
        probabilityCol: str = "probability",
        minConfidence: float = 0.5,
        minScore: float = 0.5,
        unknownLabel: str = "",
    ) -> None:
        super().__init__()
        self._setDefault(
            featuresCol="embedding",
            predictionCol="prediction",
            probabilityCol="probability",
            minConfidence=0.5,
            minScore=0.5,
            unknownLabel="",
        )
        self._set(**self._input_kwargs)
        self._data: bytes | None = None
        self.info: dict[str, Any] = {}

    def set_library(self, ids: Sequence[str], vectors: np.ndarray, intents: Sequence[str | None]) -> AnswerMatcher:
        """Keep the templates: ``ids`` and ``intents`` of length m, ``vectors`` of shape (m, d).

        Raises
        ------
        ValueError
            Lengths that differ, or an empty library.
        """
        if not len(ids) or len(ids) != len(vectors) or len(ids) != len(intents):
            raise ValueError("AnswerMatcher: the library needs one id, vector and intent per template, and a template")
        buf = io.BytesIO()
        meta = json.dumps({"ids": [str(i) for i in ids], "intents": [None if v is None else str(v) for v in intents]})
        np.savez(buf, vectors=unit_rows(vectors), meta=np.frombuffer(meta.encode("utf-8"), dtype=np.uint8))
        self._data = buf.getvalue()
        self.info = {"templates": len(ids), "with_intent": sum(v is not None for v in intents)}
        return self

    def library(self) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
        """The templates: ids (m,), unit embeddings (m, d) and intents (m,)."""
        if self._data is None:
            raise ValueError("AnswerMatcher: no template library")
        return _library(hashlib.sha256(self._data).hexdigest(), self._data)

    def _state_metadata(self) -> dict[str, Any]:
        return {"info": self.info}

    def _save_state(self, path: str, spark: SparkSession) -> None:
        if self._data is None:
            raise ValueError("AnswerMatcher: nothing to save, the library is empty")
        write_bytes(spark, f"{path}/library.npz", self._data)

    def _load_state(self, path: str, state: dict[str, Any], spark: SparkSession) -> None:
        self.info = dict(state.get("info", {}))
        self._data = read_bytes(spark, f"{path}/library.npz")

    def copy(self, extra: dict | None = None) -> AnswerMatcher:
        that = super().copy(extra)
        that._data, that.info = self._data, dict(self.info)
        return that

    def _input_columns(self) -> dict[str, ColumnSpec]:
        return {
            self.getFeaturesCol(): ((ArrayType, VectorUDT), "an array<float> embedding or an MLlib vector"),
            self.getPredictionCol(): ((DataType,), "the classifier's prediction"),
            self.getProbabilityCol(): ((DataType,), "the classifier's probability"),
        }

    def _output_columns(self) -> list[tuple[str, DataType]]:
        return [("answer_id", StringType()), ("answer_score", DoubleType()), ("answer_by", StringType())]

    def _transform(self, dataset: DataFrame) -> DataFrame:
        self.transformSchema(dataset.schema)
        if self._data is None:
            raise ValueError("AnswerMatcher: no template library")
        data = self._data
        digest = hashlib.sha256(data).hexdigest()
        min_conf, min_score = float(self.getOrDefault("minConfidence")), float(self.getOrDefault("minScore"))
        unknown = self.getOrDefault("unknownLabel") or None
        out_schema = StructType(
            [
                StructField("answer_id", StringType()),
                StructField("answer_score", DoubleType()),
                StructField("answer_by", StringType()),
            ]
        )

        @F.pandas_udf(out_schema)
        def match(batches: Iterator[tuple[pd.Series, pd.Series, pd.Series]]) -> Iterator[pd.DataFrame]:
            ids, vectors, intents = _library(digest, data)  # once per Python worker
            for emb, pred, prob in batches:
                n = len(emb)
                answer = np.full(n, None, dtype=object)
                score = np.full(n, np.nan)
                by = np.full(n, None, dtype=object)
                present = emb.notna().to_numpy()
                if present.any():
                    x = np.stack(emb[present].to_numpy()).astype(np.float32, copy=False)
                    p = [None if pd.isna(v) else str(v) for v in pred[present]]
                    q = [None if pd.isna(v) else float(v) for v in prob[present]]
                    j, s, b = match_answers(
                        x, p, q, vectors, intents, min_confidence=min_conf, min_score=min_score, unknown_label=unknown
                    )
                    answer[present] = np.where(j >= 0, ids[np.maximum(j, 0)], None)
                    score[present] = s
                    by[present] = b
                yield pd.DataFrame(
                    {"answer_id": answer, "answer_score": pd.array(score, dtype="Float64"), "answer_by": by}
                )

        col = self.getFeaturesCol()
        arr = vector_to_array(F.col(col), "float32") if isinstance(dataset.schema[col].dataType, VectorUDT) else col
        tmp = "_dmine_answer"
        scored = dataset.withColumn(
            tmp,
            match(
                F.col(arr) if isinstance(arr, str) else arr,
                F.col(self.getPredictionCol()).cast("string"),
                F.col(self.getProbabilityCol()).cast("double"),
            ),
        )
        return scored.select(
            "*", *(F.col(f"{tmp}.{c}").alias(c) for c in ("answer_id", "answer_score", "answer_by"))
        ).drop(tmp)
