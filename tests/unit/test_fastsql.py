"""The JVM-free path of ``dmine sql``: planning, Spark's semantics in DuckDB, values and names as Spark gives them."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmine_spark.io.fastsql import Fallback, FastPlan, plan, run, spark_name

UTC = dt.timezone.utc


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse with a Delta table, a Parquet table, a partitioned Parquet table and a table in `default`."""
    from deltalake import write_deltalake

    root = tmp_path_factory.mktemp("warehouse")
    runs = pa.table(
        {
            "run_id": ["r1", "r2", "r3"],
            "started_at": pa.array(
                [dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC), dt.datetime(2026, 1, 3, tzinfo=UTC), None],
                pa.timestamp("us", tz="UTC"),
            ),
            "counts": pa.array(
                [[("rows_in", 10), ("rows_out", 9)], [("rows_in", 20)], []], pa.map_(pa.string(), pa.int64())
            ),
            "labels": pa.array([["a", "b"], [], None], pa.list_(pa.string())),
            "info": pa.array(
                [{"k": 1, "s": "x"}, {"k": 2, "s": None}, None], pa.struct([("k", pa.int32()), ("s", pa.string())])
            ),
            "cost": pa.array([Decimal("1.50"), Decimal("2.25"), None], pa.decimal128(10, 2)),
            "day": pa.array([dt.date(2026, 1, 2), None, dt.date(2026, 1, 4)], pa.date32()),
            "score": [0.5, 1.7, -1.7],
        }
    )
    write_deltalake(str(root / "dmine.db" / "runs"), runs)
    preds = pa.table(
        {
            "id": ["1", "2", "3", "4"],
            "label": ["a", "a", "b", None],
            "prediction": ["a", "b", "b", "c"],
            "Probability": [0.9, 0.4, 0.8, 0.1],
        }
    )
    (root / "dmine.db" / "pred_t").mkdir(parents=True)
    pq.write_table(preds, root / "dmine.db" / "pred_t" / "part-0.parquet")
    (root / "dmine.db" / "pred_t" / "_SUCCESS").touch()
    for stage, ids in (("clean", ["1"]), ("ingest", ["2", "3"])):
        folder = root / "dmine.db" / "quarantine_t" / f"stage={stage}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"id": ids}), folder / "part-0.parquet")
    for stage in ("1", "2"):
        folder = root / "dmine.db" / "numbered" / f"n={stage}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"id": ["x"]}), folder / "part-0.parquet")
    (root / "dmine.db" / "empty_t").mkdir(parents=True)
    (root / "loose").mkdir()
    pq.write_table(pa.table({"x": [1, 2]}), root / "loose" / "part-0.parquet")
    return root


def _answer(warehouse: Path, query: str, max_rows: int = 100) -> tuple[list[str], list[tuple]]:
    got = plan(query, warehouse)
    assert isinstance(got, FastPlan), got
    out = run(got, max_rows)
    assert not isinstance(out, Fallback), out
    return out


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("INSERT INTO dmine.runs SELECT * FROM dmine.runs", "INSERT is not a query"),
        ("CREATE VIEW v AS SELECT 1", "CREATE is not a query"),
        ("DROP TABLE dmine.runs", "DROP is not a query"),
        ("SET spark.sql.ansi.enabled=false", "is not a query"),
        ("SHOW TABLES IN dmine", "is not a query"),
        ("DESCRIBE HISTORY dmine.runs", "is not a query"),
        ("CACHE TABLE dmine.runs", "is not a query"),
        ("SELECT 1; SELECT 2", "2 statements"),
        ("SELECT * FROM dmine.runs VERSION AS OF 1", "time travel"),
        ("SELECT * FROM dmine.runs TIMESTAMP AS OF '2026-01-01'", "time travel"),
        ("SELECT * FROM dmine.runs@v1", "time travel"),
        ("SELECT * FROM dmine.answer_t", "dmine.answer_t has no table folder"),
        ("SELECT * FROM range(3)", "table-valued function"),
        ("SELECT * FROM other.dmine.runs", "catalog other is not the local one"),
        ("SELECT * FROM parquet.`/etc`", "is not a catalog table"),
        ("SELECT percentile_approx(score, 0.5) FROM dmine.runs", "is not supported by the fast path"),
        ("SELECT round(score, 1) FROM dmine.runs", "ROUND is not supported"),
        ("SELECT explode(labels) FROM dmine.runs", "is not supported"),
        ("SELECT nope FROM dmine.runs", "cannot resolve the query"),
        ("SELECT avg(cost) FROM dmine.runs", "avg of a decimal"),
        ("SELECT cost / 2 FROM dmine.runs", "decimal division"),
        ("SELECT * FROM dmine.pred_t WHERE label LIKE 'a\\\\_b'", "backslash"),
        ("SELECT * FROM dmine.numbered", "partition column n of dmine.numbered may not be a string"),
        ("SELECT * FROM dmine.empty_t", "dmine.empty_t has no data files"),
        ("SELEC 1", "cannot parse"),
    ],
)
def test_what_the_fast_path_leaves_to_spark(warehouse: Path, query: str, reason: str) -> None:
    got = plan(query, warehouse)
    assert isinstance(got, Fallback), got
    assert reason in got.reason


