"""The server checks itself: start-up checks, a periodic scrub of the database, and ``tlog fsck``.

* **Start-up** (:func:`preflight`, before the log opens) refuses to run when a private key file (``log.key``,
  ``operator.key``) is accessible by group or others, when ``PRAGMA quick_check`` fails (on a database
  larger than ``startup_check_max_bytes``, 1 GiB by default, that check runs in the background right after
  start instead, and a failure stops writes as a failed scrub does: it reads every page, minutes for a
  multi-gigabyte file that is not in the OS cache),
  or when the database is *behind* the last checkpoint this server published (a restored backup, a
  truncated file): ``DIR/published-checkpoint`` holds that checkpoint outside the database, written
  atomically after each committed batch by :class:`PublishedCheckpoint` (the sequencer's ``on_batch``
  hook).  A database ahead of the file must still contain the published tree: the root at the file's
  size, recomputed from the stored tiles, must be the published root.
* **Scrub** (:func:`scrub_database`, run every ``scrub_interval_seconds`` by :class:`Scrubber` and by
  ``tlog fsck``): re-hashes every stored leaf (and recomputes the columns derived from it: identity and
  leaf-hash prefixes, key id, integration time), rebuilds every hash tile from the leaf hashes and compares
  it with the stored one, checks that every stored checkpoint is validly signed and that its root is the
  root of the leaves below its size (so all published checkpoints are consistent with each other), and
  that every stored payload matches its entry's commitment and only erased payloads are gone; the stored
  inclusion paths, and every record of the path cache (``log.db.paths``) that verifies, must be the
  ones the tiles give.
  On any mismatch the running server stops writing (the sequencer's ``stopped``: appends get 503, nothing
  new is signed), ``/healthz`` says ``degraded``, a CRITICAL log line and ``tlog_scrub_runs{outcome=
  "failed"}`` report it, and reads keep being served.

Crash ordering of the published-checkpoint file: the batch commits to the database first, then the file
is replaced (temporary file, fsync, rename).  A crash between the two leaves the file *behind* the
database, which start-up accepts; the file is never ahead of what was durably committed.

The periodic scrub runs in a process of its own at the lowest CPU priority (tlog/server/scrubchild.py:
in a thread it held the sequencer process's GIL and halved the append rate while it ran), through its
own read-only SQLite connection, never through the server's tile cache, so a tile altered on disk is
seen even when a copy of it is cached.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import Counter, Gauge

from ..logaudit import TileRebuilder, first_tile_difference
from ..checkpoint import Checkpoint, open_checkpoint
from ..entry import Erasure, EventEntry, Leaf, payload_commitment
from ..errors import TlogError
from ..export import write_atomic
from ..hashing import EMPTY_ROOT, HASH_SIZE, leaf_hash
from ..note import Verifier
from ..proof import root_plan
from ..tiles import TILE_WIDTH, Tile, TileHashReader
from .config import ConfigError, LogConfig, check_private_file
from .handlers import STATE
from .logs import log_event
from .pathcache import PathCache, cache_path, log_key
from .sqlite import ident_key, indexed_size, lhash_key, tile_path_id, tile_tree_id
from .storage import Head, NewLeaf
from .treereader import PATH_GROUP, tile_interior, tile_paths

__all__ = ["ScrubReport", "scrub_database", "preflight", "preflight_problems", "fsck", "PublishedCheckpoint",
           "Scrubber", "ScrubFailedError", "ScrubProcessError", "StartupRefused", "preflight_ctx", "scrub_ctx",
           "PUBLISHED_CHECKPOINT"]

log = logging.getLogger("tlog.scrub")

PUBLISHED_CHECKPOINT = "published-checkpoint"
_CHUNK = 1024


class StartupRefused(ConfigError):
    """The data directory fails a start-up check: the server must not run on it."""


class ScrubFailedError(Exception):
    """The stored log does not re-derive to its signed roots: writes stop (503), reads go on."""


class ScrubProcessError(Exception):
    """The scrub's process ended without a report: no verdict on the database (logged, counted)."""


