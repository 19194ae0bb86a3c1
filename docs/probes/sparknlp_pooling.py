"""Spark NLP's two poolings of dmine's model against dmine's own encoder, on real texts.

Run on the Spark 3.5 line, from the checkout (after `bash dev.sh setup --spark 3.5`):

    .venv-spark3.5/bin/python docs/probes/sparknlp_pooling.py 300

It embeds the first N BANKING77 test texts with the Embedder stage (embed.backend sparknlp and
sparknlp-bert) and prints the cosine of each vector to dmine's fp32 encoder. docs/embedding.md
records what this printed.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from dmine_spark.config import SparkProfile
from dmine_spark.features.embed import Embedder
from dmine_spark.features.encoder import ModelSpec, get_encoder
from dmine_spark.spark.session import build_session

N = int(sys.argv[1]) if len(sys.argv) > 1 else 300
DATASETS = Path(os.environ.get("DMINE_DATASETS", Path(__file__).resolve().parents[3] / "shared" / "datasets"))
texts = pd.read_csv(DATASETS / "banking77" / "test.csv")["text"].head(N).tolist()
ref = np.asarray(get_encoder(ModelSpec(device="cpu", precision="fp32")).encode(pd.Series(texts)))
work = Path(tempfile.mkdtemp(prefix="dmine_probe_"))
spark = build_session(SparkProfile(master="local[2]"), work, extra_jars=["sparknlp"], table_format="parquet")
df = spark.createDataFrame(list(enumerate(texts)), "id LONG, text STRING")
for backend in ("sparknlp", "sparknlp-bert"):
    rows = Embedder(backend=backend).transform(df).orderBy("id").collect()
    cos = (np.asarray([r["embedding"] for r in rows]) * ref).sum(axis=1)
    print(f"{backend}: cosine to dmine's encoder over {N} texts: mean {cos.mean():.6f}, min {cos.min():.6f}")
