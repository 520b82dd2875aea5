"""The monitor's HTTP endpoints (spec/monitor.md §3, §7): gossip, status, health, metrics and the C2SP
tlog-witness endpoint (spec/witness.md).

Thin handlers over :class:`~monitor.service.Monitor`, kept in the application as ``MONITOR``; errors map
to statuses in one table (:data:`STATUS`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable

from aiohttp import web

from tlog.checkpoint import Checkpoint
from tlog.errors import TlogError
from tlog.evidence import MAX_EVIDENCE_SIZE, Evidence
from tlog.note import MAX_NOTE_SIZE, parse_note
from tlog.witness import SIZE_CONTENT_TYPE, format_size

from .follower import BadInput, Follower
from .gossip import CHECKPOINT_TYPE
from .metrics import CONTENT_TYPE_LATEST
from .service import Monitor
from .witness import BadProof, Conflict, NotSignedByLog, UnknownOrigin, Witness

__all__ = ["MONITOR", "make_app", "STATUS"]

MONITOR = web.AppKey("monitor", Monitor)


class UnknownLog(Exception):
    """No followed log has this origin (or it has no verified checkpoint yet)."""


#: One error -> status table.  Anything else is a bug: 500 {"error": "internal error"}.
STATUS: dict[type[Exception], int] = {BadInput: 400, TlogError: 400, UnknownLog: 404, UnknownOrigin: 404,
                                      NotSignedByLog: 403, BadProof: 422}


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _check_query(request: web.Request) -> None:
    """Every query parameter at most once (spec/monitor.md): which of two ``origin`` values counts would
    otherwise be this monitor's choice."""
    query = request.query  # a multidict: its length counts repeated names
    if len(query) != len(set(query)):
        name = next(k for k in query if len(query.getall(k)) > 1)
        raise BadInput(f"query parameter {name[:40]!r} is given more than once")


