"""The financial replay: real texts, injected episodes in the manifest, and the alert evaluation; no JVM."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from dmine_spark.features.entities import CASHTAG
from dmine_spark.mine.alerts import ShareRule, VolumeRule, detect_series
from dmine_spark.tools.replay import MANIFEST, ReplayConfig, about, evaluate_alerts, replay
from tests.conftest import DATASETS

SMALL = ReplayConfig(entities=3, windows=70, episodes_per_entity=1, gap_windows=40)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("replay") / "r"
    return out, replay(out, DATASETS, SMALL, seed=3)


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "replay.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_every_replayed_text_is_a_real_validation_text_about_its_entity(small) -> None:
    import re

    out, m = small
    valid = {r["text"] for r in csv.DictReader((DATASETS / "twitter_financial_news_sentiment/sent_valid.csv").open())}
    train = {r["text"] for r in csv.DictReader((out / "train.csv").open(encoding="utf-8"))}
    names = {e["entity"] for e in m["entities"]}
    rows = _rows(out)
    assert len(rows) == m["rows"] > 0
    made = {e: {about(v, e) for v in valid} for e in names}  # each validation text about each entity
    for r in rows:
        tags = {t.upper() for t in re.findall(CASHTAG, r["text"])}
        assert len(tags) == 1 and tags <= names, r["text"]
        assert r["text"] in made[tags.pop()]
    assert not train & {r["text"] for r in rows}  # the classifier never trains on a replayed text
    assert json.loads((out / MANIFEST).read_text())["rows"] == len(rows)


def test_episodes_raise_the_true_bearish_share_where_the_manifest_says(small) -> None:
    out, m = small
    df = pd.DataFrame(_rows(out))
    df["entity"] = df["text"].str.extract(r"\$([A-Z]+)")[0]
    start = datetime.fromisoformat(m["start"]).replace(tzinfo=None)
    df["w"] = ((pd.to_datetime(df["created_at"]) - start) / timedelta(hours=m["window_hours"])).astype(int)
    for ep in m["episodes"]:
        e = df[df["entity"] == ep["entity"]]
        inside = e[(e["w"] >= ep["first_window"]) & (e["w"] <= ep["last_window"])]
        calm = e[(e["w"] < ep["first_window"])]
        assert (inside["sentiment"] == "bearish").mean() > (calm["sentiment"] == "bearish").mean() + ep["size"] / 2
    assert df["w"].between(0, m["windows"] - 1).all()


def test_the_same_seed_writes_the_same_replay(tmp_path: Path, small) -> None:
    again = replay(tmp_path / "again", DATASETS, SMALL, seed=3)
    assert again["episodes"] == small[1]["episodes"]
    assert (tmp_path / "again" / "replay.csv").read_bytes() == (small[0] / "replay.csv").read_bytes()


def test_a_shape_that_cannot_hold_its_episodes_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--windows 30: 1 episodes per entity need at least"):
        replay(tmp_path / "x", DATASETS, ReplayConfig(windows=30, episodes_per_entity=1))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        replay(tmp_path / "full", DATASETS, SMALL)


def test_about_replaces_the_one_cashtag_or_prefixes_one() -> None:
    assert about("$XYZ falls 5% after earnings", "AAPL") == "$AAPL falls 5% after earnings"
    assert about("Stocks fall at the open", "TSLA") == "$TSLA: Stocks fall at the open"


def _manifest() -> dict:
    return {
        "start": "2026-01-05T00:00:00+00:00",
        "window_hours": 24,
        "windows": 100,
        "label": "bearish",
        "entities": [{"entity": "AAA"}, {"entity": "BBB"}],
        "episodes": [
            {"entity": "AAA", "first_window": 30, "last_window": 34, "size": 0.3},
            {"entity": "BBB", "first_window": 50, "last_window": 53, "size": 0.2},
        ],
    }


def test_evaluation_counts_detections_delays_and_false_alerts() -> None:
    t0 = datetime(2026, 1, 5, tzinfo=timezone.utc)
    alerts = [
        {"entity": "AAA", "window_start": t0 + timedelta(days=31), "rule": "share_zscore:bearish", "label": "bearish"},
        {"entity": "AAA", "window_start": t0 + timedelta(days=70), "rule": "share_zscore:bearish", "label": "bearish"},
        {"entity": "BBB", "window_start": t0 + timedelta(days=53), "rule": "share_cusum:bearish", "label": "bearish"},
        {"entity": "BBB", "window_start": t0 + timedelta(days=20), "rule": "volume_spike", "label": None},
        {"entity": "ZZZ", "window_start": t0 + timedelta(days=20), "rule": "share_zscore:bearish", "label": "bearish"},
    ]
    ev = evaluate_alerts(_manifest(), alerts)
    assert ev["episodes"] == 2 and ev["detected"] == 2
    assert ev["detected_within_2"] == 1 and ev["mean_delay"] == pytest.approx((1 + 3) / 2)
    assert ev["by_size"]["0.3"]["recall_within_2"] == 1.0 and ev["by_size"]["0.2"]["recall_within_2"] == 0.0
    assert ev["false_alerts"] == 1 and ev["volume_false_alerts"] == 1  # ZZZ is not a replayed entity
    calm_weeks = (2 * (100 - 14) - 5 - 4) / 7
    assert ev["calm_entity_weeks"] == pytest.approx(calm_weeks)
    assert ev["false_per_100_entity_weeks"] == pytest.approx(100 / calm_weeks)


def test_detect_series_fills_empty_windows_and_names_the_alerting_window() -> None:
    t0 = pd.Timestamp("2026-01-05")
    rows = []
    for w in range(40):
        if w == 10:
            continue  # a day without texts still counts as a window
        n0 = 24 if w == 30 else 6
        rows.append({"entity": "AAA", "window_start": t0 + pd.Timedelta(days=w), "volume": 40, "n0": n0, "n1": 40 - n0})
    got = detect_series(pd.DataFrame(rows), [(ShareRule(label="bearish"), 0), (VolumeRule(), None)], 86400)
    assert list(got["rule"]) == ["share_zscore:bearish"]
    assert got["window_start"].iloc[0] == t0 + pd.Timedelta(days=30) and got["observed"].iloc[0] == 0.6
    assert got["volume"].iloc[0] == 40 and got["label_pos"].iloc[0] == 0
