"""Placeholders survive cleaning: text masked at ingest goes through every cleaning rule with each
``<EMAIL>``, ``<PHONE>``... whole, in upper case and never cut in half."""

from __future__ import annotations

import re
import unicodedata

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from dmine_spark.config import CleanConfig, PiiConfig
from dmine_spark.prepare.clean import (
    PLACEHOLDER_PATTERN,
    URL_PLACEHOLDER,
    TextCleaner,
    clean_frame,
    clean_text,
    collapse_whitespace,
    fullwidth_to_halfwidth,
    handle_urls,
    lower,
    nfkc,
    remove_control_chars,
    strip_html,
    truncate,
)
from dmine_spark.prepare.pii import mask_pii
from dmine_spark.prepare.pii_rules import PLACEHOLDERS, RULES, Rule

ALL = [*PLACEHOLDERS.values(), URL_PLACEHOLDER]

# every cleaning rule that runs on text after masking, alone and chained
STEPS = {
    "strip_html": strip_html,
    "urls_mask": lambda c: handle_urls(c, "mask"),
    "urls_remove": lambda c: handle_urls(c, "remove"),
    "control_chars": remove_control_chars,
    "control_chars_remove_all": lambda c: remove_control_chars(c, "remove_all"),
    "whitespace": collapse_whitespace,
    "lowercase": lower,
    "nfkc": nfkc,
    "fullwidth": fullwidth_to_halfwidth,
    "clean_text": lambda c: clean_text(c, lowercase=True, urls="remove"),
}
# the whole cleaner, as a stage (PII masking adds placeholders of its own)
CLEANER = TextCleaner(inputCol="t", outputCol="text_cleaner", lowercase=True, urls="mask")

MASKING = {"urls_mask", "text_cleaner"}

# where a placeholder stands in text that reaches cleaning ({p} is the placeholder)
CONTEXTS = [
    "call {p} now",
    "{p}",
    "x{p}y{p}",
    "<p>Call <b>{p}</b></p><br/>",
    '<a href="mailto:{p}">write</a> to us',
    "see http://example.com/a{p} and www.example.org{p}, thanks",
    # ">" followed by a combining long solidus overlay composes to "≯" under NFKC, also past other marks
    "{p}\u0338 and \u0338{p}\u094d\u0338",
    "\u200b{p}\u200f {p}\u200d{p} \ufeff",
    "Ｃａｌｌ\u3000{p}！",
    "Ünïcödé ÇASE {p} İSTANBUL",
    "a\x07{p}\t\n{p}",
    "5 &lt; 6 &amp; {p}",
]


