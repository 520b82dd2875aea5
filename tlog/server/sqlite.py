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

Erasure: a batch that holds an ``Erasure`` leaf deletes the erased entry's row of ``payloads`` in
the same transaction (``secure_delete=ON`` zeroes the freed bytes); :meth:`SQLiteStorage.purge`
then runs ``PRAGMA wal_checkpoint(TRUNCATE)`` on a third connection, so no WAL frame keeps the old
page.  A crash between the two leaves the bytes in the WAL until the next purge or checkpoint; the
server purges again at start-up.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import os
import sqlite3
import threading
import time
from importlib import resources

import aiosqlite

from ..hashing import leaf_hash as rfc_leaf_hash
from ..tiles import TILE_WIDTH, Tile
from .pathcache import PathCache, cache_path, log_key
from .storage import (Batch, Head, HeadMovedError, MissingDataError, Storage, StorageError,
                      StorageFailedError, StorageFullError)
from .treereader import PATH_BYTES, PATH_GROUP, TREE_BYTES, tile_paths

log = logging.getLogger("tlog.storage")

__all__ = ["SQLiteStorage", "open_storage", "create_storage", "ident_key", "lhash_key", "lhash_keys"]

SCHEMA_VERSION = b"1"
_HASH = 32

# Search, retention and key usage: each is an index search (or a range of the rowid), never a scan
# (tests/test_search.py checks the query plans).  Time bounds become index bounds through leaves_time,
# see tlog/server/search.py.
_RANGE = "idx >= ? AND idx < ? AND integrated_ms >= ? AND integrated_ms < ?"
SQL_FIRST_AT = ("SELECT idx FROM leaves INDEXED BY leaves_time WHERE integrated_ms >= ? "
                "ORDER BY integrated_ms, idx LIMIT 1")
SQL_SEARCH_ALL = f"SELECT idx, leaf FROM leaves NOT INDEXED WHERE {_RANGE} ORDER BY idx LIMIT ?"
SQL_PAYLOAD_INDICES = "SELECT idx FROM payloads WHERE idx < ? ORDER BY idx LIMIT ?"

#: The lookup tables ``lhash_index`` and ``key_index`` (schema.sql) hold the leaves below the *indexed
#: size*, the head's size rounded down to a multiple of ``2**INDEX_CHUNK_BITS``; the batch that
#: completes a chunk inserts the chunk's rows.  Queries add the leaves above it by a range scan of
#: ``leaves``, in the same statement (so against the same head).
INDEX_CHUNK_BITS = 12


def indexed_size(size: int, bits: int | None = None) -> int:
    """How many leaves the lookup tables cover in a tree of ``size`` leaves."""
    bits = INDEX_CHUNK_BITS if bits is None else bits
    return size >> bits << bits


def _indexed_sql(bits: int) -> str:
    return f"((SELECT size FROM head WHERE id = 1) >> {bits} << {bits})"


def sql_search_key(bits: int) -> str:
    """A key's entries in [?2, ?3) with integration time in [?4, ?5), in index order, at most ?6:
    the lookup table's rows merged with the unindexed tail's (both come out in index order)."""
    return (f"SELECT k.idx, l.leaf FROM key_index k JOIN leaves l ON l.idx = k.idx "
            f"WHERE k.key_id = ?1 AND k.idx >= ?2 AND k.idx < ?3 AND l.integrated_ms >= ?4 AND l.integrated_ms < ?5 "
            f"UNION ALL SELECT idx, leaf FROM leaves WHERE idx >= max(?2, {_indexed_sql(bits)}) AND idx < ?3 "
            f"AND key_id = ?1 AND integrated_ms >= ?4 AND integrated_ms < ?5 ORDER BY 1 LIMIT ?6")


def sql_key_usage(bits: int) -> str:
    """How many entries key ?1 signed below index ?2, the first and the last."""
    return (f"SELECT count(*), min(idx), max(idx) FROM (SELECT idx FROM key_index WHERE key_id = ?1 AND idx < ?2 "
            f"UNION ALL SELECT idx FROM leaves WHERE idx >= {_indexed_sql(bits)} AND idx < ?2 AND key_id = ?1)")


