"""tlog.proof: two-phase RFC 9162 proofs and their verifiers, against the RFC 6962 oracle.

Known answers (transparency-dev/merkle), exhaustive sweeps at small sizes, the generated vectors
with their named mutations, hypothesis properties up to 2**63 - 1, and a fuzz test.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import pathlib

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import tlog.proof as proof_module
from tests.rfc6962_vectors import KAT_ROOTS, RFC_LEAVES
from tests.oracle import (Oracle, PeriodicOracle, rfc_consistency_length, rfc_inclusion_length,
                          rfc_leaf_hash)
from tlog.errors import InvariantError, ProofError
from tlog.hashing import EMPTY_ROOT
from tlog.proof import (Plan, consistency_plan, inclusion_plan, root_from_inclusion, root_plan,
                        verify_consistency, verify_inclusion)
from tlog.tree import MAX_TREE_SIZE, CompactRange

ROOT = pathlib.Path(__file__).resolve().parent.parent
N = 256  # exhaustive sweeps: every (index, size) and (m, n) with sizes up to N
LEAVES = [rfc_leaf_hash(b"proof test leaf %d" % i) for i in range(N)]
ORACLE = Oracle(LEAVES)


def store_for(leaves: list[bytes]) -> dict[tuple[int, int], bytes]:
    """Every node of the tree, keyed by id, as a log's storage would hold it."""
    return {(level, index): h for level, index, h in CompactRange().extend(leaves)}


STORE = store_for(LEAVES)


def prove(plan: Plan, store: dict[tuple[int, int], bytes]) -> list[bytes]:
    """Phase two: one read of the planned ids, then rehash."""
    return plan.rehash([store[i] for i in plan.ids])


def h(hex_string: str) -> bytes:
    return bytes.fromhex(hex_string)


# --- known answers: transparency-dev/merkle proof/verify_test.go, RFC 6962 test leaves ----------

KAT_INCLUSION = [
    (0, 1, []),
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
KAT_CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]
RFC_LEAF_HASHES = [rfc_leaf_hash(d) for d in RFC_LEAVES]
RFC_ORACLE = Oracle(RFC_LEAF_HASHES)
RFC_STORE = store_for(RFC_LEAF_HASHES)


def test_known_answer_roots() -> None:
    for size, want in enumerate(KAT_ROOTS):
        assert prove(root_plan(size), RFC_STORE) == [h(want)]
        assert RFC_ORACLE.root(size) == h(want)


@pytest.mark.parametrize("index,size,want", KAT_INCLUSION)
def test_known_answer_inclusion(index: int, size: int, want: list[str]) -> None:
    got = prove(inclusion_plan(index, size), RFC_STORE)
    assert got == [h(x) for x in want] == RFC_ORACLE.path(index, size)
    verify_inclusion(RFC_LEAF_HASHES[index], index, size, got, h(KAT_ROOTS[size]))
    assert root_from_inclusion(RFC_LEAF_HASHES[index], index, size, got) == h(KAT_ROOTS[size])


@pytest.mark.parametrize("m,n,want", KAT_CONSISTENCY)
def test_known_answer_consistency(m: int, n: int, want: list[str]) -> None:
    got = prove(consistency_plan(m, n), RFC_STORE)
    assert got == [h(x) for x in want] == RFC_ORACLE.proof(m, n)
    verify_consistency(m, n, got, h(KAT_ROOTS[m]), h(KAT_ROOTS[n]))


# --- exhaustive sweeps against the oracle -------------------------------------------------------


def test_every_root_plan() -> None:
    cr = CompactRange()
    for size in range(0, N + 1):
        assert prove(root_plan(size), STORE) == [ORACLE.root(size)] == [cr.root()]
        if size < N:
            cr.append(LEAVES[size])


def test_every_inclusion_proof() -> None:
    for size in range(1, N + 1):
        root = ORACLE.root(size)
        for index in range(size):
            got = prove(inclusion_plan(index, size), STORE)
            assert got == ORACLE.path(index, size), (index, size)
            verify_inclusion(LEAVES[index], index, size, got, root)


def test_every_consistency_proof() -> None:
    for n in range(0, N + 1):
        root_n = ORACLE.root(n)
        assert prove(consistency_plan(0, n), STORE) == []
        verify_consistency(0, n, [], EMPTY_ROOT, root_n)
        for m in range(1, n + 1):
            got = prove(consistency_plan(m, n), STORE)
            assert got == ORACLE.proof(m, n), (m, n)
            verify_consistency(m, n, got, ORACLE.root(m), root_n)


