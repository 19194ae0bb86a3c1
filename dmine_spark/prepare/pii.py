"""PII masking as Column → Column functions built from Spark SQL built-ins only.

Each rule of :mod:`dmine_spark.prepare.pii_rules` runs inside the JVM: the
candidates of its pattern come from ``regexp_extract_all``, the text between
them from ``split`` on the same pattern (both walk the matches left to right,
so there is always one more piece than candidates), a higher-order
``transform`` replaces each candidate that passes the rule's check by its
placeholder, and the pieces and replacements are joined back. The checks
(Luhn, ISO 13616 mod-97, the GB 11643-1999 check character and birth date, a
phone's digit count) are ``aggregate``/``zip_with`` expressions over the
candidate's characters, so nothing leaves the JVM and no Python worker is
started. :func:`dmine_spark.prepare.pii_rules.mask_text` is the pure-Python
reference with the same semantics. A text with no candidate of any selected
type costs one ``rlike`` per type and skips the array work.

Intermediate values are bound once with ``transform(array(value), v -> …)[0]``
so that chaining five rules does not copy (and re-evaluate) each rule's
input expression into every later one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from functools import reduce

import pyarrow as pa
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param.shared import HasInputCol, HasOutputCol, Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, IntegerType, MapType, StringType

from dmine_spark.compat import arrow_udf
from dmine_spark.io.schema import ColumnSpec, SchemaChecked
from dmine_spark.prepare.pii_rules import (
    ALL_TYPES,
    CN_ID_CHECK_CHARS,
    CN_ID_MIN_YEAR,
    CN_ID_WEIGHTS,
    CN_PROVINCES,
    IBAN_MAX_LEN,
    IBAN_MIN_LEN,
    PHONE_MAX_DIGITS,
    PHONE_MIN_DIGITS,
    RULES,
    Rule,
    check_types,
    mask_text,
)

__all__ = [
    "ALL_TYPES",
    "mask_emails",
    "mask_phones",
    "mask_cards",
    "mask_ibans",
    "mask_cn_ids",
    "mask_pii",
    "mask_pii_arrow",
    "PII_SCHEMA",
    "PiiMasker",
]


def _bind(value: Column, body: Callable[[Column], Column]) -> Column:
    """``body(v)`` with ``value`` evaluated once, however often ``body`` uses it."""
    return F.transform(F.array(value), body).getItem(0)


def _digits(x: Column) -> Column:
    return F.regexp_extract_all(x, F.lit("[0-9]"), F.lit(0))


def _sum(arr: Column) -> Column:
    return F.aggregate(arr, F.lit(0), lambda a, b: a + b)


def _luhn_ok(x: Column) -> Column:
    def check(rev: Column) -> Column:
        def term(c: Column, i: Column) -> Column:
            v = c.cast("int")
            return F.when(i % 2 == 1, v * 2 - F.when(v > 4, F.lit(9)).otherwise(F.lit(0))).otherwise(v)

        return (F.size(rev) >= 2) & (_sum(F.transform(rev, term)) % 10 == 0)

    return _bind(F.reverse(_digits(x)), check)


def _iban_ok(x: Column) -> Column:
    def check(s: Column) -> Column:
        moved = F.concat(F.substring(s, 5, IBAN_MAX_LEN), F.substring(s, 1, 4))
        chars = F.regexp_extract_all(moved, F.lit("[0-9A-Z]"), F.lit(0))
        remainder = F.aggregate(
            chars,
            F.lit(0),
            lambda acc, c: F.when((c >= "0") & (c <= "9"), (acc * 10 + F.ascii(c) - 48) % 97).otherwise(
                (acc * 100 + F.ascii(c) - 55) % 97
            ),
        )
        return F.length(s).between(IBAN_MIN_LEN, IBAN_MAX_LEN) & (remainder == 1)

    return _bind(F.regexp_replace(x, " ", ""), check)


def _cn_id_ok(x: Column) -> Column:
    y = F.substring(x, 7, 4).cast("int")
    m = F.substring(x, 11, 2).cast("int")
    d = F.substring(x, 13, 2).cast("int")
    leap = ((y % 4 == 0) & (y % 100 != 0)) | (y % 400 == 0)
    month_days = (
        F.when(m == 2, F.when(leap, F.lit(29)).otherwise(F.lit(28)))
        .when(m.isin(4, 6, 9, 11), F.lit(30))
        .otherwise(F.lit(31))
    )
    born_ok = (
        (y >= CN_ID_MIN_YEAR)
        & m.between(1, 12)
        & (d >= 1)
        & (d <= month_days)
        & (F.substring(x, 7, 8) <= F.date_format(F.current_date(), "yyyyMMdd"))
    )
    weights = F.array(*[F.lit(w) for w in CN_ID_WEIGHTS])
    total = _sum(F.zip_with(_digits(F.substring(x, 1, 17)), weights, lambda c, w: c.cast("int") * w))
    check_char = F.element_at(F.array(*[F.lit(c) for c in CN_ID_CHECK_CHARS]), total % 11 + 1)
    return F.substring(x, 1, 2).isin(*CN_PROVINCES) & born_ok & (check_char == F.upper(F.substring(x, 18, 1)))


def _phone_ok(x: Column) -> Column:
    return F.length(F.regexp_replace(x, "[^0-9]", "")).between(PHONE_MIN_DIGITS, PHONE_MAX_DIGITS)


_CHECKS: dict[str, Callable[[Column], Column] | None] = {
    "email": None,
    "iban": _iban_ok,
    "cn_id": _cn_id_ok,
    "card": _luhn_ok,
    "phone": _phone_ok,
}
_RULES = {r.type: r for r in RULES}


# The fewest digits a value of each type holds. Counting the digits of a text is one cheap pass, so
# most texts skip a type's regular expression altogether; the results are the same, only sooner.
_MIN_DIGITS = {"email": 0, "iban": 4, "cn_id": 17, "card": 13, "phone": PHONE_MIN_DIGITS}


def _digit_count(t: Column) -> Column:
    return F.length(t) - F.length(F.translate(t, "0123456789", ""))


def _may_hold(kind: str, digits: Column, has_at: Column) -> Column:
    """A necessary condition for ``kind`` to occur in a text with ``digits`` digits (and ``@`` or not)."""
    return has_at if kind == "email" else digits >= _MIN_DIGITS[kind]


def _apply_rule(text: Column, rule: Rule, gate: Column | None = None) -> Column:
    """``struct<text, n>``: ``text`` with ``rule``'s checked candidates masked, and how many."""
    check = _CHECKS[rule.type]
    placeholder = F.lit(rule.placeholder)

    def rebuild(s: Column) -> Column:
        pieces, found = s["pieces"], s["found"]
        joined = F.concat(
            F.get(pieces, 0),
            F.array_join(F.transform(found, lambda v, i: F.concat(v, F.get(pieces, i + 1))), ""),
        )
        n = F.aggregate(found, F.lit(0), lambda a, v: a + (v == placeholder).cast("int"))
        return F.struct(joined.alias("text"), F.coalesce(n, F.lit(0)).alias("n"))

    def step(t: Column) -> Column:
        matches = F.regexp_extract_all(t, F.lit(rule.pattern), F.lit(0))
        if check is None:
            found = F.transform(matches, lambda _v: placeholder)
        else:
            found = F.transform(matches, lambda v: F.when(check(v), placeholder).otherwise(v))
        # a candidate never equals its placeholder: no pattern matches "<" or ">"
        masked = _bind(F.struct(F.split(t, rule.pattern, -1).alias("pieces"), found.alias("found")), rebuild)
        # most texts hold no candidate: the cheap gate, then one regex scan, spare them the array work
        holds = t.rlike(rule.pattern) if gate is None else gate & t.rlike(rule.pattern)
        return F.when(holds, masked).otherwise(F.struct(t.alias("text"), F.lit(0).alias("n")))

    return _bind(text, step)


