"""Ingest: read a declared-schema source and split good rows from quarantined ones.

Sources are files (CSV, JSON lines or multi-line JSON, text lines, Parquet),
catalog tables or JDBC queries. Files in another ``encoding`` are decoded to
UTF-8 first (:mod:`dmine_spark.prepare.encoding`). Text files are read in Spark's PERMISSIVE mode with a
corrupt-record column, and every atomic column first as a string, so that a
malformed line is kept with its raw text and a value of the wrong type is
quarantined with the column named, instead of failing the job or turning
silently into a null. Every input row ends in exactly one of the two outputs.

Rules, in the order they are checked (the first that fails names the row):

``malformed_record``
    the record does not parse (CSV quoting, broken JSON).
``invalid_encoding``
    a text column holds bytes that are not valid in the source's encoding
    (UTF-8 by default; read as U+FFFD); the reason names the encoding and
    the file's invalid byte offsets.
``wrong_type``
    a value does not cast to the declared type (``stars: 'five' is not INT``).
``missing_required_field``
    a required column is null or blank.
``unknown_label``
    the label is not one of the configured ``labels``.
``duplicate_id``
    the source's ``id_col`` repeats an id seen earlier in the source.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from functools import reduce

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    DataType,
    MapType,
    StringType,
    StructField,
    StructType,
)

from dmine_spark.compat import schema_from_ddl
from dmine_spark.config import ConfigError, PipelineConfig, SourceConfig

__all__ = [
    "CORRUPT_COL",
    "RULES",
    "IngestResult",
    "assign_split",
    "parse_schema",
    "read_source",
    "read_sources",
    "source_rows",
    "split_quarantine",
]

CORRUPT_COL = "_corrupt_record"
# each row's encoding and its file's invalid byte offsets, for the invalid_encoding reason
ENCODING_NOTE_COL = "_encoding_note"
# why a record is malformed, when the reader can say more than "does not parse" (nested records)
MALFORMED_REASON_COL = "_malformed_reason"
# the quarantine keeps at most this many characters of a record's raw content
RAW_MAX_CHARS = 65_536
ROW_SPLIT_COL = "_row_split"
RULES = (
    "malformed_record",
    "invalid_encoding",
    "wrong_type",
    "missing_required_field",
    "unknown_label",
    "duplicate_id",
    "unknown_item",
)
_REPLACEMENT_CHAR = "\ufffd"
_MALFORMED = "record does not parse against the declared schema"


@dataclass
class IngestResult:
    """The rows of one source: ``rows`` parsed and complete, ``quarantine`` not; ``total`` is all of them."""

    rows: DataFrame
    quarantine: DataFrame
    total: DataFrame
    encoding: str | None = None
    """The encoding(s) the files were decoded from, when the source declares one (``GBK``, ``auto: ...``)."""
    files: list = field(default_factory=list)
    """Per decoded file, its :class:`~dmine_spark.prepare.encoding.FileDecoding`."""
    renamed: dict[str, str] = field(default_factory=dict)
    """Columns stored under another name than the source's: storage name → the source's name."""


def parse_schema(ddl: str, where: str) -> StructType:
    """Parse a DDL schema string (``"text STRING, category STRING"``); needs a running Spark."""
    try:
        schema = schema_from_ddl(ddl)
    except Exception:
        schema = None
    if not isinstance(schema, StructType) or not schema.fields:
        raise ConfigError(f"{where}: cannot parse schema {ddl!r}; expected e.g. 'text STRING, label STRING'")
    return schema


def _atomic(field: StructField) -> bool:
    return not isinstance(field.dataType, (StructType, ArrayType, MapType))


def _jdbc_reader(spark: SparkSession, name: str, src: SourceConfig):
    where = f"sources.{name}"
    driver, _ = src.jdbc_driver()
    reader = spark.read.format("jdbc").option("url", src.url)
    if src.table:
        reader = reader.option("dbtable", src.table)
    else:
        reader = reader.option("query", src.query)
    if driver:
        reader = reader.option("driver", driver)
    if src.user:
        reader = reader.option("user", src.user)
    if src.password_env:
        password = os.environ.get(src.password_env)
        if password is None:
            raise ConfigError(f"{where}.password_env: environment variable {src.password_env} is not set")
        reader = reader.option("password", password)
    return reader.options(**src.options)


@dataclass
class Loaded:
    """A source's rows as read: the declared columns, where each row came from, its encoding note, file facts."""

    df: DataFrame
    origin: Column
    encoding_note: Column | None = None
    encoding: str | None = None
    files: list = field(default_factory=list)
    split: Column | None = None
    """Each row's split, when the source sets it per row (``records`` with several keys)."""
    row_key: Column | None = None
    """Each row's stable key within the source (``<key>:<position>`` of ``records``), for its id."""


