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
from ..proof import consistency_plan, inclusion_path, range_plan
from ..tiles import TILE_HEIGHT, TILE_WIDTH, Tile

__all__ = ["TreeReader", "tile_levels", "tile_interior", "tile_paths", "INTERIOR_HASHES", "TREE_BYTES",
           "PATH_GROUP", "PATH_BYTES"]

ReadTiles = Callable[[list[Tile]], Awaitable[list[bytes]]]
ReadPath = Callable[[int, int], "bytes | None"]
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
#: A full tile's stored tree: its 256 hashes, then its interior (16,320 bytes).
TREE_BYTES = (TILE_WIDTH + INTERIOR_HASHES) * HASH_SIZE


def tile_interior(data: bytes) -> bytes:
    """Levels 1 to 7 of a full tile's little tree, concatenated level by level (what storage keeps
    beside each full tile, so a proof reads node hashes instead of recomputing ~250 of them)."""
    if len(data) != TILE_WIDTH * HASH_SIZE:
        raise InvariantError(f"a full tile is {TILE_WIDTH * HASH_SIZE} bytes, not {len(data)}")
    return b"".join(b"".join(level) for level in tile_levels(data)[1:TILE_HEIGHT])


#: Leaves per stored inclusion path of a full level-0 tile (see :func:`tile_paths`).
PATH_GROUP = 16
_GROUP_HEIGHT = PATH_GROUP.bit_length() - 1  # 4
#: A stored path: the group's little tree (16 + 8 + 4 + 2 hashes, heights 0-3) and the siblings of
#: the group's ancestors at heights 4-7 inside the tile: 34 hashes, 1,088 bytes (one database page).
PATH_HASHES = sum(PATH_GROUP >> h for h in range(_GROUP_HEIGHT)) + TILE_HEIGHT - _GROUP_HEIGHT
PATH_BYTES = PATH_HASHES * HASH_SIZE


