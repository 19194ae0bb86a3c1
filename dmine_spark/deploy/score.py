"""Batch scoring with a saved model version: ``dmine score --model <name>@<version> --input <table or path>``.

New rows go through the same ingest rules as the pipeline's sources, then the
model version's own stages: its cleaner (with the clean step's row rules,
so a text that would be quarantined in training is quarantined here), its
embedder (only texts the embedding cache lacks are embedded) and its head.
Predictions are appended to ``<database>.pred_<task>`` (stage ``score``)
with the run id and model version. Rows that break a rule go to
``quarantine_<task>`` (stage ``score``), so input rows = predictions +
quarantined, and the run row in ``runs`` says so.

The same :func:`score_rows` scores each micro-batch of ``dmine stream``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pyspark import StorageLevel
from pyspark.ml import PipelineModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dmine_spark.analyze.runs import RunRecorder
from dmine_spark.config import FILE_FORMATS, ConfigError, Layer, PipelineConfig, SourceConfig
from dmine_spark.features.embed import cache_table, check_model
from dmine_spark.io.tables import (
    append_table,
    ensure_database,
    prediction_rows,
    quarantine_rows,
    set_table_format,
)
from dmine_spark.mine.classify import ClassifierHead
from dmine_spark.mine.finetune import FineTunedClassifier
from dmine_spark.mine.store import ModelStore
from dmine_spark.mine.textmodel import cleaner_of, embedder_of, head_of, predict_clean, with_cache
from dmine_spark.prepare.clean import CleanResult, clean_frame, text_rows
from dmine_spark.prepare.ingest import read_source

__all__ = [
    "ScoreResult",
    "default_model_ref",
    "load_scoring_model",
    "input_source",
    "score_rows",
    "score_batch",
    "record",
]


def default_model_ref(cfg: PipelineConfig) -> str:
    """The latest version of the classifier the pipeline's classify stage trains."""
    return f"{cfg.task}-{cfg.classify.model}@latest"


def load_scoring_model(cfg: PipelineConfig, ref: str | None) -> tuple[PipelineModel, str]:
    """Load ``ref`` (``name@vN``, ``name@latest`` or ``name``) from the pipeline's model store.

    The model's embedder reads and fills the pipeline's own embedding cache.

    Raises
    ------
    ConfigError
        No such version, or a model that is not a text classifier (a regressor,
        a clusterer, or a classifier on the feature table, which needs the
        source's tabular columns).
    """
    ref = ref or default_model_ref(cfg)
    store = ModelStore(cfg.paths.models)
    try:
        model, version = store.load(ref)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"--model {ref}: {exc}") from None
    head = head_of(model)
    if not isinstance(head, (ClassifierHead, FineTunedClassifier)):
        raise ConfigError(
            f"--model {ref}: {version} is a {type(head).__name__}; scoring takes a classifier "
            "saved by the classify or finetune stage"
        )
    if cleaner_of(model) is None or (isinstance(head, ClassifierHead) and embedder_of(model) is None):
        raise ConfigError(f"--model {ref}: {version} was trained on the feature table, not on text embeddings")
    embedder = embedder_of(model)
    if embedder is not None:
        check_model(embedder.getOrDefault("model"))
    return with_cache(model, cache_table(cfg)), version


def input_source(
    spark: SparkSession,
    cfg: PipelineConfig,
    where: str,
    *,
    source: str | None = None,
    fmt: str | None = None,
) -> tuple[str, SourceConfig]:
    """The source config that reads ``where`` (a catalog table or a file/folder path).

    The schema, options and id column come from the pipeline's source
    ``source`` (default: the first), so new data is read exactly as the
    training data was; the label may be absent.
    """
    name = source or cfg.text_sources()[0]
    if name not in cfg.sources:
        raise ConfigError(f"--source: no source named {name!r} in the config (sources: {', '.join(cfg.sources)})")
    tmpl = cfg.sources[name]
    base = {
        "schema": tmpl.schema_ddl,
        "id_col": tmpl.id_col,
        "derive": tmpl.derive,
        "required": [c for c in tmpl.required if c != cfg.label_col],
    }
    p = Path(where)
    if not p.exists() and "/" not in where and spark.catalog.tableExists(where):
        return name, SourceConfig.model_validate({**base, "format": "table", "table": where})
    if not p.exists():
        raise ConfigError(f"--input: {where} is neither an existing path nor a catalog table")
    if fmt is None:
        suffix = p.suffix.lstrip(".").lower() if p.is_file() else ""
        fmt = suffix if suffix in FILE_FORMATS else tmpl.format if tmpl.format in FILE_FORMATS else None
    if fmt not in FILE_FORMATS:
        raise ConfigError(f"--input: cannot tell the format of {where}; pass --format csv|json|text|parquet")
    same = tmpl.format == fmt
    options = tmpl.options if same else {}
    encoding = tmpl.encoding if same and fmt != "parquet" else None
    return name, SourceConfig.model_validate(
        {**base, "format": fmt, "path": str(p), "options": options, "encoding": encoding}
    )


