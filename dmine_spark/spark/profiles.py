"""What a Spark profile means outside the Python driver: spark-submit options and Databricks jobs.

Pure functions over a validated :class:`~dmine_spark.config.SparkProfile`:

- :func:`submit_args` and :func:`submit_env`: the spark-submit options and
  environment a local, standalone, YARN or Kubernetes profile implies
  (``./spark-submit.sh --profile NAME``);
- :func:`databricks_job`: the Jobs API 2.1 settings that run a pipeline on a
  Databricks job cluster (``dmine databricks-job``, then
  ``databricks jobs create --json @job.json``);
- :func:`list_profiles`: every profile a name can reach, built-in or under ``conf`` (``dmine profiles``).

Nothing here starts Spark or reaches a cluster.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from dmine_spark.config import (
    ConfigError,
    SparkProfile,
    config_conf_dir,
    find_profiles,
    is_profile_file,
    load_config,
    load_profile,
    profile_path,
)

__all__ = [
    "databricks_job",
    "list_profiles",
    "merge_submit_args",
    "submit_args",
    "submit_env",
]

# spark-submit options whose values are comma-separated lists: given twice, the second replaces the first,
# so they are merged into one
_LIST_OPTIONS = ("--archives", "--py-files", "--files", "--jars", "--packages", "--exclude-packages", "--repositories")
# spark-submit options that take no value
_FLAGS = ("--supervise", "--verbose", "-v", "--version", "--help", "-h")

# the environment every dmine job runs with: models come with the package, never from the Hub
_OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _csv(*groups: Iterable[str]) -> str:
    out: list[str] = []
    for group in groups:
        for item in group:
            item = item.strip()
            if item and item not in out:
                out.append(item)
    return ",".join(out)


def submit_args(profile: SparkProfile, *, py_files: Sequence[str] = (), packages: Sequence[str] = ()) -> list[str]:
    """The spark-submit options ``profile`` implies, each list option once.

    ``py_files`` (dmine_spark.zip) and ``packages`` (a pipeline's JDBC
    driver) are merged with the profile's own, because spark-submit keeps
    only the last ``--py-files`` or ``--packages`` it is given.

    Raises
    ------
    ConfigError
        For a ``databricks`` profile, which is run as a job, not submitted.
    """
    if profile.kind == "databricks":
        raise ConfigError("kind databricks: Databricks runs jobs, not spark-submit; use `dmine databricks-job`")
    sub = profile.submit
    conf = dict(profile.conf)
    out = ["--master", profile.master]
    if profile.kind != "local":
        out += ["--deploy-mode", sub.deploy_mode if sub else "client"]
    lists = {
        "--archives": _csv(sub.archives if sub else []),
        "--py-files": _csv(sub.py_files if sub else [], py_files),
        "--files": _csv(sub.files if sub else []),
        "--packages": _csv(conf.pop("spark.jars.packages", "").split(","), packages),
    }
    for option, value in lists.items():
        if value:
            out += [option, value]
    for key, value in conf.items():
        out += ["--conf", f"{key}={value}"]
    return out + list(sub.extra_args if sub else [])


def submit_env(profile: SparkProfile) -> dict[str, str]:
    """Environment variables spark-submit needs for ``profile`` (``PYSPARK_PYTHON`` of a shipped venv...)."""
    return dict(profile.submit.env) if profile.submit else {}


def _split_options(args: Sequence[str]) -> list[tuple[str, str | None]]:
    """``[--opt, value, --flag, --opt=value]`` as ``(option, value)`` pairs, in order."""
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("-") and "=" in arg:
            name, value = arg.split("=", 1)
            out.append((name, value))
        elif arg in _FLAGS or not arg.startswith("-") or i + 1 == len(args):
            out.append((arg, None))
        else:
            out.append((arg, args[i + 1]))
            i += 1
        i += 1
    return out


def merge_submit_args(first: Sequence[str], then: Sequence[str]) -> list[str]:
    """spark-submit options of ``first`` overridden by ``then``, with list options merged into one.

    Scalar options and ``--conf`` keys keep both occurrences: spark-submit
    takes the last, so ``then`` (the command line) wins over ``first`` (the
    profile). ``--archives``, ``--py-files``, ``--jars``... are joined
    instead, because a second one would silently drop the first.
    """
    pairs = [*_split_options(first), *_split_options(then)]
    merged = {opt: _csv(*(v.split(",") for o, v in pairs if o == opt and v)) for opt in _LIST_OPTIONS}
    out: list[str] = []
    for opt, value in pairs:
        if opt in _LIST_OPTIONS:
            joined = merged.pop(opt, "")  # the merged list goes where the option first appeared
            if joined:
                out += [opt, joined]
            continue
        out += [opt] if value is None else [opt, value]
    return out


def databricks_job(
    pipeline_cfg_path: str | os.PathLike[str],
    profile: SparkProfile | str = "databricks",
    *,
    wheel: str | None = None,
    overrides: Sequence[str] | None = None,
    profile_name: str | None = None,
    conf_dir: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Jobs API 2.1 settings that run ``dmine run <pipeline>`` on a Databricks job cluster.

    The pipeline and its ``overrides`` are validated here, before anything
    reaches the workspace; source paths are not checked, since they name
    cluster storage (``/Volumes/...``). The task is a ``python_wheel_task``
    calling the ``dmine`` entry point of the ``dmine_spark`` wheel with the
    config as synced under ``databricks.workspace_dir``.

    Parameters
    ----------
    pipeline_cfg_path
        A pipeline config under a ``conf/`` folder, e.g. ``conf/base/pipelines/banking77.yaml``.
    profile
        A kind ``databricks`` profile, or its name or file (found as :func:`~dmine_spark.config.profile_path` says).
    wheel
        The dmine_spark wheel the cluster installs (default: ``databricks.wheel``).
    overrides
        ``key=value`` pipeline overrides, passed on as ``--set``.
    profile_name
        The profile's name on the cluster (default: ``profile`` when it is a name, else ``databricks``).
    conf_dir
        A ``conf`` folder searched first for a profile given by name (default: ``$DMINE_CONF_DIR``).

    Raises
    ------
    ConfigError
        One line naming the file or key: a bad pipeline, override, profile or wheel path.
    """
    path = Path(pipeline_cfg_path)
    cfg = load_config(path, list(overrides or []), check_paths=False)
    if isinstance(profile, str):
        profile_name = profile_name or profile
        profile = load_profile(profile, conf_dir, config_path=path)
    profile_name = profile_name or "databricks"
    if profile.kind != "databricks" or profile.databricks is None:
        raise ConfigError(f"profile {profile_name!r} is kind {profile.kind}; a Databricks job needs kind: databricks")
    dbx = profile.databricks.model_copy()
    if wheel:
        try:
            dbx.wheel = wheel  # validated on assignment, like the YAML value
        except ValidationError as exc:
            raise ConfigError(f"--wheel: {exc.errors()[0]['msg']}") from None
    if not dbx.wheel:
        raise ConfigError(
            f"profile {profile_name!r}: databricks.wheel: no wheel to install; "
            "give --wheel /Volumes/<catalog>/<schema>/<volume>/dmine_spark-<version>-py3-none-any.whl"
        )
    _check_job_jars(cfg, dbx)
    conf_root = config_conf_dir(path)
    if conf_root is None:
        raise ConfigError(f"{path}: a Databricks job runs configs from conf/ as synced to {dbx.workspace_dir}/conf")
    remote_cfg = f"{dbx.workspace_dir}/{path.resolve().relative_to(conf_root.parent).as_posix()}"
    if is_profile_file(profile_name):  # a profile file is read on the workspace, where conf/ is synced
        local = profile_path(profile_name, conf_dir, config_path=path).resolve()
        if not local.is_relative_to(conf_root):
            raise ConfigError(
                f"profile {profile_name!r}: a Databricks job reads its profile from {dbx.workspace_dir}/conf; "
                f"move the file under {conf_root} or give the profile's name"
            )
        profile_name = f"{dbx.workspace_dir}/{local.relative_to(conf_root.parent).as_posix()}"

    parameters = ["run", remote_cfg, "--profile", profile_name]
    for override in overrides or []:
        parameters += ["--set", override]
    env = {**_OFFLINE_ENV, "DMINE_CONF_DIR": f"{dbx.workspace_dir}/conf"}
    if dbx.work_dir:
        env["DMINE_WORK_DIR"] = dbx.work_dir
    env.update(dbx.spark_env_vars)

    cluster: dict[str, Any] = {"spark_version": dbx.spark_version, "node_type_id": dbx.node_type_id}
    if dbx.driver_node_type_id:
        cluster["driver_node_type_id"] = dbx.driver_node_type_id
    if dbx.autoscale:
        cluster["autoscale"] = dbx.autoscale.model_dump()
    else:
        cluster["num_workers"] = dbx.num_workers
    for key in ("data_security_mode", "runtime_engine", "policy_id"):
        if getattr(dbx, key):
            cluster[key] = getattr(dbx, key)
    cluster["spark_conf"] = dict(profile.conf)
    cluster["spark_env_vars"] = env
    cluster["custom_tags"] = {"dmine_pipeline": cfg.name, **dbx.custom_tags}

    task = {
        "task_key": cfg.name,
        "description": f"dmine run {cfg.name} (task {cfg.task})",
        "python_wheel_task": {"package_name": "dmine_spark", "entry_point": "dmine", "parameters": parameters},
        "new_cluster": cluster,
        "libraries": [{"whl": w} for w in [dbx.wheel, *dbx.extra_wheels]] + [{"jar": j} for j in dbx.jars],
        "max_retries": dbx.max_retries,
        "min_retry_interval_millis": dbx.min_retry_interval_millis,
        "retry_on_timeout": False,
        "timeout_seconds": dbx.timeout_seconds,
    }
    return {
        "name": dbx.job_name or f"dmine-{cfg.name}",
        "tags": {"dmine_pipeline": cfg.name, "dmine_task": cfg.task},
        "tasks": [task],
        "timeout_seconds": dbx.timeout_seconds,
        # two runs of one pipeline would write the same tables
        "max_concurrent_runs": dbx.max_concurrent_runs,
    }


