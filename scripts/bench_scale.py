"""Scale: build a log of N entries (default 10,000,000) through the real sequencer and SQLite storage,
and print, as it grows, the append rate, the proof rates from durable storage and the resident memory,
then the bytes on disk per entry.  Optionally serve the finished log and measure reads over HTTP.

    .venv/bin/python scripts/bench_scale.py [--entries N] [--data DIR] [--http]

The bulk path skips only HTTP and the handler's signature check: entries are real Ed25519-signed event
entries (made by a signing process running beside the sequencer, 16 registered writer keys), handed to
``Sequencer.enqueue`` — the same sequencer, group commit, tiles, checkpoints and SQLite storage as
``tlog serve`` — and the log it leaves passes ``tlog fsck`` and ``tlog audit``.  At each size in
``--marks`` (100k, 1M, 10M by default) the feed pauses and the script times random inclusion and
consistency proofs through ``LogState`` (tile reads from the database, as a server makes them).

``--http``: after the build, ``tlog serve --workers 2`` on the log, and wrk (as in scripts/bench) asks for
random inclusion proofs and level-0 tiles; prints requests/s and the server's resident memory; then the
same on a log of the first mark's size (built beside it) and the ratio of the two proof rates; then the
append and in-process proof speeds of the big log against small ones, measured in alternating rounds
(``interleaved_appends``, ``interleaved_proofs``): this VM's speed drifts by up to 30 % within an hour,
so the build's windows, minutes apart, cannot settle "within 20 %" — the rounds put the same minutes
on both logs.  The small log for appends starts below the first mark by half of what the rounds add,
so that they are centred on it.
Building 10,000,000 entries takes about 10 minutes on the 2-core development machine (the whole
``--http`` run about 14) and 5.7 GB of disk.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tlog.checkpoint import Checkpoint  # noqa: E402
from tlog.entry import EventEntry, Leaf, payload_commitment, register_event, sign_entry  # noqa: E402
from tlog.hashing import leaf_hash  # noqa: E402
from tlog.keys import KeyType, PrivateKey  # noqa: E402
from tlog.note import parse_note  # noqa: E402
from tlog.proof import verify_consistency, verify_inclusion  # noqa: E402
from tlog.server.sequencer import Pending  # noqa: E402
from tlog.server.state import LogState  # noqa: E402
from tlog.server.treereader import TreeReader  # noqa: E402

DAY = 86_400_000
CHUNK = 2000


def rss_mb(pid: int | str = "self") -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out.get("VmRSS", 0.0), out.get("VmHWM", 0.0)


def signed_event(origin: str, key: PrivateKey, i: int, now: int) -> tuple:
    """A signed event entry as (body, signature, identity, key id, salt, payload)."""
    salt, payload = os.urandom(16), b"event %d" % i
    entry = EventEntry(origin, key.public_key.key_id, now, payload_commitment(salt, payload))
    body, sig = entry.encode(), sign_entry(entry, key)
    return body, sig, Leaf(body, sig, 0).identity(), key.public_key.key_id, salt, payload


def signer(origin: str, pems: list[bytes], count: int, queue: mp.Queue) -> None:
    """The signing process: chunks of (body, signature, identity, key id, salt, payload)."""
    keys = [PrivateKey.from_pem(p) for p in pems]
    sent = 0
    while sent < count:
        now = time.time_ns() // 1_000_000
        chunk = [signed_event(origin, keys[i % len(keys)], i, now) for i in range(sent, min(count, sent + CHUNK))]
        queue.put(chunk)
        sent += len(chunk)
    queue.put(None)


async def register_writers(state: LogState, data: str, n: int) -> list[bytes]:
    with open(os.path.join(data, "operator.key"), "rb") as f:
        operator = PrivateKey.from_pem(f.read())
    keys = [PrivateKey.generate(KeyType.ED25519) for _ in range(n)]
    now = time.time_ns() // 1_000_000
    for i, k in enumerate(keys):
        ev = register_event(state.config.origin, now, k.public_key, f"scale-{now}-{i}", now - DAY, now + 300 * DAY)
        await state.append_operator(ev.encode(), sign_entry(ev, operator))
    return [k.to_pem() for k in keys]


def warm_path_cache(db: str) -> None:
    """Read the path cache (tlog/server/pathcache.py) into the page cache, as a server's read-ahead
    does when it opens the log, and wait for it: the build has run for minutes and this VM's DAMON
    reclaim pages out file pages nobody touched for about a minute, so without this the proofs at a
    mark would time the virtio disk."""
    from tlog.server.pathcache import cache_path

    try:
        fd = os.open(cache_path(db), os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        buf = bytearray(1 << 20)
        offset = 0
        while n := os.preadv(fd, [buf], offset):
            offset += n
    finally:
        os.close(fd)


def starved_reader(state: LogState) -> TreeReader:
    """A reader of ``state``'s log that keeps only 16 tiles and 16 paths, so that nearly every proof
    reads its level-0 path from storage (the path cache) whatever the size of the log."""
    return TreeReader(state.storage.read_tile_trees, overlay=state.sequencer.current_tiles, cache_tiles=16,
                      read_path=state.storage.read_tile_path, cache_paths=16)


def turns(r: int) -> tuple[str, str]:
    """Which log goes first in round ``r`` of an interleaved comparison: each in turn."""
    return ("big", "small") if r % 2 == 0 else ("small", "big")


async def time_proofs(state: LogState, n_incl: int, n_cons: int) -> tuple[float, float, float]:
    """Random inclusion and consistency proofs through LogState, each verified: (inclusion/s,
    consistency/s, inclusion/s with a reader that keeps only 16 tiles and 16 paths, so that nearly every
    proof reads its level-0 path from storage (the path cache) whatever the size of the log — the
    storage path alone)."""
    head = state.head
    size, root = head.size, head.root
    warm_path_cache(state.storage.path)
    rng = random.Random(size)
    for i in [rng.randrange(size) for _ in range(n_incl)]:  # untimed: the reader's first tile reads
        await state.inclusion_proof(i, size)  # (153 level-1 tiles at 10M, 2 at 100k) are not the rate
    indices = [rng.randrange(size) for _ in range(n_incl)]
    t = time.perf_counter()
    proofs = [await state.inclusion_proof(i, size) for i in indices]
    incl = n_incl / (time.perf_counter() - t)
    for i, p in list(zip(indices, proofs))[:50]:
        verify_inclusion(leaf_hash(await state.leaf(i)), i, size, p, root)
    firsts = [rng.randrange(1, size) for _ in range(n_cons)]
    t = time.perf_counter()
    for f in firsts:
        await state.consistency_proof(f, size)
    cons_rate = n_cons / (time.perf_counter() - t)
    conn = sqlite3.connect(f"file:{state.storage.path}?mode=ro", uri=True)
    older = conn.execute("SELECT note FROM checkpoints WHERE size > 0 AND size < ? ORDER BY random() LIMIT 20",
                         (size,)).fetchall()
    conn.close()
    for (note,) in older:  # proofs from checkpoints the log signed earlier, checked against their roots
        cp = Checkpoint.parse(parse_note(bytes(note))[0])
        verify_consistency(cp.size, size, await state.consistency_proof(cp.size, size), cp.root, root)
    warm, state.reader = state.reader, starved_reader(state)
    try:
        indices = [rng.randrange(size) for _ in range(n_incl)]
        t = time.perf_counter()
        for i in indices:
            await state.inclusion_proof(i, size)
        cold = n_incl / (time.perf_counter() - t)
    finally:
        state.reader = warm
    return incl, cons_rate, cold


def disk_bytes(db: str) -> tuple[int, int]:
    """(bytes of the whole database, bytes of the payloads table), from SQLite's dbstat."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall()
    conn.close()
    return sum(b for _, b in rows), sum(b for n, b in rows if n == "payloads")


