"""The monitor end to end with real processes (`tlog serve`, `python -m monitor`): an honest log with two
gossiping monitors and concurrent writers raises nothing; a split view built the way a malicious operator
would (a copy of the data directory, same keys, different entries after a common prefix) raises a fork on
both monitors with evidence that verifies offline; a restored backup raises a rollback; a stopped server
raises a freeze.  Short poll intervals keep the whole file well under a minute."""

from __future__ import annotations

import asyncio
import functools
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
import pytest

from monitor import verify_cli
from tests.conftest import ROOT, init_log, start_server
from tests.conftest import wait_for as _wait_for
from tlog.client import LogClient
from tlog.entry import register_event
from tlog.errors import TlogError
from tlog.evidence import verify_evidence
from tlog.keys import KeyType, PrivateKey
from tlog.note import Verifier

ORIGIN = "example.com/test-log"
FAST = ["--poll", "0.2", "--timeout", "3"]


@dataclass
class MonitorProcess:
    proc: subprocess.Popen
    url: str | None
    out: str
    err: str
    alerts_file: str

    def alerts(self) -> list[dict]:
        if not os.path.exists(self.alerts_file):
            return []
        with open(self.alerts_file) as f:
            return [json.loads(line) for line in f if line.strip()]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with open(self.err) as f:
            errors = f.read()
        assert "Traceback" not in errors and "internal error" not in errors, errors
        return self.proc.returncode


def monitor_cmd(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monitor", *args], capture_output=True, cwd=ROOT, timeout=timeout)


def start_monitor(tmp, name: str, logs: list[tuple[str, str]], *extra: str, listen: bool = True) -> MonitorProcess:
    state, out, err, alerts = (str(tmp / f"{name}.{x}") for x in ("state", "out", "err", "alerts"))
    args = ["--state", state, "--alerts", alerts, *FAST, *extra]
    for url, vkey in logs:
        args += ["--log", url, "--log-key", vkey]
    if listen:
        args += ["--listen", "127.0.0.1:0"]
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "monitor", *args], stdout=stdout, stderr=stderr, cwd=ROOT)
    mon = MonitorProcess(proc, None, out, err, alerts)
    if listen:
        deadline = time.monotonic() + 20
        while mon.url is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                mon.stop()
                with open(err) as f:
                    raise AssertionError(f"monitor did not start: {f.read()}")
            with open(out) as f:
                for line in f:
                    if line.startswith("listening on "):
                        mon.url = line.split(" ", 2)[2].strip()
            time.sleep(0.05)
    return mon


wait_for = functools.partial(_wait_for, timeout=20, interval=0.1)


async def head_size(http: aiohttp.ClientSession, mon: MonitorProcess) -> int | None:
    async with http.get(f"{mon.url}/status") as r:
        return (await r.json())["logs"][0]["head_size"]


async def register_writer(url: str, vkey: str, data: str, days: int = 60) -> PrivateKey:
    with open(os.path.join(data, "operator.key"), "rb") as f:
        operator = PrivateKey.from_pem(f.read())
    writer = PrivateKey.generate(KeyType.ED25519)
    now = time.time_ns() // 1_000_000
    async with LogClient(url, log_key=vkey) as client:
        await client.submit_operator_entry(
            register_event(ORIGIN, now, writer.public_key, "writer", now - 1000, now + days * 86_400_000), operator)
    return writer


async def append(url: str, vkey: str, writer: PrivateKey, payloads: list[bytes]) -> int:
    async with LogClient(url, log_key=vkey) as client:
        for p in payloads:
            receipt = await client.append(writer, p)
        return receipt.checkpoint.size


def serious(alerts: list[dict]) -> list[dict]:
    return [a for a in alerts if a["severity"] != "notice"]


def proven_fork(vkey: str):
    def check(alerts: list[dict]) -> dict | None:
        for a in alerts:
            if a["kind"] == "fork" and a["evidence"]:
                with open(a["evidence"], "rb") as f:
                    if verify_evidence(f.read(), Verifier.from_vkey(vkey)).proves_misbehaviour:
                        return a
        return None
    return check


# ---------------------------------------------------------------- an honest log