def _check_job_jars(cfg: Any, dbx: Any) -> None:
    """A pipeline with a Spark NLP backend needs a Spark 3.5 runtime and Spark NLP's jars in ``databricks.jars``."""
    if "sparknlp" not in cfg.jvm_packages():
        return
    from dmine_spark.compat import databricks_line
    from dmine_spark.spark.jars import SPARKNLP_JARS

    key = "clean.backend" if cfg.clean.backend == "sparknlp" else "embed.backend"
    line = databricks_line(dbx.spark_version)
    if not line.sparknlp:
        raise ConfigError(
            f"{key}: sparknlp: runtime {dbx.spark_version} runs Spark {line.name}, for which Spark NLP has no build; "
            "use a Spark 3.5 runtime (14.3 LTS to 16.4 LTS, scala2.12), e.g. the databricks-lts35 profile"
        )
    have = {j.rsplit("/", 1)[-1] for j in dbx.jars}
    missing = [j.file_name for j in SPARKNLP_JARS if j.file_name not in have]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise ConfigError(
            f"databricks.jars: {key} sparknlp needs Spark NLP's jars on the cluster; {missing[0]}{more} missing. "
            "`dmine jars fetch sparknlp` (on the 3.5 line) puts them in the jar cache: upload them to a volume "
            "and list them"
        )


