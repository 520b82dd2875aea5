"""Fault 5 of issue 8: the clock steps back, end to end.  The real server runs under libfaketime with a
clock read from a file (``FAKETIME_TIMESTAMP_FILE``, re-read on every call), so the test moves the
server's wall clock back an hour while it runs, and keeps it there across a restart.  Every checkpoint
the server signs has a timestamp strictly greater than the one before (the stored checkpoint times), and
integration times never decrease (the entries' ``integrated_ms``).  The monotonic clock is left alone
(asyncio's timers use it).  tests/test_sequencer.py checks the same rule in process with an injected
clock; this checks it against the real clock source the server reads.  Skips without libfaketime
(scripts/install-test-deps installs the ``faketime`` package)."""

from __future__ import annotations

import glob
import os
import sqlite3
import time

import aiohttp
import pytest

from tests.conftest import init_log, start_server
from tests.crashkit import ORIGIN, register_keys, submission

LIBFAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), None)
HOUR_MS = 3_600_000

pytestmark = pytest.mark.skipif(LIBFAKETIME is None, reason="libfaketime is not installed "
                                "(scripts/install-test-deps installs the faketime package)")


def _set_offset(path: str, seconds: int) -> None:
    with open(path, "w") as f:
        f.write(f"{seconds:+d}\n")


def _stored(data: str) -> tuple[list[int], list[int]]:
    """Every stored checkpoint's timestamp (by size) and every leaf's integration time (by index)."""
    conn = sqlite3.connect(f"file:{os.path.join(data, 'log.db')}?mode=ro", uri=True)
    try:
        checkpoints = [int(t) for (t,) in conn.execute("SELECT timestamp_ms FROM checkpoints ORDER BY size")]
        leaves = [int(t) for (t,) in conn.execute("SELECT integrated_ms FROM leaves ORDER BY idx")]
        return checkpoints, leaves
    finally:
        conn.close()


async def _append(url: str, key, ts_ms: int | None = None) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/v1/entries", json=submission(ORIGIN, key, b"tick", ts=ts_ms).request) as r:
            assert r.status == 201, await r.read()
            return (await r.json())["index"]


async def test_checkpoint_time_strictly_increases_when_the_server_clock_steps_back(tmp_path, monkeypatch):
    """The writers' clocks are right (this process's), the server's steps back: writing goes on, and no
    time the server stamps goes back with its clock."""
    data, clock = str(tmp_path / "log"), str(tmp_path / "faketime")
    init_log(data, ORIGIN)
    _set_offset(clock, 0)
    for name, value in (("LD_PRELOAD", LIBFAKETIME), ("FAKETIME_TIMESTAMP_FILE", clock),
                        ("FAKETIME_NO_CACHE", "1"), ("FAKETIME_DONT_FAKE_MONOTONIC", "1")):
        monkeypatch.setenv(name, value)  # for the server process only (this one is already running)
    server = start_server(data)
    try:
        [key] = await register_keys(server.url, server.vkey, data, 1, valid_before_ms=3 * HOUR_MS)
        for _ in range(3):
            await _append(server.url, key)
        before = time.time_ns() // 1_000_000
        _set_offset(clock, -3600)  # the server's clock jumps an hour back
        for _ in range(3):
            await _append(server.url, key)
    finally:
        server.stop()
    server = start_server(data)  # restarted while its clock is still an hour behind
    try:
        for _ in range(3):
            await _append(server.url, key)
        _set_offset(clock, -7200)  # and once more, while it runs
        last = await _append(server.url, key)
    finally:
        server.stop()
    checkpoints, leaves = _stored(data)
    assert last == len(leaves) - 1 == 11  # genesis, the key, 10 entries
    assert all(a < b for a, b in zip(checkpoints, checkpoints[1:])), checkpoints
    assert all(a <= b for a, b in zip(leaves, leaves[1:])), leaves
    # The server's clock really went back: without the rule these would be an hour or two in the past.
    assert checkpoints[-1] >= before - 1000 and leaves[-1] >= before - 1000