async def test_honest_log_with_gossiping_monitors_raises_nothing(tmp_path):
    data = str(tmp_path / "log")
    init_log(data, ORIGIN)
    server = start_server(data)
    m1 = start_monitor(tmp_path, "m1", [(server.url, server.vkey)], "--watch-entries", "--expiry-warning-days", "90")
    m2 = start_monitor(tmp_path, "m2", [(server.url, server.vkey)], "--peer", m1.url)
    try:
        writer = await register_writer(server.url, server.vkey, data)
        sizes = await asyncio.gather(*(append(server.url, server.vkey, writer, [b"w%d e%d" % (w, i) for i in range(6)])
                                       for w in range(3)))
        final = max(sizes)
        async with aiohttp.ClientSession() as http:
            for m in (m1, m2):
                await wait_for(lambda m=m: _equals(head_size(http, m), final), f"{m.url} to reach {final}")
            await wait_for(lambda: _value(any(a["kind"] == "key-event" for a in m1.alerts())), "the key event")
            await asyncio.sleep(0.5)  # a few more poll and gossip rounds
            # The gossip endpoints: pull, push, a forged checkpoint (400), an unknown log (404).
            async with http.get(f"{m1.url}/gossip") as r:
                [item] = (await r.json())["checkpoints"]
                note = item["checkpoint"].encode()
            async with http.get(f"{m2.url}/gossip/checkpoint?origin={quote(ORIGIN, safe='')}") as r:
                assert r.status == 200 and await r.read() == note
            twice = f"origin={quote(ORIGIN, safe='')}&origin=example.com%2Fother"
            async with http.get(f"{m2.url}/gossip/checkpoint?{twice}") as r:  # which would count?
                assert r.status == 400 and "more than once" in (await r.json())["error"]
            async with http.post(f"{m2.url}/gossip", data=note) as r:
                assert r.status == 200 and (await r.json())["verdict"] == "old-same-history"
            forged = note.replace(note.split(b"\n")[2], base64.b64encode(bytes(32)))
            async with http.post(f"{m2.url}/gossip", data=forged) as r:
                assert r.status == 400 and "signed" in (await r.json())["error"]
            other = note.replace(ORIGIN.encode(), b"example.com/other")
            async with http.post(f"{m2.url}/gossip", data=other) as r:
                assert r.status == 404
            async with http.get(f"{m1.url}/metrics") as r:
                metrics = await r.text()
            assert f'tlog_monitor_verified_tree_size{{origin="{ORIGIN}"}} {float(final)}' in metrics
            assert "tlog_monitor_checkpoint_age_seconds" in metrics
        assert serious(m2.alerts()) == [], m2.alerts()
        # m1 watches the entries: the registration is a notice, and the key (60 days) ends within 90 days.
        assert [(a["kind"], a["severity"]) for a in m1.alerts()] == [("key-event", "notice"),
                                                                      ("key-expiring", "warning")], m1.alerts()
        notice = m1.alerts()[0]
        assert notice["details"]["action"] == "register" and notice["origin"] == ORIGIN
        # --once with the key of another log of the same name: the log's notes do not verify, exit 1.
        impostor = init_log(str(tmp_path / "impostor"), ORIGIN)
        once = monitor_cmd("--state", str(tmp_path / "once.state"), "--log", server.url, "--log-key", impostor,
                           "--once")
        [line] = once.stdout.decode().splitlines()
        assert once.returncode == 1 and json.loads(line)["kind"] == "bad-signature", once.stderr
        # The state directory is locked while a monitor uses it; usage errors are one line, exit 2.
        busy = monitor_cmd("--state", str(tmp_path / "m1.state"), "--log", server.url, "--log-key", server.vkey,
                           "--once")
        assert busy.returncode == 2 and b"another monitor" in busy.stderr
        for args in (["--state", "x"], ["--state", "x", "--log", server.url, "--log-key", "nonsense"],
                     ["--state", "x", "--log", server.url, "--log-key", server.vkey, "--listen", "nope"],
                     ["--state", "x", "--log", server.url, "--log-key", server.vkey, "--poll", "-1"]):
            bad = monitor_cmd(*args)
            assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1, bad.stderr
    finally:
        codes = [m.stop() for m in (m1, m2)]
        server.stop()
    assert codes == [0, 0]
    # --once against the same log: nothing new, exit 0; the state keeps its head across runs.
    once = monitor_cmd("--state", str(tmp_path / "m2.state"), "--log", server.url, "--log-key", server.vkey,
                       "--once", "--stale-after", "3600")
    assert once.returncode == 0 and b"Traceback" not in once.stderr, once.stderr


async def _equals(coro, value) -> bool:
    return (await coro) == value


async def _value(value):
    return value


# ---------------------------------------------------------------- a split view