@dataclass
class ScrubReport:
    """What a scrub (or ``tlog fsck``) checked and every problem it found (capped)."""

    size: int = 0
    leaves: int = 0
    tiles: int = 0
    checkpoints: int = 0
    payloads: int = 0
    erased: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, text: str, limit: int = 100) -> None:
        if len(self.problems) < limit:
            self.problems.append(text)

    def summary(self) -> str:
        if self.ok:
            return (f"OK: tree size {self.size}: {self.leaves} leaves re-hashed, {self.tiles} hash tiles rebuilt, "
                    f"{self.checkpoints} signed checkpoints re-derived, {self.payloads} payload commitments "
                    f"checked ({self.erased} erased) in {self.seconds:.1f} s")
        return "FAILED:\n" + "\n".join(f"  {p}" for p in self.problems)


def _connect(db_path: str) -> sqlite3.Connection:
    if not os.path.isfile(db_path):
        raise StartupRefused(f"no log database at {db_path}")
    return sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, check_same_thread=False)


def _verifier(data_dir: str) -> Verifier:
    try:
        with open(os.path.join(data_dir, "log.vkey"), encoding="utf-8") as f:
            return Verifier.from_vkey(f.read().strip())
    except (OSError, TlogError) as exc:
        raise StartupRefused(f"cannot read the log's verifier key {data_dir}/log.vkey: {exc}") from exc


# ============================================================================ the scrub