def _advance(rule: Rule) -> Callable[[Column], Column]:
    """The step from ``struct<text, n: array<int>, digits, has_at>`` to the same with ``rule`` applied.

    ``digits`` and ``has_at`` describe the original text; masking only removes
    digits and ``@``, so they stay valid upper bounds for every later rule.
    """

    def advance(s: Column) -> Column:
        gate = _may_hold(rule.type, s["digits"], s["has_at"])
        return _bind(
            _apply_rule(s["text"], rule, gate),
            lambda r: F.struct(
                r["text"].alias("text"),
                F.concat(s["n"], F.array(r["n"])).alias("n"),
                s["digits"].alias("digits"),
                s["has_at"].alias("has_at"),
            ),
        )

    return advance


def _mask_one(col: Column | str, kind: str) -> Column:
    c = F.col(col) if isinstance(col, str) else col
    return _apply_rule(c, _RULES[kind])["text"]


def mask_emails(col: Column | str) -> Column:
    """Replace e-mail addresses by ``<EMAIL>``."""
    return _mask_one(col, "email")


def mask_ibans(col: Column | str) -> Column:
    """Replace IBANs whose mod-97 check digits are right by ``<IBAN>``."""
    return _mask_one(col, "iban")


def mask_cn_ids(col: Column | str) -> Column:
    """Replace Chinese resident IDs with a valid check character and birth date by ``<CN_ID>``."""
    return _mask_one(col, "cn_id")


def mask_cards(col: Column | str) -> Column:
    """Replace Luhn-valid card numbers (13-19 digits, plain or grouped) by ``<CARD>``."""
    return _mask_one(col, "card")


def mask_phones(col: Column | str) -> Column:
    """Replace phone numbers (international, Chinese mobile, national forms) by ``<PHONE>``."""
    return _mask_one(col, "phone")


