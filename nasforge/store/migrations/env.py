"""Alembic environment of the nasforge store.

``nasforge.store.sql`` runs the migrations programmatically and hands over an open connection in
``config.attributes["connection"]`` (already inside the transaction that holds the migration lock).
For the command line (``alembic -x url=...``) a URL is accepted too.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from nasforge.store._models import Base

VERSION_TABLE = "nf_alembic_version"

config = context.config


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=Base.metadata, version_table=VERSION_TABLE,
                          transactional_ddl=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database: pass -x url=SQLALCHEMY_URL")
    engine = create_engine(url)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=Base.metadata, version_table=VERSION_TABLE)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("the nasforge store migrations run online only")
run_migrations_online()
