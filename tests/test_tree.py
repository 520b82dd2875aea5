"""tlog.tree: the compact range and perfect-subtree decomposition, against the RFC 6962 oracle."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.rfc6962_vectors import KAT_ROOTS, RFC_LEAVES
from tests.oracle import Oracle, rfc_leaf_hash
from tlog.errors import FormatError, TlogError
from tlog.hashing import EMPTY_ROOT, root_from_leaf_hashes
from tlog.tree import MAX_TREE_SIZE, CompactRange, perfect_subtrees

N = 300  # exhaustive sweeps cover every size 0..N
LEAVES = [rfc_leaf_hash(b"tree test leaf %d" % i) for i in range(N)]
ORACLE = Oracle(LEAVES)

# transparency-dev/merkle testonly/constants.go: the RFC 6962 test leaves, their compact ranges and roots.
KAT_NODES = {
    (0, 0): "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    (0, 1): "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    (0, 2): "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
    (0, 3): "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
    (0, 4): "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    (0, 5): "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
    (0, 6): "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
    (0, 7): "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    (1, 0): "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    (1, 1): "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    (1, 2): "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    (1, 3): "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    (2, 0): "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    (2, 1): "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    (3, 0): "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}


def covered(node: tuple[int, int]) -> range:
    level, index = node
    return range(index << level, (index + 1) << level)


# --- perfect_subtrees -----------------------------------------------------------------------------


def test_perfect_subtrees_examples() -> None:
    assert perfect_subtrees(0) == []
    assert perfect_subtrees(1) == [(0, 0)]
    assert perfect_subtrees(7) == [(2, 0), (1, 2), (0, 6)]
    assert perfect_subtrees(8) == [(3, 0)]
    assert perfect_subtrees(MAX_TREE_SIZE) == [(62 - j, ((1 << (j + 1)) - 2)) for j in range(63)]


def check_partition(size: int, ids: list[tuple[int, int]]) -> None:
    """The ids tile [0, size) left to right, strictly decreasing in height, one per set bit."""
    start = 0
    for level, index in ids:
        assert index << level == start, (size, ids)
        start += 1 << level
    assert start == size
    levels = [level for level, _ in ids]
    assert levels == sorted(set(levels), reverse=True)
    assert len(ids) == bin(size).count("1")


def test_perfect_subtrees_partition_every_small_size() -> None:
    for size in range(0, 2 * N):
        check_partition(size, perfect_subtrees(size))


@settings(deadline=None)
@given(st.integers(0, MAX_TREE_SIZE))
def test_perfect_subtrees_partition_large(size: int) -> None:
    check_partition(size, perfect_subtrees(size))


@pytest.mark.parametrize("bad", [-1, MAX_TREE_SIZE + 1, 2**64, True, 1.0, "3", None])
def test_perfect_subtrees_rejects_bad_sizes(bad: object) -> None:
    with pytest.raises(FormatError):
        perfect_subtrees(bad)  # type: ignore[arg-type]


# --- known answers --------------------------------------------------------------------------------


def test_rfc_known_answers() -> None:
    cr = CompactRange()
    reported = {}
    assert cr.root().hex() == KAT_ROOTS[0] == EMPTY_ROOT.hex()
    for size, data in enumerate(RFC_LEAVES, start=1):
        for level, index, h in cr.append(rfc_leaf_hash(data)):
            reported[(level, index)] = h.hex()
        assert cr.root().hex() == KAT_ROOTS[size], size
        assert [h.hex() for h in cr.hashes] == [KAT_NODES[i] for i in perfect_subtrees(size)]
    assert reported == KAT_NODES
    oracle = Oracle([rfc_leaf_hash(d) for d in RFC_LEAVES])
    assert [oracle.root(n).hex() for n in range(9)] == KAT_ROOTS


# --- CompactRange against the oracle --------------------------------------------------------------


def test_append_reports_every_node_once_with_oracle_hashes() -> None:
    cr = CompactRange()
    seen: dict[tuple[int, int], bytes] = {}
    for size in range(1, N + 1):
        nodes = cr.append(LEAVES[size - 1])
        assert nodes[0] == (0, size - 1, LEAVES[size - 1]), "the leaf itself comes first"
        assert [lv for lv, _, _ in nodes] == list(range(len(nodes))), "ascending levels"
        # exactly the perfect subtrees that end at this leaf: one per trailing one bit of size - 1
        assert len(nodes) == 1 + ((size - 1) ^ size).bit_length() - 1
        for level, index, h in nodes:
            assert (index + 1) << level == size, "a completed node ends at the new leaf"
            assert (level, index) not in seen, f"node {(level, index)} reported twice"
            assert h == ORACLE.subtree(level, index)
            seen[(level, index)] = h
        assert cr.size == size
        assert cr.root() == ORACLE.root(size)
        assert cr.hashes == [ORACLE.subtree(*i) for i in perfect_subtrees(size)]
    assert set(seen) == {(lv, i) for lv in range(N.bit_length()) for i in range(N >> lv)}


def test_root_matches_hashing_module_at_every_size() -> None:
    cr = CompactRange()
    for size in range(0, 70):
        assert cr.root() == root_from_leaf_hashes(LEAVES[:size]) == ORACLE.root(size)
        if size < 69:
            cr.append(LEAVES[size])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 40), max_size=12), st.integers(0, 50))
def test_extend_equals_appends(batches: list[int], start: int) -> None:
    """extend reports the nodes append would, in the same order, from any starting size and batching."""
    one, many = CompactRange(), CompactRange()
    for h in LEAVES[:start]:
        one.append(h)
    many.extend(LEAVES[:start])
    pos = start
    for count in batches:
        chunk = LEAVES[pos:pos + count]
        expected = [node for h in chunk for node in one.append(h)]
        assert many.extend(iter(chunk)) == expected
        assert many == one
        pos += len(chunk)
    assert many.root() == ORACLE.root(pos)


def test_from_hashes_round_trip_and_continue() -> None:
    for size in range(0, 80):
        cr = CompactRange()
        cr.extend(LEAVES[:size])
        restored = CompactRange.from_hashes(size, cr.hashes)
        assert restored == cr and restored.root() == cr.root()
        assert restored.extend(LEAVES[size:size + 37]) == cr.extend(LEAVES[size:size + 37])
        assert restored.root() == ORACLE.root(size + 37)


def test_from_hashes_validation() -> None:
    h = LEAVES[0]
    CompactRange.from_hashes(5, [h, h])
    with pytest.raises(FormatError, match="needs 2 hashes, got 1"):
        CompactRange.from_hashes(5, [h])  # named mutation: one hash missing
    with pytest.raises(FormatError, match="needs 2 hashes, got 3"):
        CompactRange.from_hashes(5, [h, h, h])  # one hash too many
    with pytest.raises(FormatError, match="got 31 bytes"):
        CompactRange.from_hashes(5, [h, h[:31]])
    with pytest.raises(FormatError, match="got 33 bytes"):
        CompactRange.from_hashes(5, [h + b"\x00", h])
    with pytest.raises(FormatError, match="str"):
        CompactRange.from_hashes(5, [h, h.hex()])  # type: ignore[list-item]
    with pytest.raises(FormatError):
        CompactRange.from_hashes(5, [h, bytearray(h)])  # type: ignore[list-item]
    with pytest.raises(FormatError):
        CompactRange.from_hashes(5, None)  # type: ignore[arg-type]
    for bad in (-1, MAX_TREE_SIZE + 1, True, 5.0, "5"):
        with pytest.raises(FormatError):
            CompactRange.from_hashes(bad, [h, h])  # type: ignore[arg-type]
    assert CompactRange.from_hashes(0, []) == CompactRange()


def test_from_hashes_order_matters() -> None:
    """Named mutation: the same hashes in the wrong order give a different root, not the right one."""
    cr = CompactRange()
    cr.extend(LEAVES[:7])
    swapped = CompactRange.from_hashes(7, list(reversed(cr.hashes)))
    assert swapped.root() != cr.root() == ORACLE.root(7)


def test_append_and_extend_reject_bad_hashes_without_changing_state() -> None:
    cr = CompactRange()
    cr.extend(LEAVES[:5])
    before = cr.copy()
    for bad in (b"", LEAVES[0][:31], LEAVES[0] + b"\x00", LEAVES[0].hex(), bytearray(LEAVES[0]), None, 7):
        with pytest.raises(FormatError):
            cr.append(bad)  # type: ignore[arg-type]
        with pytest.raises(FormatError):
            cr.extend([LEAVES[5], LEAVES[6], bad])  # type: ignore[list-item]
        assert cr == before, "a rejected batch adds nothing"
    with pytest.raises(FormatError):
        cr.extend(None)  # type: ignore[arg-type]
    assert isinstance(FormatError("x"), TlogError)


def test_size_limit() -> None:
    h = LEAVES[0]
    full = CompactRange.from_hashes(MAX_TREE_SIZE, [h] * 63)
    with pytest.raises(FormatError, match="cannot grow"):
        full.append(h)
    almost = CompactRange.from_hashes(MAX_TREE_SIZE - 1, [h] * 62)
    with pytest.raises(FormatError, match="exceeds"):
        almost.extend([h, h])
    nodes = almost.append(h)
    assert nodes == [(0, MAX_TREE_SIZE - 1, h)] and almost.size == MAX_TREE_SIZE


def test_copy_and_hashes_are_independent() -> None:
    cr = CompactRange()
    cr.extend(LEAVES[:6])
    clone = cr.copy()
    clone.append(LEAVES[6])
    assert cr.size == 6 and clone.size == 7
    assert cr.root() == ORACLE.root(6) and clone.root() == ORACLE.root(7)
    listed = cr.hashes
    listed.append(b"\x00" * 32)
    assert cr.hashes == [ORACLE.subtree(*i) for i in perfect_subtrees(6)]
    assert cr != clone and cr != "not a range"
    assert "size=6" in repr(cr)


def test_large_append_hash_count() -> None:
    """Appending n leaves computes exactly n - popcount(n) interior hashes (each node once)."""
    cr = CompactRange()
    n = 5000
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(n)]
    nodes = cr.extend(leaves)
    assert len(nodes) == n + n - bin(n).count("1")
    assert len({(lv, i) for lv, i, _ in nodes}) == len(nodes)
    assert cr.root() == root_from_leaf_hashes(leaves)
