"""Tracking fixtures: one real MLflow SQLite store per session (creating it takes seconds), a real
nasforge store per test, and a small job with done, failed and NaN-metric candidates."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tests.tracking.helpers import LoggedJob, make_job


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    from nasforge.tracking import ensure_tracking_store

    return ensure_tracking_store(f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}")


@pytest.fixture
def experiment() -> str:
    return f"exp-{secrets.token_hex(4)}"


@pytest.fixture
def logged_job(tmp_path: Path) -> LoggedJob:
    return make_job(tmp_path / "store.db")
