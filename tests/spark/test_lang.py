"""Language detection as an Arrow-batched pandas UDF and a pyspark.ml stage, on real data."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest
from pyspark.testing import assertDataFrameEqual

from dmine_spark.prepare.lang import LanguageDetector, detect, detect_language
from tests.conftest import DATASETS

WAIMAI = DATASETS / "zh_waimai_10k" / "waimai_10k.csv"


@pytest.fixture(scope="module")
def waimai_reviews() -> list[str]:
    if not WAIMAI.is_file():
        pytest.fail(f"{WAIMAI} not found; set DMINE_DATASETS to the shared datasets folder")
    with open(WAIMAI, newline="", encoding="utf-8") as fh:
        return [row["review"] for row in csv.DictReader(fh)]


def _shares(spark, texts: list[str], **kwargs) -> dict[str, float]:
    df = spark.createDataFrame([(t,) for t in texts], "text STRING").repartition(2)
    counts = df.select(detect_language("text", **kwargs).alias("d")).groupBy("d.lang").count().collect()
    return {r["lang"]: r["count"] / len(texts) for r in counts}


def test_banking77_is_english(spark, banking77_texts) -> None:
    shares = _shares(spark, banking77_texts)
    assert shares["en"] >= 0.99, shares


def test_waimai_reviews_are_chinese(spark, waimai_reviews) -> None:
    shares = _shares(spark, waimai_reviews)
    assert shares["zh"] >= 0.95, shares
    # the rest goes to Wu and Cantonese, which the model knows as separate codes
    assert shares["zh"] + shares.get("wuu", 0) + shares.get("yue", 0) >= 0.995, shares


def test_empty_null_and_no_letters_are_und(spark) -> None:
    df = spark.createDataFrame([(1, None), (2, ""), (3, "  "), (4, "12 345,00"), (5, "ok")], "id INT, text STRING")
    got = df.select("id", detect_language("text").alias("d")).select("id", "d.lang", "d.lang_score")
    expected = spark.createDataFrame([(i, "und", None) for i in range(1, 6)], "id INT, lang STRING, lang_score DOUBLE")
    assertDataFrameEqual(got, expected)


def test_order_is_kept_across_batches_and_partitions(spark, banking77_texts, waimai_reviews) -> None:
    rng = random.Random(4)
    rows = [(i, rng.choice(banking77_texts) if i % 3 else rng.choice(waimai_reviews)) for i in range(900)]
    df = spark.createDataFrame(rows, "id INT, text STRING").repartition(3)
    old = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "64")
    try:
        got = df.select("id", detect_language("text").alias("d")).select("id", "d.lang", "d.lang_score").collect()
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", old)
    langs, scores = detect([t for _, t in rows])
    by_id = {r["id"]: (r["lang"], r["lang_score"]) for r in got}
    assert len(by_id) == len(rows)
    assert all(by_id[i] == (langs[i], pytest.approx(scores[i])) for i in range(len(rows)))
    # and the rows really alternate between languages, so a shuffle would show
    assert sum(by_id[i][0] == ("zh" if i % 3 == 0 else "en") for i in range(len(rows))) >= 0.95 * len(rows)


def test_restricted_languages(spark, waimai_reviews) -> None:
    shares = _shares(spark, waimai_reviews[:2000], languages=["en", "zh"])
    assert set(shares) <= {"en", "zh", "und"} and shares["zh"] >= 0.99, shares
    with pytest.raises(ValueError, match=r"unknown code\(s\) \['xx'\]"):
        detect_language("text", ["en", "xx"])


def test_language_detector_stage(spark, tmp_path: Path) -> None:
    df = spark.createDataFrame(
        [("a", "My card has not arrived yet"), ("b", "送餐太慢了，饭都凉了"), ("c", None)], "id STRING, text STRING"
    )
    stage = LanguageDetector(inputCol="text", langCol="language", scoreCol="p", languages=["en", "zh"])
    stage.write().overwrite().save(str(tmp_path / "lang"))
    loaded = LanguageDetector.load(str(tmp_path / "lang"))
    assert loaded.getOrDefault("languages") == ["en", "zh"]
    out = loaded.transform(df)
    assert out.columns == ["id", "text", "language", "p"]
    rows = {r["id"]: r for r in out.collect()}
    assert rows["a"]["language"] == "en" and rows["b"]["language"] == "zh" and rows["c"]["language"] == "und"
    assert rows["a"]["p"] > 0.9 and rows["c"]["p"] is None
    # one Python UDF evaluation feeds both output columns
    plan = out._jdf.queryExecution().executedPlan().toString()
    assert plan.count("ArrowEvalPython") == 1, plan
    assert LanguageDetector(inputCol="text", scoreCol="").transform(df).columns == ["id", "text", "lang"]


def test_language_detector_checks_columns(spark) -> None:
    df = spark.createDataFrame([(1, "x", "y")], "n INT, text STRING, lang STRING")
    with pytest.raises(ValueError, match="input column 'body' not found"):
        LanguageDetector(inputCol="body", langCol="l").transform(df)
    with pytest.raises(TypeError, match="input column 'n' must be a string"):
        LanguageDetector(inputCol="n", langCol="l").transform(df)
    with pytest.raises(ValueError, match="output column 'lang' already exists"):
        LanguageDetector(inputCol="text").transform(df)
    with pytest.raises(ValueError, match=r"unknown code\(s\) \['english'\]"):
        LanguageDetector(languages=["english"])
