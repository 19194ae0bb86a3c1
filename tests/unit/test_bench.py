"""The benchmark's pure parts: its texts and its peak measurement (no JVM)."""

from __future__ import annotations

import pytest

from dmine_spark.tools.bench import load_bench_texts, matmul_peak_flops
from tests.conftest import DATASETS


def test_bench_texts_interleave_three_real_datasets() -> None:
    texts = load_bench_texts(DATASETS, 300)
    assert len(texts) == 300 and all(t.strip() for t in texts)
    import csv

    with open(DATASETS / "banking77" / "train.csv", newline="", encoding="utf-8") as fh:
        first_banking = next(csv.DictReader(fh))["text"]
    assert texts[0] == first_banking
    assert texts[1].startswith("$BYND")  # Twitter financial news, first row
    assert len(set(texts)) > 290
    with pytest.raises(ValueError, match="hold only"):
        load_bench_texts(DATASETS, 10_000_000)


def test_matmul_peak_is_positive() -> None:
    assert matmul_peak_flops(1, size=256, repeats=3) > 1e8


def test_mfu_bounds_are_measured_not_assumed() -> None:
    """The figures that explain the fp32 MFU: the layer matmuls' share of peak, and where encoder time goes."""
    from dmine_spark.tools.bench import gemm_efficiency, op_time_shares

    peak = matmul_peak_flops(1, size=512, repeats=5)
    eff = gemm_efficiency(1, peak, tokens=256)
    assert 0.05 < eff < 2.0  # a ratio of two timings on this machine, not a constant
    shares = op_time_shares(load_bench_texts(DATASETS, 40))
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["matmul (linear layers)"] > 0.3 and shares["attention kernel"] > 0.0


def test_engine_rates_time_each_engine_and_precision() -> None:
    from dmine_spark.tools.bench import engine_rates

    rates = engine_rates(load_bench_texts(DATASETS, 30))
    assert set(rates) == {"torch", "openvino"} and all(r > 0 for r in rates.values())
    rates = engine_rates(load_bench_texts(DATASETS, 30), rounds=1, precisions=("fp32", "bf16"))
    assert set(rates) == {"torch", "openvino", "torch/bf16", "openvino/bf16"} and all(r > 0 for r in rates.values())


def test_embed_partitions_fill_whole_waves() -> None:
    from dmine_spark.features.embed import embed_partitions

    assert embed_partitions(6000, 2000, 2) == 4  # not 3: a third partition alone would idle a core
    assert embed_partitions(20000, 2000, 2) == 10
    assert embed_partitions(10, 2000, 2) == 2
    assert embed_partitions(10, 2000, 0) == 1
    assert embed_partitions(50_000, 2000, 16) == 32