def sql_find_lhash(bits: int, n: int) -> str:
    """The leaves whose ``lhash`` is one of ?1..?n, in index order."""
    marks = ",".join(f"?{i + 1}" for i in range(n))
    return (f"SELECT idx, leaf FROM leaves WHERE idx IN (SELECT idx FROM lhash_index WHERE lhash IN ({marks})) "
            f"UNION ALL SELECT idx, leaf FROM leaves WHERE idx >= {_indexed_sql(bits)} AND lhash IN ({marks}) "
            f"ORDER BY 1")


#: The rows of the leaves [?1, ?2) for the lookup tables, sorted as the tables are.
SQL_INDEX_LHASH = ("INSERT INTO lhash_index (lhash, idx) SELECT lhash, idx FROM leaves "
                   "WHERE idx >= ? AND idx < ? ORDER BY lhash, idx")
SQL_INDEX_KEY = ("INSERT INTO key_index (key_id, idx) SELECT key_id, idx FROM leaves "
                 "WHERE idx >= ? AND idx < ? AND key_id IS NOT NULL ORDER BY key_id, idx")


def tile_tree_id(t: Tile) -> int:
    """The rowid of a full tile's row in ``tile_trees``."""
    return (t.level << 48) | t.index


def tile_path_id(tile_index: int, group: int) -> int:
    """The rowid of a stored inclusion path (``tile_paths``): 16 per full level-0 tile, in order."""
    return tile_index * (TILE_WIDTH // PATH_GROUP) + group


def _prefix_int(digest: bytes) -> int:
    """The first 8 bytes of a digest as a signed 64-bit integer (an SQLite INTEGER)."""
    return int.from_bytes(digest[:8], "big", signed=True)


#: meta ``index_scheme``: how the ``ident`` and ``lhash`` columns are derived.  "3" (every database
#: ``tlog init`` makes now): :func:`ident_key` and :func:`lhash_key`; "2": the same but ``ident`` with the
#: writer's time in buckets of 4,096 ms; absent: "1", the first 8 bytes of the identity and of the leaf
#: hash.  A database keeps the scheme it was made with.
INDEX_SCHEME = b"3"

_INDEX_SCHEMES = (b"1", b"2", INDEX_SCHEME)
_MS_MASK = (1 << 42) - 1  # scheme 3's ident: the writer's milliseconds, until the year 2109

#: Leaves per part of the ``lhash`` index (see :func:`lhash_key`).
LHASH_PART_BITS = 16


def ident_key(identity: bytes, entry_ms: int, scheme: bytes = INDEX_SCHEME) -> int:
    """The ``ident`` column: the deduplication key of an entry, ``entry_ms mod 2**42`` (until the
    year 2109) in the high 42 bits of 63 and the identity's first 21 bits in the low 21.

    ``entry_ms`` is the writer's own timestamp inside the body, so twins (same body, same identity)
    share it and meet in the same key.  Keys grow with the writers' time, so a batch's inserts land in
    the one or two right-most pages of the index instead of one page per entry: a B-tree keyed by a
    hash costs a page write per insert once it outgrows a batch.  (Scheme "2" kept the identity's
    first 4 bytes under 4,096-ms buckets: a batch of 19 still wrote about 17 of a bucket's ~100
    pages.)  A key collision is harmless: every hit is confirmed against the stored leaf."""
    if scheme == b"1":
        return _prefix_int(identity)
    if scheme == b"2":
        return (((entry_ms >> 12) & 0x7FFFFFFF) << 32) | int.from_bytes(identity[:4], "big")
    return ((entry_ms & _MS_MASK) << 21) | (int.from_bytes(identity[:3], "big") >> 3)


def lhash_key(leaf_hash: bytes, index: int, scheme: bytes = INDEX_SCHEME) -> int:
    """The ``lhash`` column: ``index // 2**16`` in the high bits, the leaf hash's first 4 bytes in the
    low 32.  The index is thereby split into parts of 65,536 leaves: a batch's inserts touch only the
    pages of the current part (a few hundred), and a lookup by leaf hash probes each part once
    (:func:`lhash_keys`: 153 probes at 10,000,000 leaves, well under a millisecond)."""
    if scheme == b"1":
        return _prefix_int(leaf_hash)
    return ((index >> LHASH_PART_BITS) << 32) | int.from_bytes(leaf_hash[:4], "big")


def lhash_keys(leaf_hash: bytes, size: int, scheme: bytes = INDEX_SCHEME) -> list[int]:
    """Every ``lhash`` value a leaf with this hash could have in a tree of ``size`` leaves."""
    if scheme == b"1":
        return [_prefix_int(leaf_hash)]
    low = int.from_bytes(leaf_hash[:4], "big")
    return [(part << 32) | low for part in range(((max(size, 1) - 1) >> LHASH_PART_BITS) + 1)]


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


#: SQLite page cache of the writing connection, in KiB (see ``_Writer``).
WRITER_CACHE_KIB = 32 * 1024


class _Writer:
    """The one writing connection, a plain sqlite3 connection used only from its own thread.

    A batch is one call onto that thread (BEGIN IMMEDIATE … COMMIT run there in one go): one hand-off
    per batch instead of one per statement, so the commit path never waits on the event loop (or the
    GIL behind it) between statements."""

    def __init__(self, path: str):
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tlog-writer")
        self.conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None,
                                    check_same_thread=False)
        # cache_size: the interior pages of every B-tree the writer appends to (about 15 MB at
        # 10,000,000 entries) must stay in SQLite's cache, or each batch re-reads them from the OS and
        # the append rate falls by a third past about 2,000,000 entries with the default 2 MB cache.
        for pragma in ("busy_timeout = 10000", "journal_mode = WAL", "synchronous = FULL",
                       "secure_delete = ON", "foreign_keys = ON", f"cache_size = -{WRITER_CACHE_KIB}"):
            self.conn.execute(f"PRAGMA {pragma}")

    async def run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def pragma(self, name: str) -> str:
        row = self.conn.execute(f"PRAGMA {name}").fetchone()
        return str(row[0]).lower() if row else ""

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.conn.close()