def mask_pii(col: Column | str, types: Iterable[str] | str = ALL_TYPES) -> Column:
    """Mask every selected PII type and count the values masked.

    Parameters
    ----------
    col : Column or str
        A string column.
    types : iterable of str
        Any of ``email``, ``iban``, ``cn_id``, ``card``, ``phone``; always
        applied in that order (see :mod:`dmine_spark.prepare.pii_rules`).

    Returns
    -------
    Column
        ``struct<text: string, counts: map<string, int>>``; ``counts`` has
        every selected type as a key (0 when none was found, also for a null
        text), so per-run totals are ``sum(counts['card'])``.
    """
    selected = check_types(types)
    c = F.col(col) if isinstance(col, str) else col
    keys = F.array(*[F.lit(k) for k in selected])

    def run(t: Column) -> Column:
        state = F.struct(
            t.alias("text"),
            F.array().cast("array<int>").alias("n"),
            _digit_count(t).alias("digits"),
            (F.instr(t, "@") > 0).alias("has_at"),
        )
        for kind in selected:
            state = _bind(state, _advance(_RULES[kind]))
        return _bind(
            state, lambda s: F.struct(s["text"].alias("text"), F.map_from_arrays(keys, s["n"]).alias("counts"))
        )

    # texts too short of digits (and without "@") for any selected type skip the masking altogether
    digits, has_at = _digit_count(c), F.instr(c, "@") > 0
    may_hold = reduce(lambda a, b: a | b, [_may_hold(k, digits, has_at) for k in selected])
    untouched = F.struct(
        c.alias("text"), F.map_from_arrays(keys, F.array(*[F.lit(0) for _ in selected])).alias("counts")
    )
    return F.when(may_hold, _bind(c, run)).otherwise(untouched)


PII_SCHEMA = "struct<text: string, counts: map<string, int>>"


@functools.cache
def _arrow_masker(selected: tuple[str, ...]) -> Callable[[Column], Column]:
    """An Arrow UDF running :func:`pii_rules.mask_text` on whole batches (one per type selection)."""
    keys = list(selected)

    @arrow_udf(PII_SCHEMA)
    def mask(texts: pa.Array) -> pa.Array:
        out, flat = [], []
        for t in texts.to_pylist():
            masked, counts = mask_text(t, selected)
            out.append(masked)
            flat.extend(counts[k] for k in keys)
        n, k = len(out), len(keys)
        counts_arr = pa.MapArray.from_arrays(
            pa.array(range(0, (n + 1) * k, k), pa.int32()), pa.array(keys * n, pa.string()), pa.array(flat, pa.int32())
        )
        return pa.StructArray.from_arrays([pa.array(out, pa.string()), counts_arr], names=["text", "counts"])

    return mask


def mask_pii_arrow(col: Column | str, types: Iterable[str] | str = ALL_TYPES) -> Column:
    """:func:`mask_pii` computed by the pure-Python reference masker in an Arrow UDF.

    Same output, value for value (the tests compare the two on fuzzed text);
    Python's ``re`` scans text faster than the JVM's lambda functions, so on
    large tables this is the quicker engine (``pii.engine: arrow``).
    """
    c = F.col(col) if isinstance(col, str) else col
    return _arrow_masker(check_types(types))(c)


class PiiMasker(SchemaChecked, Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable):
    """pyspark.ml stage that writes ``inputCol`` with PII masked to ``outputCol``.

    With ``countsCol`` set, it also writes the ``map<string, int>`` of values
    masked per type, for run telemetry.
    """

    types = Param(Params._dummy(), "types", f"PII types to mask, of {list(ALL_TYPES)}", TypeConverters.toListString)
    countsCol = Param(
        Params._dummy(), "countsCol", "column for the masks per type ('' for none)", TypeConverters.toString
    )

    @keyword_only
    def __init__(
        self,
        *,
        inputCol: str = "text",
        outputCol: str = "text_masked",
        types: Sequence[str] = ALL_TYPES,
        countsCol: str = "",
    ) -> None:
        super().__init__()
        self._setDefault(inputCol="text", outputCol="text_masked", types=list(ALL_TYPES), countsCol="")
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(
        self,
        *,
        inputCol: str = "text",
        outputCol: str = "text_masked",
        types: Sequence[str] = ALL_TYPES,
        countsCol: str = "",
    ) -> "PiiMasker":
        kwargs = self._input_kwargs
        if "types" in kwargs:
            check_types(kwargs["types"])
        return self._set(**kwargs)

    def _input_columns(self) -> dict[str, ColumnSpec]:
        return {self.getInputCol(): ((StringType,), "a string")}

    def _output_columns(self) -> list[tuple[str, DataType]]:
        out: list[tuple[str, DataType]] = [(self.getOutputCol(), StringType())]
        counts_col = self.getOrDefault("countsCol")
        if counts_col:
            out.append((counts_col, MapType(StringType(), IntegerType())))
        return out

    def _transform(self, dataset: DataFrame) -> DataFrame:
        self.transformSchema(dataset.schema)
        in_col, out_col, counts_col = self.getInputCol(), self.getOutputCol(), self.getOrDefault("countsCol")
        tmp = "__dmine_pii"
        out = dataset.withColumn(tmp, mask_pii(F.col(in_col), self.getOrDefault("types")))
        out = out.withColumn(out_col, F.col(f"{tmp}.text"))
        if counts_col:
            out = out.withColumn(counts_col, F.col(f"{tmp}.counts"))
        return out.drop(tmp)
