"""Reading configs: YAML, ``--set key=value`` overrides, validation, and one line per mistake."""

from __future__ import annotations

import difflib
import glob
import json
import os
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from dmine_spark.config.errors import ConfigError
from dmine_spark.config.pipeline import PipelineConfig
from dmine_spark.config.spark import SparkProfile

__all__ = [
    "BUILTIN_PROFILES",
    "parse_override",
    "apply_overrides",
    "load_config",
    "config_conf_dir",
    "find_profiles",
    "is_profile_file",
    "profile_dirs",
    "profile_path",
    "load_profile",
    "one_line",
    "expand_braces",
    "local_matches",
]

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
            if not src.path:
                continue
            try:
                found = local_matches(src.path)
            except ValueError as exc:
                raise ConfigError(f"{p}: sources.{name}.path: {src.path!r} is not a glob Spark reads: {exc}") from None
            if found is not None and not found:
                raise ConfigError(f"{p}: sources.{name}.path: no file matches {src.path!r}")
    return cfg


def expand_braces(pattern: str) -> list[str]:
    """The patterns a Hadoop glob's ``{a,b}`` groups stand for, nested ones included.

    ``data/{a,{b,c}}.csv`` gives ``data/a.csv``, ``data/b.csv`` and
    ``data/c.csv``. As in Hadoop, a comma or ``}`` outside a group is
    itself, ``\\`` escapes the next character (the escape is kept for
    :func:`local_matches`), and a group may hold ``/``.

    Raises
    ------
    ValueError
        When a ``{`` is never closed (Spark refuses the pattern too).
    """

    def sequence(i: int, in_group: bool) -> tuple[list[str], int]:
        out = [""]
        while i < len(pattern):
            c = pattern[i]
            if c == "\\":
                out, i = [o + pattern[i : i + 2] for o in out], i + 2
            elif c == "{":
                options: list[str] = []
                while True:
                    alts, i = sequence(i + 1, True)
                    options += alts
                    if i >= len(pattern):
                        raise ValueError("a '{' is never closed")
                    if pattern[i] == "}":
                        break
                out, i = [o + a for o in out for a in options], i + 1
            elif in_group and c in ",}":
                return out, i
            else:
                out, i = [o + c for o in out], i + 1
        return out, i

    return sequence(0, False)[0]


