"""Text cleaning as Column → Column functions built from Spark SQL built-ins.

Each function takes and returns a :class:`pyspark.sql.Column`, so it can be
unit-tested on a tiny DataFrame and composed freely. :func:`clean_text` chains
them as configured, :class:`TextCleaner` wraps that as a pyspark.ml stage, and
:func:`clean_frame` applies the stage's row rules (empty, too long, exact
duplicates) and says where every row went.

Spark has no Unicode normalisation built-in, so :func:`nfkc` is the one
Arrow-batched UDF here; everything else runs in the JVM.

Text often reaches cleaning with dmine's placeholders already in it (ingest
masks PII before the clean stage): every step leaves each placeholder of
:data:`PLACEHOLDER_PATTERN` whole, in upper case and uncut.

Zero-width characters that are part of what is written stay
(``clean.zero_width: keep_in_words``): a joiner or non-joiner between letters
or marks (Persian ``می‌خواهم``, Indic conjuncts), a ZWJ inside an emoji
sequence (👨‍👩‍👧) and the tag characters of a subdivision flag. Every other
format character goes: zero-width spaces, word joiners, byte-order marks,
bidi marks and embeddings, and joiners at a word's edge.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param.shared import HasInputCol, HasOutputCol, Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, StringType

from dmine_spark.compat import arrow_udf
from dmine_spark.config import PII_TYPES, CleanConfig, LanguageConfig, PiiConfig
from dmine_spark.io.schema import ColumnSpec, SchemaChecked
from dmine_spark.prepare.pii_rules import PLACEHOLDERS as PII_PLACEHOLDERS
from dmine_spark.prepare.pii_rules import check_types

__all__ = [
    "URL_PLACEHOLDER",
    "PLACEHOLDER_PATTERN",
    "ZERO_WIDTH_MODES",
    "nfkc",
    "nfkc_batch",
    "fullwidth_to_halfwidth",
    "handle_urls",
    "URL_PATTERN",
    "strip_html",
    "remove_format_chars",
    "remove_control_chars",
    "collapse_whitespace",
    "lower",
    "truncate",
    "content_hash",
    "text_key",
    "text_key_of",
    "clean_text",
    "TextCleaner",
    "LOCAL_MAX_TEXTS",
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

URL_PLACEHOLDER = "<URL>"
_PLACEHOLDERS = (*PII_PLACEHOLDERS.values(), URL_PLACEHOLDER)
_NAMES = "(?:" + "|".join(p[1:-1] for p in _PLACEHOLDERS) + ")"
# dmine's own placeholders: every PII rule's (a rule's placeholder is <NAME>, upper case) and the masked URL's.
# The pattern reads the same in Java and Python.
PLACEHOLDER_PATTERN = "<" + _NAMES + ">"

_TAG = r"</?[A-Za-z][^<>]*>"
# a tag that holds a placeholder (a masked address in an attribute): the placeholder moves out in front of it
_TAG_HOLDING = (
    "<(?!" + _NAMES + ">)(/?[A-Za-z][^<>]*)(" + PLACEHOLDER_PATTERN + ")(?=(?:[^<>]|" + PLACEHOLDER_PATTERN + ")*>)"
)
_PLACEHOLDERS_PER_TAG = 3

ZERO_WIDTH_MODES = ("keep_in_words", "remove_all")
# Format characters that are part of what is written, each captured in a group the replacement keeps: a
# joiner or non-joiner between letters or marks, a ZWJ between emoji (after a pictograph, a skin-tone
# modifier or the emoji variation selector), a subdivision flag's tag characters. Any other format character
# matches the last alternative and goes. Only look-aheads: Java's look-behind misreads supplementary characters.
_FORMAT_IN_WORDS = (
    r"([\p{L}\p{M}][\x{200C}\x{200D}])(?=[\p{L}\p{M}])"
    r"|([\p{So}\x{1F3FB}-\x{1F3FF}\x{FE0F}]\x{200D})(?=\p{So})"
    r"|(\x{1F3F4}[\x{E0020}-\x{E007E}]+\x{E007F})"
    r"|\p{Cf}"
)
_FORMAT_KEPT = "$1$2$3"

# NFKC changes a placeholder only when combining marks follow it: ">" + U+0338 composes to "≯" (and
# canonical reordering brings U+0338 next to ">" from behind other marks)
_PLACEHOLDER_COMPOSES = PLACEHOLDER_PATTERN + r"\p{M}"
_PLACEHOLDER_SPLIT = re.compile("(" + PLACEHOLDER_PATTERN + ")")


def _bind(value: Column, body: Callable[[Column], Column]) -> Column:
    """``body(v)`` with ``value`` evaluated once, however often ``body`` uses it."""
    return F.transform(F.array(value), body).getItem(0)


def nfkc_batch(s: pa.Array) -> pa.Array:
    """NFKC of an Arrow string array, placeholders left whole: the JVM-free core of :func:`nfkc`.

    Arrow's C++ kernel (utf8proc) normalises the batch; the rare texts where
    combining marks follow a placeholder (its ``>`` would compose with a
    U+0338 among them) are normalised around their placeholders instead.
    """
    out = pc.utf8_normalize(s, form="NFKC")
    risky = pc.match_substring_regex(s, _PLACEHOLDER_COMPOSES)
    if not pc.any(risky).as_py():
        return out
    texts, flags = out.to_pylist(), risky.to_pylist()
    for i, (text, flag) in enumerate(zip(s.to_pylist(), flags, strict=True)):
        if flag:
            pieces = _PLACEHOLDER_SPLIT.split(text)
            # odd pieces are the placeholders themselves, already in NFKC
            normal = pc.utf8_normalize(pa.array(pieces[0::2], pa.string()), form="NFKC").to_pylist()
            pieces[0::2] = normal
            texts[i] = "".join(pieces)
    return pa.array(texts, pa.string())


@arrow_udf(StringType())
def nfkc(s: pa.Array) -> pa.Array:
    """Unicode NFKC (full-width → half-width, ligatures, compatibility forms); placeholders stay whole.

    Spark SQL has no normalisation built-in, so this is an Arrow UDF: each
    batch arrives as a ``pyarrow`` array and is normalised in Arrow's C++
    kernel (utf8proc) by :func:`nfkc_batch`, without a pandas round trip or
    a Python call per row.
    """
    return nfkc_batch(s)


def fullwidth_to_halfwidth(col: Column) -> Column:
    """Full-width Latin letters, digits and punctuation (common in CJK text) to ASCII, in the JVM.

    The cheap built-in alternative to :func:`nfkc` when only the width of
    characters needs folding (``clean.unicode: fullwidth``).
    """
    return F.translate(col, _FULLWIDTH, _HALFWIDTH)


def handle_urls(col: Column, mode: str = "keep", placeholder: str = URL_PLACEHOLDER) -> Column:
    """``keep`` URLs, ``mask`` them with ``placeholder`` or ``remove`` them.

    A URL never takes in a placeholder: ``<`` and ``>`` end it.
    """
    if mode == "keep":
        return col
    if mode not in ("mask", "remove"):
        raise ValueError(f"clean.urls: expected keep, mask or remove, got {mode!r}")
    has_url = (F.instr(col, "://") > 0) | (F.instr(F.lower(col), "www.") > 0)
    return F.when(has_url, F.regexp_replace(col, URL_PATTERN, placeholder if mode == "mask" else " ")).otherwise(col)


def strip_html(col: Column) -> Column:
    """Drop ``<script>``/``<style>`` bodies and tags, and decode the common entities.

    A placeholder is never taken for a tag, and one inside a tag (``<a
    href="mailto:<EMAIL>">``) is kept in front of where the tag was; only
    script and style bodies and comments go whole, with whatever they hold.
    The regular expressions run only on texts that contain ``<`` (and the
    entity replacements only on texts with ``&``), so plain text costs two
    substring searches.
    """
    tags = F.regexp_replace(col, r"(?is)<(script|style)\b.*?</\1\s*>", " ")
    tags = F.regexp_replace(tags, r"(?s)<!--.*?-->", " ")
    for _ in range(_PLACEHOLDERS_PER_TAG):
        tags = F.regexp_replace(tags, _TAG_HOLDING, "$2 <$1")
    tags = F.regexp_replace(tags, "<(?!" + _NAMES + ">)" + _TAG[1:], " ")
    out = F.when(F.instr(col, "<") > 0, tags).otherwise(col)
    ents = out
    for entity, char in _ENTITIES.items():
        ents = F.replace(ents, F.lit(entity), F.lit(char))
    # &amp; last, so "&amp;lt;" becomes the text "&lt;" rather than "<"
    ents = F.replace(ents, F.lit("&amp;"), F.lit("&"))
    return F.when(F.instr(out, "&") > 0, ents).otherwise(out)


def _check_zero_width(zero_width: str) -> None:
    if zero_width not in ZERO_WIDTH_MODES:
        raise ValueError(f"clean.zero_width: expected keep_in_words or remove_all, got {zero_width!r}")


def remove_format_chars(col: Column, zero_width: str = "keep_in_words") -> Column:
    """Remove format (zero-width, bidi) characters; ``keep_in_words`` keeps those that are part of a word or emoji."""
    _check_zero_width(zero_width)
    if zero_width == "remove_all":
        return F.regexp_replace(col, r"\p{Cf}", "")
    return F.regexp_replace(col, _FORMAT_IN_WORDS, _FORMAT_KEPT)


def remove_control_chars(col: Column, zero_width: str = "keep_in_words") -> Column:
    """Remove format characters (:func:`remove_format_chars`); turn control characters into spaces.

    ``keep_in_words`` keeps a ZWJ or ZWNJ between letters or marks, a ZWJ
    inside an emoji sequence and a subdivision flag's tag characters, and
    removes every other format character (ZWSP, U+2060, U+FEFF, bidi marks,
    embeddings and isolates, joiners at a word's edge); ``remove_all``
    removes them all.
    """
    return F.regexp_replace(remove_format_chars(col, zero_width), r"\p{Cc}", " ")


def collapse_whitespace(col: Column) -> Column:
    """Collapse every run of (Unicode) whitespace to one space and trim the ends."""
    return F.trim(F.regexp_replace(col, r"[\s\p{Z}]+", " "))


def _outside_placeholders(col: Column, fn: Callable[[Column], Column]) -> Column:
    """``fn`` applied to the text between placeholders; the placeholders themselves stay as they are."""

    def around(t: Column) -> Column:
        pieces = F.split(t, PLACEHOLDER_PATTERN, -1)
        found = F.regexp_extract_all(t, F.lit(PLACEHOLDER_PATTERN), F.lit(0))
        joined = F.concat(
            fn(F.get(pieces, 0)),
            F.array_join(F.transform(found, lambda p, i: F.concat(p, fn(F.get(pieces, i + 1)))), ""),
        )
        return F.when((F.instr(t, "<") > 0) & t.rlike(PLACEHOLDER_PATTERN), joined).otherwise(fn(t))

    return _bind(col, around)


def lower(col: Column) -> Column:
    """Lowercase the text, but not the placeholders: ``<PHONE>`` stays ``<PHONE>``."""
    return _outside_placeholders(col, F.lower)


def _cut_pattern(max_chars: int) -> str:
    # the cut is empty, or ends on a character that is not a format character (no joiner left dangling), and
    # never falls between two characters of one placeholder
    inside = "|".join(f"(?<={p[:i]})(?={p[i:]})" for p in _PLACEHOLDERS for i in range(1, len(p)))
    last = max_chars - 1
    return rf"(?s)^(?:.{{0,{last}}}[^\p{{Cf}}])?(?!{inside})"


def truncate(col: Column, max_chars: int) -> Column:
    """Keep at most ``max_chars`` characters, never half a placeholder.

    When the cut would fall inside a placeholder it falls before it, and a
    text never ends on a format character (a joiner cut from its word).
    """
    if max_chars < 1:
        raise ValueError(f"truncate: max_chars must be at least 1, got {max_chars}")
    pattern = _cut_pattern(max_chars)
    return _bind(col, lambda t: F.when(F.char_length(t) <= max_chars, t).otherwise(F.regexp_extract(t, pattern, 0)))


def content_hash(col: Column) -> Column:
    """SHA-256 of the case-folded text: the key for exact duplicates."""
    return F.sha2(F.lower(col), 256)


def text_key(col: Column | str) -> Column:
    """The key of a text's embedding: SHA-256 of its exact characters (hex).

    The clean stage stores it as ``text_key`` and the embedding cache is keyed
    by it; this is the one place it is derived.
    """
    return F.sha2(F.col(col) if isinstance(col, str) else col, 256)


def text_key_of(text: str) -> str:
    """:func:`text_key` of one text, in Python: the same SHA-256 hex of its UTF-8 characters, without Spark."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def clean_text(
    col: Column,
    *,
    strip_markup: bool = True,
    lowercase: bool = False,
    unicode: str = "nfkc",
    urls: str = "keep",
    zero_width: str = "keep_in_words",
) -> Column:
    """The whole cleaning chain, in the order the steps depend on each other.

    Placeholders already in the text (``<PHONE>``...) come out of every step
    unchanged.

    Parameters
    ----------
    col : Column
        A string column.
    strip_markup : bool
        :func:`strip_html`.
    lowercase : bool
        :func:`lower` (placeholders keep their case).
    unicode : str
        ``nfkc`` (the one Arrow UDF: full Unicode compatibility folding),
        ``fullwidth`` (full-width → half-width only, a JVM built-in) or
        ``none``.
    urls : str
        ``keep``, ``mask`` or ``remove`` (:func:`handle_urls`).
    zero_width : str
        ``keep_in_words`` or ``remove_all`` (:func:`remove_control_chars`).
    """
    _check_zero_width(zero_width)
    # ASCII text is already in NFKC and holds no format characters: only the other rows pay for those steps
    ascii_only = F.length(col) == F.octet_length(col)
    if unicode == "nfkc":
        # stray format characters go before NFKC too, so what one held apart (a letter and its accent) composes
        pre = F.when(ascii_only, col).otherwise(remove_format_chars(col, zero_width))
        out = F.coalesce(nfkc(F.when(~ascii_only, pre)), pre)
    elif unicode == "fullwidth":
        out = fullwidth_to_halfwidth(col)
    elif unicode == "none":
        out = col
    else:
        raise ValueError(f"clean.unicode: expected nfkc, fullwidth or none, got {unicode!r}")
    if strip_markup:
        out = strip_html(out)
    out = handle_urls(out, urls)
    # drop the stray format (zero-width, bidi) characters (again after NFKC: a joiner whose neighbour it turned
    # into a space is stray now), then turn control characters and whitespace runs into one space
    out = F.when(ascii_only, out).otherwise(remove_format_chars(out, zero_width))
    out = F.trim(F.regexp_replace(out, r"[\s\p{Z}\p{Cc}]+", " "))
    if lowercase:
        out = lower(out)
    return out


