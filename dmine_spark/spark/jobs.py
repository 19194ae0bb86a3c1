"""Config-driven jobs: each stage reads its input tables, calls the step's functions
and writes its output tables, so stages run together (``dmine run``) or one at a
time from the CLI in separate processes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import reduce
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dmine_spark.analyze.quality import column_profile, group_counts, length_quantiles
from dmine_spark.analyze.runs import RunRecorder, reconcile
from dmine_spark.analyze.tables import (
    append_table,
    ensure_database,
    read_table,
    replace_partition,
    set_table_format,
    track_versions,
    write_table,
)
from dmine_spark.config import ConfigError, PipelineConfig
from dmine_spark.features.embed import embed_missing, resolve_spec
from dmine_spark.features.encoder import ModelSpec, resolve_model_dir
from dmine_spark.mine.classify import as_vector
from dmine_spark.mine.cluster import cluster_exemplars, cluster_terms, fit_clusters, silhouette
from dmine_spark.mine.metrics import classification_scores, cluster_agreement
from dmine_spark.mine.models import ModelStore, fit_named_classifier
from dmine_spark.mine.regress import fit_regressor, regression_scores
from dmine_spark.prepare.clean import CleanResult, apply_near_duplicates, clean_frame
from dmine_spark.prepare.ingest import read_source
from dmine_spark.spark.progress import Progress

__all__ = [
    "StageReport",
    "STAGES",
    "run_stages",
    "ingest",
    "clean",
    "features",
    "embed",
    "classify",
    "regress",
    "finetune",
    "cluster",
]

log = logging.getLogger(__name__)

QUARANTINE_COLUMNS = ["run_id", "stage", "id", "split", "source_file", "rule", "reason", "raw"]


@dataclass
class StageReport:
    """What a stage did, in one line for people."""

    stage: str
    summary: str
    seconds: float = 0.0
    values: dict[str, float] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)  # fitted models, for tracking (name -> model)


def _write_quarantine(spark: SparkSession, cfg: PipelineConfig, df: DataFrame, stage: str) -> None:
    """Replace this stage's quarantine rows, leaving the other stages' rows in place."""
    df = df.select(*QUARANTINE_COLUMNS[:-1], F.col("raw").cast("string"))
    replace_partition(df, cfg.table("quarantine"), "stage", stage)


def _required(cfg: PipelineConfig, name: str) -> list[str]:
    src = cfg.sources[name]
    return sorted({cfg.text_col, *src.required})


def _quarantine_views(spark: SparkSession, cfg: PipelineConfig) -> None:
    """``quarantine_<task>_<source>``: one view per source over the task's quarantine table."""
    table = cfg.table("quarantine")
    for name in cfg.sources:
        spark.sql(f"CREATE OR REPLACE VIEW {table}_{name} AS SELECT * FROM {table} WHERE split = '{name}'")


def _pii_totals(df: DataFrame, types: list[str], *, by: str = "split") -> dict[str, dict[str, float]]:
    """Values masked per type per ``by`` from a ``pii_counts`` map column."""
    if not types:
        return {}
    aggs = [F.sum(F.coalesce(F.col("pii_counts")[t], F.lit(0))).alias(t) for t in types]
    return {r[by]: {t: float(r[t] or 0) for t in types} for r in df.groupBy(by).agg(*aggs).collect()}