def test_plans_read_only_stored_perfect_subtrees_inside_the_tree() -> None:
    for size in range(1, 70):
        plans = [inclusion_plan(i, size) for i in range(size)]
        plans += [consistency_plan(m, size) for m in range(size + 1)] + [root_plan(size)]
        for plan in plans:
            for level, index in plan.ids:
                assert (index + 1) << level <= size, (plan, size)
            assert len(set(plan.ids)) == len(plan.ids)


# --- named mutations, exhaustively at small sizes -----------------------------------------------

SMALL = 32
OTHER = hashlib.sha256(b"some other hash").digest()


def flip(value: bytes, bit: int) -> bytes:
    b = bytearray(value)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def proof_mutations(p: list[bytes]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for i, e in enumerate(p):
        for bit in (0, 7, 131, 255):
            out[f"proof[{i}] bit {bit} flipped"] = p[:i] + [flip(e, bit)] + p[i + 1:]
        out[f"proof[{i}] replaced"] = p[:i] + [OTHER] + p[i + 1:]
        out[f"proof[{i}] 31 bytes"] = p[:i] + [e[:31]] + p[i + 1:]
        out[f"proof[{i}] 33 bytes"] = p[:i] + [e + b"\x00"] + p[i + 1:]
    if p:
        out["truncated"] = p[:-1]
        out["first dropped"] = p[1:]
        out["empty"] = []
    if len(p) > 1:
        out["reversed"] = p[::-1]
    out["extended"] = p + [OTHER]
    out["prepended"] = [OTHER] + p
    return out


def rejects(call, *args, name: str = "") -> ProofError:
    try:
        call(*args)
    except ProofError as e:
        return e
    pytest.fail(f"{call.__name__} accepted {name or 'a bad proof'}: {args[1:3] if len(args) > 2 else args}")


def test_inclusion_mutations_are_rejected() -> None:
    for size in range(1, SMALL + 1):
        root = ORACLE.root(size)
        for index in range(size):
            p = ORACLE.path(index, size)
            leaf = LEAVES[index]
            for name, bad in proof_mutations(p).items():
                if bad != p:
                    rejects(verify_inclusion, leaf, index, size, bad, root, name=name)
            rejects(verify_inclusion, OTHER, index, size, p, root)  # wrong leaf
            rejects(verify_inclusion, leaf, index, size, p, ORACLE.root(size - 1))  # root of size - 1
            rejects(verify_inclusion, leaf, index, size, p, flip(root, 9))  # root bit flip
            rejects(verify_inclusion, leaf, index + 1, size, p, root)  # index + 1
            if index:
                rejects(verify_inclusion, leaf, index - 1, size, p, root)  # index - 1
                rejects(verify_inclusion, LEAVES[index - 1], index, size, p, root)  # neighbour's leaf
            rejects(verify_inclusion, leaf, index, size + 1, p, ORACLE.root(size + 1))  # size + 1
            rejects(verify_inclusion, leaf, index, size - 1, p, ORACLE.root(size - 1))  # size - 1
            rejects(verify_inclusion, leaf, index, size * 2, p, root)  # size * 2


def test_consistency_mutations_are_rejected() -> None:
    for n in range(1, SMALL + 1):
        root_n = ORACLE.root(n)
        for m in range(1, n + 1):
            p, root_m = ORACLE.proof(m, n), ORACLE.root(m)
            for name, bad in proof_mutations(p).items():
                if bad != p:
                    rejects(verify_consistency, m, n, bad, root_m, root_n, name=name)
            if root_m != root_n:
                rejects(verify_consistency, m, n, p, root_n, root_m)  # swapped roots
            rejects(verify_consistency, m, n, p, flip(root_m, 3), root_n)  # wrong old root
            rejects(verify_consistency, m, n, p, root_m, flip(root_n, 3))  # wrong new root
            rejects(verify_consistency, m + 1, n, p, ORACLE.root(m + 1), root_n)  # old size + 1
            if m > 1 or p:
                rejects(verify_consistency, m - 1, n, p, ORACLE.root(m - 1), root_n)  # old size - 1
            rejects(verify_consistency, m, n + 1, p, root_m, ORACLE.root(n + 1))  # new size + 1
            rejects(verify_consistency, m, n - 1, p, root_m, ORACLE.root(n - 1))  # new size - 1
            if m != n:
                rejects(verify_consistency, n, m, p, root_n, root_m)  # sizes swapped


def test_trivial_consistency_rules() -> None:
    r1, r2 = ORACLE.root(1), ORACLE.root(2)
    verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)
    verify_consistency(0, 5, [], EMPTY_ROOT, ORACLE.root(5))
    verify_consistency(2, 2, [], r2, r2)
    e = rejects(verify_consistency, 2, 2, [], r2, r1)
    assert (e.expected, e.computed) == (r1, r2) and "different roots" in str(e)
    assert "must be empty, got 1" in str(rejects(verify_consistency, 2, 2, [r2], r2, r2))
    assert "must be empty" in str(rejects(verify_consistency, 0, 2, [r2], EMPTY_ROOT, r2))
    e = rejects(verify_consistency, 0, 2, [], r1, r2)  # the empty tree has exactly one root
    assert e.computed == EMPTY_ROOT and e.expected == r1
    assert "old tree size 3 > new tree size 2" in str(rejects(verify_consistency, 3, 2, [], r2, r2))


