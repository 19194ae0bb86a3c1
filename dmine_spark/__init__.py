"""dmine_spark: turn raw business text in a warehouse into mined knowledge, with Spark.

The package follows the five steps of the mining pipeline:

- ``dmine_spark.prepare``: ingest (declared schemas, quarantine) and clean;
- ``dmine_spark.features``: the Spark-free encoder core and its Spark adapter;
- ``dmine_spark.mine``: classification and clustering;
- ``dmine_spark.analyze``: result tables and run telemetry;
- deployment (scoring, streaming, monitoring) comes next.

``dmine_spark.spark`` is the thin Spark wiring (session, jobs, progress) and
``dmine_spark.cli`` the ``dmine`` command.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
