"""Crash kit: many concurrent writers against a real ``tlog serve`` that is killed with SIGKILL at random
moments and restarted, and a checker that proves after every restart that nothing acknowledged was lost
and that no checkpoint any client ever received was forked.

Used by tests/test_faults_kill.py (a quick run: ~20 short cycles) and by ``scripts/soak`` (``python -m
tests.crashkit``: hundreds of cycles, prints its figures).  What is counted:

* **acknowledged**: a 200/201 answer whose receipt verified (the log's signature on the checkpoint, the
  inclusion proof, the leaf holding the entry we sent);
* **lost**: an acknowledged index that, after a restart, is beyond the tree or holds another leaf hash;
* **reused**: one index acknowledged for two different leaves, or one entry acknowledged at two indices;
* **forks**: a checkpoint some client received (a receipt, or ``GET /checkpoint``) that is not consistent
  with the latest one after a restart: its root is not the root of the latest tree's first ``size``
  leaves, or the server cannot prove its consistency (RFC 9162 §2.1.4), or two notes of one size differ.

After every kill, ``tlog fsck --data DIR`` (the real command) must pass on the crashed directory before
the server is started again; after every restart the checker reads the new leaf hashes from the level-0
tiles (the old ones are bound by a consistency proof from the previous latest checkpoint), recomputes the
root of every checkpoint seen, and asks the server for a consistency proof from each new one.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import aiohttp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.conftest import ServerProcess, init_log, start_server, tlog_cmd  # noqa: E402
from tlog.checkpoint import Checkpoint, open_checkpoint  # noqa: E402
from tlog.entry import EventEntry, Leaf, payload_commitment, register_event, sign_entry  # noqa: E402
from tlog.errors import TlogError  # noqa: E402
from tlog.hashing import leaf_hash, root_from_leaf_hashes  # noqa: E402
from tlog.keys import KeyType, PrivateKey  # noqa: E402
from tlog.note import Verifier  # noqa: E402
from tlog.proof import verify_consistency, verify_inclusion  # noqa: E402
from tlog.tiles import TILE_WIDTH, Tile  # noqa: E402
from tlog.tree import CompactRange  # noqa: E402

__all__ = ["ORIGIN", "Submission", "Ledger", "Checker", "Writers", "CrashRun", "kill_hard", "children",
           "submission", "register_keys", "fsck"]

ORIGIN = "example.com/crash"
DAY_MS = 86_400_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


# ============================================================================ what clients were told

@dataclass(frozen=True)
class Submission:
    """One signed event entry as sent (kept to retry it after a crash: a retry must deduplicate)."""

    request: dict
    body: bytes
    identity: bytes


def submission(origin: str, key: PrivateKey, payload: bytes, ts: int | None = None) -> Submission:
    salt = os.urandom(16)
    entry = EventEntry(origin, key.public_key.key_id, now_ms() if ts is None else ts, payload_commitment(salt, payload))
    body, sig = entry.encode(), sign_entry(entry, key)
    return Submission({"entry": b64(body), "signature": b64(sig), "salt": b64(salt), "payload": b64(payload)},
                      body, Leaf(body, sig, 0).identity())


@dataclass
class Ledger:
    """Every acknowledgement and every checkpoint any client received, and the problems found."""

    origin: str
    verifier: Verifier
    notes: dict[bytes, Checkpoint] = field(default_factory=dict)  # verified notes (a cache)
    roots: dict[int, bytes] = field(default_factory=dict)         # size -> root of every checkpoint seen
    acked: dict[int, bytes] = field(default_factory=dict)         # index -> leaf hash acknowledged
    indices: dict[bytes, int] = field(default_factory=dict)       # entry identity -> index acknowledged
    pending: list[Submission] = field(default_factory=list)       # sent, never acknowledged: retried
    lost: set[int] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    forks: int = 0
    reused: int = 0
    retried: int = 0
    deduplicated: int = 0

    def problem(self, text: str) -> None:
        if len(self.problems) < 200:
            self.problems.append(text)

    def fork(self, text: str) -> None:
        self.forks += 1
        self.problem("FORK: " + text)

    def saw(self, note: bytes) -> Checkpoint:
        """A checkpoint note some client received: verified, remembered by size."""
        cp = self.notes.get(note)
        if cp is None:
            cp, _ = open_checkpoint(note, self.origin, self.verifier)
            self.notes[note] = cp
            if self.roots.setdefault(cp.size, cp.root) != cp.root:
                self.fork(f"two checkpoints of size {cp.size} with different roots")
        return cp

    def ack(self, sub: Submission, answer: dict) -> int:
        """A 200/201 answer: verify the receipt, then record index -> leaf hash."""
        index, leaf = answer["index"], base64.b64decode(answer["leaf"], validate=True)
        cp = self.saw(answer["checkpoint"].encode())
        if Leaf.decode(leaf).body != sub.body:
            raise AssertionError(f"the receipt for index {index} holds another entry")
        h = leaf_hash(leaf)
        verify_inclusion(h, index, cp.size, [base64.b64decode(p) for p in answer["proof"]], cp.root)
        if self.acked.setdefault(index, h) != h:
            self.reused += 1
            self.problem(f"REUSED: index {index} acknowledged for two different leaves")
        if self.indices.setdefault(sub.identity, index) != index:
            self.reused += 1
            self.problem(f"REUSED: one entry acknowledged at {self.indices[sub.identity]} and at {index}")
        return index

    def figures(self) -> dict:
        return {"acknowledged": len(self.acked), "lost": len(self.lost), "reused": self.reused,
                "forks": self.forks, "checkpoints_seen": len(self.roots), "retried": self.retried,
                "retries_deduplicated": self.deduplicated}


# ============================================================================ the checker

class Checker:
    """Holds the leaf hashes of the latest verified tree; ``check`` extends them after a restart."""

    def __init__(self, ledger: Ledger, proof_cap: int = 200):
        self.ledger = ledger
        self.hashes: list[bytes] = []
        self.range = CompactRange()
        self.latest: Checkpoint | None = None
        self.proof_cap = proof_cap
        self.checked: set[int] = set()  # sizes whose root was recomputed from the latest tree's leaves

    async def check(self, http: aiohttp.ClientSession, url: str) -> Checkpoint:
        L = self.ledger
        async with http.get(url + "/checkpoint") as r:
            assert r.status == 200, r.status
            cp = L.saw(await r.read())
        prev = self.latest
        if max(L.roots) > cp.size or (prev is not None and prev.size > cp.size):
            gone = [i for i in L.acked if i >= cp.size]
            L.lost.update(gone)
            L.fork(f"rolled back: the restarted log has {cp.size} entries, a client saw {max(L.roots)}; "
                   f"{len(gone)} acknowledged entries are beyond it")
            return cp
        if prev is not None and prev.size < cp.size:
            await self._server_proof(http, url, prev.size, prev.root, cp)
        await self._extend(http, url, cp)
        for s in sorted(set(L.roots) - self.checked):  # checkpoints received late, or below the old head
            if s <= cp.size and root_from_leaf_hashes(self.hashes[:s]) != L.roots[s]:
                L.fork(f"the checkpoint of size {s} some client received is not a prefix of the latest tree")
            self.checked.add(s)
        for i, h in L.acked.items():
            if i >= cp.size or self.hashes[i] != h:
                if i not in L.lost:
                    L.problem(f"LOST: acknowledged entry {i} is " +
                              ("beyond the tree" if i >= cp.size else "another leaf now"))
                L.lost.add(i)
        fresh = [s for s in L.roots if (prev is None or s > prev.size) and 0 < s < cp.size]
        random.shuffle(fresh)
        await asyncio.gather(*(self._server_proof(http, url, s, L.roots[s], cp) for s in fresh[:self.proof_cap]))
        self.latest = cp
        return cp

    async def _extend(self, http: aiohttp.ClientSession, url: str, cp: Checkpoint) -> None:
        """Read level-0 tiles from the last partial one on; check every seen size crossed on the way."""
        L = self.ledger
        start = len(self.hashes) // TILE_WIDTH * TILE_WIDTH
        tiles = [Tile(0, n, min(TILE_WIDTH, cp.size - n * TILE_WIDTH))
                 for n in range(start // TILE_WIDTH, (cp.size + TILE_WIDTH - 1) // TILE_WIDTH)]
        data = await asyncio.gather(*(_get(http, f"{url}/{t.path()}") for t in tiles))
        new = [d[i:i + 32] for d in data for i in range(0, len(d), 32)]
        if new[:len(self.hashes) - start] != self.hashes[start:]:
            L.fork(f"the level-0 tile at {start} changed under the old leaves")
        sizes = sorted(s for s in L.roots if len(self.hashes) < s <= cp.size)
        pos = len(self.hashes) - start
        for s in sizes + [cp.size]:
            chunk = new[pos:s - start]
            self.range.extend(chunk)
            self.hashes.extend(chunk)
            pos = s - start
            if s in L.roots and self.range.root() != L.roots[s]:
                L.fork(f"the root of the first {s} leaves is not the root of the checkpoint of size {s}")
            self.checked.add(s)
        if self.range.root() != cp.root:
            L.fork(f"the level-0 tiles do not hash to the signed root at size {cp.size}")

    async def _server_proof(self, http: aiohttp.ClientSession, url: str, m: int, root_m: bytes,
                            cp: Checkpoint) -> None:
        async with http.get(f"{url}/v1/proofs/consistency?first={m}&second={cp.size}") as r:
            body = await r.read()
        try:
            if r.status != 200:
                raise TlogError(f"status {r.status}: {body[:200]!r}")
            proof = [base64.b64decode(h) for h in json.loads(body)["proof"]]
            verify_consistency(m, cp.size, proof, root_m, cp.root)
        except (TlogError, ValueError, KeyError) as exc:
            self.ledger.fork(f"no consistency proof from the checkpoint of size {m} to {cp.size}: {exc}")


async def _get(http: aiohttp.ClientSession, url: str) -> bytes:
    async with http.get(url) as r:
        body = await r.read()
        if r.status != 200:
            raise AssertionError(f"GET {url}: {r.status} {body[:200]!r}")
        return body


# ============================================================================ the load

class Writers:
    """``count`` concurrent writers (each its own connection) and one checkpoint observer."""

    def __init__(self, ledger: Ledger, keys: list[PrivateKey], count: int = 24,
                 retry_statuses: tuple[int, ...] = ()):
        self.ledger, self.keys, self.count = ledger, keys, count
        self.retry_statuses = retry_statuses  # answers that mean "not now" (e.g. 507 on a full disk)
        self.statuses: dict[int, int] = {}
        self.seq = 0

    async def submit(self, http: aiohttp.ClientSession, url: str, sub: Submission) -> int | None:
        """The answer's status (an acknowledgement is verified and recorded); None when the server is gone
        (the entry is kept to retry).  An unexpected status is a problem."""
        try:
            async with http.post(url + "/v1/entries", json=sub.request) as r:
                status, body = r.status, await r.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
            self.ledger.pending.append(sub)
            return None
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status in (200, 201):
            self.ledger.ack(sub, json.loads(body))
        elif status in self.retry_statuses or status == 503:
            # 503: not acknowledged, try again later (with --workers, a worker whose sequencer process was
            # just killed says so until it is killed itself).
            self.ledger.pending.append(sub)
            await asyncio.sleep(0.02)
        else:
            self.ledger.problem(f"unexpected answer {status}: {body[:200]!r}")
        return status

    async def retry_pending(self, http: aiohttp.ClientSession, url: str) -> None:
        """Send every unacknowledged entry again: each is now acknowledged, as new (201) or as the entry
        a crash kept without an acknowledgement (200, its original index)."""
        pending, self.ledger.pending = self.ledger.pending, []
        sem = asyncio.Semaphore(self.count)

        async def one(sub: Submission) -> None:
            async with sem:
                status = await self.submit(http, url, sub)
                self.ledger.retried += 1
                self.ledger.deduplicated += status == 200

        await asyncio.gather(*(one(s) for s in pending))

    async def run(self, url: str, stop: asyncio.Event) -> None:
        """Write until ``stop`` is set or the server goes away."""
        connector = aiohttp.TCPConnector(limit=self.count + 4)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as http:
            await asyncio.gather(self._observe(http, url, stop),
                                 *(self._writer(http, url, w, stop) for w in range(self.count)))

    async def _writer(self, http: aiohttp.ClientSession, url: str, w: int, stop: asyncio.Event) -> None:
        key = self.keys[w % len(self.keys)]
        while not stop.is_set():
            self.seq += 1
            sub = submission(self.ledger.origin, key, b'{"w": %d, "n": %d}' % (w, self.seq))
            if await self.submit(http, url, sub) not in (200, 201, *self.retry_statuses):
                return  # the server is gone (or said something unexpected)

    async def _observe(self, http: aiohttp.ClientSession, url: str, stop: asyncio.Event) -> None:
        """Another client: polls /checkpoint; every note it receives must stay consistent forever."""
        while not stop.is_set():
            try:
                async with http.get(url + "/checkpoint") as r:
                    if r.status == 200:
                        self.ledger.saw(await r.read())
            except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
                return
            await asyncio.sleep(0.01)


# ============================================================================ processes

def children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "zombie" not in f.read()
    except OSError:
        return False


def kill_hard(server: ServerProcess | subprocess.Popen) -> None:
    """SIGKILL the server and (``--workers``) its worker processes at once, by pid; wait until all are gone."""
    proc = server.proc if isinstance(server, ServerProcess) else server
    pids = [proc.pid, *children(proc.pid)]
    sockets = {_socket_dir(pid) for pid in pids[1:]} - {None}
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids[1:]) and time.monotonic() < deadline:
        time.sleep(0.02)
    if isinstance(server, ServerProcess):
        server.stop()  # closes its files
    for folder in sockets:  # the sequencer's socket folder, which a SIGKILL leaves behind
        shutil.rmtree(folder, ignore_errors=True)


def _socket_dir(worker: int) -> str | None:
    """The folder of the Unix socket a ``--workers`` worker talks to (from its command line)."""
    try:
        with open(f"/proc/{worker}/cmdline", "rb") as f:
            args = f.read().decode().split("\0")
    except OSError:
        return None
    if "--socket" not in args:
        return None
    folder = os.path.dirname(args[args.index("--socket") + 1])
    return folder if os.path.basename(folder).startswith("tlog-") else None


def fsck(data: str) -> subprocess.CompletedProcess:
    """The real ``tlog fsck --data DIR``."""
    return tlog_cmd("fsck", "--data", data, check=False, timeout=300)


async def register_keys(url: str, vkey: str, data: str, count: int, valid_before_ms: int = 1000) -> list[PrivateKey]:
    """``count`` new Ed25519 writer keys, registered with the operator key, valid from ``valid_before_ms``
    ago for a day."""
    from tlog.client import LogClient
    from tlog.server.config import check_private_file

    operator = PrivateKey.from_pem(check_private_file(os.path.join(data, "operator.key")))
    keys = [PrivateKey.generate(KeyType.ED25519) for _ in range(count)]
    async with LogClient(url, log_key=vkey) as client:
        for i, k in enumerate(keys):
            now = now_ms()
            await client.submit_operator_entry(
                register_event(client.origin, now, k.public_key, f"crash-writer-{i}", now - valid_before_ms,
                               now + DAY_MS), operator)
    return keys


# ============================================================================ kill cycles

@dataclass
class CrashRun:
    """Cycles of: start, check, retry, write with ``writers`` clients, SIGKILL at a random moment, fsck."""

    data: str
    writers: int = 24
    max_run: float = 0.5          # seconds of writing before the kill, drawn uniformly in [0, max_run]
    workers_every: int = 0        # every n-th cycle runs `tlog serve --workers 2` (0: never)
    startup_kill: float = 0.1     # probability that a cycle kills the server while it starts up
    fsck_every: int = 1           # run `tlog fsck` on the crashed directory every n-th cycle
    seed: int | None = None
    cycles: int = 0
    fsck_runs: int = 0
    modes: dict = field(default_factory=lambda: {"single": 0, "workers": 0, "startup": 0})

    def __post_init__(self):
        self.rng = random.Random(self.seed)
        self.ledger: Ledger | None = None
        self.checker: Checker | None = None
        self.load: Writers | None = None

    async def setup(self, keys: int = 8) -> None:
        if not os.path.exists(os.path.join(self.data, "config.json")):
            init_log(self.data, ORIGIN)
        server = start_server(self.data)
        try:
            self.ledger = Ledger(ORIGIN, Verifier.from_vkey(server.vkey))
            self.checker = Checker(self.ledger)
            self.load = Writers(self.ledger, await register_keys(server.url, server.vkey, self.data, keys),
                                self.writers)
        finally:
            server.stop()

    def _extra(self, n: int) -> tuple[str, ...]:
        return ("--workers", "2") if self.workers_every and n % self.workers_every == self.workers_every - 1 else ()

    async def cycle(self) -> None:
        n = self.cycles
        extra = self._extra(n)
        if self.rng.random() < self.startup_kill:
            await self._kill_during_startup(extra)
        else:
            server = await asyncio.to_thread(start_server, self.data, extra=extra)
            try:
                await self._check_and_write(server)
            finally:
                kill_hard(server)
            self.modes["workers" if extra else "single"] += 1
        self.cycles += 1
        if self.fsck_every and self.cycles % self.fsck_every == 0:
            proc = await asyncio.to_thread(fsck, self.data)
            self.fsck_runs += 1
            if proc.returncode != 0:
                self.ledger.problem(f"FSCK failed after cycle {n}: {proc.stdout.decode()[:500]}")

    async def _check_and_write(self, server: ServerProcess) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
            await self.checker.check(http, server.url)
            await self.load.retry_pending(http, server.url)
        stop = asyncio.Event()
        task = asyncio.ensure_future(self.load.run(server.url, stop))
        await asyncio.sleep(self.rng.uniform(0, self.max_run))
        await asyncio.to_thread(kill_hard, server)
        stop.set()
        await asyncio.wait_for(task, 60)

    async def _kill_during_startup(self, extra: tuple[str, ...]) -> None:
        err = tempfile.TemporaryFile()
        proc = subprocess.Popen([sys.executable, "-m", "tlog", "serve", "--data", self.data,
                                 "--listen", "127.0.0.1:0", *extra], stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT)
        await asyncio.sleep(self.rng.uniform(0, 0.6))
        await asyncio.to_thread(kill_hard, proc)
        err.close()
        self.modes["startup"] += 1

    async def finish(self) -> Checkpoint:
        """Start once more (gracefully stopped afterwards): the final check, the last retries, fsck."""
        server = await asyncio.to_thread(start_server, self.data)
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
                await self.checker.check(http, server.url)
                await self.load.retry_pending(http, server.url)
                cp = await self.checker.check(http, server.url)
        finally:
            server.stop()
        proc = await asyncio.to_thread(fsck, self.data)
        self.fsck_runs += 1
        if proc.returncode != 0:
            self.ledger.problem(f"FSCK failed at the end: {proc.stdout.decode()[:500]}")
        return cp

    def figures(self) -> dict:
        return {"cycles": self.cycles, **self.modes, "fsck_runs": self.fsck_runs, **self.ledger.figures(),
                "tree_size": self.checker.latest.size if self.checker.latest else 0}


# ============================================================================ scripts/soak

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/soak", description=(
        "Kill -9 soak: concurrent writers append while `tlog serve` is SIGKILLed at random moments and "
        "restarted; after every restart nothing acknowledged may be lost and no checkpoint any client saw "
        "may fork; `tlog fsck` must pass after every kill.  Prints the figures; exit 1 on any loss or fork."))
    ap.add_argument("--cycles", type=int, default=200, help="kill/restart cycles (default 200)")
    ap.add_argument("--writers", type=int, default=24, help="concurrent writers (default 24)")
    ap.add_argument("--max-run", type=float, default=0.5, help="longest writing phase before a kill, seconds")
    ap.add_argument("--workers-every", type=int, default=5, help="every N-th cycle uses --workers 2 (0: never)")
    ap.add_argument("--startup-kill", type=float, default=0.1, help="share of cycles killed during start-up")
    ap.add_argument("--fsck-every", type=int, default=1, help="tlog fsck after every N-th kill (default 1)")
    ap.add_argument("--seed", type=int, help="random seed (default: random, printed)")
    ap.add_argument("--data", help="data directory (default: a temporary one, removed afterwards)")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    tmp = None if args.data else tempfile.mkdtemp(prefix="tlog-soak-")
    data = args.data or os.path.join(tmp, "log")
    print(f"soak: {args.cycles} cycles, {args.writers} writers, seed {seed}, data {data}", flush=True)
    run = CrashRun(data, writers=args.writers, max_run=args.max_run, workers_every=args.workers_every,
                   startup_kill=args.startup_kill, fsck_every=args.fsck_every, seed=seed)
    started = time.monotonic()

    async def go() -> None:
        await run.setup()
        for n in range(args.cycles):
            await run.cycle()
            if (n + 1) % 10 == 0 or n + 1 == args.cycles:
                f = run.figures()
                print(f"  cycle {n + 1}: acknowledged {f['acknowledged']}, lost {f['lost']}, forks {f['forks']}, "
                      f"tree {f['tree_size']}, {time.monotonic() - started:.0f} s", flush=True)
        await run.finish()

    try:
        asyncio.run(go())
    except Exception as exc:  # a server that would not start again, a receipt that does not verify, ...
        run.ledger.problem(f"ABORTED after {run.cycles} cycles: {exc!r}"[:2000])
    finally:
        if tmp and not run.ledger.problems:
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp:
            print(f"kept the data directory for a look: {data}")
    f = run.figures()
    bad = f["lost"] or f["forks"] or f["reused"] or run.ledger.problems
    print(f"cycles survived: {f['cycles']} ({f['single']} single-process, {f['workers']} --workers 2, "
          f"{f['startup']} killed during start-up)")
    print(f"acknowledged entries: {f['acknowledged']}")
    print(f"entries lost: {f['lost']}")
    print(f"forks: {f['forks']}")
    print(f"indices reused: {f['reused']}")
    print(f"checkpoints seen by clients: {f['checkpoints_seen']}" +
          ("" if f["forks"] else f", every one consistent with the final tree of {f['tree_size']}"))
    print(f"unacknowledged entries sent again: {f['retried']} ({f['retries_deduplicated']} had been kept by a "
          "crash: 200 with their original index)")
    fsck_failed = sum(p.startswith("FSCK") for p in run.ledger.problems)
    print(f"tlog fsck runs: {f['fsck_runs']}, failed: {fsck_failed}")
    print(f"seconds: {time.monotonic() - started:.0f}")
    for p in run.ledger.problems[:20]:
        print("PROBLEM:", p)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
