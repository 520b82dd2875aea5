"""The periodic scrub's own process: ``python -m tlog.server.scrubchild DATA_DIR SIZE VKEY``.

Run by :class:`tlog.server.scrub.Scrubber`: it lowers its own CPU priority to the lowest (SCHED_IDLE,
and nice 19), runs :func:`tlog.server.scrub.scrub_database` of ``DATA_DIR/log.db`` at tree size ``SIZE``, checking
checkpoints with the verifier key ``VKEY`` (the server's own signer's), and prints the report as one
JSON object on stdout.
SIGTERM stops it between steps (the report then says ``stopped_early``).

Why a process, and why SCHED_IDLE: the scrub re-hashes every leaf and re-verifies every checkpoint,
about 11 s of CPU per million entries. In a thread of the sequencer process it held the GIL against the
event loop: on a 2,000,000-entry log, 64 writers appended at 3,318/s (p50 18 ms, p99 58 ms) while it
ran, against 6,592–6,899/s (p99 31–39 ms) without it. In its own process at nice 19 it still cost a
third (4,523/s, p99 42 ms): a waking server process waited for the niced one's time slice. Under
SCHED_IDLE it runs only on idle cores and is preempted at once: 6,369/s, p99 32 ms. The price: on
cores busy all the time it advances slowly (the idle class's small weight), so under sustained full
load a scrub takes longer; ``tlog_scrub_last_success_timestamp_seconds`` shows how long ago one
finished.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading

from ..note import Verifier
from .scrub import scrub_database

__all__ = ["main", "lower_priority", "NICE"]

#: The scrub process's niceness, which counts where the SCHED_IDLE policy is refused.
NICE = 19


def lower_priority() -> None:
    """Run only when the cores are otherwise idle: the SCHED_IDLE policy (a waking server process
    preempts it at once), and nice 19 for where that policy is refused."""
    os.nice(NICE - os.nice(0))
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        pass


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3 or not args[1].isdigit():
        print("usage: python -m tlog.server.scrubchild DATA_DIR SIZE VKEY", file=sys.stderr)
        return 2
    data_dir, size, verifier = args[0], int(args[1]), Verifier.from_vkey(args[2])
    lower_priority()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    report = scrub_database(os.path.join(data_dir, "log.db"), verifier, size=size,
                            should_stop=stop.is_set)
    print(json.dumps(dataclasses.asdict(report)), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # one line for the server's log, never a traceback
        print(f"scrub process failed: {exc!r}", file=sys.stderr)
        sys.exit(1)