def _load_text_file(
    spark: SparkSession, name: str, src: SourceConfig, schema: StructType, staging: str | None
) -> Loaded:
    """CSV, JSON and text files: decoded from ``src.encoding`` into UTF-8 first when it is another encoding."""
    from dmine_spark.prepare.csvcheck import CsvDialect
    from dmine_spark.prepare.encoding import is_utf8, stage_source, staging_dir

    path, origin, note, staged = src.path, F.col("_metadata.file_path"), None, None
    multiline = {k.lower(): v for k, v in src.options.items()}.get("multiline", "false").lower() == "true"
    dialect = CsvDialect.of(src.options) if src.format == "csv" and multiline and src.strict_csv else None
    if dialect is not None or (src.encoding and (src.encoding == "auto" or not is_utf8(src.encoding))):
        root = staging or tempfile.mkdtemp(prefix="dmine_staging_")
        staged = stage_source(
            spark,
            name,
            src.path,
            src.encoding,
            src.options,
            staging_dir(root, name, src.path, src.encoding),
            dialect,
        )
        if staged is not None:
            path, origin, note = staged.path, staged.origin, staged.note
    if src.records is not None:
        loaded = _load_records(spark, src, schema, path)
        if staged is not None:
            loaded.origin, loaded.encoding_note = origin, note
            loaded.encoding, loaded.files = staged.summary(), staged.files
        return loaded
    if src.format == "text":
        text_fields = [f for f in schema.fields if isinstance(f.dataType, StringType)]
        if len(schema.fields) != 1 or len(text_fields) != 1:
            raise ConfigError(
                f"sources.{name}.schema: a text source has one STRING column (each line), e.g. 'line STRING'; "
                "split it into more columns with derive"
            )
        df = spark.read.format("text").options(**src.options).load(path)
        df = df.select(F.col("value").alias(schema.fields[0].name), *(["file_id"] if staged else []))
    else:
        raw_schema = StructType(
            [StructField(f.name, StringType() if _atomic(f) else f.dataType, True) for f in schema.fields]
        ).add(CORRUPT_COL, "string")
        df = (
            spark.read.format(src.format)
            .schema(raw_schema)
            .option("mode", "PERMISSIVE")
            .option("columnNameOfCorruptRecord", CORRUPT_COL)
            .options(**src.options)
            .load(path)
        )
    if staged is None:
        return Loaded(df, origin, encoding="UTF-8" if src.encoding else None)
    row_key = None
    if staged.bad is not None:
        # records the strict CSV check set aside: one quarantined row each, keyed by file and line
        file_id = df.schema["file_id"].dataType
        bad = staged.bad.select(
            *[
                F.lit(None).cast(f.dataType).alias(f.name)
                for f in df.schema.fields
                if f.name not in (CORRUPT_COL, "file_id")
            ],
            F.col("raw").alias(CORRUPT_COL),
            F.col("file_id").cast(file_id).alias("file_id"),
            F.col("reason").alias(MALFORMED_REASON_COL),
            F.col("key").alias("_row_key"),
        )
        df = df.select(
            "*", F.lit(None).cast("string").alias(MALFORMED_REASON_COL), F.lit(None).cast("string").alias("_row_key")
        ).unionByName(bad)
        row_key = F.col("_row_key")
    return Loaded(
        df,
        origin,
        note,
        encoding=staged.summary() if src.encoding else None,
        files=staged.files if src.encoding else [],
        row_key=row_key,
    )


def _quoted(path: str) -> str:
    """A dotted key path as a column reference with each part quoted (``a b.c`` → ```a b`.`c```)."""
    return ".".join(f"`{part}`" for part in path.split("."))


