#!/usr/bin/env python3
"""Generate the Merkle proof test vectors in tests/vectors/ from the RFC 6962 oracle (tests/oracle.py).

    .venv/bin/python scripts/gen_vectors.py          # rewrite tests/vectors/*.json
    .venv/bin/python scripts/gen_vectors.py --check  # exit 1 if the committed files differ

Deterministic: the same files on every run.  The tree's first eight leaves are the RFC 6962 /
transparency-dev test leaves; the rest are ``b"tlog vector leaf %d"``.  Each file lists *probes*:
an honest proof (``"valid": true``) followed by its named mutations (``"valid": false``), each of
which a verifier must reject.  The vectors are produced by the oracle alone, never by ``tlog``, so
they test the library rather than restate it.
"""

from __future__ import annotations

import json
import pathlib
import sys
from collections.abc import Iterator

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.oracle import Oracle, rfc_leaf_hash  # noqa: E402

__all__ = ["VECTOR_DIR", "LEAF_COUNT", "leaf_data", "generate", "main"]

VECTOR_DIR = ROOT / "tests" / "vectors"
LEAF_COUNT = 21  # sizes 0..20 appear in vectors; one spare leaf makes "size + 1" dishonest, not undefined

RFC_LEAVES = [b"", b"\x00", b"\x10", b"\x20\x21", b"\x30\x31", b"\x40\x41\x42\x43",
              b"\x50\x51\x52\x53\x54\x55\x56\x57",
              b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f"]

WRONG_LEAF = rfc_leaf_hash(b"not a leaf of this tree")
BIG_SIZES = (13, 16, 17, 20)


def leaf_data(i: int) -> bytes:
    """The data of leaf i of the vector tree."""
    return RFC_LEAVES[i] if i < len(RFC_LEAVES) else b"tlog vector leaf %d" % i


def _flip(h: bytes, bit: int) -> bytes:
    b = bytearray(h)
    b[bit // 8 % len(b)] ^= 1 << (bit % 8)
    return bytes(b)


def _proof_mutations(proof: list[bytes], extra: bytes) -> Iterator[tuple[str, list[bytes]]]:
    for i, h in enumerate(proof):
        yield f"proof[{i}] bit {3 + 5 * i} flipped", proof[:i] + [_flip(h, 3 + 5 * i)] + proof[i + 1:]
    if proof:
        yield "truncated proof", proof[:-1]
        yield "first element 31 bytes", [proof[0][:31]] + proof[1:]
        yield "first element 33 bytes", [proof[0] + b"\x00"] + proof[1:]
    if len(proof) > 1 and proof[0] != proof[1]:
        yield "first two elements swapped", [proof[1], proof[0]] + proof[2:]
    yield "extended with an extra hash", proof + [extra]
    yield "prepended an extra hash", [extra] + proof


class _Gen:
    def __init__(self) -> None:
        self.oracle = Oracle([rfc_leaf_hash(leaf_data(i)) for i in range(LEAF_COUNT)])

    def root(self, n: int) -> bytes:
        return self.oracle.root(n)

    def honest_inclusion(self, p: dict) -> bool:
        i, n = p["leaf_index"], p["tree_size"]
        if not 0 <= i < n <= LEAF_COUNT:
            return False
        return (p["leaf_hash"] == self.oracle.leaves[i] and p["root"] == self.root(n)
                and p["proof"] == self.oracle.path(i, n))

    def honest_consistency(self, p: dict) -> bool:
        m, n = p["old_size"], p["new_size"]
        if not 0 <= m <= n <= LEAF_COUNT or p["old_root"] != self.root(m):
            return False
        if m == 0:  # every tree extends the empty tree; its new root is not constrained
            return p["proof"] == []
        return p["new_root"] == self.root(n) and p["proof"] == self.oracle.proof(m, n)

    def inclusion(self, i: int, n: int) -> list[dict]:
        good = {"leaf_index": i, "tree_size": n, "leaf_hash": self.oracle.leaves[i],
                "root": self.root(n), "proof": self.oracle.path(i, n)}
        # A size mutation brings the genuine root of that size: (size, root) travel together in a
        # checkpoint, and a proof alone does not pin the size (see spec/merkle.md).
        bad = [("leaf index + 1", {"leaf_index": i + 1}), ("wrong leaf", {"leaf_hash": WRONG_LEAF}),
               ("tree size + 1", {"tree_size": n + 1, "root": self.root(n + 1)}),
               ("tree size - 1", {"tree_size": n - 1, "root": self.root(n - 1)}),
               ("root of tree size + 1", {"root": self.root(n + 1)})]
        if i > 0:
            bad.append(("leaf index - 1", {"leaf_index": i - 1}))
        if good["proof"]:
            bad.append(("empty proof", {"proof": []}))
        bad += [(name, {"proof": proof}) for name, proof in _proof_mutations(good["proof"], good["root"])]
        return self._probes(good, bad, self.honest_inclusion, f"inclusion of leaf {i} in size {n}")

    def consistency(self, m: int, n: int) -> list[dict]:
        proof = self.oracle.proof(m, n) if m else []
        good = {"old_size": m, "new_size": n, "old_root": self.root(m), "new_root": self.root(n),
                "proof": proof}
        bad = [("wrong old root", {"old_root": self.root(m + 1)}),
               ("old size + 1", {"old_size": m + 1, "old_root": self.root(m + 1)})]
        if m > 0:  # from the empty tree only the old root and the proof's emptiness matter
            bad += [("old size - 1", {"old_size": m - 1, "old_root": self.root(m - 1)}),
                    ("new size + 1", {"new_size": n + 1, "new_root": self.root(n + 1)}),
                    ("new size - 1", {"new_size": n - 1, "new_root": self.root(n - 1)}),
                    ("wrong new root", {"new_root": self.root(n + 1)})]
        if good["old_root"] != good["new_root"] and m > 0:
            bad.append(("swapped roots", {"old_root": good["new_root"], "new_root": good["old_root"]}))
        if proof:
            bad.append(("empty proof", {"proof": []}))
        bad += [(name, {"proof": p}) for name, p in _proof_mutations(proof, good["new_root"])]
        return self._probes(good, bad, self.honest_consistency, f"consistency from size {m} to {n}")

    @staticmethod
    def _probes(good: dict, bad: list[tuple[str, dict]], honest, title: str) -> list[dict]:
        if not honest(good):
            raise AssertionError(f"oracle disagrees with itself on {title}")
        probes = [{"name": f"{title}", "valid": True, **good}]
        for name, change in bad:
            probe = {**good, **change}
            if honest(probe):  # e.g. "old size - 1" of (1, 1) is the honest (0, 1): not a mutation
                continue
            probes.append({"name": f"{title}: {name}", "valid": False, **probe})
        return probes


def _hexify(value: object) -> object:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list):
        return [_hexify(v) for v in value]
    if isinstance(value, dict):
        return {k: _hexify(v) for k, v in value.items()}
    return value


def _dump(doc: dict) -> str:
    """JSON with one probe (or root) per line: small, and diffs stay readable."""
    doc = _hexify(doc)
    lines = []
    for key, value in doc.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            items = ",\n".join("  " + json.dumps(v, separators=(",", ":")) for v in value)
            lines.append(f" {json.dumps(key)}: [\n{items}\n ]")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _inclusion_pairs() -> Iterator[tuple[int, int]]:
    for n in range(1, 9):
        yield from ((i, n) for i in range(n))
    for n in BIG_SIZES:
        yield from ((i, n) for i in sorted({0, n // 2, n - 1}))


def _consistency_pairs() -> Iterator[tuple[int, int]]:
    for n in range(0, 9):
        yield from ((m, n) for m in range(0, n + 1))
    for n in BIG_SIZES:
        yield from ((m, n) for m in sorted({1, 7, 8, n - 1}))


def generate() -> dict[str, str]:
    """File name -> exact file text, for every vector file."""
    g = _Gen()
    about = ("RFC 6962 tree of the listed leaves (leaf hash = SHA-256(0x00 || data)); every probe "
             "with valid=false must be rejected. Generated by scripts/gen_vectors.py from tests/oracle.py.")
    leaves = [leaf_data(i) for i in range(LEAF_COUNT)]
    roots = {"description": about, "leaves": leaves,
             "roots": [{"tree_size": n, "root": g.root(n)} for n in range(LEAF_COUNT + 1)]}
    inclusion = {"description": about, "leaves": leaves,
                 "probes": [p for i, n in _inclusion_pairs() for p in g.inclusion(i, n)]}
    consistency = {"description": about, "leaves": leaves,
                   "probes": [p for m, n in _consistency_pairs() for p in g.consistency(m, n)]}
    return {"roots.json": _dump(roots), "inclusion.json": _dump(inclusion),
            "consistency.json": _dump(consistency)}


def main(argv: list[str]) -> int:
    files = generate()
    if argv[1:] == ["--check"]:
        stale = [name for name, text in files.items()
                 if not (VECTOR_DIR / name).exists() or (VECTOR_DIR / name).read_text() != text]
        print("stale: " + ", ".join(stale) if stale else "vectors up to date")
        return 1 if stale else 0
    if argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    VECTOR_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (VECTOR_DIR / name).write_text(text)
        print(f"wrote {VECTOR_DIR / name} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
