"""Spark NLP as the text backend of the clean step (``clean.backend: sparknlp``, Spark 3.5 line).

Spark NLP publishes builds for Spark 3.5 (Scala 2.12) only, so these stages
run on that line, with the jars of ``dmine jars fetch sparknlp`` on the
session's classpath. Nothing pretrained is downloaded: the annotators used
here are rule-based (the stop words are Spark ML's English list, which
``StopWordsCleaner`` loads by default).

The chain, split in two so PII is masked on whole text, not on tokens:

1. :func:`normalize_frame`: ``DocumentAssembler`` → ``DocumentNormalizer``
   (HTML tags and the common entities removed, optional lowercasing) →
   ``Finisher``: one string per row.
2. the clean step masks PII in that string (typed placeholders such as
   ``<EMAIL>``, which step 1's tag pattern never removes);
3. :func:`tokenize_frame`: ``DocumentAssembler`` → ``Tokenizer`` →
   ``Normalizer`` (keeps letters, marks, digits and the placeholders' angle
   brackets) → ``StopWordsCleaner`` → ``Finisher``: the kept tokens joined
   with single spaces.

Every step is a row-wise projection, so rows are neither added nor lost, and
a null text stays null.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pyspark.sql import functions as F

from dmine_spark.compat import current_line, pyspark_version
from dmine_spark.config import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["require_sparknlp", "normalize_frame", "tokenize_frame", "TAG_PATTERN", "TOKEN_CLEANUP"]

# an HTML/XML tag, but never one of dmine's own placeholders (<EMAIL>, <URL>...)
TAG_PATTERN = r"<(?![A-Z_]+>)/?[A-Za-z!][^<>]*>"
_ENTITY_PATTERNS = [r"&nbsp;", r"&lt;", r"&gt;", r"&quot;", r"&#39;", r"&apos;", r"&amp;"]
# what the Normalizer removes from every token: all but letters, combining marks, digits and < >
TOKEN_CLEANUP = r"[^\pL\pM\pN<>]"


def require_sparknlp(spark: SparkSession, key: str) -> None:
    """Check that ``spark`` can run Spark NLP annotators; ``key`` names the setting that asked for them.

    Raises
    ------
    ConfigError
        On the 4.x line (no Spark NLP build exists for it), when the
        ``spark-nlp`` Python package is missing, or when its jars are not on
        the session's classpath; each says what to do.
    """
    if not current_line().sparknlp:
        version = ".".join(map(str, pyspark_version()))
        raise ConfigError(
            f"{key}: sparknlp: Spark NLP has no build for Spark {version} (Scala {current_line().scala}); "
            "its backends run on the Spark 3.5 line: `bash dev.sh setup --spark 3.5`"
        )
    try:
        import sparknlp  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"{key}: sparknlp: the spark-nlp Python package is not installed; pip install 'dmine_spark[spark35]'"
        ) from None
    from py4j.java_gateway import JavaClass

    jvm = spark.sparkContext._jvm
    if not isinstance(getattr(jvm, "com.johnsnowlabs.nlp.DocumentAssembler", None), JavaClass):
        raise ConfigError(
            f"{key}: sparknlp: Spark NLP's jars are not on this session's classpath; run `dmine jars fetch sparknlp` "
            "once, then start a new dmine process (spark-submit.sh passes them with --jars)"
        )


def _finish(df: DataFrame, annotations: str, out_col: str, drop: list[str]) -> DataFrame:
    from sparknlp.base import Finisher

    finisher = (
        Finisher()
        .setInputCols([annotations])
        .setOutputCols([out_col])
        .setOutputAsArray(False)
        .setAnnotationSplitSymbol(" ")
        .setIncludeMetadata(False)
        .setCleanAnnotations(False)
    )
    return finisher.transform(df).drop(annotations, *drop)


def normalize_frame(df: DataFrame, col: str, *, strip_html: bool = True, lowercase: bool = False) -> DataFrame:
    """``df`` with ``col`` run through ``DocumentAssembler`` → ``DocumentNormalizer`` (step 1 of the module).

    Tags and entities are replaced by a space when ``strip_html``; the text is
    lowercased when ``lowercase``; runs of whitespace become one space. Null
    stays null.
    """
    require_sparknlp(df.sparkSession, "clean.backend")
    from sparknlp.annotator import DocumentNormalizer
    from sparknlp.base import DocumentAssembler

    doc, norm, out = "_snlp_doc", "_snlp_norm", "_snlp_text"
    staged = df.withColumn("_snlp_in", F.coalesce(F.col(col), F.lit("")))
    assembled = DocumentAssembler().setInputCol("_snlp_in").setOutputCol(doc).setCleanupMode("shrink").transform(staged)
    patterns = [TAG_PATTERN, *_ENTITY_PATTERNS] if strip_html else [r"(?!)"]
    normalizer = (
        DocumentNormalizer()
        .setInputCols([doc])
        .setOutputCol(norm)
        .setAction("clean")
        .setPatterns(patterns)
        .setReplacement(" ")
        .setPolicy("pretty_all")
        .setLowercase(lowercase)
    )
    finished = _finish(normalizer.transform(assembled), norm, out, [doc, "_snlp_in"])
    text = F.trim(F.regexp_replace(F.col(out), r"\s+", " "))
    return finished.withColumn(col, F.when(F.col(col).isNotNull(), text)).drop(out)


def tokenize_frame(df: DataFrame, col: str) -> DataFrame:
    """``df`` with ``col`` tokenised, normalised and stripped of stop words (step 3 of the module).

    The kept tokens are joined with single spaces; a text with no token left
    becomes ``""`` (the clean step then quarantines it as ``empty_text``).
    Null stays null.
    """
    require_sparknlp(df.sparkSession, "clean.backend")
    from pyspark.ml import Pipeline
    from sparknlp.annotator import Normalizer, StopWordsCleaner, Tokenizer
    from sparknlp.base import DocumentAssembler

    staged = df.withColumn("_snlp_in", F.coalesce(F.col(col), F.lit("")))
    stages = [
        DocumentAssembler().setInputCol("_snlp_in").setOutputCol("_snlp_doc").setCleanupMode("shrink"),
        Tokenizer().setInputCols(["_snlp_doc"]).setOutputCol("_snlp_tok"),
        Normalizer().setInputCols(["_snlp_tok"]).setOutputCol("_snlp_norm").setCleanupPatterns([TOKEN_CLEANUP]),
        StopWordsCleaner().setInputCols(["_snlp_norm"]).setOutputCol("_snlp_kept").setCaseSensitive(False),
    ]
    # Normalizer is an approach with nothing to learn: fitting reads no rows
    annotated = Pipeline(stages=stages).fit(staged.limit(0)).transform(staged)
    finished = _finish(annotated, "_snlp_kept", "_snlp_text", ["_snlp_doc", "_snlp_tok", "_snlp_norm", "_snlp_in"])
    return finished.withColumn(col, F.when(F.col(col).isNotNull(), F.coalesce(F.col("_snlp_text"), F.lit("")))).drop(
        "_snlp_text"
    )