def disk_report(db: str, size: int) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = conn.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall()
    conn.close()
    total = sum(b for _, b in rows)
    payload = sum(b for n, b in rows if n == "payloads")
    out = [f"  {name:<28} {b / size:8.1f} bytes/entry  ({b / 1e6:,.0f} MB)" for name, b in rows if b > 1e6]
    out.append(f"  total {total / size:.1f} bytes/entry; without the payloads table "
               f"{(total - payload) / size:.1f} bytes/entry ({os.path.getsize(db) / 1e9:.2f} GB file)")
    return out


async def build(data: str, entries: int, marks: list[int], writers: int, quiet: bool = False) -> dict:
    """Grow the log in ``data`` to ``entries``; returns ``{"marks": [(size, appends/s, inclusion/s,
    consistency/s, RSS MB, peak MB)], "windows": [(size, appends/s, RSS MB)], "seconds": s}``."""
    figures: dict = {"marks": [], "windows": []}
    state = await LogState.open(data)
    try:
        pems = await register_writers(state, data, writers)
        origin = state.config.origin
        todo = entries - state.head.size
        queue: mp.Queue = mp.get_context("fork").Queue(maxsize=8)
        proc = mp.get_context("fork").Process(target=signer, args=(origin, pems, todo, queue), daemon=True)
        proc.start()
        loop = asyncio.get_running_loop()
        inflight: list[asyncio.Future] = []
        window_start, window_size = time.perf_counter(), state.head.size
        marks = sorted(m for m in marks if m > state.head.size)
        queued = state.head.size
        started = time.perf_counter()
        say = (lambda *a, **k: None) if quiet else print
        say(f"{'size':>12} {'appends/s':>10} {'incl/s':>8} {'cons/s':>8} {'RSS MB':>7} {'peak MB':>7} "
            f"{'cold incl/s':>8}", flush=True)
        while True:
            chunk = await loop.run_in_executor(None, queue.get)
            if chunk is None:
                break
            queued += len(chunk)
            for body, sig, ident, key_id, salt, payload in chunk:
                inflight.append(state.sequencer.enqueue(Pending(body, sig, ident, key_id=key_id, salt=salt,
                                                                payload=payload)))
            if len(inflight) >= 16_000:
                await asyncio.gather(*inflight[:8000])
                del inflight[:8000]
            size = state.head.size
            if marks and queued >= marks[0]:
                await asyncio.gather(*inflight)
                inflight.clear()
                size = state.head.size
                rate = (size - window_size) / (time.perf_counter() - window_start)
                incl, cons, cold = await time_proofs(state, 5000, 2000)
                rss, hwm = rss_mb()
                figures["marks"].append((size, rate, incl, cons, rss, hwm, cold))
                say(f"{size:>12,} {rate:>10,.0f} {incl:>8,.0f} {cons:>8,.0f} {rss:>7.0f} {hwm:>7.0f} {cold:>8,.0f}  "
                      f"(mark; {time.perf_counter() - started:,.0f} s so far)", flush=True)
                marks.pop(0)
                window_start, window_size = time.perf_counter(), state.head.size
            elif size - window_size >= max(100_000, entries // 50):
                rate = (size - window_size) / (time.perf_counter() - window_start)
                rss, hwm = rss_mb()
                figures["windows"].append((size, rate, rss))
                say(f"{size:>12,} {rate:>10,.0f} {'':>8} {'':>8} {rss:>7.0f} {hwm:>7.0f}", flush=True)
                window_start, window_size = time.perf_counter(), size
        await asyncio.gather(*inflight)
        proc.join()
        figures["seconds"] = time.perf_counter() - started
        say(f"built {state.head.size:,} entries in {figures['seconds']:,.0f} s", flush=True)
    finally:
        await state.close()
    return figures


def _build_child(conn, data: str, entries: int, marks: list[int], writers: int) -> None:
    try:
        conn.send(("ok", asyncio.run(build(data, entries, marks, writers))))
    except BaseException as exc:
        conn.send(("failed", repr(exc)))
        raise
    finally:
        conn.close()


def build_in_fresh_process(data: str, entries: int, marks: list[int], writers: int) -> dict:
    """:func:`build` in a new (spawned) process, so that its resident-memory figures are the build's
    own: ``scripts/bench`` runs this stage after others in one process, whose peak (the pre-signed
    requests, pymerkle's in-memory tree) the build's ``VmHWM`` would otherwise report."""
    ctx = mp.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_build_child, args=(send, data, entries, marks, writers))
    proc.start()
    send.close()
    try:
        status, value = receive.recv()
    except EOFError:
        status, value = "died", "no figures"
    proc.join()
    if status == "died":
        raise RuntimeError(f"the build process died (exit status {proc.exitcode})")
    if status != "ok":
        raise RuntimeError(f"the build failed: {value}")
    return value


