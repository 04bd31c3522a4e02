"""nasforge.store: the source of truth (jobs, candidates, checkpoints) on SQLAlchemy.

Public: :func:`open_store` and :class:`SqlStore`; result writers in ``nasforge.store.export_formats``.
ORM rows never leave this package: reads return the frozen types of ``nasforge.core.types``.
"""

from nasforge.store.sql import SqlStore, open_store, redact_url

__all__ = ["SqlStore", "open_store", "redact_url"]