def ingest(spark: SparkSession, cfg: PipelineConfig, run: RunRecorder) -> StageReport:
    """Read every source into ``raw_<task>``; rows breaking an ingest rule to ``quarantine_<task>``.

    The text column is PII-masked before it is written (``pii`` section), and
    so is the raw content of quarantined rows.
    """
    ensure_database(spark, cfg.database)
    results = {
        name: read_source(spark, name, src, required=_required(cfg, name), label_col=cfg.label_col, labels=cfg.labels)
        for name, src in cfg.sources.items()
    }
    for name, res in results.items():
        if cfg.label_col and cfg.label_col not in res.rows.columns:
            raise ConfigError(f"label_col: column {cfg.label_col!r} is not declared in sources.{name}.schema")
    rows = reduce(lambda a, b: a.unionByName(b, allowMissingColumns=True), [r.rows for r in results.values()])
    quarantine = reduce(lambda a, b: a.unionByName(b), [r.quarantine for r in results.values()])
    types = list(cfg.pii.types) if cfg.pii.enabled else []
    if types:
        from dmine_spark.prepare.pii import mask_pii

        rows = rows.withColumn("_pii", mask_pii(F.col(cfg.text_col), types)).select(
            *[F.col("_pii.text").alias(c) if c == cfg.text_col else F.col(c) for c in rows.columns],
            F.col("_pii.counts").alias("pii_counts"),
        )
        quarantine = quarantine.withColumn("raw", mask_pii(F.col("raw"), types)["text"])
    stamp = F.lit(run.run_id)
    write_table(rows.withColumn("run_id", stamp), cfg.table("raw"))
    _write_quarantine(spark, cfg, quarantine.withColumn("run_id", stamp).withColumn("stage", F.lit("ingest")), "ingest")
    _quarantine_views(spark, cfg)

    raw = read_table(spark, cfg.table("raw"))
    raw_counts = {r["source"]: r["count"] for r in raw.groupBy("source").count().collect()}
    q_written = read_table(spark, cfg.table("quarantine")).where("stage = 'ingest'")
    q_counts = {r["split"]: r["count"] for r in q_written.groupBy("split").count().collect()}
    q_rules = group_counts(q_written, "rule")  # quarantined rows: split holds the source name
    # Counted straight from the sources, independently of the two outputs, so a lost row shows.
    in_counts = {name: res.total.count() for name, res in results.items()}
    columns = [c for c in raw.columns if c not in ("id", "split", "source", "source_file", "run_id", "pii_counts")]
    profile = column_profile(raw, columns, by="source")
    pii = _pii_totals(raw, types, by="source")
    for name in cfg.sources:
        run.count(f"ingest.rows_in.{name}", in_counts[name])
        run.count(f"ingest.rows_out.{name}", raw_counts.get(name, 0))
        run.count(f"ingest.rows_quarantined.{name}", q_counts.get(name, 0))
        run.quality.extend(
            name,
            "ingest",
            "rows",
            {"rows_in": in_counts[name], "rows_out": raw_counts.get(name, 0), "quarantined": q_counts.get(name, 0)},
        )
        run.quality.extend(name, "ingest", "quarantined", q_rules.get(name, {}))
        for metric in ("null_rate", "empty_rate"):
            run.quality.extend(name, "ingest", metric, profile.get(name, {}).get(metric, {}))
        run.quality.extend(name, "ingest", "pii_masked", pii.get(name, {}))
    for t in types:
        run.count(f"pii.{t}", int(sum(v.get(t, 0) for v in pii.values())))
    n_in, n_out, n_q = sum(in_counts.values()), sum(raw_counts.values()), sum(q_counts.values())
    run.count("ingest.rows_in", n_in)
    run.count("ingest.rows_out", n_out)
    run.count("ingest.rows_quarantined", n_q)
    if n_in != n_out + n_q:
        raise RuntimeError(f"ingest lost rows: {n_in} read, {n_out} kept + {n_q} quarantined")
    split_counts = {r["split"]: r["count"] for r in raw.groupBy("split").count().collect()}
    per_split = ", ".join(f"{k} {v:,}" for k, v in sorted(split_counts.items()))
    return StageReport("ingest", f"{n_in:,} rows read ({per_split}), {n_q:,} quarantined", values={"rows_in": n_in})


