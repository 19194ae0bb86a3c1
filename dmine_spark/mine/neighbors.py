"""Nearest neighbours of embeddings by cosine similarity: exact search in Spark, and an HNSW index as a stage.

Two ways to the k most similar corpus rows of each query row:

* :func:`exact_topk`: exact search in Spark. The corpus and the queries are
  cut into blocks of at most ``block_rows`` rows; each (query block, corpus
  block) pair meets in one Arrow task (``groupBy().cogroup().applyInPandas``),
  which scores every pair of rows by a chunked matrix product in numpy and
  keeps each query's top k with ``argpartition``; a window over the pairs'
  candidates then keeps the global top k. A corpus of at most
  ``broadcast_max_rows`` rows is instead collected once and broadcast, and
  each query partition is scored against all of it in one pass.
* :class:`NeighborIndex`: a fitted pyspark.ml ``Model`` holding an approximate
  index (faiss ``IndexHNSWFlat`` over inner products: hierarchical navigable
  small-world graphs, Malkov & Yashunin 2018, "Efficient and robust
  approximate nearest neighbor search using Hierarchical Navigable Small World
  graphs", IEEE TPAMI) or an exact flat one (``IndexFlatIP``), with the corpus
  ids and, optionally, their labels and texts. ``transform`` adds each row's
  neighbours through an iterator pandas UDF that loads the index once per
  Python worker; :meth:`NeighborIndex.search` answers numpy queries on the
  driver without Spark.

Vectors are L2-normalised before scoring, so the inner product is the cosine
similarity, in [-1, 1]. The numpy core (:func:`normalize_rows`,
:func:`block_topk`, :func:`merge_topk`, :func:`recall_at_k`) has no Spark in it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pyspark import keyword_only
from pyspark.ml import Model, PipelineModel, Transformer
from pyspark.ml.functions import vector_to_array
from pyspark.ml.linalg import VectorUDT
from pyspark.ml.param.shared import HasFeaturesCol, Param, Params, TypeConverters
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DataType,
    DoubleType,
    IntegerType,
    NumericType,
    StringType,
    StructField,
    StructType,
)

from dmine_spark.config import SearchConfig
from dmine_spark.io.files import loaded_once, read_bytes, write_bytes
from dmine_spark.io.persist import Persisted
from dmine_spark.io.schema import ColumnSpec, SchemaChecked
from dmine_spark.mine.textmodel import text_model
from dmine_spark.prepare.clean import TextCleaner

__all__ = [
    "INDEX_KINDS",
    "normalize_rows",
    "block_topk",
    "rank_columns",
    "merge_topk",
    "recall_at_k",
    "label_agreement",
    "exact_topk",
    "HnswParams",
    "build_index",
    "NeighborIndex",
    "neighbor_rows",
    "SearchOutput",
    "search_neighbors",
]

log = logging.getLogger(__name__)

INDEX_KINDS = ("hnsw", "exact")
"""``hnsw``: faiss ``IndexHNSWFlat`` (approximate); ``exact``: faiss ``IndexFlatIP`` (every vector scored)."""

_CHUNK_ROWS = 1024  # queries scored per matrix product: 1,024 x 10,000 float32 scores is 40 MB
_Q, _C, _PAIR = "_dmine_qblock", "_dmine_cblock", "_dmine_pair"


# --------------------------------------------------------------------------- the numpy core


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """``x`` as float32 with each row scaled to unit L2 norm (an all-zero row stays zero).

    Parameters
    ----------
    x : array-like of shape (n, d)

    Returns
    -------
    ndarray of shape (n, d), float32
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"vectors must be a 2-d matrix (rows, dimensions), got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0).astype(np.float32)


