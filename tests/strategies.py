"""Hypothesis strategies shared by the property-based tests: messy multilingual text, PII values, placeholders."""

from __future__ import annotations

import re

from hypothesis import strategies as st

from dmine_spark.prepare.clean import PLACEHOLDER_PATTERN, URL_PLACEHOLDER
from dmine_spark.prepare.pii_rules import (
    PLACEHOLDERS,
    fake_card,
    fake_cn_id,
    fake_email,
    fake_iban,
    fake_phone,
)

ZWNJ, ZWJ = "\u200c", "\u200d"
ALL_PLACEHOLDERS = (*PLACEHOLDERS.values(), URL_PLACEHOLDER)

# pieces that exercise each cleaning rule: markup, entities, URLs, whitespace of every kind, zero-width and
# bidi characters, joiners in words and emoji, combining marks, compatibility forms, case oddities
TOKENS = (
    *ALL_PLACEHOLDERS,
    "<b>",
    "</p>",
    "<br/>",
    '<a href="x">',
    "&amp;",
    "&lt;",
    "&nbsp;",
    "http://example.com/a?b=1",
    "www.example.org",
    " ",
    "  ",
    "\t",
    "\n",
    "\u3000",
    "\u00a0",
    ZWNJ,
    ZWJ,
    "\u200b",
    "\u200e",
    "\u200f",
    "\u202e",
    "\u2066",
    "\u2069",
    "\ufeff",
    "\u2060",
    "\x07",
    "\x00",
    "\u0338",
    "\u0301",
    "e",
    "👨",
    "👩",
    "🏽",
    "\ufe0f",
    "🏴",
    "\U000e0067",
    "\U000e007f",
    "क",
    "ि",
    "्",
    "ی",
    "خ",
    "\u064b",
    "\ufe70",
    "Ｈ",
    "１",
    "ﬁ",
    "İ",
    "ß",
    "Σ",
)

_ANY_CHAR = st.characters(exclude_categories=("Cs",))  # every code point a Spark string can hold
_PIECE = st.one_of(st.sampled_from(TOKENS), st.text(_ANY_CHAR, max_size=6))
texts = st.lists(_PIECE, max_size=12).map("".join)
"""Text of any characters, rich in what cleaning acts on."""

batches = st.lists(st.one_of(st.none(), texts), min_size=10, max_size=60)
"""A list of texts (and nulls) for one Spark job."""

# words that cannot join a PII value next to them: letters, marks, spaces and joiners, no digits or
# address punctuation
_WORD_CHAR = st.characters(categories=("L", "M"), exclude_characters="0123456789")
filler = st.lists(
    st.one_of(st.text(_WORD_CHAR, max_size=8), st.sampled_from([" ", ZWNJ, "\u200f", "👨" + ZWJ + "👩", "<b>x</b>"])),
    max_size=6,
).map("".join)
"""Text that no PII rule matches and that cannot run into a value it is separated from by a space."""

_FAKES = {"email": fake_email, "phone": fake_phone, "card": fake_card, "iban": fake_iban, "cn_id": fake_cn_id}


@st.composite
def embedded_pii(draw: st.DrawFn) -> tuple[str, str, str]:
    """``(text, type, value)``: a generated value of a PII type between two pieces of :data:`filler`."""
    kind = draw(st.sampled_from(sorted(_FAKES)))
    value = _FAKES[kind](draw(st.randoms(use_true_random=False)))
    left, right = draw(filler), draw(filler)
    sep_left, sep_right = draw(st.sampled_from([" ", "\n", ": ", " ("])), draw(st.sampled_from([" ", "\n", ", ", ") "]))
    return f"{left}{sep_left}{value}{sep_right}{right}", kind, value


def placeholder_count(text: str) -> int:
    return len(re.findall(PLACEHOLDER_PATTERN, text))
