"""JVM packages dmine_spark can add to a session, fetched once into a local jar cache.

``dmine jars fetch delta`` (run by ``bash dev.sh setup``) fetches the version
of a package that matches the installed Spark line
(:mod:`dmine_spark.compat`) from Maven Central into
``<jar cache>/<name>/<artifact>-<version>/``, and writes a manifest that lists
the jar files. Delta Lake and the Kafka connector are resolved with their
dependencies through Spark's own Ivy (``spark.jars.packages``); Spark NLP,
whose published tree cannot be resolved, is an explicit list of jars, each
checked against its pinned SHA-256. Sessions then put the files on the
classpath with ``spark.jars``: no network is needed once the cache is
filled, and a session never starts a resolution of its own. Both Spark lines
share one cache, each in its own version folders.

The jar cache is ``$DMINE_JARS_DIR`` if set, else ``.jars/`` in a source
checkout of dmine_spark, else ``~/.cache/dmine_spark/jars``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from dmine_spark.compat import current_line, line_for, pyspark_version

__all__ = [
    "SPARKNLP_JARS",
    "PinnedJar",
    "JvmPackage",
    "packages",
    "package",
    "jars_dir",
    "fetch",
    "jar_files",
    "have",
    "MissingJars",
    "delta_conf",
    "submit_args",
]

MAVEN_CENTRAL = "https://repo1.maven.org/maven2"


@dataclass(frozen=True)
class PinnedJar:
    """One jar of an explicit list: its Maven coordinate and the SHA-256 of the file on Maven Central."""

    coordinate: str
    sha256: str

    @property
    def file_name(self) -> str:
        _, artifact, version = self.coordinate.split(":")
        return f"{artifact}-{version}.jar"

    def url(self, repo: str = MAVEN_CENTRAL) -> str:
        group, artifact, version = self.coordinate.split(":")
        return f"{repo.rstrip('/')}/{group.replace('.', '/')}/{artifact}/{version}/{self.file_name}"


# Spark NLP 5.5.3 for Spark 3.5 / Scala 2.12, ONNX engine only. Its published dependency tree cannot be
# resolved (tensorflow-cpu_2.12:0.4.4, jsl-llamacpp-cpu_2.12:0.1.4 and jsl-openvino-cpu_2.12:0.1.0 are not
# on Maven Central), so the jars it needs at run time are listed here, each checked by its SHA-256:
# the AWS SDK because loadSavedModel touches S3 classes, TensorFlow's ndarray because annotator models
# reference its buffers, tensorflow-core-api for E5Embeddings' tensor types (its native code is not needed).
SPARKNLP_JARS: tuple[PinnedJar, ...] = (
    PinnedJar(
        "com.johnsnowlabs.nlp:spark-nlp_2.12:5.5.3", "f601b0b434ef80d6596bf4a95bfb1b3ba2c1893f40734d6f5af302d1332f584a"
    ),
    PinnedJar(
        "com.microsoft.onnxruntime:onnxruntime:1.19.2",
        "ddab9113a453c0200ac16caf308b76bc8e84653ddc11969983b783dff34397b2",
    ),
    PinnedJar("com.typesafe:config:1.4.2", "0076c249b4387d8369146528fd5dacb3efba098dc02ecf9ac81debdfc2e12fd5"),
    PinnedJar(
        "com.amazonaws:aws-java-sdk-core:1.12.500", "969562917293a625455a6e86b3b244e2c95a2c6de3c4f77d3e21ecfeb700f817"
    ),
    PinnedJar(
        "com.amazonaws:aws-java-sdk-s3:1.12.500", "c060d62a61e719b8adab1edb4773fd4833270fc1a7746baec7e3eb0dce9052d4"
    ),
    PinnedJar(
        "com.amazonaws:aws-java-sdk-kms:1.12.500", "33e1605c2bf69fbe61fcbee7ff7467150aceb0f60122cb501e1585425aa164e1"
    ),
    PinnedJar(
        "com.amazonaws:jmespath-java:1.12.500", "104d918fc9df8440f58e851318095bbb52e92ad91204cdec25bd49a303a0a14b"
    ),
    PinnedJar("org.tensorflow:ndarray:0.4.0", "f7673f06851664f9c215f2c892d7d6f71e6b23fe2c1af9c72a59a661e3951a04"),
    PinnedJar(
        "org.tensorflow:tensorflow-core-api:0.4.0", "ab65446c7de39e614376d468e7b145ac28408eb82c074d5eed0abd45a8fe86f9"
    ),
)


@dataclass(frozen=True)
class JvmPackage:
    """A JVM package of the jar cache.

    ``coordinate`` is resolved with its dependencies through Spark's Ivy,
    unless ``pinned`` lists the jars explicitly (fetched as listed, each
    checked against its SHA-256).
    """

    name: str
    coordinate: str
    what: str
    pinned: tuple[PinnedJar, ...] = ()

    @property
    def folder(self) -> str:
        """The cache folder of this version: ``<artifact>-<version>``, so two Spark lines share one cache."""
        _, artifact, version = self.coordinate.split(":")
        return f"{artifact}-{version}"


def packages(version: tuple[int, ...] | None = None) -> dict[str, JvmPackage]:
    """The JVM packages for Spark ``version`` (default: the installed pyspark), by name.

    Delta Lake and the Kafka connector exist for both Spark lines, at
    versions matching the Spark minor; Spark NLP only for the 3.5 line.
    """
    v = version or pyspark_version()
    line = line_for(v)
    out = {
        "delta": JvmPackage("delta", line.coordinate("delta", v), "Delta Lake tables (tables.format: delta)"),
        "kafka": JvmPackage("kafka", line.coordinate("kafka", v), "the Kafka source of `dmine stream` (stream.kafka)"),
    }
    if line.sparknlp:
        out["sparknlp"] = JvmPackage(
            "sparknlp",
            SPARKNLP_JARS[0].coordinate,
            "Spark NLP annotators (clean.backend / embed.backend: sparknlp)",
            pinned=SPARKNLP_JARS,
        )
    return out


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


def package(name: str) -> JvmPackage:
    """The package ``name`` for the installed Spark.

    Raises
    ------
    MissingJars
        For Spark NLP on the 4.x line (none is published for Scala 2.13),
        naming the 3.5 line.
    ValueError
        For a name dmine_spark does not know.
    """
    known = packages()
    if name == "sparknlp" and name not in known:
        raise MissingJars(
            f"Spark NLP has no build for Spark {'.'.join(map(str, pyspark_version()))} (Scala "
            f"{current_line().scala}) on Maven Central; its backends run on the Spark 3.5 line: "
            "`bash dev.sh setup --spark 3.5`, or pip install 'dmine_spark[spark35]'"
        )
    if name not in known:
        raise ValueError(f"unknown JVM package {name!r}; dmine_spark knows: {', '.join(sorted(known))}")
    return known[name]


def _folder(pkg: JvmPackage, root: Path | None = None) -> Path:
    return (root or jars_dir()) / pkg.name / pkg.folder


def jar_files(name: str, root: Path | None = None) -> list[Path]:
    """The cached jars of package ``name``, or :class:`MissingJars` naming the command that fetches them."""
    pkg = package(name)
    path = _folder(pkg, root) / "manifest.json"
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
    """Whether package ``name``'s jars are in the cache (False for a package this Spark line lacks)."""
    try:
        jar_files(name, root)
    except (MissingJars, ValueError):
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


