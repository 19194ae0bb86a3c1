"""The recorder: after the runner writes a stage's outputs, what the stage did goes into the run's records.

One function per stage turns the node's output and the tables as written
into the run's counts and measures (``runs``), the data-quality rows
(``quality``), the scores (``metrics``, ``confusion_<task>``) and the
one-line summary the CLI prints. Row accounting lives here: each stage
checks that its rows add up, and fails the run when they do not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dmine_spark.analyze.quality import group_counts, length_quantiles, profile_aggs, profile_rates
from dmine_spark.analyze.runs import RunRecorder
from dmine_spark.config import ConfigError, Layer, PipelineConfig
from dmine_spark.io.tables import append_table, read_table, write_table
from dmine_spark.mine.evaluate import classification_metrics
from dmine_spark.mine.metrics import unseen_labels
from dmine_spark.mine.nodes import selection_metrics
from dmine_spark.mine.regress import regression_scores
from dmine_spark.mine.store import ModelStore

__all__ = [
    "METRICS_SCHEMA",
    "StageReport",
    "Recording",
    "write_metrics",
    "RECORDERS",
]

METRICS_SCHEMA = (
    "run_id STRING, pipeline STRING, task STRING, stage STRING, split STRING, metric STRING, value DOUBLE, "
    "created_at TIMESTAMP, model_version STRING"
)

log = logging.getLogger(__name__)


@dataclass
class StageReport:
    """What a stage did, in one line for people, with its figures and fitted models (for tracking)."""

    stage: str
    summary: str
    seconds: float = 0.0
    values: dict[str, float] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """The stage's line as ``dmine run`` prints it, ending in the seconds recorded in ``runs``."""
        return f"{self.stage:<9} {self.summary}  [{self.seconds:.1f}s]"


@dataclass
class Recording:
    """What a recorder is handed: the run, the config, the node's output and the versions of the models saved."""

    spark: SparkSession
    cfg: PipelineConfig
    run: RunRecorder
    out: Any
    versions: dict[str, str]
    store: ModelStore

    def table(self, layer: Layer, *, this_run: bool = False) -> DataFrame:
        """The table of ``layer`` as written (``this_run``: only this run's rows)."""
        df = read_table(self.spark, self.cfg.table(layer))
        return df.where(F.col("run_id") == self.run.run_id) if this_run else df


def write_metrics(
    spark: SparkSession,
    cfg: PipelineConfig,
    run: RunRecorder,
    stage: str,
    split: str,
    values: dict[str, float],
    *,
    model_version: str | None = None,
) -> None:
    """Append one row per value to ``<database>.metrics``."""
    now = datetime.now(timezone.utc)
    rows = [(run.run_id, cfg.name, cfg.task, stage, split, k, float(v), now, model_version) for k, v in values.items()]
    append_table(spark.createDataFrame(rows, METRICS_SCHEMA), cfg.table(Layer.METRICS))