class _Scrub:
    def __init__(self, conn: sqlite3.Connection, verifier: Verifier, should_stop: Callable[[], bool],
                 path_cache: str | None = None):
        self.conn, self.verifier, self.should_stop = conn, verifier, should_stop
        self.path_cache_file = path_cache
        self._path_cache: PathCache | None = None
        self.report = ScrubReport()
        self.missing_payloads: list[int] = []
        row = conn.execute("SELECT value FROM meta WHERE name = 'index_scheme'").fetchone()
        self.index_scheme = bytes(row[0]) if row else b"1"

    def one(self, sql: str, params: tuple = ()) -> tuple | None:
        return self.conn.execute(sql, params).fetchone()

    def close(self) -> None:
        if self._path_cache is not None:
            self._path_cache.close()

    def run(self, size: int | None) -> ScrubReport:
        head = self.one("SELECT size, root, note FROM head WHERE id = 1")
        if head is None:
            self.report.problem("the database has no head row")
            return self.report
        target = int(head[0]) if size is None else min(size, int(head[0]))
        self.report.size = target
        cp = self._signed_root(target, bytes(head[2]) if target == head[0] else None, bytes(head[1]))
        rebuilder = TileRebuilder(target)
        checkpoints = self._checkpoints(target)
        next_cp = next(checkpoints, None)
        while next_cp is not None and next_cp[0] == 0:
            next_cp = self._check_root(next_cp, EMPTY_ROOT, checkpoints)
        for start in range(0, target, _CHUNK):
            if self.should_stop():
                self.report.stopped_early = True
                return self.report
            hashes = self._leaves(start, min(start + _CHUNK, target))
            if hashes is None:
                return self.report  # a missing leaf: nothing above it can be re-derived
            pos = 0
            while next_cp is not None and next_cp[0] <= start + len(hashes):
                cut = next_cp[0] - start
                self._compare(rebuilder.add(hashes[pos:cut]))
                pos = cut
                next_cp = self._check_root(next_cp, rebuilder.root(), checkpoints)
            self._compare(rebuilder.add(hashes[pos:]))
        self._compare(rebuilder.finish())
        if cp is not None and target and rebuilder.root() != cp.root:
            self.report.problem(f"the stored leaves hash to a root other than the signed root at size {target}")
        self._resolve_missing_payloads()
        self._check_lookup_tables(indexed_size(target))
        return self.report

    def _check_lookup_tables(self, upto: int) -> None:
        """``lhash_index`` and ``key_index`` (schema.sql) against the leaves' columns, which ``_entry``
        checked against the leaves: below ``upto`` each table holds exactly one row per leaf (per event
        entry for keys), naming the leaf's own value.  Rows at or above ``upto`` may belong to chunks
        committed since the scrub read the head."""
        if self.one("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'lhash_index'") is None:
            return  # a database from before the lookup tables, read by a tool that does not migrate
        # A leaf has a row when its column is set: every leaf has an lhash, only event entries a key.
        for table, column in (("lhash_index", "lhash"), ("key_index", "key_id")):
            (rows,) = self.one(f"SELECT count(*) FROM {table} WHERE idx < ?", (upto,))
            (matching,) = self.one(f"SELECT count(*) FROM {table} x JOIN leaves l ON l.idx = x.idx "
                                   f"AND l.{column} = x.{column} WHERE x.idx < ?", (upto,))
            (leaves,) = self.one(f"SELECT count(*) FROM leaves WHERE idx < ? AND {column} IS NOT NULL", (upto,))
            if rows == matching == leaves:
                continue
            missing = self.one(f"SELECT l.idx FROM leaves l WHERE l.idx < ? AND l.{column} IS NOT NULL "
                               f"AND NOT EXISTS (SELECT 1 FROM {table} x WHERE x.{column} = l.{column} "
                               f"AND x.idx = l.idx) ORDER BY l.idx LIMIT 1", (upto,))
            what = f"leaf {missing[0]} has no row" if missing else f"{rows - matching} rows name no leaf"
            self.report.problem(f"the lookup table {table} does not match the leaves below {upto}: {what} "
                                f"({rows} rows, {matching} matching, {leaves} leaves)")

    def _signed_root(self, size: int, head_note: bytes | None, head_root: bytes) -> Checkpoint | None:
        row = self.one("SELECT note FROM checkpoints WHERE size = ?", (size,))
        note = bytes(row[0]) if row else head_note
        if note is None:
            self.report.problem(f"no stored checkpoint at size {size}")
            return None
        try:
            cp, _ = open_checkpoint(note, self.verifier.name, self.verifier)
        except TlogError as exc:
            self.report.problem(f"the checkpoint at size {size} does not verify: {exc}")
            return None
        if cp.size != size or (head_note is not None and (head_note != note or head_root != cp.root)):
            self.report.problem(f"the head row and the stored checkpoint at size {size} disagree")
        return cp

    def _checkpoints(self, target: int) -> Iterator[tuple[int, bytes]]:
        after = -1
        while True:
            rows = self.conn.execute("SELECT size, note FROM checkpoints WHERE size > ? AND size <= ? "
                                     "ORDER BY size LIMIT 1000", (after, target)).fetchall()
            if not rows:
                return
            for size, note in rows:
                yield int(size), bytes(note)
            after = int(rows[-1][0])

    def _check_root(self, item: tuple[int, bytes], root: bytes,
                    rest: Iterator[tuple[int, bytes]]) -> tuple[int, bytes] | None:
        size, note = item
        self.report.checkpoints += 1
        try:
            cp, _ = open_checkpoint(note, self.verifier.name, self.verifier)
        except TlogError as exc:
            self.report.problem(f"stored checkpoint at size {size} does not verify: {exc}")
        else:
            if cp.size != size:
                self.report.problem(f"stored checkpoint row {size} holds a checkpoint of size {cp.size}")
            elif cp.root != root:
                self.report.problem(f"stored checkpoint at size {size}: its root is not the root of the first "
                                    f"{size} stored leaves")
        return next(rest, None)

    def _leaves(self, start: int, end: int) -> list[bytes] | None:
        rows = self.conn.execute("SELECT idx, leaf, ident, lhash, key_id, integrated_ms FROM leaves "
                                 "WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)).fetchall()
        payloads = {int(i): (bytes(s), bytes(p)) for i, s, p in self.conn.execute(
            "SELECT idx, salt, payload FROM payloads WHERE idx >= ? AND idx < ?", (start, end))}
        hashes, bad_columns = [], []
        for want, (idx, raw, *derived) in enumerate(rows, start):
            if idx != want:
                break
            raw = bytes(raw)
            hashes.append(leaf_hash(raw))
            if not self._entry(idx, raw, hashes[-1], payloads.get(idx), derived):
                bad_columns.append(idx)
        if len(hashes) != end - start:
            self.report.problem(f"leaf {start + len(hashes)} is missing from the database")
            return None
        self.report.leaves += len(hashes)
        altered = self._check_level0(start, hashes)
        for i in bad_columns:  # (an altered leaf disagrees with its columns too: named above already)
            if i not in altered:
                self.report.problem(f"leaf {i}: its index columns (identity, leaf hash, key, time) do not "
                                    "match the leaf")
        return hashes

    def _check_level0(self, start: int, hashes: list[bytes]) -> set[int]:
        """Each leaf hash against the stored level-0 tile, as soon as the leaf is read: a damaged leaf is
        named before the checkpoints and upper tiles that depend on it.  The indices found altered."""
        altered = set()
        end = start + len(hashes)
        for n in range(start // TILE_WIDTH, (end - 1) // TILE_WIDTH + 1):
            row = self.one("SELECT data FROM tiles WHERE level = 0 AND idx = ?", (n,))
            stored = bytes(row[0]) if row else b""
            for i in range(max(start, n * TILE_WIDTH), min(end, (n + 1) * TILE_WIDTH)):
                at = (i % TILE_WIDTH) * HASH_SIZE
                if stored[at:at + HASH_SIZE] != hashes[i - start]:
                    what = "is not stored" if len(stored) < at + HASH_SIZE else "differs"
                    self.report.problem(f"leaf {i}: its hash {what} in the level-0 tile {Tile(0, n).path()} "
                                        f"(hash {i % TILE_WIDTH}): the leaf or the tile was altered")
                    altered.add(i)
        return altered

    def _entry(self, index: int, raw: bytes, lhash: bytes, payload: tuple[bytes, bytes] | None,
               derived: list) -> bool:
        """Check a leaf's payload; False when the columns derived from the leaf (deduplication, lookup by
        hash, search) disagree with it: a flipped bit there would make a retry a second entry, or hide a
        leaf from lookups."""
        try:
            leaf = Leaf.decode(raw)
            entry = leaf.entry
        except TlogError as exc:
            self.report.problem(f"leaf {index} does not decode: {exc}")
            return True
        key_id = entry.key_id if type(entry) is EventEntry else None
        ident = ident_key(leaf.identity(), getattr(entry, "timestamp_ms", 0), self.index_scheme)
        columns_ok = derived == [ident, lhash_key(lhash, index, self.index_scheme), key_id, leaf.integrated_ms]
        if type(entry) is not EventEntry or index == 0:
            return columns_ok
        if payload is None:
            self.missing_payloads.append(index)
            return columns_ok
        self.report.payloads += 1
        try:
            ok = payload_commitment(*payload) == entry.commitment
        except TlogError:
            ok = False
        if not ok:
            self.report.problem(f"the stored payload of entry {index} does not match its commitment")
        return columns_ok

    def _compare(self, done: list[tuple[Tile, bytes]]) -> None:
        for tile, computed in done:
            self.report.tiles += 1
            if len(computed) == TILE_WIDTH * HASH_SIZE:
                self._check_interior(tile, computed)
            if tile.level == 0:
                continue  # compared leaf by leaf in _check_level0
            row = self.one("SELECT data FROM tiles WHERE level = ? AND idx = ?", (tile.level, tile.index))
            stored = bytes(row[0])[:len(computed)] if row else None
            diff = first_tile_difference(tile, computed, stored)
            if diff is not None:
                what = "leaf" if tile.level == 0 else "the subtree from leaf"
                self.report.problem(f"{what} {diff[0]}: the stored tile does not match the stored leaves: {diff[1]}")

    def _check_interior(self, tile: Tile, computed: bytes) -> None:
        """A full tile's stored tree (the node hashes proofs are read from) against the tile."""
        try:
            row = self.one("SELECT data FROM tile_trees WHERE id = ?", (tile_tree_id(tile),))
        except sqlite3.OperationalError:  # a database from before tile trees were kept: nothing to check
            return
        tree = computed + tile_interior(computed)
        if row is not None and bytes(row[0]) != tree:
            self.report.problem(f"the stored tree of hash tile {tile.level}/{tile.index} does not match "
                                "the tile: proofs read from it would be wrong")
        if tile.level != 0:
            return
        try:
            first = tile_path_id(tile.index, 0)
            rows = self.conn.execute("SELECT id, data FROM tile_paths WHERE id >= ? AND id < ?",
                                     (first, first + TILE_WIDTH // PATH_GROUP)).fetchall()
        except sqlite3.OperationalError:  # a database from before inclusion paths were kept
            return
        paths = tile_paths(tree)
        for rowid, data in rows:
            if bytes(data) != paths[rowid - first]:
                start = tile.index * TILE_WIDTH + (rowid - first) * PATH_GROUP
                self.report.problem(f"the stored inclusion path of leaves {start}.. does not match the tile: "
                                    "inclusion proofs read from it would be wrong")
        self._check_path_cache(tile, first, paths)

    def _check_path_cache(self, tile: Tile, first: int, paths: list[bytes]) -> None:
        """The records of the path cache (tlog/server/pathcache.py) that verify, against the tile: a
        record that does not verify is only a miss, one that verifies and differs would be served."""
        if self.path_cache_file is None:
            return
        if self._path_cache is None:
            key = log_key(self.conn)
            if key is None or not os.path.exists(self.path_cache_file):
                self.path_cache_file = None
                return
            self._path_cache = PathCache(self.path_cache_file, key, writable=False)
        for g, path in enumerate(paths):
            cached = self._path_cache.get(first + g)
            if cached is not None and cached != path:
                start = tile.index * TILE_WIDTH + g * PATH_GROUP
                self.report.problem(f"the path cache's record of leaves {start}.. does not match the tile: "
                                    f"inclusion proofs read from it would be wrong (delete "
                                    f"{os.path.basename(self.path_cache_file)}: it is rebuilt as proofs are read)")

    def _resolve_missing_payloads(self) -> None:
        """A missing payload is fine only when an erasure entry covers it (erasure deletes the row in the
        same transaction as the Erasure leaf, so reading the erasures last cannot miss one)."""
        if not self.missing_payloads:
            return
        erased = set()
        for (raw,) in self.conn.execute("SELECT l.leaf FROM operator_entries o JOIN leaves l ON l.idx = o.idx"):
            try:
                entry = Leaf.decode(bytes(raw)).entry
            except TlogError:
                continue
            if isinstance(entry, Erasure):
                erased.add(entry.index)
        for index in self.missing_payloads:
            if index in erased:
                self.report.erased += 1
            else:
                self.report.problem(f"the payload of entry {index} is missing and no erasure entry covers it")


def scrub_database(db_path: str, verifier: Verifier, *, size: int | None = None,
                   should_stop: Callable[[], bool] = lambda: False) -> ScrubReport:
    """Re-derive the log stored in ``db_path`` up to ``size`` (default: the head) and report every
    mismatch (blocking: run it in a thread).  See the module docstring for what is checked."""
    started = time.monotonic()
    conn = _connect(db_path)
    scrub = _Scrub(conn, verifier, should_stop, path_cache=cache_path(db_path))
    try:
        report = scrub.run(size)
    except sqlite3.DatabaseError as exc:
        report = ScrubReport(problems=[f"the database cannot be read: {exc}"])
    finally:
        conn.close()
        scrub.close()
    report.seconds = time.monotonic() - started
    return report


# ============================================================================ start-up

def read_published(data_dir: str, verifier: Verifier) -> tuple[Checkpoint, bytes] | None:
    """The checkpoint in ``DIR/published-checkpoint`` (verified), or None when there is no file yet."""
    path = os.path.join(data_dir, PUBLISHED_CHECKPOINT)
    try:
        with open(path, "rb") as f:
            note = f.read()
    except FileNotFoundError:
        return None
    try:
        return open_checkpoint(note, verifier.name, verifier)[0], note
    except TlogError as exc:
        raise StartupRefused(f"{path} does not hold a checkpoint signed by this log: {exc}") from exc


def _stored_root(conn: sqlite3.Connection, db_size: int, size: int) -> bytes:
    """MTH of the first ``size`` leaves, from the stored tiles of the tree of ``db_size`` leaves."""
    def read(tiles: list[Tile]) -> list[bytes]:
        out = []
        for t in tiles:
            row = conn.execute("SELECT data FROM tiles WHERE level = ? AND idx = ?", (t.level, t.index)).fetchone()
            data = bytes(row[0]) if row else b""
            if len(data) < t.width * HASH_SIZE:
                raise StartupRefused(f"hash tile {t.path()} is missing from the database: the published tree "
                                     "cannot be re-derived")
            out.append(data[:t.width * HASH_SIZE])
        return out

    plan = root_plan(size)
    return plan.rehash(TileHashReader(db_size, read).read_hashes(plan.ids))[0]


def database_bytes(data_dir: str) -> int:
    """The bytes ``PRAGMA quick_check`` reads: the database file and its write-ahead log."""
    path = os.path.join(data_dir, "log.db")
    return sum(os.path.getsize(p) for p in (path, path + "-wal") if os.path.exists(p))


def quick_check_problems(conn: sqlite3.Connection) -> list[str]:
    """SQLite's own check of every page (``PRAGMA quick_check``): [] or one problem."""
    bad = [str(r[0]) for r in conn.execute("PRAGMA quick_check").fetchall() if str(r[0]).lower() != "ok"]
    return [f"PRAGMA quick_check failed: {'; '.join(bad[:5])}"] if bad else []


def preflight_problems(data_dir: str, verifier: Verifier, quick_check: bool = True) -> list[str]:
    """The start-up checks (see the module docstring); an empty list when the server may start.
    ``quick_check=False`` leaves SQLite's page check to the caller (``Scrubber.deferred_quick_check``)."""
    conn = _connect(os.path.join(data_dir, "log.db"))
    try:
        bad = quick_check_problems(conn) if quick_check else []
        if bad:
            return bad
        head = conn.execute("SELECT size FROM head WHERE id = 1").fetchone()
        published = read_published(data_dir, verifier)
        if head is None or published is None:
            return [] if head is not None else ["the database has no head row"]
        db_size, (cp, _) = int(head[0]), published
        if db_size < cp.size:
            return [f"the database is behind the last checkpoint this log published (size {cp.size}, the "
                    f"database has {db_size}): a restored backup or a truncated file; serving it would fork "
                    f"the log.  Restore the latest database, or see {PUBLISHED_CHECKPOINT} in the docs"]
        if _stored_root(conn, db_size, cp.size) != cp.root:
            return [f"the database does not contain the published tree of size {cp.size}: its root differs"]
        return []
    except StartupRefused as exc:
        return [str(exc)]
    except sqlite3.DatabaseError as exc:
        return [f"the database cannot be read: {exc}"]
    finally:
        conn.close()


def preflight(data_dir: str, quick_check_max_bytes: int | None = None) -> bool:
    """Raise StartupRefused when a start-up check fails (ConfigError for a private key file that group or
    others may access: the operator key too, even when this server does not sign with it).

    ``PRAGMA quick_check`` runs here when the database is at most ``quick_check_max_bytes`` (always when
    None); returns False when it was left for the background (``Scrubber.deferred_quick_check``)."""
    for name in ("log.key", "operator.key"):
        if os.path.exists(os.path.join(data_dir, name)):
            check_private_file(os.path.join(data_dir, name))
    now = quick_check_max_bytes is None or database_bytes(data_dir) <= quick_check_max_bytes
    problems = preflight_problems(data_dir, _verifier(data_dir), quick_check=now)
    if problems:
        raise StartupRefused(f"refusing to start on {data_dir}: {problems[0]}")
    return now


async def fsck(data_dir: str) -> ScrubReport:
    """``tlog fsck --data DIR``: the start-up checks and a full scrub, offline (read-only)."""
    def run() -> ScrubReport:
        verifier = _verifier(data_dir)
        problems = preflight_problems(data_dir, verifier)
        report = scrub_database(os.path.join(data_dir, "log.db"), verifier)
        report.problems[:0] = problems
        return report
    return await asyncio.to_thread(run)


# ============================================================================ the running server

class PublishedCheckpoint:
    """Keeps ``DIR/published-checkpoint`` at the latest committed checkpoint (the sequencer's ``on_batch``
    hook).  Writes happen in a worker thread, coalesced: only the newest checkpoint is written, at most
    once per ``min_interval`` seconds."""

    def __init__(self, data_dir: str, min_interval: float = 0.05):
        self.path = os.path.join(data_dir, PUBLISHED_CHECKPOINT)
        self.min_interval = min_interval
        self._latest: bytes | None = None
        self._task: asyncio.Task | None = None
        # A crash during a write leaves its temporary file (write_atomic's ".tmp-*.published-checkpoint"):
        # nothing else writes here while the server starts, so remove them (a crash loop would pile them up).
        for name in os.listdir(data_dir):
            if name.startswith(".tmp-") and name.endswith("." + PUBLISHED_CHECKPOINT):
                try:
                    os.unlink(os.path.join(data_dir, name))
                except OSError:
                    pass

    def publish(self, note: bytes) -> None:
        self._latest = note
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush(), name="tlog-published-checkpoint")

    def on_batch(self, leaves: list[NewLeaf], head: Head) -> None:
        self.publish(head.note)

    async def _flush(self) -> None:
        while self._latest is not None:
            note, self._latest = self._latest, None
            try:
                await asyncio.to_thread(write_atomic, self.path, note)
            except OSError as exc:
                log.error("cannot write %s: %s", self.path, exc)
            # At most one write (and fsync) per interval, whatever the batch rate: the checkpoints of
            # the batches committed meanwhile are coalesced into the newest one.
            await asyncio.sleep(self.min_interval)

    async def close(self) -> None:
        if self._task is not None:
            await self._task


class Scrubber:
    """Runs :func:`scrub_database` every ``interval`` seconds; a failure stops writes for good (until an
    operator has looked at the database and restarted the server)."""

    def __init__(self, state, interval: float, verifier: Verifier):  # state: LogState (no import cycle)
        self.state, self.interval, self.verifier = state, interval, verifier
        self.last: ScrubReport | None = None
        self._stop = threading.Event()
        self._child: asyncio.subprocess.Process | None = None
        registry = state.metrics.registry
        self.runs = Counter("tlog_scrub_runs", "Self-check scrubs of the database, by outcome (ok, failed: "
                            "the database is damaged; error: the scrub process failed, no verdict)", ["outcome"],
                            registry=registry)
        self.last_ok = Gauge("tlog_scrub_last_success_timestamp_seconds",
                             "When a scrub last found the stored log intact", registry=registry)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.scrub_once()

    def child_command(self, size: int) -> list[str]:
        """The scrub's process (tlog/server/scrubchild.py: idle CPU priority, one JSON report on stdout)."""
        return [sys.executable, "-m", "tlog.server.scrubchild", self.state.data_dir, str(size),
                self.verifier.to_vkey()]

    async def _scrub_in_child(self, size: int) -> ScrubReport:
        """:func:`scrub_database` in a process of its own at the lowest CPU priority, so that its
        hashing never holds the sequencer process's GIL.  Raises :class:`ScrubProcessError` when the
        process fails without a report (a crash, the OOM killer): no evidence about the database."""
        proc = await asyncio.create_subprocess_exec(*self.child_command(size), stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE,
                                                    stderr=asyncio.subprocess.PIPE)
        self._child = proc
        try:
            out, err = await proc.communicate()
        except asyncio.CancelledError:
            proc.kill()
            await proc.wait()
            raise
        finally:
            self._child = None
        if proc.returncode == 0:
            try:
                return ScrubReport(**json.loads(out))
            except (ValueError, TypeError) as exc:
                raise ScrubProcessError(f"the scrub process's report does not parse: {exc}") from exc
        if self._stop.is_set():
            return ScrubReport(size=size, stopped_early=True)
        detail = err.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        raise ScrubProcessError(f"the scrub process exited with status {proc.returncode}: {detail[0][:300]}")

    async def scrub_once(self) -> ScrubReport:
        size = self.state.head.size
        try:
            report = await self._scrub_in_child(size)
        except ScrubProcessError as exc:
            self.runs.labels("error").inc()
            log_event(log, "scrub_error", logging.ERROR, tree_size=size, error=str(exc),
                      action="no verdict on the database; the next scrub runs at the next interval")
            report = ScrubReport(size=size, stopped_early=True)
        self.last = report
        if report.stopped_early:
            return report
        if report.ok:
            self.runs.labels("ok").inc()
            self.last_ok.set(time.time())
            log_event(log, "scrub_ok", tree_size=report.size, leaves=report.leaves, seconds=round(report.seconds, 3))
        else:
            self.runs.labels("failed").inc()
            self.state.sequencer.stopped = ScrubFailedError(f"self-check failed: {report.problems[0]}")
            log_event(log, "scrub_failed", logging.CRITICAL, tree_size=report.size, problems=report.problems[:10],
                      action="writes stopped; reads continue")
        return report

    async def deferred_quick_check(self) -> list[str]:
        """``PRAGMA quick_check`` of a database too large to check before start (config
        ``startup_check_max_bytes``), in a thread: a failure stops writes as a failed scrub does."""
        path = os.path.join(self.state.data_dir, "log.db")
        started = time.perf_counter()

        def check() -> list[str] | None:
            conn = _connect(path)
            # Server shutdown interrupts the check (it may take minutes) instead of waiting for it.
            conn.set_progress_handler(lambda: 1 if self._stop.is_set() else 0, 10_000)
            try:
                return quick_check_problems(conn)
            except sqlite3.OperationalError:
                if self._stop.is_set():
                    return None
                raise
            finally:
                conn.close()

        problems = await asyncio.to_thread(check)
        if problems is None:
            return []
        if problems:
            self.runs.labels("failed").inc()
            self.state.sequencer.stopped = ScrubFailedError(f"self-check failed: {problems[0]}")
            log_event(log, "startup_check_failed", logging.CRITICAL, problems=problems,
                      action="writes stopped; reads continue")
        else:
            log_event(log, "startup_check_ok", seconds=round(time.perf_counter() - started, 3))
        return problems

    def stop(self) -> None:
        self._stop.set()
        child = self._child
        if child is not None and child.returncode is None:
            try:
                child.terminate()  # it reports stopped_early at its next step
            except ProcessLookupError:
                pass


SCRUBBER: web.AppKey[Scrubber] = web.AppKey("scrubber", Scrubber)
_DEFERRED_CHECK: web.AppKey[bool] = web.AppKey("deferred_quick_check", bool)


def preflight_ctx(data_dir: str) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context, before the log opens: the start-up checks."""
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        limit = LogConfig.load(data_dir).startup_check_max_bytes
        checked = await asyncio.to_thread(preflight, data_dir, limit)
        app[_DEFERRED_CHECK] = not checked
        if not checked:
            log_event(log, "startup_check_deferred", database_bytes=database_bytes(data_dir),
                      startup_check_max_bytes=limit, action="PRAGMA quick_check runs in the background")
        yield
    return ctx


async def scrub_ctx(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context, after the log opened: the published-checkpoint hook and the periodic scrub."""
    state = app[STATE]
    published = PublishedCheckpoint(state.data_dir)
    verifier = state.signer.verifier()
    existing = read_published(state.data_dir, verifier)
    if existing is None or existing[0].size < state.head.size:
        published.publish(state.head.note)
    state.sequencer.on_batch.append(published.on_batch)
    scrubber = app[SCRUBBER] = Scrubber(state, state.config.scrub_interval_seconds, verifier)
    loop = asyncio.get_running_loop()
    tasks = []
    if app.get(_DEFERRED_CHECK):
        tasks.append(loop.create_task(scrubber.deferred_quick_check(), name="tlog-startup-check"))
    if scrubber.interval > 0:
        tasks.append(loop.create_task(scrubber.run(), name="tlog-scrub"))
    yield
    scrubber.stop()
    for task in tasks:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
    await published.close()

