"""Text cleaning as Column → Column functions built from Spark SQL built-ins.

Each function takes and returns a :class:`pyspark.sql.Column`, so it can be
unit-tested on a tiny DataFrame and composed freely. :func:`clean_text` chains
them as configured, :class:`TextCleaner` wraps that as a pyspark.ml stage, and
:func:`clean_frame` applies the stage's row rules (empty, too long, exact
duplicates) and says where every row went.

Spark has no Unicode normalisation built-in, so :func:`nfkc` is the one
pandas (Arrow-batched) UDF here; everything else runs in the JVM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param.shared import HasInputCol, HasOutputCol, Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, StringType

from dmine_spark.compat import arrow_udf
from dmine_spark.config import PII_TYPES, CleanConfig, LanguageConfig, PiiConfig
from dmine_spark.io.schema import ColumnSpec, SchemaChecked
from dmine_spark.prepare.pii_rules import check_types

__all__ = [
    "nfkc",
    "fullwidth_to_halfwidth",
    "handle_urls",
    "URL_PATTERN",
    "strip_html",
    "remove_control_chars",
    "collapse_whitespace",
    "truncate",
    "content_hash",
    "text_key",
    "clean_text",
    "TextCleaner",
    "CleanResult",
    "text_rows",
    "clean_frame",
    "apply_near_duplicates",
]

# Full-width ASCII forms (U+FF01..U+FF5E) and the ideographic space, mapped to their half-width forms
_FULLWIDTH = "".join(chr(c) for c in range(0xFF01, 0xFF5F)) + "\u3000"
_HALFWIDTH = "".join(chr(c - 0xFEE0) for c in range(0xFF01, 0xFF5F)) + " "
_URL_BODY = "[^\\s<>\"'\\x{3000}-\\x{9FFF}\\x{FF00}-\\x{FFEF}]"
_URL_END = "[^\\s<>\"'.,;:!?)\\]}\\x{3000}-\\x{9FFF}\\x{FF00}-\\x{FFEF}]"
# a URL does not end in the punctuation that follows it in a sentence
URL_PATTERN = r"(?i)\b(?:https?://|ftp://|www\.)" + _URL_BODY + "*" + _URL_END

_ENTITIES = {"&nbsp;": " ", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'", "&apos;": "'"}


@arrow_udf(StringType())
def nfkc(s: pa.Array) -> pa.Array:
    """Unicode NFKC (full-width → half-width, ligatures, compatibility forms).

    Spark SQL has no normalisation built-in, so this is an Arrow UDF: each
    batch arrives as a ``pyarrow`` array and is normalised in Arrow's C++
    kernel (utf8proc), without a pandas round trip or a Python call per row.
    """
    return pc.utf8_normalize(s, form="NFKC")


def fullwidth_to_halfwidth(col: Column) -> Column:
    """Full-width Latin letters, digits and punctuation (common in CJK text) to ASCII, in the JVM.

    The cheap built-in alternative to :func:`nfkc` when only the width of
    characters needs folding (``clean.unicode: fullwidth``).
    """
    return F.translate(col, _FULLWIDTH, _HALFWIDTH)


def handle_urls(col: Column, mode: str = "keep", placeholder: str = "<URL>") -> Column:
    """``keep`` URLs, ``mask`` them with ``placeholder`` or ``remove`` them."""
    if mode == "keep":
        return col
    if mode not in ("mask", "remove"):
        raise ValueError(f"clean.urls: expected keep, mask or remove, got {mode!r}")
    has_url = (F.instr(col, "://") > 0) | (F.instr(F.lower(col), "www.") > 0)
    return F.when(has_url, F.regexp_replace(col, URL_PATTERN, placeholder if mode == "mask" else " ")).otherwise(col)


def strip_html(col: Column) -> Column:
    """Drop ``<script>``/``<style>`` bodies and tags, and decode the common entities.

    The regular expressions run only on texts that contain ``<`` (and the
    entity replacements only on texts with ``&``), so plain text costs two
    substring searches.
    """
    tags = F.regexp_replace(col, r"(?is)<(script|style)\b.*?</\1\s*>", " ")
    tags = F.regexp_replace(tags, r"(?s)<!--.*?-->", " ")
    tags = F.regexp_replace(tags, r"</?[A-Za-z][^<>]*>", " ")
    out = F.when(F.instr(col, "<") > 0, tags).otherwise(col)
    ents = out
    for entity, char in _ENTITIES.items():
        ents = F.replace(ents, F.lit(entity), F.lit(char))
    # &amp; last, so "&amp;lt;" becomes the text "&lt;" rather than "<"
    ents = F.replace(ents, F.lit("&amp;"), F.lit("&"))
    return F.when(F.instr(out, "&") > 0, ents).otherwise(out)


def remove_control_chars(col: Column) -> Column:
    """Remove zero-width/format characters; turn other control characters into spaces."""
    out = F.regexp_replace(col, r"[\p{Cf}\x{FEFF}]", "")
    return F.regexp_replace(out, r"\p{Cc}", " ")


def collapse_whitespace(col: Column) -> Column:
    """Collapse every run of (Unicode) whitespace to one space and trim the ends."""
    return F.trim(F.regexp_replace(col, r"[\s\p{Z}]+", " "))


def truncate(col: Column, max_chars: int) -> Column:
    """Keep at most ``max_chars`` characters."""
    return F.substring(col, 1, max_chars)


def content_hash(col: Column) -> Column:
    """SHA-256 of the case-folded text: the key for exact duplicates."""
    return F.sha2(F.lower(col), 256)


def text_key(col: Column | str) -> Column:
    """The key of a text's embedding: SHA-256 of its exact characters (hex).

    The clean stage stores it as ``text_key`` and the embedding cache is keyed
    by it; this is the one place it is derived.
    """
    return F.sha2(F.col(col) if isinstance(col, str) else col, 256)


def clean_text(
    col: Column,
    *,
    strip_markup: bool = True,
    lowercase: bool = False,
    unicode: str = "nfkc",
    urls: str = "keep",
) -> Column:
    """The whole cleaning chain, in the order the steps depend on each other.

    ``unicode`` is ``nfkc`` (the one pandas UDF: full Unicode compatibility
    folding), ``fullwidth`` (full-width → half-width only, a JVM built-in) or
    ``none``.
    """
    # ASCII text is already in NFKC and holds no format characters: only the other rows pay for those steps
    ascii_only = F.length(col) == F.octet_length(col)
    if unicode == "nfkc":
        out = F.coalesce(nfkc(F.when(~ascii_only, col)), col)
    elif unicode == "fullwidth":
        out = fullwidth_to_halfwidth(col)
    elif unicode == "none":
        out = col
    else:
        raise ValueError(f"clean.unicode: expected nfkc, fullwidth or none, got {unicode!r}")
    if strip_markup:
        out = strip_html(out)
    out = handle_urls(out, urls)
    # drop format (zero-width) characters, then turn control characters and whitespace runs into one space
    out = F.when(ascii_only, out).otherwise(F.regexp_replace(out, r"\p{Cf}", ""))
    out = F.trim(F.regexp_replace(out, r"[\s\p{Z}\p{Cc}]+", " "))
    if lowercase:
        out = F.lower(out)
    return out


class TextCleaner(SchemaChecked, Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable):
    """pyspark.ml stage that writes the cleaned, PII-masked text of ``inputCol`` to ``outputCol``.

    The text goes through :func:`clean_text` (Unicode, markup, URLs, control
    characters, whitespace, case), then :func:`~dmine_spark.prepare.pii.mask_pii`
    for ``piiTypes``, then is cut to ``maxChars``. The clean stage, batch and
    streaming scoring and a saved model all clean text through this one stage,
    so a text is cleaned the same way wherever it comes from. Null stays null.
    """

    stripHtml = Param(Params._dummy(), "stripHtml", "remove HTML tags and entities", TypeConverters.toBoolean)
    lowercase = Param(Params._dummy(), "lowercase", "lowercase the text", TypeConverters.toBoolean)
    unicode = Param(Params._dummy(), "unicode", "nfkc, fullwidth or none", TypeConverters.toString)
    urls = Param(Params._dummy(), "urls", "keep, mask or remove URLs", TypeConverters.toString)
    maxChars = Param(
        Params._dummy(), "maxChars", "truncate to this many characters (0: no limit)", TypeConverters.toInt
    )
    piiTypes = Param(
        Params._dummy(),
        "piiTypes",
        f"PII types to mask, of {list(PII_TYPES)} (empty: none)",
        TypeConverters.toListString,
    )
    backend = Param(
        Params._dummy(),
        "backend",
        "'builtin' (Spark SQL) or 'sparknlp' (Spark NLP annotators)",
        TypeConverters.toString,
    )

    @keyword_only
    def __init__(
        self,
        *,
        inputCol: str = "text",
        outputCol: str = "text_clean",
        stripHtml: bool = True,
        lowercase: bool = False,
        unicode: str = "nfkc",
        urls: str = "keep",
        maxChars: int = 0,
        piiTypes: Sequence[str] = PII_TYPES,
        backend: str = "builtin",
    ) -> None:
        super().__init__()
        self._setDefault(
            inputCol="text",
            outputCol="text_clean",
            stripHtml=True,
            lowercase=False,
            unicode="nfkc",
            urls="keep",
            maxChars=0,
            piiTypes=list(PII_TYPES),
            backend="builtin",
        )
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(
        self,
        *,
        inputCol: str = "text",
        outputCol: str = "text_clean",
        stripHtml: bool = True,
        lowercase: bool = False,
        unicode: str = "nfkc",
        urls: str = "keep",
        maxChars: int = 0,
        piiTypes: Sequence[str] = PII_TYPES,
        backend: str = "builtin",
    ) -> TextCleaner:
        kwargs = self._input_kwargs
        if kwargs.get("unicode") not in (None, "nfkc", "fullwidth", "none"):
            raise ValueError(f"TextCleaner: unicode must be nfkc, fullwidth or none, got {kwargs['unicode']!r}")
        if kwargs.get("urls") not in (None, "keep", "mask", "remove"):
            raise ValueError(f"TextCleaner: urls must be keep, mask or remove, got {kwargs['urls']!r}")
        if kwargs.get("backend") not in (None, "builtin", "sparknlp"):
            raise ValueError(f"TextCleaner: backend must be builtin or sparknlp, got {kwargs['backend']!r}")
        if kwargs.get("piiTypes"):
            check_types(kwargs["piiTypes"])
        return self._set(**kwargs)

    @classmethod
    def from_config(
        cls, clean: CleanConfig, pii: PiiConfig | None = None, *, inputCol: str = "text", outputCol: str = "text"
    ) -> TextCleaner:
        """The cleaner a pipeline's ``clean`` and ``pii`` sections describe."""
        types = list(pii.types) if pii is not None and pii.enabled else []
        return cls(
            inputCol=inputCol,
            outputCol=outputCol,
            stripHtml=clean.strip_html,
            lowercase=clean.lowercase,
            unicode=clean.unicode,
            urls=clean.urls,
            maxChars=clean.max_chars,
            piiTypes=types,
            backend=clean.backend,
        )

    def _sparknlp(self) -> bool:
        return self.getOrDefault("backend") == "sparknlp"

    def normalized(self, col: Column) -> Column:
        """The text transforms alone: :func:`clean_text` with this stage's settings (no masking, no cut).

        With the ``sparknlp`` backend, only the steps that stay Spark SQL
        built-ins (Unicode folding, URLs, control characters); markup and case
        are left to :meth:`normalize_frame`.
        """
        nlp = self._sparknlp()
        return clean_text(
            col,
            strip_markup=self.getOrDefault("stripHtml") and not nlp,
            lowercase=self.getOrDefault("lowercase") and not nlp,
            unicode=self.getOrDefault("unicode"),
            urls=self.getOrDefault("urls"),
        )

    def normalize_frame(self, df: DataFrame, col: str) -> DataFrame:
        """``df`` with ``col`` normalised: :meth:`normalized`, then (``sparknlp``) Spark NLP's DocumentNormalizer."""
        out = df.withColumn(col, self.normalized(F.col(col)))
        if self._sparknlp():
            from dmine_spark.prepare.sparknlp import normalize_frame

            out = normalize_frame(
                out, col, strip_html=self.getOrDefault("stripHtml"), lowercase=self.getOrDefault("lowercase")
            )
        return out

    def tokenize_frame(self, df: DataFrame, col: str) -> DataFrame:
        """After masking: ``df`` unchanged (``builtin``), or ``col`` as Spark NLP's kept tokens (``sparknlp``)."""
        if not self._sparknlp():
            return df
        from dmine_spark.prepare.sparknlp import tokenize_frame

        return tokenize_frame(df, col)

    def masked(self, col: Column) -> Column | None:
        """``struct<text, counts>`` of :func:`~dmine_spark.prepare.pii.mask_pii` for ``piiTypes`` (None: no masking)."""
        from dmine_spark.prepare.pii import mask_pii

        types = self.getOrDefault("piiTypes")
        return mask_pii(col, types) if types else None

    def cut(self, col: Column) -> Column:
        """``col`` cut to ``maxChars`` (unchanged when it is 0)."""
        n = self.getOrDefault("maxChars")
        return truncate(col, n) if n > 0 else col

    def clean_column(self, col: Column) -> Column:
        """The whole cleaning of ``col``: transforms, PII masking, then the length cut (``builtin`` only).

        Raises
        ------
        ValueError
            With the ``sparknlp`` backend, whose annotators transform whole
            DataFrames: use :meth:`transform`.
        """
        if self._sparknlp():
            raise ValueError("TextCleaner: the sparknlp backend cleans DataFrames, not columns; use transform()")
        out = self.normalized(col)
        masked = self.masked(out)
        if masked is not None:
            out = masked["text"]
        return self.cut(out)

    def _input_columns(self) -> dict[str, ColumnSpec]:
        return {self.getInputCol(): ((StringType,), "a string")}

    def _output_columns(self) -> list[tuple[str, DataType]]:
        return [(self.getOutputCol(), StringType())]

    def _transform(self, dataset: DataFrame) -> DataFrame:
        self.transformSchema(dataset.schema)
        if not self._sparknlp():
            return dataset.withColumn(self.getOutputCol(), self.clean_column(F.col(self.getInputCol())))
        tmp = "_dmine_clean"
        out = self.normalize_frame(dataset.withColumn(tmp, F.col(self.getInputCol())), tmp)
        masked = self.masked(F.col(tmp))
        if masked is not None:
            out = out.withColumn(tmp, masked["text"])
        out = self.tokenize_frame(out, tmp)
        return out.withColumn(self.getOutputCol(), self.cut(F.col(tmp))).drop(tmp)


