# Databricks notebook source
# MAGIC %md
# MAGIC # BANKING77 intents with dmine_spark
# MAGIC
# MAGIC The same pipeline as `dmine run conf/base/pipelines/banking77.yaml`, through the package API:
# MAGIC ingest → clean → embed (all-MiniLM-L6-v2 in a pandas UDF) → classify (scikit-learn logistic
# MAGIC regression, scored by an Arrow UDF) → cluster (KMeans, named by class-based TF-IDF), then SQL over
# MAGIC the result tables. Each run also writes an HTML report and an MLflow run.
# MAGIC
# MAGIC Outside Databricks, run it as a script from the repository: `python notebooks/banking77_intents.py`.

# COMMAND ----------

import os
from pathlib import Path

from dmine_spark.config import load_config, load_profile
from dmine_spark.spark.jobs import run_stages
from dmine_spark.spark.session import build_session

# Paths in the config are relative to the repository root.
here = Path.cwd()
REPO = here.parent if here.name == "notebooks" else here
os.chdir(REPO)

# Config overrides, as `--set` takes them on the command line ("key=value;key=value").
# On Databricks, a text widget can feed the same string.
OVERRIDES = [o for o in os.environ.get("DMINE_NOTEBOOK_SET", "").split(";") if o.strip()]
cfg = load_config("conf/base/pipelines/banking77.yaml", OVERRIDES)
print(f"pipeline {cfg.name}: tables in database {cfg.database}")

# COMMAND ----------

# Databricks provides `spark`; elsewhere the config's profile builds one with a persistent catalog.
try:
    spark  # noqa: B018
except NameError:
    spark = build_session(load_profile(cfg.profile, REPO / "conf"), cfg.resolved_work_dir())

# COMMAND ----------

run, reports = run_stages(spark, cfg, progress=False)
for r in reports:
    print(f"{r.stage:<9} {r.summary}")
print(f"report: {run.labels.get('report')}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Query the result tables with SQL

# COMMAND ----------

spark.sql(f"""
    SELECT metric, round(value, 4) AS value, model_version
    FROM {cfg.table('metrics')}
    WHERE run_id = '{run.run_id}' AND metric NOT LIKE '%.%'  -- per-class figures have their own query
    ORDER BY stage, metric
""").show()

# COMMAND ----------

# The intents the classifier finds hardest.
spark.sql(f"""
    SELECT label, count(*) AS n, round(avg(CAST(label = prediction AS INT)), 3) AS accuracy
    FROM {cfg.table('pred')}
    GROUP BY label
    ORDER BY accuracy, label
    LIMIT 10
""").show(truncate=False)

# COMMAND ----------

# The largest clusters and their names.
spark.sql(f"""
    SELECT cluster, size, name
    FROM {cfg.table('cluster_terms')}
    ORDER BY size DESC
    LIMIT 10
""").show(truncate=False)

# COMMAND ----------

# Where every row went, from the runs table.
spark.sql(f"""
    SELECT counts['rows_in'] AS rows_in, counts['rows_clean'] AS clean,
           counts['rows_quarantined'] AS quarantined, counts['rows_duplicate'] AS duplicates,
           round(measures['embed.rows_per_s'], 1) AS embed_rows_per_s
    FROM {cfg.table('runs')}
    WHERE run_id = '{run.run_id}'
""").show()