def tile_paths(tree: bytes) -> list[bytes]:
    """The 16 stored inclusion paths of a full level-0 tile, from its tree (the tile's hashes and its
    interior, :func:`tile_interior`): path ``g`` holds every node of the tile an RFC 9162 §2.1.3.1
    inclusion proof of a leaf ``16g .. 16g+15`` of the tile needs — its siblings at heights 0-7 —
    so a proof reads one row of about 1 KB instead of the tile's 16 KB tree (pure slicing)."""
    if len(tree) != TREE_BYTES:
        raise InvariantError(f"a full tile's tree is {TREE_BYTES} bytes, not {len(tree)}")
    offsets = _offsets(TILE_WIDTH)
    out = []
    for g in range(TILE_WIDTH // PATH_GROUP):
        parts = []
        for h in range(_GROUP_HEIGHT):
            n = PATH_GROUP >> h
            at = (offsets[h] + g * n) * HASH_SIZE
            parts.append(tree[at:at + n * HASH_SIZE])
        for h in range(_GROUP_HEIGHT, TILE_HEIGHT):
            at = (offsets[h] + ((g >> (h - _GROUP_HEIGHT)) ^ 1)) * HASH_SIZE
            parts.append(tree[at:at + HASH_SIZE])
        out.append(b"".join(parts))
    return out


def _path_slicer(j: int) -> Callable[[bytes], list[bytes]]:
    """For leaf ``j`` of its group: the hashes of a stored path that are its proof's heights 0-7 (the
    sibling at height h < 4 is in the group's little tree, those at 4-7 follow it, in order)."""
    starts, at = [], 0
    for h in range(_GROUP_HEIGHT):
        starts.append((at + ((j >> h) ^ 1)) * HASH_SIZE)
        at += PATH_GROUP >> h
    starts += [(at + k) * HASH_SIZE for k in range(TILE_HEIGHT - _GROUP_HEIGHT)]
    return lambda path: [path[a:a + HASH_SIZE] for a in starts]


_PATH_SLICES = [_path_slicer(j) for j in range(PATH_GROUP)]

#: Leaves under one full level-1 tile (heights 8-15 of every inclusion path inside it).
_L1_SHIFT = 2 * TILE_HEIGHT


def _offsets(width: int) -> tuple[int, ...]:
    """Start (in hashes) of each level h = 0..7 in the concatenated little tree of a tile of ``width``."""
    out, at = [], 0
    for h in range(TILE_HEIGHT):
        out.append(at)
        at += width >> h
    return tuple(out)


_OFFSETS = {w: _offsets(w) for w in range(1, TILE_WIDTH + 1)}
#: Heights 8-15 of an inclusion path in a full level-1 tile: (height, mask of the sibling's index
#: inside the tile at that height, where that height starts in the tile's little tree).
_MID = tuple((h, (1 << (_L1_SHIFT - h)) - 1, _OFFSETS[TILE_WIDTH][h - TILE_HEIGHT])
             for h in range(TILE_HEIGHT, _L1_SHIFT))


class TreeReader:
    """Reads node hashes of a tree of a given size through ``read_tiles`` (storage), preferring the
    ``overlay``: tiles not yet in storage (the sequencer checking a batch before it commits) or held in
    memory (the right edge at the current head), as ``{(tile level, tile index): data}``.

    ``read_tiles`` may return, after a full tile's 8,192 bytes, its stored interior
    (:func:`tile_interior`); otherwise the reader computes it.  Each tile's little tree is kept as one
    bytes object (16 KB for a full tile), at most ``cache_tiles`` of them.

    ``read_path`` (storage's, synchronous) gives the stored inclusion paths of full level-0 tiles
    (:func:`tile_paths`): an inclusion proof of a leaf whose tile is not cached reads its 1 KB path,
    kept (at most ``cache_paths``), instead of the 16 KB tile tree — at 10,000,000 leaves there are
    39,000 level-0 tiles, so almost every proof misses the tile cache."""

    def __init__(self, read_tiles: ReadTiles, overlay: Mapping[Tile, bytes] | Overlay | None = None,
                 cache_tiles: int = 1024, read_path: ReadPath | None = None, cache_paths: int = 8192):
        self._read_tiles = read_tiles
        self._read_path = read_path
        self._paths: collections.OrderedDict[int, bytes] = collections.OrderedDict()
        self._paths_max = cache_paths
        if callable(overlay):
            self._overlay: Overlay = overlay
        else:
            fixed = {(t.level, t.index): d for t, d in (overlay or {}).items()}
            self._overlay = lambda: fixed
        self._trees: collections.OrderedDict[tuple[int, int, int], bytes] = collections.OrderedDict()
        self._cache_max = cache_tiles
        self._borders: dict[tuple[int, int], bytes] = {}  # MTH(D[lo:size]) by (lo, size)
        self._uppers: dict[tuple[int, int], list[bytes]] = {}  # heights 16+ by (index >> 16, size)

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
        if width == TILE_WIDTH and len(data) == TREE_BYTES:
            tree = data  # the stored interior follows the tile's hashes
        else:
            tree = b"".join(b"".join(level) for level in tile_levels(data[:width * HASH_SIZE])[:TILE_HEIGHT])
        self._trees[key] = tree
        if len(self._trees) > self._cache_max:
            self._trees.popitem(last=False)
        return tree

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 §2.1.3.1 inclusion proof for leaf ``index`` in the tree of ``size`` leaves.

        The right-border element (``inclusion_path``) is the same for every leaf whose path meets the
        border at the same level, so it is kept per ``(lo, size)``: a proof then reads only perfect
        nodes, one hash each."""
        top = index >> _L1_SHIFT
        if self._read_path is not None and (top + 1) << _L1_SHIFT <= size:
            proof = await self._inclusion_in_full_l1(index, size, top)
            if proof is not None:
                return proof
        ids, border = inclusion_path(index, size)
        tile = index >> TILE_HEIGHT
        full = (tile + 1) * TILE_WIDTH <= size
        if self._read_path is not None and full and (0, tile, TILE_WIDTH) not in self._trees:
            path = self._stored_path(index)
            if path is not None:  # heights 0-7 are ids[0:8], all inside this full tile
                return _PATH_SLICES[index & (PATH_GROUP - 1)](path) + \
                    await self._proof_from(ids[TILE_HEIGHT:], border, size)
        return await self._proof_from(ids, border, size)

    async def _inclusion_in_full_l1(self, index: int, size: int, top: int) -> list[bytes] | None:
        """The proof of a leaf whose level-1 tile is full (all but the newest < 65,536 leaves): heights
        0-7 from its stored path, 8-15 from the level-1 tile's little tree (siblings inside a full tile
        are perfect nodes), and 16 up — which depend only on ``(index >> 16, size)``, so at most a few
        hundred distinct lists per size — kept from the first proof that needed them.  None when the
        path is not stored (the caller reads the tile)."""
        if (0, index >> TILE_HEIGHT, TILE_WIDTH) in self._trees:
            return None
        path = self._stored_path(index)
        if path is None:
            return None
        key = (1, top, TILE_WIDTH)
        tree = self._trees.get(key)
        if tree is None:
            await self.read_hashes([(TILE_HEIGHT, top << TILE_HEIGHT)], size)  # reads and keeps the tile
            tree = self._trees[key]
        else:
            self._trees.move_to_end(key)
        upper = self._uppers.get((top, size))
        if upper is None:
            ids, border = inclusion_path(index, size)
            upper = await self._proof_from(ids[_L1_SHIFT:], border, size)
            if len(self._uppers) >= 4096:
                self._uppers.clear()
            self._uppers[(top, size)] = upper
        mid = [tree[at:at + HASH_SIZE] for at in
               [(base + (((index >> h) ^ 1) & mask)) * HASH_SIZE for h, mask, base in _MID]]
        return _PATH_SLICES[index & (PATH_GROUP - 1)](path) + mid + upper

    def _stored_path(self, index: int) -> bytes | None:
        key = index >> _GROUP_HEIGHT
        path = self._paths.get(key)
        if path is None:
            tile, group = divmod(key, TILE_WIDTH // PATH_GROUP)
            path = self._read_path(tile, group)  # type: ignore[misc]
            if path is None:
                return None
            if len(path) != PATH_BYTES:
                raise InvariantError(f"stored path of leaves {key * PATH_GROUP}.. is {len(path)} bytes, "
                                     f"want {PATH_BYTES}")
            self._paths[key] = path
            if len(self._paths) > self._paths_max:
                self._paths.popitem(last=False)
        else:
            self._paths.move_to_end(key)
        return path

    async def _proof_from(self, ids: list, border: int, size: int) -> list[bytes]:
        need = [x for x in ids if x is not None]
        edge = self._borders.get((border, size)) if border >= 0 else None
        plan = range_plan(border, size) if border >= 0 and edge is None else None
        hashes = await self.read_hashes(need + plan.ids if plan is not None else need, size)
        if plan is not None:
            [edge] = plan.rehash(hashes[len(need):])
            if len(self._borders) >= 4096:
                self._borders.clear()
            self._borders[(border, size)] = edge
        if border < 0:
            return hashes
        at = ids.index(None)
        return hashes[:at] + [edge] + hashes[at:len(need)]  # type: ignore[list-item]

    async def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """RFC 9162 §2.1.4.1 consistency proof between trees of ``first`` and ``second`` leaves."""
        plan = consistency_plan(first, second)
        return plan.rehash(await self.read_hashes(plan.ids, second))