async def test_split_view_is_detected_by_both_monitors_with_offline_evidence(tmp_path):
    data_a, data_b = str(tmp_path / "log-a"), str(tmp_path / "log-b")
    init_log(data_a, ORIGIN)
    server_a = start_server(data_a)
    try:
        writer = await register_writer(server_a.url, server_a.vkey, data_a)
        await append(server_a.url, server_a.vkey, writer, [b"common %d" % i for i in range(3)])
    finally:
        server_a.stop()
    shutil.copytree(data_a, data_b)  # the operator's second copy: same keys, same prefix
    server_a, server_b = start_server(data_a), start_server(data_b)
    vkey = server_a.vkey
    assert server_b.vkey == vkey
    m1 = start_monitor(tmp_path, "m1", [(server_a.url, vkey)])
    m2 = start_monitor(tmp_path, "m2", [(server_b.url, vkey)], "--peer", m1.url)
    try:
        async with aiohttp.ClientSession() as http:
            for m in (m1, m2):
                await wait_for(lambda m=m: _equals(head_size(http, m), 5), "the common prefix")
        await asyncio.sleep(0.3)
        assert m1.alerts() == [] and m2.alerts() == []
        await append(server_a.url, vkey, writer, [b"shown to A %d" % i for i in range(2)])
        await append(server_b.url, vkey, writer, [b"shown to B %d" % i for i in range(4)])
        forks = []
        for m in (m1, m2):
            forks.append(await wait_for(lambda m=m: _value(proven_fork(vkey)(m.alerts())), f"a proven fork on {m.url}",
                                        timeout=15))
    finally:
        for m in (m1, m2):
            m.stop()
        server_a.stop()
        server_b.stop()
    for m in (m1, m2):
        alert = proven_fork(vkey)(m.alerts())
        assert alert["severity"] == "alert" and alert["origin"] == ORIGIN
        with open(alert["evidence"], "rb") as f:
            evidence = json.loads(f.read())
        assert evidence["log_key"] == vkey and len(evidence["checkpoints"]) == 2
        assert verify_cli.run(alert["evidence"], vkey) == 0
        # Tampered with, the same evidence proves nothing.
        for mutate in _mutations(evidence):
            with pytest.raises(TlogError):
                verify_evidence(mutate, Verifier.from_vkey(vkey))


def _mutations(evidence: dict):
    for i in (0, 1):
        e = json.loads(json.dumps(evidence))
        lines = e["checkpoints"][i].split("\n")
        lines[2] = base64.b64encode(bytes(32)).decode()
        e["checkpoints"][i] = "\n".join(lines)
        yield e
    if evidence["consistency_proof"]:
        e = json.loads(json.dumps(evidence))
        e["consistency_proof"][0] = base64.b64encode(bytes(32)).decode()
        yield e
    if evidence["prefix_root"]:
        e = json.loads(json.dumps(evidence))
        e["prefix_root"] = base64.b64encode(bytes(32)).decode()
        yield e


# ---------------------------------------------------------------- rollback and freeze

async def test_rollback_and_freeze_are_alerted(tmp_path):
    data, backup = str(tmp_path / "log"), str(tmp_path / "backup")
    init_log(data, ORIGIN)
    server = start_server(data)
    listen = server.url.removeprefix("http://")
    mon = start_monitor(tmp_path, "m", [(server.url, server.vkey)], "--stale-after", "1.5")
    try:
        writer = await register_writer(server.url, server.vkey, data)
        await append(server.url, server.vkey, writer, [b"one", b"two"])
        server.stop()
        shutil.copytree(data, backup)  # an older copy of the data directory (tree size 4)
        server = start_server(data, listen)
        size = await append(server.url, server.vkey, writer, [b"three", b"four", b"five"])
        async with aiohttp.ClientSession() as http:
            await wait_for(lambda: _equals(head_size(http, mon), size), "the monitor to see the latest tree")
        server.stop()
        shutil.rmtree(data)
        shutil.copytree(backup, data)
        server = start_server(data, listen)  # the operator restored the backup
        rollback = await wait_for(lambda: _value([a for a in mon.alerts() if a["kind"] == "rollback"]), "rollback")
        [alert] = rollback
        assert alert["details"]["served_size"] == size and alert["details"]["size"] == 4
        with open(alert["evidence"], "rb") as f:
            verdict = verify_evidence(f.read(), Verifier.from_vkey(server.vkey))
        assert [c.size for c in verdict.checkpoints] == [size, 4] and not verdict.proves_misbehaviour
        async with aiohttp.ClientSession() as http:
            assert await head_size(http, mon) == size  # the rollback was not accepted
        server.stop()  # frozen: nothing answers any more
        stale = await wait_for(lambda: _value([a for a in mon.alerts() if a["kind"] == "stale"]), "stale", timeout=10)
        assert stale[0]["details"]["reason"] == "unreachable"
    finally:
        code = mon.stop()
        server.stop()
    assert code == 0
    kinds = [a["kind"] for a in mon.alerts()]
    assert kinds.count("rollback") == 1 and kinds.count("stale") == 1 and "fork" not in kinds, kinds
    # Restarted with --once while the log is still down: the alerts are not raised again, exit 0.
    once = monitor_cmd("--state", str(tmp_path / "m.state"), "--log", server.url, "--log-key", server.vkey,
                       "--once", "--stale-after", "1.5", "--timeout", "1")
    assert once.returncode == 0 and once.stdout == b"", (once.stdout, once.stderr)
