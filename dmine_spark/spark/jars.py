"""JVM packages dmine_spark can add to a session, fetched once into a local jar cache.

``dmine jars fetch delta`` (run by ``bash dev.sh setup``) resolves a package
and its dependencies from Maven Central through Spark's own Ivy
(``spark.jars.packages``) into ``<jar cache>/<name>/``, and writes a manifest
that lists the jar files. Sessions then put those files on the classpath with
``spark.jars``: no network is needed once the cache is filled, and a session
never starts a resolution of its own.

The jar cache is ``$DMINE_JARS_DIR`` if set, else ``.jars/`` in a source
checkout of dmine_spark, else ``~/.cache/dmine_spark/jars``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "PACKAGES",
    "JvmPackage",
    "jars_dir",
    "fetch",
    "jar_files",
    "have",
    "MissingJars",
    "delta_conf",
    "submit_args",
]


@dataclass(frozen=True)
class JvmPackage:
    name: str
    coordinate: str
    what: str


# Versions that run on pyspark 4.2 (Scala 2.13).
PACKAGES: dict[str, JvmPackage] = {
    "delta": JvmPackage("delta", "io.delta:delta-spark_2.13:4.4.0", "Delta Lake tables (tables.format: delta)"),
    # 4.2.0 is the newest 4.2 release of the connector on Maven Central; it runs on Spark 4.2.x
    "kafka": JvmPackage(
        "kafka", "org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0", "the Kafka source of `dmine stream` (stream.kafka)"
    ),
}


class MissingJars(RuntimeError):
    """A session needs a JVM package whose jars are not in the local cache."""


def jars_dir() -> Path:
    """The local jar cache (see the module docstring)."""
    env = os.environ.get("DMINE_JARS_DIR")
    if env:
        return Path(env).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "setup.py").is_file() and (checkout / "dmine_spark").is_dir():
        return checkout / ".jars"
    return Path.home() / ".cache" / "dmine_spark" / "jars"


def _manifest(name: str, root: Path | None = None) -> Path:
    return (root or jars_dir()) / name / "manifest.json"


def _package(name: str) -> JvmPackage:
    if name not in PACKAGES:
        raise ValueError(f"unknown JVM package {name!r}; dmine_spark knows: {', '.join(sorted(PACKAGES))}")
    return PACKAGES[name]


def jar_files(name: str, root: Path | None = None) -> list[Path]:
    """The cached jars of package ``name``, or :class:`MissingJars` naming the command that fetches them."""
    pkg = _package(name)
    path = _manifest(name, root)
    fix = f"run `dmine jars fetch {name}` (or `bash dev.sh setup`) once with Maven Central reachable"
    if not path.is_file():
        raise MissingJars(f"{pkg.what}: the {pkg.coordinate} jars are not in {path.parent}; {fix}")
    meta = json.loads(path.read_text())
    if meta.get("coordinate") != pkg.coordinate:
        raise MissingJars(
            f"{pkg.what}: {path.parent} holds {meta.get('coordinate')}, this dmine_spark needs {pkg.coordinate}; {fix}"
        )
    jars = [path.parent / j for j in meta["jars"]]
    gone = [j for j in jars if not j.is_file()]
    if gone:
        raise MissingJars(f"{pkg.what}: {gone[0]} is missing from the jar cache; {fix}")
    return jars


def have(name: str, root: Path | None = None) -> bool:
    """Whether package ``name``'s jars are in the cache."""
    try:
        jar_files(name, root)
    except MissingJars:
        return False
    return True


_RESOLVE = """
import sys
from pyspark.sql import SparkSession
spark = (SparkSession.builder.master("local[1]").appName("dmine-jars")
         .config("spark.jars.packages", sys.argv[1]).config("spark.jars.ivy", sys.argv[2])
         .config("spark.ui.enabled", "false").getOrCreate())
spark.stop()
"""


def fetch(name: str, root: Path | None = None, *, force: bool = False, echo=print) -> list[Path]:
    """Resolve package ``name`` from Maven Central into the jar cache; a no-op when it is there already."""
    pkg = _package(name)
    root = root or jars_dir()
    if not force and have(name, root):
        return jar_files(name, root)
    dest = root / name
    ivy = dest / "ivy"
    if dest.exists():
        shutil.rmtree(dest)
    ivy.mkdir(parents=True)
    echo(f"dmine jars: resolving {pkg.coordinate} from Maven Central into {dest}")
    t0 = time.perf_counter()
    env = {**os.environ, "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1")}
    proc = subprocess.run(
        [sys.executable, "-c", _RESOLVE, pkg.coordinate, str(ivy)], env=env, capture_output=True, text=True
    )
    found = sorted((ivy / "jars").glob("*.jar")) if (ivy / "jars").is_dir() else []
    if proc.returncode != 0 or not found:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise MissingJars(f"could not resolve {pkg.coordinate} from Maven Central:\n{tail}")
    meta = {
        "name": name,
        "coordinate": pkg.coordinate,
        "jars": [str(j.relative_to(dest)) for j in found],
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _manifest(name, root).write_text(json.dumps(meta, indent=2) + "\n")
    echo(f"dmine jars: {len(found)} jars for {name} in {time.perf_counter() - t0:.0f}s")
    return [dest / j for j in meta["jars"]]


_DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
_DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"


def delta_conf(conf: dict[str, str]) -> dict[str, str]:
    """``conf`` plus what a Delta Lake session needs: the cached jars, the SQL extension and the catalog.

    Raises
    ------
    MissingJars
        When Delta Lake's jars are not in the jar cache.
    """
    out = dict(conf)
    jars = [j for j in out.get("spark.jars", "").split(",") if j]
    out["spark.jars"] = ",".join([*jars, *(str(p) for p in jar_files("delta") if str(p) not in jars)])
    ext = [e for e in out.get("spark.sql.extensions", "").split(",") if e]
    out["spark.sql.extensions"] = ",".join(ext if _DELTA_EXTENSION in ext else [*ext, _DELTA_EXTENSION])
    out["spark.sql.catalog.spark_catalog"] = _DELTA_CATALOG
    return out


def submit_args(config: str | None = None) -> list[str]:
    """``spark-submit`` arguments that start Delta Lake for a dmine command, from the jar cache.

    The Kafka connector's jars are added too when the config streams from Kafka and they are cached.

    Empty when the pipeline ``config`` asks for Parquet tables, or (for
    ``tables.format: auto`` and commands without a config) when the jars are
    not cached. ``tables.format: delta`` without them is left to the session
    to report, with the command that fetches them.
    """
    fmt, kafka = "auto", False
    if config:
        from dmine_spark.config import load_config

        cfg = load_config(config, check_paths=False)
        fmt, kafka = cfg.tables.format, cfg.stream.kafka is not None
    jars = [str(j) for j in jar_files("kafka")] if kafka and have("kafka") else []
    conf = delta_conf({}) if fmt != "parquet" and have("delta") else {}
    jars += [j for j in conf.pop("spark.jars", "").split(",") if j]
    out = ["--jars", ",".join(jars)] if jars else []
    for key, value in conf.items():
        out += ["--conf", f"{key}={value}"]
    return out
