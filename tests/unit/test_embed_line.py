"""The embed stage's line and its runs figures: rates count only the texts embedded; no JVM."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from dmine_spark.analyze.record import embed
from dmine_spark.features.embed import EmbedReport, covered_seconds
from dmine_spark.features.encoder import ModelSpec


class _Run:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.measures: dict[str, float] = {}
        self.labels: dict[str, str] = {}

    def count(self, key: str, n: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + int(n)

    def measure(self, key: str, value: float) -> None:
        self.measures[key] = float(value)

    def label(self, key: str, value: str) -> None:
        self.labels[key] = str(value)


def _embed(**report):
    run = _Run()
    spec = ModelSpec(device="cpu", precision="fp32", max_length=128)
    stats = {"tokens": 200, "padded_tokens": 250, "encode_seconds": 0.7, "rows@cpu/fp32/torch": 10}
    rep = EmbedReport(stats={**stats, **report.pop("stats", {})}, **report)
    return embed(SimpleNamespace(run=run, out=SimpleNamespace(report=rep, spec=spec))), run


def test_a_mostly_cached_run_rates_only_the_texts_it_embedded() -> None:
    report, run = _embed(
        rows=12_000, unique_texts=11_500, embedded=10, seconds=9.0, cached_rows=11_990, encode_wall_seconds=0.4
    )
    assert report.summary == (
        "12,000 rows, 11,500 unique texts: 11,990 rows from the cache, "
        "10 texts embedded in 0.4s of encoding (25 texts/s, cpu fp32)"
    )
    assert run.measures["embed.rows_per_s"] == pytest.approx(25.0)
    assert run.measures["embed.tokens_per_s"] == pytest.approx(500.0)
    assert run.measures["embed.encode_wall_seconds"] == 0.4 and run.measures["embed.seconds"] == 9.0
    assert run.measures["embed.cache_hit_ratio"] == pytest.approx(11_990 / 12_000)
    assert (run.counts["embed.cached_rows"], run.counts["embed.cache_hits"], run.counts["embed.embedded"]) == (
        11_990,
        11_490,
        10,
    )


def test_a_run_that_embeds_nothing_prints_and_records_no_rate() -> None:
    report, run = _embed(
        rows=12_000, unique_texts=11_500, embedded=0, seconds=6.0, cached_rows=12_000, stats={"tokens": 0}
    )
    assert report.summary == "12,000 rows, 11,500 unique texts: 12,000 rows from the cache, 0 texts embedded (cpu fp32)"
    assert "/s" not in report.summary
    assert not {"embed.rows_per_s", "embed.tokens_per_s"} & set(run.measures)
    assert run.measures["embed.cache_hit_ratio"] == 1.0


def test_texts_the_encoder_cut_are_on_the_line() -> None:
    report, run = _embed(
        rows=40, unique_texts=40, embedded=40, seconds=3.0, encode_wall_seconds=2.0, stats={"truncated": 3}
    )
    assert report.summary.endswith(
        "40 texts embedded in 2.0s of encoding (20 texts/s, cpu fp32); 3 texts cut to 128 tokens"
    )
    assert run.counts["embed.truncated"] == 3
    assert "cut to" not in _embed(rows=1, unique_texts=1, embedded=1, seconds=1.0, encode_wall_seconds=0.5)[0].summary


def test_overlapping_encoder_calls_count_once() -> None:
    assert covered_seconds([]) == 0.0
    assert covered_seconds([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0)]) == 4.0  # two tasks at once, then one later
    assert covered_seconds([(4.0, 5.0), (0.0, 10.0), (2.0, 3.0)]) == 10.0  # a long call covers the short ones
