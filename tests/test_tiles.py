"""Tests of tlog.tiles (C2SP tlog-tiles): paths, which tiles exist, building tiles from the nodes a
CompactRange reports, reading every node and every proof back out of them against the RFC 6962
oracle, and entry bundles.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.oracle import Oracle, rfc_leaf_hash
from tlog.errors import FormatError, InvariantError, ProofError, TlogError
from tlog.proof import consistency_plan, inclusion_plan, root_plan
from tlog.tiles import (
    ENTRIES_LEVEL,
    MAX_ENTRY_SIZE,
    TILE_HEIGHT,
    TILE_WIDTH,
    Tile,
    TileHashReader,
    decode_entry_bundle,
    encode_entry_bundle,
    encode_tile_index,
    entry_tiles_for_size,
    hash_from_tile,
    hashes_from_tiles,
    parse_tile_path,
    tile_for_node,
    tiles_for_nodes,
    tiles_for_size,
    update_entry_bundles,
    update_tiles,
)
from tlog.tree import MAX_TREE_SIZE, CompactRange

# ---------------------------------------------------------------------------------------------
# A log built in batches: the tiles written, and an oracle over the same leaves


def make_leaves(n: int) -> list[bytes]:
    return [rfc_leaf_hash(i.to_bytes(8, "big")) for i in range(n)]


class TileStore:
    """Every tile update_tiles told us to write, as a server would keep them."""

    def __init__(self) -> None:
        self.written: dict[Tile, bytes] = {}
        self.writes: dict[Tile, int] = {}
        self.latest: dict[tuple[int, int], bytes] = {}
        self.calls: list[list[Tile]] = []

    def write(self, tiles: dict[Tile, bytes]) -> None:
        for tile, data in tiles.items():
            self.written[tile] = data
            self.writes[tile] = self.writes.get(tile, 0) + 1
            self.latest[(tile.level, tile.index)] = data

    def read_tiles(self, tiles: list[Tile]) -> list[bytes]:
        """Exact tiles where written; else the first ``width`` hashes of the widest version."""
        self.calls.append(list(tiles))
        out = []
        for tile in tiles:
            data = self.written.get(tile)
            if data is None:
                data = self.latest[(tile.level, tile.index)][:tile.width * 32]
                assert len(data) == tile.width * 32, f"store has no version of {tile} that wide"
            out.append(data)
        return out


def build(n: int, batch_sizes: Sequence[int]) -> tuple[TileStore, list[int]]:
    """Append ``n`` leaves in batches through CompactRange + update_tiles; return the store and the sizes."""
    leaves = make_leaves(n)
    store, cr, partial, sizes = TileStore(), CompactRange(), {}, []
    pos = 0
    for batch in itertools.cycle(batch_sizes):
        if pos >= n:
            break
        batch = min(batch, n - pos)
        update = update_tiles(pos, partial, cr.extend(leaves[pos:pos + batch]))
        pos += batch
        assert update.size == pos == cr.size
        store.write(update.tiles)
        partial = update.partial
        sizes.append(pos)
    return store, sizes


def oracle_tile(oracle: Oracle, tile: Tile) -> bytes:
    """tlog-tiles: hash i of tile (l, n) is MTH(D[(n*256 + i) * 256**l : (n*256 + i + 1) * 256**l])."""
    span = TILE_WIDTH ** tile.level
    return b"".join(oracle.mth((tile.index * 256 + i) * span, (tile.index * 256 + i + 1) * span)
                    for i in range(tile.width))


def all_nodes(size: int) -> list[tuple[int, int]]:
    return [(level, index) for level in range(size.bit_length())
            for index in range(size >> level)]


# ---------------------------------------------------------------------------------------------
# Paths


@pytest.mark.parametrize("n, text", [
    (0, "000"), (7, "007"), (999, "999"), (1000, "x001/000"), (1234067, "x001/x234/067"),
    (1_000_000, "x001/x000/000"), (MAX_TREE_SIZE, "x009/x223/x372/x036/x854/x775/807"),
])
def test_encode_tile_index(n: int, text: str) -> None:
    assert encode_tile_index(n) == text


@pytest.mark.parametrize("tile, path", [
    (Tile(0, 1234067, 8), "tile/0/x001/x234/067.p/8"),          # the spec's index example
    (Tile(0, 1234067), "tile/0/x001/x234/067"),
    (Tile(0, 273, 112), "tile/0/273.p/112"),                    # the spec's size-70,000 example
    (Tile(1, 1, 17), "tile/1/001.p/17"),
    (Tile(2, 0, 1), "tile/2/000.p/1"),
    (Tile(63, 0, 255), "tile/63/000.p/255"),
    (Tile(ENTRIES_LEVEL, 0), "tile/entries/000"),
    (Tile(ENTRIES_LEVEL, 1234067, 3), "tile/entries/x001/x234/067.p/3"),
])
def test_tile_paths(tile: Tile, path: str) -> None:
    assert tile.path() == path
    assert parse_tile_path(path) == tile


def test_every_small_index_round_trips() -> None:
    for n in range(3000):
        tile = Tile(n % 3, n, 1 + n % TILE_WIDTH)
        assert parse_tile_path(tile.path()) == tile


@pytest.mark.parametrize("path", [
    "", "tile", "tile/", "tile/0", "tile/0/", "tile/0/0", "tile/0/00", "tile/0/0000", "tile/0/x01/000",
    "tile/0/001/000",          # missing x
    "tile/0/x000/001",         # non-canonical leading zero element
    "tile/0/x000/000",
    "tile/0/x001", "tile/0/x001/", "tile/0/X001/000", "tile/0/x001/x234",
    "tile/00/000", "tile/01/000", "tile/64/000", "tile/100/000", "tile/-1/000", "tile/+1/000",
    "tile/entry/000", "tile/Entries/000", "tile/entries/0", "tiles/0/000", "Tile/0/000",
    "tile/0/000.p/0", "tile/0/000.p/00", "tile/0/000.p/01", "tile/0/000.p/256", "tile/0/000.p/257",
    "tile/0/000.p/1000", "tile/0/000.p/", "tile/0/000.p", "tile/0/000p/5", "tile/0/000.q/5",
    "tile/entries/000.p/256", "tile/0/000.p/5/", "tile/0/000.p/-5",
    " tile/0/000", "tile/0/000 ", "tile/0/000\n", "/tile/0/000", "tile/0/000/", "tile//0/000",
    "tile/0/0_0", "tile/0/+00", "tile/0/ 00", "tile/0/\u0660\u0660\u0660", "tile/\u0661/000",
    "tile/0/x009/x223/x372/x036/x854/x775/808",        # 2**63
    "tile/0/x999/x999/x999/x999/x999/x999/x999/999",
    "tile/0/" + "x001/" * 40 + "000",
    "tile/0/000.p/5\x00",
])
def test_parse_rejects(path: str) -> None:
    with pytest.raises(FormatError):
        parse_tile_path(path)


@pytest.mark.parametrize("value", [b"tile/0/000", None, 0, ["tile/0/000"]])
def test_parse_rejects_non_str(value: object) -> None:
    with pytest.raises(FormatError):
        parse_tile_path(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("args", [
    (-2, 0, 1), (64, 0, 1), (0, -1, 1), (0, 1 << 63, 1), (0, 0, 0), (0, 0, 257), (True, 0, 1),
    (0, 0, 1.0), ("0", 0, 1),
])
def test_tile_rejects_bad_coordinates(args: tuple) -> None:
    with pytest.raises(FormatError):
        Tile(*args)


@pytest.mark.parametrize("n", [-1, 1 << 63, True, 1.5, "5"])
def test_encode_tile_index_rejects(n: object) -> None:
    with pytest.raises(FormatError):
        encode_tile_index(n)  # type: ignore[arg-type]


@given(st.integers(ENTRIES_LEVEL, 63), st.integers(0, MAX_TREE_SIZE), st.integers(1, TILE_WIDTH))
def test_path_round_trip(level: int, index: int, width: int) -> None:
    tile = Tile(level, index, width)
    assert parse_tile_path(tile.path()) == tile
    assert tile.path().endswith(encode_tile_index(index) + ("" if width == TILE_WIDTH else f".p/{width}"))


@settings(max_examples=500)
@given(st.text(alphabet="tile/entrs0123456789xp.X ", max_size=60))
def test_parse_fuzz(text: str) -> None:
    try:
        tile = parse_tile_path(text)
    except FormatError:
        return
    assert tile.path() == text


@settings(max_examples=300)
@given(st.integers(ENTRIES_LEVEL, 63), st.integers(0, 10**7), st.integers(1, TILE_WIDTH),
       st.integers(0, 40), st.sampled_from(["", "0", "x", "/", ".", "1", "p", "x0/"]))
def test_parse_fuzz_mutated_paths(level: int, index: int, width: int, pos: int, junk: str) -> None:
    """Inserting junk into a valid path gives the same path back or a FormatError, nothing else."""
    path = Tile(level, index, width).path()
    text = path[:pos] + junk + path[pos:]
    try:
        tile = parse_tile_path(text)
    except FormatError:
        return
    assert tile.path() == text


def test_tile_index_ranges() -> None:
    assert (Tile(0, 3).start_index, Tile(0, 3).end_index) == (768, 1024)
    assert (Tile(1, 2, 5).start_index, Tile(1, 2).end_index) == (2 * 65536, 3 * 65536)
    assert (Tile(ENTRIES_LEVEL, 3).start_index, Tile(ENTRIES_LEVEL, 3).end_index) == (768, 1024)
    assert Tile(0, 0).is_full and not Tile(0, 0, 255).is_full
    assert Tile(ENTRIES_LEVEL, 0).is_entries and not Tile(0, 0).is_entries


# ---------------------------------------------------------------------------------------------
# Which tiles exist


def test_tiles_for_size_spec_example_70000() -> None:
    """tlog-tiles: 273 full level 0 tiles, a partial of width 112, one full level 1 tile, a partial level 1
    tile of width 17 and a partial level 2 tile of width 1."""
    tiles = list(tiles_for_size(70000))
    assert tiles == [Tile(0, n) for n in range(273)] + [Tile(0, 273, 112), Tile(1, 0), Tile(1, 1, 17),
                                                        Tile(2, 0, 1)]


@pytest.mark.parametrize("size, partials", [
    (0, []),
    (1, [Tile(0, 0, 1)]),
    (255, [Tile(0, 0, 255)]),
    (256, [Tile(1, 0, 1)]),                              # the spec: a full level 0 tile, level 1 width 1
    (257, [Tile(0, 1, 1), Tile(1, 0, 1)]),
    (65535, [Tile(0, 255, 255), Tile(1, 0, 255)]),
    (65536, [Tile(2, 0, 1)]),
    (65537, [Tile(0, 256, 1), Tile(2, 0, 1)]),
    (1 << 24, [Tile(3, 0, 1)]),
])
def test_partial_tiles(size: int, partials: list[Tile]) -> None:
    tiles = list(tiles_for_size(size))
    assert [t for t in tiles if not t.is_full] == partials
    full = [t for t in tiles if t.is_full]
    for level in range(8):
        assert [t.index for t in full if t.level == level] == list(range((size >> (8 * level)) // 256))


def test_tiles_for_size_exhaustive_small() -> None:
    for size in range(0, 70_000, 37):
        tiles = list(tiles_for_size(size))
        assert tiles == sorted(tiles)
        for level in range(4):
            mine = [t for t in tiles if t.level == level]
            assert sum(t.width for t in mine) == size >> (8 * level)
            partial = [t for t in mine if not t.is_full]
            assert [t.width for t in partial] == ([(size >> (8 * level)) % 256] if (size >> (8 * level)) % 256
                                                  else [])


def test_tiles_for_huge_size_is_lazy() -> None:
    first = list(itertools.islice(tiles_for_size(MAX_TREE_SIZE), 2))
    assert first == [Tile(0, 0), Tile(0, 1)]


def test_entry_tiles_for_size() -> None:
    assert list(entry_tiles_for_size(0)) == []
    assert list(entry_tiles_for_size(256)) == [Tile(ENTRIES_LEVEL, 0)]
    bundles = list(entry_tiles_for_size(70000))
    assert bundles == [Tile(ENTRIES_LEVEL, n) for n in range(273)] + [Tile(ENTRIES_LEVEL, 273, 112)]


@pytest.mark.parametrize("size", [-1, 1 << 63, True, 2.0])
def test_sizes_out_of_range(size: object) -> None:
    with pytest.raises(ProofError):
        tiles_for_size(size)  # type: ignore[arg-type]
    with pytest.raises(ProofError):
        entry_tiles_for_size(size)  # type: ignore[arg-type]
    with pytest.raises(ProofError):
        TileHashReader(size, lambda tiles: [])  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Locating nodes


def test_tile_for_node_lands_in_existing_tiles_exhaustive() -> None:
    for size in itertools.chain(range(1, 600), [65535, 65536, 65537]):
        existing = set(tiles_for_size(size))
        nodes = all_nodes(size) if size < 600 else random.Random(size).sample(all_nodes(size), 3000)
        for level, index in nodes:
            tile, span = tile_for_node(level, index, size)
            assert tile in existing, (level, index, size, tile)
            assert tile.level == level // 8
            assert span.stop - span.start == 32 << (level % 8)
            assert span.stop <= tile.width * 32


def test_tile_for_node_examples() -> None:
    assert tile_for_node(0, 1234, 70000) == (Tile(0, 4), slice(210 * 32, 211 * 32))
    assert tile_for_node(3, 5, 70000) == (Tile(0, 0), slice(40 * 32, 48 * 32))
    assert tile_for_node(8, 0, 256) == (Tile(1, 0, 1), slice(0, 32))
    assert tile_for_node(7, 1, 256) == (Tile(0, 0), slice(128 * 32, 256 * 32))
    assert tile_for_node(16, 0, 70000) == (Tile(2, 0, 1), slice(0, 32))
    assert tile_for_node(9, 8, 70000) == (Tile(1, 0), slice(16 * 32, 18 * 32))
    assert tile_for_node(0, 69999, 70000) == (Tile(0, 273, 112), slice(111 * 32, 112 * 32))


@pytest.mark.parametrize("level, index, size", [
    (0, 5, 5), (1, 2, 5), (3, 0, 7), (8, 0, 255), (0, -1, 5), (-1, 0, 5), (64, 0, MAX_TREE_SIZE),
    (0, 0, 0), (0, 0, -1), (True, 0, 5), (0, 1 << 63, MAX_TREE_SIZE), (62, 1, MAX_TREE_SIZE),
])
def test_tile_for_node_rejects(level: int, index: int, size: int) -> None:
    with pytest.raises(ProofError):
        tile_for_node(level, index, size)


def test_hash_from_tile_rebuilds_between_levels() -> None:
    oracle = Oracle(make_leaves(300))
    data = oracle_tile(oracle, Tile(0, 0))
    for level in range(8):
        for index in range(256 >> level):
            assert hash_from_tile(level, index, Tile(0, 0), data) == oracle.subtree(level, index)
    partial = oracle_tile(oracle, Tile(0, 1, 44))
    assert hash_from_tile(2, 74, Tile(0, 1, 44), partial) == oracle.subtree(2, 74)


def test_hash_from_tile_rejects() -> None:
    data = bytes(256 * 32)
    with pytest.raises(ProofError):
        hash_from_tile(8, 0, Tile(0, 0), data)        # lives in tile-level 1
    with pytest.raises(ProofError):
        hash_from_tile(0, 256, Tile(0, 0), data)      # next tile
    with pytest.raises(ProofError):
        hash_from_tile(2, 3, Tile(0, 0, 15), data[:15 * 32])  # needs width 16
    for bad in (data[:-1], data + b"\x00", data[:32 * 255], b"", "x" * 8192, None):
        with pytest.raises(FormatError):
            hash_from_tile(0, 0, Tile(0, 0), bad)  # type: ignore[arg-type]
    with pytest.raises(FormatError):
        hash_from_tile(0, 0, Tile(ENTRIES_LEVEL, 0), data)


# ---------------------------------------------------------------------------------------------
# Building tiles from CompactRange nodes and reading every hash back


@pytest.mark.parametrize("n, batches", [
    (1000, [1]), (1000, [7, 1, 255, 256, 3]), (1000, [1000]), (1000, [256]), (600, [13, 500]),
])
def test_built_tiles_match_oracle(n: int, batches: list[int]) -> None:
    store, sizes = build(n, batches)
    oracle = Oracle(make_leaves(n))
    for tile, data in store.written.items():
        assert data == oracle_tile(oracle, tile), tile
        if tile.is_full:
            assert store.writes[tile] == 1, f"full tile {tile} rewritten"
    for size in sizes:   # every tile a checkpoint at a batch boundary needs was written
        assert set(tiles_for_size(size)) <= set(store.written), size
    assert set(store.written) == {t for size in sizes for t in tiles_for_size(size)}


def test_update_partial_state_matches_size() -> None:
    leaves = make_leaves(70000)
    cr, partial, size = CompactRange(), {}, 0
    for batch in (255, 1, 65280, 1, 4463):
        update = update_tiles(size, partial, cr.extend(leaves[size:size + batch]))
        size += batch
        expected = {t.level: t.width * 32 for t in tiles_for_size(size) if not t.is_full}
        assert {level: len(data) for level, data in update.partial.items()} == expected
        partial = update.partial


@pytest.fixture(scope="module")
def log_1000() -> tuple[TileStore, Oracle]:
    store, _ = build(1000, [1, 2, 100, 256, 3])
    return store, Oracle(make_leaves(1000))


def test_read_every_node_one_batched_call(log_1000: tuple[TileStore, Oracle]) -> None:
    store, oracle = log_1000
    store.calls.clear()
    ids = all_nodes(1000)
    hashes = TileHashReader(1000, store.read_tiles).read_hashes(ids)
    assert hashes == [oracle.subtree(level, index) for level, index in ids]
    assert len(store.calls) == 1
    assert len(store.calls[0]) == len(set(store.calls[0])) == len(list(tiles_for_size(1000)))


def read_plan(store: TileStore, size: int, plan) -> list[bytes]:  # type: ignore[no-untyped-def]
    return plan.rehash(TileHashReader(size, store.read_tiles).read_hashes(plan.ids))


def test_proofs_from_tiles_exhaustive_small(log_1000: tuple[TileStore, Oracle]) -> None:
    store, oracle = log_1000
    for size in range(1, 70):
        assert read_plan(store, size, root_plan(size)) == [oracle.root(size)]
        for index in range(size):
            assert read_plan(store, size, inclusion_plan(index, size)) == oracle.path(index, size)
        for m in range(1, size + 1):
            assert read_plan(store, size, consistency_plan(m, size)) == oracle.proof(m, size)


def test_proofs_from_tiles_every_size_to_1000(log_1000: tuple[TileStore, Oracle]) -> None:
    store, oracle = log_1000
    rng = random.Random(1000)
    for size in range(1, 1001):
        assert read_plan(store, size, root_plan(size)) == [oracle.root(size)]
        for index in {0, size - 1, size // 2, rng.randrange(size)}:
            assert read_plan(store, size, inclusion_plan(index, size)) == oracle.path(index, size)
        for m in {1, size, max(1, size - 1), rng.randrange(1, size + 1)}:
            assert read_plan(store, size, consistency_plan(m, size)) == oracle.proof(m, size)


@pytest.fixture(scope="module")
def log_70000() -> tuple[TileStore, Oracle]:
    store, _ = build(70000, [255, 1, 65280, 1, 4463])
    return store, Oracle(make_leaves(70000))


def test_large_tree_tiles_and_proofs(log_70000: tuple[TileStore, Oracle]) -> None:
    store, oracle = log_70000
    assert store.written[Tile(2, 0, 1)] == oracle.subtree(16, 0)
    assert store.written[Tile(1, 1, 17)] == oracle_tile(oracle, Tile(1, 1, 17))
    assert set(tiles_for_size(70000)) <= set(store.written)
    rng = random.Random(70000)
    nodes = [(level, rng.randrange(70000 >> level)) for level in range(17) for _ in range(20)]
    assert TileHashReader(70000, store.read_tiles).read_hashes(nodes) == [oracle.subtree(*n) for n in nodes]
    for size in (255, 256, 257, 65535, 65536, 65537, 69999, 70000, rng.randrange(1, 70000)):
        assert read_plan(store, size, root_plan(size)) == [oracle.root(size)]
        for index in (0, size - 1, rng.randrange(size)):
            assert read_plan(store, size, inclusion_plan(index, size)) == oracle.path(index, size)
        for m in (1, 256, 65536, size - 1, rng.randrange(1, size + 1)):
            if 0 < m <= size:
                assert read_plan(store, size, consistency_plan(m, size)) == oracle.proof(m, size)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=8))
def test_batching_does_not_change_tiles(batches: list[int]) -> None:
    """Tiles are a function of the leaves: any batching gives the same tiles at the end."""
    n = sum(batches)
    store, _ = build(n, batches)
    once, _ = build(n, [n])
    final = set(tiles_for_size(n))
    assert {t: store.written[t] for t in final} == {t: once.written[t] for t in final}
    assert {t for t in store.written if t.is_full} == {t for t in once.written if t.is_full}


# ---------------------------------------------------------------------------------------------
# TileHashReader misbehaving I/O


def test_reader_checks_what_read_tiles_returns(log_1000: tuple[TileStore, Oracle]) -> None:
    store, _ = log_1000
    ids = [(0, 5), (3, 40), (8, 2)]
    assert TileHashReader(1000, lambda tiles: []).read_hashes([]) == []
    with pytest.raises(InvariantError):
        TileHashReader(1000, lambda tiles: store.read_tiles(tiles)[:-1]).read_hashes(ids)
    for mangle in (lambda d: d[:-1], lambda d: d + b"\x00", lambda d: d[:-32], lambda d: b"", lambda d: None,
                   lambda d: d.hex()):
        with pytest.raises(FormatError):
            TileHashReader(1000, lambda tiles: [mangle(d) for d in store.read_tiles(tiles)]).read_hashes(ids)


def test_reader_rejects_nodes_outside_the_tree(log_1000: tuple[TileStore, Oracle]) -> None:
    store, _ = log_1000
    reader = TileHashReader(500, store.read_tiles)
    for bad in ([(0, 500)], [(9, 0)], [(0, 1, 2)], [(0,)]):
        with pytest.raises(ProofError):
            reader.read_hashes(bad)  # type: ignore[arg-type]


def test_two_phase_functions(log_1000: tuple[TileStore, Oracle]) -> None:
    """The pieces async callers put around their await: distinct tiles in first-use order, then combine."""
    store, oracle = log_1000
    ids = [(3, 40), (0, 5), (8, 2), (0, 7), (9, 0), (2, 249)]
    tiles = tiles_for_nodes(ids, 1000)
    assert tiles == [Tile(0, 1), Tile(0, 0), Tile(1, 0, 3), Tile(0, 3, 232)]
    contents = dict(zip(tiles, store.read_tiles(tiles)))
    assert hashes_from_tiles(ids, 1000, contents) == [oracle.subtree(*n) for n in ids]
    del contents[Tile(0, 0)]
    with pytest.raises(InvariantError):
        hashes_from_tiles(ids, 1000, contents)
    assert tiles_for_nodes([], 5) == [] and hashes_from_tiles([], 5, {}) == []


def test_reader_accepts_memoryview_and_bytearray(log_1000: tuple[TileStore, Oracle]) -> None:
    store, oracle = log_1000
    reader = TileHashReader(1000, lambda tiles: [bytearray(d) for d in store.read_tiles(tiles)])
    assert reader.read_hashes([(4, 3)]) == [oracle.subtree(4, 3)]


# ---------------------------------------------------------------------------------------------
# update_tiles misuse: the sequencer's own state contradicting itself


def test_update_tiles_rejects_inconsistent_state() -> None:
    leaves = make_leaves(300)
    cr = CompactRange()
    nodes = cr.extend(leaves[:10])
    good = update_tiles(0, {}, nodes)
    assert good.size == 10 and good.tiles == {Tile(0, 0, 10): b"".join(leaves[:10])}
    more = cr.extend(leaves[10:12])
    assert update_tiles(10, good.partial, more).tiles == {Tile(0, 0, 12): b"".join(leaves[:12])}
    with pytest.raises(InvariantError):
        update_tiles(10, {}, more)                              # partial tile missing
    with pytest.raises(InvariantError):
        update_tiles(10, {0: good.partial[0][:-1]}, more)       # partial tile not whole hashes
    with pytest.raises(InvariantError):
        update_tiles(10, {0: good.partial[0], 1: b"x" * 32}, more)   # level 1 should be empty
    with pytest.raises(InvariantError):
        update_tiles(10, {9: b""}, more)                        # unknown level
    with pytest.raises(InvariantError):
        update_tiles(11, {0: good.partial[0]}, more)            # size disagrees
    with pytest.raises(InvariantError):
        update_tiles(10, good.partial, more[1:])                # gap
    with pytest.raises(InvariantError):
        update_tiles(10, good.partial, [(0, 10, b"short")])
    all_nodes_256 = CompactRange().extend(leaves[:256])
    with pytest.raises(InvariantError):                         # level 8 node missing
        update_tiles(0, {}, [n for n in all_nodes_256 if n[0] < 8])
    with pytest.raises(InvariantError):
        update_tiles(0, {}, [(-1, 0, leaves[0])])
    with pytest.raises(ProofError):
        update_tiles(-1, {}, [])


def test_update_tiles_empty_batch() -> None:
    update = update_tiles(0, {}, [])
    assert (update.size, update.tiles, update.partial) == (0, {}, {})


# ---------------------------------------------------------------------------------------------
# Entry bundles


entry_lists = st.lists(st.binary(max_size=300), min_size=1, max_size=TILE_WIDTH)


@given(entry_lists)
def test_entry_bundle_round_trip(entries: list[bytes]) -> None:
    data = encode_entry_bundle(entries)
    assert len(data) == sum(2 + len(e) for e in entries)
    assert decode_entry_bundle(data) == entries
    assert decode_entry_bundle(data, expected_count=len(entries)) == entries


def test_entry_bundle_known_answer() -> None:
    assert encode_entry_bundle([b"", b"a", b"bc"]) == bytes.fromhex("0000" "000161" "00026263")
    big = bytes(MAX_ENTRY_SIZE)
    assert decode_entry_bundle(encode_entry_bundle([big]), 1) == [big]
    assert encode_entry_bundle([big])[:2] == b"\xff\xff"


def test_entry_bundle_every_truncation_and_extension() -> None:
    entries = [b"alpha", b"", b"\x00\x01\x02", b"z" * 300]
    data = encode_entry_bundle(entries)
    boundaries = {sum(2 + len(e) for e in entries[:k]): k for k in range(1, len(entries) + 1)}
    for cut in range(len(data)):
        with pytest.raises(FormatError):
            decode_entry_bundle(data[:cut], expected_count=len(entries))
        if cut in boundaries:
            assert decode_entry_bundle(data[:cut]) == entries[:boundaries[cut]]
        else:
            with pytest.raises(FormatError):
                decode_entry_bundle(data[:cut])
    for extra in (b"\x00", b"\x00\x01", b"\x00\x00", b"\x00\x02a", b"\xff\xff"):
        with pytest.raises(FormatError):
            decode_entry_bundle(data + extra, expected_count=len(entries))
    for extra in (b"\x00", b"\x00\x01", b"\x00\x02a", b"\xff\xff"):   # not whole entries at all
        with pytest.raises(FormatError):
            decode_entry_bundle(data + extra)


def test_entry_bundle_limits() -> None:
    with pytest.raises(FormatError):
        encode_entry_bundle([bytes(MAX_ENTRY_SIZE + 1)])
    with pytest.raises(FormatError):
        encode_entry_bundle([])
    with pytest.raises(FormatError):
        encode_entry_bundle([b"x"] * 257)
    with pytest.raises(FormatError):
        encode_entry_bundle(["text"])  # type: ignore[list-item]
    assert len(decode_entry_bundle(b"\x00\x00" * 256)) == 256
    with pytest.raises(FormatError):
        decode_entry_bundle(b"\x00\x00" * 257)
    with pytest.raises(FormatError):
        decode_entry_bundle(b"")
    for count in (0, 257, -1, True, "3"):
        with pytest.raises(FormatError):
            decode_entry_bundle(b"\x00\x00", expected_count=count)  # type: ignore[arg-type]
    with pytest.raises(FormatError):
        decode_entry_bundle("\x00\x00")  # type: ignore[arg-type]


@settings(max_examples=500)
@given(st.binary(max_size=600), st.one_of(st.none(), st.integers(1, 256)))
def test_entry_bundle_fuzz(data: bytes, count: int | None) -> None:
    try:
        entries = decode_entry_bundle(data, count)
    except FormatError:
        return
    assert encode_entry_bundle(entries) == data
    assert count is None or len(entries) == count


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 400), min_size=1, max_size=6))
def test_update_entry_bundles(batches: list[int]) -> None:
    entries = [i.to_bytes(4, "big") * (i % 5) for i in range(sum(batches))]
    written: dict[Tile, bytes] = {}
    size, partial = 0, {}
    for batch in batches:
        update = update_entry_bundles(size, partial, entries[size:size + batch])
        size += batch
        assert update.size == size
        for tile, data in update.tiles.items():
            assert not (tile.is_full and tile in written), "full bundles are written once"
            written[tile] = data
        partial = update.partial
    for tile in entry_tiles_for_size(size):
        lo = tile.index * TILE_WIDTH
        assert decode_entry_bundle(written[tile], tile.width) == entries[lo:lo + tile.width]


def test_update_entry_bundles_rejects() -> None:
    with pytest.raises(FormatError):
        update_entry_bundles(0, {}, [bytes(MAX_ENTRY_SIZE + 1)])
    with pytest.raises(InvariantError):
        update_entry_bundles(3, {}, [b"x"])                                  # missing partial bundle
    with pytest.raises(InvariantError):
        update_entry_bundles(3, {ENTRIES_LEVEL: encode_entry_bundle([b"a"] * 2)}, [b"x"])
    with pytest.raises(InvariantError):
        update_entry_bundles(3, {ENTRIES_LEVEL: b"\x00\x05ab"}, [b"x"])     # malformed
    ok = update_entry_bundles(3, {ENTRIES_LEVEL: encode_entry_bundle([b"a"] * 3), 0: bytes(96)}, [b"x"])
    assert ok.tiles == {Tile(ENTRIES_LEVEL, 0, 4): encode_entry_bundle([b"a"] * 3 + [b"x"])}


def test_errors_are_library_errors() -> None:
    assert issubclass(FormatError, TlogError) and issubclass(ProofError, TlogError)
    assert TILE_WIDTH == 1 << TILE_HEIGHT == 256
