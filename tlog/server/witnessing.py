"""The log's witness policy (normative: spec/witness.md §3): collect C2SP tlog-witness cosignatures on every new
checkpoint and serve them.

``config.json`` names the witnesses and the quorum::

    "witnesses": [{"name": "w1.example", "vkey": "w1.example+1234abcd+BK…", "url": "https://w1.example"}, …],
    "witness_quorum": 2

Life of a checkpoint (sequencer process only; HTTP workers only read ``DIR/witness.db``):

1. The sequencer commits a batch and calls :meth:`Submitter.on_batch` with the new head: it only records the
   head and wakes one task per witness, so appends never wait for a witness.
2. Each witness's task submits the newest head it has not cosigned yet (coalescing: heads committed while a
   submission is in flight are skipped) with ``old`` = the size that witness last cosigned for us and an
   RFC 9162 consistency proof from it; a ``409`` teaches it the witness's size and it retries at once.  A
   failure (down, timeout, 4xx/5xx, a bad answer) is recorded and retried with exponential backoff.
3. A ``200`` answer's cosignature lines by that witness's key are verified on the checkpoint and stored
   (:class:`CosignatureStore`, one row per size and witness) before the witness's known size moves.
4. ``GET /checkpoint`` serves the latest checkpoint with the cosignatures collected for it so far;
   ``GET /v1/checkpoint/cosigned`` the newest checkpoint that met the quorum; ``GET /v1/receipts/<I>`` a
   receipt against either (``?cosigned=1``); ``GET /v1/witnesses`` each witness's state.

Crash ordering: a cosignature is stored (committed) before the witness's size is; a crash in between only
costs a 409 round trip.  Nothing here is needed to verify the log: losing ``witness.db`` loses
cosignatures of past checkpoints, never data.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib import resources

import aiohttp
import aiosqlite
from aiohttp import web
from prometheus_client import Counter, Gauge

from ..audit import WitnessPolicy
from ..cosignature import CosignatureVerifier, verify_cosignature
from ..errors import FormatError, TlogError
from ..note import Signature, parse_note, parse_signature_line
from ..witness import ADD_CHECKPOINT_PATH, AddCheckpoint, attach_cosignatures, parse_cosignatures, parse_size
from .config import ConfigError, LogConfig
from .logs import log_event
from .state import LogState, NotFoundError, Receipt
from .storage import Head

__all__ = ["Witness", "WitnessingPolicy", "CosignatureStore", "CosignedView", "Cosigned", "Submitter", "WITNESSING",
           "SUBMITTER", "WitnessFailure", "witnessing_ctx", "routes", "served_checkpoint", "DB_NAME"]

log = logging.getLogger("tlog.witnessing")

DB_NAME = "witness.db"
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
MAX_KEPT_SIZES = 1000
_INT_RE = re.compile(r"0|[1-9][0-9]{0,18}")


class WitnessFailure(Exception):
    """One submission to one witness did not produce a valid cosignature (recorded, retried later)."""


# ============================================================================ configuration

@dataclass(frozen=True)
class Witness:
    """One configured witness: its name, its ``cosignature/v1`` key and its submission prefix."""

    name: str
    verifier: CosignatureVerifier
    url: str

    @property
    def vkey(self) -> str:
        return self.verifier.to_vkey()


@dataclass(frozen=True)
class WitnessingPolicy:
    witnesses: tuple[Witness, ...]
    quorum: int
    timeout_seconds: float

    @classmethod
    def from_config(cls, config: LogConfig) -> WitnessingPolicy | None:
        """The policy of ``config.json`` (None: no witnesses); ConfigError says what is wrong."""
        items, quorum = config.witnesses, config.witness_quorum
        if not isinstance(items, list) or isinstance(quorum, bool) or not isinstance(quorum, int):
            raise ConfigError("witnesses must be a list and witness_quorum an integer")
        if not items:
            if quorum != 0:
                raise ConfigError(f"witness_quorum is {quorum} but no witnesses are configured")
            return None
        witnesses: list[Witness] = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or set(item) != {"name", "vkey", "url"} or \
                    not all(isinstance(v, str) for v in item.values()):
                raise ConfigError(f"witness {i} must be {{\"name\": ..., \"vkey\": ..., \"url\": ...}}")
            try:
                verifier = CosignatureVerifier.from_vkey(item["vkey"])
            except TlogError as exc:
                raise ConfigError(f"witness {i} ({item['name']!r}): {exc}") from None
            if verifier.name != item["name"]:
                raise ConfigError(f"witness {i} is named {item['name']!r} but its vkey is for {verifier.name!r}")
            if not item["url"].startswith(("http://", "https://")):
                raise ConfigError(f"witness {item['name']!r}: url {item['url']!r} is not http(s)")
            if any(w.name == verifier.name for w in witnesses):
                raise ConfigError(f"witness {verifier.name!r} is listed twice")
            witnesses.append(Witness(verifier.name, verifier, item["url"].rstrip("/")))
        if not 1 <= quorum <= len(witnesses):
            raise ConfigError(f"witness_quorum {quorum} is not in [1, {len(witnesses)}]")
        timeout = config.witness_timeout_seconds
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < 3600:
            raise ConfigError(f"witness_timeout_seconds must be in (0, 3600), not {timeout!r}")
        return cls(tuple(witnesses), quorum, float(timeout))

    def verifier_policy(self) -> WitnessPolicy:
        """The same witnesses and quorum as a verifier's policy file (spec/audit.md §2)."""
        return WitnessPolicy(self.quorum, tuple(w.verifier for w in self.witnesses))

    def cosigners(self, note: bytes) -> list[str]:
        """Names of the configured witnesses whose cosignature on ``note`` verifies, in policy order."""
        text, sigs = parse_note(note)
        names = []
        for w in self.witnesses:
            for sig in sigs:
                if (sig.name, sig.key_id) == (w.name, w.verifier.key_id):
                    try:
                        verify_cosignature(w.verifier, text, sig)
                    except TlogError:
                        continue
                    names.append(w.name)
                    break
        return names


