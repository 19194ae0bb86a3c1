"""Classifier, cluster and regression stages on real BANKING77 and clothing-review embeddings, in local Spark."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.functions import array_to_vector
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from dmine_spark.config import ClusterConfig
from dmine_spark.mine.classify import Classifier, ClassifierHead, fit_named_classifier
from dmine_spark.mine.cluster import ClusterModel, cluster_exemplars, cluster_terms, fit_clusters
from dmine_spark.mine.evaluate import classification_metrics
from dmine_spark.mine.metrics import cluster_agreement
from dmine_spark.mine.regress import fit_regressor, regression_scores
from dmine_spark.mine.store import ModelStore

INTENTS = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed", "pin_blocked"]
CLASSIFIERS = {
    "logreg": {},
    "mlp": {"hidden": [32], "maxIter": 100},
    "gbt_ovr": {"maxIter": 5, "maxDepth": 3},
    "sk_linear_svc": {},
    "sk_logreg": {},
    "sk_hgb": {"max_iter": 30},
}


@pytest.fixture(scope="module")
def intents(spark, banking77: Path, encoder):
    """Five BANKING77 intents: 50 train and 20 test rows each, with real default-model embeddings."""
    rows = []
    for split in ("train", "test"):
        with open(banking77 / f"{split}.csv", newline="", encoding="utf-8") as fh:
            got = [r for r in csv.DictReader(fh) if r["category"] in INTENTS]
        keep = Counter()
        for r in got:
            if keep[r["category"]] < (50 if split == "train" else 20):
                keep[r["category"]] += 1
                rows.append((split, r["text"], r["category"]))
    vecs = encoder.encode([t for _, t, _ in rows])
    data = [(i, s, t, lab, v.tolist()) for i, ((s, t, lab), v) in enumerate(zip(rows, vecs, strict=True))]
    df = spark.createDataFrame(data, "id LONG, split STRING, text STRING, label STRING, embedding ARRAY<FLOAT>")
    return df.withColumn("features", array_to_vector("embedding")).cache()


@pytest.fixture(scope="module")
def heads(intents) -> dict[str, ClassifierHead]:
    """Each classifier, fitted once on the train split's embedding arrays."""
    train = intents.where("split = 'train'")
    return {
        name: fit_named_classifier(train, name, params=p, features_col="embedding") for name, p in CLASSIFIERS.items()
    }


def _accuracy(pred) -> float:
    rows = pred.select((F.col("label") == F.col("prediction")).cast("int").alias("ok")).collect()
    return sum(r.ok for r in rows) / len(rows)


@pytest.mark.parametrize("name", list(CLASSIFIERS))
def test_each_classifier_learns_the_intents(heads, intents, name: str) -> None:
    head = heads[name]
    assert sorted(head.getOrDefault("labels")) == sorted(INTENTS)
    assert head.info["train_rows"] == 250
    pred = head.transform(intents.where("split = 'test'")).cache()
    # five well-separated intents: every head should do far better than chance (0.2)
    assert _accuracy(pred) >= (0.7 if name == "gbt_ovr" else 0.85)
    assert pred.where("probability <= 0 OR probability > 1 OR prediction IS NULL").isEmpty()


@pytest.mark.parametrize("name", ["logreg", "gbt_ovr", "sk_hgb"])
def test_a_saved_head_scores_the_same_after_loading(heads, intents, tmp_path: Path, name: str) -> None:
    test = intents.where("split = 'test'")
    heads[name].write().overwrite().save(str(tmp_path / "head"))
    loaded = ClassifierHead.load(str(tmp_path / "head"))
    assert loaded.getOrDefault("labels") == heads[name].getOrDefault("labels")
    assertDataFrameEqual(
        loaded.transform(test).select("id", "prediction", "probability"),
        heads[name].transform(test).select("id", "prediction", "probability"),
    )


