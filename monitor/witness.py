"""Witness mode (C2SP tlog-witness, normative: spec/witness.md): the monitor cosigns checkpoints of the logs it
is configured to witness, and checks the witness quorum of the logs it follows (``--witness-policy``).

``POST /add-checkpoint`` (monitor/app.py) calls :meth:`Witness.add_checkpoint`, which maps every outcome to
the status tlog-witness prescribes through the exceptions below (monitor/app.py ``STATUS``):

=====================================================================  ======  =========================
condition                                                              status  exception
=====================================================================  ======  =========================
malformed body, note or checkpoint; ``old`` larger than the checkpoint   400     FormatError
origin not witnessed here                                                404     UnknownOrigin
no signature of the log's key verifies (or one of them is bad)          403     NotSignedByLog
``old`` is not the size last cosigned (the body is that size)           409     Conflict
same size as the last cosigned, another root (a proven fork)            409     Conflict
the consistency proof does not verify                                    422     BadProof
=====================================================================  ======  =========================

Life of a request (crash ordering): parse and verify; read the latest cosigned checkpoint ``(size, root)``;
check ``old``, the proof and the roots (``tlog.witness.check_add_checkpoint``); cosign; then one
compare-and-swap ``UPDATE witnessed SET size = new, … WHERE origin = O AND size = old AND root IS old_root``
stores the new checkpoint *with* the cosignature; only then the answer is sent.  A request that loses the
race (another one moved the size first) changes nothing and gets 409 with the new size, so concurrent
requests can never move the size backwards.  A crash after the UPDATE and before the answer leaves the new
checkpoint stored and the client without a cosignature: its retry with the old size gets 409 and the new
size, and a request ``old N`` for the same checkpoint of size ``N`` is cosigned again (same size, same
root).  A crash before the UPDATE changes nothing.  Refused requests that failed consistency (422, and the
same-size fork) are stored as evidence (table ``witness_refusals`` and ``STATE/evidence/witness-*.json``);
a same-size fork also raises a ``fork`` alert with ``fork-same-size`` evidence, which proves it offline.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import stat
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client import Counter

from tlog.audit import WitnessPolicy
from tlog.checkpoint import Checkpoint, open_checkpoint
from tlog.cosignature import CosignatureSigner, check_quorum, generate_cosigner
from tlog.errors import FormatError, InvariantError, ProofError, SignatureError, TlogError
from tlog.evidence import Evidence, EvidenceKind
from tlog.note import Verifier, parse_signature_line
from tlog.witness import AddCheckpoint, SizeConflict, attach_cosignatures, check_add_checkpoint

from .alerts import Alert, Alerter, Kind, Severity, _safe, _write_atomic
from .follower import Follower, pair_digest
from .metrics import Metrics
from .state import MonitorState, Signed

__all__ = ["WitnessedLog", "Witness", "Cosigned", "UnknownOrigin", "NotSignedByLog", "Conflict", "BadProof",
           "QuorumWatch", "load_witness_key", "write_witness_key", "REFUSAL_FORMAT", "MAX_REFUSALS"]

REFUSAL_FORMAT = "tlog-witness-refusal/v1"
#: Refusals kept per origin: anyone holding two of a log's checkpoints can make requests that fail.
MAX_REFUSALS = 10_000


class UnknownOrigin(Exception):
    """404: this monitor does not witness a log with that origin."""


class NotSignedByLog(Exception):
    """403: no signature of the log's key(s) verifies on the checkpoint."""


class Conflict(Exception):
    """409: the answer's body is ``known_size`` (``text/x.tlog.size``)."""

    def __init__(self, message: str, known_size: int):
        super().__init__(message)
        self.known_size = known_size


class BadProof(Exception):
    """422: the consistency proof from the last cosigned checkpoint does not verify."""


@dataclass(frozen=True)
class WitnessedLog:
    """A log this monitor witnesses: its origin (the key name) and its verifier key(s), e.g. during a rotation."""

    origin: str
    verifiers: tuple[Verifier, ...]
    vkeys: tuple[str, ...]


@dataclass(frozen=True)
class Cosigned:
    """The latest checkpoint cosigned for an origin (size 0 and no note: nothing yet)."""

    origin: str
    size: int
    root: bytes | None
    note: bytes | None
    cosigned_ms: int | None


