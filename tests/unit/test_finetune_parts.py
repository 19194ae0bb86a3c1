"""Fine-tuning's pure parts: length-bucketed batches, the linear-probe warm start, the training precision."""

from __future__ import annotations

import numpy as np
import pytest

from dmine_spark.mine.finetune import bucketed_batches, fit_linear_probe, train_precision


def _lengths(n: int = 1000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(3, 60, size=n)


def test_bucketed_batches_cover_every_row_once_and_pad_less_than_random_batches() -> None:
    lens = _lengths()
    batches = bucketed_batches(lens, 32, seed=1, epoch=0)
    rows = [i for b in batches for i in b]
    assert sorted(rows) == list(range(len(lens)))
    assert all(1 <= len(b) <= 32 for b in batches)
    padded = sum(len(b) * lens[b].max() for b in batches)
    order = np.random.default_rng(1).permutation(len(lens))
    random_padded = sum(len(b) * lens[b].max() for b in np.array_split(order, len(batches)))
    # sorted chunks pad to similar lengths: far fewer padded tokens than batches of random rows
    assert padded < 0.8 * random_padded


def test_bucketed_batches_change_order_each_epoch_and_repeat_for_the_same_seed() -> None:
    lens = _lengths()
    first = bucketed_batches(lens, 32, seed=1, epoch=0)
    assert first == bucketed_batches(lens, 32, seed=1, epoch=0)
    assert first != bucketed_batches(lens, 32, seed=1, epoch=1)
    assert first != bucketed_batches(lens, 32, seed=2, epoch=0)


@pytest.mark.parametrize("n", [1, 31, 33, 1000])
def test_bucketed_batches_deal_equal_step_counts_to_every_rank(n: int) -> None:
    lens = _lengths(n)
    shares = [bucketed_batches(lens, 32, seed=3, epoch=2, rank=r, world=3) for r in range(3)]
    assert len({len(s) for s in shares}) == 1  # DDP needs every process to take the same steps
    assert {i for s in shares for b in s for i in b} == set(range(n))


def test_bucketed_batches_reject_a_bad_rank() -> None:
    with pytest.raises(ValueError, match="rank 2"):
        bucketed_batches([3, 4], 2, seed=0, epoch=0, rank=2, world=2)
    with pytest.raises(ValueError, match="at least 1"):
        bucketed_batches([3, 4], 0, seed=0, epoch=0)


def test_linear_probe_separates_separable_classes() -> None:
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 16)) * 3
    y = rng.integers(0, 5, size=400)
    x = centres[y] + rng.normal(size=(400, 16))
    w, b = fit_linear_probe(torch.tensor(x, dtype=torch.float32), torch.tensor(y), 5, max_iter=100)
    assert tuple(w.shape) == (5, 16) and tuple(b.shape) == (5,)
    pred = (torch.tensor(x, dtype=torch.float32) @ w.T + b).argmax(1).numpy()
    assert (pred == y).mean() > 0.95


def test_train_precision_autocasts_bf16_only_on_cpus_with_native_bf16() -> None:
    assert train_precision("auto", use_gpu=False, flags=frozenset({"avx512_bf16"})) == "bf16"
    assert train_precision("auto", use_gpu=False, flags=frozenset({"amx_bf16", "avx2"})) == "bf16"
    assert train_precision("auto", use_gpu=False, flags=frozenset({"avx2"})) == "fp32"
    assert train_precision("auto", use_gpu=True, flags=frozenset({"amx_bf16"})) == "fp32"
    assert train_precision("bf16", use_gpu=False, flags=frozenset()) == "bf16"
    with pytest.raises(ValueError, match="finetune.precision"):
        train_precision("fp16", use_gpu=False)
