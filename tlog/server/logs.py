"""Structured JSON logs (one object per line on stderr) and the request-id middleware.

Every line has ``ts`` (ISO 8601 UTC), ``level``, ``logger``, ``event`` and, inside a request, its
``request_id``; :func:`log_event` adds fields.  Lines written by the server:

* ``request``: one per HTTP request (method, path, route, status, duration_ms, remote, bytes), written
  together with the other requests answered in the same event-loop turn;
* ``key_event`` / ``erasure``: one per operator entry accepted (index, action, key id, name, …);
* ``payload_read``: one per payload returned (token id and name, entry index): who read what, when;
* ``retention``: one per retention pass that erased something.

The request id is the client's ``X-Request-Id`` when it is a short token of safe characters, else a
new random one; it is echoed in the response's ``X-Request-Id``.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import json
import logging
import math
import random
import re
import secrets
import sys
import time
from typing import Any

from aiohttp import web

__all__ = ["REQUEST_ID", "JsonFormatter", "setup_logging", "log_event", "request_middleware", "METRICS_HOOK"]

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("tlog_request_id", default=None)
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: Request ids: 64 random bits from a generator seeded once per process from the OS (they only need to
#: be unique, not secret; ``secrets.token_hex`` made a getrandom system call for every request).
_ids = random.Random(secrets.randbits(128))
_access = logging.getLogger("tlog.access")

#: ``app[METRICS_HOOK](method, route, status)`` counts a request (set by app.py; absent in bare apps).
METRICS_HOOK: web.AppKey[Any] = web.AppKey("metrics_hook", object)


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "event", "request_id"?, **fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(), "logger": record.name, "event": record.getMessage()}
        rid = getattr(record, "request_id", None) or REQUEST_ID.get()
        if rid:
            out["request_id"] = rid
        out.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, separators=(",", ":"))


def setup_logging(level: int = logging.INFO, stream: Any = None) -> None:
    """Send every ``tlog.*`` logger's records to ``stream`` (stderr) as JSON lines (idempotent)."""
    root = logging.getLogger("tlog")
    for h in list(root.handlers):
        if getattr(h, "_tlog_json", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._tlog_json = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False


class _AccessLines:
    """The ``request`` lines, one per HTTP request: the same JSON objects as :class:`JsonFormatter`
    writes, formatted directly (a ``LogRecord`` costs more than the rest of a small request) and
    written together once per event-loop turn, through the handler ``setup_logging`` installed."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def write(self, request_id: str, method: str, path: str, route: str, status: int, duration_ms: float,
              remote: str | None, size: int) -> None:
        if _json_handler() is None:  # logging configured by someone else: an ordinary record
            log_event(_access, "request", method=method, path=path, route=route, status=status,
                      duration_ms=duration_ms, remote=remote, bytes=size)
            return
        # The object json.dumps(…, separators=(",", ":")) would write, keys in the same order, with
        # only the strings encoded by json (a fifth of the cost of dumping the dict).
        self._lines.append(
            f'{{"ts":"{_iso_now()}","level":"info","logger":"{_access.name}","event":"request",'
            f'"request_id":{json_str(request_id)},"method":{json_str(method)},"path":{json_str(path)},'
            f'"route":{json_str(route)},"status":{int(status)},"duration_ms":{_json_value(duration_ms)},'
            f'"remote":{_json_value(remote)},"bytes":{int(size)}}}')
        if len(self._lines) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no event loop: write at once
                self.flush()

    def flush(self) -> None:
        lines, self._lines = self._lines, []
        handler = _json_handler()
        if handler is None or not lines:
            return
        handler.acquire()
        try:
            handler.stream.write("\n".join(lines) + "\n")
            handler.stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr must not fail requests
            pass
        finally:
            handler.release()


#: A str as a JSON string literal, quotes included: what json.dumps writes for it (ASCII, escaped).
json_str = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


def _json_value(value: Any) -> str:
    if isinstance(value, str):
        return json_str(value)
    if type(value) is int:
        return str(value)
    if type(value) is float and math.isfinite(value):
        return repr(value)  # what json.dumps writes for a finite float
    return json.dumps(value, default=str)


_SECOND: list = [None, ""]  # [whole second, its "YYYY-MM-DDTHH:MM:SS"], formatted once a second


def _iso_now() -> str:
    """UTC now as ``2026-11-26T12:00:00.123Z`` (what ``datetime.isoformat`` gives, at a tenth of the
    cost: one per request line)."""
    ms = time.time_ns() // 1_000_000
    sec, frac = divmod(ms, 1000)
    if _SECOND[0] != sec:
        _SECOND[0], _SECOND[1] = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{_SECOND[1]}.{frac:03d}Z"


def _json_handler() -> logging.StreamHandler | None:
    for h in logging.getLogger("tlog").handlers:
        if getattr(h, "_tlog_json", False):
            return h  # type: ignore[return-value]
    return None


_ACCESS_LINES = _AccessLines()


def log_event(logger: logging.Logger, event: str, level: int = logging.INFO, **fields: Any) -> None:
    """One structured line: ``event`` plus ``fields``."""
    logger.log(level, event, extra={"fields": fields})


def _route(request: web.Request) -> str:
    info = request.match_info  # a dict: empty (falsy) for a route without parameters
    resource = info.route.resource if info is not None and info.route is not None else None
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def request_middleware(request: web.Request, handler):
    """Outermost middleware: request id in, ``X-Request-Id`` out, one ``request`` log line, the
    request counted.  Runs around the error middleware, so it sees the final status of every answer."""
    given = request.headers.get("X-Request-Id", "")
    rid = given if _SAFE_ID.fullmatch(given) else f"{_ids.getrandbits(64):016x}"
    token = REQUEST_ID.set(rid)
    start = time.perf_counter()
    status, size = 500, 0
    try:
        response = await handler(request)
        status, size = response.status, response.content_length or 0
        response.headers["X-Request-Id"] = rid
        return response
    except web.HTTPException as exc:  # answers the error middleware passes through (redirects, JSON errors)
        status = exc.status
        exc.headers["X-Request-Id"] = rid
        raise
    finally:
        route = _route(request)
        hook = request.app.get(METRICS_HOOK)
        if hook is not None:
            hook(request.method, route, status)
        if _access.isEnabledFor(logging.INFO):
            _ACCESS_LINES.write(rid, request.method, request.path_qs[:512], route, status,
                                round((time.perf_counter() - start) * 1000, 3), request.remote, size)
        REQUEST_ID.reset(token)
