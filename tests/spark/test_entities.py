"""Entity matching in Spark on real financial news texts: cashtags, names and aliases, CJK names."""

from __future__ import annotations

import csv

import pytest

from dmine_spark.features.entities import dictionary_frame, match_entities
from tests.conftest import DATASETS

TWITTER = DATASETS / "twitter_financial_news_sentiment" / "sent_train.csv"


@pytest.fixture(scope="module")
def texts(spark):
    with open(TWITTER, newline="", encoding="utf-8") as fh:
        rows = [(f"t{i}", r["text"]) for i, r in enumerate(csv.DictReader(fh)) if i < 2000]
    rows += [
        ("x1", "ＪＰＭＯＲＧＡＮ and j.p. morgan both said so"),
        ("x2", "贵州茅台股价大涨"),
        ("x3", "nothing here"),
    ]
    return spark.createDataFrame(rows, "id STRING, text STRING")


def test_cashtags_names_and_aliases_are_found_once_per_text(spark, texts) -> None:
    d = dictionary_frame(
        spark,
        [
            ("JPM", "JPMorgan"),
            ("JPM", "J.P. Morgan"),
            ("JPM", "JPMorgan Chase"),
            ("600519", "贵州茅台"),
            ("CCL", "Carnival"),
        ],
    )
    got = {(r["id"], r["entity"]): r["match"] for r in match_entities(texts, d).collect()}
    assert got[("t0", "BYND")] == "$bynd" or got[("t0", "BYND")].lower() == "$bynd"
    assert ("t1", "CCL") in got and ("t1", "RCL") in got  # two cashtags and the name "Carnival"
    assert ("t0", "JPM") in got  # "JPMorgan reels in expectations on Beyond Meat"
    assert got[("x1", "JPM")] in ("jpmorgan", "j p morgan")  # full-width folded (NFKC on clean), one row
    assert got[("x2", "600519")] == "贵州茅台"
    assert not any(i == "x3" for i, _ in got)
    counts = {}
    for i, _ in got:
        counts[i] = counts.get(i, 0) + 1
    assert counts["x1"] == 1
