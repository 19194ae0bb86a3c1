"""Spark NLP as an embedding backend (``embed.backend: sparknlp | sparknlp-bert``, Spark 3.5 line).

The model is dmine's own: :func:`~dmine_spark.features.encoder.sparknlp_model_folder`
exports it once to ONNX with the vocabulary beside it, and Spark NLP's ONNX
engine loads that folder with ``loadSavedModel`` (no pretrained download, no
TensorFlow). The annotator is loaded once per session and per model
settings, on the driver; Spark ships it to the executors with the tasks.

Two poolings:

``sparknlp``
    ``E5Embeddings``: the mean over every wordpiece (with [CLS] and [SEP]),
    which is the pooling of dmine's encoder, so the vectors are the same
    (cosine ≥ 0.999, tested) and share the embedding cache with the other
    fp32 engines. Spark NLP 5.5.3 pools every row of a batch with the first
    row's attention mask, which corrupts every shorter or longer row of a
    padded batch (mean cosine 0.960, min 0.52, on 400 BANKING77 texts at
    batch size 8). dmine runs it with batch size 1, which is exact.
    Batches of rows with one mask length are exact too, but they need padding
    rows to keep lengths apart, and with those counted they ran at 30.7 to
    40.6 rows/s against 37.9 at batch size 1 (docs/embedding.md, with the
    command).
``sparknlp-bert``
    ``Tokenizer`` → ``BertEmbeddings`` → ``SentenceEmbeddings(AVERAGE)``,
    Spark NLP's classic sentence pooling: the mean of each token's first
    wordpiece, without [CLS] and [SEP]. The tokenizer splits on whitespace
    and every punctuation character, as BERT's own pre-tokeniser does; the
    remaining gap is the pooling (mean cosine about 0.987 to dmine's
    vectors). Its vectors are cached apart (``pooling`` is recorded as
    ``mean@sparknlp-bert``).
"""

from __future__ import annotations

import string
import threading
from typing import TYPE_CHECKING, Any

from pyspark.sql import functions as F

from dmine_spark.config import ConfigError
from dmine_spark.features.encoder import SPARKNLP_BACKENDS, ModelSpec, resolve_model_dir, sparknlp_model_folder
from dmine_spark.prepare.sparknlp import require_sparknlp

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["sparknlp_embed", "annotator", "l2_normalize", "PUNCTUATION"]

# BERT's basic tokenizer splits off every punctuation character; so does the classic pooling's Tokenizer
PUNCTUATION = list(string.punctuation)
_LOCK = threading.Lock()
_LOADED: dict[tuple[str, ModelSpec, int], Any] = {}


def annotator(spark: SparkSession, spec: ModelSpec, batch_size: int = 64) -> Any:
    """The Spark NLP embeddings annotator for ``spec``, loaded once per session and settings.

    ``E5Embeddings`` (``sparknlp``) or ``BertEmbeddings`` (``sparknlp-bert``),
    read from :func:`~dmine_spark.features.encoder.sparknlp_model_folder`,
    with ``spec.max_length`` tokens and case folding as the model's
    tokenizer does (``do_lower_case``).

    Raises
    ------
    ConfigError
        When Spark NLP cannot run in ``spark`` (see
        :func:`~dmine_spark.prepare.sparknlp.require_sparknlp`), or the model
        has no WordPiece vocabulary.
    """
    if spec.backend not in SPARKNLP_BACKENDS:
        raise ValueError(f"annotator: backend {spec.backend!r} is not a Spark NLP backend")
    require_sparknlp(spark, "embed.backend")
    key = (spark.sparkContext.applicationId, spec, batch_size)
    with _LOCK:
        if key in _LOADED:
            return _LOADED[key]
        try:
            folder = sparknlp_model_folder(spec.model)
        except FileNotFoundError as exc:
            raise ConfigError(str(exc)) from None
        cased = _case_sensitive(spec.model)
        if spec.backend == "sparknlp":
            from sparknlp.annotator import E5Embeddings

            model = E5Embeddings.loadSavedModel(str(folder), spark).setInputCols(["_snlp_doc"])
            batch_size = 1  # exact: 5.5.3 pools a whole batch with its first row's mask (module docstring)
        else:
            from sparknlp.annotator import BertEmbeddings

            model = BertEmbeddings.loadSavedModel(str(folder), spark).setInputCols(["_snlp_doc", "_snlp_tok"])
        model = (
            model.setOutputCol("_snlp_emb")
            .setMaxSentenceLength(spec.max_length)
            .setCaseSensitive(cased)
            .setBatchSize(batch_size)
        )
        _LOADED[key] = model
        return model


def _case_sensitive(model: str) -> bool:
    """Whether ``model``'s tokenizer keeps case (``do_lower_case: false`` in its tokenizer config)."""
    import json

    path = resolve_model_dir(model) / "tokenizer_config.json"
    if not path.is_file():
        return False
    return not json.loads(path.read_text()).get("do_lower_case", True)


def l2_normalize(col: str) -> Any:
    """``col`` (``array<float>``) divided by its L2 norm, in Spark SQL; a zero vector stays zero."""
    v = F.col(col)
    norm = F.sqrt(F.aggregate(v, F.lit(0.0).cast("double"), lambda acc, x: acc + x * x))
    return F.when(norm > 0, F.transform(v, lambda x: (x / norm).cast("float"))).otherwise(v)


def sparknlp_embed(df: DataFrame, text_col: str, spec: ModelSpec, out_col: str, *, batch_size: int = 64) -> DataFrame:
    """``df`` with ``out_col``: the ``array<float>`` vector of ``text_col`` from Spark NLP's annotators.

    The vector is L2-normalised when ``spec.normalize``. Null and empty texts
    get a null vector. Rows are neither added nor removed.

    Raises
    ------
    ConfigError
        See :func:`annotator`.
    """
    spark = df.sparkSession
    model = annotator(spark, spec, batch_size)  # checks first that Spark NLP can run here
    from sparknlp.annotator import SentenceEmbeddings, Tokenizer
    from sparknlp.base import DocumentAssembler

    staged = df.withColumn("_snlp_in", F.coalesce(F.col(text_col), F.lit("")))
    out = (
        DocumentAssembler()
        .setInputCol("_snlp_in")
        .setOutputCol("_snlp_doc")
        .setCleanupMode("disabled")
        .transform(staged)
    )
    if spec.backend == "sparknlp-bert":
        tokens = (
            Tokenizer()
            .setInputCols(["_snlp_doc"])
            .setOutputCol("_snlp_tok")
            .setSplitPattern(r"[\s\p{Punct}]")
            .setContextChars(PUNCTUATION)
        )
        out = tokens.fit(out.limit(0)).transform(out)
        out = model.transform(out)
        pooled = (
            SentenceEmbeddings()
            .setInputCols(["_snlp_doc", "_snlp_emb"])
            .setOutputCol("_snlp_vec")
            .setPoolingStrategy("AVERAGE")
        )
        out = pooled.transform(out)
        vec = "_snlp_vec"
    else:
        out = model.transform(out)
        vec = "_snlp_emb"
    first = F.col(vec).getItem(0).getField("embeddings")
    present = F.col(text_col).isNotNull() & (F.length(F.col("_snlp_in")) > 0) & (F.size(F.col(vec)) > 0)
    out = out.withColumn(out_col, F.when(present, first.cast("array<float>")))
    if spec.normalize:
        out = out.withColumn(out_col, l2_normalize(out_col))
    return out.drop("_snlp_in", "_snlp_doc", "_snlp_tok", "_snlp_emb", "_snlp_vec")
