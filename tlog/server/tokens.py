"""Reader tokens: who may read payloads and salts (spec/privacy.md).

A token is ``tlog_<id>_<secret>``: ``id`` is 16 hex digits (public: it names the token in
``tlog tokens list``, in logs and in metrics), ``secret`` 43 characters of base64url (256 random
bits).  Only ``SHA-256(token)`` is stored, in the ``tokens`` table of the log's database, so the
database (or a backup of it) does not grant access.

The ``tlog tokens`` commands open the database themselves (SQLite WAL lets them write while the server
runs); the server reads the table on every request that presents a token, so a new or revoked token
takes effect at once, without a restart.  Payload reads are counted per token in memory and written
to the table shortly after (:meth:`TokenStore.flush`, also at shutdown); the structured log line of
each read is written at once.

Refusals follow RFC 6750 §3.1: a malformed, unknown, expired or revoked token is ``invalid_token``
(401); a valid token whose role does not allow the request is ``insufficient_scope`` (403).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
from dataclasses import asdict, dataclass
from importlib import resources

import aiosqlite

__all__ = ["TokenError", "TokenScopeError", "TokenInfo", "TokenStore", "ROLES", "parse_bearer"]

log = logging.getLogger("tlog.tokens")

#: Roles and what they grant.  ``reader``: payloads and salts of entries that were not erased.
ROLES = ("reader",)
_TOKEN_RE = re.compile(r"tlog_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_MAX_NAME = 64


class TokenError(Exception):
    """No usable token: malformed, unknown, expired or revoked (401, ``invalid_token``)."""


class TokenScopeError(Exception):
    """A valid token whose role does not allow this request (403, ``insufficient_scope``)."""


@dataclass(frozen=True)
class TokenInfo:
    id: str
    role: str
    name: str
    created_ms: int
    expires_ms: int | None
    revoked_ms: int | None
    reads: int
    last_read_ms: int | None

    def status(self, now_ms: int) -> str:
        if self.revoked_ms is not None:
            return "revoked"
        if self.expires_ms is not None and now_ms >= self.expires_ms:
            return "expired"
        return "active"

    def to_json(self, now_ms: int) -> dict:
        return {**asdict(self), "status": self.status(now_ms)}


_COLUMNS = "id, role, name, created_ms, expires_ms, revoked_ms, reads, last_read_ms"


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (RFC 6750 §2.1); None without a header."""
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError("Authorization must be 'Bearer <token>'")
    return token.strip()


