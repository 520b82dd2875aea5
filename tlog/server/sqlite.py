"""The embedded SQLite backend (aiosqlite), the default storage of a log.

Life of an entry in this backend: one ``commit_batch`` is one SQLite transaction on the writer
connection (``BEGIN IMMEDIATE`` … ``COMMIT``) that inserts the batch's rows into ``leaves``,
``payloads`` and ``operator_entries``, upserts the touched hash tiles, inserts the checkpoint into
``checkpoints`` and moves ``head`` by compare-and-swap.  With ``journal_mode=WAL`` and
``synchronous=FULL`` the COMMIT returns only after the WAL is fsynced: that is the durability point.

Crash ordering: a crash before COMMIT leaves the previous head and nothing of the batch (SQLite
rolls the WAL frames of an uncommitted transaction back on open); a crash after COMMIT but before the
HTTP responses leaves a durable batch whose writers saw no acknowledgement: when they retry, the
identity index returns the original index.  No response is ever sent before COMMIT returns.

Reads go through a second connection, so proofs and tiles are served while a batch commits.
"""

from __future__ import annotations

import collections
import os
import sqlite3
from importlib import resources

import aiosqlite

from ..tiles import TILE_WIDTH, Tile
from .storage import (Batch, Head, HeadMovedError, MissingDataError, Storage, StorageError,
                      StorageFailedError, StorageFullError)

__all__ = ["SQLiteStorage", "open_storage", "create_storage"]

SCHEMA_VERSION = b"1"
_HASH = 32


def _prefix_int(digest: bytes) -> int:
    """The first 8 bytes of a digest as a signed 64-bit integer (an SQLite INTEGER)."""
    return int.from_bytes(digest[:8], "big", signed=True)


def _classify(exc: sqlite3.Error) -> StorageError:
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if code is not None else None
    if primary == sqlite3.SQLITE_FULL or "disk is full" in str(exc):
        return StorageFullError(f"storage full: {exc}")
    return StorageFailedError(f"storage failed: {exc}")


async def _connect(path: str, *, readonly: bool = False) -> aiosqlite.Connection:
    uri = f"file:{path}?mode={'ro' if readonly else 'rw'}"
    conn = await aiosqlite.connect(uri, uri=True, isolation_level=None)
    await conn.execute("PRAGMA busy_timeout = 10000")
    if not readonly:
        await conn.execute("PRAGMA journal_mode = WAL")
        await conn.execute("PRAGMA synchronous = FULL")
        await conn.execute("PRAGMA secure_delete = ON")
        await conn.execute("PRAGMA foreign_keys = ON")
    return conn


async def _pragma(conn: aiosqlite.Connection, name: str) -> str:
    async with conn.execute(f"PRAGMA {name}") as cur:
        row = await cur.fetchone()
    return str(row[0]).lower() if row else ""


