"""The server's event loop (tlog/server/eventloop.py): uvloop unless TLOG_EVENT_LOOP=asyncio, a clear
error for anything else, and both run the same coroutine to the same result."""

from __future__ import annotations

import asyncio

import pytest

from tlog.server import eventloop
from tlog.server.config import ConfigError


async def _loop_module() -> str:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop()).__module__


def test_uvloop_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TLOG_EVENT_LOOP", raising=False)
    assert eventloop.loop_name() == "uvloop"
    assert eventloop.run(_loop_module()).startswith("uvloop")


def test_asyncio_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLOG_EVENT_LOOP", "asyncio")
    assert eventloop.run(_loop_module()).startswith("asyncio")


def test_an_unknown_loop_is_a_clear_error_and_the_coroutine_is_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TLOG_EVENT_LOOP", "trio")
    coro = _loop_module()
    with pytest.raises(ConfigError, match="TLOG_EVENT_LOOP must be uvloop or asyncio, not 'trio'"):
        eventloop.run(coro)
    assert coro.cr_frame is None  # closed: no "never awaited" warning
