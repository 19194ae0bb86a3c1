"""Step 2, features: the embedding encoder (no Spark) and its Spark adapter."""
