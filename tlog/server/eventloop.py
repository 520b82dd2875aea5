"""The event loop of the server's processes (``tlog serve``, its sequencer and HTTP workers).

uvloop (libuv, MagicStack) runs the same asyncio programs with its transports, protocols and
scheduling written in Cython: on the 2-core development machine a worker spent about a quarter of its
time in ``asyncio``'s pure-Python selector transport and ``_run_once``, and uvloop takes most of that
away (see docs/performance.md).  ``TLOG_EVENT_LOOP=asyncio`` runs the standard loop instead (for
debugging, or a platform without uvloop); the behaviour is the same, only slower.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

from .config import ConfigError

__all__ = ["run", "loop_name"]

T = TypeVar("T")


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: the loop :func:`run` uses, from ``TLOG_EVENT_LOOP``."""
    name = os.environ.get("TLOG_EVENT_LOOP", "uvloop").strip().lower() or "uvloop"
    if name not in ("uvloop", "asyncio"):
        raise ConfigError(f"TLOG_EVENT_LOOP must be uvloop or asyncio, not {name!r}")
    return name


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the server's event loop."""
    try:
        name = loop_name()
    except ConfigError:
        main.close()
        raise
    if name == "asyncio":
        return asyncio.run(main)
    import uvloop

    return uvloop.run(main)