def _nest(paths: list[str], leaf: DataType) -> StructType:
    """The document schema that holds ``leaf`` at each dotted path and nothing else."""
    tree: dict = {}
    for path in paths:
        node = tree
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = None

    def build(node: dict) -> StructType:
        return StructType([StructField(k, leaf if v is None else build(v), True) for k, v in node.items()])

    return build(tree)


def _load_records(spark: SparkSession, src: SourceConfig, schema: StructType, path: str) -> Loaded:
    """Rows of the arrays at ``src.records`` inside each JSON document, one per element.

    Only the arrays are read (each element as its raw JSON text), then each
    element is parsed on its own: an object by name, an array by position.
    No row carries its document, so memory follows the rows, not the
    document. An element that is neither, an array of the wrong length and a
    document without the key are quarantined one by one with their position.
    """
    keys = [src.records] if isinstance(src.records, str) else list(src.records)
    doc_schema = _nest(keys, ArrayType(StringType())).add(CORRUPT_COL, "string")
    docs = (
        spark.read.format("json")
        .schema(doc_schema)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", CORRUPT_COL)
        .option("multiLine", "true")
        .options(**src.options)
        .load(path)
        .select("*", F.col("_metadata.file_path").alias("_file"), F.monotonically_increasing_id().alias("_doc"))
    )
    # files decoded from another encoding keep their number (prepare.encoding maps it to the original file)
    carry = [F.col("file_id")] if "file_id" in docs.columns else []
    n = len(schema.fields)
    as_read = StructType([StructField(f.name, StringType() if _atomic(f) else f.dataType, True) for f in schema.fields])
    parts = []
    for key in keys:
        split = key.rsplit(".", 1)[-1] if len(keys) > 1 else None
        rec = docs.where(F.col(CORRUPT_COL).isNull()).select(
            "_file", "_doc", *carry, F.posexplode_outer(F.col(_quoted(key))).alias("_pos", "_rec")
        )
        head = F.substring(F.ltrim(F.col("_rec")), 1, 1)
        arr = F.from_json(F.col("_rec"), ArrayType(StringType()))
        obj = F.from_json(F.col("_rec"), as_read)
        columns = [
            F.when(head == "[", F.get(arr, i) if _atomic(f) else F.lit(None).cast(f.dataType))
            .when(head == "{", obj[f.name])
            .alias(f.name)
            for i, f in enumerate(schema.fields)
        ]
        problem = (
            F.when(F.col("_rec").isNull(), F.lit(f"the document has no array at {key}"))
            .when(
                (head == "[") & (F.size(arr) != n),
                F.format_string(f"an array of %d values, the schema declares {n}", F.size(arr)),
            )
            .when(~head.isin("[", "{"), F.lit("an element that is neither an object nor an array"))
        )
        position = F.coalesce(F.col("_pos"), F.lit(0)).cast("string")
        parts.append(
            rec.select(
                *columns,
                F.when(problem.isNotNull(), F.concat(F.lit(f"{key}["), position, F.lit("]: "), problem)).alias(
                    MALFORMED_REASON_COL
                ),
                F.when(problem.isNotNull(), F.coalesce(F.col("_rec"), F.lit(""))).alias(CORRUPT_COL),
                F.col("_file"),
                *carry,
                F.concat_ws(":", F.col("_doc").cast("string"), F.lit(key), position).alias("_row_key"),
                F.lit(split).cast("string").alias("_split"),
            )
        )
    # a document that does not parse is one quarantined row, whatever keys it should have held
    # (the key in the filter keeps Spark from refusing a query of the corrupt-record column alone)
    broken = docs.where(F.col(CORRUPT_COL).isNotNull() & F.col(_quoted(keys[0])).isNull()).select(
        *[F.lit(None).cast(StringType() if _atomic(f) else f.dataType).alias(f.name) for f in schema.fields],
        F.lit("the document does not parse as JSON").alias(MALFORMED_REASON_COL),
        F.col(CORRUPT_COL),
        F.col("_file"),
        *carry,
        F.concat(F.col("_doc").cast("string"), F.lit(":document")).alias("_row_key"),
        F.lit(None).cast("string").alias("_split"),
    )
    df = reduce(lambda a, b: a.unionByName(b), [*parts, broken])
    return Loaded(
        df,
        F.col("_file"),
        split=F.col("_split") if len(keys) > 1 else None,
        row_key=F.col("_row_key"),
    )


