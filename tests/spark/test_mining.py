"""Classifiers and clusterings by name on real BANKING77 embeddings, in local Spark."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pyspark.ml.functions import array_to_vector
from pyspark.sql import functions as F

INTENTS = ["card_arrival", "exchange_rate", "lost_or_stolen_card", "top_up_failed", "pin_blocked"]


@pytest.fixture(scope="module")
def intents(spark, banking77: Path, encoder):  # noqa: ANN001, ANN201
    """Five BANKING77 intents: their train and test rows with real default-model embeddings."""
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


def _accuracy(pred) -> float:  # noqa: ANN001
    rows = pred.select((F.col("label") == F.col("prediction")).cast("int").alias("ok")).collect()
    return sum(r.ok for r in rows) / len(rows)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("logreg", {}),
        ("mlp", {"hidden": [32], "maxIter": 100}),
        ("gbt_ovr", {"maxIter": 5, "maxDepth": 3}),
        ("sk_linear_svc", {}),
        ("sk_logreg", {}),
        ("sk_hgb", {"max_iter": 30}),
    ],
)
def test_each_classifier_learns_and_round_trips(intents, tmp_path: Path, name: str, params: dict) -> None:  # noqa: ANN001
    from dmine_spark.mine.models import ModelStore, fit_named_classifier

    train = intents.where("split = 'train'")
    test = intents.where("split = 'test'")
    model = fit_named_classifier(train, name, params=params)
    assert sorted(model.labels) == sorted(INTENTS)
    assert model.train_rows == 250
    store = ModelStore(tmp_path)
    ref = store.save("intents", model, run_id="r1")
    assert ref == "intents@v1"
    loaded, ref2 = store.load("intents")
    assert ref2 == ref
    pred = loaded.transform(test).cache()
    acc = _accuracy(pred)
    # five well-separated intents: every head should do far better than chance (0.2)
    assert acc >= (0.7 if name == "gbt_ovr" else 0.85), acc
    probs = [r.probability for r in pred.select("probability").collect()]
    assert all(0.0 < p <= 1.0 for p in probs)
    assert set(r.prediction for r in pred.select("prediction").distinct().collect()) <= set(INTENTS)
    store.update_meta(ref, metrics={"accuracy": acc})
    meta = store.meta(ref)
    assert meta["metrics"] == {"accuracy": acc} and meta["run_id"] == "r1" and meta["version"] == 1
    # a second save is a new version; the first stays loadable and scores the same
    assert store.save("intents", model) == "intents@v2"
    again, _ = store.load("intents@v1")
    same = again.transform(test).select("id", "prediction").orderBy("id").collect()
    assert same == pred.select("id", "prediction").orderBy("id").collect()


def test_grid_search_records_folds_and_picks_best(intents) -> None:  # noqa: ANN001
    from dmine_spark.mine.models import fit_named_classifier

    train = intents.where("split = 'train'")
    sk = fit_named_classifier(train, "sk_linear_svc", grid={"C": [0.0001, 1.0]}, folds=3)
    assert [s["params"] for s in sk.selection] == [{"C": 0.0001}, {"C": 1.0}]
    best = max(sk.selection, key=lambda s: s["cv_f1"])
    assert sk.params["C"] == best["params"]["C"]
    ml = fit_named_classifier(train, "logreg", params={"maxIter": 50}, grid={"regParam": [10.0, 0.001]}, folds=2)
    assert len(ml.selection) == 2
    assert ml.params["regParam"] == 0.001  # a huge penalty flattens 5-way LR to chance
    with pytest.raises(ValueError, match="not a parameter"):
        fit_named_classifier(train, "sk_logreg", grid={"nope": [1]})
    with pytest.raises(ValueError, match="unknown classifier"):
        fit_named_classifier(train, "svm_rbf")


def test_sklearn_artifact_loaded_once_and_reloaded_on_change(tmp_path: Path) -> None:
    import os
    import time

    import joblib

    from dmine_spark.mine import models

    p = tmp_path / "model.joblib"
    joblib.dump({"estimator": "a", "labels": []}, p)
    first = models._sk_artifact(str(p))
    assert models._sk_artifact(str(p)) is first
    joblib.dump({"estimator": "b", "labels": []}, p)
    os.utime(p, (time.time() + 5, time.time() + 5))
    assert models._sk_artifact(str(p))["estimator"] == "b"


@pytest.mark.parametrize("algorithm", ["kmeans", "bisecting_kmeans", "gmm", "hdbscan"])
def test_clusterings_recover_intents_with_names_and_exemplars(intents, algorithm: str) -> None:  # noqa: ANN001
    from dmine_spark.config import ClusterConfig
    from dmine_spark.mine.cluster import cluster_exemplars, cluster_terms, fit_clusters
    from dmine_spark.mine.metrics import cluster_agreement

    cfg = ClusterConfig(algorithm=algorithm, k=5, min_cluster_size=10, seed=3)
    fitted = fit_clusters(intents, cfg)
    assigned = fitted.assign(intents).cache()
    assert assigned.count() == intents.count()
    rows = assigned.groupBy("label", "cluster").count().collect()
    agree = cluster_agreement((r[0], r[1], int(r[2])) for r in rows)
    # well above chance (0.2); the hierarchical, mixture and density methods split less cleanly than k-means
    assert agree["hungarian_accuracy"] >= (0.75 if algorithm == "kmeans" else 0.6), agree
    ex = {r.cluster: r.exemplars for r in cluster_exemplars(assigned, n=3).collect()}
    texts = {(r.cluster, r.text) for r in assigned.select("cluster", "text").collect()}
    for cl, items in ex.items():
        assert 1 <= len(items) <= 3 and all((cl, t) in texts for t in items)
    names = [r.name for r in cluster_terms(assigned).collect()]
    assert all(names)


def test_k_sweep_keeps_the_best_silhouette(intents) -> None:  # noqa: ANN001
    from dmine_spark.config import ClusterConfig
    from dmine_spark.mine.cluster import fit_clusters

    fitted = fit_clusters(intents, ClusterConfig(k=None, k_range=(2, 12, 3), seed=1))
    assert set(fitted.sweep) == {2, 5, 8, 11}
    assert fitted.k == max(fitted.sweep, key=fitted.sweep.get)
    assert all(-1.0 <= v <= 1.0 for v in fitted.sweep.values())
    assert np.isfinite(list(fitted.sweep.values())).all()


@pytest.fixture(scope="module")
def reviews(spark, encoder):  # noqa: ANN001, ANN201
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
def test_rating_regression_beats_the_mean(reviews, model: str) -> None:  # noqa: ANN001
    from dmine_spark.mine.regress import fit_regressor, regression_scores

    train = reviews.where("split = 'train'").withColumn("target", F.col("rating").cast("double"))
    test = reviews.where("split = 'test'").withColumn("target", F.col("rating").cast("double"))
    # shallow, shrunk trees on 450 rows; deeper ones fit the noise of 384 embedding dimensions
    params = {"maxIter": 40, "maxDepth": 2, "stepSize": 0.1, "minInstancesPerNode": 10} if model == "gbt" else {}
    fitted = fit_regressor(train, model, categorical=["department"], numeric=["age"], params=params)
    s = regression_scores(fitted.transform(test))
    assert s["rows"] == test.count()
    # review text says a lot about the stars: both models explain part of the variance
    assert s["r2"] > (0.1 if model == "linear" else 0.05), s
    pdf = test.select("target").toPandas()
    assert s["rmse"] < float(pdf["target"].std(ddof=0)) and 0 < s["mae"] < s["rmse"]
    with pytest.raises(ValueError, match="also listed as a feature"):
        fit_regressor(train, model, numeric=["target"])


def test_binary_auc_in_classification_metrics(reviews) -> None:  # noqa: ANN001
    from sklearn.metrics import roc_auc_score

    from dmine_spark.mine.models import fit_named_classifier
    from dmine_spark.spark.jobs import _classification_metrics

    model = fit_named_classifier(reviews.where("split = 'train'"), "logreg", params={"regParam": 0.01})
    pred = model.transform(reviews.where("split = 'test'")).cache()
    values, cells = _classification_metrics(pred, model.labels)
    rows = pred.select("label", "prediction", "probability").collect()
    pos = model.labels[1]
    y = [int(r.label == pos) for r in rows]
    score = [r.probability if r.prediction == pos else 1 - r.probability for r in rows]
    assert values["auc"] == pytest.approx(roc_auc_score(y, score), abs=1e-9)
    assert values["auc"] > 0.65  # 450 training reviews: far from perfect, far above chance (0.5)
    assert sum(n for _, _, n in cells) == len(rows)


def test_tracking_to_a_configured_uri(reviews, tmp_path: Path) -> None:  # noqa: ANN001
    import mlflow

    from dmine_spark.analyze.tracking import Tracker, tracking_uri
    from dmine_spark.config import load_config
    from tests.conftest import PIPELINE_CONF

    uri = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    cfg = load_config(PIPELINE_CONF, [f"tracking.uri={uri}", "tracking.experiment=dmine-tests", f"work_dir={tmp_path}"])
    assert tracking_uri(cfg) == uri
    t = Tracker(cfg, "run-1")
    t.log_config(["classify"])
    t.log_metrics({"classify.accuracy": 0.9, 'cv_f1[{"C": 1}]': 0.8, "nan": float("nan")})
    from dmine_spark.mine.models import fit_named_classifier

    train = reviews.where("split = 'train'")
    uri_ml = t.log_model(fit_named_classifier(train, "logreg", params={"maxIter": 20}), "classifier")
    uri_sk = t.log_model(fit_named_classifier(train, "sk_logreg", params={"max_iter": 200}), "sk_classifier")
    t.end()
    import mlflow.sklearn
    import mlflow.spark

    test = reviews.where("split = 'test'")
    assert mlflow.spark.load_model(uri_ml).transform(test).count() == test.count()
    assert list(mlflow.sklearn.load_model(uri_sk).classes_) == [0, 1]
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name("dmine-tests")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert runs[0].data.metrics["classify.accuracy"] == 0.9 and "nan" not in runs[0].data.metrics
    assert runs[0].data.params["classify.model"] == "sk_logreg" and runs[0].data.tags["dmine.run_id"] == "run-1"
    assert not (tmp_path / "mlflow.db").exists()  # the default store was not used
