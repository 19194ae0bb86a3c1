"""Step 4, analyze: result tables in the catalog and the per-run telemetry."""
