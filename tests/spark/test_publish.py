"""Publishing alerts in Spark: the row is written once by id, and a failing webhook loses nothing."""

from __future__ import annotations

from datetime import datetime

from dmine_spark.analyze.alerts import publish
from dmine_spark.config import Layer, load_config
from dmine_spark.mine.trends import detect, rule_specs, with_examples
from tests.conftest import REPO

FINANCE = REPO / "conf" / "base" / "pipelines" / "finance_news.yaml"


def _alerts(spark, cfg):
    """One entity's 20 calm days at a 10% bearish share, then a day at 60%: the share rules fire on day 20."""
    rows = []
    for day in range(21):
        bearish = 24 if day == 20 else 4
        for i in range(40):
            label = "bearish" if i < bearish else "neutral"
            rows.append((f"d{day}r{i}", f"$ACME {label} news {day} {i}", label, 0.9, datetime(2026, 3, 1 + day, 12)))
    df = spark.createDataFrame(
        rows, "id STRING, text STRING, prediction STRING, probability DOUBLE, event_time TIMESTAMP"
    )
    ents = df.selectExpr("id", "'ACME' AS entity")
    from dmine_spark.mine.trends import wide_series

    labels = ["bearish", "bullish", "neutral"]
    found = detect(wide_series(df, ents, "1 day", labels), rule_specs(cfg.trends), labels, "1 day")
    return with_examples(found, df, ents, "1 day", 2)


def test_a_failing_webhook_keeps_the_alert_row_and_a_second_offer_adds_nothing(spark, tmp_path) -> None:
    cfg = load_config(
        FINANCE,
        [
            "trends.enabled=true",
            "trends.label=bearish",
            "trends.webhook={url: 'http://127.0.0.1:9/hook', retries: 1, backoff_seconds: 0}",
            "database=dmine_publish_it",
            f"work_dir={tmp_path}",
        ],
        check_paths=False,
    )
    spark.sql("CREATE DATABASE IF NOT EXISTS dmine_publish_it")
    alerts = _alerts(spark, cfg)
    lines: list[str] = []
    first = publish(cfg, alerts, run_id="r1", stage="trends", echo=lines.append)
    assert first.new == 2 and first.failed == 2 and first.delivered == 0  # z-score and CUSUM, port 9 refuses
    table = spark.table(cfg.table(Layer.ALERTS))
    got = table.collect()
    assert {r["rule"] for r in got} == {"share_zscore:bearish", "share_cusum:bearish"}
    assert all(r["window_start"] == datetime(2026, 3, 21) and r["run_id"] == "r1" for r in got)
    assert all(len(r["examples"]) == 2 and all("bearish" in t for t in r["examples"]) for r in got)
    assert len(lines) == 2 and lines[0].startswith("alert ")
    again = publish(cfg, alerts, run_id="r2", stage="trends", echo=lines.append)
    assert again.new == 0 and again.failed == 0 and table.count() == 2 and len(lines) == 2