_STEPS: dict[tuple, tuple] = {}  # TextCleaner's step expressions, by settings and Spark context

LOCAL_MAX_TEXTS = 256
"""The most texts :meth:`TextCleaner.clean_local` evaluates on the driver; more go through a Spark job."""


def _evaluate_locally(spark: SparkSession, texts: list[str], name: str, expr: Column) -> list[str | None]:
    """``expr`` (over a string column ``name``) of each of ``texts``, evaluated from a ``VALUES`` relation.

    Spark's optimizer folds a deterministic projection of local rows into local
    rows (ConvertToLocalRelation), so the result is computed while planning and
    collected without a job; when it cannot (a Python UDF in ``expr``), one
    small job runs and the result is the same.
    """
    if not texts:
        return []
    # each text as the hex of its UTF-8 bytes: no quoting to get wrong (and no named parameters, which the
    # Delta SQL extension's parser leaves unbound)
    values = ", ".join(f"({i}, CAST(X'{t.encode('utf-8').hex()}' AS STRING))" for i, t in enumerate(texts))
    rows = spark.sql(f"SELECT * FROM VALUES {values} AS v(i, {name})").select("i", expr.alias("out")).collect()
    out: list[str | None] = [None] * len(texts)
    for r in rows:
        out[r["i"]] = r["out"]
    return out


