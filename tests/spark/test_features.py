"""Feature tables on a real local Spark: real review datasets, exact time parts, selection, persistence."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError
from pyspark.ml import PipelineModel
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.feature import CountVectorizerModel, StringIndexerModel, UnivariateFeatureSelectorModel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import IntegerType, StringType, StructField, StructType
from pyspark.testing import assertDataFrameEqual

from dmine_spark.config import ConfigError
from dmine_spark.features.tabular import (
    CATEGORICAL_VEC,
    FEATURES,
    NUMERIC_VEC,
    TEXT_VEC,
    TIME_VEC,
    FeaturesConfig,
    char_tokens,
    feature_table,
    fit_features,
)
from tests.conftest import DATASETS

CLOTHING = DATASETS / "womens_clothing_reviews" / "womens_clothing_reviews.csv"
WAIMAI = DATASETS / "zh_waimai_10k" / "waimai_10k.csv"
CLOTHING_SCHEMA = StructType(
    [
        StructField("id", IntegerType()),  # the CSV's unnamed row index
        StructField("Clothing ID", IntegerType()),
        StructField("Age", IntegerType()),
        StructField("Title", StringType()),
        StructField("Review Text", StringType()),
        StructField("Rating", IntegerType()),
        StructField("Recommended IND", IntegerType()),
        StructField("Positive Feedback Count", IntegerType()),
        StructField("Division Name", StringType()),
        StructField("Department Name", StringType()),
        StructField("Class Name", StringType()),
    ]
)


def _read_csv(spark, path, schema) -> DataFrame:
    if not path.is_file():
        pytest.fail(f"dataset not found at {path}; set DMINE_DATASETS to the shared datasets folder")
    return spark.read.csv(str(path), schema=schema, header=True, multiLine=True, escape='"', mode="FAILFAST")


def _split(df: DataFrame) -> list[DataFrame]:
    """Seeded 80/20 split; a multi-line CSV reads as one partition, so spread it over both cores first."""
    spread = df.repartition(2, "id").cache()
    return [part.cache() for part in spread.randomSplit([0.8, 0.2], seed=42)]


def _accuracy(train: DataFrame, test: DataFrame, *, features_col: str = FEATURES, reg: float = 0.03) -> float:
    lr = LogisticRegression(featuresCol=features_col, labelCol="label", regParam=reg, maxIter=100).fit(train)
    scored = lr.transform(test)
    return scored.select(F.avg((F.col("prediction") == F.col("label")).cast("double"))).first()[0]


def _majority(df: DataFrame) -> float:
    counts = [r["count"] for r in df.groupBy("label").count().collect()]
    return max(counts) / sum(counts)


def _stage(model: PipelineModel, cls: type):
    return next(s for s in model.stages if isinstance(s, cls))


# ----------------------------------------------------------------------------- real data


def test_clothing_reviews_text_vs_mixed(spark) -> None:
    raw = _read_csv(spark, CLOTHING, CLOTHING_SCHEMA)
    counts = raw.agg(F.count("*").alias("rows"), F.count("Review Text").alias("with_text")).first()
    assert (counts["rows"], counts["with_text"]) == (23486, 22641)  # PROVENANCE.txt
    # reviews without text are dropped here, counted above; blank departments stay (keep bucket)
    df = raw.where(F.col("Review Text").isNotNull()).withColumn("label", F.col("Recommended IND").cast("double"))
    df = df.sample(fraction=0.5, seed=7)  # half the rows keeps the test near 30 s on 2 cores
    train, test = _split(df)
    baseline = _majority(test)

    cfg = FeaturesConfig(
        text={"kind": "words", "min_df": 3},
        categorical=["Division Name", "Department Name", "Class Name"],
        numeric=["Age", "Positive Feedback Count"],
    )
    model = fit_features(train, cfg, text_col="Review Text", label_col="label")
    tr = feature_table(model, train).cache()
    assert tr.columns == ["id", TEXT_VEC, CATEGORICAL_VEC, NUMERIC_VEC, FEATURES, "label"]
    labels = _stage(model, StringIndexerModel).labelsArray
    # most frequent first; the 13 blank (null) divisions and departments fall in the keep bucket
    assert labels[:2] == [
        ["General", "General Petite", "Initmates"],
        ["Tops", "Dresses", "Bottoms", "Intimate", "Jackets", "Trend"],
    ]
    row = tr.first()
    assert row[CATEGORICAL_VEC].size == sum(len(lab) + 1 for lab in labels)
    assert row[NUMERIC_VEC].size == 2
    assert row[FEATURES].size == row[TEXT_VEC].size + row[CATEGORICAL_VEC].size + 2
    te = feature_table(model, test)
    # text-only reads the text family of the same fitted table; mixed reads the assembled vector
    acc = {"text": _accuracy(tr, te, features_col=TEXT_VEC), "mixed": _accuracy(tr, te)}
    print(
        f"\nclothing Recommended IND ({counts['rows'] - counts['with_text']} rows without text dropped), "
        f"{train.count()} train / {test.count()} test rows: majority {baseline:.4f}, "
        f"text-only {acc['text']:.4f}, mixed {acc['mixed']:.4f}"
    )
    assert acc["text"] > baseline + 0.04
    assert acc["mixed"] > baseline + 0.04
    assert acc["mixed"] > acc["text"] - 0.02  # the tabular columns must not break the text signal


def test_waimai_char_ngrams(spark) -> None:
    df = _read_csv(spark, WAIMAI, "label INT, review STRING")
    df = df.withColumn("id", F.monotonically_increasing_id()).withColumn("label", F.col("label").cast("double"))
    train, test = _split(df)
    cfg = FeaturesConfig(text={"kind": "chars", "ngram": [1, 2], "min_df": 2})
    model = fit_features(train, cfg, text_col="review", label_col="label")
    vocab = set(_stage(model, CountVectorizerModel).vocabulary)
    assert {"好", "吃", "好 吃", "送 餐"} <= vocab
    assert not any(t.strip() != t or not t for t in vocab)  # no whitespace tokens
    assert max(len(t.replace(" ", "")) for t in vocab) == 2
    tr = feature_table(model, train).cache()
    acc = _accuracy(tr, feature_table(model, test))
    baseline = _majority(test)
    print(f"\nwaimai_10k char 1-2 gram TF-IDF, {tr.count()} train rows: majority {baseline:.4f}, accuracy {acc:.4f}")
    assert acc > baseline + 0.15


# ----------------------------------------------------------------------------- families


def test_char_tokens_drop_whitespace_and_keep_code_points(spark) -> None:
    df = spark.createDataFrame([("很快， 好吃😀\u3000AB",), (None,)], "t STRING")
    got = [r[0] for r in df.select(char_tokens(F.col("t"))).collect()]
    assert got == [["很", "快", "，", "好", "吃", "😀", "a", "b"], []]


def test_word_tokens_unicode_stop_words_and_null_text(spark) -> None:
    df = spark.createDataFrame(
        [(1, "The Café was déjà-vu, don't go"), (2, "the café cozy"), (3, None)], "id INT, text STRING"
    )
    cfg = FeaturesConfig(text={"kind": "words", "min_df": 1, "stop_words": "english"})
    model = fit_features(df, cfg)
    vocab = _stage(model, CountVectorizerModel).vocabulary
    assert {"café", "déjà", "vu", "go", "cozy"} <= set(vocab)
    assert "the" not in vocab and "was" not in vocab
    rows = {r["id"]: r for r in feature_table(model, df).collect()}
    assert rows[3][TEXT_VEC].numNonzeros() == 0  # null text is an empty document, not an error


def test_time_features_exact_parts_and_age(spark) -> None:
    utc = timezone.utc
    fit_rows = [
        (1, datetime(2024, 2, 29, 12, 0, tzinfo=utc), date(2024, 1, 1)),  # Thursday; Monday
        (2, datetime(2023, 3, 1, 0, 0, tzinfo=utc), date(2024, 2, 1)),  # Wednesday; Thursday
        (3, datetime(2024, 2, 25, 18, 30, tzinfo=utc), date(2023, 12, 25)),  # Sunday; Monday
    ]
    df = spark.createDataFrame(fit_rows, "id INT, ts TIMESTAMP, d DATE")
    cfg = FeaturesConfig(text={"kind": "none"}, time=["ts", "d"], reference_time="2024-03-01T00:00:00Z")
    model = fit_features(df, cfg, text_col="absent")
    new = df.unionByName(spark.createDataFrame([(4, None, None)], "id INT, ts TIMESTAMP, d DATE"))
    got = {r["id"]: r[TIME_VEC].toArray().tolist() for r in feature_table(model, new).collect()}
    # year, month, day of week (Sunday = 1), hour, age in days; then the same for the date
    assert got[1] == [2024, 2, 5, 12, 0.5, 2024, 1, 2, 0, 60]
    assert got[2] == [2023, 3, 4, 0, 366, 2024, 2, 5, 0, 29]
    assert got[3][:4] == [2024, 2, 1, 18] and got[3][4] == pytest.approx(4 + 5.5 / 24)
    assert got[3][5:] == [2023, 12, 2, 0, 67]
    # nulls take the training median of each part
    assert got[4][:4] == [2024, 2, 4, 12] and got[4][4] == pytest.approx(4 + 5.5 / 24)
    assert got[4][5:] == [2024, 2, 2, 0, 60]


def test_time_reference_defaults_to_build_time(spark) -> None:
    yesterday = datetime.now(timezone.utc) - timedelta(days=1)
    df = spark.createDataFrame([(1, yesterday)], "id INT, ts TIMESTAMP")
    model = fit_features(df, FeaturesConfig(text={"kind": "none"}, time=["ts"]))
    age = feature_table(model, df).first()[TIME_VEC][4]
    assert age == pytest.approx(1.0, abs=0.01)


def test_categorical_unseen_and_null_go_to_keep_bucket_numeric_nulls_imputed(spark) -> None:
    train = spark.createDataFrame(
        [(1, "red", 1.0), (2, "red", None), (3, "blue", 3.0), (4, "green", 5.0)], "id INT, color STRING, x DOUBLE"
    )
    cfg = FeaturesConfig(text={"kind": "none"}, categorical=["color"], numeric=["x"])
    model = fit_features(train, cfg)
    assert _stage(model, StringIndexerModel).labelsArray == [["red", "blue", "green"]]
    new = spark.createDataFrame(
        [(5, "purple", float("nan")), (6, None, None), (7, "red", 3.0)], "id INT, color STRING, x DOUBLE"
    )
    rows = {r["id"]: r for r in feature_table(model, new).collect()}
    assert [rows[i][CATEGORICAL_VEC].toArray().tolist() for i in (5, 6, 7)] == [
        [0, 0, 0, 1],
        [0, 0, 0, 1],
        [1, 0, 0, 0],
    ]
    # NaN and null take the training median (3.0), which scales to the same value as a real 3.0
    assert rows[5][NUMERIC_VEC] == rows[6][NUMERIC_VEC] == rows[7][NUMERIC_VEC]
    assert rows[5][FEATURES].size == 5


def test_variance_threshold_drops_constant_column(spark) -> None:
    df = spark.createDataFrame(
        [(i, float(i), 7.0, float(i % 3)) for i in range(12)], "id INT, a DOUBLE, c DOUBLE, b DOUBLE"
    )
    cfg = FeaturesConfig(text={"kind": "none"}, numeric=["a", "c", "b"], select={"variance_threshold": 0.0})
    table = feature_table(fit_features(df, cfg), df)
    for r in table.collect():
        assert r[NUMERIC_VEC].size == 3 and r[FEATURES].size == 2
        scaled = r[NUMERIC_VEC].toArray()
        assert r[FEATURES].toArray().tolist() == [scaled[0], scaled[2]]


def test_pca_output_size(spark) -> None:
    df = spark.createDataFrame(
        [(i, float(i), float(i * i % 7), float(i % 3), float((i * 5) % 11)) for i in range(30)],
        "id INT, a DOUBLE, b DOUBLE, c DOUBLE, d DOUBLE",
    )
    cfg = FeaturesConfig(text={"kind": "none"}, numeric=["a", "b", "c", "d"], select={"pca_k": 2})
    row = feature_table(fit_features(df, cfg), df).first()
    assert row[NUMERIC_VEC].size == 4 and row[FEATURES].size == 2


def test_chi2_keeps_the_informative_categories(spark) -> None:
    rows = [(i, ["x", "y"][i % 2], ["p", "q", "r"][i % 3], float(i % 2)) for i in range(60)]
    df = spark.createDataFrame(rows, "id INT, signal STRING, noise STRING, label DOUBLE")
    cfg = FeaturesConfig(text={"kind": "none"}, categorical=["signal", "noise"], select={"chi2_top": 2})
    model = fit_features(df, cfg, label_col="label")
    table = feature_table(model, df)
    row = table.first()
    assert row[CATEGORICAL_VEC].size == 3 + 4 and row[FEATURES].size == 2
    # slots 0 and 1 are x and y, the only categories that tell the label
    assert sorted(_stage(model, UnivariateFeatureSelectorModel).selectedFeatures) == [0, 1]
    assert table.columns[-1] == "label"


def test_pipeline_save_load_round_trip(spark, tmp_path) -> None:
    utc = timezone.utc
    df = spark.createDataFrame(
        [
            (1, "great fit, love it", "Tops", 34, datetime(2024, 1, 2, 3, tzinfo=utc)),
            (2, "runs small; returned", "Dresses", None, datetime(2024, 2, 3, 4, tzinfo=utc)),
            (3, "love the colour", None, 51, None),
            (4, "很好吃 送餐快", "Tops", 29, datetime(2023, 5, 6, 7, tzinfo=utc)),
        ],
        "id INT, text STRING, dept STRING, age INT, ts TIMESTAMP",
    )
    for i, text in enumerate(({"kind": "words", "min_df": 1, "stop_words": "english"}, {"kind": "chars", "min_df": 1})):
        cfg = FeaturesConfig(text=text, categorical=["dept"], numeric=["age"], time=["ts"], reference_time="2024-06-01")
        model = fit_features(df, cfg)
        path = str(tmp_path / f"features{i}")
        model.write().overwrite().save(path)
        expected = feature_table(model, df)
        assert expected.columns == ["id", TEXT_VEC, CATEGORICAL_VEC, NUMERIC_VEC, TIME_VEC, FEATURES]
        assertDataFrameEqual(feature_table(PipelineModel.load(path), df), expected)


# ----------------------------------------------------------------------------- config errors


def _one_line_config_error(fn, *words: str) -> None:
    with pytest.raises(ConfigError) as err:
        fn()
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, msg


def test_config_errors_name_key_and_column(spark) -> None:
    df = spark.createDataFrame(
        [(1, "a", "b", 1.0, "2024-01-01")], "id INT, text STRING, cat STRING, x DOUBLE, day STRING"
    )
    none = {"kind": "none"}
    cases = [
        (FeaturesConfig(text=none, numeric=["Agee"]), {}, ("features.numeric", "'Agee'", "not found")),
        (FeaturesConfig(text=none, numeric=["cat"]), {}, ("features.numeric", "'cat'", "string", "categorical")),
        (FeaturesConfig(text=none, categorical=["x"]), {}, ("features.categorical", "'x'", "double")),
        (FeaturesConfig(text=none, time=["day"]), {}, ("features.time", "'day'", "timestamp")),
        (FeaturesConfig(), {"text_col": "body"}, ("text_col", "'body'", "not found")),
        (FeaturesConfig(text=none, numeric=["x"]), {"id_col": "row_id"}, ("id_col", "'row_id'")),
        (FeaturesConfig(text=none, categorical=["cat"], select={"chi2_top": 1}), {}, ("chi2_top", "label")),
        (
            FeaturesConfig(text=none, categorical=["cat"], select={"chi2_top": 1}),
            {"label_col": "text"},
            ("label_col", "numeric"),
        ),
    ]
    for cfg, kwargs, words in cases:
        _one_line_config_error(lambda cfg=cfg, kwargs=kwargs: fit_features(df, cfg, **kwargs), *words)
    clash = df.withColumn("features", F.lit(1))
    _one_line_config_error(lambda: fit_features(clash, FeaturesConfig(text=none, numeric=["x"])), "'features'")
    _one_line_config_error(lambda: feature_table(None, df.drop("id")), "id_col", "'id'")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"text": {"kind": "word"}}, "kind"),
        ({"numerc": ["x"]}, "numerc"),
        ({"text": {"ngram": [2, 1]}}, "ngram"),
        ({"text": {"kind": "chars", "stop_words": "english"}}, "stop_words"),
        ({"text": {"stop_words": "klingon"}}, "stop_words"),
        ({"numeric": ["x"], "categorical": ["x"]}, "both"),
        ({"text": {"kind": "none"}}, "nothing to build"),
        ({"reference_time": "yesterday"}, "reference_time"),
        ({"numeric": ["x"], "select": {"chi2_top": 5}}, "feature_type"),
        ({"select": {"pca_k": 0}}, "pca_k"),
    ],
)
def test_config_model_rejects(data: dict, words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        FeaturesConfig.model_validate(data)


def test_config_accepts_yaml_shapes() -> None:
    cfg = FeaturesConfig.model_validate(
        {
            "text": {"kind": "chars", "ngram": [1, 3], "hashing": True, "num_features": 4096},
            "categorical": ["dept"],
            "select": {"chi2_top": 10, "feature_type": "continuous", "pca_k": 5},
            "reference_time": "2024-06-01T12:00:00+02:00",
        }
    )
    assert cfg.text.ngram == (1, 3) and cfg.select.label_type == "categorical"
    assert FeaturesConfig.model_validate(cfg.model_dump(mode="json")) == cfg
