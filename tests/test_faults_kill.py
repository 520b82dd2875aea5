"""Fault 1 of issue 8: kill -9 anywhere.  At least 20 concurrent writers append while the real server
(`tlog serve`, and `tlog serve --workers 2`) is killed with SIGKILL at random moments — while writing, and
sometimes while starting up — and restarted.  After every kill `tlog fsck --data DIR` passes on the crashed
directory; after every restart every acknowledged entry is at its acknowledged index with the same leaf
hash, no index is reused, every checkpoint any client ever received is consistent with the latest one
(recomputed from the level-0 tiles and proven by the server), and every unacknowledged entry, sent again,
is acknowledged exactly once.  The machinery is tests/crashkit.py; `scripts/soak` runs it for hundreds of
cycles."""

from __future__ import annotations

import time

from tests.crashkit import CrashRun


async def _run(tmp_path, cycles: int, **options) -> CrashRun:
    run = CrashRun(str(tmp_path / "log"), **options)
    await run.setup()
    for _ in range(cycles):
        await run.cycle()
    await run.finish()
    return run


def _assert_nothing_lost(run: CrashRun, cycles: int) -> dict:
    figures = run.figures()
    assert run.ledger.problems == [], run.ledger.problems[:10]
    assert (figures["lost"], figures["forks"], figures["reused"]) == (0, 0, 0), figures
    assert figures["cycles"] == cycles and figures["fsck_runs"] == cycles + 1, figures
    assert figures["acknowledged"] >= 10 * cycles, figures  # the writers really were writing
    assert run.ledger.pending == [], "an unacknowledged entry was never acknowledged on retry"
    return figures


async def test_kill9_cycles_single_process(tmp_path):
    started = time.monotonic()
    run = await _run(tmp_path, 20, writers=24, max_run=0.5, startup_kill=0.1)
    figures = _assert_nothing_lost(run, 20)
    assert figures["single"] + figures["startup"] == 20
    assert run.load.statuses.get(503, 0) == 0, run.load.statuses  # a kill never stops writes by itself
    print(f"kill -9, single process: {figures} in {time.monotonic() - started:.1f} s")


async def test_kill9_cycles_with_http_workers(tmp_path):
    started = time.monotonic()
    run = await _run(tmp_path, 4, writers=24, max_run=0.6, workers_every=1, startup_kill=0.0)
    figures = _assert_nothing_lost(run, 4)
    assert figures["workers"] == 4
    print(f"kill -9, --workers 2: {figures} in {time.monotonic() - started:.1f} s")
