"""The sequencer against the real SQLite backend, in process, with an injected clock and injected
storage faults: group commit, deduplication, compare-and-swap, failure handling, backpressure."""

from __future__ import annotations

import asyncio
import os

import pytest

from tlog.checkpoint import Checkpoint
from tlog.entry import EventEntry, Leaf, payload_commitment, register_event, sign_entry
from tlog.errors import KeyRegistryError
from tlog.keys import KeyType, PrivateKey
from tlog.proof import verify_consistency, verify_inclusion
from tlog.server.config import check_private_file
from tlog.server.init import init_log
from tlog.server.sequencer import BacklogFullError, Pending, Sequencer, WritesStoppedError
from tlog.server.sqlite import open_storage
from tlog.server.storage import StorageFailedError, StorageFullError
from tlog.server.treereader import TreeReader
from tlog.note import Signer

ORIGIN = "example.com/seq"
DAY = 86_400_000


class Clock:
    def __init__(self, start: int):
        self.now = start

    def __call__(self) -> int:
        return self.now


class FaultyStorage:
    """Wraps a storage and fails the next commits with the given exceptions (fail, not persist)."""

    def __init__(self, inner):
        self._inner = inner
        self.failures: list[Exception] = []
        self.commits = 0

    def __getattr__(self, name):
        return getattr(self._inner, name)

    async def commit_batch(self, batch, expected_size):
        if self.failures:
            raise self.failures.pop(0)
        self.commits += 1
        return await self._inner.commit_batch(batch, expected_size)


@pytest.fixture
async def log(tmp_path):
    data = str(tmp_path / "log")
    clock = Clock(1_800_000_000_000)
    await init_log(data, ORIGIN, clock_ms=clock)
    storage = FaultyStorage(await open_storage(os.path.join(data, "log.db")))
    signer = Signer.from_skey(check_private_file(os.path.join(data, "log.key")).decode().strip())
    seq = Sequencer(storage, signer, ORIGIN, clock_ms=clock, max_pending=8)
    await seq.load()
    seq.start()
    operator = PrivateKey.from_pem(check_private_file(os.path.join(data, "operator.key")))
    writer = PrivateKey.generate(KeyType.ED25519)
    reg = register_event(ORIGIN, clock.now, writer.public_key, "w", clock.now - DAY, clock.now + DAY)
    await seq.submit(operator_pending(reg, operator, clock.now))
    yield seq, storage, clock, writer, data
    await seq.stop()
    await storage.close()


def operator_pending(event, operator, now) -> Pending:
    leaf = Leaf(event.encode(), sign_entry(event, operator), now)
    return Pending(leaf.body, leaf.signature, leaf.identity(), operator=True)


def event_pending(writer: PrivateKey, now: int, payload: bytes = b"x", salt: bytes | None = None) -> Pending:
    salt = salt or os.urandom(16)
    entry = EventEntry(ORIGIN, writer.public_key.key_id, now, payload_commitment(salt, payload))
    leaf = Leaf(entry.encode(), sign_entry(entry, writer), now)
    return Pending(leaf.body, leaf.signature, leaf.identity(), key_id=entry.key_id, salt=salt, payload=payload)


async def test_group_commit_and_consistency(log):
    seq, storage, clock, writer, _ = log
    before = seq.head
    results = await asyncio.gather(*(seq.submit(event_pending(writer, clock.now, b"%d" % i)) for i in range(8)))
    assert sorted(r.index for r in results) == list(range(before.size, before.size + 8))
    for r in results:  # the receipts' proofs, made from memory, verify against the batch's checkpoint
        verify_inclusion(Leaf.decode(r.leaf).hash(), r.index, r.head.size, list(r.proof), r.head.root)
    assert seq.batches < before.size + 8  # several entries shared a batch
    head = seq.head
    proof = await TreeReader(storage.read_tiles).consistency_proof(before.size, head.size)
    verify_consistency(before.size, head.size, proof, before.root, head.root)
    assert Checkpoint.parse(head.note.split(b"\n\n")[0].decode() + "\n").size == head.size


async def test_duplicates_in_one_batch_and_across_batches(log):
    seq, _, clock, writer, _ = log
    p = event_pending(writer, clock.now, b"same", salt=b"s" * 16)
    twin = event_pending(writer, clock.now, b"same", salt=b"s" * 16)
    a, b = await asyncio.gather(seq.submit(p), seq.submit(twin))
    assert a.index == b.index and b.duplicate
    again = await seq.submit(event_pending(writer, clock.now, b"same", salt=b"s" * 16))
    assert again.index == a.index and again.duplicate
    assert seq.head.size == a.index + 1