@dataclass
class CleanResult:
    """Every input row once, with the ``outcome`` of cleaning.

    ``decided`` holds all rows (persist it when writing more than one view);
    ``clean``, ``quarantine`` and ``duplicates`` are its three disjoint parts.
    """

    decided: DataFrame
    columns: list[str]

    @property
    def extra(self) -> list[str]:
        return [c for c in ("language", "language_score") if c in self.decided.columns]

    @property
    def clean(self) -> DataFrame:
        return self.decided.where(F.col("outcome") == "clean").select(
            *self.columns, *self.extra, "text_key", "text_hash", "truncated"
        )

    @property
    def quarantine(self) -> DataFrame:
        return self.decided.where(F.col("outcome") == "quarantine").select(*self.columns, "text_raw", "rule", "reason")

    @property
    def refused(self) -> DataFrame:
        """The quarantined rows in the quarantine table's columns: ``split`` names the source, ``raw`` the original text."""
        return self.quarantine.select(
            "id",
            F.col("source").alias("split"),
            "source_file",
            "rule",
            "reason",
            F.col("text_raw").alias("raw"),
        )

    @property
    def duplicates(self) -> DataFrame:
        return self.decided.where(F.col("outcome") == "duplicate").select(
            *self.columns, "text_hash", "kept_id", F.col("dup_rule").alias("rule"), "jaccard"
        )