@pytest.fixture(scope="module")
def cleaned(spark) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(step, placeholder) → (text, cleaned text) for every context: one Spark job for all of them."""
    rows = [(p, ctx.format(p=p)) for p in ALL for ctx in CONTEXTS]
    df = spark.createDataFrame(rows, "p STRING, t STRING")
    out = CLEANER.transform(df.select("p", "t", *[fn(F.col("t")).alias(name) for name, fn in STEPS.items()]))
    got: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for r in out.collect():
        for name in [*STEPS, "text_cleaner"]:
            got.setdefault((name, r.p), []).append((r.t, r[name]))
    return got


@pytest.mark.parametrize("placeholder", ALL)
@pytest.mark.parametrize("step", [*STEPS, "text_cleaner"])
def test_every_cleaning_rule_keeps_every_placeholder(cleaned, step: str, placeholder: str) -> None:
    for text, out in cleaned[(step, placeholder)]:
        if step in MASKING:  # these steps may add placeholders of their own
            assert out.count(placeholder) >= text.count(placeholder), f"{step}: {text!r} -> {out!r}"
        else:
            assert out.count(placeholder) == text.count(placeholder), f"{step}: {text!r} -> {out!r}"


def test_placeholders_inside_tags_move_out_and_the_tag_goes(spark) -> None:
    pairs = [(f'<a href="mailto:{p}" title="{p}">write</a> now', f"{p} {p} write now") for p in ALL]
    # not a tag: no ">" closes it
    pairs += [(f"if a<b call {p}", f"if a<b call {p}") for p in ALL]
    df = spark.createDataFrame(pairs, "t STRING, want STRING")
    assertDataFrameEqual(
        df.select("t", clean_text(F.col("t")).alias("got")), df.select("t", F.col("want").alias("got"))
    )


def _expected_cut(text: str, n: int) -> str:
    """The longest prefix of at most ``n`` characters that splits no placeholder and ends on no format character."""
    if len(text) <= n:
        return text
    spans = [m.span() for m in re.finditer(PLACEHOLDER_PATTERN, text)]
    m = n
    while m > 0 and (any(s < m < e for s, e in spans) or unicodedata.category(text[m - 1]) == "Cf"):
        m -= 1
    return text[:m]


@pytest.mark.parametrize("placeholder", ALL)
def test_truncation_cuts_before_a_placeholder_it_would_split(spark, placeholder: str) -> None:
    texts = [f"call {placeholder} now", f"{placeholder}{placeholder}x", f"é{placeholder}👨\u200d👩 {placeholder}"]
    df = spark.createDataFrame([(t,) for t in texts], "t STRING")
    widths = range(1, max(len(t) for t in texts) + 2)
    rows = df.select("t", *[truncate(F.col("t"), n).alias(f"n{n}") for n in widths]).collect()
    for r in rows:
        for n in widths:
            assert r[f"n{n}"] == _expected_cut(r.t, n), (r.t, n)
    # a cut inside the first placeholder falls before it
    assert rows[0][f"n{len('call ') + 2}"] == "call "


def test_the_text_cleaner_cuts_before_a_placeholder(spark) -> None:
    df = spark.createDataFrame([("1", "write to jane.doe@example.com today")], "id STRING, text STRING")
    got = TextCleaner(outputCol="clean", maxChars=12).transform(df).first().clean
    assert got == "write to "  # "write to <EM" would have split the placeholder


def test_text_masked_at_ingest_keeps_its_placeholders_through_the_clean_stage(spark) -> None:
    """The fault of the issue: ingest masks PII, then the clean stage's strip_html removed ``<PHONE>``."""
    raw = spark.createDataFrame(
        [
            ("1", "<p>Call me on +44 20 7946 0958</p>"),
            ("2", "<div>Mail <b>jane.doe@example.com</b> or www.example.com</div>"),
            ("3", "Card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00"),
        ],
        "id STRING, text STRING",
    )
    masked = raw.withColumn("text", mask_pii(F.col("text"))["text"])  # what ingest writes to the raw table
    cfg = CleanConfig(lowercase=True, urls="mask", max_chars=200)
    res = clean_frame(masked, cfg, pii=PiiConfig())
    assertDataFrameEqual(
        res.clean.select("id", "text"),
        spark.createDataFrame(
            [("1", "call me on <PHONE>"), ("2", "mail <EMAIL> or <URL>"), ("3", "card <CARD>, iban <IBAN>")],
            "id STRING, text STRING",
        ),
    )


def test_lowercasing_comes_after_masking(spark) -> None:
    """A lowercased IBAN no longer matches its rule, so the cleaner masks before it lowercases."""
    df = spark.createDataFrame([("1", "My IBAN is DE89 3704 0044 0532 0130 00")], "id STRING, text STRING")
    cfg = CleanConfig(lowercase=True)
    want = spark.createDataFrame([("1", "my iban is <IBAN>")], "id STRING, text STRING")
    assertDataFrameEqual(TextCleaner.from_config(cfg, PiiConfig()).transform(df).select("id", "text"), want)
    assertDataFrameEqual(clean_frame(df, cfg, pii=PiiConfig()).clean.select("id", "text"), want)


def test_every_rule_placeholder_is_protected() -> None:
    """A rule added to RULES is protected by cleaning with nothing else to change."""
    assert all(re.fullmatch(PLACEHOLDER_PATTERN, r.placeholder) for r in RULES)
    assert re.fullmatch(PLACEHOLDER_PATTERN, URL_PLACEHOLDER)


def test_a_rule_placeholder_must_have_the_placeholder_shape() -> None:
    with pytest.raises(ValueError, match=r"pii rule x: placeholder '<phone>' must be <NAME> in upper case"):
        Rule("x", "[0-9]+", "<phone>", None)
