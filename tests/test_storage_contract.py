"""The storage contract (tlog/server/storage.py) against the SQLite backend, clause by clause, with
synthetic batches (storage does not check the tree: the sequencer does).

Clause 4 (a full disk, a failed fsync) is tested with a real full filesystem in
tests/test_faults_disk.py and with every durable system call failed in tests/test_faults_syscall.py;
clause 5 (erasure in the same transaction) in tests/test_privacy.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3

import pytest

from tlog.entry import EventEntry, Leaf, payload_commitment
from tlog.hashing import HASH_SIZE
from tlog.server.init import init_log
from tlog.server.sqlite import open_storage
from tlog.server.storage import Batch, Head, HeadMovedError, MissingDataError, NewLeaf, StorageFailedError
from tlog.server.treereader import PATH_BYTES, tile_interior, tile_paths
from tlog.tiles import Tile


def _h(*parts: object) -> bytes:
    return hashlib.sha256(repr(parts).encode()).digest()


T0 = 1_800_000_000_000


def _leaf(index: int) -> NewLeaf:
    """A well-formed event leaf (deduplication decodes stored leaves); its signature is not checked here."""
    entry = EventEntry("example.com/contract", b"k" * 32, T0, payload_commitment(b"s" * 16, b"payload %d" % index))
    leaf = Leaf(entry.encode(), bytes(64), T0 + index)
    return NewLeaf(index=index, leaf=leaf.encode(), identity=leaf.identity(), leaf_hash=leaf.hash(),
                   key_id=b"k" * 32, integrated_ms=T0 + index, salt=b"s" * 16, payload=b"payload %d" % index,
                   entry_ms=T0)


def _head(size: int) -> Head:
    return Head(size, _h("root", size), 1_800_000_000_000 + size, b"checkpoint note %d\n" % size)


@pytest.fixture
def storage(tmp_path):
    data = str(tmp_path / "log")
    asyncio.run(init_log(data, "example.com/contract"))  # genesis: index 0, size 1
    return os.path.join(data, "log.db")


def _run(coro):
    return asyncio.run(coro)


def test_a_committed_batch_is_all_there_after_reopening(storage):
    """Clause 1 (durable): leaves, payloads, tiles with their trees and paths, the checkpoint, the head."""
    full = b"".join(_h("tile", j) for j in range(256))

    async def go() -> None:
        st = await open_storage(storage)
        leaves = [_leaf(i) for i in range(1, 300)]
        batch = Batch(leaves, {Tile(0, 0, 256): full, Tile(0, 1, 44): full[:44 * HASH_SIZE]}, _head(300),
                      tile_interiors={Tile(0, 0, 256): tile_interior(full)})
        await st.commit_batch(batch, expected_size=1)
        await st.close()
        st = await open_storage(storage)
        try:
            assert (await st.head()).size == 300
            assert await st.read_leaves(1, 300) == [x.leaf for x in leaves]
            assert await st.read_payload(7) == (b"s" * 16, b"payload 7")
            assert await st.read_tiles([Tile(0, 0, 256), Tile(0, 1, 44)]) == [full, full[:44 * HASH_SIZE]]
            assert await st.read_tile_trees([Tile(0, 0, 256)]) == [full + tile_interior(full)]
            paths = tile_paths(full + tile_interior(full))
            assert [st.read_tile_path(0, g) for g in range(16)] == paths and len(paths[0]) == PATH_BYTES
            assert st.read_tile_path(1, 0) is None  # tile 1 is not full: no paths
            assert (300, _head(300).note) in await st.checkpoints(after_size=1)
            assert await st.find_identities([(leaves[4].identity, T0)]) == {leaves[4].identity: 5}
            assert await st.find_leaf_hash(leaves[8].leaf_hash) == 9
        finally:
            await st.close()

    _run(go())


def test_a_batch_that_fails_half_way_leaves_nothing(storage):
    """Clause 1 (atomic): the second leaf collides with a stored index, after the head, the first leaf
    and its payload were written in the transaction: none of them is visible afterwards."""
    async def go() -> None:
        st = await open_storage(storage)
        try:
            with pytest.raises(StorageFailedError):
                await st.commit_batch(Batch([_leaf(1), _leaf(0)], {}, _head(3)), expected_size=1)
            assert (await st.head()).size == 1
            assert await st.read_payload(1) is None
            with pytest.raises(MissingDataError):
                await st.read_leaves(1, 2)
            assert all(size != 3 for size, _ in await st.checkpoints())
            await st.commit_batch(Batch([_leaf(1)], {}, _head(2)), expected_size=1)  # and it goes on
            assert (await st.head()).size == 2
        finally:
            await st.close()

    _run(go())


def test_the_head_moves_only_by_compare_and_swap(storage):
    """Clause 2: a commit from a size that is not the stored head's changes nothing."""
    async def go() -> None:
        st = await open_storage(storage)
        try:
            await st.commit_batch(Batch([_leaf(1)], {}, _head(2)), expected_size=1)
            for stale in (1, 0, 3):
                with pytest.raises(HeadMovedError):
                    await st.commit_batch(Batch([_leaf(2)], {}, _head(3)), expected_size=stale)
            assert (await st.head()).size == 2
            with pytest.raises(MissingDataError):
                await st.read_leaves(2, 3)
        finally:
            await st.close()

    _run(go())


def test_tiles_are_read_as_prefixes_and_a_missing_one_is_an_invariant_failure(storage):
    """Clause 3: a stored tile of width 5 answers widths 1..5 with exactly 32 * W bytes; a wider ask,
    or a tile that is not stored, raises MissingDataError."""
    data = b"".join(_h("t", j) for j in range(5))

    async def go() -> None:
        st = await open_storage(storage)
        try:
            await st.commit_batch(Batch([_leaf(i) for i in range(1, 5)], {Tile(0, 0, 5): data}, _head(5)),
                                  expected_size=1)
            for w in range(1, 6):
                assert await st.read_tiles([Tile(0, 0, w)]) == [data[:w * HASH_SIZE]]
                assert await st.read_tile_trees([Tile(0, 0, w)]) == [data[:w * HASH_SIZE]]  # no tree: not full
            with pytest.raises(MissingDataError):
                await st.read_tiles([Tile(0, 0, 6)])
            with pytest.raises(MissingDataError):
                await st.read_tiles([Tile(1, 0, 1)])
        finally:
            await st.close()

    _run(go())


def test_a_database_without_the_paths_table_answers_none(storage):
    """Clause 3: read_tile_path on a database that has no ``tile_paths`` (read-only, older release)."""
    conn = sqlite3.connect(storage)
    conn.execute("DROP TABLE tile_paths")
    conn.commit()
    conn.close()

    async def go() -> None:
        st = await open_storage(storage)  # the schema is idempotent: opening adds the table back ...
        try:
            assert st.read_tile_path(0, 0) is None
        finally:
            await st.close()

    _run(go())
    conn = sqlite3.connect(storage)
    assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'tile_paths'").fetchone() == (1,)
    conn.close()
