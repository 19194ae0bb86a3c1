"""The mine step's nodes: classify, regress, fine-tune and cluster, each returning a model version to save.

Each node fits its head on DataFrames handed to it, assembles the model
version (:func:`~dmine_spark.mine.textmodel.text_model`: the cleaner, the
featurizer, the head) and predicts the eval split through the same stages. It
reads and writes no table and records nothing; the runner saves the model,
writes the predictions with the model's version, and the recorder scores them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pyspark import StorageLevel
from pyspark.ml import PipelineModel, Transformer
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from dmine_spark.config import (
    AnswersConfig,
    ClassifyConfig,
    ClusterConfig,
    ConfigError,
    FinetuneConfig,
    RecommendConfig,
    RegressConfig,
)
from dmine_spark.features.embed import Embedder, encode_on_driver, resolve_spec
from dmine_spark.mine.answers import AnswerMatcher
from dmine_spark.mine.classify import ClassifierHead, as_vector, fit_named_classifier
from dmine_spark.mine.cluster import (
    ClusterModel,
    centroids,
    cluster_exemplars,
    cluster_terms,
    english_stop_words,
    fit_clusters,
    silhouette,
)
from dmine_spark.mine.evaluate import cluster_label_agreement, label_cluster_counts
from dmine_spark.mine.finetune import FineTunedClassifier
from dmine_spark.mine.metrics import cluster_majority_labels, training_classes_error
from dmine_spark.mine.naming import name_label_overlap
from dmine_spark.mine.openset import OpenSetHead, fit_knn_threshold, fit_quantile_threshold
from dmine_spark.mine.regress import ArrayToVector, fit_regressor
from dmine_spark.mine.textmodel import text_model
from dmine_spark.prepare.clean import TextCleaner

__all__ = [
    "check_splits",
    "ClassifyOutput",
    "RegressOutput",
    "FinetuneOutput",
    "ClusterOutput",
    "RecommendOutput",
    "classify",
    "regress",
    "finetune",
    "cluster",
    "recommend",
    "selection_metrics",
]

NUMERIC_TYPES = ("integer", "long", "short", "byte", "float", "double", "decimal")


def check_splits(df: DataFrame, section: str, *splits: tuple[str, str]) -> None:
    """Fail with one line naming the key when a configured split is not among the rows' splits.

    ``splits`` are (key, value) pairs such as ``("train_split", "train")``.

    Raises
    ------
    ConfigError
        ``<section>.<key>: split '<value>' not among the sources [...]``.
    """
    have = {r["split"] for r in df.select("split").distinct().collect()}
    for key, value in splits:
        if value not in have:
            raise ConfigError(f"{section}.{key}: split {value!r} not among the sources {sorted(have)}")


@dataclass
class _Persisted:
    _cached: list[DataFrame] = field(default_factory=list, repr=False)

    def release(self) -> None:
        """Unpersist what the node cached; the runner calls it once the outputs are written."""
        for df in self._cached:
            df.unpersist()
        self._cached.clear()

    @contextmanager
    def on_error(self) -> Iterator[None]:
        """Release the cache when the block fails (the runner never sees this output then)."""
        try:
            yield
        except BaseException:
            self.release()
            raise


@dataclass
class ClassifyOutput(_Persisted):
    """The model version, its head (and open-set stage), and the eval split's predictions (``id, split,
    source_file, text, label, prediction, probability``, and ``open_score`` with an open-set stage)."""

    model: PipelineModel | None = None
    head: ClassifierHead | None = None
    open_set: OpenSetHead | None = None
    matcher: AnswerMatcher | None = None
    predictions: DataFrame | None = None
    answers: DataFrame | None = None
    answers_quarantine: DataFrame | None = None


def classify(
    rows: DataFrame,
    section: ClassifyConfig,
    *,
    cleaner: TextCleaner,
    featurizer: Transformer,
    features_col: str,
    task: str | None = None,
    answers: tuple[DataFrame, DataFrame] | None = None,
    answers_section: AnswersConfig | None = None,
) -> ClassifyOutput:
    """Train ``section.model`` on the train split of ``rows`` and predict its eval split.

    Parameters
    ----------
    rows : DataFrame
        Clean rows (``id, split, source_file, text, label``) with ``features_col``:
        the cached embedding (``array<float>``) or the feature table's vector.
    cleaner, featurizer : Transformer
        The stages before the head in the saved model: the clean step's
        cleaner, and the :class:`Embedder` (or the fitted feature pipeline).
    answers : (DataFrame, DataFrame), optional
        The reply templates (``answer_id, text, intent, embedding``), cleaned
        and embedded, and the template rows quarantined when read; with
        ``answers_section`` they make an :class:`~dmine_spark.mine.answers.AnswerMatcher`
        stage after the head (and the open-set stage).

    Raises
    ------
    ConfigError
        A split that does not exist, or an estimator that refuses its settings.
    """
    rows = rows.persist(StorageLevel.MEMORY_AND_DISK)
    out = ClassifyOutput(_cached=[rows])
    with out.on_error():
        check_splits(rows, "classify", ("train_split", section.train_split), ("eval_split", section.eval_split))
        train = rows.where((F.col("split") == section.train_split) & F.col("label").isNotNull())
        try:
            head = fit_named_classifier(
                train,
                section.model,
                params=section.estimator_params(),
                grid=section.grid,
                folds=section.cv_folds,
                sample_max_rows=section.sample_max_rows,
                seed=section.seed,
                features_col=features_col,
                where=f"classify (task {task})" if task else "classify",
                split=section.train_split,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        open_head = fit_open_set(train, head, section, features_col=features_col, task=task)
        matcher = None
        if answers is not None and answers_section is not None:
            matcher = fit_answer_matcher(answers[0], answers_section, section, features_col=features_col)
            out.answers, out.answers_quarantine = answers[0].drop("embedding"), answers[1]
    out.head, out.open_set, out.matcher = head, open_head, matcher
    stages = [s for s in (head, open_head, matcher) if s is not None]
    out.model = text_model(cleaner, featurizer, *stages)
    scored = rows.where(F.col("split") == section.eval_split)
    for stage in stages:
        scored = stage.transform(scored)
    extra = (["open_score"] if open_head is not None else []) + (
        ["answer_id", "answer_score", "answer_by"] if matcher is not None else []
    )
    out.predictions = scored.select("id", "split", "source_file", "text", "label", "prediction", "probability", *extra)
    return out


def fit_answer_matcher(
    answers: DataFrame, a: AnswersConfig, section: ClassifyConfig, *, features_col: str
) -> AnswerMatcher:
    """The :class:`~dmine_spark.mine.answers.AnswerMatcher` of the templates in ``answers``.

    ``answers`` has ``answer_id, text, intent, embedding``; the library is
    collected to the driver (at most ``a.max_rows`` templates) and saved with
    the model version.

    Raises
    ------
    ConfigError
        No template left after reading and cleaning, more than ``max_rows``, or repeated template ids.
    """
    got = answers.select("answer_id", "intent", "embedding").limit(a.max_rows + 1).collect()
    if not got:
        raise ConfigError("answers: no reply template left after reading and cleaning; check answers.source")
    if len(got) > a.max_rows:
        raise ConfigError(f"answers: more than answers.max_rows={a.max_rows:,} templates; raise it or trim the library")
    ids = [r["answer_id"] for r in got]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ConfigError(f"answers.id_col: template id {dup!r} appears more than once; ids must be unique")
    stage = AnswerMatcher(
        featuresCol=features_col,
        minConfidence=a.min_confidence,
        minScore=a.min_score,
        unknownLabel=section.open_set.unknown_label if section.open_set.enabled else "",
    )
    return stage.set_library(
        ids, np.asarray([r["embedding"] for r in got], dtype=np.float32), [r["intent"] for r in got]
    )


def fit_open_set(
    train: DataFrame,
    head: ClassifierHead,
    section: ClassifyConfig,
    *,
    features_col: str,
    task: str | None = None,
) -> OpenSetHead | None:
    """The open-set stage of ``section.open_set`` for ``head``, its threshold fitted inside the training split.

    ``knn`` keeps up to ``memory_max_rows`` training embeddings (a seeded
    sample beyond) as the reference and fits its threshold by open-set
    validation on them (:func:`~dmine_spark.mine.openset.fit_knn_threshold`).
    ``msp`` trains a second head with the same settings on the training rows
    outside a validation part and keeps the threshold that leaves
    ``known_recall`` of the validation rows known. A configured ``threshold``
    skips the fitting. Returns None when ``open_set.method`` is ``none``.

    Raises
    ------
    ConfigError
        ``knn`` on feature-table vectors, an unknown label that is also a
        training label, or a training split too small to validate on.
    """
    o = section.open_set
    if not o.enabled:
        return None
    where = f"classify (task {task})" if task else "classify"
    labels = head.getOrDefault("labels")
    if o.unknown_label in labels:
        raise ConfigError(
            f"classify.open_set.unknown_label: {o.unknown_label!r} is a label of the training split; "
            "choose a label no training row has"
        )
    stage = OpenSetHead(
        featuresCol=features_col, method=o.method, unknownLabel=o.unknown_label, threshold=o.threshold or 0.0
    )
    info: dict[str, Any] = {"method": o.method, "fitted": o.threshold is None}
    rows = train.where(F.col("label").isNotNull())
    if o.method == "knn":
        if section.features != "embedding":
            raise ConfigError(
                "classify.open_set.method: knn compares text embeddings, and classify.features is 'table'; "
                "use method msp, or features: embedding"
            )
        n = rows.count()
        if n > o.memory_max_rows:
            rows = rows.sample(fraction=min(1.0, 1.05 * o.memory_max_rows / n), seed=section.seed).limit(
                o.memory_max_rows
            )
        got = rows.select(F.col("label").cast("string").alias("label"), F.col(features_col).alias("x")).collect()
        x = np.asarray([r["x"] for r in got], dtype=np.float32)
        stage.set_memory(x)
        info["reference_rows"] = len(got)
        if o.threshold is None:
            try:
                t, val = fit_knn_threshold(
                    x,
                    [r["label"] for r in got],
                    val_fraction=o.val_fraction,
                    holdout_classes=o.holdout_classes,
                    rounds=o.rounds,
                    seed=section.seed,
                )
            except ValueError as exc:
                raise ConfigError(f"{where}: classify.open_set: {exc}") from None
            stage._set(threshold=t)
            info.update(val)
    elif o.threshold is None:
        val_part = F.rand(section.seed) < o.val_fraction
        fit_rows, val_rows = rows.where(~val_part), rows.where(val_part)
        params = {**section.estimator_params(), **(head.info.get("params") or {})}
        try:
            probe = fit_named_classifier(
                fit_rows,
                section.model,
                params=params,
                sample_max_rows=section.sample_max_rows,
                seed=section.seed,
                features_col=features_col,
                where=where,
                split=section.train_split,
            )
        except ValueError as exc:
            raise ConfigError(f"{where}: classify.open_set: {exc}") from None
        scores = [r[0] for r in probe.transform(val_rows).select("probability").collect() if r[0] is not None]
        try:
            t = fit_quantile_threshold(np.asarray(scores), o.known_recall)
        except ValueError as exc:
            raise ConfigError(f"{where}: classify.open_set: {exc}") from None
        stage._set(threshold=t)
        info.update({"val_rows": float(len(scores)), "val_known_recall": float(np.mean(np.asarray(scores) >= t))})
    info["threshold"] = float(stage.getOrDefault("threshold"))
    stage.info = info
    return stage


@dataclass
class RegressOutput(_Persisted):
    """The model version and the eval split's predictions (``id, split, target, prediction``)."""

    model: PipelineModel | None = None
    predictions: DataFrame | None = None


