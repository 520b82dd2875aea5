"""An HTTP worker process of ``tlog serve --workers N`` (see tlog/server/workers.py).

Run by the supervisor: ``python -m tlog.server.worker --data DIR --listen HOST:PORT --socket PATH``.
Prints ``ready`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from aiohttp import web

from . import eventloop
from .app import make_app, parse_listen
from .logs import setup_logging
from .workers import _bind


async def run(data_dir: str, listen: str, socket_path: str) -> None:
    host, port = parse_listen(listen)
    setup_logging()
    app = make_app(data_dir, worker_socket=socket_path)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        sock = _bind(host, port)
        site = web.SockSite(runner, sock, backlog=1024)
        await site.start()
        print("ready", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        watch = loop.create_task(_exit_with_parent(stop))
        await stop.wait()
        watch.cancel()
    finally:
        await runner.cleanup()


async def _exit_with_parent(stop: asyncio.Event) -> None:
    """A worker never outlives the sequencer process that started it (even one killed with SIGKILL):
    once it is reparented, it stops."""
    parent = os.getppid()
    while os.getppid() == parent:
        await asyncio.sleep(0.5)
    stop.set()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--listen", required=True)
    ap.add_argument("--socket", required=True)
    args = ap.parse_args()
    try:
        eventloop.run(run(args.data, args.listen, args.socket))
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # one line, never a traceback; the supervisor sees the exit status
        print(f"tlog worker: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
