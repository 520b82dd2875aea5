"""Serving on every core: ``tlog serve --workers N``.

One process owns the database and the sequencer (it alone writes the tree, so the head still moves by
one compare-and-swap in one process).  N worker processes accept HTTP on the same port
(``SO_REUSEPORT``; the kernel spreads connections over them), do the costly and parallel part of every
append — parse, check the commitment, the key and the signature — and hand the verified entry to the
sequencer process over a Unix socket (tlog/server/ipc.py).  The answer comes back once the entry is
durable and covered by a signed checkpoint; the worker then reads the inclusion proof from the
database (WAL readers see every committed batch) and answers with the receipt.  Reads (tiles, proofs,
entries) are served by the workers straight from the database.

A worker keeps a copy of the key registry, refreshed from the database as the tree grows (polled every
50 ms; at most once a second while the sequencer's answers to its appends keep its head fresh; and at
once when an entry names a key it does not know yet); the sequencer re-checks every entry against its
own registry at integration time, so a stale worker copy can only refuse, never admit, an entry.
Rate limits are enforced by the sequencer process, so they hold across workers.

If the sequencer process dies, workers answer writes with 503 and keep serving reads; the supervisor
stops everything (a process manager restarts it), so there is never a second writer.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable

from ..entry import Leaf
from ..registry import Registry
from .ipc import SequencerClient
from .sequencer import Integrated, Pending, WritesStoppedError
from .storage import Head, NewLeaf, Storage

__all__ = ["RemoteSequencer", "supervise"]

log = logging.getLogger("tlog.workers")

#: How often a worker hands its metrics to the sequencer process (a scrape also sends them).
METRICS_PUSH_SECONDS = 1.0
#: While the sequencer's answers keep a worker's head fresh (it is taking appends), the worker re-reads
#: the head and the key events from the database at most this often instead of at every poll: a copy of
#: the registry that lags can only refuse an entry, never admit one (the sequencer re-checks each), and
#: an entry naming a key the copy does not know refreshes it at once.
BUSY_REFRESH_SECONDS = 1.0


class RemoteSequencer:
    """The sequencer as a worker process sees it: same attributes the handlers use, writes over IPC."""

    def __init__(self, storage: Storage, socket_path: str, poll_seconds: float = 0.05):
        self.storage = storage
        self.client = SequencerClient(socket_path)
        self.head: Head | None = None
        self.registry: Registry | None = None
        self.stopped: Exception | None = None
        self.batches = 0
        self.on_batch: list[Callable[[list[NewLeaf], Head], None]] = []
        #: This worker's metrics snapshot (set by LogState), pushed to the sequencer process about once
        #: a second so that a scrape through any worker counts every worker (tlog/server/metrics.py).
        self.metrics_snapshot: Callable[[], bytes] | None = None
        self._poll_seconds = poll_seconds
        self._answered = False  # an answer from the sequencer since the last poll
        self._task: asyncio.Task | None = None
        self._refresh_lock = asyncio.Lock()

    async def load(self) -> None:
        head = await self.storage.head()
        if head is None:
            raise WritesStoppedError("database has no head")
        self.registry = Registry.replay(
            ((i, Leaf.decode(b)) for i, b in await self.storage.operator_leaves()), sparse=True)
        self.registry.advance(head.size)
        self.head = head
        await self.client.connect()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._poll(), name="tlog-worker-head")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.client.close()

    async def _poll(self) -> None:
        """Follow the head (appends through other workers) so /checkpoint and proofs stay fresh, and
        push this worker's metrics snapshot about once a second."""
        loop = asyncio.get_running_loop()
        pushed = refreshed = loop.time()
        while True:
            await asyncio.sleep(self._poll_seconds)
            busy, self._answered = self._answered, False
            if not busy or loop.time() - refreshed >= BUSY_REFRESH_SECONDS:
                refreshed = loop.time()
                try:
                    await self.refresh()
                except Exception as exc:  # a read failure is logged and retried; reads report their own errors
                    log.warning("head refresh failed: %s", exc)
            if self.metrics_snapshot is not None and loop.time() - pushed >= METRICS_PUSH_SECONDS:
                pushed = loop.time()
                try:
                    await self.client.push_metrics(self.metrics_snapshot())
                except Exception as exc:  # the sequencer process gone: writes report it; logged here
                    log.warning("metrics push failed: %s", exc)

    async def refresh(self) -> None:
        """Read the stored head; replay the operator entries between the registry's size and it.

        The registry's size moves only here, to a head read from storage before the operator entries,
        so every operator entry below it has been applied (one committed later is at or above it)."""
        async with self._refresh_lock:
            head = await self.storage.head()
            if head is None:
                return
            if head.size > self.registry.size:
                changes = [(i, raw) for i, raw in await self.storage.operator_leaves(since=self.registry.size)
                           if i < head.size]
                if changes:  # applied to a copy: a handler never sees a registry half way through them
                    registry = self.registry.copy()
                    for index, raw in changes:
                        registry.advance(index)
                        registry.apply(index, Leaf.decode(raw))
                    registry.advance(head.size)
                    self.registry = registry
                else:  # no key event in between: the same keys, valid to the new size (under load, most polls)
                    self.registry.advance(head.size)
            self._advance(head)

    def _advance(self, head: Head) -> None:
        if self.head is None or head.size > self.head.size:
            self.head = head

    async def submit(self, pending: Pending, rate: int = 0) -> Integrated:
        result = await self.client.submit(pending, rate)
        self._answered = True
        self._advance(result.head)
        return result

    def current_tiles(self) -> dict[tuple[int, int], bytes]:
        return {}  # workers read the right edge from the database

    def backlog(self) -> int:
        return 0  # the queue lives in the sequencer process; /healthz there reports it


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


async def supervise(data_dir: str, host: str, port: int, workers: int, socket_path: str,
                    ready: Callable[[str], None] | None, stop: asyncio.Event) -> None:
    """Start ``workers`` HTTP worker processes on host:port (port 0: one port picked here and shared)
    and wait until ``stop`` is set or a worker dies; then stop them all."""
    reserve = _bind(host, port)  # holds the port for the workers' SO_REUSEPORT group
    port = reserve.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, "-m", "tlog.server.worker", "--data", data_dir,
                               "--listen", f"{host}:{port}", "--socket", socket_path],
                              stdout=subprocess.PIPE) for _ in range(workers)]
    try:
        loop = asyncio.get_running_loop()
        for p in procs:
            line = await loop.run_in_executor(None, p.stdout.readline)
            if not line.startswith(b"ready"):
                raise WritesStoppedError(f"worker {p.pid} failed to start (exit {p.poll()})")
        reserve.close()
        if ready:
            ready(f"http://{host}:{port}")
        while not stop.is_set():
            if any(p.poll() is not None for p in procs):
                log.critical("a worker process died; stopping")
                break
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
    finally:
        reserve.close()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                await asyncio.get_running_loop().run_in_executor(None, p.wait, 20)
            except subprocess.TimeoutExpired:
                p.kill()
            if p.stdout:
                p.stdout.close()
        try:
            os.unlink(socket_path)
        except FileNotFoundError:
            pass