def text_rows(rows: DataFrame, *, text_col: str, label_col: str | None, dedup: Column) -> DataFrame:
    """Ingested rows as the clean step reads them: ``id, split, source, source_file, text, label, _dedup``.

    ``text`` and ``label`` are the source's text and label columns (the label
    as a string, null when there is none); ``_dedup`` says which rows take part
    in exact deduplication.
    """
    label = F.col(label_col).cast("string") if label_col and label_col in rows.columns else F.lit(None)
    source = F.col("source") if "source" in rows.columns else F.col("split")
    return rows.select(
        "id",
        "split",
        source.alias("source"),
        "source_file",
        F.col(text_col).cast("string").alias("text"),
        label.cast("string").alias("label"),
        dedup.alias("_dedup"),
    )


def clean_frame(
    df: DataFrame,
    cfg: CleanConfig,
    *,
    text_col: str = "text",
    id_col: str = "id",
    dedup_groups: list[str] | None = None,
    dedup_col: str | None = None,
    pii: PiiConfig | None = None,
    language: LanguageConfig | None = None,
    cleaner: TextCleaner | None = None,
) -> CleanResult:
    """Clean ``text_col`` and decide for each row: clean, quarantined or duplicate.

    The steps, in order: the text transforms and PII masking of ``cleaner``
    (with its ``sparknlp`` backend, Spark NLP's tokens after the masking);
    language detection (``language``); the row rules (``empty_text``,
    ``text_too_long``, ``language_not_kept``); the cut to ``max_chars``;
    exact dedup on the content hash of the cleaned, masked text.

    Parameters
    ----------
    df : DataFrame
        Rows with ``id_col`` and ``text_col``.
    cfg : CleanConfig
        The row rules (``min_chars``, ``max_chars``, ``on_too_long``) and, when
        ``cleaner`` is not given, the text transforms.
    dedup_groups : list of str
        Columns inside which duplicates count (for example the split), so a
        text in both train and test is not removed from either.
    dedup_col : str, optional
        Boolean column saying which rows take part in exact dedup; ``None``
        dedups every row.
    pii : PiiConfig, optional
        With no ``cleaner``: mask these PII types. ``pii_counts`` (type → values
        masked) is added whenever the cleaner masks.
    language : LanguageConfig, optional
        Detect the language into ``language``/``language_score`` and
        quarantine the languages not kept.
    cleaner : TextCleaner, optional
        The cleaning to apply (a saved model's own, when scoring); by default
        :meth:`TextCleaner.from_config` of ``cfg`` and ``pii``.

    Returns
    -------
    CleanResult
        Clean rows get the cleaned text, ``text_key``, ``text_hash`` and
        ``truncated``; quarantined rows ``rule``, ``reason`` and the original
        ``text_raw`` (PII masked); duplicates the ``kept_id`` of the row they repeat.
    """
    cleaner = cleaner if cleaner is not None else TextCleaner.from_config(cfg, pii)
    max_chars = cleaner.getOrDefault("maxChars") or cfg.max_chars
    min_chars = max(cfg.min_chars, 1)
    staged = cleaner.normalize_frame(df.withColumn("text_raw", F.col(text_col)), text_col)
    masked = cleaner.masked(F.col(text_col))
    masking = masked is not None
    if masking:
        staged = (
            staged.withColumn("_pii", masked)
            .withColumn(text_col, F.col("_pii.text"))
            .withColumn("pii_counts", F.col("_pii.counts"))
            .drop("_pii")
        )
    staged = cleaner.tokenize_frame(staged, text_col)
    length = F.coalesce(F.char_length(F.col(text_col)), F.lit(0))
    staged = staged.withColumn("_len", length)
    lang_rule = None
    if language is not None and language.enabled:
        from dmine_spark.prepare.lang import detect_language

        staged = staged.withColumn("_lang", detect_language(F.col(text_col), language.candidates or None)).select(
            "*", F.col("_lang.lang").alias("language"), F.col("_lang.lang_score").alias("language_score")
        )
        staged = staged.drop("_lang")
        if language.keep:
            kept = F.col("language").isin(*language.keep) & (F.col("language_score") >= language.min_score)
            lang_rule = (F.col("_len") >= min_chars) & ~kept
    reason = F.when(
        F.col("rule") == "empty_text",
        F.format_string(f"text has %d characters after cleaning; at least {min_chars} required", F.col("_len")),
    ).when(
        F.col("rule") == "text_too_long",
        F.format_string(f"text has %d characters; the limit is {max_chars}", F.col("_len")),
    )
    if lang_rule is not None:
        reason = reason.when(
            F.col("rule") == "language_not_kept",
            F.format_string(
                f"language %s (score %.2f) is not one of {', '.join(language.keep)}",
                F.col("language"),
                F.col("language_score"),
            ),
        )
    staged = (
        staged.withColumn(
            "rule",
            F.when(F.col("_len") < min_chars, F.lit("empty_text"))
            .when((F.col("_len") > max_chars) & F.lit(cfg.on_too_long == "quarantine"), F.lit("text_too_long"))
            .when(lang_rule if lang_rule is not None else F.lit(False), F.lit("language_not_kept"))
            .otherwise(F.lit(None).cast("string")),
        )
        .withColumn("reason", reason)
        .withColumn("truncated", F.col("rule").isNull() & (F.col("_len") > max_chars))
        # quarantined rows keep their original text, with the PII masked all the same (only they pay for it)
        .withColumn(
            "text_raw",
            F.when(F.col("rule").isNotNull(), cleaner.masked(F.col("text_raw"))["text"])
            if masking
            else F.col("text_raw"),
        )
        .withColumn(text_col, F.when(F.col("rule").isNull(), truncate(F.col(text_col), max_chars)))
        .withColumn("text_key", F.when(F.col("rule").isNull(), text_key(F.col(text_col))))
        .withColumn("text_hash", F.when(F.col("rule").isNull(), content_hash(F.col(text_col))))
    )
    takes_part = F.col("rule").isNull() & (F.col(dedup_col) if dedup_col else F.lit(True))
    w = Window.partitionBy(*(dedup_groups or []), "text_hash")
    decided = (
        staged.withColumn("kept_id", F.when(takes_part, F.min(F.when(takes_part, F.col(id_col))).over(w)))
        .withColumn(
            "outcome",
            F.when(F.col("rule").isNotNull(), F.lit("quarantine"))
            .when(F.col("kept_id").isNotNull() & (F.col("kept_id") != F.col(id_col)), F.lit("duplicate"))
            .otherwise(F.lit("clean")),
        )
        .withColumn("dup_rule", F.when(F.col("outcome") == "duplicate", F.lit("exact_duplicate")))
        .withColumn("jaccard", F.when(F.col("outcome") == "duplicate", F.lit(1.0)))
        .drop("_len")
    )
    return CleanResult(decided=decided, columns=list(df.columns))


def apply_near_duplicates(decided: DataFrame, dups: DataFrame, *, id_col: str = "id") -> DataFrame:
    """Mark the clean rows listed in ``dups`` (``id``, ``kept_id``, ``jaccard``) as near duplicates."""
    nd = dups.select(F.col(id_col).alias("_nd_id"), F.col("kept_id").alias("_nd_kept"), F.col("jaccard").alias("_nd_j"))
    joined = decided.join(nd, decided[id_col] == nd["_nd_id"], "left")
    is_near = (F.col("outcome") == "clean") & F.col("_nd_kept").isNotNull()
    return (
        joined.withColumn("kept_id", F.when(is_near, F.col("_nd_kept")).otherwise(F.col("kept_id")))
        .withColumn("dup_rule", F.when(is_near, F.lit("near_duplicate")).otherwise(F.col("dup_rule")))
        .withColumn("jaccard", F.when(is_near, F.col("_nd_j")).otherwise(F.col("jaccard")))
        .withColumn("outcome", F.when(is_near, F.lit("duplicate")).otherwise(F.col("outcome")))
        .drop("_nd_id", "_nd_kept", "_nd_j")
    )
