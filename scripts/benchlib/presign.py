"""Pre-signed append requests for load tests: register writers on a running log, then sign entries
ahead of time so the load generator (wrk, a C program) only sends bytes.

Used by scripts/bench; usable alone:
    python scripts/benchlib/presign.py --log URL --log-key VKEY --data DIR --writers 64 --count 100000 --out bodies.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tlog.client import LogClient  # noqa: E402
from tlog.entry import EventEntry, payload_commitment, register_event, sign_entry  # noqa: E402
from tlog.keys import KeyType, PrivateKey  # noqa: E402
from tlog.note import encode_base64 as _b64  # noqa: E402

DAY = 86_400_000


async def register_writers(url: str, vkey: str, data: str, n: int, key_type: KeyType) -> list[bytes]:
    """Register n fresh writer keys; returns their PEMs (for the signing processes)."""
    with open(os.path.join(data, "operator.key"), "rb") as f:
        operator = PrivateKey.from_pem(f.read())
    keys = [PrivateKey.generate(key_type) for _ in range(n)]
    async with LogClient(url, log_key=vkey) as client:
        now = time.time_ns() // 1_000_000
        for i, k in enumerate(keys):
            ev = register_event(client.origin, now, k.public_key, f"bench-{key_type.text}-{i}-{now}",
                                now - DAY, now + 30 * DAY)
            await client.submit_operator_entry(ev, operator)
    return [k.to_pem() for k in keys]


def _sign_chunk(args: tuple) -> list[str]:
    origin, pems, start, count, payload_size = args
    keys = [PrivateKey.from_pem(p) for p in pems]
    now = time.time_ns() // 1_000_000
    out = []
    for i in range(start, start + count):
        key = keys[i % len(keys)]
        salt = os.urandom(16)
        payload = json.dumps({"seq": i, "pad": "x" * max(0, payload_size - 20)}).encode()
        entry = EventEntry(origin, key.public_key.key_id, now, payload_commitment(salt, payload))
        out.append(json.dumps({"entry": _b64(entry.encode()), "signature": _b64(sign_entry(entry, key)),
                               "salt": _b64(salt), "payload": _b64(payload)}, separators=(",", ":")))
    return out


def presign(origin: str, pems: list[bytes], count: int, payload_size: int = 64, workers: int = 2) -> list[str]:
    """Sign ``count`` event entries round-robin over the writer keys, on ``workers`` processes."""
    chunk = max(1, count // (workers * 4))
    jobs = [(origin, pems, s, min(chunk, count - s), payload_size) for s in range(0, count, chunk)]
    with ProcessPoolExecutor(workers) as pool:
        return [line for part in pool.map(_sign_chunk, jobs) for line in part]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--log", required=True)
    ap.add_argument("--log-key", required=True)
    ap.add_argument("--data", required=True, help="the log's data directory (for operator.key)")
    ap.add_argument("--writers", type=int, default=64)
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--type", choices=["ed25519", "p256"], default="ed25519")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    key_type = KeyType.ED25519 if args.type == "ed25519" else KeyType.P256
    pems = asyncio.run(register_writers(args.log, args.log_key, args.data, args.writers, key_type))
    origin = args.log_key.split("+")[0]
    t0 = time.perf_counter()
    lines = presign(origin, pems, args.count)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"signed {len(lines)} entries in {time.perf_counter() - t0:.1f} s -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
