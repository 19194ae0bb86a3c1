"""Small files next to saved models, on any file system Spark reaches (local, HDFS, S3, DBFS...).

A saved model stage keeps its non-Spark state (a scikit-learn artefact in
skops format, say) as a file beside its Spark metadata. These helpers go
through Hadoop's ``FileSystem`` of the session, so a model saved to
``s3a://`` or ``dbfs:/`` is written and read like one saved to a local folder.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pyspark.sql import SparkSession

__all__ = ["write_bytes", "read_bytes", "is_local", "copy_dir", "local_dir", "loaded_once"]

T = TypeVar("T")


def _fs_path(spark: SparkSession, path: str):
    jvm = spark.sparkContext._jvm
    p = jvm.org.apache.hadoop.fs.Path(path)
    return p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()), p


def write_bytes(spark: SparkSession, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` (replacing it), creating the parent folders."""
    fs, p = _fs_path(spark, path)
    out = fs.create(p, True)
    try:
        out.write(bytearray(data))
    finally:
        out.close()


def read_bytes(spark: SparkSession, path: str) -> bytes:
    """The whole content of the file at ``path``.

    Raises
    ------
    FileNotFoundError
        When there is no file at ``path``.
    """
    fs, p = _fs_path(spark, path)
    if not fs.exists(p):
        raise FileNotFoundError(f"no file at {path}")
    stream = fs.open(p)
    try:
        # py4j hands a Java byte[] back as Python bytes in one transfer
        return bytes(spark.sparkContext._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
    finally:
        stream.close()


def is_local(path: str) -> bool:
    """Whether ``path`` is on this machine's file system (no scheme, or ``file:``)."""
    return "://" not in path or path.startswith("file:")


def _local(path: str) -> Path:
    return Path(path[len("file:") :] if path.startswith("file:") else path)


def copy_dir(spark: SparkSession, local: Path, path: str) -> None:
    """Copy the local folder ``local`` to ``path`` (any file system), replacing what is there."""
    if is_local(path):
        dest = _local(path)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(local, dest)
        return
    fs, p = _fs_path(spark, path)
    fs.delete(p, True)
    fs.copyFromLocalFile(False, True, spark.sparkContext._jvm.org.apache.hadoop.fs.Path(str(local)), p)


def local_dir(spark: SparkSession, path: str) -> Path:
    """A local folder with the content of ``path``: itself when local, else a fresh copy in a temp folder."""
    if is_local(path):
        return _local(path)
    fs, p = _fs_path(spark, path)
    dest = Path(tempfile.mkdtemp(prefix="dmine_model_"))
    fs.copyToLocalFile(False, p, spark.sparkContext._jvm.org.apache.hadoop.fs.Path(str(dest)), True)
    return dest / p.getName()


_LOADED: dict[tuple[str, str], Any] = {}
_LOADED_LOCK = threading.Lock()


def loaded_once(kind: str, digest: str, data: bytes, load: Callable[[bytes], T]) -> T:
    """This process's copy of a model stage's artefact, loaded from ``data`` once per ``(kind, digest)``.

    A stage ships its artefact (a scikit-learn estimator, an index, reference
    vectors) to the executors inside its UDF's closure; each Python worker
    loads it on its first batch and keeps it for every later batch and task,
    as the embedding engine keeps its model. Threads of one process load it
    once (a lock).

    Parameters
    ----------
    kind : str
        What the artefact is (``"sklearn"``, ``"faiss"``...): one digest may be
        loaded as two kinds.
    digest : str
        A content hash of ``data`` (SHA-256 hex), computed once by the caller.
    data : bytes
        The serialised artefact.
    load : callable
        ``bytes -> object``; called at most once per ``(kind, digest)`` in the
        process. What it raises reaches the caller, and nothing is kept.
    """
    key = (kind, digest)
    with _LOADED_LOCK:
        got = _LOADED.get(key)
        if got is None:
            got = _LOADED[key] = load(data)
    return got
