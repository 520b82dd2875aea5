"""`tlog serve --workers N`: HTTP worker processes in front of one sequencer process, end to end."""

from __future__ import annotations

import asyncio
import os
import time

import aiohttp

from tests.conftest import init_log, start_server
from tests.crashkit import _alive, children as _children
from tests.test_server_badinput import event_request
from tests.test_server_e2e import _recompute_from_tiles, _register
from tlog.client import LogClient, LogServerError
from tlog.keys import KeyType, PrivateKey
from tlog.proof import verify_consistency
from tlog.server.storage import Head
from tlog.server.workers import RemoteSequencer
from tlog.tlogproof import TlogProof, verify_tlog_proof


async def test_workers_serve_appends_and_reads(tmp_path):
    data = str(tmp_path / "log")
    init_log(data)
    server = start_server(data, extra=("--workers", "2"))
    workers = _children(server.proc.pid)
    try:
        assert len(workers) == 2
        writers = [PrivateKey.generate(KeyType.ED25519 if i % 2 else KeyType.P256) for i in range(4)]
        async with LogClient(server.url, log_key=server.vkey) as client:
            for i, w in enumerate(writers):
                await _register(client, data, w, f"w{i}")
                # A key registered through one worker is usable at once through any other.
                for _ in range(3):
                    await client.append(w, b"right after registration")
            start = (await client.checkpoint()).size

            async def one(n: int):
                async with LogClient(server.url, log_key=server.vkey) as c:
                    return [await c.append(writers[n % 4], b"writer %d entry %d" % (n, k)) for k in range(4)]

            results = [r for rs in await asyncio.gather(*(one(n) for n in range(40))) for r in rs]
            assert sorted(r.index for r in results) == list(range(start, start + 160))
            cp = await client.checkpoint()
            for r in results:
                verify_tlog_proof(TlogProof.parse(r.tlog_proof), origin=client.origin,
                                  log_verifier=client.verifier)
                proof = await client.consistency_proof(r.checkpoint.size, cp.size)
                verify_consistency(r.checkpoint.size, cp.size, proof, r.checkpoint.root, cp.root)
        # Duplicates through any worker (fresh connections) get the original index back.
        request = event_request(writers[1])
        async with aiohttp.ClientSession() as http:
            async with http.post(server.url + "/v1/entries", json=request) as r:
                first = await r.json()
                assert r.status == 201
        for _ in range(4):
            async with aiohttp.ClientSession() as http:
                async with http.post(server.url + "/v1/entries", json=request) as r:
                    assert r.status == 200 and (await r.json())["index"] == first["index"]
        async with LogClient(server.url, log_key=server.vkey) as client:
            cp = await client.checkpoint()
        root, _ = await _recompute_from_tiles(server.url, cp.size)
        assert root == cp.root
    finally:
        server.stop()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(w) for w in workers):
        await asyncio.sleep(0.1)
    assert not any(_alive(w) for w in workers), "worker processes outlived the server"


async def test_rate_limit_holds_across_workers(tmp_path):
    data = str(tmp_path / "log")
    init_log(data)
    server = start_server(data, extra=("--workers", "2"))
    try:
        key = PrivateKey.generate(KeyType.ED25519)
        async with LogClient(server.url, log_key=server.vkey) as client:
            from tlog.entry import register_event
            from tlog.server.config import check_private_file

            operator = PrivateKey.from_pem(check_private_file(os.path.join(data, "operator.key")))
            now = time.time_ns() // 1_000_000
            ev = register_event(client.origin, now, key.public_key, "limited", now - 1000, now + 86_400_000,
                                rate_limit=3)
            await client.submit_operator_entry(ev, operator)
        statuses = []
        for _ in range(4):  # new connections, spread by the kernel over both workers
            async with aiohttp.ClientSession() as http:
                for _ in range(3):
                    async with http.post(server.url + "/v1/entries", json=event_request(key)) as r:
                        statuses.append(r.status)
        assert statuses.count(201) <= 4 and statuses.count(429) >= 8, statuses
    finally:
        server.stop()


async def test_workers_never_outlive_the_sequencer_process(tmp_path):
    """SIGKILL the sequencer process: no second writer can appear, and its workers exit by themselves."""
    data = str(tmp_path / "log")
    init_log(data)
    server = start_server(data, extra=("--workers", "2"))
    workers = _children(server.proc.pid)
    try:
        assert len(workers) == 2
        server.proc.kill()
        server.proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            await asyncio.sleep(0.1)
        assert not any(_alive(w) for w in workers), "workers outlived the sequencer process"
    finally:
        server.stop()


