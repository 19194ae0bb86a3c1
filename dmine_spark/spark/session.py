"""SparkSession construction driven by a Spark profile (:func:`dmine_spark.config.load_profile`).

The default profile runs local mode with a persistent catalog: Spark's
embedded (Derby) metastore and a warehouse folder, both under the work
directory, so result tables outlive the process and ``dmine sql`` in another
shell sees them.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from dmine_spark.config import ConfigError, SparkProfile, WorkDir
from dmine_spark.io.tables import delta_enabled
from dmine_spark.spark.jars import MissingJars, delta_conf, have, jar_files

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = [
    "build_session",
    "class_archive_options",
    "driver_java_options",
    "merged_packages",
    "quiet_java_options",
    "session_conf",
    "under_spark_submit",
]

log = logging.getLogger(__name__)

# Settings every dmine session needs, whatever the profile says.
_BASE_CONF = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.python.worker.reuse": "true",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.showConsoleProgress": "false",
    "spark.executorEnv.HF_HUB_OFFLINE": "1",
    "spark.executorEnv.TRANSFORMERS_OFFLINE": "1",
    "spark.executorEnv.TOKENIZERS_PARALLELISM": "false",
}


def under_spark_submit() -> bool:
    """True when this Python driver was launched by ``spark-submit``."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


LOG4J_CONF = Path(__file__).with_name("log4j2.properties")

# MLlib asks netlib for a native BLAS on its first fit; netlib 3.2 (Spark 4.x) then prints a
# `netlib-blas: JNI_OnLoad: dlopen(libblas.so.3) failed` line straight to the JVM's stderr, past log4j,
# when the machine has none. MLlib runs its Java BLAS either way, so without a system BLAS the
# native attempt is skipped (netlib 3.0, on Spark 3.5, ignores the property and prints nothing).
NETLIB_JAVA_ONLY = "-Ddev.ludovic.netlib.blas.allowNative=false"


def system_blas() -> bool:
    """True when this machine has a BLAS library netlib's native binding could open."""
    import ctypes.util

    return ctypes.util.find_library("blas") is not None


def quiet_java_options(extra: str = "") -> str:
    """JVM options that keep library chatter off the console, given the options ``extra`` already set."""
    if "dev.ludovic.netlib.blas" in extra or system_blas():
        return ""
    return NETLIB_JAVA_ONLY


def class_archive_options(extra: str = "") -> str:
    """JVM options for the driver's class-data archive (:mod:`dmine_spark.spark.classcache`).

    While ``$DMINE_JVM_ARCHIVE_RECORD`` names a file (``dmine jars archive``
    sets it), the JVM records the archive there instead. ``""`` when
    ``extra`` already has archive options of its own.
    """
    from dmine_spark.spark.classcache import archive_java_options, record_java_options

    if "SharedArchiveFile" in extra or "ArchiveClassesAtExit" in extra:
        return ""
    record = os.environ.get("DMINE_JVM_ARCHIVE_RECORD")
    return record_java_options(Path(record)) if record else archive_java_options()


def driver_java_options(work_dir: Path, profile: SparkProfile | None = None) -> str:
    """JVM options for the driver: quiet logging, derby.log kept in the work dir, the class-data archive."""
    extra = profile.conf.get("spark.driver.extraJavaOptions", "") if profile else ""
    opts = f"-Dlog4j2.configurationFile=file:{LOG4J_CONF} -Dderby.system.home={Path(work_dir).resolve()}"
    return " ".join(filter(None, [extra, opts, quiet_java_options(extra), class_archive_options(extra)]))


def session_conf(profile: SparkProfile, work_dir: Path) -> dict[str, str]:
    """The full Spark conf for ``profile`` with its catalog under ``work_dir``."""
    paths = WorkDir(Path(work_dir).resolve())
    conf = dict(_BASE_CONF)
    conf["spark.sql.warehouse.dir"] = str(paths.warehouse)
    if profile.catalog == "hive":
        conf["spark.sql.catalogImplementation"] = "hive"
        conf["spark.hadoop.javax.jdo.option.ConnectionURL"] = f"jdbc:derby:;databaseName={paths.metastore};create=true"
        conf["spark.hadoop.datanucleus.schema.autoCreateAll"] = "true"
        conf["spark.hadoop.hive.metastore.schema.verification"] = "false"
    else:
        conf["spark.sql.catalogImplementation"] = "in-memory"
    conf.update(profile.conf)
    return conf