class SQLiteStorage(Storage):
    """See tlog/server/storage.py for the contract."""

    def __init__(self, path: str, writer: _Writer, reader: aiosqlite.Connection, tile_cache: int = 1024):
        self.path = path
        self._w = writer
        self._r = reader
        self._cache: collections.OrderedDict[tuple[int, int], bytes] = collections.OrderedDict()
        self._cache_max = tile_cache
        self._admin: aiosqlite.Connection | None = None  # WAL checkpoints, opened on first use
        self._lookup: sqlite3.Connection | None = None  # find_identities, on the caller's thread
        self._path_cache_handle: PathCache | None = None  # tlog/server/pathcache.py, opened on first use
        self._path_cache_lock = threading.Lock()
        self.index_scheme = INDEX_SCHEME  # set from meta by open_storage

    async def close(self) -> None:
        if self._path_cache_handle is not None:
            self._path_cache_handle.close()
        for conn in (self._r, self._admin):
            if conn is None:
                continue
            try:
                await conn.close()
            except Exception:  # closing a connection whose thread died must not hide the real error
                pass
        try:
            if self._lookup is not None:
                self._lookup.close()
            self._w.close()
        except sqlite3.Error:
            pass

    async def check_durability(self) -> None:
        """Refuse to run unless the writer really is in WAL mode with synchronous=FULL."""
        mode = await self._w.run(self._w.pragma, "journal_mode")
        sync = await self._w.run(self._w.pragma, "synchronous")
        if mode != "wal" or sync != "2":
            raise StorageFailedError(f"database not durable: journal_mode={mode} synchronous={sync}")

    # -- writes ------------------------------------------------------------------------------------

    async def commit_batch(self, batch: Batch, expected_size: int) -> None:
        await self._w.run(self._commit_sync, batch, expected_size)
        for tile, data in batch.tiles.items():
            if len(data) == TILE_WIDTH * _HASH:
                self._remember((tile.level, tile.index), data)

    def _commit_sync(self, batch: Batch, expected_size: int) -> None:
        """On the writer thread: the whole batch in one transaction (see the module docstring)."""
        conn = self._w.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise _classify(exc) from exc
        try:
            self._write_batch(conn, batch, expected_size)
            conn.execute("COMMIT")
        except BaseException as exc:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # no transaction left to roll back (SQLite already did on a failed COMMIT)
            if isinstance(exc, sqlite3.Error):
                raise _classify(exc) from exc
            raise

    def _write_batch(self, conn: sqlite3.Connection, batch: Batch, expected_size: int) -> None:
        scheme = self.index_scheme
        h = batch.head
        cur = conn.execute(
            "UPDATE head SET size = ?, root = ?, timestamp_ms = ?, note = ? WHERE id = 1 AND size = ?",
            (h.size, h.root, h.timestamp_ms, h.note, expected_size))
        if cur.rowcount != 1:
            raise HeadMovedError(f"head is no longer at size {expected_size}")
        conn.executemany(
            "INSERT INTO leaves (idx, leaf, ident, lhash, key_id, integrated_ms) VALUES (?,?,?,?,?,?)",
            [(x.index, x.leaf, ident_key(x.identity, x.entry_ms, scheme), lhash_key(x.leaf_hash, x.index, scheme), x.key_id,
              x.integrated_ms) for x in batch.leaves])
        payloads = [(x.index, x.salt, x.payload) for x in batch.leaves if x.payload is not None]
        if payloads:
            conn.executemany("INSERT INTO payloads (idx, salt, payload) VALUES (?,?,?)", payloads)
        erased = _erased_indices(batch)
        if erased:  # contract 5: the payload goes in the same transaction as the Erasure leaf
            conn.executemany("DELETE FROM payloads WHERE idx = ?", [(i,) for i in erased])
        lo, hi = indexed_size(expected_size), indexed_size(h.size)
        if hi > lo:  # this batch completes a chunk: its rows go into the lookup tables (schema.sql)
            conn.execute(SQL_INDEX_LHASH, (lo, hi))
            conn.execute(SQL_INDEX_KEY, (lo, hi))
        ops = [(x.index,) for x in batch.leaves if x.operator]
        if ops:
            conn.executemany("INSERT INTO operator_entries (idx) VALUES (?)", ops)
        conn.executemany("INSERT OR REPLACE INTO tiles (level, idx, data) VALUES (?,?,?)",
                         [(t.level, t.index, d) for t, d in batch.tiles.items()])
        if batch.tile_interiors:
            trees = {t: batch.tiles[t] + d for t, d in batch.tile_interiors.items()}
            conn.executemany("INSERT OR REPLACE INTO tile_trees (id, data) VALUES (?,?)",
                             [(tile_tree_id(t), tree) for t, tree in trees.items()])
            paths = {t.index: tile_paths(tree) for t, tree in trees.items() if t.level == 0}
            conn.executemany("INSERT OR REPLACE INTO tile_paths (id, data) VALUES (?,?)",
                             [(tile_path_id(index, g), path) for index, group in paths.items()
                              for g, path in enumerate(group)])
            # Before COMMIT (tlog/server/pathcache.py, crash ordering): a reader that sees this head
            # finds these records, never older ones.
            cache = self._path_cache(conn) if paths else None
            if cache is not None:
                for index, group in paths.items():
                    cache.put(tile_path_id(index, 0), group)
        conn.execute("INSERT INTO checkpoints (size, timestamp_ms, note) VALUES (?,?,?)",
                     (h.size, h.timestamp_ms, h.note))
        if batch.meta:
            conn.executemany("INSERT OR REPLACE INTO meta (name, value) VALUES (?,?)", list(batch.meta.items()))

    async def execute_write(self, sql: str, params: tuple = ()) -> int:
        """One write statement in its own transaction (administrative changes outside the tree)."""
        def run() -> int:
            try:
                return self._w.conn.execute(sql, params).rowcount
            except sqlite3.Error as exc:
                raise _classify(exc) from exc
        return await self._w.run(run)

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
            tree = self._tile_tree(t) if t.width == TILE_WIDTH else None
            if tree is not None:
                out[(t.level, t.index)] = data = tree[:TILE_WIDTH * _HASH]
                self._remember((t.level, t.index), data)
                continue
            row = await self._one("SELECT data FROM tiles WHERE level = ? AND idx = ?", (t.level, t.index))
            if row is None:
                raise MissingDataError(f"hash tile {t.level}/{t.index} is not stored")
            data = bytes(row[0])
            out[(t.level, t.index)] = data
            if len(data) == TILE_WIDTH * _HASH:
                self._remember((t.level, t.index), data)
        return [self._slice(t, out[(t.level, t.index)]) for t in tiles]

    async def read_tile_trees(self, tiles: list[Tile]) -> list[bytes]:
        """Full tiles with their stored interiors, read on the caller's thread (a rowid lookup costs
        less than a thread hand-off); partial tiles, and full ones stored without, as ``read_tiles``."""
        out: list[bytes] = []
        for t in tiles:
            tree = self._tile_tree(t) if t.width == TILE_WIDTH else None
            out.append(tree if tree is not None else (await self.read_tiles([t]))[0])
        return out

    def read_tile_path(self, tile_index: int, group: int) -> bytes | None:
        """The stored inclusion path of leaves ``16 * group ..`` of full level-0 tile ``tile_index``
        (tlog/server/treereader.tile_paths), read on the caller's thread; None if not stored."""
        record = tile_path_id(tile_index, group)
        cache = self._path_cache_handle or self._path_cache(self._lookup_conn())
        if cache is not None:
            path = cache.get(record)
            if path is not None:
                return path
        try:
            row = self._lookup_conn().execute("SELECT data FROM tile_paths WHERE id = ?", (record,)).fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):  # opened read-only before the table existed
                return None
            raise _classify(exc) from exc
        except sqlite3.Error as exc:
            raise _classify(exc) from exc
        if row is None:
            return None
        path = bytes(row[0])
        if cache is not None and len(path) == PATH_BYTES:
            cache.put(record, [path])
        return path

    def _path_cache(self, conn: sqlite3.Connection) -> PathCache | None:
        """This process's handle on the path cache, opened on first use (from ``conn``: the log's key,
        the leaf hash of entry 0); None while the log has no entry."""
        cache = self._path_cache_handle
        if cache is not None:
            return cache
        with self._path_cache_lock:
            if self._path_cache_handle is None:
                try:
                    key = log_key(conn)
                except sqlite3.Error as exc:
                    raise _classify(exc) from exc
                if key is None:
                    return None
                cache = PathCache(cache_path(self.path), key)
                # Asks the kernel to read the file ahead (a few hundred fadvise calls, no copying).
                threading.Thread(target=cache.prewarm, name="tlog-path-cache-prewarm", daemon=True).start()
                self._path_cache_handle = cache
        return self._path_cache_handle

    def _tile_tree(self, t: Tile) -> bytes | None:
        """The stored ``tile_trees`` row of a full tile (its hashes, then its interior), if any."""
        try:
            row = self._lookup_conn().execute("SELECT data FROM tile_trees WHERE id = ?",
                                              (tile_tree_id(t),)).fetchone()
        except sqlite3.Error as exc:
            raise _classify(exc) from exc
        if row is None:
            return None
        data = bytes(row[0])
        if len(data) != TREE_BYTES:
            raise MissingDataError(f"stored tree of hash tile {t.level}/{t.index} is {len(data)} bytes")
        return data

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

    async def find_identities(self, identities: list[tuple[bytes, int]]) -> dict[bytes, int]:
        """Run on the calling thread, on a read connection of its own: the sequencer asks this once per
        batch, and a point lookup per identity in the ``ident`` index costs less than a thread hand-off."""
        if not identities:
            return {}
        from ..entry import Leaf  # noqa: local import keeps the module light for tools

        by_key: dict[int, list[bytes]] = {}
        for ident, entry_ms in identities:
            by_key.setdefault(ident_key(ident, entry_ms, self.index_scheme), []).append(ident)
        found: dict[bytes, int] = {}
        keys = list(by_key)
        conn = self._lookup_conn()
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            sql = f"SELECT idx, leaf, ident FROM leaves WHERE ident IN ({','.join('?' * len(chunk))})"
            try:
                rows = conn.execute(sql, tuple(chunk)).fetchall()
            except sqlite3.Error as exc:
                raise _classify(exc) from exc
            for idx, leaf, ident in rows:
                real = Leaf.decode(bytes(leaf)).identity()
                if real in by_key.get(int(ident), ()):
                    found[real] = int(idx)
        return found

    def _lookup_conn(self) -> sqlite3.Connection:
        if self._lookup is None:
            try:
                self._lookup = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                               check_same_thread=False)
                self._lookup.execute("PRAGMA busy_timeout = 10000")
            except sqlite3.Error as exc:
                raise _classify(exc) from exc
        return self._lookup

    async def find_leaf_hash(self, leaf_hash: bytes) -> int | None:
        head = await self.head()
        keys = lhash_keys(leaf_hash, head.size if head else 0, self.index_scheme)
        # Each statement sees one head; a leaf stored when the first one ran is in every later snapshot,
        # in the lookup table or in the tail, so splitting the keys over statements loses nothing.
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            for idx, leaf in await self._all(sql_find_lhash(INDEX_CHUNK_BITS, len(chunk)), tuple(chunk)):
                if rfc_leaf_hash(bytes(leaf)) == leaf_hash:
                    return int(idx)
        return None

    async def read_payload(self, index: int) -> tuple[bytes, bytes] | None:
        row = await self._one("SELECT salt, payload FROM payloads WHERE idx = ?", (index,))
        return (bytes(row[0]), bytes(row[1])) if row else None

    async def operator_leaves(self, since: int = 0) -> list[tuple[int, bytes]]:
        sql = ("SELECT l.idx, l.leaf FROM operator_entries o JOIN leaves l ON l.idx = o.idx "
               "WHERE o.idx >= ? ORDER BY l.idx")
        return [(int(i), bytes(b)) for i, b in await self._all(sql, (since,))]

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

    # -- search, retention, erasure (every query is an index search: see schema.sql) ----------------

    async def _rows(self, sql: str, params: tuple) -> list:
        return await self._all(sql, params)

    async def first_index_at(self, time_ms: int, size: int) -> int:
        rows = await self._rows(SQL_FIRST_AT, (time_ms,))
        return min(int(rows[0][0]), size) if rows else size

    async def search_leaves(self, key_id: bytes | None, start: int, end: int, limit: int,
                            since_ms: int | None = None, until_ms: int | None = None) -> list[tuple[int, bytes]]:
        params: tuple = (start, end, since_ms if since_ms is not None else -(1 << 63),
                         until_ms if until_ms is not None else (1 << 63) - 1, limit)
        if key_id is None:  # a range of the rowid, never a scan of the time index
            rows = await self._rows(SQL_SEARCH_ALL, params)
        else:
            rows = await self._rows(sql_search_key(INDEX_CHUNK_BITS), (key_id, *params))
        return [(int(i), bytes(b)) for i, b in rows]

    async def key_usage(self, key_id: bytes, size: int) -> tuple[int, int | None, int | None]:
        rows = await self._rows(sql_key_usage(INDEX_CHUNK_BITS), (key_id, size))
        count, first, last = rows[0]
        return int(count), None if first is None else int(first), None if last is None else int(last)

    async def payload_indices(self, end: int, limit: int) -> list[int]:
        rows = await self._rows(SQL_PAYLOAD_INDICES, (end, limit))
        return [int(r[0]) for r in rows]

    async def purge(self) -> bool:
        """``PRAGMA wal_checkpoint(TRUNCATE)``: copy every WAL frame into the database and truncate
        the WAL to zero bytes, so pages as they were before an erasure survive nowhere.  Runs on its
        own connection (the writer's may be inside the sequencer's next transaction); it waits for the
        writer and readers through the busy timeout.  False when readers kept it from finishing."""
        try:
            if self._admin is None:
                self._admin = await _connect(self.path)
            async with self._admin.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cur:
                row = await cur.fetchone()
        except sqlite3.Error as exc:
            raise _classify(exc) from exc
        return row is not None and int(row[0]) == 0


