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

from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param.shared import HasInputCol, HasOutputCol, Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from dmine_spark.config import CleanConfig, LanguageConfig, PiiConfig

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
    "clean_text",
    "TextCleaner",
    "CleanResult",
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


@F.arrow_udf(StringType())
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


class TextCleaner(Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable):
    """pyspark.ml stage that writes the cleaned text of ``inputCol`` to ``outputCol``."""

    stripHtml = Param(Params._dummy(), "stripHtml", "remove HTML tags and entities", TypeConverters.toBoolean)
    lowercase = Param(Params._dummy(), "lowercase", "lowercase the text", TypeConverters.toBoolean)
    unicode = Param(Params._dummy(), "unicode", "nfkc, fullwidth or none", TypeConverters.toString)
    urls = Param(Params._dummy(), "urls", "keep, mask or remove URLs", TypeConverters.toString)
    maxChars = Param(
        Params._dummy(), "maxChars", "truncate to this many characters (0: no limit)", TypeConverters.toInt
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
    ) -> "TextCleaner":
        return self._set(**self._input_kwargs)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        in_col, out_col = self.getInputCol(), self.getOutputCol()
        fields = {f.name: f for f in dataset.schema.fields}
        if in_col not in fields:
            raise ValueError(f"TextCleaner: input column {in_col!r} not found in {sorted(fields)}")
        if not isinstance(fields[in_col].dataType, StringType):
            raise TypeError(
                f"TextCleaner: input column {in_col!r} must be a string, got {fields[in_col].dataType.simpleString()}"
            )
        if out_col in fields and out_col != in_col:
            raise ValueError(f"TextCleaner: output column {out_col!r} already exists")
        out = clean_text(
            F.col(in_col),
            strip_markup=self.getOrDefault("stripHtml"),
            lowercase=self.getOrDefault("lowercase"),
            unicode=self.getOrDefault("unicode"),
            urls=self.getOrDefault("urls"),
        )
        n = self.getOrDefault("maxChars")
        if n > 0:
            out = truncate(out, n)
        return dataset.withColumn(out_col, out)


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
            *self.columns, *self.extra, "text_hash", "truncated"
        )

    @property
    def quarantine(self) -> DataFrame:
        return self.decided.where(F.col("outcome") == "quarantine").select(*self.columns, "text_raw", "rule", "reason")

    @property
    def duplicates(self) -> DataFrame:
        return self.decided.where(F.col("outcome") == "duplicate").select(
            *self.columns, "text_hash", "kept_id", F.col("dup_rule").alias("rule"), "jaccard"
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
) -> CleanResult:
    """Clean ``text_col`` and decide for each row: clean, quarantined or duplicate.

    The steps, in order: Unicode, markup, URL and whitespace cleaning; PII
    masking (``pii``); language detection (``language``); the row rules
    (``empty_text``, ``text_too_long``, ``language_not_kept``); exact dedup on
    the content hash of the cleaned, masked text.

    Parameters
    ----------
    df : DataFrame
        Rows with ``id_col`` and ``text_col``.
    cfg : CleanConfig
        Unicode, markup, URL, case and length settings.
    dedup_groups : list of str
        Columns inside which duplicates count (for example the split), so a
        text in both train and test is not removed from either.
    dedup_col : str, optional
        Boolean column saying which rows take part in exact dedup; ``None``
        dedups every row.
    pii : PiiConfig, optional
        Mask these PII types; ``pii_counts`` (type → values masked) is added.
    language : LanguageConfig, optional
        Detect the language into ``language``/``language_score`` and
        quarantine the languages not kept.

    Returns
    -------
    CleanResult
        Clean rows get the cleaned text, ``text_hash`` and ``truncated``;
        quarantined rows ``rule``, ``reason`` and the original ``text_raw``
        (PII masked); duplicates the ``kept_id`` of the row they repeat.
    """
    min_chars = max(cfg.min_chars, 1)
    cleaned = clean_text(
        F.col(text_col), strip_markup=cfg.strip_html, lowercase=cfg.lowercase, unicode=cfg.unicode, urls=cfg.urls
    )
    staged = df.withColumn("text_raw", F.col(text_col)).withColumn(text_col, cleaned)
    masking = pii is not None and pii.enabled and pii.types
    if masking:
        from dmine_spark.prepare.pii import mask_pii

        staged = (
            staged.withColumn("_pii", mask_pii(F.col(text_col), pii.types))
            .withColumn(text_col, F.col("_pii.text"))
            .withColumn("pii_counts", F.col("_pii.counts"))
            .drop("_pii")
        )
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
        F.format_string(f"text has %d characters; the limit is {cfg.max_chars}", F.col("_len")),
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
            .when((F.col("_len") > cfg.max_chars) & F.lit(cfg.on_too_long == "quarantine"), F.lit("text_too_long"))
            .when(lang_rule if lang_rule is not None else F.lit(False), F.lit("language_not_kept"))
            .otherwise(F.lit(None).cast("string")),
        )
        .withColumn("reason", reason)
        .withColumn("truncated", F.col("rule").isNull() & (F.col("_len") > cfg.max_chars))
        # quarantined rows keep their original text, with the PII masked all the same (only they pay for it)
        .withColumn(
            "text_raw",
            F.when(F.col("rule").isNotNull(), mask_pii(F.col("text_raw"), pii.types)["text"])
            if masking
            else F.col("text_raw"),
        )
        .withColumn(text_col, F.when(F.col("rule").isNull(), truncate(F.col(text_col), cfg.max_chars)))
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
