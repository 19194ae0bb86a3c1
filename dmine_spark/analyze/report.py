"""The run report: one self-contained HTML file per run, every plot embedded as a PNG.

:func:`write_report` reads what a run wrote to the catalog (``runs``,
``quality``, ``metrics``, ``confusion_<task>``, ``cluster_<task>``,
``cluster_terms_<task>`` and a sample of the embeddings), draws the plots with
matplotlib and writes ``<work_dir>/reports/<run_id>.html``. Sections appear for
the stages the run had:

* data quality: rows at each prepare step per source, quarantine rules, PII masks;
* metrics, as a table, and the confusion matrix as a heat map;
* open-set detection (``classify.open_set``): open-class precision and recall
  against the threshold (``open_curve_<task>``), with the threshold the model uses;
* example neighbours (the search stage): a few eval rows with their nearest corpus rows;
* recommendations (the recommend stage): each recommender's ranking metrics on the warm and
  cold-start tests, and a few users' top items with their texts;
* clusters: a 2-D PCA map of a sample coloured by cluster and labelled with the
  cluster names, and the name table with top terms and exemplars;
* embedding throughput: texts and tokens embedded per second of encoding in
  this run's embed stage against the earlier runs of the same pipeline, and
  how many rows came from the cache.

The page has no external reference (no script, style sheet or image from
anywhere else), so it can be mailed, attached to an MLflow run or opened offline.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from dmine_spark.config import Layer, PipelineConfig

__all__ = ["write_report", "render_report", "MAP_SAMPLE_ROWS"]

MAP_SAMPLE_ROWS = 3000

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#1d2330;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em} h2{font-size:1.2em;border-bottom:1px solid #d6dbe4;padding-bottom:.2em;
margin-top:1.8em} table{border-collapse:collapse;font-size:.88em;margin:.6em 0} td,th{border:1px solid #d6dbe4;
padding:.25em .6em;text-align:left;vertical-align:top} th{background:#f2f4f8} td.n{text-align:right;
font-variant-numeric:tabular-nums} .meta{color:#5a6375;font-size:.9em} figure{margin:1em 0}
figure img{max-width:100%;border:1px solid #e3e7ee} figcaption{color:#5a6375;font-size:.85em}
"""

