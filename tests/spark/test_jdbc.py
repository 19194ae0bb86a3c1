"""JDBC sources against a real PostgreSQL server (started by .ci/postgres.sh)."""

from __future__ import annotations

import pytest

from dmine_spark.config import ConfigError, SourceConfig
from dmine_spark.prepare.ingest import read_source

PG_USER = "dmine"


@pytest.fixture(scope="module")
def tickets(spark, jdbc_url, monkeypatch_module) -> str:
    monkeypatch_module.setenv("DMINE_TEST_PG_PASSWORD", "dmine")
    rows = [(i, f"ticket number {i}", "card" if i % 2 else "cash", str(i % 5)) for i in range(1, 201)]
    rows += [(201, "stars is not a number", "card", "five"), (202, None, "cash", "1")]
    (
        spark.createDataFrame(rows, "ticket_id INT, body STRING, topic STRING, stars STRING")
        .write.format("jdbc")
        .option("url", jdbc_url)
        .option("dbtable", "public.tickets")
        .option("driver", "org.postgresql.Driver")
        .option("user", PG_USER)
        .option("password", "dmine")
        .mode("overwrite")
        .save()
    )
    return jdbc_url


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_jdbc_table_with_partitioned_read_and_quarantine(spark, tickets) -> None:
    src = SourceConfig(
        format="jdbc",
        url=tickets,
        table="public.tickets",
        user=PG_USER,
        password_env="DMINE_TEST_PG_PASSWORD",
        schema="ticket_id INT, body STRING, topic STRING, stars INT",
        options={"partitionColumn": "ticket_id", "lowerBound": 1, "upperBound": 202, "numPartitions": 3},
        id_col="ticket_id",
    )
    res = read_source(spark, "pg", src, required=["body"])
    assert res.total.rdd.getNumPartitions() == 3  # read in parallel by ticket_id ranges
    assert res.rows.count() == 200
    q = {r.id: (r.rule, r.reason) for r in res.quarantine.collect()}
    assert q == {
        "pg:201": ("wrong_type", "column stars: 'five' is not a valid INT"),
        "pg:202": ("missing_required_field", "required field is null or empty: body"),
    }
    assert res.total.count() == 202
    one = res.rows.where("id = 'pg:7'").first()
    assert (one.body, one.topic, one.stars) == ("ticket number 7", "card", 2)
    assert one.source_file == f"{tickets}#public.tickets"


def test_jdbc_query_source(spark, tickets) -> None:
    src = SourceConfig(
        format="jdbc",
        url=tickets,
        query="SELECT body AS text, topic AS label FROM public.tickets WHERE topic = 'cash'",
        user=PG_USER,
        password_env="DMINE_TEST_PG_PASSWORD",
        schema="text STRING, label STRING",
    )
    res = read_source(spark, "q", src, required=["text"])
    assert res.rows.count() == 100 and res.quarantine.count() == 1


def test_jdbc_password_must_come_from_the_environment(spark, tickets) -> None:
    src = SourceConfig(
        format="jdbc",
        url=tickets,
        table="public.tickets",
        user=PG_USER,
        password_env="DMINE_NO_SUCH_VAR",
        schema="body STRING",
    )
    with pytest.raises(ConfigError, match="sources.pg.password_env: environment variable DMINE_NO_SUCH_VAR is not set"):
        read_source(spark, "pg", src, required=[])
