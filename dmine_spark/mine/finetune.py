"""BERT fine-tuning for classification, run by Spark's ``TorchDistributor``.

:func:`finetune` trains the default model (or any local Hugging Face directory)
with a classification head:

* ``head="pooled"`` (default): the model's mean-pooled, L2-normalised embedding
  and a cosine classifier, its weights first fitted on the frozen embeddings
  (:func:`fit_linear_probe`, LP-FT); ``head="sequence_classification"``:
  ``AutoModelForSequenceClassification`` with a random head;
* the training rows are written once as Parquet and tokenised once per process;
  each process takes its share of length-bucketed batches (:func:`bucketed_batches`);
* ``TorchDistributor(local_mode=True)`` starts ``num_processes`` processes
  (gloo on CPUs, NCCL on GPUs) and wraps the model in DDP; bf16 autocast on CPUs
  with native bf16 (:func:`train_precision`); linear warm-up and decay, optionally
  layer-wise decay (:func:`layer_lr_scales`);
* the validation split is scored after the probe, after each epoch (and every
  ``eval_every`` steps if set); training stops when fine-tuned validation
  accuracy has not improved for ``patience`` evaluations or after ``max_minutes``,
  and the best checkpoint is kept as safetensors with its tokenizer and labels;
* with ``head_refit`` (default for the pooled head) the head is finally re-fitted
  by the same L-BFGS logistic regression on the best checkpoint's own embeddings
  of the training rows, the classifier re-training step of "decoupled"
  representation and classifier learning (Kang et al. 2020, "Decoupling
  Representation and Classifier for Long-Tailed Recognition"). The summary
  records the validation accuracy before and after it.

The saved directory is a Hugging Face model directory (plus ``dmine_head.*`` for
a pooled head), so it scores through the same pandas UDF as the embedding model
(``ModelSpec(model=dir, head="classification")``), as the
:class:`FineTunedClassifier` stage of a saved model version.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from pyspark import keyword_only
from pyspark.ml import Model
from pyspark.ml.param.shared import HasInputCol, HasPredictionCol, HasProbabilityCol, Param, Params, TypeConverters
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, DoubleType, StringType

from dmine_spark.io.files import copy_dir, local_dir
from dmine_spark.io.persist import Persisted
from dmine_spark.io.schema import ColumnSpec, SchemaChecked

__all__ = [
    "HEADS",
    "train_worker",
    "finetune",
    "argmax_labels",
    "bucketed_batches",
    "fit_linear_probe",
    "train_precision",
    "layer_lr_scales",
    "FineTunedClassifier",
]


HEADS = ("pooled", "sequence_classification")
"""The classification heads :func:`finetune` trains (see ``FinetuneConfig.head``)."""

HEAD_CONFIG = "dmine_head.json"
"""A pooled head's settings (pooling, scale, labels), beside the encoder's ``config.json``."""

HEAD_WEIGHTS = "dmine_head.safetensors"
"""A pooled head's linear layer: ``weight`` ``(classes, hidden)`` and ``bias`` ``(classes,)``."""

POOLED_SCALE = 20.0
"""Logits of the pooled head are ``scale * normalize(mean(h)) @ W.T + b``: a cosine classifier.

The fixed scale (a softmax temperature of 0.05) is the normalised-softmax form of
Wang et al. (2018), "NormFace" / "CosFace"; with unit vectors the logits need it
to be sharp enough for 77 classes.
"""


def argmax_labels(probs: Any, labels: list[str]) -> list[str]:
    """The label of the highest probability in each row (``probs`` is ``(n, classes)``)."""
    import numpy as np

    p = np.asarray(probs)
    if p.ndim != 2 or p.shape[1] != len(labels):
        raise ValueError(f"expected (rows, {len(labels)}) class scores, got shape {p.shape}")
    return [labels[i] for i in p.argmax(axis=1)]