# after load, the page states how many of its figures decoded (a headless browser can read it)
_CHECK = """
<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll('figure img'));
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-figures', ok + '/' + imgs.length);
});
</script>
"""


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(b64: str, caption: str, fig_id: str) -> str:
    return (
        f'<figure id="{fig_id}"><img alt="{html.escape(caption)}" src="data:image/png;base64,{b64}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _table(header: list[str], rows: list[list[Any]], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for r in rows:
        cells = []
        for i, v in enumerate(r):
            if isinstance(v, float):
                v = f"{v:,.4f}" if abs(v) < 1000 else f"{v:,.0f}"
            elif isinstance(v, int):
                v = f"{v:,}"
            cls = ' class="n"' if i in numeric else ""
            cells.append(f"<td{cls}>{html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _exists(spark: SparkSession, name: str) -> bool:
    return spark.catalog.tableExists(name)


def _quality_section(spark: SparkSession, cfg: PipelineConfig, run_id: str) -> str:
    import matplotlib.pyplot as plt

    name = cfg.table(Layer.QUALITY)
    if not _exists(spark, name):
        return ""
    q = spark.table(name).where((F.col("run_id") == run_id) & (F.col("task") == cfg.task)).collect()
    if not q:
        return ""
    steps = [r for r in q if r["metric"] == "rows"]
    rules = [r for r in q if r["metric"] == "quarantined"]
    pii = [r for r in q if r["metric"] == "pii_masked"]
    out = ["<h2>Data quality</h2>"]
    if steps:
        sources = sorted({r["source"] for r in steps})
        keys = list(dict.fromkeys(r["key"] for r in steps))
        fig, ax = plt.subplots(figsize=(9, 0.5 + 0.45 * len(keys) * max(1, len(sources)) ** 0.5))
        height = 0.8 / len(sources)
        for i, src in enumerate(sources):
            vals = {r["key"]: r["value"] for r in steps if r["source"] == src}
            ax.barh(np.arange(len(keys)) + i * height, [vals.get(k, 0) for k in keys], height=height, label=src)
        ax.set_yticks(np.arange(len(keys)) + height * (len(sources) - 1) / 2, keys)
        ax.invert_yaxis()
        ax.set_xlabel("rows")
        ax.legend(title="source", fontsize=8)
        ax.set_title("Rows at each prepare step")
        out.append(_figure(_png(fig), "Rows at each prepare step, per source", "fig-quality"))
        rows = [[r["source"], r["step"], r["key"], int(r["value"])] for r in steps]
        out.append(_table(["source", "step", "count", "rows"], rows, {3}))
    if rules:
        rows = [[r["source"], r["key"], int(r["value"])] for r in rules if r["value"]]
        if rows:
            out.append("<h3>Quarantine rules</h3>" + _table(["source", "rule", "rows"], rows, {2}))
    if pii:
        rows = [[r["source"], r["step"], r["key"], int(r["value"])] for r in pii]
        out.append("<h3>PII masked</h3>" + _table(["source", "step", "type", "values"], rows, {3}))
    return "".join(out)


def _metrics_section(spark: SparkSession, cfg: PipelineConfig, run_id: str) -> str:
    name = cfg.table(Layer.METRICS)
    if not _exists(spark, name):
        return ""
    m = spark.table(name).where((F.col("run_id") == run_id) & (F.col("task") == cfg.task)).collect()
    m = [r for r in m if not r["stage"].startswith("recommend")]  # the recommenders have their own section
    if not m:
        return ""
    main = [r for r in m if "." not in r["metric"] or r["metric"].startswith("cv_")]
    per_class = [r for r in m if "." in r["metric"] and not r["metric"].startswith("cv_")]
    version = "model_version" in m[0].asDict()
    rows = [
        [r["stage"], r["split"], r["metric"], float(r["value"]), (r["model_version"] if version else None) or ""]
        for r in main
    ]
    out = ["<h2>Metrics</h2>", _table(["stage", "split", "metric", "value", "model version"], rows, {3})]
    if per_class:
        by: dict[str, dict[str, float]] = {}
        for r in per_class:
            kind, _, label = r["metric"].partition(".")
            by.setdefault(label, {})[kind] = float(r["value"])
        rows = [[lab, v.get("precision", 0.0), v.get("recall", 0.0), v.get("f1", 0.0)] for lab, v in sorted(by.items())]
        out.append("<h3>Per class</h3>" + _table(["label", "precision", "recall", "F1"], rows, {1, 2, 3}))
    return "".join(out)


def _confusion_section(spark: SparkSession, cfg: PipelineConfig, run_id: str) -> str:
    import matplotlib.pyplot as plt

    name = cfg.table(Layer.CONFUSION)
    if not _exists(spark, name):
        return ""
    cells = spark.table(name).where(F.col("run_id") == run_id).collect()
    if not cells:
        return ""
    labels = sorted({r["label"] for r in cells} | {r["prediction"] for r in cells})
    pos = {lab: i for i, lab in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)))
    for r in cells:
        m[pos[r["label"]], pos[r["prediction"]]] += r["count"]
    norm = m / np.maximum(m.sum(1, keepdims=True), 1)
    size = min(16, 3 + 0.16 * len(labels))
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(labels))
    fs = 9 if len(labels) <= 12 else max(4, int(220 / len(labels)))
    ax.set_xticks(ticks, labels, rotation=90, fontsize=fs)
    ax.set_yticks(ticks, labels, fontsize=fs)
    if len(labels) <= 12:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if m[i, j]:
                    ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if norm[i, j] > 0.5 else "black")  # fmt: skip
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix ({cells[0]['model_version']}), rows normalised")
    fig.colorbar(im, ax=ax, fraction=0.04)
    return "<h2>Confusion matrix</h2>" + _figure(
        _png(fig), "Confusion matrix, share of each true label", "fig-confusion"
    )


