"""Property-based tests of the Column → Column cleaners and of PII masking, on a real local Spark.

Each Hypothesis example is a list of texts that goes through Spark as one DataFrame in one job, with
every variant of a property computed side by side, so a property costs a few jobs, not one per text.
"""

from __future__ import annotations

import functools
import re
import unicodedata

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from dmine_spark.prepare.clean import (
    PLACEHOLDER_PATTERN,
    TextCleaner,
    clean_text,
    collapse_whitespace,
    fullwidth_to_halfwidth,
    handle_urls,
    lower,
    nfkc,
    remove_control_chars,
    truncate,
)
from dmine_spark.prepare.pii import mask_pii
from dmine_spark.prepare.pii_rules import PLACEHOLDERS, mask_text
from tests.strategies import ZWJ, ZWNJ, batches, embedded_pii, placeholder_count, texts

# a few examples, each a batch of dozens of texts in one Spark job (plus the hand-picked TRICKY batch)
SPARK_PROPERTY = settings(
    max_examples=5,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# java.lang.Character.getType: the JVM's own Unicode tables decide what its regular expressions match
_CONTROL, _FORMAT, _OTHER_SYMBOL = 15, 16, 28
_LETTER_OR_MARK = {1, 2, 3, 4, 5, 6, 7, 8}
_SPACES = {12, 13, 14}  # Zs, Zl, Zp


_ASK_THE_JVM = {"Cc", "Cf", "Zs", "Zl", "Zp"}


@functools.cache
def _jtype(spark, ch: str) -> int:
    return spark.sparkContext._jvm.java.lang.Character.getType(ord(ch))


def _jvm_control_format_or_space(spark, ch: str) -> int | None:
    """The JVM's type of ``ch`` when Python's tables make it a control, format or space character, else None.

    Python's Unicode is newer than Java's: a character Python calls a format character may be unassigned
    to the JVM, which then leaves it alone.
    """
    return _jtype(spark, ch) if unicodedata.category(ch) in _ASK_THE_JVM else None


def _stray_format(spark, s: str) -> list[tuple[int, str]]:
    """Control characters, and format characters that are not part of a word, an emoji or a flag."""
    bad = []
    for i, c in enumerate(s):
        t = _jvm_control_format_or_space(spark, c)
        if t == _CONTROL:
            bad.append((i, c))
        if t != _FORMAT:
            continue
        before = _jtype(spark, s[i - 1]) if i > 0 else None
        after = _jtype(spark, s[i + 1]) if i + 1 < len(s) else None
        in_word = c in (ZWNJ, ZWJ) and before in _LETTER_OR_MARK and after in _LETTER_OR_MARK
        in_emoji = (
            c == ZWJ
            and i > 0
            and (before == _OTHER_SYMBOL or "\U0001f3fb" <= s[i - 1] <= "\U0001f3ff" or s[i - 1] == "\ufe0f")
            and after == _OTHER_SYMBOL
        )
        in_flag = "\U000e0020" <= c <= "\U000e007f" and re.search(
            "\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f", s[max(0, i - 40) : i + 40]
        )
        if not (in_word or in_emoji or in_flag):
            bad.append((i, c))
    return bad


def _outside_placeholders(s: str) -> str:
    return re.sub(PLACEHOLDER_PATTERN, "", s)


def _run(spark, values: list[str | None], **columns) -> list:
    """The rows of ``columns`` (name → Column function of the text) over ``values``, in order, in one job."""
    df = spark.createDataFrame(list(enumerate(values)), "i INT, t STRING").coalesce(1)
    rows = df.select("i", "t", *[fn(F.col("t")).alias(name) for name, fn in columns.items()]).collect()
    return sorted(rows, key=lambda r: r.i)


def _run_twice(spark, values: list[str | None], **columns) -> tuple[list, list]:
    """The rows of :func:`_run`, and each column's function applied again to its own output (two jobs).

    The second pass reads the first one's collected output: nesting a cleaner's expression in itself
    would make Spark compile an expression tree that doubles with every step.
    """
    first = _run(spark, values, **columns)
    schema = ", ".join(["i INT", *[f"{name} STRING" for name in columns]])
    df = spark.createDataFrame([(r.i, *[r[name] for name in columns]) for r in first], schema).coalesce(1)
    second = df.select("i", *[fn(F.col(name)).alias(name) for name, fn in columns.items()]).collect()
    return first, sorted(second, key=lambda r: r.i)


def _drops_markup_bodies(text: str) -> bool:
    """Script and style bodies and comments go whole, with any placeholder inside them."""
    return re.search(r"(?i)<(script|style)\b|<!--", text) is not None


# cases found by hand that each property must hold for, whatever Hypothesis draws
TRICKY = [
    "e\u200b\u0301",  # a stray ZWSP between a letter and its accent: the accent composes once it goes
    "\u0628\u200c\ufe70",  # NFKC turns the letter after a ZWNJ into a space and a mark: the ZWNJ is stray then
    "<PHONE>\u0338 <EMAIL>\u094d\u0338",  # ">" + U+0338 composes to "≯" under NFKC, also past a virama
    "<b>call <PHONE></b> <a href='mailto:<EMAIL>'>x</a>",
    "&lt;PHONE&gt; &amp;lt;b&amp;gt;",
    "Σ İSTANBUL <CARD> ＜ＰＨＯＮＥ＞",
    "\u202e\u2066ab\u2069 \u200d\u200c \ufeff",
    "👨\u200d👩\u200d👧\u200d \U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",
    None,
    "",
]

CLEANERS = {
    "default": lambda c: clean_text(c),
    "lower_mask": lambda c: clean_text(c, lowercase=True, urls="mask"),
    "fullwidth_remove_all": lambda c: clean_text(c, unicode="fullwidth", urls="remove", zero_width="remove_all"),
    "plain": lambda c: clean_text(c, strip_markup=False, unicode="none"),
}


@SPARK_PROPERTY
@given(batches)
@example(TRICKY)
def test_cleaned_text_is_tidy_and_keeps_its_placeholders(spark, values) -> None:
    rows = _run(spark, values, **CLEANERS)
    for r in rows:
        for name in CLEANERS:
            out = r[name]
            assert (out is None) == (r.t is None), name
            if out is None:
                continue
            assert out == out.strip(" ") and "  " not in out, (name, r.t, out)
            kinds = [_jvm_control_format_or_space(spark, c) for c in out if c != " "]
            assert not _SPACES.intersection(kinds), (name, r.t, out)
            if name == "fullwidth_remove_all":
                assert _CONTROL not in kinds and _FORMAT not in kinds, (name, r.t, out)
            else:
                assert not _stray_format(spark, out), (name, r.t, out)
            if not _drops_markup_bodies(r.t):
                # counted in upper case: lowercasing leaves placeholders alone
                assert placeholder_count(out) >= placeholder_count(r.t), (name, r.t, out)


@SPARK_PROPERTY
@given(batches)
@example(TRICKY)
def test_cleaning_twice_is_cleaning_once(spark, values) -> None:
    first, second = _run_twice(spark, values, **CLEANERS)
    for r, r2 in zip(first, second, strict=True):
        for name in CLEANERS:
            once, again = r[name], r2[name]
            # markup decoding may reveal new markup ("&lt;b&gt;" becomes "<b>"): only text without any is settled
            settled = name == "plain" or (once is not None and not re.search("[<&]", _outside_placeholders(once)))
            if settled or once is None:
                assert again == once, (name, r.t, once, again)


STEPS = {
    "whitespace": collapse_whitespace,
    "control": remove_control_chars,
    "control_remove_all": lambda c: remove_control_chars(c, "remove_all"),
    "nfkc": nfkc,
    "fullwidth": fullwidth_to_halfwidth,
    "lower": lower,
    "urls_mask": lambda c: handle_urls(c, "mask"),
    "urls_remove": lambda c: handle_urls(c, "remove"),
    "truncate": lambda c: truncate(c, 7),
}


@SPARK_PROPERTY
@given(batches)
@example(TRICKY)
def test_each_step_is_idempotent_and_keeps_placeholders(spark, values) -> None:
    first, second = _run_twice(spark, values, **STEPS)
    for r, r2 in zip(first, second, strict=True):
        for name in STEPS:
            assert r2[name] == r[name], (name, r.t, r[name], r2[name])
            if r.t is not None and name != "truncate":
                assert placeholder_count(r[name]) >= placeholder_count(r.t), (name, r.t, r[name])


WIDTHS = (1, 4, 7, 12, 40)


def _cut(c, n: int):
    return truncate(c, n)


def _expected_cut(spark, text: str, n: int) -> str:
    if len(text) <= n:
        return text
    spans = [m.span() for m in re.finditer(PLACEHOLDER_PATTERN, text)]
    m = n
    while m > 0 and (any(s < m < e for s, e in spans) or _jvm_control_format_or_space(spark, text[m - 1]) == _FORMAT):
        m -= 1
    return text[:m]


@SPARK_PROPERTY
@given(batches)
@example(TRICKY)
def test_truncation_is_a_bounded_prefix_with_whole_placeholders(spark, values) -> None:
    rows = _run(spark, values, **{f"n{n}": functools.partial(_cut, n=n) for n in WIDTHS})
    for r in rows:
        for n in WIDTHS:
            out = r[f"n{n}"]
            if r.t is None:
                assert out is None
                continue
            assert len(out) <= n and r.t.startswith(out), (r.t, n, out)
            assert out == _expected_cut(spark, r.t, n), (r.t, n, out)


@SPARK_PROPERTY
@given(batches)
@example(TRICKY)
def test_spark_masking_equals_the_reference_and_is_idempotent(spark, values) -> None:
    first, second = _run_twice(spark, values, masked=lambda c: mask_pii(c)["text"])
    for r, r2 in zip(first, second, strict=True):
        want, _ = mask_text(r.t)
        assert r.masked == want, (r.t, r.masked, want)
        assert r2.masked == r.masked, (r.t, r.masked, r2.masked)


@SPARK_PROPERTY
@given(st.lists(embedded_pii(), min_size=10, max_size=60))
def test_embedded_values_are_masked_through_the_whole_cleaner(spark, cases) -> None:
    """A value of each type, in messy multilingual text, comes out of the cleaner as its placeholder."""
    df = spark.createDataFrame([(i, text) for i, (text, _, _) in enumerate(cases)], "i INT, t STRING").coalesce(1)
    cleaner = TextCleaner(inputCol="t", outputCol="cleaned", lowercase=True, urls="mask")
    rows = sorted(cleaner.transform(df.withColumn("masked", mask_pii("t")["text"])).collect(), key=lambda r: r.i)
    for r, (text, kind, value) in zip(rows, cases, strict=True):
        for out in (r.masked, r.cleaned):
            assert PLACEHOLDERS[kind] in out, (kind, text, out)
            assert value not in out and value.lower() not in out, (kind, text, out)
            assert not re.search("[0-9]{4}", _outside_placeholders(out)), (kind, text, out)


# the settings a saved cleaner may carry, each through both paths
LOCAL_CLEANERS = {
    "default": {},
    "lower_cut_mask": dict(lowercase=True, maxChars=24, urls="mask"),
    "fullwidth_remove_all": dict(unicode="fullwidth", urls="remove", zeroWidth="remove_all", piiTypes=["email"]),
    "plain": dict(stripHtml=False, unicode="none", piiTypes=[]),
}


@SPARK_PROPERTY
@given(st.lists(st.one_of(st.none(), texts, embedded_pii().map(lambda c: c[0])), min_size=10, max_size=60))
@example(TRICKY)
def test_cleaning_on_the_driver_equals_the_stage(spark, values) -> None:
    """``clean_local`` (no Spark job: Python NFKC and masking twins) gives ``transform``'s text, text for text."""
    df = spark.createDataFrame(list(enumerate(values)), "i INT, t STRING").coalesce(1)
    for name, kw in LOCAL_CLEANERS.items():
        cleaner = TextCleaner(inputCol="t", outputCol="cleaned", **kw)
        want = [r.cleaned for r in sorted(cleaner.transform(df).collect(), key=lambda r: r.i)]
        assert cleaner.clean_local(values, spark) == want, name


def test_cleaning_on_the_driver_runs_no_job_for_a_query(spark) -> None:
    """A query's cleaning is folded into planning: no Spark job, whatever Unicode and PII it holds."""
    cleaner = TextCleaner(inputCol="t", outputCol="cleaned", lowercase=True, maxChars=80)
    tracker = spark.sparkContext.statusTracker()
    spark.sparkContext.setJobGroup("dmine-clean-local", "clean_local")
    try:
        out = cleaner.clean_local(["Ｍｙ card 4111 1111 1111 1111 never\u200b came <b>!</b>", None], spark)
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)
    assert out == ["my card <CARD> never came !", None]
    assert tracker.getJobIdsForGroup("dmine-clean-local") == []