def clean(spark: SparkSession, cfg: PipelineConfig, run: RunRecorder) -> StageReport:
    """Clean ``raw_<task>`` into ``clean_<task>``.

    PII is masked again after normalisation (full-width digits, entities),
    the language is tagged (and filtered when configured), empty, over-long
    or filtered rows are quarantined, and exact then near duplicates go to
    ``dup_<task>`` with the ``kept_id`` they repeat.
    """
    raw = read_table(spark, cfg.table("raw"))
    label = F.col(cfg.label_col).cast("string") if cfg.label_col else F.lit(None).cast("string")
    dedup_sources = [n for n, s in cfg.sources.items() if s.dedup]
    source = F.col("source") if "source" in raw.columns else F.col("split")
    base = raw.select(
        "id",
        "split",
        source.alias("source"),
        "source_file",
        F.col(cfg.text_col).alias("text"),
        label.alias("label"),
        source.isin(dedup_sources).alias("_dedup"),
    )
    res = clean_frame(
        base,
        cfg.clean,
        text_col="text",
        # duplicates count within a source: a text repeated in both train and test sources stays in both,
        # while the seeded splits of one source (splits: {train: .8, test: .2}) share one dedup, so no
        # copy of a training row is left in its test split
        dedup_groups=["source"],
        dedup_col="_dedup",
        pii=cfg.pii,
        language=cfg.language,
    )
    decided = res.decided.persist(StorageLevel.MEMORY_AND_DISK)
    near = None
    try:
        if cfg.near_dup.enabled:
            from dmine_spark.prepare.neardup import near_duplicates

            nd = cfg.near_dup
            candidates = decided.where((F.col("outcome") == "clean") & F.col("_dedup")).select("id", "source", "text")
            sources = sorted(r["source"] for r in candidates.select("source").distinct().collect())
            found = [
                near_duplicates(
                    candidates.where(F.col("source") == source),
                    id_col="id",
                    text_col="text",
                    threshold=nd.threshold,
                    shingle=nd.shingle,
                    num_bands=nd.bands,
                    rows_per_band=nd.rows_per_band,
                    seed=nd.seed,
                ).dups.select("id", "kept_id", "jaccard")
                for source in sources
            ]
            dups = reduce(lambda a, b: a.unionByName(b), found) if found else None
            if dups is not None:
                near = apply_near_duplicates(decided, dups).persist(StorageLevel.MEMORY_AND_DISK)
                res = CleanResult(decided=near, columns=res.columns)
        final = res.decided
        stamp = F.lit(run.run_id)
        write_table(res.clean.drop("_dedup").withColumn("run_id", stamp), cfg.table("clean"))
        write_table(res.duplicates.drop("_dedup").withColumn("run_id", stamp), cfg.table("dup"))
        q = res.quarantine.select(
            "id",
            F.col("source").alias("split"),  # quarantine rows name their source
            "source_file",
            "rule",
            "reason",
            F.col("text_raw").alias("raw"),
            stamp.alias("run_id"),
            F.lit("clean").alias("stage"),
        )
        _write_quarantine(spark, cfg, q, "clean")
        outcome = {r["outcome"]: r["count"] for r in final.groupBy("outcome").count().collect()}
        steps_of = final.withColumn("step", F.concat_ws(":", "outcome", "dup_rule", "rule"))
        by_split = group_counts(steps_of, "step", by="source")
        types = list(cfg.pii.types) if cfg.pii.enabled else []
        pii = _pii_totals(final, types, by="source")
        kept = final.where(F.col("outcome") != "quarantine")
        langs = group_counts(kept, "language", by="source") if cfg.language.enabled else {}
    finally:
        decided.unpersist()
        if near is not None:
            near.unpersist()
    clean_rows = read_table(spark, cfg.table("clean"))
    lengths = length_quantiles(clean_rows, by="source")
    for name in cfg.sources:
        steps = by_split.get(name, {})

        def n(prefix: str, steps: dict[str, float] = steps) -> float:
            return sum(v for k, v in steps.items() if k.startswith(prefix))

        run.quality.extend(
            name,
            "clean",
            "rows",
            {
                "rows_in": sum(steps.values()),
                "rows_clean": n("clean"),
                "quarantined": n("quarantine"),
                "duplicates_exact": n("duplicate:exact_duplicate"),
                "duplicates_near": n("duplicate:near_duplicate"),
            },
        )
        run.quality.extend(
            name, "clean", "quarantined", {k.split(":")[-1]: v for k, v in steps.items() if k.startswith("quarantine")}
        )
        run.quality.extend(name, "clean", "text_length", lengths.get(name, {}))
        run.quality.extend(name, "clean", "language", langs.get(name, {}))
        run.quality.extend(name, "clean", "pii_masked", pii.get(name, {}))
    for t in types:
        run.count(f"pii.{t}", int(sum(v.get(t, 0) for v in pii.values())))
    n_in = sum(outcome.values())
    n_clean, n_q, n_dup = outcome.get("clean", 0), outcome.get("quarantine", 0), outcome.get("duplicate", 0)
    n_near = int(sum(v for s in by_split.values() for k, v in s.items() if k == "duplicate:near_duplicate"))
    written = clean_rows.count()
    if written != n_clean:
        raise RuntimeError(f"clean wrote {written} rows but decided {n_clean}")
    run.count("clean.rows_in", n_in)
    run.count("clean.rows_out", n_clean)
    run.count("clean.rows_quarantined", n_q)
    run.count("clean.rows_duplicate", n_dup)
    run.count("clean.rows_near_duplicate", n_near)
    masked = sum(run.counts.get(f"pii.{t}", 0) for t in types)
    return StageReport(
        "clean",
        f"{n_clean:,} clean, {n_q:,} quarantined, {n_dup - n_near:,} exact and {n_near:,} near duplicates removed,"
        f" {masked:,} PII values masked",
    )


def features(spark: SparkSession, cfg: PipelineConfig, run: RunRecorder) -> StageReport:
    """Fit the feature pipeline on one split of ``clean_<task>`` and write ``feat_<task>`` for every row.

    Text features use the cleaned text; categorical, numeric and time columns
    come from ``raw_<task>`` (joined on the row id). The fitted
    ``PipelineModel`` is saved under ``<work dir>/models/<task>/features`` so
    new data can be transformed the same way.
    """
    from dmine_spark.features.tabular import feature_table, fit_features

    if cfg.features is None:
        raise ConfigError("features: the section is not set, so there are no feature tables to build")
    fcfg = cfg.features.build()
    tabular = [*fcfg.categorical, *fcfg.numeric, *fcfg.time]
    rows = read_table(spark, cfg.table("clean")).select("id", "split", "text", "label")
    if tabular:
        raw = read_table(spark, cfg.table("raw"))
        missing = [c for c in tabular if c not in raw.columns]
        if missing:
            raise ConfigError(f"features: column {missing[0]!r} is not declared in any source schema")
        rows = rows.join(raw.select("id", *tabular), "id")
    splits = {r["split"] for r in rows.select("split").distinct().collect()}
    if cfg.features.fit_split not in splits:
        raise ConfigError(f"features.fit_split: split {cfg.features.fit_split!r} not among {sorted(splits)}")
    label = cfg.label_col and "label"
    rows = rows.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        model = fit_features(rows.where(F.col("split") == cfg.features.fit_split), fcfg, label_col=label)
        table = feature_table(model, rows, label_col=label).join(rows.select("id", "split"), "id")
        write_table(table.withColumn("run_id", F.lit(run.run_id)), cfg.table("feat"))
    finally:
        rows.unpersist()
    model.write().overwrite().save(str(cfg.resolved_work_dir() / "models" / cfg.task / "features"))
    feat = read_table(spark, cfg.table("feat"))
    n = feat.count()
    width = len(feat.select("features").first()["features"]) if n else 0
    run.count("features.rows", n)
    run.measure("features.width", width)
    return StageReport("features", f"{n:,} rows x {width:,} features in {cfg.table('feat')}")


