"""Alembic revision files of the nasforge store, oldest first."""