def test_a_delta_table_delta_rs_cannot_read_falls_back(warehouse: Path, tmp_path: Path) -> None:
    bad = tmp_path / "dmine.db" / "broken" / "_delta_log"
    bad.mkdir(parents=True)
    (bad / "00000000000000000000.json").write_text('{"protocol":{"minReaderVersion":99,"minWriterVersion":99}}\n')
    got = plan("SELECT * FROM dmine.broken", tmp_path)
    assert isinstance(got, Fallback) and "dmine.broken cannot be read without Spark" in got.reason


def test_errors_inside_duckdb_fall_back(warehouse: Path) -> None:
    got = plan("SELECT CAST(label AS INT) FROM dmine.pred_t", warehouse)
    assert isinstance(got, FastPlan)
    out = run(got, 10)  # 'a' is no number: Spark answers (NULL before 3.5's ANSI default, an error on 4.x)
    assert isinstance(out, Fallback) and out.reason.startswith("DuckDB: ")
    divided = run(plan("SELECT score / 0 FROM dmine.runs", warehouse), 10)
    assert isinstance(divided, Fallback) and "division by zero" in divided.reason


def test_values_come_back_as_spark_gives_them(warehouse: Path) -> None:
    cols, rows = _answer(warehouse, "SELECT * FROM dmine.runs ORDER BY run_id")
    assert cols == ["run_id", "started_at", "counts", "labels", "info", "cost", "day", "score"]
    assert rows[0] == (
        "r1",
        dt.datetime(2026, 1, 2, 3, 4, 5, 123456),  # naive UTC, as the Spark session (UTC) gives it
        {"rows_in": 10, "rows_out": 9},
        ["a", "b"],
        {"k": 1, "s": "x"},
        Decimal("1.50"),
        dt.date(2026, 1, 2),
        0.5,
    )
    assert rows[0][1].tzinfo is None
    assert rows[2] == ("r3", None, {}, None, None, None, dt.date(2026, 1, 4), -1.7)


def test_spark_semantics_in_duckdb(warehouse: Path) -> None:
    q = (
        "SELECT counts['rows_in'] AS n, counts['missing'] AS m, labels[0] AS first, info.k AS k, "
        "CAST(score AS INT) AS truncated, 5 / 2 AS half, label || '-' AS dash "
        "FROM dmine.runs JOIN dmine.pred_t ON pred_t.id = '4' ORDER BY run_id"
    )
    cols, rows = _answer(warehouse, q)
    assert cols == ["n", "m", "first", "k", "truncated", "half", "dash"]
    # map lookups by key, arrays from 0, CAST truncates toward zero, / divides exactly, || is NULL-strict
    assert rows == [
        (10, None, "a", 1, 0, 2.5, None),
        (20, None, None, 2, 1, 2.5, None),
        (None, None, None, None, -1, 2.5, None),
    ]
    _, ordered = _answer(warehouse, "SELECT label FROM dmine.pred_t ORDER BY label")
    assert [r[0] for r in ordered] == [None, "a", "a", "b"]  # Spark puts NULLs first when ascending
    _, desc = _answer(warehouse, "SELECT label FROM dmine.pred_t ORDER BY label DESC")
    assert [r[0] for r in desc] == ["b", "a", "a", None]


