"""A JVM-free way to answer ``dmine sql`` over a local catalog: DuckDB on the tables' files.

The result tables of a local catalog are folders under the warehouse
(``<warehouse>/<db>.db/<table>``): Delta tables, read with delta-rs, or
Parquet. A read-only query over such tables is parsed as Spark SQL
(sqlglot), checked against what this module knows to answer exactly as Spark
would, rewritten for DuckDB and run in-process over the tables' Arrow
datasets, in well under a second.

Whatever it cannot answer exactly comes back as a :class:`Fallback` with the
reason, and the caller asks Spark: statements other than a query, time
travel, names with no table folder (views live only in the metastore),
functions outside :data:`SUPPORTED`, a Delta table delta-rs cannot read,
and any error DuckDB raises.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

__all__ = ["FastPlan", "Fallback", "SUPPORTED", "plan", "run", "spark_name"]

# Spark's catalog in a local work dir; a table of another catalog is not in the warehouse folder
_SPARK_CATALOG = "spark_catalog"
_NAME = re.compile(r"^[A-Za-z0-9_]+$")
_META = "dmine_spark_name"  # where a select expression keeps the name Spark gives it
_INTEGRAL = {"TINYINT", "SMALLINT", "INT", "BIGINT"}
_FRACTIONAL = {"FLOAT", "DOUBLE", "DECIMAL"}


@dataclass(frozen=True)
class Fallback:
    """A query the fast path leaves to Spark.

    Parameters
    ----------
    reason : str
        Why, in a few words for a log line or an error message (e.g. ``"time travel (VERSION AS OF)"``).
    """

    reason: str


@dataclass
class FastPlan:
    """A query the fast path answers: DuckDB SQL over named Arrow datasets.

    Parameters
    ----------
    sql : str
        The query in DuckDB's dialect; it reads the views named in ``sources``.
    columns : list of str
        The output column names Spark gives the query.
    sources : dict
        View name -> ``pyarrow.dataset.Dataset`` of one catalog table.
    tables : dict
        View name -> the table as the query named it (``db.table``), for messages.
    """

    sql: str
    columns: list[str]
    sources: dict[str, Any] = field(repr=False)
    tables: dict[str, str]


_SUPPORTED_NAMES = """
    Select Union Intersect Except From Join Where Group Having Order Ordered Limit Offset Subquery With CTE
    TableAlias Table Column Identifier Star Alias Literal Boolean Null Distinct Bracket Dot DataType
    DataTypeParam Paren Tuple Window Qualify
    EQ NEQ GT GTE LT LTE NullSafeEQ And Or Not Is In Between Like ILike Exists Neg Add Sub Mul Div Mod
    Case If Coalesce Cast TryCast Lower Upper Length Concat DPipe Abs Greatest Least Year Month Day
    Count Sum Avg Min Max ArrayAgg RowNumber Rank DenseRank CurrentDate CurrentTimestamp
"""
SUPPORTED: frozenset[type] = frozenset(getattr(exp, n) for n in _SUPPORTED_NAMES.split())
"""The sqlglot expression classes the fast path answers; any other node in a query sends it to Spark.

Each is one whose DuckDB rewrite gives Spark's value: no float rounding (``round``), no functions
whose defaults or formats differ (``percentile_approx``, ``date_format``), no generators (``explode``)."""


def _spark_type(t: Any) -> str:
    """The Spark SQL type of an Arrow type, for sqlglot's schema (``None`` parts become STRING)."""
    import pyarrow as pa

    if pa.types.is_boolean(t):
        return "BOOLEAN"
    for check, name in (
        (pa.types.is_int8, "TINYINT"),
        (pa.types.is_int16, "SMALLINT"),
        (pa.types.is_int32, "INT"),
        (pa.types.is_int64, "BIGINT"),
        (pa.types.is_float32, "FLOAT"),
        (pa.types.is_float64, "DOUBLE"),
        (pa.types.is_date32, "DATE"),
        (pa.types.is_timestamp, "TIMESTAMP"),
    ):
        if check(t):
            return name
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "STRING"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return "BINARY"
    if pa.types.is_decimal(t):
        return f"DECIMAL({t.precision}, {t.scale})"
    if pa.types.is_map(t):
        return f"MAP<{_spark_type(t.key_type)}, {_spark_type(t.item_type)}>"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
        return f"ARRAY<{_spark_type(t.value_type)}>"
    if pa.types.is_struct(t):
        return "STRUCT<" + ", ".join(f"`{f.name}`: {_spark_type(f.type)}" for f in t) + ">"
    raise ValueError(f"Arrow type {t} has no Spark counterpart here")


