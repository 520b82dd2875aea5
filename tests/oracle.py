"""A naive reference implementation of RFC 6962 §2.1, used only as a test oracle.

Written straight from the RFC's recursive definitions, sharing no code with ``tlog``:

* §2.1   MTH({}) = SHA-256();  MTH({d(0)}) = SHA-256(0x00 || d(0));
         MTH(D[n]) = SHA-256(0x01 || MTH(D[0:k]) || MTH(D[k:n])), k the largest power of two < n.
* §2.1.1 PATH(m, {d(0)}) = {};  PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n])      for m < k,
                                              = PATH(m - k, D[k:n]) : MTH(D[0:k])  for m >= k.
* §2.1.2 PROOF(m, D[n]) = SUBPROOF(m, D[n], true);
         SUBPROOF(m, D[m], true) = {};  SUBPROOF(m, D[m], false) = {MTH(D[m])};
         SUBPROOF(m, D[n], b) = SUBPROOF(m, D[0:k], b) : MTH(D[k:n])          for m <= k,
                              = SUBPROOF(m - k, D[k:n], false) : MTH(D[0:k])  for m > k.

Subtrees are addressed by absolute leaf ranges ``[lo, hi)``; MTH values are memoised, which
changes nothing but the running time.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

__all__ = ["rfc_leaf_hash", "largest_power_of_two_below", "Oracle", "PeriodicOracle",
           "rfc_inclusion_length", "rfc_consistency_length"]


def rfc_leaf_hash(data: bytes) -> bytes:
    """RFC 6962 §2.1: SHA-256(0x00 || d)."""
    return hashlib.sha256(b"\x00" + data).digest()


def _interior(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def largest_power_of_two_below(n: int) -> int:
    """k with k < n <= 2k (RFC 6962 §2.1), for n > 1, by counting up rather than bit tricks."""
    if n <= 1:
        raise ValueError(f"no power of two below {n} splits a tree")
    k = 1
    while k * 2 < n:
        k *= 2
    return k


class Oracle:
    """RFC 6962 §2.1 over a fixed list of leaf hashes."""

    def __init__(self, leaf_hashes: Sequence[bytes]):
        self.leaves = list(leaf_hashes)
        self._memo: dict[tuple[int, int], bytes] = {}

    def mth(self, lo: int, hi: int) -> bytes:
        """MTH(D[lo:hi])."""
        if not 0 <= lo <= hi <= len(self.leaves):
            raise ValueError(f"range [{lo}, {hi}) outside {len(self.leaves)} leaves")
        key = (lo, hi)
        if key not in self._memo:
            n = hi - lo
            if n == 0:
                value = hashlib.sha256(b"").digest()
            elif n == 1:
                value = self.leaves[lo]
            else:
                k = largest_power_of_two_below(n)
                value = _interior(self.mth(lo, lo + k), self.mth(lo + k, hi))
            self._memo[key] = value
        return self._memo[key]

    def root(self, n: int) -> bytes:
        """MTH(D[n])."""
        return self.mth(0, n)

    def subtree(self, level: int, index: int) -> bytes:
        """The hash of the perfect subtree with node id (level, index)."""
        return self.mth(index << level, (index + 1) << level)

    def path(self, m: int, n: int) -> list[bytes]:
        """PATH(m, D[n]), the inclusion proof of leaf m in the tree of the first n leaves."""
        if not 0 <= m < n:
            raise ValueError(f"leaf {m} not in a tree of size {n}")
        return self._path(m, 0, n)

    def _path(self, m: int, lo: int, hi: int) -> list[bytes]:
        n = hi - lo
        if n == 1:
            return []
        k = largest_power_of_two_below(n)
        if m < k:
            return self._path(m, lo, lo + k) + [self.mth(lo + k, hi)]
        return self._path(m - k, lo + k, hi) + [self.mth(lo, lo + k)]

    def proof(self, m: int, n: int) -> list[bytes]:
        """PROOF(m, D[n]), the consistency proof between the first m and the first n leaves."""
        if not 0 < m <= n:
            raise ValueError(f"PROOF is defined for 0 < m <= n, got m={m} n={n}")
        return self._subproof(m, 0, n, True)

    def _subproof(self, m: int, lo: int, hi: int, b: bool) -> list[bytes]:
        n = hi - lo
        if m == n:
            return [] if b else [self.mth(lo, hi)]
        k = largest_power_of_two_below(n)
        if m <= k:
            return self._subproof(m, lo, lo + k, b) + [self.mth(lo + k, hi)]
        return self._subproof(m - k, lo + k, hi, False) + [self.mth(lo, lo + k)]


class PeriodicOracle:
    """RFC 6962 §2.1 for a tree of any size up to 2**63 - 1 whose leaf hashes alternate A, B.

    Every perfect subtree of height >= 1 then has one hash per level, so any stored node, and MTH of
    any prefix (by the §2.1 recursion on sizes alone), costs O(63) hashes.
    """

    A, B = rfc_leaf_hash(b"even"), rfc_leaf_hash(b"odd")

    def __init__(self) -> None:
        self.level = [b"", _interior(self.A, self.B)]
        for _ in range(62):
            self.level.append(_interior(self.level[-1], self.level[-1]))

    def node(self, level: int, index: int) -> bytes:
        """The hash of the perfect subtree (level, index)."""
        if level == 0:
            return self.B if index & 1 else self.A
        return self.level[level]

    @functools.lru_cache(maxsize=None)  # noqa: B019 (a few long-lived instances)
    def mth(self, n: int, odd_start: bool = False) -> bytes:
        """MTH of n leaves starting at a position aligned for them (odd only for a single leaf)."""
        if n == 1:
            return self.B if odd_start else self.A
        k = largest_power_of_two_below(n) if n & (n - 1) else n
        if k == n:
            return self.level[n.bit_length() - 1]
        return _interior(self.mth(k, odd_start), self.mth(n - k, k == 1))


def _rfc_rounds(fn: int, sn: int) -> int:
    """Rounds of the RFC 9162 §2.1.3.2 / §2.1.4.2 loop until sn reaches 0: one proof element each."""
    rounds = 0
    while sn:
        if fn == sn and not fn & 1:
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        fn, sn, rounds = fn >> 1, sn >> 1, rounds + 1
    return rounds


def rfc_inclusion_length(index: int, size: int) -> int:
    """The proof length the RFC 9162 §2.1.3.2 loop accepts, derived by running the loop itself."""
    return _rfc_rounds(index, size - 1)


def rfc_consistency_length(m: int, n: int) -> int:
    """The same for §2.1.4.2 (0 < m < n): the first element, the loop rounds, minus the prepended
    old root when m is a power of two."""
    fn, sn = m - 1, n - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    return 1 + _rfc_rounds(fn, sn) - (1 if m & (m - 1) == 0 else 0)
