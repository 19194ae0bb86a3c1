"""Spark profiles (built in, or ``conf/base/spark/<name>.yaml``): where and how a dmine session runs.

One schema validates the five kinds of place a pipeline runs (local,
standalone, YARN, Kubernetes, Databricks) and the spark-submit options or
Databricks job cluster each implies, so a profile that would fail only on the
cluster fails here, in one line.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from dmine_spark.compat import UnsupportedSpark, databricks_line
from dmine_spark.config.errors import Strict, spark_strings

__all__ = ["SparkProfile", "SubmitConfig", "DatabricksCluster", "DatabricksAutoscale", "DEFAULT_MASTER", "SUBMIT_OWNED"]

# kind -> (the masters it takes, as written in a message); Databricks sets its clusters' master itself
_MASTERS: dict[str, tuple[re.Pattern[str], str]] = {
    "local": (re.compile(r"^local(\[(\*|\d+)(,\d+)?\]|-cluster\[\d+,\d+,\d+\])?$"), "local[N], local[*] or local[N,F]"),
    "standalone": (re.compile(r"^spark://[^/:,]+:\d+(,[^/:,]+:\d+)*$"), "spark://<host>:<port>"),
    "yarn": (re.compile(r"^yarn$"), "yarn (the ResourceManager comes from HADOOP_CONF_DIR)"),
    "kubernetes": (re.compile(r"^k8s://https?://[^/\s]+$"), "k8s://https://<api-server>:<port>"),
}
_KIND_BY_MASTER_PREFIX = (("local", "local"), ("spark://", "standalone"), ("yarn", "yarn"), ("k8s://", "kubernetes"))
DEFAULT_MASTER = "local[2]"

# spark-submit options the profile already expresses; a second --py-files would replace the first, not add to it
SUBMIT_OWNED = {
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


class SubmitConfig(Strict):
    """The ``spark-submit`` options a cluster profile implies beyond its Spark conf.

    Read by :func:`dmine_spark.spark.profiles.submit_args` (options) and
    :func:`~dmine_spark.spark.profiles.submit_env` (environment of spark-submit).
    """

    deploy_mode: Literal["client", "cluster"] = "client"
    """``client`` (the driver runs where spark-submit runs) or ``cluster`` (YARN, Kubernetes)."""
    archives: list[str] = Field(default_factory=list)
    """Archives unpacked in every container, e.g. ``env.tar.gz#environment`` (a packed Python environment)."""
    py_files: list[str] = Field(default_factory=list)
    """More Python files or zips for the executors (dmine_spark's own zip is added by spark-submit.sh)."""
    files: list[str] = Field(default_factory=list)
    """Files placed in every container's working directory."""
    env: dict[str, str] = Field(default_factory=dict)
    """Environment of spark-submit, e.g. ``PYSPARK_PYTHON: ./environment/bin/python``."""
    extra_args: list[str] = Field(default_factory=list)
    """Other spark-submit options, verbatim (not those the profile already expresses)."""

    _env_as_strings = field_validator("env", mode="before")(lambda v: spark_strings(v))

    @field_validator("extra_args")
    @classmethod
    def _not_owned(cls, v: list[str]) -> list[str]:
        for arg in v:
            owner = SUBMIT_OWNED.get(arg.split("=", 1)[0])
            if owner:
                raise _bad(f"{arg.split('=', 1)[0]} belongs in {owner}, where the profile merges it")
        return v


class DatabricksAutoscale(Strict):
    """Autoscaling bounds of a Databricks job cluster."""

    min_workers: int = Field(ge=1)
    """Fewest workers."""
    max_workers: int = Field(ge=1)
    """Most workers."""

    @model_validator(mode="after")
    def _ordered(self) -> DatabricksAutoscale:
        if self.min_workers > self.max_workers:
            raise _bad(f"min_workers {self.min_workers} is above max_workers {self.max_workers}")
        return self


