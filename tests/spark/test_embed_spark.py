"""The Embedder stage gives the same vectors as the encoder core, as float32 arrays, cached or not."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.sql.types import ArrayType, FloatType

from dmine_spark.features.embed import Embedder


def test_the_embedder_matches_the_core(spark, encoder, banking77_texts) -> None:
    texts = banking77_texts[:200]
    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "id INT, text STRING").repartition(3)
    ref = encoder.encode(texts)  # fp32
    out = Embedder(inputCol="text", outputCol="emb", precision="fp32").transform(df)
    assert out.schema["emb"].dataType == ArrayType(FloatType())
    got = {r.id: np.asarray(r.emb, dtype=np.float32) for r in out.collect()}
    np.testing.assert_allclose(np.stack([got[i] for i in range(len(texts))]), ref, atol=1e-4)
    # the default precision (bf16 where the CPU has it): other batches round differently, so cosine, not equality
    got = {
        r.id: np.asarray(r.emb, dtype=np.float32)
        for r in Embedder(inputCol="text", outputCol="emb").transform(df).collect()
    }
    cos = (np.stack([got[i] for i in range(len(texts))]) * ref).sum(1)
    assert cos.min() >= 0.999 and cos.mean() >= 0.9999


def test_a_null_text_gets_a_null_vector(spark) -> None:
    df = spark.createDataFrame([(1, "a real text"), (2, None)], "id INT, text STRING")
    got = {r.id: r.embedding for r in Embedder().transform(df).collect()}
    assert got[2] is None and len(got[1]) == 384


def test_with_a_cache_table_the_embedder_fills_it_and_reads_from_it(spark, banking77_texts) -> None:
    spark.sql("DROP TABLE IF EXISTS default.emb_cache_stage")
    df = spark.createDataFrame([(i, t) for i, t in enumerate(banking77_texts[:30])], "id INT, text STRING")
    stage = Embedder(cacheTable="default.emb_cache_stage")
    first, report = stage.embed(df)
    assert report.embedded == 30 and first.count() == 30
    _, again = stage.embed(df)
    assert again.embedded == 0 and spark.table("default.emb_cache_stage").count() == 30


def test_a_cache_table_in_a_missing_database_is_skipped(spark) -> None:
    df = spark.createDataFrame([(1, "a text")], "id INT, text STRING")
    out, report = Embedder(cacheTable="no_such_db.emb_cache").embed(df)
    assert report is None and len(out.first().embedding) == 384


def test_the_embedders_params_persist(tmp_path) -> None:
    e = Embedder(inputCol="body", outputCol="vec", maxLength=64, pooling="cls", normalize=False, backend="torch")
    e.write().overwrite().save(str(tmp_path / "emb"))
    back = Embedder.load(str(tmp_path / "emb"))
    assert back.spec() == e.spec()
    assert back.getInputCol() == "body" and back.spec().backend == "torch"


@pytest.mark.parametrize(
    ("stage", "error", "message"),
    [
        (Embedder(inputCol="body"), ValueError, "input column 'body' not found"),
        (Embedder(inputCol="n", outputCol="v"), TypeError, "must be a string"),
        (Embedder(outputCol="n"), ValueError, "output column 'n' already exists"),
        (Embedder(pooling="max"), ValueError, "pooling must be"),
    ],
)
def test_the_embedder_checks_its_columns_before_any_job(spark, stage, error: type, message: str) -> None:
    df = spark.createDataFrame([(1, "a")], "n INT, text STRING")
    with pytest.raises(error, match=message):
        stage.transform(df)