class TokenStore:
    """The ``tokens`` table of one log database, through its own connection."""

    def __init__(self, conn: aiosqlite.Connection):
        self._conn = conn
        self._pending: dict[str, tuple[int, int]] = {}  # token id -> (reads not yet stored, last read)
        self._flush_task: asyncio.Task | None = None
        self.flush_delay = 0.2

    @classmethod
    async def open(cls, db_path: str) -> TokenStore:
        if not os.path.isfile(db_path):
            raise FileNotFoundError(f"no log database at {db_path} (run `tlog init` first)")
        conn = await aiosqlite.connect(f"file:{db_path}?mode=rw", uri=True, isolation_level=None)
        try:
            await conn.execute("PRAGMA busy_timeout = 10000")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = FULL")
            await conn.execute("PRAGMA secure_delete = ON")
            await conn.executescript(resources.files("tlog.server").joinpath("schema.sql").read_text())
        except BaseException:
            await conn.close()
            raise
        return cls(conn)

    async def close(self) -> None:
        if self._flush_task is not None:
            self._flush_task.cancel()
            try:
                await self._flush_task
            except (asyncio.CancelledError, Exception):
                pass
        try:
            await self.flush()
        finally:
            await self._conn.close()

    # -- administration (tlog tokens …) ----------------------------------------------------------

    async def create(self, role: str, name: str, now_ms: int, expires_ms: int | None = None) -> tuple[str, TokenInfo]:
        """A new token: returns its text (shown once, never stored) and its record."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles: {', '.join(ROLES)}")
        if not name or len(name) > _MAX_NAME or not name.isprintable():
            raise ValueError(f"a token name is 1..{_MAX_NAME} printable characters")
        if expires_ms is not None and expires_ms <= now_ms:
            raise ValueError("the expiry time is in the past")
        token_id = secrets.token_hex(8)
        token = f"tlog_{token_id}_{base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip('=')}"
        await self._conn.execute(
            "INSERT INTO tokens (id, hash, role, name, created_ms, expires_ms) VALUES (?,?,?,?,?,?)",
            (token_id, _hash(token), role, name, now_ms, expires_ms))
        return token, TokenInfo(token_id, role, name, now_ms, expires_ms, None, 0, None)

    async def revoke(self, token_id: str, now_ms: int) -> TokenInfo:
        """Revoke a token by its id (idempotent: the first revocation time is kept)."""
        cur = await self._conn.execute(
            "UPDATE tokens SET revoked_ms = coalesce(revoked_ms, ?) WHERE id = ?", (now_ms, token_id))
        if cur.rowcount != 1:
            raise KeyError(f"no token with id {token_id!r}")
        info = await self.get(token_id)
        if info is None:
            raise AssertionError(f"token {token_id} vanished after its revocation")
        return info

    async def get(self, token_id: str) -> TokenInfo | None:
        async with self._conn.execute(f"SELECT {_COLUMNS} FROM tokens WHERE id = ?", (token_id,)) as cur:
            row = await cur.fetchone()
        return TokenInfo(*row) if row else None

    async def list(self) -> list[TokenInfo]:
        async with self._conn.execute(f"SELECT {_COLUMNS} FROM tokens ORDER BY created_ms, id") as cur:
            return [TokenInfo(*row) for row in await cur.fetchall()]

    # -- the server ------------------------------------------------------------------------------

    async def authenticate(self, token: str, now_ms: int, role: str = "reader") -> TokenInfo:
        """The token's record if it is valid now and has ``role``; TokenError / TokenScopeError otherwise.
        Reads the table every time: revocations by another process count at once."""
        m = _TOKEN_RE.fullmatch(token)
        if m is None:
            raise TokenError("malformed token")
        async with self._conn.execute(f"SELECT hash, {_COLUMNS} FROM tokens WHERE id = ?", (m.group(1),)) as cur:
            row = await cur.fetchone()
        if row is None or not hmac.compare_digest(bytes(row[0]), _hash(token)):
            raise TokenError("unknown token")
        info = TokenInfo(*row[1:])
        status = info.status(now_ms)
        if status != "active":
            raise TokenError(f"token {info.id} is {status}")
        if info.role != role:
            raise TokenScopeError(f"token {info.id} has role {info.role!r}, {role!r} is needed")
        return info

    def record_read(self, info: TokenInfo, now_ms: int, count: int = 1) -> None:
        """Count ``count`` payload reads by ``info``; stored by a flush shortly after."""
        reads, _ = self._pending.get(info.id, (0, now_ms))
        self._pending[info.id] = (reads + count, now_ms)
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.get_running_loop().create_task(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self.flush_delay)
        try:
            await self.flush()
        except Exception:  # the counts stay pending and are retried by the next read or at close
            log.exception("could not store payload read counts")

    async def flush(self) -> None:
        """Add the pending read counts to the table, in one transaction."""
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        try:
            await self._conn.execute("BEGIN IMMEDIATE")
            await self._conn.executemany(
                "UPDATE tokens SET reads = reads + ?, last_read_ms = max(coalesce(last_read_ms, 0), ?) WHERE id = ?",
                [(n, last, tid) for tid, (n, last) in pending.items()])
            await self._conn.execute("COMMIT")
        except BaseException:
            try:
                await self._conn.execute("ROLLBACK")
            except Exception:
                pass
            for tid, (n, last) in pending.items():  # keep them for the next flush
                old, old_last = self._pending.get(tid, (0, last))
                self._pending[tid] = (old + n, max(old_last, last))
            raise
