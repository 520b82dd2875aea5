"""TreeReader against the RFC 6962 oracle: every inclusion and consistency proof of small trees read
from tlog-tiles, with the right-border cache on and off, and ``proof.inclusion_path`` against
``inclusion_plan`` at every index of every size up to 300 and at random huge sizes."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.oracle import Oracle
from tlog.hashing import leaf_hash
from tlog.proof import _range_ids, inclusion_path, inclusion_plan
from tlog.server.treereader import PATH_BYTES, TreeReader, tile_interior, tile_paths
from tlog.tiles import TILE_HEIGHT, TILE_WIDTH, Tile
from tlog.tree import MAX_TREE_SIZE


def _tile_store(oracle: Oracle):
    """``read_tiles`` over the oracle: tile (L, t, w) holds nodes (8L, t*256 .. t*256+w-1)."""
    reads: list[Tile] = []

    async def read_tiles(tiles: list[Tile]) -> list[bytes]:
        reads.extend(tiles)
        out = []
        for t in tiles:
            level = TILE_HEIGHT * t.level
            out.append(b"".join(oracle.subtree(level, t.index * TILE_WIDTH + j) for j in range(t.width)))
        return out

    return read_tiles, reads


def test_every_inclusion_path_is_the_plan_with_the_border_folded() -> None:
    for size in range(1, 301):
        for index in range(size):
            ids, border = inclusion_path(index, size)
            expanded = []
            for node in ids:
                expanded.extend(_range_ids(border, size) if node is None else [node])
            assert expanded == inclusion_plan(index, size).ids, (index, size)
            assert ids.count(None) == (1 if border >= 0 else 0)


def test_an_inclusion_path_split_at_any_level_is_its_two_parts() -> None:
    """``from_level``/``to_level``: the elements of levels below ``l`` then those from ``l`` up are
    the whole path, at every index of every size up to 130 and every split level."""
    for size in range(1, 131):
        for index in range(size):
            whole = inclusion_path(index, size)
            for level in range(size.bit_length() + 2):
                low, low_border = inclusion_path(index, size, to_level=level)
                high, high_border = inclusion_path(index, size, from_level=level)
                assert low + high == whole[0], (index, size, level)
                assert max(low_border, high_border) == whole[1]


@settings(max_examples=300, deadline=None)
@given(st.data(), st.integers(min_value=1, max_value=MAX_TREE_SIZE))
def test_inclusion_path_at_any_size(data: st.DataObject, size: int) -> None:
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    ids, border = inclusion_path(index, size)
    expanded = []
    for node in ids:
        expanded.extend(_range_ids(border, size) if node is None else [node])
    assert expanded == inclusion_plan(index, size).ids


def test_reader_proofs_equal_the_oracle_at_every_small_size() -> None:
    leaves = [leaf_hash(b"leaf %d" % i) for i in range(600)]
    oracle = Oracle(leaves)

    async def check() -> None:
        read_tiles, _ = _tile_store(oracle)
        shared = TreeReader(read_tiles)  # keeps borders and tiles across sizes and indices
        for size in list(range(1, 70)) + [255, 256, 257, 511, 512, 513, 600]:
            fresh = TreeReader(read_tiles, cache_tiles=1)
            for index in range(size):
                want = oracle.path(index, size)
                assert await shared.inclusion_proof(index, size) == want, (index, size)
                assert await fresh.inclusion_proof(index, size) == want, (index, size)
            for first in range(1, size + 1):
                assert await shared.consistency_proof(first, size) == oracle.proof(first, size)

    asyncio.run(check())


def test_a_cached_border_is_used_and_belongs_to_its_size() -> None:
    """Named mutations: a wrong cached border changes the proofs that use it (so it is read from the
    cache), and proofs at another size never see it."""
    leaves = [leaf_hash(b"leaf %d" % i) for i in range(300)]
    oracle = Oracle(leaves)

    async def check() -> None:
        read_tiles, reads = _tile_store(oracle)
        reader = TreeReader(read_tiles)
        assert await reader.inclusion_proof(0, 300) == oracle.path(0, 300)
        [(key, value)] = [(k, v) for k, v in reader._borders.items()]
        assert key == (256, 300) and value == oracle.mth(256, 300)
        reads.clear()
        assert await reader.inclusion_proof(1, 300) == oracle.path(1, 300)
        assert reads == []  # the tile and the border are both remembered
        reader._borders[key] = bytes(32)
        assert (await reader.inclusion_proof(2, 300))[-1] == bytes(32)
        assert await reader.inclusion_proof(2, 299) == oracle.path(2, 299)

    asyncio.run(check())


def _path_store(oracle: Oracle, size: int):
    """``read_path`` over the oracle's full level-0 tiles, counting reads."""
    reads: list[tuple[int, int]] = []
    paths = {}
    for t in range(size // TILE_WIDTH):
        tile = b"".join(oracle.subtree(0, t * TILE_WIDTH + j) for j in range(TILE_WIDTH))
        for g, path in enumerate(tile_paths(tile + tile_interior(tile))):
            paths[(t, g)] = path

    def read_path(tile_index: int, group: int) -> bytes | None:
        reads.append((tile_index, group))
        return paths.get((tile_index, group))

    return read_path, reads, paths


def test_proofs_read_from_stored_paths_equal_the_oracle() -> None:
    """With stored inclusion paths every proof of a leaf in a full level-0 tile reads one path (1 KB)
    and no level-0 tile; the answers equal the oracle's, whether the path is stored or not."""
    leaves = [leaf_hash(b"leaf %d" % i) for i in range(900)]
    oracle = Oracle(leaves)

    async def check() -> None:
        read_tiles, tile_reads = _tile_store(oracle)
        read_path, path_reads, paths = _path_store(oracle, 900)
        assert all(len(p) == PATH_BYTES == 1088 for p in paths.values())
        for size in (256, 257, 300, 511, 512, 513, 767, 768, 900):
            reader = TreeReader(read_tiles, read_path=read_path, cache_tiles=1)
            for index in range(size):
                tile_reads.clear()
                path_reads.clear()
                assert await reader.inclusion_proof(index, size) == oracle.path(index, size), (index, size)
                if (index // TILE_WIDTH + 1) * TILE_WIDTH <= size:
                    assert all(t.level > 0 or t.width < TILE_WIDTH for t in tile_reads), (index, size, tile_reads)
        # A path that is not stored (a database from before paths were kept): the tile is read instead.
        del paths[(1, 5)]
        reader = TreeReader(read_tiles, read_path=read_path, cache_tiles=1)
        assert await reader.inclusion_proof(256 + 5 * 16 + 3, 900) == oracle.path(256 + 83, 900)

    asyncio.run(check())


def test_a_damaged_stored_path_changes_only_the_proofs_of_its_leaves() -> None:
    """Named mutation: flipping one hash of one stored path changes the proofs of exactly the leaves
    that read it (so paths are read, and from the right place)."""
    leaves = [leaf_hash(b"leaf %d" % i) for i in range(512)]
    oracle = Oracle(leaves)

    async def check() -> None:
        read_tiles, _ = _tile_store(oracle)
        read_path, _, paths = _path_store(oracle, 512)
        paths[(1, 2)] = bytes(32) + paths[(1, 2)][32:]  # leaf 256+32's hash: the sibling of leaf 256+33
        reader = TreeReader(read_tiles, read_path=read_path, cache_tiles=1)
        wrong = [i for i in range(512) if await reader.inclusion_proof(i, 512) != oracle.path(i, 512)]
        assert wrong == [256 + 33]

    asyncio.run(check())


def test_receipt_proofs_from_a_batch_equal_the_oracle_for_every_small_batch() -> None:
    """The sequencer's receipts (proofs from the batch's nodes and the old compact range, borders
    folded once per batch) equal the oracle for every old size < 70 and batch of 1 to 40 leaves."""
    from tlog.server.sequencer import Sequencer
    from tlog.tree import CompactRange

    leaves = [leaf_hash(b"leaf %d" % i) for i in range(110)]
    oracle = Oracle(leaves)
    for old in range(70):
        before = CompactRange()
        before.extend(leaves[:old])
        for n in range(1, 41):
            after = before.copy()
            nodes = after.extend(leaves[old:old + n])
            known = Sequencer._known_nodes(before, nodes)
            proofs = Sequencer._receipt_proofs(known, list(range(old, old + n)), old + n)
            assert [list(p) for p in proofs] == [oracle.path(i, old + n) for i in range(old, old + n)], (old, n)


def test_proofs_in_full_level1_tiles_equal_the_oracle() -> None:
    """Leaves whose level-1 tile is full (65,536 leaves) take heights 8-15 from that tile and 16 up
    from a list kept per (index >> 16, size): at three sizes, read in turn so a list kept for one size
    is never served at another, every proof equals the oracle's, at the tile edges and at random."""
    import random

    n = 2 * 65_536 + 300
    oracle = Oracle([leaf_hash(b"leaf %d" % i) for i in range(n)])

    async def check() -> None:
        read_tiles, tile_reads = _tile_store(oracle)
        read_path, _, _ = _path_store(oracle, n)
        reader = TreeReader(read_tiles, read_path=read_path)
        rng = random.Random(9)
        sizes = (65_536, 131_073, n)
        edges = [0, 1, 255, 256, 65_535, 65_536, 65_791, 131_071, 131_072, n - 1]
        for _ in range(3):
            for size in sizes:
                for index in [i for i in edges if i < size] + [rng.randrange(size) for _ in range(150)]:
                    assert await reader.inclusion_proof(index, size) == oracle.path(index, size), (index, size)
        # Named mutation: node (8, 5) wrong in level-1 tile 0 (so are its ancestors in the tile's little
        # tree) changes exactly the proofs whose sibling at a height 8-15 is one of them.
        bad = TreeReader(_damaged(read_tiles, Tile(1, 0, TILE_WIDTH), 5), read_path=read_path)
        sample = range(0, 65_536, 37)
        wrong = {i for i in sample if await bad.inclusion_proof(i, n) != oracle.path(i, n)}
        assert wrong == {i for i in sample if any((i >> h) ^ 1 == 5 >> (h - 8) for h in range(8, 16))}
        assert len(wrong) > 100

    asyncio.run(check())


def _damaged(read_tiles, tile: Tile, hash_index: int):
    """``read_tiles`` with hash ``hash_index`` of ``tile`` zeroed."""
    async def read(tiles: list[Tile]) -> list[bytes]:
        out = await read_tiles(tiles)
        return [bytes(32).join([d[:32 * hash_index], d[32 * (hash_index + 1):]]) if t == tile else d
                for t, d in zip(tiles, out)]
    return read
