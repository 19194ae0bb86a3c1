"""Rows nested inside JSON documents (``records:``, issue 16 item 2), on real BANKING77 texts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from dmine_spark.config.pipeline import SourceConfig
from dmine_spark.prepare.ingest import RAW_MAX_CHARS, read_source
from tests.conftest import read_csv_rows


def _read(spark, path: Path, tmp_path: Path, **source):
    src = SourceConfig.model_validate(
        {"format": "json", "path": str(path), "schema": "text STRING, category STRING", **source}
    )
    return read_source(
        spark, "corpus", src, required=["text", "category"], label_col="category", staging=str(tmp_path / "st")
    )


@pytest.fixture(scope="module")
def corpus(banking77: Path, tmp_path_factory: pytest.TempPathFactory):
    """A 2.5 MB document (the training set twice) shaped {"train": [[text, label], ...], "test": [...]}, with three broken elements."""
    train = [[r["text"], r["category"]] for r in read_csv_rows(banking77 / "train.csv")] * 2  # 2.5 MB in all
    test = [[r["text"], r["category"]] for r in read_csv_rows(banking77 / "test.csv")]
    broken = [["only a text"], 42, {"text": "an object among arrays", "category": "card_arrival"}]
    doc = {"train": train + broken, "test": test}
    path = tmp_path_factory.mktemp("records") / "corpus.json"
    path.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    assert path.stat().st_size > 2_000_000
    return path, len(train), len(test)


def test_each_array_element_is_a_row_with_its_key_as_split(spark, corpus, tmp_path: Path) -> None:
    path, n_train, n_test = corpus
    res = _read(spark, path, tmp_path, records=["train", "test"])
    by_split = {r["split"]: r["count"] for r in res.rows.groupBy("split").count().collect()}
    assert by_split == {"train": n_train + 1, "test": n_test}  # the object element is a row too
    assert res.total.count() == n_train + 3 + n_test
    q = {r.id: (r.rule, r.reason, r.raw) for r in res.quarantine.collect()}
    assert q == {
        f"corpus:0:train:{n_train}": (
            "malformed_record",
            f"train[{n_train}]: an array of 1 values, the schema declares 2",
            '["only a text"]',
        ),
        f"corpus:0:train:{n_train + 1}": (
            "malformed_record",
            f"train[{n_train + 1}]: an element that is neither an object nor an array",
            "42",
        ),
    }
    first = res.rows.where("id = 'corpus:0:test:0'").first()
    assert (first.text, first.category) == ("How do I locate my card?", "card_arrival")
    assert res.rows.select("id").distinct().count() == res.rows.count()


def test_objects_at_a_nested_path_in_json_lines_with_a_broken_document(spark, tmp_path: Path) -> None:
    docs = [
        {
            "data": {
                "items": [
                    {"text": "lost my card", "category": "lost_or_stolen_card"},
                    {"text": "pin?", "category": "pin_blocked"},
                ]
            }
        },
        {"data": {"items": [{"text": "top up failed", "category": "top_up_failed"}]}},
        {"data": {"other": []}},
    ]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs) + '{"data": {"items": [broken\n', encoding="utf-8")
    res = _read(spark, path, tmp_path, records="data.items", options={"multiLine": "false"})
    assert sorted(r.text for r in res.rows.collect()) == ["lost my card", "pin?", "top up failed"]
    assert {r.split for r in res.rows.collect()} == {"corpus"}
    reasons = sorted(r.reason for r in res.quarantine.collect())
    assert reasons == ["data.items[0]: the document has no array at data.items", "the document does not parse as JSON"]
    assert res.total.count() == 5
    ids = [r.id for r in res.rows.collect()] + [r.id for r in res.quarantine.collect()]
    assert len(set(ids)) == 5


def test_the_quarantine_keeps_a_bounded_part_of_a_huge_record(spark, tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"train": [["x" * 200_000]]}), encoding="utf-8")
    raw = _read(spark, path, tmp_path, records="train").quarantine.first().raw
    assert len(raw) < RAW_MAX_CHARS + 40
    assert raw.endswith(f" [... {200_000 + 4 - RAW_MAX_CHARS} more characters]")


def test_records_in_a_gbk_document(spark, tmp_path: Path) -> None:
    path = tmp_path / "zh.json"
    path.write_bytes(
        json.dumps({"train": [["送餐太慢了，差评", "0"], ["很快，好吃", "1"]]}, ensure_ascii=False).encode("gbk")
    )
    res = _read(spark, path, tmp_path, records="train", encoding="gbk")
    assert sorted((r.text, r.category) for r in res.rows.collect()) == [("很快，好吃", "1"), ("送餐太慢了，差评", "0")]
    assert {r.source_file for r in res.rows.collect()} == {path.as_uri().replace("file:///", "file:/")}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"format": "csv", "records": "train"}, "records applies to json documents"),
        ({"records": ["train", "train"]}, "give one key or several different keys"),
        ({"records": ["train", "test"], "splits": {"a": 0.5, "b": 0.5}}, "drop splits"),
        ({"records": ["a.my-split", "test"]}, "must be a lowercase identifier"),
    ],
)
def test_records_mistakes_are_one_line(source: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SourceConfig.model_validate({"format": "json", "path": "x.json", "schema": "text STRING", **source})
