"""Entities per text: cashtags and a dictionary of names and aliases, matched with Spark built-ins only.

A text mentions an entity when it holds a cashtag (``$AAPL``: ``$`` and 1–6
letters, optionally ``.`` and a class letter) or one of the entity's names as
a whole word sequence. Matching is case- and width-insensitive: the clean
stage's NFKC folds full-width forms, and both sides are lower-cased here.

Dictionary matching is a join, not a regular expression per name: each text
is split into word tokens (letters, digits and ``$``), its word n-grams up to
the longest name's length are built with array functions, and the n-grams are
joined with the dictionary (broadcast). CJK runs have no spaces between
words, so a name in Chinese is matched as a substring of the text instead
(``locate`` against the broadcast names). No Python row UDF is involved.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

__all__ = ["CASHTAG", "normalize_name", "dictionary_frame", "match_entities"]

CASHTAG = r"(?<![\w$])\$([A-Za-z]{1,6}(?:\.[A-Za-z])?)(?![\w])"
"""A cashtag: ``$`` then 1–6 letters (and an optional share-class suffix such as ``.B``), not inside a word."""

# word tokens are letters, digits, & and $; anything else separates them ("J.P. Morgan" -> j p morgan)
_TOKEN_SPLIT = r"[^\p{L}\p{N}&$]+"
_PY_TOKEN_SPLIT = re.compile(r"[^\w&$]+|_")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def normalize_name(name: str) -> str:
    """A name as texts are matched against it: NFKC, lower case, single spaces between its tokens."""
    folded = unicodedata.normalize("NFKC", name).lower()
    return " ".join(t for t in _PY_TOKEN_SPLIT.split(folded) if t)


def dictionary_frame(spark: SparkSession, names: Iterable[tuple[str, str]]) -> DataFrame:
    """``entity, name, tokens, cjk``: each (entity id, name or alias) pair, normalised; duplicates dropped.

    Raises
    ------
    ValueError
        When an entity id or a name is empty once normalised.
    """
    rows = {}
    for entity, name in names:
        norm = normalize_name(str(name or ""))
        if not str(entity or "").strip() or not norm:
            raise ValueError(f"entities: entity {entity!r} has an empty name {name!r}; every row needs both")
        rows[(str(entity).strip(), norm)] = (len(norm.split(" ")), bool(_CJK.search(norm)))
    data = [(e, n, t, c) for (e, n), (t, c) in sorted(rows.items())]
    return spark.createDataFrame(data, "entity STRING, name STRING, tokens INT, cjk BOOLEAN")


def match_entities(
    rows: DataFrame, dictionary: DataFrame | None, *, text_col: str = "text", cashtags: bool = True
) -> DataFrame:
    """``id, entity, match``: every entity each row mentions, once per (row, entity).

    Parameters
    ----------
    rows : DataFrame
        ``id`` and ``text_col``.
    dictionary : DataFrame or None
        :func:`dictionary_frame` rows (None: cashtags only).
    cashtags : bool
        Also take each cashtag as an entity (``$aapl`` → ``AAPL``).

    Returns
    -------
    DataFrame
        ``entity`` is the dictionary's id (or the upper-cased cashtag), ``match``
        the first text span that matched it. Rows mentioning nothing have no row.
    """
    text = F.lower(F.col(text_col))
    found = []
    if cashtags:
        tags = rows.select("id", F.explode(F.regexp_extract_all(F.col(text_col), F.lit(CASHTAG), 1)).alias("m"))
        found.append(tags.select("id", F.upper("m").alias("entity"), F.concat(F.lit("$"), "m").alias("match")))
    if dictionary is not None:
        max_n = dictionary.agg(F.max("tokens")).first()[0] or 1
        words = rows.select("id", F.filter(F.split(text, _TOKEN_SPLIT), lambda t: t != "").alias("w"))
        grams = words.select(
            "id",
            F.explode(
                F.flatten(
                    F.transform(
                        F.sequence(F.lit(1), F.lit(int(max_n))),
                        lambda n: F.transform(
                            # start positions 1..size-n+1 (none when the text is shorter than n words)
                            F.filter(
                                F.sequence(F.lit(1), F.greatest(F.size("w") - n + 1, F.lit(1))),
                                lambda i: i <= F.size("w") - n + 1,
                            ),
                            lambda i: F.array_join(F.slice("w", i, n), " "),
                        ),
                    )
                )
            ).alias("name"),
        )
        words_hit = grams.join(F.broadcast(dictionary.where(~F.col("cjk")).select("entity", "name")), "name")
        found.append(words_hit.select("id", "entity", F.col("name").alias("match")))
        cjk = dictionary.where("cjk").select("entity", "name")
        cjk_hit = rows.select("id", text.alias("_t")).join(F.broadcast(cjk), F.expr("instr(_t, name) > 0"))
        found.append(cjk_hit.select("id", "entity", F.col("name").alias("match")))
    if not found:
        raise ValueError("entities: neither cashtags nor a dictionary to match")
    out = found[0]
    for f in found[1:]:
        out = out.unionByName(f)
    return out.groupBy("id", "entity").agg(F.min("match").alias("match"))
