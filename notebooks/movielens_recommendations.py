# Databricks notebook source
# MAGIC %md
# MAGIC # MovieLens recommendations with dmine_spark
# MAGIC
# MAGIC The e-commerce use case on MovieLens (latest-small): the same pipeline as
# MAGIC `dmine run conf/base/pipelines/movielens.yaml`. Ratings are the interactions (4 stars and up is a
# MAGIC like), movies are the items, their title, genres and tags the item text. The recommend stage evaluates
# MAGIC popularity, MLlib ALS, a content-based recommender over the movies' embeddings and the hybrid ranker on
# MAGIC a time split per user plus cold-start movies, then writes each user's top 10 and each movie's nearest
# MAGIC movies as tables.
# MAGIC
# MAGIC Outside Databricks, run it as a script from the repository: `python notebooks/movielens_recommendations.py`
# MAGIC (`DMINE_NOTEBOOK_RUN=0` reads the latest run's tables instead of running the pipeline).

# COMMAND ----------

import os
from pathlib import Path

import dmine_spark as dm

# Paths in the config are relative to the repository root.
here = Path.cwd()
REPO = here.parent if here.name == "notebooks" else here
os.chdir(REPO)

# Config overrides, as `--set` takes them on the command line ("key=value;key=value").
OVERRIDES = [o for o in os.environ.get("DMINE_NOTEBOOK_SET", "").split(";") if o.strip()]
RUN = os.environ.get("DMINE_NOTEBOOK_RUN", "1") != "0"
pipe = dm.Pipeline.from_yaml("conf/base/pipelines/movielens.yaml", OVERRIDES)
print(f"pipeline {pipe.config.name}: tables in database {pipe.config.database}")

# COMMAND ----------

# Databricks provides `spark`; elsewhere the config's profile builds one with a persistent catalog.
try:
    spark  # noqa: B018
except NameError:
    spark = pipe.session()

# COMMAND ----------

if RUN:
    result = pipe.run(spark)
    print(result.summary())
    run_id = result.run_id
else:
    run_id = spark.sql(f"""
        SELECT run_id FROM {pipe.table("runs")}
        WHERE task = '{pipe.config.task}' AND status = 'ok' AND stage_seconds['recommend'] IS NOT NULL
        ORDER BY started_at DESC LIMIT 1
    """).first()["run_id"]
print(f"run {run_id}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## The metric table: every recommender on the warm and the cold-start test

# COMMAND ----------

spark.sql(f"""
    SELECT regexp_extract(stage, '^recommend\\\\.(.*)$', 1) AS model, split AS test,
           round(max(IF(metric = 'precision_at_10', value, NULL)), 4) AS `precision@10`,
           round(max(IF(metric = 'recall_at_10', value, NULL)), 4) AS `recall@10`,
           round(max(IF(metric = 'ndcg_at_10', value, NULL)), 4) AS `ndcg@10`,
           round(max(IF(metric = 'map_at_10', value, NULL)), 4) AS `map@10`,
           round(max(IF(metric = 'coverage', value, NULL)), 4) AS coverage,
           first(model_version) AS model_version
    FROM {pipe.table("metrics")}
    WHERE run_id = '{run_id}' AND stage LIKE 'recommend.%'
    GROUP BY stage, split
    ORDER BY test DESC, `ndcg@10` DESC
""").show(truncate=False)

# COMMAND ----------

# The targets as ratios: the hybrid against each model alone, cold-start recall against a random ranking.
spark.sql(f"""
    SELECT metric, round(value, 3) AS value
    FROM {pipe.table("metrics")}
    WHERE run_id = '{run_id}' AND stage = 'recommend' AND (metric LIKE '%_vs_%' OR metric LIKE 'random%')
    ORDER BY metric
""").show(truncate=False)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Recommendations

# COMMAND ----------

# One user's top 10 from the recs table, with the movies' texts.
user = spark.table(pipe.table("recs")).select("user_id").orderBy("user_id").first()["user_id"]
spark.sql(f"""
    SELECT r.rank, r.item_id, round(r.score, 4) AS score, substring(c.text, 1, 70) AS movie
    FROM {pipe.table("recs")} r
    JOIN {pipe.table("clean")} c ON c.id = concat('{pipe.config.recommend.items}:', r.item_id)
    WHERE r.user_id = '{user}'
    ORDER BY r.rank
""").show(truncate=False)

# COMMAND ----------

# The same list from the saved model (as `dmine recommend CONFIG --user ID` gives it), and a user it never saw.
print(pipe.recommend(spark, [user, "a-new-user"], k=5)[["user_id", "rank", "item_id", "score"]].to_string())

# COMMAND ----------

# Movies like the first one in the catalogue, by text.
spark.sql(f"""
    SELECT s.item_id, s.rank, s.neighbor_id, round(s.score, 3) AS cosine, substring(c.text, 1, 60) AS neighbour
    FROM {pipe.table("similar_items")} s
    JOIN {pipe.table("clean")} c ON c.id = concat('{pipe.config.recommend.items}:', s.neighbor_id)
    WHERE s.item_id = (SELECT min(item_id) FROM {pipe.table("similar_items")})
    ORDER BY s.rank
""").show(truncate=False)
