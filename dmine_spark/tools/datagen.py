"""``dmine datagen``: scale data made from the real datasets, with faults injected and counted exactly.

The generator reads the text datasets in the shared datasets folder (``--datasets``: BANKING77,
Twitter financial news, women's clothing reviews, zh_waimai_10k and the AG
News test split) into one pool of distinct real texts and writes N rows of one
table to an output folder, in part files of ``chunk_rows`` rows, with a
``_manifest.json`` that says exactly how many rows carry each injected fault.

Distinct base texts
    A base row is one real text, or, once that text has been used, several
    texts of the same dataset and label joined by spaces (2 to
    ``max_segments`` of them, added until no single text is more than two
    thirds of the row). Every base row is a different *set* of pool texts,
    across all chunks, so at any N the only exact duplicates are the injected
    ones, and two base rows that share one text have a shingle Jaccard
    similarity of about 0.5 at most. The pool itself is deduplicated on the
    case-folded, NFKC-normalised, whitespace-collapsed text, and stripped of
    the characters the faults add
    (U+FFFD, private-use, zero-width and control characters, full-width
    letters and digits), so each fault is present exactly on the rows tagged
    with it. Real near-duplicates inside the source datasets stay as they are.

Faults (rates are fractions of all rows)
    Each row is one of four kinds: ``normal``, ``dup`` (a copy of an earlier
    plain row of the same part file, every column but ``record_id``),
    ``near_dup`` (such a copy with one small edit: case, punctuation, a typo,
    a dropped or swapped word, extra whitespace; see :func:`near_dup_edit`)
    or ``malformed``. Normal rows may also get nulls (each nullable column at
    the ``null`` rate) and text faults: ``html`` (wrapped in tags, entities
    escaped), ``pii`` (an e-mail, phone, card, IBAN, Chinese ID, or an
    order-number decoy that must *not* be masked, from
    :mod:`dmine_spark.prepare.pii_rules`), ``control`` (zero-width and
    control characters), ``fullwidth`` (full-width letters and digits),
    ``overlong`` (repeated to at least ``overlong_chars`` characters) and
    ``bad_encoding``. A *plain* row is a normal row with no null and no text
    fault; only plain rows are copied, so a copy carries only its own tag.
    Text faults are applied in the order of :data:`TEXT_FAULTS`, so a row with
    both ``pii`` and ``fullwidth`` has its PII in full-width characters. A
    ``near_dup`` made by ``case`` or ``whitespace`` is an exact duplicate
    once text is case-folded and its whitespace collapsed.

Formats
    ``csv``: RFC 4180 with a header in every part file, strings quoted,
    embedded newlines kept (read with ``multiLine`` and ``escape '"'``, see
    :data:`CSV_OPTIONS`); nulls are empty unquoted fields. ``bad_encoding``
    puts raw invalid UTF-8 bytes in the text. ``malformed`` rows are
    ``extra_field``, ``missing_field``, ``unquoted_delimiter`` (a text with a
    comma written without quotes), ``bad_rating``, ``bad_amount`` or
    ``bad_timestamp`` (a value of the wrong type), each of which Spark's
    PERMISSIVE reader with :data:`SCHEMA_DDL` puts in the corrupt-record
    column.

    ``parquet``: ``rating``, ``amount`` and ``created_at`` are stored as
    strings (:data:`PARQUET_DDL`), as a landing zone receives them, so a
    wrong-typed value can exist: ``malformed`` rows are ``bad_rating``,
    ``bad_amount`` or ``bad_timestamp``, and casting the three columns to
    :data:`SCHEMA_DDL`'s types finds exactly them. ``bad_encoding`` puts
    U+FFFD in the text (Parquet strings are valid UTF-8).

Manifest (``_manifest.json``, written last, so it marks a complete folder)
    ``rows``, ``seed``, ``format``, ``chunk_rows``, ``sources``, ``rates``,
    ``schema_ddl`` (the schema of the files) and ``typed_schema_ddl``,
    ``spark_options`` (reader options for CSV), ``files`` (``path`` and
    ``rows`` of each part file), ``row_kinds`` (normal/dup/near_dup/malformed,
    summing to ``rows``), ``counts`` (rows carrying each fault; ``null``:
    rows with at least one null), ``details`` (rows per ``fault:detail`` tag,
    e.g. ``near_dup:typo``, ``null:text``, ``pii:iban``,
    ``malformed:extra_field``), ``clean_rows`` (rows with no fault),
    ``datasets`` (rows per source dataset), ``segments`` (rows per number of
    joined texts) and ``pool_texts``. The ``faults`` column of each row holds
    its tags, comma-separated, and ``dup_of`` the ``record_id`` a copy repeats.

Determinism
    The same seed, row count, rates, sources, chunk size and format give
    byte-identical files. Each chunk draws from its own generator seeded by
    ``(seed, chunk)``; only the set of used texts runs across chunks (8 bytes
    a row, the one thing kept for the whole run). Both formats hold the same
    rows; only the way malformed and bad-encoding rows are written differs.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import random
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "CSV_OPTIONS",
    "DATASETS",
    "MANIFEST",
    "NEAR_DUP_OPS",
    "PARQUET_DDL",
    "SCHEMA_DDL",
    "DatagenResult",
    "FaultRates",
    "Pool",
    "generate",
    "load_pool",
    "near_dup_edit",
    "read_manifest",
]

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
COLUMNS = (
    "record_id",
    "text",
    "label",
    "dataset",
    "rating",
    "category",
    "amount",
    "created_at",
    "lang",
    "faults",
    "dup_of",
)
SCHEMA_DDL = (
    "record_id STRING, text STRING, label STRING, dataset STRING, rating INT, category STRING, "
    "amount DOUBLE, created_at TIMESTAMP, lang STRING, faults STRING, dup_of STRING"
)
PARQUET_DDL = (
    "record_id STRING, text STRING, label STRING, dataset STRING, rating STRING, category STRING, "
    "amount STRING, created_at STRING, lang STRING, faults STRING, dup_of STRING"
)
CSV_OPTIONS = {"header": "true", "multiLine": "true", "escape": '"', "encoding": "UTF-8"}
NULLABLE = ("text", "label", "category", "rating", "amount", "created_at")
TEXT_FAULTS = ("pii", "overlong", "fullwidth", "html", "control", "bad_encoding")  # order of application
NEAR_DUP_OPS = ("case", "punct", "typo", "drop_word", "swap_words", "whitespace")
MALFORMED_KINDS = {
    "csv": ("bad_rating", "bad_amount", "bad_timestamp", "extra_field", "missing_field", "unquoted_delimiter"),
    "parquet": ("bad_rating", "bad_amount", "bad_timestamp"),
}
PII_KINDS = ("email", "phone", "card", "iban", "cn_id", "order_number")
# created_at is uniform over these two years (UTC)
TIME_START = np.datetime64("2024-01-01T00:00:00", "s")
TIME_SPAN_S = int((np.datetime64("2026-01-01T00:00:00", "s") - TIME_START).astype(np.int64))

# Private-use characters stand for what a string cannot hold until the bytes are written.
_BAD_BYTES = (b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80", b"\xf8\x88\x80\x80\x80")
_BAD_MARKS = tuple(chr(0xE000 + i) for i in range(len(_BAD_BYTES)))
_LINE_MARK = "\ue00f"
_FFFD = "\ufffd"


@dataclass(frozen=True)
class FaultRates:
    """Fraction of all rows that get each fault (``null``: of each nullable column)."""

    dup: float = 0.03
    near_dup: float = 0.03
    html: float = 0.02
    pii: float = 0.02
    null: float = 0.01
    malformed: float = 0.005
    overlong: float = 0.002
    bad_encoding: float = 0.002
    control: float = 0.005
    fullwidth: float = 0.005

    def validate(self) -> None:
        """One-line ``ValueError`` naming the rate that is out of range."""
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"datagen: rate {f.name!r} must be between 0 and 1, got {v!r}")
        kinds = self.dup + self.near_dup + self.malformed
        if kinds >= 1.0:
            raise ValueError(f"datagen: rates dup + near_dup + malformed must stay below 1, got {kinds:g}")
        for name in (*TEXT_FAULTS, "null"):
            if getattr(self, name) > 1.0 - kinds:
                raise ValueError(
                    f"datagen: rate {name!r} ({getattr(self, name):g}) exceeds the share of normal rows "
                    f"({1.0 - kinds:g}) left by dup, near_dup and malformed"
                )


# ------------------------------------------------------------------ the pool of real texts


def _read_csv(path: Path, header: bool = True) -> list[dict[str, str]] | list[list[str]]:
    if not path.is_file():
        raise FileNotFoundError(f"datagen: dataset file {path} not found; pass --datasets DIR (the shared datasets)")
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh)) if header else list(csv.reader(fh))


def _banking77(d: Path) -> list[tuple[str, str, str, int]]:
    rows = _read_csv(d / "train.csv") + _read_csv(d / "test.csv")
    return [(r["text"], r["category"], "banking", 0) for r in rows]


def _twitter(d: Path) -> list[tuple[str, str, str, int]]:
    names = {"0": "bearish", "1": "bullish", "2": "neutral"}
    rows = _read_csv(d / "sent_train.csv") + _read_csv(d / "sent_valid.csv")
    return [(r["text"], names.get(r["label"], r["label"]), "finance", 0) for r in rows]


def _reviews(d: Path) -> list[tuple[str, str, str, int]]:
    out = []
    for r in _read_csv(d / "womens_clothing_reviews.csv"):
        rating = int(r["Rating"]) if r["Rating"].strip().isdigit() else 0
        label = "recommended" if r["Recommended IND"].strip() == "1" else "not_recommended"
        out.append((r["Review Text"], label, (r["Department Name"].strip() or "clothing").lower(), rating))
    return out


def _waimai(d: Path) -> list[tuple[str, str, str, int]]:
    return [
        (r["review"], "positive" if r["label"] == "1" else "negative", "food_delivery", 0)
        for r in _read_csv(d / "waimai_10k.csv")
    ]


def _ag_news(d: Path) -> list[tuple[str, str, str, int]]:
    names = {"1": "world", "2": "sports", "3": "business", "4": "sci_tech"}
    return [(f"{r[1]} - {r[2]}", names.get(r[0], r[0]), "news", 0) for r in _read_csv(d / "test.csv", False)]


# folder name -> (reader, language)
DATASETS: dict[str, tuple[Callable[[Path], list[tuple[str, str, str, int]]], str]] = {
    "banking77": (_banking77, "en"),
    "twitter_financial_news_sentiment": (_twitter, "en"),
    "womens_clothing_reviews": (_reviews, "en"),
    "zh_waimai_10k": (_waimai, "zh"),
    "ag_news_test": (_ag_news, "en"),
}

_FW_ALNUM = {c: c - 0xFEE0 for r in ((0xFF10, 0xFF1A), (0xFF21, 0xFF3B), (0xFF41, 0xFF5B)) for c in range(*r)}
_STRIP = re.compile("[\ufffd\ue000-\uf8ff\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff\x00-\x08\x0b-\x1f\x7f-\x9f]")
_WS = re.compile(r"\s+")


def _sanitize(text: str) -> str:
    """Remove from a source text what a fault would add, so each fault is present only where tagged."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_FW_ALNUM)
    return _STRIP.sub(" ", text).strip()


