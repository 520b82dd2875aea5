#!/usr/bin/env python3
"""Benchmark `tlog audit --dir`: build a large export without a server, then audit it.

    .venv/bin/python scripts/bench_audit.py                      # 1,000,000 entries, payloads included
    .venv/bin/python scripts/bench_audit.py --entries 100000 --no-payloads --jobs 1

The export is generated directly in the export format (tlog.export.write_export): a genesis, a few
registered writer keys and events signed for real (Ed25519 through libsodium, in a process pool), every
tile rebuilt, a signed checkpoint.  A million entries take a minute or two to build.  Then `tlog audit
--dir` runs as a child process; the script prints its entries/s and its peak RSS (from wait4), which must
not grow with the number of entries (compare --entries 100000 with 1000000).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import struct
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nacl.bindings import crypto_sign, crypto_sign_seed_keypair  # noqa: E402

from tlog.checkpoint import sign_checkpoint  # noqa: E402
from tlog.entry import (PAYLOAD_CONTEXT, SIGNATURE_CONTEXT, Genesis, Leaf, register_event,  # noqa: E402
                        sign_entry)
from tlog.export import PayloadRecord, write_export  # noqa: E402
from tlog.keys import PrivateKey  # noqa: E402
from tlog.note import Signer, vkey_for  # noqa: E402

ORIGIN = "bench.example/audit"
T0 = 1_760_000_000_000
WRITERS = 4
CHUNK = 4096


def _seed(n: int) -> bytes:
    return hashlib.sha256(b"bench-audit-%d" % n).digest()


def _payload(i: int) -> tuple[bytes, bytes]:
    """A small JSON payload and a 16-byte salt for entry ``i`` (deterministic, cheap)."""
    return hashlib.md5(b"%d" % i).digest(), b'{"event":"login","user":"u%d","n":%d}' % (i % 1000, i)


def _sign_chunk(args: tuple[int, int]) -> list[bytes]:
    """Leaves ``start .. start+count-1``: event entries by the writer keys in turn, real signatures."""
    start, count = args
    keys = [crypto_sign_seed_keypair(_seed(w + 1)) for w in range(WRITERS)]
    key_ids = [PrivateKey.from_ed25519_seed(_seed(w + 1)).public_key.key_id for w in range(WRITERS)]
    origin = ORIGIN.encode()
    head = bytes((1, 1, len(origin))) + origin
    out = []
    for i in range(start, start + count):
        w = i % WRITERS
        t = T0 + i  # one entry per millisecond
        salt, payload = _payload(i)
        commitment = hashlib.sha256(PAYLOAD_CONTEXT + bytes((len(salt),)) + salt + payload).digest()
        body = head + key_ids[w] + struct.pack(">Q", t) + commitment
        sig = crypto_sign(SIGNATURE_CONTEXT + body, keys[w][1])[:64]
        out.append(struct.pack(">BQH", 1, t, len(body)) + body + struct.pack(">H", 64) + sig)
    return out


def _operator_leaves() -> list[bytes]:
    operator = PrivateKey.from_ed25519_seed(_seed(0))
    genesis = Genesis(ORIGIN, operator.public_key, T0 - 10)
    leaves = [Leaf(genesis.encode(), sign_entry(genesis, operator), T0 - 10).encode()]
    for w in range(WRITERS):
        key = PrivateKey.from_ed25519_seed(_seed(w + 1)).public_key
        ev = register_event(ORIGIN, T0 - 9 + w, key, f"writer-{w}", T0 - 86_400_000, T0 + 200 * 86_400_000)
        leaves.append(Leaf(ev.encode(), sign_entry(ev, operator), T0 - 9 + w).encode())
    return leaves


def build(out: str, entries: int, payloads: bool, workers: int) -> str:
    """Write the export; returns the log's verifier key."""
    signer = Signer.generate(ORIGIN, seed=_seed(99))
    first = _operator_leaves()
    events = entries - len(first)
    offset = len(first)

    def leaves():
        yield from first
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for chunk in pool.imap(_sign_chunk, [(i, min(CHUNK, events - i)) for i in range(0, events, CHUNK)]):
                yield from chunk

    def record(index: int, leaf: bytes) -> PayloadRecord:
        if index < offset:
            return PayloadRecord(index, "operator")
        salt, payload = _payload(index - offset)
        return PayloadRecord(index, "present", salt, payload)

    cp = write_export(out, ORIGIN, leaves(), lambda c: sign_checkpoint(c, signer),
                      payloads=record if payloads else None, durable=False)
    assert cp.size == entries
    return vkey_for(signer)


def run_audit(out: str, vkey: str, jobs: int) -> tuple[float, int, dict]:
    """Run `tlog audit --dir` as a child; (seconds, peak RSS in bytes, report)."""
    report = os.path.join(out, "audit-report.json")
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "tlog", "audit", "--dir", out, "--log-key", vkey,
                             "--json", report, "--jobs", str(jobs)], cwd=ROOT, stdout=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    summary = proc.stdout.read().decode()
    proc.stdout.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"audit failed ({proc.returncode}):\n{summary}")
    with open(report) as f:
        return seconds, usage.ru_maxrss * 1024, json.load(f)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--dir", help="where to build the export (default: a temporary directory, removed)")
    parser.add_argument("--no-payloads", action="store_true", help="export without payload files")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="tlog audit --jobs")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="signing processes")
    parser.add_argument("--reuse", action="store_true", help="audit an export already in --dir")
    args = parser.parse_args()
    tmp = None
    out = args.dir
    if out is None:
        tmp = tempfile.TemporaryDirectory(prefix="tlog-bench-audit-")
        out = tmp.name
    try:
        if args.reuse:
            vkey = vkey_for(Signer.generate(ORIGIN, seed=_seed(99)))
        else:
            started = time.perf_counter()
            vkey = build(out, args.entries, not args.no_payloads, args.workers)
            print(f"built {args.entries} entries in {time.perf_counter() - started:.1f} s at {out}", flush=True)
        seconds, rss, report = run_audit(out, vkey, args.jobs)
        n = report["entries"]
        print(f"tlog audit --dir: {n} entries ({report['signatures_verified']} signatures, "
              f"{report['payloads']['checked']} payload commitments) in {seconds:.1f} s = {n / seconds:,.0f} "
              f"entries/s; peak RSS {rss / 2**20:.0f} MiB; jobs {args.jobs}; ok={report['ok']}")
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    main()
