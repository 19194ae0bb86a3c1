"""Reading configs: YAML, ``--set key=value`` overrides, validation, and one line per mistake."""

from __future__ import annotations

import difflib
import glob
import json
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from dmine_spark.config.errors import ConfigError
from dmine_spark.config.pipeline import PipelineConfig
from dmine_spark.config.spark import SparkProfile

__all__ = ["parse_override", "apply_overrides", "load_config", "profile_path", "load_profile", "one_line"]

REFERENCE = "docs/configuration.md"


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value``; the value is read as YAML (``64``, ``true``, ``[1, 2]``).

    Raises
    ------
    ConfigError
        When ``text`` is not ``KEY=VALUE``.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. embed.batch_size=64")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """A copy of ``data`` with each ``key=value`` override set.

    Raises
    ------
    ConfigError
        When an override is malformed or sets a key under a plain value.
    """
    out = json.loads(json.dumps(data))
    for text in overrides or []:
        path, value = parse_override(text)
        node = out
        for i, part in enumerate(path[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(path[: i + 1])} is a value, not a section")
            node = nxt
        node[path[-1]] = value
    return out


def _section_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The config section class that holds the key at ``loc`` (``("embed", "batch_sise")`` → EmbedConfig)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return None
        if typing.get_origin(current) in (typing.Union, types.UnionType):  # Section | None
            current = next((a for a in typing.get_args(current) if a is not type(None)), None)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def one_line(err: ValidationError, source: str, model: type[BaseModel]) -> str:
    """The first validation error as ``<source>: <key>: <what is wrong>``, with a spelling hint for unknown keys."""
    first = err.errors()[0]
    loc = tuple(first["loc"])
    where = ".".join(str(p) for p in loc) or "<root>"
    kind = first["type"]
    if kind == "extra_forbidden":
        section = _section_at(model, loc)
        close = difflib.get_close_matches(str(loc[-1]), list(section.model_fields) if section else [], n=1)
        hint = f"did you mean {close[0]}? " if close else ""
        what = f"unknown key ({hint}every key is listed in {REFERENCE})"
    elif kind == "missing":
        what = "required key is missing"
    else:
        what = first["msg"].removeprefix("Value error, ")
        if "input" in first and not isinstance(first["input"], dict):
            what += f" (got {first['input']!r})"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: {where}: {what}{more}"


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return data


def load_config(
    path: str | os.PathLike[str],
    overrides: list[str] | None = None,
    *,
    check_paths: bool = True,
) -> PipelineConfig:
    """Read, override and validate a pipeline config.

    Parameters
    ----------
    path : path-like
        The YAML file.
    overrides : list of str, optional
        ``key=value`` settings applied on top (``--set`` on the command line).
    check_paths : bool
        Fail when a local source path matches no file.

    Raises
    ------
    ConfigError
        With one line naming the file, the key and what is expected.
    """
    p = Path(path)
    data = apply_overrides(_read_yaml(p, "config"), overrides)
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(one_line(exc, str(p), PipelineConfig)) from None
    if check_paths:
        for name, src in cfg.sources.items():
            if src.path and "://" not in src.path and not glob.glob(src.path):  # hdfs://, s3a://: checked by Spark
                raise ConfigError(f"{p}: sources.{name}.path: no file matches {src.path!r}")
    return cfg


def profile_path(name: str, conf_dir: str | os.PathLike[str] | None = None) -> Path:
    """``conf/local/spark/<name>.yaml`` if present (machine-specific), else ``conf/base/spark/<name>.yaml``."""
    root = Path(conf_dir) if conf_dir else Path(os.environ.get("DMINE_CONF_DIR", "conf"))
    local = root / "local" / "spark" / f"{name}.yaml"
    return local if local.is_file() else root / "base" / "spark" / f"{name}.yaml"


def load_profile(name: str, conf_dir: str | os.PathLike[str] | None = None) -> SparkProfile:
    """Read and validate the Spark profile called ``name``.

    Raises
    ------
    ConfigError
        When the file is missing or a key is wrong, in one line.
    """
    p = profile_path(name, conf_dir)
    if not p.is_file():
        raise ConfigError(f"profile {name!r}: file not found: {p}")
    try:
        return SparkProfile.model_validate(_read_yaml(p, "profile"))
    except ValidationError as exc:
        raise ConfigError(one_line(exc, str(p), SparkProfile)) from None
