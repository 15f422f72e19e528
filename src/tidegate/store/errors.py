"""Store errors, and the one place SQLAlchemy and driver exceptions become tidegate errors.

    TidegateError
    └── StoreError                  500  internal_error        upstream
        └── StoreUnavailableError   503  service_unavailable   upstream  (Retry-After)

Messages name the failure class only: SQL text and parameters stay out of them (engines are
also built with ``hide_parameters=True``), so nothing derived from a key reaches a client.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc as sa_exc

from tidegate.errors import TidegateError


class StoreError(TidegateError):
    """The store failed in a way a retry will not fix (a bug or a schema mismatch)."""


class StoreUnavailableError(StoreError):
    """The database cannot be reached or is busy; retrying later may work."""

    status = 503
    error_type = "service_unavailable"


# Errors a later retry may fix: the server is down, the connection broke, SQLite is locked.
_TRANSIENT = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)


@contextmanager
def translating_errors(action: str) -> Iterator[None]:
    """Re-raise SQLAlchemy and connection errors raised inside the block as StoreError."""
    try:
        yield
    except _TRANSIENT as exc:
        raise StoreUnavailableError(
            f"The store is unavailable while trying to {action} ({_describe(exc)}). "
            "Check that the database is running and store.url is right, then retry.",
            retry_after_s=1.0,
        ) from exc
    except (OSError, ConnectionError) as exc:
        # asyncpg can raise socket errors on connect before SQLAlchemy wraps them.
        raise StoreUnavailableError(
            f"The store is unavailable while trying to {action} ({type(exc).__name__}). "
            "Check that the database is running and store.url is right, then retry.",
            retry_after_s=1.0,
        ) from exc
    except sa_exc.SQLAlchemyError as exc:
        raise StoreError(
            f"The store failed while trying to {action} ({_describe(exc)}). "
            "If the schema is out of date, restart tidegate so it migrates."
        ) from exc


def _describe(exc: sa_exc.SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    return type(orig).__name__ if orig is not None else type(exc).__name__
