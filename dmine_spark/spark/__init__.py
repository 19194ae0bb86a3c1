"""The Spark wiring: sessions from profiles, the jar cache, spark-submit profiles, shipping models, progress lines."""
