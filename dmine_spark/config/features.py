"""The ``features:`` section: which columns become which feature vectors (see ``dmine_spark.features.tabular``)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Literal

from pydantic import Field, field_validator, model_validator

from dmine_spark.config.errors import Strict

__all__ = [
    "WORD_PATTERN",
    "STOP_WORD_LANGUAGES",
    "parse_reference_time",
    "TextFeaturesConfig",
    "SelectConfig",
    "FeaturesConfig",
    "FeaturesSection",
]

# A word is a run of letters, combining marks and digits, with inner apostrophes (don't, l'été) and inner
# zero-width joiners and non-joiners (Persian می‌خواهم, Indic conjuncts): vowel signs and harakat stay in their
# word, and bidi marks or stray zero-width characters at a word's edge stay out of it.
WORD_PATTERN = r"[\p{L}\p{M}\p{N}]+(?:['’\x{200C}\x{200D}][\p{L}\p{M}\p{N}]+)*"
STOP_WORD_LANGUAGES = Literal[
    "danish",
    "dutch",
    "english",
    "finnish",
    "french",
    "german",
    "hungarian",
    "italian",
    "norwegian",
    "portuguese",
    "russian",
    "spanish",
    "swedish",
    "turkish",
]


def parse_reference_time(text: str) -> datetime:
    """Parse an ISO 8601 date or timestamp; a value without an offset is read as UTC.

    Raises
    ------
    ValueError
        When ``text`` is not ISO 8601.
    """
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    dt = datetime.fromisoformat(s)
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt


class TextFeaturesConfig(Strict):
    """TF-IDF over the text column: words, character n-grams, or no text at all. Null text is an empty document."""

    kind: Literal["words", "chars", "none"] = "words"
    """``words`` (a Unicode word tokenizer), ``chars`` (character n-grams, for CJK text) or ``none``."""
    hashing: bool = False
    """Hash terms into ``num_features`` buckets (``HashingTF``: no vocabulary pass, no term names)."""
    num_features: int = Field(default=1 << 18, gt=0)
    """Buckets of the hashing trick (``hashing: true``)."""
    vocab_size: int = Field(default=1 << 16, gt=0)
    """Most frequent terms kept by ``CountVectorizer`` (``hashing: false``)."""
    min_df: float = Field(default=2.0, ge=0.0)
    """Smallest number of documents a term must appear in (a fraction of them when below 1)."""
    min_doc_freq: int = Field(default=0, ge=0)
    """IDF cut-off: terms in fewer documents get weight 0."""
    ngram: tuple[int, int] = (1, 2)
    """Character n-gram range ``[low, high]`` of kind ``chars`` (1 to 5)."""
    stop_words: STOP_WORD_LANGUAGES | list[str] | None = None
    """Kind ``words``: a Spark stop-word language (``english``...) or an explicit list."""
    lowercase: bool = True
    """Lowercase before tokenising."""
    token_pattern: str = WORD_PATTERN
    """Kind ``words``: the Java regular expression a token matches."""

    @field_validator("ngram")
    @classmethod
    def _ngram_range(cls, v: tuple[int, int]) -> tuple[int, int]:
        lo, hi = v
        if not 1 <= lo <= hi <= 5:
            raise ValueError(f"ngram must be [low, high] with 1 <= low <= high <= 5, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _words_only(self) -> TextFeaturesConfig:
        if self.stop_words is not None and self.kind != "words":
            raise ValueError(f"stop_words applies to kind 'words' only, not {self.kind!r}")
        return self


class SelectConfig(Strict):
    """Optional selection after assembling: variance threshold, univariate test, PCA (in that order)."""

    variance_threshold: float | None = Field(default=None, ge=0.0)
    """Drop features whose variance on the fit split is at most this."""
    chi2_top: int | None = Field(default=None, gt=0)
    """Keep this many features by a univariate test: chi² for categorical features and label, ANOVA F for
    continuous features with a categorical label, regression F for continuous ones."""
    feature_type: Literal["categorical", "continuous"] = "categorical"
    """What the features are, for the choice of ``chi2_top``'s test."""
    label_type: Literal["categorical", "continuous"] = "categorical"
    """What the label is, for the choice of ``chi2_top``'s test."""
    pca_k: int | None = Field(default=None, gt=0)
    """Project onto this many principal components."""


class FeaturesConfig(Strict):
    """Which columns become which features."""

    text: TextFeaturesConfig = Field(default_factory=TextFeaturesConfig)
    """TF-IDF of the cleaned text."""
    categorical: list[str] = Field(default_factory=list)
    """Columns one-hot encoded (nulls and values unseen in training share one extra slot)."""
    numeric: list[str] = Field(default_factory=list)
    """Columns median-imputed and standardised."""
    time: list[str] = Field(default_factory=list)
    """Timestamp or date columns: year, month, day of week, hour and age in days."""
    reference_time: str | None = None
    """ISO 8601 time that ages are measured against (default: when the pipeline is fitted)."""
    select: SelectConfig = Field(default_factory=SelectConfig)
    """Feature selection after assembling."""

    @field_validator("reference_time")
    @classmethod
    def _iso_time(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                parse_reference_time(v)
            except ValueError:
                raise ValueError(f"reference_time must be an ISO 8601 date or timestamp, got {v!r}") from None
        return v

    @model_validator(mode="after")
    def _consistent(self) -> FeaturesConfig:
        seen: dict[str, str] = {}
        for family in ("categorical", "numeric", "time"):
            for name in getattr(self, family):
                if name in seen:
                    raise ValueError(f"column {name!r} is listed under both {seen[name]} and {family}")
                seen[name] = family
        if self.text.kind == "none" and not seen:
            raise ValueError("nothing to build: text.kind is 'none' and no categorical, numeric or time columns")
        sel = self.select
        if sel.chi2_top is not None and sel.feature_type == "categorical":
            continuous = [
                f
                for f, on in (("text", self.text.kind != "none"), ("numeric", self.numeric), ("time", self.time))
                if on
            ]
            if continuous:
                raise ValueError(
                    f"select.feature_type 'categorical' (chi²) needs categorical features only, but {', '.join(continuous)} "
                    "features are configured; set select.feature_type: continuous"
                )
        return self


class FeaturesSection(FeaturesConfig):
    """The feature table ``feat_<task>``: the families of :class:`FeaturesConfig` and the split they are fitted on."""

    fit_split: str = "train"
    """The split the feature pipeline is fitted on; every split is then transformed by it."""
