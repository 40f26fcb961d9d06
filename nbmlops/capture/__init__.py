"""What a run records: hashes, environment and git, the MLflow run layout."""
