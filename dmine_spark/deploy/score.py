"""Batch scoring with a saved classifier: ``dmine score --model <name>@<version> --input <table or path>``.

New rows go through the same ingest rules, cleaning and PII masking as the
pipeline's sources, are embedded only where the embedding cache lacks their
text, are classified by the chosen model version, and are appended to
``<database>.predictions_<task>`` with the run id and model version. Rows
that break a rule go to ``quarantine_<task>`` (stage ``score``), so input
rows = predictions + quarantined, and the run row in ``runs`` says so.

The same :func:`score_rows` scores each micro-batch of ``dmine stream``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dmine_spark.analyze.runs import RunRecorder
from dmine_spark.analyze.tables import append_table, ensure_database
from dmine_spark.config import FILE_FORMATS, ConfigError, PipelineConfig, SourceConfig
from dmine_spark.features.embed import cache_filter, embed_missing, resolve_spec, text_key
from dmine_spark.features.encoder import resolve_model_dir
from dmine_spark.mine.classify import as_vector
from dmine_spark.mine.models import ClassifierModel
from dmine_spark.prepare.clean import clean_frame
from dmine_spark.prepare.ingest import read_source

__all__ = [
    "PREDICTION_COLUMNS",
    "ScoreResult",
    "default_model_ref",
    "load_scoring_model",
    "input_source",
    "score_rows",
    "score_batch",
]

# the predictions table (batch and streaming scoring): one row per scored input row
PREDICTION_COLUMNS = (
    "id",
    "source_file",
    "text",
    "label",
    "prediction",
    "probability",
    "model_version",
    "run_id",
    "batch_key",
    "scored_at",
)


def default_model_ref(cfg: PipelineConfig) -> str:
    """The latest version of the classifier the pipeline's classify stage trains."""
    return f"{cfg.task}-{cfg.classify.model}@latest"


def load_scoring_model(cfg: PipelineConfig, ref: str | None) -> tuple[ClassifierModel, str]:
    """Load ``ref`` (``name@vN``, ``name@latest`` or ``name``) from the pipeline's model store.

    Only classifiers trained on embeddings of the pipeline's own model can
    score: vectors of another model would be meaningless to them.
    """
    from dmine_spark.spark.jobs import model_store

    ref = ref or default_model_ref(cfg)
    store = model_store(cfg)
    try:
        model, version = store.load(ref)
        meta = store.meta(version)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"--model {ref}: {exc}") from None
    if not isinstance(model, ClassifierModel):
        raise ConfigError(
            f"--model {ref}: {version} is a {meta.get('model')} ({meta.get('family')}); "
            "scoring takes a classifier saved by the classify stage"
        )
    if meta.get("features", "embedding") != "embedding":
        raise ConfigError(f"--model {ref}: {version} was trained on the feature table, not on text embeddings")
    trained_on = meta.get("embed_model")
    if trained_on and trained_on != cfg.embed.model:
        raise ConfigError(
            f"--model {ref}: {version} was trained on embeddings of {trained_on!r}, but embed.model is "
            f"{cfg.embed.model!r}; score with the same model (--set embed.model={trained_on})"
        )
    return model, version


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
    name = source or next(iter(cfg.sources))
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
        raise ConfigError(f"--input: cannot tell the format of {where}; pass --format csv|json|parquet")
    options = tmpl.options if tmpl.format == fmt else {}
    return name, SourceConfig.model_validate({**base, "format": fmt, "path": str(p), "options": options})


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


def _cache_table(cfg: PipelineConfig) -> str:
    return cfg.table("emb_cache") if cfg.embed.cache else f"{cfg.database}.emb_scratch_{cfg.task}"


