"""Following one log: poll its checkpoint, classify every checkpoint seen (from the log or a peer), move
the verified head forward, raise alerts with evidence (spec/monitor.md §2, §5, §6).

One :class:`Follower` per log.  Every checkpoint goes through :meth:`Follower._consider` under the
follower's lock, so the classification and the compare-and-swap on the head see one consistent row; the
CAS still guards against another writer of the same state.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from tlog.checkpoint import Checkpoint, open_checkpoint
from tlog.errors import FormatError, InvariantError, ProofError, TlogError
from tlog.evidence import Evidence, EvidenceKind, verify_evidence
from tlog.note import Verifier, encode_base64
from tlog.proof import verify_consistency

from .alerts import Alert, Alerter, Kind, Severity
from .classify import (Freshness, Observation, ProofOutcome, Relation, Source, Verdict, classify,
                       classify_freshness, consistency_range, relation_of)
from .logapi import LogAPI, Refused, Unreachable
from .metrics import Metrics
from .state import LogRow, MonitorState, Signed

__all__ = ["LogConfig", "Follower", "BadInput", "now_ms"]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class BadInput(Exception):
    """A peer sent a checkpoint or evidence that does not verify (HTTP 400)."""


@dataclass(frozen=True)
class LogConfig:
    """A followed log: the origin is the verifier key's name (tlog: the log's key name is its origin)."""

    verifier: Verifier
    vkey: str
    url: str

    @property
    def origin(self) -> str:
        return self.verifier.name


def pair_digest(a: Checkpoint, b: Checkpoint) -> str:
    """Names an unordered pair of checkpoints (the deduplication key of a fork)."""
    h = hashlib.sha256()
    for size, root in sorted([(a.size, a.root), (b.size, b.root)]):
        h.update(size.to_bytes(8, "big") + root)
    return h.hexdigest()[:32]


@dataclass
class _Seen:
    """One checkpoint being classified, and what was learned about it."""

    signed: Signed
    source: Source
    where: str
    now: int
    proof: list[bytes] = dataclasses.field(default_factory=list)
    answer: str | None = None


class Follower:
    def __init__(self, cfg: LogConfig, state: MonitorState, api: LogAPI, alerter: Alerter, metrics: Metrics, *,
                 clock_ms: Callable[[], int] = now_ms, stale_after_ms: int = 300_000, max_idle_ms: int | None = None):
        self.cfg = cfg
        self.origin = cfg.origin
        self.state = state
        self.api = api
        self.alerter = alerter
        self.metrics = metrics
        self.clock = clock_ms
        self.stale_after_ms = stale_after_ms
        self.max_idle_ms = max_idle_ms
        self.lock = asyncio.Lock()
        self.head_changed = asyncio.Event()  # set whenever the head moves (the entry watcher waits on it)
        self._head_since_ms: int | None = None
        self._reachable: bool | None = None
        self._open_stale: str | None = None

    async def start(self) -> None:
        row = await self.state.ensure_log(self.origin, self.cfg.vkey, self.cfg.url, self.clock())
        if row.head is not None:
            seen = await self.state.checkpoint_seen(self.origin, row.head.checkpoint)
            self._head_since_ms = seen[1] if seen else self.clock()
        self._update_metrics(row)

    async def row(self) -> LogRow:
        row = await self.state.get_log(self.origin)
        if row is None:
            raise InvariantError(f"log {self.origin} is not in the state: start() was not called")
        return row

    def open(self, note: bytes) -> Signed:
        """Verify a checkpoint note of this log under its key (tlog.checkpoint.open_checkpoint)."""
        cp, _ = open_checkpoint(note, self.origin, self.cfg.verifier)
        return Signed(cp, note)

    # ------------------------------------------------------------------ entry points

    async def poll(self) -> Verdict | None:
        """Fetch the log's checkpoint and classify it.  None if the log gave no checkpoint."""
        try:
            note = await self.api.checkpoint()
        except (Unreachable, Refused, FormatError) as exc:
            self._set_reachable(False, str(exc))
            return None
        self._set_reachable(True, "")
        async with self.lock:
            verdict, _ = await self._consider(note, Source.LOG, "log")
        return verdict

    async def consider_peer(self, note: bytes, peer: str) -> tuple[Verdict, str, Checkpoint]:
        """Classify a checkpoint from a peer monitor; BadInput if it is not this log's signed checkpoint.

        A checkpoint larger than the head is first met by polling the log: an honest log has grown at least
        that far, and comparing against its newest tree gives the strongest evidence if it has not.
        """
        try:
            signed = self.open(note)
        except TlogError as exc:
            raise BadInput(f"not a checkpoint of {self.origin} signed by its key: {exc}") from None
        row = await self.row()
        if row.head is None or signed.size > row.head.size:
            await self.poll()
        async with self.lock:
            verdict, reason = await self._consider(note, Source.PEER, f"peer {peer}")
        return verdict, reason, signed.checkpoint

    async def adopt_evidence(self, body: bytes, peer: str) -> bool:
        """Evidence from a peer: kept and alerted on only if it proves a fork of this log offline."""
        try:
            ev = Evidence.parse(body)
            verdict = verify_evidence(ev, self.cfg.verifier)
        except TlogError as exc:
            raise BadInput(f"evidence does not verify: {exc}") from None
        if ev.origin != self.origin or not verdict.proves_misbehaviour:
            raise BadInput(f"evidence about {ev.origin} of kind {ev.kind} proves nothing here")
        if await self.state.has_evidence(ev.digest()):
            return False
        now = self.clock()
        for note in (ev.first, ev.second):
            await self.state.record_checkpoint(self.origin, Signed.from_note(note), f"peer {peer} (evidence)", now)
        a, b = verdict.checkpoints
        return await self._alert(Alert(
            Kind.FORK, Severity.ALERT, self.origin, f"{self.origin}: fork proven by evidence from peer {peer}: "
            f"{verdict.summary}", f"fork:{self.origin}:proven:{pair_digest(a, b)}", now,
            details={"sizes": [a.size, b.size], "source": f"peer {peer}"}), ev, f"peer {peer}")

    # ------------------------------------------------------------------ classification

    async def _consider(self, note: bytes, source: Source, where: str) -> tuple[Verdict, str]:
        now = self.clock()
        try:
            signed = self.open(note)
        except TlogError as exc:
            return await self._bad_signature(note, source, where, exc, now)
        # Persist before acting (crash ordering: monitor/state.py).
        await self.state.record_checkpoint(self.origin, signed, where, now)
        seen = _Seen(signed, source, where, now)
        for _ in range(3):  # a lost compare-and-swap re-reads the row and classifies again
            done, verdict, reason = await self._classify_and_act(await self.row(), seen)
            if done:
                break
        else:
            raise InvariantError(f"the head of {self.origin} kept moving under this follower")
        self.metrics.checkpoints.labels(self.origin, source.value, verdict.value).inc()
        self._update_metrics(await self.row())
        return verdict, reason

    async def _classify_and_act(self, row: LogRow, seen: _Seen) -> tuple[bool, Verdict, str]:
        cp, head = seen.signed.checkpoint, row.head
        conflict = await self.state.conflicting_checkpoint(self.origin, cp)
        obs = Observation(True, relation_of(cp, head.checkpoint if head else None), seen.source,
                          seen.source is Source.LOG and row.served is not None and cp.size < row.served.size,
                          conflict is not None)
        verdict, reason = classify(obs)
        if verdict is Verdict.NEEDS_PROOF and head is not None:
            outcome = await self._fetch_proof(seen, head)
            obs = dataclasses.replace(obs, proof=outcome)
            verdict, reason = classify(obs)
        if verdict is Verdict.NEW_CONSISTENT:
            return await self._on_new(row, seen), verdict, reason
        if verdict is Verdict.OLD_SAME_HISTORY:
            await self._on_old(row, seen)
        elif verdict is Verdict.ROLLBACK:
            await self._on_rollback(row, seen, reason)
        elif verdict is Verdict.FORK:
            await self._on_fork(row, seen, conflict, obs, reason)
        elif verdict is not Verdict.UNDECIDED:
            raise InvariantError(f"unexpected verdict {verdict} for {obs}")
        return True, verdict, reason

    async def _fetch_proof(self, seen: _Seen, head: Signed) -> ProofOutcome:
        """Fetch the consistency proof between ``seen`` and the head from the log and verify it."""
        small, large = sorted((seen.signed, head), key=lambda s: s.size)
        m, n = consistency_range(seen.signed.checkpoint, head.checkpoint)
        try:
            seen.proof = await self.api.consistency_proof(m, n) if m else []
            verify_consistency(m, n, seen.proof, small.root, large.root)
            return ProofOutcome.VERIFIED
        except Unreachable as exc:
            seen.answer = str(exc)
            return ProofOutcome.UNAVAILABLE
        except Refused as exc:
            seen.answer = f"the log refused the consistency proof {m}->{n}: {exc}"
        except FormatError as exc:
            seen.answer = f"the log's consistency proof {m}->{n} is malformed: {exc}"
        except ProofError as exc:
            seen.answer = f"the log's consistency proof {m}->{n} fails: {exc}"
        return ProofOutcome.FAILED

    # ------------------------------------------------------------------ actions

    async def _on_new(self, row: LogRow, seen: _Seen) -> bool:
        if not await self.state.advance_head(self.origin, row.head.size if row.head else None, seen.signed):
            return False
        self._head_since_ms = seen.now
        self.head_changed.set()
        if seen.source is Source.LOG:
            await self._log_answered(row, seen)
            await self.state.set_behind(self.origin, False, seen.now)
        elif row.last_note is not None and Signed.from_note(row.last_note).size < seen.signed.size:
            await self.state.set_behind(self.origin, True, seen.now)
        return True

    async def _on_old(self, row: LogRow, seen: _Seen) -> None:
        if seen.source is Source.LOG:
            await self._log_answered(row, seen)
            behind = row.head is not None and seen.signed.size < row.head.size
            await self.state.set_behind(self.origin, behind, seen.now)

    async def _log_answered(self, row: LogRow, seen: _Seen) -> None:
        if row.served is None or seen.signed.size > row.served.size:
            await self.state.advance_served(self.origin, row.served.size if row.served else None, seen.signed)
        await self.state.note_answer(self.origin, seen.signed.note, seen.now)

    async def _on_rollback(self, row: LogRow, seen: _Seen, reason: str) -> None:
        served = row.served
        if served is None:
            raise InvariantError(f"rollback of {self.origin} classified without a served checkpoint")
        await self.state.note_answer(self.origin, seen.signed.note, seen.now)
        ev = Evidence(EvidenceKind.ROLLBACK, self.origin, self.cfg.vkey, served.note, seen.signed.note,
                      observed=(await self._observed(served), {"time_ms": seen.now, "source": seen.where}),
                      detected_ms=seen.now)
        await self._alert(Alert(
            Kind.ROLLBACK, Severity.ALERT, self.origin,
            f"{self.origin}: rollback: {reason} (size {served.size}, now {seen.signed.size})",
            f"rollback:{self.origin}:{served.size}:{served.root.hex()}", seen.now,
            details={"served_size": served.size, "size": seen.signed.size}), ev)

    async def _on_fork(self, row: LogRow, seen: _Seen, conflict: Signed | None, obs: Observation,
                       reason: str) -> None:
        if seen.source is Source.LOG:
            await self.state.note_answer(self.origin, seen.signed.note, seen.now)
        ev = await self._fork_evidence(row, seen, conflict, obs)
        a, b = ev.sizes
        proven = ev.kind.proves_misbehaviour
        strength = "proven" if proven else "unproven"
        pair = pair_digest(*(Signed.from_note(n).checkpoint for n in (ev.first, ev.second)))
        await self._alert(Alert(
            Kind.FORK, Severity.ALERT, self.origin,
            f"{self.origin}: fork: {reason} (sizes {a} and {b}, from {seen.where}); the evidence "
            f"{'proves' if proven else 'does not prove'} misbehaviour offline",
            f"fork:{self.origin}:{strength}:{pair}", seen.now,
            details={"sizes": [a, b], "source": seen.where, "proven": proven}), ev)

    async def _fork_evidence(self, row: LogRow, seen: _Seen, conflict: Signed | None,
                             obs: Observation) -> Evidence:
        """The strongest evidence available (spec/monitor.md §6.2): two same-size roots; else a proof that binds
        the larger checkpoint to another prefix root; else the failed proof as the log served it."""
        other = conflict if conflict is not None else row.head
        if other is None:
            raise InvariantError(f"fork of {self.origin} classified without a head or a conflicting checkpoint")
        observed = {id(other): await self._observed(other),
                    id(seen.signed): {"time_ms": seen.now, "source": seen.where}}

        def make(kind: EvidenceKind, first: Signed, second: Signed, **kw: object) -> Evidence:
            return Evidence(kind, self.origin, self.cfg.vkey, first.note, second.note,
                            observed=(observed[id(first)], observed[id(second)]), detected_ms=seen.now,
                            **kw)  # type: ignore[arg-type]

        if conflict is not None or obs.relation is Relation.EQUAL_OTHER_ROOT:
            return make(EvidenceKind.FORK_SAME_SIZE, other, seen.signed)
        small, large = sorted((seen.signed, other), key=lambda s: s.size)
        prefix = await self._prefix_root(small, large, seen.proof)
        if prefix is not None:
            return make(EvidenceKind.FORK_PREFIX, small, large, proof=tuple(seen.proof), prefix_root=prefix)
        return make(EvidenceKind.FORK_UNPROVEN, small, large, proof=tuple(seen.proof),
                    log_answer=(seen.answer or "no answer")[:4000])

    async def _prefix_root(self, small: Signed, large: Signed, proof: list[bytes]) -> bytes | None:
        """The root at ``small.size`` of the tree the log serves, if the served proof binds it to ``large``
        (RFC 9162 §2.1.4.2 with that root as the old root) and it differs from ``small``'s root."""
        if not proof:
            return None
        try:
            root = await self.api.tree_root(small.size)
            verify_consistency(small.size, large.size, proof, root, large.root)
        except (Unreachable, TlogError):
            return None
        return root if root != small.root else None

    async def _bad_signature(self, note: bytes, source: Source, where: str, exc: Exception,
                             now: int) -> tuple[Verdict, str]:
        self.metrics.checkpoints.labels(self.origin, source.value, Verdict.BAD_SIGNATURE.value).inc()
        reason = f"not a checkpoint of {self.origin} signed by its key: {exc}"
        if source is Source.LOG:
            digest = hashlib.sha256(note).hexdigest()[:32]
            await self._alert(Alert(Kind.BAD_SIGNATURE, Severity.ALERT, self.origin,
                                    f"{self.origin}: the log served a note that is {reason}",
                                    f"bad-signature:{self.origin}:{digest}",
                                    now, details={"note": note[:2000].decode("utf-8", "replace")}))
        return Verdict.BAD_SIGNATURE, reason

    async def _observed(self, signed: Signed) -> dict:
        seen = await self.state.checkpoint_seen(self.origin, signed.checkpoint)
        return {"time_ms": seen[1], "source": seen[0]} if seen else {}

    async def _alert(self, alert: Alert, evidence: Evidence | None = None, evidence_source: str = "self") -> bool:
        return await self.alerter.raise_alert(alert, evidence, evidence_source=evidence_source)

    # ------------------------------------------------------------------ freshness

    async def check_freshness(self) -> None:
        """Raise STALE when classify_freshness says so (once per episode), RECOVERED when it ends."""
        row = await self.row()
        now = self.clock()
        result = classify_freshness(Freshness(now, row.last_answer_ms, row.behind_since_ms, row.last_change_ms,
                                              self.stale_after_ms, self.max_idle_ms))
        self.metrics.stale.labels(self.origin).set(0 if result is None else 1)
        self._update_metrics(row)
        if result is None:
            if self._open_stale is not None:
                key, self._open_stale = self._open_stale, None
                await self._alert(Alert(Kind.RECOVERED, Severity.NOTICE, self.origin,
                                        f"{self.origin}: fresh again", f"recovered:{key}", now))
            return
        reason, since = result
        key = f"stale:{self.origin}:{reason}:{since}"
        self._open_stale = key
        head = row.head.size if row.head else None
        await self._alert(Alert(
            Kind.STALE, Severity.ALERT, self.origin,
            f"{self.origin}: stale ({reason}) for {(now - since) / 1000:.1f} s, more than "
            f"{(self.max_idle_ms if reason == 'idle' else self.stale_after_ms) / 1000:g} s; verified head size {head}",
            key, now, details={"reason": reason.value, "since_ms": since, "head_size": head}))

    def _set_reachable(self, ok: bool, why: str) -> None:
        if ok != self._reachable:
            if not ok:
                print(f"tlog-monitor: log {self.origin} at {self.cfg.url} gives no checkpoint: {why}",
                      file=sys.stderr, flush=True)
            elif self._reachable is not None:
                print(f"tlog-monitor: log {self.origin} answers again", file=sys.stderr, flush=True)
        self._reachable = ok

    def _update_metrics(self, row: LogRow) -> None:
        now = self.clock()
        m, o = self.metrics, self.origin
        if row.head is not None:
            m.verified_size.labels(o).set(row.head.size)
            m.checkpoint_age.labels(o).set(max(0, now - (self._head_since_ms or now)) / 1000)
        if row.served is not None:
            m.served_size.labels(o).set(row.served.size)
        m.answer_age.labels(o).set(max(0, now - row.last_answer_ms) / 1000)

    async def refresh_metrics(self) -> None:
        self._update_metrics(await self.row())

    def describe(self, row: LogRow) -> dict:
        """The log's state as JSON (GET /status)."""
        return {"origin": self.origin, "url": self.cfg.url,
                "head_size": row.head.size if row.head else None,
                "head_root": encode_base64(row.head.root) if row.head else None,
                "served_size": row.served.size if row.served else None,
                "last_answer_ms": row.last_answer_ms, "behind_since_ms": row.behind_since_ms,
                "stale": self._open_stale is not None}
