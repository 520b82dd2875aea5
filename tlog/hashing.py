"""RFC 6962 §2.1 Merkle Tree Hash primitives (SHA-256).

Pure and synchronous: no I/O, no clock.
"""

from __future__ import annotations

import hashlib

__all__ = ["HASH_SIZE", "EMPTY_ROOT", "leaf_hash", "node_hash", "root_from_leaf_hashes"]

HASH_SIZE = 32

_sha256 = hashlib.sha256

#: RFC 6962 §2.1: the hash of an empty list is the hash of an empty string, MTH({}) = SHA-256().
EMPTY_ROOT = _sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    """RFC 6962 §2.1 leaf hash: SHA-256(0x00 || leaf)."""
    return _sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 §2.1 interior node hash: SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + left + right).digest()


def root_from_leaf_hashes(hashes: list[bytes]) -> bytes:
    """MTH(D[n]) of RFC 6962 §2.1 for any n, given the leaf hashes, in O(n) time and O(log n) space.

    Folds a stack of perfect subtrees (the compact range), then merges the stack right to left,
    which is the same tree shape as the recursive split at the largest power of two below n.
    """
    stack: list[bytes] = []
    for i, h in enumerate(hashes):
        stack.append(h)
        n = i + 1
        while n & 1 == 0:  # each trailing zero bit of the new size closes one more perfect subtree
            right = stack.pop()
            stack[-1] = _sha256(b"\x01" + stack[-1] + right).digest()
            n >>= 1
    if not stack:
        return EMPTY_ROOT
    root = stack.pop()
    while stack:
        root = _sha256(b"\x01" + stack.pop() + root).digest()
    return root
