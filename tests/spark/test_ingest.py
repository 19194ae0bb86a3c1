"""Ingest with declared schemas: malformed and incomplete records go to quarantine, none vanish."""

from __future__ import annotations

import pytest
from pyspark.testing import assertDataFrameEqual

from dmine_spark.config import ConfigError, SourceConfig
from dmine_spark.prepare.ingest import read_source


def test_csv_quarantine_keeps_raw_line_and_reason(spark, tmp_path) -> None:
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
        'wrong_type:{"text":"bad stars","category":"card_arrival","stars":"five"}',
        'missing_required_field:{"category":"exchange_rate","stars":"3"}',
        'missing_required_field:{"text":"no label","stars":"2"}',
    }
    assert q['wrong_type:{"text":"bad stars","category":"card_arrival","stars":"five"}'] == (
        "column stars: 'five' is not a valid INT"
    )
    assert (
        "required field is null or empty: text" in q['missing_required_field:{"category":"exchange_rate","stars":"3"}']
    )
    assert dict(res.rows.dtypes)["stars"] == "int"
    assert res.total.count() == res.rows.count() + res.quarantine.count() == 5
    ids = [r.id for r in res.total.collect()]
    assert len(set(ids)) == 5 and all(i.startswith("train:") for i in ids)
    assert all(r.source_file.endswith("tickets.csv") for r in res.quarantine.collect())


