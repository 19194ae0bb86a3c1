"""The language-identification core, without a JVM."""

from __future__ import annotations

import pytest

from dmine_spark.prepare.lang import UNDETERMINED, detect, get_identifier, supported_languages


def test_detects_common_languages() -> None:
    langs, scores = detect(
        ["I still have not received my new card", "很快，好吃，味道足，量大", "Ich habe meine Karte verloren"]
    )
    assert langs == ["en", "zh", "de"]
    assert all(0.0 < s <= 1.0 for s in scores)


@pytest.mark.parametrize("text", [None, "", "   ", "123 456", "!!! ???", "ok", "4111 1111 1111 1111"])
def test_no_letters_or_no_evidence_is_undetermined(text: str | None) -> None:
    assert detect([text]) == ([UNDETERMINED], [None])


def test_min_letters_and_min_score() -> None:
    assert detect(["谢谢"])[0] == ["zh"]
    assert detect(["谢谢"], min_letters=3) == ([UNDETERMINED], [None])
    langs, scores = detect(["yes", "Ich habe meine Karte verloren"], min_score=0.5)
    assert langs == [UNDETERMINED, "de"] and scores[0] is None and scores[1] >= 0.5


def test_restricting_languages() -> None:
    langs, scores = detect(["Ich habe meine Karte verloren", "How do I locate my card?", "ok"], ["en", "zh"])
    assert langs == ["en", "en", UNDETERMINED]  # German is not a candidate; "ok" has no evidence
    assert scores[1] > detect(["How do I locate my card?"])[1][0]  # fewer candidates, more mass on each
    with pytest.raises(ValueError, match=r"unknown code\(s\) \['english'\]"):
        detect(["x"], ["en", "english"])


def test_identifiers_are_loaded_once_per_candidate_set() -> None:
    assert get_identifier()[0] is get_identifier(None)[0] is get_identifier([])[0]
    assert get_identifier(["zh", "en"])[0] is get_identifier(("en", "zh", "en"))[0]
    assert get_identifier(["en", "zh"])[0] is not get_identifier()[0]
    assert len(get_identifier()[0].nb_classes) > 100  # restricting a copy leaves the full model whole
    assert {"en", "zh", "de", "fr", "ja"} <= set(supported_languages())