def ingest(rec: Recording) -> StageReport:
    """Rows in, kept and quarantined per source; the raw columns' null and blank rates; PII masked."""
    cfg, run, out = rec.cfg, rec.run, rec.out
    raw = rec.table(Layer.RAW)
    columns = [c for c in raw.columns if c not in ("id", "split", "source", "source_file", "run_id", "pii_counts")]
    # one pass over the written table: rows, null and blank rates, PII masked, per source and split
    pii_aggs = [F.sum(F.coalesce(F.col("pii_counts")[t], F.lit(0))).alias(f"pii__{t}") for t in out.pii_types]
    summary = [r.asDict() for r in raw.groupBy("source", "split").agg(*profile_aggs(raw, columns), *pii_aggs).collect()]
    per_source: dict[str, dict[str, float]] = {}
    split_counts: dict[str, int] = {}
    for r in summary:
        acc = per_source.setdefault(r["source"], {})
        for k, v in r.items():
            if k not in ("source", "split"):
                acc[k] = acc.get(k, 0) + (v or 0)
        split_counts[r["split"]] = split_counts.get(r["split"], 0) + r["_n"]
    raw_counts = {name: int(acc["_n"]) for name, acc in per_source.items()}
    profile = {name: profile_rates(acc, columns) for name, acc in per_source.items()}
    pii = {name: {t: float(acc.get(f"pii__{t}", 0)) for t in out.pii_types} for name, acc in per_source.items()}
    # quarantined rows: split holds the source name
    q_rules = group_counts(rec.table(Layer.QUARANTINE).where("stage = 'ingest'"), "rule")
    q_counts = {name: int(sum(rules.values())) for name, rules in q_rules.items()}
    in_counts = {name: df.count() for name, df in out.totals.items()}
    # interactions and attached texts are kept outside raw_<task>: they count as kept rows of their sources
    for key, kept in (
        ("interactions", rec.table(Layer.INTERACTIONS) if out.interactions is not None else None),
        ("attached", out.attached),
    ):
        if kept is None:
            continue
        found = {r["source"]: r["count"] for r in kept.groupBy("source").count().collect()}
        run.count(f"ingest.rows_{key}", sum(found.values()))
        for name, n in found.items():
            raw_counts[name] = raw_counts.get(name, 0) + n
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
        decoded = out.encodings.get(name)
        if decoded is not None:
            run.label(f"ingest.encoding.{name}", decoded.encoding)
            per_codec: dict[str, int] = {}
            for f in decoded.files:
                per_codec[f.encoding] = per_codec.get(f.encoding, 0) + 1
            run.quality.extend(name, "ingest", "encoding", per_codec)  # files decoded from each codec
            for f in decoded.files:
                if f.invalid:
                    run.quality.add(name, "ingest", "invalid_bytes", f.path, f.invalid)
    for t in out.pii_types:
        run.count(f"pii.{t}", int(sum(v.get(t, 0) for v in pii.values())))
    n_in, n_out, n_q = sum(in_counts.values()), sum(raw_counts.values()), sum(q_counts.values())
    run.count("ingest.rows_in", n_in)
    run.count("ingest.rows_out", n_out)
    run.count("ingest.rows_quarantined", n_q)
    if n_in != n_out + n_q:
        raise RuntimeError(f"ingest lost rows: {n_in} read, {n_out} kept + {n_q} quarantined")
    check_rows_left(
        cfg,
        {
            name: {"clean": raw_counts.get(name, 0), **{f"quarantine:{k}": v for k, v in q_rules.get(name, {}).items()}}
            for name in cfg.sources
        },
    )
    for name, src in cfg.sources.items():
        if src.role != "text":  # interactions and attached texts by source
            split_counts[f"{name} ({src.role})"] = raw_counts.get(name, 0)
    per_split = ", ".join(f"{k} {v:,}" for k, v in sorted(split_counts.items()))
    return StageReport("ingest", f"{n_in:,} rows read ({per_split}), {n_q:,} quarantined", values={"rows_in": n_in})


def rows_left_error(task: str, steps_by_source: dict[str, dict[str, float]], views: dict[str, str]) -> str | None:
    """The one-line error when a source has rows but none of them came through cleaning, else ``None``.

    Parameters
    ----------
    task : str
        The pipeline's task.
    steps_by_source : dict
        Per source, rows per outcome step (``clean``, ``quarantine:<rule>``,
        ``duplicate:<rule>``), as the clean stage counts them.
    views : dict
        Per source, the quarantine view a user reads next.

    Returns
    -------
    str or None
        e.g. ``no clean rows for task t: source test: 12 of 12 quarantined
        (invalid_encoding 12); see dmine.quarantine_t_test``.
    """
    parts, where = [], []
    for source, steps in steps_by_source.items():
        total = sum(steps.values())
        if total == 0 or steps.get("clean", 0) > 0:
            continue
        rules: dict[str, float] = {}
        for key, n in steps.items():
            if key.startswith("quarantine"):
                rule = key.split(":")[-1]
                rules[rule] = rules.get(rule, 0) + n
        quarantined = sum(rules.values())
        why = ", ".join(f"{r} {int(n):,}" for r, n in sorted(rules.items(), key=lambda kv: (-kv[1], kv[0])))
        dups = int(total - quarantined)
        text = f"source {source}: {int(quarantined):,} of {int(total):,} quarantined" + (f" ({why})" if why else "")
        parts.append(text + (f", {dups:,} duplicates" if dups else ""))
        if quarantined and source in views:
            where.append(views[source])
    if not parts:
        return None
    tail = f"; see {', '.join(where)}" if where else ""
    return f"no clean rows for task {task}: " + "; ".join(parts) + tail


def check_rows_left(cfg: PipelineConfig, steps_by_source: dict[str, dict[str, float]]) -> None:
    """Stop the run in one line when a source has no clean rows left (see :func:`rows_left_error`).

    Raises
    ------
    ConfigError
        When a source with rows kept none; the tables of the stages that ran are written.
    """
    counts = {name: steps_by_source.get(name, {}) for name in steps_by_source if name in cfg.sources}
    message = rows_left_error(cfg.task, counts, {name: cfg.quarantine_view(name) for name in cfg.sources})
    if message:
        raise ConfigError(message)


