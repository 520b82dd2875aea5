"""End to end with real processes: `tlog export` (resumable, a pinned snapshot, payloads through a reader
token), `tlog audit` of the export and of the live log, and `tlog verify` with networking disabled."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, tlog_cmd
from tlog.client import LogClient
from tlog.entry import register_event
from tlog.keys import KeyType, PrivateKey
from tlog.note import Signer, vkey_for

WRITER = PrivateKey.generate(KeyType.ED25519)
OTHER_VKEY = vkey_for(Signer.generate("example.com/x", seed=bytes(32)))


def _env(server) -> dict:
    return {"TLOG_LOG": server.url, "TLOG_LOG_KEY": server.vkey}


async def _fill(server, events: int, *, register: bool = True) -> list:
    """Register WRITER (once) and append ``events`` entries; the receipts, with salts and payloads."""
    from tlog.server.config import check_private_file

    out = []
    async with LogClient(server.url, log_key=server.vkey) as client:
        if register:
            operator = PrivateKey.from_pem(check_private_file(os.path.join(server.data, "operator.key")))
            now = time.time_ns() // 1_000_000
            await client.submit_operator_entry(
                register_event(client.origin, now, WRITER.public_key, "writer", now - 1000, now + 86_400_000),
                operator)
        for start in range(0, events, 100):
            batch = range(start, min(start + 100, events))
            salts = [os.urandom(32) for _ in batch]
            receipts = await asyncio.gather(*(client.append(WRITER, b'{"n": %d}' % i, salt=s)
                                              for i, s in zip(batch, salts)))
            out.extend(zip(receipts, salts, (b'{"n": %d}' % i for i in batch)))
    return out


def _token(server) -> str:
    return tlog_cmd("tokens", "create", "--data", server.data).stdout.decode().strip()


def _files(path) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs}


# ---------------------------------------------------------------------------------------- offline runs

def _unshare_works() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


def offline(*args: str, tmp_path, sitecustomize: bool = False) -> subprocess.CompletedProcess:
    """Run ``python -m tlog ARGS`` with networking disabled: in a new network namespace (``unshare -n``,
    no interface is up, not even loopback) when we may, else (or with ``sitecustomize=True``) with a
    sitecustomize that makes every socket() raise.  The same wrapper is first proven to block a connection."""
    if _unshare_works() and not sitecustomize:
        prefix, env = ["unshare", "-n"], dict(os.environ)
    else:
        site = tmp_path / "nonet"
        site.mkdir(exist_ok=True)
        (site / "sitecustomize.py").write_text(
            "import socket\n"
            "class _NoNetwork(socket.socket):\n"
            "    def __init__(self, *a, **k):\n"
            "        raise OSError('networking is disabled in this test')\n"
            "socket.socket = _NoNetwork\n")
        prefix, env = [], {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}"}
    probe = subprocess.run(prefix + [sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', 9), 2)"],
                           capture_output=True, env=env, cwd=ROOT)
    assert probe.returncode != 0, "the offline wrapper did not block networking"
    return subprocess.run(prefix + [sys.executable, "-m", "tlog", *args], capture_output=True, env=env, cwd=ROOT,
                          timeout=60)


# ---------------------------------------------------------------------------------------- tests

async def test_export_audit_and_offline_verify(log_server, tmp_path):
    receipts = await _fill(log_server, 300)
    env = _env(log_server)
    erased_index = receipts[7][0].index
    tlog_cmd("erase", str(erased_index), "--reason", "test", "--operator-key",
             os.path.join(log_server.data, "operator.key"), env=env)
    out = str(tmp_path / "export")
    first = tlog_cmd("export", "--out", out, "--token", _token(log_server), env=env)
    assert b"exported example.com/test-log at tree size 303" in first.stdout and b"payloads included" in first.stdout
    assert {"checkpoint", "export.json", "registry.json", "tile/0/000", "tile/0/001.p/47", "tile/1/000.p/1",
            "tile/entries/000", "tile/entries/001.p/47", "payloads/000", "payloads/001.p/47"} <= _files(out)
    assert not os.path.exists(os.path.join(out, "checkpoint.pending"))

    report_path = str(tmp_path / "report.json")
    audit = tlog_cmd("audit", "--dir", out, "--json", report_path, env=env)
    assert b"tree size 303: OK" in audit.stdout
    with open(report_path) as f:
        report = json.load(f)
    assert report["ok"] and report["payloads"] == {"exported": True, "checked": 299, "erased": 1}
    assert report["signatures_verified"] == 300 and report["keys"] == 1

    again = tlog_cmd("export", "--out", out, "--token", _token(log_server), env=env)
    assert b": 0 files downloaded" in again.stdout

    live = tlog_cmd("audit", "--log", log_server.url, env=env)
    assert b"tree size 303: OK" in live.stdout and b"payloads: not checked" in live.stdout

    receipt, salt, payload = receipts[42]
    rfile, pfile = tmp_path / "r.tlog-proof", tmp_path / "payload"
    rfile.write_bytes(receipt.tlog_proof)
    pfile.write_bytes(payload)
    ok = offline("verify", str(rfile), "--log-key", log_server.vkey, "--registry", out, "--payload", str(pfile),
                 "--salt", base64.b64encode(salt).decode(), tmp_path=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(b"OK: entry %d is in example.com/test-log" % receipt.index)
    assert b"key registry (key 'writer'" in ok.stdout and b"payload commitment" in ok.stdout
    pfile.write_bytes(payload + b"!")
    bad = offline("verify", str(rfile), "--log-key", log_server.vkey, "--registry", out, "--payload", str(pfile),
                  "--salt", base64.b64encode(salt).decode(), tmp_path=tmp_path)
    assert bad.returncode == 1 and b"receipt INVALID: payload commitment" in bad.stderr

    offline_audit = offline("audit", "--dir", out, "--log-key", log_server.vkey, tmp_path=tmp_path)
    assert offline_audit.returncode == 0 and b"OK" in offline_audit.stdout

    path = os.path.join(out, "tile/entries/000")
    with open(path, "r+b") as f:
        data = bytearray(f.read())
        data[-5] ^= 0x40  # in the last entry's signature: entry 255
        f.seek(0)
        f.write(data)
    failed = tlog_cmd("audit", "--dir", out, "--log-key", log_server.vkey, check=False)
    assert failed.returncode == 1 and b"audit FAILED at index 255 (leaf hash)" in failed.stderr
    assert b"Traceback" not in failed.stderr


async def test_export_is_a_pinned_snapshot_that_resumes_and_grows(log_server, tmp_path):
    await _fill(log_server, 40)
    env = _env(log_server)
    out = str(tmp_path / "export")
    tlog_cmd("export", "--out", out, env=env)
    with open(os.path.join(out, "checkpoint"), "rb") as f:
        first = f.read()
    assert b"\n42\n" in first and "tile/0/000.p/42" in _files(out)

    # An export interrupted after pinning size 142: the log grows meanwhile, the re-run finishes 142.
    await _fill(log_server, 100, register=False)
    async with LogClient(log_server.url, log_key=log_server.vkey) as client:
        pinned = await client._request("GET", "/checkpoint", raw=True)
    await _fill(log_server, 200, register=False)
    with open(os.path.join(out, "checkpoint.pending"), "wb") as f:
        f.write(pinned)
    resumed = tlog_cmd("export", "--out", out, env=env)
    assert b"at tree size 142 (was 42)" in resumed.stdout
    assert "tile/0/000.p/42" not in _files(out) and "tile/0/000.p/142" in _files(out)
    assert b"tree size 142: OK" in tlog_cmd("audit", "--dir", out, env=env).stdout

    grown = tlog_cmd("export", "--out", out, env=env)
    assert b"at tree size 342 (was 142)" in grown.stdout
    assert {"tile/0/000", "tile/0/001.p/86", "tile/1/000.p/1"} <= _files(out)
    assert "tile/0/000.p/142" not in _files(out)
    assert b"tree size 342: OK" in tlog_cmd("audit", "--dir", out, env=env).stdout


async def test_export_with_a_bad_token_fails_clearly(log_server, tmp_path):
    await _fill(log_server, 3)
    proc = tlog_cmd("export", "--out", str(tmp_path / "e"), "--token", "tlog_0000000000000000_nope",
                    env=_env(log_server), check=False)
    assert proc.returncode == 1 and b"the log refused the reader token" in proc.stderr
    assert b"Traceback" not in proc.stderr


def test_audit_of_an_incomplete_export_says_so(tmp_path):
    os.makedirs(tmp_path / "e")
    (tmp_path / "e" / "checkpoint.pending").write_bytes(b"x")
    proc = tlog_cmd("audit", "--dir", str(tmp_path / "e"), "--log-key",
                    OTHER_VKEY, check=False)
    assert proc.returncode == 1 and b"an export is still in progress" in proc.stderr


@pytest.mark.skipif(not _unshare_works(), reason="needs unshare -n")
def test_offline_wrapper_blocks_loopback_too(tmp_path):
    proc = offline("audit", "--log", "http://127.0.0.1:9", "--log-key", OTHER_VKEY, tmp_path=tmp_path)
    assert proc.returncode == 3 and b"cannot reach the log" in proc.stderr


def test_verify_offline_with_the_sitecustomize_fallback(tmp_path):
    """The fallback used where unshare is not allowed: no socket can be created, the receipt verifies."""
    from tests.logbuilder import LogBuilder, seeded_key

    b = LogBuilder()
    b.register(seeded_key(1), "w")
    index = b.event(seeded_key(1))
    b.write(str(tmp_path / "e"))
    (tmp_path / "r").write_bytes(b.receipt(str(tmp_path / "e"), index))
    (tmp_path / "w.pub").write_text(seeded_key(1).public_key.to_text() + "\n")
    proc = offline("verify", str(tmp_path / "r"), "--log-key", b.vkey, "--writer-key", str(tmp_path / "w.pub"),
                   tmp_path=tmp_path, sitecustomize=True)
    assert proc.returncode == 0 and proc.stdout.startswith(b"OK: entry 2 is in example.com/audit-test"), proc.stderr
