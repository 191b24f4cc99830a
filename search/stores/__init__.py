"""Storage and tracking: Optuna's RDB storage (SQLite or PostgreSQL) and MLflow."""