def test_size_is_pinned_by_the_checkpoint_not_by_the_proof() -> None:
    """RFC 9162 proofs do not encode the tree size: the proof of leaf 0 in size 3 also "verifies" for
    size 4 against the size-3 root, because the last proof element is read as the hash of leaves
    [2, 4).  Callers must take (size, root) together from one signed checkpoint (spec/merkle.md)."""
    p = ORACLE.path(0, 3)
    verify_inclusion(LEAVES[0], 0, 4, p, ORACLE.root(3))
    rejects(verify_inclusion, LEAVES[0], 0, 4, p, ORACLE.root(4))


# --- preconditions are checked before any hashing -----------------------------------------------


class Hashed(Exception):
    pass


LEAF2, ROOT5, PATH2 = LEAVES[2], ORACLE.root(5), ORACLE.path(2, 5)
PRECONDITIONS = [
    (verify_inclusion, (LEAF2, 2, 5, PATH2[:-1], ROOT5), "has 2 hashes, want 3"),
    (verify_inclusion, (LEAF2, 2, 5, PATH2 + [ROOT5], ROOT5), "has 4 hashes, want 3"),
    (verify_inclusion, (LEAF2, 5, 5, PATH2, ROOT5), "leaf index 5 out of range for tree size 5"),
    (verify_inclusion, (LEAF2, -1, 5, PATH2, ROOT5), "leaf index -1 out of range"),
    (verify_inclusion, (LEAF2[:31], 2, 5, PATH2, ROOT5), "leaf hash is not a 32-byte hash"),
    (verify_inclusion, (LEAF2, 2, 5, PATH2, ROOT5 + b"\x00"), r"root is not a 32-byte hash \(got 33 bytes\)"),
    (verify_inclusion, (LEAF2, 2, 5, [PATH2[0], PATH2[1][:16], PATH2[2]], ROOT5),
     r"proof\[1\] is not a 32-byte"),
    (verify_inclusion, (LEAF2, 2, 2**63, PATH2, ROOT5), f"tree size {2**63} out of range"),
    (verify_inclusion, (LEAF2, 2, 5, b"".join(PATH2), ROOT5), "sequence of hashes, not a single string"),
    (verify_inclusion, (LEAF2, 2, 5, 7, ROOT5), "sequence of hashes, got int"),
    (verify_consistency, (3, 5, ORACLE.proof(3, 5)[:-1], ORACLE.root(3), ROOT5), "has 3 hashes, want 4"),
    (verify_consistency, (6, 5, [], ROOT5, ROOT5), "old tree size 6 > new tree size 5"),
    (verify_consistency, (3, 5, [], ORACLE.root(3), ROOT5), "from size 3 to 5 has 0 hashes, want 4"),
    (verify_consistency, (3, 5, ORACLE.proof(3, 5), b"", ROOT5), "old root is not a 32-byte hash"),
    (verify_consistency, (3, 5, ORACLE.proof(3, 5), ROOT5, None), "new root is not a 32-byte hash"),
]


@pytest.mark.parametrize("call,args,message", PRECONDITIONS)
def test_preconditions_before_hashing(monkeypatch: pytest.MonkeyPatch, call, args, message: str) -> None:
    def no_hashing(data: bytes = b""):
        raise Hashed

    monkeypatch.setattr(proof_module, "_sha256", no_hashing)
    with pytest.raises(ProofError, match=message):
        call(*args)
    with pytest.raises(Hashed):  # the patch is live: a well-formed proof does reach the hashing
        verify_inclusion(LEAF2, 2, 5, PATH2, ROOT5)


