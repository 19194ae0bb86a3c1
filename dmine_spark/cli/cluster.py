"""``dmine profiles``, ``dmine databricks-job`` and ``dmine jars``: getting a pipeline onto a cluster."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dmine_spark.cli.common import echo
from dmine_spark.cli.registry import command
from dmine_spark.config import (
    BUILTIN_PROFILES,
    ConfigError,
    is_profile_file,
    load_config,
    load_profile,
    profile_path,
)

__all__ = ["profiles", "databricks_job", "jars"]


def _profiles_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("config", nargs="?", help="a pipeline config: list what it can name and mark the profile it uses")
    sp.add_argument("--conf-dir", help="a conf folder searched first (default: $DMINE_CONF_DIR)")


@command(
    "profiles",
    "list and validate the Spark profiles: the built-in ones and those in conf/local/spark and conf/base/spark",
    _profiles_args,
)
def profiles(args: argparse.Namespace) -> int:
    from dmine_spark.spark.profiles import list_profiles

    found = list_profiles(args.conf_dir, config_path=args.config)
    used = None
    if args.config:
        cfg = load_config(args.config, check_paths=False)
        used = profile_path(cfg.profile, args.conf_dir, config_path=args.config)
        if is_profile_file(cfg.profile):
            found.append((cfg.profile, used))
    rows: list[tuple[str, ...]] = []
    try:
        for name, path in found:
            p = load_profile(str(path))  # the first invalid one stops the listing with its error
            rows.append(
                (
                    "*" if used is not None and path.resolve() == used.resolve() else " ",
                    name,
                    p.kind,
                    "(set by Databricks)" if p.kind == "databricks" else p.master,
                    "built-in" if path.parent == BUILTIN_PROFILES else str(path),
                )
            )
    finally:
        if used is None:  # no config: no mark column
            rows = [row[1:] for row in rows]
        widths = [max(len(v) for v in col) for col in zip(*rows, strict=True)]
        for row in rows:
            echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _job_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("config", help="pipeline config YAML, e.g. conf/base/pipelines/banking77.yaml")
    sp.add_argument("--profile", default="databricks", help="a kind: databricks profile (default: databricks)")
    sp.add_argument("--wheel", help="the dmine_spark wheel on the workspace, e.g. /Volumes/main/dmine/wheels/...")
    sp.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key on the cluster run"
    )
    sp.add_argument("--out", help="write the JSON here instead of printing it")


@command(
    "databricks-job", "Databricks Jobs API 2.1 JSON that runs a pipeline (`databricks jobs create --json`)", _job_args
)
def databricks_job(args: argparse.Namespace) -> int:
    from dmine_spark.spark.profiles import databricks_job as make_job

    name = str(Path(args.profile).absolute()) if is_profile_file(args.profile) else args.profile  # as typed
    job = make_job(args.config, name, wheel=args.wheel, overrides=args.set)
    text = json.dumps(job, indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        echo(f"wrote {args.out}: job {job['name']!r}; create it with: databricks jobs create --json @{args.out}")
    else:
        sys.stdout.write(text)
    return 0


def _jars_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument(
        "action",
        choices=["fetch", "list", "archive"],
        help="archive: record the driver JVM's class-data archive (faster starts; no package names)",
    )
    sp.add_argument("names", nargs="*", help="packages (default: all)")
    sp.add_argument("--force", action="store_true", help="fetch again even when cached")


@command(
    "jars",
    "JVM packages (Delta Lake, Kafka, Spark NLP) for this Spark line in the local jar cache: fetch them once, "
    "or list; archive the driver JVM's classes",
    _jars_args,
)
def jars(args: argparse.Namespace) -> int:
    from dmine_spark.spark import jars as cache

    if args.action == "archive":
        from dmine_spark.tools.jvm_archive import record_archive

        try:
            record_archive(force=args.force, echo=echo)
        except RuntimeError as exc:
            raise ConfigError(f"jars archive: {exc}") from None
        return 0
    known = cache.packages()
    names = args.names or sorted(known)
    for name in names:
        try:
            cache.package(name)
        except cache.MissingJars as exc:
            raise ConfigError(f"jars: {exc}") from None
        except ValueError:
            raise ConfigError(f"jars: unknown package {name!r}; known: {', '.join(sorted(known))}") from None
    if args.action == "list":
        for name in names:
            pkg = known[name]
            state = f"{len(cache.jar_files(name))} jars" if cache.have(name) else "not fetched"
            echo(f"{name:<8} {pkg.coordinate:<52} {state}  ({pkg.what})")
        echo(f"jar cache: {cache.jars_dir()}")
        return 0
    for name in names:
        try:
            files = cache.fetch(name, force=args.force, echo=echo)
        except cache.MissingJars as exc:
            raise ConfigError(f"jars fetch {name}: {exc}") from None
        echo(f"{name}: {len(files)} jars in {files[0].parent if files else cache.jars_dir()}")
    return 0
