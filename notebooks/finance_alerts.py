# Databricks notebook source
# MAGIC %md
# MAGIC # Financial monitoring with dmine_spark: sentiment per company over time, and alerts
# MAGIC
# MAGIC Which companies are being talked about negatively more than usual, since when? This notebook replays
# MAGIC Twitter financial news headlines over a year for the dataset's most frequent cashtags, with bearish
# MAGIC episodes injected at known times (`dmine datagen --replay`), runs the pipeline the replay comes with
# MAGIC (train a sentiment classifier on texts the replay never uses, classify the replay, then the trends
# MAGIC stage: entities, sentiment share per day, alerts), and shows the shares with the alerts on them, the
# MAGIC alert table with the texts that drove each alert, and how the alerts compare with the injected truth.
# MAGIC
# MAGIC Outside Databricks, run it as a script from the repository: `python notebooks/finance_alerts.py`
# MAGIC (`DMINE_NOTEBOOK_RUN=0` reads the tables of the latest run instead of running the pipeline;
# MAGIC `DMINE_NOTEBOOK_REPLAY` sets the replay folder, default `<work dir>/replay/finance`).

# COMMAND ----------

import json
import os
from pathlib import Path

import dmine_spark as dm
from dmine_spark.config import default_work_dir
from dmine_spark.tools.replay import MANIFEST, ReplayConfig, evaluate_alerts, replay

here = Path.cwd()
REPO = here.parent if here.name == "notebooks" else here
os.chdir(REPO)
RUN = os.environ.get("DMINE_NOTEBOOK_RUN", "1") != "0"
FOLDER = Path(os.environ.get("DMINE_NOTEBOOK_REPLAY") or default_work_dir() / "replay" / "finance")
DATASETS = Path(os.environ.get("DMINE_DATASETS") or REPO.parent / "shared" / "datasets")
# The replay's shape (`dmine datagen --replay --help`): the defaults are a year of 12 cashtags.
SHAPE = ReplayConfig(**json.loads(os.environ.get("DMINE_NOTEBOOK_SHAPE", "{}")))

if not (FOLDER / MANIFEST).is_file():
    replay(FOLDER, DATASETS, SHAPE, seed=1)
manifest = json.loads((FOLDER / MANIFEST).read_text())
OVERRIDES = [o for o in os.environ.get("DMINE_NOTEBOOK_SET", "").split(";") if o.strip()]
pipe = dm.Pipeline.from_yaml(FOLDER / "pipeline.yaml", OVERRIDES)
print(f"{manifest['rows']:,} texts of {len(manifest['entities'])} entities; tables in {pipe.config.database}")

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

alerts, ts = pipe.table("alerts"), pipe.table("sentiment_ts")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Entities with alerts this week
# MAGIC
# MAGIC "This week" is the last week of the replayed period; on live data use `current_date()`.

# COMMAND ----------

spark.sql(f"""
    SELECT entity, count(*) AS alerts, max(round(observed, 2)) AS max_share, min(window_start) AS since
    FROM {alerts}
    WHERE window_start >= (SELECT max(window_start) - INTERVAL 7 DAYS FROM {ts})
    GROUP BY entity ORDER BY alerts DESC
""").show(truncate=False)

# COMMAND ----------

# MAGIC %md
# MAGIC ## The alerts, with the texts that drove them

# COMMAND ----------

spark.sql(f"""
    SELECT entity, date(window_start) AS day, rule, round(observed, 2) AS share, round(baseline, 2) AS baseline,
           round(score, 1) AS score, volume, examples[0] AS example
    FROM {alerts} ORDER BY window_start DESC, entity LIMIT 20
""").show(truncate=80)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Negative share by day for the busiest entities, with the alerts marked

# COMMAND ----------

import matplotlib.pyplot as plt  # noqa: E402

top = [
    r["entity"]
    for r in spark.sql(f"""
        SELECT entity FROM {ts} WHERE label = 'bearish' GROUP BY entity ORDER BY sum(volume) DESC LIMIT 4
    """).collect()
]
series = spark.sql(f"SELECT entity, window_start, share FROM {ts} WHERE label = 'bearish'").toPandas()
marks = spark.sql(f"SELECT entity, window_start FROM {alerts} WHERE rule LIKE 'share%'").toPandas()
fig, axes = plt.subplots(len(top), 1, figsize=(10, 2 * len(top)), sharex=True, squeeze=False)
for ax, entity in zip(axes[:, 0], top, strict=True):
    s = series[series.entity == entity].sort_values("window_start")
    ax.plot(s.window_start, s.share, linewidth=1)
    hit = s[s.window_start.isin(marks[marks.entity == entity].window_start)]
    ax.scatter(hit.window_start, hit.share, color="red", zorder=3)
    for ep in (e for e in manifest["episodes"] if e["entity"] == entity):
        ax.axvspan(ep["start"][:10], ep["end"][:10], color="orange", alpha=0.2)
    ax.set_ylabel(entity)
axes[0, 0].set_title("Predicted bearish share per day; red: alerts; orange: injected episodes")
plt.show()

# COMMAND ----------

# MAGIC %md
# MAGIC ## Negative share by day for one entity (SQL)

# COMMAND ----------

spark.sql(f"""
    SELECT date(window_start) AS day, volume, round(share, 3) AS bearish_share
    FROM {ts} WHERE entity = '{top[0]}' AND label = 'bearish' ORDER BY day DESC LIMIT 14
""").show()

# COMMAND ----------

# MAGIC %md
# MAGIC ## The alerts against the injected truth

# COMMAND ----------

ev = evaluate_alerts(manifest, [r.asDict() for r in spark.table(alerts).collect()])
for size, s in ev["by_size"].items():
    print(f"episodes +{size}: {s['detected_within_2']}/{s['episodes']} detected within two windows")
print(
    f"false alerts: {ev['false_per_100_entity_weeks']:.2f} per 100 entity-weeks "
    f"({ev['false_alerts']} in {ev['calm_entity_weeks']:.0f} calm entity-weeks)"
)
