"""BERT fine-tuning for classification, run by Spark's ``TorchDistributor``.

:func:`finetune` trains ``AutoModelForSequenceClassification`` on top of the
default model (or any local Hugging Face directory):

* the training rows are written once as Parquet; every training process reads
  its shard of them (``DistributedSampler``), so nothing large is pickled;
* ``TorchDistributor(local_mode=True)`` starts ``num_processes`` processes
  (gloo on CPUs, NCCL on GPUs) and wraps the model in DDP;
* the validation split is scored after each epoch (and every ``eval_every``
  steps if set); training stops when validation accuracy has not improved for
  ``patience`` evaluations, and the best checkpoint is kept as safetensors with
  its tokenizer and ``id2label``;
* predictions take the argmax over the class logits (one row per text, classes
  in ``id2label`` order).

The saved directory is an ordinary Hugging Face model directory, so it scores
through the same pandas UDF as the embedding model
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

__all__ = ["train_worker", "finetune", "argmax_labels", "FineTunedClassifier"]


def argmax_labels(probs: Any, labels: list[str]) -> list[str]:
    """The label of the highest probability in each row (``probs`` is ``(n, classes)``)."""
    import numpy as np

    p = np.asarray(probs)
    if p.ndim != 2 or p.shape[1] != len(labels):
        raise ValueError(f"expected (rows, {len(labels)}) class scores, got shape {p.shape}")
    return [labels[i] for i in p.argmax(axis=1)]


def _read(path: str) -> tuple[list[str], list[int]]:
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=["text", "y"])
    return [str(x) if x is not None else "" for x in t.column("text").to_pylist()], t.column("y").to_pylist()


def train_worker(args: dict[str, Any]) -> dict[str, Any]:
    """One training process (what ``TorchDistributor`` runs); rank 0 returns the summary."""
    import torch
    import torch.distributed as dist
    from torch.utils.data import DataLoader, DistributedSampler
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup
    from transformers.utils import logging as hf_logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    hf_logging.set_verbosity_error()  # the new classification head is expected to be untrained
    hf_logging.disable_progress_bar()
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
    tok = AutoTokenizer.from_pretrained(args["base_dir"], local_files_only=True, trust_remote_code=False)
    model = AutoModelForSequenceClassification.from_pretrained(
        args["base_dir"],
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={lab: i for i, lab in enumerate(labels)},
        local_files_only=True,
        trust_remote_code=False,
        use_safetensors=True,
    ).to(device)
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    tr_text, tr_y = _read(args["train_path"])
    va_text, va_y = _read(args["val_path"])
    max_len = int(args["max_length"])

    def collate(batch: list[tuple[str, int]]) -> dict[str, Any]:
        enc = tok([b[0] for b in batch], truncation=True, max_length=max_len, padding=True, return_tensors="pt")
        enc["labels"] = torch.tensor([b[1] for b in batch], dtype=torch.long)
        return enc

    data = list(zip(tr_text, tr_y, strict=True))
    sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=True, seed=int(args["seed"]))
    loader = DataLoader(data, batch_size=int(args["batch_size"]), sampler=sampler, collate_fn=collate)
    # the new classification head starts from random weights: it learns at head_lr_scale x the encoder's rate
    head = [p for n, p in model.named_parameters() if n.startswith("classifier.")]
    body = [p for n, p in model.named_parameters() if not n.startswith("classifier.")]
    lr = float(args["lr"])
    opt = torch.optim.AdamW(
        [{"params": body, "lr": lr}, {"params": head, "lr": lr * float(args.get("head_lr_scale", 1.0))}],
        weight_decay=float(args["weight_decay"]),
    )
    steps = max(1, len(loader) * int(args["epochs"]))
    sched = get_linear_schedule_with_warmup(opt, int(float(args["warmup_ratio"]) * steps), steps)
    eval_every = int(args.get("eval_every") or 0) or len(loader)

    def evaluate() -> tuple[float, float]:
        """Accuracy and mean loss on this rank's share of the validation rows, summed over ranks."""
        model.eval()
        mine = list(range(rank, len(va_text), world))
        correct, loss_sum = 0.0, 0.0
        with torch.inference_mode():
            for i in range(0, len(mine), 128):
                idx = mine[i : i + 128]
                enc = collate([(va_text[j], va_y[j]) for j in idx])
                enc = {k: v.to(device) for k, v in enc.items()}
                out = model(**enc)
                correct += float((out.logits.argmax(dim=-1) == enc["labels"]).sum())
                loss_sum += float(out.loss) * len(idx)
        t = torch.tensor([correct, loss_sum, float(len(mine))], dtype=torch.float64, device=device)
        if world > 1:
            dist.all_reduce(t)
        model.train()
        n = max(t[2].item(), 1.0)
        return t[0].item() / n, t[1].item() / n

    best_dir = Path(args["out_dir"])
    history: list[dict[str, float]] = []
    best, bad, step, stop = -1.0, 0, 0, False
    t0 = time.perf_counter()
    model.train()
    for epoch in range(int(args["epochs"])):
        sampler.set_epoch(epoch)
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = ddp(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(ddp.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step % eval_every == 0 or step == steps:
                acc, vloss = evaluate()
                history.append({"step": step, "epoch": epoch + 1, "val_accuracy": acc, "val_loss": vloss})
                if acc > best:
                    best, bad = acc, 0
                    if rank == 0:
                        best_dir.mkdir(parents=True, exist_ok=True)
                        model.save_pretrained(best_dir, safe_serialization=True)
                        tok.save_pretrained(best_dir)
                else:
                    bad += 1
                    stop = bad >= int(args["patience"])
            if stop:
                break
        if stop:
            break
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    summary = {
        "best_val_accuracy": best,
        "history": history,
        "steps": step,
        "stopped_early": stop,
        "train_rows": len(tr_text),
        "val_rows": len(va_text),
        "seconds": time.perf_counter() - t0,
        "processes": world,
        "device": str(device),
    }
    if rank == 0:
        (best_dir / "dmine_finetune.json").write_text(json.dumps(summary, indent=2))
    return summary


def finetune(
    spark: Any,
    train_rows: Any,
    val_rows: Any,
    labels: list[str],
    out_dir: str | Path,
    *,
    base_model: str,
    max_length: int = 64,
    epochs: int = 1,
    batch_size: int = 32,
    lr: float = 5e-5,
    head_lr_scale: float = 10.0,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.1,
    eval_every: int | None = None,
    patience: int = 2,
    num_processes: int = 1,
    use_gpu: bool = False,
    seed: int = 42,
) -> dict[str, Any]:
    """Fine-tune ``base_model`` on DataFrames with ``text`` and ``label`` columns; returns the training summary.

    The best checkpoint (by validation accuracy) is written to ``out_dir``.
    """
    from pyspark.ml.torch.distributor import TorchDistributor
    from pyspark.sql import functions as F

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
        "max_length": max_length,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "head_lr_scale": head_lr_scale,
        "weight_decay": weight_decay,
        "warmup_ratio": warmup_ratio,
        "eval_every": eval_every,
        "patience": patience,
        "use_gpu": use_gpu,
        "seed": seed,
        "threads": max(1, math.floor(cores / max(1, num_processes))),
    }
    dist = TorchDistributor(num_processes=num_processes, local_mode=True, use_gpu=use_gpu)
    summary = dist.run(train_worker, args)
    if not (out_dir / "model.safetensors").is_file():
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
