"""The search service. Three jobs, three packages: `running` (launcher, workers, objective),
`stores` (Optuna storage, MLflow tracking) and `results` (reading and using what ran); `cli`
is the command line over them and `record` the typed trial record they share."""
import os

# TensorFlow's C++ start-up chatter says nothing about a search; users can still set this.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