def _load(spark: SparkSession, name: str, src: SourceConfig, schema: StructType, staging: str | None = None) -> Loaded:
    """The source's rows with the declared columns (atomic ones as read, before casting) and where each came from."""
    where = f"sources.{name}"
    if src.format in ("csv", "json", "text"):
        return _load_text_file(spark, name, src, schema, staging)
    if src.format == "parquet":
        df, origin = spark.read.options(**src.options).parquet(src.path), F.col("_metadata.file_path")
    elif src.format == "table":
        if not spark.catalog.tableExists(src.table):
            raise ConfigError(f"{where}.table: catalog table {src.table} does not exist")
        df, origin = spark.table(src.table), F.lit(f"table:{src.table}")
    else:
        df = _jdbc_reader(spark, name, src).load()
        safe_url = src.url.split("?", 1)[0]
        origin = F.lit(f"{safe_url}#{src.table or 'query'}")
    have = {c.lower(): c for c in df.columns}
    missing = [f.name for f in schema.fields if f.name.lower() not in have]
    if missing:
        raise ConfigError(
            f"{where}.schema: column {missing[0]!r} is not in the {src.format} source (it has: {', '.join(df.columns)})"
        )
    return Loaded(df.select(*[F.col(quote(have[f.name.lower()])).alias(f.name) for f in schema.fields]), origin)


# columns every ingested row gets; a source column may not have one of these names
RESERVED_COLUMNS = ("id", "split", "source", "source_file")


def check_reserved(schema: StructType, where: str) -> None:
    """Refuse a declared column named like one that ingest adds, in one line naming it."""
    for f in schema.fields:
        if f.name.lower() in RESERVED_COLUMNS:
            raise ConfigError(
                f"{where}.schema: column {f.name!r} has a name dmine_spark gives every row "
                f"({', '.join(RESERVED_COLUMNS)}); declare it as, say, {f.name}_key (CSV columns are matched "
                "by position, JSON and Parquet by name: rename it with derive) and set id_col to it"
            )


def read_source(
    spark: SparkSession,
    name: str,
    src: SourceConfig,
    *,
    required: list[str],
    label_col: str | None = None,
    labels: list[str] | None = None,
    id_col: str | None = None,
    staging: str | None = None,
) -> IngestResult:
    """Read source ``name`` and split it into complete rows and quarantined ones.

    Every row gets ``id`` (``<name>:<id_col value>``, or ``<name>:<n>`` which is
    stable for the same input files), ``split`` (the source name) and
    ``source_file`` (file path, ``table:<name>`` or the JDBC URL and table).
    Quarantined rows carry ``rule``, ``reason`` and ``raw`` (the malformed
    line, or the row as JSON). Files in another ``encoding`` are decoded to
    UTF-8 under ``staging`` first (:mod:`dmine_spark.prepare.encoding`; a
    temporary folder when ``None``).
    """
    where = f"sources.{name}"
    id_col = id_col or src.id_col
    read_as = parse_schema(src.schema_ddl, f"{where}.schema")
    schema = stored_schema(read_as, src)
    derived = stored_derive(src)
    names = [f.name for f in schema.fields] + [c for c in derived if c not in schema.fieldNames()]
    for col in required:
        if col not in names:
            raise ConfigError(f"{where}.schema: required column {col!r} is not declared (columns: {', '.join(names)})")
    if id_col and id_col not in required:
        required = [*required, id_col]
    if id_col and id_col not in names:
        raise ConfigError(f"{where}.id_col: column {id_col!r} is not declared (columns: {', '.join(names)})")
    if labels is not None and label_col and label_col not in names:
        raise ConfigError(f"labels: label column {label_col!r} is not declared in {where}.schema")
    check_reserved(schema, where)
    loaded = _load(spark, name, src, read_as, staging)
    df = loaded.df
    if src.sample is not None and src.sample < 1.0:
        df = df.sample(fraction=src.sample, seed=src.sample_seed)
    res = source_rows(
        df,
        loaded.origin,
        name,
        src,
        required=required,
        label_col=label_col,
        labels=labels,
        id_col=id_col,
        encoding_note=loaded.encoding_note,
        row_split=loaded.split,
        row_key=loaded.row_key,
    )
    res.encoding, res.files = loaded.encoding, loaded.files
    return res


