"""Property-based tests, without a JVM, of the pure-Python twins: the PII reference masker and NFKC's Arrow core."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dmine_spark.prepare.clean import nfkc_batch
from dmine_spark.prepare.pii_rules import ALL_TYPES, PLACEHOLDERS, mask_text
from tests.strategies import embedded_pii, placeholder_count, texts

PURE = settings(max_examples=200, deadline=None, database=None)

# text dense in what PII rules look at: digits and their separators, "@", "+", parentheses, IBAN letters
_NUMERIC = st.text(alphabet="0123456789 -.+()@/xX:DEGBFR", max_size=40)
pii_noise = st.lists(st.one_of(_NUMERIC, texts, embedded_pii().map(lambda c: c[0])), max_size=6).map(" ".join)


@PURE
@given(embedded_pii())
@example(("write to 13812345678@163.com now", "email", "13812345678@163.com"))
def test_an_embedded_value_becomes_its_placeholder(case) -> None:
    text, kind, value = case
    masked, counts = mask_text(text)
    assert PLACEHOLDERS[kind] in masked and value not in masked, (kind, text, masked)
    assert counts[kind] >= 1


@PURE
@given(pii_noise)
def test_masked_text_holds_no_value_any_rule_would_mask(text) -> None:
    masked, counts = mask_text(text)
    again, found = mask_text(masked)
    assert again == masked, (text, masked, again)
    assert not any(found.values()), (text, masked, found)
    # masking only adds placeholders, and counts each one it adds
    assert placeholder_count(masked) == placeholder_count(text) + sum(counts.values())


@PURE
@given(pii_noise, st.lists(st.sampled_from(ALL_TYPES), min_size=1, unique=True))
def test_masking_one_selection_is_idempotent(text, types) -> None:
    masked, _ = mask_text(text, types)
    assert mask_text(masked, types)[0] == masked


@PURE
@given(st.lists(st.one_of(st.none(), texts), max_size=20))
# ">" + U+0338 composes to "≯", also when canonical reordering brings the U+0338 forward past a virama
@example(["<PHONE>\u0338", "x<EMAIL>\u094d\u0338<URL>", "e\u0301", "＜ＰＨＯＮＥ＞\u0338", None])
def test_nfkc_is_idempotent_and_keeps_placeholders(values) -> None:
    arr = pa.array(values, pa.string())
    once = nfkc_batch(arr).to_pylist()
    assert nfkc_batch(pa.array(once, pa.string())).to_pylist() == once
    for before, after in zip(values, once, strict=True):
        assert (after is None) == (before is None)
        if before is not None:
            assert placeholder_count(after) >= placeholder_count(before), (before, after)
