"""The MLflow model's code (MLflow's models-from-code: no pickle): the pyfunc of
search.serving.mlflow_model, set as the model when MLflow loads it."""
from mlflow.models import set_model

from search.serving.mlflow_model import ImageClassifier

set_model(ImageClassifier())
