"""Delimiting CSV records strictly, so that a broken quote cannot swallow the records after it.

With ``multiLine: true`` a quoted field may span lines (RFC 4180). Spark's
CSV parser is lenient: a quote that opens and never closes runs on until the
next quote, and the records in between are merged into one field without a
trace. :func:`split_records` parses a file with Python's :mod:`csv` module in
strict mode, record by record, and when a record cannot be delimited (a
quoted field still open at the end of the file, or a closing quote followed
by text) it sets aside only the record's first physical line and starts again
on the next line, so the records after it are parsed as they were written.

Pure Python: no Spark, tested without a JVM.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

__all__ = ["CsvDialect", "BadRecord", "split_records"]

_FIELD_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class CsvDialect:
    """The CSV options of a source, as Spark reads them (``sep``, ``quote``, ``escape``, ``header``, ``comment``)."""

    sep: str = ","
    quote: str = '"'
    escape: str = "\\"
    header: bool = False
    comment: str | None = None

    @classmethod
    def of(cls, options: dict[str, str]) -> CsvDialect:
        """The dialect of Spark reader ``options`` (case-insensitive keys, Spark's defaults)."""
        o = {k.lower(): v for k, v in options.items()}
        return cls(
            sep=o.get("sep", o.get("delimiter", ",")) or ",",
            quote=o.get("quote", '"') or "\0",
            escape=o.get("escape", "\\") or "\\",
            header=o.get("header", "false").lower() == "true",
            comment=o.get("comment") or None,
        )


@dataclass(frozen=True)
class BadRecord:
    """A record that cannot be delimited: its 1-based first line, that line's text, and why."""

    line: int
    raw: str
    reason: str


def _reader(lines: list[str], d: CsvDialect):
    # a field may be as long as Spark reads (the csv module stops at 128 KiB by default)
    if csv.field_size_limit() < _FIELD_LIMIT:
        csv.field_size_limit(_FIELD_LIMIT)
    return csv.reader(
        iter(lines),
        delimiter=d.sep[0],
        quotechar=d.quote[0],
        escapechar=None if d.escape == d.quote else d.escape[0],
        doublequote=True,
        strict=True,
    )


def _why(err: csv.Error) -> str:
    text = str(err)
    if "unexpected end of data" in text:
        return "a quoted field opened on this line is never closed"
    if "expected after" in text:
        return "a quoted field opened on this line closes inside another record"
    return f"the record cannot be delimited ({text})"


def split_records(text: str, dialect: CsvDialect) -> tuple[str, list[BadRecord]]:
    """The file without the records that cannot be delimited, and those records.

    Parameters
    ----------
    text : str
        A whole CSV file.
    dialect : CsvDialect

    Returns
    -------
    (str, list of BadRecord)
        The text of every record that parses (byte for byte as written,
        header included), and each first line set aside, with its line number.
    """
    lines = text.splitlines(keepends=True)
    kept: list[str] = []
    bad: list[BadRecord] = []
    i = 0
    while i < len(lines):
        reader = _reader(lines[i:], dialect)
        start = 0  # lines of lines[i:] consumed before the record being read
        try:
            for _ in reader:
                kept.extend(lines[i + start : i + reader.line_num])
                start = reader.line_num
            break
        except csv.Error as err:
            first = i + start
            if dialect.comment and lines[first].startswith(dialect.comment):
                kept.append(lines[first])
            else:
                bad.append(BadRecord(first + 1, lines[first].rstrip("\r\n"), _why(err)))
            i = first + 1
    return "".join(kept), bad
