"""Cleaning Column functions and the clean stage's row decisions, on a real local Spark."""

from __future__ import annotations

from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from dmine_spark.config import CleanConfig
from dmine_spark.prepare.clean import (
    TextCleaner,
    clean_frame,
    clean_text,
    collapse_whitespace,
    content_hash,
    fullwidth_to_halfwidth,
    handle_urls,
    nfkc,
    remove_control_chars,
    strip_html,
    text_key,
)


def _apply(spark, fn, values):
    """The values of ``fn`` over a one-column frame of ``values``, in order (for checks on cleaned text)."""
    df = spark.createDataFrame([(v,) for v in values], "t STRING")
    return [r[0] for r in df.select(fn(F.col("t"))).collect()]


def _expect(spark, fn, pairs: list[tuple[str | None, str | None]]) -> None:
    """``fn`` maps each input of ``pairs`` to its expected output."""
    df = spark.createDataFrame(pairs, "t STRING, want STRING")
    assertDataFrameEqual(
        df.select("t", fn(F.col("t")).alias("got")), df.select("t", F.col("want").alias("got")), checkRowOrder=False
    )


def test_nfkc_full_width_to_half_width(spark) -> None:
    _expect(spark, nfkc, [("ＡＢＣ１２３", "ABC123"), ("ﬁne", "fine"), ("外卖很好吃！", "外卖很好吃!"), (None, None)])


def test_fullwidth_to_halfwidth_in_the_jvm(spark) -> None:
    got = _apply(spark, fullwidth_to_halfwidth, ["ＡＢＣ１２３", "外卖很好吃！（送餐快）", "a\u3000b", "ﬁne", None])
    # width only: the ligature is left for NFKC
    assert got == ["ABC123", "外卖很好吃!(送餐快)", "a b", "ﬁne", None]
    # agrees with NFKC on every full-width ASCII form
    full = "".join(chr(c) for c in range(0xFF01, 0xFF5F))
    assert _apply(spark, fullwidth_to_halfwidth, [full]) == _apply(spark, nfkc, [full])


def test_urls_kept_masked_or_removed(spark) -> None:
    text = [
        "see https://bank.example.com/help?id=1 or www.example.org/x, thanks",
        "订单 http://a.cn/x，谢谢",
        "no link",
    ]
    assert _apply(spark, lambda c: handle_urls(c, "keep"), text) == text
    assert _apply(spark, lambda c: handle_urls(c, "mask"), text) == [
        "see <URL> or <URL>, thanks",
        "订单 <URL>，谢谢",
        "no link",
    ]
    assert [" ".join(t.split()) for t in _apply(spark, lambda c: handle_urls(c, "remove"), text)] == [
        "see or , thanks",
        "订单 ，谢谢",
        "no link",
    ]


def test_strip_html(spark) -> None:
    got = _apply(
        spark, strip_html, ["<p>Card <b>lost</b></p>", "a<script>x=1</script>b", "5 &lt; 6 &amp;&amp; ok", "no tags"]
    )
    assert [" ".join(g.split()) for g in got] == ["Card lost", "a b", "5 < 6 && ok", "no tags"]


def test_control_and_zero_width_removed(spark) -> None:
    _expect(spark, remove_control_chars, [("a\u200bb\ufeffc", "abc"), ("x\x07y", "x y")])


def test_collapse_whitespace(spark) -> None:
    _expect(spark, collapse_whitespace, [("  a \t\n b\u3000c  ", "a b c"), ("", "")])


def test_clean_text_chains_the_steps(spark) -> None:
    _expect(spark, lambda c: clean_text(c, lowercase=True), [("<i>Ｈｅｌｌｏ</i>\u200b  World", "hello world")])


def test_the_dedup_hash_folds_case(spark) -> None:
    h = _apply(spark, content_hash, ["Hello", "hello", "other"])
    assert h[0] == h[1] != h[2]


def test_the_text_key_keeps_case(spark) -> None:
    k = _apply(spark, text_key, ["Hello", "hello", "Hello"])
    assert k[0] == k[2] != k[1] and len(k[0]) == 64


def test_the_text_cleaner_masks_pii_by_default(spark) -> None:
    df = spark.createDataFrame([("1", "<p>write to jane.doe@example.com</p>")], "id STRING, text STRING")
    assertDataFrameEqual(
        TextCleaner(outputCol="clean").transform(df).select("id", "clean"),
        spark.createDataFrame([("1", "write to <EMAIL>")], "id STRING, clean STRING"),
    )


