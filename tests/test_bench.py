"""scripts/bench --quick: the whole benchmark machinery (ceilings, wrk load, scale build, audit, the
pymerkle side by side) runs and prints every row of its table with a number.  It asserts nothing
about speed (docs/performance.md holds the figures); it fails when a stage breaks."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.timeout(400)


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk (the load generator) is not installed; "
                    "scripts/install-test-deps installs it as root")
def test_quick_bench_prints_every_figure():
    pytest.importorskip("pymerkle")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "benchlib", "run.py"), "--quick"],
                          capture_output=True, text=True, cwd=ROOT, timeout=380)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout[proc.stdout.index("figure"):]
    rows = [line for line in table.splitlines()[2:] if line.strip()]
    names = " | ".join(rows)
    for stage in ("raw: hashlib", "ceiling:", "signed appends (Ed25519, 64 writers",
                  "signed appends (Ed25519, 256 writers", "receipt latency p99", "inclusion proofs over HTTP",
                  "signed appends (P-256)", "tlog audit of", "vs pymerkle", "scale: appends/s",
                  "scale: bytes on disk per entry"):
        assert stage in names, f"no {stage!r} row in:\n{table}"
    for line in rows:  # every figure is a number
        assert re.search(r"\s\d[\d,]*\.\d\s", line), line
