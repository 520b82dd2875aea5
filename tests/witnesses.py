"""Witness helpers shared by the witness tests: real ``tlog-monitor`` witness processes, and small in-memory
logs (an RFC 6962 oracle over known leaves, signed by a test key) to build checkpoints, forks and proofs."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from tests.conftest import ROOT
from tests.oracle import Oracle
from tlog.checkpoint import Checkpoint, sign_checkpoint
from tlog.hashing import leaf_hash
from tlog.note import Signer
from tlog.witness import AddCheckpoint


class MemLog:
    """A log held in memory: leaves ``prefix || i``, optionally forked after ``fork_at`` leaves."""

    def __init__(self, signer: Signer, size: int = 64, *, fork_at: int | None = None, tag: bytes = b"B"):
        self.signer = signer
        self.origin = signer.name
        leaves = [b"leaf %d" % i if fork_at is None or i < fork_at else tag + b" leaf %d" % i for i in range(size)]
        self.oracle = Oracle([leaf_hash(x) for x in leaves])

    def note(self, n: int) -> bytes:
        return sign_checkpoint(Checkpoint(self.origin, n, self.oracle.root(n)), self.signer)

    def proof(self, m: int, n: int) -> list[bytes]:
        return [] if m == 0 or m == n else self.oracle.proof(m, n)

    def request(self, old: int, n: int, *, proof: list[bytes] | None = None, note: bytes | None = None) -> bytes:
        return AddCheckpoint(old, tuple(self.proof(old, n) if proof is None else proof),
                             self.note(n) if note is None else note).format()


def seeded_signer(name: str, n: int = 0) -> Signer:
    return Signer.generate(name, hashlib.sha256(f"{name} {n}".encode()).digest())


@dataclass
class WitnessProcess:
    proc: subprocess.Popen
    url: str
    vkey: str
    name: str
    out: str
    err: str

    def kill(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL) and wait for it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stop(self) -> None:
        self.kill()
        with open(self.err) as f:
            errors = f.read()
        assert "Traceback" not in errors and "internal error" not in errors, errors


def monitor_cmd(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "monitor", *args], capture_output=True, cwd=ROOT, timeout=timeout)


def make_witness_key(path: str, name: str) -> str:
    """``tlog-monitor keygen``; the witness's vkey."""
    proc = monitor_cmd("keygen", "--out", path, "--name", name)
    assert proc.returncode == 0, proc.stderr
    line = proc.stdout.decode().strip()
    assert line.startswith("witness vkey: "), line
    return line.split(": ", 1)[1]


def start_witness(tmp, name: str, log_vkeys: list[str], *extra: str, env: dict | None = None,
                  key: str | None = None, listen: str = "127.0.0.1:0") -> WitnessProcess:
    """A ``tlog-monitor`` in witness mode (no followed logs), its key made by ``keygen`` unless it exists."""
    state, out, err = (os.path.join(str(tmp), f"{name.replace('/', '_')}.{x}") for x in ("state", "out", "err"))
    key = key or os.path.join(str(tmp), f"{name.replace('/', '_')}.key")
    if not os.path.exists(key):
        make_witness_key(key, name)
    args = ["--state", state, "--witness-key", key, "--listen", listen, "--timeout", "3", *extra]
    for vkey in log_vkeys:
        args += ["--witness", vkey]
    with open(out, "ab") as stdout, open(err, "ab") as stderr:
        start = stdout.tell()
        proc = subprocess.Popen([sys.executable, "-m", "monitor", *args], stdout=stdout, stderr=stderr, cwd=ROOT,
                                env={**os.environ, **(env or {})})
    deadline = time.monotonic() + 20
    url = vkey = None
    while url is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            with open(err) as f:
                raise AssertionError(f"witness did not start: {f.read()}")
        with open(out) as f:
            f.seek(start)
            for line in f:
                if line.startswith("witness vkey: "):
                    vkey = line.split(": ", 1)[1].strip()
                if line.startswith("listening on "):
                    url = line.split(" ", 2)[2].strip()
        time.sleep(0.05)
    assert vkey is not None
    return WitnessProcess(proc, url, vkey, name, out, err)