class SQLiteStorage(Storage):
    """See tlog/server/storage.py for the contract."""

    def __init__(self, path: str, writer: aiosqlite.Connection, reader: aiosqlite.Connection,
                 tile_cache: int = 4096):
        self.path = path
        self._w = writer
        self._r = reader
        self._cache: collections.OrderedDict[tuple[int, int], bytes] = collections.OrderedDict()
        self._cache_max = tile_cache

    async def close(self) -> None:
        for conn in (self._r, self._w):
            try:
                await conn.close()
            except Exception:  # closing a connection whose thread died must not hide the real error
                pass

    async def check_durability(self) -> None:
        """Refuse to run unless the writer really is in WAL mode with synchronous=FULL."""
        mode = await _pragma(self._w, "journal_mode")
        sync = await _pragma(self._w, "synchronous")
        if mode != "wal" or sync != "2":
            raise StorageFailedError(f"database not durable: journal_mode={mode} synchronous={sync}")

    async def integrity_check(self) -> list[str]:
        rows = await self._all("PRAGMA quick_check")
        return [str(r[0]) for r in rows if str(r[0]).lower() != "ok"]

    # -- writes ------------------------------------------------------------------------------------

    async def commit_batch(self, batch: Batch, expected_size: int) -> None:
        try:
            await self._w.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _classify(exc) from exc
        try:
            await self._write_batch(batch, expected_size)
            await self._w.execute("COMMIT")
        except BaseException as exc:
            await self._rollback()
            if isinstance(exc, sqlite3.Error):
                raise _classify(exc) from exc
            raise
        for tile, data in batch.tiles.items():
            if len(data) == TILE_WIDTH * _HASH:
                self._remember((tile.level, tile.index), data)

    async def _rollback(self) -> None:
        try:
            await self._w.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # no transaction left to roll back (SQLite already did on a failed COMMIT)

    async def _write_batch(self, batch: Batch, expected_size: int) -> None:
        h = batch.head
        cur = await self._w.execute(
            "UPDATE head SET size = ?, root = ?, timestamp_ms = ?, note = ? WHERE id = 1 AND size = ?",
            (h.size, h.root, h.timestamp_ms, h.note, expected_size))
        if cur.rowcount != 1:
            raise HeadMovedError(f"head is no longer at size {expected_size}")
        await self._w.executemany(
            "INSERT INTO leaves (idx, leaf, ident, lhash, key_id, integrated_ms) VALUES (?,?,?,?,?,?)",
            [(x.index, x.leaf, _prefix_int(x.identity), _prefix_int(x.leaf_hash), x.key_id,
              x.integrated_ms) for x in batch.leaves])
        payloads = [(x.index, x.salt, x.payload) for x in batch.leaves if x.payload is not None]
        if payloads:
            await self._w.executemany("INSERT INTO payloads (idx, salt, payload) VALUES (?,?,?)", payloads)
        ops = [(x.index,) for x in batch.leaves if x.operator]
        if ops:
            await self._w.executemany("INSERT INTO operator_entries (idx) VALUES (?)", ops)
        await self._w.executemany(
            "INSERT OR REPLACE INTO tiles (level, idx, data) VALUES (?,?,?)",
            [(t.level, t.index, d) for t, d in batch.tiles.items()])
        await self._w.execute("INSERT INTO checkpoints (size, timestamp_ms, note) VALUES (?,?,?)",
                              (h.size, h.timestamp_ms, h.note))
        if batch.meta:
            await self._w.executemany("INSERT OR REPLACE INTO meta (name, value) VALUES (?,?)",
                                      list(batch.meta.items()))

    async def execute_write(self, sql: str, params: tuple = ()) -> int:
        """One write statement in its own transaction (administrative changes outside the tree)."""
        try:
            cur = await self._w.execute(sql, params)
            return cur.rowcount
        except sqlite3.Error as exc:
            raise _classify(exc) from exc

    # -- reads -------------------------------------------------------------------------------------

    def _remember(self, key: tuple[int, int], data: bytes) -> None:
        self._cache[key] = data
        self._cache.move_to_end(key)
        if len(self._cache) > self._cache_max:
            self._cache.popitem(last=False)

    async def head(self) -> Head | None:
        row = await self._one("SELECT size, root, timestamp_ms, note FROM head WHERE id = 1")
        return Head(int(row[0]), bytes(row[1]), int(row[2]), bytes(row[3])) if row else None

    async def read_tiles(self, tiles: list[Tile]) -> list[bytes]:
        out: dict[tuple[int, int], bytes] = {}
        missing = []
        for t in tiles:
            data = self._cache.get((t.level, t.index))
            if data is None:
                missing.append(t)
            else:
                out[(t.level, t.index)] = data
        for t in missing:
            row = await self._one("SELECT data FROM tiles WHERE level = ? AND idx = ?", (t.level, t.index))
            if row is None:
                raise MissingDataError(f"hash tile {t.level}/{t.index} is not stored")
            data = bytes(row[0])
            out[(t.level, t.index)] = data
            if len(data) == TILE_WIDTH * _HASH:
                self._remember((t.level, t.index), data)
        return [self._slice(t, out[(t.level, t.index)]) for t in tiles]

    @staticmethod
    def _slice(t: Tile, data: bytes) -> bytes:
        need = t.width * _HASH
        if len(data) < need:
            raise MissingDataError(f"hash tile {t.level}/{t.index} holds {len(data) // _HASH} hashes, "
                                   f"{t.width} needed")
        return data[:need]

    async def read_leaves(self, start: int, end: int) -> list[bytes]:
        rows = await self._all("SELECT idx, leaf FROM leaves WHERE idx >= ? AND idx < ? ORDER BY idx",
                               (start, end))
        if len(rows) != end - start or (rows and (rows[0][0] != start or rows[-1][0] != end - 1)):
            raise MissingDataError(f"leaves [{start}, {end}) are not all stored ({len(rows)} found)")
        return [bytes(r[1]) for r in rows]

    async def find_identities(self, identities: list[bytes]) -> dict[bytes, int]:
        if not identities:
            return {}
        from ..entry import Leaf  # noqa: local import keeps the module light for tools

        by_prefix: dict[int, list[bytes]] = {}
        for ident in identities:
            by_prefix.setdefault(_prefix_int(ident), []).append(ident)
        found: dict[bytes, int] = {}
        keys = list(by_prefix)
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            sql = f"SELECT idx, leaf, ident FROM leaves WHERE ident IN ({','.join('?' * len(chunk))})"
            for idx, leaf, ident in await self._all(sql, tuple(chunk)):
                real = Leaf.decode(bytes(leaf)).identity()
                if real in by_prefix.get(int(ident), ()):
                    found[real] = int(idx)
        return found

    async def find_leaf_hash(self, leaf_hash: bytes) -> int | None:
        from ..hashing import leaf_hash as rfc_leaf_hash

        for idx, leaf in await self._all("SELECT idx, leaf FROM leaves WHERE lhash = ?",
                                         (_prefix_int(leaf_hash),)):
            if rfc_leaf_hash(bytes(leaf)) == leaf_hash:
                return int(idx)
        return None

    async def read_payload(self, index: int) -> tuple[bytes, bytes] | None:
        row = await self._one("SELECT salt, payload FROM payloads WHERE idx = ?", (index,))
        return (bytes(row[0]), bytes(row[1])) if row else None

    async def operator_leaves(self) -> list[tuple[int, bytes]]:
        sql = ("SELECT l.idx, l.leaf FROM operator_entries o JOIN leaves l ON l.idx = o.idx "
               "ORDER BY l.idx")
        return [(int(i), bytes(b)) for i, b in await self._all(sql)]

    async def checkpoints(self, after_size: int = -1, limit: int = 1000) -> list[tuple[int, bytes]]:
        return [(int(s), bytes(n)) for s, n in await self._all(
            "SELECT size, note FROM checkpoints WHERE size > ? ORDER BY size LIMIT ?", (after_size, limit))]

    async def get_meta(self, name: str) -> bytes | None:
        row = await self._one("SELECT value FROM meta WHERE name = ?", (name,))
        return bytes(row[0]) if row else None

    # Every read is one call on the reader's thread (execute + fetch all + close): no statement stays
    # open across an await, so no read transaction outlives its query and pins an old WAL snapshot
    # (which, under concurrent load, would hide batches committed since).
    async def _all(self, sql: str, params: tuple = ()) -> list:
        return list(await self._r.execute_fetchall(sql, params))

    async def _one(self, sql: str, params: tuple = ()):
        rows = await self._r.execute_fetchall(sql, params)
        return rows[0] if rows else None


