"""The path cache (tlog/server/pathcache.py): a record is served only when its tag verifies for this log,
this record number and these bytes; the writer fills it before the COMMIT of the batch that fills a
tile; a reader that misses takes the path from the database and writes the record; the scrub names a
record that verifies but differs from the database."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import zlib

import pytest

from tests.test_sequencer import event_pending, log  # noqa: F401 (log: the fixture)
from tlog.hashing import leaf_hash
from tlog.server.pathcache import RECORD_BYTES, PathCache, cache_path, log_key
from tlog.server.scrub import _verifier, scrub_database
from tlog.server.sqlite import tile_path_id
from tlog.server.treereader import PATH_BYTES


def _paths(n: int, seed: int = 0) -> list[bytes]:
    return [bytes([seed + i % 200]) * PATH_BYTES for i in range(n)]


def test_a_record_is_served_only_for_its_log_its_number_and_its_bytes(tmp_path) -> None:
    file = str(tmp_path / "log.db.paths")
    key = leaf_hash(b"entry 0")
    cache = PathCache(file, key)
    paths = _paths(4)
    cache.put(0, paths)
    assert [cache.get(i) for i in range(4)] == paths
    assert cache.get(4) is None  # past the end
    cache.put(9, _paths(1, 7))
    assert os.path.getsize(file) == 10 * RECORD_BYTES
    assert [cache.get(i) for i in range(4, 9)] == [None] * 5  # a hole reads as zeros
    with open(file, "r+b") as f:
        f.seek(RECORD_BYTES + 100)  # named mutation: one byte of record 1's path
        f.write(b"\xff")
        f.seek(2 * RECORD_BYTES)  # named mutation: record 2's bytes copied into slot 3
        record2 = f.read(RECORD_BYTES)
        f.seek(3 * RECORD_BYTES)
        f.write(record2)
        f.seek(9 * RECORD_BYTES + PATH_BYTES // 2)  # named mutation: record 9 torn half-way
        f.write(bytes(PATH_BYTES // 2))
    assert [cache.get(i) for i in range(4)] == [paths[0], None, paths[2], None]
    assert cache.get(9) is None
    other = PathCache(file, leaf_hash(b"another log's entry 0"))
    assert [other.get(i) for i in range(10)] == [None] * 10
    for c in (cache, other):
        c.close()
    absent = PathCache(str(tmp_path / "missing.paths"), key, writable=False)
    assert absent.get(0) is None and not absent.writable
    absent.put(0, paths)  # disabled: a no-op
    assert not os.path.exists(tmp_path / "missing.paths")
    with pytest.raises(ValueError):
        PathCache(file, b"short")


def test_a_record_is_the_path_then_the_crc32_of_key_number_and_path(tmp_path) -> None:
    """The format pathcache.py documents, byte for byte: record i at i * RECORD_BYTES, the path, then
    CRC-32(log key ‖ i as 8 bytes big-endian ‖ path), 4 bytes big-endian (a reader in another language
    can check it with any zlib)."""
    file = str(tmp_path / "log.db.paths")
    key = leaf_hash(b"entry 0")
    cache = PathCache(file, key)
    cache.put(2, _paths(1, 9))
    cache.close()
    with open(file, "rb") as f:
        data = f.read()
    assert RECORD_BYTES == PATH_BYTES + 4 and len(data) == 3 * RECORD_BYTES
    record = data[2 * RECORD_BYTES:]
    assert record[:PATH_BYTES] == _paths(1, 9)[0]
    assert record[PATH_BYTES:] == zlib.crc32(key + (2).to_bytes(8, "big") + record[:PATH_BYTES]).to_bytes(4, "big")


@pytest.fixture
async def log600(log):
    """A log of 600 entries (two full level-0 tiles): test_sequencer's ``log``, filled in rounds of 8."""
    seq, storage, clock, writer, data = log
    n = 0
    while seq.head.size < 600:
        await asyncio.gather(*(seq.submit(event_pending(writer, clock.now, b"e%d" % (n + i))) for i in range(8)))
        n += 8
    return storage, data, storage.path


def _rows(db: str) -> dict[int, bytes]:
    conn = sqlite3.connect(db)
    try:
        return {i: bytes(d) for i, d in conn.execute("SELECT id, data FROM tile_paths")}
    finally:
        conn.close()


def _key(db: str) -> bytes:
    conn = sqlite3.connect(db)
    try:
        return log_key(conn)
    finally:
        conn.close()


async def test_the_writer_fills_the_cache_and_a_reader_that_misses_refills_it(log600) -> None:
    storage, data, db = log600
    rows = _rows(db)
    assert sorted(rows) == list(range(32))  # 16 paths for each of the two full tiles
    cache = PathCache(cache_path(db), _key(db), writable=False)
    assert {i: cache.get(i) for i in rows} == rows  # written by the batches that filled the tiles
    # A record that does not verify is a miss: the path comes from the database and is written back.
    with open(cache_path(db), "r+b") as f:
        f.seek(tile_path_id(1, 3) * RECORD_BYTES)
        f.write(bytes(RECORD_BYTES))
    assert cache.get(tile_path_id(1, 3)) is None
    assert storage.read_tile_path(1, 3) == rows[tile_path_id(1, 3)]
    assert cache.get(tile_path_id(1, 3)) == rows[tile_path_id(1, 3)]
    # With the table emptied, paths still come from the cache: readers do read it.
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM tile_paths")
    conn.commit()
    conn.close()
    assert [storage.read_tile_path(t, g) for t in (0, 1) for g in range(16)] == [rows[i] for i in range(32)]
    cache.close()


async def test_the_scrub_names_a_cache_record_that_verifies_but_differs(log600) -> None:
    storage, data, db = log600
    assert scrub_database(db, _verifier(data)).ok
    with open(cache_path(db), "r+b") as f:  # a record that does not verify is only a miss
        f.seek(5 * RECORD_BYTES)
        f.write(bytes(RECORD_BYTES))
    assert scrub_database(db, _verifier(data)).ok
    cache = PathCache(cache_path(db), _key(db))
    cache.put(tile_path_id(1, 7), [bytes(PATH_BYTES)])  # verifies, and is wrong (a stale record)
    cache.close()
    report = scrub_database(db, _verifier(data))
    assert not report.ok
    assert any("path cache's record of leaves 368.." in p for p in report.problems), report.problems
    os.unlink(cache_path(db))  # deleting the cache is always safe
    assert scrub_database(db, _verifier(data)).ok
