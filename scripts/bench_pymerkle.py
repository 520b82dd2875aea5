"""Side by side with the Python peer: pymerkle 7 (SqliteTree, its durable backend) and tlog (the
sequencer and SQLite storage of ``tlog serve``), on the same machine in the same run, the same
operations at N entries (default 1,000,000):

* durable appends one at a time (each acknowledged only after its own commit): pymerkle
  ``append_entry``; tlog ``Sequencer.submit`` from one writer (a batch of one);
* bulk appends: pymerkle ``append_entries`` (one transaction); tlog's group commit with many writers
  (the rate at which scripts/bench_scale.py builds the log, signing included);
* proofs from durable storage after a fresh open: the first inclusion proof, then random inclusion
  and consistency proofs in the tree of N entries; each tlog proof checked against the signed root.

Prints each figure and the ratio (how many times faster tlog is).  ``--quick`` uses 20,000 entries.
pymerkle is installed by scripts/bench (``pip install pymerkle==7.0.0``).

    .venv/bin/python scripts/bench_pymerkle.py [--entries N] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import bench_scale  # noqa: E402

from tlog.keys import PrivateKey  # noqa: E402
from tlog.server.sequencer import Pending  # noqa: E402
from tlog.server.state import LogState  # noqa: E402


def row(name: str, tlog: float, peer: float, unit: str, higher_is_better: bool) -> None:
    ratio = tlog / peer if higher_is_better else peer / tlog
    print(f"{name:<50} {tlog:>12,.2f} {peer:>12,.2f} {unit:<10} {ratio:>8,.1f}x", flush=True)


# -- pymerkle --------------------------------------------------------------------------------------

def pymerkle_figures(work: str, entries: int, proofs: int, single: int) -> dict[str, float]:
    from pymerkle import SqliteTree

    db = os.path.join(work, "pymerkle.db")
    data = [os.urandom(200) for _ in range(1000)]
    out: dict[str, float] = {}
    tree = SqliteTree(db)
    t = time.perf_counter()
    tree.append_entries(data[i % 1000] + i.to_bytes(8, "big") for i in range(entries))
    out["bulk"] = entries / (time.perf_counter() - t)
    t = time.perf_counter()
    for i in range(single):
        tree.append_entry(b"single %d" % i)
    out["single"] = single / (time.perf_counter() - t)
    size = tree.get_size()
    tree.close()
    tree = SqliteTree(db)  # a fresh open: nothing cached, as after a restart
    rng = random.Random(1)
    t = time.perf_counter()
    tree.prove_inclusion(rng.randrange(1, size + 1), size)
    out["first"] = (time.perf_counter() - t) * 1000
    t = time.perf_counter()
    for _ in range(proofs):
        tree.prove_inclusion(rng.randrange(1, size + 1), size)
    out["inclusion"] = (time.perf_counter() - t) * 1000 / proofs
    t = time.perf_counter()
    for _ in range(proofs):
        tree.prove_consistency(rng.randrange(1, size), size)
    out["consistency"] = (time.perf_counter() - t) * 1000 / proofs
    tree.close()
    return out


# -- tlog ------------------------------------------------------------------------------------------

async def tlog_figures(data: str, proofs: int, single: int) -> dict[str, float]:
    out: dict[str, float] = {}
    state = await LogState.open(data)
    try:
        size = state.head.size
        rng = random.Random(1)
        t = time.perf_counter()
        first = await state.inclusion_proof(rng.randrange(size), size)
        out["first"] = (time.perf_counter() - t) * 1000
        assert first
        incl, cons, _ = await bench_scale.time_proofs(state, proofs, proofs)  # each proof checked
        out["inclusion"], out["consistency"] = 1000 / incl, 1000 / cons
        # One writer, one entry at a time: each append waits for its own durable commit.
        pems = await bench_scale.register_writers(state, data, 1)
        key = PrivateKey.from_pem(pems[0])
        t = time.perf_counter()
        for i in range(single):
            body, sig, ident, key_id, salt, payload = bench_scale.signed_event(
                state.config.origin, key, i, time.time_ns() // 1_000_000)
            await state.sequencer.submit(Pending(body, sig, ident, key_id=key_id, salt=salt, payload=payload))
        out["single"] = single / (time.perf_counter() - t)
    finally:
        await state.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--proofs", type=int, default=300, help="random proofs of each kind")
    ap.add_argument("--single", type=int, default=300, help="one-at-a-time durable appends")
    ap.add_argument("--quick", action="store_true", help="20,000 entries (checks the machinery)")
    args = ap.parse_args()
    if args.quick:
        args.entries, args.proofs, args.single = 20_000, 100, 50
    try:
        import pymerkle  # noqa: F401
    except ImportError:
        sys.exit("bench_pymerkle: pymerkle is needed: .venv/bin/pip install pymerkle==7.0.0 (scripts/bench does)")
    res = compare(args.entries, args.proofs, args.single)
    print(f"\n{'at ' + format(args.entries, ',') + ' entries':<50} {'tlog':>12} {'pymerkle':>12} {'unit':<10} "
          f"{'tlog is':>9}")
    for name, key, unit, higher in ROWS:
        row(name, res["tlog"][key], res["pymerkle"][key], unit, higher)


#: (label, key, unit, higher is better)
ROWS = [("durable appends, one at a time", "single", "appends/s", True),
        ("bulk appends (not the same work: see docstring)", "bulk", "appends/s", True),
        ("first inclusion proof after opening", "first", "ms", False),
        ("inclusion proof from durable storage", "inclusion", "ms/proof", False),
        ("consistency proof from durable storage", "consistency", "ms/proof", False)]


def compare(entries: int, proofs: int, single: int) -> dict:
    """Both sides' figures: ``{"tlog": {...}, "pymerkle": {...}}`` keyed as in ROWS."""
    import pymerkle

    with tempfile.TemporaryDirectory(prefix="tlog-peer-") as work:
        data = os.path.join(work, "log")
        subprocess.run([sys.executable, "-m", "tlog", "init", "--data", data, "--origin", "peer.example/log"],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        print(f"building a tlog log of {entries:,} entries (sequencer + SQLite, signed entries) ...",
              file=sys.stderr, flush=True)
        t = time.perf_counter()
        asyncio.run(bench_scale.build(data, entries, [], 16, quiet=True))
        tlog_bulk = entries / (time.perf_counter() - t)
        print(f"building a pymerkle {pymerkle.__version__} SqliteTree of {entries:,} entries ...",
              file=sys.stderr, flush=True)
        peer = pymerkle_figures(work, entries, proofs, single)
        ours = asyncio.run(tlog_figures(data, proofs, single))
    ours["bulk"] = tlog_bulk
    return {"tlog": ours, "pymerkle": peer}


if __name__ == "__main__":
    main()