def _dedup_key(text: str) -> str:
    return _WS.sub(" ", unicodedata.normalize("NFKC", text)).strip().lower()


@dataclass(frozen=True)
class Pool:
    """The distinct real texts, sorted so each (dataset, label) group is a contiguous range."""

    texts: np.ndarray  # object: str
    lengths: np.ndarray  # int64 characters
    dataset: np.ndarray  # object: dataset folder name
    lang: np.ndarray  # object: "en" / "zh"
    label: np.ndarray  # object
    category: np.ndarray  # object
    rating: np.ndarray  # int64, 0 where the source has none
    group_start: np.ndarray  # int64, first pool index of this text's group
    group_size: np.ndarray  # int64
    sizes: dict[str, int]  # distinct texts per dataset
    arrow: dict[str, pa.Array]  # text, label, dataset, category, lang as Arrow strings

    def __len__(self) -> int:
        return len(self.texts)


def load_pool(datasets_dir: str | Path, sources: Sequence[str] | None = None) -> Pool:
    """Read the real datasets into a :class:`Pool` of distinct, sanitised texts.

    Parameters
    ----------
    datasets_dir : path
        Folder holding the dataset folders named in :data:`DATASETS`.
    sources : sequence of str, optional
        Dataset folder names to use (default: all of :data:`DATASETS`).
    """
    import pyarrow as pa

    datasets_dir = Path(datasets_dir)
    if not datasets_dir.is_dir():
        raise FileNotFoundError(f"datagen: datasets folder {datasets_dir} not found; pass --datasets DIR")
    names = list(sources) if sources else list(DATASETS)
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise ValueError(f"datagen: unknown dataset(s) {unknown}; choose from {list(DATASETS)}")
    seen: set[str] = set()
    recs: list[tuple[str, str, str, str, str, int]] = []
    sizes: dict[str, int] = {}
    for name in names:
        reader, lang = DATASETS[name]
        before = len(recs)
        for text, label, category, rating in reader(datasets_dir / name):
            text = _sanitize(text or "")
            key = _dedup_key(text)
            if not key or key in seen:
                continue
            seen.add(key)
            recs.append((name, label, text, lang, category, rating))
        sizes[name] = len(recs) - before
    if not recs:
        raise ValueError(f"datagen: no texts found in {datasets_dir} for {names}")
    order = sorted(range(len(recs)), key=lambda i: (names.index(recs[i][0]), recs[i][1], i))
    recs = [recs[i] for i in order]
    group = np.array([f"{r[0]}\x00{r[1]}" for r in recs], dtype=object)
    change = np.r_[True, group[1:] != group[:-1]]
    starts = np.flatnonzero(change)
    gid = np.cumsum(change) - 1
    ends = np.r_[starts[1:], len(recs)]

    def col(i: int) -> np.ndarray:
        a = np.empty(len(recs), dtype=object)
        a[:] = [r[i] for r in recs]
        return a

    texts = col(2)
    cols = {"text": texts, "label": col(1), "dataset": col(0), "category": col(4), "lang": col(3)}
    return Pool(
        texts=texts,
        lengths=np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts)),
        dataset=col(0),
        lang=col(3),
        label=col(1),
        category=col(4),
        rating=np.array([r[5] for r in recs], dtype=np.int64),
        group_start=starts[gid].astype(np.int64),
        group_size=(ends - starts)[gid].astype(np.int64),
        sizes=sizes,
        arrow={k: pa.array(v, pa.string()) for k, v in cols.items()},
    )