def _open_set_section(spark: SparkSession, cfg: PipelineConfig, run_id: str) -> str:
    """Open-class precision and recall against the open-set threshold, with the threshold the model uses."""
    import matplotlib.pyplot as plt

    name = cfg.table(Layer.OPEN_CURVE)
    if not _exists(spark, name):
        return ""
    pts = sorted(spark.table(name).where(F.col("run_id") == run_id).collect(), key=lambda r: r["threshold"])
    if not pts:
        return ""
    t = [r["threshold"] for r in pts]
    fig, ax = plt.subplots(figsize=(6.4, 4))
    ax.plot(t, [r["open_precision"] for r in pts], marker="o", ms=3, label="open-class precision")
    ax.plot(t, [r["open_recall"] for r in pts], marker="o", ms=3, label="open-class recall")
    ax.plot(t, [r["open_share"] for r in pts], ls=":", label="share answered unknown")
    chosen = pts[0]["chosen_threshold"]
    ax.axvline(chosen, color="grey", ls="--", label=f"threshold {chosen:.3f}")
    ax.set_xlabel("open-set score threshold (rows below are unknown)")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
    ax.set_title(f"Open-set detection ({pts[0]['model_version']})")
    return "<h2>Open-set detection</h2>" + _figure(
        _png(fig), "Open-class precision and recall against the threshold, on the eval split", "fig-open-set"
    )


def _neighbors_section(spark: SparkSession, cfg: PipelineConfig, run_id: str, queries: int = 5, k: int = 3) -> str:
    """Example neighbours of the search stage: a few query rows with their nearest corpus rows."""
    name, clean = cfg.table(Layer.NEIGHBORS), cfg.table(Layer.CLEAN)
    if not _exists(spark, name) or not _exists(spark, clean):
        return ""
    nb = spark.table(name)
    if "run_id" in nb.columns:
        nb = nb.where(F.col("run_id") == run_id)
    first = [r["id"] for r in nb.select("id").distinct().orderBy("id").limit(queries).collect()]
    if not first:
        return ""
    texts = spark.table(clean).select("id", "text", "label")
    got = (
        nb.where(F.col("id").isin(first) & (F.col("rank") <= k))
        .join(texts.withColumnRenamed("text", "q_text").withColumnRenamed("label", "q_label"), "id")
        .join(
            texts.select(
                F.col("id").alias("neighbor_id"), F.col("text").alias("n_text"), F.col("label").alias("n_label")
            ),
            "neighbor_id",
        )
        .orderBy("id", "rank")
        .collect()
    )
    rows = [
        [r["q_text"], r["q_label"] or "", int(r["rank"]), r["n_text"], r["n_label"] or "", float(r["score"])]
        for r in got
    ]
    return "<h2>Example neighbours</h2>" + _table(
        ["question", "label", "rank", "nearest row", "its label", "cosine"], rows, {2, 5}
    )