async def test_checkpoint_time_strictly_increases_when_clock_steps_back(log):
    seq, _, clock, writer, _ = log
    first = seq.head.timestamp_ms
    clock.now -= 3_600_000
    r1 = await seq.submit(event_pending(writer, clock.now + 3_600_000 - 1))
    assert r1.head.timestamp_ms == first + 1
    r2 = await seq.submit(event_pending(writer, clock.now + 3_600_000 - 1))
    assert r2.head.timestamp_ms == first + 2
    # Integration times never go backwards either.
    assert Leaf.decode(r2.leaf).integrated_ms >= Leaf.decode(r1.leaf).integrated_ms


async def test_storage_full_fails_batch_and_recovers(log):
    seq, storage, clock, writer, _ = log
    head = seq.head
    storage.failures.append(StorageFullError("disk full"))
    with pytest.raises(StorageFullError):
        await seq.submit(event_pending(writer, clock.now))
    assert seq.head == head and seq.stopped is None  # memory equals storage
    assert (await storage.head()) == head
    ok = await seq.submit(event_pending(writer, clock.now))
    assert ok.index == head.size


async def test_io_failure_stops_writes(log):
    seq, storage, clock, writer, _ = log
    head = seq.head
    storage.failures.append(StorageFailedError("fsync failed"))
    with pytest.raises(WritesStoppedError):
        await seq.submit(event_pending(writer, clock.now))
    with pytest.raises(WritesStoppedError):
        await seq.submit(event_pending(writer, clock.now))
    assert seq.head == head and (await storage.head()) == head


async def test_head_compare_and_swap(log):
    seq, storage, clock, writer, _ = log
    # Someone else moves the head (a second writer on the same database): the CAS fails, writes stop.
    await storage.execute_write("UPDATE head SET size = size + 1 WHERE id = 1")
    with pytest.raises(WritesStoppedError):
        await seq.submit(event_pending(writer, clock.now))
    assert "no longer at size" in str(seq.stopped)


async def test_backlog_full_is_refused(log):
    seq, storage, clock, writer, _ = log
    gate = asyncio.Event()
    inner_commit = storage.commit_batch

    async def slow_commit(batch, expected_size):
        await gate.wait()
        return await inner_commit(batch, expected_size)

    storage.commit_batch = slow_commit
    first = asyncio.ensure_future(seq.submit(event_pending(writer, clock.now)))
    await asyncio.sleep(0.05)  # the first batch is now stuck in commit
    waiting = [asyncio.ensure_future(seq.submit(event_pending(writer, clock.now))) for _ in range(8)]
    await asyncio.sleep(0)
    with pytest.raises(BacklogFullError):
        await seq.submit(event_pending(writer, clock.now))
    gate.set()
    done = await asyncio.gather(first, *waiting)
    assert len({r.index for r in done}) == 9  # everything accepted before is integrated


async def test_entry_invalid_at_integration_time_is_refused(log):
    seq, _, clock, writer, _ = log
    clock.now += 2 * DAY  # the key expired between the handler's check and integration
    with pytest.raises(KeyRegistryError):
        await seq.submit(event_pending(writer, clock.now))


async def test_receipts_of_batches_of_every_size_verify(log):
    """The receipts' proofs (each a low part of its own and a part shared by the batch) verify for
    batches of 1 to 40 entries at every offset they land on, across tile boundaries."""
    seq, _, clock, writer, _ = log
    seq.max_pending = 64  # the fixture's 8 is for the backpressure tests
    for n in range(1, 41):
        batch = [event_pending(writer, clock.now, b"%d-%d" % (n, i)) for i in range(n)]
        results = await asyncio.gather(*(seq.submit(p) for p in batch))
        assert len({r.head.size for r in results}) == 1  # one batch
        for r in results:
            verify_inclusion(Leaf.decode(r.leaf).hash(), r.index, r.head.size, list(r.proof), r.head.root)


async def test_restart_rebuilds_state(log, tmp_path):
    seq, storage, clock, writer, data = log
    for start in range(0, 300, 7):  # batches of 7 cross a full tile boundary, at odd offsets
        batch = [event_pending(writer, clock.now, b"%d" % i) for i in range(start, min(start + 7, 300))]
        for r in await asyncio.gather(*(seq.submit(p) for p in batch)):
            verify_inclusion(Leaf.decode(r.leaf).hash(), r.index, r.head.size, list(r.proof), r.head.root)
    head = seq.head
    other = await open_storage(os.path.join(data, "log.db"))
    try:
        fresh = Sequencer(other, seq.signer, ORIGIN, clock_ms=clock)
        await fresh.load()
        assert fresh.head == head and fresh.range.root() == head.root
        assert fresh.partial == seq.partial
        assert fresh.registry.to_json() == seq.registry.to_json()
    finally:
        await other.close()


