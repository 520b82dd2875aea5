"""Fault 4 of issue 8: rollback, truncation and bit flips, beyond tests/test_scrub.py (which changes rows
through SQL and restores an old log.db).  Here the damage is done to the files' bytes, as a failing disk
or a careless restore would: a flipped bit in a stored leaf or in a stored interior node, found by the
running server's scrub (it stops signing; reads go on) and by `tlog fsck`; a write-ahead log cut short
or bit-flipped after a crash, which start-up refuses; and a rollback that a real `tlog-monitor` (`--once`)
which had seen the newer checkpoint reports as an alert."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import aiohttp
import pytest

from tests.conftest import ROOT, init_log, start_server, tlog_cmd
from tests.crashkit import ORIGIN, kill_hard, register_keys, submission
from tests.test_scrub import _copy, _get, _set_config, populated  # noqa: F401  (a module fixture)


def _row(data: str, sql: str) -> tuple:
    conn = sqlite3.connect(f"file:{os.path.join(data, 'log.db')}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchone()
    finally:
        conn.close()


def _flip_on_disk(path: str, needle: bytes, at: int) -> None:
    """Flip one bit of byte ``at`` of the only copy of ``needle`` in the file's bytes (not through SQLite)."""
    with open(path, "r+b") as f:
        raw = f.read()
        where = raw.find(needle)
        assert where >= 0 and raw.find(needle, where + 1) < 0, "the bytes are not stored exactly once"
        f.seek(where + at)
        f.write(bytes([raw[where + at] ^ 0x04]))
        f.flush()
        os.fsync(f.fileno())


def _leaf_bytes(data: str) -> tuple[bytes, int]:
    """A stored leaf blob (leaf 50), a bit of its signature."""
    [leaf] = _row(data, "SELECT leaf FROM leaves WHERE idx = 50")
    return bytes(leaf), len(leaf) - 20


def _node_bytes(data: str) -> tuple[bytes, int]:
    """The stored interior node (8, 0): the one hash of tile/1/000.p/1, the root of leaves 0..255."""
    [tile] = _row(data, "SELECT data FROM tiles WHERE level = 1 AND idx = 0")
    return bytes(tile), 7


def _column_bytes(data: str) -> tuple[bytes, int]:
    """Leaf 50's identity column, which deduplication looks up (in the table row, right after the leaf:
    SQLite stores the 64-bit integer as 8 big-endian bytes)."""
    leaf, ident = _row(data, "SELECT leaf, ident FROM leaves WHERE idx = 50")
    assert abs(ident) >= 1 << 47
    return bytes(leaf) + ident.to_bytes(8, "big", signed=True), len(leaf) + 3


# What to damage: the bytes, found through SQL in the stopped log, and which of them to flip; the scrub's report.
DAMAGE = {
    "leaf": (_leaf_bytes, "leaf 50: its hash differs in the level-0 tile"),
    "node": (_node_bytes, "the subtree from leaf 0: the stored tile does not match the stored leaves"),
    "leaf index column": (_column_bytes, "leaf 50: its index columns (identity, leaf hash, key, time) do not match"),
}


@pytest.mark.parametrize("what", list(DAMAGE))
async def test_bit_flip_on_disk_stops_signing_and_fails_fsck(populated, tmp_path, what):  # noqa: F811
    data = _copy(populated, tmp_path)
    locate, message = DAMAGE[what]
    needle, at = locate(data)
    _set_config(data, scrub_interval_seconds=0.3)
    server = start_server(data)
    try:
        status, before = _get(server.url + "/checkpoint")
        assert status == 200 and _get(server.url + "/healthz")[0] == 200
        _flip_on_disk(os.path.join(data, "log.db"), needle, at)
        deadline = time.monotonic() + 30
        while _get(server.url + "/healthz")[0] != 503:
            assert time.monotonic() < deadline, "the scrub did not find the flipped bit"
            time.sleep(0.1)
        health = json.loads(_get(server.url + "/healthz")[1])
        assert health["status"] == "degraded" and message in health["writes"], health
        async with aiohttp.ClientSession() as http:  # no new signature; reads go on
            from tests.test_export import WRITER
            async with http.post(server.url + "/v1/entries", json=submission(
                    "example.com/test-log", WRITER, b"after the flip").request) as r:
                assert r.status == 503
        assert _get(server.url + "/checkpoint") == (200, before)
        assert _get(server.url + "/v1/proofs/consistency?first=10&second=302")[0] == 200
    finally:
        server.stop()
    fsck = tlog_cmd("fsck", "--data", data, check=False)
    assert fsck.returncode == 1 and message.encode() in fsck.stdout, fsck.stdout