def clean(rec: Recording) -> StageReport:
    """Where every raw row went (clean, quarantined per rule, exact or near duplicate), text lengths, languages."""
    cfg, run, out = rec.cfg, rec.run, rec.out
    final = out.decided
    # one pass over the decided rows: where each went (outcome:dup_rule:rule) and PII masked, per source
    pii_aggs = [F.sum(F.coalesce(F.col("pii_counts")[t], F.lit(0))).alias(f"pii__{t}") for t in out.pii_types]
    steps_of = final.withColumn("step", F.concat_ws(":", "outcome", "dup_rule", "rule"))
    outcome: dict[str, int] = {}
    by_split: dict[str, dict[str, float]] = {}
    pii: dict[str, dict[str, float]] = {}
    for r in steps_of.groupBy("source", "outcome", "step").agg(F.count(F.lit(1)).alias("_n"), *pii_aggs).collect():
        outcome[r["outcome"]] = outcome.get(r["outcome"], 0) + r["_n"]
        steps = by_split.setdefault(r["source"], {})
        steps[r["step"]] = steps.get(r["step"], 0) + float(r["_n"])
        if out.pii_types:
            masked = pii.setdefault(r["source"], dict.fromkeys(out.pii_types, 0.0))
            for t in out.pii_types:
                masked[t] += float(r[f"pii__{t}"] or 0)
    kept = final.where(F.col("outcome") != "quarantine")
    langs = group_counts(kept, "language", by="source") if out.language else {}
    clean_rows = rec.table(Layer.CLEAN)
    written_by: dict[str, int] = {}
    lengths = length_quantiles(clean_rows, by="source", counts=written_by)
    for name in cfg.text_sources():
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
    for t in out.pii_types:
        run.count(f"pii.{t}", int(sum(v.get(t, 0) for v in pii.values())))
    n_in = sum(outcome.values())
    n_clean, n_q, n_dup = outcome.get("clean", 0), outcome.get("quarantine", 0), outcome.get("duplicate", 0)
    n_near = int(sum(v for s in by_split.values() for k, v in s.items() if k == "duplicate:near_duplicate"))
    written = sum(written_by.values())
    if written != n_clean:
        raise RuntimeError(f"clean wrote {written} rows but decided {n_clean}")
    run.count("clean.rows_in", n_in)
    run.count("clean.rows_out", n_clean)
    run.count("clean.rows_quarantined", n_q)
    run.count("clean.rows_duplicate", n_dup)
    run.count("clean.rows_near_duplicate", n_near)
    masked = sum(run.counts.get(f"pii.{t}", 0) for t in out.pii_types)
    leak_note = _overlap_note(run, out)
    # rows quarantined at ingest count against the source as well: "12 of 12" means all it had
    ingest_rules: dict[str, dict[str, float]] = {}
    for source, step, metric, key, value in run.quality.rows:
        if step == "ingest" and metric == "quarantined":
            rules = ingest_rules.setdefault(source, {})
            rules[f"quarantine:{key}"] = rules.get(f"quarantine:{key}", 0) + value
    steps_in = {name: dict(by_split.get(name, {})) for name in cfg.text_sources()}
    for name, rules in ingest_rules.items():
        if name not in steps_in:  # interactions and attached texts are not cleaned
            continue
        for key, value in rules.items():
            steps_in.setdefault(name, {})[key] = steps_in.get(name, {}).get(key, 0) + value
    check_rows_left(cfg, steps_in)
    return StageReport(
        "clean",
        f"{n_clean:,} clean, {n_q:,} quarantined, {n_dup - n_near:,} exact and {n_near:,} near duplicates removed,"
        f" {masked:,} PII values masked" + (f"; {leak_note}" if leak_note else ""),
    )


def _overlap_note(run: RunRecorder, out: Any) -> str | None:
    """Record train/test leakage found by the clean step (counts, quality rows) and say it in one line."""
    if out.overlap is None:
        return None
    found = out.overlap.groupBy("split", "train_split").count().collect()
    total = sum(r["count"] for r in found)
    run.count("clean.train_test_overlap", total)
    if not total:
        return None
    for r in found:
        run.quality.add(r["split"], "clean", "train_test_overlap", r["train_split"], r["count"])
    pairs = ", ".join(f"{r['count']:,} {r['split']} rows repeat a {r['train_split']} text" for r in found)
    if out.overlap_dropped:
        note = f"train/test leakage: {pairs}; dropped from evaluation (duplicates, rule train_test_overlap)"
    else:
        note = f"train/test leakage: {pairs}; kept (clean.leakage: drop leaves them out of evaluation)"
    return note


