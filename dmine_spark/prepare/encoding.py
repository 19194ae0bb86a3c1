"""Text files in any encoding: decode each file once into UTF-8, recording where its bytes are invalid.

Spark's CSV, JSON and text readers decode UTF-8 well; other encodings they
handle unevenly (Spark 4 refuses most charsets by default, JSON lines need a
``lineSep`` for GBK, UTF-16 lines come out garbled). A source that declares
``encoding: <codec>`` (any codec Python knows: ``gbk``, ``gb18030``,
``big5``, ``shift_jis``, ``cp1252``, ``latin-1``, ``utf-16``...) or
``encoding: auto`` is therefore decoded here, one file per task:

1. each file's bytes (``binaryFile``; ``.gz`` and ``.bz2`` are decompressed)
   are decoded in the declared codec, or the one charset-normalizer detects
   for ``auto``; a byte sequence that does not decode becomes U+FFFD, and its
   byte offset and line are recorded;
2. the UTF-8 text is written once to a staging folder (one folder per input
   file), which Spark's own reader then parses with the source's options
   (``header``, ``multiLine``, JSON lines...), so parsing is the same as for
   a UTF-8 file;
3. each row keeps its original file in ``source_file``, and a row holding
   U+FFFD is quarantined (``invalid_encoding``) with a reason naming the
   encoding and the file's invalid byte offsets.

Memory: a file is decoded whole in one Python worker, so one file may hold up
to about 1 GB of text; split larger ones.
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from dmine_spark.config import ConfigError
from dmine_spark.prepare.csvcheck import CsvDialect, split_records

__all__ = [
    "AUTO",
    "FileDecoding",
    "Staged",
    "decode_bytes",
    "detect_encoding",
    "display_name",
    "is_utf8",
    "stage_source",
]

AUTO = "auto"
# invalid byte sequences listed per file in the quarantine reason (the count is always given)
SHOWN_OFFSETS = 5
_UTF8 = {"utf-8", "utf_8", "ascii"}
_READER_OPTIONS = ("pathGlobFilter", "recursiveFileLookup", "modifiedBefore", "modifiedAfter")


def is_utf8(name: str | None) -> bool:
    """Whether Spark's readers can take a file of codec ``name`` as it is (UTF-8, and ASCII within it)."""
    return name is None or codecs.lookup(name).name in _UTF8


def display_name(name: str) -> str:
    """How messages write a codec: ``gbk`` → ``GBK``, ``utf-16`` → ``UTF-16``, ``iso8859-1`` → ``ISO8859-1``."""
    return name.upper().replace("_", "-")


_LOCAL = threading.local()


def _record_invalid(exc: UnicodeDecodeError) -> tuple[str, int]:
    _LOCAL.invalid.append(exc.start)
    return "\ufffd", exc.end


codecs.register_error("dmine_spark.record_invalid", _record_invalid)


