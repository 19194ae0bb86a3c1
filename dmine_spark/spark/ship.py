"""What ``spark-submit.sh`` ships to executors besides the code: the models a pipeline names.

Executors on a cluster have neither the model package nor the driver's
files. Each model the config names (``embed.model``, and
``finetune.base_model`` when fine-tuning is on) is zipped once into the build
folder and passed as ``--archives <zip>#<name>``; Spark unpacks it in every
executor's working directory, where the embedding UDF finds it
(:func:`~dmine_spark.features.embed.shipped_model_dir`) by
:func:`~dmine_spark.features.encoder.model_archive_name`.

    python -m dmine_spark.spark.ship CONFIG BUILD_DIR   # prints the spark-submit options, one per line
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path

from dmine_spark.config import PipelineConfig, load_config
from dmine_spark.features.encoder import model_archive_name, resolve_model_dir

__all__ = ["pipeline_models", "model_archive", "archive_args"]


def pipeline_models(cfg: PipelineConfig) -> list[str]:
    """The models the executors of ``cfg``'s stages load."""
    out = [cfg.embed.model] if cfg.embed.enabled else []
    if cfg.finetune.enabled and cfg.finetune.base_model not in out:
        out.append(cfg.finetune.base_model)
    return out


def _fingerprint(model_dir: Path) -> list[list]:
    return [
        [str(f.relative_to(model_dir)), f.stat().st_size, int(f.stat().st_mtime)]
        for f in sorted(model_dir.rglob("*"))
        if f.is_file()
    ]


def model_archive(model: str, build_dir: str | Path) -> Path:
    """``<build_dir>/models/<name>.zip`` holding ``model``'s files, rebuilt only when they changed."""
    src = resolve_model_dir(model)
    out = Path(build_dir) / "models" / f"{model_archive_name(model)}.zip"
    stamp = out.with_suffix(".json")
    prints = _fingerprint(src)
    if out.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == prints:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    # stored, not deflated: safetensors weights barely compress and executors unpack faster
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
        for rel, _, _ in prints:
            z.write(src / rel, rel)
    tmp.replace(out)
    stamp.write_text(json.dumps(prints))
    return out


def archive_args(config: str | Path, build_dir: str | Path) -> list[str]:
    """``["--archives", "<zip>#<name>,..."]`` for the models of the pipeline ``config`` (empty if none)."""
    cfg = load_config(config, check_paths=False)
    items = [f"{model_archive(m, build_dir)}#{model_archive_name(m)}" for m in pipeline_models(cfg)]
    return ["--archives", ",".join(items)] if items else []


if __name__ == "__main__":  # used by spark-submit.sh
    print("\n".join(archive_args(sys.argv[1], sys.argv[2])))