def test_root_mismatch_carries_both_roots() -> None:
    p = ORACLE.path(3, 9)
    wrong = flip(ORACLE.root(9), 100)
    e = rejects(verify_inclusion, LEAVES[3], 3, 9, p, wrong)
    assert e.expected == wrong and e.computed == ORACLE.root(9)
    assert wrong.hex() in str(e) and ORACLE.root(9).hex() in str(e)
    p = ORACLE.proof(3, 9)
    e = rejects(verify_consistency, 3, 9, p, ORACLE.root(3), wrong)
    assert e.expected == wrong and e.computed == ORACLE.root(9) and "new root" in str(e)
    e = rejects(verify_consistency, 3, 9, p, wrong, ORACLE.root(9))
    assert e.expected == wrong and e.computed == ORACLE.root(3) and "old root" in str(e)


# --- plans: bounds and rehash checks ------------------------------------------------------------


@pytest.mark.parametrize("call,args,message", [
    (inclusion_plan, (0, 0), "leaf index 0 out of range for tree size 0"),
    (inclusion_plan, (7, 7), "leaf index 7 out of range for tree size 7"),
    (inclusion_plan, (-1, 7), "leaf index -1 out of range"),
    (inclusion_plan, (0, 2**63), "tree size 9223372036854775808 out of range"),
    (inclusion_plan, (True, 7), "leaf index must be an int, got bool"),
    (inclusion_plan, (0, 7.0), "tree size must be an int, got float"),
    (consistency_plan, (8, 7), "old tree size 8 > new tree size 7"),
    (consistency_plan, (-1, 7), "old tree size -1 out of range"),
    (consistency_plan, (1, 2**63), "new tree size 9223372036854775808 out of range"),
    (consistency_plan, ("1", 2), "old tree size must be an int, got str"),
    (root_plan, (-1,), "tree size -1 out of range"),
    (root_plan, (None,), "tree size must be an int, got NoneType"),
])
def test_plan_bounds(call, args, message: str) -> None:
    with pytest.raises(ProofError, match=message):
        call(*args)


def test_plan_extremes() -> None:
    top = MAX_TREE_SIZE
    assert len(inclusion_plan(top - 1, top).ids) == 62  # the last leaf: one left subtree per level
    assert len(inclusion_plan(0, top).rehash([OTHER] * len(inclusion_plan(0, top).ids))) == 63
    assert consistency_plan(top, top).ids == [] and consistency_plan(0, top).ids == []
    assert len(root_plan(top).ids) == 63
    assert root_plan(0).ids == [] and root_plan(0).rehash([]) == [EMPTY_ROOT]


def test_rehash_checks_its_input() -> None:
    plan = inclusion_plan(5, 13)
    hashes = [STORE[i] for i in plan.ids]
    assert "needs 5 hashes, got 4" in str(rejects(plan.rehash, hashes[:-1]))
    assert "needs 5 hashes, got 6" in str(rejects(plan.rehash, hashes + [OTHER]))
    bad = hashes[:2] + [hashes[2][:31]] + hashes[3:]
    assert f"hash #2 for node {plan.ids[2]}" in str(rejects(plan.rehash, bad))
    assert "Plan(ids=" in repr(plan)
    with pytest.raises(InvariantError):
        Plan([(0, 1)], (2,))


def test_ephemeral_node_is_folded_from_the_right_edge() -> None:
    """The inclusion proof of leaf 0 in size 7 needs MTH(D[4:7]), which no store holds: the plan reads
    (1, 2) and (0, 6) and rehash folds them."""
    plan = inclusion_plan(0, 7)
    assert plan.ids == [(0, 1), (1, 1), (1, 2), (0, 6)]
    assert prove(plan, STORE) == [LEAVES[1], ORACLE.mth(2, 4), ORACLE.mth(4, 7)]
    assert consistency_plan(3, 7).ids == [(0, 2), (0, 3), (1, 0), (1, 2), (0, 6)]


# --- generated vectors --------------------------------------------------------------------------


