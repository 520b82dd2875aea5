"""The monitor's durable state: one SQLite database (aiosqlite, WAL, synchronous=FULL) in ``--state DIR``.

Contract: every method that writes returns only after its transaction committed, so a write is durable once
it returns.  All statements go through one connection and one lock, so a transaction never interleaves
with another task's statements.  Schema: monitor/schema.sql.

Heads move forward only, by compare-and-swap (:meth:`MonitorState.advance_head`: ``UPDATE … WHERE
head_size IS old``); a caller that loses the race re-reads the row and classifies again.

Crash ordering of one checkpoint (monitor/follower.py):

1. :meth:`record_checkpoint` stores the verified note.  A crash here leaves an extra stored checkpoint and
   the old head: on restart the log is polled again and the same checkpoint is classified again.
2. For a fork or rollback, the evidence file is written (temporary file, fsync, rename) and then
   :meth:`add_alert` inserts the evidence row and the alert row in one transaction.  A crash before the
   insert leaves an orphan evidence file and no alert: the next poll or gossip round sees the same pair
   again and raises it.  A crash after the insert leaves an undelivered alert, which
   :meth:`undelivered_alerts` hands back at start-up (at-least-once delivery; the dedup key keeps it
   from being raised twice).
3. :meth:`advance_head` / :meth:`advance_served` move the heads.  A crash before this re-classifies the
   checkpoint on restart (its alert, if any, is deduplicated).  A rollback or fork never moves them.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources

import aiosqlite

from tlog.checkpoint import Checkpoint
from tlog.errors import InvariantError
from tlog.note import parse_note

__all__ = ["MonitorState", "Signed", "LogRow", "AlertRow", "EvidenceRow", "StateError", "DB_NAME"]

DB_NAME = "monitor.db"
SCHEMA_VERSION = "1"


class StateError(Exception):
    """The state directory cannot be used (reported as one line, exit 2)."""


@dataclass(frozen=True)
class Signed:
    """A checkpoint whose note verified under the log's key, with the note bytes as served."""

    checkpoint: Checkpoint
    note: bytes

    @classmethod
    def from_note(cls, note: bytes) -> Signed:
        """Rebuild from a stored note (verified before it was stored; only parsed here)."""
        text, _ = parse_note(note)
        return cls(Checkpoint.parse(text), note)

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root(self) -> bytes:
        return self.checkpoint.root


@dataclass(frozen=True)
class LogRow:
    origin: str
    vkey: str
    url: str
    added_ms: int
    head: Signed | None
    served: Signed | None
    last_note: bytes | None
    last_answer_ms: int
    last_change_ms: int
    behind_since_ms: int | None


@dataclass(frozen=True)
class AlertRow:
    key: str
    kind: str
    severity: str
    origin: str
    time_ms: int
    line: str


@dataclass(frozen=True)
class EvidenceRow:
    digest: str
    origin: str
    kind: str
    proven: bool
    body: bytes
    path: str
    source: str
    time_ms: int


def _signed(note: bytes | None) -> Signed | None:
    return None if note is None else Signed.from_note(bytes(note))


