"""The embedding cache: identical texts embedded once, a re-run embeds nothing, hits are identical."""

from __future__ import annotations

import numpy as np
from pyspark.sql import functions as F

from dmine_spark.features.embed import embed_missing, resolve_spec
from dmine_spark.features.encoder import ModelSpec


def _vectors(spark, table: str, spec: ModelSpec) -> dict[str, np.ndarray]:  # noqa: ANN001
    from dmine_spark.features.embed import cache_filter

    rows = spark.table(table).where(cache_filter(spec)).collect()
    return {r.text_key: np.asarray(r.embedding, dtype=np.float32) for r in rows}


def test_cache_embeds_each_text_once(spark, encoder, banking77_texts) -> None:  # noqa: ANN001
    texts = banking77_texts[:120]
    rows = [(t,) for t in texts] + [(t,) for t in texts[:30]]  # 30 repeats inside the run
    df = spark.createDataFrame(rows, "text STRING")
    spec = resolve_spec(spark, ModelSpec())
    assert spec.device == "cpu" and spec.precision == "fp32"
    table = "default.emb_cache_test"
    spark.sql(f"DROP TABLE IF EXISTS {table}")

    first = embed_missing(spark, df, spec, table, records_per_partition=50)
    assert (first.rows, first.unique_texts, first.embedded, first.cache_hits) == (150, 120, 120, 0)
    assert first.stats["rows"] == 120  # the model saw each distinct text once
    assert first.stats["tokens"] > 0 and first.stats["padded_tokens"] >= first.stats["tokens"]
    assert any(k.startswith("rows@cpu/fp32") for k in first.stats)
    before = _vectors(spark, table, spec)

    more = spark.createDataFrame([(t,) for t in texts[:60]] + [("a text nobody has seen before",)], "text STRING")
    second = embed_missing(spark, more, spec, table)
    assert (second.unique_texts, second.embedded, second.cache_hits) == (61, 1, 60)
    assert second.stats.get("rows", 0) == 1

    third = embed_missing(spark, df, spec, table)
    assert third.embedded == 0 and third.cache_hits == 120 and third.stats == {}
    after = _vectors(spark, table, spec)
    assert len(after) == 121
    for k, v in before.items():
        np.testing.assert_array_equal(after[k], v)  # hits return the identical vectors

    # the stored vectors are the encoder's own
    ref = encoder.encode(texts[:5])
    probe = spark.createDataFrame([(t,) for t in texts[:5]], "text STRING")
    joined = probe.join(spark.table(table), F.sha2("text", 256) == F.col("text_key"))
    got = {r.text: np.asarray(r.embedding) for r in joined.collect()}
    np.testing.assert_allclose(np.stack([got[t] for t in texts[:5]]), ref, atol=1e-4)


def test_other_precision_is_another_cache_key(spark, banking77_texts) -> None:  # noqa: ANN001
    table = "default.emb_cache_test2"
    spark.sql(f"DROP TABLE IF EXISTS {table}")
    df = spark.createDataFrame([(t,) for t in banking77_texts[:20]], "text STRING")
    fp32 = resolve_spec(spark, ModelSpec())
    assert embed_missing(spark, df, fp32, table).embedded == 20
    short = resolve_spec(spark, ModelSpec(max_length=16))
    assert embed_missing(spark, df, short, table).embedded == 20
    assert embed_missing(spark, df, fp32, table).embedded == 0