def model_spec(cfg: PipelineConfig) -> ModelSpec:
    e = cfg.embed
    return ModelSpec(
        model=e.model,
        max_length=e.max_length,
        pooling=e.pooling,
        normalize=e.normalize,
        device=e.device,
        precision=e.precision,
        backend=e.backend,
    )


def embed(spark: SparkSession, cfg: PipelineConfig, run: RunRecorder, *, progress: bool = True) -> StageReport:
    """Embed the texts of ``clean_<task>`` that the cache lacks; ``emb_<task>`` is a view over the cache.

    The cache (``<database>.emb_cache``) is keyed by the text's hash and the
    model, precision, length and pooling, and shared by every task of the
    database, so identical texts are embedded once and a re-run embeds nothing.
    """
    try:
        resolve_model_dir(cfg.embed.model)
    except FileNotFoundError as exc:
        raise ConfigError(str(exc)) from None
    spec = resolve_spec(spark, model_spec(cfg))
    e = cfg.embed
    cache = cfg.table("emb_cache") if e.cache else f"{cfg.database}.emb_scratch_{cfg.task}"
    if not e.cache and spark.catalog.tableExists(cache):
        spark.sql(f"DROP TABLE {cache}")
    clean_table = cfg.table("clean")
    texts = read_table(spark, clean_table).select("text")

    def show(n: int) -> Progress:
        return Progress(spark.sparkContext, "embed", n, enabled=progress)

    rep = embed_missing(
        spark,
        texts,
        spec,
        cache,
        batch_size=e.batch_size,
        max_tokens=e.max_tokens,
        records_per_partition=e.records_per_partition,
        progress=show,
        run_id=run.run_id,
    )
    emb = cfg.table("emb")
    if spark.catalog.tableExists(emb) and spark.catalog.getTable(emb).tableType != "VIEW":
        spark.sql(f"DROP TABLE {emb}")
    spark.sql(
        f"""CREATE OR REPLACE VIEW {emb} AS
        SELECT c.id, c.split, e.embedding, e.model, e.precision
        FROM {clean_table} c
        JOIN (SELECT text_key, first(embedding) AS embedding, first(model) AS model, first(precision) AS precision
              FROM {cache}
              WHERE model = '{spec.model.replace("'", "''")}' AND precision = '{spec.precision}'
                AND max_length = {spec.max_length} AND pooling = '{spec.pooling}' AND normalized = {str(spec.normalize).lower()}
              GROUP BY text_key) e
        ON sha2(c.text, 256) = e.text_key"""
    )
    st = rep.stats
    rate = rep.embedded / rep.seconds if rep.seconds > 0 else 0.0
    run.count("embed.rows", rep.rows)
    run.count("embed.unique_texts", rep.unique_texts)
    run.count("embed.cache_hits", rep.cache_hits)
    run.count("embed.embedded", rep.embedded)
    for key in ("tokens", "padded_tokens", "truncated", "batches", "oom_splits", "model_loads"):
        run.count(f"embed.{key}", int(st.get(key, 0)))
    run.measure("embed.seconds", rep.seconds)
    run.measure("embed.rows_per_s", rate)
    run.measure("embed.tokens_per_s", st.get("tokens", 0) / rep.seconds if rep.seconds > 0 else 0.0)
    run.measure("embed.padding_ratio", 1 - st["tokens"] / st["padded_tokens"] if st.get("padded_tokens") else 0.0)
    run.measure("embed.model_load_seconds", st.get("load_seconds", 0.0))
    run.measure("embed.encode_seconds", st.get("encode_seconds", 0.0))
    devices = sorted(k.split("@", 1)[1] for k in st if k.startswith("rows@"))
    run.label("embed.device", ",".join(devices) or "none")
    run.label("embed.precision", spec.precision)
    run.label("embed.model", spec.model)
    summary = (
        f"{rep.rows:,} rows, {rep.unique_texts:,} unique texts, {rep.cache_hits:,} cached, "
        f"{rep.embedded:,} embedded in {rep.seconds:.1f}s ({rate:,.0f} rows/s, {spec.device} {spec.precision})"
    )
    return StageReport("embed", summary, values={"rows_per_s": rate, "embedded": rep.embedded})


def _features(spark: SparkSession, cfg: PipelineConfig, kind: str = "embedding") -> DataFrame:
    """Clean rows with a ``features`` vector: the embedding, or the feature table's vector."""
    rows = read_table(spark, cfg.table("clean")).select("id", "split", "text", "label")
    if kind == "table":
        return rows.join(read_table(spark, cfg.table("feat")).select("id", "features"), "id")
    emb = read_table(spark, cfg.table("emb")).select("id", "embedding")
    return as_vector(rows.join(emb, "id"))


METRICS_SCHEMA = (
    "run_id STRING, pipeline STRING, task STRING, stage STRING, split STRING, metric STRING, value DOUBLE, "
    "created_at TIMESTAMP, model_version STRING"
)


def _write_metrics(
    spark: SparkSession,
    cfg: PipelineConfig,
    run: RunRecorder,
    stage: str,
    split: str,
    values: dict[str, float],
    *,
    model_version: str | None = None,
) -> None:
    now = datetime.now(timezone.utc)
    rows = [(run.run_id, cfg.name, cfg.task, stage, split, k, float(v), now, model_version) for k, v in values.items()]
    append_table(spark.createDataFrame(rows, METRICS_SCHEMA), cfg.table("metrics"))


