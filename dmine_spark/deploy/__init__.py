"""Step 5, deploy: batch and streaming scoring with a saved model version, and drift monitoring."""