def _download(jar: PinnedJar, dest: Path, repo: str) -> Path:
    """Download ``jar`` into ``dest`` and check its SHA-256; a corrupt or different file is removed."""
    import urllib.request

    target = dest / jar.file_name
    part = target.with_suffix(".jar.part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(jar.url(repo), timeout=120) as resp, part.open("wb") as out:
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise MissingJars(f"could not download {jar.coordinate} from {jar.url(repo)}: {exc}") from None
    if digest.hexdigest() != jar.sha256:
        part.unlink(missing_ok=True)
        raise MissingJars(
            f"{jar.coordinate}: SHA-256 {digest.hexdigest()} does not match the pinned {jar.sha256}; "
            f"{repo} served a different file, nothing was cached"
        )
    part.replace(target)
    return target


def fetch(name: str, root: Path | None = None, *, force: bool = False, echo=print) -> list[Path]:
    """Fetch package ``name`` from Maven Central into the jar cache; a no-op when it is there already.

    A package with a dependency tree is resolved through Spark's own Ivy; a
    package with an explicit jar list (Spark NLP) is downloaded jar by jar
    from ``$DMINE_MAVEN_REPO`` (default Maven Central) and each file is
    checked against its pinned SHA-256 before it enters the cache.

    Raises
    ------
    MissingJars
        When a jar cannot be downloaded or resolved, or a checksum does not match.
    """
    pkg = package(name)
    root = root or jars_dir()
    if not force and have(name, root):
        return jar_files(name, root)
    dest = _folder(pkg, root)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    t0 = time.perf_counter()
    if pkg.pinned:
        repo = os.environ.get("DMINE_MAVEN_REPO", MAVEN_CENTRAL)
        echo(f"dmine jars: downloading {len(pkg.pinned)} pinned jars of {pkg.coordinate} into {dest}")
        found = [_download(jar, dest, repo) for jar in pkg.pinned]
    else:
        ivy = dest / "ivy"
        ivy.mkdir()
        echo(f"dmine jars: resolving {pkg.coordinate} from Maven Central into {dest}")
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
        "sha256": {str(j.relative_to(dest)): p.sha256 for j, p in zip(found, pkg.pinned, strict=True)}
        if pkg.pinned
        else {},
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (dest / "manifest.json").write_text(json.dumps(meta, indent=2) + "\n")
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

    The Kafka connector's jars are added too when the config streams from Kafka, and Spark NLP's when
    its stages use a Spark NLP backend, if they are cached.

    Empty when the pipeline ``config`` asks for Parquet tables, or (for
    ``tables.format: auto`` and commands without a config) when the jars are
    not cached. ``tables.format: delta`` without them is left to the session
    to report, with the command that fetches them.
    """
    fmt, wanted = "auto", []
    if config:
        from dmine_spark.config import load_config

        cfg = load_config(config, check_paths=False)
        fmt = cfg.tables.format
        wanted = [*(["kafka"] if cfg.stream.kafka is not None else []), *cfg.jvm_packages()]
    jars = [str(j) for name in wanted if have(name) for j in jar_files(name)]
    conf = delta_conf({}) if fmt != "parquet" and have("delta") else {}
    jars += [j for j in conf.pop("spark.jars", "").split(",") if j]
    out = ["--jars", ",".join(jars)] if jars else []
    for key, value in conf.items():
        out += ["--conf", f"{key}={value}"]
    return out
