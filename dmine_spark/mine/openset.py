"""Open-set (out-of-scope) classification: a classifier that may answer ``unknown``.

A closed classifier gives every question one of the intents it was trained
on, however far the question is from all of them. :class:`OpenSetHead` is the
stage after the classifier head in a model version: it scores how well each
row fits the known classes and replaces the prediction with the unknown label
(``classify.open_set.unknown_label``) below a threshold. Two scores:

* ``msp``, the maximum softmax probability of the classifier (Hendrycks and
  Gimpel, "A Baseline for Detecting Misclassified and Out-of-Distribution
  Examples in Neural Networks", ICLR 2017). Its threshold keeps
  ``known_recall`` of the validation rows known (:func:`fit_quantile_threshold`).
* ``knn``, distance-based: the cosine similarity of the row's embedding to its
  nearest training example (:func:`nearest_similarity`; Sun et al.,
  "Out-of-Distribution Detection with Deep Nearest Neighbors", ICML 2022).
  Its threshold is fitted by open-set validation inside the training split
  (:func:`fit_knn_threshold`): in each round a share of the known classes
  plays the unknown ones, the remaining classes' rows outside the validation
  part are the reference, and the threshold maximising balanced accuracy
  (Youden's J) between the validation rows of known and held-out classes is
  kept; the median over rounds is the threshold. No test row is ever used.

The same nearest-neighbour similarity defines ``dmine monitor``'s
out-of-distribution rate (:mod:`dmine_spark.deploy.drift`), so a batch's OOD
rate is the share of its rows the open-set decision would call unknown.
"""

from __future__ import annotations

import hashlib
import io
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
from pyspark.sql.types import ArrayType, DataType, DoubleType

from dmine_spark.io.files import loaded_once, read_bytes, write_bytes
from dmine_spark.io.persist import Persisted
from dmine_spark.io.schema import ColumnSpec, SchemaChecked

__all__ = [
    "OPEN_SET_METHODS",
    "unit_rows",
    "nearest_similarity",
    "youden_threshold",
    "fit_knn_threshold",
    "fit_quantile_threshold",
    "open_set_scores",
    "open_set_curve",
    "OpenSetHead",
]

