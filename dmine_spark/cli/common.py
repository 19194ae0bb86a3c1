"""What several command groups share: the pipeline arguments, the profile lookup and the session."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from dmine_spark.config import (
    ConfigError,
    PipelineConfig,
    SparkProfile,
    WorkDir,
    is_profile_file,
    load_config,
    load_profile,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = [
    "pipeline_args",
    "input_args",
    "catalog_args",
    "profile",
    "pipeline_profile",
    "session",
    "pipeline_session",
    "catalog_work_dir",
    "datasets_dir",
    "echo",
]

DATASETS_ENV = "DMINE_DATASETS"
_CONF_DIR_HELP = "a conf folder whose local/spark and base/spark are searched first for profiles ($DMINE_CONF_DIR)"


def echo(message: str) -> None:
    """Print a line of the command's output now (commands run for minutes)."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def pipeline_args(sp: argparse.ArgumentParser) -> None:
    """The arguments of every command that runs a pipeline config."""
    sp.add_argument("config", help="pipeline config YAML, e.g. conf/base/pipelines/banking77.yaml")
    sp.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. embed.batch_size=32",
    )
    sp.add_argument("--profile", help="Spark profile: a name or a YAML file (default: the config's)")
    sp.add_argument("--conf-dir", help=_CONF_DIR_HELP)
    sp.add_argument(
        "--work-dir", help="catalog and warehouse folder (default: the config's, $DMINE_WORK_DIR or ./dmine_work)"
    )
    sp.add_argument("-q", "--quiet", action="store_true", help="no live progress lines")


def input_args(sp: argparse.ArgumentParser) -> None:
    """The arguments of the commands that read new data (score, monitor)."""
    sp.add_argument("--input", required=True, help="a catalog table (db.table) or a file or folder path")
    sp.add_argument("--source", help="the config source whose schema and options the input shares (default: the first)")
    sp.add_argument(
        "--format", choices=["csv", "json", "parquet"], help="file format (default: from the path or the source)"
    )


def catalog_args(sp: argparse.ArgumentParser) -> None:
    """The arguments of the commands that only open the catalog (sql, tables)."""
    sp.add_argument("--work-dir", help="catalog folder (default: $DMINE_WORK_DIR or ./dmine_work)")
    sp.add_argument("--profile", default="local", help="Spark profile: a name or a YAML file (default: local)")
    sp.add_argument("--conf-dir", help=_CONF_DIR_HELP)


def profile(name: str, conf_dir: str | None, *, required: bool) -> SparkProfile:
    """The Spark profile ``name`` (a file path is read from the working directory).

    When not ``required``, Spark's defaults if there is no such profile.
    """
    try:
        return load_profile(str(Path(name).absolute()) if is_profile_file(name) else name, conf_dir)
    except ConfigError:
        if required:
            raise
        return SparkProfile()


def pipeline_profile(args: argparse.Namespace, cfg: PipelineConfig) -> SparkProfile:
    """The profile of a pipeline command: ``--profile`` if given, else the config's own ``profile``.

    A file given with ``--profile`` is read from the working directory, one
    named in the config from the config's folder; a name is looked up as
    :func:`dmine_spark.config.profile_path` says.
    """
    if args.profile:
        return profile(args.profile, args.conf_dir, required=True)
    return load_profile(cfg.profile, args.conf_dir, config_path=args.config)


def session(
    prof: SparkProfile,
    work_dir: Path,
    app: str,
    *,
    packages: list[str] | None = None,
    table_format: str = "auto",
    extra_jars: list[str] | None = None,
) -> SparkSession:
    """A session for ``prof`` with its catalog under ``work_dir`` (Spark is imported only here)."""
    from dmine_spark.spark.session import build_session

    return build_session(
        prof, work_dir, app_name=app, packages=packages, table_format=table_format, extra_jars=extra_jars
    )


def pipeline_session(
    args: argparse.Namespace, *, extra_jars: Callable[[PipelineConfig], list[str] | None] | None = None
) -> tuple[PipelineConfig, SparkSession]:
    """The config of ``args`` (with ``--set`` and ``--work-dir``) and a session for its profile.

    ``extra_jars`` says which packages of the jar cache the command needs besides Delta Lake and the
    config's own (:meth:`~dmine_spark.config.PipelineConfig.jvm_packages`).
    """
    cfg = load_config(args.config, args.set)
    if args.work_dir:
        cfg.work_dir = args.work_dir
    prof = pipeline_profile(args, cfg)
    spark = session(
        prof,
        cfg.resolved_work_dir(),
        f"dmine-{args.command}-{cfg.name}",
        packages=cfg.spark_packages(),
        table_format=cfg.tables.format,
        extra_jars=[*cfg.jvm_packages(), *((extra_jars(cfg) or []) if extra_jars else [])],
    )
    return cfg, spark


def catalog_work_dir(args: argparse.Namespace) -> Path:
    """The work dir of a catalog command, which must already hold a dmine catalog.

    Raises
    ------
    ConfigError
        When there is no catalog there.
    """
    paths = WorkDir.of(args.work_dir)
    if not paths.metastore.exists():
        raise ConfigError(f"no dmine catalog in {paths.root}; run `dmine run <config>` first or pass --work-dir")
    return paths.root


def datasets_dir(value: str | None) -> Path:
    """The shared datasets folder of a benchmark or the generator: ``--datasets``, else ``$DMINE_DATASETS``.

    Raises
    ------
    ConfigError
        When neither is given, or the folder does not exist.
    """
    where = value or os.environ.get(DATASETS_ENV)
    if not where:
        raise ConfigError(f"--datasets: give the folder of the shared datasets (or set {DATASETS_ENV})")
    path = Path(where)
    if not path.is_dir():
        raise ConfigError(f"--datasets: {path} is not a directory")
    return path