def _python_glob(pattern: str) -> str:
    """A brace-free Hadoop glob in Python's syntax: ``\\*`` becomes ``[*]``, ``[^a]`` becomes ``[!a]``."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            out.append(f"[{nxt}]" if nxt in "*?[]" else nxt)
            i += 2
            continue
        if c == "[" and pattern[i + 1 : i + 2] == "^":
            out.append("[!")
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


# a URI scheme as Hadoop's Path reads one (two letters at least, so a Windows drive is not one)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")


def local_matches(path: str) -> list[str] | None:
    """The local files and folders a source ``path`` matches, read as Spark reads it: a Hadoop glob.

    Hadoop's glob has ``*``, ``?``, ``[abc]``, ``[a-c]``, ``[^a]`` (or
    ``[!a]``) and ``{a,b}`` groups, nested ones included; Python's
    :mod:`glob` has no groups, so they are expanded first
    (:func:`expand_braces`). ``None`` for a path on another file system
    (``hdfs://``, ``s3a://``, ``dbfs:/``...), which Spark checks when it reads.

    Raises
    ------
    ValueError
        When Spark would refuse the pattern (a ``{`` never closed).
    """
    scheme = _SCHEME.match(path)
    if scheme and scheme.group(1).lower() != "file":
        return None
    if scheme:
        path = path[len(scheme.group(0)) :]
        if path.startswith("//"):  # file:///data/x.csv, file://host/data/x.csv
            path = path[path.find("/", 2) :] if path.find("/", 2) >= 0 else "/"
    return sorted({m for p in expand_braces(path) for m in glob.glob(_python_glob(p))})


def _builtin_profiles() -> Path:
    """The folder of the built-in profiles; copied out to a temporary folder when the package runs from a zip.

    ``spark-submit.sh`` ships dmine_spark as a zip (``--py-files``), so the
    driver may import it from there, where the profiles are not files.
    """
    here = Path(__file__).with_name("profiles")
    if here.is_dir():
        return here
    import hashlib
    import tempfile
    from importlib.resources import files

    inside = [f for f in files("dmine_spark.config").joinpath("profiles").iterdir() if f.name.endswith(".yaml")]
    blobs = {f.name: f.read_bytes() for f in inside}
    key = hashlib.sha256(b"".join(n.encode() + b"\0" + b for n, b in sorted(blobs.items()))).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / f"dmine_spark-profiles-{key}"
    if not out.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix="dmine_spark-profiles-"))
        for name, data in blobs.items():
            (tmp / name).write_bytes(data)
        try:
            tmp.rename(out)
        except OSError:  # another process put the same profiles there first
            pass
    return out


BUILTIN_PROFILES = _builtin_profiles()
"""The profiles that ship with dmine_spark (``local``, ``standalone``, ``yarn``, ``kubernetes``, ``databricks``...)."""

CONF_DIR_ENV = "DMINE_CONF_DIR"


def is_profile_file(name: str) -> bool:
    """True when ``name`` names a YAML file (``my.yaml``, ``./spark/x.yml``) rather than a profile."""
    return name.endswith((".yaml", ".yml")) or "/" in name or os.sep in name


def config_conf_dir(config_path: str | os.PathLike[str]) -> Path | None:
    """The ``conf`` folder a config file lives under (``conf/base/pipelines/x.yaml`` → ``conf``), if any."""
    return next((p for p in Path(config_path).resolve().parents if p.name == "conf"), None)


def profile_dirs(
    conf_dir: str | os.PathLike[str] | None = None, *, config_path: str | os.PathLike[str] | None = None
) -> list[Path]:
    """The folders a profile name is looked up in, first match wins.

    For each ``conf`` folder (``conf_dir``, else ``$DMINE_CONF_DIR``; the one
    ``config_path`` lives under; ``./conf``), its ``local/spark`` then its
    ``base/spark``; last the profiles built into dmine_spark.
    """
    roots = [conf_dir or os.environ.get(CONF_DIR_ENV), config_conf_dir(config_path) if config_path else None, "conf"]
    out: list[Path] = []
    for root in filter(None, roots):
        for sub in ("local", "base"):
            d = Path(root) / sub / "spark"
            if all(d.resolve() != o.resolve() for o in out):
                out.append(d)
    return [*out, BUILTIN_PROFILES]


def find_profiles(
    conf_dir: str | os.PathLike[str] | None = None, *, config_path: str | os.PathLike[str] | None = None
) -> dict[str, Path]:
    """Every profile name that can be given, with the file that wins for it, by name."""
    found: dict[str, Path] = {}
    for d in profile_dirs(conf_dir, config_path=config_path):
        for f in sorted(d.glob("*.yaml")):
            found.setdefault(f.stem, f)
    return dict(sorted(found.items()))


def profile_path(
    name: str, conf_dir: str | os.PathLike[str] | None = None, *, config_path: str | os.PathLike[str] | None = None
) -> Path:
    """The file of the Spark profile ``name``.

    A name ending in ``.yaml`` or holding a ``/`` is a file, relative to the
    folder of ``config_path`` (else to the working directory). Any other name
    is looked up in :func:`profile_dirs`: ``conf/local/spark`` then
    ``conf/base/spark`` of ``conf_dir`` (else ``$DMINE_CONF_DIR``), of the
    ``conf`` folder ``config_path`` lives under, and of ``./conf``; then the
    built-in profiles.

    Raises
    ------
    ConfigError
        When there is no such file, naming where it looked and the profiles there are.
    """
    if is_profile_file(name):
        p = Path(name).expanduser()
        if not p.is_absolute() and config_path is not None:
            p = Path(config_path).resolve().parent / p
        if not p.is_file():
            where = "the config file's folder" if config_path is not None else "the working directory"
            raise ConfigError(f"profile {name!r}: file not found: {p} (a relative path is read from {where})")
        return p
    dirs = profile_dirs(conf_dir, config_path=config_path)
    for d in dirs:
        if (d / f"{name}.yaml").is_file():
            return d / f"{name}.yaml"
    looked = ", ".join("built-in" if d == BUILTIN_PROFILES else str(d) for d in dirs)
    names = ", ".join(find_profiles(conf_dir, config_path=config_path))
    raise ConfigError(
        f"profile {name!r}: no such profile (looked in {looked}); available: {names}; or give a path to a YAML file"
    )


def load_profile(
    name: str, conf_dir: str | os.PathLike[str] | None = None, *, config_path: str | os.PathLike[str] | None = None
) -> SparkProfile:
    """Read and validate the Spark profile ``name``, found as :func:`profile_path` says.

    Parameters
    ----------
    name : str
        A profile name (``local``, ``yarn``...) or the path of a profile YAML file.
    conf_dir : path-like, optional
        A ``conf`` folder searched first (default: ``$DMINE_CONF_DIR``).
    config_path : path-like, optional
        The pipeline config naming the profile: the ``conf`` folder it lives
        under is searched, and a relative file path is read from its folder.

    Raises
    ------
    ConfigError
        When there is no such profile or a key is wrong, in one line.
    """
    p = profile_path(name, conf_dir, config_path=config_path)
    try:
        return SparkProfile.model_validate(_read_yaml(p, "profile"))
    except ValidationError as exc:
        raise ConfigError(one_line(exc, str(p), SparkProfile)) from None
