"""The data generator without a JVM: exact fault accounting, determinism, rates, edits and the CLI."""

from __future__ import annotations

import csv
import hashlib
import math
import random
import re
import unicodedata
from collections import Counter
from dataclasses import fields
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from dmine_spark.prepare.pii_rules import mask_text
from dmine_spark.tools.datagen import (
    MANIFEST,
    NEAR_DUP_OPS,
    FaultRates,
    generate,
    load_pool,
    near_dup_edit,
    read_manifest,
)
from tests.conftest import DATASETS

# high rates, so a few thousand rows hold every fault many times
HIGH = FaultRates(
    dup=0.05,
    near_dup=0.05,
    html=0.04,
    pii=0.05,
    null=0.02,
    malformed=0.03,
    overlong=0.01,
    bad_encoding=0.02,
    control=0.03,
    fullwidth=0.03,
)
ZERO = FaultRates(**{f.name: 0.0 for f in fields(FaultRates)})
HTML_TAG = re.compile(r"</?(p|div|span|b|br|html|body)\b[^>]*>")
CONTROL = re.compile("[\u200b-\u200d\u2060\ufeff\x01-\x08\x0b-\x1f\x7f]")
FULLWIDTH_ALNUM = re.compile("[\uff10-\uff19\uff21-\uff3a\uff41-\uff5a]")
DATA_COLS = ["text", "label", "dataset", "rating", "category", "amount", "created_at", "lang"]


@pytest.fixture(scope="module")
def parquet_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, dict]:
    out = tmp_path_factory.mktemp("dg") / "pq"
    res = generate(out, 6000, fmt="parquet", seed=7, datasets_dir=DATASETS, rates=HIGH, chunk_rows=2500)
    df = pd.concat([pq.read_table(out / f["path"]).to_pandas() for f in res.manifest["files"]], ignore_index=True)
    return df, read_manifest(out)


def _tags(df: pd.DataFrame) -> pd.Series:
    return df["faults"].fillna("").map(lambda s: [t for t in s.split(",") if t])


def _has(df: pd.DataFrame, name: str) -> pd.Series:
    return _tags(df).map(lambda ts: any(t.split(":", 1)[0] == name for t in ts))


def test_manifest_counts_match_the_parquet_rows(parquet_run) -> None:
    df, m = parquet_run
    assert len(df) == m["rows"] == sum(f["rows"] for f in m["files"]) == 6000
    assert [f["path"] for f in m["files"]] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert df["record_id"].is_unique and df["record_id"].is_monotonic_increasing
    assert sum(m["row_kinds"].values()) == 6000
    tags = _tags(df)
    names = Counter(n for ts in tags for n in {t.split(":", 1)[0] for t in ts})
    assert dict(names) == {k: v for k, v in m["counts"].items() if v}
    assert Counter(t for ts in tags for t in ts if ":" in t) == Counter(m["details"])
    assert (tags.map(len) == 0).sum() == m["clean_rows"]
    assert m["row_kinds"]["dup"] == m["counts"]["dup"] and m["row_kinds"]["near_dup"] == m["counts"]["near_dup"]
    assert dict(df["dataset"].value_counts()) == m["datasets"]
    for name, n in m["counts"].items():
        assert n > 0, f"{name} never injected"


def test_each_fault_is_present_exactly_where_tagged(parquet_run) -> None:
    df, m = parquet_run
    text = df["text"].fillna("")
    for col in ("text", "label", "category", "rating", "amount", "created_at"):
        nulls = df[col].isna()
        assert nulls.sum() == m["details"][f"null:{col}"], col
        assert (nulls == df["faults"].fillna("").str.contains(f"null:{col}", regex=False)).all()
    assert (text.str.contains("\ufffd", regex=False) == _has(df, "bad_encoding")).all()
    assert (text.str.len() >= m["overlong_chars"]).eq(_has(df, "overlong")).all()
    assert (text.map(lambda t: bool(CONTROL.search(t))) == _has(df, "control")).all()
    assert (text.map(lambda t: bool(FULLWIDTH_ALNUM.search(t))) == _has(df, "fullwidth")).all()
    assert (text.map(lambda t: bool(HTML_TAG.search(t))) == _has(df, "html")).all()
    # a wrong-typed value in the string columns: exactly the malformed rows
    bad_rating = df["rating"].notna() & pd.to_numeric(df["rating"], errors="coerce").isna()
    bad_amount = df["amount"].notna() & pd.to_numeric(df["amount"], errors="coerce").isna()
    ts = pd.to_datetime(df["created_at"], format="%Y-%m-%d %H:%M:%S", errors="coerce")
    bad_ts = df["created_at"].notna() & ts.isna()
    assert (bad_rating | bad_amount | bad_ts).sum() == m["counts"]["malformed"]
    assert bad_rating.sum() == m["details"]["malformed:bad_rating"]
    assert ((bad_rating | bad_amount | bad_ts) == _has(df, "malformed")).all()
    ok = ts.dropna()
    assert ok.min() >= pd.Timestamp("2024-01-01") and ok.max() < pd.Timestamp("2026-01-01")
    ratings = pd.to_numeric(df["rating"], errors="coerce").dropna()
    assert set(ratings.astype(int)) <= {1, 2, 3, 4, 5}