def presigned(origin: str, pems: list[bytes], count: int) -> list[tuple]:
    """``count`` signed events for ``origin`` from a signing process (the same entries as the build's)."""
    queue: mp.Queue = mp.get_context("fork").Queue(maxsize=8)
    proc = mp.get_context("fork").Process(target=signer, args=(origin, pems, count, queue), daemon=True)
    proc.start()
    out: list[tuple] = []
    while (chunk := queue.get()) is not None:
        out.extend(chunk)
    proc.join()
    return out


async def interleaved_appends(big: str, small: str, rounds: int, per_round: int) -> dict:
    """Append speed of two logs measured in alternating rounds, so that a drift of the machine's speed
    (this VM's moves by up to 30 % within an hour, and a 10,000,000-entry build takes ten minutes) falls
    on both alike: ``rounds`` rounds of ``per_round`` pre-signed entries to each log, the log that goes
    first alternating, each round ``Sequencer.enqueue`` of all its entries and the wait until every one
    is durable and covered by a signed checkpoint.  Both logs are open in this process at once.
    Returns ``{"big": (size before, size after, appends/s, [per round]), "small": ...}``."""
    states = {"big": await LogState.open(big), "small": await LogState.open(small)}
    try:
        todo = {}
        for name, state in states.items():
            pems = await register_writers(state, state.data_dir, 16)
            todo[name] = presigned(state.config.origin, pems, rounds * per_round)
        before = {name: state.head.size for name, state in states.items()}
        times: dict[str, list[float]] = {"big": [], "small": []}
        for r in range(rounds):
            for name in turns(r):
                state, chunk = states[name], todo[name][r * per_round:(r + 1) * per_round]
                t = time.perf_counter()
                await asyncio.gather(*[state.sequencer.enqueue(Pending(body, sig, ident, key_id=key_id, salt=salt,
                                                                       payload=payload))
                                       for body, sig, ident, key_id, salt, payload in chunk])
                times[name].append(time.perf_counter() - t)
        return {name: (before[name], state.head.size, rounds * per_round / sum(times[name]),
                       [per_round / t for t in times[name]]) for name, state in states.items()}
    finally:
        for state in states.values():
            await state.close()