class _Store:
    """The ``witnessed`` and ``witness_refusals`` tables (monitor/schema.sql) on the monitor's state
    connection: every write commits (WAL, synchronous=FULL) before it returns."""

    def __init__(self, state: MonitorState):
        self.state = state

    async def ensure(self, origin: str) -> None:
        await self.state._write("INSERT OR IGNORE INTO witnessed (origin) VALUES (?)", (origin,))

    async def get(self, origin: str) -> Cosigned | None:
        rows = await self.state._rows("SELECT size, root, note, cosigned_ms FROM witnessed WHERE origin = ?",
                                      (origin,))
        if not rows:
            return None
        size, root, note, when = rows[0]
        return Cosigned(origin, size, None if root is None else bytes(root), None if note is None else bytes(note),
                        when)

    async def advance(self, origin: str, old: Cosigned, cp: Checkpoint, note: bytes, now_ms: int) -> bool:
        """Compare-and-swap from ``old`` to ``cp``: False (nothing written) if another request moved it."""
        if cp.size < old.size:
            raise InvariantError(f"witnessed size of {origin} would move from {old.size} to {cp.size}")
        count = await self.state._write(
            "UPDATE witnessed SET size = ?, root = ?, note = ?, cosigned_ms = ? "
            "WHERE origin = ? AND size = ? AND root IS ?", (cp.size, cp.root, note, now_ms, origin, old.size, old.root))
        return count == 1

    async def refusal_count(self, origin: str) -> int:
        return int(await self.state._one("SELECT count(*) FROM witness_refusals WHERE origin = ?", (origin,)) or 0)

    async def add_refusal(self, digest: str, origin: str, status: int, reason: str, request: bytes,
                          known: bytes | None, path: str, peer: str, now_ms: int) -> None:
        await self.state._write(
            "INSERT OR IGNORE INTO witness_refusals (digest, origin, status, reason, request, known_note, path, "
            "peer, time_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (digest, origin, status, reason, request, known, path, peer, now_ms))

    async def refusals(self, origin: str) -> list[dict]:
        rows = await self.state._rows("SELECT digest, status, reason, path, peer, time_ms FROM witness_refusals "
                                      "WHERE origin = ? ORDER BY time_ms, digest", (origin,))
        return [dict(zip(("digest", "status", "reason", "path", "peer", "time_ms"), r)) for r in rows]


class Witness:
    """A C2SP tlog-witness over the monitor's state, cosigning with ``signer`` (a ``cosignature/v1`` key)."""

    def __init__(self, state: MonitorState, signer: CosignatureSigner, logs: Iterable[WitnessedLog],
                 alerter: Alerter, metrics: Metrics, *, clock_ms: Callable[[], int],
                 crash_after_persist: bool = False):
        self.store = _Store(state)
        self.directory = state.directory
        self.signer = signer
        self.logs = {log.origin: log for log in logs}
        self.alerter = alerter
        self.clock = clock_ms
        self.crash_after_persist = crash_after_persist  # test hook: SIGKILL between persist and reply
        self.requests = Counter("tlog_monitor_witness_requests", "add-checkpoint requests, by origin and status",
                                ["origin", "status"], registry=metrics.registry)

    @property
    def vkey(self) -> str:
        """This witness's ``cosignature/v1`` verifier key (type 0x04), for logs' witness policies."""
        return self.signer.to_vkey()

    async def start(self) -> None:
        for origin in self.logs:
            await self.store.ensure(origin)

    async def cosigned(self, origin: str) -> Cosigned:
        """The latest checkpoint cosigned for ``origin`` (UnknownOrigin if it is not witnessed here)."""
        row = await self.store.get(origin) if origin in self.logs else None
        if row is None:
            raise UnknownOrigin(f"this monitor does not witness a log {origin!r}")
        return row

    async def add_checkpoint(self, body: bytes, peer: str) -> bytes:
        """tlog-witness add-checkpoint: the cosignature line, or one of the exceptions of the module table."""
        origin = "?"
        try:
            req = AddCheckpoint.parse(body)
            origin = req.origin()
            answer = await self._add(req, origin, body, peer)
        except Exception as exc:
            self.requests.labels(origin if origin in self.logs else "?", str(_status_of(exc))).inc()
            raise
        self.requests.labels(origin, "200").inc()
        return answer

    async def _add(self, req: AddCheckpoint, origin: str, body: bytes, peer: str) -> bytes:
        log = self.logs.get(origin)
        if log is None:
            raise UnknownOrigin(f"this monitor does not witness a log {origin!r}")
        try:
            cp, _ = open_checkpoint(req.note, origin, log.verifiers)
        except SignatureError as exc:
            raise NotSignedByLog(f"the checkpoint is not signed by the key of {origin}: {exc}") from None
        known = await self.cosigned(origin)
        try:
            check_add_checkpoint(req, cp, known.size, known.root)
        except SizeConflict as exc:
            if exc.same_size_fork:
                await self._refused(log, 409, str(exc), body, req.note, known, peer)
            raise Conflict(str(exc), exc.known_size) from None
        except ProofError as exc:
            await self._refused(log, 422, str(exc), body, req.note, known, peer)
            raise BadProof(f"consistency proof from size {known.size} to {cp.size} does not verify: {exc}") from None
        now = self.clock()
        line = self.signer.cosign(req.checkpoint_text(), now // 1000)
        note = attach_cosignatures(req.note, [parse_signature_line(line[:-1])])
        # The one durable step, atomic with the check of the old size (crash ordering: module docstring).
        if not await self.store.advance(origin, known, cp, note, now):
            current = await self.cosigned(origin)
            raise Conflict(f"another request moved {origin} to size {current.size} first", current.size)
        if self.crash_after_persist:
            os.kill(os.getpid(), signal.SIGKILL)
        return line.encode("utf-8")

    async def _refused(self, log: WitnessedLog, status: int, reason: str, body: bytes, note: bytes,
                       known: Cosigned, peer: str) -> None:
        """Keep a request that failed consistency (and alert on a same-size fork, which it proves)."""
        now = self.clock()
        digest = hashlib.sha256(body).hexdigest()
        if await self.store.refusal_count(log.origin) < MAX_REFUSALS:
            doc = {"format": REFUSAL_FORMAT, "origin": log.origin, "status": status, "reason": reason,
                   "request": body.decode("utf-8"), "known_checkpoint": None if known.note is None
                   else known.note.decode("utf-8"), "peer": peer, "time_ms": now}
            path = os.path.abspath(os.path.join(self.directory, "evidence",
                                                f"witness-{_safe(log.origin)}-{digest[:16]}.json"))
            if not os.path.exists(path):
                await asyncio.to_thread(_write_atomic, path, json.dumps(doc, indent=1, sort_keys=True).encode())
            await self.store.add_refusal(digest, log.origin, status, reason, body, known.note, path, peer, now)
        else:
            print(f"tlog-monitor: witness: {log.origin}: refusal from {peer} not stored (already {MAX_REFUSALS})",
                  file=sys.stderr, flush=True)
        if status == 409 and known.note is not None:
            await self._fork_alert(log, known, note, peer, now)

    async def _fork_alert(self, log: WitnessedLog, known: Cosigned, note: bytes, peer: str, now: int) -> None:
        a, b = Signed.from_note(known.note or b""), Signed.from_note(note)
        ev = Evidence(EvidenceKind.FORK_SAME_SIZE, log.origin, log.vkeys[0], a.note, b.note,
                      observed=({"time_ms": known.cosigned_ms or now, "source": "witness"},
                                {"time_ms": now, "source": f"add-checkpoint from {peer}"}), detected_ms=now)
        await self.alerter.raise_alert(Alert(
            Kind.FORK, Severity.ALERT, log.origin,
            f"{log.origin}: fork: asked to cosign size {b.size} with another root than the one this witness "
            f"cosigned (from {peer}); the evidence proves misbehaviour offline",
            f"fork:{log.origin}:proven:{pair_digest(a.checkpoint, b.checkpoint)}", now,
            details={"sizes": [a.size, b.size], "source": f"witness add-checkpoint from {peer}", "proven": True}), ev)

    async def describe(self) -> dict:
        """GET /witness: the verifier key and the latest cosigned size per witnessed log."""
        logs = []
        for origin in sorted(self.logs):
            row = await self.cosigned(origin)
            logs.append({"origin": origin, "size": row.size, "cosigned_ms": row.cosigned_ms,
                         "refusals": await self.store.refusal_count(origin)})
        return {"vkey": self.vkey, "logs": logs}


def _status_of(exc: Exception) -> int:
    for kind, status in ((UnknownOrigin, 404), (NotSignedByLog, 403), (Conflict, 409), (BadProof, 422),
                         (TlogError, 400)):
        if isinstance(exc, kind):
            return status
    return 500


# ------------------------------------------------------------------ the witness key

def write_witness_key(path: str, name: str, seed: bytes | None = None) -> CosignatureSigner:
    """``tlog-monitor keygen``: a new cosignature/v1 key written to ``path`` (0600, never overwritten)."""
    signer = generate_cosigner(name, seed)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # FileExistsError: refuse to overwrite
    try:
        os.write(fd, (signer.to_skey() + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return signer


def load_witness_key(path: str) -> CosignatureSigner:
    """Read a witness key file; refuses one that group or others can access (ValueError with the reason)."""
    st = os.stat(path)
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"witness key {path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
                         f"run: chmod 600 {path}")
    with open(path, encoding="utf-8") as f:
        return CosignatureSigner.from_skey(f.read().strip())


# ------------------------------------------------------------------ --witness-policy for followed logs

class QuorumWatch:
    """With ``--witness-policy``: after every poll, which of the policy's witnesses cosigned the checkpoint the
    log served, and whether that meets the quorum.  A log whose served checkpoint stays below the quorum for
    longer than ``stale_after_ms`` raises one ``witness-quorum`` warning per episode (clients requiring the
    quorum cannot verify its new entries, and a log that keeps witnesses away is one that could split its
    view); a cosignature from a listed witness that does not verify raises it at once."""

    def __init__(self, policy: WitnessPolicy, alerter: Alerter, *, clock_ms: Callable[[], int], stale_after_ms: int):
        self.policy = policy
        self.alerter = alerter
        self.clock = clock_ms
        self.stale_after_ms = stale_after_ms
        self.status: dict[str, dict] = {}

    async def check(self, f: Follower) -> dict | None:
        row = await f.row()
        if row.last_note is None:
            return None
        now = self.clock()
        size = Signed.from_note(row.last_note).size
        error = None
        try:
            names: Sequence[str] = check_quorum(row.last_note, self.policy.witnesses, 0, origin=f.origin)
        except TlogError as exc:
            names, error = [], str(exc)
        met = error is None and len(names) >= self.policy.quorum
        prior = self.status.get(f.origin, {})
        since = None if met else (prior.get("below_quorum_since_ms") or now)
        self.status[f.origin] = status = {"size": size, "witnesses": list(names), "quorum": self.policy.quorum,
                                          "quorum_met": met, "below_quorum_since_ms": since, "error": error}
        if not met and (error is not None or now - (since or now) > self.stale_after_ms):
            await self.alerter.raise_alert(Alert(
                Kind.WITNESS_QUORUM, Severity.WARNING, f.origin,
                f"{f.origin}: checkpoint of size {size} has {len(names)} of the {self.policy.quorum} witness "
                f"cosignatures the policy needs" + (f" ({error})" if error else
                                                    f", for {(now - (since or now)) / 1000:.1f} s"),
                f"witness-quorum:{f.origin}:{since}", now,
                details={"size": size, "witnesses": list(names), "quorum": self.policy.quorum, "error": error}))
        return status


def parse_witnessed(values: Iterable[str], read: Callable[[str], tuple[Verifier, str]]) -> list[WitnessedLog]:
    """``--witness VKEY`` values (strings or files, read by ``read``) grouped by key name (the origin)."""
    by_origin: dict[str, list[tuple[Verifier, str]]] = {}
    for value in values:
        verifier, text = read(value)
        if verifier.key_type != 0x01:
            raise FormatError(f"--witness {value!r}: a log's verifier key has type 0x01 (Ed25519)")
        by_origin.setdefault(verifier.name, []).append((verifier, text))
    return [WitnessedLog(o, tuple(v for v, _ in keys), tuple(t for _, t in keys)) for o, keys in by_origin.items()]
