"""The server's self-checks (tlog/server/scrub.py): `tlog fsck`, the periodic scrub that stops signing on a
mismatch while reads go on, and the start-up refusals (a restored backup, a corrupt database)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
import urllib.request
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from tests.conftest import init_log, start_server, tlog_cmd
from tests.test_export import WRITER, _fill
from tlog.client import LogClient, LogServerError
from tlog.server.scrub import ScrubFailedError, Scrubber, _verifier, scrub_database


def _db(data: str) -> sqlite3.Connection:
    conn = sqlite3.connect(os.path.join(data, "log.db"), timeout=10, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 10000")
    return conn


def _exec(data: str, sql: str, params: tuple = ()) -> int:
    conn = _db(data)
    try:
        return conn.execute(sql, params).rowcount
    finally:
        conn.close()


def _one(data: str, sql: str, params: tuple = ()):
    conn = _db(data)
    try:
        return conn.execute(sql, params).fetchone()
    finally:
        conn.close()


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


@pytest.fixture(scope="module")
def populated(tmp_path_factory):
    """A stopped log of 302 entries (genesis, a key, 300 events): copy it before changing anything."""
    data = str(tmp_path_factory.mktemp("scrub") / "log")
    init_log(data)
    server = start_server(data)
    try:
        asyncio.run(_fill(server, 300))
        served = _get(server.url + "/checkpoint")[1]

        def published() -> bytes:
            with open(os.path.join(data, "published-checkpoint"), "rb") as f:
                return f.read()
        deadline = time.monotonic() + 5  # the file follows within its 50 ms interval
        while published() != served:
            assert time.monotonic() < deadline, "published-checkpoint did not catch up"
            time.sleep(0.02)
    finally:
        server.stop()
    return data


def _copy(populated, tmp_path) -> str:
    data = str(tmp_path / "log")
    shutil.copytree(populated, data)
    return data


def _flip_blob(blob: bytes, at: int = -3) -> bytes:
    b = bytearray(blob)
    b[at] ^= 0x01
    return bytes(b)


def test_fsck_of_a_healthy_log(populated, tmp_path):
    data = _copy(populated, tmp_path)
    proc = tlog_cmd("fsck", "--data", data)
    assert proc.stdout.startswith(b"OK: tree size 302: 302 leaves re-hashed, 3 hash tiles rebuilt")
    assert b"300 payload commitments checked (0 erased)" in proc.stdout


TAMPERING = {
    "leaf updated": (lambda d: _exec(d, "UPDATE leaves SET leaf = ? WHERE idx = 5",
                                     (_flip_blob(_one(d, "SELECT leaf FROM leaves WHERE idx = 5")[0]),)),
                     b"leaf 5: its hash differs in the level-0 tile tile/0/000 (hash 5)"),
    "leaf deleted": (lambda d: _exec(d, "DELETE FROM leaves WHERE idx = 100"), b"leaf 100 is missing"),
    "level-0 tile updated": (lambda d: _exec(d, "UPDATE tiles SET data = ? WHERE level = 0 AND idx = 1",
                                             (_flip_blob(_one(d, "SELECT data FROM tiles WHERE level = 0 AND idx = 1")[0], 40),)),
                             b"leaf 257: its hash differs in the level-0 tile tile/0/001"),
    "level-1 tile deleted": (lambda d: _exec(d, "DELETE FROM tiles WHERE level = 1"),
                             b"the subtree from leaf 0: the stored tile does not match the stored leaves: "
                             b"tile/1/000.p/1 is missing"),
    "tile tree updated": (lambda d: _exec(d, "UPDATE tile_trees SET data = ? WHERE id = 0",
                                          (_flip_blob(_one(d, "SELECT data FROM tile_trees WHERE id = 0")[0], 9000),)),
                          b"the stored tree of hash tile 0/0 does not match the tile"),
    "inclusion path updated": (lambda d: _exec(d, "UPDATE tile_paths SET data = ? WHERE id = 3",
                                               (_flip_blob(_one(d, "SELECT data FROM tile_paths WHERE id = 3")[0], 100),)),
                               b"the stored inclusion path of leaves 48.. does not match the tile"),
    "payload updated": (lambda d: _exec(d, "UPDATE payloads SET payload = x'00' WHERE idx = 7"),
                        b"the stored payload of entry 7 does not match its commitment"),
    "payload deleted": (lambda d: _exec(d, "DELETE FROM payloads WHERE idx = 9"),
                        b"the payload of entry 9 is missing and no erasure entry covers it"),
    "old checkpoint altered": (lambda d: _exec(d, "UPDATE checkpoints SET note = ? WHERE size = 2",
                                               (_flip_blob(_one(d, "SELECT note FROM checkpoints WHERE size = 2")[0], -10),)),
                               b"stored checkpoint at size 2 does not verify"),
}


@pytest.mark.parametrize("name", list(TAMPERING))
def test_fsck_finds_tampering(populated, tmp_path, name):
    data = _copy(populated, tmp_path)
    tamper, message = TAMPERING[name]
    assert tamper(data) == 1
    proc = tlog_cmd("fsck", "--data", data, check=False)
    assert proc.returncode == 1, proc.stdout
    assert message in proc.stdout, proc.stdout
    assert b"tlog: fsck FAILED" in proc.stderr and b"Traceback" not in proc.stderr


def _degraded(url: str, why: str) -> dict:
    """Wait (at most 30 s) until /healthz answers 503 degraded; its JSON body."""
    deadline = time.monotonic() + 30
    while _get(url + "/healthz")[0] != 503:
        assert time.monotonic() < deadline, why
        time.sleep(0.1)
    health = json.loads(_get(url + "/healthz")[1])
    assert health["status"] == "degraded"
    return health


def _set_config(data: str, **settings) -> None:
    path = os.path.join(data, "config.json")
    with open(path) as f:
        config = json.load(f)
    config.update(settings)
    with open(path, "w") as f:
        json.dump(config, f)


async def test_running_server_stops_signing_when_the_scrub_fails(populated, tmp_path):
    data = _copy(populated, tmp_path)
    _set_config(data, scrub_interval_seconds=0.3)
    server = start_server(data)
    try:
        status, before = _get(server.url + "/checkpoint")
        assert status == 200 and _get(server.url + "/healthz")[0] == 200
        _exec(data, "UPDATE leaves SET leaf = ? WHERE idx = 50",
              (_flip_blob(_one(data, "SELECT leaf FROM leaves WHERE idx = 50")[0]),))
        health = _degraded(server.url, "the scrub did not stop writes")
        assert "self-check failed: leaf 50: its hash differs" in health["writes"]
        async with LogClient(server.url, log_key=server.vkey) as client:
            with pytest.raises(LogServerError) as err:
                await client.append(WRITER, b"after the scrub failed")
        assert err.value.status == 503
        assert _get(server.url + "/checkpoint") == (200, before)  # nothing new signed; reads go on
        assert _get(server.url + "/tile/0/000")[0] == 200
        metrics = _get(server.url + "/metrics")[1].decode()
        assert 'tlog_scrub_runs_total{outcome="failed"} 1.0' in metrics and "tlog_writes_stopped 1.0" in metrics
        assert any(line.get("event") == "scrub_failed" for line in server.logs())
    finally:
        server.stop()


def _scrubber(data: str, size: int):
    """A :class:`Scrubber` on a stopped copy of a log, with just the state it uses."""
    state = SimpleNamespace(data_dir=data, head=SimpleNamespace(size=size), sequencer=SimpleNamespace(stopped=None),
                            metrics=SimpleNamespace(registry=CollectorRegistry()))
    return Scrubber(state, 0, _verifier(data)), state


async def test_the_periodic_scrub_runs_in_a_process_of_its_own_and_reports_what_scrub_database_does(
        populated, tmp_path):
    """The server's scrub runs tlog/server/scrubchild.py (a thread of the sequencer process halved the
    append rate while it ran); its verdicts, intact and damaged, are scrub_database's own."""
    data = _copy(populated, tmp_path)
    scrubber, state = _scrubber(data, 302)
    assert scrubber.child_command(302)[1:3] == ["-m", "tlog.server.scrubchild"]
    report = await scrubber.scrub_once()
    direct = scrub_database(os.path.join(data, "log.db"), _verifier(data), size=302)
    assert report.ok and not report.stopped_early and state.sequencer.stopped is None
    assert (report.size, report.leaves, report.tiles, report.checkpoints) == \
        (direct.size, direct.leaves, direct.tiles, direct.checkpoints) == (302, 302, direct.tiles, direct.checkpoints)
    _exec(data, "UPDATE leaves SET leaf = ? WHERE idx = 50",
          (_flip_blob(_one(data, "SELECT leaf FROM leaves WHERE idx = 50")[0]),))
    report = await scrubber.scrub_once()
    assert report.problems == scrub_database(os.path.join(data, "log.db"), _verifier(data), size=302).problems
    assert "leaf 50: its hash differs" in report.problems[0]
    assert isinstance(state.sequencer.stopped, ScrubFailedError)