def list_profiles(
    conf_dir: str | os.PathLike[str] | None = None, *, config_path: str | os.PathLike[str] | None = None
) -> list[tuple[str, Path]]:
    """Every profile name, built-in or under a ``conf`` folder, with the file that wins for it.

    The folders are those :func:`~dmine_spark.config.load.profile_dirs` searches.
    """
    return list(find_profiles(conf_dir, config_path=config_path).items())


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m dmine_spark.spark.profiles submit-args|submit-env NAME ...``, for spark-submit.sh.

    ``submit-args NAME [--py-files X] [--packages X] [-- ARGS...]`` prints the
    profile's options merged with the command line's ``ARGS`` (which win), one
    per line; ``submit-env NAME`` prints ``KEY=VALUE`` lines.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    user: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, user = argv[:cut], argv[cut + 1 :]
    p = argparse.ArgumentParser(prog="python -m dmine_spark.spark.profiles")
    p.add_argument("what", choices=["submit-args", "submit-env"])
    p.add_argument("profile")
    p.add_argument("--conf-dir")
    p.add_argument("--py-files", default="")
    p.add_argument("--packages", default="")
    args = p.parse_args(argv)
    try:
        profile = load_profile(args.profile, args.conf_dir)
        if args.what == "submit-env":
            lines = [f"{k}={v}" for k, v in submit_env(profile).items()]
        else:
            own = submit_args(profile, py_files=args.py_files.split(","), packages=args.packages.split(","))
            lines = merge_submit_args(own, user)
    except ConfigError as exc:
        sys.stderr.write(f"spark-submit.sh: --profile {args.profile}: {exc}\n")
        return 2
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
