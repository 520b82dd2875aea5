"""RFC 9162 §2.1.3 inclusion proofs and §2.1.4 consistency proofs, in two phases, and their verifiers.

Proving works like Go's sumdb/tlog and transparency-dev/merkle: a *plan* names the stored nodes to
read (perfect subtrees only, as ``(level, index)`` ids), the caller reads them in one call, and
:meth:`Plan.rehash` combines them into the proof.  A proof element that covers the incomplete right
edge of the tree (transparency-dev's "ephemeral" node, MTH(D[k:n]) for a non-perfect range) is not
stored anywhere: the plan lists the perfect subtrees covering that range and ``rehash`` folds them.

Verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 step by step, after checking the sizes, the
hash lengths and the exact expected proof length, so no hashing happens on malformed input.

Sizes are Python ints in ``[0, 2**63 - 1]``.  Pure and synchronous: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from .errors import InvariantError, ProofError
from .hashing import EMPTY_ROOT, HASH_SIZE
from .tree import MAX_TREE_SIZE, perfect_subtrees

__all__ = [
    "Plan",
    "inclusion_plan",
    "inclusion_path",
    "range_plan",
    "consistency_plan",
    "root_plan",
    "verify_inclusion",
    "root_from_inclusion",
    "verify_consistency",
]

_sha256 = hashlib.sha256

NodeId = tuple[int, int]


class Plan:
    """Which stored nodes a proof needs, and how to combine them.

    ``ids`` lists perfect-subtree node ids in reading order.  Each proof element is made from a
    consecutive run of them: a run of one is used as is; a longer run covers a non-perfect range
    ``[lo, hi)`` left to right and is folded right to left into MTH(D[lo:hi]) (RFC 6962 §2.1).
    """

    __slots__ = ("ids", "_runs")

    def __init__(self, ids: list[NodeId], runs: tuple[int, ...]):
        if sum(runs) != len(ids):
            raise InvariantError(f"plan runs {runs} do not cover {len(ids)} ids")
        self.ids = ids
        self._runs = runs

    def __repr__(self) -> str:
        return f"Plan(ids={self.ids!r}, runs={self._runs!r})"

    def rehash(self, hashes: Iterable[bytes]) -> list[bytes]:
        """Combine the hashes read for ``ids`` (same order) into the proof hashes.

        A wrong count or a hash that is not exactly 32 bytes raises ``ProofError``: the hashes come
        from storage or, for a client reading tiles, from an untrusted server.
        """
        hashes = list(hashes)
        if len(hashes) != len(self.ids):
            raise ProofError(f"plan needs {len(self.ids)} hashes, got {len(hashes)}")
        for i, h in enumerate(hashes):
            if not isinstance(h, bytes) or len(h) != HASH_SIZE:
                raise ProofError(f"hash #{i} for node {self.ids[i]} is not a {HASH_SIZE}-byte hash")
        out: list[bytes] = []
        pos = 0
        for run in self._runs:
            if run == 1:
                out.append(hashes[pos])
            elif run == 0:  # only root_plan(0): MTH({}) = SHA-256()
                out.append(EMPTY_ROOT)
            else:
                acc = hashes[pos + run - 1]
                for j in range(pos + run - 2, pos - 1, -1):
                    acc = _sha256(b"\x01" + hashes[j] + acc).digest()
                out.append(acc)
            pos += run
        return out


# ---------------------------------------------------------------------------------------------
# Argument checks (before any hashing, with the values in the message)


def _check_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProofError(f"{what} must be an int, got {type(value).__name__}")
    if not 0 <= value <= MAX_TREE_SIZE:
        raise ProofError(f"{what} {value} out of range [0, {MAX_TREE_SIZE}]")
    return value


def _check_index(index: object, size: object) -> tuple[int, int]:
    size = _check_int(size, "tree size")
    index = _check_int(index, "leaf index")
    if index >= size:
        raise ProofError(f"leaf index {index} out of range for tree size {size}")
    return index, size


def _check_sizes(m: object, n: object) -> tuple[int, int]:
    m = _check_int(m, "old tree size")
    n = _check_int(n, "new tree size")
    if m > n:
        raise ProofError(f"old tree size {m} > new tree size {n}")
    return m, n


def _check_hash(value: object, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        got = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise ProofError(f"{what} is not a {HASH_SIZE}-byte hash (got {got})")
    return value


def _check_proof(proof: object) -> list[bytes]:
    if isinstance(proof, (bytes, bytearray, str)):
        raise ProofError("proof must be a sequence of hashes, not a single string")
    try:
        items = list(proof)  # type: ignore[call-overload]
    except TypeError:
        raise ProofError(f"proof must be a sequence of hashes, got {type(proof).__name__}") from None
    for i, h in enumerate(items):
        _check_hash(h, f"proof[{i}]")
    return items


def _inclusion_length(index: int, size: int) -> int:
    """RFC 9162 §2.1.3.1 proof length: the path below the fork from leaf ``size - 1`` ("inner")
    plus one left-border hash per set bit of ``index`` above it."""
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def _consistency_length(m: int, n: int) -> int:
    """RFC 9162 §2.1.4.1 proof length for ``0 < m < n``: the inclusion path of the largest perfect
    subtree ending at ``m`` (its level is the trailing zeros of ``m``), plus that subtree's own hash
    unless it is the whole old tree (``m`` a power of two)."""
    shift = (m & -m).bit_length() - 1
    inner = ((m - 1) ^ (n - 1)).bit_length()
    border = ((m - 1) >> inner).bit_count()
    seed = 0 if m & (m - 1) == 0 else 1
    return seed + inner - shift + border


# ---------------------------------------------------------------------------------------------
# Phase one: plans


def _range_ids(lo: int, hi: int) -> list[NodeId]:
    """The perfect subtrees covering ``[lo, hi)`` left to right, largest first.

    Every range in an RFC 6962 proof starts at a multiple of a power of two at least as large as the
    range (it is a half of a split), so the largest power of two that fits is always aligned.
    """
    ids: list[NodeId] = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        if lo & ((1 << level) - 1):
            raise InvariantError(f"proof range [{lo}, {hi}) is not aligned")
        ids.append((level, lo >> level))
        lo += 1 << level
    return ids


def _plan(ranges: list[tuple[int, int]]) -> Plan:
    """A plan whose proof elements are MTH(D[lo:hi]) for each range, in order."""
    ids: list[NodeId] = []
    runs: list[int] = []
    for lo, hi in ranges:
        part = _range_ids(lo, hi)
        ids.extend(part)
        runs.append(len(part))
    return Plan(ids, tuple(runs))


def inclusion_plan(index: int, size: int) -> Plan:
    """RFC 9162 §2.1.3.1 PATH(index, D[size]): the plan of the inclusion proof of leaf ``index``.

    Walks the recursive definition top-down: at a subtree ``D[lo:hi]`` split at the largest power of
    two ``k < hi - lo``, the proof gets the half not containing the leaf.  Elements come out bottom-up.
    """
    index, size = _check_index(index, size)
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        if index < lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
    ranges.reverse()
    return _plan(ranges)


def range_plan(lo: int, hi: int) -> Plan:
    """The plan of MTH(D[lo:hi]) (RFC 6962 §2.1) for a range that starts at a multiple of a power of
    two at least ``hi - lo``, as every range in a proof does (e.g. the border of ``inclusion_path``)."""
    return _plan([(lo, hi)])


def inclusion_path(index: int, size: int, from_level: int = 0,
                   to_level: int | None = None) -> tuple[list[NodeId | None], int]:
    """RFC 9162 §2.1.3.1 PATH(index, D[size]) bottom-up, the shape ``inclusion_plan`` gives, without
    the plan: the node id of each proof element, except that the one element which may not be a
    perfect subtree — MTH(D[lo:size]) for the right border where the leaf's path meets it — is
    ``None`` in the list and its ``lo`` is returned (``-1`` when there is none).

    At level ``l`` the leaf's ancestor is node ``k = index >> l`` and its sibling ``k ^ 1``: a left
    sibling is always a perfect subtree; a right one is perfect if it ends within the tree, absent
    (the ancestor is promoted) if it starts beyond it, and otherwise it is the border range.  That
    MTH depends only on ``lo`` and ``size``, so a reader can keep it across proofs.

    ``from_level``/``to_level`` give only the elements of levels ``[from_level, to_level)``: leaves
    whose indices agree above bit ``l`` share the elements from level ``l`` up, so the proofs of a
    run of leaves are their own low parts and one shared high part (the sequencer's receipts).
    """
    index, size = _check_index(index, size)
    ids: list[NodeId | None] = []
    border = -1
    last, level, k = size - 1, from_level, index >> from_level
    while last >> level and (to_level is None or level < to_level):
        s = k ^ 1
        if s < k or (s + 1) << level <= size:
            ids.append((level, s))
        elif s << level < size:
            ids.append(None)
            border = s << level
        k >>= 1
        level += 1
    return ids, border


def consistency_plan(m: int, n: int) -> Plan:
    """RFC 9162 §2.1.4.1 PROOF(m, D[n]) = SUBPROOF(m, D[n], true): the plan of a consistency proof.

    ``m == n`` and ``m == 0`` give the empty proof.  Otherwise walks SUBPROOF top-down: at ``D[lo:hi]``
    split at ``k``, the proof gets the half the old tree does not end in (``b`` turns false on going
    right); it ends at ``D[lo:m]``, itself in the proof unless it is the whole old tree.
    """
    m, n = _check_sizes(m, n)
    if m == 0 or m == n:
        return Plan([], ())
    ranges: list[tuple[int, int]] = []
    lo, hi, whole_old_tree = 0, n, True
    while m != hi:
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        if m <= lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
            whole_old_tree = False
    if not whole_old_tree:
        ranges.append((lo, hi))
    ranges.reverse()
    return _plan(ranges)


def root_plan(size: int) -> Plan:
    """The plan of MTH(D[size]) (RFC 6962 §2.1): the compact range, folded; ``rehash`` returns ``[root]``."""
    size = _check_int(size, "tree size")
    if size == 0:
        return Plan([], (0,))
    ids = perfect_subtrees(size)
    return Plan(ids, (len(ids),))


# ---------------------------------------------------------------------------------------------
# Verification


def root_from_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root that an inclusion proof of ``leaf_hash`` at ``index`` leads to in a tree of ``size``.

    RFC 9162 §2.1.3.2 steps 1–4, after checking the arguments and the exact proof length.
    """
    index, size = _check_index(index, size)
    _check_hash(leaf_hash, "leaf hash")
    path = _check_proof(proof)
    want = _inclusion_length(index, size)
    if len(path) != want:
        raise ProofError(f"inclusion proof for leaf {index} in tree size {size} has "
                         f"{len(path)} hashes, want {want}")
    return _inclusion_root(index, size, leaf_hash, path)


def _inclusion_root(index: int, size: int, leaf_hash: bytes, path: list[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2 steps 2–4 on a proof of the right length."""
    fn, sn, r = index, size - 1, leaf_hash
    for p in path:
        if sn == 0:
            raise InvariantError(f"inclusion path ran past the root at leaf {index} size {size}")
        if fn & 1 or fn == sn:
            r = _sha256(b"\x01" + p + r).digest()
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = _sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvariantError(f"inclusion path stopped below the root at leaf {index} size {size}")
    return r


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 §2.1.3.2: check that ``proof`` shows ``leaf_hash`` at ``index`` in the tree ``root``.

    Raises ``ProofError``; a root mismatch carries ``expected`` (``root``) and ``computed``.
    """
    _check_hash(root, "root")
    computed = root_from_inclusion(leaf_hash, index, size, proof)
    if computed != root:
        raise ProofError(f"inclusion proof for leaf {index} in tree size {size} leads to root "
                         f"{computed.hex()}, expected {root.hex()}", expected=root, computed=computed)


def verify_consistency(m: int, n: int, proof: Sequence[bytes], root_m: bytes, root_n: bytes) -> None:
    """RFC 9162 §2.1.4.2: check that tree ``root_n`` (size ``n``) extends tree ``root_m`` (size ``m``).

    ``m == n`` needs an empty proof and equal roots; ``m == 0`` needs an empty proof and
    ``root_m == EMPTY_ROOT`` (the empty tree is a prefix of every tree).  Raises ``ProofError``; a
    root mismatch carries ``expected`` and ``computed``.
    """
    m, n = _check_sizes(m, n)
    _check_hash(root_m, "old root")
    _check_hash(root_n, "new root")
    path = _check_proof(proof)
    if m == 0 or m == n:
        _check_trivial_consistency(m, n, path, root_m, root_n)
        return
    want = _consistency_length(m, n)
    if len(path) != want:
        raise ProofError(f"consistency proof from size {m} to {n} has {len(path)} hashes, want {want}")
    fr, sr = _consistency_roots(m, n, path, root_m)
    if fr != root_m:
        raise ProofError(f"consistency proof from size {m} to {n} leads to old root {fr.hex()}, "
                         f"expected {root_m.hex()}", expected=root_m, computed=fr)
    if sr != root_n:
        raise ProofError(f"consistency proof from size {m} to {n} leads to new root {sr.hex()}, "
                         f"expected {root_n.hex()}", expected=root_n, computed=sr)


def _check_trivial_consistency(m: int, n: int, path: list[bytes], root_m: bytes, root_n: bytes) -> None:
    if path:
        raise ProofError(f"consistency proof from size {m} to {n} must be empty, got {len(path)} hashes")
    if m == 0 and root_m != EMPTY_ROOT:
        raise ProofError(f"root of the empty tree is {root_m.hex()}, expected {EMPTY_ROOT.hex()}",
                         expected=root_m, computed=EMPTY_ROOT)
    if m == n and root_m != root_n:
        raise ProofError(f"trees of equal size {n} have different roots {root_m.hex()} and "
                         f"{root_n.hex()}", expected=root_n, computed=root_m)


def _consistency_roots(m: int, n: int, path: list[bytes], root_m: bytes) -> tuple[bytes, bytes]:
    """RFC 9162 §2.1.4.2 steps 2–6: the old and new roots (fr, sr) the proof leads to (``0 < m < n``)."""
    if m & (m - 1) == 0:
        path = [root_m, *path]
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise InvariantError(f"consistency path ran past the root from size {m} to {n}")
        if fn & 1 or fn == sn:
            fr = _sha256(b"\x01" + c + fr).digest()
            sr = _sha256(b"\x01" + c + sr).digest()
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = _sha256(b"\x01" + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvariantError(f"consistency path stopped below the root from size {m} to {n}")
    return fr, sr
