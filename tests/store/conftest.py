"""Store fixtures: the same contract suite runs on a SQLite file and on the PostgreSQL server.

PostgreSQL: ``NASFORGE_TEST_PG`` (default ``postgresql+psycopg2://postgres@127.0.0.1:5432``) names
the server; each test session creates a fresh database ``nasforge_test_<pid>_<hex>`` and drops it
at the end. When the server does not answer, the PostgreSQL cases skip and say why.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

PG_SERVER = os.environ.get("NASFORGE_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")


def _admin_engine():  # type: ignore[no-untyped-def]
    from sqlalchemy import create_engine

    return create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT",
                         connect_args={"connect_timeout": 3})


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL database for this session (dropped afterwards)."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    admin = _admin_engine()
    name = f"nasforge_test_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as e:
        admin.dispose()
        pytest.skip(f"PostgreSQL server {PG_SERVER} unreachable ({str(e.orig).strip().splitlines()[0]}); "
                    "set NASFORGE_TEST_PG to a server URL")
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """A store URL: a new SQLite file per test, or the session's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def store(store_url: str):  # type: ignore[no-untyped-def]
    from nasforge.store import open_store

    s = open_store(store_url)
    yield s
    s.close()


@pytest.fixture
def fresh_pg_url(pg_url: str) -> Iterator[str]:
    """A brand-new, empty PostgreSQL database for one test (dropped afterwards)."""
    from sqlalchemy import text

    admin = _admin_engine()
    name = f"{pg_url.rsplit('/', 1)[1]}_fresh_{secrets.token_hex(2)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
