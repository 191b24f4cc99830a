"""The search service: CLI, launcher and worker processes, the objective, MLflow tracking."""
