"""Nearest-neighbour search on real BANKING77 embeddings in local Spark: exact blocks, the index, the store."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.ml import PipelineModel
from pyspark.testing import assertDataFrameEqual

from dmine_spark.mine.neighbors import NeighborIndex, exact_topk, neighbor_rows, normalize_rows, recall_at_k
from dmine_spark.mine.store import ModelStore

SCHEMA = "id STRING, split STRING, text STRING, label STRING, embedding ARRAY<FLOAT>"


@pytest.fixture(scope="module")
def rows(banking77: Path, encoder) -> pd.DataFrame:
    """Every 25th training question (401) and every 20th test question (155), with default-model vectors."""
    out = []
    for split, step in (("train", 25), ("test", 20)):
        with open(banking77 / f"{split}.csv", newline="", encoding="utf-8") as fh:
            got = list(csv.DictReader(fh))[::step]
        out += [(f"{split}:{i}", split, r["text"], r["category"]) for i, r in enumerate(got)]
    pdf = pd.DataFrame(out, columns=["id", "split", "text", "label"])
    pdf["embedding"] = list(encoder.encode(pdf["text"].tolist()))
    return pdf


@pytest.fixture(scope="module")
def frames(spark, rows: pd.DataFrame):
    df = spark.createDataFrame([(*r[:4], r[4].tolist()) for r in rows.itertuples(index=False)], SCHEMA).cache()
    return df.where("split = 'test'"), df.where("split = 'train'")


def _brute(rows: pd.DataFrame, k: int, *, exclude_self: bool = False, corpus_split: str = "train") -> pd.DataFrame:
    """The exact answer in plain numpy: every query against every corpus row, ties by neighbour id."""
    q = rows[rows.split == "test"] if not exclude_self else rows[rows.split == corpus_split]
    c = rows[rows.split == corpus_split].sort_values("id")
    s = normalize_rows(np.stack(q.embedding)) @ normalize_rows(np.stack(c.embedding)).T
    cid = c.id.to_numpy()
    out = []
    for qi, qid in enumerate(q.id):
        order = sorted(range(len(cid)), key=lambda j: (-s[qi, j], cid[j]))
        order = [j for j in order if not (exclude_self and cid[j] == qid)][:k]
        out += [(qid, r + 1, cid[j], float(s[qi, j])) for r, j in enumerate(order)]
    return pd.DataFrame(out, columns=["id", "rank", "neighbor_id", "score"])


@pytest.mark.parametrize("path", ["blocked", "broadcast"])
def test_exact_search_equals_numpy_brute_force_row_for_row(spark, frames, rows, path: str) -> None:
    queries, corpus = frames
    opts = {"block_rows": 64, "broadcast_max_rows": 0} if path == "blocked" else {"broadcast_max_rows": 10_000}
    got = exact_topk(queries, corpus, 5, **opts)
    assert got.columns == ["id", "rank", "neighbor_id", "score"]
    want = spark.createDataFrame(_brute(rows, 5), "id STRING, rank INT, neighbor_id STRING, score DOUBLE")
    assertDataFrameEqual(got, want, rtol=1e-5)


def test_exclude_self_never_returns_the_query_and_keeps_k(spark, frames, rows) -> None:
    _, corpus = frames
    got = exact_topk(corpus, corpus, 3, block_rows=100, broadcast_max_rows=0, exclude_self=True)
    assert got.where("id = neighbor_id").isEmpty()
    want = _brute(rows, 3, exclude_self=True)
    assertDataFrameEqual(got, spark.createDataFrame(want, "id STRING, rank INT, neighbor_id STRING, score DOUBLE"))
    with_self = exact_topk(corpus, corpus, 1).where("rank = 1")
    assert with_self.where("id != neighbor_id").count() <= 2  # repeated training texts tie with themselves


def test_exact_search_checks_its_columns_before_any_job(frames) -> None:
    queries, corpus = frames
    with pytest.raises(ValueError, match="vector column 'vec' not found"):
        exact_topk(queries, corpus, 5, vec_col="vec")
    with pytest.raises(TypeError, match="must be array<float>"):
        exact_topk(queries, corpus, 5, vec_col="text")


def test_the_index_round_trips_through_the_store_and_answers_in_an_arrow_udf(spark, frames, rows, tmp_path) -> None:
    queries, corpus = frames
    index = NeighborIndex.fit_frame(corpus, label_col="label", text_col="text", k=10)
    store = ModelStore(tmp_path / "models")
    version = store.save("banking77-index", PipelineModel(stages=[index]))
    loaded, _ = store.load(version)
    again = loaded.stages[-1]
    assert isinstance(again, NeighborIndex) and again is not index
    assert again.size == 401 and again.labels == index.labels and again.texts[:3] == index.texts[:3]
    got = neighbor_rows(loaded.transform(queries)).toPandas()
    exact = _brute(rows, 10)
    found = got.sort_values(["id", "rank"]).groupby("id").neighbor_id.apply(list)
    truth = exact.groupby("id").neighbor_id.apply(list)
    assert list(found.index) == list(truth.index)  # every query answered
    assert recall_at_k(found.tolist(), truth.tolist()) >= 0.95
    # labels travel with the neighbours: the first neighbour's label is the query's on most of BANKING77
    first = got[got["rank"] == 1].set_index("id").neighbor_label
    labels = rows.set_index("id").label
    assert (first == labels[first.index]).mean() >= 0.6
    # the driver's search gives what the UDF gave
    pos, _ = again.search(np.stack(rows[rows.split == "test"].embedding), 10)
    assert [again.ids[p] for p in pos[0]] == found.loc[rows[rows.split == "test"].id.iloc[0]]
