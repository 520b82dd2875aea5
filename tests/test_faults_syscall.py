"""Fault 2 of issue 8: every durable step of an append interrupted, with real system-call faults.

One append is traced with strace (``-e trace=%file,write,pwrite64,fsync,fdatasync,rename,unlink,ftruncate``):
its file system calls happen on two threads of the server — the SQLite writer thread (the WAL frames with
``pwrite64``, then ``fdatasync``: the COMMIT) and, after the commit, the thread that replaces
``DIR/published-checkpoint`` (``openat``, ``write``, ``fsync``, ``rename``).  A second trace covers the append
that crosses 1000 WAL pages, after whose COMMIT the writer thread runs SQLite's automatic checkpoint
(``fdatasync`` of the WAL, ``pwrite64`` of pages into ``log.db``, ``ftruncate``, ``fdatasync``; the number of
appends it takes is measured first).  Then, for each of those calls,
the same append is made again on a fresh copy of the log with strace attached to that one thread
(``strace -p TID``: strace counts ``when=N`` per thread, so the N-th call of that thread is hit exactly)
and the call

* failing with EIO (``-e inject=SYSCALL:error=EIO:when=N``): on the commit path the append gets 503 and
  writes stay stopped (a failed fsync is never retried and acknowledged: 503 until restart) while reads go
  on; after the commit (the WAL checkpoint, the published-checkpoint file) the append is acknowledged and
  writing goes on;
* killing the process (``-e inject=SYSCALL:signal=KILL:when=N``).

After each: the server is killed, `tlog fsck`'s checks pass on the directory (in process: the same
function the command runs), the restarted server holds every acknowledged entry and is consistent with
every checkpoint a client saw (tests/crashkit.py's checker), the entry sent again is acknowledged exactly
once, and writing works again.

By default the sweep hits, for each system call of each thread, its first, second, middle, second-to-last
and last occurrence (all of them for the calls made once); ``TLOG_FAULT_SWEEP=full`` hits every occurrence.
Needs strace and ptrace (root here; scripts/install-test-deps installs strace); skips otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

import aiohttp
import pytest

from tests.conftest import init_log, start_server
from tests.crashkit import ORIGIN, Checker, Ledger, kill_hard, register_keys, submission
from tlog.note import Verifier
from tlog.server.scrub import fsck

STRACE = shutil.which("strace")
FILE_CALLS = {"open", "openat", "creat", "write", "pwrite64", "pwritev", "pwritev2", "fsync", "fdatasync",
              "rename", "renameat", "renameat2", "unlink", "unlinkat", "ftruncate", "truncate"}
TRACE_SET = "%file,write,pwrite64,fsync,fdatasync,rename,unlink,ftruncate"


def _strace_works() -> str | None:
    if STRACE is None:
        return "strace is not installed (scripts/install-test-deps installs it)"
    proc = subprocess.run([STRACE, "-o", "/dev/null", "true"], capture_output=True)
    if proc.returncode != 0:
        return f"strace cannot trace here (no ptrace?): {proc.stderr.decode()[:200]}"
    return None


pytestmark = pytest.mark.skipif(_strace_works() is not None, reason=str(_strace_works()))


class Tracer:
    """An strace process attached to running threads; its output file and its stderr."""

    _n = 0

    def __init__(self, tmp, args: list[str]):
        Tracer._n += 1
        self.out = os.path.join(str(tmp), f"strace.{Tracer._n}.out")
        self.err = self.out + ".err"
        with open(self.err, "wb") as err:
            self.proc = subprocess.Popen([STRACE, "-y", *args, "-o", self.out], stderr=err)
        deadline = time.monotonic() + 15
        while b"attached" not in self._err():
            assert self.proc.poll() is None and time.monotonic() < deadline, self._err()
            time.sleep(0.01)

    def _err(self) -> bytes:
        with open(self.err, "rb") as f:
            return f.read()

    def text(self) -> str:
        with open(self.out, errors="replace") as f:
            return f.read()

    def wait_for(self, pattern: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text()):
            assert time.monotonic() < deadline, f"strace never saw {pattern!r}:\n{self.text()[-2000:]}"
            time.sleep(0.01)

    def detach(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=15)


_CALL = re.compile(r"^(\d+)\s+(\w+)\((.*)$")


def _calls(text: str) -> list[tuple[int, str, str]]:
    """(thread id, system call, its arguments) for every call strace -f saw enter."""
    out = []
    for line in text.splitlines():
        m = _CALL.match(line)
        if m:
            out.append((int(m.group(1)), m.group(2), m.group(3)))
    return out


@dataclass(frozen=True)
class Case:
    role: str      # "commit": the SQLite writer thread up to and including its fsync of the WAL (the COMMIT);
                   # "checkpoint": the same thread after it (SQLite's automatic WAL checkpoint into log.db);
                   # "published": the thread that replaces DIR/published-checkpoint after the commit
    call: str      # the system call
    n: int         # its n-th occurrence on that thread during the append (strace's when=N)
    of: int        # of how many
    what: str      # the file it touched
    pre: int = 0   # appends made first (to bring the WAL to its automatic checkpoint)

    @property
    def thread(self) -> str:
        return "published" if self.role == "published" else "writer"

    def __str__(self) -> str:
        return f"{self.role} {self.call} #{self.n}/{self.of} ({self.what})"


@dataclass
class Template:
    data: str
    key: object


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Template:
    """A stopped log with a registered writer and a few entries: copied for every run."""
    data = str(tmp_path_factory.mktemp("syscall") / "log")
    init_log(data, ORIGIN)
    server = start_server(data)
    try:
        [key] = asyncio.run(register_keys(server.url, server.vkey, data, 1))

        async def fill():
            async with aiohttp.ClientSession() as http:
                for i in range(3):
                    async with http.post(server.url + "/v1/entries",
                                         json=submission(ORIGIN, key, b"before %d" % i).request) as r:
                        assert r.status == 201
        asyncio.run(fill())
    finally:
        server.stop()
    return Template(data, key)


class Run:
    """One fresh copy of the template, served; a warm-up append (traced whole, to find the two threads),
    then the append under test."""

    def __init__(self, template: Template, tmp):
        self.tmp = tmp
        self.data = str(tmp / "log")
        shutil.copytree(template.data, self.data)
        self.key = template.key
        self.server = start_server(self.data)
        self.ledger = Ledger(ORIGIN, Verifier.from_vkey(self.server.vkey))
        self.http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Run:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self

    async def __aexit__(self, *exc) -> None:
        await self.http.close()
        kill_hard(self.server)

    async def append(self, payload: bytes, sub=None) -> tuple[int | None, object]:
        sub = sub or submission(ORIGIN, self.key, payload)
        try:
            async with self.http.post(self.server.url + "/v1/entries", json=sub.request) as r:
                status, body = r.status, await r.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError):
            return None, sub
        if status in (200, 201):
            self.ledger.ack(sub, json.loads(body))
        return status, sub

    async def preload(self, count: int) -> None:
        """``count`` appends one after another (each its own batch: the same pages every time)."""
        for _ in range(count):
            assert (await self.append(b"fill"))[0] == 201

    async def get(self, path: str) -> tuple[int, bytes]:
        async with self.http.get(self.server.url + path) as r:
            body = await r.read()
            if path == "/checkpoint" and r.status == 200:
                self.ledger.saw(body)
            return r.status, body

    async def warm_up(self) -> dict[str, int]:
        """One append traced across the whole process: the writer thread and the published-checkpoint thread."""
        text = await self.traced_append(b"warm-up", "pwrite64,rename")
        threads = {}
        for tid, call, args in _calls(text):
            if call == "pwrite64" and "log.db-wal" in args:
                threads["writer"] = tid
            if call == "rename" and "published-checkpoint" in args:
                threads["published"] = tid
        assert set(threads) == {"writer", "published"}, text[-2000:]
        return threads

    async def traced_append(self, body: bytes, trace: str) -> str:
        """strace's record of the whole process (``-e trace=...``) during one acknowledged append, up to
        the rename of DIR/published-checkpoint that follows its commit."""
        tracer = Tracer(self.tmp, ["-f", "-p", str(self.server.proc.pid), "-e", f"trace={trace}"])
        try:
            status, _ = await self.append(body)
            assert status == 201
            tracer.wait_for(r"rename\(.*published-checkpoint")
        finally:
            tracer.detach()
        return tracer.text()


def _what(args: str) -> str:
    """The file a call touched: its descriptor's path (strace -y), or the path it names."""
    fd = re.match(r"\d+<([^>]*)>", args)
    path = re.search(r'"([^"]*)"', args)
    return os.path.basename(fd.group(1) if fd else path.group(1) if path else "?")