def test_pii_values_are_found_by_the_masker(parquet_run) -> None:
    df, m = parquet_run
    only_pii = df[_tags(df).map(lambda ts: len(ts) == 1 and ts[0].startswith("pii:"))]
    assert len(only_pii) > 50
    for text, tag in zip(only_pii["text"], only_pii["faults"], strict=True):
        kind = tag.split(":", 1)[1]
        _, counts = mask_text(text)
        if kind == "order_number":  # the decoy: a 16-digit number that is not a card
            assert counts["card"] == 0, text
        else:
            assert counts[kind] >= 1, (kind, text)


def test_copies_repeat_an_earlier_plain_row(parquet_run) -> None:
    df, m = parquet_run
    by_id = df.set_index("record_id")
    dups = df[_has(df, "dup")]
    near = df[_has(df, "near_dup")]
    assert df["dup_of"].notna().sum() == len(dups) + len(near)
    src = by_id.loc[dups["dup_of"]]
    assert (src[DATA_COLS].values == dups[DATA_COLS].values).all()
    assert (dups["dup_of"].values < dups["record_id"].values).all()
    assert src["faults"].isna().all()
    nsrc = by_id.loc[near["dup_of"]]
    assert (nsrc["text"].values != near["text"].values).all()
    others = [c for c in DATA_COLS if c != "text"]
    assert (nsrc[others].values == near[others].values).all()
    # the only rows with the same text are the exact copies: base rows are all different
    assert df["text"].dropna().duplicated().sum() == len(dups)
    plain = df[df["faults"].isna()]["text"]
    key = plain.map(lambda t: " ".join(unicodedata.normalize("NFKC", t).split()).lower())
    assert key.is_unique


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_same_files(tmp_path: Path) -> None:
    for fmt in ("parquet", "csv"):
        a = generate(tmp_path / f"a_{fmt}", 1500, fmt=fmt, seed=11, datasets_dir=DATASETS, rates=HIGH, chunk_rows=700)
        b = generate(tmp_path / f"b_{fmt}", 1500, fmt=fmt, seed=11, datasets_dir=DATASETS, rates=HIGH, chunk_rows=700)
        c = generate(tmp_path / f"c_{fmt}", 1500, fmt=fmt, seed=12, datasets_dir=DATASETS, rates=HIGH, chunk_rows=700)
        assert _digest(a.out) == _digest(b.out)
        assert len(_digest(a.out)) == 4  # three part files and the manifest
        assert _digest(a.out)["part-00000." + fmt] != _digest(c.out)["part-00000." + fmt]
        assert a.manifest == b.manifest != c.manifest
    # both formats hold the same rows; only malformed and bad-encoding rows are written differently
    pq_rows = pd.concat(pq.read_table(p).to_pandas() for p in sorted((tmp_path / "a_parquet").glob("part-*")))
    csv_rows = _read_csv_records(tmp_path / "a_csv", read_manifest(tmp_path / "a_csv"))
    same = [
        (r.record_id, r.text, r.label, r.faults)
        for r in pq_rows.itertuples()
        if not re.search("malformed|bad_encoding", r.faults or "")
    ]
    by_id = {r[0]: (r[0], r[1] or None, r[2] or None, r[9] or None) for r in csv_rows}
    assert len(same) > 1300 and all(by_id[row[0]] == row for row in same)


