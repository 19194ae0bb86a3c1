"""Strict CSV record delimiting (issue 16, item 7): a broken quote is set aside alone, the records after it stay."""

from __future__ import annotations

import csv
import io

import pytest

from dmine_spark.prepare.csvcheck import BadRecord, CsvDialect, split_records

RECORDS = [
    ["I still have not received my new card", "card_arrival"],
    ['My card says, "declined"; why?', "declined_card_payment"],
    ["line one\nline two of the same text", "pin_blocked"],
    ["plain", "top_up_failed"],
    ["crlf\r\ninside", "exchange_rate"],
]


def _write(records: list[list[str]], **fmt) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n", **fmt).writerows([["text", "category"], *records])
    return buf.getvalue()


def _parse(text: str, **fmt) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline=""), **fmt))[1:]


HEADER = CsvDialect.of({"header": "true", "escape": '"'})


@pytest.mark.parametrize("broken", ['"opens and never closes,card_arrival', '"closes later,x', 'a,"b'])
@pytest.mark.parametrize("where", [0, 2, 5])
def test_a_broken_record_is_set_aside_and_every_other_record_is_kept(broken: str, where: int) -> None:
    good = _write(RECORDS)
    lines = good.splitlines(keepends=True)
    # the physical line the broken record goes before: header + the records' lines up to `where`
    before = 1 + len(_write(RECORDS[:where]).splitlines()) - 1
    text = "".join(lines[:before]) + broken + "\n" + "".join(lines[before:])
    kept, bad = split_records(text, HEADER)
    assert _parse(kept) == RECORDS
    assert bad == [BadRecord(before + 1, broken, bad[0].reason)]
    assert bad[0].reason in (
        "a quoted field opened on this line is never closed",
        "a quoted field opened on this line closes inside another record",
    )


def test_a_file_without_broken_records_comes_back_byte_for_byte() -> None:
    text = _write(RECORDS)
    assert split_records(text, HEADER) == (text, [])
    crlf = text.replace("\n", "\r\n")
    assert split_records(crlf, HEADER) == (crlf, [])


def test_spark_s_default_backslash_escape_and_another_separator() -> None:
    text = 'text;category\n"he said \\"hi\\"";greeting\n"broken;x\nok;y\n'
    kept, bad = split_records(text, CsvDialect.of({"sep": ";", "header": "true"}))
    assert kept == 'text;category\n"he said \\"hi\\"";greeting\nok;y\n'
    assert [b.line for b in bad] == [3]


def test_comment_lines_are_never_quarantined() -> None:
    text = 'text,category\n# a "comment\nok,y\n'
    kept, bad = split_records(text, CsvDialect.of({"comment": "#"}))
    assert bad == [] and kept == text


def test_several_broken_records_each_quarantined_once() -> None:
    text = 'a,b\n"x,1\n"y,2\nz,3\n"w,4\n'
    kept, bad = split_records(text, CsvDialect.of({"header": "true"}))
    assert kept == "a,b\nz,3\n"
    assert [b.line for b in bad] == [2, 3, 5]


def test_a_field_of_a_megabyte_is_a_record_like_any_other() -> None:
    text = "text,category\n" + "x" * 1_000_000 + ",a\n" + '"' + "y\n" * 300_000 + '",b\n'
    kept, bad = split_records(text, HEADER)
    assert bad == [] and kept == text