async def test_full_tiles_are_stored_with_their_interiors_and_proofs_use_them(log):
    """Each batch that fills a hash tile stores the tile's interior (levels 1-7 of its little tree);
    proofs read those node hashes instead of recomputing them, give the same answers as recomputing
    and as the oracle, and a database without interiors still serves every proof."""
    import sqlite3

    from tests.oracle import Oracle
    from tlog.hashing import leaf_hash
    from tlog.server.treereader import INTERIOR_HASHES, tile_interior, tile_paths

    seq, storage, clock, writer, _ = log
    n = 0
    while seq.head.size < 701:
        await asyncio.gather(*(seq.submit(event_pending(writer, clock.now, b"%d" % (n + i))) for i in range(8)))
        n += 8
    size = seq.head.size
    conn = sqlite3.connect(storage.path)
    trees = {(i >> 48, i & (2**48 - 1)): bytes(d) for i, d in conn.execute("SELECT id, data FROM tile_trees")}
    tiles = {(lvl, idx): bytes(d) for lvl, idx, d in conn.execute("SELECT level, idx, data FROM tiles")}
    conn.close()
    conn = sqlite3.connect(storage.path)
    paths = dict(conn.execute("SELECT id, data FROM tile_paths"))
    conn.close()
    assert sorted(trees) == [(0, 0), (0, 1)]  # the full level-0 tiles of a tree of 701+ leaves
    for key, tree in trees.items():
        assert len(tree) == (256 + INTERIOR_HASHES) * 32 and tree == tiles[key] + tile_interior(tiles[key])
        assert [paths[key[1] * 16 + g] for g in range(16)] == tile_paths(tree)
    assert sorted(paths) == list(range(32))  # 16 inclusion paths per full level-0 tile
    oracle = Oracle([leaf_hash(raw) for raw in await storage.read_leaves(0, size)])
    stored, recomputed = TreeReader(storage.read_tile_trees), TreeReader(storage.read_tiles)
    by_path = TreeReader(storage.read_tiles, read_path=storage.read_tile_path, cache_tiles=1)
    for index in (0, 1, 255, 256, 300, 511, 512, size - 1):
        proof = await stored.inclusion_proof(index, size)
        assert proof == await recomputed.inclusion_proof(index, size) == oracle.path(index, size)
        assert proof == await by_path.inclusion_proof(index, size)
    for first in (1, 7, 256, 300, 512):
        proof = await stored.consistency_proof(first, size)
        assert proof == await recomputed.consistency_proof(first, size) == oracle.proof(first, size)
    # Named mutation: a damaged stored interior changes the proofs read from it (so they are read).
    conn = sqlite3.connect(storage.path)
    (tree,) = conn.execute("SELECT data FROM tile_trees WHERE id = 0").fetchone()
    conn.execute("UPDATE tile_trees SET data = ? WHERE id = 0", (bytes(tree[:8192]) + bytes(len(tree) - 8192),))
    conn.commit()
    conn.close()
    assert await TreeReader(storage.read_tile_trees).inclusion_proof(3, size) != oracle.path(3, size)
    conn = sqlite3.connect(storage.path)
    conn.execute("UPDATE tile_paths SET data = ? WHERE id = 17", (bytes(1088),))  # leaves 272 .. 287
    conn.commit()
    conn.close()
    from tlog.server.pathcache import RECORD_BYTES, cache_path
    with open(cache_path(storage.path), "r+b") as f:  # and its path cache record: a miss, so the row is read
        f.seek(17 * RECORD_BYTES)
        f.write(bytes(RECORD_BYTES))
    assert await by_path.inclusion_proof(280, size) != oracle.path(280, size)
    assert await by_path.inclusion_proof(300, size) == oracle.path(300, size)