async def create_storage(path: str, head: Head, meta: dict[str, bytes]) -> SQLiteStorage:
    """Create a new database at ``path`` (which must not exist) holding an empty tree's head."""
    if os.path.exists(path):
        raise StorageError(f"refusing to overwrite existing database {path}")
    schema = resources.files("tlog.server").joinpath("schema.sql").read_text()
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(schema)
        with conn:
            conn.execute("INSERT INTO head (id, size, root, timestamp_ms, note) VALUES (1, ?, ?, ?, ?)",
                         (head.size, head.root, head.timestamp_ms, head.note))
            conn.execute("INSERT INTO checkpoints (size, timestamp_ms, note) VALUES (?,?,?)",
                         (head.size, head.timestamp_ms, head.note))
            conn.executemany("INSERT INTO meta (name, value) VALUES (?, ?)",
                             [("schema_version", SCHEMA_VERSION), *meta.items()])
    finally:
        conn.close()
    return await open_storage(path)


async def open_storage(path: str) -> SQLiteStorage:
    """Open an existing database; never creates one (a missing file is an error, not a new log)."""
    if not os.path.isfile(path):
        raise StorageError(f"no log database at {path} (run `tlog init` first)")
    writer = await _connect(path)
    reader = await _connect(path)
    store = SQLiteStorage(path, writer, reader)
    try:
        await store.check_durability()
        version = await store.get_meta("schema_version")
    except (sqlite3.Error, StorageError) as exc:
        await store.close()
        raise StorageError(f"{path} is not a usable tlog database: {exc}") from exc
    if version != SCHEMA_VERSION:
        await store.close()
        raise StorageError(f"{path}: unsupported schema version {version!r}")
    return store