OPEN_SET_METHODS = ("msp", "knn")


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` (shape ``(n, d)``) scaled to unit L2 norm, as float32; zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n == 0, 1.0, n)


def nearest_similarity(x: np.ndarray, memory: np.ndarray, *, chunk: int = 2048) -> np.ndarray:
    """Cosine similarity of each row of ``x`` to its nearest row of ``memory``.

    Parameters
    ----------
    x : ndarray of shape (n, d)
    memory : ndarray of shape (m, d)
        The reference rows (training examples); both are L2-normalised here.
    chunk : int
        Rows of ``x`` per matrix product, bounding memory to ``chunk * m`` floats.

    Returns
    -------
    ndarray of shape (n,)
        In [-1, 1]; ``-1`` for every row when ``memory`` is empty.
    """
    x, memory = unit_rows(x), unit_rows(memory)
    out = np.full(len(x), -1.0, dtype=np.float64)
    if len(memory) == 0:
        return out
    for i in range(0, len(x), chunk):
        out[i : i + chunk] = (x[i : i + chunk] @ memory.T).max(axis=1)
    return out


def youden_threshold(scores: np.ndarray, known: np.ndarray) -> float:
    """The score threshold (``score >= t`` is known) that maximises TPR(known) + TNR(open) (Youden's J).

    Parameters
    ----------
    scores : ndarray of shape (n,)
    known : ndarray of bool, shape (n,)
        True for rows of known classes; both kinds must be present.

    Raises
    ------
    ValueError
        When all rows are known or all are open.
    """
    scores, known = np.asarray(scores, dtype=np.float64), np.asarray(known, dtype=bool)
    n_known, n_open = int(known.sum()), int((~known).sum())
    if not n_known or not n_open:
        raise ValueError("youden_threshold needs rows of known and of open classes")
    order = np.argsort(scores, kind="stable")
    s, k = scores[order], known[order]
    # threshold at s[i]: rows below i are called open
    below_known = np.concatenate([[0], np.cumsum(k)])
    below_open = np.concatenate([[0], np.cumsum(~k)])
    j = (n_known - below_known) / n_known + below_open / n_open
    # candidate thresholds: each distinct score (rows before its first occurrence are open), and above the top
    firsts = np.concatenate([[True], s[1:] != s[:-1]])
    idx = np.flatnonzero(firsts)
    cand = np.concatenate([s[idx], [np.nextafter(s[-1], np.inf)]])
    cand_j = np.concatenate([j[idx], [j[-1]]])
    best = int(np.argmax(cand_j))
    if best > 0:  # halfway between the last open score and the first known one
        return float((cand[best] + s[idx[best] - 1]) / 2) if best < len(idx) else float(cand[best])
    return float(cand[best])


def fit_knn_threshold(
    x: np.ndarray,
    labels: Sequence[Any],
    *,
    val_fraction: float = 0.2,
    holdout_classes: float = 0.25,
    rounds: int = 5,
    seed: int = 42,
) -> tuple[float, dict[str, float]]:
    """Fit the ``knn`` open-set threshold by open-set validation inside the training rows.

    Parameters
    ----------
    x : ndarray of shape (n, d)
        Training embeddings.
    labels : sequence of length n
        Their classes (at least two).
    val_fraction : float
        Share of the rows in each round's validation part.
    holdout_classes : float
        Share of the classes that play the unknown ones in each round (at least one class).
    rounds : int
        Validation rounds; the threshold is the median of theirs.
    seed : int

    Returns
    -------
    (float, dict)
        The cosine-similarity threshold (a row is known when its nearest-neighbour
        similarity is at least this), and the validation figures averaged over the
        rounds: ``val_known_recall``, ``val_open_recall`` and ``val_rows``.

    Raises
    ------
    ValueError
        Fewer than two classes, or too few rows for a validation part.
    """
    labels = np.asarray([str(v) for v in labels], dtype=object)
    classes = np.unique(labels)
    if len(classes) < 2:
        raise ValueError("open-set validation needs at least two classes")
    rng = np.random.default_rng(seed)
    n_hold = min(len(classes) - 1, max(1, int(round(len(classes) * holdout_classes))))
    thresholds, known_recall, open_recall, val_rows = [], [], [], []
    for _ in range(rounds):
        held = rng.choice(classes, n_hold, replace=False)
        in_val = rng.random(len(labels)) < val_fraction
        is_held = np.isin(labels, held)
        reference = ~in_val & ~is_held
        if not reference.any() or not (in_val & is_held).any() or not (in_val & ~is_held).any():
            continue
        s = nearest_similarity(x[in_val], x[reference])
        known = ~is_held[in_val]
        t = youden_threshold(s, known)
        thresholds.append(t)
        known_recall.append(float((s[known] >= t).mean()))
        open_recall.append(float((s[~known] < t).mean()))
        val_rows.append(int(in_val.sum()))
    if not thresholds:
        raise ValueError(f"open-set validation: {len(labels)} training rows are too few for a validation part")
    info = {
        "val_known_recall": float(np.mean(known_recall)),
        "val_open_recall": float(np.mean(open_recall)),
        "val_rows": float(np.mean(val_rows)),
        "rounds": float(len(thresholds)),
    }
    return float(np.median(thresholds)), info


def fit_quantile_threshold(scores: np.ndarray, known_recall: float) -> float:
    """The threshold that keeps ``known_recall`` of validation rows (all of known classes) known.

    Parameters
    ----------
    scores : ndarray of shape (n,)
        Scores of validation rows, higher meaning more confident.
    known_recall : float in (0, 1]

    Raises
    ------
    ValueError
        With no score.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if not len(scores):
        raise ValueError("the validation part has no rows to fit a threshold on")
    return float(np.quantile(scores, 1.0 - known_recall))


def open_set_scores(
    cells: Sequence[tuple[str, str, int]], known: Sequence[str], unknown_label: str
) -> dict[str, float]:
    """Open-set metrics from (truth, prediction, count) cells: rows of labels not in ``known`` are the open class.

    Returns
    -------
    dict
        ``accuracy`` over known + open rows; ``macro_f1`` over the known
        classes present in the truth plus the open class; ``open_precision``,
        ``open_recall``, ``open_f1``; ``accuracy_known`` (known rows predicted
        as their class: an ``unknown`` answer is an error) and ``open_rows``.
        The definitions follow the open intent protocol of Shu et al. (DOC,
        EMNLP 2017) and Zhang et al. (ADB, AAAI 2021): K known classes + 1 open.
    """
    from dmine_spark.mine.metrics import classification_scores

    known = {str(k) for k in known}
    mapped = [(t if str(t) in known else unknown_label, p, n) for t, p, n in cells if t is not None]
    s = classification_scores(mapped)
    out = {k: float(s[k]) for k in ("accuracy", "macro_f1", "rows")}
    pc = s["per_class"].get(unknown_label)
    tp_open = sum(n for t, p, n in mapped if t == unknown_label and p == unknown_label)
    pred_open = sum(n for t, p, n in mapped if p == unknown_label)
    rows_open = sum(n for t, p, n in mapped if t == unknown_label)
    out["open_rows"] = float(rows_open)
    out["open_precision"] = tp_open / pred_open if pred_open else 0.0
    out["open_recall"] = tp_open / rows_open if rows_open else 0.0
    out["open_f1"] = float(pc["f1"]) if pc else 0.0
    known_rows = out["rows"] - rows_open
    correct_known = sum(n for t, p, n in mapped if t != unknown_label and t == p)
    out["accuracy_known"] = correct_known / known_rows if known_rows else 0.0
    return out


def open_set_curve(scores: np.ndarray, is_open: np.ndarray, points: int = 21) -> list[dict[str, float]]:
    """Open-class precision and recall as the threshold sweeps the scores' range.

    Parameters
    ----------
    scores : ndarray of shape (n,)
        Open-set scores (lower means more likely open).
    is_open : ndarray of bool, shape (n,)
        True for rows whose truth is the open class.
    points : int
        Thresholds, evenly spaced between the scores' 1st and 99th percentiles.

    Returns
    -------
    list of dict
        ``threshold``, ``open_precision``, ``open_recall`` and ``open_share`` per point.
    """
    scores, is_open = np.asarray(scores, dtype=np.float64), np.asarray(is_open, dtype=bool)
    if not len(scores):
        return []
    lo, hi = np.quantile(scores, [0.01, 0.99])
    out = []
    for t in np.linspace(lo, hi, points):
        called = scores < t
        tp = int((called & is_open).sum())
        out.append(
            {
                "threshold": float(t),
                "open_precision": tp / int(called.sum()) if called.any() else 1.0,
                "open_recall": tp / int(is_open.sum()) if is_open.any() else 0.0,
                "open_share": float(called.mean()),
            }
        )
    return out


# --------------------------------------------------------------------------- the stage


def _npy_bytes(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(x, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def _memory(digest: str, data: bytes) -> np.ndarray:
    """This process's copy of the reference rows in ``data``, loaded once per artefact."""
    return loaded_once("openset-memory", digest, data, lambda b: unit_rows(np.load(io.BytesIO(b), allow_pickle=False)))


class OpenSetHead(Persisted, SchemaChecked, Model, HasFeaturesCol, HasPredictionCol, HasProbabilityCol):
    """The stage after a classifier head that answers ``unknownLabel`` for rows that fit no known class.

    ``transform`` reads ``featuresCol`` (``array<float>`` or an MLlib vector;
    ``knn`` only), ``predictionCol`` and ``probabilityCol`` (the classifier
    head's), adds ``openScoreCol`` (the open-set score, a double: the nearest
    training example's cosine similarity for ``knn``, the maximum softmax
    probability for ``msp``) and replaces the prediction with ``unknownLabel``
    where the score is below ``threshold``. ``probability`` keeps the
    classifier's score of its best known class. The ``knn`` reference rows are
    saved as ``memory.npy`` beside the metadata and loaded once per Python worker.
    """

    method = Param(Params._dummy(), "method", "msp or knn", TypeConverters.toString)
    threshold = Param(Params._dummy(), "threshold", "rows scoring below it are unknown", TypeConverters.toFloat)
    unknownLabel = Param(Params._dummy(), "unknownLabel", "the open class's label", TypeConverters.toString)
    openScoreCol = Param(Params._dummy(), "openScoreCol", "the open-set score column", TypeConverters.toString)

    @keyword_only
    def __init__(
        self,
        *,
        featuresCol: str = "embedding",
        predictionCol: str = "prediction",
        probabilityCol: str = "probability",
        openScoreCol: str = "open_score",
        method: str = "knn",
        threshold: float = 0.0,
        unknownLabel: str = "unknown",
    ) -> None:
        super().__init__()
        self._setDefault(
            featuresCol="embedding",
            predictionCol="prediction",
            probabilityCol="probability",
            openScoreCol="open_score",
            method="knn",
            threshold=0.0,
            unknownLabel="unknown",
        )
        self._set(**self._input_kwargs)
        self._memory: bytes | None = None
        self.info: dict[str, Any] = {}

    def set_memory(self, x: np.ndarray) -> OpenSetHead:
        """Keep ``x`` (shape ``(m, d)``, training embeddings) as the ``knn`` reference rows."""
        self._memory = _npy_bytes(x)
        return self

    def memory(self) -> np.ndarray:
        """The ``knn`` reference rows, unit length, shape ``(m, d)``.

        Raises
        ------
        ValueError
            For an ``msp`` head, which keeps none.
        """
        if self._memory is None:
            raise ValueError("OpenSetHead: this head keeps no reference rows (method msp)")
        return _memory(hashlib.sha256(self._memory).hexdigest(), self._memory)

    def _state_metadata(self) -> dict[str, Any]:
        return {"info": self.info, "memory": self._memory is not None}

    def _save_state(self, path: str, spark: SparkSession) -> None:
        if self._memory is not None:
            write_bytes(spark, f"{path}/memory.npy", self._memory)

    def _load_state(self, path: str, state: dict[str, Any], spark: SparkSession) -> None:
        self.info = dict(state.get("info", {}))
        if state.get("memory"):
            self._memory = read_bytes(spark, f"{path}/memory.npy")

    def copy(self, extra: dict | None = None) -> OpenSetHead:
        that = super().copy(extra)
        that._memory, that.info = self._memory, dict(self.info)
        return that

    def _input_columns(self) -> dict[str, ColumnSpec]:
        cols: dict[str, ColumnSpec] = {
            self.getPredictionCol(): ((DataType,), "the classifier head's prediction"),
            self.getProbabilityCol(): ((DataType,), "the classifier head's probability"),
        }
        if self.getOrDefault("method") == "knn":
            cols[self.getFeaturesCol()] = ((ArrayType, VectorUDT), "an array<float> embedding or an MLlib vector")
        return cols

    def _output_columns(self) -> list[tuple[str, DataType]]:
        return [(self.getOrDefault("openScoreCol"), DoubleType())]

    def score_column(self, df: DataFrame) -> Any:
        """The open-set score of each row of ``df`` as a Column (see the class docstring)."""
        if self.getOrDefault("method") == "msp":
            return F.col(self.getProbabilityCol()).cast("double")
        if self._memory is None:
            raise ValueError("OpenSetHead: the knn head has no reference rows")
        data = self._memory
        digest = hashlib.sha256(data).hexdigest()

        @F.pandas_udf(DoubleType())
        def score(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
            memory = _memory(digest, data)  # once per Python worker, kept for later tasks
            for s in batches:
                out = np.full(len(s), np.nan)
                present = s.notna().to_numpy()
                if present.any():
                    x = np.stack(s[present].to_numpy()).astype(np.float32, copy=False)
                    out[present] = nearest_similarity(x, memory)
                yield pd.Series(out).astype("Float64")

        col = self.getFeaturesCol()
        arr = vector_to_array(F.col(col), "float32") if isinstance(df.schema[col].dataType, VectorUDT) else F.col(col)
        return score(arr)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        self.transformSchema(dataset.schema)
        out_col, pred = self.getOrDefault("openScoreCol"), self.getPredictionCol()
        scored = dataset.withColumn(out_col, self.score_column(dataset))
        unknown = F.col(out_col) < F.lit(float(self.getOrDefault("threshold")))
        return scored.withColumn(
            pred,
            F.when(F.col(pred).isNotNull() & unknown, F.lit(self.getOrDefault("unknownLabel"))).otherwise(F.col(pred)),
        )
