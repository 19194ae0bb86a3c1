"""Open-set classification on real BANKING77 questions: unseen intents are answered ``unknown``, in local Spark."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest
from pyspark.ml import PipelineModel
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from dmine_spark.config import ClassifyConfig, ConfigError, load_config
from dmine_spark.mine.classify import fit_named_classifier
from dmine_spark.mine.metrics import confusion
from dmine_spark.mine.nodes import fit_open_set
from dmine_spark.mine.openset import OpenSetHead, open_set_scores

KNOWN = [
    "card_arrival",
    "exchange_rate",
    "lost_or_stolen_card",
    "top_up_failed",
    "pin_blocked",
    "cash_withdrawal_charge",
]
OPEN = ["apple_pay_or_google_pay", "terminate_account"]


@pytest.fixture(scope="module")
def rows(spark, banking77: Path, encoder):
    """60 training rows of each known intent; 20 test rows of each known and each open intent; real embeddings."""
    data = []
    for split, intents, per in (("train", KNOWN, 60), ("test", KNOWN + OPEN, 20)):
        with open(banking77 / f"{split}.csv", newline="", encoding="utf-8") as fh:
            got = [r for r in csv.DictReader(fh) if r["category"] in intents]
        keep: Counter = Counter()
        for r in got:
            if keep[r["category"]] < per:
                keep[r["category"]] += 1
                data.append((split, r["text"], r["category"]))
    vecs = encoder.encode([t for _, t, _ in data])
    df = spark.createDataFrame(
        [(str(i), s, t, lab, v.tolist()) for i, ((s, t, lab), v) in enumerate(zip(data, vecs, strict=True))],
        "id STRING, split STRING, text STRING, label STRING, embedding ARRAY<FLOAT>",
    )
    return df.cache()


@pytest.fixture(scope="module")
def head(rows):
    return fit_named_classifier(
        rows.where("split = 'train'"), "sk_logreg", params={"C": 30.0}, features_col="embedding"
    )


def _section(method: str, **extra) -> ClassifyConfig:
    return ClassifyConfig.model_validate(
        {"model": "sk_logreg", "params": {"C": 30.0}, "open_set": {"method": method, **extra}}
    )


def _scores(pred) -> dict[str, float]:
    got = pred.groupBy("label", "prediction").count().collect()
    return open_set_scores(confusion((r[0], r[1], int(r[2])) for r in got).as_rows(), KNOWN, "unknown")


@pytest.mark.parametrize("method", ["knn", "msp"])
def test_unseen_intents_are_answered_unknown_and_known_ones_kept(rows, head, method: str) -> None:
    train, test = rows.where("split = 'train'"), rows.where("split = 'test'")
    open_head = fit_open_set(train, head, _section(method), features_col="embedding")
    assert open_head.info["fitted"] and 0 < open_head.getOrDefault("threshold") < 1
    pred = open_head.transform(head.transform(test)).cache()
    s = _scores(pred)
    closed = _scores(head.transform(test))
    assert closed["open_recall"] == 0.0  # the closed head gives every question a known intent
    assert s["open_recall"] > (0.6 if method == "knn" else 0.3)
    assert s["accuracy"] > closed["accuracy"] + 0.1
    assert s["accuracy_known"] > 0.8
    assert pred.where("open_score IS NULL OR prediction IS NULL").isEmpty()
    below = pred.where(F.col("open_score") < open_head.getOrDefault("threshold"))
    assert below.where("prediction != 'unknown'").isEmpty()


def test_the_knn_threshold_comes_from_the_training_split_alone(rows, head) -> None:
    train = rows.where("split = 'train'")
    a = fit_open_set(train, head, _section("knn"), features_col="embedding")
    b = fit_open_set(train, head, _section("knn"), features_col="embedding")
    assert a.getOrDefault("threshold") == b.getOrDefault("threshold")
    assert a.info["reference_rows"] == 360 and a.info["val_known_recall"] > 0.8
    fixed = fit_open_set(train, head, _section("knn", threshold=0.5), features_col="embedding")
    assert fixed.getOrDefault("threshold") == 0.5 and not fixed.info["fitted"]


def test_a_model_with_its_open_set_stage_saves_and_scores_the_same_after_loading(rows, head, tmp_path: Path) -> None:
    open_head = fit_open_set(rows.where("split = 'train'"), head, _section("knn"), features_col="embedding")
    model = PipelineModel(stages=[head, open_head])
    model.write().save(str(tmp_path / "m"))
    loaded = PipelineModel.load(str(tmp_path / "m"))
    assert isinstance(loaded.stages[-1], OpenSetHead)
    assert loaded.stages[-1].info["threshold"] == open_head.getOrDefault("threshold")
    test = rows.where("split = 'test'")
    cols = ["id", "prediction", "open_score"]
    assertDataFrameEqual(loaded.transform(test).select(*cols), model.transform(test).select(*cols))


def test_open_set_mistakes_are_one_line_config_errors(rows, head) -> None:
    train = rows.where("split = 'train'")
    with pytest.raises(ConfigError, match="unknown_label: 'pin_blocked' is a label of the training split"):
        fit_open_set(train, head, _section("knn", unknown_label="pin_blocked"), features_col="embedding")
    table = ClassifyConfig.model_validate({"features": "table", "open_set": {"method": "knn"}})
    with pytest.raises(ConfigError, match="knn compares text embeddings"):
        fit_open_set(train, head, table, features_col="embedding")
    with pytest.raises(ValueError, match="open_set.method"):
        load_config(
            Path(__file__).parents[2] / "conf/base/pipelines/banking77.yaml", ["classify.open_set.method=oracle"]
        )
