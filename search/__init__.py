"""The search service: CLI, launcher and worker processes, the objective, MLflow tracking."""
import os

# TensorFlow's C++ start-up chatter says nothing about a search; users can still set this.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
