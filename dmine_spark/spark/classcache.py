"""A class-data archive (AppCDS) for the driver JVM: Spark's classes mapped in, not loaded one by one.

A Spark driver loads and verifies about 20,000 classes from some 300 jars
before its first query; on a 2-core machine that is several seconds of every
``dmine`` command, whatever the size of its input. Java's Class-Data Sharing
(JEP 310, and JEP 350 for the dynamic archives used here) stores the classes
one JVM loaded in a file that later JVMs map into memory. ``dmine jars
archive`` (run by ``bash dev.sh setup``) records that archive once per Java
and Spark install, by running a small pipeline with
``-XX:ArchiveClassesAtExit``; every driver that dmine starts afterwards passes
``-XX:SharedArchiveFile``. Measured on the project's 2-core machine: ``dmine
sql`` of a small query 16.9–20.6 s without the archive, 12.0–14.1 s with it
(``dmine bench small`` runs both).

The JVM checks the archive itself (its Java build and the class path it was
recorded with) and ignores one that does not match, so a stale archive costs
the saving, never a failure; its log lines are switched off. Only the
application class path is archived: jars that Spark adds at run time
(``spark.jars``, Delta Lake) load as before.

``DMINE_JVM_ARCHIVE=off`` turns it off; ``DMINE_JVM_ARCHIVE=<file>`` uses that
file instead of the one in the jar cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from dmine_spark.spark.jars import jars_dir

__all__ = ["archive_path", "archive_java_options", "record_java_options", "spark_jars_folder"]

# the JVM's own messages about the archive (a mismatch, a missing file) stay off the console
_QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"


def spark_jars_folder() -> Path:
    """The ``jars`` folder of the Spark that pyspark starts (``$SPARK_HOME/jars`` when set)."""
    if os.environ.get("SPARK_HOME"):
        return Path(os.environ["SPARK_HOME"]) / "jars"
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def _java() -> Path | None:
    home = os.environ.get("JAVA_HOME")
    found = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    return Path(found).resolve() if found and Path(found).exists() else None


def archive_path() -> Path | None:
    """Where the archive for this Java and this Spark lives, or ``None`` without a Java on ``PATH``.

    The file name carries a digest of the Java binary (path, size, time) and
    of the Spark jar names, so another install gets its own archive.
    """
    java = _java()
    if java is None:
        return None
    folder = spark_jars_folder()
    jars = sorted(p.name for p in folder.glob("*.jar")) if folder.is_dir() else []
    st = java.stat()
    key = hashlib.sha256("\n".join([str(java), str(st.st_size), str(int(st.st_mtime)), *jars]).encode()).hexdigest()
    return jars_dir() / "jvm" / f"driver-{key[:16]}.jsa"


def archive_java_options() -> str:
    """JVM options that use the class-data archive, or ``""`` when there is none or it is turned off."""
    setting = os.environ.get("DMINE_JVM_ARCHIVE", "")
    if setting.lower() in {"off", "0", "false", "no"}:
        return ""
    path = Path(setting) if setting else archive_path()
    if path is None or not path.is_file():
        return ""
    return f"-XX:SharedArchiveFile={path} {_QUIET}"


def record_java_options(path: Path) -> str:
    """JVM options that write the archive of the classes this JVM loads to ``path`` when it exits."""
    return f"-XX:ArchiveClassesAtExit={path} {_QUIET}"
