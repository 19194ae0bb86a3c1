"""Step 2, features: feature tables, the embedding encoder core (no Spark), its Spark adapter and the embedding cache."""
