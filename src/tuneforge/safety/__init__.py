"""Training-data safety: screening a job's files against a content policy before training."""
