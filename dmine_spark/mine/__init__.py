"""Step 3, mine: classifiers and clustering over feature columns."""
