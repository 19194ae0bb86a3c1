"""The embedding cache: identical texts embedded once, a re-run embeds nothing, hits are identical."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from dmine_spark.features.embed import EmbeddingCache, cache_filter
from dmine_spark.features.encoder import ModelSpec, cpu_flags


def _vectors(spark, cache: EmbeddingCache) -> dict[str, np.ndarray]:
    rows = spark.table(cache.table).where(cache_filter(cache.spec)).collect()
    return {r.text_key: np.asarray(r.embedding, dtype=np.float32) for r in rows}


# what ``precision: auto`` runs on this machine's CPU
AUTO = "bf16" if cpu_flags() & {"amx_bf16", "avx512_bf16"} else "fp32"


@pytest.fixture(scope="module")
def filled(spark, banking77_texts):
    """A cache filled once with 120 texts offered 150 times (30 repeats in the same pass)."""
    texts = banking77_texts[:120]
    spark.sql("DROP TABLE IF EXISTS default.emb_cache_test")
    cache = EmbeddingCache(spark, "default.emb_cache_test", ModelSpec(), records_per_partition=50)
    df = spark.createDataFrame([(t,) for t in texts] + [(t,) for t in texts[:30]], "text STRING")
    report = cache.fill(df)
    return cache, df, texts, report


def test_the_cache_key_names_what_executors_run(filled) -> None:
    cache, *_ = filled
    # auto: bf16 where this CPU computes bf16 natively, else fp32 (the driver asks in local mode)
    assert (cache.spec.device, cache.spec.precision) == ("cpu", AUTO)


def test_a_first_fill_embeds_each_distinct_text_once(filled) -> None:
    _, _, _, first = filled
    assert (first.rows, first.unique_texts, first.embedded, first.cache_hits) == (150, 120, 120, 0)
    assert first.stats["rows"] == 120  # the model saw each distinct text once
    assert first.stats["tokens"] > 0 and first.stats["padded_tokens"] >= first.stats["tokens"]
    assert any(k.startswith(f"rows@cpu/{AUTO}/openvino") for k in first.stats)
    # encoding clock time: within the pass, and never more than the tasks' encoding seconds added up
    assert first.cached_rows == 0
    assert 0 < first.encode_wall_seconds <= min(first.seconds, first.stats["encode_seconds"] + 1e-3)


def test_a_later_fill_embeds_only_the_new_texts(spark, filled) -> None:
    cache, _, texts, _ = filled
    more = spark.createDataFrame([(t,) for t in texts[:60]] + [("a text nobody has seen before",)], "text STRING")
    second = cache.fill(more)
    assert (second.unique_texts, second.embedded, second.cache_hits, second.cached_rows) == (61, 1, 60, 60)
    assert second.stats.get("rows", 0) == 1


def test_a_refill_embeds_nothing_and_keeps_the_vectors(spark, filled) -> None:
    cache, df, _, _ = filled
    before = _vectors(spark, cache)
    again = cache.fill(df)
    assert again.embedded == 0 and again.stats == {}
    assert (again.cached_rows, again.encode_wall_seconds) == (150, 0.0)
    after = _vectors(spark, cache)
    for k, v in before.items():
        np.testing.assert_array_equal(after[k], v)  # hits return the identical vectors


def test_the_stored_vectors_are_the_encoders_own(spark, filled) -> None:
    from dmine_spark.features.encoder import get_encoder

    cache, _, texts, _ = filled
    probe = spark.createDataFrame([(i, t) for i, t in enumerate(texts[:5])], "i INT, text STRING")
    got = {r.i: np.asarray(r.embedding) for r in cache.lookup(probe).collect()}
    own = get_encoder(cache.spec, num_threads=2).encode(texts[:5])  # the same model and precision, in the driver
    # bf16 rounds a little differently in other batch shapes (at most about 6e-4 here); fp32 agrees to 1e-4
    np.testing.assert_allclose(np.stack([got[i] for i in range(5)]), own, atol=1e-3 if AUTO == "bf16" else 1e-4)


def test_lookup_keeps_every_row_and_leaves_uncached_texts_null(spark, filled) -> None:
    cache, _, texts, _ = filled
    probe = spark.createDataFrame([(1, texts[0]), (2, "never embedded here"), (3, None)], "i INT, text STRING")
    got = cache.lookup(probe).select("i", F.col("embedding").isNotNull().alias("has"))
    assertDataFrameEqual(got, spark.createDataFrame([(1, True), (2, False), (3, False)], "i INT, has BOOLEAN"))


def test_the_embedding_view_reads_the_stored_text_key(spark, filled) -> None:
    cache, _, texts, _ = filled
    clean = spark.createDataFrame(
        [(f"r{i}", "train", t) for i, t in enumerate(texts[:10])], "id STRING, split STRING, text STRING"
    ).withColumn("text_key", F.sha2("text", 256))
    clean.write.mode("overwrite").saveAsTable("default.clean_view_test")
    cache.create_view("default.emb_view_test", "default.clean_view_test")
    view = spark.table("default.emb_view_test")
    assert view.count() == 10 and view.where(F.size("embedding") != 384).isEmpty()


def test_another_length_is_another_cache_key(spark, banking77_texts) -> None:
    spark.sql("DROP TABLE IF EXISTS default.emb_cache_test2")
    df = spark.createDataFrame([(t,) for t in banking77_texts[:20]], "text STRING")
    fp32 = EmbeddingCache(spark, "default.emb_cache_test2", ModelSpec())
    short = EmbeddingCache(spark, "default.emb_cache_test2", ModelSpec(max_length=16))
    assert fp32.fill(df).embedded == 20
    assert short.fill(df).embedded == 20
    assert fp32.fill(df).embedded == 0
