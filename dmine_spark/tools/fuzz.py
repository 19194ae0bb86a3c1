"""``dmine fuzz``: a corpus of every input fault dmine_spark must survive, with the exact record counts.

The corpus is a folder of sources and the pipeline config that reads them
(``pipeline.yaml``). Every text comes from the real datasets (through
:mod:`dmine_spark.tools.datagen`); the faults are written around them:

``bulk/``
    :func:`~dmine_spark.tools.datagen.generate` CSV: duplicates, near
    duplicates, malformed records, wrong types, nulls, HTML, PII, control
    and full-width characters, invalid UTF-8, over-long texts.
``edge.csv``
    multi-line CSV with records whose quote never closes (at the start, in
    the middle and on the last line), NUL bytes, 1 MB texts, emoji and ZWJ
    sequences, right-to-left text with bidi marks, zero-width characters,
    a text of only zero-width characters, a blank label.
``zh_gbk.csv``
    Chinese reviews in GBK (declared ``encoding: auto``), with a few bytes
    that are not GBK.
``nested.json``
    one document ``{"train": [[text, label], ...], "test": [...]}`` read
    with ``records``, with elements of the wrong shape.
``named.jsonl``
    JSON lines whose keys hold spaces and dots (``ticket text``,
    ``the.label``), one line that is not JSON.
``test.csv``
    the evaluation source: labels the training sources never have, and texts
    that also appear in training (train/test leakage).

``manifest.json`` holds the records written per source (a record that
cannot be parsed still counts as one), which a run must account for
exactly: rows in = clean + quarantined + duplicates, per source.
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path
from typing import Any

__all__ = ["generate_corpus"]


def _texts(datasets: Path, n: int, rng: random.Random) -> list[tuple[str, str]]:
    """``n`` real (text, label) pairs from BANKING77 and the financial headlines, shuffled."""
    out = []
    with open(datasets / "banking77" / "train.csv", encoding="utf-8", newline="") as fh:
        out += [(r["text"], r["category"]) for r in csv.DictReader(fh)]
    with open(datasets / "twitter_financial_news_sentiment" / "sent_train.csv", encoding="utf-8", newline="") as fh:
        out += [(r["text"], f"sentiment_{r['label']}") for r in csv.DictReader(fh)]
    rng.shuffle(out)
    return out[:n]


def _csv(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _edge(pairs: list[tuple[str, str]]) -> tuple[str, int]:
    """The edge-case CSV's text and its record count."""
    special = [
        "family 👨‍👩‍👧 and flags 🇨🇳🇺🇸 in a complaint 😡",
        "שלום, הכרטיס שלי \u200fלא הגיע\u200f עדיין",
        "مرحبا، لم تصل بطاقتي بعد \u202bمتى؟\u202c",
        "می\u200cخواهم کارتم را فعال کنم",
        "zero\u200bwidth\u2060 and\ufeff marks",
        "\u200b\u200c\u200d\u2060",  # nothing but zero-width characters: empty once cleaned
        "NUL \x00 inside the text",
        "x" * 1_000_000,  # a 1 MB text
        "y " * 600_000,
        "line one\nline two\r\nline three",
    ]
    rows = [["text", "category"]]
    rows += [[t, lab] for t, lab in pairs]
    rows += [[t, pairs[i % len(pairs)][1]] for i, t in enumerate(special)]
    rows.append(["a text with a blank label", ""])
    body = _csv(rows).splitlines(keepends=True)
    # records whose quote never closes: right after the header, in the middle, and as the last line
    broken = ['"opens a quote at the start,card_arrival\n', '"opens one in the middle,x\n', '"and on the last line,y\n']
    body.insert(1, broken[0])
    body.insert(len(body) // 2, broken[1])
    body.append(broken[2])
    return "".join(body), len(rows) - 1 + len(broken)


def generate_corpus(out: str | Path, rows: int, *, datasets_dir: str | Path, seed: int = 0) -> dict[str, Any]:
    """Write the fuzz corpus of about ``rows`` records to the new folder ``out``.

    Parameters
    ----------
    out : path
        Output folder; created, and must not hold files yet.
    rows : int
        Records in all, at least 1,000; about 80% are the ``bulk`` source.
    datasets_dir : path
        The shared datasets folder.
    seed : int
        Same seed: the same corpus.

    Returns
    -------
    dict
        The manifest: ``records`` per source, ``rows`` in all, ``config`` (the pipeline YAML's path).

    Raises
    ------
    ValueError
        When ``rows`` is below 1,000 or ``out`` holds files.
    """
    from dmine_spark.tools.datagen import CSV_OPTIONS, SCHEMA_DDL, generate

    if rows < 1000:
        raise ValueError(f"--rows: a fuzz corpus has at least 1,000 rows, got {rows}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out}: the folder holds files already; give a new one")
    out.mkdir(parents=True, exist_ok=True)
    datasets = Path(datasets_dir)
    rng = random.Random(seed)
    records: dict[str, int] = {}

    n_bulk = int(rows * 0.8)
    bulk = generate(
        out / "bulk", n_bulk, fmt="csv", seed=seed, datasets_dir=datasets, chunk_rows=max(1000, n_bulk // 4)
    )
    records["bulk"] = bulk.manifest["rows"]

    rest = rows - n_bulk
    pairs = _texts(datasets, rest, rng)
    k = max(1, rest // 5)
    edge_text, records["edge"] = _edge(pairs[:k])
    (out / "edge.csv").write_text(edge_text, encoding="utf-8")

    with open(datasets / "zh_waimai_10k" / "waimai_10k.csv", encoding="utf-8", newline="") as fh:
        zh = [(r["review"], f"waimai_{r['label']}") for r in csv.DictReader(fh)][:k]
    zh_body = _csv([["text", "category"], *[list(p) for p in zh]]).encode("gb18030")
    lines = zh_body.split(b"\n")
    lines.insert(len(lines) // 2, b'"not gbk \x81\x20 here",waimai_1')
    (out / "zh_gbk.csv").write_bytes(b"\n".join(lines))
    records["zh_gbk"] = len(zh) + 1

    nested_train = [[t, lab] for t, lab in pairs[k : 2 * k]]
    nested_test = [[t, lab] for t, lab in pairs[2 * k : 2 * k + k // 4]]
    odd = [["only a text"], 42, {"text": "an object element", "category": pairs[k][1]}]
    (out / "nested.json").write_text(
        json.dumps({"train": nested_train + odd, "test": nested_test}, ensure_ascii=False), encoding="utf-8"
    )
    records["nested"] = len(nested_train) + len(odd) + len(nested_test)

    named = pairs[2 * k + k // 4 : 3 * k]
    (out / "named.jsonl").write_text(
        "".join(json.dumps({"ticket text": t, "the.label": lab}, ensure_ascii=False) + "\n" for t, lab in named)
        + '{"ticket text": "not json\n',
        encoding="utf-8",
    )
    records["named"] = len(named) + 1

    seen = pairs[3 * k :]
    leaked = pairs[: k // 10]  # texts the edge source trains on
    unseen = [(t, "a_label_training_never_saw") for t, _ in seen[: max(1, len(seen) // 10)]]
    test = seen[len(unseen) :] + leaked + unseen
    (out / "test.csv").write_text(_csv([["text", "category"], *[list(p) for p in test]]), encoding="utf-8")
    records["test"] = len(test)

    csv_source = {
        "format": "csv",
        "schema": "text STRING, category STRING",
        "options": {"header": True, "multiLine": True, "escape": '"'},
    }
    train = {"splits": {"train": 1.0}}  # every training source's rows are the one train split
    config = {
        "name": "fuzz",
        "task": "fuzz",
        "database": "dmine_fuzz",
        "text_col": "text",
        "label_col": "category",
        "sources": {
            "bulk": {
                "path": str(out / "bulk"),
                "format": "csv",
                "schema": SCHEMA_DDL,
                "options": {k: v for k, v in CSV_OPTIONS.items() if k != "encoding"},
                "id_col": "record_id",
                "derive": {"category": "label"},
                "required": ["text"],
                **train,
            },
            "edge": {**csv_source, "path": str(out / "edge.csv"), **train},
            "zh_gbk": {**csv_source, "path": str(out / "zh_gbk.csv"), "encoding": "auto", **train},
            "nested": {
                "format": "json",
                "path": str(out / "nested.json"),
                "records": ["train", "test"],
                "schema": "text STRING, category STRING",
            },
            "named": {
                "format": "json",
                "path": str(out / "named.jsonl"),
                "options": {"multiLine": False},
                "schema": "`ticket text` STRING, `the.label` STRING",
                "derive": {"text": "`ticket text`", "category": "`the.label`"},
                **train,
            },
            "test": {**csv_source, "path": str(out / "test.csv"), "dedup": False},
        },
        "clean": {"max_chars": 2000, "on_too_long": "truncate"},
        "embed": {"max_length": 64, "batch_size": 64},
        "classify": {"train_split": "train", "eval_split": "test", "model": "logreg", "params": {"maxIter": 30}},
        "cluster": {"k": 8},
        "report": {"enabled": False},
        "tracking": {"enabled": False},
    }
    import yaml

    (out / "pipeline.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    manifest = {"rows": sum(records.values()), "records": records, "seed": seed, "config": str(out / "pipeline.yaml")}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest
