"""The benchmark's pure parts: its texts and its peak measurement (no JVM)."""

from __future__ import annotations

import pytest

from dmine_spark.bench import load_bench_texts, matmul_peak_flops
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