def _recommend_section(spark: SparkSession, cfg: PipelineConfig, run_id: str, users: int = 3) -> str:
    """The recommenders' ranking metrics on the warm and cold-start tests, and a few users' top items."""
    name = cfg.table(Layer.METRICS)
    if not cfg.recommend.enabled or not _exists(spark, name):
        return ""
    m = spark.table(name).where(
        (F.col("run_id") == run_id) & (F.col("task") == cfg.task) & F.col("stage").startswith("recommend.")
    )
    got = m.collect()
    if not got:
        return ""
    k = cfg.recommend.k
    cols = [f"precision_at_{k}", f"recall_at_{k}", f"ndcg_at_{k}", f"map_at_{k}", "coverage"]
    table: dict[tuple[str, str], dict[str, Any]] = {}
    for r in got:
        row = table.setdefault((r["split"], r["stage"].split(".", 1)[1]), {"version": r["model_version"] or ""})
        row[r["metric"]] = float(r["value"])
    rows = [
        [split, kind, *[v.get(c, 0.0) for c in cols], v["version"]]
        for (split, kind), v in sorted(table.items(), key=lambda kv: (kv[0][0] != "test_warm", kv[0][1]))
    ]
    head = ["test", "recommender", f"precision@{k}", f"recall@{k}", f"NDCG@{k}", f"MAP@{k}", "coverage", "version"]
    out = ["<h2>Recommendations</h2>", _table(head, rows, {2, 3, 4, 5, 6})]
    recs, clean = cfg.table(Layer.RECS), cfg.table(Layer.CLEAN)
    if _exists(spark, recs) and _exists(spark, clean):
        r = spark.table(recs).where(F.col("run_id") == run_id)
        first = [x["user_id"] for x in r.select("user_id").distinct().orderBy("user_id").limit(users).collect()]
        prefix = f"{cfg.recommend.items}:"
        texts = spark.table(clean).select(F.expr(f"substring(id, {len(prefix) + 1})").alias("item_id"), "text")
        shown = r.where(F.col("user_id").isin(first) & (F.col("rank") <= 5)).join(texts, "item_id", "left")
        example = [
            [x["user_id"], int(x["rank"]), x["item_id"], x["text"] or "", float(x["score"])]
            for x in shown.orderBy("user_id", "rank").collect()
        ]
        out.append(
            "<h3>Example recommendations</h3>" + _table(["user", "rank", "item", "text", "score"], example, {1, 4})
        )
    return "".join(out)