@functools.cache
def gen_vectors():
    spec = importlib.util.spec_from_file_location("gen_vectors", ROOT / "scripts" / "gen_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_vectors(name: str) -> dict:
    return json.loads((ROOT / "tests" / "vectors" / name).read_text())


def test_committed_vectors_equal_a_fresh_generation() -> None:
    for name, text in gen_vectors().generate().items():
        assert (ROOT / "tests" / "vectors" / name).read_text() == text, \
            f"tests/vectors/{name} is stale: run scripts/gen_vectors.py"


def vector_store(doc: dict) -> dict[tuple[int, int], bytes]:
    return store_for([rfc_leaf_hash(h(d)) for d in doc["leaves"]])


def test_vector_roots() -> None:
    doc = load_vectors("roots.json")
    store = vector_store(doc)
    assert [h(x) for x in doc["leaves"][:8]] == RFC_LEAVES
    for item in doc["roots"]:
        assert prove(root_plan(item["tree_size"]), store) == [h(item["root"])]
    assert [r["root"] for r in doc["roots"][:9]] == KAT_ROOTS


def test_inclusion_vectors() -> None:
    doc = load_vectors("inclusion.json")
    store = vector_store(doc)
    names = set()
    for p in doc["probes"]:
        args = (h(p["leaf_hash"]), p["leaf_index"], p["tree_size"], [h(x) for x in p["proof"]], h(p["root"]))
        names.add(p["name"].partition(": ")[2])
        if p["valid"]:
            verify_inclusion(*args)
            assert prove(inclusion_plan(p["leaf_index"], p["tree_size"]), store) == args[3]
        else:
            rejects(verify_inclusion, *args)
    assert {"leaf index + 1", "leaf index - 1", "tree size + 1", "tree size - 1", "wrong leaf",
            "truncated proof", "extended with an extra hash", "proof[0] bit 3 flipped"} <= names
    assert sum(p["valid"] for p in doc["probes"]) >= 36


def test_consistency_vectors() -> None:
    doc = load_vectors("consistency.json")
    store = vector_store(doc)
    names = set()
    for p in doc["probes"]:
        args = (p["old_size"], p["new_size"], [h(x) for x in p["proof"]], h(p["old_root"]), h(p["new_root"]))
        names.add(p["name"].partition(": ")[2])
        if p["valid"]:
            verify_consistency(*args)
            assert prove(consistency_plan(p["old_size"], p["new_size"]), store) == args[2]
        else:
            rejects(verify_consistency, *args)
    assert {"old size + 1", "old size - 1", "new size + 1", "new size - 1", "swapped roots",
            "truncated proof", "extended with an extra hash", "empty proof"} <= names
    assert sum(p["valid"] for p in doc["probes"]) >= 45


# --- hypothesis: large sizes --------------------------------------------------------------------

SIZES = st.integers(1, MAX_TREE_SIZE)


def leaves_covered(ids: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return sorted((i << lv, (i + 1) << lv) for lv, i in ids)


def assert_tiles(ranges: list[tuple[int, int]], size: int) -> None:
    pos = 0
    for lo, hi in ranges:
        assert lo == pos, ranges
        pos = hi
    assert pos == size


@settings(deadline=None)
@given(st.data(), SIZES)
def test_inclusion_plan_shape_at_any_size(data: st.DataObject, size: int) -> None:
    index = data.draw(st.one_of(st.integers(0, size - 1), st.sampled_from([0, size - 1])))
    plan = inclusion_plan(index, size)
    assert len(plan.rehash([OTHER] * len(plan.ids))) == rfc_inclusion_length(index, size)
    for level, i in plan.ids:
        assert 0 <= level <= 62 and (i + 1) << level <= size
    # the proof's subtrees and the leaf itself tile [0, size) exactly
    assert_tiles(sorted(leaves_covered(plan.ids) + [(index, index + 1)]), size)


@settings(deadline=None)
@given(st.data(), SIZES)
def test_consistency_plan_shape_at_any_size(data: st.DataObject, n: int) -> None:
    edges = [1, n, max(1, n - 1), 1 << (n.bit_length() - 1)]
    m = data.draw(st.one_of(st.integers(1, n), st.sampled_from(edges)))
    plan = consistency_plan(m, n)
    produced = len(plan.rehash([OTHER] * len(plan.ids)))
    if m == n:
        assert produced == 0 and plan.ids == []
        return
    assert produced == rfc_consistency_length(m, n)
    for level, i in plan.ids:
        assert (i + 1) << level <= n
    # with the old tree itself when the proof omits it (m a power of two), the subtrees tile [0, n)
    extra = [(0, m)] if m & (m - 1) == 0 else []
    assert_tiles(sorted(leaves_covered(plan.ids) + extra), n)


PERIODIC = PeriodicOracle()


def periodic_prove(plan: Plan) -> list[bytes]:
    return plan.rehash([PERIODIC.node(*i) for i in plan.ids])


@settings(max_examples=200, deadline=None)
@given(st.data(), SIZES)
def test_huge_trees_end_to_end(data: st.DataObject, n: int) -> None:
    root_n = PERIODIC.mth(n)
    assert periodic_prove(root_plan(n)) == [root_n]
    index = data.draw(st.integers(0, n - 1))
    leaf = PERIODIC.node(0, index)
    p = periodic_prove(inclusion_plan(index, n))
    verify_inclusion(leaf, index, n, p, root_n)
    if p:
        rejects(verify_inclusion, leaf, index, n, p[:-1], root_n)
    m = data.draw(st.integers(1, n))
    c = periodic_prove(consistency_plan(m, n))
    verify_consistency(m, n, c, PERIODIC.mth(m), root_n)
    if c:
        rejects(verify_consistency, m, n, [flip(c[0], 0)] + c[1:], PERIODIC.mth(m), root_n)


BIG = 3000
BIG_LEAVES = [rfc_leaf_hash(i.to_bytes(2, "big")) for i in range(BIG)]
BIG_ORACLE = Oracle(BIG_LEAVES)
BIG_STORE = store_for(BIG_LEAVES)


@settings(max_examples=150, deadline=None)
@given(st.data(), st.integers(1, BIG))
def test_random_proofs_in_a_few_thousand_leaves(data: st.DataObject, n: int) -> None:
    index = data.draw(st.integers(0, n - 1))
    p = prove(inclusion_plan(index, n), BIG_STORE)
    assert p == BIG_ORACLE.path(index, n)
    verify_inclusion(BIG_LEAVES[index], index, n, p, BIG_ORACLE.root(n))
    m = data.draw(st.integers(1, n))
    c = prove(consistency_plan(m, n), BIG_STORE)
    assert c == BIG_ORACLE.proof(m, n)
    verify_consistency(m, n, c, BIG_ORACLE.root(m), BIG_ORACLE.root(n))


# --- fuzz: verifiers raise ProofError and nothing else ------------------------------------------

ANY_SIZE = st.one_of(st.integers(-3, 70), st.integers(-2**70, 2**70), st.just(MAX_TREE_SIZE),
                     st.booleans(), st.floats(allow_nan=True), st.text(max_size=3), st.none())
HASH32 = st.binary(min_size=32, max_size=32)
ANY_HASH = st.one_of(HASH32, st.binary(max_size=40), st.none(), st.integers(), st.text(max_size=4),
                     st.builds(bytearray, HASH32))
ANY_PROOF = st.one_of(st.lists(ANY_HASH, max_size=70), st.lists(HASH32, max_size=8),
                      st.binary(max_size=64), st.none(), st.integers(), st.text(max_size=3))


@settings(max_examples=400, deadline=None)
@given(ANY_HASH, ANY_SIZE, ANY_SIZE, ANY_PROOF, ANY_HASH)
def test_fuzz_only_proof_errors(leaf, a, b, p, root) -> None:
    for call, args in ((verify_inclusion, (leaf, a, b, p, root)), (root_from_inclusion, (leaf, a, b, p)),
                       (verify_consistency, (a, b, p, leaf, root)), (inclusion_plan, (a, b)),
                       (consistency_plan, (a, b)), (root_plan, (a,))):
        try:
            call(*args)
        except ProofError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.data(), st.integers(1, MAX_TREE_SIZE))
def test_fuzz_well_shaped_random_proofs(data: st.DataObject, size: int) -> None:
    """Right-length proofs of random hashes run the RFC loops to the end and fail on the root."""
    index = data.draw(st.integers(0, size - 1))
    hashes = st.binary(min_size=32, max_size=32)
    p = data.draw(st.lists(hashes, min_size=rfc_inclusion_length(index, size),
                           max_size=rfc_inclusion_length(index, size)))
    leaf, root = data.draw(hashes), data.draw(hashes)
    assume(size > 1 or leaf != root)  # in a one-leaf tree the leaf hash is the root
    e = rejects(verify_inclusion, leaf, index, size, p, root)
    assert e.expected is not None and e.computed is not None
    m = data.draw(st.integers(1, size))
    assume(m < size)
    length = rfc_consistency_length(m, size)
    c = data.draw(st.lists(hashes, min_size=length, max_size=length))
    e = rejects(verify_consistency, m, size, c, data.draw(hashes), data.draw(hashes))
    assert e.expected is not None and e.computed is not None