def features(rec: Recording) -> StageReport:
    """Rows and width of the feature table."""
    feat = rec.table(Layer.FEAT)
    n = feat.count()
    width = len(feat.select("features").first()["features"]) if n else 0
    rec.run.count("features.rows", n)
    rec.run.measure("features.width", width)
    rec.run.label("features.model_version", rec.versions["features"])
    return StageReport("features", f"{n:,} rows x {width:,} features in {rec.cfg.table(Layer.FEAT)}")


def embed(rec: Recording) -> StageReport:
    """Rows, cache hits, texts embedded and the encoders' telemetry; rates per second of encoding.

    The rates count only the texts embedded now, over the clock time the
    encoders ran: rows found in the cache cost a lookup, not an encoding,
    so a run that embeds nothing records no rate.
    """
    run, rep, spec = rec.run, rec.out.report, rec.out.spec
    st = rep.stats
    truncated = int(st.get("truncated", 0))
    run.count("embed.rows", rep.rows)
    run.count("embed.unique_texts", rep.unique_texts)
    run.count("embed.cache_hits", rep.cache_hits)
    run.count("embed.cached_rows", rep.cached_rows)
    run.count("embed.embedded", rep.embedded)
    for key in ("tokens", "padded_tokens", "truncated", "batches", "oom_splits", "model_loads"):
        run.count(f"embed.{key}", int(st.get(key, 0)))
    run.measure("embed.seconds", rep.seconds)
    if rep.rows:
        run.measure("embed.cache_hit_ratio", rep.cached_rows / rep.rows)
    values: dict[str, float] = {"embedded": rep.embedded, "cached_rows": rep.cached_rows}
    summary = f"{rep.rows:,} rows, {rep.unique_texts:,} unique texts: {rep.cached_rows:,} rows from the cache, "
    if rep.embedded and rep.encode_wall_seconds > 0:
        rate = rep.embedded / rep.encode_wall_seconds
        run.measure("embed.encode_wall_seconds", rep.encode_wall_seconds)
        run.measure("embed.rows_per_s", rate)
        run.measure("embed.tokens_per_s", st.get("tokens", 0) / rep.encode_wall_seconds)
        values["rows_per_s"] = rate
        summary += (
            f"{rep.embedded:,} texts embedded in {rep.encode_wall_seconds:.1f}s of encoding "
            f"({rate:,.0f} texts/s, {spec.device} {spec.precision})"
        )
    else:
        summary += f"{rep.embedded:,} texts embedded ({spec.device} {spec.precision})"
    if truncated:
        summary += f"; {truncated:,} texts cut to {spec.max_length} tokens"
    run.measure("embed.padding_ratio", 1 - st["tokens"] / st["padded_tokens"] if st.get("padded_tokens") else 0.0)
    run.measure("embed.model_load_seconds", st.get("load_seconds", 0.0))
    run.measure("embed.encode_seconds", st.get("encode_seconds", 0.0))
    devices = sorted(k.split("@", 1)[1] for k in st if k.startswith("rows@"))
    run.label("embed.device", ",".join(devices) or "none")
    run.label("embed.precision", spec.precision)
    run.label("embed.model", spec.model)
    return StageReport("embed", summary, values=values)


def _scored(rec: Recording, stage: str) -> DataFrame:
    return rec.table(Layer.PRED, this_run=True).where((F.col("stage") == stage) & F.col("label").isNotNull())


def classify(rec: Recording) -> StageReport:
    """Scores of the eval split's predictions, the confusion matrix, and the model version's metrics."""
    cfg, run, out = rec.cfg, rec.run, rec.out
    c = cfg.classify
    head = out.head
    version = rec.versions["classifier"]
    open_head = getattr(out, "open_set", None)
    scores, cells = classification_metrics(_scored(rec, "classify"), head.getOrDefault("labels"))
    if open_head is not None:
        scores.update(_open_set_metrics(rec, open_head, cells, head.getOrDefault("labels"), version))
    answer_note = _answers(rec, scores) if getattr(out, "matcher", None) is not None else None
    scores.update(selection_metrics(head))
    write_metrics(rec.spark, cfg, run, "classify", c.eval_split, scores, model_version=version)
    conf = rec.spark.createDataFrame(
        [(run.run_id, version, a, b, n) for a, b, n in cells],
        "run_id STRING, model_version STRING, label STRING, prediction STRING, count LONG",
    )
    write_table(conf, cfg.table(Layer.CONFUSION))
    run.label("classify.model_version", version)
    run.count("classify.train_rows", head.info["train_rows"])
    if head.info.get("sampled"):
        run.label("classify.train_sampled", f"{head.info['train_rows']} of the training split")
    run.measure("classify.accuracy", scores["accuracy"])
    run.measure("classify.macro_f1", scores["macro_f1"])
    rec.store.update_meta(version, metrics={k: scores[k] for k in ("accuracy", "macro_f1", "rows")})
    auc = f", AUC {scores['auc']:.4f}" if "auc" in scores else ""
    notes = [*head.info.get("notes", []), *_unseen_note(run, "classify", c.eval_split, cells, head, open_head)]
    if answer_note:
        notes.append(answer_note)
    for note in head.info.get("notes", []):
        run.label("classify.note", note)
    return StageReport(
        "classify",
        f"{version}: {c.eval_split} accuracy {scores['accuracy']:.4f}, macro-F1 {scores['macro_f1']:.4f}{auc} "
        f"on {int(scores['rows']):,} rows" + "".join(f"; {n}" for n in notes),
        values={k: v for k, v in scores.items() if "." not in k and "[" not in k},
        models={"classifier": head},
    )