def _trends_section(spark: SparkSession, cfg: PipelineConfig, run_id: str, top: int = 4) -> str:
    """The watched class's share per window for the entities with the most texts, alert markers, the alerts."""
    import matplotlib.pyplot as plt

    t = cfg.trends
    ts_name, alerts_name = cfg.table(Layer.SENTIMENT_TS), cfg.table(Layer.ALERTS)
    if not t.enabled or not _exists(spark, ts_name):
        return ""
    ts = spark.table(ts_name)
    busiest = [
        r["entity"]
        for r in ts.where(F.col("label") == t.label)
        .groupBy("entity")
        .agg(F.sum("volume").alias("v"))
        .orderBy(F.desc("v"), "entity")
        .limit(top)
        .collect()
    ]
    if not busiest:
        return ""
    series = (
        ts.where((F.col("label") == t.label) & F.col("entity").isin(busiest))
        .select("entity", "window_start", "share", "volume")
        .orderBy("window_start")
        .collect()
    )
    alerts = spark.table(alerts_name) if _exists(spark, alerts_name) else None
    marks = (
        alerts.where(F.col("entity").isin(busiest)).select("entity", "window_start", "rule").collect() if alerts else []
    )
    fig, axes = plt.subplots(len(busiest), 1, figsize=(9, 1.9 * len(busiest)), sharex=True, squeeze=False)
    for ax, entity in zip(axes[:, 0], busiest, strict=True):
        pts = [(r["window_start"], r["share"]) for r in series if r["entity"] == entity]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], color="#3d5a80", linewidth=1)
        share_at = dict(pts)
        hits = [m["window_start"] for m in marks if m["entity"] == entity and m["rule"].startswith("share")]
        ax.scatter(hits, [share_at.get(h, 0.0) for h in hits], color="#d1495b", zorder=3, s=22, label="alert")
        ax.set_ylabel(entity, rotation=0, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
    axes[0, 0].set_title(f"Share of {t.label} per {t.window} window; red: share alerts")
    fig.autofmt_xdate()
    out = [
        "<h2>Sentiment over time and alerts</h2>",
        _figure(
            _png(fig),
            f"The {t.label} share of the {len(busiest)} entities with the most texts, per {t.window}, with alerts",
            "fig-trends",
        ),
    ]
    if alerts is not None:
        recent = alerts.orderBy(F.desc("window_start"), "entity").limit(20).collect()
        rows = [
            [
                a["entity"],
                f"{a['window_start']:%Y-%m-%d %H:%M}",
                a["rule"],
                float(a["observed"]),
                float(a["baseline"]),
                float(a["score"]),
                int(a["volume"]),
                " | ".join(a["examples"] or [])[:400],
            ]
            for a in recent
        ]
        n = alerts.count()
        out.append(
            f"<h3>Alerts ({n:,} in {html.escape(alerts_name)}; the latest 20)</h3>"
            + _table(
                ["entity", "window", "rule", "observed", "baseline", "score", "texts", "example texts"],
                rows,
                {3, 4, 5, 6},
            )
        )
    return "".join(out)


def _cluster_section(spark: SparkSession, cfg: PipelineConfig, run_id: str) -> str:
    import matplotlib.pyplot as plt

    terms_name, assign_name, emb_name = cfg.table(Layer.CLUSTER_TERMS), cfg.table(Layer.CLUSTER), cfg.table(Layer.EMB)
    if not (_exists(spark, terms_name) and _exists(spark, assign_name)):
        return ""
    terms = spark.table(terms_name).where(F.col("run_id") == run_id).orderBy(F.desc("size")).collect()
    if not terms:
        return ""
    out = ["<h2>Clusters</h2>"]
    names = {r["cluster"]: r["name"] for r in terms}
    if _exists(spark, emb_name):
        assigned = spark.table(assign_name).where(F.col("run_id") == run_id)
        n = assigned.count()
        frac = min(1.0, 1.2 * MAP_SAMPLE_ROWS / max(n, 1))
        sample = (
            assigned.sample(fraction=frac, seed=7)
            .limit(MAP_SAMPLE_ROWS)
            .join(spark.table(emb_name).select("id", "embedding"), "id")
            .select("cluster", "embedding")
            .collect()
        )
        if len(sample) >= 3:
            x = np.asarray([r["embedding"] for r in sample], dtype=np.float64)
            c = np.asarray([r["cluster"] for r in sample])
            x = x - x.mean(0)
            _, _, vt = np.linalg.svd(x, full_matrices=False)
            xy = x @ vt[:2].T
            fig, ax = plt.subplots(figsize=(10, 7.5))
            cmap = plt.get_cmap("tab20")
            ids = sorted(set(c.tolist()))
            for i, cl in enumerate(ids):
                pts = xy[c == cl]
                ax.scatter(pts[:, 0], pts[:, 1], s=6, alpha=0.55, color=cmap(i % 20), label=str(cl))
            for cl in ids[:40]:  # label the centres (at most 40, to stay readable)
                pts = xy[c == cl]
                if len(pts):
                    cx, cy = np.median(pts, axis=0)
                    ax.annotate(
                        (names.get(cl) or str(cl))[:40],
                        (cx, cy),
                        fontsize=8,
                        ha="center",
                        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.8, "lw": 0.4},
                    )
            ax.set_xlabel("PC 1")
            ax.set_ylabel("PC 2")
            ax.set_title(f"Clusters on the first two principal components ({len(sample):,} sampled rows)")
            out.append(
                _figure(_png(fig), "2-D PCA map of a sample, coloured by cluster, labelled by name", "fig-clusters")
            )
    rows = [
        [
            r["cluster"],
            r["size"],
            r["name"],
            ", ".join(r["top_terms"] or []),
            " | ".join((t or "")[:120] for t in (r["exemplars"] or [])) if "exemplars" in r else "",
        ]
        for r in terms
    ]
    out.append(_table(["cluster", "size", "name", "top terms", "exemplars"], rows, {0, 1}))
    return "".join(out)


