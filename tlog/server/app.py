"""The aiohttp application of one log, and ``serve`` for ``tlog serve``."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from .handlers import STATE, error_middleware, routes
from .state import LogState

__all__ = ["make_app", "serve", "parse_listen"]

log = logging.getLogger("tlog.server")


def make_app(data_dir: str, *, clock_ms: Callable[[], int] | None = None, max_body: int = 1 << 20) -> web.Application:
    """An application serving the log in ``data_dir``; the log opens in ``cleanup_ctx``."""
    app = web.Application(middlewares=[error_middleware], client_max_size=max_body + 1024)

    async def open_log(app: web.Application) -> AsyncIterator[None]:
        state = await LogState.open(data_dir, clock_ms=clock_ms)
        app[STATE] = state
        yield
        await state.close()

    app.cleanup_ctx.append(open_log)
    app.add_routes(routes())
    return app


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen must be HOST:PORT, not {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


async def serve(data_dir: str, listen: str, *, ready: Callable[[str], None] | None = None) -> None:
    """Run the server until SIGINT/SIGTERM.  Prints the bound address (port 0 picks a free one)."""
    host, port = parse_listen(listen)
    app = make_app(data_dir)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=1024)
        await site.start()
        bound = runner.addresses[0]
        url = f"http://{bound[0]}:{bound[1]}"
        if ready:
            ready(url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