def block_topk(
    queries: np.ndarray,
    corpus: np.ndarray,
    k: int,
    *,
    exclude: np.ndarray | None = None,
    chunk_rows: int = _CHUNK_ROWS,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best corpus rows of each query row by inner product, best first.

    Parameters
    ----------
    queries : ndarray of shape (n, d)
    corpus : ndarray of shape (m, d)
        Unit-norm rows for cosine scores (see :func:`normalize_rows`).
    k : int
        Neighbours kept per query; fewer when the corpus has fewer rows.
    exclude : ndarray of shape (n,), optional
        Per query, a corpus position never returned for it (its own row), or -1.
    chunk_rows : int
        Queries per matrix product, which bounds memory at ``chunk_rows * m`` float32 scores.

    Returns
    -------
    (ndarray of shape (n, min(k, m)), ndarray of shape (n, min(k, m)))
        Corpus positions (int64) and their scores (float32), by descending
        score, ties by ascending position. An excluded row left without a
        neighbour gets position -1 and score ``-inf``.

    Raises
    ------
    ValueError
        When the two matrices differ in width or ``k`` is below 1.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if queries.shape[1] != corpus.shape[1]:
        raise ValueError(f"query vectors have {queries.shape[1]} dimensions and corpus vectors {corpus.shape[1]}")
    n, m = len(queries), len(corpus)
    kk = min(k, m)
    pos = np.full((n, kk), -1, dtype=np.int64)
    top = np.full((n, kk), -np.inf, dtype=np.float32)
    if kk == 0:
        return pos, top
    for start in range(0, n, chunk_rows):
        stop = min(n, start + chunk_rows)
        scores = queries[start:stop] @ corpus.T
        if exclude is not None:
            rows = np.flatnonzero(exclude[start:stop] >= 0)
            scores[rows, exclude[start:stop][rows]] = -np.inf
        pos[start:stop], top[start:stop] = rank_columns(scores, kk)
    return pos, top


def rank_columns(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best columns of each row of ``scores``, best first, ties by ascending column.

    Parameters
    ----------
    scores : ndarray of shape (n, m)
        ``-inf`` marks a column never to return.
    k : int
        Columns kept per row, 1 <= k <= m.

    Returns
    -------
    (ndarray of shape (n, k), ndarray of shape (n, k))
        Column positions (int64; -1 where only ``-inf`` columns were left) and their scores (float32).
    """
    n, m = scores.shape
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < m else np.broadcast_to(np.arange(m), (n, m))
    got = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -got), axis=1)
    pos = np.take_along_axis(part, order, axis=1).astype(np.int64)
    top = np.take_along_axis(got, order, axis=1).astype(np.float32)
    pos[~np.isfinite(top)] = -1
    return pos, top


def merge_topk(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-block candidates into each row's global top ``k`` (what the window does in Spark).

    Parameters
    ----------
    ids : ndarray of shape (n, c)
        Candidate neighbour ids per query row, the blocks' top-k side by side;
        an empty slot holds score ``-inf``.
    scores : ndarray of shape (n, c)
    k : int

    Returns
    -------
    (ndarray of shape (n, min(k, c)), ndarray of shape (n, min(k, c)))
        The best ``k`` ids and scores of each row, by descending score, ties by ascending id.
    """
    order = np.lexsort((ids, -scores), axis=1)[:, :k]
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1)


def recall_at_k(found: np.ndarray | Sequence[Sequence[Any]], truth: np.ndarray | Sequence[Sequence[Any]]) -> float:
    """Share of the true top-k neighbours that were found: the mean over queries of ``|found ∩ truth| / |truth|``.

    Parameters
    ----------
    found, truth : sequences of n id lists
        What a search returned and the exact top k, per query (same queries, same order).

    Returns
    -------
    float
        In [0, 1]; 1.0 when every query's true neighbours were all found.

    Raises
    ------
    ValueError
        When the two hold different numbers of queries, or none.
    """
    if len(found) != len(truth) or len(truth) == 0:
        raise ValueError(f"recall@k needs the same queries on both sides, got {len(found)} and {len(truth)}")
    hits = [len(set(f) & set(t)) / max(1, len(t)) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits))


def label_agreement(query_labels: Sequence[Any], neighbor_labels: Sequence[Any]) -> float:
    """Share of queries whose first neighbour has the query's label (1-NN accuracy).

    Raises
    ------
    ValueError
        When the two differ in length, or are empty.
    """
    if len(query_labels) != len(neighbor_labels) or len(query_labels) == 0:
        raise ValueError("label agreement needs one neighbour label per query label")
    return float(np.mean([a == b for a, b in zip(query_labels, neighbor_labels, strict=True)]))