async def test_client_errors_pass_through_workers(tmp_path):
    data = str(tmp_path / "log")
    init_log(data)
    server = start_server(data, extra=("--workers", "2"))
    try:
        stranger = PrivateKey.generate(KeyType.ED25519)
        async with LogClient(server.url, log_key=server.vkey) as client:
            try:
                await client.append(stranger, b"x")
                raise AssertionError("an unknown key was accepted")
            except LogServerError as exc:
                assert exc.status == 403 and "unknown" in exc.reason
    finally:
        server.stop()


def _metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


async def test_metrics_count_every_worker(tmp_path):
    """With --workers, GET /metrics through any worker answers for the whole server: every worker's
    appends and requests, the sequencer's batches and gauges; repeated scrapes never go backwards."""
    data = str(tmp_path / "log")
    init_log(data)
    server = start_server(data, extra=("--workers", "2"))
    try:
        writer = PrivateKey.generate(KeyType.ED25519)
        async with LogClient(server.url, log_key=server.vkey) as client:
            await _register(client, data, writer, "w")

        async def one(n: int):
            async with LogClient(server.url, log_key=server.vkey) as c:  # a fresh connection: any worker
                return [await c.append(writer, b"metrics %d %d" % (n, k)) for k in range(3)]

        results = [r for rs in await asyncio.gather(*(one(n) for n in range(20))) for r in rs]
        assert len(results) == 60
        size = max(r.checkpoint.size for r in results)
        await asyncio.sleep(1.5)  # every worker has pushed its counts since (METRICS_PUSH_SECONDS)
        seen = []
        for _ in range(8):
            async with aiohttp.ClientSession() as http:  # a new connection each time: both workers answer
                async with http.get(server.url + "/metrics") as r:
                    assert r.status == 200
                    seen.append(await r.text())
        for text in seen:
            assert _metric_sum(text, "tlog_appends_total", outcome="accepted") == 60, text
            assert _metric_sum(text, "tlog_http_requests_total", route="/v1/entries", status="201") == 60
            assert _metric_sum(text, "tlog_batch_size_count") >= 1  # counted in the sequencer process
            assert _metric_sum(text, "tlog_key_events_total", action="register") == 1
            assert _metric_sum(text, "tlog_tree_size") >= size
            assert _metric_sum(text, "tlog_writes_stopped") == 0
        gets = [_metric_sum(t, "tlog_http_requests_total", route="/metrics") for t in seen]
        assert gets == sorted(gets), gets  # never backwards, whichever worker answers
    finally:
        server.stop()


class _CountingStorage:
    """The two reads a worker's head poll makes, counted; the head grows by one at each read."""

    def __init__(self):
        self.reads = 0

    async def head(self):
        self.reads += 1
        return Head(self.reads, bytes(32), 0, b"")

    async def operator_leaves(self, since: int = 0):
        return []


async def test_busy_worker_reads_the_head_from_answers_not_every_poll(monkeypatch):
    class Registry:  # what refresh touches when no key event came in
        size = 0

        def advance(self, size: int) -> None:
            self.size = size

    monkeypatch.setattr("tlog.server.workers.BUSY_REFRESH_SECONDS", 0.25)
    storage = _CountingStorage()
    remote = RemoteSequencer(storage, "/nonexistent.sock", poll_seconds=0.01)
    remote.registry = Registry()
    remote.start()
    try:
        await asyncio.sleep(0.2)  # idle: every poll reads the database
        idle = storage.reads
        assert idle >= 8, idle
        assert remote.head.size == idle and remote.registry.size == idle

        async def answers():  # what RemoteSequencer.submit does with each answer from the sequencer
            while True:
                remote._answered = True
                await asyncio.sleep(0.002)

        busy = asyncio.get_running_loop().create_task(answers())
        await asyncio.sleep(0.6)  # busy: one read per BUSY_REFRESH_SECONDS
        busy.cancel()
        during = storage.reads - idle
        assert 1 <= during <= 3, during
        assert remote.registry.size == storage.reads  # the reads it did make still move the registry
        await asyncio.sleep(0.1)  # idle again: back to every poll
        assert storage.reads - idle - during >= 4
    finally:
        remote._task.cancel()
        await asyncio.gather(remote._task, return_exceptions=True)
