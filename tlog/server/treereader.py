"""Stored node hashes → proofs, in the two phases of the pure core.

``proof.*_plan`` says which perfect-subtree nodes are needed; ``tiles.tiles_for_nodes`` says which
tiles hold them; the one ``await`` reads those tiles (from the sequencer's in-memory right edge first,
then storage); the node hashes are read out of the tiles and ``Plan.rehash`` combines them.

A node between tile levels (e.g. level 5 inside a level-0 tile) is the Merkle Tree Hash of up to 128
of the tile's hashes.  Rebuilding it for every proof would cost ~250 SHA-256 calls per proof, so storage
keeps the interior of every full tile beside it (written by the sequencer when the tile fills) and the
reader keeps, per tile it has seen, the little tree of that tile; tiles never change once written (a
partial tile only grows, and is keyed by its width), so the cache needs no invalidation.
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable, Mapping

from ..errors import InvariantError
from ..hashing import HASH_SIZE, node_hash
from ..proof import consistency_plan, inclusion_plan
from ..tiles import TILE_HEIGHT, TILE_WIDTH, Tile

__all__ = ["TreeReader", "tile_levels", "tile_interior", "INTERIOR_HASHES"]

ReadTiles = Callable[[list[Tile]], Awaitable[list[bytes]]]
Overlay = Callable[[], Mapping[tuple[int, int], bytes]]


def tile_levels(data: bytes) -> list[list[bytes]]:
    """The little tree of one tile: ``levels[h][j]`` is the hash of the ``2**h`` tile hashes starting
    at ``j * 2**h`` (only complete groups; RFC 6962 §2.1 node hash)."""
    levels = [[data[i:i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]]
    while len(levels[-1]) > 1 and len(levels) <= TILE_HEIGHT:
        below = levels[-1]
        levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])
    return levels


#: Hashes in the interior of a full tile: levels 1 to 7 of its little tree (128 + 64 + … + 2).
INTERIOR_HASHES = sum(TILE_WIDTH >> h for h in range(1, TILE_HEIGHT))


def tile_interior(data: bytes) -> bytes:
    """Levels 1 to 7 of a full tile's little tree, concatenated level by level (what storage keeps
    beside each full tile, so a proof reads node hashes instead of recomputing ~250 of them)."""
    if len(data) != TILE_WIDTH * HASH_SIZE:
        raise InvariantError(f"a full tile is {TILE_WIDTH * HASH_SIZE} bytes, not {len(data)}")
    return b"".join(b"".join(level) for level in tile_levels(data)[1:TILE_HEIGHT])


def _offsets(width: int) -> tuple[int, ...]:
    """Start (in hashes) of each level h = 0..7 in the concatenated little tree of a tile of ``width``."""
    out, at = [], 0
    for h in range(TILE_HEIGHT):
        out.append(at)
        at += width >> h
    return tuple(out)


_OFFSETS = {w: _offsets(w) for w in range(1, TILE_WIDTH + 1)}


class TreeReader:
    """Reads node hashes of a tree of a given size through ``read_tiles`` (storage), preferring the
    ``overlay``: tiles not yet in storage (the sequencer checking a batch before it commits) or held in
    memory (the right edge at the current head), as ``{(tile level, tile index): data}``.

    ``read_tiles`` may return, after a full tile's 8,192 bytes, its stored interior
    (:func:`tile_interior`); otherwise the reader computes it.  Each tile's little tree is kept as one
    bytes object (16 KB for a full tile), at most ``cache_tiles`` of them."""

    def __init__(self, read_tiles: ReadTiles, overlay: Mapping[Tile, bytes] | Overlay | None = None,
                 cache_tiles: int = 1024):
        self._read_tiles = read_tiles
        if callable(overlay):
            self._overlay: Overlay = overlay
        else:
            fixed = {(t.level, t.index): d for t, d in (overlay or {}).items()}
            self._overlay = lambda: fixed
        self._trees: collections.OrderedDict[tuple[int, int, int], bytes] = collections.OrderedDict()
        self._cache_max = cache_tiles

    async def read_hashes(self, ids: list[tuple[int, int]], size: int) -> list[bytes]:
        """tlog-tiles: node (level, index) is in the tile at tile-level ``level // 8``, as the hash of
        ``2**(level % 8)`` consecutive tile hashes (found in the tile's little tree)."""
        where = []
        found: dict[tuple[int, int, int], bytes | None] = {}
        missing: list[tuple[int, int, int]] = []
        overlay = None
        for level, index in ids:
            tile_level, height = divmod(level, TILE_HEIGHT)
            tile_index, offset = divmod(index << height, TILE_WIDTH)
            width = min(TILE_WIDTH, (size >> (TILE_HEIGHT * tile_level)) - tile_index * TILE_WIDTH)
            key = (tile_level, tile_index, width)
            where.append((key, height, offset >> height))
            if key in found:
                continue
            tree = self._trees.get(key)
            if tree is not None:
                self._trees.move_to_end(key)
                found[key] = tree
                continue
            if overlay is None:
                overlay = self._overlay()
            data = overlay.get((tile_level, tile_index))
            if data is not None and len(data) >= width * HASH_SIZE:
                found[key] = self._remember(key, data[:width * HASH_SIZE])
            else:
                found[key] = None
                missing.append(key)
        if missing:
            tiles = [Tile(level, index, width) for level, index, width in missing]
            for key, data in zip(missing, await self._read_tiles(tiles)):
                found[key] = self._remember(key, data)
        out = []
        for key, height, j in where:
            at = (_OFFSETS[key[2]][height] + j) * HASH_SIZE
            out.append(found[key][at:at + HASH_SIZE])  # type: ignore[index]
        return out

    def _remember(self, key: tuple[int, int, int], data: bytes) -> bytes:
        width = key[2]
        if width < 1 or len(data) < width * HASH_SIZE:
            raise InvariantError(f"tile {key[0]}/{key[1]} is {len(data)} bytes, want {width * HASH_SIZE}")
        if width == TILE_WIDTH and len(data) == (TILE_WIDTH + INTERIOR_HASHES) * HASH_SIZE:
            tree = data  # the stored interior follows the tile's hashes
        else:
            tree = b"".join(b"".join(level) for level in tile_levels(data[:width * HASH_SIZE])[:TILE_HEIGHT])
        self._trees[key] = tree
        if len(self._trees) > self._cache_max:
            self._trees.popitem(last=False)
        return tree

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 §2.1.3.1 inclusion proof for leaf ``index`` in the tree of ``size`` leaves."""
        plan = inclusion_plan(index, size)
        return plan.rehash(await self.read_hashes(plan.ids, size))

    async def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """RFC 9162 §2.1.4.1 consistency proof between trees of ``first`` and ``second`` leaves."""
        plan = consistency_plan(first, second)
        return plan.rehash(await self.read_hashes(plan.ids, second))
