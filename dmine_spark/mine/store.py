"""The model store: every trained model as a numbered version of a pyspark.ml ``PipelineModel``.

A version lives in ``<root>/<name>/v<N>/``: ``model/`` is the
``PipelineModel`` (``PipelineModel.load`` reads it in any Spark session) and
``meta.json`` says what trained it (run, pipeline, metrics). ``name@vN`` is
the version string written beside every prediction, so any prediction can be
traced to the model that made it and that model loaded back.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pyspark.ml import PipelineModel

__all__ = ["ModelStore", "parse_ref"]


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``name``, ``name@latest`` or ``name@vN`` → (name, N or None for the latest).

    Raises
    ------
    ValueError
        When the version part is not ``latest`` or ``v<N>``.
    """
    name, _, ver = ref.partition("@")
    if ver in ("", "latest"):
        return name, None
    digits = ver[1:] if ver.startswith("v") else ver
    if not digits.isdigit():
        raise ValueError(f"model {ref!r}: the version must be latest or v<N>, e.g. {name}@v3")
    return name, int(digits)


class ModelStore:
    """Saved models as numbered versions under ``root`` (``<work_dir>/models``).

    Versions only grow; a save never overwrites an earlier version, so any
    prediction's ``model_version`` (``name@vN``) can be loaded back later.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def versions(self, name: str) -> list[int]:
        """The saved version numbers of ``name``, oldest first."""
        d = self.root / name
        if not d.is_dir():
            return []
        return sorted(int(p.name[1:]) for p in d.iterdir() if p.name.startswith("v") and p.name[1:].isdigit())

    def path(self, name: str, version: int | None = None) -> Path:
        """The directory of ``name`` at ``version`` (default: the latest).

        Raises
        ------
        FileNotFoundError
            When there is no such model or version.
        """
        vs = self.versions(name)
        if not vs:
            raise FileNotFoundError(f"no saved model named {name!r} under {self.root}")
        v = vs[-1] if version is None else version
        if v not in vs:
            raise FileNotFoundError(f"model {name!r} has no version {v}; saved versions: {vs}")
        return self.root / name / f"v{v}"

    def resolve(self, ref: str) -> tuple[str, Path]:
        """``name@vN`` and the directory of ``ref`` (``name``, ``name@latest`` or ``name@vN``)."""
        name, version = parse_ref(ref)
        d = self.path(name, version)
        return f"{name}@{d.name}", d

    def save(self, name: str, model: PipelineModel, **meta: Any) -> str:
        """Save ``model`` as the next version of ``name``; ``meta`` goes to its ``meta.json``.

        Returns
        -------
        str
            ``name@vN``.
        """
        (self.root / name).mkdir(parents=True, exist_ok=True)
        while True:  # claim the next number atomically, so concurrent saves never share one
            v = (self.versions(name) or [0])[-1] + 1
            d = self.root / name / f"v{v}"
            try:
                d.mkdir()
                break
            except FileExistsError:
                continue
        model.write().overwrite().save(str(d / "model"))
        info = {
            "name": name,
            "version": v,
            "stages": [type(s).__name__ for s in model.stages],
            "created_at": datetime.now(timezone.utc).isoformat(),
            "created_unix": time.time(),
            **meta,
        }
        (d / "meta.json").write_text(json.dumps(info, indent=2, default=str))
        return f"{name}@v{v}"

    def load(self, ref: str) -> tuple[PipelineModel, str]:
        """The ``PipelineModel`` of ``ref`` and its ``name@vN``.

        Raises
        ------
        FileNotFoundError
            No such model or version, or a version saved in the layout of dmine_spark 0.1.
        """
        version, d = self.resolve(ref)
        if not (d / "model" / "metadata").is_dir():
            raise FileNotFoundError(
                f"{version} in {d} was saved by dmine_spark 0.1, whose models are not pyspark.ml pipelines; "
                "train it again with this version"
            )
        return PipelineModel.load(str(d / "model")), version

    def meta(self, ref: str) -> dict[str, Any]:
        """The ``meta.json`` of ``ref``."""
        return json.loads((self.resolve(ref)[1] / "meta.json").read_text())

    def update_meta(self, ref: str, **values: Any) -> None:
        """Add ``values`` to the ``meta.json`` of ``ref`` (e.g. the metrics measured after saving)."""
        path = self.resolve(ref)[1] / "meta.json"
        meta = json.loads(path.read_text())
        meta.update(values)
        path.write_text(json.dumps(meta, indent=2, default=str))