# ============================================================================ storage

class CosignatureStore:
    """``DIR/witness.db`` (schema: witnessing.sql).  Writes commit before they return; one lock serializes them."""

    def __init__(self, conn: aiosqlite.Connection):
        self._db = conn
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, data_dir: str) -> CosignatureStore:
        conn = await aiosqlite.connect(os.path.join(data_dir, DB_NAME), isolation_level=None)
        try:
            for pragma in ("busy_timeout = 10000", "journal_mode = WAL", "synchronous = FULL"):
                await conn.execute(f"PRAGMA {pragma}")
            await conn.executescript(resources.files("tlog.server").joinpath("witnessing.sql").read_text())
        except BaseException:
            await conn.close()
            raise
        return cls(conn)

    async def close(self) -> None:
        await self._db.close()

    async def _rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        async with self._lock:
            async with self._db.execute(sql, params) as cur:
                return [tuple(r) for r in await cur.fetchall()]

    async def known_size(self, w: Witness) -> int:
        rows = await self._rows("SELECT size FROM witness_sizes WHERE name = ? AND vkey = ?", (w.name, w.vkey))
        return rows[0][0] if rows else 0

    async def set_known_size(self, w: Witness, size: int) -> None:
        async with self._lock:
            await self._db.execute("INSERT INTO witness_sizes (name, vkey, size) VALUES (?, ?, ?) "
                                   "ON CONFLICT (name, vkey) DO UPDATE SET size = excluded.size", (w.name, w.vkey, size))

    async def add(self, head: Head, w: Witness, sig: Signature, timestamp: int, now_ms: int) -> None:
        """Store a verified cosignature of ``head`` by ``w`` (and the log's note), in one transaction."""
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                await self._db.execute("INSERT OR IGNORE INTO checkpoints (size, note) VALUES (?, ?)",
                                       (head.size, head.note))
                await self._db.execute(
                    "INSERT OR REPLACE INTO cosignatures (size, name, vkey, line, timestamp, received_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?)", (head.size, w.name, w.vkey, sig.to_line(), timestamp, now_ms))
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def cosignatures(self, size: int) -> list[tuple[str, str, str]]:
        """(name, vkey, line) of every stored cosignature of the checkpoint of ``size``."""
        return await self._rows("SELECT name, vkey, line FROM cosignatures WHERE size = ?", (size,))

    async def note(self, size: int) -> bytes | None:
        rows = await self._rows("SELECT note FROM checkpoints WHERE size = ?", (size,))
        return bytes(rows[0][0]) if rows else None

    async def sizes(self) -> dict[int, set[tuple[str, str]]]:
        """size -> the (name, vkey) pairs that cosigned it."""
        out: dict[int, set[tuple[str, str]]] = {}
        for size, name, vkey in await self._rows("SELECT size, name, vkey FROM cosignatures"):
            out.setdefault(size, set()).add((name, vkey))
        return out

    async def prune(self, keep_from: int) -> None:
        """Drop sizes below ``keep_from`` (the newest quorum checkpoint) and all but the newest MAX_KEPT_SIZES."""
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                for table in ("cosignatures", "checkpoints"):
                    await self._db.execute(
                        f"DELETE FROM {table} WHERE size < ? OR (size != ? AND size NOT IN "
                        f"(SELECT size FROM checkpoints ORDER BY size DESC LIMIT ?))", (keep_from, keep_from, MAX_KEPT_SIZES))
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")