def _read_csv_records(folder: Path, manifest: dict) -> list[list[str]]:
    records: list[list[str]] = []
    for f in manifest["files"]:
        with open(folder / f["path"], newline="", encoding="utf-8", errors="surrogateescape") as fh:
            rows = list(csv.reader(fh))
        assert rows[0] == ["record_id", "text", "label", "dataset", "rating", "category", "amount", "created_at",
                           "lang", "faults", "dup_of"]  # fmt: skip
        records += rows[1:]
    return records


def test_csv_holds_raw_invalid_bytes_and_broken_records(tmp_path: Path) -> None:
    res = generate(tmp_path / "csv", 4000, fmt="csv", seed=5, datasets_dir=DATASETS, rates=HIGH, chunk_rows=1500)
    m = res.manifest
    records = _read_csv_records(res.out, m)
    assert len(records) == 4000
    d = m["details"]
    wrong_width = [r for r in records if len(r) != 11]
    assert (
        len(wrong_width)
        == d["malformed:extra_field"] + d["malformed:missing_field"] + d["malformed:unquoted_delimiter"]
    )
    good = [r for r in records if len(r) == 11]

    def fails(value: str, parse) -> bool:
        try:
            parse(value)
        except ValueError:
            return True
        return False

    assert sum(r[4] != "" and fails(r[4], int) for r in good) == d["malformed:bad_rating"]
    assert sum(r[6] != "" and fails(r[6], float) for r in good) == d["malformed:bad_amount"]
    ts = lambda v: pd.Timestamp(pd.to_datetime(v, format="%Y-%m-%d %H:%M:%S"))  # noqa: E731
    assert sum(r[7] != "" and fails(r[7], ts) for r in good) == d["malformed:bad_timestamp"]
    # invalid UTF-8 survives as raw bytes (surrogate escapes here), exactly on the tagged rows
    invalid = [r for r in good if re.search("[\udc80-\udcff]", r[1])]
    assert len(invalid) == m["counts"]["bad_encoding"]
    assert all("bad_encoding" in r[9] for r in invalid)
    raw = b"".join((res.out / f["path"]).read_bytes() for f in m["files"])
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    # nulls are empty fields, texts keep their newlines inside quotes
    assert sum(r[1] == "" for r in good) == d["null:text"]
    assert any("\n" in r[1] for r in good)


def test_rates_are_respected(tmp_path: Path) -> None:
    n = 20_000
    rates = FaultRates()
    m = generate(tmp_path / "r", n, seed=3, datasets_dir=DATASETS, chunk_rows=10_000).manifest
    assert m["rates"] == {k: getattr(rates, k) for k in m["rates"]}
    expect = {name: getattr(rates, name) for name in m["counts"] if name != "null"}
    for col in ("text", "label", "category", "rating", "amount", "created_at"):
        expect[f"null:{col}"] = rates.null
    for name, rate in expect.items():
        got = m["details"][name] if name.startswith("null:") else m["counts"][name]
        sd = math.sqrt(n * rate * (1 - rate))
        assert abs(got - n * rate) <= 4.5 * sd + 2, (name, got, n * rate)
    zero = generate(tmp_path / "z", 3000, seed=3, datasets_dir=DATASETS, rates=ZERO).manifest
    assert zero["clean_rows"] == 3000 and not any(zero["counts"].values())


def test_bad_arguments_say_which(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rate 'near_dup' must be between 0 and 1"):
        generate(tmp_path / "a", 10, datasets_dir=DATASETS, rates=FaultRates(near_dup=1.5))
    with pytest.raises(ValueError, match="dup \\+ near_dup \\+ malformed must stay below 1"):
        generate(tmp_path / "a", 10, datasets_dir=DATASETS, rates=FaultRates(dup=0.5, near_dup=0.5))
    with pytest.raises(ValueError, match="rows must be an integer of at least 1"):
        generate(tmp_path / "a", 0, datasets_dir=DATASETS)
    with pytest.raises(ValueError, match="format must be one of"):
        generate(tmp_path / "a", 10, fmt="json", datasets_dir=DATASETS)
    with pytest.raises(ValueError, match="unknown dataset"):
        generate(tmp_path / "a", 10, datasets_dir=DATASETS, sources=["banking78"])
    with pytest.raises(FileNotFoundError, match="datasets folder"):
        generate(tmp_path / "a", 10, datasets_dir=tmp_path / "nowhere")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="already exists and is not empty"):
        generate(tmp_path / "full", 10, datasets_dir=DATASETS)
    with pytest.raises(FileNotFoundError, match="no _manifest.json"):
        read_manifest(tmp_path / "full")


