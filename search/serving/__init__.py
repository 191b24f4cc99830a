"""Serving a trained model: a model with its own preprocessing (Predictor), an ensemble of
them (EnsemblePredictor), their export folders and where one may be written (Destination),
the U-Net a served model masks with, and the same as an MLflow model. Below both
search.running and search.results: it imports neither (nor search.cli)."""