# --------------------------------------------------------------------------- exact search in Spark


def _vector_col(df: DataFrame, col: str, what: str) -> Column:
    if col not in df.columns:
        raise ValueError(f"{what}: vector column {col!r} not found in {df.columns}")
    t = df.schema[col].dataType
    if isinstance(t, VectorUDT):
        return vector_to_array(F.col(col), "float32")
    if isinstance(t, ArrayType) and isinstance(t.elementType, NumericType):
        return F.col(col).cast("array<float>")
    raise TypeError(f"{what}: vector column {col!r} must be array<float> or an MLlib vector, got {t.simpleString()}")


def _prepared(df: DataFrame, id_col: str, vec_col: str, what: str) -> DataFrame:
    if id_col not in df.columns:
        raise ValueError(f"{what}: id column {id_col!r} not found in {df.columns}")
    return df.select(F.col(id_col).alias("id"), _vector_col(df, vec_col, what).alias("v")).where(F.col("v").isNotNull())


def _matrix(values: pd.Series) -> np.ndarray:
    if len(values) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    return normalize_rows(np.stack(values.to_numpy()))


def _self_positions(query_ids: np.ndarray, corpus_ids: np.ndarray) -> np.ndarray:
    """Per query, the corpus position holding the same id, or -1."""
    index = pd.Index(corpus_ids)
    if index.is_unique:
        return index.get_indexer(query_ids).astype(np.int64)
    first = pd.Index(pd.unique(corpus_ids))  # repeated corpus ids: the first of each is excluded
    pos = first.get_indexer(query_ids)
    where = {v: i for i, v in reversed(list(enumerate(corpus_ids)))}
    return np.array([where[first[p]] if p >= 0 else -1 for p in pos], dtype=np.int64)


def _pairs_frame(qid: np.ndarray, cid: np.ndarray, pos: np.ndarray, score: np.ndarray, ranked: bool) -> pd.DataFrame:
    n, kk = pos.shape
    keep = (pos >= 0).ravel()
    out = {
        "id": np.repeat(qid, kk)[keep],
        "neighbor_id": cid[np.clip(pos, 0, None).ravel()][keep] if len(cid) else np.array([], dtype=object),
        "score": score.ravel()[keep].astype(np.float64),
    }
    if ranked:
        out["rank"] = np.tile(np.arange(1, kk + 1, dtype=np.int32), n)[keep]
    return pd.DataFrame(out)


def exact_topk(
    queries: DataFrame,
    corpus: DataFrame,
    k: int,
    *,
    id_col: str = "id",
    vec_col: str = "embedding",
    corpus_id_col: str | None = None,
    corpus_vec_col: str | None = None,
    block_rows: int = 8192,
    broadcast_max_rows: int = 50_000,
    exclude_self: bool = False,
) -> DataFrame:
    """The exact ``k`` nearest corpus rows of every query row by cosine similarity, computed in Spark.

    Parameters
    ----------
    queries, corpus : DataFrame
        Rows with an id and a vector column (``array<float>`` or an MLlib
        vector, all of one width). Rows with a null vector are left out.
        Vectors are L2-normalised in the task, so any scale will do.
    k : int
        Neighbours per query (fewer when the corpus is smaller).
    id_col, vec_col : str
        The queries' columns; the corpus's too unless ``corpus_id_col`` / ``corpus_vec_col`` say otherwise.
    block_rows : int
        Most rows of a query block and of a corpus block. Each pair of blocks
        is one Arrow task of ``block_rows**2`` dot products, holding two
        ``block_rows x d`` float32 matrices and 1,024-row chunks of scores.
    broadcast_max_rows : int
        A corpus of at most this many rows is collected to the driver once and
        broadcast instead of blocked (0: never). The driver holds it as a
        float32 matrix: 50,000 x 384 is 77 MB.
    exclude_self : bool
        Never return a query's own id as its neighbour (a query that is also in the corpus).

    Returns
    -------
    DataFrame
        ``id, rank, neighbor_id, score``: ``rank`` 1..k (int) by descending
        ``score`` (the cosine, a double), ties by ascending ``neighbor_id``.

    Raises
    ------
    ValueError, TypeError
        Before any job: a missing column, a column that is not a vector, ``k`` or ``block_rows`` below 1.
    """
    if k < 1:
        raise ValueError(f"exact_topk: k must be at least 1, got {k}")
    if block_rows < 1:
        raise ValueError(f"exact_topk: block_rows must be at least 1, got {block_rows}")
    q = _prepared(queries, id_col, vec_col, "exact_topk queries")
    c = _prepared(corpus, corpus_id_col or id_col, corpus_vec_col or vec_col, "exact_topk corpus")
    id_type, nid_type = q.schema["id"].dataType, c.schema["id"].dataType
    ranked = StructType(
        [
            StructField("id", id_type),
            StructField("rank", IntegerType()),
            StructField("neighbor_id", nid_type),
            StructField("score", DoubleType()),
        ]
    )
    spark = queries.sparkSession
    n_corpus = c.limit(broadcast_max_rows + 1).count() if broadcast_max_rows > 0 else broadcast_max_rows + 1
    if n_corpus <= broadcast_max_rows:
        return _broadcast_topk(spark, q, c, k, ranked, exclude_self)
    return _blocked_topk(q, c, k, block_rows, ranked, exclude_self)


