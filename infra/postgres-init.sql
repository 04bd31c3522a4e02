-- Run once by the postgres image on an empty data folder (infra/compose.yaml):
-- the nasforge store uses database "nasforge" (created by POSTGRES_DB), MLflow gets its own.
CREATE DATABASE mlflow OWNER nasforge;
