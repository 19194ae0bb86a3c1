"""Step 3, mine: classifier, cluster and regression stages, fine-tuning, evaluation and the model store."""