def model_store(cfg: PipelineConfig) -> ModelStore:
    """Where this pipeline's models are versioned: ``<work_dir>/models``."""
    return ModelStore(cfg.resolved_work_dir() / "models")


def _check_splits(df: DataFrame, section: str, train_split: str, eval_split: str) -> None:
    """Fail with one line naming the key when a configured split is not among the rows' splits."""
    splits = {r["split"] for r in df.select("split").distinct().collect()}
    for key, value in (("train_split", train_split), ("eval_split", eval_split)):
        if value not in splits:
            raise ConfigError(f"{section}.{key}: split {value!r} not among the sources {sorted(splits)}")


def _classification_metrics(pred: DataFrame, labels: list[str]) -> tuple[dict[str, float], list]:
    """Scores from one aggregation of (label, prediction); ROC AUC too when there are two classes."""
    from pyspark.ml.evaluation import BinaryClassificationEvaluator

    rows = pred.groupBy("label", "prediction").count().collect()
    s = classification_scores((r[0], r[1], int(r[2])) for r in rows)
    values: dict[str, float] = {
        k: float(s[k]) for k in ("accuracy", "macro_f1", "weighted_f1", "macro_precision", "macro_recall", "rows")
    }
    for lab, pc in s["per_class"].items():
        for k in ("precision", "recall", "f1"):
            values[f"{k}.{lab}"] = pc[k]
    if len(labels) == 2:
        pos = labels[1]
        scored = pred.select(
            F.when(F.col("prediction") == pos, F.col("probability")).otherwise(1 - F.col("probability")).alias("score"),
            (F.col("label") == pos).cast("double").alias("y"),
        )
        values["auc"] = BinaryClassificationEvaluator(rawPredictionCol="score", labelCol="y").evaluate(scored)
    return values, s["confusion"].as_rows()


