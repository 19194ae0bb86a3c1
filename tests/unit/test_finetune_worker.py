"""The fine-tuning worker on the default model's real weights (one process, no Spark), and its checkpoints
scored by the encoder: a pooled head (dmine_head.*) and a sequence-classification head."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

TEXTS = {
    "card": ["my card has not arrived yet", "where is my new debit card", "the card I ordered is still not here"],
    "rate": ["what exchange rate do you use", "is the currency conversion rate fair", "how is the fx rate set"],
    "topup": ["my top up failed", "why did adding money to my account not work", "top-up was declined"],
}


def _parquet(path, rows: list[tuple[str, int]]) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": [t for t, _ in rows], "y": [y for _, y in rows]}), path)
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("ft_data")
    labels = sorted(TEXTS)
    rows = [(t, labels.index(lab)) for lab, ts in TEXTS.items() for t in ts]
    return labels, rows, _parquet(d / "train.parquet", rows * 4), _parquet(d / "val.parquet", rows)


def _args(labels, train, val, out, **kw):
    from dmine_spark.features.encoder import DEFAULT_MODEL, resolve_model_dir

    args = {
        "base_dir": str(resolve_model_dir(DEFAULT_MODEL)),
        "labels": labels,
        "train_path": train,
        "val_path": val,
        "out_dir": str(out),
        "max_length": 32,
        "epochs": 1,
        "batch_size": 8,
        "lr": 3e-5,
        "weight_decay": 0.01,
        "warmup_ratio": 0.1,
        "patience": 2,
        "use_gpu": False,
        "seed": 7,
        "threads": 2,
        "precision": "fp32",
    }
    return args | kw


def test_pooled_head_starts_from_the_probe_and_scores_through_the_encoder(data, tmp_path) -> None:
    from dmine_spark.features.encoder import Encoder, ModelSpec
    from dmine_spark.mine.finetune import HEAD_CONFIG, HEAD_WEIGHTS, train_worker

    labels, rows, train, val = data
    out = tmp_path / "pooled"
    summary = train_worker(_args(labels, train, val, out, head="pooled", probe_init=True, layer_lr_decay=0.8))
    assert summary["head"] == "pooled" and summary["steps"] == 5  # 36 rows in batches of 8
    probe = summary["history"][0]
    assert probe["step"] == 0 and probe["val_accuracy"] == 1.0  # the probe alone separates these intents
    assert summary["best_val_accuracy"] == max(h["val_accuracy"] for h in summary["history"])
    assert (out / "model.safetensors").is_file() and (out / HEAD_WEIGHTS).is_file()
    assert json.loads((out / HEAD_CONFIG).read_text())["labels"] == labels
    enc = Encoder(ModelSpec(model=str(out), head="classification", max_length=32, device="cpu"))
    assert enc.labels == labels
    probs = enc.encode([t for t, _ in rows])
    assert probs.shape == (len(rows), 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (probs.argmax(axis=1) == [y for _, y in rows]).all()


def test_sequence_classification_head_still_trains_and_scores(data, tmp_path) -> None:
    from dmine_spark.features.encoder import Encoder, ModelSpec
    from dmine_spark.mine.finetune import HEAD_CONFIG, train_worker

    labels, rows, train, val = data
    out = tmp_path / "seqcls"
    summary = train_worker(_args(labels, train, val, out, head="sequence_classification", head_lr_scale=10.0))
    assert summary["head"] == "sequence_classification" and summary["history"][0]["step"] == 5  # no probe
    assert not (out / HEAD_CONFIG).exists()
    enc = Encoder(ModelSpec(model=str(out), head="classification", max_length=32, device="cpu"))
    assert enc.labels == labels
    probs = enc.encode([t for t, _ in rows])
    assert probs.shape == (len(rows), 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
