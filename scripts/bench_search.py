"""Search latency on a large log: builds a database of N leaves (default 10,000,000) with the real
schema and times the queries behind GET /v1/entries and GET /v1/keys/<key> through the real backend.

    .venv/bin/python scripts/bench_search.py [--entries N] [--keys K] [--db PATH]

The leaves are synthetic (the queries never decode them), K keys write round-robin, the integration
time advances 1 ms every 10 entries.  Building 10M rows takes a few minutes and ~4 GB of disk; an
existing database at --db is reused.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tlog.server import sqlite as backend  # noqa: E402


def build(path: str, n: int, keys: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    conn.executescript(backend._schema())
    conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (backend.SCHEMA_VERSION,))
    conn.execute("INSERT INTO head VALUES (1, ?, ?, 0, ?)", (n, bytes(32), b"note"))
    key_ids = [bytes([k]) * 32 for k in range(keys)]
    leaf = os.urandom(140)
    step = 200_000
    for start in range(0, n, step):
        rows = [(i, leaf, i, -i, key_ids[i % keys] if i else None, 1_700_000_000_000 + i // 10)
                for i in range(start, min(n, start + step))]
        conn.executemany("INSERT INTO leaves (idx, leaf, ident, lhash, key_id, integrated_ms) VALUES (?,?,?,?,?,?)",
                         rows)
        conn.executemany("INSERT INTO payloads (idx, salt, payload) VALUES (?,?,?)",
                         [(r[0], b"s" * 16, b"p") for r in rows if r[0] % 2])
        conn.commit()
        print(f"\r{min(n, start + step):,} leaves", end="", file=sys.stderr)
    print(file=sys.stderr)
    upto = backend.indexed_size(n)  # the lookup tables, as the sequencer's chunks would have filled them
    for sql in (backend.SQL_INDEX_LHASH, backend.SQL_INDEX_KEY):
        conn.execute(sql, (0, upto))
    conn.commit()
    conn.close()


async def bench(path: str, n: int, keys: int, rounds: int) -> None:
    store = await backend.open_storage(path)
    try:
        mid = 1_700_000_000_000 + n // 20
        cases = {
            "first page, whole log (limit 100)": lambda: store.search_leaves(None, 0, n, 101),
            "page deep in the log (after=n/2)": lambda: store.search_leaves(None, n // 2 + 1, n, 101),
            "one key, first page": lambda: store.search_leaves(bytes([1]) * 32, 0, n, 101),
            "one key, page after n/2": lambda: store.search_leaves(bytes([1]) * 32, n // 2, n, 101),
            "time bound -> index (since)": lambda: store.first_index_at(mid, n),
            "one key in a time window": lambda: _window(store, mid, mid + 1000, n),
            "retention: payloads below cutoff": lambda: store.payload_indices(n // 2, 256),
            "key usage (count of 1/K of the log)": lambda: store.key_usage(bytes([1]) * 32, n),
        }
        print(f"{n:,} leaves, {keys} keys; median of {rounds} runs")
        for name, fn in cases.items():
            times = []
            for _ in range(rounds):
                start = time.perf_counter()
                await fn()
                times.append((time.perf_counter() - start) * 1000)
            print(f"  {name:<40} {statistics.median(times):9.3f} ms")
    finally:
        await store.close()


async def _window(store, since: int, until: int, n: int):
    lo = await store.first_index_at(since, n)
    hi = await store.first_index_at(until, n)
    return await store.search_leaves(bytes([1]) * 32, lo, hi, 101, since, until)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=10_000_000)
    ap.add_argument("--keys", type=int, default=50)
    ap.add_argument("--db", default="/tmp/tlog-bench-search.db")
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    if not os.path.exists(args.db):
        start = time.perf_counter()
        build(args.db, args.entries, args.keys)
        print(f"built {args.db} in {time.perf_counter() - start:.0f} s ({os.path.getsize(args.db) / 1e9:.1f} GB)")
    asyncio.run(bench(args.db, args.entries, args.keys, args.rounds))


if __name__ == "__main__":
    main()