@functools.lru_cache(maxsize=2)
def _cached_pool(datasets_dir: str, sources: tuple[str, ...] | None) -> Pool:
    return load_pool(datasets_dir, sources)


# ------------------------------------------------------------------ distinct base rows


_H0 = np.uint64(0xCBF29CE484222325)
_HP = np.uint64(0x100000001B3)
_HM = np.uint64(0x9E3779B97F4A7C15)


def _set_hash(segs: np.ndarray) -> np.ndarray:
    """64-bit hash of each row's set of pool indices (``-1`` pads), independent of their order."""
    s = np.sort(segs, axis=1)
    h = np.full(len(s), _H0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(s.shape[1]):
            h = (h ^ (s[:, j] + 1).astype(np.uint64)) * _HP
            h ^= h >> np.uint64(31)
            h *= _HM
    return h


class _SeenSets:
    """Hashes of every base row written so far: sorted levels merged like a log-structured store."""

    def __init__(self) -> None:
        self.levels: list[np.ndarray] = []

    def contains(self, h: np.ndarray) -> np.ndarray:
        found = np.zeros(len(h), dtype=bool)
        for lv in self.levels:
            i = np.minimum(np.searchsorted(lv, h), len(lv) - 1)
            found |= lv[i] == h
        return found

    def add(self, h: np.ndarray) -> None:
        self.levels.append(np.unique(h))
        while len(self.levels) > 1 and len(self.levels[-2]) <= 2 * len(self.levels[-1]):
            top = self.levels.pop()
            self.levels[-1] = np.union1d(self.levels[-1], top)


def _choose_segments(
    pool: Pool, first: np.ndarray, rng: np.random.Generator, seen: _SeenSets, min_segments: int, max_segments: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pool indices for each row (``-1`` padded) and the rows' set hashes, every set new."""
    n = len(first)
    segs = np.full((n, max_segments), -1, dtype=np.int64)
    segs[:, 0] = first
    k = np.ones(n, dtype=np.int64)
    start, size = pool.group_start[first], pool.group_size[first]
    cap = np.minimum(max_segments, size)
    grow = np.flatnonzero(k < np.minimum(min_segments, cap))
    for _ in range(4 * max_segments + 1):
        todo = grow
        for _attempt in range(64):
            if not len(todo):
                break
            pick = start[todo] + np.floor(rng.random(len(todo)) * size[todo]).astype(np.int64)
            clash = (segs[todo] == pick[:, None]).any(axis=1)
            ok = todo[~clash]
            segs[ok, k[ok]] = pick[~clash]
            k[ok] += 1
            todo = todo[clash]
        h = _set_hash(segs)
        _, first_idx = np.unique(h, return_index=True)
        collide = np.ones(n, dtype=bool)
        collide[first_idx] = False
        collide |= seen.contains(h)
        want = collide | (k < min_segments)
        if max_segments > 1:
            lens = np.where(segs >= 0, pool.lengths[np.maximum(segs, 0)], 0)
            want |= (k > 1) & (3 * lens.max(axis=1) > 2 * lens.sum(axis=1))
        can = k < cap
        if (collide & ~can).any():
            raise ValueError(
                "datagen: the source datasets cannot supply this many distinct texts; "
                "raise max_segments or add datasets"
            )
        grow = np.flatnonzero(want & can)
        if not len(grow):
            return segs, h
    raise AssertionError("unreachable: every round adds a segment to every row still to resolve")


# ------------------------------------------------------------------ text faults and edits


_WORD = re.compile(r"\S+")
_CJK = re.compile(r"[\u3400-\u9fff]")
_PUNCT_END = ".!?。！？"


def _cased(text: str) -> bool:
    return text.lower() != text.upper()


def _edit_case(text: str, rng: random.Random) -> str:
    choice = rng.randrange(4)
    if choice == 0:
        return text.lower()
    if choice == 1:
        return text.upper()
    words = list(_WORD.finditer(text))
    cased = [m for m in words if _cased(m.group(0))]
    if not cased:
        return text
    m = rng.choice(cased)
    w = m.group(0)
    new = w.swapcase() if choice == 2 else (w.capitalize() if w != w.capitalize() else w.lower())
    return text[: m.start()] + new + text[m.end() :]


def _edit_punct(text: str, rng: random.Random) -> str:
    if text and text[-1] in _PUNCT_END:
        return text[:-1] if rng.random() < 0.5 else text[:-1] + rng.choice([c for c in "!?." if c != text[-1]])
    inner = [i for i, c in enumerate(text) if c in ",;:"]
    if inner and rng.random() < 0.5:
        i = rng.choice(inner)
        return text[:i] + text[i + 1 :]
    return text + rng.choice("!?.")


def _edit_typo(text: str, rng: random.Random) -> str:
    pos = [i for i in range(len(text) - 1) if text[i].isalnum() and text[i + 1].isalnum() and text[i] != text[i + 1]]
    if not pos:
        return text
    i = rng.choice(pos)
    choice = rng.randrange(3)
    if choice == 0:  # swap two neighbours
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    if choice == 1:  # drop a character
        return text[:i] + text[i + 1 :]
    if text[i].isascii() and text[i].isalpha():  # hit the key next to it
        repl = rng.choice([c for c in "etaoinshrdlu" if c != text[i].lower()])
        return text[:i] + repl + text[i + 1 :]
    return text[:i] + text[i] + text[i:]  # doubled character


def _units(text: str) -> tuple[list[str], str]:
    """Words of a spaced text, or characters of a Chinese one."""
    words = text.split(" ")
    if len(words) >= 3 or not _CJK.search(text):
        return words, " "
    return list(text), ""


def _edit_drop_word(text: str, rng: random.Random) -> str:
    units, sep = _units(text)
    cand = [i for i, u in enumerate(units) if u.strip()]
    if len(cand) < (3 if sep else 6):
        return text
    del units[rng.choice(cand)]
    return sep.join(units)


def _edit_swap_words(text: str, rng: random.Random) -> str:
    units, sep = _units(text)
    pairs = [i for i in range(len(units) - 1) if units[i] != units[i + 1] and units[i].strip() and units[i + 1].strip()]
    if not pairs:
        return text
    i = rng.choice(pairs)
    units[i], units[i + 1] = units[i + 1], units[i]
    return sep.join(units)


def _edit_whitespace(text: str, rng: random.Random) -> str:
    spaces = [i for i, c in enumerate(text) if c == " "]
    choice = rng.randrange(3)
    if spaces and choice == 0:
        i = rng.choice(spaces)
        return text[:i] + rng.choice(["  ", "   ", " \t"]) + text[i + 1 :]
    if choice == 1:
        return "  " + text
    return text + rng.choice([" ", "  ", "\n"])


_EDITS: dict[str, Callable[[str, random.Random], str]] = {
    "case": _edit_case,
    "punct": _edit_punct,
    "typo": _edit_typo,
    "drop_word": _edit_drop_word,
    "swap_words": _edit_swap_words,
    "whitespace": _edit_whitespace,
}


def near_dup_edit(text: str, rng: random.Random, op: str | None = None) -> tuple[str, str]:
    """One small edit of ``text``; returns the edited text and the edit applied.

    ``op`` is one of :data:`NEAR_DUP_OPS` (default: drawn from ``rng``). When the
    edit cannot change this text (no cased letter, a single word), extra
    whitespace is added instead, so the result always differs from ``text``.
    """
    if op is None:
        op = rng.choice(NEAR_DUP_OPS)
    elif op not in _EDITS:
        raise ValueError(f"near_dup_edit: unknown op {op!r}; choose from {list(NEAR_DUP_OPS)}")
    out = _EDITS[op](text, rng)
    if out == text or not out.strip():
        op, out = "whitespace", _edit_whitespace(text, rng)
    return out, op


_PII_FAKES: dict[str, Callable[[random.Random], str]] | None = None


def _pii_fakes() -> dict[str, Callable[[random.Random], str]]:
    global _PII_FAKES
    if _PII_FAKES is None:
        from dmine_spark.prepare import pii_rules as p

        _PII_FAKES = {
            "email": p.fake_email,
            "phone": p.fake_phone,
            "card": p.fake_card,
            "iban": p.fake_iban,
            "cn_id": p.fake_cn_id,
            "order_number": p.fake_order_number,
        }
    return _PII_FAKES


_PII_TEMPLATES = {
    "en": {
        "email": ["Please reply to {v} .", "You can email me at {v} if needed.", "My email is {v}"],
        "phone": ["Call me on {v} please.", "My number is {v}", "Reach me at {v} after 5pm."],
        "card": ["My card number is {v} .", "Card {v} was charged twice.", "The card ending is on {v}"],
        "iban": ["My IBAN is {v} .", "Please send it to IBAN {v}", "Account {v} should get the refund."],
        "cn_id": ["My ID number is {v} .", "ID {v} is on the account."],
        "order_number": ["Order number {v} .", "Reference {v} for this order."],
    },
    "zh": {
        "email": ["我的邮箱是 {v} ", "请发邮件到 {v} 谢谢"],
        "phone": ["我的电话是 {v} ", "联系电话 {v} 请尽快回复"],
        "card": ["我的卡号是 {v} ", "银行卡 {v} 被扣款两次"],
        "iban": ["账户 {v} 请退款", "IBAN {v} "],
        "cn_id": ["身份证号 {v} ", "我的身份证是 {v} "],
        "order_number": ["订单号 {v} ", "订单 {v} 还没送到"],
    },
}
_HTML_WRAPS = [
    "<p>{t}</p>",
    '<div class="message">{t}</div>',
    "<html><body><p>{t}</p></body></html>",
    '<span style="color:#333">{t}</span><br/>',
    "<b>Customer wrote:</b> {t}",
    "<p>{t}<br>\n</p><!-- sent from mobile -->",
]
_CONTROL = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\x01", "\x02", "\x07", "\x08", "\x1b", "\x1f", "\x7f"]
_FULLWIDTH = {c: c + 0xFEE0 for c in range(0x21, 0x7F)} | {0x20: 0x3000}


def _inject(text: str, fault: str, rng: random.Random, lang: str, overlong_chars: int) -> tuple[str, str]:
    """Apply one text fault; returns the new text and the fault's tag."""
    if fault == "pii":
        kind = rng.choice(PII_KINDS)
        sentence = rng.choice(_PII_TEMPLATES[lang][kind]).format(v=_pii_fakes()[kind](rng))
        text = f"{sentence} {text}" if rng.random() < 0.5 else f"{text} {sentence}"
        return text, f"pii:{kind}"
    if fault == "overlong":
        reps = overlong_chars // (len(text) + 1) + 1
        return " ".join([text] * reps), fault
    if fault == "fullwidth":
        out = text.translate(_FULLWIDTH)
        if not any(0xFF10 <= ord(c) <= 0xFF5A and chr(ord(c) - 0xFEE0).isalnum() for c in out):
            out += "\u3000" + str(rng.randint(10, 9999)).translate(_FULLWIDTH)
        return out, fault
    if fault == "html":
        esc = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        esc = esc.replace('"', "&quot;").replace("'", "&#39;")
        if " " in esc and rng.random() < 0.3:
            esc = esc.replace(" ", "&nbsp;", 1)
        return rng.choice(_HTML_WRAPS).format(t=esc), fault
    if fault == "control":
        for _ in range(rng.randint(1, 3)):
            i = rng.randint(1, max(1, len(text) - 1))
            text = text[:i] + rng.choice(_CONTROL) + text[i:]
        return text, fault
    if fault == "bad_encoding":
        for _ in range(rng.randint(1, 2)):
            i = rng.randint(0, len(text))
            text = text[:i] + rng.choice(_BAD_MARKS) + text[i:]
        return text, fault
    raise AssertionError(fault)


_BAD_VALUES = {
    "bad_rating": ["five", "4 stars", "n/a", "*****", "4.5/5"],
    "bad_amount": ["12,50 EUR", "n/a", "$1,234.00", "twelve", "--"],
    "bad_timestamp": ["31/02/2024 25:61", "yesterday", "2024-13-45 99:99:99", "n/a", "0000-00-00"],
}


def _q(s: str | None) -> str:
    return "" if s is None else '"' + s.replace('"', '""') + '"'


def _malformed_line(row: dict[str, Any], kind: str, rng: random.Random) -> str:
    """One CSV record that Spark's PERMISSIVE reader cannot parse against :data:`SCHEMA_DDL`."""
    vals = {c: _csv_value(row[c]) for c in COLUMNS}
    vals["created_at"] = row["created_at"] or ""
    if kind in _BAD_VALUES:
        vals[_bad_column(kind)] = _q(row[_bad_column(kind)])
    parts = [vals[c] for c in COLUMNS]
    if kind == "extra_field":
        parts.append(_q(rng.choice(["unexpected", "EXTRA", "1"])))
    elif kind == "missing_field":
        del parts[rng.randrange(1, len(parts))]
    elif kind == "unquoted_delimiter":
        text = row["text"].replace('"', "").replace("\n", " ").strip()
        if "," not in text:
            words = text.split(" ")
            i = rng.randrange(len(words))
            words[i] += ","
            text = " ".join(words)
        parts[1] = text
    return ",".join(parts)


# ------------------------------------------------------------------ chunks


@dataclass
class _Chunk:
    strings: dict[str, pa.Array]  # the string columns, before nulls
    numbers: dict[str, np.ndarray]  # rating (int64), amount (float64), created_at (int64 seconds from TIME_START)
    nulls: dict[str, np.ndarray]  # column -> bool mask
    malformed: dict[int, str]  # row -> kind
    bad_encoding: np.ndarray  # rows whose text holds _BAD_MARKS
    tags: dict[int, list[str]]
    kinds: np.ndarray  # int8: 0 normal, 1 dup, 2 near_dup, 3 malformed
    segments: np.ndarray  # number of pool texts per row


_KIND_NAMES = ("normal", "dup", "near_dup", "malformed")


def _mask(rows: np.ndarray, n: int) -> pa.Array:
    import pyarrow as pa

    m = np.zeros(n, dtype=bool)
    m[rows] = True
    return pa.array(m)


def _make_chunk(
    pool: Pool,
    n: int,
    first_id: int,
    id_width: int,
    rng: np.random.Generator,
    seen: _SeenSets,
    rates: FaultRates,
    fmt: str,
    min_segments: int,
    max_segments: int,
    overlong_chars: int,
) -> _Chunk:
    import pyarrow as pa
    import pyarrow.compute as pc

    pyrng = random.Random(int(rng.integers(0, 2**63)))
    u_kind = rng.random(n)
    kinds = np.zeros(n, dtype=np.int8)
    kinds[u_kind < rates.dup + rates.near_dup + rates.malformed] = 3
    kinds[u_kind < rates.dup + rates.near_dup] = 2
    kinds[u_kind < rates.dup] = 1
    first = rng.integers(0, len(pool), n)
    segs, h = _choose_segments(pool, first, rng, seen, min_segments, max_segments)
    seen.add(h)
    nseg = (segs >= 0).sum(axis=1)

    # segments fill each row from the left, so the row-major valid entries are each row's texts in order
    offsets = pa.array(np.r_[0, np.cumsum(nseg)].astype(np.int32))
    parts = pa.ListArray.from_arrays(offsets, pool.arrow["text"].take(pa.array(segs[segs >= 0])))
    text = pc.binary_join(parts, " ")
    rating = pool.rating[first].copy()
    no_rating = rating == 0
    rating[no_rating] = rng.integers(1, 6, int(no_rating.sum()))
    numbers = {
        "rating": rating,
        "amount": np.round(rng.lognormal(3.5, 1.2, n), 2),
        "created_at": rng.integers(0, TIME_SPAN_S, n),
    }

    normal = kinds == 0
    share = max(1e-12, 1.0 - (rates.dup + rates.near_dup + rates.malformed))
    u_null = rng.random((n, len(NULLABLE)))
    nulls = {c: normal & (u_null[:, j] < rates.null / share) for j, c in enumerate(NULLABLE)}
    u_fault = rng.random((n, len(TEXT_FAULTS)))
    faulted = {
        f: normal & ~nulls["text"] & (u_fault[:, j] < getattr(rates, f) / share) for j, f in enumerate(TEXT_FAULTS)
    }
    u_src = rng.random(n)
    u_malformed = rng.random(n)

    tags: dict[int, list[str]] = {}
    for c in NULLABLE:
        for i in np.flatnonzero(nulls[c]):
            tags.setdefault(int(i), []).append(f"null:{c}")
    any_fault = np.zeros(n, dtype=bool)
    for f in TEXT_FAULTS:
        any_fault |= faulted[f]
    rows = np.flatnonzero(any_fault)
    new_texts = []
    for i, t in zip(rows.tolist(), text.take(pa.array(rows)).to_pylist(), strict=True):
        for f in TEXT_FAULTS:
            if faulted[f][i]:
                t, tag = _inject(t, f, pyrng, pool.lang[first[i]], overlong_chars)
                tags.setdefault(i, []).append(tag)
        new_texts.append(t)
    if len(rows):
        text = pc.replace_with_mask(text, _mask(rows, n), pa.array(new_texts, pa.string()))

    plain = normal & ~any_fault
    for c in NULLABLE:
        plain &= ~nulls[c]
    plain_pos = np.flatnonzero(plain)
    copies = np.flatnonzero((kinds == 1) | (kinds == 2))
    before = np.searchsorted(plain_pos, copies)
    kinds[copies[before == 0]] = 0  # no plain row before it in this part file: it stays an ordinary row
    keep = before > 0
    copies, before = copies[keep], before[keep]
    src = plain_pos[np.floor(u_src[copies] * before).astype(np.int64)]
    record_id = pc.binary_join_element_wise(
        "r", pc.utf8_lpad(pc.cast(pa.array(np.arange(first_id, first_id + n)), pa.string()), id_width, "0"), ""
    )
    dup_of = pa.nulls(n, pa.string())
    if len(copies):
        copied = []
        for i, t in zip(copies.tolist(), text.take(pa.array(src)).to_pylist(), strict=True):
            if kinds[i] == 1:
                tags[i] = ["dup"]
            else:
                t, op = near_dup_edit(t, pyrng)
                tags[i] = [f"near_dup:{op}"]
            copied.append(t)
        cmask = _mask(copies, n)
        text = pc.replace_with_mask(text, cmask, pa.array(copied, pa.string()))
        dup_of = pc.replace_with_mask(dup_of, cmask, record_id.take(pa.array(src)))
        first = first.copy()
        first[copies] = first[src]
        for c in numbers:
            numbers[c][copies] = numbers[c][src]

    malformed: dict[int, str] = {}
    names = MALFORMED_KINDS[fmt]
    for i in np.flatnonzero(kinds == 3).tolist():
        kind = names[int(u_malformed[i] * len(names))]
        malformed[i] = kind
        tags[i] = [f"malformed:{kind}"]
    faults = np.full(n, None, dtype=object)
    for i, t in tags.items():
        faults[i] = ",".join(t)
    take = pa.array(first)
    strings = {
        "record_id": record_id,
        "text": text,
        "label": pool.arrow["label"].take(take),
        "dataset": pool.arrow["dataset"].take(take),
        "category": pool.arrow["category"].take(take),
        "lang": pool.arrow["lang"].take(take),
        "faults": pa.array(faults, pa.string()),
        "dup_of": dup_of,
    }
    return _Chunk(
        strings=strings,
        numbers=numbers,
        nulls=nulls,
        malformed=malformed,
        bad_encoding=np.flatnonzero(faulted["bad_encoding"]),
        tags=tags,
        kinds=kinds,
        segments=nseg,
    )


def _timestamps(secs: np.ndarray) -> np.ndarray:
    return TIME_START + secs.astype("timedelta64[s]")


def _bad_column(kind: str) -> str:
    return kind.removeprefix("bad_").replace("timestamp", "created_at")


def _with_nulls(arr: pa.Array, mask: np.ndarray | None) -> pa.Array:
    import pyarrow as pa
    import pyarrow.compute as pc

    if mask is None or not mask.any():
        return arr
    return pc.if_else(pa.array(mask), pa.scalar(None, arr.type), arr)


def _write_parquet(chunk: _Chunk, path: Path, rng_values: random.Random) -> None:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    n = len(chunk.kinds)
    arrays = dict(chunk.strings)
    rows = chunk.bad_encoding
    if len(rows):
        texts = arrays["text"].take(pa.array(rows)).to_pylist()
        for m in _BAD_MARKS:
            texts = [t.replace(m, _FFFD) for t in texts]
        arrays["text"] = pc.replace_with_mask(arrays["text"], _mask(rows, n), pa.array(texts, pa.string()))
    arrays["rating"] = pc.cast(pa.array(chunk.numbers["rating"]), pa.string())
    arrays["amount"] = pc.cast(pa.array(chunk.numbers["amount"]), pa.string())
    arrays["created_at"] = pc.cast(pa.array(_timestamps(chunk.numbers["created_at"])), pa.string())
    for col in ("rating", "amount", "created_at"):
        rows = np.array(sorted(i for i, k in chunk.malformed.items() if _bad_column(k) == col), dtype=np.int64)
        if len(rows):
            values = [rng_values.choice(_BAD_VALUES[f"bad_{col}".replace("created_at", "timestamp")]) for _ in rows]
            arrays[col] = pc.replace_with_mask(arrays[col], _mask(rows, n), pa.array(values, pa.string()))
    table = pa.table({c: _with_nulls(arrays[c], chunk.nulls.get(c)) for c in COLUMNS})
    pq.write_table(table, path, compression="zstd")


def _csv_value(v: Any) -> str:
    """A value as pyarrow's CSV writer renders it: strings quoted, nulls empty, numbers bare."""
    if v is None:
        return ""
    if isinstance(v, str):
        return _q(v)
    return repr(v)


def _write_csv(chunk: _Chunk, path: Path, rng_values: random.Random) -> None:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    n = len(chunk.kinds)
    arrays = {c: _with_nulls(a, chunk.nulls.get(c)) for c, a in chunk.strings.items()}
    arrays["rating"] = pa.array(chunk.numbers["rating"], pa.int32(), mask=chunk.nulls["rating"])
    arrays["amount"] = pa.array(chunk.numbers["amount"], pa.float64(), mask=chunk.nulls["amount"])
    arrays["created_at"] = pa.array(
        _timestamps(chunk.numbers["created_at"]), pa.timestamp("s"), mask=chunk.nulls["created_at"]
    )
    table = pa.table({c: arrays[c] for c in COLUMNS})
    # rows the writer cannot produce (broken records, invalid UTF-8) are written by hand between slices
    special = sorted(set(chunk.malformed) | set(chunk.bad_encoding.tolist()))
    lines: dict[int, bytes] = {}
    if special:
        rows = table.take(pa.array(special, pa.int64())).to_pylist()
        for i, row in zip(special, rows, strict=True):
            if row["created_at"] is not None:
                row["created_at"] = row["created_at"].strftime("%Y-%m-%d %H:%M:%S")
            if i in chunk.malformed:
                kind = chunk.malformed[i]
                if kind in _BAD_VALUES:
                    row[_bad_column(kind)] = rng_values.choice(_BAD_VALUES[kind])
                line = _malformed_line(row, kind, rng_values).encode()
            else:
                line = ",".join(_csv_value(row[c]) if c != "created_at" else (row[c] or "") for c in COLUMNS).encode()
                for m, raw in zip(_BAD_MARKS, _BAD_BYTES, strict=True):
                    line = line.replace(m.encode(), raw)
            lines[i] = line + b"\n"
    header = pcsv.WriteOptions(include_header=True)
    body = pcsv.WriteOptions(include_header=False)
    with open(path, "wb") as fh:
        buf = io.BytesIO()
        pcsv.write_csv(table.slice(0, 0), buf, header)
        fh.write(buf.getvalue())
        start = 0
        for i in [*special, n]:
            if i > start:
                buf = io.BytesIO()
                pcsv.write_csv(table.slice(start, i - start), buf, body)
                fh.write(buf.getvalue())
            if i < n:
                fh.write(lines[i])
            start = i + 1


# ------------------------------------------------------------------ the run


@dataclass
class DatagenResult:
    """Where the rows went, the manifest written next to them, and how fast."""

    out: Path
    manifest: dict[str, Any]
    seconds: float

    @property
    def rows_per_s(self) -> float:
        return self.manifest["rows"] / self.seconds if self.seconds > 0 else float("inf")


def read_manifest(out: str | Path) -> dict[str, Any]:
    """The ``_manifest.json`` of a generated folder."""
    path = Path(out) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"datagen: no {MANIFEST} in {out}; generate the data with `dmine datagen`")
    return json.loads(path.read_text(encoding="utf-8"))


def generate(
    out: str | Path,
    rows: int,
    *,
    fmt: str = "parquet",
    seed: int = 0,
    datasets_dir: str | Path,
    rates: FaultRates | None = None,
    chunk_rows: int = 200_000,
    sources: Sequence[str] | None = None,
    min_segments: int = 1,
    max_segments: int = 6,
    overlong_chars: int = 10_000,
    on_chunk: Callable[[int, int], None] | None = None,
) -> DatagenResult:
    """Write ``rows`` rows made from the real datasets, with faults, to the new folder ``out``.

    Parameters
    ----------
    out : path
        Output folder; created, and must not hold files yet.
    rows : int
        Number of rows.
    fmt : {"parquet", "csv"}
        File format of the part files.
    seed : int
        Same seed (and other arguments): byte-identical files.
    datasets_dir : path
        The shared datasets folder (see :data:`DATASETS`).
    rates : FaultRates, optional
        Fault rates (default :class:`FaultRates`).
    chunk_rows : int
        Rows per part file, and per generation step held in memory.
    sources : sequence of str, optional
        Dataset folder names to draw from (default: all).
    min_segments, max_segments : int
        Fewest and most real texts joined into one base row.
    overlong_chars : int
        Length an ``overlong`` text reaches at least.
    on_chunk : callable, optional
        Called with (rows written so far, rows) after each part file.

    Returns
    -------
    DatagenResult
        The folder, its manifest and the seconds taken.
    """
    import pyarrow.compute as pc

    t0 = time.perf_counter()
    rates = rates or FaultRates()
    rates.validate()
    if fmt not in MALFORMED_KINDS:
        raise ValueError(f"datagen: format must be one of {sorted(MALFORMED_KINDS)}, got {fmt!r}")
    for name, v, lo in (
        ("rows", rows, 1),
        ("seed", seed, 0),
        ("chunk_rows", chunk_rows, 1),
        ("overlong_chars", overlong_chars, 1),
    ):
        if not isinstance(v, int) or v < lo:
            raise ValueError(f"datagen: {name} must be an integer of at least {lo}, got {v!r}")
    if not (isinstance(min_segments, int) and isinstance(max_segments, int) and 1 <= min_segments <= max_segments):
        raise ValueError(
            f"datagen: need 1 <= min_segments <= max_segments, got min_segments={min_segments!r}, "
            f"max_segments={max_segments!r}"
        )
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"datagen: output folder {out} already exists and is not empty; choose a new folder")
    pool = _cached_pool(str(Path(datasets_dir).resolve()), tuple(sources) if sources else None)
    out.mkdir(parents=True, exist_ok=True)

    id_width = max(9, len(str(rows - 1)))
    seen = _SeenSets()
    counts: Counter[str] = Counter()
    details: Counter[str] = Counter()
    row_kinds: Counter[str] = Counter()
    by_dataset: Counter[str] = Counter()
    segments: Counter[int] = Counter()
    files = []
    clean = 0
    write = _write_csv if fmt == "csv" else _write_parquet
    n_chunks = (rows + chunk_rows - 1) // chunk_rows
    for ci in range(n_chunks):
        n = min(chunk_rows, rows - ci * chunk_rows)
        rng = np.random.default_rng([seed, ci])
        chunk = _make_chunk(
            pool, n, ci * chunk_rows, id_width, rng, seen, rates, fmt, min_segments, max_segments, overlong_chars
        )
        name = f"part-{ci:05d}.{fmt}"
        write(chunk, out / name, random.Random(int(rng.integers(0, 2**63))))
        files.append({"path": name, "rows": n})
        for tag_list in chunk.tags.values():
            counts.update({t.split(":", 1)[0] for t in tag_list})
            details.update(t for t in tag_list if ":" in t)
        clean += n - len(chunk.tags)
        row_kinds.update(dict(zip(_KIND_NAMES, np.bincount(chunk.kinds, minlength=4).tolist(), strict=True)))
        for vc in pc.value_counts(chunk.strings["dataset"]).to_pylist():
            by_dataset[vc["values"]] += vc["counts"]
        k, cnt = np.unique(chunk.segments, return_counts=True)
        segments.update(dict(zip(k.tolist(), cnt.tolist(), strict=True)))
        if on_chunk:
            on_chunk(ci * chunk_rows + n, rows)
        log.info("datagen: %s (%d rows)", name, n)

    manifest: dict[str, Any] = {
        "generator": "dmine_spark.tools.datagen",
        "manifest_version": 1,
        "rows": rows,
        "seed": seed,
        "format": fmt,
        "chunk_rows": chunk_rows,
        "sources": list(pool.sizes),
        "min_segments": min_segments,
        "max_segments": max_segments,
        "overlong_chars": overlong_chars,
        "rates": asdict(rates),
        "schema_ddl": SCHEMA_DDL if fmt == "csv" else PARQUET_DDL,
        "typed_schema_ddl": SCHEMA_DDL,
        "spark_options": dict(CSV_OPTIONS) if fmt == "csv" else {},
        "files": files,
        "row_kinds": {k: row_kinds.get(k, 0) for k in _KIND_NAMES},
        "counts": {k: counts.get(k, 0) for k in ("dup", "near_dup", "malformed", "null", *TEXT_FAULTS)},
        "clean_rows": clean,
        "details": dict(sorted(details.items())),
        "datasets": dict(sorted(by_dataset.items())),
        "segments": {str(k): v for k, v in sorted(segments.items())},
        "pool_texts": pool.sizes,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return DatagenResult(out=out, manifest=manifest, seconds=time.perf_counter() - t0)
