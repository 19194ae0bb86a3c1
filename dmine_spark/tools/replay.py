"""``dmine datagen --replay``: real financial texts replayed over time, with injected sentiment episodes.

The texts are Twitter financial news headlines (the shared datasets folder's
``twitter_financial_news_sentiment``) that mention exactly one of the chosen
entities by cashtag; the entities are the cashtags with the most texts that
have at least ``min_bearish`` bearish and ``min_other`` other texts. Each
entity gets a calm bearish share (drawn between 0.10 and 0.25) and a volume
(texts per window, drawn between ``volume``'s bounds); each window's texts
are a Poisson number of that entity's texts, each drawn bearish with the
window's share (and bullish or neutral in the entity's own proportion),
with replacement, at a uniform time inside the window.

An *episode* raises one entity's bearish share by ``size`` (an absolute
share, e.g. 0.30: from 0.15 to 0.45) for 3 to 7 windows. Episodes start
after ``warmup_windows`` calm windows and are at least ``gap_windows``
apart; their sizes cycle through ``sizes``. Everything is written to
``_manifest.json``: the entities with their calm share and volume, every
episode (entity, first and last window, size, share), the period and the
window, so alert recall, delay and false alerts can be measured against it
(:func:`evaluate_alerts`).

The folder also holds ``train.csv`` (every other text of the dataset, none of
which the replay uses, so a classifier trained on it has never seen a replayed
text) and ``pipeline.yaml``, a pipeline that trains on it, classifies the
replay and runs the trends stage with cashtags as entities.
"""

from __future__ import annotations

import csv
import json
import math
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from dmine_spark.features.entities import CASHTAG

__all__ = ["LABELS", "ReplayConfig", "replay", "evaluate_alerts", "MANIFEST"]

MANIFEST = "_manifest.json"
LABELS = ("bearish", "bullish", "neutral")
"""The dataset's classes, by its label number."""
_DATASET = "twitter_financial_news_sentiment"
_START = datetime(2026, 1, 5, tzinfo=timezone.utc)  # a Monday


@dataclass(frozen=True)
class ReplayConfig:
    """The replay's shape: how many entities, how long, how busy, and the episodes injected."""

    entities: int = 12
    windows: int = 364
    """Windows in the period (364 daily windows: 52 weeks)."""
    window_hours: int = 24
    volume: tuple[int, int] = (60, 120)
    """Mean texts per entity and window, drawn per entity between these bounds."""
    sizes: tuple[float, ...] = (0.20, 0.30, 0.40)
    """Rises of the bearish share injected, in turn."""
    episodes_per_entity: int = 6
    warmup_windows: int = 21
    gap_windows: int = 56
    min_texts: int = 50
    """Validation texts each class needs."""

    def check(self) -> None:
        """Raise ValueError with one line when the shape cannot hold its episodes."""
        if self.entities < 1 or self.windows < 1 or self.window_hours < 1:
            raise ValueError("--entities, --windows and --window-hours must be at least 1")
        need = self.warmup_windows + self.episodes_per_entity * self.gap_windows
        if self.episodes_per_entity and self.windows < need:
            raise ValueError(
                f"--windows {self.windows}: {self.episodes_per_entity} episodes per entity need at least {need} "
                f"windows ({self.warmup_windows} calm ones first, then {self.gap_windows} per episode)"
            )
        if not all(0.0 < s < 0.75 for s in self.sizes):
            raise ValueError("episode sizes are rises of a share: each between 0 and 0.75")


