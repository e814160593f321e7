"""Fine-tuning tasks, heads, scorers and featurisation."""