@web.middleware
async def error_middleware(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        if request.query_string:
            _check_query(request)
        return await handler(request)
    except Conflict as exc:  # tlog-witness: 409 carries the known size, text/x.tlog.size
        return web.Response(status=409, body=format_size(exc.known_size), headers={"Content-Type": SIZE_CONTENT_TYPE})
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _error(exc.status, exc.reason)
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception as exc:
        for kind, status in STATUS.items():
            if isinstance(exc, kind):
                return _error(status, str(exc).splitlines()[0] if str(exc) else kind.__name__)
        print(f"tlog-monitor: internal error in {request.method} {request.path}: {type(exc).__name__}: {exc}",
              file=sys.stderr, flush=True)
        return _error(500, "internal error")


def _monitor(request: web.Request) -> Monitor:
    return request.app[MONITOR]


def _follower(request: web.Request, origin: str | None) -> Follower:
    follower = _monitor(request).followers.get(origin or "")
    if follower is None:
        raise UnknownLog(f"this monitor does not follow a log {origin!r}")
    return follower


def _peer(request: web.Request) -> str:
    return request.headers.get("Tlog-Monitor") or request.remote or "unknown peer"


async def healthz(request: web.Request) -> web.Response:
    m = _monitor(request)
    return web.json_response({"status": "ok", "logs": sorted(m.followers)})


async def metrics(request: web.Request) -> web.Response:
    m = _monitor(request)
    for f in m.followers.values():
        await f.refresh_metrics()
    return web.Response(body=m.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def status(request: web.Request) -> web.Response:
    m = _monitor(request)
    logs = [f.describe(await f.row()) for f in m.followers.values()]
    if m.quorum is not None:  # --witness-policy: who cosigned the checkpoint each log served
        for entry in logs:
            entry["witness_quorum"] = m.quorum.status.get(entry["origin"])
    return web.json_response({"logs": logs})


async def gossip_pull(request: web.Request) -> web.Response:
    """GET /gossip: the latest verified checkpoint of every followed log."""
    out = []
    for origin, f in sorted(_monitor(request).followers.items()):
        row = await f.row()
        if row.head is not None:
            out.append({"origin": origin, "checkpoint": row.head.note.decode("utf-8")})
    return web.json_response({"checkpoints": out})


async def gossip_checkpoint(request: web.Request) -> web.Response:
    """GET /gossip/checkpoint?origin=O: the latest verified checkpoint note of one log."""
    f = _follower(request, request.query.get("origin"))
    row = await f.row()
    if row.head is None:
        raise UnknownLog(f"no verified checkpoint of {f.origin} yet")
    return web.Response(body=row.head.note, headers={"Content-Type": CHECKPOINT_TYPE})


async def gossip_push(request: web.Request) -> web.Response:
    """POST /gossip with a checkpoint note: classified against the log like the log's own checkpoints."""
    body = await request.read()
    text, _ = parse_note(body)
    f = _follower(request, Checkpoint.parse(text).origin)
    verdict, reason, cp = await f.consider_peer(body, _peer(request))
    return web.json_response({"origin": f.origin, "size": cp.size, "verdict": verdict.value, "reason": reason})


async def evidence_pull(request: web.Request) -> web.Response:
    """GET /gossip/evidence?origin=O: every evidence document about O that proves misbehaviour."""
    f = _follower(request, request.query.get("origin"))
    docs = [json.loads(body) for body in await f.state.proven_evidence(f.origin)]
    return web.json_response({"origin": f.origin, "evidence": docs})


async def evidence_push(request: web.Request) -> web.Response:
    """POST /gossip/evidence with an evidence document: kept and alerted on if it proves a fork offline."""
    body = await request.read()
    f = _follower(request, Evidence.parse(body).origin)
    new = await f.adopt_evidence(body, _peer(request))
    return web.json_response({"origin": f.origin, "new": new})


def _witness(request: web.Request) -> Witness:
    witness = _monitor(request).witness
    if witness is None:
        raise UnknownOrigin("this monitor is not a witness (no --witness-key)")
    return witness


async def add_checkpoint(request: web.Request) -> web.Response:
    """POST /add-checkpoint (C2SP tlog-witness): 200 with the cosignature line, or the spec's status."""
    line = await _witness(request).add_checkpoint(await request.read(), _peer(request))
    return web.Response(body=line, headers={"Content-Type": "text/plain; charset=utf-8"})


async def witness_checkpoint(request: web.Request) -> web.Response:
    """GET /witness/checkpoint?origin=O: the latest checkpoint this witness cosigned for O, with its cosignature."""
    row = await _witness(request).cosigned(request.query.get("origin", ""))
    if row.note is None:
        raise UnknownLog(f"this witness has cosigned no checkpoint of {row.origin} yet")
    return web.Response(body=row.note, headers={"Content-Type": CHECKPOINT_TYPE, "Cache-Control": "no-store"})


async def witness_status(request: web.Request) -> web.Response:
    """GET /witness: this witness's verifier key and the latest cosigned size of every witnessed log."""
    return web.json_response(await _witness(request).describe())


def make_app(monitor: Monitor) -> web.Application:
    """The application; the monitor is opened and closed by the caller (monitor/__main__.py)."""
    app = web.Application(middlewares=[error_middleware], client_max_size=max(MAX_NOTE_SIZE, MAX_EVIDENCE_SIZE))
    app[MONITOR] = monitor
    app.add_routes([
        web.get("/healthz", healthz),
        web.get("/metrics", metrics),
        web.get("/status", status),
        web.get("/gossip", gossip_pull),
        web.post("/gossip", gossip_push),
        web.get("/gossip/checkpoint", gossip_checkpoint),
        web.get("/gossip/evidence", evidence_pull),
        web.post("/gossip/evidence", evidence_push),
        web.post("/add-checkpoint", add_checkpoint),
        web.get("/witness", witness_status),
        web.get("/witness/checkpoint", witness_checkpoint),
    ])
    return app
