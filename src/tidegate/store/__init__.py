"""The database: typed models, engines and sessions, Alembic migrations.

The same code runs on a SQLite file (the embedded default) and on PostgreSQL (a URL). Nothing
here imports the request path; services in ``tidegate.pipeline`` and elsewhere take an
``async_sessionmaker`` built by :func:`create_sessionmaker` and open transactions with
:func:`transaction`, which turns driver errors into tidegate errors.
"""

from __future__ import annotations

from tidegate.store.db import create_engine, create_sessionmaker, transaction
from tidegate.store.errors import StoreError, StoreUnavailableError
from tidegate.store.migrate import migrate

__all__ = [
    "StoreError",
    "StoreUnavailableError",
    "create_engine",
    "create_sessionmaker",
    "migrate",
    "transaction",
]
