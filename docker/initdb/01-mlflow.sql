-- The Optuna study lives in the default database (POSTGRES_DB=optuna); MLflow gets its own.
CREATE DATABASE mlflow;