async def _trace_one_append(template: Template, tmp, pre: int = 0) -> list[Case]:
    """Every file system call of the two threads during one append (after ``pre`` others)."""
    async with Run(template, tmp) as run:
        threads = await run.warm_up()
        await run.preload(pre)
        text = await run.traced_append(b"fill", TRACE_SET)
    seen: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    role = {threads["published"]: "published"}
    for tid, call, args in _calls(text):
        if tid == threads["writer"]:
            role[tid] = role.get(tid, "commit")
        # anon_inode: the event loop's wakeup (uvloop's eventfd, written when the writer thread's
        # result is handed back), not storage.
        if tid in role and call in FILE_CALLS and not _what(args).startswith("anon_inode:"):
            seen[(tid, call)].append((role[tid], _what(args)))
            if call in ("fsync", "fdatasync") and _what(args) == "log.db-wal" and role[tid] == "commit":
                role[tid] = "checkpoint"  # what the writer thread does after the COMMIT's fsync
    return [Case(r, call, n, len(calls), what, pre) for (_, call), calls in seen.items()
            for n, (r, what) in enumerate(calls, 1)]


async def _appends_to_checkpoint(template: Template, tmp) -> int:
    """How many appends after the warm-up make SQLite checkpoint the WAL into log.db (at 1000 pages)."""
    async with Run(template, tmp) as run:
        threads = await run.warm_up()
        tracer = Tracer(tmp, ["-p", str(threads["writer"]), "-e", "trace=pwrite64"])
        try:
            for k in range(1, 1000):
                assert (await run.append(b"fill"))[0] == 201
                if re.search(r"pwrite64\(\d+<[^>]*/log\.db>", tracer.text()):
                    return k
        finally:
            tracer.detach()
    raise AssertionError("no WAL checkpoint after 1000 appends")