def _broadcast_topk(
    spark: SparkSession, q: DataFrame, c: DataFrame, k: int, schema: StructType, exclude_self: bool
) -> DataFrame:
    pdf = c.toPandas()
    shared = spark.sparkContext.broadcast((pdf["id"].to_numpy(), _matrix(pdf["v"])))

    def search(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        cid, cmat = shared.value
        for b in batches:
            if b.empty or len(cid) == 0:
                continue
            qid = b["id"].to_numpy()
            exclude = _self_positions(qid, cid) if exclude_self else None
            pos, score = block_topk(_matrix(b["v"]), cmat, k, exclude=exclude)
            yield _pairs_frame(qid, cid, pos, score, ranked=True)[["id", "rank", "neighbor_id", "score"]]

    return q.mapInPandas(search, schema)


def _blocked_topk(
    q: DataFrame, c: DataFrame, k: int, block_rows: int, schema: StructType, exclude_self: bool
) -> DataFrame:
    n_q, n_c = q.count(), c.count()
    qb, cb = max(1, math.ceil(n_q / block_rows)), max(1, math.ceil(n_c / block_rows))
    spark = q.sparkSession
    # each query block meets each corpus block once: queries are repeated per corpus block and vice versa
    q_pairs = q.withColumn(_Q, F.pmod(F.xxhash64("id"), F.lit(qb))).crossJoin(
        spark.range(cb).withColumnRenamed("id", _C)
    )
    c_pairs = c.withColumn(_C, F.pmod(F.xxhash64("id"), F.lit(cb))).crossJoin(
        spark.range(qb).withColumnRenamed("id", _Q)
    )
    pairs = StructType([f for f in schema.fields if f.name != "rank"])

    def pair_topk(qpdf: pd.DataFrame, cpdf: pd.DataFrame) -> pd.DataFrame:
        if qpdf.empty or cpdf.empty:
            return pd.DataFrame({f.name: [] for f in pairs.fields})
        qid, cid = qpdf["id"].to_numpy(), cpdf["id"].to_numpy()
        exclude = _self_positions(qid, cid) if exclude_self else None
        pos, score = block_topk(_matrix(qpdf["v"]), _matrix(cpdf["v"]), k, exclude=exclude)
        return _pairs_frame(qid, cid, pos, score, ranked=False)

    candidates = (
        q_pairs.groupBy(_Q, _C)
        .cogroup(c_pairs.groupBy(_Q, _C))
        .applyInPandas(lambda a, b: pair_topk(a, b), pairs.simpleString())
    )
    w = Window.partitionBy("id").orderBy(F.desc("score"), F.asc("neighbor_id"))
    return (
        candidates.withColumn("rank", F.row_number().over(w))
        .where(F.col("rank") <= k)
        .select("id", "rank", "neighbor_id", "score")
    )


# --------------------------------------------------------------------------- the index


@dataclass(frozen=True)
class HnswParams:
    """Settings of an HNSW graph (Malkov & Yashunin 2018).

    Parameters
    ----------
    m : int
        Links per node (faiss ``M``): more is better recall, more memory (``2 * m`` int32 per vector at level 0).
    ef_construction : int
        Candidates kept while inserting: better graphs, slower builds.
    ef_search : int
        Candidates kept while searching (at least ``k``): better recall, slower queries.
    """

    m: int = 32
    ef_construction: int = 200
    ef_search: int = 128


def build_index(vectors: np.ndarray, kind: str = "hnsw", params: HnswParams | None = None, threads: int = 0) -> Any:
    """A faiss index over the L2-normalised ``vectors`` (inner product = cosine).

    Parameters
    ----------
    vectors : ndarray of shape (n, d)
    kind : {"hnsw", "exact"}
        ``IndexHNSWFlat`` with ``METRIC_INNER_PRODUCT``, or ``IndexFlatIP``.
    params : HnswParams, optional
    threads : int
        OpenMP threads while building (0: faiss's default, every core).

    Raises
    ------
    ValueError
        An unknown ``kind`` or no vectors.
    """
    import faiss

    if kind not in INDEX_KINDS:
        raise ValueError(f"index kind must be one of {', '.join(INDEX_KINDS)}, got {kind!r}")
    x = normalize_rows(vectors)
    if len(x) == 0:
        raise ValueError("an index needs at least one vector")
    p = params or HnswParams()
    if kind == "exact":
        index = faiss.IndexFlatIP(x.shape[1])
    else:
        index = faiss.IndexHNSWFlat(x.shape[1], p.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = p.ef_construction
        index.hnsw.efSearch = p.ef_search
    if threads:
        faiss.omp_set_num_threads(threads)
    index.add(x)
    return index


def _index_bytes(index: Any) -> bytes:
    import faiss

    return faiss.serialize_index(index).tobytes()


def _load_index(digest: str, data: bytes, ef_search: int) -> Any:
    """This process's copy of the index in ``data``, deserialised once per index and ``ef_search``."""

    def load(b: bytes) -> Any:
        import faiss

        index = faiss.deserialize_index(np.frombuffer(b, dtype=np.uint8))
        if hasattr(index, "hnsw"):
            index.hnsw.efSearch = ef_search
        return index

    return loaded_once(f"faiss-ef{ef_search}", digest, data, load)


def _search(index: Any, x: np.ndarray, k: int, ef_search: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions and scores of the ``k`` best rows of ``index`` for each row of ``x`` (-1 where none)."""
    if hasattr(index, "hnsw"):
        import faiss

        sp = faiss.SearchParametersHNSW()
        sp.efSearch = max(ef_search, k)
        scores, pos = index.search(x, k, params=sp)
    else:
        scores, pos = index.search(x, k)
    return pos, scores


_NEIGHBOR = StructType(
    [
        StructField("neighbor_id", StringType()),
        StructField("score", DoubleType()),
        StructField("label", StringType()),
    ]
)


class NeighborIndex(Persisted, SchemaChecked, Model, HasFeaturesCol):
    """A nearest-neighbour index over a corpus of embeddings, as a fitted pyspark.ml ``Model``.

    ``transform`` adds ``outputCol``: for each row of ``featuresCol``
    (``array<float>`` or an MLlib vector of the corpus's width), its ``k``
    nearest corpus rows as ``array<struct<neighbor_id: string, score: double,
    label: string>>``, best first, ``score`` the cosine similarity (null
    vector: null). The UDF carries the serialised index; each Python worker
    deserialises it once and keeps it for later tasks (keyed by its SHA-256).
    :meth:`search` answers numpy queries on the driver.

    Saved with ``write().save(path)`` or inside a ``PipelineModel``: Params
    in ``metadata/``, the faiss index as ``index.faiss`` and the corpus ids,
    labels and texts as ``rows.json.gz``.

    Build one with :meth:`from_vectors` (numpy) or :meth:`fit_frame` (a DataFrame).
    """

    outputCol = Param(Params._dummy(), "outputCol", "the neighbours column", TypeConverters.toString)
    k = Param(Params._dummy(), "k", "neighbours per row", TypeConverters.toInt)
    kind = Param(
        Params._dummy(), "kind", "'hnsw' (faiss IndexHNSWFlat) or 'exact' (IndexFlatIP)", TypeConverters.toString
    )
    efSearch = Param(Params._dummy(), "efSearch", "HNSW candidates kept while searching", TypeConverters.toInt)

    @keyword_only
    def __init__(
        self,
        *,
        featuresCol: str = "embedding",
        outputCol: str = "neighbors",
        k: int = 10,
        kind: str = "hnsw",
        efSearch: int = 128,
    ) -> None:
        super().__init__()
        self._setDefault(featuresCol="embedding", outputCol="neighbors", k=10, kind="hnsw", efSearch=128)
        self._set(**self._input_kwargs)
        self._data: bytes | None = None  # the serialised faiss index
        self._digest = ""
        self.ids: list[str] = []
        self.labels: list[str] | None = None
        self.texts: list[str] | None = None
        self.info: dict[str, Any] = {}

    # -- building -----------------------------------------------------------------------------------------

    @classmethod
    def from_vectors(
        cls,
        vectors: np.ndarray,
        ids: Sequence[Any],
        *,
        labels: Sequence[Any] | None = None,
        texts: Sequence[Any] | None = None,
        kind: str = "hnsw",
        params: HnswParams | None = None,
        k: int = 10,
        featuresCol: str = "embedding",
        threads: int = 0,
    ) -> NeighborIndex:
        """An index over ``vectors`` (shape (n, d)), whose row i is corpus row ``ids[i]``.

        Raises
        ------
        ValueError
            Ids, labels or texts whose length is not the number of vectors, or an unknown ``kind``.
        """
        import time

        n = len(vectors)
        for name, seq in (("ids", ids), ("labels", labels), ("texts", texts)):
            if seq is not None and len(seq) != n:
                raise ValueError(f"NeighborIndex: {len(seq)} {name} for {n} vectors")
        p = params or HnswParams()
        t0 = time.perf_counter()
        index = build_index(vectors, kind, p, threads)
        out = cls(featuresCol=featuresCol, k=k, kind=kind, efSearch=p.ef_search)
        out._set_index(_index_bytes(index))
        out.ids = [str(i) for i in ids]
        out.labels = None if labels is None else [None if v is None else str(v) for v in labels]
        out.texts = None if texts is None else [None if v is None else str(v) for v in texts]
        out.info = {
            "rows": n,
            "dimensions": int(vectors.shape[1]) if n else 0,
            "build_seconds": time.perf_counter() - t0,
            "params": {"m": p.m, "ef_construction": p.ef_construction, "ef_search": p.ef_search}
            if kind == "hnsw"
            else {},
        }
        return out

    @classmethod
    def fit_frame(
        cls,
        corpus: DataFrame,
        *,
        id_col: str = "id",
        vec_col: str = "embedding",
        label_col: str | None = None,
        text_col: str | None = None,
        kind: str = "hnsw",
        params: HnswParams | None = None,
        k: int = 10,
    ) -> NeighborIndex:
        """An index over the rows of ``corpus`` with a vector, built on the driver (the corpus is collected).

        Raises
        ------
        ValueError, TypeError
            A missing or mistyped column, or no row with a vector.
        """
        cols = [F.col(id_col).cast("string").alias("id"), _vector_col(corpus, vec_col, "NeighborIndex").alias("v")]
        for c in (label_col, text_col):
            if c and c not in corpus.columns:
                raise ValueError(f"NeighborIndex: column {c!r} not found in {corpus.columns}")
        if label_col:
            cols.append(F.col(label_col).cast("string").alias("label"))
        if text_col:
            cols.append(F.col(text_col).cast("string").alias("text"))
        pdf = corpus.select(*cols).where(F.col("v").isNotNull()).orderBy("id").toPandas()
        if pdf.empty:
            raise ValueError("NeighborIndex: the corpus has no row with a vector")
        return cls.from_vectors(
            np.stack(pdf["v"].to_numpy()),
            pdf["id"].tolist(),
            labels=pdf["label"].tolist() if label_col else None,
            texts=pdf["text"].tolist() if text_col else None,
            kind=kind,
            params=params,
            k=k,
            featuresCol=vec_col,
        )

    def _set_index(self, data: bytes) -> None:
        self._data = data
        self._digest = hashlib.sha256(data).hexdigest()

    # -- state --------------------------------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Corpus rows in the index."""
        return len(self.ids)

    def index(self) -> Any:
        """The faiss index (this process's copy, deserialised once)."""
        if self._data is None:
            raise ValueError("NeighborIndex: the index is not built")
        return _load_index(self._digest, self._data, self.getOrDefault("efSearch"))

    def _state_metadata(self) -> dict[str, Any]:
        return {"info": self.info, "rows": self.size}

    def _save_state(self, path: str, spark: SparkSession) -> None:
        if self._data is None:
            raise ValueError("NeighborIndex: nothing to save, the index is not built")
        write_bytes(spark, f"{path}/index.faiss", self._data)
        rows = {"ids": self.ids, "labels": self.labels, "texts": self.texts}
        write_bytes(spark, f"{path}/rows.json.gz", gzip.compress(json.dumps(rows).encode("utf-8"), 6))

    def _load_state(self, path: str, state: dict[str, Any], spark: SparkSession) -> None:
        self.info = dict(state.get("info", {}))
        self._set_index(read_bytes(spark, f"{path}/index.faiss"))
        rows = json.loads(gzip.decompress(read_bytes(spark, f"{path}/rows.json.gz")))
        self.ids, self.labels, self.texts = rows["ids"], rows["labels"], rows["texts"]

    def copy(self, extra: dict | None = None) -> NeighborIndex:
        that = super().copy(extra)
        that._data, that._digest = self._data, self._digest
        that.ids, that.labels, that.texts, that.info = self.ids, self.labels, self.texts, dict(self.info)
        return that

    # -- searching ----------------------------------------------------------------------------------------

    def search(self, vectors: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest corpus rows of each query vector, on this process (no Spark).

        Parameters
        ----------
        vectors : ndarray of shape (n, d)
            Normalised here.
        k : int, optional
            Default: the ``k`` Param.

        Returns
        -------
        (ndarray of shape (n, k), ndarray of shape (n, k))
            Corpus positions (index into :attr:`ids`; -1 where the index has
            fewer rows) and cosine scores, best first.
        """
        kk = k or self.getOrDefault("k")
        return _search(self.index(), normalize_rows(vectors), kk, self.getOrDefault("efSearch"))

    def _input_columns(self) -> dict[str, ColumnSpec]:
        return {self.getFeaturesCol(): ((ArrayType, VectorUDT), "an array<float> embedding or an MLlib vector")}

    def _output_columns(self) -> list[tuple[str, DataType]]:
        return [(self.getOrDefault("outputCol"), ArrayType(_NEIGHBOR))]

    def _transform(self, dataset: DataFrame) -> DataFrame:
        self.transformSchema(dataset.schema)
        if self._data is None:
            raise ValueError("NeighborIndex: the index is not built")
        data, digest = self._data, self._digest
        k, ef = self.getOrDefault("k"), self.getOrDefault("efSearch")
        ids = np.asarray(self.ids, dtype=object)
        labels = None if self.labels is None else np.asarray(self.labels, dtype=object)

        @F.pandas_udf(ArrayType(_NEIGHBOR))
        def neighbors(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
            index = None
            for s in batches:
                if index is None:  # once per Python worker, kept for later tasks
                    import faiss
                    from pyspark import TaskContext

                    ctx = TaskContext.get()  # faiss's threads follow spark.task.cpus, as the encoder's do
                    faiss.omp_set_num_threads(max(1, int(ctx.cpus())) if ctx is not None else 1)
                    index = _load_index(digest, data, ef)
                out: list[Any] = [None] * len(s)
                present = s.notna().to_numpy()
                if present.any():
                    x = normalize_rows(np.stack(s[present].to_numpy()))
                    pos, score = _search(index, x, k, ef)
                    for row, p, sc in zip(np.flatnonzero(present), pos, score, strict=True):
                        keep = p >= 0
                        out[row] = [
                            {"neighbor_id": i, "score": float(v), "label": lab}
                            for i, v, lab in zip(
                                ids[p[keep]],
                                sc[keep],
                                labels[p[keep]] if labels is not None else [None] * int(keep.sum()),
                                strict=True,
                            )
                        ]
                yield pd.Series(out, index=s.index, dtype=object)

        col = self.getFeaturesCol()
        arr = _vector_col(dataset, col, "NeighborIndex")
        return dataset.withColumn(self.getOrDefault("outputCol"), neighbors(arr))


def neighbor_rows(df: DataFrame, *, id_col: str = "id", neighbors_col: str = "neighbors") -> DataFrame:
    """``id, rank, neighbor_id, score, neighbor_label``: one row per neighbour of :meth:`NeighborIndex.transform`'s output."""
    return df.select(F.col(id_col).alias("id"), F.posexplode(neighbors_col).alias("pos", "n")).select(
        "id",
        (F.col("pos") + 1).cast("int").alias("rank"),
        F.col("n.neighbor_id").alias("neighbor_id"),
        F.col("n.score").alias("score"),
        F.col("n.label").alias("neighbor_label"),
    )


# --------------------------------------------------------------------------- the search stage's node


@dataclass
class SearchOutput:
    """The index model version (cleaner → embedder → :class:`NeighborIndex`), the index, and the neighbours
    (``id, rank, neighbor_id, score``) of the query rows."""

    model: PipelineModel | None = None
    index: NeighborIndex | None = None
    neighbors: DataFrame | None = None
    corpus_rows: int = 0
    query_rows: int = 0
    info: dict[str, Any] = field(default_factory=dict)


def search_neighbors(
    rows: DataFrame,
    section: SearchConfig,
    *,
    corpus_split: str,
    query_split: str,
    cleaner: TextCleaner,
    embedder: Transformer,
    labelled: bool,
) -> SearchOutput:
    """Build the index over the corpus split of ``rows`` and find each query row's ``section.k`` neighbours.

    Parameters
    ----------
    rows : DataFrame
        Clean rows with their cached ``embedding`` (``id, split, text, embedding``, and ``label`` when ``labelled``).
    section : SearchConfig
        ``index: hnsw`` answers the queries with the HNSW index; ``exact`` with
        :func:`exact_topk` in Spark (and saves an exact flat index).
    corpus_split, query_split : str
    cleaner, embedder : Transformer
        The stages before the index in the saved model, so it answers raw text.

    Raises
    ------
    ValueError
        When the corpus split has no row with a vector.
    """
    corpus = rows.where(F.col("split") == corpus_split)
    queries = rows.where(F.col("split") == query_split)
    h = section.hnsw
    index = NeighborIndex.fit_frame(
        corpus,
        label_col="label" if labelled else None,
        text_col="text",
        kind=section.index,
        params=HnswParams(m=h.m, ef_construction=h.ef_construction, ef_search=h.ef_search),
        k=section.k,
    )
    k = section.k
    if section.index == "exact":
        found = exact_topk(
            queries,
            corpus,
            k,
            block_rows=section.block_rows,
            broadcast_max_rows=section.broadcast_max_rows,
            exclude_self=section.exclude_self,
        )
    else:
        # one more neighbour than asked, so dropping a query's own row still leaves k
        extra = 1 if section.exclude_self else 0
        found = neighbor_rows(index.copy({index.k: k + extra}).transform(queries.select("id", "embedding")))
        if section.exclude_self:
            w = Window.partitionBy("id").orderBy("rank")
            found = found.where(F.col("neighbor_id") != F.col("id")).withColumn("rank", F.row_number().over(w))
        found = found.where(F.col("rank") <= k).select("id", "rank", "neighbor_id", "score")
    return SearchOutput(
        model=text_model(cleaner, embedder, index),
        index=index,
        neighbors=found,
        corpus_rows=index.size,
        query_rows=queries.count(),
        info={"kind": section.index, **index.info},
    )
