"""Stored node hashes → proofs, in the two phases of the pure core.

``proof.*_plan`` says which perfect-subtree nodes are needed; ``tiles.tiles_for_nodes`` says which
tiles hold them; the one ``await`` reads those tiles (from the sequencer's in-memory right edge first,
then storage); the node hashes are read out of the tiles and ``Plan.rehash`` combines them.

A node between tile levels (e.g. level 5 inside a level-0 tile) is the Merkle Tree Hash of up to 128
of the tile's hashes.  Rebuilding it for every proof would cost ~255 SHA-256 calls per receipt, so the
reader keeps, per tile it has seen, the whole little tree of that tile (at most 511 hashes); tiles never
change once written (a partial tile only grows, and is keyed by its width), so the cache needs no
invalidation.
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable, Mapping

from ..errors import InvariantError
from ..hashing import HASH_SIZE, node_hash
from ..proof import consistency_plan, inclusion_plan
from ..tiles import TILE_HEIGHT, Tile, tiles_for_nodes

__all__ = ["TreeReader", "tile_levels"]

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


class TreeReader:
    """Reads node hashes of a tree of a given size through ``read_tiles`` (storage), preferring the
    ``overlay``: tiles not yet in storage (the sequencer checking a batch before it commits) or held in
    memory (the right edge at the current head), as ``{(tile level, tile index): data}``."""

    def __init__(self, read_tiles: ReadTiles, overlay: Mapping[Tile, bytes] | Overlay | None = None,
                 cache_tiles: int = 2048):
        self._read_tiles = read_tiles
        if callable(overlay):
            self._overlay: Overlay = overlay
        else:
            fixed = {(t.level, t.index): d for t, d in (overlay or {}).items()}
            self._overlay = lambda: fixed
        self._levels: collections.OrderedDict[Tile, list[list[bytes]]] = collections.OrderedDict()
        self._cache_max = cache_tiles

    async def read_hashes(self, ids: list[tuple[int, int]], size: int) -> list[bytes]:
        overlay = self._overlay()
        found: dict[Tile, list[list[bytes]]] = {}
        missing = []
        for t in tiles_for_nodes(ids, size):
            levels = self._levels.get(t)
            data = overlay.get((t.level, t.index)) if levels is None else None
            if levels is not None:
                self._levels.move_to_end(t)
                found[t] = levels
            elif data is not None and len(data) >= t.width * HASH_SIZE:
                found[t] = self._remember(t, data[:t.width * HASH_SIZE])
            else:
                missing.append(t)
        if missing:
            for t, data in zip(missing, await self._read_tiles(missing)):
                found[t] = self._remember(t, data)
        return [self._node(level, index, size, found) for level, index in ids]

    def _remember(self, tile: Tile, data: bytes) -> list[list[bytes]]:
        if len(data) != tile.width * HASH_SIZE:
            raise InvariantError(f"tile {tile.path()} is {len(data)} bytes, want {tile.width * HASH_SIZE}")
        levels = self._levels[tile] = tile_levels(data)
        if len(self._levels) > self._cache_max:
            self._levels.popitem(last=False)
        return levels

    @staticmethod
    def _node(level: int, index: int, size: int, found: Mapping[Tile, list[list[bytes]]]) -> bytes:
        """tlog-tiles: node (level, index) is in the tile at tile-level level // 8, as the hash of
        2**(level % 8) consecutive tile hashes."""
        tile_level, height = divmod(level, TILE_HEIGHT)
        tile_index, offset = divmod(index << height, 1 << TILE_HEIGHT)
        width = min(1 << TILE_HEIGHT, (size >> (TILE_HEIGHT * tile_level)) - (tile_index << TILE_HEIGHT))
        return found[Tile(tile_level, tile_index, width)][height][offset >> height]

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 §2.1.3.1 inclusion proof for leaf ``index`` in the tree of ``size`` leaves."""
        plan = inclusion_plan(index, size)
        return plan.rehash(await self.read_hashes(plan.ids, size))

    async def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """RFC 9162 §2.1.4.1 consistency proof between trees of ``first`` and ``second`` leaves."""
        plan = consistency_plan(first, second)
        return plan.rehash(await self.read_hashes(plan.ids, second))
