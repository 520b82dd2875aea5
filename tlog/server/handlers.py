"""Thin aiohttp handlers and the one error → status table.

Every handler parses its input strictly, calls one method of :class:`~tlog.server.state.LogState` and
formats the answer.  Errors are mapped to statuses in :data:`ERROR_STATUS`, in one middleware; a
client's mistake is always a 4xx with a one-line JSON reason, never a 500 and never a traceback.
See spec/http-api.md.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import re

from aiohttp import web

from ..errors import FormatError, KeyRegistryError, ProofError, SignatureError, TlogError
from ..tiles import parse_tile_path
from . import privacy, search
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .sequencer import BacklogFullError, WritesStoppedError
from .state import LogState, NotFoundError, RateLimitedError, Receipt, TooLargeError
from .storage import StorageFullError
from .tokens import TokenError, TokenScopeError
from .witnessing import served_checkpoint

__all__ = ["STATE", "ERROR_STATUS", "error_middleware", "routes"]

log = logging.getLogger("tlog.http")

class RequestTimeoutError(Exception):
    """The client did not send its body in time (a slow-trickle upload)."""


STATE: web.AppKey[LogState] = web.AppKey("state", LogState)

#: The error → HTTP status table (first match wins; order subclasses before their bases).
ERROR_STATUS: list[tuple[type[BaseException], int]] = [
    (TokenError, 401),
    (TokenScopeError, 403),
    (TooLargeError, 413),
    (RequestTimeoutError, 408),
    (NotFoundError, 404),
    (RateLimitedError, 429),
    (BacklogFullError, 503),
    (WritesStoppedError, 503),
    (StorageFullError, 507),
    (SignatureError, 403),
    (KeyRegistryError, 403),
    (ProofError, 400),
    (FormatError, 400),
    (TlogError, 400),
]

_MAX_INT = (1 << 63) - 1



_INT_RE = re.compile(r"0|[1-9][0-9]{0,18}")


def _json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message.splitlines()[0] if message else "error"}, status=status,
                             headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler):
    try:
        if request.query_string:
            _check_query(request)
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status >= 400 and exc.content_type != "application/json":
            return _json_error(exc.status, exc.reason if exc.text is None else exc.text.strip(),
                               headers={k: v for k, v in exc.headers.items() if k == "Allow"})
        raise
    except Exception as exc:
        for kind, status in ERROR_STATUS:
            if isinstance(exc, kind):
                headers = None
                if isinstance(exc, (RateLimitedError, BacklogFullError, WritesStoppedError)):
                    retry = getattr(exc, "retry_after", 1.0)
                    headers = {"Retry-After": str(max(1, int(retry + 0.999)))}
                elif isinstance(exc, (TokenError, TokenScopeError)):  # RFC 6750 §3
                    code = "invalid_token" if isinstance(exc, TokenError) else "insufficient_scope"
                    headers = {"WWW-Authenticate": f'Bearer realm="tlog", error="{code}"'}
                return _json_error(status, str(exc), headers)
        log.exception("internal error on %s %s", request.method, request.path)
        return _json_error(500, "internal error")


# -- parameter parsing -----------------------------------------------------------------------------

def _check_query(request: web.Request) -> None:
    """Every query parameter at most once (spec/http-api.md): with a repeat, which value counts would be
    this server's choice, and a proxy or cache in front of it may choose the other."""
    query = request.query  # a multidict: its length counts repeated names
    if len(query) != len(set(query)):
        name = next(k for k in query if len(query.getall(k)) > 1)
        raise FormatError(f"query parameter {name[:40]!r} is given more than once")


def _int_param(request: web.Request, name: str) -> int:
    raw = request.query.get(name)
    if raw is None:
        raise FormatError(f"missing query parameter {name!r}")
    if not _INT_RE.fullmatch(raw) or int(raw) > _MAX_INT:
        raise FormatError(f"query parameter {name!r} must be a decimal integer in [0, 2**63-1], not {raw[:40]!r}")
    return int(raw)