def test_a_scikit_learn_head_is_kept_in_skops_format_not_as_a_pickle(heads, tmp_path: Path) -> None:
    import skops.io as sio

    heads["sk_logreg"].write().save(str(tmp_path / "head"))
    files = {p.name for p in (tmp_path / "head").iterdir()}
    assert "model.skops" in files and not [f for f in files if f.endswith((".pkl", ".joblib", ".pickle"))]
    est = sio.load(
        tmp_path / "head" / "model.skops", trusted=sio.get_untrusted_types(file=tmp_path / "head" / "model.skops")
    )
    assert type(est).__name__ == "LogisticRegression"


class _Foreign:
    """A type that is not scikit-learn's."""


def test_an_artefact_holding_foreign_types_is_refused() -> None:
    import skops.io as sio

    from dmine_spark.mine.classify import _sk_loads

    with pytest.raises(ValueError, match="types outside scikit-learn: .*_Foreign"):
        _sk_loads(sio.dumps({"estimator": _Foreign()}))


def test_a_worker_loads_a_scikit_learn_artefact_once(heads) -> None:
    import hashlib

    from dmine_spark.mine.classify import _sk_estimator

    data = heads["sk_logreg"]._artifact
    digest = hashlib.sha256(data).hexdigest()
    assert _sk_estimator(digest, data) is _sk_estimator(digest, data)


@pytest.mark.parametrize("name", ["logreg", "sk_logreg"])
def test_a_null_embedding_gets_a_null_prediction(heads, spark, name: str) -> None:
    df = spark.createDataFrame([(1, None), (2, [0.0] * 384)], "id INT, embedding ARRAY<FLOAT>")
    got = {r.id: (r.prediction, r.probability) for r in heads[name].transform(df).collect()}
    assert got[1] == (None, None) and got[2][0] in INTENTS


def test_the_head_reads_a_vector_column_as_well_as_an_array(heads, intents) -> None:
    head = heads["sk_logreg"]
    test = intents.where("split = 'test'")
    by_array = head.transform(test).select("id", "prediction")
    by_vector = head.copy({head.featuresCol: "features"}).transform(test).select("id", "prediction")
    assertDataFrameEqual(by_vector, by_array)


def test_the_classifier_estimator_trains_inside_a_pipeline_that_saves_and_loads(intents, tmp_path: Path) -> None:
    train, test = intents.where("split = 'train'"), intents.where("split = 'test'")
    fitted = Pipeline(stages=[Classifier(model="sk_linear_svc", params={"C": 1.0})]).fit(train)
    fitted.write().save(str(tmp_path / "pipe"))
    loaded = PipelineModel.load(str(tmp_path / "pipe"))
    assert isinstance(loaded.stages[0], ClassifierHead)
    assertDataFrameEqual(
        loaded.transform(test).select("id", "prediction"), fitted.transform(test).select("id", "prediction")
    )


def test_a_grid_keeps_each_settings_cv_score_and_refits_the_best(intents) -> None:
    train = intents.where("split = 'train'")
    sk = fit_named_classifier(train, "sk_linear_svc", grid={"C": [0.0001, 1.0]}, folds=3, features_col="embedding")
    assert [s["params"] for s in sk.info["selection"]] == [{"C": 0.0001}, {"C": 1.0}]
    best = max(sk.info["selection"], key=lambda s: s["cv_f1"])
    assert sk.info["params"]["C"] == best["params"]["C"]


