# Databricks notebook source
# MAGIC %md
# MAGIC # BANKING77 intents with dmine_spark
# MAGIC
# MAGIC The same pipeline as `dmine run conf/base/pipelines/banking77.yaml`, through the package's public API:
# MAGIC ingest → clean → embed (all-MiniLM-L6-v2 in a pandas UDF) → classify (scikit-learn logistic
# MAGIC regression, scored by an Arrow UDF) → cluster (KMeans, named by class-based TF-IDF), then SQL over
# MAGIC the result tables, and the saved model scoring new text as a Spark `PipelineModel`.
# MAGIC
# MAGIC Outside Databricks, run it as a script from the repository: `python notebooks/banking77_intents.py`.

# COMMAND ----------

import os
from pathlib import Path

import dmine_spark as dm

# Paths in the config are relative to the repository root.
here = Path.cwd()
REPO = here.parent if here.name == "notebooks" else here
os.chdir(REPO)

# Config overrides, as `--set` takes them on the command line ("key=value;key=value").
# On Databricks, a text widget can feed the same string.
OVERRIDES = [o for o in os.environ.get("DMINE_NOTEBOOK_SET", "").split(";") if o.strip()]
pipe = dm.Pipeline.from_yaml("conf/base/pipelines/banking77.yaml", OVERRIDES)
print(f"pipeline {pipe.config.name}: tables in database {pipe.config.database}")

# COMMAND ----------

# Databricks provides `spark`; elsewhere the config's profile builds one with a persistent catalog.
try:
    spark  # noqa: B018
except NameError:
    spark = pipe.session()

# COMMAND ----------

result = pipe.run(spark)
print(result.summary())
print(f"report: {result.labels.get('report')}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Query the result tables with SQL

# COMMAND ----------

spark.sql(f"""
    SELECT metric, round(value, 4) AS value, model_version
    FROM {pipe.table("metrics")}
    WHERE run_id = '{result.run_id}' AND metric NOT LIKE '%.%'  -- per-class figures have their own query
    ORDER BY stage, metric
""").show()

# COMMAND ----------

# The intents the classifier finds hardest, in this run's predictions.
spark.sql(f"""
    SELECT label, count(*) AS n, round(avg(CAST(label = prediction AS INT)), 3) AS accuracy
    FROM {pipe.table("pred")}
    WHERE run_id = '{result.run_id}' AND stage = 'classify'
    GROUP BY label
    ORDER BY accuracy, label
    LIMIT 10
""").show(truncate=False)

# COMMAND ----------

# The largest clusters and their names.
spark.sql(f"""
    SELECT cluster, size, name
    FROM {pipe.table("cluster_terms")}
    ORDER BY size DESC
    LIMIT 10
""").show(truncate=False)

# COMMAND ----------

# Where every row went, from the runs table.
spark.sql(f"""
    SELECT counts['rows_in'] AS rows_in, counts['rows_clean'] AS clean,
           counts['rows_quarantined'] AS quarantined, counts['rows_duplicate'] AS duplicates,
           round(measures['embed.rows_per_s'], 1) AS embed_rows_per_s
    FROM {pipe.table("runs")}
    WHERE run_id = '{result.run_id}'
""").show()

# COMMAND ----------

# MAGIC %md
# MAGIC ## The saved model on new text
# MAGIC
# MAGIC Each model version is a Spark `PipelineModel` (cleaner → embedder → classifier):
# MAGIC `PipelineModel.load(path)` or `dm.load_model("<name>@v<N>")` gives it back in any session.

# COMMAND ----------

model = pipe.load_model(result.model_versions["classify"])
new = spark.createDataFrame(
    [("my card still has not arrived after two weeks",), ("how do I change my PIN? mail me at jo@example.com",)],
    "text STRING",
)
model.transform(new).select("text", "prediction", "probability").show(truncate=False)