# ============================================================================ what the handlers serve

@dataclass(frozen=True)
class Cosigned:
    size: int
    note: bytes
    witnesses: list[str]


class CosignedView:
    """Checkpoints with their cosignatures, as the handlers serve them.  In the sequencer process the
    submitter invalidates it on every new cosignature; an HTTP worker re-reads after ``ttl`` seconds."""

    def __init__(self, state: LogState, policy: WitnessingPolicy | None, store: CosignatureStore | None,
                 ttl: float = 0.1):
        self.state, self.policy, self.store, self.ttl = state, policy, store, ttl
        self._latest: tuple[int, bytes, float] | None = None
        self._quorum: tuple[Cosigned | None, float] | None = None

    def invalidate(self) -> None:
        self._latest = self._quorum = None

    async def latest(self, head: Head) -> bytes:
        """The note of ``head`` with the configured witnesses' cosignatures collected so far."""
        if self.policy is None or self.store is None:
            return head.note
        cached, now = self._latest, time.monotonic()
        if cached is not None and cached[0] == head.size and now - cached[2] < self.ttl:
            return cached[1]
        note = await self._assemble(head.size, head.note)
        self._latest = (head.size, note, now)
        return note

    async def _assemble(self, size: int, note: bytes) -> bytes:
        assert self.policy is not None and self.store is not None
        configured = {(w.name, w.vkey): i for i, w in enumerate(self.policy.witnesses)}
        rows = sorted((configured[(n, v)], line) for n, v, line in await self.store.cosignatures(size)
                      if (n, v) in configured)
        return attach_cosignatures(note, [parse_signature_line(line[:-1]) for _, line in rows])

    async def newest_cosigned(self) -> Cosigned | None:
        """The newest checkpoint cosigned by at least the quorum of the configured witnesses."""
        if self.policy is None or self.store is None:
            return None
        cached, now = self._quorum, time.monotonic()
        if cached is not None and now - cached[1] < self.ttl:
            return cached[0]
        found = None
        configured = {(w.name, w.vkey) for w in self.policy.witnesses}
        for size, signers in sorted((await self.store.sizes()).items(), reverse=True):
            if len({name for name, vkey in signers & configured}) >= self.policy.quorum:
                note = await self.store.note(size)
                if note is not None:
                    note = await self._assemble(size, note)
                    found = Cosigned(size, note, self.policy.cosigners(note))
                    break
        self._quorum = (found, now)
        return found


WITNESSING: web.AppKey[CosignedView] = web.AppKey("witnessing", CosignedView)


async def served_checkpoint(app: web.Application, head: Head) -> bytes:
    """``GET /checkpoint``: the latest checkpoint with whatever cosignatures it has so far."""
    view = app.get(WITNESSING)
    return head.note if view is None else await view.latest(head)


# ============================================================================ submitting

@dataclass
class _WitnessState:
    witness: Witness
    wake: asyncio.Event
    known: int = 0               # the size the witness last cosigned (our `old`)
    cosigned: int | None = None  # the largest of our checkpoints it cosigned (stored)
    last_error: str | None = None
    last_attempt_ms: int | None = None
    last_success_ms: int | None = None
    failures: int = 0


