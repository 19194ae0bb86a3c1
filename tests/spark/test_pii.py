"""PII masking in Spark SQL, checked against the pure-Python reference masker."""

from __future__ import annotations

import random

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from dmine_spark.prepare import pii_rules
from dmine_spark.prepare.pii import (
    PiiMasker,
    mask_cards,
    mask_cn_ids,
    mask_emails,
    mask_ibans,
    mask_phones,
    mask_pii,
)

ZERO = dict.fromkeys(pii_rules.ALL_TYPES, 0)


def _apply(spark, fn, values):
    df = spark.createDataFrame([(i, v) for i, v in enumerate(values)], "i INT, t STRING")
    return [r[0] for r in df.orderBy("i").select(fn(F.col("t"))).collect()]


def test_each_type_masked_in_real_sentences(spark) -> None:
    cases = [
        (mask_emails, "Please send the statement to anna.smith+bank@mail.example.org today", "<EMAIL>"),
        (mask_phones, "I can't reach support at +1 (415) 555-0134, is it down?", "<PHONE>"),
        (mask_phones, "我的手机是13812345678，请回电", "<PHONE>"),
        (mask_cards, "My card 4111-1111-1111-1111 was charged twice.", "<CARD>"),
        (mask_ibans, "Transfer to GB82 WEST 1234 5698 7654 32 has not arrived", "<IBAN>"),
        (mask_cn_ids, "身份证号11010519491231002X已经验证", "<CN_ID>"),
    ]
    fns = [mask_emails, mask_phones, mask_cards, mask_ibans, mask_cn_ids]
    df = spark.createDataFrame([(i, t) for i, (_, t, _) in enumerate(cases)], "i INT, t STRING")
    rows = df.orderBy("i").select(*[fn("t").alias(fn.__name__) for fn in fns]).collect()
    for (fn, text, placeholder), row in zip(cases, rows, strict=True):
        got = row[fn.__name__]
        assert got == pii_rules.mask_text(text)[0], text
        assert got.count(placeholder) == 1 and got != text, got


def test_single_type_functions_touch_only_their_type(spark) -> None:
    text = "anna@example.com 4111111111111111 DE89370400440532013000 11010519491231002X +44 20 7946 0958"
    got = {fn.__name__: _apply(spark, fn, [text])[0] for fn in (mask_emails, mask_cards, mask_ibans, mask_phones)}
    assert got["mask_emails"] == text.replace("anna@example.com", "<EMAIL>")
    assert got["mask_cards"] == text.replace("4111111111111111", "<CARD>")
    assert got["mask_ibans"] == text.replace("DE89370400440532013000", "<IBAN>")
    assert got["mask_phones"] == text.replace("+44 20 7946 0958", "<PHONE>")


def test_checksum_failures_and_numbers_are_not_masked(spark) -> None:
    rng = random.Random(1)
    orders = [f"Where is order {pii_rules.fake_order_number(rng)}?" for _ in range(20)]
    others = [
        "IBAN DE88 3704 0044 0532 0130 00 was rejected",  # bad check digits
        "ID 110105194912310021 is wrong",  # wrong check character (and not Luhn-valid)
        "Paid $1,250.00 on 2024-01-15 at 10:30, ref 12/05/2023",
        "Top up 15.03.2024 of 99999, +5 points",
    ]
    texts = orders + others
    got = _apply(spark, mask_pii, texts)
    for text, row in zip(texts, got, strict=True):
        assert row["text"] == text
        assert row["counts"] == ZERO


def test_counts_per_type_and_per_run(spark) -> None:
    texts = [
        "Mail 13812345678@163.com or call 13812345678 or +86 138 1234 5678",
        "Cards 4111 1111 1111 1111 and 378282246310005, IBAN NL91ABNA0417164300",
        "ID 11010519491231002X",
        None,
        "",
    ]
    df = spark.createDataFrame([(i, t) for i, t in enumerate(texts)], "i INT, t STRING")
    out = df.select("i", mask_pii("t").alias("m"))
    assert out.schema["m"].dataType.simpleString() == "struct<text:string,counts:map<string,int>>"
    rows = {r["i"]: r["m"] for r in out.collect()}
    assert rows[0]["text"] == "Mail <EMAIL> or call <PHONE> or <PHONE>"
    assert rows[0]["counts"] == ZERO | {"email": 1, "phone": 2}
    assert rows[1]["counts"] == ZERO | {"card": 2, "iban": 1}
    assert rows[2]["counts"] == ZERO | {"cn_id": 1}
    assert rows[3]["text"] is None and rows[3]["counts"] == ZERO
    assert rows[4]["text"] == "" and rows[4]["counts"] == ZERO
    totals = out.agg(*[F.sum(F.col("m.counts")[t]).alias(t) for t in pii_rules.ALL_TYPES]).first().asDict()
    assert totals == {"email": 1, "iban": 1, "cn_id": 1, "card": 2, "phone": 2}


def test_type_selection(spark) -> None:
    text = "anna@example.com 4111111111111111"
    [row] = _apply(spark, lambda c: mask_pii(c, ["card"]), [text])
    assert (row["text"], row["counts"]) == ("anna@example.com <CARD>", {"card": 1})
    with pytest.raises(ValueError, match=r"unknown type\(s\) \['mail'\]"):
        mask_pii(F.col("t"), ["mail"])


def test_runs_in_the_jvm_without_python_udfs(spark) -> None:
    df = spark.createDataFrame([("call +44 20 7946 0958",)], "t STRING").select(mask_pii("t").alias("m"))
    plan = df._jdf.queryExecution().executedPlan().toString()
    assert "EvalPython" not in plan and "PythonUDF" not in plan


