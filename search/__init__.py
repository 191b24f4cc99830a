"""The search service. Three jobs, three packages: `running` (launcher, workers, objective),
`stores` (Optuna storage, MLflow tracking) and `results` (reading and using what ran); `cli`
is the command line over them and `record` the typed trial record they share."""
import os

# TensorFlow's C++ start-up chatter says nothing about a search; users can still set this.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# MLflow's telemetry (on by default since MLflow 3) writes an installation id to
# ~/.config/mlflow/telemetry.json and sends usage events out of the network; a hospital's
# search sends nothing. Set before MLflow is first imported (it decides then), inherited by
# workers and `search ui`'s servers; MLFLOW_DISABLE_TELEMETRY=false turns it back on.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
