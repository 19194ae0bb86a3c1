"""The stage table: each stage's inputs, node, outputs, saved models and recorder, declared once.

The CLI's stage commands, ``dmine run --stages`` and the Python API all come
from :data:`STAGES`. A stage's ``run`` only reads its inputs through the
:class:`~dmine_spark.runner.context.StageContext` and calls its step's node;
the runner (:mod:`dmine_spark.runner.run`) saves the models, writes the
outputs and calls the stage's recorder (:mod:`dmine_spark.analyze.record`,
by stage name). The table itself imports no Spark, so the command line
lists the stages without starting one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from dmine_spark.config import ConfigError, Layer, PipelineConfig

if TYPE_CHECKING:  # the stage table is read by the CLI's parser: Spark and the nodes load when a stage runs
    from dmine_spark.analyze.record import Recording, StageReport
    from dmine_spark.runner.context import StageContext

__all__ = ["Write", "Save", "Stage", "STAGES", "stage_names", "default_stages"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Write:
    """An output table: the layer, the attribute of the node's output that holds it, and how it is written.

    ``mode``: ``overwrite`` replaces the table; ``append`` adds this run's rows
    (predictions, in the predictions table's columns); ``quarantine``
    replaces this stage's rows of the quarantine table; ``view`` is the
    embedding view over the cache. ``version`` names the saved model whose
    ``model_version`` the rows carry (or picks it from the config).
    """

    layer: Layer
    attr: str = ""
    mode: Literal["overwrite", "append", "quarantine", "view"] = "overwrite"
    version: str | Callable[[PipelineConfig], str] | None = None


@dataclass(frozen=True)
class Save:
    """A model the stage saves: the attribute holding its ``PipelineModel``, its store name and its metadata."""

    key: str
    attr: str
    name: Callable[[PipelineConfig], str]
    meta: Callable[[PipelineConfig, Any], dict[str, Any]] = lambda cfg, out: {}


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline."""

    name: str
    help: str
    run: Callable[[StageContext], Any]
    writes: tuple[Write, ...]
    saves: tuple[Save, ...] = ()
    enabled: Callable[[PipelineConfig], bool] = field(default=lambda cfg: True)

    def record(self, rec: Recording) -> StageReport:
        """What the stage did, in the run's records (the recorder of the same name)."""
        from dmine_spark.analyze.record import RECORDERS

        return RECORDERS[self.name](rec)


def _needs_label(cfg: PipelineConfig, stage: str) -> None:
    if not cfg.label_col:
        raise ConfigError(f"{stage}: label_col is not set, so there is nothing to learn from")


def _ingest(ctx: StageContext) -> Any:
    from dmine_spark.prepare import nodes as prepare_nodes

    cfg, r = ctx.cfg, ctx.cfg.recommend
    attach = [
        prepare_nodes.Attach(n, s.attach_to, cfg.sources[s.attach_to].id_col, s.attach_on, s.attach_sep)
        for n, s in cfg.sources.items()
        if s.role == "item_text"
    ]
    return prepare_nodes.ingest(
        ctx.sources(),
        text_col=cfg.text_col,
        label_col=cfg.label_col,
        pii=cfg.pii,
        roles={n: s.role for n, s in cfg.sources.items()},
        attach=attach,
        interaction_cols=prepare_nodes.InteractionColumns(r.user_col, r.item_col, r.time_col, r.value_col),
    )


def _clean(ctx: StageContext) -> Any:
    from dmine_spark.prepare import nodes as prepare_nodes

    cfg = ctx.cfg
    return prepare_nodes.clean(
        ctx.read(Layer.RAW),
        text_col=cfg.text_col,
        label_col=cfg.label_col,
        dedup_sources=[n for n, s in cfg.sources.items() if s.dedup and s.role == "text"],
        clean=cfg.clean,
        pii=cfg.pii,
        language=cfg.language,
        near_dup=cfg.near_dup,
        overlap_pairs=overlap_pairs(cfg),
    )


def overlap_pairs(cfg: PipelineConfig) -> list[tuple[str, str]]:
    """(training split, evaluation split) of each enabled stage that trains, in stage order, without repeats."""
    pairs: list[tuple[str, str]] = []
    for section in (cfg.classify, cfg.finetune, cfg.regress):
        if section is None or not getattr(section, "enabled", True):
            continue
        pair = (section.train_split, section.eval_split)
        if pair[0] != pair[1] and pair not in pairs:
            pairs.append(pair)
    return pairs


def _features(ctx: StageContext) -> Any:
    from dmine_spark.features import nodes as features_nodes

    cfg = ctx.cfg
    if cfg.features is None:
        raise ConfigError("features: the section is not set, so there are no feature tables to build")
    tabular = [*cfg.features.categorical, *cfg.features.numeric, *cfg.features.time]
    raw = ctx.read(Layer.RAW) if tabular else None
    return features_nodes.features(ctx.read(Layer.CLEAN), raw, cfg.features, has_label=bool(cfg.label_col))


def _embed(ctx: StageContext) -> Any:
    from dmine_spark.features import nodes as features_nodes

    if not ctx.cfg.embed.cache and ctx.cache.exists():
        ctx.spark.sql(f"DROP TABLE {ctx.cache.table}")  # a scratch cache lives for one run
    return features_nodes.embed(ctx.read(Layer.CLEAN), ctx.cache, progress=ctx.progress("embed"), run_id=ctx.run.run_id)


def _latest_features_model(ctx: StageContext) -> Any:
    model, _ = ctx.store.load(f"{ctx.cfg.task}-features")
    return model


def _classify(ctx: StageContext) -> Any:
    from dmine_spark.mine import nodes as mine_nodes

    cfg = ctx.cfg
    _needs_label(cfg, "classify")
    clean = ctx.read(Layer.CLEAN).select("id", "split", "source_file", "text", "text_key", "label")
    if cfg.classify.features == "table":
        rows = clean.join(ctx.read(Layer.FEAT).select("id", "features"), "id")
        try:
            featurizer = _latest_features_model(ctx)
        except FileNotFoundError:
            raise LookupError("the feature pipeline is not saved yet; run the features stage first") from None
        features_col = "features"
    else:
        rows = ctx.embedded(clean)
        featurizer = ctx.embedder()
        features_col = "embedding"
    answers = _answers(ctx) if cfg.answers is not None else None
    return mine_nodes.classify(
        rows.drop("text_key"),
        cfg.classify,
        cleaner=ctx.cleaner(),
        featurizer=featurizer,
        features_col=features_col,
        task=cfg.task,
        answers=answers,
        answers_section=cfg.answers,
    )


def _answers(ctx: StageContext) -> Any:
    """The reply templates of ``answers``: read like a source, cleaned as questions are, embedded through the cache."""
    from pyspark.sql import functions as F

    from dmine_spark.features.embed import encode_on_driver
    from dmine_spark.features.encoder import SPARKNLP_BACKENDS
    from dmine_spark.prepare.ingest import read_source

    a = ctx.cfg.answers
    if ctx.cfg.classify.features != "embedding":
        raise ConfigError("answers: templates are matched by embedding, and classify.features is 'table'")
    got = read_source(
        ctx.spark, "answers", a.source, required=[a.text_col], id_col=a.id_col, staging=str(ctx.cfg.paths.staging)
    )
    if a.intent_col and a.intent_col not in [*got.rows.columns, *got.renamed.values()]:
        raise ConfigError(f"answers.intent_col: column {a.intent_col!r} is not declared in answers.source.schema")
    name = {declared: stored for stored, declared in got.renamed.items()}.get  # names Spark stores otherwise
    rows = got.rows.select(
        F.col(name(a.id_col, a.id_col)).cast("string").alias("answer_id"),
        F.col(name(a.text_col, a.text_col)).alias("text"),
        (F.col(name(a.intent_col, a.intent_col)).cast("string") if a.intent_col else F.lit(None).cast("string")).alias(
            "intent"
        ),
    )
    cleaned = ctx.cleaner().transform(rows).where(F.length("text") > 0)
    spec = ctx.cache.spec
    if spec.backend in SPARKNLP_BACKENDS:  # Spark NLP's engine runs in Spark only
        embedded, _ = ctx.embedder().embed(cleaned, run_id=ctx.run.run_id)
        return embedded, got.quarantine
    # a library is small (answers.max_rows) and goes to the driver anyway: embedded there with the cache's settings
    library = cleaned.limit(a.max_rows + 1).collect()
    vectors = encode_on_driver(spec, [r["text"] for r in library])
    embedded = ctx.spark.createDataFrame(
        [(r["answer_id"], r["text"], r["intent"], v.tolist()) for r, v in zip(library, vectors, strict=True)],
        "answer_id STRING, text STRING, intent STRING, embedding ARRAY<FLOAT>",
    )
    return embedded, got.quarantine


def _regress(ctx: StageContext) -> Any:
    from dmine_spark.mine import nodes as mine_nodes

    cfg = ctx.cfg
    rows = ctx.embedded(ctx.read(Layer.CLEAN)) if cfg.regress.embedding else ctx.read(Layer.CLEAN)
    return mine_nodes.regress(
        rows,
        ctx.read(Layer.RAW),
        cfg.regress,
        cleaner=ctx.cleaner(),
        embedder=ctx.embedder() if cfg.regress.embedding else None,
    )


def _finetune(ctx: StageContext) -> Any:
    from dmine_spark.mine import nodes as mine_nodes

    cfg = ctx.cfg
    _needs_label(cfg, "finetune")
    return mine_nodes.finetune(
        ctx.read(Layer.CLEAN),
        cfg.finetune,
        cleaner=ctx.cleaner(),
        scratch=cfg.paths.finetune(ctx.run.run_id),
        batch_size=cfg.embed.batch_size,
        max_tokens=cfg.embed.max_tokens,
        parallelism=ctx.spark.sparkContext.defaultParallelism,
        task=cfg.task,
    )


def _cluster(ctx: StageContext) -> Any:
    from dmine_spark.mine import nodes as mine_nodes

    cfg = ctx.cfg
    rows = ctx.embedded(ctx.read(Layer.CLEAN)).select("id", "split", "text", "label", "embedding")
    return mine_nodes.cluster(
        rows, cfg.cluster, cleaner=ctx.cleaner(), embedder=ctx.embedder(), labelled=bool(cfg.label_col)
    )


def _search(ctx: StageContext) -> Any:
    from dmine_spark.mine.neighbors import search_neighbors
    from dmine_spark.mine.nodes import check_splits

    cfg = ctx.cfg
    corpus_split, query_split = cfg.search_splits()
    cols = ["id", "split", "text", "embedding", *(["label"] if cfg.label_col else [])]
    rows = ctx.embedded(ctx.read(Layer.CLEAN)).select(*cols)
    check_splits(rows, "search", ("corpus_split", corpus_split), ("query_split", query_split))
    return search_neighbors(
        rows,
        cfg.search,
        corpus_split=corpus_split,
        query_split=query_split,
        cleaner=ctx.cleaner(),
        embedder=ctx.embedder(),
        labelled=bool(cfg.label_col),
    )


def _recommend(ctx: StageContext) -> Any:
    import re

    from pyspark.sql import functions as F

    from dmine_spark.mine import nodes as mine_nodes

    r = ctx.cfg.recommend
    prefix = f"{r.items}:"
    item_id = F.expr(f"substring(id, {len(prefix) + 1})")
    clean = ctx.read(Layer.CLEAN).where(F.col("source") == r.items).select("id", "text", "text_key")
    items = ctx.embedded(clean).select(item_id.alias("item_id"), F.col("embedding").alias("vector"))
    categories = None
    if r.category_col:
        raw = ctx.read(Layer.RAW).where(F.col("source") == r.items)
        categories = (
            raw.select(
                item_id.alias("item_id"), F.explode(F.split(r.category_col, re.escape(r.category_sep))).alias("g")
            )
            .select("item_id", F.trim("g").alias("genre"))
            .where(F.length("genre") > 0)
            .distinct()
        )
    interactions = ctx.read(Layer.INTERACTIONS).where(F.col("source") == r.interactions)
    return mine_nodes.recommend(
        interactions, items, categories, r, progress=ctx.progress("recommend"), echo=lambda line: log.info(line)
    )


def _trends(ctx: StageContext) -> Any:
    from pyspark.sql import functions as F

    from dmine_spark.mine import trends as trends_nodes

    cfg, t = ctx.cfg, ctx.cfg.trends
    if t.time_col is None:
        raise ConfigError("trends.time_col: dmine run needs each text's event time; name its column")
    split = t.split or cfg.classify.eval_split
    pred = ctx.read(Layer.PRED).where((F.col("split") == split) & F.col("stage").isin("classify", "finetune"))
    latest = pred.orderBy(F.desc("scored_at")).select("run_id", "stage").first()
    if latest is None:
        raise LookupError(f"trends: no predictions of split {split!r} yet; run the classify stage first")
    pred = pred.where((F.col("run_id") == latest["run_id"]) & (F.col("stage") == latest["stage"]))
    raw = ctx.read(Layer.RAW)
    times = raw.select("id", trends_nodes.event_time(raw, t.time_col).alias("event_time"))
    rows = pred.select("id", "text", "prediction", "probability").join(times, "id", "left")
    labels = cfg.labels or sorted(r[0] for r in pred.select("prediction").distinct().collect() if r[0] is not None)
    dictionary = trends_nodes.load_dictionary(ctx.spark, t.entities.dictionary) if t.entities.dictionary else None
    ctx.run.label("trends.predictions", f"{latest['stage']} run {latest['run_id']}")
    return trends_nodes.trends(rows, t, labels, dictionary)


def _recs_meta(kind: str) -> Callable[[PipelineConfig, Any], dict[str, Any]]:
    def meta(cfg: PipelineConfig, out: Any) -> dict[str, Any]:
        ev = out.evaluation
        extra: dict[str, Any] = {"k": cfg.recommend.k, "warm": ev.warm[kind], "cold": ev.cold[kind]}
        if kind in ("als", "hybrid"):
            extra["als_params"] = ev.als_best.label()
        if kind == "hybrid":
            extra.update(ranker=cfg.recommend.ranker, ranker_weights=ev.ranker_weights)
        if kind in ("content", "hybrid"):
            extra["embed_model"] = cfg.embed.model
        return _trained_by(cfg, kind=kind, interactions=out.counts.get("interactions"), **extra)

    return meta


def _trained_by(cfg: PipelineConfig, **extra: Any) -> dict[str, Any]:
    return {"pipeline": cfg.name, "task": cfg.task, **extra}


STAGES: tuple[Stage, ...] = (
    Stage(
        "ingest",
        "read every source with its schema into raw_<task>; rows breaking a rule to quarantine_<task>",
        _ingest,
        (
            Write(Layer.RAW, "raw"),
            Write(Layer.INTERACTIONS, "interactions"),
            Write(Layer.QUARANTINE, "quarantine", "quarantine"),
        ),
    ),
    Stage(
        "clean",
        "clean, mask PII, tag languages and remove duplicates: clean_<task>, dup_<task>",
        _clean,
        (
            Write(Layer.CLEAN, "clean"),
            Write(Layer.DUP, "duplicates"),
            Write(Layer.QUARANTINE, "quarantine", "quarantine"),
        ),
    ),
    Stage(
        "features",
        "fit the feature pipeline (TF-IDF, categorical, numeric, time) into feat_<task>",
        _features,
        (Write(Layer.FEAT, "table"),),
        saves=(Save("features", "model", lambda cfg: f"{cfg.task}-features", lambda cfg, out: _trained_by(cfg)),),
        enabled=lambda cfg: cfg.features is not None,
    ),
    Stage(
        "embed",
        "embed the clean texts the embedding cache lacks; emb_<task> is a view over the cache",
        _embed,
        (Write(Layer.EMB, mode="view"),),
        enabled=lambda cfg: cfg.embed.enabled,
    ),
    Stage(
        "classify",
        "train the classifier on the train split and predict the eval split into pred_<task>",
        _classify,
        (
            Write(Layer.PRED, "predictions", "append", version="classifier"),
            Write(Layer.ANSWER_LIBRARY, "answers", version="classifier"),
        ),
        saves=(
            Save(
                "classifier",
                "model",
                lambda cfg: f"{cfg.task}-{cfg.classify.model}",
                lambda cfg, out: _trained_by(
                    cfg,
                    features=cfg.classify.features,
                    embed_model=cfg.embed.model if cfg.classify.features == "embedding" else None,
                    train_split=cfg.classify.train_split,
                    params=out.head.info.get("params"),
                    selection=out.head.info.get("selection"),
                    train_rows=out.head.info.get("train_rows"),
                    sampled=out.head.info.get("sampled"),
                    labels=out.head.getOrDefault("labels"),
                ),
            ),
        ),
        enabled=lambda cfg: cfg.classify.enabled,
    ),
    Stage(
        "regress",
        "fit the regressor of regress.target and predict the eval split into reg_<task>",
        _regress,
        (Write(Layer.REG, "predictions", version="regressor"),),
        saves=(
            Save(
                "regressor",
                "model",
                lambda cfg: f"{cfg.task}-regress-{cfg.regress.model}",
                lambda cfg, out: _trained_by(cfg, target=cfg.regress.target),
            ),
        ),
        enabled=lambda cfg: cfg.regress.enabled,
    ),
    Stage(
        "finetune",
        "fine-tune a BERT classifier (TorchDistributor) and predict the eval split into pred_<task>",
        _finetune,
        (Write(Layer.PRED, "predictions", "append", version="finetuned"),),
        saves=(
            Save(
                "finetuned",
                "model",
                lambda cfg: f"{cfg.task}-finetune",
                lambda cfg, out: _trained_by(
                    cfg, base_model=cfg.finetune.base_model, summary=out.summary, labels=out.labels
                ),
            ),
        ),
        enabled=lambda cfg: cfg.finetune.enabled,
    ),
    Stage(
        "trends",
        "entities of the monitored split's texts into entities_<task>, sentiment per entity and time window into "
        "sentiment_ts_<task>, and the alerts of its shifts into alerts_<task>",
        _trends,
        (Write(Layer.ENTITIES, "entities"), Write(Layer.SENTIMENT_TS, "series")),
        enabled=lambda cfg: cfg.trends.enabled and (cfg.classify.enabled or cfg.finetune.enabled),
    ),
    Stage(
        "cluster",
        "cluster the embeddings into cluster_<task>; names, sizes and exemplars into cluster_terms_<task>",
        _cluster,
        (
            Write(Layer.CLUSTER, "assignments", version="clusterer"),
            Write(Layer.CLUSTER_TERMS, "terms", version="clusterer"),
        ),
        saves=(
            Save(
                "clusterer",
                "model",
                lambda cfg: f"{cfg.task}-cluster-{cfg.cluster.algorithm}",
                lambda cfg, out: _trained_by(cfg, k=out.clusterer.n_clusters, values=out.values),
            ),
        ),
        enabled=lambda cfg: cfg.cluster.enabled,
    ),
    Stage(
        "search",
        "index the corpus split's embeddings and find each query row's nearest neighbours: neighbors_<task>",
        _search,
        (Write(Layer.NEIGHBORS, "neighbors", version="index"),),
        saves=(
            Save(
                "index",
                "model",
                lambda cfg: f"{cfg.task}-index",
                lambda cfg, out: _trained_by(
                    cfg,
                    kind=cfg.search.index,
                    k=cfg.search.k,
                    corpus_split=cfg.search_splits()[0],
                    embed_model=cfg.embed.model,
                    rows=out.corpus_rows,
                    build_seconds=out.info.get("build_seconds"),
                    params=out.info.get("params"),
                ),
            ),
        ),
        enabled=lambda cfg: cfg.search.enabled,
    ),
    Stage(
        "recommend",
        "evaluate popularity, ALS, content-based and hybrid recommenders on a time split; each user's top k "
        "into recs_<task>, each item's neighbours into similar_items_<task>",
        _recommend,
        (
            Write(Layer.RECS, "recs", version=lambda cfg: cfg.recommend.serve),
            Write(Layer.SIMILAR_ITEMS, "similar", version="content"),
        ),
        saves=tuple(
            Save(kind, f"{kind}_model", lambda cfg, kind=kind: f"{cfg.task}-recs-{kind}", _recs_meta(kind))
            for kind in ("popularity", "als", "content", "hybrid")
        ),
        enabled=lambda cfg: cfg.recommend.enabled,
    ),
)
"""Every stage, in the order ``dmine run`` runs them."""


def stage_names() -> list[str]:
    """The stage names, in order."""
    return [s.name for s in STAGES]


def default_stages(cfg: PipelineConfig) -> list[str]:
    """The stages ``dmine run`` runs for ``cfg``: the enabled ones, in order."""
    return [s.name for s in STAGES if s.enabled(cfg)]
