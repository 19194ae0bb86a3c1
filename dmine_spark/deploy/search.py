"""Interactive search: the nearest corpus rows of a text, from the latest ``<task>-index`` version, on the driver.

``dmine search CONFIG "my card never came"`` and ``dm.Searcher`` load the
index model version once (cleaner → embedder → :class:`~dmine_spark.mine.neighbors.NeighborIndex`),
then answer each text on this process: the text is cleaned by the version's
own cleaner, keyed as the embedding cache keys it
(:func:`~dmine_spark.prepare.clean.text_key_of`), embedded by the same model
settings as the cache (:func:`~dmine_spark.features.embed.resolve_spec`,
loaded once through :func:`~dmine_spark.features.encoder.get_encoder`) and
looked up in the index. A new text is cleaned on the driver without a Spark
job (:meth:`~dmine_spark.prepare.clean.TextCleaner.clean_local`); cleaned
texts and vectors are memoised by text, so a text asked again runs no model
call either.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from pyspark.ml import PipelineModel
from pyspark.sql import SparkSession

from dmine_spark.config import PipelineConfig, WorkDir
from dmine_spark.features.embed import Embedder, resolve_spec
from dmine_spark.features.encoder import ModelSpec, get_encoder
from dmine_spark.mine.neighbors import NeighborIndex
from dmine_spark.mine.store import ModelStore
from dmine_spark.mine.textmodel import cleaner_of, embedder_of, head_of
from dmine_spark.prepare.clean import text_key_of

__all__ = ["Searcher", "index_name"]


def index_name(task: str) -> str:
    """The model store name of a task's index (``<task>-index``)."""
    return f"{task}-index"


class Searcher:
    """The nearest neighbours of texts, answered on the driver from a saved index model version.

    Parameters
    ----------
    model : PipelineModel
        An index model version: a cleaner, an :class:`Embedder` and a :class:`NeighborIndex`.
    version : str
        Its ``name@vN``.
    spark : SparkSession
        Resolves the embedding's device and precision (as the cache did) and runs the cleaning of new texts.

    Raises
    ------
    ValueError
        When ``model`` does not end in a :class:`NeighborIndex` or has no embedder.
    """

    def __init__(self, model: PipelineModel, version: str, spark: SparkSession) -> None:
        index, embedder = head_of(model), embedder_of(model)
        if not isinstance(index, NeighborIndex) or not isinstance(embedder, Embedder):
            raise ValueError(f"{version} is not an index model version (cleaner, embedder, NeighborIndex)")
        self.model, self.version, self.spark = model, version, spark
        self.index: NeighborIndex = index
        self.cleaner = cleaner_of(model)
        self.spec: ModelSpec = resolve_spec(spark, embedder.spec())
        self._embed_args = (embedder.getOrDefault("batchSize"), embedder.getOrDefault("maxTokens"))
        self._cleaned: dict[str, str | None] = {}
        self._vectors: dict[str, np.ndarray] = {}  # by the cache's text key

    @classmethod
    def load(
        cls,
        task: str,
        *,
        spark: SparkSession | None = None,
        work_dir: str | os.PathLike[str] | None = None,
        version: str | None = None,
    ) -> Searcher:
        """The searcher of ``task``'s latest index version (or ``version``, ``<task>-index@vN``).

        Raises
        ------
        FileNotFoundError
            When the work dir holds no index of ``task`` (run the search stage first).
        """
        spark = spark or SparkSession.getActiveSession() or SparkSession.builder.getOrCreate()
        store = ModelStore(WorkDir.of(work_dir).models)
        ref = version or index_name(task)
        try:
            model, resolved = store.load(ref)
        except FileNotFoundError as exc:
            raise FileNotFoundError(
                f"{exc}; build it with the search stage: `dmine search CONFIG --set search.enabled=true` "
                "(after the embed stage)"
            ) from None
        return cls(model, resolved, spark)

    @classmethod
    def from_config(cls, cfg: PipelineConfig, spark: SparkSession, *, version: str | None = None) -> Searcher:
        """The searcher of ``cfg``'s task in ``cfg``'s work dir."""
        return cls.load(cfg.task, spark=spark, work_dir=cfg.work_dir, version=version)

    def clean(self, texts: Sequence[str]) -> list[str | None]:
        """``texts`` as the version's cleaner leaves them (None: nothing left).

        New texts are cleaned on the driver without a Spark job
        (:meth:`~dmine_spark.prepare.clean.TextCleaner.clean_local`).
        """
        new = [t for t in dict.fromkeys(texts) if t not in self._cleaned]
        if new:
            if self.cleaner is None:
                self._cleaned.update({t: t for t in new})
            else:
                out = self.cleaner.clean_local(new, self.spark)
                self._cleaned.update({t: c or None for t, c in zip(new, out, strict=True)})
        return [self._cleaned[t] for t in texts]

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of already cleaned ``texts``, shape (n, d): memoised by text key, new ones encoded here."""
        keys = [text_key_of(t) for t in texts]
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in self._vectors}
        if missing:
            encoder = get_encoder(self.spec)
            got = encoder.encode(list(missing.values()), batch_size=self._embed_args[0], max_tokens=self._embed_args[1])
            self._vectors.update(zip(missing, got, strict=True))
        return np.stack([self._vectors[k] for k in keys]) if keys else np.zeros((0, 0), dtype=np.float32)

    def query(self, text: str, k: int | None = None) -> pd.DataFrame:
        """The ``k`` nearest corpus rows of ``text`` (default: the index's ``k``).

        Returns
        -------
        pandas.DataFrame
            ``rank, score, neighbor_id, text, label``, best first (``score``:
            cosine similarity). Empty when cleaning leaves nothing of ``text``.
        """
        return self.query_many([text], k).drop(columns="query")

    def query_many(self, texts: Sequence[str], k: int | None = None) -> pd.DataFrame:
        """:meth:`query` of each of ``texts``, with a ``query`` column (its position in ``texts``)."""
        cleaned = self.clean(texts)
        keep = [i for i, t in enumerate(cleaned) if t]
        cols = ["query", "rank", "score", "neighbor_id", "text", "label"]
        if not keep:
            return pd.DataFrame(columns=cols)
        pos, score = self.index.search(self.vectors([cleaned[i] for i in keep]), k)
        ix = self.index
        rows = []
        for q, p_row, s_row in zip(keep, pos, score, strict=True):
            for rank, (p, s) in enumerate(((p, s) for p, s in zip(p_row, s_row, strict=True) if p >= 0), start=1):
                rows.append(
                    (
                        q,
                        rank,
                        float(s),
                        ix.ids[p],
                        ix.texts[p] if ix.texts else None,
                        ix.labels[p] if ix.labels else None,
                    )
                )
        return pd.DataFrame(rows, columns=cols)