def test_time_and_partitions(warehouse: Path) -> None:
    _, rows = _answer(warehouse, "SELECT max(started_at), year(started_at) FROM dmine.runs GROUP BY 2 ORDER BY 2")
    assert rows == [(None, None), (dt.datetime(2026, 1, 3), 2026)]
    _, rows = _answer(warehouse, "SELECT stage, count(*) FROM dmine.quarantine_t GROUP BY stage ORDER BY stage")
    assert rows == [("clean", 1), ("ingest", 2)]
    cols, rows = _answer(warehouse, "SELECT count(*) FROM loose")  # the default database is the warehouse itself
    assert (cols, rows) == (["count(1)"], [(2,)])


def test_spark_column_names(warehouse: Path) -> None:
    q = (
        "SELECT count(*), COUNT(DISTINCT label), avg(CAST(label = prediction AS INT)), max(P.Probability), "
        "Label, p.id, CAST(probability AS STRING), 1, 'abc', label <> prediction, label IS NULL, "
        "probability + 1, coalesce(label, 'x'), label IN ('a', 'b'), label || prediction, "
        "CASE WHEN probability > 0.5 THEN 'hi' ELSE 'lo' END, probability BETWEEN 0.1 AND 0.9 "
        "FROM dmine.pred_t p GROUP BY label, p.id, probability, prediction"
    )
    cols, _ = _answer(warehouse, q)
    assert cols == [
        "count(1)",
        "count(DISTINCT label)",
        "avg(CAST((label = prediction) AS INT))",
        "max(Probability)",
        "Label",
        "id",
        "probability",
        "1",
        "abc",
        "(NOT (label = prediction))",
        "(label IS NULL)",
        "(probability + 1)",
        "coalesce(label, x)",
        "(label IN (a, b))",
        "concat(label, prediction)",
        "CASE WHEN (probability > 0.5) THEN hi ELSE lo END",
        "between(probability, 0.1, 0.9)",
    ]
    cols, _ = _answer(warehouse, "SELECT counts['rows_in'], * FROM dmine.pred_t, dmine.runs LIMIT 1")
    assert cols[:6] == ["counts[rows_in]", "id", "label", "prediction", "Probability", "run_id"]
    cols, _ = _answer(warehouse, "SELECT * FROM (SELECT count(*) FROM dmine.pred_t) UNION ALL SELECT 7 AS x")
    assert cols == ["count(1)"]


def test_spark_name_of_expressions() -> None:
    import sqlglot

    def name(sql: str) -> str:
        return spark_name(sqlglot.parse_one(f"SELECT {sql}", read="spark").expressions[0])

    assert name("COUNT(*)") == "count(1)"
    assert name("-x") == "(- x)"
    assert name("NOT a") == "(NOT a)"
    assert name("CAST(1.7 AS INT)") == "CAST(1.7 AS INT)"
    assert name("if(p > 0.5, 1, 0)") == "(IF((p > 0.5), 1, 0))"
    assert name("a <=> b") == "(a <=> b)"
    assert name("lower(t.text)") == "lower(text)"
    assert name("collect_list(x)") == "collect_list(x)"


def test_max_rows(warehouse: Path) -> None:
    got = plan("SELECT id FROM dmine.pred_t ORDER BY id", warehouse)
    assert run(got, 2) == (["id"], [("1",), ("2",)])
    assert run(got, 0) == (["id"], [])
    assert isinstance(run(got, -1), Fallback)


def test_ctes_and_subqueries(warehouse: Path) -> None:
    # ties on n are ordered by label, so the answer has one right order
    q = (
        "WITH hits AS (SELECT label FROM dmine.pred_t WHERE label = prediction) "
        "SELECT label, count(*) AS n FROM hits WHERE label IN (SELECT label FROM dmine.pred_t) "
        "GROUP BY label ORDER BY n DESC, label"
    )
    assert _answer(warehouse, q) == (["label", "n"], [("a", 1), ("b", 1)])