def _b64_field(obj: dict, name: str) -> bytes:
    value = obj.get(name)
    if not isinstance(value, str):
        raise FormatError(f"field {name!r} must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FormatError(f"field {name!r} is not valid base64") from exc
    if base64.b64encode(raw).decode() != value:
        raise FormatError(f"field {name!r} is not canonical base64")
    return raw


async def _read_at_most(request: web.Request, n: int) -> bytes:
    """The body up to ``n`` bytes (``StreamReader.read(n)`` alone may return any shorter prefix)."""
    chunks: list[bytes] = []
    have = 0
    while have < n:
        chunk = await request.content.read(n - have)
        if not chunk:
            break
        chunks.append(chunk)
        have += len(chunk)
    return b"".join(chunks)


async def _json_body(request: web.Request, fields: set[str]) -> dict:
    limit = request.app[STATE].config.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise TooLargeError(f"body is {request.content_length} bytes, the limit is {limit}")
    if request.content.is_eof():  # the whole body is already here (the usual small POST): no timer
        body = request.content.read_nowait(-1)
    else:
        try:
            body = await asyncio.wait_for(_read_at_most(request, limit + 1),
                                          request.app[STATE].config.request_timeout_seconds)
        except asyncio.TimeoutError as exc:
            raise RequestTimeoutError("request body not received in time") from exc
    if len(body) > limit:
        raise TooLargeError(f"body is over the limit of {limit} bytes")
    try:
        obj = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise FormatError("body is not UTF-8") from exc
    except ValueError as exc:
        raise FormatError(f"body is not JSON: {exc}") from exc
    except RecursionError as exc:  # "[[[[…" nested deeper than the parser's stack: a 500 before
        raise FormatError("body is not JSON: nested too deeply") from exc
    if not isinstance(obj, dict):
        raise FormatError("body must be a JSON object")
    unknown = set(obj) - fields
    if unknown:
        raise FormatError(f"unknown fields {sorted(unknown)}")
    return obj


def _state(request: web.Request) -> LogState:
    return request.app[STATE]


# -- write endpoints -------------------------------------------------------------------------------

def _receipt_response(receipt: Receipt) -> web.Response:
    return web.Response(body=receipt.to_json_bytes(), status=200 if receipt.duplicate else 201,
                        content_type="application/json", charset="utf-8")


async def post_entry(request: web.Request) -> web.Response:
    obj = await _json_body(request, {"entry", "signature", "salt", "payload"})
    receipt = await _state(request).append_event(
        _b64_field(obj, "entry"), _b64_field(obj, "signature"), _b64_field(obj, "salt"),
        _b64_field(obj, "payload"))
    return _receipt_response(receipt)


async def post_operator_entry(request: web.Request) -> web.Response:
    obj = await _json_body(request, {"entry", "signature"})
    receipt = await _state(request).append_operator(_b64_field(obj, "entry"), _b64_field(obj, "signature"))
    return _receipt_response(receipt)


# -- tlog-tiles read endpoints ---------------------------------------------------------------------

async def get_checkpoint(request: web.Request) -> web.Response:
    """The latest checkpoint, with the witness cosignatures collected for it so far (spec/witness.md §3)."""
    note = await served_checkpoint(request.app, await _state(request).latest_head())
    return web.Response(body=note, content_type="text/plain", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


_IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}


async def get_tile(request: web.Request) -> web.Response:
    tile = parse_tile_path("tile/" + request.match_info["path"])
    state = _state(request)
    data = await (state.entry_bundle(tile) if tile.is_entries else state.hash_tile(tile))
    headers = _IMMUTABLE if tile.is_full else {"Cache-Control": "no-store"}
    return web.Response(body=data, content_type="application/octet-stream", headers=headers)


# -- JSON read endpoints ---------------------------------------------------------------------------

def _proof_response(head: bytes, proof: list[bytes]) -> web.Response:
    """``{<head>,"proof":[…]}`` written directly: base64 needs no JSON escaping, and ``json.dumps``
    was a tenth of a proof request's time."""
    items = b'","'.join(base64.b64encode(h) for h in proof)
    body = b'{%s,"proof":[%s]}' % (head, b'"' + items + b'"' if proof else b"")
    return web.Response(body=body, content_type="application/json", charset="utf-8")


async def get_inclusion(request: web.Request) -> web.Response:
    state = _state(request)
    size = _int_param(request, "tree_size")
    if "hash" in request.query:
        if "index" in request.query:
            raise FormatError("give either index or hash, not both")
        index = await state.find_leaf_hash(_b64_field(dict(request.query), "hash"), size)
    else:
        index = _int_param(request, "index")
    proof = await state.inclusion_proof(index, size)
    return _proof_response(b'"index":%d,"tree_size":%d' % (index, size), proof)


async def get_consistency(request: web.Request) -> web.Response:
    first, second = _int_param(request, "first"), _int_param(request, "second")
    proof = await _state(request).consistency_proof(first, second)
    return _proof_response(b'"first":%d,"second":%d' % (first, second), proof)


async def get_entry(request: web.Request) -> web.Response:
    raw = request.match_info["index"]
    if not _INT_RE.fullmatch(raw) or int(raw) > _MAX_INT:
        raise FormatError(f"entry index must be a decimal integer, not {raw[:40]!r}")
    state = _state(request)
    reader = await privacy.authenticate(state, request.headers.get("Authorization"))
    index = int(raw)
    [view] = await privacy.entry_views(state, [(index, await state.leaf(index))], reader)
    return web.json_response(view)


async def search_entries(request: web.Request) -> web.Response:
    query = search.parse_search_query(request.query)
    state = _state(request)
    reader = await privacy.authenticate(state, request.headers.get("Authorization"))
    size, rows, cursor = await search.search(state, query)
    views = await privacy.entry_views(state, rows, reader)
    return web.json_response({"tree_size": size, "query": query.to_json(), "entries": views, "next": cursor})


async def get_key_timeline(request: web.Request) -> web.Response:
    return web.json_response(await search.key_timeline(_state(request), request.match_info["key"]))


async def get_metrics(request: web.Request) -> web.Response:
    return web.Response(body=await _state(request).metrics_text(),
                        headers={"Content-Type": METRICS_CONTENT_TYPE, "Cache-Control": "no-store"})


async def get_keys(request: web.Request) -> web.Response:
    state = _state(request)
    return web.json_response({"tree_size": state.head.size, "registry": state.registry_json()})


async def get_healthz(request: web.Request) -> web.Response:
    state = _state(request)
    stopped = state.sequencer.stopped
    body = {"status": "ok" if stopped is None else "degraded", "tree_size": state.head.size,
            "origin": state.config.origin, "backlog": state.sequencer.backlog(),
            "writes": "ok" if stopped is None else f"stopped: {stopped}"}
    return web.json_response(body, status=200 if stopped is None else 503)


def routes() -> list[web.RouteDef]:
    return [
        web.get("/checkpoint", get_checkpoint),
        web.get(r"/tile/{path:.+}", get_tile),
        web.post("/v1/entries", post_entry),
        web.post("/v1/operator-entries", post_operator_entry),
        web.get("/v1/entries", search_entries),
        web.get(r"/v1/entries/{index}", get_entry),
        web.get("/v1/proofs/inclusion", get_inclusion),
        web.get("/v1/proofs/consistency", get_consistency),
        web.get("/v1/keys", get_keys),
        web.get("/v1/keys/{key}", get_key_timeline),
        web.get("/healthz", get_healthz),
        web.get("/metrics", get_metrics),
    ]
