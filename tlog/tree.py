"""The compact range: the right edge of an RFC 6962 §2.1 Merkle tree in O(log n) state.

A tree of ``size`` leaves is covered, left to right, by one perfect subtree per set bit of ``size``
(largest first).  Their roots are the *compact range*; folding them right to left gives MTH(D[size])
because RFC 6962 §2.1 splits every non-perfect tree at the largest power of two below its size.

Node ids ``(level, index)`` name the perfect subtree of height ``level`` covering leaves
``[index << level, (index + 1) << level)`` (transparency-dev/merkle ``compact.NodeID``, C2SP tlog-tiles).

Pure and synchronous: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from .errors import FormatError, InvariantError
from .hashing import EMPTY_ROOT, HASH_SIZE

__all__ = ["MAX_TREE_SIZE", "CompactRange", "perfect_subtrees"]

#: The largest tree size the library accepts (sizes are uint64 on the wire; 2**63 - 1 keeps them
#: representable as a signed 64-bit integer everywhere, as Go's sumdb/tlog does).
MAX_TREE_SIZE = (1 << 63) - 1

_sha256 = hashlib.sha256

#: A node completed by an append: ``(level, index, hash)``.
Node = tuple[int, int, bytes]


def _check_size(size: object) -> int:
    if isinstance(size, bool) or not isinstance(size, int):
        raise FormatError(f"tree size must be an int, got {type(size).__name__}")
    if not 0 <= size <= MAX_TREE_SIZE:
        raise FormatError(f"tree size {size} out of range [0, {MAX_TREE_SIZE}]")
    return size


def perfect_subtrees(size: int) -> list[tuple[int, int]]:
    """The node ids of the compact range of a tree of ``size`` leaves, left to right (largest first).

    One perfect subtree per set bit of ``size``: ``perfect_subtrees(7) == [(2, 0), (1, 2), (0, 6)]``.
    """
    _check_size(size)
    ids: list[tuple[int, int]] = []
    start = 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            ids.append((level, start >> level))
            start += 1 << level
    return ids


def _as_list(hashes: Iterable[bytes]) -> list[bytes]:
    if isinstance(hashes, (bytes, bytearray, str)):
        raise FormatError("expected a sequence of hashes, not a single string")
    try:
        return list(hashes)
    except TypeError:
        raise FormatError(f"expected a sequence of hashes, got {type(hashes).__name__}") from None


def _check_leaf_hashes(hashes: list[bytes]) -> None:
    n = len(hashes)
    if list(map(type, hashes)).count(bytes) == n and list(map(len, hashes)).count(HASH_SIZE) == n:
        return  # the common case, checked by two C-level passes
    for i, h in enumerate(hashes):
        if type(h) is not bytes or len(h) != HASH_SIZE:
            got = f"{len(h)} bytes" if type(h) is bytes else type(h).__name__
            raise FormatError(f"hash #{i} is not a {HASH_SIZE}-byte bytes value (got {got})")
    raise InvariantError("hash check disagrees with itself")  # pragma: no cover


class CompactRange:
    """The perfect-subtree roots covering leaves ``[0, size)``: everything needed to append and to
    compute MTH(D[size]) (RFC 6962 §2.1) without the rest of the tree.
    """

    __slots__ = ("_size", "_hashes")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @classmethod
    def from_hashes(cls, size: int, hashes: Iterable[bytes]) -> CompactRange:
        """Rebuild a range from its perfect-subtree roots listed left to right (largest first).

        Exactly ``popcount(size)`` hashes of 32 bytes each; anything else is a ``FormatError``.
        """
        _check_size(size)
        items = _as_list(hashes)
        want = size.bit_count()
        if len(items) != want:
            raise FormatError(f"compact range of size {size} needs {want} hashes, got {len(items)}")
        _check_leaf_hashes(items)
        cr = cls()
        cr._size = size
        cr._hashes = items
        return cr

    @property
    def size(self) -> int:
        """The number of leaves covered."""
        return self._size

    @property
    def hashes(self) -> list[bytes]:
        """The perfect-subtree roots, left to right (a copy); their ids are ``perfect_subtrees(size)``."""
        return list(self._hashes)

    def root(self) -> bytes:
        """MTH(D[size]) of RFC 6962 §2.1; ``EMPTY_ROOT`` at size 0."""
        hashes = self._hashes
        if not hashes:
            return EMPTY_ROOT
        root = hashes[-1]
        for i in range(len(hashes) - 2, -1, -1):
            root = _sha256(b"\x01" + hashes[i] + root).digest()
        return root

    def append(self, leaf_hash: bytes) -> list[Node]:
        """Add one leaf hash; return every node it completes, the leaf (level 0) first, ascending levels."""
        if type(leaf_hash) is not bytes or len(leaf_hash) != HASH_SIZE:
            _check_leaf_hashes([leaf_hash])
        index = self._size
        if index >= MAX_TREE_SIZE:
            raise FormatError(f"tree size {index} cannot grow past {MAX_TREE_SIZE}")
        stack = self._hashes
        h = leaf_hash
        out = [(0, index, h)]
        level = 0
        i = index
        while i & 1:  # each trailing one bit of the old size closes one more perfect subtree
            h = _sha256(b"\x01" + stack.pop() + h).digest()
            level += 1
            i >>= 1
            out.append((level, i, h))
        stack.append(h)
        self._size = index + 1
        return out

    def extend(self, leaf_hashes: Iterable[bytes]) -> list[Node]:
        """Add a batch of leaf hashes; the nodes completed, in the order ``append`` would report them.

        All hashes are checked before any is added, so a ``FormatError`` leaves the range unchanged.
        """
        items = _as_list(leaf_hashes)
        _check_leaf_hashes(items)
        if len(items) > MAX_TREE_SIZE - self._size:
            raise FormatError(f"tree size {self._size} + {len(items)} exceeds {MAX_TREE_SIZE}")
        out: list[Node] = []
        if items and self._size & 1:  # align to an even index so the loop below takes pairs
            out.extend(self.append(items[0]))
            del items[0]
        odd = items.pop() if len(items) & 1 else None
        self._extend_pairs(items, out)
        if odd is not None:
            out.extend(self.append(odd))
        return out

    def _extend_pairs(self, items: list[bytes], out: list[Node]) -> None:
        """The hot loop of ``extend``: an even number of leaves starting at an even index.

        Each pair (left, right) completes the level-1 node over both, then possibly more levels.
        """
        index = self._size
        emit, emit3 = out.append, out.extend
        stack = self._hashes
        pop, push, sha = stack.pop, stack.append, _sha256
        pairs = iter(items)
        for left in pairs:
            right = next(pairs)
            h = sha(b"\x01" + left + right).digest()
            i = index >> 1
            emit3(((0, index, left), (0, index + 1, right), (1, i, h)))
            level = 1
            while i & 1:  # each trailing one bit of the pair's index closes one more perfect subtree
                h = sha(b"\x01" + pop() + h).digest()
                level += 1
                i >>= 1
                emit((level, i, h))
            push(h)
            index += 2
        self._size = index

    def copy(self) -> CompactRange:
        """An independent copy."""
        cr = CompactRange()
        cr._size = self._size
        cr._hashes = list(self._hashes)
        return cr

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return self._size == other._size and self._hashes == other._hashes

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, root={self.root().hex()})"