def score_rows(
    spark: SparkSession,
    cfg: PipelineConfig,
    rows: DataFrame,
    quarantine: DataFrame,
    model: ClassifierModel,
    version: str,
    run_id: str,
    *,
    batch_key: str | None = None,
    store: Callable[[PipelineConfig, DataFrame, DataFrame], None] | None = None,
    with_embedding: bool = False,
) -> ScoreResult:
    """Clean, mask, embed (cache misses only) and classify ``rows`` (typed source rows from ingest).

    ``quarantine`` holds the rows ingest already refused; rows refused by
    cleaning join them in ``quarantine_<task>`` with stage ``score``.
    Duplicates are not removed: every input row gets a prediction.
    ``store(cfg, predictions, quarantined)`` writes both; the default appends
    the quarantined rows, then the predictions. ``with_embedding`` keeps the
    ``embedding`` column in the predictions handed to ``store``.
    """
    from dmine_spark.spark.jobs import model_spec

    t0 = time.perf_counter()
    text = F.col(cfg.text_col).cast("string")
    label = F.col(cfg.label_col).cast("string") if cfg.label_col and cfg.label_col in rows.columns else F.lit(None)
    base = rows.select(
        "id",
        "split",
        F.col("source") if "source" in rows.columns else F.col("split").alias("source"),
        "source_file",
        text.alias("text"),
        label.cast("string").alias("label"),
        F.lit(False).alias("_dedup"),
    )
    res = clean_frame(base, cfg.clean, text_col="text", dedup_col="_dedup", pii=cfg.pii, language=cfg.language)
    decided = res.decided.persist(StorageLevel.MEMORY_AND_DISK)
    stamp = F.lit(run_id)
    try:
        clean = res.clean
        spec = resolve_spec(spark, model_spec(cfg))
        cache = _cache_table(cfg)
        rep = embed_missing(
            spark,
            clean.select("text"),
            spec,
            cache,
            batch_size=cfg.embed.batch_size,
            max_tokens=cfg.embed.max_tokens,
            records_per_partition=cfg.embed.records_per_partition,
            run_id=run_id,
        )
        vectors = (
            spark.table(cache).where(cache_filter(spec)).select("text_key", "embedding").dropDuplicates(["text_key"])
        )
        feats = as_vector(clean.withColumn("text_key", text_key("text")).join(vectors, "text_key"))
        scored = model.transform(feats).select(
            "id",
            "source_file",
            "text",
            "label",
            "prediction",
            F.col("probability").cast("double").alias("probability"),
            F.lit(version).alias("model_version"),
            stamp.alias("run_id"),
            F.lit(batch_key).cast("string").alias("batch_key"),
            F.current_timestamp().alias("scored_at"),
            *(["embedding"] if with_embedding else []),
        )
        q_clean = res.quarantine.select(
            "id",
            F.col("source").alias("split"),
            "source_file",
            "rule",
            "reason",
            F.col("text_raw").alias("raw"),
        )
        q_all = quarantine.select("id", "split", "source_file", "rule", "reason", F.col("raw").cast("string"))
        q_all = q_all.unionByName(q_clean).select(
            *q_all.columns,
            stamp.alias("run_id"),
            F.lit("score").alias("stage"),
            F.lit(batch_key).cast("string").alias("batch_key"),
        )
        scored = scored.persist(StorageLevel.MEMORY_AND_DISK)
        q_all = q_all.persist(StorageLevel.MEMORY_AND_DISK)
        try:
            n_scored, n_clean, n_q = scored.count(), clean.count(), q_all.count()
            if n_scored != n_clean:
                raise RuntimeError(f"scoring lost rows: {n_clean} clean rows but {n_scored} predictions")
            (store or _append)(cfg, scored, q_all)
        finally:
            scored.unpersist()
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
        unique_texts=rep.unique_texts,
        embedded=rep.embedded,
        seconds=time.perf_counter() - t0,
        model_version=version,
        stats=rep.stats,
    )


def _append(cfg: PipelineConfig, predictions: DataFrame, quarantined: DataFrame) -> None:
    if not quarantined.isEmpty():
        append_table(quarantined, cfg.table("quarantine"))
    append_table(predictions, cfg.table("predictions"))


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
    """``dmine score``: score the table or files at ``where`` and append the predictions."""
    from dmine_spark.analyze.tables import set_table_format

    try:
        resolve_model_dir(cfg.embed.model)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
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
            got = read_source(spark, name, src, required=required, label_col=cfg.label_col, labels=None)
            total = got.total.count()
            res = score_rows(spark, cfg, got.rows, got.quarantine, model, version, run.run_id)
        record(run, res)
        run.count("rows_in", total)
        if total != res.rows_in:
            raise RuntimeError(f"score lost rows: {total} read, {res.scored} scored + {res.quarantined} quarantined")
    except BaseException as exc:
        run.finish("failed", f"{type(exc).__name__}: {exc}"[:2000])
        raise
    run.finish("ok")
    return run, res