@dataclass
class ScoreResult:
    """What scoring one batch did. ``rows_in`` = ``scored`` + ``quarantined``."""

    rows_in: int
    scored: int
    quarantined: int
    unique_texts: int
    embedded: int
    seconds: float
    model_version: str
    stats: dict[str, float] = field(default_factory=dict)


def score_rows(
    spark: SparkSession,
    cfg: PipelineConfig,
    rows: DataFrame,
    quarantine: DataFrame,
    model: PipelineModel,
    version: str,
    run_id: str,
    *,
    batch_key: str | None = None,
    store: Callable[[PipelineConfig, DataFrame, DataFrame], None] | None = None,
    with_embedding: bool = False,
    stage: str = "score",
    arrival: datetime | None = None,
) -> ScoreResult:
    """Clean (the model's cleaner, the clean step's row rules), embed (cache misses only) and classify ``rows``.

    Parameters
    ----------
    rows : DataFrame
        Typed source rows from ingest (``id``, ``split``, ``source_file``, the text and label columns).
    quarantine : DataFrame
        The rows ingest already refused; rows refused by cleaning join them.
    model : PipelineModel
        A classifier model version (:func:`load_scoring_model`).
    store : callable, optional
        ``store(cfg, predictions, quarantined)`` writes both; the default
        appends the quarantined rows, then the predictions.
    with_embedding : bool
        Keep the ``embedding`` column in the predictions handed to ``store``.
    arrival : datetime, optional
        With ``trends`` on and no ``trends.time_col`` in ``rows``: the ``event_time`` of every row (a stream's
        batch time). A ``trends.time_col`` of ``rows`` is each row's ``event_time`` otherwise.

    Returns
    -------
    ScoreResult
        Duplicates are not removed: every clean input row gets a prediction.

    Raises
    ------
    RuntimeError
        When a row is lost between input and outputs.
    """
    t0 = time.perf_counter()
    base = text_rows(rows, text_col=cfg.text_col, label_col=cfg.label_col, dedup=F.lit(False))
    res = clean_frame(
        base, cfg.clean, text_col="text", dedup_col="_dedup", language=cfg.language, cleaner=cleaner_of(model)
    )
    decided = res.decided.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        clean = decided.where(F.col("outcome") == "clean").select(
            "id", "split", "source_file", "text", "text_key", "label"
        )
        scored, report = predict_clean(model, clean, run_id=run_id)
        times = event_times(cfg, rows, arrival)
        if times is not None:
            scored = scored.join(times, "id", "left")
        predictions = prediction_rows(
            scored,
            run_id=run_id,
            model_version=version,
            stage=stage,
            batch_key=batch_key,
            extra=("embedding",) if with_embedding else (),
        )
        refused = CleanResult(decided=decided, columns=res.columns).refused
        q_in = quarantine.select("id", "split", "source_file", "rule", "reason", F.col("raw").cast("string"))
        q_all = quarantine_rows(q_in.unionByName(refused), run_id=run_id, stage=stage, batch_key=batch_key)
        predictions = predictions.persist(StorageLevel.MEMORY_AND_DISK)
        q_all = q_all.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            n_scored, n_clean, n_q = predictions.count(), clean.count(), q_all.count()
            if n_scored != n_clean:
                raise RuntimeError(f"scoring lost rows: {n_clean} clean rows but {n_scored} predictions")
            (store or _append)(cfg, predictions, q_all)
        finally:
            predictions.unpersist()
            q_all.unpersist()
        n_dup = decided.where(F.col("outcome") == "duplicate").count()
        if n_dup:
            raise RuntimeError(f"scoring dropped {n_dup} rows as duplicates")
    finally:
        decided.unpersist()
    return ScoreResult(
        rows_in=n_scored + n_q,
        scored=n_scored,
        quarantined=n_q,
        unique_texts=report.unique_texts if report else n_clean,
        embedded=report.embedded if report else 0,
        seconds=time.perf_counter() - t0,
        model_version=version,
        stats=report.stats if report else {},
    )