def test_pool_is_distinct_and_sanitised() -> None:
    pool = load_pool(DATASETS, ["banking77", "zh_waimai_10k"])
    assert set(pool.sizes) == {"banking77", "zh_waimai_10k"}
    assert 13_000 < pool.sizes["banking77"] <= 13_083  # train + test less repeated texts
    keys = [" ".join(unicodedata.normalize("NFKC", t).split()).lower() for t in pool.texts]
    assert len(set(keys)) == len(keys)
    assert not any(CONTROL.search(t) or "\ufffd" in t or FULLWIDTH_ALNUM.search(t) for t in pool.texts)
    # groups are contiguous (dataset, label) ranges
    for i in range(0, len(pool), 997):
        s, n = pool.group_start[i], pool.group_size[i]
        assert s <= i < s + n
        assert len({(pool.dataset[j], pool.label[j]) for j in range(s, s + n)}) == 1


def test_sources_and_segments(tmp_path: Path) -> None:
    # more rows than BANKING77 has texts: later rows join several texts of one intent, all distinct
    res = generate(tmp_path / "b", 30_000, seed=1, datasets_dir=DATASETS, sources=["banking77"], rates=ZERO)
    m = res.manifest
    assert m["datasets"] == {"banking77": 30_000}
    assert int(m["segments"]["1"]) <= m["pool_texts"]["banking77"] and "2" in m["segments"]
    df = pd.concat(pq.read_table(res.out / f["path"]).to_pandas() for f in m["files"])
    assert df["text"].str.lower().is_unique
    assert df["category"].eq("banking").all() and df["label"].nunique() == 77


def test_near_dup_edit_always_changes_the_text() -> None:
    rng = random.Random(0)
    texts = ["How do I locate my card?", "I still have not received my new card, I ordered over a week ago.",
             "很快，好吃，味道足，量大", "ok", "12345"]  # fmt: skip
    seen_ops = Counter()
    for t in texts:
        for op in NEAR_DUP_OPS:
            out, done = near_dup_edit(t, rng, op)
            assert out != t and out.strip()
            assert done == op or done == "whitespace"
            seen_ops[done] += 1
    assert set(seen_ops) == set(NEAR_DUP_OPS)
    assert near_dup_edit("Where is my card?", random.Random(4)) == near_dup_edit("Where is my card?", random.Random(4))
    assert near_dup_edit("Where is my card?", random.Random(1), "case")[0].lower() == "where is my card?"
    with pytest.raises(ValueError, match="unknown op 'shout'"):
        near_dup_edit("x", rng, "shout")


def test_cli_datagen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dmine_spark.cli import main

    out = tmp_path / "cli"
    rc = main(["datagen", "--rows", "800", "--out", str(out), "--format", "csv", "--seed", "4",
               "--datasets", str(DATASETS), "--rate-dup", "0.1", "--rate-malformed", "0", "--chunk-rows", "300"])  # fmt: skip
    assert rc == 0
    m = read_manifest(out)
    assert m["rows"] == 800 and m["format"] == "csv" and m["seed"] == 4 and m["rates"]["dup"] == 0.1
    assert m["counts"]["malformed"] == 0 and len(m["files"]) == 3
    assert (out / MANIFEST).is_file()
    printed = capsys.readouterr().out
    assert "800 rows" in printed and "rows/s" in printed
    rc = main(["datagen", "--rows", "10", "--out", str(out), "--datasets", str(DATASETS)])
    assert rc == 2
    assert "already exists and is not empty" in capsys.readouterr().err
    rc = main(
        ["datagen", "--rows", "10", "--out", str(tmp_path / "x"), "--datasets", str(DATASETS), "--rate-html", "2"]
    )
    assert rc == 2
    assert "rate 'html' must be between 0 and 1" in capsys.readouterr().err


def test_cli_datagen_asks_for_the_datasets_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dmine_spark.cli import main

    monkeypatch.delenv("DMINE_DATASETS", raising=False)
    assert main(["datagen", "--rows", "10", "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err == (
        "dmine: error: --datasets: give the folder of the shared datasets (or set DMINE_DATASETS)\n"
    )