def _delta_dataset(path: Path) -> Any:
    from deltalake import DeltaTable

    return DeltaTable(str(path)).to_pyarrow_dataset()


def _parquet_dataset(path: Path, label: str) -> Any | Fallback:
    """The Parquet table at ``path``, or a Fallback when its files could be read otherwise than Spark does."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    parts: list[str] = []
    probe = path
    while True:  # the partition columns, from the first branch of col=value folders
        subdirs = sorted(p for p in probe.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
        if not subdirs or "=" not in subdirs[0].name:
            break
        parts.append(subdirs[0].name.split("=", 1)[0])
        probe = subdirs[0]
    partitioning = ds.partitioning(pa.schema([(p, pa.string()) for p in parts]), flavor="hive") if parts else None
    data = ds.dataset(str(path), format="parquet", partitioning=partitioning)
    if parts:
        # the catalog's type of a partition column is not in the files: only text values read back as Spark's
        for frag in data.get_fragments():
            values = ds.get_partition_keys(frag.partition_expression)
            for col, value in values.items():
                if value is not None and re.fullmatch(r"[-+]?[\d.:eE -]+", value):
                    return Fallback(f"partition column {col} of {label} may not be a string")
    schemas = {frag.physical_schema for frag in data.get_fragments()}
    if not schemas:
        return Fallback(f"{label} has no data files (its columns are in the metastore alone)")
    if len(schemas) > 1:
        return Fallback(f"the Parquet files of {label} differ in their columns")
    return data


def _open_table(warehouse: Path, db: str, name: str, label: str) -> Any | Fallback:
    folder = warehouse / name if db == "default" else warehouse / f"{db}.db" / name
    if not folder.is_dir():
        return Fallback(f"{label} has no table folder (a view, or no such table)")
    try:
        if (folder / "_delta_log").is_dir():
            return _delta_dataset(folder)
        return _parquet_dataset(folder, label)
    except Exception as exc:  # delta-rs' protocol and feature errors, unreadable files: Spark decides
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return Fallback(f"{label} cannot be read without Spark: {first[:200]}")


def _literal_name(node: Any) -> str:
    if isinstance(node, exp.Boolean):
        return "true" if node.this else "false"
    if isinstance(node, exp.Null):
        return "NULL"
    return str(node.this)


_BINARY = {
    "EQ": "=",
    "NEQ": None,
    "GT": ">",
    "GTE": ">=",
    "LT": "<",
    "LTE": "<=",
    "NullSafeEQ": "<=>",
    "And": "AND",
    "Or": "OR",
    "Add": "+",
    "Sub": "-",
    "Mul": "*",
    "Div": "/",
    "Mod": "%",
}


# Spark's name of a function where sqlglot's differs
_FUNC_NAMES = {"Concat": "concat", "ArrayAgg": "collect_list"}


def spark_name(node: Any) -> str:
    """The column name Spark gives the unaliased select expression ``node`` (a sqlglot expression).

    Spark names an expression by its SQL with column names unqualified, string literals unquoted and
    function names in lower case: ``count(*)`` is ``count(1)``, ``counts['rows_in']`` is
    ``counts[rows_in]``, ``a <> b`` is ``(NOT (a = b))``. Expressions not covered here are named by
    sqlglot's Spark SQL, which may differ from Spark's name (see the docs of ``dmine sql``).
    """

    def name(n: exp.Expression) -> str:
        kind = type(n).__name__
        if isinstance(n, exp.Column):
            return n.name
        if isinstance(n, exp.Dot):
            return f"{name(n.this)}.{n.expression.name}"
        if isinstance(n, exp.Literal | exp.Boolean | exp.Null):
            return _literal_name(n)
        if isinstance(n, exp.Paren):
            return name(n.this)
        if isinstance(n, exp.Star):
            return "*"
        if kind == "NEQ":
            return f"(NOT ({name(n.this)} = {name(n.expression)}))"
        if kind in _BINARY:
            return f"({name(n.this)} {_BINARY[kind]} {name(n.expression)})"
        if isinstance(n, exp.DPipe):
            return f"concat({name(n.this)}, {name(n.expression)})"
        if isinstance(n, exp.Not):
            return f"(NOT {name(n.this)})"
        if isinstance(n, exp.Neg):
            return f"(- {name(n.this)})"
        if isinstance(n, exp.Is):
            inner = n.expression
            return f"({name(n.this)} IS {'NULL' if isinstance(inner, exp.Null) else name(inner)})"
        if isinstance(n, exp.In):
            return f"({name(n.this)} IN ({', '.join(name(e) for e in n.expressions)}))"
        if isinstance(n, exp.Like):
            return f"{name(n.this)} LIKE {name(n.expression)}"
        if isinstance(n, exp.Between):  # Spark 4's name; 3.5 writes ((x >= lo) AND (x <= hi))
            return f"between({name(n.this)}, {name(n.args['low'])}, {name(n.args['high'])})"
        if isinstance(n, exp.Bracket):
            return f"{name(n.this)}[{', '.join(name(e) for e in n.expressions)}]"
        if isinstance(n, exp.Cast):
            return f"CAST({name(n.this)} AS {n.to.sql('spark').upper()})"
        if isinstance(n, exp.Case):
            parts = ["CASE"]
            if n.this:
                parts.append(name(n.this))
            for w in n.args.get("ifs") or []:
                parts += ["WHEN", name(w.this), "THEN", name(w.args["true"])]
            if n.args.get("default") is not None:
                parts += ["ELSE", name(n.args["default"])]
            return " ".join([*parts, "END"])
        if isinstance(n, exp.If):
            args = [n.this, n.args["true"], *([n.args["false"]] if n.args.get("false") is not None else [])]
            return f"(IF({', '.join(name(a) for a in args)}))"
        if isinstance(n, exp.Count):
            inner = n.this
            if inner is None or isinstance(inner, exp.Star):
                return "count(1)"
            if isinstance(inner, exp.Distinct):
                return f"count(DISTINCT {', '.join(name(e) for e in inner.expressions)})"
            return f"count({name(inner)})"
        if isinstance(n, exp.Window | exp.Subquery | exp.Exists):
            return n.sql("spark")
        if isinstance(n, exp.Func):
            fname = _FUNC_NAMES.get(type(n).__name__, n.sql_name().lower())
            args: list[exp.Expression] = []
            for key in n.arg_types:  # Spark lists a function's arguments in its signature's order
                value = n.args.get(key)
                args += value if isinstance(value, list) else [value] if isinstance(value, exp.Expression) else []
            return f"{fname}({', '.join(name(a) for a in args)})"
        return n.sql("spark")

    if isinstance(node, exp.Cast) and isinstance(node.this, exp.Column | exp.Dot):
        return name(node.this)  # a column cast keeps the column's name
    return name(node)


def _is_star(node: Any) -> bool:
    return isinstance(node, exp.Star) or (isinstance(node, exp.Column) and isinstance(node.this, exp.Star))


def _time_travel(table: Any) -> str | None:
    if table.args.get("version") is not None:
        return "time travel (VERSION/TIMESTAMP AS OF)"
    if table.find(exp.Parameter):  # Delta's t@v3 and t@20260101000000000
        return "time travel (@ syntax)"
    return None


def plan(query: str, warehouse: Path, database: str = "default") -> FastPlan | Fallback:
    """Plan ``query`` (Spark SQL) for DuckDB over the catalog tables under ``warehouse``, or say why not.

    Parameters
    ----------
    query : str
        One Spark SQL statement.
    warehouse : Path
        The catalog's warehouse folder (``spark.sql.warehouse.dir``).
    database : str
        The database of unqualified table names (Spark's current database).

    Returns
    -------
    FastPlan or Fallback
        The plan, or a :class:`Fallback` saying why Spark must answer. Reading the tables' metadata
        (a Delta log, Parquet footers) happens here; no rows are read.
    """
    try:
        statements = [s for s in sqlglot.parse(query, read="spark") if s is not None]
    except SqlglotError as exc:
        return Fallback(f"cannot parse the query ({str(exc).splitlines()[0][:120]})")
    if len(statements) != 1:
        return Fallback(f"{len(statements)} statements; the fast path runs one query")
    tree = statements[0]
    if not isinstance(tree, exp.Select | exp.SetOperation):
        return Fallback(f"{type(tree).__name__.upper()} is not a query (only SELECT/WITH/set operations)")
    if tree.find(exp.Into):
        return Fallback("SELECT ... INTO")

    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    refs: dict[tuple[str, str], str] = {}
    for table in tree.find_all(exp.Table):
        travel = _time_travel(table)
        if travel:
            return Fallback(travel)
        if not isinstance(table.this, exp.Identifier):
            return Fallback(f"table-valued function {table.this.sql('spark')}")
        catalog, db, name = table.catalog.lower(), table.db.lower(), table.name.lower()
        if not db and name in ctes:
            continue
        if catalog and catalog != _SPARK_CATALOG:
            return Fallback(f"catalog {catalog} is not the local one")
        db = db or database.lower()
        if not (_NAME.match(db) and _NAME.match(name)):
            return Fallback(f"table name {table.sql('spark')} is not a catalog table")
        refs.setdefault((db, name), f"t{len(refs)}")
    for node in tree.walk():
        if isinstance(node, exp.TsOrDsToDate) and isinstance(node.parent, exp.Year | exp.Month | exp.Day):
            continue  # how sqlglot reads year(ts), not a to_date() of the query
        if type(node) not in SUPPORTED:
            what = node.sql_name() if isinstance(node, exp.Func) else type(node).__name__
            return Fallback(f"{what} is not supported by the fast path")
        if isinstance(node, exp.Like) and "\\" in node.expression.sql("spark"):
            return Fallback("a LIKE pattern with a backslash escape")

    sources: dict[str, Any] = {}
    labels: dict[str, str] = {}
    schema: dict[str, dict[str, str]] = {}
    for (db, name), view in refs.items():
        label = f"{db}.{name}"
        data = _open_table(warehouse, db, name, label)
        if isinstance(data, Fallback):
            return data
        try:
            schema[view] = {f.name: _spark_type(f.type) for f in data.schema}
        except ValueError as exc:
            return Fallback(f"{label}: {exc}")
        sources[view], labels[view] = data, label

    # Spark names every unaliased expression by its SQL; give DuckDB those names as aliases
    # (the resolver lower-cases every name, as Spark matches them; the names are kept aside as written)
    for select in list(tree.find_all(exp.Select)):
        named = []
        for e in select.expressions:
            if not _is_star(e):
                e = e if isinstance(e, exp.Alias) else exp.alias_(e, spark_name(e), quoted=True)
                e.meta[_META] = e.alias
            named.append(e)
        select.set("expressions", named)
    for table in list(tree.find_all(exp.Table)):
        key = (table.db.lower() or database.lower(), table.name.lower())
        if (table.db or table.name.lower() not in ctes) and key in refs:
            alias = table.alias or table.name
            table.replace(
                exp.Table(this=exp.to_identifier(refs[key]), alias=exp.TableAlias(this=exp.to_identifier(alias)))
            )
    return _typed(tree, schema, sources, labels)


def _typed(tree: Any, schema: dict[str, dict[str, str]], sources: dict[str, Any], labels: dict[str, str]) -> Any:
    """Resolve columns and types, make Spark's semantics explicit for DuckDB, and write the plan."""
    from sqlglot.optimizer.annotate_types import annotate_types
    from sqlglot.optimizer.qualify import qualify

    try:
        tree = qualify(tree, schema=schema, dialect="spark", quote_identifiers=True, identify=True)
        tree = annotate_types(tree, schema=schema, dialect="spark")
    except SqlglotError as exc:
        return Fallback(f"cannot resolve the query ({str(exc).splitlines()[0][:160]})")
    except Exception as exc:  # a shape of query the resolver does not know: Spark decides
        return Fallback(f"cannot resolve the query ({type(exc).__name__})")

    def kind(node: exp.Expression) -> str:
        return node.type.this.name if node.type is not None else "UNKNOWN"

    for node in list(tree.walk()):
        if isinstance(node, exp.TryCast) and not node.args.get("safe"):
            # Spark's CAST is strict under ANSI (4.x) and null-on-error before it: a strict CAST in DuckDB
            # fails in both cases where they could differ, and then Spark answers
            node = node.replace(exp.Cast(this=node.this, to=node.to, _type=node.type))
        if isinstance(node, exp.Cast | exp.TryCast) and node.to.this.name in _INTEGRAL:
            if kind(node.this) in _FRACTIONAL:  # Spark truncates, DuckDB rounds
                node.this.replace(exp.func("TRUNC", node.this.copy()))
            elif kind(node.this) == "UNKNOWN":
                return Fallback(f"cannot tell the type of {node.this.sql('spark')}")
        if isinstance(node, exp.Div | exp.Mod):
            if "DECIMAL" in (kind(node.this), kind(node.expression)):
                return Fallback("decimal division (Spark keeps a decimal, DuckDB a double)")
            # Spark gives NULL (or an ANSI error) for a zero divisor, DuckDB infinity: let Spark say which
            d = node.expression
            guard = exp.Case(
                ifs=[
                    exp.If(
                        this=exp.EQ(this=d.copy(), expression=exp.Literal.number(0)),
                        true=exp.func("ERROR", exp.Literal.string("division by zero")),
                    )
                ],
                default=d.copy(),
            )
            d.replace(exp.Paren(this=guard))
        if isinstance(node, exp.Avg) and kind(node.this) == "DECIMAL":
            return Fallback("avg of a decimal (Spark keeps a decimal, DuckDB a double)")
        if isinstance(node, exp.Bracket) and kind(node.this) not in {"ARRAY", "MAP"}:
            return Fallback(f"cannot tell the type of {node.this.sql('spark')}")
    head = tree
    while isinstance(head, exp.SetOperation):
        head = head.this
    while isinstance(head, exp.Subquery):
        head = head.this
    # a star's columns are the tables' own names
    as_stored = {n.lower(): n for cols in schema.values() for n in cols}
    columns = [e.meta.get(_META) or as_stored.get(e.alias_or_name, e.alias_or_name) for e in head.expressions]
    try:
        sql = tree.sql("duckdb")
    except SqlglotError as exc:
        return Fallback(f"cannot write the query for DuckDB ({str(exc).splitlines()[0][:160]})")
    return FastPlan(sql=sql, columns=columns, sources=sources, tables=labels)


def _column_values(array: Any) -> list[Any]:
    """The values of one Arrow column, maps as dicts (Arrow gives them as lists of pairs)."""
    import pyarrow as pa

    def convert(t: pa.DataType, v: Any) -> Any:
        if v is None:
            return None
        if pa.types.is_map(t):
            return {convert(t.key_type, k): convert(t.item_type, x) for k, x in v}
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return [convert(t.value_type, x) for x in v]
        if pa.types.is_struct(t):
            return {f.name: convert(f.type, v[f.name]) for f in t}
        if isinstance(v, dt.datetime) and v.tzinfo is not None:
            return v.astimezone(dt.timezone.utc).replace(tzinfo=None)
        if isinstance(v, bytes):
            return bytearray(v)
        return v

    return [convert(array.type, v) for v in array.to_pylist()]


def run(fast: FastPlan, max_rows: int) -> tuple[list[str], list[tuple]] | Fallback:
    """Run a plan in an in-process DuckDB and return at most ``max_rows`` rows, as Spark's path prints them.

    Parameters
    ----------
    fast : FastPlan
        From :func:`plan`.
    max_rows : int
        The most rows to return (``dmine sql --max-rows``); 0 gives the columns alone.

    Returns
    -------
    (columns, rows) or Fallback
        Column names and rows of Python values: timestamps as naive UTC ``datetime``, dates as
        ``date``, decimals as ``Decimal``, maps and structs as ``dict``, arrays as ``list``, NULL as
        None. A :class:`Fallback` when DuckDB raises (a type or binder error, an unknown function),
        so that Spark gives the answer or the error.
    """
    import duckdb
    import pyarrow as pa

    if max_rows < 0:
        return Fallback("a negative --max-rows")
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        for view, data in fast.sources.items():
            con.register(f"{view}_arrow", data)
            # Spark's TIMESTAMP is UTC wall time without a zone (the session's zone is UTC)
            cols = [
                f'CAST("{f.name}" AS TIMESTAMP) AS "{f.name}"'
                if pa.types.is_timestamp(f.type) and (f.type.tz is not None or f.type.unit != "us")
                else f'"{f.name}"'
                for f in data.schema
            ]
            con.execute(f'CREATE VIEW "{view}" AS SELECT {", ".join(cols) or "*"} FROM "{view}_arrow"')
        batch_rows = max(1, min(max_rows, 100_000))
        result = con.sql(fast.sql)
        # DuckDB 2 renamed fetch_arrow_reader to to_arrow_reader
        reader = (getattr(result, "to_arrow_reader", None) or result.fetch_arrow_reader)(batch_rows)
        rows: list[tuple] = []
        while len(rows) < max_rows:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                break
            values = [_column_values(batch.column(i)) for i in range(batch.num_columns)]
            rows += list(zip(*values, strict=True)) if values else []
        return list(fast.columns), rows[:max_rows]
    except duckdb.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return Fallback(f"DuckDB: {first[:200]}")
    finally:
        con.close()