def _answers(rec: Recording, scores: dict[str, float]) -> str:
    """Answer matching: the ``answer_<task>`` view, routes per row, quarantined templates; one line for the stage."""
    from dmine_spark.io.tables import quarantine_rows, replace_partition

    cfg, run, out = rec.cfg, rec.run, rec.out
    pred, library, view = cfg.table(Layer.PRED), cfg.table(Layer.ANSWER_LIBRARY), cfg.table(Layer.ANSWER)
    rec.spark.sql(
        f"CREATE OR REPLACE VIEW {view} AS SELECT p.id, p.stage, p.run_id, p.model_version, p.batch_key, "
        "p.scored_at, p.text AS question, p.label, p.prediction, p.probability, p.answer_id, a.text AS answer_text, "
        "a.intent AS answer_intent, p.answer_score, p.answer_by "
        f"FROM {pred} p LEFT JOIN {library} a ON a.answer_id = p.answer_id WHERE p.answer_by IS NOT NULL"
    )
    q = out.answers_quarantine
    n_quarantined = q.count() if q is not None else 0
    quarantine = cfg.table(Layer.QUARANTINE)
    stale = rec.spark.catalog.tableExists(quarantine) and not (
        rec.spark.table(quarantine).where(F.col("stage") == "answers").isEmpty()
    )
    if q is not None and (n_quarantined or stale):  # this run's refused templates replace the last run's
        replace_partition(
            quarantine_rows(q, run_id=run.run_id, stage="answers"), cfg.table(Layer.QUARANTINE), "stage", "answers"
        )
    run.count("classify.answers_quarantined", n_quarantined)
    this = rec.spark.table(view).where((F.col("run_id") == run.run_id) & (F.col("stage") == "classify"))
    by = {r["answer_by"]: int(r["count"]) for r in this.groupBy("answer_by").count().collect()}
    total = sum(by.values())
    templates = rec.out.matcher.info.get("templates", 0)
    run.count("classify.answer_templates", templates)
    for route in ("intent", "similarity", "none"):
        run.count(f"classify.answered_by_{route}", by.get(route, 0))
        scores[f"answer_by_{route}"] = float(by.get(route, 0))
    scores["answer_rate"] = (total - by.get("none", 0)) / total if total else 0.0
    line = (
        f"answers ({templates:,} templates): {by.get('intent', 0):,} by intent, {by.get('similarity', 0):,} by "
        f"similarity, {by.get('none', 0):,} none in {view}"
    )
    # a template written for an intent is right for a question of that intent (labelled rows only)
    judged = {
        r["answer_by"]: (int(r["n"]), int(r["ok"] or 0))
        for r in this.where("answer_intent IS NOT NULL AND label IS NOT NULL")
        .groupBy("answer_by")
        .agg(F.count("*").alias("n"), F.sum((F.col("answer_intent") == F.col("label")).cast("int")).alias("ok"))
        .collect()
    }
    for route, (n, ok) in sorted(judged.items()):
        scores[f"answer_accuracy_by_{route}"] = ok / n
        line += f"; template for the right intent on {ok / n:.4f} of {n:,} {route} answers"
    if n_quarantined:
        line += f"; {n_quarantined:,} templates quarantined"
    return line


