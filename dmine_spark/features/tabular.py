"""Feature tables: text, categorical, numeric and time columns to one ``features`` vector.

A cleaned table (a stable row ``id``, a text column, an optional label and
tabular columns) becomes a feature table keyed by ``id``. Each family of
columns gets its own vector, built from pyspark.ml stages:

- text: TF-IDF over words (``RegexTokenizer`` with a Unicode pattern, optional
  ``StopWordsRemover``) or over character n-grams, for CJK text that has no
  word segmenter (characters from Spark built-ins, ``NGram`` per n);
- categorical: ``StringIndexer(handleInvalid="keep")`` + ``OneHotEncoder``, so
  nulls and values unseen in training share one extra slot per column;
- numeric: median ``Imputer`` + ``VectorAssembler`` + ``StandardScaler``;
- time: year, month, day of week, hour and age in days against a reference time.

``VectorAssembler`` joins the families into ``features``; optional selectors
(variance threshold, a univariate test such as chi², PCA) follow. Everything
is ONE ``Pipeline``, so the fitted ``PipelineModel`` is saved once, fitted on
the training split and applied unchanged to the others.

:func:`check_columns` validates the config against a schema before any Spark
job runs; :func:`fit_features` calls it, so a misspelt or mistyped column
fails with one line naming the config key and the column.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from pyspark import keyword_only
from pyspark.ml import Pipeline, PipelineModel, Transformer
from pyspark.ml.feature import (
    IDF,
    PCA,
    CountVectorizer,
    HashingTF,
    Imputer,
    NGram,
    OneHotEncoder,
    RegexTokenizer,
    StandardScaler,
    StopWordsRemover,
    StringIndexer,
    UnivariateFeatureSelector,
    VarianceThresholdSelector,
    VectorAssembler,
)
from pyspark.ml.param.shared import HasInputCol, HasInputCols, HasOutputCol, Param, Params, TypeConverters
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType,
    ByteType,
    DataType,
    DateType,
    IntegerType,
    LongType,
    NumericType,
    ShortType,
    StringType,
    StructType,
    TimestampNTZType,
    TimestampType,
)

from dmine_spark.config import ConfigError, FeaturesConfig, TextFeaturesConfig, parse_reference_time

__all__ = [
    "TEXT_VEC",
    "CATEGORICAL_VEC",
    "NUMERIC_VEC",
    "TIME_VEC",
    "FEATURES",
    "FAMILY_VECS",
    "TIME_PARTS",
    "char_tokens",
    "time_parts",
    "age_days",
    "EmptyIfNull",
    "CharTokenizer",
    "ArrayConcat",
    "TimeFeatures",
    "check_columns",
    "build_feature_pipeline",
    "fit_features",
    "feature_table",
]

log = logging.getLogger(__name__)

TEXT_VEC = "text_features"
CATEGORICAL_VEC = "categorical_features"
NUMERIC_VEC = "numeric_features"
TIME_VEC = "time_features"
FEATURES = "features"
FAMILY_VECS = (TEXT_VEC, CATEGORICAL_VEC, NUMERIC_VEC, TIME_VEC)
TIME_PARTS = ("year", "month", "day_of_week", "hour", "age_days")

# Intermediate columns of the pipeline; feature_table leaves them out.
_P = "_f_"
_MICROS_PER_DAY = 86_400_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_TIME_TYPES = (TimestampType, TimestampNTZType, DateType)
_CATEGORY_TYPES = (StringType, BooleanType, ByteType, ShortType, IntegerType, LongType)


# --------------------------------------------------------------------------- Column functions


def char_tokens(col: Column, *, lowercase: bool = True) -> Column:
    """The characters of ``col`` as an array, without whitespace; null text gives ``[]``.

    Java regexes match whole code points, so an emoji or a CJK extension
    character stays one token.
    """
    text = F.coalesce(col, F.lit(""))
    if lowercase:
        text = F.lower(text)
    return F.regexp_extract_all(text, F.lit(r"[^\s\p{Z}]"), 0)


def time_parts(col: Column) -> dict[str, Column]:
    """Year, month, day of week (1 = Sunday ... 7 = Saturday) and hour, as doubles.

    Parts are taken in the session time zone (UTC in dmine sessions).
    """
    ts = col.cast("timestamp")
    return {
        "year": F.year(ts).cast("double"),
        "month": F.month(ts).cast("double"),
        "day_of_week": F.dayofweek(ts).cast("double"),
        "hour": F.hour(ts).cast("double"),
    }


def age_days(col: Column, reference: datetime) -> Column:
    """Days from ``col`` to ``reference`` (positive for the past), as a double."""
    ref_micros = (reference - _EPOCH) // timedelta(microseconds=1)
    return ((F.lit(ref_micros) - F.unix_micros(col.cast("timestamp"))) / F.lit(float(_MICROS_PER_DAY))).cast("double")


# --------------------------------------------------------------------------- pipeline stages


def _require(dataset: DataFrame, stage: str, name: str, ok: tuple[type[DataType], ...], want: str) -> None:
    fields = {f.name: f for f in dataset.schema.fields}
    if name not in fields:
        raise ValueError(f"{stage}: input column {name!r} not found")
    if not isinstance(fields[name].dataType, ok):
        raise TypeError(f"{stage}: input column {name!r} must be {want}, got {fields[name].dataType.simpleString()}")


class EmptyIfNull(Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable):
    """Copy a string column with nulls as ``""`` (``RegexTokenizer`` fails on nulls)."""

    @keyword_only
    def __init__(self, *, inputCol: str = "text", outputCol: str = "text_filled") -> None:
        super().__init__()
        self._setDefault(inputCol="text", outputCol="text_filled")
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, inputCol: str = "text", outputCol: str = "text_filled") -> EmptyIfNull:
        return self._set(**self._input_kwargs)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        _require(dataset, "EmptyIfNull", self.getInputCol(), (StringType,), "a string")
        return dataset.withColumn(self.getOutputCol(), F.coalesce(F.col(self.getInputCol()), F.lit("")))


class CharTokenizer(Transformer, HasInputCol, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable):
    """pyspark.ml stage writing :func:`char_tokens` of ``inputCol`` to ``outputCol``."""

    lowercase = Param(Params._dummy(), "lowercase", "lowercase before splitting", TypeConverters.toBoolean)

    @keyword_only
    def __init__(self, *, inputCol: str = "text", outputCol: str = "chars", lowercase: bool = True) -> None:
        super().__init__()
        self._setDefault(inputCol="text", outputCol="chars", lowercase=True)
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, inputCol: str = "text", outputCol: str = "chars", lowercase: bool = True) -> CharTokenizer:
        return self._set(**self._input_kwargs)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        _require(dataset, "CharTokenizer", self.getInputCol(), (StringType,), "a string")
        tokens = char_tokens(F.col(self.getInputCol()), lowercase=self.getOrDefault("lowercase"))
        return dataset.withColumn(self.getOutputCol(), tokens)


class ArrayConcat(Transformer, HasInputCols, HasOutputCol, DefaultParamsReadable, DefaultParamsWritable):
    """Concatenate array columns (the n-grams of each n) into one array column."""

    @keyword_only
    def __init__(self, *, inputCols: list[str] | None = None, outputCol: str = "concat") -> None:
        super().__init__()
        self._setDefault(outputCol="concat")
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(self, *, inputCols: list[str] | None = None, outputCol: str = "concat") -> ArrayConcat:
        return self._set(**self._input_kwargs)

    def _transform(self, dataset: DataFrame) -> DataFrame:
        cols = self.getInputCols()
        return dataset.withColumn(self.getOutputCol(), F.concat(*(F.coalesce(F.col(c), F.array()) for c in cols)))


class TimeFeatures(Transformer, HasInputCols, DefaultParamsReadable, DefaultParamsWritable):
    """Time parts and age in days for each timestamp or date column.

    For the i-th input column it writes ``{outputPrefix}{i}_{part}`` for each
    part in :data:`TIME_PARTS`, as doubles (null where the input is null).
    """

    outputPrefix = Param(Params._dummy(), "outputPrefix", "prefix of the output columns", TypeConverters.toString)
    referenceTime = Param(
        Params._dummy(), "referenceTime", "ISO 8601 time that ages are measured against", TypeConverters.toString
    )

    @keyword_only
    def __init__(
        self, *, inputCols: list[str] | None = None, outputPrefix: str = "time_", referenceTime: str | None = None
    ) -> None:
        super().__init__()
        self._setDefault(outputPrefix="time_")
        self.setParams(**self._input_kwargs)

    @keyword_only
    def setParams(
        self, *, inputCols: list[str] | None = None, outputPrefix: str = "time_", referenceTime: str | None = None
    ) -> TimeFeatures:
        return self._set(**self._input_kwargs)

    def output_cols(self) -> list[str]:
        prefix = self.getOrDefault("outputPrefix")
        return [f"{prefix}{i}_{part}" for i in range(len(self.getInputCols())) for part in TIME_PARTS]

    def _transform(self, dataset: DataFrame) -> DataFrame:
        ref = self.getOrDefault("referenceTime") if self.isDefined("referenceTime") else None
        if not ref:
            raise ValueError("TimeFeatures: referenceTime is not set")
        reference = parse_reference_time(ref)
        prefix = self.getOrDefault("outputPrefix")
        new: dict[str, Column] = {}
        for i, name in enumerate(self.getInputCols()):
            _require(dataset, "TimeFeatures", name, _TIME_TYPES, "a timestamp or date")
            parts = time_parts(F.col(name))
            parts["age_days"] = age_days(F.col(name), reference)
            new.update({f"{prefix}{i}_{part}": parts[part] for part in TIME_PARTS})
        return dataset.withColumns(new)


# --------------------------------------------------------------------------- validation


def _quote_list(names: list[str], limit: int = 15) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} columns)" if len(names) > limit else "")


def check_columns(
    cfg: FeaturesConfig,
    schema: StructType,
    *,
    text_col: str = "text",
    label_col: str | None = None,
    id_col: str | None = None,
    key: str = "features",
) -> None:
    """Check that every configured column exists with a usable type; no Spark job runs.

    Raises
    ------
    ConfigError
        One line naming the config key (``features.numeric``...) and the column.
    """
    fields = {f.name: f.dataType for f in schema.fields}
    have = _quote_list(list(fields))

    def need(where: str, name: str, ok: tuple[type[DataType], ...] | None, want: str, hint: str = "") -> None:
        if name not in fields:
            raise ConfigError(f"{where}: column {name!r} not found (columns: {have})")
        if ok is not None and not isinstance(fields[name], ok):
            raise ConfigError(f"{where}: column {name!r} is {fields[name].simpleString()}; {want}{hint}")

    if id_col is not None:
        need("id_col", id_col, None, "")
    if cfg.text.kind != "none":
        need("text_col", text_col, (StringType,), f"{key}.text (kind {cfg.text.kind}) needs a string column")
    for name in cfg.categorical:
        need(
            f"{key}.categorical", name, _CATEGORY_TYPES, "categorical features need a string, integer or boolean column"
        )
    for name in cfg.numeric:
        need(
            f"{key}.numeric",
            name,
            (NumericType,),
            "numeric features need a numeric column",
            " (cast it first, or list it under categorical)" if isinstance(fields.get(name), StringType) else "",
        )
    for name in cfg.time:
        need(f"{key}.time", name, _TIME_TYPES, "time features need a timestamp or date column (cast strings first)")
    if cfg.select.chi2_top is not None:
        if label_col is None:
            raise ConfigError(f"{key}.select.chi2_top: needs a label column, but label_col is not set")
        need("label_col", label_col, (NumericType,), f"{key}.select.chi2_top needs a numeric label (index it first)")
    elif label_col is not None:
        need("label_col", label_col, None, "")
    for out in (*FAMILY_VECS, FEATURES):
        if out in fields:
            raise ConfigError(
                f"{key}: the input already has a column {out!r}, which the feature table writes; rename it"
            )


# --------------------------------------------------------------------------- pipeline


def _text_stages(cfg: TextFeaturesConfig, text_col: str) -> list:
    if cfg.kind == "words":
        stages: list = [
            EmptyIfNull(inputCol=text_col, outputCol=f"{_P}text"),
            RegexTokenizer(
                inputCol=f"{_P}text",
                outputCol=f"{_P}tokens",
                pattern=cfg.token_pattern,
                gaps=False,
                toLowercase=cfg.lowercase,
            ),
        ]
        terms = f"{_P}tokens"
        if cfg.stop_words is not None:
            words = (
                StopWordsRemover.loadDefaultStopWords(cfg.stop_words)
                if isinstance(cfg.stop_words, str)
                else list(cfg.stop_words)
            )
            stages.append(StopWordsRemover(inputCol=terms, outputCol=f"{_P}terms", stopWords=words))
            terms = f"{_P}terms"
    else:
        stages = [CharTokenizer(inputCol=text_col, outputCol=f"{_P}chars", lowercase=cfg.lowercase)]
        lo, hi = cfg.ngram
        gram_cols = []
        for n in range(lo, hi + 1):
            if n == 1:
                gram_cols.append(f"{_P}chars")
            else:
                stages.append(NGram(n=n, inputCol=f"{_P}chars", outputCol=f"{_P}grams{n}"))
                gram_cols.append(f"{_P}grams{n}")
        if len(gram_cols) == 1:
            terms = gram_cols[0]
        else:
            stages.append(ArrayConcat(inputCols=gram_cols, outputCol=f"{_P}grams"))
            terms = f"{_P}grams"
    if cfg.hashing:
        stages.append(HashingTF(inputCol=terms, outputCol=f"{_P}tf", numFeatures=cfg.num_features))
    else:
        stages.append(CountVectorizer(inputCol=terms, outputCol=f"{_P}tf", vocabSize=cfg.vocab_size, minDF=cfg.min_df))
    stages.append(IDF(inputCol=f"{_P}tf", outputCol=TEXT_VEC, minDocFreq=cfg.min_doc_freq))
    return stages


def build_feature_pipeline(cfg: FeaturesConfig, *, text_col: str = "text", label_col: str | None = None) -> Pipeline:
    """The unfitted feature ``Pipeline`` for ``cfg``.

    Parameters
    ----------
    cfg : FeaturesConfig
        Families and selection settings.
    text_col : str
        The text column (ignored when ``cfg.text.kind`` is ``"none"``).
    label_col : str, optional
        Numeric label, needed only by ``select.chi2_top``.

    Returns
    -------
    Pipeline
        Stages writing ``text_features``, ``categorical_features``,
        ``numeric_features`` and ``time_features`` (those configured) and
        ``features``. A null ``reference_time`` is fixed here, at build time,
        so every split the fitted model transforms shares the same reference.
    """
    if cfg.select.chi2_top is not None and label_col is None:
        raise ConfigError("features.select.chi2_top: needs a label column, but label_col is not set")
    stages: list = []
    families: list[str] = []
    if cfg.text.kind != "none":
        stages += _text_stages(cfg.text, text_col)
        families.append(TEXT_VEC)
    if cfg.categorical:
        idx = [f"{_P}cat{i}_idx" for i in range(len(cfg.categorical))]
        ohe = [f"{_P}cat{i}_ohe" for i in range(len(cfg.categorical))]
        stages += [
            StringIndexer(inputCols=list(cfg.categorical), outputCols=idx, handleInvalid="keep"),
            # dropLast=False: every label and the keep bucket (nulls, unseen values) get a slot
            OneHotEncoder(inputCols=idx, outputCols=ohe, dropLast=False),
            VectorAssembler(inputCols=ohe, outputCol=CATEGORICAL_VEC),
        ]
        families.append(CATEGORICAL_VEC)
    if cfg.numeric:
        imputed = [f"{_P}num{i}" for i in range(len(cfg.numeric))]
        stages += [
            Imputer(inputCols=list(cfg.numeric), outputCols=imputed, strategy="median"),
            VectorAssembler(inputCols=imputed, outputCol=f"{_P}num_raw"),
            StandardScaler(inputCol=f"{_P}num_raw", outputCol=NUMERIC_VEC, withMean=True, withStd=True),
        ]
        families.append(NUMERIC_VEC)
    if cfg.time:
        reference = (
            parse_reference_time(cfg.reference_time) if cfg.reference_time else datetime.now(timezone.utc)
        ).isoformat()
        timer = TimeFeatures(inputCols=list(cfg.time), outputPrefix=f"{_P}time", referenceTime=reference)
        parts = timer.output_cols()
        stages += [
            timer,
            Imputer(inputCols=parts, outputCols=[f"{c}_imp" for c in parts], strategy="median"),
            VectorAssembler(inputCols=[f"{c}_imp" for c in parts], outputCol=TIME_VEC),
        ]
        families.append(TIME_VEC)

    sel = cfg.select
    steps: list[tuple[str, object]] = []
    if sel.variance_threshold is not None:
        steps.append(("var", sel.variance_threshold))
    if sel.chi2_top is not None:
        steps.append(("uni", sel.chi2_top))
    if sel.pca_k is not None:
        steps.append(("pca", sel.pca_k))
    current = FEATURES if not steps else f"{_P}assembled"
    stages.append(VectorAssembler(inputCols=families, outputCol=current))
    for i, (kind, value) in enumerate(steps):
        out = FEATURES if i == len(steps) - 1 else f"{_P}sel_{kind}"
        if kind == "var":
            stages.append(VarianceThresholdSelector(featuresCol=current, outputCol=out, varianceThreshold=value))
        elif kind == "uni":
            uni = UnivariateFeatureSelector(
                featuresCol=current, outputCol=out, labelCol=label_col, selectionMode="numTopFeatures"
            )
            uni.setFeatureType(sel.feature_type).setLabelType(sel.label_type).setSelectionThreshold(float(value))
            stages.append(uni)
        else:
            stages.append(PCA(k=int(value), inputCol=current, outputCol=out))
        current = out
    return Pipeline(stages=stages)


def fit_features(
    df: DataFrame,
    cfg: FeaturesConfig,
    *,
    text_col: str = "text",
    label_col: str | None = None,
    id_col: str | None = "id",
) -> PipelineModel:
    """Check ``cfg`` against ``df``'s schema, then fit the feature pipeline on ``df``.

    Fit on the training split only; the returned model transforms any split
    (and, saved with ``model.write().save(path)``, later data) the same way.
    """
    check_columns(cfg, df.schema, text_col=text_col, label_col=label_col, id_col=id_col)
    pipeline = build_feature_pipeline(cfg, text_col=text_col, label_col=label_col)
    log.info("fitting %d feature stages", len(pipeline.getStages()))
    return pipeline.fit(df)


def feature_table(
    model: PipelineModel, df: DataFrame, *, id_col: str = "id", label_col: str | None = "label"
) -> DataFrame:
    """Apply a fitted feature model: ``id``, the family vectors, ``features`` and the label if ``df`` has it."""
    if id_col not in df.columns:
        raise ConfigError(f"id_col: column {id_col!r} not found (columns: {_quote_list(df.columns)})")
    out = model.transform(df)
    cols = [id_col] + [c for c in (*FAMILY_VECS, FEATURES) if c in out.columns]
    if label_col is not None and label_col in df.columns:
        cols.append(label_col)
    return out.select(*cols)