def bucketed_batches(
    lengths: Any,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    rank: int = 0,
    world: int = 1,
    chunk_batches: int = 50,
) -> list[list[int]]:
    """One epoch of length-bucketed batches: this rank's share, as lists of row indices.

    The rows are shuffled, each run of ``chunk_batches * batch_size`` of them is
    sorted by length and cut into batches, and the batches are shuffled, so a
    batch pads to similar lengths while every epoch still sees a new order
    (the "bucket iterator" of torchtext, and the ``group_by_length`` sampler of
    Hugging Face's Trainer). With ``world`` processes the batch list is padded
    with its first batches to a multiple of ``world`` and dealt round-robin, so
    every process takes the same number of steps (DDP needs that).

    Parameters
    ----------
    lengths : sequence of int, shape (rows,)
        Tokens of each row.
    batch_size : int
        Rows per batch (the last batch of a chunk may be smaller).
    seed, epoch : int
        The order is a function of both: the same on every rank, new each epoch.
    rank, world : int
        This process and how many there are.
    chunk_batches : int
        Batches per sorted chunk: larger pads less, smaller shuffles more.

    Returns
    -------
    list of list of int
        ``ceil(batches / world)`` batches for this rank; every row is in some rank's share.

    Raises
    ------
    ValueError
        ``batch_size``, ``world`` or ``chunk_batches`` below 1, or ``rank`` outside ``[0, world)``.
    """
    import numpy as np

    if batch_size < 1 or world < 1 or chunk_batches < 1:
        raise ValueError("batch_size, world and chunk_batches must be at least 1")
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside [0, {world})")
    lens = np.asarray(lengths, dtype=np.int64)
    rng = np.random.default_rng([int(seed), int(epoch)])
    order = rng.permutation(len(lens))
    span = batch_size * chunk_batches
    batches: list[list[int]] = []
    for s in range(0, len(order), span):
        part = order[s : s + span]
        part = part[np.argsort(lens[part], kind="stable")]
        batches.extend(part[i : i + batch_size].tolist() for i in range(0, len(part), batch_size))
    batches = [batches[i] for i in rng.permutation(len(batches))]
    short = -len(batches) % world
    batches += [batches[i % len(batches)] for i in range(short)] if batches else []
    return batches[rank::world]


def fit_linear_probe(x: Any, y: Any, classes: int, *, l2: float = 1e-4, max_iter: int = 300) -> tuple[Any, Any]:
    """Multinomial logistic regression on frozen features by L-BFGS: the head's warm start.

    Starting fine-tuning from a fitted linear head instead of a random one
    ("LP-FT", Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features
    and Underperform Out-of-Distribution") keeps the first steps from tearing
    the pretrained features apart while a random head settles.

    Parameters
    ----------
    x : torch.Tensor, shape (rows, hidden), float32
    y : torch.Tensor, shape (rows,), int64 class ids in ``[0, classes)``
    classes : int
    l2 : float
        Weight on ``sum(W ** 2)`` added to the mean cross-entropy.
    max_iter : int
        L-BFGS iterations (strong-Wolfe line search).

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``weight`` ``(classes, hidden)`` and ``bias`` ``(classes,)``.
    """
    import torch

    w = torch.zeros(classes, x.shape[1], requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w.T + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def layer_lr_scales(names: list[str], layers: int, *, decay: float = 1.0, head_scale: float = 1.0) -> dict[str, float]:
    """Each parameter's learning-rate multiplier: layer-wise decay down the encoder, ``head_scale`` on the head.

    Layer-wise learning-rate decay (Howard & Ruder 2018, "ULMFiT"; Sun et al.
    2019, "How to Fine-Tune BERT for Text Classification"): transformer layer
    ``i`` of ``layers`` (0 at the bottom) learns at ``decay ** (layers - 1 - i)``
    times the peak rate, the embeddings at ``decay ** layers``; the pooler
    learns at the peak rate and the classifier (``classifier.*``) at ``head_scale``.

    Parameters
    ----------
    names : list of str
        ``named_parameters()`` names; a layer is found by its ``.layer.<i>.`` part.
    layers : int
        Transformer layers in the encoder.
    decay : float
        In ``(0, 1]``; 1 turns the decay off.

    Raises
    ------
    ValueError
        ``decay`` outside ``(0, 1]``.
    """
    import re

    if not 0.0 < decay <= 1.0:
        raise ValueError(f"finetune.layer_lr_decay must be in (0, 1], got {decay}")
    out: dict[str, float] = {}
    for n in names:
        m = re.search(r"\.layer\.(\d+)\.", n)
        if n.startswith("classifier."):
            out[n] = head_scale
        elif m:
            out[n] = decay ** (layers - 1 - int(m.group(1)))
        elif ".embeddings." in f".{n}":
            out[n] = decay**layers
        else:
            out[n] = 1.0
    return out


def _read(path: str) -> tuple[list[str], list[int]]:
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=["text", "y"])
    return [str(x) if x is not None else "" for x in t.column("text").to_pylist()], t.column("y").to_pylist()


