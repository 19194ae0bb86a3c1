"""Spark NLP backends on the 3.5 line: embeddings from dmine's model in Spark NLP, and Spark NLP cleaning."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from dmine_spark.config import CleanConfig, ConfigError, PiiConfig
from dmine_spark.features.embed import Embedder, EmbeddingCache, cache_filter
from dmine_spark.features.encoder import ModelSpec
from dmine_spark.prepare.clean import TextCleaner, clean_frame

pytestmark = pytest.mark.sparknlp

N = 200  # real BANKING77 test texts per comparison


@pytest.fixture(scope="module")
def texts(banking77_texts) -> list[str]:
    return banking77_texts[:N]


@pytest.fixture(scope="module")
def reference(encoder, texts) -> np.ndarray:
    return np.asarray(encoder.encode(pd.Series(texts)))


def _embed(spark, texts: list[str | None], backend: str) -> list[list[float] | None]:
    df = spark.createDataFrame(list(enumerate(texts)), "id LONG, text STRING")
    rows = Embedder(backend=backend).transform(df).orderBy("id").collect()
    assert [r["id"] for r in rows] == list(range(len(texts)))  # no row added or lost
    return [r["embedding"] for r in rows]


def test_e5_pooling_gives_dmines_vectors(spark, texts, reference) -> None:
    got = np.asarray(_embed(spark, texts, "sparknlp"), dtype=np.float32)
    cos = (got * reference).sum(axis=1)
    assert cos.min() >= 0.999, f"min cosine {cos.min():.5f}"
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_classic_bert_average_pooling_is_close(spark, texts, reference) -> None:
    got = np.asarray(_embed(spark, texts, "sparknlp-bert"), dtype=np.float32)
    cos = (got * reference).sum(axis=1)
    # the gap is the pooling: first wordpiece per token, no [CLS]/[SEP] (docs/embedding.md)
    assert cos.mean() >= 0.98, f"mean cosine {cos.mean():.4f}"
    assert cos.mean() < 0.999  # it is a different pooling, which is why it is cached apart


def test_null_and_empty_texts_get_null_vectors(spark) -> None:
    got = _embed(spark, ["card lost", None, ""], "sparknlp")
    assert got[0] is not None and len(got[0]) == 384
    assert got[1] is None and got[2] is None


def test_e5_vectors_share_the_cache_and_classic_ones_do_not(spark, texts) -> None:
    table = "default.emb_cache_sparknlp"
    spark.sql(f"DROP TABLE IF EXISTS {table}")
    df = spark.createDataFrame([(t,) for t in texts[:40]], "text STRING")
    e5 = EmbeddingCache(spark, table, ModelSpec(backend="sparknlp"))
    assert (e5.spec.device, e5.spec.precision) == ("cpu", "fp32")
    assert e5.fill(df).embedded == 40
    # the same key as dmine's own fp32 engines: they find every vector there
    assert EmbeddingCache(spark, table, ModelSpec(backend="torch", precision="fp32")).fill(df).embedded == 0
    classic = EmbeddingCache(spark, table, ModelSpec(backend="sparknlp-bert"))
    assert classic.fill(df).embedded == 40
    pools = {r["pooling"]: r["n"] for r in spark.table(table).groupBy("pooling").agg(F.count("*").alias("n")).collect()}
    assert pools == {"mean": 40, "mean@sparknlp-bert": 40}
    assert spark.table(table).where(cache_filter(classic.spec)).count() == 40


def test_sparknlp_cleaning_masks_strips_and_tokenises(spark) -> None:
    rows = [
        (1, "<p>Hello &amp; welcome!</p> Mail me at john.doe@example.com, I haven't got my card"),
        (2, None),
        (3, "我的卡丢了 怎么办"),
        (4, "Call +1 415 555 2671 to re-add it <b>now</b>"),
    ]
    df = spark.createDataFrame(rows, "id LONG, text STRING")
    out = TextCleaner(backend="sparknlp", outputCol="clean").transform(df)
    got = {r["id"]: r["clean"] for r in out.collect()}
    assert got[1] == "Hello welcome Mail <EMAIL> havent got card"  # tags, entities, stop words, punctuation gone
    assert got[2] is None
    assert got[3] == "我的卡丢了 怎么办"
    assert got[4] == "Call <PHONE> readd"
    assert out.columns == ["id", "text", "clean"]


def test_sparknlp_cleaning_keeps_the_row_accounting(spark) -> None:
    rows = [(i, "split", "s", "f", t) for i, t in enumerate(["the and of", "card lost", "card lost", "  ", "new pin"])]
    df = spark.createDataFrame(rows, "id LONG, split STRING, source STRING, source_file STRING, text STRING")
    cfg = CleanConfig(backend="sparknlp")
    res = clean_frame(df, cfg, dedup_groups=["split"], pii=PiiConfig())
    outcome = {r["id"]: r["outcome"] for r in res.decided.collect()}
    # only stop words, or nothing: quarantined as empty; an exact repeat: a duplicate; every row once
    assert outcome == {0: "quarantine", 1: "clean", 2: "duplicate", 3: "quarantine", 4: "clean"}
    assert res.clean.count() + res.quarantine.count() + res.duplicates.count() == df.count()
    assert {r["rule"] for r in res.quarantine.collect()} == {"empty_text"}


def test_a_saved_model_keeps_its_sparknlp_cleaner(spark, tmp_path) -> None:
    from pyspark.ml import Pipeline, PipelineModel

    df = spark.createDataFrame([(1, "<i>the</i> card is lost")], "id LONG, text STRING")
    model = Pipeline(stages=[TextCleaner(backend="sparknlp", outputCol="clean")]).fit(df)
    model.write().overwrite().save(str(tmp_path / "m"))
    loaded = PipelineModel.load(str(tmp_path / "m"))
    assert loaded.transform(df).first()["clean"] == "card lost"


def test_missing_jars_are_one_line(spark, monkeypatch) -> None:
    from dmine_spark.prepare import sparknlp

    class NoJvm:
        def __getattr__(self, name):  # every class lookup answers like a missing jar (a py4j JavaPackage)
            return object()

    monkeypatch.setattr(type(spark.sparkContext), "_jvm", NoJvm(), raising=False)
    with pytest.raises(ConfigError, match=r"^clean.backend: sparknlp: Spark NLP's jars are not on .*dmine jars fetch"):
        sparknlp.require_sparknlp(spark, "clean.backend")
