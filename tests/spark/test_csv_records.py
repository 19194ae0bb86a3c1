"""A CSV record whose quote never closes, read with multiLine (issue 16, item 7), on real BANKING77 rows."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from dmine_spark.config.pipeline import SourceConfig
from dmine_spark.prepare.ingest import read_source
from tests.conftest import read_csv_rows

OPTIONS = {"header": "true", "multiLine": "true", "escape": '"'}


@pytest.fixture(scope="module")
def records(banking77: Path) -> list[tuple[str, str]]:
    rows = [(r["text"], r["category"]) for r in read_csv_rows(banking77 / "test.csv")[:40]]
    rows[3] = (rows[3][0] + '\nwith a second line and a "quote"', rows[3][1])  # a legitimate multi-line field
    return rows


def _file(tmp_path: Path, records: list[tuple[str, str]], broken: dict[int, str]) -> Path:
    """The records as RFC 4180 CSV, with a broken line inserted before record i for each i in ``broken``."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["text", "category"])
    for i, rec in enumerate(records):
        if i in broken:
            out.write(broken[i] + "\n")
        w.writerow(rec)
    path = tmp_path / "tickets.csv"
    path.write_text(out.getvalue(), encoding="utf-8")
    return path


def _read(spark, path: Path, tmp_path: Path, **extra):
    src = SourceConfig.model_validate(
        {"path": str(path), "schema": "text STRING, category STRING", "options": OPTIONS, **extra}
    )
    return read_source(spark, "s", src, required=["text", "category"], staging=str(tmp_path / "staging"))


def test_rows_in_are_the_file_s_records_and_the_broken_ones_are_quarantined_by_line(
    spark, tmp_path: Path, records
) -> None:
    broken = {5: '"Where is my refund? it opens a quote,refund_not_showing_up', 30: '"another,one'}
    path = _file(tmp_path, records, broken)
    res = _read(spark, path, tmp_path)
    got = [(r.text, r.category) for r in res.rows.collect()]
    assert sorted(got) == sorted(records)  # every record of the file, the multi-line one whole
    lines = path.read_text(encoding="utf-8").splitlines()
    at = {raw: lines.index(raw) + 1 for raw in broken.values()}
    q = {r.id: (r.rule, r.raw, r.reason) for r in res.quarantine.collect()}
    assert {k: v[:2] for k, v in q.items()} == {
        f"s:tickets.csv:{n}": ("malformed_record", raw) for raw, n in at.items()
    }
    for n in at.values():
        assert q[f"s:tickets.csv:{n}"][2].startswith(f"line {n} of tickets.csv: a quoted field opened on this line")
    assert res.total.count() == len(records) + len(broken)
    assert {r.source_file for r in res.rows.collect()} == {path.as_uri().replace("file:///", "file:/")}


def test_a_broken_quote_on_the_last_line(spark, tmp_path: Path, records) -> None:
    path = _file(tmp_path, records, {})
    path.write_text(path.read_text(encoding="utf-8") + '"never closed,card_arrival\n', encoding="utf-8")
    res = _read(spark, path, tmp_path)
    assert sorted((r.text, r.category) for r in res.rows.collect()) == sorted(records)
    [q] = res.quarantine.collect()
    assert q.reason.startswith(f"line {len(path.read_text().splitlines())} of tickets.csv: a quoted field opened")


def test_without_the_strict_check_spark_merges_the_records_after_a_broken_quote(spark, tmp_path: Path, records) -> None:
    """What strict_csv: false gives, and why it is not the default: the row count still balances."""
    path = _file(tmp_path, records, {5: '"opens a quote,card_arrival'})
    res = _read(spark, path, tmp_path, strict_csv=False)
    assert res.rows.count() + res.quarantine.count() < len(records) + 1
