"""C2SP tlog-tiles: tile coordinates, tile paths, entry bundles, and reading node hashes out of tiles.

Specification: https://c2sp.org/tlog-tiles (normative summary for this project: ``spec/tiles.md``).

A *tile* at tile-level ``L`` and index ``N`` is the sequence of up to 256 consecutive Merkle Tree Hashes of
tree level ``8 * L`` starting at hash ``N * 256`` of that level ("Merkle Tree" section).  A tree level that
is not a multiple of 8 is never stored: its hashes are rebuilt from the tile at the tile-level below, as
Go's ``sumdb/tlog.HashFromTile`` does.  *Entry bundles* (``tile/entries/<N>``) are represented here as
tiles with level :data:`ENTRIES_LEVEL` (``-1``); their width counts entries instead of hashes.

Error convention of this module: a malformed path, tile or bundle raises :class:`~tlog.errors.FormatError`;
a node or tree size out of range raises :class:`~tlog.errors.ProofError` (as ``tlog.proof`` does); state
handed over by our own server or I/O hook that contradicts itself raises
:class:`~tlog.errors.InvariantError`.

Pure and synchronous: the only I/O is the ``read_tiles`` callable given to :class:`TileHashReader`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from .errors import FormatError, InvariantError, ProofError
from .hashing import HASH_SIZE, root_from_leaf_hashes
from .tree import MAX_TREE_SIZE

__all__ = [
    "TILE_HEIGHT",
    "TILE_WIDTH",
    "ENTRIES_LEVEL",
    "MAX_TILE_LEVEL",
    "MAX_ENTRY_SIZE",
    "Tile",
    "TileUpdate",
    "TileHashReader",
    "tiles_for_nodes",
    "hashes_from_tiles",
    "encode_tile_index",
    "parse_tile_path",
    "tiles_for_size",
    "entry_tiles_for_size",
    "tile_for_node",
    "hash_from_tile",
    "encode_entry_bundle",
    "decode_entry_bundle",
    "update_tiles",
    "update_entry_bundles",
]

#: Tree levels per tile: a tile at tile-level L holds the hashes of tree level 8L.
TILE_HEIGHT = 8
#: Hashes (or entries) in a full tile (or entry bundle): 2**TILE_HEIGHT.
TILE_WIDTH = 1 << TILE_HEIGHT
#: The ``level`` of a :class:`Tile` that names an entry bundle, ``tile/entries/<N>``.
ENTRIES_LEVEL = -1
#: tlog-tiles "Merkle Tree": ``<L>`` is a decimal integer between 0 and 63.
MAX_TILE_LEVEL = 63
#: tlog-tiles "Log entries": each entry carries a big-endian uint16 length prefix.
MAX_ENTRY_SIZE = 0xFFFF

_MAX_PATH_LENGTH = 128  # the longest canonical path is under 50 characters
#: The tile-levels a tree of up to MAX_TREE_SIZE leaves uses: 0..7 (``2**63 >> 64`` is 0).
_HASH_LEVELS = range(MAX_TREE_SIZE.bit_length() // TILE_HEIGHT + 1)
_PATH_RE = re.compile(  # [0-9] is ASCII only, unlike \d; used with fullmatch, so no "$"-before-newline
    r"tile/(?P<level>entries|0|[1-9][0-9]?)"
    r"/(?P<index>(?:x[0-9]{3}/)*[0-9]{3})"
    r"(?:\.p/(?P<width>[1-9][0-9]{0,2}))?"
)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_size(size: object) -> int:
    if not _is_int(size) or not 0 <= size <= MAX_TREE_SIZE:  # type: ignore[operator]
        raise ProofError(f"tree size {size!r} is not an integer in [0, 2**63 - 1]")
    return size  # type: ignore[return-value]


@dataclass(frozen=True, order=True)
class Tile:
    """A tile of C2SP tlog-tiles: ``width`` consecutive hashes of tree level ``8 * level`` starting at hash
    ``index * 256`` of that level, or, with ``level == ENTRIES_LEVEL``, the entry bundle of the ``width``
    entries starting at entry ``index * 256``.  ``width`` is 1..256; 256 is a full tile.
    """

    level: int
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if not _is_int(self.level) or not ENTRIES_LEVEL <= self.level <= MAX_TILE_LEVEL:
            raise FormatError(f"tile level {self.level!r} is not -1 (entries) or in [0, {MAX_TILE_LEVEL}]")
        if not _is_int(self.index) or not 0 <= self.index <= MAX_TREE_SIZE:
            raise FormatError(f"tile index {self.index!r} is not an integer in [0, 2**63 - 1]")
        if not _is_int(self.width) or not 1 <= self.width <= TILE_WIDTH:
            raise FormatError(f"tile width {self.width!r} is not an integer in [1, {TILE_WIDTH}]")

    @property
    def is_entries(self) -> bool:
        """True for an entry bundle, ``tile/entries/<N>``."""
        return self.level == ENTRIES_LEVEL

    @property
    def is_full(self) -> bool:
        """True for a full (immutable) tile of 256 hashes or entries."""
        return self.width == TILE_WIDTH

    @property
    def start_index(self) -> int:
        """tlog-tiles: the first entry the tile spans, ``N * 256**(L+1)`` (entry bundles: as level 0)."""
        return self.index << (TILE_HEIGHT * (max(self.level, 0) + 1))

    @property
    def end_index(self) -> int:
        """tlog-tiles: one past the last entry a *full* tile spans, ``(N + 1) * 256**(L+1)``."""
        return (self.index + 1) << (TILE_HEIGHT * (max(self.level, 0) + 1))

    def path(self) -> str:
        """tlog-tiles path ``tile/<L>/<N>[.p/<W>]`` or ``tile/entries/<N>[.p/<W>]``, without the prefix."""
        level = "entries" if self.is_entries else str(self.level)
        suffix = "" if self.is_full else f".p/{self.width}"
        return f"tile/{level}/{encode_tile_index(self.index)}{suffix}"


def encode_tile_index(n: int) -> str:
    """tlog-tiles ``<N>``: zero-padded 3-digit path elements, all but the last prefixed with ``x``.

    >>> encode_tile_index(1234067)
    'x001/x234/067'
    """
    if not _is_int(n) or not 0 <= n <= MAX_TREE_SIZE:
        raise FormatError(f"tile index {n!r} is not an integer in [0, 2**63 - 1]")
    digits = str(n)
    digits = digits.zfill(-(-len(digits) // 3) * 3)
    elements = [digits[i:i + 3] for i in range(0, len(digits), 3)]
    return "/".join(["x" + e for e in elements[:-1]] + elements[-1:])


def parse_tile_path(path: str) -> Tile:
    """Parse a tlog-tiles path (``tile/<L>/<N>[.p/<W>]`` or ``tile/entries/<N>[.p/<W>]``) strictly.

    Only the canonical encoding is accepted: ASCII digits, no leading zeroes in ``<L>`` or ``<W>``, 3-digit
    elements with an ``x`` on all but the last and no leading ``x000`` element, ``<L>`` at most 63,
    ``<W>`` in 1..255 (a full tile has no ``.p/`` suffix) and ``<N>`` below 2**63.  Raises FormatError.
    """
    if not isinstance(path, str):
        raise FormatError(f"tile path must be str, not {type(path).__name__}")
    match = _PATH_RE.fullmatch(path) if len(path) <= _MAX_PATH_LENGTH else None
    if match is None:
        raise FormatError(f"malformed tile path {path[:_MAX_PATH_LENGTH]!r}")
    level_text, index_text, width_text = match.group("level", "index", "width")
    level = ENTRIES_LEVEL if level_text == "entries" else int(level_text)
    index = int(index_text.replace("x", "").replace("/", ""))
    width = TILE_WIDTH if width_text is None else int(width_text)
    if width_text is not None and width >= TILE_WIDTH:
        raise FormatError(f"partial tile width {width} in {path!r} is not in [1, {TILE_WIDTH - 1}]")
    if index > MAX_TREE_SIZE or encode_tile_index(index) != index_text:
        raise FormatError(f"tile index {index_text!r} in {path!r} is not canonical or is too large")
    tile = Tile(level, index, width)  # checks the level range
    if tile.path() != path:
        raise InvariantError(f"tile path {path!r} re-formats as {tile.path()!r}")
    return tile


def _level_tiles(level: int, count: int) -> Iterator[Tile]:
    """The tiles holding ``count`` consecutive hashes (or entries) from index 0: full ones, then a partial."""
    full, rest = divmod(count, TILE_WIDTH)
    for n in range(full):
        yield Tile(level, n)
    if rest:
        yield Tile(level, full, rest)


def tiles_for_size(size: int) -> Iterator[Tile]:
    """Every hash tile that exists for a tree of ``size`` leaves, by ascending level then index.

    tlog-tiles "Partial Tiles": tile-level ``L`` holds ``size >> 8L`` hashes, in full tiles and one partial
    tile of width ``floor(size / 256**L) mod 256`` when that is not zero; empty tiles do not exist.
    """
    _check_size(size)
    return (t for level in _HASH_LEVELS if size >> (TILE_HEIGHT * level)
            for t in _level_tiles(level, size >> (TILE_HEIGHT * level)))


def entry_tiles_for_size(size: int) -> Iterator[Tile]:
    """Every entry bundle that exists for a tree of ``size`` entries (tlog-tiles "Log entries")."""
    return _level_tiles(ENTRIES_LEVEL, _check_size(size))


def _node_span(level: int, index: int) -> tuple[int, int, int, int]:
    """Where node (level, index) lives: (tile-level, tile index, first hash, end hash) within that tile."""
    if not (_is_int(level) and _is_int(index)) or not (0 <= level < 64 and 0 <= index <= MAX_TREE_SIZE):
        raise ProofError(f"node ({level!r}, {index!r}) is not a node id")
    tile_level, height = divmod(level, TILE_HEIGHT)
    tile_index, start = divmod(index << height, TILE_WIDTH)
    return tile_level, tile_index, start, start + (1 << height)


def tile_for_node(level: int, index: int, size: int) -> tuple[Tile, slice]:
    """The tile of a tree of ``size`` leaves that holds node (level, index), and the byte range of it.

    The tile is at tile-level ``level // 8`` with the width it has at ``size``; the slice selects the
    ``2**(level % 8)`` hashes whose Merkle Tree Hash is the node (just the node itself when ``level`` is a
    multiple of 8).  The node must be a perfect subtree inside the tree, else ProofError.
    """
    tile_level, tile_index, start, end = _node_span(level, index)
    if (index + 1) << level > _check_size(size):
        raise ProofError(f"node ({level}, {index}) is not in a tree of size {size}")
    width = min(TILE_WIDTH, (size >> (TILE_HEIGHT * tile_level)) - tile_index * TILE_WIDTH)
    return Tile(tile_level, tile_index, width), slice(start * HASH_SIZE, end * HASH_SIZE)


def _check_tile_data(tile: Tile, data: object) -> bytes:
    if tile.is_entries:
        raise FormatError(f"{tile.path()} is an entry bundle, not a hash tile")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FormatError(f"tile {tile.path()} data is {type(data).__name__}, not bytes")
    if len(data) != tile.width * HASH_SIZE:
        raise FormatError(f"tile {tile.path()} is {len(data)} bytes, want {tile.width * HASH_SIZE}")
    return bytes(data)


def hash_from_tile(level: int, index: int, tile: Tile, data: bytes) -> bytes:
    """The hash of node (level, index) read from ``data``, the contents of hash tile ``tile``.

    tlog-tiles: "the Merkle Tree levels between those expressed by the tile hashes are reconstructed by
    hashing" the tile's hashes; the node is the RFC 6962 §2.1 MTH of the ``2**(level % 8)`` hashes it
    covers.  Raises FormatError if ``data`` is not exactly ``tile.width * 32`` bytes and ProofError if
    the tile does not hold the node.
    """
    data = _check_tile_data(tile, data)
    tile_level, tile_index, start, end = _node_span(level, index)
    if (tile_level, tile_index) != (tile.level, tile.index) or end > tile.width:
        raise ProofError(f"node ({level}, {index}) is not in tile {tile.path()}")
    hashes = [data[i:i + HASH_SIZE] for i in range(start * HASH_SIZE, end * HASH_SIZE, HASH_SIZE)]
    return root_from_leaf_hashes(hashes)  # a perfect subtree: a single hash is returned as is


def tiles_for_nodes(ids: Iterable[tuple[int, int]], size: int) -> list[Tile]:
    """Phase one of reading node hashes: the distinct tiles (at their width at ``size``) that hold the node
    ids, in order of first use.  Read them, then call :func:`hashes_from_tiles`."""
    return list(dict.fromkeys(tile_for_node(*_node_id(node), size)[0] for node in ids))


def hashes_from_tiles(ids: Iterable[tuple[int, int]], size: int,
                      contents: Mapping[Tile, bytes]) -> list[bytes]:
    """Phase two: the hashes of the node ids, in order, from ``contents`` of the tiles
    :func:`tiles_for_nodes` named (FormatError for a tile of the wrong length)."""
    hashes = []
    for node in ids:
        level, index = _node_id(node)
        tile = tile_for_node(level, index, size)[0]
        if tile not in contents:
            raise InvariantError(f"tile {tile.path()} holding node {node} was not read")
        hashes.append(hash_from_tile(level, index, tile, contents[tile]))
    return hashes


class TileHashReader:
    """Reads stored node hashes of a tree of ``size`` leaves out of its tiles (the two phases of
    Go's ``sumdb/tlog.TileHashReader``): work out the tiles, read them in one call, then rebuild.

    ``read_tiles(tiles) -> list[bytes]`` is the only I/O: it returns the contents of each tile, in order,
    exactly ``width * 32`` bytes each.  Hashes never change once written, so a store that only keeps a wider
    version of a partial tile may return its first ``width * 32`` bytes.  The hashes are *not*
    authenticated here: verify what they prove (an inclusion or consistency proof) against a signed root.
    Asynchronous callers use :func:`tiles_for_nodes` and :func:`hashes_from_tiles` around their ``await``.
    """

    def __init__(self, size: int, read_tiles: Callable[[list[Tile]], Sequence[bytes]]):
        self.size = _check_size(size)
        self._read_tiles = read_tiles

    def read_hashes(self, ids: Iterable[tuple[int, int]]) -> list[bytes]:
        """The hashes of the node ids (level, index), in order; e.g. ``reader.read_hashes(plan.ids)``."""
        nodes = list(ids)
        tiles = tiles_for_nodes(nodes, self.size)
        if not tiles:
            return []
        contents = list(self._read_tiles(list(tiles)))
        if len(contents) != len(tiles):
            raise InvariantError(f"read_tiles returned {len(contents)} tiles for {len(tiles)} requested")
        return hashes_from_tiles(nodes, self.size, dict(zip(tiles, contents)))


def _node_id(node: object) -> tuple[int, int]:
    if not isinstance(node, tuple) or len(node) != 2:
        raise ProofError(f"node id {node!r} is not a pair (level, index)")
    return node  # type: ignore[return-value]  # the ints are checked by _node_span


def encode_entry_bundle(entries: Sequence[bytes]) -> bytes:
    """tlog-tiles "Log entries": the entry bundle of 1..256 entries, each a big-endian uint16 length
    followed by the entry bytes.  Raises FormatError for an empty or oversized bundle or entry.
    """
    if not 1 <= len(entries) <= TILE_WIDTH:
        raise FormatError(f"an entry bundle holds 1..{TILE_WIDTH} entries, not {len(entries)}")
    return b"".join(_frame_entry(i, entry) for i, entry in enumerate(entries))


def _frame_entry(number: int, entry: object) -> bytes:
    """One entry of a bundle: its big-endian uint16 length, then its bytes."""
    if not isinstance(entry, (bytes, bytearray)) or len(entry) > MAX_ENTRY_SIZE:
        raise FormatError(f"entry {number} is not bytes of at most {MAX_ENTRY_SIZE} bytes")
    return len(entry).to_bytes(2, "big") + entry


def decode_entry_bundle(data: bytes, expected_count: int | None = None) -> list[bytes]:
    """Split a tlog-tiles entry bundle into its entries, with exact framing (no truncated entry, no trailing
    bytes, 1..256 entries).  ``expected_count``, the width the bundle must have, is enforced.
    """
    if expected_count is not None and not (_is_int(expected_count) and 1 <= expected_count <= TILE_WIDTH):
        raise FormatError(f"expected entry count {expected_count!r} is not in [1, {TILE_WIDTH}]")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FormatError(f"entry bundle is {type(data).__name__}, not bytes")
    data, entries, pos = bytes(data), [], 0
    while pos < len(data) and len(entries) < TILE_WIDTH:
        if pos + 2 > len(data):
            raise FormatError(f"entry bundle truncated in the length prefix at byte {pos}")
        end = pos + 2 + int.from_bytes(data[pos:pos + 2], "big")
        if end > len(data):
            remain = len(data) - pos - 2
            raise FormatError(f"entry {len(entries)} claims {end - pos - 2} bytes, {remain} remain")
        entries.append(data[pos + 2:end])
        pos = end
    if not entries:
        raise FormatError("empty entry bundle")
    if pos != len(data):
        raise FormatError(f"entry bundle holds more than {TILE_WIDTH} entries")
    if expected_count is not None and len(entries) != expected_count:
        raise FormatError(f"entry bundle holds {len(entries)} entries, want {expected_count}")
    return entries


@dataclass(frozen=True)
class TileUpdate:
    """What a batch appended to the log does to its tiles (see :func:`update_tiles`).

    ``size``: the tree size after the batch.  ``tiles``: every tile to write: each full tile the batch
    completed and the grown right-most partial tile of each level the batch touched.  ``partial``: the
    right-most partial tile of each level at ``size`` (only non-empty ones), keyed like the ``partial``
    argument of the next update.
    """

    size: int
    tiles: dict[Tile, bytes]
    partial: dict[int, bytes]


_PARTIAL_KEYS = frozenset([ENTRIES_LEVEL, *_HASH_LEVELS])


def update_tiles(size: int, partial: Mapping[int, bytes],
                 nodes: Iterable[tuple[int, int, bytes]]) -> TileUpdate:
    """The hash tiles to write after appending a batch to a tree of ``size`` leaves (pure; for the sequencer).

    ``partial`` maps tile-levels to the bytes of their right-most partial tile at ``size`` (empty ones may be
    left out; the entry-bundle key ``ENTRIES_LEVEL`` is ignored, see :func:`update_entry_bundles`).  ``nodes``
    are the nodes ``(level, index, hash)`` the batch completed, as ``CompactRange.extend`` reports them;
    only tree levels ``8L`` are stored, in tile-level ``L``.  Each level must continue without a gap and
    end where the new size says, else InvariantError: the caller's state is inconsistent.
    """
    _check_partial_tiles(size, partial, _HASH_LEVELS)
    counts = [size >> (TILE_HEIGHT * level) for level in _HASH_LEVELS]
    buffers = {level: bytearray(partial.get(level, b"")) for level in _HASH_LEVELS}
    tiles: dict[Tile, bytes] = {}
    touched: set[int] = set()
    for level, index, node in nodes:
        if not _is_int(level) or level < 0:
            raise InvariantError(f"node level {level!r} is not a tree level")
        if level % TILE_HEIGHT:
            continue
        tile_level = level // TILE_HEIGHT
        if tile_level not in _HASH_LEVELS or index != counts[tile_level] or not _is_hash(node):
            raise InvariantError(f"node ({level}, {index!r}) is not the next stored hash of its level")
        _append(tiles, buffers[tile_level], tile_level, index, node)
        counts[tile_level] += 1
        touched.add(tile_level)
    new_size = counts[0]
    if any(counts[level] != new_size >> (TILE_HEIGHT * level) for level in _HASH_LEVELS):
        raise InvariantError(f"nodes {counts} do not describe a tree of size {new_size}")
    for level in sorted(touched):
        count = counts[level]
        if buffers[level]:
            tiles[Tile(level, count // TILE_WIDTH, count % TILE_WIDTH)] = bytes(buffers[level])
    return TileUpdate(new_size, tiles, {level: bytes(buf) for level, buf in buffers.items() if buf})


def _is_hash(node: object) -> bool:
    return isinstance(node, bytes) and len(node) == HASH_SIZE


def _append(tiles: dict[Tile, bytes], buffer: bytearray, level: int, position: int, item: bytes) -> None:
    """Append hash (or framed entry) number ``position`` of ``level`` to the partial tile in ``buffer``;
    when that fills the tile, emit the full tile and start the next one empty."""
    buffer += item
    if (position + 1) % TILE_WIDTH == 0:
        tiles[Tile(level, position // TILE_WIDTH)] = bytes(buffer)
        buffer.clear()


def _width(level: int, data: bytes | bytearray) -> int:
    """The number of hashes (or entries) in the contents of a tile at ``level``; FormatError if malformed."""
    if level == ENTRIES_LEVEL:
        return len(decode_entry_bundle(data)) if data else 0
    if len(data) % HASH_SIZE:
        raise FormatError(f"tile contents of {len(data)} bytes are not a whole number of hashes")
    return len(data) // HASH_SIZE


def _check_partial_tiles(size: int, partial: Mapping[int, bytes], levels: Iterable[int]) -> None:
    """The partial tiles of ``levels`` must be exactly those of a tree of ``size`` leaves."""
    _check_size(size)
    if not set(partial) <= _PARTIAL_KEYS:
        raise InvariantError(f"partial tiles at unknown levels {sorted(set(partial) - _PARTIAL_KEYS)}")
    for level in levels:
        want = (size >> (TILE_HEIGHT * max(level, 0))) % TILE_WIDTH
        try:
            got = _width(level, partial.get(level, b""))
        except FormatError as err:
            raise InvariantError(f"partial tile at level {level} is malformed: {err}") from err
        if got != want:
            raise InvariantError(f"partial tile at level {level} holds {got} items, size {size} needs {want}")


def update_entry_bundles(size: int, partial: Mapping[int, bytes], entries: Iterable[bytes]) -> TileUpdate:
    """The entry bundles to write after appending ``entries`` to a log of ``size`` entries (pure).

    ``partial[ENTRIES_LEVEL]`` is the right-most partial bundle at ``size`` (left out when empty; hash-tile
    keys are ignored).  Returns the bundles to write and, in ``partial``, the new partial bundle, if any.
    Merge it with :func:`update_tiles`' ``partial`` to keep one dict.  An entry longer than 65535 bytes
    raises FormatError (tlog-tiles "Log entries").
    """
    _check_partial_tiles(size, partial, [ENTRIES_LEVEL])
    buffer = bytearray(partial.get(ENTRIES_LEVEL, b""))
    tiles: dict[Tile, bytes] = {}
    count = size
    for entry in entries:
        _append(tiles, buffer, ENTRIES_LEVEL, count, _frame_entry(count, entry))
        count += 1
    _check_size(count)
    if buffer and count != size:
        tiles[Tile(ENTRIES_LEVEL, count // TILE_WIDTH, count % TILE_WIDTH)] = bytes(buffer)
    return TileUpdate(count, tiles, {ENTRIES_LEVEL: bytes(buffer)} if buffer else {})
