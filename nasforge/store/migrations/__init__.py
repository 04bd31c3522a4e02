"""Alembic migrations of the nasforge store (run programmatically by ``open_store``)."""
