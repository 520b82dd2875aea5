"""The aiohttp application of one log, and ``serve`` for ``tlog serve``."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import signal
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from .handlers import STATE, error_middleware, routes
from .logs import METRICS_HOOK, request_middleware, setup_logging
from .retention import Retention, load_operator_key
from .scrub import preflight_ctx, scrub_ctx
from .state import LogState
from . import witnessing

__all__ = ["make_app", "serve", "parse_listen"]

log = logging.getLogger("tlog.server")


def make_app(data_dir: str, *, clock_ms: Callable[[], int] | None = None, max_body: int = 1 << 20,
             worker_socket: str | None = None) -> web.Application:
    """An application serving the log in ``data_dir``; the log opens in ``cleanup_ctx``.

    With ``worker_socket`` it is an HTTP worker of ``tlog serve --workers N``: writes go to the
    sequencer process, and the background tasks (start-up checks, retention, scrub, witnessing) run
    only there."""
    # The request middleware is outermost: it sees the error middleware's final answers.
    app = web.Application(middlewares=[request_middleware, error_middleware], client_max_size=max_body + 1024)

    async def open_log(app: web.Application) -> AsyncIterator[None]:
        state = await LogState.open(data_dir, clock_ms=clock_ms, worker_socket=worker_socket)
        app[STATE] = state
        app[METRICS_HOOK] = state.metrics.count_request
        yield
        await state.close()

    async def retention(app: web.Application) -> AsyncIterator[None]:
        """The retention schedule (tlog/server/retention.py), when config.json sets retention_days."""
        state = app[STATE]
        task = None
        if state.config.retention_days > 0:
            runner = Retention(state, load_operator_key(data_dir), state.config.retention_days,
                               state.config.retention_interval_seconds)
            task = asyncio.get_running_loop().create_task(runner.run(), name="tlog-retention")
        yield
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    if worker_socket is not None:
        app.cleanup_ctx.append(open_log)
        app.cleanup_ctx.append(witnessing.witnessing_ctx(STATE, submit=False))  # reads cosignatures only
        app.add_routes(routes() + witnessing.routes())
        return app
    app.cleanup_ctx.append(preflight_ctx(data_dir))  # start-up checks, before the log opens
    app.cleanup_ctx.append(open_log)
    app.cleanup_ctx.append(retention)
    app.cleanup_ctx.append(scrub_ctx)  # published-checkpoint file and the periodic self-check
    app.cleanup_ctx.append(witnessing.witnessing_ctx(STATE, submit=True))  # witness cosignatures (spec/witness.md)
    app.add_routes(routes() + witnessing.routes())
    return app


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen must be HOST:PORT, not {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


async def serve(data_dir: str, listen: str, *, ready: Callable[[str], None] | None = None,
                workers: int = 0) -> None:
    """Run the server until SIGINT/SIGTERM.  Prints the bound address (port 0 picks a free one).

    ``workers`` > 0: this process owns the database and the sequencer and serves no HTTP itself;
    that many worker processes serve HTTP on the address (tlog/server/workers.py)."""
    host, port = parse_listen(listen)
    setup_logging()
    app = make_app(data_dir)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if workers > 0:
            await _serve_with_workers(app, data_dir, host, port, workers, ready, stop)
            return
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        bound = runner.addresses[0]
        if ready:
            ready(f"http://{bound[0]}:{bound[1]}")
        await stop.wait()
    finally:
        await runner.cleanup()


async def _serve_with_workers(app: web.Application, data_dir: str, host: str, port: int, workers: int,
                              ready: Callable[[str], None] | None, stop: asyncio.Event) -> None:
    from .ipc import SequencerServer
    from .workers import supervise

    state = app[STATE]
    folder = tempfile.mkdtemp(prefix="tlog-")  # a short path: Unix socket names are limited to 107 bytes
    path = os.path.join(folder, "sequencer.sock")

    def status() -> str:
        stopped = state.sequencer.stopped
        return f"backlog {state.sequencer.backlog()}" + (f"; writes stopped: {stopped}" if stopped else "")

    server = SequencerServer(path, state.sequencer.enqueue, status, complete=state.with_proof,
                             metrics=state.metrics.render_merged)
    await server.start()
    try:
        await supervise(data_dir, host, port, workers, path, ready, stop)
    finally:
        await server.close()
        shutil.rmtree(folder, ignore_errors=True)