async def _crashed_log_with_recent_commits(tmp_path) -> str:
    """A log killed with SIGKILL right after acknowledged appends: they live only in log.db-wal, and
    DIR/published-checkpoint names the newest tree."""
    data = str(tmp_path / "log")
    init_log(data, ORIGIN)
    server = start_server(data)
    try:
        [key] = await register_keys(server.url, server.vkey, data, 1)
        async with aiohttp.ClientSession() as http:
            for i in range(20):
                async with http.post(server.url + "/v1/entries", json=submission(ORIGIN, key, b"%d" % i).request) as r:
                    assert r.status == 201
            deadline = time.monotonic() + 10
            while _published_size(data) != 22:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
    finally:
        kill_hard(server)
    assert os.path.getsize(os.path.join(data, "log.db-wal")) > 0
    return data


def _published_size(data: str) -> int | None:
    try:
        with open(os.path.join(data, "published-checkpoint"), "rb") as f:
            return int(f.read().split(b"\n")[1])
    except (OSError, IndexError, ValueError):
        return None


@pytest.mark.parametrize("damage", ["wal truncated", "wal bit flipped"])
async def test_startup_refuses_a_damaged_write_ahead_log(tmp_path, damage):
    """The last commits are lost from the WAL (cut short, or a checksum broken by a flipped bit: SQLite
    stops recovering at the first bad frame): the database is behind what the log published."""
    data = await _crashed_log_with_recent_commits(tmp_path)
    wal = os.path.join(data, "log.db-wal")
    frame = 24 + 4096
    size = os.path.getsize(wal)
    if damage == "wal truncated":
        os.truncate(wal, size - 3 * frame)
    else:
        with open(wal, "r+b") as f:
            f.seek(size - 3 * frame + 24 + 100)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0x01]))
    proc = tlog_cmd("serve", "--data", data, "--listen", "127.0.0.1:0", check=False, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert b"the database is behind the last checkpoint this log published (size 22" in proc.stderr
    assert b"Traceback" not in proc.stderr
    fsck = tlog_cmd("fsck", "--data", data, check=False)
    assert fsck.returncode == 1 and b"the database is behind" in fsck.stdout


def _monitor_once(state: str, url: str, vkey: str) -> subprocess.CompletedProcess:
    """A real `tlog-monitor` run (`python -m monitor` is its entry point), once."""
    return subprocess.run([sys.executable, "-m", "monitor", "--state", state, "--log", url, "--log-key", vkey,
                           "--once", "--stale-after", "3600", "--timeout", "5"],
                          capture_output=True, cwd=ROOT, timeout=60)


async def test_rollback_refused_at_startup_and_alerted_by_a_monitor(tmp_path):
    data, backup, state = str(tmp_path / "log"), str(tmp_path / "backup"), str(tmp_path / "monitor")
    init_log(data, ORIGIN)
    server = start_server(data)
    listen = server.url.removeprefix("http://")
    try:
        [key] = await register_keys(server.url, server.vkey, data, 1)
    finally:
        server.stop()
    shutil.copytree(data, backup)  # a backup of the whole directory at size 2
    server = start_server(data, listen)
    try:
        async with aiohttp.ClientSession() as http:
            for i in range(3):
                async with http.post(server.url + "/v1/entries", json=submission(ORIGIN, key, b"%d" % i).request) as r:
                    assert r.status == 201
        seen = _monitor_once(state, server.url, server.vkey)
        assert seen.returncode == 0 and seen.stdout == b"", seen
    finally:
        server.stop()
    # Restoring only the old database: the server refuses (DIR/published-checkpoint says size 5).
    shutil.copy(os.path.join(backup, "log.db"), os.path.join(data, "log.db"))
    refused = tlog_cmd("serve", "--data", data, "--listen", "127.0.0.1:0", check=False, timeout=30)
    assert refused.returncode == 2 and b"the database is behind" in refused.stderr, refused.stderr
    # Restoring the whole directory defeats that check: the monitor that saw size 5 raises the alarm.
    shutil.rmtree(data)
    shutil.copytree(backup, data)
    server = start_server(data, listen)
    try:
        alerted = _monitor_once(state, server.url, server.vkey)
    finally:
        server.stop(signal.SIGTERM)
    assert alerted.returncode == 1, alerted
    alerts = [json.loads(line) for line in alerted.stdout.splitlines()]
    rollback = [a for a in alerts if a["kind"] == "rollback"]
    assert rollback and rollback[0]["details"]["served_size"] == 5 and rollback[0]["details"]["size"] == 2, alerts