def event_times(cfg: PipelineConfig, rows: DataFrame, arrival: datetime | None = None) -> DataFrame | None:
    """``id, event_time`` of ``rows`` when the trends are on (None otherwise); one row per id."""
    from dmine_spark.mine.trends import event_time

    t = cfg.trends
    if not t.enabled:
        return None
    if t.time_col is not None and t.time_col in rows.columns:
        at = event_time(rows, t.time_col)
    elif arrival is not None:
        at = F.lit(arrival).cast("timestamp")
    else:
        at = F.lit(None).cast("timestamp")
    return rows.select("id", at.alias("event_time")).dropDuplicates(["id"])


def _append(cfg: PipelineConfig, predictions: DataFrame, quarantined: DataFrame) -> None:
    if not quarantined.isEmpty():
        append_table(quarantined, cfg.table(Layer.QUARANTINE))
    append_table(predictions, cfg.table(Layer.PRED))


def record(run: RunRecorder, res: ScoreResult, prefix: str = "score") -> None:
    """Put a scoring result's counts and rates in the run's telemetry."""
    run.count(f"{prefix}.rows_in", res.rows_in)
    run.count(f"{prefix}.rows_scored", res.scored)
    run.count(f"{prefix}.rows_quarantined", res.quarantined)
    run.count("embed.unique_texts", res.unique_texts)
    run.count("embed.cache_hits", res.unique_texts - res.embedded)
    run.count("embed.embedded", res.embedded)
    for key in ("tokens", "padded_tokens", "truncated", "model_loads"):
        run.count(f"embed.{key}", int(res.stats.get(key, 0)))
    run.measure(f"{prefix}.seconds", res.seconds)
    run.measure(f"{prefix}.rows_per_s", res.rows_in / res.seconds if res.seconds > 0 else 0.0)
    run.label(f"{prefix}.model_version", res.model_version)


def score_batch(
    spark: SparkSession,
    cfg: PipelineConfig,
    where: str,
    *,
    model_ref: str | None = None,
    source: str | None = None,
    fmt: str | None = None,
) -> tuple[RunRecorder, ScoreResult]:
    """``dmine score``: score the table or files at ``where`` and append the predictions.

    Raises
    ------
    ConfigError
        An unknown model version, input or source.
    RuntimeError
        When rows do not reconcile.
    """
    model, version = load_scoring_model(cfg, model_ref)
    name, src = input_source(spark, cfg, where, source=source, fmt=fmt)
    ensure_database(spark, cfg.database)
    fmt_used = set_table_format(spark, cfg.tables.format)
    run = RunRecorder(spark, cfg, "score")
    run.label("tables.format", fmt_used)
    run.label("score.input", where)
    try:
        with run.stage("score"):
            required = sorted({cfg.text_col, *src.required})
            # labels=None: a label new data carries is kept as it is, known to the model or not
            got = read_source(
                spark,
                name,
                src,
                required=required,
                label_col=cfg.label_col,
                labels=None,
                staging=str(cfg.paths.staging),
            )
            total = got.total.count()
            res = score_rows(spark, cfg, got.rows, got.quarantine, model, version, run.run_id)
        if cfg.trends.enabled:
            with run.stage("trends"):
                from dmine_spark.deploy.trends import model_labels, record_trends, update_trends

                batch = spark.table(cfg.table(Layer.PRED)).where(
                    (F.col("run_id") == run.run_id) & (F.col("stage") == "score")
                )
                step = update_trends(
                    spark,
                    cfg,
                    batch=batch,
                    scope=F.col("stage") == "score",
                    key=f"score:{run.run_id}",
                    stage="score",
                    run_id=run.run_id,
                    labels=model_labels(cfg, model),
                )
            record_trends(run, step)
        record(run, res)
        run.count("rows_in", total)
        if total != res.rows_in:
            raise RuntimeError(f"score lost rows: {total} read, {res.scored} scored + {res.quarantined} quarantined")
    except BaseException as exc:
        run.finish("failed", f"{type(exc).__name__}: {exc}"[:2000])
        raise
    run.finish("ok")
    return run, res