class TextCleaner(SchemaChecked, Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable):
    """pyspark.ml stage that writes the cleaned, PII-masked text of ``inputCol`` to ``outputCol``.

    The text goes through :func:`clean_text` (Unicode, markup, URLs, format
    and control characters, whitespace), then :func:`~dmine_spark.prepare.pii.mask_pii`
    for ``piiTypes``, then is lowercased (when ``lowercase``: after masking,
    so no value escapes a case-sensitive rule such as the IBAN's) and cut to
    ``maxChars``. The clean stage, batch and streaming scoring and a saved
    model all clean text through this one stage, so a text is cleaned the
    same way wherever it comes from. Null stays null.

    A cleaner saved before a Param existed loads with that Param's default.
    """

    stripHtml = Param(Params._dummy(), "stripHtml", "remove HTML tags and entities", TypeConverters.toBoolean)
    lowercase = Param(Params._dummy(), "lowercase", "lowercase the text", TypeConverters.toBoolean)
    unicode = Param(Params._dummy(), "unicode", "nfkc, fullwidth or none", TypeConverters.toString)
    urls = Param(Params._dummy(), "urls", "keep, mask or remove URLs", TypeConverters.toString)
    zeroWidth = Param(
        Params._dummy(),
        "zeroWidth",
        "keep_in_words (ZWJ/ZWNJ inside words and emoji stay) or remove_all format characters",
        TypeConverters.toString,
    )
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
        zeroWidth: str = "keep_in_words",
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
            zeroWidth="keep_in_words",
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
        zeroWidth: str = "keep_in_words",
        maxChars: int = 0,
        piiTypes: Sequence[str] = PII_TYPES,
        backend: str = "builtin",
    ) -> TextCleaner:
        kwargs = self._input_kwargs
        if kwargs.get("unicode") not in (None, "nfkc", "fullwidth", "none"):
            raise ValueError(f"TextCleaner: unicode must be nfkc, fullwidth or none, got {kwargs['unicode']!r}")
        if kwargs.get("urls") not in (None, "keep", "mask", "remove"):
            raise ValueError(f"TextCleaner: urls must be keep, mask or remove, got {kwargs['urls']!r}")
        if kwargs.get("zeroWidth") not in (None, *ZERO_WIDTH_MODES):
            raise ValueError(f"TextCleaner: zeroWidth must be keep_in_words or remove_all, got {kwargs['zeroWidth']!r}")
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
            zeroWidth=clean.zero_width,
            maxChars=clean.max_chars,
            piiTypes=types,
            backend=clean.backend,
        )

    def _sparknlp(self) -> bool:
        return self.getOrDefault("backend") == "sparknlp"

    def normalized(self, col: Column) -> Column:
        """The text transforms before masking: :func:`clean_text` with this stage's settings, case kept.

        With the ``sparknlp`` backend, only the steps that stay Spark SQL
        built-ins (Unicode folding, URLs, format and control characters);
        markup is left to :meth:`normalize_frame`. Case is :meth:`cased`'s,
        after masking.
        """
        return clean_text(
            col,
            strip_markup=self.getOrDefault("stripHtml") and not self._sparknlp(),
            lowercase=False,
            unicode=self.getOrDefault("unicode"),
            urls=self.getOrDefault("urls"),
            zero_width=self.getOrDefault("zeroWidth"),
        )

    def normalize_frame(self, df: DataFrame, col: str) -> DataFrame:
        """``df`` with ``col`` normalised: :meth:`normalized`, then (``sparknlp``) Spark NLP's DocumentNormalizer."""
        out = df.withColumn(col, self.normalized(F.col(col)))
        if self._sparknlp():
            from dmine_spark.prepare.sparknlp import normalize_frame

            out = normalize_frame(out, col, strip_html=self.getOrDefault("stripHtml"), lowercase=False)
        return out

    def cased(self, col: Column) -> Column:
        """After masking: ``col`` lowercased, placeholders kept (``lowercase``), else unchanged."""
        return lower(col) if self.getOrDefault("lowercase") else col

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
        """The whole cleaning of ``col``: transforms, PII masking, case, then the length cut (``builtin`` only).

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
        return self.cut(self.cased(out))

    def _input_columns(self) -> dict[str, ColumnSpec]:
        return {self.getInputCol(): ((StringType,), "a string")}

    def _output_columns(self) -> list[tuple[str, DataType]]:
        return [(self.getOutputCol(), StringType())]

    _STEP_PARAMS = ("stripHtml", "unicode", "urls", "zeroWidth", "piiTypes", "lowercase", "maxChars", "backend")

    def _steps(self, tmp: str) -> tuple[Column | None, Column | None, Column, Column]:
        """The step expressions over column ``tmp`` (normalise, mask, case, cut), built once per settings.

        Building them takes thousands of calls into the JVM (about a second); an
        interactive caller (``dmine search``) cleans one text at a time, so they
        are kept per settings and Spark context and reused: a Column is an
        unresolved expression, valid for any DataFrame of the session.
        """
        from pyspark import SparkContext

        key = (tmp, id(SparkContext._active_spark_context), *(repr(self.getOrDefault(p)) for p in self._STEP_PARAMS))
        got = _STEPS.get(key)
        if got is None:
            norm = None if self._sparknlp() else self.normalized(F.col(tmp))
            masked = self.masked(F.col(tmp))
            got = _STEPS[key] = (
                norm,
                masked["text"] if masked is not None else None,
                self.cased(F.col(tmp)),
                self.cut(F.col(tmp)),
            )
        return got

    def _local_steps(self, tmp: str) -> tuple[Column, Column, Column | None]:
        """:meth:`clean_local`'s JVM steps over ``tmp``, built once per settings and Spark context.

        The format characters :func:`clean_text` removes before NFKC; the
        normalisation without its Unicode step (NFKC is done in Python by
        :func:`nfkc_batch`, the function the ``nfkc`` UDF runs); and the case
        and cut after masking (None when neither applies).
        """
        from pyspark import SparkContext

        key = ("local", tmp, id(SparkContext._active_spark_context))
        key += tuple(repr(self.getOrDefault(p)) for p in self._STEP_PARAMS)
        got = _STEPS.get(key)
        if got is None:
            unicode = self.getOrDefault("unicode")
            rest = self.copy({self.unicode: "none"}) if unicode == "nfkc" else self
            after = self.lowercase_or_cut()
            got = _STEPS[key] = (
                remove_format_chars(F.col(tmp), self.getOrDefault("zeroWidth")),
                rest.normalized(F.col(tmp)),
                self.cut(self.cased(F.col(tmp))) if after else None,
            )
        return got

    def lowercase_or_cut(self) -> bool:
        """Whether anything follows the masking: lowercasing or a length cut."""
        return bool(self.getOrDefault("lowercase")) or self.getOrDefault("maxChars") > 0

    def clean_local(self, texts: Sequence[str | None], spark: SparkSession | None = None) -> list[str | None]:
        """Each of a few ``texts`` cleaned as :meth:`transform` cleans it, on the driver, without a Spark job.

        For an interactive caller (``dmine search``, ``dm.Searcher``): a Spark
        job costs a second or so, planning the masking expression a third of
        one. The JVM steps are evaluated by the driver's optimizer over a
        ``VALUES`` relation (Spark folds a projection of local rows into local
        rows, so nothing is scheduled); NFKC runs :func:`nfkc_batch` and PII
        masking runs :func:`~dmine_spark.prepare.pii_rules.mask_text`, the
        Python twins of the ``nfkc`` UDF and of
        :func:`~dmine_spark.prepare.pii.mask_pii` that the tests hold equal to
        them. The result equals :meth:`transform`'s, text for text (a property
        test compares them).

        More than :data:`LOCAL_MAX_TEXTS` texts, and the ``sparknlp``
        backend, go through :meth:`transform` in one Spark job instead.

        Parameters
        ----------
        texts : sequence of str or None
            The raw texts; None stays None.
        spark : SparkSession, optional
            The session (default: the active one).

        Returns
        -------
        list of str or None
            The cleaned texts, in the order of ``texts``.
        """
        spark = spark or SparkSession.active()
        texts = list(texts)
        if self._sparknlp() or len(texts) > LOCAL_MAX_TEXTS:
            return self._clean_by_job(texts, spark)
        from dmine_spark.prepare.pii_rules import mask_text

        tmp = "_dmine_clean"
        pre, norm, after = self._local_steps(tmp)
        at = [i for i, t in enumerate(texts) if t is not None]
        out: list[str | None] = list(texts)
        if self.getOrDefault("unicode") == "nfkc":
            wide = [i for i in at if not out[i].isascii()]  # ASCII is in NFKC already (clean_text's ascii_only)
            if wide:
                kept = _evaluate_locally(spark, [out[i] for i in wide], tmp, pre)
                for i, t in zip(wide, nfkc_batch(pa.array(kept, pa.string())).to_pylist(), strict=True):
                    out[i] = t
        for i, t in zip(at, _evaluate_locally(spark, [out[i] for i in at], tmp, norm), strict=True):
            out[i] = t
        types = self.getOrDefault("piiTypes")
        if types:
            for i in at:
                out[i] = mask_text(out[i], types)[0]
        if after is not None:
            for i, t in zip(at, _evaluate_locally(spark, [out[i] for i in at], tmp, after), strict=True):
                out[i] = t
        return out

    def _clean_by_job(self, texts: list[str | None], spark: SparkSession) -> list[str | None]:
        df = spark.createDataFrame(list(enumerate(texts)), "i INT, text STRING")
        rows = self.copy({self.inputCol: "text", self.outputCol: "_dmine_out"}).transform(df).collect()
        out: list[str | None] = [None] * len(texts)
        for r in rows:
            out[r["i"]] = r["_dmine_out"]
        return out

    def _transform(self, dataset: DataFrame) -> DataFrame:
        self.transformSchema(dataset.schema)
        # one projection per step: a single expression would copy the cleaned text's whole expression into
        # every place the masking reads it, and Spark would spend seconds planning it
        tmp = "_dmine_clean"
        norm, masked, cased, cut = self._steps(tmp)
        out = dataset.withColumn(tmp, F.col(self.getInputCol()))
        out = out.withColumn(tmp, norm) if norm is not None else self.normalize_frame(out, tmp)
        if masked is not None:
            out = out.withColumn(tmp, masked)
        out = self.tokenize_frame(out.withColumn(tmp, cased), tmp)
        return out.withColumn(self.getOutputCol(), cut).drop(tmp)


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

    The steps, in order: the text transforms, PII masking and case of
    ``cleaner`` (with its ``sparknlp`` backend, Spark NLP's tokens after the masking);
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
    staged = cleaner.tokenize_frame(staged.withColumn(text_col, cleaner.cased(F.col(text_col))), text_col)
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