def read_sources(spark: SparkSession, cfg: PipelineConfig) -> dict[str, IngestResult]:
    """Every source of ``cfg`` through :func:`read_source`, each with the columns its role requires.

    A ``text`` source requires the text column (and is checked against
    ``labels``); an ``interactions`` source the recommend section's user,
    item, time and value columns; an ``item_text`` source its ``attach_on``
    column and the text column. ``required`` columns come on top.
    """
    r = cfg.recommend
    out = {}
    for name, src in cfg.sources.items():
        if src.role == "interactions":
            own = [c for c in (r.user_col, r.item_col, r.time_col, r.value_col) if c]
            label_col, labels = None, None
        elif src.role == "item_text":
            own, label_col, labels = [src.attach_on, cfg.text_col], None, None
        else:
            own, label_col, labels = [cfg.text_col], cfg.label_col, cfg.labels
        out[name] = read_source(
            spark,
            name,
            src,
            required=sorted({*own, *src.required}),
            label_col=label_col,
            labels=labels,
            staging=str(cfg.paths.staging),
        )
    return out


def source_rows(
    df: DataFrame,
    origin: Column,
    name: str,
    src: SourceConfig,
    *,
    required: list[str],
    label_col: str | None = None,
    labels: list[str] | None = None,
    id_col: str | None = None,
    id_prefix: Column | None = None,
    encoding_note: Column | None = None,
    row_split: Column | None = None,
    row_key: Column | None = None,
) -> IngestResult:
    """The ingest rules of :func:`read_source` over rows already read (a streaming micro-batch, say).

    ``df`` has the source's declared columns as read (strings for atomic
    types) and, for CSV and JSON, :data:`CORRUPT_COL`; ``origin`` says where
    each row came from. ``id_prefix`` goes before generated row numbers
    (a micro-batch number keeps them unique across batches).
    ``encoding_note`` names each row's encoding and its file's invalid
    bytes in an ``invalid_encoding`` reason (default: UTF-8). ``row_split``
    sets each kept row's split, ``row_key`` its id when there is no
    ``id_col`` (both from ``records``).
    """
    where = f"sources.{name}"
    id_col = id_col or src.id_col
    read_as = parse_schema(src.schema_ddl, f"{where}.schema")
    schema = stored_schema(read_as, src)
    if id_col and id_col not in required:
        required = [*required, id_col]
    check_reserved(schema, where)
    if id_col:
        row_id = F.col(id_col).cast("string")
    else:
        row_id = F.monotonically_increasing_id().cast("string")
        if id_prefix is not None:
            row_id = F.concat_ws(":", id_prefix, row_id)
        if row_key is not None:
            row_id = F.coalesce(row_key, row_id)
    # the declared columns under their storage names (the row id reads the stored id column, so name it first)
    df = df.select(
        *[F.col(quote(r.name)).alias(f.name, metadata=f.metadata) for r, f in zip(read_as, schema, strict=True)],
        *[c for c in df.columns if c not in read_as.fieldNames()],
    )
    df = df.select(
        F.concat_ws(":", F.lit(name), row_id).alias("id"),
        F.lit(name).alias("split"),
        origin.alias("source_file"),
        *[F.col(c) for c in schema.fieldNames()],
        (F.col(CORRUPT_COL) if CORRUPT_COL in df.columns else F.lit(None).cast("string")).alias(CORRUPT_COL),
        *([encoding_note.alias(ENCODING_NOTE_COL)] if encoding_note is not None else []),
        *([F.col(MALFORMED_REASON_COL)] if MALFORMED_REASON_COL in df.columns else []),
        *([row_split.alias(ROW_SPLIT_COL)] if row_split is not None else []),
    )
    if src.derive:
        df, schema = _derive(df, schema, stored_derive(src), where)
    carry = [ROW_SPLIT_COL] if row_split is not None else []
    res = split_quarantine(df, schema, required, label_col=label_col, labels=labels, id_col=id_col, carry=carry)
    rows = res.rows.withColumn("source", F.lit(name))
    if row_split is not None:
        rows = rows.withColumn("split", F.col(ROW_SPLIT_COL)).drop(ROW_SPLIT_COL)
    if src.splits:
        seed = src.sample_seed if src.split_seed is None else src.split_seed
        rows = rows.withColumn("split", assign_split(F.col("id"), src.splits, seed=seed))
    renamed = {v: k for k, v in src.column_map().items() if k != v}
    return IngestResult(rows=rows, quarantine=res.quarantine, total=res.total, renamed=renamed)