def test_an_mllib_grid_picks_the_penalty_that_does_not_flatten_the_model(intents) -> None:
    train = intents.where("split = 'train'")
    ml = fit_named_classifier(train, "logreg", params={"maxIter": 50}, grid={"regParam": [10.0, 0.001]}, folds=2)
    assert len(ml.info["selection"]) == 2
    assert ml.info["params"]["regParam"] == 0.001  # a huge penalty flattens 5-way LR to chance


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"grid": {"nope": [1]}}, "'nope' is not a parameter of LogisticRegression"),
        ({"params": {"Cc": 1.0}}, "did you mean C"),
    ],
)
def test_an_unknown_estimator_parameter_is_named(intents, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_named_classifier(intents.where("split = 'train'"), "sk_logreg", **kwargs)


def test_an_unknown_classifier_is_named(intents) -> None:
    with pytest.raises(ValueError, match="unknown classifier 'svm_rbf'"):
        fit_named_classifier(intents.where("split = 'train'"), "svm_rbf")


def test_the_model_store_numbers_versions_and_keeps_each_one(heads, tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    model = PipelineModel(stages=[heads["sk_logreg"]])
    assert store.save("intents", model, run_id="r1") == "intents@v1"
    assert store.save("intents", model, run_id="r2") == "intents@v2"
    loaded, version = store.load("intents")
    assert version == "intents@v2" and isinstance(loaded.stages[0], ClassifierHead)
    store.update_meta("intents@v1", metrics={"accuracy": 0.9})
    assert store.meta("intents@v1")["metrics"] == {"accuracy": 0.9} and store.meta("intents@v1")["run_id"] == "r1"
    with pytest.raises(FileNotFoundError, match="has no version 7"):
        store.load("intents@v7")


ALGORITHMS = ["kmeans", "bisecting_kmeans", "gmm", "hdbscan"]


@pytest.fixture(scope="module")
def clusterings(intents) -> dict[str, ClusterModel]:
    """Each clustering algorithm, fitted once with k=5 on the intents' embeddings."""
    return {a: fit_clusters(intents, ClusterConfig(algorithm=a, k=5, min_cluster_size=10, seed=3)) for a in ALGORITHMS}


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_clusterings_recover_the_intents(intents, clusterings, algorithm: str) -> None:
    assigned = clusterings[algorithm].transform(intents)
    rows = assigned.groupBy("label", "cluster").count().collect()
    agree = cluster_agreement((r[0], r[1], int(r[2])) for r in rows)
    # well above chance (0.2); the hierarchical, mixture and density methods split less cleanly than k-means
    assert agree["hungarian_accuracy"] >= (0.75 if algorithm == "kmeans" else 0.6)
    assert assigned.count() == intents.count()


@pytest.mark.parametrize("algorithm", ["kmeans", "gmm", "hdbscan"])
def test_a_saved_clustering_assigns_the_same_clusters_after_loading(
    intents, clusterings, tmp_path: Path, algorithm: str
) -> None:
    fitted = clusterings[algorithm]
    fitted.write().save(str(tmp_path / "clusters"))
    loaded = ClusterModel.load(str(tmp_path / "clusters"))
    assertDataFrameEqual(
        loaded.transform(intents).select("id", "cluster"), fitted.transform(intents).select("id", "cluster")
    )


def test_clusters_get_names_and_exemplars_from_their_own_texts(intents, clusterings) -> None:
    assigned = clusterings["kmeans"].transform(intents).cache()
    ex = {r.cluster: r.exemplars for r in cluster_exemplars(assigned, n=3).collect()}
    texts = {(r.cluster, r.text) for r in assigned.select("cluster", "text").collect()}
    assert len(ex) == 5
    for cl, items in ex.items():
        assert 1 <= len(items) <= 3 and all((cl, t) in texts for t in items)
    assert all(r.name for r in cluster_terms(assigned).collect())


@pytest.mark.parametrize("rerank", ["none", "embedding"])
def test_the_cluster_stage_scores_its_names_against_the_labels(intents, rerank: str) -> None:
    """Five intents in five clusters: each name shares a word with its intent (``card_arrival``: "card")."""
    from dmine_spark.features.embed import Embedder
    from dmine_spark.mine.nodes import cluster
    from dmine_spark.prepare.clean import TextCleaner

    rows = intents.select("id", "split", "text", "label", "embedding")
    out = cluster(
        rows,
        ClusterConfig(k=5, seed=3, name_rerank=rerank),
        cleaner=TextCleaner(),
        embedder=Embedder(),
        labelled=True,
    )
    try:
        assert out.values["name_label_overlap"] >= 0.8, out.terms.select("name").collect()
        names = [r["name"].split(" / ") for r in out.terms.collect()]
        assert len(names) == 5 and all(len(n) == 3 and len(set(n)) == 3 for n in names)
    finally:
        out.release()


def test_the_k_sweep_keeps_the_best_silhouette(intents) -> None:
    fitted = fit_clusters(intents, ClusterConfig(k=None, k_range=(2, 12, 3), seed=1))
    assert set(fitted.sweep) == {2, 5, 8, 11}
    assert fitted.n_clusters == max(fitted.sweep, key=fitted.sweep.get)
    assert all(-1.0 <= v <= 1.0 for v in fitted.sweep.values())
    assert np.isfinite(list(fitted.sweep.values())).all()


@pytest.fixture(scope="module")
def reviews(spark, encoder):
    """600 real clothing reviews (rating, recommended, department, age) with default-model embeddings."""
    import pandas as pd

    from tests.conftest import DATASETS

    df = pd.read_csv(DATASETS / "womens_clothing_reviews" / "womens_clothing_reviews.csv")
    df = df.dropna(subset=["Review Text", "Department Name"]).head(600)
    vecs = encoder.encode(df["Review Text"].tolist())
    rows = [
        (
            i,
            "train" if i % 4 else "test",
            int(r["Rating"]),
            str(r["Recommended IND"]),
            r["Department Name"],
            float(r["Age"]),
            v.tolist(),
        )  # fmt: skip
        for i, ((_, r), v) in enumerate(zip(df.iterrows(), vecs, strict=True))
    ]
    out = spark.createDataFrame(
        rows, "id LONG, split STRING, rating INT, label STRING, department STRING, age DOUBLE, embedding ARRAY<FLOAT>"
    )
    return out.withColumn("features", array_to_vector("embedding")).cache()


@pytest.mark.parametrize("model", ["linear", "gbt"])
def test_rating_regression_beats_the_mean(reviews, model: str) -> None:
    train = reviews.where("split = 'train'").withColumn("target", F.col("rating").cast("double"))
    test = reviews.where("split = 'test'").withColumn("target", F.col("rating").cast("double"))
    # shallow, shrunk trees on 450 rows; deeper ones fit the noise of 384 embedding dimensions
    params = {"maxIter": 40, "maxDepth": 2, "stepSize": 0.1, "minInstancesPerNode": 10} if model == "gbt" else {}
    fitted = fit_regressor(train, model, categorical=["department"], numeric=["age"], params=params)
    s = regression_scores(fitted.transform(test))
    assert s["rows"] == test.count()
    # review text says a lot about the stars: both models explain part of the variance
    assert s["r2"] > (0.1 if model == "linear" else 0.05)
    pdf = test.select("target").toPandas()
    assert s["rmse"] < float(pdf["target"].std(ddof=0)) and 0 < s["mae"] < s["rmse"]


def test_a_regression_target_listed_as_a_feature_is_refused(reviews) -> None:
    train = reviews.where("split = 'train'").withColumn("target", F.col("rating").cast("double"))
    with pytest.raises(ValueError, match="also listed as a feature"):
        fit_regressor(train, "linear", numeric=["target"])


def test_binary_auc_agrees_with_scikit_learn(reviews) -> None:
    from sklearn.metrics import roc_auc_score

    head = fit_named_classifier(reviews.where("split = 'train'"), "logreg", params={"regParam": 0.01})
    pred = head.transform(reviews.where("split = 'test'")).cache()
    labels = head.getOrDefault("labels")
    values, cells = classification_metrics(pred, labels)
    rows = pred.select("label", "prediction", "probability").collect()
    y = [int(r.label == labels[1]) for r in rows]
    score = [r.probability if r.prediction == labels[1] else 1 - r.probability for r in rows]
    assert values["auc"] == pytest.approx(roc_auc_score(y, score), abs=1e-9)
    assert values["auc"] > 0.65  # 450 training reviews: far from perfect, far above chance (0.5)
    assert sum(n for _, _, n in cells) == len(rows)


def test_tracking_logs_to_a_configured_uri_and_the_heads_load_back(reviews, tmp_path: Path) -> None:
    import mlflow
    import mlflow.sklearn
    import mlflow.spark
    import pyspark
    import sklearn

    from dmine_spark.analyze import tracking
    from dmine_spark.analyze.tracking import Tracker, tracking_uri, warm_up
    from dmine_spark.config import load_config
    from tests.conftest import PIPELINE_CONF

    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    cfg = load_config(PIPELINE_CONF, [f"tracking.uri={uri}", "tracking.experiment=dmine-tests", f"work_dir={tmp_path}"])
    assert tracking_uri(cfg) == uri
    warm_up(cfg)  # the store opens in a thread; the Tracker waits for it
    t = Tracker(cfg, "run-1")
    assert not tracking._warming
    t.log_config(["classify"])
    t.log_metrics({"classify.accuracy": 0.9, 'cv_f1[{"C": 1}]': 0.8, "nan": float("nan")})
    train = reviews.where("split = 'train'")
    uri_ml = t.log_model(fit_named_classifier(train, "logreg", params={"maxIter": 20}), "classifier")
    uri_sk = t.log_model(fit_named_classifier(train, "sk_logreg", params={"max_iter": 200}), "sk_classifier")
    t.end()
    test = reviews.where("split = 'test'")
    assert mlflow.spark.load_model(uri_ml).transform(test).count() == test.count()
    assert list(mlflow.sklearn.load_model(uri_sk).classes_) == [0, 1]
    # the requirements are the installed versions, given (MLflow does not load the models again to infer them)
    assert f"scikit-learn=={sklearn.__version__}" in Path(mlflow.pyfunc.get_model_dependencies(uri_sk)).read_text()
    assert f"pyspark=={pyspark.__version__}" in Path(mlflow.pyfunc.get_model_dependencies(uri_ml)).read_text()
    client = mlflow.tracking.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("dmine-tests").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.metrics["classify.accuracy"] == 0.9 and "nan" not in runs[0].data.metrics
    assert runs[0].data.params["classify.model"] == "sk_logreg" and runs[0].data.tags["dmine.run_id"] == "run-1"
    assert not (tmp_path / "mlflow.db").exists()  # the default store was not used


@pytest.fixture(scope="module")
def two_texts(spark, encoder):
    """Six rows holding only two distinct texts, embedded."""
    texts = ["my card was lost", "how do I top up"] * 3
    vecs = encoder.encode(texts)
    return spark.createDataFrame(
        [(i, t, [float(x) for x in v]) for i, (t, v) in enumerate(zip(texts, vecs, strict=True))],
        "id LONG, text STRING, embedding ARRAY<FLOAT>",
    )


@pytest.mark.parametrize("algorithm", ["kmeans", "bisecting_kmeans", "gmm"])
@pytest.mark.parametrize("k", [4, 12])
def test_k_above_the_distinct_vectors_is_capped_and_noted(two_texts, algorithm: str, k: int) -> None:
    cfg = ClusterConfig(algorithm=algorithm, k=k, gmm_dims=2)
    model = fit_clusters(two_texts, cfg, features_col="embedding")
    assert (model.getOrDefault("k"), model.k_requested) == (2, k)
    clusters = {r["text"]: r["cluster"] for r in model.transform(two_texts).collect()}
    assert len(set(clusters.values())) == 2  # each distinct text its own cluster


def test_k_above_the_distinct_vectors_can_be_an_error(two_texts) -> None:
    cfg = ClusterConfig(k=4, too_few_points="error")
    with pytest.raises(ValueError, match=r"^cluster.k: 4 clusters asked of 2 distinct vectors; lower cluster.k"):
        fit_clusters(two_texts, cfg, features_col="embedding")


def test_the_sweep_skips_impossible_k(two_texts) -> None:
    model = fit_clusters(two_texts, ClusterConfig(k=None, k_range=(2, 30, 4)), features_col="embedding")
    assert set(model.sweep) == {2} and model.getOrDefault("k") == 2 and model.k_requested is None


def test_one_distinct_text_cannot_be_clustered(spark, encoder) -> None:
    v = [float(x) for x in encoder.encode(["same"])[0]]
    df = spark.createDataFrame([(i, "same", v) for i in range(3)], "id LONG, text STRING, embedding ARRAY<FLOAT>")
    with pytest.raises(ValueError, match=r"1 distinct vector\(s\); clustering needs at least 2 distinct texts"):
        fit_clusters(df, ClusterConfig(k=2), features_col="embedding")


# ---- labels the training split lacks, and training splits a classifier cannot learn from (issue 16, items 3-4)


@pytest.mark.parametrize("name", ["logreg", "sk_logreg"])
def test_labels_only_in_the_test_split_are_errors_reported_apart_and_no_auc(intents, name: str) -> None:
    two = ["card_arrival", "pin_blocked"]
    train = intents.where(F.col("split") == "train").where(F.col("label").isin(two))
    test = intents.where(F.col("split") == "test").where(F.col("label").isin([*two, "exchange_rate"]))
    head = fit_named_classifier(train, name, features_col="embedding")
    values, cells = classification_metrics(head.transform(test), head.getOrDefault("labels"))
    assert "auc" not in values  # two known classes, but three true labels: not a binary task
    assert values["unseen_labels"] == 1 and values["unseen_label_rows"] == 20
    assert values["rows"] == 60
    # the unseen rows are errors in the accuracy over all rows; accuracy_known leaves them out
    assert values["accuracy"] == pytest.approx(values["accuracy_known"] * 40 / 60)
    assert values["accuracy_known"] > 0.9
    assert values["recall.exchange_rate"] == 0.0
    assert sum(n for t, _, n in cells if t == "exchange_rate") == 20


def test_auc_is_reported_for_a_genuinely_binary_task(intents) -> None:
    two = ["card_arrival", "pin_blocked"]
    rows = intents.where(F.col("label").isin(two))
    head = fit_named_classifier(rows.where("split = 'train'"), "logreg", features_col="embedding")
    values, _ = classification_metrics(head.transform(rows.where("split = 'test'")), head.getOrDefault("labels"))
    assert values["auc"] > 0.9 and values["unseen_label_rows"] == 0


@pytest.mark.parametrize("name", ["logreg", "mlp", "sk_logreg", "sk_linear_svc"])
def test_a_single_class_training_split_is_the_same_one_line_error_for_every_backend(intents, name: str) -> None:
    train = intents.where("split = 'train' AND label = 'pin_blocked'")
    with pytest.raises(ValueError) as err:
        fit_named_classifier(train, name, features_col="embedding", where="classify (task t)", split="train")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("classify (task t): training split 'train' has 1 class(es) (pin_blocked: 50 rows)")


@pytest.mark.parametrize("name", ["logreg", "sk_logreg"])
def test_a_class_smaller_than_the_folds_reduces_them_with_a_note(intents, name: str) -> None:
    import warnings

    small = intents.where("split = 'train'").where(
        (F.col("label") != "pin_blocked") | (F.col("id").isin([r.id for r in _two_pin_blocked(intents)]))
    )
    grid = {"C": [1.0, 10.0]} if name.startswith("sk_") else {"regParam": [0.001, 0.01]}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        head = fit_named_classifier(small, name, grid=grid, folds=5, features_col="embedding")
    assert head.info["class_rows"]["pin_blocked"] == 2
    assert head.info["notes"] == ["cross-validation folds reduced from 5 to 2: class 'pin_blocked' has 2 training rows"]
    assert len(head.info["selection"]) == 2
    assert not [w for w in caught if "least populated class" in str(w.message)]


def _two_pin_blocked(intents):
    return intents.where("split = 'train' AND label = 'pin_blocked'").orderBy("id").limit(2).collect()