def _open_set_metrics(
    rec: Recording, open_head: Any, cells: list[tuple[str, str, int]], labels: list[str], version: str
) -> dict[str, float]:
    """Open-set scores (eval labels training never saw are the open class) and the open-class precision/recall
    curve over thresholds, written to ``open_curve_<task>``."""
    import numpy as np

    from dmine_spark.mine.openset import open_set_curve, open_set_scores

    cfg, run = rec.cfg, rec.run
    unknown = open_head.getOrDefault("unknownLabel")
    threshold = float(open_head.getOrDefault("threshold"))
    values = open_set_scores(cells, labels, unknown)
    values["open_threshold"] = threshold
    for k, v in open_head.info.items():
        if k.startswith("val_") or k == "reference_rows":
            values[f"open_{k}"] = float(v)
    got = (
        _scored(rec, "classify")
        .where(F.col("open_score").isNotNull())
        .select("open_score", (~F.col("label").isin(*labels)).alias("is_open"))
        .limit(500_000)
        .collect()
    )
    curve = open_set_curve(np.asarray([r[0] for r in got]), np.asarray([r[1] for r in got], dtype=bool))
    if curve:
        rows = [
            (run.run_id, version, p["threshold"], p["open_precision"], p["open_recall"], p["open_share"], threshold)
            for p in curve
        ]
        schema = (
            "run_id STRING, model_version STRING, threshold DOUBLE, open_precision DOUBLE, open_recall DOUBLE, "
            "open_share DOUBLE, chosen_threshold DOUBLE"
        )
        append_table(rec.spark.createDataFrame(rows, schema), cfg.table(Layer.OPEN_CURVE))
    run.label("classify.open_set", f"{open_head.getOrDefault('method')} threshold {threshold:.4f}")
    for k in ("open_precision", "open_recall", "accuracy_known"):
        run.measure(f"classify.{k}", values[k])
    return values


def _unseen_note(
    run: RunRecorder,
    stage: str,
    split: str,
    cells: list[tuple[str, str, int]],
    known: Any,
    open_head: Any = None,
) -> list[str]:
    """Record the eval rows whose label training never saw (counts, labels, quality rows) and say so in one line.

    ``known`` is the head (its ``labels`` Param) or the list of labels it knows. With an open-set stage
    (``open_head``) those rows are the open class, not errors, and the line gives the open class's recall.
    """
    labels = known.getOrDefault("labels") if hasattr(known, "getOrDefault") else list(known)
    unseen = unseen_labels(cells, labels)
    run.count(f"{stage}.unseen_label_rows", sum(unseen.values()))
    if not unseen:
        return []
    for label, n in unseen.items():
        run.quality.add(split, stage, "unseen_label", label, n)
    names = sorted(unseen, key=lambda lab: (-unseen[lab], lab))
    shown = ", ".join(f"{lab} ({unseen[lab]:,})" for lab in names[:5]) + (" ..." if len(names) > 5 else "")
    run.label(f"{stage}.unseen_labels", ", ".join(names))
    if open_head is not None:
        unknown = open_head.getOrDefault("unknownLabel")
        caught = sum(n for t, p, n in cells if t in unseen and p == unknown)
        said = sum(n for _, p, n in cells if p == unknown)
        return [
            f"{len(unseen)} {split} label(s) never seen in training are the open class '{unknown}': "
            f"{caught:,} of {sum(unseen.values()):,} rows answered '{unknown}' (open recall "
            f"{caught / sum(unseen.values()):.4f}, precision {caught / said if said else 0.0:.4f}); {shown}"
        ]
    note = (
        f"{len(unseen)} {split} label(s) never seen in training, {sum(unseen.values()):,} rows counted as errors: "
        f"{shown}"
    )
    return [note]


def regress(rec: Recording) -> StageReport:
    """RMSE, MAE and R² of the eval split's predictions."""
    cfg, run = rec.cfg, rec.run
    r = cfg.regress
    version = rec.versions["regressor"]
    scores = regression_scores(rec.table(Layer.REG))
    write_metrics(rec.spark, cfg, run, "regress", r.eval_split, scores, model_version=version)
    for k in ("rmse", "mae", "r2"):
        run.measure(f"regress.{k}", scores[k])
    run.label("regress.model_version", version)
    rec.store.update_meta(version, metrics=scores)
    return StageReport(
        "regress",
        f"{version}: {r.target} on {r.eval_split}: RMSE {scores['rmse']:.4f}, MAE {scores['mae']:.4f}, "
        f"R² {scores['r2']:.4f} on {int(scores['rows']):,} rows",
        values=scores,
        models={"regressor": rec.out.model.stages[-1]},
    )