def detect_encoding(data: bytes) -> str | None:
    """The codec charset-normalizer finds most likely for ``data`` (Python's name), or ``None`` for binary data.

    A UTF-8 byte order mark gives ``utf_8_sig``, so it is not read as text.
    """
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is not None:
        name = codecs.lookup(best.encoding).name
        return "utf-8-sig" if name in _UTF8 and best.bom else name
    # A few corrupt bytes make every codec fail on the whole file: vote over line-aligned chunks instead,
    # each weighted by its size, so that only the chunks holding corrupt bytes abstain.
    votes: dict[str, int] = {}
    for chunk in _chunks(data, max(1024, len(data) // 8)):
        found = from_bytes(chunk).best()
        if found is not None:
            name = codecs.lookup(found.encoding).name
            votes[name] = votes.get(name, 0) + len(chunk)
    if not votes:
        return None
    return max(votes.items(), key=lambda kv: (kv[1], kv[0]))[0]


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    """``data`` in pieces of about ``size`` bytes, each ending after a newline byte (or at the end)."""
    start = 0
    while start < len(data):
        end = data.find(b"\n", min(len(data), start + size))
        end = len(data) if end < 0 else end + 1
        yield data[start:end]
        start = end


def _line_of(data: bytes, offset: int, codec: str) -> int:
    """The 1-based line of byte ``offset`` (newlines counted in the file's own encoding)."""
    if codecs.lookup(codec).name.startswith(("utf-16", "utf-32")):
        return data[:offset].decode(codec, errors="replace").count("\n") + 1
    return data[:offset].count(b"\n") + 1


def decode_bytes(data: bytes, codec: str) -> tuple[str, int, list[tuple[int, int]]]:
    """Decode ``data``, turning each invalid byte sequence into U+FFFD.

    Parameters
    ----------
    data : bytes
        A whole file.
    codec : str
        A Python codec name.

    Returns
    -------
    (str, int, list of (int, int))
        The text; how many byte sequences did not decode; the first
        :data:`SHOWN_OFFSETS` of them as (byte offset, line), 0- and 1-based.
    """
    _LOCAL.invalid = []
    try:
        text = data.decode(codec, errors="dmine_spark.record_invalid")
        invalid = list(_LOCAL.invalid)
    finally:
        _LOCAL.invalid = []
    return text, len(invalid), [(o, _line_of(data, o, codec)) for o in invalid[:SHOWN_OFFSETS]]


def _decompress(path: str, data: bytes) -> bytes:
    lower = path.lower()
    if lower.endswith(".gz"):
        return gzip.decompress(data)
    if lower.endswith(".bz2"):
        return bz2.decompress(data)
    return data


@dataclass
class FileDecoding:
    """How one input file was decoded: its codec (declared or detected), and its invalid byte sequences."""

    path: str
    encoding: str
    how: str
    """``declared``, ``default`` (UTF-8, nothing declared), ``detected``, or ``undetected`` (``auto`` found no
    codec that decodes it: read as UTF-8)."""
    invalid: int
    first_invalid: list[tuple[int, int]]
    bad_records: int = 0
    """CSV records set aside because they cannot be delimited (see :mod:`dmine_spark.prepare.csvcheck`)."""

    @property
    def detected(self) -> bool:
        """Whether ``encoding: auto`` chose the codec (or found none)."""
        return self.how in ("detected", "undetected")

    def note(self) -> str:
        """The quarantine reason's tail for rows of this file, e.g. ``GBK; 2 invalid byte sequence(s) in f.csv…``."""
        where = ", ".join(f"byte {o} (line {line})" for o, line in self.first_invalid)
        more = " ..." if self.invalid > len(self.first_invalid) else ""
        how = {
            "declared": "",
            "detected": " (detected)",
            "undetected": " (auto found no encoding; declare it)",
            "default": " (declare the files' encoding with the source's encoding:, e.g. gbk, or auto)",
        }[self.how]
        name = self.path.rsplit("/", 1)[-1]
        if not self.invalid:
            return f"{display_name(self.encoding)}{how}"
        return f"{display_name(self.encoding)}{how}; {self.invalid} invalid byte sequence(s) in {name}: {where}{more}"


@dataclass
class Staged:
    """A source decoded to UTF-8: the folder to read, each row's original file and reason tail, per-file facts."""

    path: str
    origin: Column
    note: Column
    files: list[FileDecoding]
    bad: DataFrame | None = None
    """CSV records set aside (``file_id, line, reason, raw``), or ``None``."""

    def summary(self) -> str:
        """The encodings used, e.g. ``GBK`` or ``auto: GB18030 (2 files), UTF-8 (1 file)``."""
        counts: dict[str, int] = {}
        for f in self.files:
            counts[display_name(f.encoding)] = counts.get(display_name(f.encoding), 0) + 1
        if not any(f.detected for f in self.files):
            return ", ".join(sorted(counts))
        return "auto: " + ", ".join(f"{k} ({v} file{'s' if v > 1 else ''})" for k, v in sorted(counts.items()))


_DECODED = (
    "file_id INT, kind STRING, encoding STRING, how STRING, invalid INT, first_invalid ARRAY<ARRAY<LONG>>, "
    "bad_records INT, line INT, reason STRING, value STRING"
)


def stage_source(
    spark: SparkSession,
    name: str,
    path: str,
    encoding: str | None,
    options: dict[str, str],
    staging: str,
    dialect: CsvDialect | None = None,
) -> Staged | None:
    """Decode the files at ``path`` into UTF-8 under ``staging``, setting aside CSV records that cannot be delimited.

    Parameters
    ----------
    spark : SparkSession
    name : str
        The source, for messages.
    path : str
        A file, folder or glob (any file system Spark reads).
    encoding : str or None
        A Python codec name (as ``SourceConfig.encoding`` validates it), ``auto``, or ``None``
        for UTF-8 by default.
    options : dict
        The source's reader options; the file-listing ones (``pathGlobFilter``,
        ``recursiveFileLookup``...) apply here too.
    staging : str
        A folder this source may overwrite (and ``<staging>_bad``).
    dialect : CsvDialect, optional
        Check CSV records strictly (:func:`~dmine_spark.prepare.csvcheck.split_records`).

    Returns
    -------
    Staged or None
        Read ``Staged.path`` with the source's format; ``origin`` and ``note``
        are columns over its ``file_id`` partition column, ``bad`` the records
        set aside. ``None`` when the files can be read as they are: UTF-8,
        every byte valid and every record delimited.

    Raises
    ------
    ConfigError
        When ``path`` matches no file.
    """
    listing = spark.read.format("binaryFile").options(**{k: v for k, v in options.items() if k in _READER_OPTIONS})
    try:
        files = sorted(r["path"] for r in listing.load(path).select("path").collect())
    except Exception as exc:  # Spark's AnalysisException for a path that matches nothing
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"sources.{name}.path: {first}") from None
    if not files:
        raise ConfigError(f"sources.{name}.path: no file matches {path}")
    ids = {p: i for i, p in enumerate(files)}
    declared = None if encoding == AUTO else encoding

    def decode(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            out = []
            for p, content in zip(pdf["path"], pdf["content"], strict=True):
                data = _decompress(p, bytes(content))
                found = declared or (detect_encoding(data) if encoding == AUTO else "utf-8")
                codec = found or "utf-8"  # nothing decodes it cleanly: UTF-8, and its rows name the bytes
                text, invalid, first = decode_bytes(data, codec)
                bad = []
                if dialect is not None:
                    text, bad = split_records(text, dialect)
                # the staging writer ends every row with a newline: keep the file's own last one only once,
                # and an empty file stays empty (None is not written)
                if text.endswith("\n"):
                    text = text[:-1]
                elif not text:
                    text = None
                how = (
                    "declared" if declared else "default" if encoding is None else "detected" if found else "undetected"
                )
                first_invalid = [list(x) for x in first]
                out.append((ids[p], "file", codec, how, invalid, first_invalid, len(bad), None, None, text))
                out.extend((ids[p], "bad", codec, how, 0, [], 0, b.line, b.reason, b.raw) for b in bad)
            yield pd.DataFrame(out, columns=_DECODED_COLUMNS)

    decoded = (
        listing.load(path)
        .select("path", "content")
        .repartition(max(1, min(len(files), spark.sparkContext.defaultParallelism * 4)))
        .mapInPandas(decode, _DECODED)
        .persist(StorageLevel.MEMORY_AND_DISK)
    )
    bad_path = f"{staging.rstrip('/')}_bad"
    try:
        facts = [
            FileDecoding(
                path=files[r["file_id"]],
                encoding=r["encoding"],
                how=r["how"],
                invalid=r["invalid"],
                first_invalid=[(int(o), int(line)) for o, line in r["first_invalid"]],
                bad_records=r["bad_records"],
            )
            for r in decoded.where("kind = 'file'").drop("value").collect()
        ]
        if all(is_utf8(f.encoding) and f.how != "undetected" and not f.invalid and not f.bad_records for f in facts):
            return None
        files_only = decoded.where("kind = 'file' AND value IS NOT NULL").select("file_id", "value")
        files_only.repartition("file_id").write.mode("overwrite").partitionBy("file_id").text(staging)
        n_bad = sum(f.bad_records for f in facts)
        if n_bad:
            base = F.element_at(
                F.create_map(*[x for p, i in ids.items() for x in (F.lit(i), F.lit(p.rsplit("/", 1)[-1]))]),
                F.col("file_id"),
            )
            decoded.where("kind = 'bad'").select(
                "file_id",
                F.concat_ws(":", base, F.col("line").cast("string")).alias("key"),
                F.concat(
                    F.lit("line "),
                    F.col("line").cast("string"),
                    F.lit(" of "),
                    base,
                    F.lit(": "),
                    F.col("reason"),
                    F.lit("; quarantined alone, the records after it are kept"),
                ).alias("reason"),
                F.col("value").alias("raw"),
            ).write.mode("overwrite").parquet(bad_path)
    finally:
        decoded.unpersist()
    facts.sort(key=lambda f: ids[f.path])
    by_id = F.col("file_id").cast("int")
    origin = F.element_at(F.create_map(*[x for f in facts for x in (F.lit(ids[f.path]), F.lit(f.path))]), by_id)
    note = F.element_at(F.create_map(*[x for f in facts for x in (F.lit(ids[f.path]), F.lit(f.note()))]), by_id)
    bad = spark.read.parquet(bad_path) if n_bad else None
    return Staged(path=staging, origin=origin, note=note, files=facts, bad=bad)


_DECODED_COLUMNS = [c.split(" ", 1)[0] for c in _DECODED.split(", ")]


def staging_dir(root: str, name: str, path: str, encoding: str | None) -> str:
    """The staging folder of source ``name`` under ``root``: stable for the same files and encoding."""
    key = hashlib.sha256(f"{name}\0{path}\0{encoding}".encode()).hexdigest()[:16]
    return f"{root.rstrip('/')}/{name}-{key}"
