"""The lookup tables ``lhash_index`` and ``key_index`` (tlog/server/schema.sql): rows added a whole chunk
at a time by the batch that completes the chunk, the unindexed tail found by a range scan in the same
statement.  Checked against an oracle (every stored leaf, decoded) after every batch, with chunks
shrunk to 4 leaves so that batches start, end and straddle chunk boundaries; the migration of a
database that still has the old indexes; and the scrub's check of the tables."""

from __future__ import annotations

import asyncio
import os
import sqlite3

import pytest

from tests.test_sequencer import DAY, ORIGIN, Clock, event_pending, operator_pending
from tlog.entry import EventEntry, Leaf, register_event
from tlog.keys import KeyType, PrivateKey
from tlog.note import Signer
from tlog.server import sqlite as backend
from tlog.server.config import check_private_file
from tlog.server.init import init_log
from tlog.server.scrub import _verifier, scrub_database
from tlog.server.sequencer import Sequencer
from tlog.server.sqlite import indexed_size, open_storage

BITS = 2  # chunks of 4 leaves


@pytest.fixture
async def small_chunks(tmp_path, monkeypatch):
    """A log whose lookup tables advance in chunks of 4 leaves, with two registered writers."""
    monkeypatch.setattr(backend, "INDEX_CHUNK_BITS", BITS)
    data = str(tmp_path / "log")
    clock = Clock(1_800_000_000_000)
    await init_log(data, ORIGIN, clock_ms=clock)
    storage = await open_storage(os.path.join(data, "log.db"))
    signer = Signer.from_skey(check_private_file(os.path.join(data, "log.key")).decode().strip())
    seq = Sequencer(storage, signer, ORIGIN, clock_ms=clock, max_pending=64)
    await seq.load()
    seq.start()
    operator = PrivateKey.from_pem(check_private_file(os.path.join(data, "operator.key")))
    writers = [PrivateKey.generate(KeyType.ED25519) for _ in range(2)]
    for i, w in enumerate(writers):
        reg = register_event(ORIGIN, clock.now, w.public_key, f"w{i}", clock.now - DAY, clock.now + DAY)
        await seq.submit(operator_pending(reg, operator, clock.now))
    try:
        yield seq, storage, clock, writers, data
    finally:
        await seq.stop()
        await storage.close()


def _oracle(db: str) -> tuple[int, list[tuple[int, bytes, bytes | None]]]:
    """(size, [(index, leaf hash, key id or None)]) straight from the stored leaves."""
    conn = sqlite3.connect(db)
    try:
        (size,) = conn.execute("SELECT size FROM head WHERE id = 1").fetchone()
        leaves = []
        for idx, raw in conn.execute("SELECT idx, leaf FROM leaves ORDER BY idx"):
            leaf = Leaf.decode(bytes(raw))
            entry = leaf.entry
            leaves.append((int(idx), leaf.hash(), entry.key_id if type(entry) is EventEntry else None))
        return int(size), leaves
    finally:
        conn.close()


def _table_rows(db: str) -> tuple[list[int], list[tuple[bytes, int]]]:
    conn = sqlite3.connect(db)
    try:
        return ([int(i) for (i,) in conn.execute("SELECT idx FROM lhash_index ORDER BY idx")],
                [(bytes(k), int(i)) for k, i in conn.execute("SELECT key_id, idx FROM key_index ORDER BY idx")])
    finally:
        conn.close()


async def _check_lookups(storage, db: str) -> None:
    size, leaves = _oracle(db)
    upto = indexed_size(size, BITS)
    lhash_rows, key_rows = _table_rows(db)
    # The tables hold exactly the leaves below the indexed size, nothing of the tail.
    assert lhash_rows == list(range(upto))
    assert key_rows == [(k, i) for i, _, k in leaves if i < upto and k is not None]
    for i, h, _ in leaves:  # every leaf is found by its hash, indexed or in the tail
        assert await storage.find_leaf_hash(h) == i
    keys = {k for _, _, k in leaves if k is not None}
    for key in keys:
        mine = [i for i, _, k in leaves if k == key]
        assert [i for i, _ in await storage.search_leaves(key, 0, size, 10_000)] == mine
        # Paging by 3 across the boundary, and a window that starts inside the tail.
        paged, start = [], 0
        while True:
            page = [i for i, _ in await storage.search_leaves(key, start, size, 3)]
            paged += page
            if len(page) < 3:
                break
            start = page[-1] + 1
        assert paged == mine
        assert [i for i, _ in await storage.search_leaves(key, upto, size, 100)] == [i for i in mine if i >= upto]
        count, first, last = await storage.key_usage(key, size)
        assert (count, first, last) == (len(mine), mine[0], mine[-1])
        below = [i for i in mine if i < size - 1]
        assert (await storage.key_usage(key, size - 1))[0] == len(below)