def append_speed_vs_small(big: str, work: str, small_size: int, rounds: int = 6,
                          per_round: int = 20_000) -> dict:
    """Append speed at the big log's size vs at ``small_size``: a small log built (the same way) to
    ``small_size`` less half the entries the rounds add, so that its rounds are centred on
    ``small_size``; then :func:`interleaved_appends`."""
    data = os.path.join(work, "small-appends")
    start = max(1, small_size - rounds * per_round // 2)
    if not os.path.exists(os.path.join(data, "log.db")):
        subprocess.run([sys.executable, "-m", "tlog", "init", "--data", data, "--origin", "scale.example/appends"],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        asyncio.run(build(data, start, [], 16, quiet=True))
    res = asyncio.run(interleaved_appends(big, data, rounds, per_round))
    for name in ("big", "small"):
        lo, hi, rate, per = res[name]
        print(f"appends to the log of {lo:,} (to {hi:,}), {rounds} interleaved rounds of {per_round:,}: "
              f"{rate:,.0f}/s (rounds: {', '.join(f'{x:,.0f}' for x in per)})", flush=True)
    print(f"append speed at {res['big'][0]:,} vs around {small_size:,}: "
          f"{100 * res['big'][2] / res['small'][2]:.1f} %", flush=True)
    return res


async def interleaved_proofs(big: str, small: str, rounds: int, n: int) -> dict:
    """Inclusion proofs through ``LogState`` from two logs in alternating rounds (as
    :func:`interleaved_appends`, for the same reason): each log's path cache read into the page cache
    and ``n`` untimed proofs first, then ``rounds`` rounds of ``n`` random proofs with the server's
    reader and ``n`` with a reader that keeps only 16 tiles and 16 paths (nearly every proof reads its
    path from storage).  Returns ``{"big": (size, proofs/s, storage-path proofs/s), "small": ...}``."""
    states = {"big": await LogState.open(big), "small": await LogState.open(small)}
    try:
        rng = random.Random(7)
        starved = {}
        for name, state in states.items():
            warm_path_cache(state.storage.path)
            for i in [rng.randrange(state.head.size) for _ in range(n)]:
                await state.inclusion_proof(i, state.head.size)
            starved[name] = starved_reader(state)
        times = {name: [0.0, 0.0] for name in states}
        for r in range(rounds):
            for name in turns(r):
                state, size = states[name], states[name].head.size
                for k, reader in enumerate((state.reader, starved[name])):
                    indices = [rng.randrange(size) for _ in range(n)]
                    warm, state.reader = state.reader, reader
                    try:
                        t = time.perf_counter()
                        for i in indices:
                            await state.inclusion_proof(i, size)
                        times[name][k] += time.perf_counter() - t
                    finally:
                        state.reader = warm
        return {name: (state.head.size, rounds * n / times[name][0], rounds * n / times[name][1])
                for name, state in states.items()}
    finally:
        for state in states.values():
            await state.close()


def proof_speed_vs_small(big: str, work: str, rounds: int = 6, n: int = 5000) -> dict:
    """In-process proof speed of the big log vs the small log ``small_log_reads`` built in ``work``."""
    res = asyncio.run(interleaved_proofs(big, os.path.join(work, "small-log"), rounds, n))
    for name in ("big", "small"):
        size, incl, cold = res[name]
        print(f"inclusion proofs from the log of {size:,}, {rounds} interleaved rounds of {n:,}: {incl:,.0f}/s; "
              f"with a 16-tile, 16-path reader {cold:,.0f}/s", flush=True)
    print(f"proof speed at {res['big'][0]:,} vs {res['small'][0]:,}: {100 * res['big'][1] / res['small'][1]:.1f} %; "
          f"16-tile reader {100 * res['big'][2] / res['small'][2]:.1f} %", flush=True)
    return res


async def proofs_only(data: str) -> None:
    state = await LogState.open(data)
    try:
        incl, cons, cold = await time_proofs(state, 5000, 2000)
        print(f"{state.head.size:,} entries: inclusion {incl:,.0f}/s, consistency {cons:,.0f}/s, inclusion with "
              f"a 16-tile reader {cold:,.0f}/s; RSS {rss_mb()[0]:.0f} MB", flush=True)
    finally:
        await state.close()


def http_reads(data: str, seconds: int) -> dict:
    """Serve the log (``--workers 2``) and measure random inclusion proofs and level-0 tiles with wrk."""
    out: dict = {}
    sys.path.insert(0, os.path.join(ROOT, "scripts", "benchlib"))
    import run as bench  # scripts/benchlib/run.py: wrk runner

    port = bench.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tlog", "serve", "--data", data, "--listen",
                             f"127.0.0.1:{port}", "--workers", "2"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    events: list[str] = []  # the "event" of each JSON log line on the server's stderr, until the load
    started = threading.Event()

    def watch_stderr() -> None:
        while not started.is_set():
            raw = proc.stderr.readline()
            if not raw:
                return
            m = re.search(rb'"event":"([a-z_]+)"', raw)
            if m:
                events.append(m.group(1).decode())
        while proc.stderr.read1(1 << 16):  # then only drained (a request line each), cheaply
            pass

    threading.Thread(target=watch_stderr, daemon=True).start()
    try:
        t = time.perf_counter()
        for line in proc.stdout:
            if line.startswith(b"listening on"):
                break
        print(f"server started in {time.perf_counter() - t:.1f} s", flush=True)
        time.sleep(0.5)
        if "startup_check_deferred" in events:  # a large log: PRAGMA quick_check runs after start
            while not {"startup_check_ok", "startup_check_failed"} & set(events):
                time.sleep(0.5)
            print(f"background start-up check done {time.perf_counter() - t:.1f} s after start: "
                  f"{[e for e in events if e.startswith('startup_check_')][-1]}", flush=True)
        started.set()
        url = f"http://127.0.0.1:{port}"
        import urllib.request
        with urllib.request.urlopen(url + "/checkpoint") as r:
            size = int(r.read().split(b"\n")[1])
        for kind in ("proof", "tile"):
            res = bench.run_wrk(url, os.path.join(ROOT, "scripts", "benchlib", "wrk_reads.lua"), seconds, 64,
                                {"TLOG_SIZE": str(size), "TLOG_READ": kind})
            out[kind] = res["rate"]
            out["size"] = size
            print(f"HTTP {kind}s from a log of {size:,}: {res['rate']:,.0f} req/s, p50 {res['p50']} ms, "
                  f"p99 {res['p99']} ms, {res['non2xx']} non-2xx", flush=True)
        pids = [proc.pid] + [int(p) for p in subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True,
                                                             text=True).stdout.split()]
        rss = [rss_mb(p)[0] for p in pids]
        out["rss"] = sum(rss)
        print("server RSS (MB, per process): " + ", ".join(f"{r:.0f}" for r in rss), flush=True)
    finally:
        proc.terminate()
        proc.wait(60)
    return out


def small_log_reads(work: str, entries: int, seconds: int) -> dict:
    """The same HTTP reads from a log of ``entries`` (the smallest mark), built the same way in
    ``work``: the baseline of "proof speed at 10,000,000 within 20 % of the speed at 100,000"."""
    data = os.path.join(work, "small-log")
    if not os.path.exists(os.path.join(data, "log.db")):
        subprocess.run([sys.executable, "-m", "tlog", "init", "--data", data, "--origin", "scale.example/small"],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        asyncio.run(build(data, entries, [], 16, quiet=True))
    return http_reads(data, seconds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=10_000_000)
    ap.add_argument("--data", help="log directory (created with tlog init when missing; kept)")
    ap.add_argument("--marks", default="100000,1000000,10000000", help="sizes at which proofs are timed")
    ap.add_argument("--writers", type=int, default=16)
    ap.add_argument("--http", action="store_true", help="then serve the log and measure reads with wrk, and "
                    "compare appends and proofs with small logs in interleaved rounds")
    ap.add_argument("--seconds", type=int, default=20, help="length of each wrk run")
    ap.add_argument("--proofs-only", action="store_true", help="only time proofs on the log in --data")
    args = ap.parse_args()
    if args.proofs_only:
        asyncio.run(proofs_only(args.data))
        return
    data = args.data or os.path.join(tempfile.mkdtemp(prefix="tlog-scale-"), "log")
    if not os.path.exists(os.path.join(data, "log.db")):
        subprocess.run([sys.executable, "-m", "tlog", "init", "--data", data, "--origin", "scale.example/log"],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    marks = [int(m) for m in args.marks.split(",") if m]
    print(f"log in {data}; building to {args.entries:,} entries", flush=True)
    asyncio.run(build(data, args.entries, marks, args.writers))
    db = os.path.join(data, "log.db")
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = conn.execute("SELECT size FROM head").fetchone()[0]
    conn.close()
    print(f"bytes on disk at {size:,} entries (dbstat):")
    print("\n".join(disk_report(db, size)), flush=True)
    if args.http:
        big = http_reads(data, args.seconds)
        small = small_log_reads(os.path.dirname(os.path.abspath(data)), marks[0], args.seconds)
        print(f"HTTP proofs at {big['size']:,} vs at {small['size']:,}: {100 * big['proof'] / small['proof']:.0f} %; "
              f"tiles {100 * big['tile'] / small['tile']:.0f} %", flush=True)
        append_speed_vs_small(data, os.path.dirname(os.path.abspath(data)), marks[0])
        proof_speed_vs_small(data, os.path.dirname(os.path.abspath(data)))


if __name__ == "__main__":
    main()