def classify(spark: SparkSession, cfg: PipelineConfig, run: RunRecorder) -> StageReport:
    """Train the configured classifier on the train split, score the eval split into ``pred_<task>``.

    The model is saved as the next version of ``<task>-<model>`` (see
    :class:`~dmine_spark.mine.models.ModelStore`); every prediction and metric
    row carries that ``model_version``. Metrics go to ``metrics`` and the
    confusion matrix to ``confusion_<task>``.
    """
    c = cfg.classify
    if not cfg.label_col:
        raise ConfigError("classify: label_col is not set, so there is nothing to learn from")
    feats = _features(spark, cfg, c.features).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        _check_splits(feats, "classify", c.train_split, c.eval_split)
        train = feats.where((F.col("split") == c.train_split) & F.col("label").isNotNull())
        try:
            model = fit_named_classifier(
                train,
                c.model,
                params=c.estimator_params(),
                grid=c.grid,
                folds=c.cv_folds,
                sample_max_rows=c.sample_max_rows,
                seed=c.seed,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        store = model_store(cfg)
        version = store.save(
            f"{cfg.task}-{c.model}",
            model,
            run_id=run.run_id,
            pipeline=cfg.name,
            task=cfg.task,
            features=c.features,
            embed_model=cfg.embed.model if c.features == "embedding" else None,
            train_split=c.train_split,
        )
        scored = model.transform(feats.where(F.col("split") == c.eval_split))
        pred = scored.select(
            "id",
            "split",
            "text",
            "label",
            "prediction",
            "probability",
            F.lit(run.run_id).alias("run_id"),
            F.lit(version).alias("model_version"),
        )
        write_table(pred, cfg.table("pred"))
    finally:
        feats.unpersist()
    written = read_table(spark, cfg.table("pred")).where(F.col("label").isNotNull())
    scores, cells = _classification_metrics(written, model.labels)
    for sel in model.selection:
        scores[f"cv_f1[{json.dumps(sel['params'], sort_keys=True)}]"] = sel["cv_f1"]
    _write_metrics(spark, cfg, run, "classify", c.eval_split, scores, model_version=version)
    conf = spark.createDataFrame(
        [(run.run_id, version, a, b, n) for a, b, n in cells],
        "run_id STRING, model_version STRING, label STRING, prediction STRING, count LONG",
    )
    write_table(conf, cfg.table("confusion"))
    run.label("classify.model_version", version)
    run.count("classify.train_rows", model.train_rows)
    if model.sampled:
        run.label("classify.train_sampled", f"{model.train_rows} of the training split")
    run.measure("classify.accuracy", scores["accuracy"])
    run.measure("classify.macro_f1", scores["macro_f1"])
    store.update_meta(version, metrics={k: scores[k] for k in ("accuracy", "macro_f1", "rows")})
    auc = f", AUC {scores['auc']:.4f}" if "auc" in scores else ""
    return StageReport(
        "classify",
        f"{version}: {c.eval_split} accuracy {scores['accuracy']:.4f}, macro-F1 {scores['macro_f1']:.4f}{auc} "
        f"on {int(scores['rows']):,} rows",
        values={k: v for k, v in scores.items() if "." not in k and "[" not in k},
        models={"classifier": model},
    )


def regress(spark: SparkSession, cfg: PipelineConfig, run: RunRecorder) -> StageReport:
    """Fit the configured regressor for ``regress.target`` and score the eval split into ``reg_<task>``.

    Features are the text embedding (``emb_<task>``) and the tabular columns
    named in ``regress``, read from ``raw_<task>``; their pipeline is fitted on
    the train split only. RMSE, MAE and R² go to ``metrics``; the fitted
    ``PipelineModel`` is saved as the next version of ``<task>-regress-<model>``.
    """
    r = cfg.regress
    if not r.target:
        raise ConfigError("regress.target: not set, so there is nothing to predict")
    raw = read_table(spark, cfg.table("raw"))
    cols = [r.target, *r.categorical, *r.numeric]
    missing = [c for c in cols if c not in raw.columns]
    if missing:
        raise ConfigError(f"regress: column {missing[0]!r} is not declared in any source schema")
    if r.target in r.categorical + r.numeric:
        raise ConfigError(f"regress: the target {r.target!r} is also listed as a feature")
    kind = raw.schema[r.target].dataType.typeName()
    if kind not in ("integer", "long", "short", "byte", "float", "double", "decimal"):
        raise ConfigError(f"regress.target: column {r.target!r} is {kind}, not numeric")
    rows = read_table(spark, cfg.table("clean")).select("id", "split")
    if r.embedding:
        rows = rows.join(as_vector(read_table(spark, cfg.table("emb")).select("id", "embedding")), "id")
    rows = rows.join(raw.select("id", F.col(r.target).cast("double").alias("target"), *cols[1:]), "id").persist(
        StorageLevel.MEMORY_AND_DISK
    )
    try:
        _check_splits(rows, "regress", r.train_split, r.eval_split)
        train = rows.where((F.col("split") == r.train_split) & F.col("target").isNotNull())
        try:
            model = fit_regressor(
                train,
                r.model,
                target="target",
                embedding_col="features" if r.embedding else None,
                categorical=r.categorical,
                numeric=r.numeric,
                params=r.params,
                seed=r.seed,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        store = model_store(cfg)
        version = store.save(
            f"{cfg.task}-regress-{r.model}", model, run_id=run.run_id, pipeline=cfg.name, target=r.target
        )
        pred = model.transform(rows.where(F.col("split") == r.eval_split)).select(
            "id",
            "split",
            F.col("target"),
            F.col("prediction").cast("double").alias("prediction"),
            F.lit(run.run_id).alias("run_id"),
            F.lit(version).alias("model_version"),
        )
        write_table(pred, cfg.table("reg"))
    finally:
        rows.unpersist()
    scores = regression_scores(read_table(spark, cfg.table("reg")))
    _write_metrics(spark, cfg, run, "regress", r.eval_split, scores, model_version=version)
    for k in ("rmse", "mae", "r2"):
        run.measure(f"regress.{k}", scores[k])
    run.label("regress.model_version", version)
    return StageReport(
        "regress",
        f"{version}: {r.target} on {r.eval_split}: RMSE {scores['rmse']:.4f}, MAE {scores['mae']:.4f}, "
        f"R² {scores['r2']:.4f} on {int(scores['rows']):,} rows",
        values=scores,
        models={"regressor": model},
    )


def finetune(spark: SparkSession, cfg: PipelineConfig, run: RunRecorder) -> StageReport:
    """Fine-tune a BERT classifier through TorchDistributor and score the eval split into ``pred_ft_<task>``.

    A seeded ``val_fraction`` of the train split is held out for early
    stopping. The best checkpoint (safetensors) becomes the next version of
    ``<task>-finetune``; it scores through the same pandas UDF as the embedding
    model. Metrics go to ``metrics`` under stage ``finetune``.
    """
    from dmine_spark.features.embed import embed_column
    from dmine_spark.mine.finetune import finetune as run_finetune

    f = cfg.finetune
    if not cfg.label_col:
        raise ConfigError("finetune: label_col is not set, so there is nothing to learn from")
    rows = read_table(spark, cfg.table("clean")).select("id", "split", "text", "label")
    _check_splits(rows, "finetune", f.train_split, f.eval_split)
    train_all = rows.where((F.col("split") == f.train_split) & F.col("label").isNotNull())
    if f.train_sample_rows:
        n = train_all.count()
        if n > f.train_sample_rows:
            train_all = train_all.where(
                (F.abs(F.xxhash64("id", F.lit(f.seed))) % 1_000_000) < int(1_000_000 * f.train_sample_rows / n)
            )
    held = (F.abs(F.xxhash64("id", F.lit(f.seed + 1))) % 1000) < int(1000 * f.val_fraction)
    labels = sorted(r["label"] for r in train_all.select("label").distinct().collect())
    if len(labels) < 2:
        raise ConfigError(f"finetune: the train split has {len(labels)} label(s); at least 2 are needed")
    use_gpu = f.device == "cuda" or (f.device == "auto" and _cuda_available())
    out = cfg.resolved_work_dir() / "finetune" / run.run_id / "best"
    summary = run_finetune(
        spark,
        train_all.where(~held),
        train_all.where(held),
        labels,
        out,
        base_model=f.base_model,
        max_length=f.max_length,
        epochs=f.epochs,
        batch_size=f.batch_size,
        lr=f.lr,
        head_lr_scale=f.head_lr_scale,
        weight_decay=f.weight_decay,
        warmup_ratio=f.warmup_ratio,
        eval_every=f.eval_every,
        patience=f.patience,
        num_processes=f.num_processes,
        use_gpu=use_gpu,
        seed=f.seed,
    )
    store = model_store(cfg)
    version = store.save(
        f"{cfg.task}-finetune", out, run_id=run.run_id, pipeline=cfg.name, base_model=f.base_model, summary=summary
    )
    model_dir, _ = store.load(version)
    spec = ModelSpec(
        model=str(model_dir),
        max_length=f.max_length,
        head="classification",
        device="cuda" if use_gpu else "cpu",
        precision="bf16" if use_gpu else "fp32",
    )
    probs = embed_column(F.col("text"), spec, batch_size=cfg.embed.batch_size, max_tokens=cfg.embed.max_tokens)
    names = F.array(*[F.lit(lab) for lab in labels])
    scored = (
        rows.where(F.col("split") == f.eval_split)
        .repartition(max(2, spark.sparkContext.defaultParallelism))
        .withColumn("_p", probs)
        .select(
            "id",
            "split",
            "text",
            "label",
            F.element_at(names, F.array_position(F.col("_p"), F.array_max("_p")).cast("int")).alias("prediction"),
            F.array_max("_p").cast("double").alias("probability"),
            F.lit(run.run_id).alias("run_id"),
            F.lit(version).alias("model_version"),
        )
    )
    write_table(scored, cfg.table("pred_ft"))
    written = read_table(spark, cfg.table("pred_ft")).where(F.col("label").isNotNull())
    scores, _ = _classification_metrics(written, labels)
    scores["best_val_accuracy"] = summary["best_val_accuracy"]
    scores["train_seconds"] = summary["seconds"]
    scores["train_steps"] = float(summary["steps"])
    _write_metrics(spark, cfg, run, "finetune", f.eval_split, scores, model_version=version)
    run.label("finetune.model_version", version)
    run.count("finetune.train_rows", summary["train_rows"])
    run.measure("finetune.accuracy", scores["accuracy"])
    run.measure("finetune.macro_f1", scores["macro_f1"])
    run.measure("finetune.train_seconds", summary["seconds"])
    stop = ", stopped early" if summary["stopped_early"] else ""
    return StageReport(
        "finetune",
        f"{version}: {summary['train_rows']:,} training rows, {summary['steps']} steps on "
        f"{summary['processes']} process(es) in {summary['seconds']:.0f}s{stop}; best validation accuracy "
        f"{summary['best_val_accuracy']:.4f}; {f.eval_split} accuracy {scores['accuracy']:.4f}, "
        f"macro-F1 {scores['macro_f1']:.4f}",
        values={k: v for k, v in scores.items() if "." not in k},
    )


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def cluster(spark: SparkSession, cfg: PipelineConfig, run: RunRecorder) -> StageReport:
    """Cluster all embedded rows into ``cluster_<task>``; the named summary goes to ``cluster_terms_<task>``.

    The summary has, per cluster, its size, a name (its first three terms by
    class-based TF-IDF), the top terms and the texts closest to its centroid.
    Silhouette, the chosen k (and the sweep, if k was swept) and, where rows
    carry labels, NMI, ARI and Hungarian-matched accuracy go to ``metrics``.
    """
    c = cfg.cluster
    feats = _features(spark, cfg).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        try:
            fitted = fit_clusters(feats, c)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        assigned = fitted.assign(feats).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            write_table(
                assigned.select("id", "split", "cluster", F.lit(run.run_id).alias("run_id")), cfg.table("cluster")
            )
            real = assigned.where(F.col("cluster") >= 0)
            sil = silhouette(real)
            terms = cluster_terms(real, top_n=c.top_terms, min_chars=c.min_term_chars, stop_words=c.stop_words)
            if c.exemplars:
                terms = terms.join(cluster_exemplars(real, n=c.exemplars), "cluster", "left")
            else:
                terms = terms.withColumn("exemplars", F.array().cast("array<string>"))
            write_table(terms.withColumn("run_id", F.lit(run.run_id)), cfg.table("cluster_terms"))
            values = {"silhouette_cosine": sil, "k": float(fitted.k)}
            values.update({f"silhouette_at_k[{k}]": v for k, v in fitted.sweep.items()})
            if cfg.label_col:
                rows = real.where(F.col("label").isNotNull()).groupBy("label", "cluster").count().collect()
                if rows:
                    agree = cluster_agreement((r[0], r[1], int(r[2])) for r in rows)
                    values.update({k: agree[k] for k in ("nmi", "ari", "hungarian_accuracy")})
            noise = assigned.where(F.col("cluster") < 0).count()
            if noise:
                values["noise_rows"] = float(noise)
        finally:
            assigned.unpersist()
    finally:
        feats.unpersist()
    _write_metrics(spark, cfg, run, "cluster", "all", values, model_version=f"{c.algorithm}:k={fitted.k}")
    run.measure("cluster.silhouette", sil)
    run.label("cluster.algorithm", c.algorithm)
    run.count("cluster.k", fitted.k)
    top = read_table(spark, cfg.table("cluster_terms")).orderBy(F.desc("size")).limit(3).collect()
    names = "; ".join(f"{r['name']} ({r['size']})" for r in top)
    extra = f", Hungarian accuracy {values['hungarian_accuracy']:.3f}" if "hungarian_accuracy" in values else ""
    return StageReport(
        "cluster",
        f"{c.algorithm} k={fitted.k}, cosine silhouette {sil:.3f}{extra}; largest: {names}",
        values=values,
    )


STAGES: dict[str, Callable[..., StageReport]] = {
    "ingest": ingest,
    "clean": clean,
    "features": features,
    "embed": embed,
    "classify": classify,
    "regress": regress,
    "finetune": finetune,
    "cluster": cluster,
}


def run_stages(
    spark: SparkSession,
    cfg: PipelineConfig,
    stages: list[str] | None = None,
    *,
    command: str = "run",
    on_report: Callable[[StageReport], None] | None = None,
    progress: bool = True,
) -> tuple[RunRecorder, list[StageReport]]:
    """Run ``stages`` (default: all enabled, in order) and record the run in ``runs``."""
    names = stages or [
        s
        for s in STAGES
        if (s != "features" or cfg.features is not None) and getattr(getattr(cfg, s, None), "enabled", True)
    ]
    for s in names:
        if s not in STAGES:
            raise ConfigError(f"unknown stage {s!r}; stages are {', '.join(STAGES)}")
    ensure_database(spark, cfg.database)
    fmt = set_table_format(spark, cfg.tables.format)
    run = RunRecorder(spark, cfg, command)
    run.label("tables.format", fmt)
    reports: list[StageReport] = []
    tracker = _start_tracking(cfg, run, names, command)
    try:
        for s in names:
            with run.stage(s), track_versions(run.table_versions):
                kwargs = {"progress": progress} if s == "embed" else {}
                report = STAGES[s](spark, cfg, run, **kwargs)
            report.seconds = run.stage_seconds[s]
            reports.append(report)
            if on_report:
                on_report(report)
        if "ingest" in names and "clean" in names:
            counts = {
                "rows_in": run.counts["ingest.rows_in"],
                "rows_clean": run.counts["clean.rows_out"],
                "rows_quarantined": run.counts["ingest.rows_quarantined"] + run.counts["clean.rows_quarantined"],
                "rows_duplicate": run.counts["clean.rows_duplicate"],
            }
            for k, v in counts.items():
                run.count(k, v)
            if reconcile(counts) != 0:
                raise RuntimeError(f"row counts do not reconcile: {counts}")
        if tracker is not None:
            _track(tracker, spark, cfg, run, reports)
        if cfg.report.enabled and command != "bench":
            run.label("report", str(cfg.resolved_work_dir() / "reports" / f"{run.run_id}.html"))
    except BaseException as exc:
        run.finish("failed", f"{type(exc).__name__}: {exc}"[:2000])
        if tracker is not None:
            tracker.end("FAILED")
        raise
    run.finish("ok")
    if cfg.report.enabled and command != "bench":
        from dmine_spark.analyze.report import write_report

        path = write_report(spark, cfg, run.run_id)
        log.info("report: %s", path)
        if tracker is not None:
            tracker.log_artifact(path)
    if tracker is not None:
        tracker.end()
    return run, reports


def _start_tracking(cfg: PipelineConfig, run: RunRecorder, stages: list[str], command: str) -> Any:
    """Open the MLflow run of this dmine run (``tracking.enabled``), or ``None``."""
    if not cfg.tracking.enabled or command == "bench":
        return None
    from dmine_spark.analyze.tracking import Tracker

    tracker = Tracker(cfg, run.run_id)
    tracker.log_config(stages)
    run.label("mlflow.run_id", tracker.run_id)
    run.label("mlflow.tracking_uri", tracker.uri)
    return tracker


def _track(
    tracker: Any, spark: SparkSession, cfg: PipelineConfig, run: RunRecorder, reports: list[StageReport]
) -> None:
    values: dict[str, float] = {f"seconds.{k}": v for k, v in run.stage_seconds.items()}
    values.update(run.measures)
    values.update({k: float(v) for k, v in run.counts.items()})
    if spark.catalog.tableExists(cfg.table("metrics")):
        for r in spark.table(cfg.table("metrics")).where(F.col("run_id") == run.run_id).collect():
            values[f"{r['stage']}.{r['split']}.{r['metric']}"] = r["value"]
    tracker.log_metrics(values)
    for k in ("classify.model_version", "regress.model_version", "embed.model", "embed.precision"):
        if k in run.labels:
            tracker.set_tag(k, run.labels[k])
    if cfg.tracking.log_models:
        for rep in reports:
            for name, model in rep.models.items():
                try:
                    uri = tracker.log_model(model, name)
                except Exception as exc:  # noqa: BLE001 - the model is saved in the model store either way
                    log.warning("MLflow could not log the %s: %s", name, exc)
                    run.label(f"mlflow.{name}_error", f"{type(exc).__name__}: {exc}"[:500])
                    continue
                if uri:
                    run.label(f"mlflow.{name}_uri", uri)
