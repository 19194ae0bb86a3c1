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
    from safetensors.torch import load_file

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
    refit = summary["head_refit"]
    assert refit["l2"] == 1e-3 and refit["val_accuracy"] == 1.0
    assert refit["val_accuracy_before"] == summary["best_val_accuracy"]
    # the saved head is the logistic regression on the saved encoder's own features of the training rows
    w, b = _refit_by_hand(out, [t for t, _ in rows] * 4, [y for _, y in rows] * 4, len(labels), refit["l2"])
    saved = load_file(str(out / HEAD_WEIGHTS))
    np.testing.assert_allclose(saved["weight"].numpy(), w.numpy(), atol=2e-3)
    np.testing.assert_allclose(saved["bias"].numpy(), b.numpy(), atol=2e-3)
    enc = Encoder(ModelSpec(model=str(out), head="classification", max_length=32, device="cpu"))
    assert enc.labels == labels
    probs = enc.encode([t for t, _ in rows])
    assert probs.shape == (len(rows), 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (probs.argmax(axis=1) == [y for _, y in rows]).all()


def _refit_by_hand(model_dir, texts: list[str], y: list[int], classes: int, l2: float):
    import torch
    from transformers import AutoModel, AutoTokenizer

    from dmine_spark.mine.finetune import POOLED_SCALE, fit_linear_probe

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, use_safetensors=True).eval()
    batch = tok(texts, truncation=True, max_length=32, padding=True, return_tensors="pt")
    with torch.inference_mode():
        h = model(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).float()
    x = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1) * POOLED_SCALE
    return fit_linear_probe(x, torch.tensor(y), classes, l2=l2)


def test_head_refit_off_keeps_the_trained_head(data, tmp_path) -> None:
    from safetensors.torch import load_file

    from dmine_spark.mine.finetune import HEAD_WEIGHTS, train_worker

    labels, rows, train, val = data
    out = tmp_path / "no_refit"
    summary = train_worker(_args(labels, train, val, out, head="pooled", probe_init=True, head_refit=False))
    assert summary["head_refit"] == {}
    w, _ = _refit_by_hand(out, [t for t, _ in rows] * 4, [y for _, y in rows] * 4, len(labels), 1e-3)
    assert np.abs(load_file(str(out / HEAD_WEIGHTS))["weight"].numpy() - w.numpy()).max() > 1e-2


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