def quote(name: str) -> str:
    """``name`` as a quoted Spark SQL identifier (a dot or a space in it is part of the name)."""
    return "`" + name.replace("`", "``") + "`"


def stored_schema(schema: StructType, src: SourceConfig) -> StructType:
    """``schema`` with each column under its storage name; a renamed column keeps its own name as its comment."""
    names = src.column_map()
    return StructType(
        [
            StructField(
                names.get(f.name, f.name),
                f.dataType,
                True,
                {"comment": f"source column {f.name}"} if names.get(f.name, f.name) != f.name else {},
            )
            for f in schema.fields
        ]
    )


def stored_derive(src: SourceConfig) -> dict[str, str]:
    """``src.derive`` over the storage names: each key stored, each backticked renamed column rewritten."""
    names = {k: v for k, v in src.column_map().items() if k != v}
    out = {}
    for col, expr in src.derive.items():
        for orig, stored in names.items():
            expr = expr.replace(quote(orig), stored)
        out[names.get(col, col)] = expr
    return out


def _derive(df: DataFrame, schema: StructType, derive: dict[str, str], where: str) -> tuple[DataFrame, StructType]:
    """Add the ``derive`` columns (SQL expressions over the columns as read) and declare them."""
    from pyspark.errors import AnalysisException, ParseException

    fields = list(schema.fields)
    for col, expr in derive.items():
        try:
            df = df.withColumn(col, F.expr(expr))
            dtype = df.schema[col].dataType
        except (AnalysisException, ParseException) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"{where}.derive.{col}: {first}") from None
        fields = [f for f in fields if f.name != col] + [StructField(col, dtype, True)]
    return df, StructType(fields)


def assign_split(key: Column, fractions: dict[str, float], *, seed: int = 7) -> Column:
    """A split name per row from a seeded hash of ``key``: the same key always lands in the same split."""
    u = F.pmod(F.xxhash64(key, F.lit(seed)), F.lit(1_000_000)) / 1_000_000.0
    names = list(fractions)
    edges, cum = [], 0.0
    for name in names[:-1]:
        cum += fractions[name]
        edges.append((cum, name))
    out = F.lit(names[-1])
    for edge, name in reversed(edges):
        out = F.when(u < edge, F.lit(name)).otherwise(out)
    return out


def _first_failing(checks: list[tuple[Column, Column]]) -> Column:
    """The message of the first check whose condition holds, else null."""
    out = F.lit(None).cast("string")
    for cond, msg in reversed(checks):
        out = F.when(cond, msg).otherwise(out)
    return out