def test_json_lines_source(spark, tmp_path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text('{"text": "hi", "label": "a"}\n{"text": \n{"text": "yo", "label": "b"}\n')
    res = read_source(
        spark, "s", SourceConfig(path=str(p), format="json", schema="text STRING, label STRING"), required=["text"]
    )
    assertDataFrameEqual(res.rows.select("text"), spark.createDataFrame([("hi",), ("yo",)], "text STRING"))
    assertDataFrameEqual(res.quarantine.select("rule"), spark.createDataFrame([("malformed_record",)], "rule STRING"))


def test_schema_must_declare_required_columns(spark, tmp_path) -> None:
    p = tmp_path / "x.csv"
    p.write_text("body\nhello\n")
    with pytest.raises(ConfigError, match="sources.s.schema: required column 'text' is not declared"):
        read_source(spark, "s", SourceConfig(path=str(p), schema="body STRING"), required=["text"])
    with pytest.raises(ConfigError, match="sources.s.schema: cannot parse schema"):
        read_source(spark, "s", SourceConfig(path=str(p), schema="text STRANG,,"), required=["text"])


def _rules(res) -> dict[str, str]:
    return {r.id: (r.rule, r.reason) for r in res.quarantine.collect()}


def test_invalid_encoding_unknown_label_and_counts(spark, tmp_path) -> None:
    p = tmp_path / "t.csv"
    body = (
        b"text,category\n"
        b"fine text,a\n"
        b"broken \xff\xfe bytes,a\n"
        b"unknown label here,zzz\n"
        b'"quoted, with comma\nand a new line",b\n'
    )
    p.write_bytes(body)
    src = SourceConfig(path=str(p), schema="text STRING, category STRING", options={"header": True, "multiLine": True})
    res = read_source(spark, "s", src, required=["text"], label_col="category", labels=["a", "b"])
    got = sorted((r.rule, r.reason) for r in res.quarantine.collect())
    assert got == [
        (
            "invalid_encoding",
            "column text holds bytes that are not valid UTF-8 (declare the files' encoding with the source's "
            "encoding:, e.g. gbk, or auto); 2 invalid byte sequence(s) in t.csv: byte 33 (line 3), byte 34 (line 3)",
        ),
        ("unknown_label", "label 'zzz' is not one of the 2 known labels"),
    ]
    assertDataFrameEqual(
        res.rows.select("text"),
        spark.createDataFrame([("fine text",), ("quoted, with comma\nand a new line",)], "text STRING"),
    )
    assert res.total.count() == 4


def test_multiline_json_and_parquet_types(spark, tmp_path) -> None:
    p = tmp_path / "doc.json"
    p.write_text('[{"text": "one", "n": 1}, {"text": "two", "n": "x"}, {"text": "three", "n": 3}]')
    src = SourceConfig(path=str(p), format="json", schema="text STRING, n INT", options={"multiLine": True})
    res = read_source(spark, "j", src, required=["text"])
    assertDataFrameEqual(
        res.rows.select("text", "n"), spark.createDataFrame([("one", 1), ("three", 3)], "text STRING, n INT")
    )
    assertDataFrameEqual(res.quarantine.select("rule"), spark.createDataFrame([("wrong_type",)], "rule STRING"))

    pq = tmp_path / "pq"
    spark.createDataFrame([("a", "1"), ("b", "two"), ("c", None)], "text STRING, n STRING").coalesce(1).write.parquet(
        str(pq)
    )
    res = read_source(
        spark, "p", SourceConfig(path=str(pq), format="parquet", schema="text STRING, n INT"), required=[]
    )
    assertDataFrameEqual(
        res.rows.select("text", "n"), spark.createDataFrame([("a", 1), ("c", None)], "text STRING, n INT")
    )
    assert _rules(res).popitem()[1] == ("wrong_type", "column n: 'two' is not a valid INT")
    with pytest.raises(ConfigError, match="sources.p.schema: column 'label' is not in the parquet source"):
        read_source(
            spark, "p", SourceConfig(path=str(pq), format="parquet", schema="text STRING, label STRING"), required=[]
        )


def test_catalog_table_source_with_id_col(spark) -> None:
    spark.sql("CREATE DATABASE IF NOT EXISTS ingest_t")
    spark.createDataFrame(
        [(10, "first"), (11, "second"), (10, "repeated id"), (None, "no id")], "ticket INT, body STRING"
    ).coalesce(1).write.mode("overwrite").saveAsTable("ingest_t.tickets")
    src = SourceConfig(format="table", table="ingest_t.tickets", schema="ticket BIGINT, body STRING")
    res = read_source(spark, "t", src, required=["body"], id_col="ticket")
    assertDataFrameEqual(
        res.rows.select("id", "body", "source_file"),
        spark.createDataFrame(
            [("t:10", "first", "table:ingest_t.tickets"), ("t:11", "second", "table:ingest_t.tickets")],
            "id STRING, body STRING, source_file STRING",
        ),
    )
    assertDataFrameEqual(
        res.quarantine.select("rule"),
        spark.createDataFrame([("duplicate_id",), ("missing_required_field",)], "rule STRING"),
    )
    with pytest.raises(ConfigError, match="sources.t.table: catalog table ingest_t.nope does not exist"):
        read_source(spark, "t", SourceConfig(format="table", table="ingest_t.nope", schema="body STRING"), required=[])


def test_a_declared_column_named_like_an_ingest_column_is_refused(spark, tmp_path) -> None:
    (tmp_path / "t.csv").write_text("id,text\n1,hello\n")
    src = SourceConfig(path=str(tmp_path / "t.csv"), schema="id STRING, text STRING", options={"header": "true"})
    with pytest.raises(ConfigError, match=r"sources.t.schema: column 'id' has a name dmine_spark gives every row"):
        read_source(spark, "t", src, required=["text"], id_col="id")
    ok = SourceConfig(path=str(tmp_path / "t.csv"), schema="id_key STRING, text STRING", options={"header": "true"})
    got = read_source(spark, "t", ok, required=["text"], id_col="id_key").rows.select("id")
    assertDataFrameEqual(got, spark.createDataFrame([("t:1",)], "id STRING"))


def test_source_config_says_what_is_missing() -> None:
    with pytest.raises(ValueError, match="format 'jdbc' needs exactly one of table or query"):
        SourceConfig(format="jdbc", url="jdbc:postgresql://h/db", schema="x STRING")
    with pytest.raises(ValueError, match="format 'csv' needs a path"):
        SourceConfig(schema="x STRING")
    src = SourceConfig(format="jdbc", url="jdbc:postgresql://h/db", table="t", schema="x STRING")
    assert src.jdbc_driver() == ("org.postgresql.Driver", ["org.postgresql:postgresql:42.7.14"])