def _pooled_model(encoder: Any, classes: int, scale: float) -> Any:
    """``encoder`` (a Hugging Face ``AutoModel``) with mean pooling, L2 normalisation and a linear head."""
    import torch

    class PooledClassifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.classifier = torch.nn.Linear(int(encoder.config.hidden_size), classes)
            self.scale = scale

        def features(self, input_ids: Any, attention_mask: Any) -> Any:
            h = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            v = (h * m).sum(1) / m.sum(1).clamp(min=1)
            return torch.nn.functional.normalize(v.float(), p=2, dim=-1) * self.scale

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            return self.classifier(self.features(input_ids, attention_mask))

    return PooledClassifier()


def train_worker(args: dict[str, Any]) -> dict[str, Any]:
    """One training process (what ``TorchDistributor`` runs); rank 0 returns the summary."""
    import numpy as np
    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file
    from transformers import (
        AutoModel,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        get_linear_schedule_with_warmup,
    )
    from transformers.utils import logging as hf_logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    hf_logging.set_verbosity_error()  # the new classification head is expected to be untrained
    hf_logging.disable_progress_bar()
    t0 = time.perf_counter()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_gpu = bool(args["use_gpu"]) and torch.cuda.is_available()
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_gpu else "gloo")
    device = torch.device(f"cuda:{local_rank}" if use_gpu else "cpu")
    if not use_gpu:
        torch.set_num_threads(max(1, int(args["threads"])))
    torch.manual_seed(int(args["seed"]))
    labels: list[str] = args["labels"]
    head_kind = str(args.get("head", "pooled"))
    bf16 = args.get("precision") == "bf16"
    id2label = dict(enumerate(labels))
    label2id = {lab: i for i, lab in enumerate(labels)}
    tok = AutoTokenizer.from_pretrained(args["base_dir"], local_files_only=True, trust_remote_code=False)
    load = {"local_files_only": True, "trust_remote_code": False, "use_safetensors": True}
    if head_kind == "pooled":
        encoder = AutoModel.from_pretrained(args["base_dir"], **load)
        encoder.config.id2label, encoder.config.label2id = id2label, label2id
        if getattr(encoder, "pooler", None) is not None:
            # the [CLS] pooler is not used by mean pooling: frozen, so DDP does not wait for its gradients
            encoder.pooler.requires_grad_(False)
        model = _pooled_model(encoder, len(labels), POOLED_SCALE).to(device)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            args["base_dir"], num_labels=len(labels), id2label=id2label, label2id=label2id, **load
        ).to(device)
    max_len = int(args["max_length"])
    tr_text, tr_y = _read(args["train_path"])
    va_text, va_y = _read(args["val_path"])

    def ids_of(texts: list[str]) -> list[list[int]]:
        return tok(texts, truncation=True, max_length=max_len, return_attention_mask=False)["input_ids"]

    tr_ids, va_ids = ids_of(tr_text), ids_of(va_text)
    pad = tok.pad_token_id or 0
    smoothing = float(args.get("label_smoothing") or 0.0)

    def tensors(ids: list[list[int]], idx: list[int]) -> tuple[Any, Any]:
        lens = torch.tensor([len(ids[i]) for i in idx])
        x = torch.full((len(idx), int(lens.max())), pad, dtype=torch.long)
        for row, i in enumerate(idx):
            x[row, : len(ids[i])] = torch.tensor(ids[i])
        mask = (torch.arange(x.shape[1])[None, :] < lens[:, None]).long()
        return x.to(device), mask.to(device)

    def logits_of(net: Any, x: Any, mask: Any) -> Any:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            if head_kind == "pooled":
                return net(x, mask).float()
            return net(input_ids=x, attention_mask=mask).logits.float()

    def in_length_order(ids: list[list[int]], share: list[int], size: int) -> list[list[int]]:
        share = sorted(share, key=lambda i: len(ids[i]))
        return [share[i : i + size] for i in range(0, len(share), size)]

    def evaluate(alone: bool = False) -> tuple[float, float]:
        """Accuracy and mean loss on this rank's share of the validation rows, summed over ranks
        (``alone``: all validation rows on this rank, no collective)."""
        model.eval()
        correct, loss_sum = 0.0, 0.0
        mine = list(range(len(va_ids))) if alone else list(range(rank, len(va_ids), world))
        with torch.inference_mode():
            for idx in in_length_order(va_ids, mine, 128):
                x, mask = tensors(va_ids, idx)
                y = torch.tensor([va_y[j] for j in idx], device=device)
                out = logits_of(model, x, mask)
                correct += float((out.argmax(dim=-1) == y).sum())
                loss_sum += float(torch.nn.functional.cross_entropy(out, y, reduction="sum"))
        t = torch.tensor([correct, loss_sum, float(len(mine))], dtype=torch.float64, device=device)
        if world > 1 and not alone:
            dist.all_reduce(t)
        model.train()
        n = max(t[2].item(), 1.0)
        return t[0].item() / n, t[1].item() / n

    best_dir = Path(args["out_dir"])

    best_state: dict[str, Any] = {}

    def save_head() -> None:
        state = {k: v.detach().float().cpu().contiguous() for k, v in model.classifier.state_dict().items()}
        save_file(state, str(best_dir / HEAD_WEIGHTS))
        head = {"pooling": "mean", "normalize": True, "scale": POOLED_SCALE, "labels": labels}
        (best_dir / HEAD_CONFIG).write_text(json.dumps(head, indent=2))

    def save_best() -> None:
        best_dir.mkdir(parents=True, exist_ok=True)
        if head_kind == "pooled" and args.get("head_refit", True):
            best_state.clear()
            best_state.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        if head_kind == "pooled":
            model.encoder.save_pretrained(best_dir, safe_serialization=True)
            save_head()
        else:
            model.save_pretrained(best_dir, safe_serialization=True)
        tok.save_pretrained(best_dir)

    history: list[dict[str, float]] = []
    best, tuned_best, bad, step, stop, reason = -1.0, -1.0, 0, 0, False, "epochs"

    def validate(epoch: int) -> None:
        # the best checkpoint of all validations is kept (the probe's included); patience counts only
        # fine-tuned validations, since the first steps after a probe usually score below it for a while
        nonlocal best, tuned_best, bad, stop, reason
        acc, vloss = evaluate()
        history.append(
            {
                "step": step,
                "epoch": epoch,
                "val_accuracy": acc,
                "val_loss": vloss,
                "minutes": (time.perf_counter() - t0) / 60,
            }
        )
        if acc > best:
            best = acc
            if rank == 0:
                save_best()
        if step == 0:
            return
        if acc > tuned_best:
            tuned_best, bad = acc, 0
        else:
            bad += 1
            if bad >= int(args["patience"]):
                stop, reason = True, "patience"

    def train_features(mine: list[int]) -> Any:
        """The head's input (scaled, normalised mean pooling) for training rows ``mine``, shape (len(mine), hidden)."""
        model.eval()
        feats = np.zeros((len(mine), model.classifier.in_features), dtype=np.float32)
        pos = {j: k for k, j in enumerate(mine)}
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            for idx in in_length_order(tr_ids, mine, 128):
                x, mask = tensors(tr_ids, idx)
                feats[[pos[j] for j in idx]] = model.features(x, mask).float().cpu().numpy()
        model.train()
        return feats

    probe_seconds = 0.0
    if head_kind == "pooled" and args.get("probe_init", True):
        # LP-FT: fit the head on the frozen features first (each rank embeds its share, rank 0 fits;
        # DDP then broadcasts rank 0's weights to every rank)
        tp = time.perf_counter()
        mine = list(range(rank, len(tr_ids), world))
        feats = train_features(mine)
        shares: list[Any] = [None] * world
        if world > 1:
            dist.all_gather_object(shares, (mine, feats))
        else:
            shares = [(mine, feats)]
        if rank == 0:
            rows = [j for m, _ in shares for j in m]
            x_all = torch.from_numpy(np.concatenate([f for _, f in shares]))
            y_all = torch.tensor([tr_y[j] for j in rows], dtype=torch.long)
            w, b = fit_linear_probe(x_all, y_all, len(labels))
            with torch.no_grad():
                model.classifier.weight.copy_(w)
                model.classifier.bias.copy_(b)
        if world > 1:
            for p in model.classifier.parameters():
                dist.broadcast(p.data, src=0)
        model.train()
        probe_seconds = time.perf_counter() - tp
        validate(0)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    lr = float(args["lr"])
    scales = layer_lr_scales(
        [n for n, _ in model.named_parameters()],
        int(model.config.num_hidden_layers if head_kind != "pooled" else model.encoder.config.num_hidden_layers),
        decay=float(args.get("layer_lr_decay") or 1.0),
        head_scale=float(args.get("head_lr_scale", 1.0)),
    )
    groups: dict[float, list[Any]] = {}
    for n, p in model.named_parameters():
        groups.setdefault(scales[n], []).append(p)
    opt = torch.optim.AdamW(
        [{"params": ps, "lr": lr * s} for s, ps in sorted(groups.items())],
        weight_decay=float(args["weight_decay"]),
    )
    batch_size = int(args["batch_size"])
    lengths = [len(x) for x in tr_ids]
    per_epoch = len(bucketed_batches(lengths, batch_size, seed=int(args["seed"]), epoch=0, rank=rank, world=world))
    steps = max(1, per_epoch * int(args["epochs"]))
    sched = get_linear_schedule_with_warmup(opt, int(float(args["warmup_ratio"]) * steps), steps)
    eval_every = int(args.get("eval_every") or 0) or per_epoch
    budget = float(args.get("max_minutes") or 0.0) * 60
    model.train()
    for epoch in range(int(args["epochs"])):
        for idx in bucketed_batches(lengths, batch_size, seed=int(args["seed"]), epoch=epoch, rank=rank, world=world):
            x, mask = tensors(tr_ids, idx)
            y = torch.tensor([tr_y[j] for j in idx], device=device)
            loss = torch.nn.functional.cross_entropy(logits_of(ddp, x, mask), y, label_smoothing=smoothing)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(ddp.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step % eval_every == 0 or step == steps:
                validate(epoch + 1)
            if budget and not stop:
                # every rank reads its own clock; they agree on the first to run out, so all stop on one step
                over = torch.tensor([float(time.perf_counter() - t0 >= budget)], device=device)
                if world > 1:
                    dist.all_reduce(over, op=dist.ReduceOp.MAX)
                if over.item() > 0:
                    stop, reason = True, "max_minutes"
            if stop:
                break
        if stop:
            break
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    refit: dict[str, float] = {}
    if rank == 0 and best_state:
        # the head re-fitted on the best checkpoint's own features: the jointly trained head stops after a
        # few epochs short of the convex optimum for the features it ends with
        tr_ = time.perf_counter()
        if not use_gpu and world > 1:
            torch.set_num_threads(max(1, int(args["threads"])) * world)  # the other processes have finished
        model.load_state_dict(best_state)
        feats = torch.from_numpy(train_features(list(range(len(tr_ids)))))
        l2 = float(args.get("head_refit_l2") or 1e-3)
        w, b = fit_linear_probe(feats, torch.tensor(tr_y, dtype=torch.long), len(labels), l2=l2)
        with torch.no_grad():
            model.classifier.weight.copy_(w)
            model.classifier.bias.copy_(b)
        acc, _ = evaluate(alone=True)
        refit = {"l2": l2, "val_accuracy": acc, "val_accuracy_before": best, "seconds": time.perf_counter() - tr_}
        save_head()  # the encoder on disk is already the best checkpoint's
    summary = {
        "head": head_kind,
        "precision": "bf16" if bf16 else "fp32",
        "best_val_accuracy": best,
        "history": history,
        "steps": step,
        "stopped_early": stop,
        "stop_reason": reason,
        "train_rows": len(tr_text),
        "val_rows": len(va_text),
        "probe_seconds": probe_seconds,
        "head_refit": refit,
        "seconds": time.perf_counter() - t0,
        "processes": world,
        "threads": int(args["threads"]),
        "device": str(device),
    }
    if rank == 0:
        (best_dir / "dmine_finetune.json").write_text(json.dumps(summary, indent=2))
    return summary


def train_precision(precision: str, use_gpu: bool, flags: frozenset[str] | None = None) -> str:
    """What ``precision`` trains in: ``"bf16"`` (autocast) or ``"fp32"``.

    ``auto`` autocasts to bf16 on CPUs that compute it natively (AMX or
    AVX512-BF16, see :func:`dmine_spark.features.encoder.auto_precision`) and
    stays fp32 elsewhere, GPUs included.

    Raises
    ------
    ValueError
        ``precision`` is not ``auto``, ``fp32`` or ``bf16``.
    """
    from dmine_spark.features.encoder import NATIVE_BF16_FLAGS, cpu_flags

    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"finetune.precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
    if precision != "auto":
        return precision
    have = cpu_flags() if flags is None else flags
    return "bf16" if not use_gpu and have & NATIVE_BF16_FLAGS else "fp32"


def finetune(
    spark: Any,
    train_rows: Any,
    val_rows: Any,
    labels: list[str],
    out_dir: str | Path,
    *,
    base_model: str,
    head: str = "pooled",
    probe_init: bool = True,
    head_refit: bool = True,
    head_refit_l2: float = 1e-3,
    precision: str = "auto",
    max_length: int = 64,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 5e-5,
    head_lr_scale: float = 1.0,
    layer_lr_decay: float = 1.0,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.1,
    label_smoothing: float = 0.0,
    eval_every: int | None = None,
    patience: int = 2,
    max_minutes: float | None = None,
    num_processes: int = 1,
    use_gpu: bool = False,
    seed: int = 42,
) -> dict[str, Any]:
    """Fine-tune ``base_model`` on DataFrames with ``text`` and ``label`` columns; returns the training summary.

    The best checkpoint (by validation accuracy) is written to ``out_dir``.
    ``head="pooled"`` trains the encoder with mean pooling and a cosine
    classifier, started from a linear probe when ``probe_init`` and re-fitted on
    the best checkpoint's embeddings (L2 weight ``head_refit_l2``) when
    ``head_refit``; ``head="sequence_classification"`` trains
    ``AutoModelForSequenceClassification`` (the [CLS] pooler and a random head).
    The summary holds the validation history (accuracy, loss and minutes at each
    validation), the steps, why training stopped, and the processes and threads.

    Raises
    ------
    ValueError
        An unknown ``head`` or ``precision``.
    RuntimeError
        Training wrote no checkpoint.
    """
    from pyspark.ml.torch.distributor import TorchDistributor
    from pyspark.sql import functions as F

    if head not in HEADS:
        raise ValueError(f"finetune.head must be one of {', '.join(HEADS)}, got {head!r}")

    from dmine_spark.features.encoder import resolve_model_dir

    out_dir = Path(out_dir)
    data_dir = out_dir.parent / f"{out_dir.name}.data"
    pos = F.create_map(*[x for i, lab in enumerate(labels) for x in (F.lit(lab), F.lit(i))])
    paths = {}
    for name, df in (("train", train_rows), ("val", val_rows)):
        p = data_dir / name
        df.select("text", pos[F.col("label")].alias("y")).where(F.col("y").isNotNull()).coalesce(1).write.mode(
            "overwrite"
        ).parquet(str(p))
        paths[name] = str(p)
    cores = os.cpu_count() or 1
    args = {
        "base_dir": str(resolve_model_dir(base_model)),
        "labels": list(labels),
        "train_path": paths["train"],
        "val_path": paths["val"],
        "out_dir": str(out_dir),
        "head": head,
        "probe_init": probe_init,
        "head_refit": head_refit,
        "head_refit_l2": head_refit_l2,
        "precision": train_precision(precision, use_gpu),
        "max_length": max_length,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "head_lr_scale": head_lr_scale,
        "layer_lr_decay": layer_lr_decay,
        "weight_decay": weight_decay,
        "warmup_ratio": warmup_ratio,
        "label_smoothing": label_smoothing,
        "eval_every": eval_every,
        "patience": patience,
        "max_minutes": max_minutes,
        "use_gpu": use_gpu,
        "seed": seed,
        "threads": max(1, math.floor(cores / max(1, num_processes))),
    }
    dist = TorchDistributor(num_processes=num_processes, local_mode=True, use_gpu=use_gpu)
    summary = dist.run(train_worker, args)
    if not (out_dir / "model.safetensors").is_file() or (head == "pooled" and not (out_dir / HEAD_WEIGHTS).is_file()):
        raise RuntimeError(f"fine-tuning wrote no checkpoint to {out_dir}")
    return summary


class FineTunedClassifier(Persisted, SchemaChecked, Model, HasInputCol, HasPredictionCol, HasProbabilityCol):
    """A fine-tuned BERT classifier as a pyspark.ml ``Model``: ``transform`` adds the label and its probability.

    The checkpoint (safetensors, tokenizer, ``id2label``) is scored by the
    same pandas UDF as the embedding model
    (``ModelSpec(head="classification")``): each Python worker loads it once.
    Saved, the checkpoint is copied into the stage's folder (``hf/``).
    """

    labels = Param(Params._dummy(), "labels", "the class labels, in id2label order", TypeConverters.toListString)
    maxLength = Param(Params._dummy(), "maxLength", "tokens kept per text", TypeConverters.toInt)
    batchSize = Param(Params._dummy(), "batchSize", "texts per model call", TypeConverters.toInt)
    maxTokens = Param(Params._dummy(), "maxTokens", "padded tokens per model call", TypeConverters.toInt)
    device = Param(Params._dummy(), "device", "'auto', 'cpu' or 'cuda'", TypeConverters.toString)

    @keyword_only
    def __init__(
        self,
        *,
        inputCol: str = "text",
        predictionCol: str = "prediction",
        probabilityCol: str = "probability",
        labels: list[str] | None = None,
        maxLength: int = 64,
        batchSize: int = 64,
        maxTokens: int = 2048,
        device: str = "auto",
    ) -> None:
        super().__init__()
        self._setDefault(
            inputCol="text",
            predictionCol="prediction",
            probabilityCol="probability",
            labels=[],
            maxLength=64,
            batchSize=64,
            maxTokens=2048,
            device="auto",
        )
        self._set(**self._input_kwargs)
        self.model_dir: Path | None = None

    def copy(self, extra: dict | None = None) -> FineTunedClassifier:
        that = super().copy(extra)
        that.model_dir = self.model_dir
        return that

    def _save_state(self, path: str, spark: SparkSession) -> None:
        if self.model_dir is None:
            raise ValueError("FineTunedClassifier: no checkpoint to save")
        copy_dir(spark, self.model_dir, f"{path}/hf")

    def _load_state(self, path: str, state: dict[str, Any], spark: SparkSession) -> None:
        self.model_dir = local_dir(spark, f"{path}/hf")

    def _input_columns(self) -> dict[str, ColumnSpec]:
        return {self.getInputCol(): ((StringType,), "a string")}

    def _output_columns(self) -> list[tuple[str, DataType]]:
        return [(self.getPredictionCol(), StringType()), (self.getProbabilityCol(), DoubleType())]

    def _transform(self, dataset: DataFrame) -> DataFrame:
        from dmine_spark.features.embed import embed_column, resolve_spec
        from dmine_spark.features.encoder import ModelSpec

        self.transformSchema(dataset.schema)
        if self.model_dir is None:
            raise ValueError("FineTunedClassifier: no checkpoint; fit it with finetune() or load a saved one")
        spec = resolve_spec(
            dataset.sparkSession,
            ModelSpec(
                model=str(self.model_dir),
                max_length=self.getOrDefault("maxLength"),
                head="classification",
                device=self.getOrDefault("device"),
            ),
        )
        probs = embed_column(
            F.col(self.getInputCol()), spec, self.getOrDefault("batchSize"), self.getOrDefault("maxTokens")
        )
        names = F.array(*[F.lit(lab) for lab in self.getOrDefault("labels")])
        tmp = "_dmine_probs"
        return (
            dataset.withColumn(tmp, probs)
            .withColumn(
                self.getPredictionCol(),
                F.element_at(names, F.array_position(F.col(tmp), F.array_max(tmp)).cast("int")),
            )
            .withColumn(self.getProbabilityCol(), F.array_max(tmp).cast("double"))
            .drop(tmp)
        )
