"""PII checksums, generators and the reference masker, without a JVM."""

from __future__ import annotations

import csv
import random
import re
from datetime import date
from pathlib import Path

import pytest

from dmine_spark.prepare.pii_rules import (
    ALL_TYPES,
    PLACEHOLDERS,
    cn_id_ok,
    fake_card,
    fake_cn_id,
    fake_email,
    fake_iban,
    fake_order_number,
    fake_phone,
    iban_ok,
    luhn_ok,
    mask_text,
    phone_ok,
)
from tests.conftest import DATASETS

GENERATORS = {
    "email": fake_email,
    "phone": fake_phone,
    "card": fake_card,
    "iban": fake_iban,
    "cn_id": fake_cn_id,
}


@pytest.mark.parametrize(
    "value", ["4111111111111111", "4111 1111 1111 1111", "4111-1111-1111-1111", "79927398713", "378282246310005"]
)
def test_luhn_valid(value: str) -> None:
    assert luhn_ok(value)


@pytest.mark.parametrize("value", ["4111111111111112", "79927398710", "", "7", "4111x11111111111", "４１１１"])
def test_luhn_invalid(value: str) -> None:
    assert not luhn_ok(value)


@pytest.mark.parametrize(
    "value",
    [
        "DE89 3704 0044 0532 0130 00",
        "DE89370400440532013000",
        "GB82 WEST 1234 5698 7654 32",
        "FR14 2004 1010 0505 0001 3M02 606",
        "NL91ABNA0417164300",
        "BE68539007547034",
        "NO9386011117947",
        "CH9300762011623852957",
    ],
)
def test_iban_valid(value: str) -> None:
    assert iban_ok(value)


@pytest.mark.parametrize(
    "value",
    [
        "DE88 3704 0044 0532 0130 00",  # check digits off by one
        "GB82 WEST 1234 5698 7654 33",  # account digit changed
        "DE89",  # too short
        "1289370400440532013000",  # no country code
        "DE89 3704 0044 0532 0130 00 0000 0000 0000 0",  # too long
    ],
)
def test_iban_invalid(value: str) -> None:
    assert not iban_ok(value)


def test_cn_id_checks() -> None:
    assert cn_id_ok("11010519491231002X")
    assert cn_id_ok("11010519491231002x")
    assert not cn_id_ok("110105194912310021")  # wrong check character
    assert not cn_id_ok("99010519491231002X")  # no such province
    assert not cn_id_ok("110105194913310025")  # month 13
    assert not cn_id_ok("110105199902300023")  # 30 February
    assert not cn_id_ok("11010518890101002X")  # born before 1900
    assert not cn_id_ok("11010519491231002")  # 17 characters


def test_cn_id_birth_date_not_in_the_future() -> None:
    body = "110105" + "20300101" + "123"
    total = sum(int(c) * w for c, w in zip(body, (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2), strict=True))
    value = body + "10X98765432"[total % 11]
    assert cn_id_ok(value, today=date(2031, 1, 1))
    assert not cn_id_ok(value, today=date(2029, 12, 31))


def test_phone_digit_count() -> None:
    assert phone_ok("+44 20 7946 0958")
    assert not phone_ok("+1 555")
    assert not phone_ok("+1234567890123456")


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_generators_make_values_the_masker_takes_whole(kind: str) -> None:
    rng = random.Random(kind)
    for _ in range(500):
        value = GENERATORS[kind](rng)
        for template in ("Hi {}, thanks.", "{}", "我的号码是{}谢谢", "({})"):
            masked, counts = mask_text(template.format(value))
            assert masked == template.format(PLACEHOLDERS[kind]), value
            assert counts[kind] == 1 and sum(counts.values()) == 1, value


def test_generated_checksums_hold() -> None:
    rng = random.Random(3)
    for _ in range(500):
        assert luhn_ok(fake_card(rng))
        assert iban_ok(fake_iban(rng))
        assert cn_id_ok(fake_cn_id(rng))


def test_generators_are_reproducible_and_varied() -> None:
    a = [fake_phone(random.Random(9)) for _ in range(3)]
    assert a == [fake_phone(random.Random(9)) for _ in range(3)]
    rng = random.Random(1)
    assert len({fake_phone(rng) for _ in range(200)}) > 150
    rng = random.Random(2)
    cards = [fake_card(rng) for _ in range(300)]
    assert any(" " in c for c in cards) and any("-" in c for c in cards) and any(c.isdigit() for c in cards)


