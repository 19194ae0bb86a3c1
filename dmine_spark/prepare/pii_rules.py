"""PII rules without Spark: patterns, checksums, a reference masker and fake values.

Every rule is a regular expression that finds *candidates* plus, for most
types, a check that a candidate must pass to be masked (Luhn for cards,
ISO 13616 mod-97 for IBANs, the GB 11643-1999 check character and a plausible
birth date for Chinese resident IDs, a digit count for phones). A candidate
that fails its check stays in the text unchanged, so a 16-digit order number
that is not Luhn-valid is not taken for a card.

The patterns are written in the part of regular-expression syntax that
Python's :mod:`re` and Java's ``java.util.regex`` read the same way (ASCII
classes such as ``[0-9]`` rather than ``\\d``, fixed-width look-behinds), so
:mod:`dmine_spark.prepare.pii` runs the very same strings inside Spark SQL and
:func:`mask_text` here is its exact reference.

Order of application (:data:`ALL_TYPES`), each rule seeing the output of the
ones before it:

1. ``email``: first, because local parts are often phone or QQ numbers
   (``13812345678@163.com``) that must go with the address, not be split.
2. ``iban``: its letters and digits would otherwise feed card and phone rules.
3. ``cn_id``: an 18-digit ID is also a possible Luhn-valid 18-digit card.
4. ``card``: 13-19 digits, before phones so no phone rule eats a digit group.
5. ``phone``: last, the loosest pattern.

Placeholders are ``<EMAIL>``, ``<IBAN>``, ``<CN_ID>``, ``<CARD>`` and
``<PHONE>``; no rule can match inside a placeholder. Every rule's placeholder
has the shape :data:`PLACEHOLDER_SHAPE` (``<NAME>``, upper case), which the
cleaning steps of :mod:`dmine_spark.prepare.clean` leave whole: text masked at
ingest keeps its placeholders through the clean stage.

The ``fake_*`` generators make realistic valid values (and
:func:`fake_order_number` a Luhn-failing one) from a :class:`random.Random`, for
tests and synthetic data.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date

__all__ = [
    "ALL_TYPES",
    "PLACEHOLDERS",
    "PLACEHOLDER_SHAPE",
    "RULES",
    "Rule",
    "CN_ID_WEIGHTS",
    "CN_ID_CHECK_CHARS",
    "CN_PROVINCES",
    "luhn_ok",
    "iban_ok",
    "cn_id_ok",
    "phone_ok",
    "check_types",
    "mask_text",
    "fake_email",
    "fake_phone",
    "fake_card",
    "fake_iban",
    "fake_cn_id",
    "fake_order_number",
]

# A value is not taken from the middle of a longer alphanumeric token.
_NOT_BEFORE = r"(?<![0-9A-Za-z])"
_NOT_AFTER = r"(?![0-9A-Za-z])"

EMAIL_PATTERN = (
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![A-Za-z0-9-])"
)
# Country code, check digits, then the BBAN in groups of four (single spaces
# allowed between groups). Only the first BBAN group may be all letters (a GB
# bank code): later groups need a digit, so a capitalised word after the IBAN
# is not taken as one of its groups.
IBAN_PATTERN = (
    _NOT_BEFORE
    + r"[A-Z]{2}[0-9]{2} ?[A-Z0-9]{4}(?: ?(?=[A-Z]{0,3}[0-9])[A-Z0-9]{4}){1,6}(?: ?(?=[A-Z]{0,2}[0-9])[A-Z0-9]{1,3})?"
    + _NOT_AFTER
)
CN_ID_PATTERN = _NOT_BEFORE + r"[1-9][0-9]{16}[0-9Xx]" + _NOT_AFTER
# 4-4-4-4(-1..3) grouped with one kind of separator, Amex 4-6-5, or 13-19 plain
# digits. A number after "+" is a phone; a grouped number that goes on with
# more digit groups is some other identifier.
CARD_PATTERN = (
    r"(?<![0-9A-Za-z+])(?:"
    r"(?<![0-9][ -])(?:[0-9]{4}([ -])[0-9]{4}\1[0-9]{4}\1[0-9]{4}(?:\1[0-9]{1,3})?|[0-9]{4}([ -])[0-9]{6}\2[0-9]{5})"
    r"(?![ -][0-9])"
    r"|[0-9]{13,19})" + _NOT_AFTER
)
# International (+country code, groups split by space, dot, dash or an area
# code in parentheses), Chinese mobile, North American national, and national
# numbers with a leading trunk 0 (UK, EU). A national form that continues a
# run of digit groups (the tail of an account number) is not a phone.
PHONE_PATTERN = (
    r"(?<![0-9A-Za-z+])(?:"
    r"\+[1-9][0-9]{0,14}(?:[ .-]?\([0-9]{1,4}\)[0-9]{0,5}|[ .-][0-9]{1,8}){0,6}"
    r"|(?<![0-9][ .-])(?:"
    r"1[3-9][0-9](?:[ -]?[0-9]{4}){2}"
    r"|\([0-9]{3}\)[ .-]?[0-9]{3}[ .-][0-9]{4}"
    r"|[0-9]{3}([.-])[0-9]{3}\1[0-9]{4}"
    r"|0[1-9][0-9]{1,3} [0-9]{3,4} [0-9]{3,4}"
    r"))" + _NOT_AFTER
)

CN_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CN_ID_CHECK_CHARS = "10X98765432"
# First two digits of a resident ID: the province-level division.
CN_PROVINCES = (
    "11 12 13 14 15 21 22 23 31 32 33 34 35 36 37 41 42 43 44 45 46 50 51 52 53 54 61 62 63 64 65 71 81 82".split()
)
PHONE_MIN_DIGITS = 7
PHONE_MAX_DIGITS = 15  # ITU E.164
IBAN_MIN_LEN = 15  # Norway
IBAN_MAX_LEN = 34
CN_ID_MIN_YEAR = 1900


def luhn_ok(digits: str) -> bool:
    """True when ``digits`` (spaces and dashes ignored) pass the Luhn check.

    Anything other than digits, spaces and dashes, or fewer than two digits,
    is not a card number and gives False.
    """
    ds = digits.replace(" ", "").replace("-", "")
    if len(ds) < 2 or not (ds.isascii() and ds.isdigit()):
        return False
    total = 0
    for i, ch in enumerate(reversed(ds)):
        v = ord(ch) - 48
        if i % 2 == 1:
            v *= 2
            if v > 9:
                v -= 9
        total += v
    return total % 10 == 0


def _iban_remainder(s: str) -> int:
    """ISO 7064 mod 97-10 of an IBAN-shaped string (country and check digits moved to the end)."""
    acc = 0
    for ch in s[4:] + s[:4]:
        if ch.isdigit():
            acc = (acc * 10 + ord(ch) - 48) % 97
        else:  # A=10 ... Z=35, two decimal digits
            acc = (acc * 100 + ord(ch) - 55) % 97
    return acc


def iban_ok(s: str) -> bool:
    """True for an IBAN with valid ISO 13616 mod-97 check digits; spaces are allowed."""
    s = s.replace(" ", "").upper()
    if not (IBAN_MIN_LEN <= len(s) <= IBAN_MAX_LEN) or not re.fullmatch(r"[A-Z]{2}[0-9]{2}[A-Z0-9]+", s):
        return False
    return _iban_remainder(s) == 1


def _days_in_month(y: int, m: int) -> int:
    if m == 2:
        return 29 if (y % 4 == 0 and y % 100 != 0) or y % 400 == 0 else 28
    return 30 if m in (4, 6, 9, 11) else 31


def cn_id_ok(s: str, today: date | None = None) -> bool:
    """True for an 18-character Chinese resident ID (GB 11643-1999).

    Checks the province prefix, a real birth date between 1900 and ``today``
    (default: the current date), and the weighted-sum check character
    (``x`` accepted for ``X``).
    """
    if len(s) != 18 or not re.fullmatch(r"[0-9]{17}[0-9Xx]", s) or s[:2] not in CN_PROVINCES:
        return False
    y, m, d = int(s[6:10]), int(s[10:12]), int(s[12:14])
    if y < CN_ID_MIN_YEAR or not 1 <= m <= 12 or not 1 <= d <= _days_in_month(y, m):
        return False
    if s[6:14] > (today or date.today()).strftime("%Y%m%d"):
        return False
    total = sum(int(c) * w for c, w in zip(s[:17], CN_ID_WEIGHTS, strict=True))
    return CN_ID_CHECK_CHARS[total % 11] == s[17].upper()


def phone_ok(s: str) -> bool:
    """True when a phone candidate has an E.164-plausible number of digits (7 to 15)."""
    n = sum(c.isascii() and c.isdigit() for c in s)
    return PHONE_MIN_DIGITS <= n <= PHONE_MAX_DIGITS


# What a placeholder looks like: no pattern matches "<" or ">", and cleaning never takes one for a tag
PLACEHOLDER_SHAPE = r"<[A-Z][A-Z0-9_]*>"


@dataclass(frozen=True)
class Rule:
    """One PII type: its candidate pattern, placeholder and check (``None``: every candidate).

    Raises
    ------
    ValueError
        When ``placeholder`` is not of :data:`PLACEHOLDER_SHAPE`.
    """

    type: str
    pattern: str
    placeholder: str
    check: Callable[[str], bool] | None

    def __post_init__(self) -> None:
        if not re.fullmatch(PLACEHOLDER_SHAPE, self.placeholder):
            raise ValueError(
                f"pii rule {self.type}: placeholder {self.placeholder!r} must be <NAME> in upper case "
                "(A-Z, 0-9, _), such as <PHONE>"
            )


RULES: tuple[Rule, ...] = (
    Rule("email", EMAIL_PATTERN, "<EMAIL>", None),
    Rule("iban", IBAN_PATTERN, "<IBAN>", iban_ok),
    Rule("cn_id", CN_ID_PATTERN, "<CN_ID>", cn_id_ok),
    Rule("card", CARD_PATTERN, "<CARD>", luhn_ok),
    Rule("phone", PHONE_PATTERN, "<PHONE>", phone_ok),
)
ALL_TYPES: tuple[str, ...] = tuple(r.type for r in RULES)
PLACEHOLDERS: dict[str, str] = {r.type: r.placeholder for r in RULES}
_COMPILED = {r.type: re.compile(r.pattern) for r in RULES}


def check_types(types: Iterable[str] | str) -> tuple[str, ...]:
    """The selected types in application order; one-line error for an unknown or empty selection."""
    if isinstance(types, str):
        types = [types]
    chosen = list(types)
    unknown = [t for t in chosen if t not in ALL_TYPES]
    if unknown:
        raise ValueError(f"pii types: unknown type(s) {unknown}; choose from {list(ALL_TYPES)}")
    if not chosen:
        raise ValueError(f"pii types: empty selection; choose from {list(ALL_TYPES)}")
    return tuple(t for t in ALL_TYPES if t in chosen)


def mask_text(text: str | None, types: Iterable[str] | str = ALL_TYPES) -> tuple[str | None, dict[str, int]]:
    """Mask PII in ``text`` exactly as :func:`dmine_spark.prepare.pii.mask_pii` does in Spark.

    Parameters
    ----------
    text : str or None
        The text; ``None`` gives ``None`` and zero counts.
    types : iterable of str
        Types to mask (any of :data:`ALL_TYPES`); applied in the order of
        :data:`ALL_TYPES` whatever the order given.

    Returns
    -------
    tuple
        The masked text and the number of values masked per selected type.
    """
    selected = check_types(types)
    counts = dict.fromkeys(selected, 0)
    if text is None:
        return None, counts
    for rule in RULES:
        if rule.type not in counts:
            continue

        def repl(m: re.Match[str], rule: Rule = rule) -> str:
            value = m.group(0)
            if rule.check is None or rule.check(value):
                counts[rule.type] += 1
                return rule.placeholder
            return value

        text = _COMPILED[rule.type].sub(repl, text)
    return text, counts


# ---------------------------------------------------------------- generators

_FIRST = ["anna", "li.wei", "john", "maria", "zhang_san", "o.brien", "sophie", "raj", "chen", "m.garcia"]
_DOMAINS = ["example.com", "mail.example.org", "163.com", "qq.com", "corp.example.co.uk", "bank-example.de", "yahoo.fr"]


def fake_email(rng: random.Random) -> str:
    """A plausible e-mail address, sometimes with a tag, digits or a phone-number local part."""
    kind = rng.random()
    if kind < 0.15:
        local = "1" + rng.choice("3456789") + "".join(rng.choices(string.digits, k=9))
    elif kind < 0.25:
        local = str(rng.randint(10000, 999999999))  # QQ number
    else:
        local = rng.choice(_FIRST)
        if rng.random() < 0.4:
            local += str(rng.randint(1, 9999))
        if rng.random() < 0.15:
            local += "+" + rng.choice(["billing", "news", "x"])
    return f"{local}@{rng.choice(_DOMAINS)}"


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choices(string.digits, k=n))


def fake_phone(rng: random.Random) -> str:
    """A phone number in a common written form: UK, US, French, German or Chinese."""
    line = f"{rng.randint(0, 9999):04d}"
    forms = [
        lambda: f"+44 20 7946 {line}",
        lambda: f"+44 7700 900{rng.randint(0, 999):03d}",
        lambda: f"+1 ({rng.randint(201, 989)}) 555-{line}",
        lambda: f"+1 {rng.randint(201, 989)}-555-{line}",
        lambda: f"({rng.randint(201, 989)}) 555-{line}",
        lambda: f"+33 1 {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)}",
        lambda: f"+49 30 {rng.randint(100000, 9999999)}",
        lambda: f"020 7946 {line}",
    ]
    mobile = "1" + rng.choice("3456789") + _digits(rng, 9)
    forms += [
        lambda: mobile,
        lambda: f"+86 {mobile[:3]} {mobile[3:7]} {mobile[7:]}",
        lambda: f"{mobile[:3]}-{mobile[3:7]}-{mobile[7:]}",
        lambda: f"+86{mobile}",
    ]
    return rng.choice(forms)()


def _luhn_digit(body: str) -> str:
    """The check digit that makes ``body`` + digit Luhn-valid."""
    for d in string.digits:
        if luhn_ok(body + d):
            return d
    raise AssertionError("unreachable: one of ten digits always completes a Luhn number")


def _group(s: str, sizes: Iterable[int], sep: str) -> str:
    out, i = [], 0
    for n in sizes:
        out.append(s[i : i + n])
        i += n
    return sep.join(out)


def fake_card(rng: random.Random) -> str:
    """A Luhn-valid card number: 16 digits (Visa, Mastercard, UnionPay, Discover) or 15 (Amex).

    Plain, or grouped in fours by spaces or dashes (Amex 4-6-5).
    """
    if rng.random() < 0.1:
        number = rng.choice(["34", "37"]) + _digits(rng, 12)
        number += _luhn_digit(number)
        sizes = (4, 6, 5)
    else:
        prefix = rng.choice(["4", "51", "53", "55", "2221", "2720", "6011", "62"])
        number = prefix + _digits(rng, 15 - len(prefix))
        number += _luhn_digit(number)
        sizes = (4, 4, 4, 4)
    style = rng.random()
    if style < 0.4:
        return number
    return _group(number, sizes, " " if style < 0.75 else "-")


def _iban_check_digits(country: str, bban: str) -> str:
    return f"{98 - _iban_remainder(country + '00' + bban):02d}"


def fake_iban(rng: random.Random) -> str:
    """A valid IBAN (DE, GB, FR, NL or ES layout), compact or in groups of four."""
    country = rng.choice(["DE", "GB", "FR", "NL", "ES"])
    if country == "DE":
        bban = _digits(rng, 18)
    elif country == "GB":
        bban = rng.choice(["NWBK", "BARC", "HBUK", "MIDL", "LOYD"]) + _digits(rng, 14)
    elif country == "FR":
        account = _digits(rng, 11)
        if rng.random() < 0.3:  # French account numbers may hold a letter
            i = rng.randrange(11)
            account = account[:i] + rng.choice(string.ascii_uppercase) + account[i + 1 :]
        bban = _digits(rng, 10) + account + _digits(rng, 2)
    elif country == "NL":
        bban = rng.choice(["ABNA", "INGB", "RABO", "TRIO"]) + _digits(rng, 10)
    else:
        bban = _digits(rng, 20)
    iban = country + _iban_check_digits(country, bban) + bban
    if rng.random() < 0.5:
        return iban
    return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))


def fake_cn_id(rng: random.Random) -> str:
    """A valid 18-character Chinese resident ID: province, area, birth date 1940-2005, check character."""
    area = rng.choice(CN_PROVINCES) + f"{rng.randint(1, 30):02d}{rng.randint(1, 30):02d}"
    born = date.fromordinal(rng.randint(date(1940, 1, 1).toordinal(), date(2005, 12, 31).toordinal()))
    body = area + born.strftime("%Y%m%d") + f"{rng.randint(0, 999):03d}"
    total = sum(int(c) * w for c, w in zip(body, CN_ID_WEIGHTS, strict=True))
    return body + CN_ID_CHECK_CHARS[total % 11]


def fake_order_number(rng: random.Random) -> str:
    """A 16-digit number that fails the Luhn check, so it must never be masked as a card."""
    body = str(rng.randint(1, 9)) + _digits(rng, 14)
    good = int(_luhn_digit(body))
    return body + str((good + rng.randint(1, 9)) % 10)