def _sample(cases: list[Case]) -> list[Case]:
    """First, second, middle, second-to-last and last occurrence of each call of each role."""
    if os.environ.get("TLOG_FAULT_SWEEP") == "full":
        return cases
    groups: dict[tuple[str, str], list[Case]] = defaultdict(list)
    for c in cases:
        groups[(c.role, c.call)].append(c)
    return [g[i] for g in groups.values() for i in sorted({0, 1, (len(g) - 1) // 2, len(g) - 2, len(g) - 1})
            if 0 <= i < len(g)]


@pytest.fixture(scope="module")
def cases(template, tmp_path_factory) -> list[Case]:
    every = asyncio.run(_trace_one_append(template, tmp_path_factory.mktemp("trace")))
    counts = Counter((c.role, c.call) for c in every)
    # What the commit path is made of (if SQLite or Python change this, look again at what to cover).
    assert counts[("commit", "pwrite64")] >= 2 and all(c.what == "log.db-wal" for c in every if c.role == "commit")
    assert counts[("commit", "fdatasync")] + counts[("commit", "fsync")] == 1 and "checkpoint" not in {
        c.role for c in every}
    assert {"openat", "write", "fsync", "rename"} <= {call for role, call in counts if role == "published"}
    k = asyncio.run(_appends_to_checkpoint(template, tmp_path_factory.mktemp("fill")))
    checkpoint = [c for c in asyncio.run(_trace_one_append(template, tmp_path_factory.mktemp("trace"), k - 1))
                  if c.role == "checkpoint"]
    assert any(c.call == "pwrite64" and c.what == "log.db" for c in checkpoint), checkpoint
    assert any(c.call in ("fsync", "fdatasync") and c.what == "log.db" for c in checkpoint), checkpoint
    return _sample(every) + _sample(checkpoint)


async def _after_restart(run: Run, sub) -> None:
    """Kill, fsck, restart: every acknowledged entry and seen checkpoint holds; the entry sent again is
    acknowledged once (new, or the one the interrupted append left: 200 with its index); writing works."""
    acked_before, was_acked = len(run.ledger.acked), sub.identity in run.ledger.indices
    kill_hard(run.server)
    report = await fsck(run.data)
    assert report.ok, report.summary()
    run.server = start_server(run.data)
    checker = Checker(run.ledger)
    await checker.check(run.http, run.server.url)
    status, _ = await run.append(b"", sub)  # the entry of the interrupted append, sent again
    assert status in (200, 201), status
    status, _ = await run.append(b"after the restart")
    assert status == 201, status
    await checker.check(run.http, run.server.url)
    assert run.ledger.problems == [], run.ledger.problems
    assert len(run.ledger.acked) == acked_before + 1 + (not was_acked)


async def _one(template: Template, tmp, case: Case, action: str) -> str:
    async with Run(template, tmp) as run:
        threads = await run.warm_up()
        await run.preload(case.pre)
        _, before = await run.get("/checkpoint")
        inject = f"{case.call}:error=EIO:when={case.n}" if action == "eio" else f"{case.call}:signal=KILL:when={case.n}"
        tracer = Tracer(tmp, ["-p", str(threads[case.thread]), "-e", f"trace={case.call}", "-e", f"inject={inject}"])
        try:
            status, sub = await run.append(b"fill")
            if case.role == "published":
                tracer.wait_for(r"INJECTED|killed by SIGKILL")
            if action == "kill":
                run.server.proc.wait(timeout=10)
        finally:
            tracer.detach()
        hit = tracer.text()
        assert ("INJECTED" in hit) if action == "eio" else ("killed by SIGKILL" in hit), hit[-1000:]
        if action == "kill":
            assert run.server.proc.returncode == -signal.SIGKILL
            assert status in (None, 201), status  # after the commit, the answer may have gone out first
        elif case.role == "commit":
            await _writes_stopped_reads_go_on(run, status, before)
        else:  # after the COMMIT: the append is acknowledged and writing goes on
            assert status == 201, status
            assert (await run.append(b"and the next one"))[0] == 201
            if case.role == "published":  # the failed file write is logged (the file stays behind)
                assert any("cannot write" in line.get("event", "") for line in run.server.logs())
        await _after_restart(run, sub)
        return f"{case} {action}: answer {status}"


async def _writes_stopped_reads_go_on(run: Run, status: int | None, before: bytes) -> None:
    """A failed write or fsync on the commit path: 503 now and for every later append, never retried and
    acknowledged; the last checkpoint, tiles and proofs are still served."""
    assert status == 503, status
    assert (await run.append(b"after the failure"))[0] == 503
    assert await run.get("/checkpoint") == (200, before)
    size = int(before.split(b"\n")[1])
    assert (await run.get(f"/tile/0/000.p/{size}"))[0] == 200
    assert (await run.get(f"/v1/proofs/inclusion?index=1&tree_size={size}"))[0] == 200
    assert (await run.get(f"/v1/proofs/consistency?first=2&second={size}"))[0] == 200
    status, body = await run.get("/healthz")
    assert status == 503 and json.loads(body)["writes"].startswith("stopped"), body


async def _sweep(template, tmp_path, cases, action) -> None:
    done, failures = [], []
    for i, case in enumerate(cases):
        tmp = tmp_path / f"{action}-{i}"
        tmp.mkdir()
        try:
            done.append(await _one(template, tmp, case, action))
        except AssertionError as exc:
            failures.append(f"{case} {action}: {exc}")
    print("\n".join(done))
    assert failures == [], "\n".join(failures)


async def test_every_durable_step_failing_with_eio(template, cases, tmp_path):
    await _sweep(template, tmp_path, cases, "eio")


async def test_killed_at_every_durable_step(template, cases, tmp_path):
    await _sweep(template, tmp_path, cases, "kill")
