"""Ingest with declared schemas: malformed and incomplete records go to quarantine, none vanish."""

from __future__ import annotations

import pytest

from dmine_spark.config import ConfigError, SourceConfig
from dmine_spark.prepare.ingest import read_source


def test_csv_quarantine_keeps_raw_line_and_reason(spark, tmp_path) -> None:  # noqa: ANN001
    p = tmp_path / "tickets.csv"
    p.write_text(
        "text,category,stars\n"
        '"Where is my card?",card_arrival,5\n'
        '"Multi\nline text",card_arrival,4\n'
        '"bad stars",card_arrival,five\n'
        ",exchange_rate,3\n"
        '"no label",,2\n',
        encoding="utf-8",
    )
    src = SourceConfig(
        path=str(p),
        schema="text STRING, category STRING, stars INT",
        options={"header": True, "multiLine": True, "escape": '"'},
    )
    res = read_source(spark, "train", src, required=["text", "category"])
    good = {r.text: r.stars for r in res.rows.collect()}
    assert good == {"Where is my card?": 5, "Multi\nline text": 4}
    q = {r.rule + ":" + (r.raw or ""): r.reason for r in res.quarantine.collect()}
    assert q.keys() == {
        'malformed_record:"bad stars",card_arrival,five',
        'missing_required_field:{"category":"exchange_rate","stars":3}',
        'missing_required_field:{"text":"no label","stars":2}',
    }
    assert "required field is null or empty: text" in q['missing_required_field:{"category":"exchange_rate","stars":3}']
    assert res.total.count() == res.rows.count() + res.quarantine.count() == 5
    ids = [r.id for r in res.total.collect()]
    assert len(set(ids)) == 5 and all(i.startswith("train:") for i in ids)
    assert all(r.source_file.endswith("tickets.csv") for r in res.quarantine.collect())


def test_json_lines_source(spark, tmp_path) -> None:  # noqa: ANN001
    p = tmp_path / "t.jsonl"
    p.write_text('{"text": "hi", "label": "a"}\n{"text": \n{"text": "yo", "label": "b"}\n')
    res = read_source(
        spark, "s", SourceConfig(path=str(p), format="json", schema="text STRING, label STRING"), required=["text"]
    )
    assert sorted(r.text for r in res.rows.collect()) == ["hi", "yo"]
    assert [r.rule for r in res.quarantine.collect()] == ["malformed_record"]


def test_schema_must_declare_required_columns(spark, tmp_path) -> None:  # noqa: ANN001
    p = tmp_path / "x.csv"
    p.write_text("body\nhello\n")
    with pytest.raises(ConfigError, match="sources.s.schema: required column 'text' is not declared"):
        read_source(spark, "s", SourceConfig(path=str(p), schema="body STRING"), required=["text"])
    with pytest.raises(ConfigError, match="sources.s.schema: cannot parse schema"):
        read_source(spark, "s", SourceConfig(path=str(p), schema="text STRANG,,"), required=["text"])