def _erased_indices(batch: Batch) -> list[int]:
    """The entries whose payloads the batch's Erasure leaves erase (operator leaves are rare)."""
    from ..entry import Erasure, Leaf  # noqa: local import keeps the module light for tools

    out = []
    for x in batch.leaves:
        if x.operator:
            entry = Leaf.decode(x.leaf).entry
            if isinstance(entry, Erasure):
                out.append(entry.index)
    return out


def _schema() -> str:
    return resources.files("tlog.server").joinpath("schema.sql").read_text()


async def create_storage(path: str, head: Head, meta: dict[str, bytes]) -> SQLiteStorage:
    """Create a new database at ``path`` (which must not exist) holding an empty tree's head."""
    if os.path.exists(path):
        raise StorageError(f"refusing to overwrite existing database {path}")
    schema = _schema()
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
                             [("schema_version", SCHEMA_VERSION), ("index_scheme", INDEX_SCHEME),
                              *meta.items()])
    finally:
        conn.close()
    return await open_storage(path)


async def open_storage(path: str) -> SQLiteStorage:
    """Open an existing database; never creates one (a missing file is an error, not a new log)."""
    if not os.path.isfile(path):
        raise StorageError(f"no log database at {path} (run `tlog init` first)")
    try:
        writer = _Writer(path)
    except sqlite3.Error as exc:
        raise StorageError(f"{path} is not a usable tlog database: {exc}") from exc
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
    store.index_scheme = await store.get_meta("index_scheme") or b"1"
    if store.index_scheme not in _INDEX_SCHEMES:
        await store.close()
        raise StorageError(f"{path}: unsupported index scheme {store.index_scheme!r} (a newer release's database?)")
    try:  # schema.sql is idempotent: adds the tables and indexes a database of an older release lacks
        await writer.run(writer.conn.executescript, _schema())
        moved = await writer.run(_move_lookup_indexes, writer.conn)
    except sqlite3.Error as exc:
        await store.close()
        raise _classify(exc) from exc
    if moved is not None:
        log.info("moved the leaf-hash and key lookups of %s to lookup tables: %d leaves indexed in %.1f s",
                 path, *moved)
    store._path_cache(store._lookup_conn())  # opened now, so its read-ahead starts before the first proof
    return store


