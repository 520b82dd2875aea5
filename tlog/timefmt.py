"""ISO 8601 times as the command line and the HTTP API accept them."""

from __future__ import annotations

import datetime as dt

__all__ = ["iso8601_ms"]


def iso8601_ms(text: str) -> int:
    """Milliseconds since the Unix epoch of an ISO 8601 date or time (``Z`` allowed; UTC when it has
    no offset).  Raises ValueError for anything else."""
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp() * 1000)