def test_lhash_key_parts_bound_the_pages_a_batch_touches_and_lookups_probe_every_part():
    from tlog.server.sqlite import lhash_key, lhash_keys

    h = os.urandom(32)
    for index, size in ((0, 1), (65535, 65536), (65536, 65537), (10_000_000, 10_000_001)):
        assert lhash_key(h, index) in lhash_keys(h, size)
    assert lhash_key(h, 65536) not in lhash_keys(h, 65536)  # a tree without leaf 65,536 skips its part
    assert len(lhash_keys(h, 10_000_000)) == 153
    keys = [lhash_key(os.urandom(32), i) for i in range(0, 1_000_000, 1000)]
    assert [k >> 32 for k in keys] == sorted(k >> 32 for k in keys)  # grouped by part, in tree order
    assert lhash_key(h, 5, b"1") == lhash_keys(h, 99, b"1")[0] == int.from_bytes(h[:8], "big", signed=True)


async def test_leaf_hash_lookup_across_parts(log, monkeypatch):
    """find_leaf_hash finds leaves in every part of the lhash index (parts shrunk to 4 leaves here)."""
    from tlog.server import sqlite as backend

    monkeypatch.setattr(backend, "LHASH_PART_BITS", 2)
    seq, storage, clock, writer, _ = log
    got = []
    for i in range(5):
        got += await asyncio.gather(*(seq.submit(event_pending(writer, clock.now, b"p%d-%d" % (i, j)))
                                      for j in range(3)))
    for r in got:
        assert await storage.find_leaf_hash(Leaf.decode(r.leaf).hash()) == r.index
    assert await storage.find_leaf_hash(os.urandom(32)) is None


def test_ident_key_clusters_by_the_writers_time_and_keeps_twins_together():
    from tlog.server.sqlite import ident_key

    ident = bytes(range(32))
    t = 1_800_000_000_000
    assert ident_key(ident, t) == ident_key(ident, t)  # twins: same body, same identity and time
    later = [ident_key(os.urandom(32), t + k) for k in range(1, 50)]
    assert later == sorted(later) and later[0] > ident_key(b"\xff" * 32, t)  # grows with every millisecond
    assert ident_key(ident, t) >> 21 == t and ident_key(ident, t) & 0x1FFFFF == 0x000102 >> 3
    assert all(0 <= ident_key(os.urandom(32), ms) < 2**63 for ms in (0, t, 2**42 - 1, 2**64 - 1))
    assert ident_key(ident, t, b"1") == int.from_bytes(ident[:8], "big", signed=True)
    # scheme "2" (databases of the previous release): 4,096-ms buckets over the identity's 4 bytes
    assert ident_key(ident, t, b"2") == ((t >> 12) << 32) | 0x00010203
    assert ident_key(ident, t + 4095 - t % 4096, b"2") == ident_key(ident, t, b"2")


@pytest.mark.parametrize("scheme", [b"1", b"2"])
async def test_databases_with_the_old_index_scheme_still_deduplicate_and_find_leaf_hashes(log, scheme):
    """A database of an older release (meta index_scheme "2", or none: "1") keeps its derivation."""
    import sqlite3

    from tlog.server.sqlite import ident_key

    seq, storage, clock, writer, data = log
    storage._inner.index_scheme = scheme  # as open_storage reads it from such a database
    p = event_pending(writer, clock.now, b"old")
    first = await seq.submit(p)
    conn = sqlite3.connect(storage.path)
    (stored,) = conn.execute("SELECT ident FROM leaves WHERE idx = ?", (first.index,)).fetchone()
    conn.close()
    assert stored == ident_key(p.identity, clock.now, scheme) != ident_key(p.identity, clock.now)
    again = await seq.submit(Pending(p.body, p.signature, p.identity, key_id=p.key_id, salt=p.salt,
                                     payload=p.payload))
    assert again.duplicate and again.index == first.index
    assert await storage.find_leaf_hash(Leaf.decode(first.leaf).hash()) == first.index


@pytest.mark.parametrize("scheme, opens", [(b"2", True), (b"3", True), (b"9", False)])
async def test_open_storage_keeps_the_databases_index_scheme_and_refuses_an_unknown_one(tmp_path, scheme, opens):
    import sqlite3

    from tlog.server.storage import StorageError

    data = str(tmp_path / "log")
    await init_log(data, ORIGIN, clock_ms=Clock(1_800_000_000_000))
    path = os.path.join(data, "log.db")
    conn = sqlite3.connect(path)
    with conn:
        assert conn.execute("SELECT value FROM meta WHERE name = 'index_scheme'").fetchone() == (b"3",)
        conn.execute("UPDATE meta SET value = ? WHERE name = 'index_scheme'", (scheme,))
    conn.close()
    if not opens:
        with pytest.raises(StorageError, match="unsupported index scheme"):
            await open_storage(path)
        return
    storage = await open_storage(path)
    try:
        assert storage.index_scheme == scheme
    finally:
        await storage.close()