class Submitter:
    """One background task per witness; :meth:`on_batch` is the sequencer's hook (never blocks)."""

    def __init__(self, state: LogState, policy: WitnessingPolicy, store: CosignatureStore, view: CosignedView):
        self.state, self.policy, self.store, self.view = state, policy, store, view
        self.latest: Head = state.head
        self.witnesses = [_WitnessState(w, asyncio.Event()) for w in policy.witnesses]
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task] = []
        r = state.metrics.registry
        self.m_size = Gauge("tlog_witness_cosigned_tree_size", "Largest tree size each witness cosigned",
                            ["witness"], registry=r)
        self.m_quorum = Gauge("tlog_witness_quorum_tree_size", "Size of the newest checkpoint that met the quorum",
                              registry=r)
        self.m_submissions = Counter("tlog_witness_submissions", "add-checkpoint requests by witness and outcome",
                                     ["witness", "outcome"], registry=r)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.policy.timeout_seconds),
                                              headers={"User-Agent": "tlog-server"})
        for ws in self.witnesses:
            ws.known = await self.store.known_size(ws.witness)
            ws.wake.set()
            self._tasks.append(asyncio.get_running_loop().create_task(self._loop(ws), name=f"witness {ws.witness.name}"))
        found = await self.view.newest_cosigned()
        if found is not None:
            self.m_quorum.set(found.size)

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    def on_batch(self, leaves: object, head: Head) -> None:
        if head.size > self.latest.size:
            self.latest = head
            for ws in self.witnesses:
                ws.wake.set()

    async def _loop(self, ws: _WitnessState) -> None:
        backoff = BACKOFF_FIRST
        while True:
            await ws.wake.wait()
            ws.wake.clear()
            head = self.latest  # the newest: everything committed meanwhile is coalesced into it
            if ws.cosigned is not None and ws.cosigned >= head.size:
                continue
            try:
                await self._submit(ws, head)
                backoff = BACKOFF_FIRST
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the witness is down or misbehaves: never the log's problem
                ws.failures += 1
                ws.last_error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, WitnessFailure) else str(exc)
                self.m_submissions.labels(ws.witness.name, "failed").inc()
                log_event(log, "witness_failed", logging.WARNING, witness=ws.witness.name, tree_size=head.size,
                          error=ws.last_error[:500], retry_seconds=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                ws.wake.set()

    async def _submit(self, ws: _WitnessState, head: Head) -> None:
        """Submit ``head`` to one witness, following its 409 answers (tlog-witness), and store the cosignature."""
        w = ws.witness
        ws.last_attempt_ms = self.state.clock_ms()
        for _ in range(4):
            if ws.known > head.size:
                raise WitnessFailure(f"{w.name} cosigned size {ws.known} of this log, larger than its size "
                                     f"{head.size}: a rollback or a fork of this log")
            proof = [] if ws.known in (0, head.size) else await self.state.consistency_proof(ws.known, head.size)
            status, body = await self._post(w, AddCheckpoint(ws.known, tuple(proof), head.note).format())
            if status == 200:
                await self._accept(ws, head, body)
                return
            if status != 409:
                raise WitnessFailure(f"{w.name} answered {status}: {body[:200].decode('utf-8', 'replace').strip()}")
            size = parse_size(body)
            self.m_submissions.labels(w.name, "conflict").inc()
            if size == ws.known:
                raise WitnessFailure(f"{w.name} holds another checkpoint of size {size} (409 on the same size)")
            ws.known = size
            await self.store.set_known_size(w, size)
        raise WitnessFailure(f"{w.name} kept answering 409")

    async def _post(self, w: Witness, body: bytes) -> tuple[int, bytes]:
        assert self._session is not None
        async with self._session.post(w.url + ADD_CHECKPOINT_PATH, data=body,
                                      headers={"Content-Type": "text/plain; charset=utf-8"}) as resp:
            return resp.status, await resp.content.read(1 << 16)

    async def _accept(self, ws: _WitnessState, head: Head, body: bytes) -> None:
        w = ws.witness
        text = parse_note(head.note)[0]
        mine = [s for s in parse_cosignatures(body) if (s.name, s.key_id) == (w.name, w.verifier.key_id)]
        if not mine:
            raise WitnessFailure(f"{w.name} answered 200 without a cosignature by its key {w.vkey}")
        timestamps = [verify_cosignature(w.verifier, text, s) for s in mine]  # SignatureError: a bad one
        now = self.state.clock_ms()
        await self.store.add(head, w, mine[0], timestamps[0], now)  # durable before the size moves
        ws.known, ws.cosigned, ws.last_error, ws.last_success_ms = head.size, head.size, None, now
        await self.store.set_known_size(w, head.size)
        self.m_size.labels(w.name).set(head.size)
        self.m_submissions.labels(w.name, "cosigned").inc()
        self.view.invalidate()
        found = await self.view.newest_cosigned()
        if found is not None:
            self.m_quorum.set(found.size)
            await self.store.prune(found.size)

    def describe(self) -> list[dict]:
        return [{"name": ws.witness.name, "vkey": ws.witness.vkey, "url": ws.witness.url, "known_size": ws.known,
                 "cosigned_size": ws.cosigned, "last_error": ws.last_error, "last_attempt_ms": ws.last_attempt_ms,
                 "last_success_ms": ws.last_success_ms, "failures": ws.failures} for ws in self.witnesses]


SUBMITTER: web.AppKey[Submitter] = web.AppKey("witness-submitter", Submitter)


def witnessing_ctx(state_key: web.AppKey[LogState], *, submit: bool
                   ) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context after the log opened: the view (every process) and the submitter (``submit``: the
    process that owns the sequencer)."""
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        state = app[state_key]
        policy = WitnessingPolicy.from_config(state.config)
        store = await CosignatureStore.open(state.data_dir) if policy is not None else None
        view = app[WITNESSING] = CosignedView(state, policy, store)
        submitter = None
        try:
            if submit and policy is not None and store is not None:
                submitter = app[SUBMITTER] = Submitter(state, policy, store, view)
                state.sequencer.on_batch.append(submitter.on_batch)
                await submitter.start()
            yield
        finally:
            if submitter is not None:
                await submitter.stop()
            if store is not None:
                await store.close()
    return ctx


# ============================================================================ HTTP

def _view(request: web.Request) -> CosignedView:
    return request.app[WITNESSING]


def _quorum_fields(view: CosignedView, names: list[str]) -> dict:
    quorum = view.policy.quorum if view.policy else 0
    return {"witnesses": names, "quorum": quorum, "quorum_met": len(names) >= quorum}


async def get_cosigned_checkpoint(request: web.Request) -> web.Response:
    """GET /v1/checkpoint/cosigned: the newest checkpoint that met the witness quorum, with the cosignatures."""
    view = _view(request)
    if view.policy is None:
        raise NotFoundError("this log has no witness policy")
    found = await view.newest_cosigned()
    if found is None:
        raise NotFoundError(f"no checkpoint has met the witness quorum ({view.policy.quorum} of "
                            f"{len(view.policy.witnesses)}) yet")
    return web.Response(body=found.note, content_type="text/plain", charset="utf-8",
                        headers={"Cache-Control": "no-store"})


async def get_receipt(request: web.Request) -> web.Response:
    """GET /v1/receipts/<I>[?cosigned=1]: a receipt (tlog-proof) for entry I against the latest checkpoint with
    the cosignatures it has so far, or against the newest checkpoint that met the quorum (404 if none covers I)."""
    view, raw = _view(request), request.match_info["index"]
    if not _INT_RE.fullmatch(raw) or int(raw) >= 1 << 63:
        raise FormatError(f"entry index must be a decimal integer, not {raw[:40]!r}")
    if set(request.query) - {"cosigned"} or request.query.get("cosigned", "0") not in ("0", "1"):
        raise FormatError("the only query parameter is cosigned=0|1")
    index, state = int(raw), view.state
    head = state.head
    if index >= head.size:
        raise NotFoundError(f"no entry {index}: the tree has {head.size} entries")
    if request.query.get("cosigned") == "1":
        found = await view.newest_cosigned()
        if found is None or index >= found.size:
            quorum = f"{view.policy.quorum} of {len(view.policy.witnesses)}" if view.policy else "no witness policy"
            raise NotFoundError(f"entry {index} is not yet in a checkpoint that met the witness quorum ({quorum}); "
                                f"newest such checkpoint: {found.size if found else 'none'}")
        size, note, names = found.size, found.note, found.witnesses
    else:
        size, note = head.size, await view.latest(head)
        names = view.policy.cosigners(note) if view.policy else []
    proof = await state.inclusion_proof(index, size)
    out = Receipt(index, await state.leaf(index), note, proof, False).to_json()
    del out["duplicate"]
    out.update(tree_size=size, **_quorum_fields(view, names))
    return web.json_response(out)


async def get_witnesses(request: web.Request) -> web.Response:
    """GET /v1/witnesses: the policy (as a verifier's policy file) and, in the sequencer process, each
    witness's submission state."""
    view = _view(request)
    if view.policy is None:
        return web.json_response({"policy": None, "witnesses": [], "cosigned_size": None,
                                  "tree_size": view.state.head.size})
    submitter = request.app.get(SUBMITTER)
    found = await view.newest_cosigned()
    status = submitter.describe() if submitter is not None else [
        {"name": w.name, "vkey": w.vkey, "url": w.url} for w in view.policy.witnesses]
    return web.json_response({"policy": json.loads(view.policy.verifier_policy().to_json()), "witnesses": status,
                              "cosigned_size": found.size if found else None, "tree_size": view.state.head.size})


def routes() -> list[web.RouteDef]:
    return [
        web.get("/v1/checkpoint/cosigned", get_cosigned_checkpoint),
        web.get(r"/v1/receipts/{index}", get_receipt),
        web.get("/v1/witnesses", get_witnesses),
    ]
