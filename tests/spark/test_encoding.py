"""Sources in other encodings (issue 16, item 1): real Chinese reviews and financial headlines, re-encoded."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

from dmine_spark.config import ConfigError
from dmine_spark.config.pipeline import SourceConfig
from dmine_spark.prepare.ingest import read_source

DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


@pytest.fixture(scope="module")
def reviews() -> list[tuple[str, str]]:
    """120 real takeaway reviews (zh_waimai_10k): (text, label); texts without a comma or quote, for plain CSV."""
    with open(DATASETS / "zh_waimai_10k" / "waimai_10k.csv", encoding="utf-8", newline="") as fh:
        rows = [(r["review"], r["label"]) for r in csv.DictReader(fh)]
    return [r for r in rows if not set(r[0]) & set(',"\n\r')][:120]


@pytest.fixture(scope="module")
def headlines() -> list[tuple[str, str]]:
    """60 real financial headlines (twitter_financial_news_sentiment) with a euro sign and accents added."""
    with open(DATASETS / "twitter_financial_news_sentiment" / "sent_train.csv", encoding="utf-8", newline="") as fh:
        rows = [(r["text"], r["label"]) for r in csv.DictReader(fh)]
    rows = [r for r in rows if r[0].isascii() and "\n" not in r[0]][:60]
    return [(f"{t} — café €{i}.5 mn", lab) for i, (t, lab) in enumerate(rows)]


def _csv(rows: list[tuple[str, str]]) -> str:
    return "text,label\n" + "".join(f"{t},{lab}\n" for t, lab in rows)


def _read(spark, tmp_path: Path, **source):
    src = SourceConfig.model_validate({"schema": "text STRING, label STRING", **source})
    return read_source(spark, "s", src, required=["text"], staging=str(tmp_path / "staging"))


def _texts(res) -> list[tuple[str, str]]:
    return [(r.text, r.label) for r in res.rows.orderBy("id").collect()]


@pytest.mark.parametrize("codec", ["gbk", "gb18030", "big5", "utf-16", "utf-8-sig"])
@pytest.mark.parametrize("multiline", ["false", "true"])
def test_a_declared_encoding_decodes_every_row(spark, tmp_path: Path, reviews, codec: str, multiline: str) -> None:
    rows = reviews
    if codec == "big5":  # Big5 is traditional Chinese: keep the reviews it can write
        rows = [r for r in reviews if _encodes(r[0], "big5")]
    if codec == "gb18030":  # a character outside GBK (U+20BB7), which only GB18030 writes
        rows = [(rows[0][0] + "𠮷", rows[0][1]), *rows[1:]]
    (tmp_path / "in.csv").write_bytes(_csv(rows).encode(codec))
    res = _read(
        spark,
        tmp_path,
        path=str(tmp_path / "in.csv"),
        encoding=codec,
        options={"header": "true", "multiLine": multiline},
    )
    assert sorted(_texts(res)) == sorted(rows)
    assert res.quarantine.count() == 0
    assert res.encoding == codec.upper().replace("_", "-").replace("UTF-8-SIG", "UTF-8-SIG")
    assert {r.source_file for r in res.rows.collect()} == {(tmp_path / "in.csv").as_uri().replace("file:///", "file:/")}


def _encodes(text: str, codec: str) -> bool:
    try:
        text.encode(codec)
    except UnicodeEncodeError:
        return False
    return True


def test_bytes_that_do_not_decode_are_quarantined_with_encoding_offset_and_line(spark, tmp_path: Path, reviews) -> None:
    body = (
        _csv(reviews[:3]).encode("gbk")
        + b"bad \xff bytes,1\n"
        + _csv(reviews[3:6])[len("text,label\n") :].encode("gbk")
    )
    (tmp_path / "in.csv").write_bytes(body)
    res = _read(spark, tmp_path, path=str(tmp_path / "in.csv"), encoding="GBK", options={"header": "true"})
    assert len(_texts(res)) == 6
    q = res.quarantine.collect()
    offset = len(_csv(reviews[:3]).encode("gbk")) + 4
    assert [(r.rule, r.reason) for r in q] == [
        (
            "invalid_encoding",
            f"column text holds bytes that are not valid GBK; 1 invalid byte sequence(s) in in.csv: byte {offset} (line 5)",
        )
    ]
    assert res.total.count() == 7


def test_invalid_utf8_says_how_to_declare_the_encoding(spark, tmp_path: Path, reviews) -> None:
    (tmp_path / "in.csv").write_bytes(_csv(reviews[:4]).encode("gbk"))
    res = _read(spark, tmp_path, path=str(tmp_path / "in.csv"), options={"header": "true"})
    reasons = {r.reason for r in res.quarantine.collect()}
    assert reasons == {
        "column text holds bytes that are not valid UTF-8 (declare the files' encoding with the source's encoding:, "
        "e.g. gbk, or auto)"
    }


def test_spark_s_encoding_option_is_taken_as_the_source_s_encoding(spark, tmp_path: Path, reviews) -> None:
    (tmp_path / "in.csv").write_bytes(_csv(reviews[:5]).encode("gbk"))
    res = _read(spark, tmp_path, path=str(tmp_path / "in.csv"), options={"header": "true", "encoding": "GBK"})
    assert sorted(_texts(res)) == sorted(reviews[:5])


def test_json_lines_in_gbk_and_utf16(spark, tmp_path: Path, reviews) -> None:
    lines = "".join(json.dumps({"text": t, "label": lab}, ensure_ascii=False) + "\n" for t, lab in reviews[:20])
    (tmp_path / "a.jsonl").write_bytes(lines.encode("gbk"))
    (tmp_path / "b.jsonl").write_bytes(lines.encode("utf-16"))
    for name, codec in (("a.jsonl", "gbk"), ("b.jsonl", "utf-16")):
        res = _read(spark, tmp_path, format="json", path=str(tmp_path / name), encoding=codec)
        assert sorted(_texts(res)) == sorted(reviews[:20]), codec


def test_auto_detects_each_file_and_says_what_it_chose(spark, tmp_path: Path, reviews) -> None:
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.csv").write_bytes(_csv(reviews[:60]).encode("gb18030"))
    (d / "b.csv").write_bytes(_csv(reviews[60:]).encode("utf-8"))
    big5 = [r for r in reviews if _encodes(r[0], "big5")][:40]
    (d / "c.csv.gz").write_bytes(gzip.compress(_csv(big5).encode("big5")))
    res = _read(spark, tmp_path, path=str(d), encoding="auto", options={"header": "true"})
    assert sorted(_texts(res)) == sorted(reviews + big5)
    by_file = {f.path.rsplit("/", 1)[-1]: f.encoding for f in res.files}
    assert by_file == {"a.csv": "gb18030", "b.csv": "utf-8", "c.csv.gz": "big5"}
    assert res.encoding == "auto: BIG5 (1 file), GB18030 (1 file), UTF-8 (1 file)"


def test_sentence_at_label_lines_split_on_the_last_delimiter(spark, tmp_path: Path, headlines) -> None:
    lines = [f"{t}@{lab}" for t, lab in headlines] + ["write to ir@example.com today@1"]
    (tmp_path / "fin.txt").write_bytes(("\r\n".join(lines) + "\r\n").encode("cp1252"))
    res = read_source(
        spark,
        "fin",
        SourceConfig.model_validate(
            {
                "format": "text",
                "path": str(tmp_path / "fin.txt"),
                "schema": "line STRING",
                "encoding": "cp1252",
                "derive": {
                    "text": r"regexp_extract(line, '^(.*)@[^@]*$', 1)",
                    "label": r"regexp_extract(line, '@([^@\r]*)\r?$', 1)",
                },
            }
        ),
        required=["text", "label"],
        staging=str(tmp_path / "staging"),
    )
    got = [(r.text, r.label) for r in res.rows.orderBy("id").collect()]
    assert sorted(got) == sorted([*headlines, ("write to ir@example.com today", "1")])
    assert res.quarantine.count() == 0


def test_a_text_source_needs_one_string_column(spark, tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("a\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="a text source has one STRING column"):
        _read(spark, tmp_path, format="text", path=str(tmp_path / "x.txt"))


def test_an_unknown_encoding_is_one_line_before_spark_starts(tmp_path: Path) -> None:
    from dmine_spark.config import load_config
    from tests.conftest import PIPELINE_CONF

    with pytest.raises(ConfigError) as err:
        load_config(PIPELINE_CONF, ["sources.train.encoding=gbk2"])
    message = str(err.value)
    assert "\n" not in message
    assert "sources.train" in message and "unknown encoding 'gbk2'" in message