def _fuzz_texts(sentences: list[str], n: int, seed: int) -> list[str]:
    """Real customer messages with valid, invalid and decoy values inserted between words."""
    rng = random.Random(seed)

    def bad_iban(r: random.Random) -> str:
        v = pii_rules.fake_iban(r)
        # any other check digits in 02..98 change the remainder, since 10^k is prime to 97
        return v[:2] + f"{(int(v[2:4]) - 2 + r.randint(1, 96)) % 97 + 2:02d}" + v[4:]

    def bad_cn_id(r: random.Random) -> str:
        v = pii_rules.fake_cn_id(r)
        return v[:17] + r.choice([c for c in "0123456789X" if c != v[17]])

    def bad_date_cn_id(r: random.Random) -> str:
        # right check character, impossible or implausible birth date
        born = r.choice(["19990229", "20010230", "19870431", "19751301", "19600100", "18991231", "20990101"])
        body = r.choice(pii_rules.CN_PROVINCES) + "0102" + born + f"{r.randint(0, 999):03d}"
        total = sum(int(c) * w for c, w in zip(body, pii_rules.CN_ID_WEIGHTS, strict=True))
        return body + pii_rules.CN_ID_CHECK_CHARS[total % 11]

    def bad_card(r: random.Random) -> str:
        v = pii_rules.fake_card(r)
        return v[:-1] + str((int(v[-1]) + r.randint(1, 9)) % 10)

    makers = [
        pii_rules.fake_email,
        pii_rules.fake_phone,
        pii_rules.fake_card,
        pii_rules.fake_iban,
        pii_rules.fake_cn_id,
        pii_rules.fake_order_number,
        bad_iban,
        bad_cn_id,
        bad_date_cn_id,
        bad_card,
        lambda r: str(r.randint(10**5, 10**20)),
        lambda r: r.choice(["$1,250.00", "2024-01-15", "15.03.2024", "10:30", "12/05/2023", "+5", "#36;10"]),
    ]
    out = []
    for _ in range(n):
        words = rng.choice(sentences).split()
        for _ in range(rng.randint(0, 3)):
            value = rng.choice(makers)(rng)
            sep = rng.choice([" ", "", ", "])
            i = rng.randint(0, len(words))
            words.insert(i, value if sep == " " else value + sep)
        out.append(" ".join(words))
    return out


def test_fuzz_spark_equals_reference(spark, banking77_texts) -> None:
    texts = _fuzz_texts(banking77_texts, 2000, seed=20)
    df = spark.createDataFrame(list(enumerate(texts)), "i INT, t STRING").repartition(2)
    got = df.select("i", mask_pii("t").alias("m")).select("i", "m.text", "m.counts").orderBy("i")
    expected_rows = [(i, *pii_rules.mask_text(t)) for i, t in enumerate(texts)]
    expected = spark.createDataFrame(expected_rows, "i INT, text STRING, counts MAP<STRING, INT>")
    assertDataFrameEqual(got, expected, checkRowOrder=True)
    # the fuzz is not vacuous: every type is masked, and many candidates are left alone
    totals = {t: sum(c[t] for _, _, c in expected_rows) for t in pii_rules.ALL_TYPES}
    assert min(totals.values()) > 50, totals
    assert sum(text != t for (_, text, _), t in zip(expected_rows, texts, strict=True)) > 700


def test_pii_masker_stage_persists(spark, tmp_path) -> None:
    df = spark.createDataFrame([("1", "card 4111 1111 1111 1111, mail anna@example.com")], "id STRING, text STRING")
    stage = PiiMasker(inputCol="text", outputCol="masked", types=["card"], countsCol="pii")
    stage.write().overwrite().save(str(tmp_path / "masker"))
    loaded = PiiMasker.load(str(tmp_path / "masker"))
    assert loaded.getOrDefault("types") == ["card"]
    assertDataFrameEqual(
        loaded.transform(df).select("id", "masked", "pii"),
        spark.createDataFrame(
            [("1", "card <CARD>, mail anna@example.com", {"card": 1})], "id STRING, masked STRING, pii MAP<STRING, INT>"
        ),
    )
    # in place, no counts column
    out = PiiMasker(inputCol="text", outputCol="text").transform(df)
    assert out.columns == ["id", "text"] and out.first()["text"] == "card <CARD>, mail <EMAIL>"


@pytest.mark.parametrize(
    ("stage", "error", "message"),
    [
        (PiiMasker(inputCol="body"), ValueError, "input column 'body' not found"),
        (PiiMasker(inputCol="n", outputCol="o"), TypeError, "input column 'n' must be a string"),
        (PiiMasker(inputCol="text", outputCol="n"), ValueError, "output column 'n' already exists"),
        (PiiMasker(inputCol="text", countsCol="n"), ValueError, "output column 'n' already exists"),
        (PiiMasker(outputCol="m", countsCol="m"), ValueError, "two output columns share a name"),
    ],
)
def test_pii_masker_checks_its_columns_before_any_job(spark, stage, error: type, message: str) -> None:
    df = spark.createDataFrame([(1, "x")], "n INT, text STRING")
    with pytest.raises(error, match=message):
        stage.transform(df)


def test_pii_masker_refuses_an_unknown_type() -> None:
    with pytest.raises(ValueError, match=r"unknown type\(s\) \['ssn'\]"):
        PiiMasker(types=["email", "ssn"])