class MonitorState:
    """``state = await MonitorState.open(dir)``; ``await state.close()``."""

    def __init__(self, directory: str, conn: aiosqlite.Connection):
        self.directory = directory
        self._db = conn
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, directory: str) -> MonitorState:
        try:
            os.makedirs(os.path.join(directory, "evidence"), exist_ok=True)
            conn = await aiosqlite.connect(os.path.join(directory, DB_NAME), isolation_level=None)
        except (OSError, aiosqlite.Error) as exc:
            raise StateError(f"cannot open the state in {directory}: {exc}") from exc
        state = cls(directory, conn)
        try:
            await state._setup()
        except (OSError, aiosqlite.Error, StateError) as exc:
            await conn.close()
            raise StateError(f"cannot open the state in {directory}: {exc}") from exc
        return state

    async def _setup(self) -> None:
        db = self._db
        await db.execute("PRAGMA busy_timeout = 10000")
        await db.execute("PRAGMA journal_mode = WAL")
        await db.execute("PRAGMA synchronous = FULL")
        for name, want in (("journal_mode", "wal"), ("synchronous", "2")):
            async with db.execute(f"PRAGMA {name}") as cur:
                row = await cur.fetchone()
            if row is None or str(row[0]).lower() != want:
                raise StateError(f"SQLite refused {name}={want}")
        schema = resources.files("monitor").joinpath("schema.sql").read_text()
        await db.executescript(schema)  # idempotent: CREATE … IF NOT EXISTS
        async with self._tx():
            await db.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('schema_version', ?)",
                             (SCHEMA_VERSION,))
        version = await self._one("SELECT value FROM meta WHERE name = 'schema_version'")
        if version != SCHEMA_VERSION:
            raise StateError(f"state schema version {version!r}, this monitor needs {SCHEMA_VERSION}")

    async def close(self) -> None:
        await self._db.close()

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction; COMMIT returns after the WAL is fsynced (synchronous=FULL)."""
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def _write(self, sql: str, params: tuple = ()) -> int:
        async with self._lock:
            cur = await self._db.execute(sql, params)
            count = cur.rowcount
            await cur.close()
            return count

    async def _rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        async with self._lock:
            async with self._db.execute(sql, params) as cur:
                return [tuple(r) for r in await cur.fetchall()]

    async def _one(self, sql: str, params: tuple = ()) -> object:
        rows = await self._rows(sql, params)
        return rows[0][0] if rows else None

    # ------------------------------------------------------------------ logs

    async def ensure_log(self, origin: str, vkey: str, url: str, now_ms: int) -> LogRow:
        """Add the log (first run) or update its key and URL (configuration wins); the head is kept."""
        async with self._tx() as db:
            await db.execute(
                "INSERT INTO logs (origin, vkey, url, added_ms, last_answer_ms, last_change_ms) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (origin) DO UPDATE SET vkey = excluded.vkey, "
                "url = excluded.url", (origin, vkey, url, now_ms, now_ms, now_ms))
        row = await self.get_log(origin)
        if row is None:
            raise InvariantError(f"log {origin} missing right after it was inserted")
        return row

    async def get_log(self, origin: str) -> LogRow | None:
        rows = await self._rows(
            "SELECT origin, vkey, url, added_ms, head_note, served_note, last_note, last_answer_ms, "
            "last_change_ms, behind_since_ms FROM logs WHERE origin = ?", (origin,))
        if not rows:
            return None
        o, vkey, url, added, head, served, last, answer, change, behind = rows[0]
        return LogRow(o, vkey, url, added, _signed(head), _signed(served), None if last is None else bytes(last),
                      answer, change, behind)

    async def origins(self) -> list[str]:
        return [r[0] for r in await self._rows("SELECT origin FROM logs ORDER BY origin")]

    async def advance_head(self, origin: str, old_size: int | None, new: Signed) -> bool:
        """Compare-and-swap the verified head from ``old_size`` (None: no head yet) to ``new``.

        False if another task moved it first (re-read and classify again).  The head never moves back:
        asking for it is a bug.
        """
        return await self._advance("head", origin, old_size, new)

    async def advance_served(self, origin: str, old_size: int | None, new: Signed) -> bool:
        """Compare-and-swap the largest checkpoint the log itself served this monitor."""
        return await self._advance("served", origin, old_size, new)

    async def _advance(self, column: str, origin: str, old_size: int | None, new: Signed) -> bool:
        if old_size is not None and new.size <= old_size:
            raise InvariantError(f"{column} of {origin} would move from {old_size} to {new.size}")
        count = await self._write(
            f"UPDATE logs SET {column}_size = ?, {column}_note = ? WHERE origin = ? AND {column}_size IS ?",
            (new.size, new.note, origin, old_size))
        return count == 1

    async def note_answer(self, origin: str, note: bytes, now_ms: int) -> None:
        """The log answered /checkpoint with ``note`` (signed by its key): freshness bookkeeping."""
        await self._write(
            "UPDATE logs SET last_answer_ms = ?, "
            "last_change_ms = CASE WHEN last_note IS ? THEN last_change_ms ELSE ? END, last_note = ? "
            "WHERE origin = ?", (now_ms, note, now_ms, note, origin))

    async def set_behind(self, origin: str, behind: bool, now_ms: int) -> None:
        """Whether the log's own checkpoint is smaller than the verified head (keeps the first time)."""
        if behind:
            await self._write("UPDATE logs SET behind_since_ms = ? WHERE origin = ? AND behind_since_ms IS NULL",
                              (now_ms, origin))
        else:
            await self._write("UPDATE logs SET behind_since_ms = NULL WHERE origin = ?", (origin,))

    # ------------------------------------------------------------------ checkpoints

    async def record_checkpoint(self, origin: str, signed: Signed, source: str, now_ms: int) -> bool:
        """Store a verified checkpoint note (idempotent); True if it was new."""
        return await self._write(
            "INSERT OR IGNORE INTO checkpoints (origin, size, root, note, source, seen_ms) VALUES (?, ?, ?, ?, ?, ?)",
            (origin, signed.size, signed.root, signed.note, source, now_ms)) == 1

    async def conflicting_checkpoint(self, origin: str, cp: Checkpoint) -> Signed | None:
        """A stored checkpoint of the same size as ``cp`` with another root (the log's own first), if any."""
        rows = await self._rows(
            "SELECT note FROM checkpoints WHERE origin = ? AND size = ? AND root != ? "
            "ORDER BY source != 'log', seen_ms LIMIT 1", (origin, cp.size, cp.root))
        return _signed(rows[0][0]) if rows else None

    async def checkpoint_seen(self, origin: str, cp: Checkpoint) -> tuple[str, int] | None:
        """(source, first seen ms) of a stored checkpoint."""
        rows = await self._rows("SELECT source, seen_ms FROM checkpoints WHERE origin = ? AND size = ? AND root = ?",
                                (origin, cp.size, cp.root))
        return (rows[0][0], rows[0][1]) if rows else None

    async def checkpoint_count(self, origin: str) -> int:
        return int(await self._one("SELECT count(*) FROM checkpoints WHERE origin = ?", (origin,)) or 0)

    # ------------------------------------------------------------------ alerts and evidence

    async def add_alert(self, alert: AlertRow, evidence: EvidenceRow | None = None) -> bool:
        """Insert the alert (and its evidence) unless its key was raised before; True if new."""
        async with self._tx() as db:
            if evidence is not None:
                await db.execute(
                    "INSERT OR IGNORE INTO evidence (digest, origin, kind, proven, body, path, source, time_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (evidence.digest, evidence.origin, evidence.kind, int(evidence.proven), evidence.body,
                     evidence.path, evidence.source, evidence.time_ms))
            cur = await db.execute(
                "INSERT OR IGNORE INTO alerts (key, kind, severity, origin, time_ms, line) VALUES (?, ?, ?, ?, ?, ?)",
                (alert.key, alert.kind, alert.severity, alert.origin, alert.time_ms, alert.line))
            new = cur.rowcount == 1
            await cur.close()
        return new

    async def has_alert(self, key: str) -> bool:
        return await self._one("SELECT 1 FROM alerts WHERE key = ?", (key,)) is not None

    async def undelivered_alerts(self) -> list[AlertRow]:
        rows = await self._rows("SELECT key, kind, severity, origin, time_ms, line FROM alerts "
                                "WHERE delivered = 0 ORDER BY time_ms, key")
        return [AlertRow(*r) for r in rows]

    async def mark_delivered(self, key: str) -> None:
        await self._write("UPDATE alerts SET delivered = 1 WHERE key = ?", (key,))

    async def pending_webhooks(self, max_attempts: int) -> list[AlertRow]:
        rows = await self._rows("SELECT key, kind, severity, origin, time_ms, line FROM alerts "
                                "WHERE webhook_done = 0 AND webhook_attempts < ? ORDER BY time_ms, key",
                                (max_attempts,))
        return [AlertRow(*r) for r in rows]

    async def webhook_result(self, key: str, ok: bool) -> None:
        await self._write("UPDATE alerts SET webhook_attempts = webhook_attempts + 1, webhook_done = ? "
                          "WHERE key = ?", (int(ok), key))

    async def alert_counts(self) -> dict[tuple[str, str, str], int]:
        """(origin, kind, severity) -> number of alerts ever raised (for the metrics at start-up)."""
        rows = await self._rows("SELECT origin, kind, severity, count(*) FROM alerts GROUP BY origin, kind, severity")
        return {(o, k, s): n for o, k, s, n in rows}

    async def has_evidence(self, digest: str) -> bool:
        return await self._one("SELECT 1 FROM evidence WHERE digest = ?", (digest,)) is not None

    async def proven_evidence(self, origin: str, limit: int = 100) -> list[bytes]:
        """The proven evidence documents about ``origin`` (served to peers), oldest first."""
        rows = await self._rows("SELECT body FROM evidence WHERE origin = ? AND proven = 1 "
                                "ORDER BY time_ms, digest LIMIT ?", (origin, limit))
        return [bytes(r[0]) for r in rows]

    # ------------------------------------------------------------------ --watch-entries

    async def watch_progress(self, origin: str) -> tuple[int, list[bytes], list[tuple[int, bytes]]]:
        """(size checked, compact range hashes at that size, operator leaves below it)."""
        rows = await self._rows("SELECT size, hashes FROM watch WHERE origin = ?", (origin,))
        size, blob = (rows[0][0], bytes(rows[0][1])) if rows else (0, b"")
        hashes = [blob[i:i + 32] for i in range(0, len(blob), 32)]
        leaves = await self._rows("SELECT idx, leaf FROM operator_leaves WHERE origin = ? ORDER BY idx", (origin,))
        return size, hashes, [(i, bytes(leaf)) for i, leaf in leaves]

    async def save_watch(self, origin: str, old_size: int, new_size: int, hashes: Iterable[bytes],
                         operator_leaves: Iterable[tuple[int, bytes]], alerts: Iterable[AlertRow]) -> bool:
        """Move the watched size from ``old_size`` to ``new_size`` (compare-and-swap) with the new compact
        range, the new operator leaves and the alerts found in between, in one transaction.

        Crash ordering: before COMMIT nothing changed and the entries are checked again on restart; after
        it the alerts are in the outbox (delivered at start-up if the process died before delivering).
        """
        if new_size <= old_size:
            raise InvariantError(f"watched size of {origin} would move from {old_size} to {new_size}")
        async with self._tx() as db:
            cur = await db.execute("SELECT size FROM watch WHERE origin = ?", (origin,))
            row = await cur.fetchone()
            await cur.close()
            if (row[0] if row else 0) != old_size:
                return False
            await db.execute("INSERT INTO watch (origin, size, hashes) VALUES (?, ?, ?) ON CONFLICT (origin) "
                             "DO UPDATE SET size = excluded.size, hashes = excluded.hashes",
                             (origin, new_size, b"".join(hashes)))
            await db.executemany("INSERT OR IGNORE INTO operator_leaves (origin, idx, leaf) VALUES (?, ?, ?)",
                                 [(origin, i, leaf) for i, leaf in operator_leaves])
            await db.executemany(
                "INSERT OR IGNORE INTO alerts (key, kind, severity, origin, time_ms, line) VALUES (?, ?, ?, ?, ?, ?)",
                [(a.key, a.kind, a.severity, a.origin, a.time_ms, a.line) for a in alerts])
        return True