def test_the_text_cleaner_cleans_in_place(spark) -> None:
    df = spark.createDataFrame([("1", "  a\u200b  b ")], "id STRING, text STRING")
    assert TextCleaner(inputCol="text", outputCol="text").transform(df).columns == ["id", "text"]


def test_the_clean_step_and_the_text_cleaner_clean_alike(spark) -> None:
    """A text cleaned for training and the same text cleaned by a saved model's cleaner are the same text."""
    rows = [("1", "<b>Call</b> +44 20 7946 0958 ＮＯＷ"), ("2", "card 4111 1111 1111 1111 &amp; more"), ("3", "x" * 40)]
    df = spark.createDataFrame(rows, "id STRING, text STRING")
    cfg = CleanConfig(max_chars=30)
    from dmine_spark.config import PiiConfig

    cleaner = TextCleaner.from_config(cfg, PiiConfig(), outputCol="text")
    decided = clean_frame(df, cfg, pii=PiiConfig()).clean.select("id", "text")
    assertDataFrameEqual(decided, cleaner.transform(df).select("id", "text"))


def test_text_cleaner_stage_persists(spark, tmp_path) -> None:
    df = spark.createDataFrame([("1", "<b>Hi</b>   there")], "id STRING, text STRING")
    stage = TextCleaner(inputCol="text", outputCol="clean", maxChars=5)
    stage.write().overwrite().save(str(tmp_path / "cleaner"))
    loaded = TextCleaner.load(str(tmp_path / "cleaner"))
    assert loaded.getOrDefault("maxChars") == 5
    assertDataFrameEqual(
        loaded.transform(df).select("id", "clean"), spark.createDataFrame([("1", "Hi th")], "id STRING, clean STRING")
    )


def test_text_cleaner_checks_columns(spark) -> None:
    import pytest

    df = spark.createDataFrame([(1, "x")], "n INT, text STRING")
    with pytest.raises(ValueError, match="input column 'body' not found"):
        TextCleaner(inputCol="body").transform(df)
    with pytest.raises(TypeError, match="must be a string"):
        TextCleaner(inputCol="n", outputCol="o").transform(df)
    with pytest.raises(ValueError, match="output column 'n' already exists"):
        TextCleaner(inputCol="text", outputCol="n").transform(df)


def test_clean_frame_accounts_for_every_row(spark) -> None:
    rows = [
        ("a1", "train", "My card  is lost", True),
        ("a2", "train", "my CARD is lost", True),  # duplicate of a1 after case folding
        ("a3", "train", "<br/> \u200b ", True),  # empty once cleaned
        ("a4", "train", None, True),  # null
        ("a5", "train", "x" * 30, True),  # too long
        ("b1", "test", "My card is lost", False),  # same text, but test rows are never deduped
        ("b2", "test", "My card is lost", False),
    ]
    df = spark.createDataFrame(rows, "id STRING, split STRING, text STRING, dd BOOLEAN")
    res = clean_frame(df, CleanConfig(max_chars=20, on_too_long="quarantine"), dedup_groups=["split"], dedup_col="dd")
    assertDataFrameEqual(res.clean.select("id"), spark.createDataFrame([("a1",), ("b1",), ("b2",)], "id STRING"))
    assertDataFrameEqual(
        res.duplicates.select("id", "kept_id"), spark.createDataFrame([("a2", "a1")], "id STRING, kept_id STRING")
    )
    assertDataFrameEqual(
        res.quarantine.select("id", "rule"),
        spark.createDataFrame(
            [("a3", "empty_text"), ("a4", "empty_text"), ("a5", "text_too_long")], "id STRING, rule STRING"
        ),
    )
    reason = res.quarantine.where("id = 'a5'").first().reason
    assert reason == "text has 30 characters; the limit is 20"
    assert res.clean.count() + res.duplicates.count() + res.quarantine.count() == df.count()


def test_clean_frame_truncates_when_configured(spark) -> None:
    df = spark.createDataFrame([("a", "y" * 30)], "id STRING, text STRING")
    res = clean_frame(df, CleanConfig(max_chars=10, on_too_long="truncate"))
    row = res.clean.first()
    assert row.text == "y" * 10 and row.truncated is True
    assert res.quarantine.count() == 0