class DatabricksCluster(Strict):
    """A Databricks job for a pipeline: its job cluster (Jobs API 2.1 ``new_cluster``), wheel and limits.

    The cluster's ``spark_conf`` is the profile's ``conf``, so Spark settings
    live in one place in every profile.
    """

    job_name: str | None = None
    """The job's name (default: ``dmine-<pipeline name>``)."""
    spark_version: str
    """A runtime key, e.g. ``17.3.x-cpu-ml-scala2.13``."""
    node_type_id: str
    """Worker instance type."""
    driver_node_type_id: str | None = None
    """Driver instance type (default: the workers')."""
    num_workers: int | None = Field(default=None, ge=0)
    """A fixed number of workers (give this or ``autoscale``)."""
    autoscale: DatabricksAutoscale | None = None
    """Autoscaling bounds (give this or ``num_workers``)."""
    data_security_mode: str | None = Field(default=None, pattern=r"^[A-Z_]+$")
    """Unity Catalog access mode, e.g. ``SINGLE_USER``."""
    runtime_engine: Literal["STANDARD", "PHOTON"] | None = None
    """The runtime engine."""
    policy_id: str | None = None
    """A cluster policy to apply."""
    spark_env_vars: dict[str, str] = Field(default_factory=dict)
    """Environment variables of the cluster's processes."""
    custom_tags: dict[str, str] = Field(default_factory=dict)
    """Tags on the cluster's instances."""
    wheel: str | None = None
    """dmine_spark's wheel on the workspace (``dmine databricks-job --wheel`` overrides it)."""
    extra_wheels: list[str] = Field(default_factory=list)
    """Wheels dmine_spark depends on that PyPI lacks."""
    jars: list[str] = Field(default_factory=list)
    """Jars the cluster loads (``libraries: jar``): Spark NLP's, for its backends on a Spark 3.5 runtime."""
    workspace_dir: str = "/Workspace/Shared/dmine"
    """Where the repository's ``conf/`` is synced to, read by the job's driver."""
    work_dir: str | None = None
    """``DMINE_WORK_DIR`` on the cluster: models, reports, the run store."""
    timeout_seconds: int = Field(default=0, ge=0)
    """Job timeout in seconds (0: no limit)."""
    max_retries: int = Field(default=0, ge=0)
    """Retries of a failed job run."""
    min_retry_interval_millis: int = Field(default=0, ge=0)
    """Milliseconds between retries."""
    max_concurrent_runs: int = Field(default=1, ge=1)
    """Job runs allowed at once."""

    _env_as_strings = field_validator("spark_env_vars", "custom_tags", mode="before")(lambda v: spark_strings(v))

    @field_validator("spark_version")
    @classmethod
    def _runtime_key(cls, v: str) -> str:
        if not re.match(r"^\d+\.\d+\.x-[a-z0-9-]*scala\d+\.\d+$", v):
            raise _bad("expected a runtime key like 17.3.x-cpu-ml-scala2.13 (`databricks clusters spark-versions`)")
        try:
            databricks_line(v)  # a runtime of a Spark line dmine_spark supports, with that line's Scala
        except UnsupportedSpark as exc:
            raise _bad(str(exc)) from None
        return v

    @field_validator("jars")
    @classmethod
    def _jar_paths(cls, v: list[str]) -> list[str]:
        for path in v:
            if not path.endswith(".jar") or not path.startswith(_WHEEL_PREFIXES):
                raise _bad(f"{path!r} is not a .jar under {', '.join(_WHEEL_PREFIXES)}")
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


class SparkProfile(Strict):
    """How to build the SparkSession and where it runs: master, catalog, Spark conf and cluster sections.

    ``kind`` names the place (``local``, ``standalone``, ``yarn``,
    ``kubernetes``, ``databricks``); left out, it is read from ``master``.
    ``submit`` holds spark-submit options beyond the conf (deploy mode, the
    Python environment archive...), ``databricks`` the job cluster of a
    Databricks profile. Validators reject a master that does not fit the
    kind and the mistakes that would otherwise fail only on the cluster.
    """

    kind: Literal["local", "standalone", "yarn", "kubernetes", "databricks"] = "local"
    """Where the session runs; left out, it is read from ``master``."""
    master: str = Field(default=DEFAULT_MASTER, validate_default=True)
    """The Spark master (``local[2]``, ``spark://host:7077``, ``yarn``, ``k8s://https://...``)."""
    app_name: str = "dmine"
    """The Spark application name."""
    catalog: Literal["hive", "in-memory"] = "hive"
    """``hive``: a persistent catalog (an embedded metastore in the work dir); ``in-memory``: gone at exit."""
    log_level: str = "WARN"
    """Spark's log level."""
    conf: dict[str, str] = Field(default_factory=dict, validate_default=True)
    """Spark settings (``spark.*``); settings given to spark-submit win over these."""
    submit: SubmitConfig | None = Field(default=None, validate_default=True)
    """spark-submit options beyond the conf (cluster kinds)."""
    databricks: DatabricksCluster | None = Field(default=None, validate_default=True)
    """The job cluster of a ``kind: databricks`` profile."""

    _conf_as_strings = field_validator("conf", mode="before")(lambda v: spark_strings(v))

    @model_validator(mode="before")
    @classmethod
    def _infer_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and "kind" not in data:
            if "databricks" in data and "master" not in data:
                return {**data, "kind": "databricks"}
            master = str(data.get("master", DEFAULT_MASTER))
            kind = next((k for prefix, k in _KIND_BY_MASTER_PREFIX if master.startswith(prefix)), "local")
            return {**data, "kind": kind}
        return data

    @field_validator("master")
    @classmethod
    def _master_fits_kind(cls, v: str, info: ValidationInfo) -> str:
        kind = info.data.get("kind")
        if kind == "databricks":
            # the default stands for "not given": Databricks starts the session, whatever master says
            if v != DEFAULT_MASTER:
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
