"""Stored node hashes → proofs, in the two phases of the pure core.

``proof.*_plan`` says which perfect-subtree nodes are needed; ``tiles.tile_for_node`` says which tiles
hold them; the one ``await`` reads those tiles (from the sequencer's in-memory right edge first, then
storage); ``tiles.hash_from_tile`` and ``Plan.rehash`` combine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from ..proof import consistency_plan, inclusion_plan
from ..hashing import HASH_SIZE
from ..tiles import Tile, hashes_from_tiles, tiles_for_nodes

__all__ = ["TreeReader"]

ReadTiles = Callable[[list[Tile]], Awaitable[list[bytes]]]


class TreeReader:
    """Reads node hashes of a tree of a given size through ``read_tiles`` (storage), preferring the
    ``overlay`` of tiles not yet committed (used by the sequencer before it commits a batch)."""

    def __init__(self, read_tiles: ReadTiles, overlay: Mapping[Tile, bytes] | None = None):
        self._read_tiles = read_tiles
        self._overlay = {(t.level, t.index): d for t, d in (overlay or {}).items()}

    async def read_hashes(self, ids: list[tuple[int, int]], size: int) -> list[bytes]:
        wanted = tiles_for_nodes(ids, size)
        contents: dict[Tile, bytes] = {}
        from_storage = []
        for t in wanted:
            data = self._overlay.get((t.level, t.index))
            if data is not None and len(data) >= t.width * HASH_SIZE:
                contents[t] = data[:t.width * HASH_SIZE]
            else:
                from_storage.append(t)
        if from_storage:
            contents.update(zip(from_storage, await self._read_tiles(from_storage)))
        return hashes_from_tiles(ids, size, contents)

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 §2.1.3.1 inclusion proof for leaf ``index`` in the tree of ``size`` leaves."""
        plan = inclusion_plan(index, size)
        return plan.rehash(await self.read_hashes(plan.ids, size))

    async def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """RFC 9162 §2.1.4.1 consistency proof between trees of ``first`` and ``second`` leaves."""
        plan = consistency_plan(first, second)
        return plan.rehash(await self.read_hashes(plan.ids, second))
