"""Words in every script: cluster names and TF-IDF terms keep combining marks and inner joiners, and
cleaning keeps the zero-width characters that are part of a word or an emoji while removing stray ones."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
from pyspark.ml.feature import CountVectorizerModel
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from dmine_spark.config import CleanConfig, FeaturesConfig
from dmine_spark.features.tabular import fit_features
from dmine_spark.mine.cluster import cluster_terms
from dmine_spark.mine.naming import content_stems
from dmine_spark.prepare.clean import TextCleaner, clean_text, remove_control_chars

ZWNJ, ZWJ, RLM, LRM = "\u200c", "\u200d", "\u200f", "\u200e"

# one cluster per script; each text's words, as a reader of that script splits them
SCRIPTS = {
    # Devanagari: vowel signs (ी, ा) and the anusvara (ं) are combining marks
    "hindi": ["मैं अभी नहीं आया", "वह अभी नहीं आया", "अभी नहीं"],
    # Thai: tone marks and vowels above (่, ้, ี) are combining marks
    "thai": ["ไม่ ข้าว ที่นี่", "ข้าว ที่นี่", "ไม่ ที่นี่"],
    # Arabic with harakat (fatha, damma, shadda, sukun)
    "arabic": ["كَتَبَ الوَلَدُ الدَّرْسَ", "الوَلَدُ كَتَبَ", "الدَّرْسَ"],
    # Persian: the non-joiner is part of the word
    "persian": [f"من می{ZWNJ}خواهم بروم", f"نمی{ZWNJ}دانم می{ZWNJ}خواهم", "بروم"],
    # Hebrew with right-to-left marks after words
    "hebrew": [f"שלום{RLM} עולם{RLM}", f"{RLM}שלום חבר", f"חבר{LRM} עולם"],
}


def _words(text: str) -> set[str]:
    return {w.strip(RLM + LRM) for w in text.split()}


@pytest.fixture(scope="module")
def assigned(spark):
    rows = [(i, text) for i, texts in enumerate(SCRIPTS.values()) for text in texts]
    return spark.createDataFrame([(n, *r) for n, r in enumerate(rows)], "id INT, cluster INT, text STRING")


def test_cluster_terms_are_whole_words_in_every_script(assigned) -> None:
    terms = {r.cluster: r for r in cluster_terms(assigned, top_n=20, min_chars=1, stop_words=[], ngram_max=1).collect()}
    for i, (script, texts) in enumerate(SCRIPTS.items()):
        want = set().union(*(_words(t) for t in texts))
        assert set(terms[i].top_terms) == want, script
        assert terms[i].name == " / ".join(terms[i].top_terms[:3]), script


def test_cluster_names_keep_vowel_signs(assigned) -> None:
    """The fault of the issue: a Hindi cluster was named "नह / अभ / आय"."""
    row = cluster_terms(assigned).where("cluster = 0").first()
    words = {w for term in row.name.split(" / ") for w in term.split(" ")}
    assert words <= set().union(*(_words(t) for t in SCRIPTS["hindi"])) and {"नहीं", "अभी"} <= words


def test_tfidf_terms_are_whole_words_in_every_script(spark, assigned) -> None:
    cfg = FeaturesConfig(text={"kind": "words", "min_df": 1})
    vocab = set(next(s for s in fit_features(assigned, cfg).stages if isinstance(s, CountVectorizerModel)).vocabulary)
    assert vocab == set().union(*(_words(t) for texts in SCRIPTS.values() for t in texts))


# ---------------------------------------------------------------------------- zero-width characters

FAMILY = f"👨{ZWJ}👩{ZWJ}👧"
CODER = f"👩🏽{ZWJ}💻"  # a skin-tone modifier before the joiner
RAINBOW = f"\U0001f3f3\ufe0f{ZWJ}🌈"  # the emoji variation selector before the joiner
ENGLAND = "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"  # tag characters after the black flag

KEPT = [
    f"من می{ZWNJ}خواهم",  # Persian ZWNJ between letters
    f"क्{ZWJ}ष और क्{ZWNJ}ष",  # Devanagari: after the virama, before a consonant
    f"{FAMILY} {CODER} {RAINBOW} {ENGLAND}",
    "كَتَبَ الوَلَدُ",  # harakat are marks, not format characters
    "ที่นี่ ไม่ เป็น",
]
# (raw, cleaned): stray zero-width and bidi controls go, whatever the script
STRAY = [
    (f"{RLM}שלום{RLM} עולם{LRM}", "שלום עולם"),
    (f"{ZWNJ}word{ZWNJ} {ZWJ}x", "word x"),  # joiners at a word's edge
    (f"a {ZWJ} b", "a b"),  # between spaces
    ("zero\u200bwidth\u2060joined\ufeff", "zerowidthjoined"),  # ZWSP, word joiner, BOM
    ("\u202bשלום\u202c \u202aabc\u202c \u202dx\u202e", "שלום abc x"),  # embeddings and overrides
    ("\u2066abc\u2069 \u2067אב\u2069 \u2068z\u2069", "abc אב z"),  # isolates
    (f"{FAMILY}{ZWJ} {ZWJ}👧", f"{FAMILY} 👧"),  # a ZWJ that joins no emoji
]
# what remove_all makes of the texts KEPT keeps
REMOVED_ALL = [
    "من میخواهم",
    "क्ष और क्ष",
    "👨👩👧 👩🏽💻 \U0001f3f3\ufe0f🌈 🏴",
    "كَتَبَ الوَلَدُ",
    "ที่นี่ ไม่ เป็น",
]


def _no_format(text: str) -> str:
    return "".join(c for c in text if unicodedata.category(c) != "Cf")


def _expect(spark, fn, pairs) -> None:
    df = spark.createDataFrame(pairs, "t STRING, want STRING")
    assertDataFrameEqual(
        df.select("t", fn(F.col("t")).alias("got")), df.select("t", F.col("want").alias("got")), checkRowOrder=False
    )


def test_clean_text_keeps_joiners_in_words_and_emoji(spark) -> None:
    _expect(spark, clean_text, [(t, t) for t in KEPT])


def test_clean_text_removes_stray_zero_width_and_bidi_characters(spark) -> None:
    _expect(spark, clean_text, STRAY)


def test_remove_all_removes_every_format_character(spark) -> None:
    pairs = list(zip(KEPT, REMOVED_ALL, strict=True)) + [(raw, _no_format(want)) for raw, want in STRAY]
    _expect(spark, lambda c: clean_text(c, zero_width="remove_all"), pairs)
    _expect(spark, lambda c: remove_control_chars(c, "remove_all"), [(f"a{ZWNJ}b\x07c", "ab c")])


def test_remove_control_chars_keeps_joiners_in_words(spark) -> None:
    _expect(spark, remove_control_chars, [(f"می{ZWNJ}خواهم\x07{RLM}", f"می{ZWNJ}خواهم "), (FAMILY, FAMILY)])


def test_zero_width_flows_from_config_to_the_cleaner(spark) -> None:
    df = spark.createDataFrame([("1", f"می{ZWNJ}خواهم {RLM}{FAMILY}")], "id STRING, text STRING")
    for mode, want in [("keep_in_words", f"می{ZWNJ}خواهم {FAMILY}"), ("remove_all", "میخواهم 👨👩👧")]:
        cleaner = TextCleaner.from_config(CleanConfig(zero_width=mode), outputCol="clean")
        assert cleaner.getOrDefault("zeroWidth") == mode
        assert cleaner.transform(df).first().clean == want


def test_unknown_zero_width_modes_are_one_line_errors(spark) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="zero_width"):
        CleanConfig(zero_width="keep")
    with pytest.raises(ValueError, match="TextCleaner: zeroWidth must be keep_in_words or remove_all, got 'keep'"):
        TextCleaner(zeroWidth="keep")
    with pytest.raises(ValueError, match="clean.zero_width: expected keep_in_words or remove_all, got 'all'"):
        clean_text(F.col("t"), zero_width="all")


def test_a_cleaner_saved_without_zero_width_loads_with_the_default(spark, tmp_path: Path) -> None:
    """A model saved before ``zeroWidth`` existed still loads, and keeps joiners in words."""
    path = tmp_path / "cleaner"
    TextCleaner(outputCol="clean", zeroWidth="remove_all").write().overwrite().save(str(path))
    meta_file = next((path / "metadata").glob("part-*"))
    meta = json.loads(meta_file.read_text())
    for section in ("paramMap", "defaultParamMap"):
        meta[section].pop("zeroWidth")
    meta_file.write_text(json.dumps(meta))
    for crc in (path / "metadata").glob(".*.crc"):
        crc.unlink()
    loaded = TextCleaner.load(str(path))
    assert loaded.getOrDefault("zeroWidth") == "keep_in_words"
    df = spark.createDataFrame([(f"می{ZWNJ}خواهم{RLM}",)], "text STRING")
    assert loaded.transform(df).first().clean == f"می{ZWNJ}خواهم"


# ---------------------------------------------------------------------------- names a person would write


def test_cluster_names_use_phrases_and_skip_rare_words(spark) -> None:
    """The fault of the issue: rare words ("zanzibar") named clusters; "top up" could not appear."""
    top_up = [f"how do i top up my card with {w}" for w in ("cash", "a cheque", "apple pay", "my bank", "google pay")]
    rate = [f"the exchange rate on my {w} payment was wrong" for w in ("euro", "dollar", "yen", "pound", "krona")]
    cancel = [f"please cancel my {w} account today" for w in ("savings", "joint", "old", "business", "second")]
    rows = [(0, t) for t in top_up * 4] + [(0, "top up from zanzibar")]
    rows += [(1, t) for t in rate * 4] + [(2, t) for t in cancel * 4]
    df = spark.createDataFrame([(i, c, t) for i, (c, t) in enumerate(rows)], "id INT, cluster INT, text STRING")
    terms = {r.cluster: r for r in cluster_terms(df).collect()}
    assert "top up" in terms[0].name.split(" / ") and "exchange rate" in terms[1].name.split(" / ")
    assert "zanzibar" not in terms[0].top_terms
    # maximal marginal relevance: no two of a name's terms share all their stems
    for r in terms.values():
        name = r.name.split(" / ")
        assert len(name) == 3 and len({frozenset(content_stems(t)) for t in name}) == 3, r.name
    words_only = {r.cluster: r for r in cluster_terms(df, ngram_max=1).collect()}
    assert all(" " not in t for r in words_only.values() for t in r.top_terms)
