"""Where MLflow models logged before 2026-12-04 find their class: their entry file says
`from search.results.mlflow_model import ImageClassifier`. The model itself lives in
search.serving.mlflow_model."""
from search.serving.mlflow_model import ImageClassifier

__all__ = ["ImageClassifier"]