def _throughput_section(spark: SparkSession, cfg: PipelineConfig, run_id: str) -> str:
    import matplotlib.pyplot as plt

    name = cfg.table(Layer.RUNS)
    if not _exists(spark, name):
        return ""
    runs = (
        spark.table(name)
        .where((F.col("pipeline") == cfg.name) & F.col("counts").getItem("embed.rows").isNotNull())
        .orderBy("started_at")
        .select("run_id", "started_at", "measures", "counts")
        .collect()
    )
    mine = next((r for r in runs if r["run_id"] == run_id), None)
    if mine is None:
        return ""
    m, c = mine["measures"], mine["counts"]
    # a run that found every text in the cache encoded nothing, so it has no rate to plot
    hist = [r for r in runs if r["measures"].get("embed.rows_per_s") is not None][-20:]
    if "embed.rows_per_s" in m and mine not in hist:
        hist.append(mine)
    keys = [
        ("rows", c.get("embed.rows")),
        ("unique texts", c.get("embed.unique_texts")),
        ("rows from the cache", c.get("embed.cached_rows")),
        ("cache hit ratio (rows)", m.get("embed.cache_hit_ratio")),
        ("texts embedded", c.get("embed.embedded")),
        ("seconds of encoding", m.get("embed.encode_wall_seconds")),
        ("texts/s encoding", m.get("embed.rows_per_s")),
        ("tokens/s encoding", m.get("embed.tokens_per_s")),
        ("texts cut to max_length", c.get("embed.truncated")),
        ("encode seconds, all tasks", m.get("embed.encode_seconds")),
        ("model load seconds", m.get("embed.model_load_seconds")),
        ("padding ratio", m.get("embed.padding_ratio")),
    ]
    table = _table(["measure", "value"], [[k, v] for k, v in keys if v is not None], {1})
    if not hist:
        return "<h2>Embedding throughput</h2>" + table
    rate = [r["measures"]["embed.rows_per_s"] for r in hist]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    colors = ["#d1495b" if r["run_id"] == run_id else "#8aa1c1" for r in hist]
    ax.bar(range(len(hist)), rate, color=colors)
    ax.set_xticks(range(len(hist)), [r["started_at"].strftime("%m-%d %H:%M") for r in hist], rotation=60, fontsize=7)
    ax.set_ylabel("texts/s encoding")
    mark = "this run (red) and" if "embed.rows_per_s" in m else "this run embedded nothing; bars are"
    ax.set_title(f"Embedding throughput: {mark} earlier runs of the pipeline")
    return (
        "<h2>Embedding throughput</h2>"
        + _figure(
            _png(fig), "Texts embedded per second of encoding, per run (cache hits not counted)", "fig-throughput"
        )
        + table
    )


def render_report(spark: SparkSession, cfg: PipelineConfig, run_id: str) -> str:
    """The report of ``run_id`` as one HTML string."""
    import matplotlib

    matplotlib.use("Agg")
    run = None
    if _exists(spark, cfg.table(Layer.RUNS)):
        got = spark.table(cfg.table(Layer.RUNS)).where(F.col("run_id") == run_id).collect()
        run = got[0] if got else None
    head = f"<h1>{html.escape(cfg.name)}: run {html.escape(run_id)}</h1>"
    if run is not None:
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in run["stage_seconds"].items())
        head += (
            f'<p class="meta">task {html.escape(cfg.task)} · {html.escape(run["command"])} · status '
            f"{html.escape(run['status'])} · started {run['started_at']:%Y-%m-%d %H:%M:%S} · "
            f"{run['seconds']:.1f}s ({html.escape(stages)}) · Spark {html.escape(run['spark_master'] or '')}</p>"
        )
    sections = [
        _quality_section(spark, cfg, run_id),
        _metrics_section(spark, cfg, run_id),
        _confusion_section(spark, cfg, run_id),
        _open_set_section(spark, cfg, run_id),
        _cluster_section(spark, cfg, run_id),
        _neighbors_section(spark, cfg, run_id),
        _recommend_section(spark, cfg, run_id),
        _trends_section(spark, cfg, run_id),
        _throughput_section(spark, cfg, run_id),
    ]
    body = head + "".join(s for s in sections if s)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>dmine_spark report: {html.escape(cfg.name)} {html.escape(run_id)}</title>"
        f"<style>{_CSS}</style></head><body>{body}{_CHECK}</body></html>"
    )


def write_report(spark: SparkSession, cfg: PipelineConfig, run_id: str, out_dir: str | Path | None = None) -> Path:
    """Write the report of ``run_id`` to ``<out_dir or work_dir/reports>/<run_id>.html`` and return its path."""
    out = Path(out_dir) if out_dir else cfg.paths.reports
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{run_id}.html"
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(render_report(spark, cfg, run_id), encoding="utf-8")
    tmp.replace(path)
    return path