def regress(
    clean: DataFrame,
    raw: DataFrame,
    section: RegressConfig,
    *,
    cleaner: TextCleaner,
    embedder: Embedder | None,
) -> RegressOutput:
    """Fit ``section.model`` for ``section.target`` and predict the eval split.

    ``clean`` has ``id``, ``split`` and, when ``section.embedding``, the
    cached ``embedding``; the target and tabular columns come from ``raw``.

    Raises
    ------
    ConfigError
        A missing or non-numeric target, a feature column that no source declares, a missing split.
    """
    if not section.target:
        raise ConfigError("regress.target: not set, so there is nothing to predict")
    cols = [section.target, *section.categorical, *section.numeric]
    missing = [c for c in cols if c not in raw.columns]
    if missing:
        raise ConfigError(f"regress: column {missing[0]!r} is not declared in any source schema")
    if section.target in section.categorical + section.numeric:
        raise ConfigError(f"regress: the target {section.target!r} is also listed as a feature")
    kind = raw.schema[section.target].dataType.typeName()
    if kind not in NUMERIC_TYPES:
        raise ConfigError(f"regress.target: column {section.target!r} is {kind}, not numeric")
    rows = clean.select("id", "split", *(["embedding"] if section.embedding else []))
    if section.embedding:
        rows = as_vector(rows)
    rows = rows.join(raw.select("id", F.col(section.target).cast("double").alias("target"), *cols[1:]), "id").persist(
        StorageLevel.MEMORY_AND_DISK
    )
    out = RegressOutput(_cached=[rows])
    with out.on_error():
        check_splits(rows, "regress", ("train_split", section.train_split), ("eval_split", section.eval_split))
        train = rows.where((F.col("split") == section.train_split) & F.col("target").isNotNull())
        try:
            reg = fit_regressor(
                train,
                section.model,
                target="target",
                embedding_col="features" if section.embedding else None,
                categorical=section.categorical,
                numeric=section.numeric,
                params=section.params,
                seed=section.seed,
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    if section.embedding and embedder is not None:
        out.model = text_model(cleaner, embedder, ArrayToVector(inputCol="embedding", outputCol="features"), reg)
    else:
        out.model = text_model(cleaner, reg)
    out.predictions = reg.transform(rows.where(F.col("split") == section.eval_split)).select(
        "id", "split", "target", F.col("prediction").cast("double").alias("prediction")
    )
    return out


@dataclass
class FinetuneOutput(_Persisted):
    """The fine-tuned model version, its training summary and the eval split's predictions."""

    model: PipelineModel | None = None
    labels: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    predictions: DataFrame | None = None


def finetune(
    clean: DataFrame,
    section: FinetuneConfig,
    *,
    cleaner: TextCleaner,
    scratch: Path,
    batch_size: int = 64,
    max_tokens: int = 2048,
    parallelism: int = 2,
    task: str | None = None,
) -> FinetuneOutput:
    """Fine-tune ``section.base_model`` through TorchDistributor and predict the eval split.

    A seeded ``val_fraction`` of the train split is held out for early
    stopping; the best checkpoint (safetensors) is written under ``scratch``
    and becomes the :class:`FineTunedClassifier` of the model version.

    Raises
    ------
    ConfigError
        A missing split, or a train split with fewer than two labels.
    """
    from dmine_spark.mine.finetune import finetune as run_finetune

    rows = clean.select("id", "split", "source_file", "text", "label")
    check_splits(rows, "finetune", ("train_split", section.train_split), ("eval_split", section.eval_split))
    train_all = rows.where((F.col("split") == section.train_split) & F.col("label").isNotNull())
    if section.train_sample_rows:
        n = train_all.count()
        if n > section.train_sample_rows:
            keep = int(1_000_000 * section.train_sample_rows / n)
            train_all = train_all.where((F.abs(F.xxhash64("id", F.lit(section.seed))) % 1_000_000) < keep)
    held = (F.abs(F.xxhash64("id", F.lit(section.seed + 1))) % 1000) < int(1000 * section.val_fraction)
    counts = {str(r["label"]): int(r["count"]) for r in train_all.groupBy("label").count().collect()}
    error = training_classes_error(f"finetune (task {task})" if task else "finetune", section.train_split, counts)
    if error:
        raise ConfigError(error)
    labels = sorted(counts)
    use_gpu = section.device == "cuda" or (section.device == "auto" and _cuda_available())
    best = scratch / "best"
    summary = run_finetune(
        clean.sparkSession,
        train_all.where(~held),
        train_all.where(held),
        labels,
        best,
        base_model=section.base_model,
        head=section.head,
        probe_init=section.probe_init,
        head_refit=section.head_refit,
        head_refit_l2=section.head_refit_l2,
        precision=section.precision,
        max_length=section.max_length,
        epochs=section.epochs,
        batch_size=section.batch_size,
        lr=section.lr,
        head_lr_scale=section.head_lr_scale,
        layer_lr_decay=section.layer_lr_decay,
        weight_decay=section.weight_decay,
        warmup_ratio=section.warmup_ratio,
        label_smoothing=section.label_smoothing,
        eval_every=section.eval_every,
        patience=section.patience,
        max_minutes=section.max_minutes,
        num_processes=section.num_processes,
        use_gpu=use_gpu,
        seed=section.seed,
    )
    head = FineTunedClassifier(
        labels=labels,
        maxLength=section.max_length,
        batchSize=batch_size,
        maxTokens=max_tokens,
        device="cuda" if use_gpu else "cpu",
    )
    head.model_dir = best
    predictions = head.transform(
        rows.where(F.col("split") == section.eval_split).repartition(max(2, parallelism))
    ).select("id", "split", "source_file", "text", "label", "prediction", "probability")
    return FinetuneOutput(model=text_model(cleaner, head), labels=labels, summary=summary, predictions=predictions)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass
class ClusterOutput(_Persisted):
    """The model version, each row's cluster, the named summary of each cluster, and the clustering's figures."""

    model: PipelineModel | None = None
    clusterer: ClusterModel | None = None
    assignments: DataFrame | None = None
    terms: DataFrame | None = None
    values: dict[str, float] = field(default_factory=dict)


def cluster(
    rows: DataFrame,
    section: ClusterConfig,
    *,
    cleaner: TextCleaner,
    embedder: Embedder,
    labelled: bool,
) -> ClusterOutput:
    """Cluster ``rows`` (clean rows with the cached ``embedding``), name each cluster, and measure the clustering.

    The summary has, per cluster, its size, a name (its first three terms,
    :func:`~dmine_spark.mine.cluster.cluster_terms`), the top terms and the
    texts closest to its centroid. ``values`` holds the cosine silhouette,
    ``k`` (and the silhouette of each swept ``k``) and, where rows carry
    labels, NMI, ARI, Hungarian-matched accuracy and ``name_label_overlap``
    (:func:`~dmine_spark.mine.naming.name_label_overlap`).

    Raises
    ------
    ConfigError
        When the algorithm cannot cluster these rows (hdbscan on too few, say).
    """
    feats = as_vector(rows).persist(StorageLevel.MEMORY_AND_DISK)
    out = ClusterOutput(_cached=[feats])
    with out.on_error():
        try:
            fitted = fit_clusters(feats, section, features_col="embedding")
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
    assigned = fitted.transform(feats).persist(StorageLevel.MEMORY_AND_DISK)
    out._cached.append(assigned)
    real = assigned.where(F.col("cluster") >= 0)
    sil = silhouette(real)
    stops = section.stop_words if section.stop_words is not None else english_stop_words()
    term_vectors = centroid_vectors = None
    if section.name_rerank == "embedding":
        spec = resolve_spec(real.sparkSession, embedder.spec())
        term_vectors = lambda texts: encode_on_driver(spec, texts)  # noqa: E731
        centroid_vectors = {
            int(r["cluster"]): np.asarray(r["centroid"]) for r in centroids(real, features_col="features").collect()
        }
    named = cluster_terms(
        real,
        top_n=section.top_terms,
        min_chars=section.min_term_chars,
        stop_words=stops,
        ngram_max=section.ngram_max,
        min_term_share=section.min_term_share,
        min_term_lift=section.min_term_lift,
        candidates=section.name_candidates,
        diversity=section.name_diversity,
        term_vectors=term_vectors,
        centroid_vectors=centroid_vectors,
    ).persist(StorageLevel.MEMORY_AND_DISK)
    out._cached.append(named)
    if section.exemplars:
        terms = named.join(cluster_exemplars(real, n=section.exemplars), "cluster", "left")
    else:
        terms = named.withColumn("exemplars", F.array().cast("array<string>"))
    values = {"silhouette_cosine": sil, "k": float(fitted.n_clusters)}
    values.update({f"silhouette_at_k[{k}]": v for k, v in fitted.sweep.items()})
    if fitted.k_requested is not None:
        values["k_requested"] = float(fitted.k_requested)
    if labelled:
        counts = label_cluster_counts(real)
        values.update(cluster_label_agreement(real, counts=counts))
        if counts:
            # from the names alone: the exemplars' join is computed once, when the summary is written
            names = {
                int(r["cluster"]): list(r["top_terms"][:3]) for r in named.select("cluster", "top_terms").collect()
            }
            values["name_label_overlap"] = name_label_overlap(names, cluster_majority_labels(counts), stops)
    noise = assigned.where(F.col("cluster") < 0).count()
    if noise:
        values["noise_rows"] = float(noise)
    out.clusterer = fitted
    out.model = text_model(cleaner, embedder, fitted)
    out.assignments = assigned.select("id", "split", "cluster")
    out.terms = terms
    out.values = values
    return out


def selection_metrics(head: ClassifierHead) -> dict[str, float]:
    """The mean CV score of each grid point, as ``cv_f1[<params as JSON>]``."""
    return {
        f"cv_f1[{json.dumps(sel['params'], sort_keys=True)}]": sel["cv_f1"] for sel in head.info.get("selection", [])
    }


@dataclass
class RecommendOutput(_Persisted):
    """The evaluation's figures, the four recommenders fitted on every interaction, each user's top k from the
    served one (``user_id, rank, item_id, score``) and each item's most similar items."""

    evaluation: Any = None
    models: dict[str, Any] = field(default_factory=dict)
    recs: DataFrame | None = None
    similar: DataFrame | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def pipeline(self, kind: str) -> PipelineModel:
        """The ``kind`` recommender as a one-stage ``PipelineModel`` (what the model store saves)."""
        return PipelineModel(stages=[self.models[kind]])

    popularity_model = property(lambda self: self.pipeline("popularity"))
    als_model = property(lambda self: self.pipeline("als"))
    content_model = property(lambda self: self.pipeline("content"))
    hybrid_model = property(lambda self: self.pipeline("hybrid"))


def recommend(
    interactions: DataFrame,
    items: DataFrame,
    categories: DataFrame | None,
    section: RecommendConfig,
    *,
    progress: Any = None,
    echo: Any = None,
) -> RecommendOutput:
    """Evaluate the recommenders, fit them on every interaction and score every user with the served one.

    Parameters
    ----------
    interactions : DataFrame
        The interactions table's rows (``user_id, item_id, value, ts``).
    items : DataFrame
        ``item_id, vector``: each item's cached text embedding.
    categories : DataFrame or None
        ``item_id, genre``: each item's categories (the hybrid's affinities).
    section : RecommendConfig
    progress : callable, optional
        ``progress(n)`` gives a context showing the scoring of ``n`` users.
    echo : callable, optional
        Told the evaluation's steps (log lines).

    Returns
    -------
    RecommendOutput

    Raises
    ------
    ConfigError
        When there are no interactions, or no item has both text and a positive interaction.
    """
    from dmine_spark.mine.recommender import evaluate_recommenders, fit_recommenders, interactions_frame, similar_items

    out = RecommendOutput()
    with out.on_error():
        inter = interactions_frame(interactions, section.positive_min).persist()
        vectors = items.persist()
        out._cached.extend([inter, vectors])
        n_inter, n_items = inter.count(), vectors.count()
        if n_inter == 0:
            raise ConfigError(f"recommend: sources.{section.interactions} has no interactions left after ingest")
        liked_with_text = inter.where("positive").join(vectors, "item_id", "left_semi").limit(1).count()
        if not liked_with_text:
            raise ConfigError(
                f"recommend: no liked item (value >= positive_min {section.positive_min}) has a text in "
                f"sources.{section.items}; do recommend.item_col values match that source's id_col?"
            )
        users = inter.select("user_id").distinct().count()
        out.counts = {"interactions": n_inter, "users": users, "items_with_text": n_items}
        say = echo or (lambda s: None)
        out.evaluation = evaluate_recommenders(inter, vectors, categories, section, echo=say, cached=out._cached)
        out.models = fit_recommenders(inter, vectors, categories, section, out.evaluation, cached=out._cached)
        recs = out.models[section.serve].recommend(None, section.k).persist()
        out._cached.append(recs)
        with progress(users) if progress else _nothing():
            out.counts["recommended_users"] = recs.select("user_id").distinct().count()
        out.recs = recs
        if section.similar_items:
            out.similar = similar_items(vectors, section.similar_items)
    return out


@contextmanager
def _nothing() -> Iterator[None]:
    yield