async def test_lookup_tables_follow_the_chunks_and_lookups_see_the_tail(small_chunks):
    seq, storage, clock, writers, data = small_chunks
    db = os.path.join(data, "log.db")
    await _check_lookups(storage, db)
    n = 0
    for batch in (1, 3, 5, 2, 4, 7, 1, 1, 9, 4):  # batches that end on, before and across boundaries
        got = await asyncio.gather(*(seq.submit(event_pending(writers[(n + j) % 2], clock.now, b"e%d" % (n + j)))
                                     for j in range(batch)))
        n += batch
        assert len(got) == batch
        await _check_lookups(storage, db)
    assert await storage.find_leaf_hash(os.urandom(32)) is None
    assert await storage.search_leaves(os.urandom(32), 0, seq.head.size, 10) == []
    assert await storage.key_usage(os.urandom(32), seq.head.size) == (0, None, None)


async def test_a_database_with_the_old_indexes_is_moved_to_the_lookup_tables(small_chunks):
    seq, storage, clock, writers, data = small_chunks
    db = os.path.join(data, "log.db")
    await asyncio.gather(*(seq.submit(event_pending(writers[j % 2], clock.now, b"m%d" % j)) for j in range(11)))
    await seq.stop()
    await storage.close()
    conn = sqlite3.connect(db)  # as a database of the previous release: old indexes, no table rows
    conn.execute("DELETE FROM lhash_index")
    conn.execute("DELETE FROM key_index")
    conn.execute("CREATE INDEX leaves_lhash ON leaves (lhash)")
    conn.execute("CREATE INDEX leaves_key ON leaves (key_id, idx)")
    conn.commit()
    conn.close()
    reopened = await open_storage(db)
    try:
        await _check_lookups(reopened, db)
        conn = sqlite3.connect(db)
        names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        conn.close()
        assert not names & {"leaves_lhash", "leaves_key"} and "leaves_ident" in names
        assert scrub_database(db, _verifier(data)).ok
    finally:
        await reopened.close()
    again = await open_storage(db)  # nothing left to move: opening again changes nothing
    try:
        await _check_lookups(again, db)
    finally:
        await again.close()


@pytest.mark.parametrize("damage", ["drop lhash row", "drop key row", "wrong lhash", "extra key row"])
async def test_the_scrub_names_a_lookup_table_that_disagrees_with_the_leaves(small_chunks, damage):
    seq, storage, clock, writers, data = small_chunks
    db = os.path.join(data, "log.db")
    await asyncio.gather(*(seq.submit(event_pending(writers[j % 2], clock.now, b"s%d" % j)) for j in range(10)))
    await seq.stop()
    assert scrub_database(db, _verifier(data)).ok
    _, leaves = _oracle(db)
    victim = next(i for i, _, k in leaves if k is not None and i < 8)
    conn = sqlite3.connect(db)
    if damage == "drop lhash row":
        conn.execute("DELETE FROM lhash_index WHERE idx = ?", (victim,))
    elif damage == "drop key row":
        conn.execute("DELETE FROM key_index WHERE idx = ?", (victim,))
    elif damage == "wrong lhash":
        conn.execute("UPDATE lhash_index SET lhash = lhash + 1 WHERE idx = ?", (victim,))
    else:
        conn.execute("INSERT INTO key_index (key_id, idx) VALUES (?, ?)", (os.urandom(32), victim))
    conn.commit()
    conn.close()
    report = scrub_database(db, _verifier(data))
    table = "lhash_index" if "lhash" in damage else "key_index"
    assert not report.ok and any(table in p for p in report.problems), report.problems
    if damage != "extra key row":
        assert any(f"leaf {victim} has no row" in p for p in report.problems), report.problems
