"""Shared fixtures: real log servers in temporary directories, on ports the OS picks."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import IO

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


async def wait_for(predicate, what: str, timeout: float = 20, interval: float = 0.05):
    """Await ``predicate()`` until it returns something true (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(interval)


def tlog_cmd(*args: str, input: bytes | None = None, env: dict | None = None,
             check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the real `tlog` command line (python -m tlog) and capture its output."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "tlog", *args], input=input, capture_output=True,
                          env=full_env, timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"tlog {' '.join(args)} exited {proc.returncode}:\n{proc.stderr.decode()}")
    return proc


@dataclass
class ServerProcess:
    data: str
    url: str
    vkey: str
    proc: subprocess.Popen
    stderr_file: IO[bytes] | None = None  # the server's stderr: its JSON log lines (see logs())

    def logs(self) -> list[dict]:
        """The server's structured log lines (JSON objects) so far."""
        import json

        if self.stderr_file is None:
            return []
        with open(self.stderr_file.name, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def stop(self, sig: int | None = None) -> None:
        if self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr, self.stderr_file):
            if f:
                f.close()


def start_server(data: str, listen: str = "127.0.0.1:0", timeout: float = 30,
                 extra: tuple[str, ...] = ()) -> ServerProcess:
    """Start `tlog serve` as a real process and wait for its "listening on URL" line."""
    # stderr goes to a file, not a pipe: the server writes a JSON line per request, and a pipe nobody
    # reads would fill up and block it.
    err_file = tempfile.NamedTemporaryFile(prefix="tlog-serve-", suffix=".log")
    proc = subprocess.Popen([sys.executable, "-m", "tlog", "serve", "--data", data, "--listen", listen, *extra],
                            stdout=subprocess.PIPE, stderr=err_file, cwd=ROOT)
    vkey = url = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if not line:
            code = proc.wait()
            with open(err_file.name, "rb") as f:
                err = f.read().decode()
            err_file.close()
            raise AssertionError(f"tlog serve exited {code}: {err}")
        if line.startswith("vkey: "):
            vkey = line.split(" ", 1)[1].strip()
        if line.startswith("listening on "):
            url = line.split(" ", 2)[2].strip()
            break
    if url is None or vkey is None:
        proc.kill()
        err_file.close()
        raise AssertionError("tlog serve did not start in time")
    return ServerProcess(data, url, vkey, proc, err_file)


def init_log(data: str, origin: str = "example.com/test-log") -> str:
    out = tlog_cmd("init", "--data", data, "--origin", origin).stdout.decode()
    return next(line.split(" ", 1)[1] for line in out.splitlines() if line.startswith("vkey: "))


@pytest.fixture
def log_server(tmp_path):
    data = str(tmp_path / "log")
    init_log(data)
    server = start_server(data)
    yield server
    server.stop()
