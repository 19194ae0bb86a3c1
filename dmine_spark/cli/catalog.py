"""``dmine sql``, ``dmine tables`` and ``dmine serve-sql``: the result tables, from a shell or a JDBC client."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from dmine_spark.cli.common import catalog_args, catalog_work_dir, profile, session
from dmine_spark.cli.registry import command
from dmine_spark.config import ConfigError, SparkProfile, WorkDir

__all__ = ["sql", "tables", "serve_sql", "format_rows"]

log = logging.getLogger(__name__)


def format_rows(cols: list[str], rows: list[tuple], fmt: str) -> str:
    """Query results as ``table`` (aligned, cells cut at 60 characters), ``tsv`` or ``json`` (a line per row)."""
    if fmt == "json":
        return "".join(
            json.dumps(dict(zip(cols, r, strict=True)), default=str, ensure_ascii=False) + "\n" for r in rows
        )
    if fmt == "tsv":
        lines = ["\t".join(cols)] + ["\t".join("" if v is None else str(v) for v in r) for r in rows]
        return "\n".join(lines) + "\n"
    cells = [[("NULL" if v is None else str(v)) for v in r] for r in rows]
    widths = [min(60, max([len(c)] + [len(row[i]) for row in cells])) for i, c in enumerate(cols)]

    def line(vals: list[str]) -> str:
        return "  ".join(v[:60].ljust(w) for v, w in zip(vals, widths, strict=True)).rstrip()

    out = [line(cols), *(line(row) for row in cells), f"({len(rows)} row{'s' if len(rows) != 1 else ''})"]
    return "\n".join(out) + "\n"


def _sql_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("query")
    sp.add_argument("--format", choices=["table", "tsv", "json"], default="table")
    sp.add_argument("--max-rows", type=int, default=100)
    sp.add_argument(
        "--engine",
        choices=["auto", "spark", "duckdb"],
        default="auto",
        help="auto: DuckDB over the table files when it can answer exactly as Spark would, else Spark "
        "(default); duckdb: DuckDB or an error saying why not; spark: always Spark",
    )
    catalog_args(sp)


# Spark settings under which a query could mean something else than over the warehouse folder in UTC
_SPARK_ONLY_CONF = (
    "spark.sql.warehouse.dir",
    "spark.sql.catalogImplementation",
    "spark.sql.catalog.",
    "spark.sql.defaultCatalog",
    "spark.sql.session.timeZone",
    "spark.sql.ansi.",
    "spark.sql.legacy.",
    "spark.sql.caseSensitive",
)


def _no_fast_path(prof: SparkProfile) -> str | None:
    """Why the profile's catalog cannot be read from its files without Spark, or None when it can."""
    if os.environ.get("PYSPARK_GATEWAY_PORT"):
        return "running under spark-submit"
    if prof.kind != "local" or not prof.master.startswith("local"):
        return f"the profile's master {prof.master} is not local"
    if prof.catalog != "hive":
        return "the profile has no persistent (hive) catalog"
    changed = sorted(k for k in prof.conf if k.startswith(_SPARK_ONLY_CONF))
    if changed:
        return f"the profile sets {changed[0]}"
    return None


def _fast_sql(args: argparse.Namespace, work_dir: Path, prof: SparkProfile) -> tuple[list[str], list[tuple]] | str:
    """The query's columns and rows from DuckDB, or why Spark must answer (a log line)."""
    why = _no_fast_path(prof)
    if why:
        return why
    from dmine_spark.io import fastsql

    try:
        got = fastsql.plan(args.query, WorkDir(work_dir).warehouse)
        if isinstance(got, fastsql.FastPlan):
            got = fastsql.run(got, args.max_rows)
    except Exception as exc:  # a query shape the libraries choke on: Spark still answers; -vv shows why
        log.debug("sql: the fast path failed", exc_info=True)
        return f"the fast path failed ({type(exc).__name__})"
    return got.reason if isinstance(got, fastsql.Fallback) else got


@command("sql", "run a SQL query against the dmine catalog", _sql_args)
def sql(args: argparse.Namespace) -> int:
    work_dir = catalog_work_dir(args)
    prof = profile(args.profile, args.conf_dir, required=False)
    if args.engine != "spark":
        got = _fast_sql(args, work_dir, prof)
        if not isinstance(got, str):
            log.info("sql: answered by DuckDB over the table files")
            sys.stdout.write(format_rows(*got, args.format))
            return 0
        if args.engine == "duckdb":
            raise ConfigError(f"sql --engine duckdb: {got}; use --engine spark")
        log.info("sql: answered by Spark (%s)", got)
    spark = session(prof, work_dir, "dmine-sql")
    from pyspark.errors import AnalysisException, ParseException

    # pyspark logs every failed query as a JSON record; the one-line error below says it all
    logging.getLogger("SQLQueryContextLogger").setLevel(logging.CRITICAL)
    try:
        df = spark.sql(args.query)
    except (AnalysisException, ParseException) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"sql: {first}") from None
    rows = [tuple(r.asDict(recursive=True).values()) for r in df.limit(args.max_rows).collect()]
    sys.stdout.write(format_rows(df.columns, rows, args.format))
    return 0


def _tables_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--database", default="dmine")
    catalog_args(sp)


@command("tables", "list the tables of a dmine database with row counts", _tables_args)
def tables(args: argparse.Namespace) -> int:
    work_dir = catalog_work_dir(args)
    spark = session(profile(args.profile, args.conf_dir, required=False), work_dir, "dmine-tables")
    from dmine_spark.io.tables import list_tables

    found = list_tables(spark, args.database)
    if not found:
        sys.stdout.write(f"no tables in database {args.database}\n")
    for name, n in found:
        sys.stdout.write(f"{name:<40} {n:>12,} rows\n")
    return 0


def _serve_args(sp: argparse.ArgumentParser) -> None:
    from dmine_spark.tools.serve_sql import add_arguments

    add_arguments(sp)


@command(
    "serve-sql",
    "serve the dmine catalog over JDBC/ODBC (HiveServer2 protocol) until Ctrl-C; holds the catalog meanwhile",
    _serve_args,
)
def serve_sql(args: argparse.Namespace) -> int:
    from dmine_spark.tools.serve_sql import run

    return run(args)