def split_quarantine(
    df: DataFrame,
    schema: StructType | list[str],
    required: list[str],
    *,
    label_col: str | None = None,
    labels: list[str] | None = None,
    id_col: str | None = None,
    carry: list[str] | None = None,
) -> IngestResult:
    """Apply the ingest rules (module docstring) and cast each column to its declared type.

    ``df`` holds ``id``, ``split``, ``source_file``, the declared columns as
    read and :data:`CORRUPT_COL`. The returned ``rows`` have the declared
    types; ``quarantine`` has ``rule``, ``reason`` and ``raw``.
    """
    if isinstance(schema, list):
        schema = StructType([StructField(c, StringType(), True) for c in schema])
    fields = list(schema.fields)
    names = [f.name for f in fields]
    strings = [f.name for f in fields if isinstance(df.schema[f.name].dataType, StringType)]
    typed = {
        f.name: (
            F.col(f.name).try_cast(f.dataType)
            if _atomic(f) and df.schema[f.name].dataType != f.dataType
            else F.col(f.name)
        )
        for f in fields
    }
    note = (
        F.col(ENCODING_NOTE_COL)
        if ENCODING_NOTE_COL in df.columns
        else F.lit("UTF-8 (declare the files' encoding with the source's encoding:, e.g. gbk, or auto)")
    )
    bad_encoding = [
        (F.instr(F.col(c), _REPLACEMENT_CHAR) > 0, F.concat(F.lit(f"column {c} holds bytes that are not valid "), note))
        for c in strings
    ]
    wrong_type = [
        (
            F.col(f.name).isNotNull() & (F.trim(F.col(f.name).cast("string")) != "") & typed[f.name].isNull(),
            F.format_string(
                f"column {f.name}: '%s' is not a valid {f.dataType.simpleString().upper()}",
                F.substring(F.col(f.name).cast("string"), 1, 80),
            ),
        )
        for f in fields
        if _atomic(f) and df.schema[f.name].dataType != f.dataType
    ]
    missing = [
        (
            typed[c].isNull() | (F.trim(typed[c].cast("string")) == ""),
            F.lit(f"required field is null or empty: {c}"),
        )
        for c in required
    ]
    label_checks = []
    if labels is not None and label_col:
        known = F.array(*[F.lit(str(v)) for v in labels])
        label_checks = [
            (
                typed[label_col].isNotNull() & ~F.array_contains(known, typed[label_col].cast("string")),
                F.format_string(
                    f"label '%s' is not one of the {len(labels)} known labels",
                    F.substring(typed[label_col].cast("string"), 1, 200),
                ),
            )
        ]
    rule_checks = [
        (
            "malformed_record",
            [
                (
                    F.col(CORRUPT_COL).isNotNull(),
                    F.coalesce(F.col(MALFORMED_REASON_COL), F.lit(_MALFORMED))
                    if MALFORMED_REASON_COL in df.columns
                    else F.lit(_MALFORMED),
                )
            ],
        ),
        ("invalid_encoding", bad_encoding),
        ("wrong_type", wrong_type),
        ("missing_required_field", missing),
        ("unknown_label", label_checks),
    ]
    rule = F.lit(None).cast("string")
    reason = F.lit(None).cast("string")
    for name, checks in reversed(rule_checks):
        if not checks:
            continue
        msg = _first_failing(checks)
        rule = F.when(msg.isNotNull(), F.lit(name)).otherwise(rule)
        reason = F.when(msg.isNotNull(), msg).otherwise(reason)
    tagged = df.withColumn("rule", rule).withColumn("reason", reason)
    if id_col:
        # a repeated id keeps its first row (in file order); the later ones are quarantined
        w = Window.partitionBy("id", F.col("rule").isNull()).orderBy("_seq")
        tagged = (
            tagged.withColumn("_seq", F.monotonically_increasing_id())
            .withColumn("_n", F.when(F.col("rule").isNull(), F.row_number().over(w)))
            .withColumn("rule", F.when(F.col("_n") > 1, F.lit("duplicate_id")).otherwise(F.col("rule")))
            .withColumn(
                "reason",
                F.when(F.col("_n") > 1, F.concat(F.lit(f"{id_col} repeats an earlier row: "), F.col("id"))).otherwise(
                    F.col("reason")
                ),
            )
            .drop("_n", "_seq")
        )
    full = F.coalesce(F.col(CORRUPT_COL), F.to_json(F.struct(*[F.col(c) for c in names])))
    raw = F.when(
        F.length(full) > RAW_MAX_CHARS,
        F.concat(
            F.substring(full, 1, RAW_MAX_CHARS),
            F.format_string(" [... %d more characters]", F.length(full) - RAW_MAX_CHARS),
        ),
    ).otherwise(full)
    quarantine = tagged.where(F.col("rule").isNotNull()).select(
        "id", "split", "source_file", "rule", "reason", raw.alias("raw")
    )
    rows = tagged.where(F.col("rule").isNull()).select(
        "id", "split", "source_file", *[typed[c].alias(c) for c in names], *(carry or [])
    )
    return IngestResult(rows=rows, quarantine=quarantine, total=df)
