"""Reading ``since`` and ``until`` the same way in the admin API and the CLI."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from tidegate.errors import InvalidRequestError


def parse_bound(text: str | None, *, param: str, end: bool) -> datetime | None:
    """A query bound as an aware UTC datetime.

    ``YYYY-MM-DD`` means the start of that UTC day, except for an end bound, where it means the
    end of it (``--until 2026-11-30`` includes the 30th). A full ISO 8601 time is taken as is;
    without a zone it is UTC.
    """
    if text is None or not text.strip():
        return None
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time(), tzinfo=UTC)
            return moment + timedelta(days=1) if end else moment
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidRequestError(
            f"{param} must be a date (YYYY-MM-DD) or an ISO 8601 time, got {text!r}.",
            param=param,
        ) from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
