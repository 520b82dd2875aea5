#!/usr/bin/env python3
"""Speed of the Merkle core (tlog.hashing, tlog.tree, tlog.proof).

    .venv/bin/python scripts/bench_core.py            # 1,000,000 leaves, 10,000 proofs of each kind
    .venv/bin/python scripts/bench_core.py --quick    # 100,000 leaves, 1,000 proofs (a smoke run)

For the root and compact-range figures ``ratio`` compares with hashlib alone:

    ratio = (time for the same number of SHA-256 calls on 65-byte inputs, measured in this run)
            / (time taken)

so 1.0 would mean the tree code costs nothing beyond the hash calls; the goal is >= 0.5.
Proof figures are rates: plan + one read from an in-memory dict of stored nodes + rehash, and
verification.  Every figure is the best of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import hashlib
import pathlib
import random
import sys
import time
from collections.abc import Callable

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from tlog.hashing import root_from_leaf_hashes  # noqa: E402
from tlog.proof import (consistency_plan, inclusion_plan, root_plan, verify_consistency,  # noqa: E402
                        verify_inclusion)
from tlog.tree import CompactRange  # noqa: E402

__all__ = ["main"]

GOAL = 0.5
BATCH = 1000  # leaves per CompactRange.extend call, like a sequencer batch


def best_of(repeat: int, fn: Callable[[], object]) -> tuple[float, object]:
    """The fastest of ``repeat`` runs of ``fn`` and its result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def hashlib_alone(calls: int) -> None:
    """``calls`` SHA-256 calls on a 65-byte input (0x01 || left || right), nothing else."""
    data = b"\x01" + bytes(64)
    sha = hashlib.sha256
    for _ in range(calls):
        sha(data).digest()


def root_by_compact_range(leaves: list[bytes]) -> bytes:
    cr = CompactRange()
    for i in range(0, len(leaves), BATCH):
        cr.extend(leaves[i:i + BATCH])
    return cr.root()


def append_each(leaves: list[bytes]) -> CompactRange:
    cr = CompactRange()
    append = cr.append
    for h in leaves:
        append(h)
    return cr


def extend_batches(leaves: list[bytes]) -> CompactRange:
    cr = CompactRange()
    for i in range(0, len(leaves), BATCH):
        cr.extend(leaves[i:i + BATCH])
    return cr


class Bench:
    def __init__(self, leaves: int, proofs: int, repeat: int):
        self.n, self.proofs, self.repeat = leaves, proofs, repeat
        self.leaves = [hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(leaves)]
        self.ratios: list[float] = []

    def line(self, name: str, count: int, unit: str, seconds: float, hash_calls: int | None = None) -> None:
        text = f"{name:<48} {count:>9,} {unit:<7} {seconds:7.3f} s  {count / seconds:>12,.0f} {unit}/s"
        if hash_calls is not None:
            base, _ = best_of(self.repeat, lambda: hashlib_alone(hash_calls))
            ratio = base / seconds
            self.ratios.append(ratio)
            text += f"  ratio {ratio:.2f} ({hash_calls:,} SHA-256 calls alone: {base:.3f} s)"
        print(text, flush=True)

    def trees(self) -> None:
        n, pop = self.n, self.n.bit_count()
        t, root = best_of(self.repeat, lambda: root_from_leaf_hashes(self.leaves))
        self.line("root: hashing.root_from_leaf_hashes", n, "leaves", t, n - 1)
        t, root2 = best_of(self.repeat, lambda: root_by_compact_range(self.leaves))
        if root2 != root:
            raise SystemExit("CompactRange and root_from_leaf_hashes disagree")
        self.line(f"root: CompactRange.extend({BATCH}) + root()", n, "leaves", t, n - 1)
        t, _ = best_of(self.repeat, lambda: append_each(self.leaves))
        self.line("CompactRange.append, one leaf per call", n, "leaves", t, n - pop)
        t, _ = best_of(self.repeat, lambda: extend_batches(self.leaves))
        self.line(f"CompactRange.extend, batches of {BATCH}", n, "leaves", t, n - pop)

    def proofs_bench(self) -> None:
        store = {(level, index): h for level, index, h in CompactRange().extend(self.leaves)}
        rng = random.Random(1)
        n, count = self.n, self.proofs
        root = root_plan(n).rehash([store[i] for i in root_plan(n).ids])[0]
        indexes = [rng.randrange(n) for _ in range(count)]

        def prove_inclusion() -> list[list[bytes]]:
            out = []
            for i in indexes:
                plan = inclusion_plan(i, n)
                out.append(plan.rehash([store[x] for x in plan.ids]))
            return out

        t, proofs = best_of(self.repeat, prove_inclusion)
        self.line(f"inclusion proofs generated (size {n:,})", count, "proofs", t)
        leaves = self.leaves
        t, _ = best_of(self.repeat, lambda: [verify_inclusion(leaves[i], i, n, p, root)
                                             for i, p in zip(indexes, proofs)])
        self.line(f"inclusion proofs verified (size {n:,})", count, "proofs", t)
        self.consistency(store, rng)

    def consistency(self, store: dict, rng: random.Random) -> None:
        pairs = sorted((rng.randint(1, self.n), rng.randint(1, self.n)) for _ in range(self.proofs))
        pairs = [(min(a, b), max(a, b)) for a, b in pairs]
        roots = {s: root_plan(s).rehash([store[i] for i in root_plan(s).ids])[0] for p in pairs for s in p}

        def prove() -> list[list[bytes]]:
            out = []
            for m, n in pairs:
                plan = consistency_plan(m, n)
                out.append(plan.rehash([store[x] for x in plan.ids]))
            return out

        t, proofs = best_of(self.repeat, prove)
        self.line(f"consistency proofs generated (sizes <= {self.n:,})", self.proofs, "proofs", t)
        t, _ = best_of(self.repeat, lambda: [verify_consistency(m, n, p, roots[m], roots[n])
                                             for (m, n), p in zip(pairs, proofs)])
        self.line(f"consistency proofs verified (sizes <= {self.n:,})", self.proofs, "proofs", t)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 leaves and 1,000 proofs")
    parser.add_argument("--repeat", type=int, default=None, help="runs per figure (best is kept)")
    args = parser.parse_args(argv)
    leaves, proofs = (100_000, 1_000) if args.quick else (1_000_000, 10_000)
    bench = Bench(leaves, proofs, args.repeat or (3 if args.quick else 5))
    print(f"python {sys.version.split()[0]}, {leaves:,} leaves, {proofs:,} proofs, "
          f"best of {bench.repeat}", flush=True)
    bench.trees()
    bench.proofs_bench()
    worst = min(bench.ratios)
    print(f"lowest ratio {worst:.2f} (goal >= {GOAL}): {'met' if worst >= GOAL else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
