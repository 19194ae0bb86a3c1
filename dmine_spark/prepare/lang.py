"""Offline language identification with py3langid, as a pandas (Arrow) UDF and a pyspark.ml stage.

py3langid ships its naive Bayes model inside the wheel, so nothing is
downloaded at run time. Each Python worker loads the model once, on first
use, and keeps it (dmine sessions reuse Python workers); a restricted set of
candidate languages shares the loaded arrays. Only the language codes travel
to the executors, never a model object.

:func:`detect` is the plain-Python core (lists in, lists out, no Spark);
:func:`detect_language` adapts it to a Column and :class:`LanguageDetector`
wraps that as a pyspark.ml stage.

A text gets ``und`` (undetermined, ISO 639-2) with a null score when it is
null, has fewer than ``min_letters`` letters, holds no feature the model
knows (the probabilities stay uniform, as for ``"ok"``), or its best
probability is below ``min_score``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import pandas as pd
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param.shared import HasInputCol, Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, DoubleType, StringType

from dmine_spark.io.schema import ColumnSpec, SchemaChecked

if TYPE_CHECKING:
    from py3langid.langid import LanguageIdentifier

__all__ = [
    "UNDETERMINED",
    "LANG_SCHEMA",
    "supported_languages",
    "get_identifier",
    "detect",
    "detect_language",
    "LanguageDetector",
]

UNDETERMINED = "und"
LANG_SCHEMA = "lang string, lang_score double"

# One identifier per candidate set, per process: key None is the full model.
_IDENTIFIERS: dict[tuple[str, ...] | None, tuple[LanguageIdentifier, float]] = {}


def _full_identifier() -> tuple[LanguageIdentifier, float]:
    if None not in _IDENTIFIERS:
        try:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier
        except ImportError as e:
            raise ImportError("language detection needs py3langid: pip install py3langid==0.4.0") from e

        ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        _IDENTIFIERS[None] = (ident, ident.classify("")[1])
    return _IDENTIFIERS[None]


def supported_languages() -> list[str]:
    """The language codes the bundled model knows (ISO 639-1 where one exists)."""
    return list(_full_identifier()[0].labels)


def _key(languages: Iterable[str] | None) -> tuple[str, ...] | None:
    if languages is None:
        return None
    if isinstance(languages, str):
        languages = [languages]
    key = tuple(sorted(set(languages)))
    if not key:
        return None
    unknown = [lang for lang in key if lang not in supported_languages()]
    if unknown:
        raise ValueError(
            f"languages: unknown code(s) {unknown}; py3langid knows {', '.join(sorted(supported_languages()))}"
        )
    return key


def get_identifier(languages: Iterable[str] | None = None) -> tuple[LanguageIdentifier, float]:
    """This process's identifier for ``languages`` (``None``/empty: all), loaded on first use.

    Returns the identifier (normalised probabilities) and its no-evidence
    score: the best probability of a text without any known feature.
    """
    key = _key(languages)
    if key is None:
        return _full_identifier()
    if key not in _IDENTIFIERS:
        from py3langid.langid import LanguageIdentifier

        full, _ = _full_identifier()
        # a fresh identifier over the same arrays: restricting it leaves the full model as it is
        ident = LanguageIdentifier(
            full.nb_ptc,
            full.nb_pc,
            full.nb_classes,
            full.tk_nextmove,
            full.tk_output,
            norm_probs=True,
            tk_row=full.tk_row,
        )
        ident.set_languages(list(key))
        _IDENTIFIERS[key] = (ident, ident.classify("")[1])
    return _IDENTIFIERS[key]


def _has_letters(text: str, n: int) -> bool:
    """True when ``text`` holds at least ``n`` letters; stops counting at ``n``."""
    for ch in text:
        if ch.isalpha():
            n -= 1
            if n == 0:
                return True
    return False


def detect(
    texts: Iterable[str | None],
    languages: Iterable[str] | None = None,
    *,
    min_letters: int = 1,
    min_score: float = 0.0,
) -> tuple[list[str], list[float | None]]:
    """Language code and normalised probability for each text, in order.

    Parameters
    ----------
    texts : iterable of str or None
        The texts.
    languages : iterable of str, optional
        Restrict the candidates to these codes (see :func:`supported_languages`).
    min_letters : int
        Texts with fewer letters (``str.isalpha``) are ``und``.
    min_score : float
        Detections with a lower probability are ``und``.

    Returns
    -------
    tuple of list
        Codes (``und`` when undetermined) and probabilities (``None`` for ``und``).
    """
    ident, floor = get_identifier(languages)
    need = max(min_letters, 1)
    langs: list[str] = []
    scores: list[float | None] = []
    for text in texts:
        lang, score = UNDETERMINED, None
        if text is not None and _has_letters(text, need):
            code, prob = ident.classify(text)
            # at the no-evidence score the model saw no feature: its argmax is arbitrary
            if prob > floor * (1 + 1e-6) and prob >= min_score:
                lang, score = code, float(prob)
        langs.append(lang)
        scores.append(score)
    return langs, scores


def _detect_udf(languages: tuple[str, ...] | None, min_letters: int, min_score: float):
    def detect_batch(texts: pd.Series) -> pd.DataFrame:
        langs, scores = detect(texts.tolist(), languages, min_letters=min_letters, min_score=min_score)
        return pd.DataFrame(
            {"lang": pd.Series(langs, dtype=object), "lang_score": pd.Series(scores, dtype="float64")},
            index=texts.index,
        )

    return F.pandas_udf(detect_batch, LANG_SCHEMA)


def detect_language(
    col: Column | str,
    languages: Sequence[str] | None = None,
    *,
    min_letters: int = 1,
    min_score: float = 0.0,
) -> Column:
    """``struct<lang: string, lang_score: double>`` for the text column ``col``.

    Arrow-batched: each Python worker classifies whole batches with the
    identifier it loaded once. Arguments as for :func:`detect`; unknown
    language codes fail here, on the driver, before any job runs.
    """
    if min_letters < 0:
        raise ValueError(f"min_letters: must be >= 0, got {min_letters}")
    if not 0.0 <= min_score <= 1.0:
        raise ValueError(f"min_score: must be within [0, 1], got {min_score}")
    key = _key(languages)
    return _detect_udf(key, int(min_letters), float(min_score))(F.col(col) if isinstance(col, str) else col)


class LanguageDetector(SchemaChecked, Transformer, HasInputCol, DefaultParamsReadable, DefaultParamsWritable):
    """pyspark.ml stage that writes the language of ``inputCol`` to ``langCol`` and its probability to ``scoreCol``."""

    langCol = Param(Params._dummy(), "langCol", "output column for the language code", TypeConverters.toString)
    scoreCol = Param(
        Params._dummy(), "scoreCol", "output column for its probability ('' for none)", TypeConverters.toString
    )
    languages = Param(
        Params._dummy(), "languages", "candidate language codes (empty: all)", TypeConverters.toListString
    )
    minLetters = Param(Params._dummy(), "minLetters", "fewer letters than this: und", TypeConverters.toInt)
    minScore = Param(Params._dummy(), "minScore", "lower probability than this: und", TypeConverters.toFloat)

    @keyword_only
    def __init__(
        self,
        *,
        inputCol: str = "text",
        langCol: str = "lang",
        scoreCol: str = "lang_score",
        languages: Sequence[str] = (),
        minLetters: int = 1,
        minScore: float = 0.0,
    ) -> None:
        super().__init__()
        self._setDefault(
            inputCol="text", langCol="lang", scoreCol="lang_score", languages=[], minLetters=1, minScore=0.0
        )
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(
        self,
        *,
        inputCol: str = "text",
        langCol: str = "lang",
        scoreCol: str = "lang_score",
        languages: Sequence[str] = (),
        minLetters: int = 1,
        minScore: float = 0.0,
    ) -> "LanguageDetector":
        kwargs = self._input_kwargs
        if kwargs.get("languages"):
            _key(kwargs["languages"])
        return self._set(**kwargs)

    def _input_columns(self) -> dict[str, ColumnSpec]:
        return {self.getInputCol(): ((StringType,), "a string")}

    def _output_columns(self) -> list[tuple[str, DataType]]:
        lang_col, score_col = self.getOrDefault("langCol"), self.getOrDefault("scoreCol")
        return [(lang_col, StringType()), *([(score_col, DoubleType())] if score_col else [])]

    def _transform(self, dataset: DataFrame) -> DataFrame:
        self.transformSchema(dataset.schema)
        in_col, lang_col, score_col = self.getInputCol(), self.getOrDefault("langCol"), self.getOrDefault("scoreCol")
        tmp = "__dmine_lang"
        detected = detect_language(
            F.col(in_col),
            self.getOrDefault("languages") or None,
            min_letters=self.getOrDefault("minLetters"),
            min_score=self.getOrDefault("minScore"),
        )
        out = dataset.withColumn(tmp, detected).withColumn(lang_col, F.col(f"{tmp}.lang"))
        if score_col:
            out = out.withColumn(score_col, F.col(f"{tmp}.lang_score"))
        return out.drop(tmp)
