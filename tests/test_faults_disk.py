"""Fault 3 of issue 8: the disk fills up.  The log lives on a small tmpfs (mounted here, as root); a filler
file takes the space; 24 concurrent writers keep appending.  Appends get a clear 507 (nothing of the batch
committed), reads and proofs keep working, the served checkpoint never covers an entry that was not
persisted, and writes resume — without a restart — once the file system is enlarged
(``mount -o remount,size=``).  Finally the server is killed with SIGKILL and restarted: every acknowledged
entry is there, every checkpoint a client saw is consistent with the latest, `tlog fsck` passes.
Skips when this process may not mount a tmpfs (not root, or no CAP_SYS_ADMIN)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess

import aiohttp
import pytest

from tests.conftest import init_log, start_server
from tests.crashkit import ORIGIN, Checker, Ledger, Writers, fsck, kill_hard, register_keys, submission
from tlog.note import Verifier


def _mount(path: str, size: str) -> str | None:
    if os.geteuid() != 0:
        return "not root: cannot mount a small tmpfs"
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", path],
                          capture_output=True)
    return None if proc.returncode == 0 else f"cannot mount a tmpfs: {proc.stderr.decode().strip()}"


@pytest.fixture
def small_fs(tmp_path):
    mnt = str(tmp_path / "fs")
    os.mkdir(mnt)
    problem = _mount(mnt, "8m")
    if problem:
        pytest.skip(problem)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", mnt], capture_output=True)


def _fill(path: str, leave: int) -> None:
    """Take all the space of the file system, then give back ``leave`` bytes."""
    with open(path, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    os.truncate(path, max(0, os.path.getsize(path) - leave))


async def _burst(load: Writers, url: str, seconds: float) -> None:
    stop = asyncio.Event()
    task = asyncio.ensure_future(load.run(url, stop))
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait_for(task, 60)


async def test_disk_full_507_reads_go_on_writes_resume(small_fs):
    data = os.path.join(small_fs, "log")
    init_log(data, ORIGIN)
    server = start_server(data)
    try:
        keys = await register_keys(server.url, server.vkey, data, 4)
        ledger = Ledger(ORIGIN, Verifier.from_vkey(server.vkey))
        load = Writers(ledger, keys, 24, retry_statuses=(507,))
        async with aiohttp.ClientSession() as http:
            for i in range(5):  # room to spare: acknowledged (few, so that the WAL stays short of its
                # automatic checkpoint, after which SQLite would reuse the WAL file's space for a while)
                assert await load.submit(http, server.url, submission(ORIGIN, keys[0], b"%d" % i)) == 201
            _fill(os.path.join(small_fs, "filler"), 48 * 1024)
            await _burst(load, server.url, 1.5)
            assert load.statuses.get(507, 0) > 0, load.statuses
            assert set(load.statuses) <= {201, 507}, load.statuses
            # Full: a clear 507, the served checkpoint does not move, reads and proofs go on.
            async with http.get(server.url + "/checkpoint") as r:
                note = await r.read()
            cp = ledger.saw(note)
            sub = submission(ORIGIN, keys[0], b"while full")
            async with http.post(server.url + "/v1/entries", json=sub.request) as r:
                assert r.status == 507 and "full" in (await r.json())["error"]
            await _reads_work(http, server.url, cp.size, note)
            async with http.get(server.url + "/healthz") as r:
                assert r.status == 200  # a full disk does not stop writes for good
            # Space returns: writes resume without a restart, the refused entry included.
            subprocess.run(["mount", "-o", "remount,size=32m", small_fs], check=True)
            load.statuses.clear()
            await load.retry_pending(http, server.url)
            async with http.post(server.url + "/v1/entries", json=sub.request) as r:
                assert r.status == 201
                ledger.ack(sub, json.loads(await r.read()))
            await _burst(load, server.url, 0.3)
            assert set(load.statuses) == {201}, load.statuses
    finally:
        kill_hard(server)
    # Nothing acknowledged lost, nothing unpersisted ever covered by a checkpoint a client saw.
    report = await asyncio.to_thread(fsck, data)
    assert report.returncode == 0, report.stdout
    server = start_server(data)
    try:
        async with aiohttp.ClientSession() as http:
            await Checker(ledger).check(http, server.url)
    finally:
        server.stop()
    assert ledger.problems == [] and ledger.pending == [], ledger.problems


async def _reads_work(http: aiohttp.ClientSession, url: str, size: int, note: bytes) -> None:
    async with http.get(url + "/checkpoint") as r:
        assert r.status == 200 and await r.read() == note
    for path in (f"/tile/0/000.p/{min(size, 255)}" if size < 256 else "/tile/0/000", "/v1/entries/1",
                 f"/v1/proofs/inclusion?index=1&tree_size={size}",
                 f"/v1/proofs/consistency?first=1&second={size}", "/v1/keys"):
        async with http.get(url + path) as r:
            assert r.status == 200, (path, r.status, await r.read())