def merged_packages(profile: SparkProfile, packages: list[str] | None) -> str:
    """``spark.jars.packages``: the profile's coordinates plus ``packages``, each once, in order."""
    out: list[str] = []
    for pkg in [*profile.conf.get("spark.jars.packages", "").split(","), *(packages or [])]:
        pkg = pkg.strip()
        if pkg and pkg not in out:
            out.append(pkg)
    return ",".join(out)


def build_session(
    profile: SparkProfile,
    work_dir: Path,
    app_name: str | None = None,
    *,
    packages: list[str] | None = None,
    table_format: str = "auto",
    extra_jars: list[str] | None = None,
) -> "SparkSession":
    """Create (or join) the SparkSession described by ``profile``.

    Under ``spark-submit`` the master and driver settings given on the
    command line win; the profile's master applies only to direct runs.
    ``packages`` are Maven coordinates (a JDBC driver, say) resolved from
    Maven Central through ``spark.jars.packages`` when the JVM starts.
    ``table_format`` ``delta`` starts Delta Lake from the local jar cache
    (:mod:`dmine_spark.spark.jars`); ``auto`` does so when the jars are there.
    ``extra_jars`` names more packages of that cache to put on the classpath.
    """
    extra: list[str] = []
    for name in extra_jars or []:  # other packages of the jar cache (the Kafka connector, say)
        try:
            extra += [str(p) for p in jar_files(name)]
        except MissingJars as exc:
            raise ConfigError(str(exc)) from None

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Executors must run the interpreter that has dmine_spark's dependencies.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    work_dir = Path(work_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    builder = SparkSession.builder.appName(app_name or profile.app_name)
    launched: set[str] = set()
    if under_spark_submit():
        from pyspark import SparkConf, SparkContext

        # settings given to spark-submit (--conf, --executor-memory...) win over the profile's
        SparkContext._ensure_initialized()
        launched = {k for k, _ in SparkConf().getAll()}
    elif getattr(profile, "kind", None) == "databricks":
        pass  # Databricks has started the session; its cluster spec set the master
    else:
        builder = builder.master(profile.master)
        if profile.master.startswith("local"):
            # a local run talks to itself only; this also silences the hostname warning
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = builder.config("spark.driver.extraJavaOptions", driver_java_options(work_dir, profile))
    conf = session_conf(profile, work_dir)
    want_delta = table_format == "delta" or (table_format == "auto" and have("delta"))
    if want_delta:
        try:
            conf = delta_conf(conf)
        except MissingJars as exc:
            raise ConfigError(f"tables.format: delta: {exc}") from None
    if extra:
        have_jars = [j for j in conf.get("spark.jars", "").split(",") if j]
        conf["spark.jars"] = ",".join([*have_jars, *(f for f in extra if f not in have_jars)])
    jars = merged_packages(profile, packages)
    if jars:
        conf["spark.jars.packages"] = jars
    for key, value in conf.items():
        if key == "spark.driver.extraJavaOptions" or (key in launched and key in profile.conf):
            continue
        builder = builder.config(key, value)
    if profile.catalog == "hive":
        builder = builder.enableHiveSupport()
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(profile.log_level)
    loaded = set(filter(None, spark.sparkContext.getConf().get("spark.jars.packages", "").split(",")))
    lacking = [p for p in packages or [] if p not in loaded]
    if want_delta and table_format == "delta" and not delta_enabled(spark):
        raise ConfigError(
            "tables.format: delta: this Spark session was started without Delta Lake; "
            "spark-submit.sh adds it, or start a new process"
        )
    if lacking:
        # the JVM was already running (spark-submit, or a session made earlier in this process)
        raise ConfigError(
            f"the Spark session lacks the packages {','.join(lacking)}; "
            "pass them to spark-submit with --packages (spark-submit.sh does) or start a new process"
        )
    log.info("spark %s master=%s work_dir=%s", spark.version, spark.sparkContext.master, work_dir)
    return spark