def test_order_numbers_fail_luhn_and_stay() -> None:
    rng = random.Random(5)
    for _ in range(1000):
        number = fake_order_number(rng)
        assert len(number) == 16 and number.isdigit() and not luhn_ok(number)
        text = f"Order {number} has not arrived"
        assert mask_text(text) == (text, dict.fromkeys(ALL_TYPES, 0))


def test_mask_text_every_type_in_one_sentence() -> None:
    text = (
        "I'm anna@example.com, card 4111 1111 1111 1111, IBAN GB82 WEST 1234 5698 7654 32, "
        "ID 11010519491231002X, call +1 (415) 555-0134 or 13812345678."
    )
    masked, counts = mask_text(text)
    assert masked == "I'm <EMAIL>, card <CARD>, IBAN <IBAN>, ID <CN_ID>, call <PHONE> or <PHONE>."
    assert counts == {"email": 1, "iban": 1, "cn_id": 1, "card": 1, "phone": 2}


@pytest.mark.parametrize(
    "text",
    [
        "I paid $1,250.00 on 2024-01-15 at 10:30.",
        "Transfer of 15.03.2024, reference 12/05/2023, +5 points.",
        "Order 4111111111111112 and IBAN DE88 3704 0044 0532 0130 00 look wrong",
        "ID 110105194912310021 was rejected",
        "My PIN is 1234 and the amount was 99999",
        "Call me at +1 555",
        "IBAN ES81 1234 0123 4567 8901 is wrong",  # bad IBAN: no phone inside its digit groups either
    ],
)
def test_mask_text_leaves_non_pii(text: str) -> None:
    assert mask_text(text) == (text, dict.fromkeys(ALL_TYPES, 0))


def test_email_goes_first_with_its_numeric_local_part() -> None:
    assert mask_text("mail 13812345678@163.com now") == (
        "mail <EMAIL> now",
        {"email": 1, "iban": 0, "cn_id": 0, "card": 0, "phone": 0},
    )


def test_phone_after_plus_is_not_a_card() -> None:
    # 13 digits after "+" are a compact international phone, never a card, even when Luhn-valid
    digits = next(d for d in (f"86138{n:08d}" for n in range(100)) if luhn_ok(d))
    assert mask_text(f"call +{digits}") == ("call <PHONE>", {"email": 0, "iban": 0, "cn_id": 0, "card": 0, "phone": 1})
    assert mask_text(f"card {digits}")[1]["card"] == 1


def test_types_select_and_keep_their_order() -> None:
    text = "anna@example.com 4111111111111111"
    assert mask_text(text, ["card"]) == ("anna@example.com <CARD>", {"card": 1})
    assert mask_text(text, ("card", "email")) == ("<EMAIL> <CARD>", {"email": 1, "card": 1})
    assert mask_text(text, "email") == ("<EMAIL> 4111111111111111", {"email": 1})
    with pytest.raises(ValueError, match=r"unknown type\(s\) \['cards'\]"):
        mask_text(text, ["cards"])
    with pytest.raises(ValueError, match="empty selection"):
        mask_text(text, [])


def test_null_and_idempotent() -> None:
    assert mask_text(None) == (None, dict.fromkeys(ALL_TYPES, 0))
    once, _ = mask_text("anna@example.com, +44 20 7946 0958, 4111 1111 1111 1111")
    assert mask_text(once) == (once, dict.fromkeys(ALL_TYPES, 0))


def _column(path: Path, name: str) -> list[str]:
    if not path.is_file():
        pytest.fail(f"{path} not found; set DMINE_DATASETS to the shared datasets folder")
    with open(path, newline="", encoding="utf-8") as fh:
        return [row[name] for row in csv.DictReader(fh)]


def test_real_banking77_messages_have_no_false_positives() -> None:
    texts = _column(DATASETS / "banking77" / "test.csv", "text")
    assert len(texts) == 3080
    changed = [t for t in texts if mask_text(t)[0] != t]
    assert changed == []


def test_real_phone_numbers_in_waimai_reviews_are_masked() -> None:
    texts = _column(DATASETS / "zh_waimai_10k" / "waimai_10k.csv", "review")
    hits = {t: mask_text(t) for t in texts if mask_text(t)[0] != t}
    # the reviews where customers quote a courier's or their own mobile number
    assert len(hits) == 3
    for masked, counts in hits.values():
        assert counts == {"email": 0, "iban": 0, "cn_id": 0, "card": 0, "phone": 1}
        assert "<PHONE>" in masked and not re.search(r"1[3-9][0-9]{9}", masked)