#: The indexes on ``leaves`` that ``lhash_index`` and ``key_index`` replaced.
_OLD_LOOKUP_INDEXES = ("leaves_lhash", "leaves_key")


def _move_lookup_indexes(conn: sqlite3.Connection) -> tuple[int, float] | None:
    """A database from before the lookup tables: fill them for the leaves below the indexed size and
    drop the old indexes, in one transaction (a crash leaves the old layout, and the next start does it
    again).  Returns (leaves indexed, seconds), or None when there was nothing to do."""
    exists = "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN (?, ?)"
    if not conn.execute(exists, _OLD_LOOKUP_INDEXES).fetchone()[0]:
        return None
    started = time.perf_counter()
    log.info("moving the leaf-hash and key lookups to lookup tables, once (about 3 s per million leaves)")
    conn.execute("BEGIN IMMEDIATE")
    try:
        if not conn.execute(exists, _OLD_LOOKUP_INDEXES).fetchone()[0]:  # another process did it meanwhile
            conn.execute("ROLLBACK")
            return None
        (size,) = conn.execute("SELECT size FROM head WHERE id = 1").fetchone()
        upto = indexed_size(int(size))
        conn.execute("DELETE FROM lhash_index")
        conn.execute("DELETE FROM key_index")
        conn.execute(SQL_INDEX_LHASH, (0, upto))
        conn.execute(SQL_INDEX_KEY, (0, upto))
        for name in _OLD_LOOKUP_INDEXES:
            conn.execute(f"DROP INDEX IF EXISTS {name}")
        conn.execute("COMMIT")
    except BaseException:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        raise
    return upto, time.perf_counter() - started