def finetune(rec: Recording) -> StageReport:
    """Scores of the fine-tuned classifier on the eval split, with its training summary."""
    cfg, run, out = rec.cfg, rec.run, rec.out
    f = cfg.finetune
    version = rec.versions["finetuned"]
    summary = out.summary
    scores, cells = classification_metrics(_scored(rec, "finetune"), out.labels)
    scores["best_val_accuracy"] = summary["best_val_accuracy"]
    scores["train_seconds"] = summary["seconds"]
    scores["train_steps"] = float(summary["steps"])
    refit = summary.get("head_refit") or {}
    if refit:
        scores["refit_val_accuracy"] = refit["val_accuracy"]
    write_metrics(rec.spark, cfg, run, "finetune", f.eval_split, scores, model_version=version)
    run.label("finetune.model_version", version)
    run.count("finetune.train_rows", summary["train_rows"])
    notes = _unseen_note(run, "finetune", f.eval_split, cells, out.labels)
    run.measure("finetune.accuracy", scores["accuracy"])
    run.measure("finetune.macro_f1", scores["macro_f1"])
    run.measure("finetune.train_seconds", summary["seconds"])
    rec.store.update_meta(version, metrics={k: scores[k] for k in ("accuracy", "macro_f1", "rows")})
    stop = ", stopped early" if summary["stopped_early"] else ""
    return StageReport(
        "finetune",
        f"{version}: {summary['train_rows']:,} training rows, {summary['steps']} steps on "
        f"{summary['processes']} process(es) in {summary['seconds']:.0f}s{stop}; best validation accuracy "
        f"{summary['best_val_accuracy']:.4f}"
        + (f" ({refit['val_accuracy']:.4f} with the head re-fitted)" if refit else "")
        + f"; {f.eval_split} accuracy {scores['accuracy']:.4f}, "
        f"macro-F1 {scores['macro_f1']:.4f}" + "".join(f"; {n}" for n in notes),
        values={k: v for k, v in scores.items() if "." not in k},
    )


def cluster(rec: Recording) -> StageReport:
    """Silhouette, k and label agreement of the clustering; the largest clusters by name."""
    cfg, run, out = rec.cfg, rec.run, rec.out
    c = cfg.cluster
    version = rec.versions["clusterer"]
    values = out.values
    write_metrics(rec.spark, cfg, run, "cluster", "all", values, model_version=version)
    run.measure("cluster.silhouette", values["silhouette_cosine"])
    run.label("cluster.algorithm", c.algorithm)
    run.label("cluster.model_version", version)
    run.count("cluster.k", int(values["k"]))
    top = rec.table(Layer.CLUSTER_TERMS).orderBy(F.desc("size")).limit(3).collect()
    names = "; ".join(f"{r['name']} ({r['size']})" for r in top)
    extra = f", Hungarian accuracy {values['hungarian_accuracy']:.3f}" if "hungarian_accuracy" in values else ""
    if "k_requested" in values:  # more clusters were asked for than there are distinct texts
        run.count("cluster.k_requested", int(values["k_requested"]))
        extra += f" (k capped from {int(values['k_requested'])}: {int(values['k'])} distinct vectors)"
    return StageReport(
        "cluster",
        f"{c.algorithm} k={int(values['k'])}, cosine silhouette {values['silhouette_cosine']:.3f}{extra}; "
        f"largest: {names}",
        values=values,
    )


def search(rec: Recording) -> StageReport:
    """Corpus and query rows, k, and on labelled rows the share whose nearest neighbour has their label (1-NN)."""
    cfg, run, out = rec.cfg, rec.run, rec.out
    s = cfg.search
    version = rec.versions["index"]
    corpus_split, query_split = cfg.search_splits()
    values = {"corpus_rows": float(out.corpus_rows), "query_rows": float(out.query_rows), "k": float(s.k)}
    found = rec.table(Layer.NEIGHBORS, this_run=True)
    values["answered_rows"] = float(found.select("id").distinct().count())
    if cfg.label_col:
        labels = rec.table(Layer.CLEAN).select("id", "label")
        first = (
            found.where("rank = 1")
            .join(labels, "id")
            .join(
                labels.select(F.col("id").alias("neighbor_id"), F.col("label").alias("neighbor_label")), "neighbor_id"
            )
            .agg(F.avg((F.col("label") == F.col("neighbor_label")).cast("double")).alias("a"))
            .first()
        )
        if first is not None and first["a"] is not None:
            values["knn_top1_accuracy"] = float(first["a"])
    write_metrics(rec.spark, cfg, run, "search", query_split, values, model_version=version)
    run.label("search.model_version", version)
    run.count("search.corpus_rows", out.corpus_rows)
    run.count("search.query_rows", out.query_rows)
    if "knn_top1_accuracy" in values:
        run.measure("search.knn_top1_accuracy", values["knn_top1_accuracy"])
        rec.store.update_meta(version, metrics={"knn_top1_accuracy": values["knn_top1_accuracy"]})
    agree = f", 1-NN label agreement {values['knn_top1_accuracy']:.4f}" if "knn_top1_accuracy" in values else ""
    return StageReport(
        "search",
        f"{version}: {s.index} top-{s.k} of {out.query_rows:,} {query_split} rows among {out.corpus_rows:,} "
        f"{corpus_split} rows{agree}",
        values=values,
    )