def test_the_scrub_process_runs_at_the_lowest_cpu_priority(populated, tmp_path):
    """SCHED_IDLE (and nice 19): it runs on idle cores and a waking server process preempts it."""
    data = _copy(populated, tmp_path)
    code = ("import os, sys; from tlog.server import scrubchild; rc = scrubchild.main(sys.argv[1:]); "
            "print(os.nice(0), os.sched_getscheduler(0) == os.SCHED_IDLE, file=sys.stderr); sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, data, "302", _verifier(data).to_vkey()],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["leaves"] == 302 and done.stderr.split() == ["19", "True"]
    bad = subprocess.run([sys.executable, "-m", "tlog.server.scrubchild", data, "many"], capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "usage:" in bad.stderr and "Traceback" not in bad.stderr


async def test_stopping_the_server_stops_a_scrub_process_and_a_failed_one_stops_no_writes(populated, tmp_path):
    data = _copy(populated, tmp_path)
    scrubber, state = _scrubber(data, 302)
    scrubber.child_command = lambda size: [sys.executable, "-c", "import time; time.sleep(60)"]
    task = asyncio.ensure_future(scrubber.scrub_once())
    while scrubber._child is None:
        await asyncio.sleep(0.01)
    started = time.monotonic()
    scrubber.stop()
    report = await asyncio.wait_for(task, 10)
    assert report.stopped_early and time.monotonic() - started < 5 and state.sequencer.stopped is None

    scrubber, state = _scrubber(data, 302)  # a process that dies without a report: no verdict
    scrubber.child_command = lambda size: [sys.executable, "-c", "import sys; sys.exit('killed by the OOM killer')"]
    report = await scrubber.scrub_once()
    assert report.stopped_early and state.sequencer.stopped is None
    assert scrubber.runs.labels("error")._value.get() == 1 and scrubber.runs.labels("failed")._value.get() == 0


def test_startup_refuses_a_database_behind_its_published_checkpoint(populated, tmp_path):
    data = _copy(populated, tmp_path)
    backup = str(tmp_path / "backup.db")
    shutil.copy(os.path.join(data, "log.db"), backup)  # the log is stopped: no WAL to copy
    server = start_server(data)
    try:
        import asyncio
        asyncio.run(_fill(server, 5, register=False))
    finally:
        server.stop()
    latest = str(tmp_path / "latest.db")
    shutil.copy(os.path.join(data, "log.db"), latest)
    shutil.copy(backup, os.path.join(data, "log.db"))
    proc = tlog_cmd("serve", "--data", data, "--listen", "127.0.0.1:0", check=False, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert (b"the database is behind the last checkpoint this log published (size 307, the database has 302)"
            in proc.stderr) and b"Traceback" not in proc.stderr
    fsck = tlog_cmd("fsck", "--data", data, check=False)
    assert fsck.returncode == 1 and b"the database is behind" in fsck.stdout
    shutil.copy(latest, os.path.join(data, "log.db"))
    start_server(data).stop()  # the right database starts again


@pytest.mark.parametrize("damage", ["garbage page", "truncated"])
def test_startup_refuses_a_corrupt_database(populated, tmp_path, damage):
    data = _copy(populated, tmp_path)
    path = os.path.join(data, "log.db")
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        if damage == "truncated":
            f.truncate(size // 2)
        else:
            f.seek(size // 2)
            f.write(os.urandom(8192))
    proc = tlog_cmd("serve", "--data", data, "--listen", "127.0.0.1:0", check=False, timeout=30)
    assert proc.returncode == 2, proc.stderr
    assert b"refusing to start" in proc.stderr or b"malformed" in proc.stderr, proc.stderr
    assert b"Traceback" not in proc.stderr


def _garbage_index_page(data: str) -> None:
    """Overwrite one leaf page of the integration-time index (not read at start-up) with garbage."""
    conn = _db(data)
    try:
        (pageno,) = conn.execute("SELECT pageno FROM dbstat WHERE name = 'leaves_time' AND pagetype = 'leaf' "
                                 "ORDER BY pageno LIMIT 1").fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
    finally:
        conn.close()
    with open(os.path.join(data, "log.db"), "r+b") as f:
        f.seek((pageno - 1) * page_size)
        f.write(os.urandom(page_size))


def test_a_large_database_is_checked_in_the_background_and_a_failure_stops_writes(populated, tmp_path):
    """Above startup_check_max_bytes the server starts without PRAGMA quick_check, runs it right after,
    and a damaged page stops writes (503, /healthz degraded) while reads go on; below it (the default
    for this small log), start-up refuses the same file."""
    data = _copy(populated, tmp_path)
    _garbage_index_page(data)
    refused = tlog_cmd("serve", "--data", data, "--listen", "127.0.0.1:0", check=False, timeout=30)
    assert refused.returncode == 2 and b"PRAGMA quick_check failed" in refused.stderr, refused.stderr
    _set_config(data, startup_check_max_bytes=0, scrub_interval_seconds=0)
    server = start_server(data)
    try:
        health = _degraded(server.url, "the background check did not stop writes")
        assert "self-check failed: PRAGMA quick_check failed" in health["writes"]
        assert _get(server.url + "/checkpoint")[0] == 200 and _get(server.url + "/tile/0/000")[0] == 200
        events = [line.get("event") for line in server.logs()]
        assert "startup_check_deferred" in events and "startup_check_failed" in events
    finally:
        server.stop()


def test_a_large_intact_database_passes_the_background_check(populated, tmp_path):
    data = _copy(populated, tmp_path)
    _set_config(data, startup_check_max_bytes=0, scrub_interval_seconds=0)
    server = start_server(data)
    try:
        deadline = time.monotonic() + 30
        while "startup_check_ok" not in [line.get("event") for line in server.logs()]:
            assert time.monotonic() < deadline, "the background check did not finish"
            time.sleep(0.1)
        assert _get(server.url + "/healthz")[0] == 200
    finally:
        server.stop()


@pytest.mark.parametrize("value", [-1, 1.5, True, "1"])
def test_startup_check_max_bytes_must_be_a_byte_count(populated, tmp_path, value):
    data = _copy(populated, tmp_path)
    _set_config(data, startup_check_max_bytes=value)
    proc = tlog_cmd("serve", "--data", data, "--listen", "127.0.0.1:0", check=False, timeout=30)
    assert proc.returncode == 2 and b"startup_check_max_bytes must be an integer >= 0" in proc.stderr, proc.stderr
    assert b"Traceback" not in proc.stderr
