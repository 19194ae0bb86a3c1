"""``dmine bench prepare``: the prepare steps at scale, against a plain pandas script.

For each row count it generates dirty data from the real datasets with
:func:`dmine_spark.tools.datagen.generate` (Parquet, cached by size and seed), then
times one Spark job that does what the ``ingest`` and ``clean`` stages and the
text feature table do:

1. read with the declared schema (wrong-typed values quarantined);
2. clean the text (Unicode, HTML, control characters, whitespace, length);
3. mask PII (e-mail, phone, Luhn-checked cards, IBAN, Chinese ID);
4. exact dedup on the content hash;
5. TF-IDF (hashing TF + IDF) over words, written as the feature table.

After an untimed 20k-row warm-up run in the same session, it records wall time, rows/s, the driver JVM's
heap (peak used, peak after a collection, and retained after a full collection once the run is
done), the peak RSS of the driver's Python process, Spark's memory and disk spill (from the status API),
and checks that ``rows in = clean + quarantined + duplicates``.

The pandas baseline runs the same steps in one process at the smallest size:
``unicodedata`` NFKC, ``re`` cleaning, the reference PII masker of
:mod:`dmine_spark.prepare.pii_rules`, ``drop_duplicates`` and scikit-learn's
``HashingVectorizer`` + ``TfidfTransformer``.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["bench_prepare", "pandas_prepare", "spark_prepare"]

NUM_FEATURES = 1 << 18
WARMUP_ROWS = 20_000


class _Peak:
    """Samples the driver JVM's heap and the Python process RSS every ``every`` seconds.

    ``heap`` is the peak of the used heap, which mostly shows how lazily the collector runs: it
    climbs towards ``-Xmx`` whatever the job keeps. ``live`` is the peak of the heap in use right
    after a collection (the sum over heap pools of the last ``GcInfo.getMemoryUsageAfterGc``), the
    bound on what the driver JVM actually holds, and the figure that must stay flat as rows grow.
    """

    def __init__(self, spark: Any, every: float = 0.5) -> None:
        import psutil

        mf = spark.sparkContext._jvm.java.lang.management.ManagementFactory
        self._mx = mf.getMemoryMXBean()
        self._gcs = list(mf.getGarbageCollectorMXBeans())
        self._heap_pools = {p.getName() for p in mf.getMemoryPoolMXBeans() if p.getType().toString() == "Heap memory"}
        self._proc = psutil.Process()
        self.heap = 0
        self.live = 0
        self.rss = 0
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.heap = max(self.heap, int(self._mx.getHeapMemoryUsage().getUsed()))
                self.live = max(self.live, self._after_gc())
                self.rss = max(self.rss, int(self._proc.memory_info().rss))
            except Exception:  # the gateway closes at shutdown
                return
            self._stop.wait(self._every)

    def _after_gc(self) -> int:
        best = 0
        for gc in self._gcs:
            info = gc.getLastGcInfo()
            if info is not None:
                after = info.getMemoryUsageAfterGc()
                best = max(best, sum(int(after[k].getUsed()) for k in after if k in self._heap_pools))
        return best

    def __enter__(self) -> _Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _retained(spark: Any) -> int:
    """Heap still in use after a full collection once a run has finished: what the driver keeps."""
    jvm = spark.sparkContext._jvm
    jvm.java.lang.System.gc()
    time.sleep(1.0)
    return int(jvm.java.lang.management.ManagementFactory.getMemoryMXBean().getHeapMemoryUsage().getUsed())


def _spill(spark: Any) -> dict[str, int]:
    """Memory and disk bytes spilled by all stages so far (from Spark's REST status API)."""
    sc = spark.sparkContext
    url = sc.uiWebUrl
    if not url:
        return {"memory_bytes_spilled": -1, "disk_bytes_spilled": -1}
    with urllib.request.urlopen(f"{url}/api/v1/applications/{sc.applicationId}/stages", timeout=30) as resp:
        stages = json.load(resp)
    return {
        "memory_bytes_spilled": int(sum(s.get("memoryBytesSpilled", 0) for s in stages)),
        "disk_bytes_spilled": int(sum(s.get("diskBytesSpilled", 0) for s in stages)),
    }


def spark_prepare(spark: Any, data_dir: Path, out_dir: Path, *, unicode: str = "nfkc") -> dict[str, Any]:
    """Run the prepare job on the generated Parquet in ``data_dir``; outputs go to ``out_dir``."""
    from pyspark import StorageLevel
    from pyspark.ml.feature import IDF, HashingTF, RegexTokenizer
    from pyspark.sql import functions as F

    from dmine_spark.config import CleanConfig, PiiConfig, SourceConfig
    from dmine_spark.config.features import WORD_PATTERN
    from dmine_spark.prepare.clean import clean_frame
    from dmine_spark.prepare.ingest import read_source
    from dmine_spark.tools.datagen import SCHEMA_DDL

    shutil.rmtree(out_dir, ignore_errors=True)
    src = SourceConfig(path=str(data_dir / "*.parquet"), format="parquet", schema=SCHEMA_DDL)
    t0 = time.perf_counter()
    res = read_source(spark, "gen", src, required=["text"])
    res.quarantine.write.parquet(str(out_dir / "quarantine_ingest"))
    t_ingest = time.perf_counter() - t0
    cleaned = clean_frame(
        res.rows.select("id", "split", "text"),
        CleanConfig(unicode=unicode, max_chars=2000),
        pii=PiiConfig(),
    )
    cleaned.decided.select("id", "text", "outcome", "rule", "kept_id", "pii_counts").write.partitionBy(
        "outcome"
    ).parquet(str(out_dir / "decided"))
    t_clean = time.perf_counter() - t0
    clean = spark.read.parquet(str(out_dir / "decided")).where("outcome = 'clean'").select("id", "text")
    # the feature table's own words (combining marks and inner joiners stay in their word)
    tok = RegexTokenizer(inputCol="text", outputCol="words", pattern=WORD_PATTERN, gaps=False, toLowercase=True)
    tf = HashingTF(inputCol="words", outputCol="tf", numFeatures=NUM_FEATURES)
    # term frequencies once: IDF's fitting pass and the transform both read them back from local disk
    # (DISK_ONLY: a memory-backed cache of 10M vectors ran a 4 GB driver out of heap while unrolling)
    tfd = tf.transform(tok.transform(clean)).select("id", "tf").persist(StorageLevel.DISK_ONLY)
    idf = IDF(inputCol="tf", outputCol="tfidf").fit(tfd)
    idf.transform(tfd).select("id", "tfidf").write.parquet(str(out_dir / "feat"))
    tfd.unpersist()
    seconds = time.perf_counter() - t0

    decided = spark.read.parquet(str(out_dir / "decided"))
    outcome = {r["outcome"]: r["count"] for r in decided.groupBy("outcome").count().collect()}
    n_in = spark.read.parquet(str(data_dir / "*.parquet")).count()
    q_ingest = spark.read.parquet(str(out_dir / "quarantine_ingest")).count()
    pii = decided.agg(*[F.sum(F.col("pii_counts")[t]).alias(t) for t in PiiConfig().types]).first().asDict()
    n_feat = spark.read.parquet(str(out_dir / "feat")).count()
    counts = {
        "rows_in": n_in,
        "clean": outcome.get("clean", 0),
        "quarantined": q_ingest + outcome.get("quarantine", 0),
        "duplicates": outcome.get("duplicate", 0),
        "feature_rows": n_feat,
    }
    counts["unaccounted"] = n_in - counts["clean"] - counts["quarantined"] - counts["duplicates"]
    return {
        "seconds": seconds,
        "ingest_seconds": t_ingest,
        "clean_seconds": t_clean - t_ingest,
        "features_seconds": seconds - t_clean,
        "rows_per_s": n_in / seconds,
        "counts": counts,
        "pii_masked": {k: int(v or 0) for k, v in pii.items()},
    }


def pandas_prepare(data_dir: Path) -> dict[str, Any]:
    """The same steps in one pandas process (the single-machine alternative)."""
    import hashlib
    import re
    import unicodedata

    import pandas as pd
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer

    from dmine_spark.prepare.pii_rules import mask_text

    tags = re.compile(r"(?is)<(script|style)\b.*?</\1\s*>|<!--.*?-->|</?[A-Za-z][^<>]*>")
    control = re.compile(r"[\u200b-\u200f\u2060\ufeff\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
    space = re.compile(r"\s+")
    entities = {"&nbsp;": " ", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'", "&apos;": "'", "&amp;": "&"}

    def clean(t: str | None) -> str | None:
        if t is None:
            return None
        t = unicodedata.normalize("NFKC", t)
        t = tags.sub(" ", t)
        for k, v in entities.items():
            t = t.replace(k, v)
        return space.sub(" ", control.sub("", t)).strip()[:2000]

    t0 = time.perf_counter()
    df = pd.read_parquet(data_dir)
    n_in = len(df)
    bad = pd.Series(False, index=df.index)
    for col, conv in (
        ("rating", lambda s: pd.to_numeric(s, errors="coerce")),
        ("amount", lambda s: pd.to_numeric(s, errors="coerce")),
        ("created_at", lambda s: pd.to_datetime(s, errors="coerce", utc=True)),
    ):
        if col in df.columns and df[col].dtype == object:
            bad |= df[col].notna() & conv(df[col]).isna()
    bad |= df["text"].isna() | df["text"].str.contains("\ufffd", regex=False, na=False)
    quarantined = int(bad.sum())
    df = df[~bad]
    text = df["text"].map(clean)
    masked = text.map(mask_text)
    df = df.assign(text=masked.map(lambda m: m[0]))
    empty = df["text"].str.len().fillna(0) < 1
    quarantined += int(empty.sum())
    df = df[~empty]
    df = df.assign(h=df["text"].str.lower().map(lambda t: hashlib.sha256(t.encode()).hexdigest()))
    keep = ~df.duplicated("h")
    duplicates = int((~keep).sum())
    df = df[keep]
    hv = HashingVectorizer(n_features=NUM_FEATURES, alternate_sign=False, norm=None, token_pattern=r"(?u)\b\w+\b")
    feats = TfidfTransformer().fit_transform(hv.transform(df["text"]))
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "rows_per_s": n_in / seconds,
        "counts": {
            "rows_in": n_in,
            "clean": int(feats.shape[0]),
            "quarantined": quarantined,
            "duplicates": duplicates,
            "unaccounted": n_in - int(feats.shape[0]) - quarantined - duplicates,
        },
    }


def bench_data(root: Path, rows: int, seed: int, datasets: Path, *, echo: Callable[[str], Any] = print) -> Path:
    """Generated Parquet rows for a benchmark, ``root/rows<N>_seed<S>``, made once and reused.

    A folder whose ``_manifest.json`` (written last by
    :func:`dmine_spark.tools.datagen.generate`) names ``rows`` rows is complete
    and is reused; anything else there is removed and generated again.
    """
    from dmine_spark.tools.datagen import generate, read_manifest

    d = root / f"rows{rows}_seed{seed}"
    if (d / "_manifest.json").is_file() and read_manifest(d)["rows"] == rows:
        return d
    shutil.rmtree(d, ignore_errors=True)
    t0 = time.perf_counter()
    generate(d, rows, fmt="parquet", seed=seed, datasets_dir=datasets)
    echo(f"datagen {rows:,} rows in {time.perf_counter() - t0:.0f}s -> {d}")
    return d


def bench_prepare(
    datasets: Path,
    sizes: list[int],
    *,
    work_dir: Path,
    seed: int = 7,
    pandas_rows: int | None = None,
    driver_memory: str = "4g",
    unicode: str = "nfkc",
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Generate, run and measure each size; the pandas baseline at ``pandas_rows`` (default: the smallest)."""
    from dmine_spark.config import load_profile
    from dmine_spark.spark.session import build_session
    from dmine_spark.tools.datagen import read_manifest

    work_dir = Path(work_dir).resolve()
    data_root = work_dir / "bench_data"
    res: dict[str, Any] = {"sizes": {}, "cores": os.cpu_count(), "driver_memory": driver_memory, "unicode": unicode}

    def data_for(n: int) -> Path:
        return bench_data(data_root, n, seed, datasets, echo=echo)

    pandas_rows = min(sizes) if pandas_rows is None else pandas_rows  # 0: no pandas baseline
    if pandas_rows:
        d = data_for(pandas_rows)
        echo(f"pandas  {pandas_rows:,} rows ...")
        p = pandas_prepare(d)
        res["pandas"] = {"rows": pandas_rows, **p}
        echo(f"pandas  {pandas_rows:>11,} rows {p['seconds']:8.1f}s {p['rows_per_s']:10,.0f} rows/s")

    profile = load_profile("local")
    profile.conf.update(
        {
            "spark.driver.memory": driver_memory,
            "spark.ui.enabled": "true",
            "spark.ui.port": "0",
            "spark.sql.shuffle.partitions": "32",
            "spark.sql.files.maxPartitionBytes": str(64 << 20),
        }
    )
    spark = build_session(profile, work_dir / "bench_catalog", app_name="dmine-bench-prepare")
    # one small untimed run first, so JIT compilation and Python worker start-up are not billed to the first size
    spark_prepare(spark, data_for(WARMUP_ROWS), work_dir / "bench_out", unicode=unicode)
    for n in sizes:
        d = data_for(n)
        before = _spill(spark)
        with _Peak(spark) as peak:
            r = spark_prepare(spark, d, work_dir / "bench_out", unicode=unicode)
        after = _spill(spark)
        r.update(
            {
                "driver_heap_peak_mb": peak.heap / 2**20,
                "driver_heap_after_gc_peak_mb": peak.live / 2**20,
                "driver_heap_retained_mb": _retained(spark) / 2**20,
                "driver_python_rss_peak_mb": peak.rss / 2**20,
                "spill_memory_mb": (after["memory_bytes_spilled"] - before["memory_bytes_spilled"]) / 2**20,
                "spill_disk_mb": (after["disk_bytes_spilled"] - before["disk_bytes_spilled"]) / 2**20,
                "manifest": read_manifest(d).get("counts", {}),
            }
        )
        res["sizes"][str(n)] = r
        echo(
            f"spark   {n:>11,} rows {r['seconds']:8.1f}s {r['rows_per_s']:10,.0f} rows/s  heap peak "
            f"{r['driver_heap_peak_mb']:,.0f} MB  after GC {r['driver_heap_after_gc_peak_mb']:,.0f} MB  "
            f"retained {r['driver_heap_retained_mb']:,.0f} MB  spill {r['spill_disk_mb']:,.0f} MB disk  "
            f"unaccounted {r['counts']['unaccounted']}"
        )
    spark.stop()
    ns = sorted(int(k) for k in res["sizes"])
    if len(ns) >= 2:
        lo, hi = ns[0], ns[1]
        res["time_ratio"] = {
            f"{hi}/{lo}": res["sizes"][str(hi)]["seconds"] / res["sizes"][str(lo)]["seconds"],
            "rows_ratio": hi / lo,
        }
    if "pandas" in res and str(res["pandas"]["rows"]) in res["sizes"]:
        res["spark_vs_pandas"] = res["pandas"]["seconds"] / res["sizes"][str(res["pandas"]["rows"])]["seconds"]
    return res