def recommend(rec: Recording) -> StageReport:
    """Each recommender's ranking metrics on the warm and cold-start tests into ``metrics``; users, items, coverage."""
    cfg, run, out = rec.cfg, rec.run, rec.out
    r = cfg.recommend
    ev = out.evaluation
    k = r.k
    for part, figures in (("test_warm", ev.warm), ("test_cold", ev.cold)):
        for kind, values in figures.items():
            named = {m.replace("_at_k", f"_at_{k}"): v for m, v in values.items()}
            write_metrics(rec.spark, cfg, run, f"recommend.{kind}", part, named, model_version=rec.versions[kind])
            for m in ("ndcg_at_k", "recall_at_k"):
                run.measure(f"recommend.{part}.{kind}.{m.replace('_at_k', f'_at_{k}')}", values[m])
    ratios = ev.ratios()
    write_metrics(
        rec.spark,
        cfg,
        run,
        "recommend",
        "test",
        {
            **{f.replace("_at_k", f"_at_{k}"): v for f, v in ratios.items()},
            f"random_cold_recall_at_{k}": ev.random_cold_recall,
            **{f"als_grid_ndcg_at_{k}[{label}]": v for label, v in ev.als_grid.items()},
        },
        model_version=rec.versions[r.serve],
    )
    for key, n in {**out.counts, **{f"split.{p}": v for p, v in ev.sizes.items() if p != "items_with_text"}}.items():
        run.count(f"recommend.{key}", n)
    for kind in ("popularity", "als", "content", "hybrid"):
        run.label(f"recommend.{kind}.model_version", rec.versions[kind])
    written = rec.table(Layer.RECS)
    served = written.select("user_id").distinct().count()
    if served != out.counts["recommended_users"]:
        raise RuntimeError(
            f"recommend wrote top-k lists for {served} users but scored {out.counts['recommended_users']}"
        )
    w = ev.warm
    return StageReport(
        "recommend",
        f"{rec.versions[r.serve]}: top {k} for {served:,} users; warm NDCG@{k} hybrid {w['hybrid']['ndcg_at_k']:.4f}, "
        f"ALS {w['als']['ndcg_at_k']:.4f}, popularity {w['popularity']['ndcg_at_k']:.4f}, content "
        f"{w['content']['ndcg_at_k']:.4f}; cold-start recall@{k} content {ev.cold['content']['recall_at_k']:.4f}, "
        f"hybrid {ev.cold['hybrid']['recall_at_k']:.4f} (random {ev.random_cold_recall:.4f})",
        values={f"{kind}.ndcg_at_{k}": v["ndcg_at_k"] for kind, v in w.items()},
    )


def trends(rec: Recording) -> StageReport:
    """Counts of rows, entities and windows; the new alerts written to ``alerts_<task>`` and sent to the sinks."""
    from dmine_spark.analyze.alerts import publish

    cfg, run, out = rec.cfg, rec.run, rec.out
    for key, n in out.counts.items():
        run.count(f"trends.{key}", n)
    if out.counts["rows"] != out.counts["rows_with_entity"] + out.counts["rows_without_entity"]:
        raise RuntimeError(f"trends lost rows: {out.counts}")
    pub = publish(cfg, out.alerts, run_id=run.run_id, stage="trends")
    run.count("trends.alerts_new", pub.new)
    if cfg.trends.webhook is not None:
        run.count("trends.webhook_delivered", pub.delivered)
        run.count("trends.webhook_failed", pub.failed)
    c = out.counts
    sinks = f"; webhook {pub.delivered} delivered, {pub.failed} failed" if cfg.trends.webhook is not None else ""
    return StageReport(
        "trends",
        f"{c['rows']:,} texts, {c['rows_with_entity']:,} with an entity ({c['rows_without_entity']:,} without), "
        f"{c['entities']:,} entities over {c['windows']:,} windows of {cfg.trends.window}; {c['alerts']:,} alerts "
        f"({pub.new:,} new){sinks}",
        values={"alerts": float(c["alerts"]), "entities": float(c["entities"])},
    )


RECORDERS = {
    "ingest": ingest,
    "clean": clean,
    "features": features,
    "embed": embed,
    "classify": classify,
    "regress": regress,
    "finetune": finetune,
    "cluster": cluster,
    "search": search,
    "recommend": recommend,
    "trends": trends,
}
"""The recorder of each stage, by stage name."""
