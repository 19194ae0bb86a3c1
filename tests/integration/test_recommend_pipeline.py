"""The MovieLens pipeline end to end on a slice: interactions and attached tags through ingest, the recommend stage,
its tables, metrics and saved models, and ``dmine recommend --user``."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from dmine_spark.config import Layer, load_config
from dmine_spark.deploy.recommend import load_recommender, recommend_users
from dmine_spark.mine.store import ModelStore
from dmine_spark.runner.run import run_stages
from tests.conftest import DATASETS, REPO

CONF = REPO / "conf" / "base" / "pipelines" / "movielens.yaml"
MOVIELENS = DATASETS / "movielens_latest_small"
USERS = 30  # users 1..30: every part of the split, a few thousand ratings
BAD_RATING = "7,1,four stars,964982703"  # a rating that is not a number
GHOST_TAG = "7,999999999,no such movie,1445714994"  # a tag of a movie the catalogue lacks


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _write(path: Path, rows: list[dict[str, str]], extra: list[str] = ()) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
        for line in extra:
            fh.write(line + "\n")


@pytest.fixture(scope="module")
def slice_dir(tmp_path_factory: pytest.TempPathFactory) -> dict:
    if not (MOVIELENS / "ratings.csv").is_file():
        pytest.fail(f"MovieLens not found at {MOVIELENS}; set DMINE_DATASETS to the shared datasets folder")
    d = tmp_path_factory.mktemp("movielens_slice")
    ratings = [r for r in _rows(MOVIELENS / "ratings.csv") if int(r["userId"]) <= USERS]
    ids = {r["movieId"] for r in ratings}
    movies = [r for r in _rows(MOVIELENS / "movies.csv") if r["movieId"] in ids]
    tags = [r for r in _rows(MOVIELENS / "tags.csv") if r["movieId"] in ids]
    _write(d / "ratings.csv", ratings, [BAD_RATING])
    _write(d / "movies.csv", movies)
    _write(d / "tags.csv", tags, [GHOST_TAG])
    return {"dir": d, "ratings": len(ratings), "movies": len(movies), "tags": tags}


def _overrides(d: Path, work: Path) -> list[str]:
    return [
        f"sources.movies.path={d}/movies.csv",
        f"sources.tags.path={d}/tags.csv",
        f"sources.ratings.path={d}/ratings.csv",
        "database=dmine_recs",
        f"work_dir={work}",
        "recommend.als.ranks=[16]",
        "recommend.als.alphas=[1.0]",
        "recommend.similar_items=5",
        "recommend.candidates=20",
        "report.enabled=false",
        "tracking.enabled=false",
    ]


@pytest.fixture(scope="module")
def recs_run(spark, slice_dir, tmp_path_factory: pytest.TempPathFactory):
    overrides = _overrides(slice_dir["dir"], tmp_path_factory.mktemp("recs_work"))
    cfg = load_config(CONF, overrides)
    run, reports = run_stages(spark, cfg, progress=False)
    return cfg, run, {r.stage: r for r in reports}, overrides


def test_interactions_and_attached_tags_reconcile_through_ingest(spark, slice_dir, recs_run) -> None:
    cfg, run, reports, _ = recs_run
    c = run.counts
    n_in = slice_dir["ratings"] + 1 + slice_dir["movies"] + len(slice_dir["tags"]) + 1
    assert c["rows_in"] == n_in
    assert c["rows_interactions"] == slice_dir["ratings"]
    assert c["rows_attached"] == len(slice_dir["tags"])
    assert c["rows_clean"] == slice_dir["movies"]
    assert (
        c["rows_in"]
        == c["rows_clean"] + c["rows_quarantined"] + c["rows_duplicate"] + c["rows_interactions"] + (c["rows_attached"])
    )
    q = {(r["split"], r["rule"]): r["reason"] for r in spark.table(cfg.table(Layer.QUARANTINE)).collect()}
    assert "four stars" in q[("ratings", "wrong_type")]
    assert q[("tags", "unknown_item")] == "movieId '999999999' is no kept row's movieId in source movies"
    inter = spark.table(cfg.table(Layer.INTERACTIONS))
    assert inter.count() == slice_dir["ratings"]
    assert dict(inter.dtypes)["ts"] == "timestamp" and dict(inter.dtypes)["user_id"] == "string"
    # a movie whose tag was applied more than once (by several users): the tag appears once in its text
    seen: dict[tuple[str, str], int] = {}
    for t in slice_dir["tags"]:
        seen[(t["movieId"], t["tag"].strip())] = seen.get((t["movieId"], t["tag"].strip()), 0) + 1
    movie, tag = next(
        (m, t) for (m, t), n in seen.items() if n > 1 and not any(t in o and t != o for mm, o in seen if mm == m)
    )
    text = spark.table(cfg.table(Layer.CLEAN)).where(F.col("id") == f"movies:{movie}").first()["text"]
    assert text.count(tag) == 1
    assert "ratings (interactions)" in reports["ingest"].summary


def test_each_user_gets_k_unseen_items_from_the_served_version(spark, recs_run) -> None:
    cfg, run, reports, _ = recs_run
    recs = spark.table(cfg.table(Layer.RECS))
    assert recs.columns[:4] == ["user_id", "rank", "item_id", "score"]
    assert {"model_version", "run_id"} <= set(recs.columns)
    assert {r[0] for r in recs.select("model_version").distinct().collect()} == {"movielens-recs-hybrid@v1"}
    per_user = recs.groupBy("user_id").agg(F.count("*").alias("n"), F.max("rank").alias("top")).collect()
    assert len(per_user) == USERS
    assert all(r["n"] == cfg.recommend.k == r["top"] for r in per_user)
    seen = spark.table(cfg.table(Layer.INTERACTIONS)).select("user_id", "item_id")
    assert recs.join(seen, ["user_id", "item_id"]).isEmpty()  # already-seen items are never recommended
    assert reports["recommend"].summary.startswith("movielens-recs-hybrid@v1: top 10 for 30 users")


def test_ranking_metrics_land_in_the_metrics_table_for_each_model_and_test(spark, recs_run) -> None:
    cfg, run, _, _ = recs_run
    m = spark.table(cfg.table(Layer.METRICS)).where(F.col("run_id") == run.run_id).collect()
    got = {(r["stage"], r["split"], r["metric"]): r["value"] for r in m}
    for kind in ("popularity", "als", "content", "hybrid"):
        for part in ("test_warm", "test_cold"):
            for metric in ("precision_at_10", "recall_at_10", "ndcg_at_10", "map_at_10", "coverage"):
                assert 0.0 <= got[(f"recommend.{kind}", part, metric)] <= 1.0
    versions = {r["stage"]: r["model_version"] for r in m if r["stage"].startswith("recommend.")}
    assert versions["recommend.als"] == "movielens-recs-als@v1"
    # popularity and ALS cannot rank an item nobody has interacted with; text can
    assert got[("recommend.popularity", "test_cold", "recall_at_10")] == 0.0
    assert got[("recommend.als", "test_cold", "recall_at_10")] == 0.0
    random = got[("recommend", "test", "random_cold_recall_at_10")]
    assert got[("recommend.content", "test_cold", "recall_at_10")] > random
    assert got[("recommend", "test", "cold_content_recall_vs_random")] == pytest.approx(
        got[("recommend.content", "test_cold", "recall_at_10")] / random
    )
    assert got[("recommend.popularity", "test_warm", "ndcg_at_10")] > 0.0


def test_every_recommender_is_a_versioned_model_and_the_loaded_one_gives_the_tables_list(spark, recs_run) -> None:
    cfg, run, _, _ = recs_run
    store = ModelStore(cfg.paths.models)
    for kind in ("popularity", "als", "content", "hybrid"):
        meta = store.meta(f"movielens-recs-{kind}")
        assert meta["run_id"] == run.run_id and meta["kind"] == kind
        assert set(meta["warm"]) >= {"ndcg_at_k", "coverage"}
    assert store.meta("movielens-recs-hybrid")["ranker"] == "logreg"
    user = spark.table(cfg.table(Layer.RECS)).select("user_id").orderBy("user_id").first()["user_id"]
    version, got = recommend_users(spark, cfg, [user])
    assert version == "movielens-recs-hybrid@v1"
    table = spark.table(cfg.table(Layer.RECS)).where(F.col("user_id") == user).orderBy("rank").collect()
    assert list(got["item_id"]) == [r["item_id"] for r in table]
    assert got["text"].notna().all()
    # ALS from the store: a user it never saw has no vector, so no list; the popularity model has one
    als, _ = load_recommender(cfg, "movielens-recs-als@v1")
    nobody = spark.createDataFrame([("no-such-user",)], "user_id STRING")
    assert als.recommend(nobody, 5).isEmpty()
    pop, _ = store.load("movielens-recs-popularity")  # a PipelineModel, as PipelineModel.load gives it back
    assert pop.transform(nobody).count() == cfg.recommend.k


def test_similar_items_are_other_items_by_text(spark, recs_run) -> None:
    cfg, _, _, _ = recs_run
    sim = spark.table(cfg.table(Layer.SIMILAR_ITEMS))
    assert sim.where("item_id = neighbor_id").isEmpty()
    counts = {r["n"] for r in sim.groupBy("item_id").agg(F.count("*").alias("n")).collect()}
    assert counts == {5}
    assert {r[0] for r in sim.select("model_version").distinct().collect()} == {"movielens-recs-content@v1"}


def test_dmine_recommend_prints_one_users_list(recs_run) -> None:
    cfg, _, _, overrides = recs_run
    sets = [a for o in overrides for a in ("--set", o)]
    cmd = [sys.executable, "-m", "dmine_spark.cli", "recommend", str(CONF), "--user", "1", "--k", "3", *sets]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "dmine recommend: movielens-recs-hybrid@v1, top 3"
    assert lines[1] == "user 1:"
    assert [ln.split(".")[0].strip() for ln in lines[2:5]] == ["1", "2", "3"]
    bad = subprocess.run([*cmd[: -len(sets)], "--k", "0", *sets], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2
    assert (
        bad.stderr.strip().splitlines()[-1]
        == "dmine: error: recommend --k: expected a number of items of at least 1, got 0"
    )


def test_the_notebook_shows_the_metric_table_and_recommendations(spark, recs_run, monkeypatch, capsys) -> None:
    import runpy

    cfg, run, _, overrides = recs_run
    monkeypatch.setenv("DMINE_NOTEBOOK_SET", ";".join(overrides))
    monkeypatch.setenv("DMINE_NOTEBOOK_RUN", "0")  # the tables of the run above, in this session's catalog
    monkeypatch.chdir(REPO)
    runpy.run_path(str(REPO / "notebooks" / "movielens_recommendations.py"), init_globals={"spark": spark})
    out = capsys.readouterr().out
    assert f"run {run.run_id}" in out
    assert "|model     |test     |precision@10|recall@10|ndcg@10|map@10|coverage|model_version" in out
    assert "|hybrid    |test_warm|" in out and "|content   |test_cold|" in out
    assert "cold_content_recall_vs_random" in out
    assert "a-new-user" in out  # the hybrid's list for a user it never saw


def test_the_report_has_the_ranking_table_and_example_lists(spark, recs_run) -> None:
    from dmine_spark.analyze.report import render_report

    cfg, run, _, _ = recs_run
    page = render_report(spark, cfg, run.run_id)
    section = page.split("<h2>Recommendations</h2>", 1)[1]
    assert "NDCG@10" in section and "test_cold" in section and "movielens-recs-hybrid@v1" in section
    assert "<h3>Example recommendations</h3>" in section
    first = spark.table(cfg.table(Layer.RECS)).orderBy("user_id", "rank").first()
    assert f"<td>{first['item_id']}</td>" in section
    assert "regParam" not in page.split("<h2>Recommendations</h2>", 1)[0]  # not among the generic metrics
