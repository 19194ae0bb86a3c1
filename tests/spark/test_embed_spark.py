"""The Spark adapter gives the same vectors as the encoder core, as float32 arrays."""

from __future__ import annotations

import numpy as np
import pytest
from pyspark.sql.types import ArrayType, FloatType

from dmine_spark.features.embed import Embedder


def test_embedder_matches_core(spark, encoder, banking77_texts) -> None:  # noqa: ANN001
    texts = banking77_texts[:200]
    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "id INT, text STRING").repartition(3)
    out = Embedder(inputCol="text", outputCol="emb").transform(df)
    assert out.schema["emb"].dataType == ArrayType(FloatType())
    got = {r.id: np.asarray(r.emb, dtype=np.float32) for r in out.collect()}
    ref = encoder.encode(texts)
    mat = np.stack([got[i] for i in range(len(texts))])
    np.testing.assert_allclose(mat, ref, atol=1e-4)


def test_embedder_params_persist(tmp_path) -> None:  # noqa: ANN001
    e = Embedder(inputCol="body", outputCol="vec", maxLength=64, pooling="cls", normalize=False, backend="torch")
    e.write().overwrite().save(str(tmp_path / "emb"))
    back = Embedder.load(str(tmp_path / "emb"))
    assert back.spec() == e.spec()
    assert back.spec().pooling == "cls" and back.getInputCol() == "body"
    assert back.spec().backend == "torch"


def test_embedder_checks_input(spark) -> None:  # noqa: ANN001
    df = spark.createDataFrame([(1, "a")], "n INT, text STRING")
    with pytest.raises(ValueError, match="input column 'body' not found"):
        Embedder(inputCol="body").transform(df)
    with pytest.raises(TypeError, match="must be a string"):
        Embedder(inputCol="n", outputCol="v").transform(df)
    with pytest.raises(ValueError, match="pooling must be"):
        Embedder(pooling="max").transform(df)
