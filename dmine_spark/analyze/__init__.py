"""Step 4, analyze: the run's records (runs, quality, metrics, the recorder of each stage), the HTML report, MLflow."""