def _load(datasets: Path, name: str) -> list[tuple[str, int]]:
    p = datasets / _DATASET / name
    if not p.is_file():
        raise ValueError(f"{p} is missing: the replay reads the Twitter financial news dataset")
    rows: list[tuple[str, int]] = []
    with p.open(encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            if r.get("text") and r.get("label", "").strip() in ("0", "1", "2"):
                rows.append((r["text"], int(r["label"])))
    return rows


def _tags(text: str) -> set[str]:
    return {m.upper() for m in re.findall(CASHTAG, text)}


def about(text: str, entity: str) -> str:
    """``text`` about ``entity``: its one cashtag replaced by ``$<entity>``, or ``$<entity>: `` put first."""
    tag = "$" + entity
    replaced, n = re.subn(CASHTAG, lambda m: tag, text, count=1)
    return replaced if n else f"{tag}: {text}"


def replay(out: str | Path, datasets: Path, shape: ReplayConfig | None = None, *, seed: int = 0) -> dict[str, Any]:
    """Write ``replay.csv``, ``train.csv``, ``pipeline.yaml`` and ``_manifest.json`` to the new folder ``out``.

    Returns
    -------
    dict
        The manifest.

    Raises
    ------
    ValueError
        When ``out`` exists and is not empty, the dataset is missing, or the shape cannot hold its episodes
        or finds too few entities.
    """
    shape = shape or ReplayConfig()
    shape.check()
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"--out {out}: the folder exists and is not empty; give a new one")
    rng = random.Random(seed)
    train_rows, valid_rows = _load(datasets, "sent_train.csv"), _load(datasets, "sent_valid.csv")
    counts = Counter(tag for t, _ in train_rows + valid_rows for tag in _tags(t))
    chosen = [e for e, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: shape.entities]]
    if len(chosen) < shape.entities:
        raise ValueError(f"--entities {shape.entities}: the dataset has only {len(chosen)} cashtags")
    # the validation split's texts with at most one cashtag, by class: each replayed text is one of them
    pool: dict[int, list[str]] = defaultdict(list)
    for text, y in valid_rows:
        if len(_tags(text)) <= 1 and "\ufffd" not in text:  # U+FFFD: the dataset's own decoding damage
            pool[y].append(text)
    if any(len(pool[y]) < shape.min_texts for y in (0, 1, 2)):
        raise ValueError(f"the validation split has fewer than {shape.min_texts} texts of a class")
    step = timedelta(hours=shape.window_hours)
    entities, episodes, rows = [], [], []
    k = 0
    for e in chosen:
        base = round(rng.uniform(0.10, 0.25), 3)
        lam = rng.uniform(*shape.volume)
        p_bull = rng.uniform(0.2, 0.5)  # of the texts that are not bearish
        entities.append({"entity": e, "base_share": base, "volume": round(lam, 2), "bullish_of_rest": round(p_bull, 3)})
        share = [base] * shape.windows
        lo = shape.warmup_windows
        for _ in range(shape.episodes_per_entity):
            length = rng.randint(3, 7)
            first = rng.randint(lo, lo + shape.gap_windows - length - 1)
            size = shape.sizes[k % len(shape.sizes)]
            k += 1
            for w in range(first, first + length):
                share[w] = min(0.95, base + size)
            episodes.append(
                {
                    "entity": e,
                    "first_window": first,
                    "last_window": first + length - 1,
                    "start": (_START + first * step).isoformat(),
                    "end": (_START + (first + length) * step).isoformat(),
                    "size": size,
                    "base_share": base,
                    "share": min(0.95, base + size),
                }
            )
            lo += shape.gap_windows
        for w in range(shape.windows):
            for _ in range(_poisson(rng, lam)):
                y = 0 if rng.random() < share[w] else 1 if rng.random() < p_bull else 2
                text = about(rng.choice(pool[y]), e)
                at = _START + w * step + timedelta(seconds=rng.uniform(0, step.total_seconds()))
                rows.append((at, text, LABELS[y], e))
    rows.sort(key=lambda r: r[0])
    out.mkdir(parents=True, exist_ok=True)
    with (out / "replay.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC)
        w.writerow(["doc_id", "created_at", "text", "sentiment"])
        for i, (at, text, label, _) in enumerate(rows):
            w.writerow([f"r{i:07d}", at.strftime("%Y-%m-%d %H:%M:%S"), text, label])
    train = [(t, LABELS[y]) for t, y in train_rows]
    with (out / "train.csv").open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_NONNUMERIC)
        w.writerow(["text", "sentiment"])
        w.writerows(train)
    config = pipeline_config(out, window=f"{shape.window_hours} hours")
    import yaml

    (out / "pipeline.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    manifest = {
        "dataset": _DATASET,
        "seed": seed,
        "label": "bearish",
        "start": _START.isoformat(),
        "window_hours": shape.window_hours,
        "windows": shape.windows,
        "rows": len(rows),
        "train_rows": len(train),
        "pool": {LABELS[y]: len(pool[y]) for y in (0, 1, 2)},
        "entities": entities,
        "episodes": episodes,
        "config": str(out / "pipeline.yaml"),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def _poisson(rng: random.Random, lam: float) -> int:
    # Knuth's method: fine for the tens of texts per window drawn here
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def pipeline_config(out: Path, *, window: str = "24 hours") -> dict[str, Any]:
    """The pipeline that trains on ``train.csv``, classifies ``replay.csv`` and runs the trends stage."""
    csv_opts = {"header": True, "multiLine": True, "escape": '"'}
    return {
        "name": "finance_replay",
        "task": "finance_replay",
        "database": "dmine_replay",
        "text_col": "text",
        "label_col": "sentiment",
        "labels": list(LABELS),
        "sources": {
            "train": {
                "path": str(out / "train.csv"),
                "format": "csv",
                "schema": "text STRING, sentiment STRING",
                "options": csv_opts,
                "required": ["text", "sentiment"],
            },
            "replay": {
                "path": str(out / "replay.csv"),
                "format": "csv",
                "schema": "doc_id STRING, created_at TIMESTAMP, text STRING, sentiment STRING",
                "options": csv_opts,
                "id_col": "doc_id",
                "required": ["text", "created_at"],
                "dedup": False,  # a headline is replayed many times; each replay is its own event
            },
        },
        "clean": {"strip_html": True, "urls": "remove", "max_chars": 1000},
        "embed": {"max_length": 128},
        # balanced class weights: the watched class is the rare one, and an episode shows through its recall
        "classify": {
            "model": "sk_logreg",
            "params": {"class_weight": "balanced"},
            "grid": {"C": [1.0, 10.0, 100.0]},
            "cv_folds": 3,
            "train_split": "train",
            "eval_split": "replay",
        },
        "cluster": {"enabled": False},
        "trends": {"enabled": True, "time_col": "created_at", "window": window, "label": "bearish"},
        "report": {"enabled": False},
        "tracking": {"enabled": False},
    }


def evaluate_alerts(
    manifest: dict[str, Any], alerts: list[dict[str, Any]], *, baseline_windows: int = 14
) -> dict[str, Any]:
    """Alert recall, delay and false alerts of ``alerts`` against the manifest's injected episodes.

    An episode is *detected* by a share alert on the manifest's label for its entity whose window is in the
    episode; its *delay* is that window's position in the episode (0: the first window). A share alert of a
    replayed entity outside every episode is a *false alert*; the calm exposure is each entity's windows
    outside its episodes, after its first ``baseline_windows`` (where no rule can fire yet), in weeks.
    Volume alerts are all false (the replay injects no volume change) and are counted apart.

    Parameters
    ----------
    manifest : dict
        :func:`replay`'s manifest.
    alerts : list of dict
        ``entity, window_start`` (datetime or ISO string), ``rule``, ``label`` rows of ``alerts_<task>``.

    Returns
    -------
    dict
        ``episodes``, ``detected``, ``detected_within_2``, ``recall``, ``recall_within_2``, ``mean_delay``,
        ``by_size`` (the same per size), ``false_alerts``, ``volume_false_alerts``, ``calm_entity_weeks``,
        ``false_per_100_entity_weeks`` and ``volume_false_per_100_entity_weeks``.
    """
    start = datetime.fromisoformat(manifest["start"])
    hours = manifest["window_hours"]
    label = manifest["label"]
    entities = {e["entity"] for e in manifest["entities"]}

    def pos(ts: Any) -> int:
        t = ts if isinstance(ts, datetime) else datetime.fromisoformat(str(ts))
        if t.tzinfo is None:
            t = t.replace(tzinfo=timezone.utc)
        return int((t - start).total_seconds() // (hours * 3600))

    share = defaultdict(set)
    volume = defaultdict(set)
    for a in alerts:
        if a["entity"] not in entities:
            continue
        if str(a["rule"]).startswith("share") and a.get("label") == label:
            share[a["entity"]].add(pos(a["window_start"]))
        elif a["rule"] == "volume_spike":
            volume[a["entity"]].add(pos(a["window_start"]))
    in_episode = defaultdict(set)
    results = []
    for ep in manifest["episodes"]:
        span = range(ep["first_window"], ep["last_window"] + 1)
        in_episode[ep["entity"]].update(span)
        hits = sorted(w for w in share[ep["entity"]] if w in span)
        delay = hits[0] - ep["first_window"] if hits else None
        results.append({"size": ep["size"], "delay": delay})
    false = sum(1 for e, ws in share.items() for w in ws if w not in in_episode[e])
    vol_false = sum(len(ws) for ws in volume.values())
    calm = (
        sum(1 for e in entities for w in range(baseline_windows, manifest["windows"]) if w not in in_episode[e])
        * hours
        / (24 * 7)
    )

    def summary(rs: list[dict[str, Any]]) -> dict[str, Any]:
        found = [r["delay"] for r in rs if r["delay"] is not None]
        n = len(rs)
        return {
            "episodes": n,
            "detected": len(found),
            "detected_within_2": sum(1 for d in found if d <= 1),
            "recall": len(found) / n if n else 0.0,
            "recall_within_2": sum(1 for d in found if d <= 1) / n if n else 0.0,
            "mean_delay": sum(found) / len(found) if found else None,
        }

    out = summary(results)
    out["by_size"] = {
        str(s): summary([r for r in results if r["size"] == s]) for s in sorted({r["size"] for r in results})
    }
    out.update(
        false_alerts=false,
        volume_false_alerts=vol_false,
        calm_entity_weeks=calm,
        false_per_100_entity_weeks=100.0 * false / calm if calm else 0.0,
        volume_false_per_100_entity_weeks=100.0 * vol_false / calm if calm else 0.0,
    )
    return out
