"""``splits`` deal a source's rows out by a seeded hash of the row id; ``split_seed`` picks the deal."""

from __future__ import annotations

import pytest
from pyspark.testing import assertDataFrameEqual

from dmine_spark.config import SourceConfig
from dmine_spark.prepare.ingest import read_source

ROWS = 4000
FRACTIONS = {"train": 0.7, "valid": 0.1, "test": 0.2}


@pytest.fixture(scope="module")
def tickets(tmp_path_factory: pytest.TempPathFactory) -> str:
    p = tmp_path_factory.mktemp("splits") / "tickets.csv"
    p.write_text("ticket,text\n" + "".join(f"T{i:05d},message number {i}\n" for i in range(ROWS)), encoding="utf-8")
    return str(p)


def _splits(spark, path: str, **settings):
    src = SourceConfig(
        path=path,
        schema="ticket STRING, text STRING",
        options={"header": True},
        id_col="ticket",
        splits=FRACTIONS,
        **settings,
    )
    return read_source(spark, "tickets", src, required=["text"]).rows.select("id", "split")


def _moved(a, b) -> int:
    return a.join(b.withColumnRenamed("split", "other"), "id").where("split != other").count()


def test_the_same_split_seed_reproduces_the_splits_and_another_moves_rows(spark, tickets) -> None:
    first = _splits(spark, tickets, split_seed=11)
    assertDataFrameEqual(_splits(spark, tickets, split_seed=11), first)
    # two independent deals of 70/10/20 agree on 0.7² + 0.1² + 0.2² = 54% of the rows
    assert 0.35 * ROWS < _moved(first, _splits(spark, tickets, split_seed=12)) < 0.55 * ROWS
    # the sampling seed no longer moves rows once the split seed is set
    assertDataFrameEqual(_splits(spark, tickets, split_seed=11, sample_seed=3), first)


def test_without_a_split_seed_the_splits_stay_where_sample_seed_put_them(spark, tickets) -> None:
    assertDataFrameEqual(_splits(spark, tickets), _splits(spark, tickets, split_seed=7))
    assertDataFrameEqual(_splits(spark, tickets, sample_seed=3), _splits(spark, tickets, split_seed=3))
    assert _moved(_splits(spark, tickets), _splits(spark, tickets, sample_seed=3)) > 0


@pytest.mark.parametrize("seed", [7, 12])
def test_the_fractions_are_respected(spark, tickets, seed: int) -> None:
    counts = {
        r["split"]: r["count"] for r in _splits(spark, tickets, split_seed=seed).groupBy("split").count().collect()
    }
    assert sum(counts.values()) == ROWS
    for name, fraction in FRACTIONS.items():
        # about four standard deviations of a binomial share over 4,000 rows
        assert counts[name] / ROWS == pytest.approx(fraction, abs=0.03), counts
