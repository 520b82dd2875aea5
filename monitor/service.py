"""The monitor process: followers, entry watchers, gossip and alert delivery around one state.

``Monitor.open()`` opens the state and delivers alerts a previous run left undelivered; ``run(stop)`` runs
one task per log (poll, then freshness check, every ``--poll`` seconds), one per entry watcher, one for
gossip and one for the webhook until ``stop`` is set; ``run_once()`` does each step once (``--once``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TextIO

import aiohttp

from tlog.errors import InvariantError

from tlog.audit import WitnessPolicy
from tlog.cosignature import CosignatureSigner

from .alerts import SERIOUS, Alerter
from .follower import Follower, LogConfig, now_ms
from .gossip import Gossip
from .logapi import LogAPI
from .metrics import Metrics
from .state import AlertRow, MonitorState
from .watch import EntryWatcher
from .witness import QuorumWatch, Witness, WitnessedLog

__all__ = ["Options", "Monitor"]


@dataclass
class Options:
    state_dir: str
    logs: list[LogConfig]
    peers: list[str] = field(default_factory=list)
    poll_seconds: float = 10.0
    gossip_seconds: float | None = None  # default: the poll interval
    stale_after_seconds: float = 300.0
    max_idle_seconds: float | None = None
    alerts_file: str | None = None
    webhook: str | None = None
    watch_entries: bool = False
    expiry_warning_days: float = 30.0
    timeout_seconds: float = 10.0
    # Witness mode (monitor/witness.py, spec/witness.md): the cosigning key and the witnessed logs.
    witness_key: CosignatureSigner | None = None
    witnessed: list[WitnessedLog] = field(default_factory=list)
    witness_crash_after_persist: bool = False  # test hook (TLOG_MONITOR_TEST_CRASH=after-persist)
    # --witness-policy: the quorum the followed logs' checkpoints are checked for.
    witness_policy: WitnessPolicy | None = None


class Monitor:
    def __init__(self, opts: Options, *, clock_ms: Callable[[], int] = now_ms, out: TextIO | None = None):
        self.opts = opts
        self.clock = clock_ms
        self._out = out
        self.metrics = Metrics()
        self.state: MonitorState | None = None
        self._alerter: Alerter | None = None
        self.followers: dict[str, Follower] = {}
        self.watchers: list[EntryWatcher] = []
        self._gossip: Gossip | None = None
        self.witness: Witness | None = None
        self.quorum: QuorumWatch | None = None
        self._session: aiohttp.ClientSession | None = None
        self.failure: str | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.opts.timeout_seconds),
                headers={"User-Agent": "tlog-monitor"})
        return self._session

    @property
    def alerter(self) -> Alerter:
        if self._alerter is None:
            raise InvariantError("Monitor.open() was not called")
        return self._alerter

    @property
    def gossip(self) -> Gossip:
        if self._gossip is None:
            raise InvariantError("Monitor.open() was not called")
        return self._gossip

    async def open(self) -> None:
        o = self.opts
        self.state = state = await MonitorState.open(o.state_dir)
        self._alerter = Alerter(state, alerts_file=o.alerts_file, webhook=o.webhook, session=self.session,
                                out=self._out)
        for cfg in o.logs:
            f = Follower(cfg, state, LogAPI(cfg.url, self.session), self.alerter, self.metrics, clock_ms=self.clock,
                         stale_after_ms=int(o.stale_after_seconds * 1000),
                         max_idle_ms=None if o.max_idle_seconds is None else int(o.max_idle_seconds * 1000))
            await f.start()
            self.followers[cfg.origin] = f
            if o.watch_entries:
                self.watchers.append(EntryWatcher(f, expiry_warning_days=o.expiry_warning_days))
        self._gossip = Gossip(self.followers, o.peers, self.session, self.metrics)
        if o.witness_key is not None:
            self.witness = Witness(state, o.witness_key, o.witnessed, self.alerter, self.metrics, clock_ms=self.clock,
                                   crash_after_persist=o.witness_crash_after_persist)
            await self.witness.start()
        if o.witness_policy is not None:
            self.quorum = QuorumWatch(o.witness_policy, self.alerter, clock_ms=self.clock,
                                      stale_after_ms=int(o.stale_after_seconds * 1000))
        await self.alerter.deliver_pending()  # alerts a previous run stored but did not deliver
        for (origin, kind, severity), n in (await state.alert_counts()).items():
            self.metrics.alerts.labels(origin, kind, severity).inc(n)
        self.alerter.on_alert = self._count

    def _count(self, row: AlertRow) -> None:
        self.metrics.alerts.labels(row.origin, row.kind, row.severity).inc()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self.state is not None:
            await self.state.close()
            self.state = None

    def serious_alerts(self) -> list[AlertRow]:
        """Alerts of severity alert or warning raised by this process."""
        return [a for a in self.alerter.raised if a.severity in SERIOUS]

    # ------------------------------------------------------------------ --once

    async def run_once(self) -> int:
        """Poll every log, check its entries, gossip, check freshness, deliver: exit 1 if anything serious."""
        await asyncio.gather(*(f.poll() for f in self.followers.values()))
        if self.quorum is not None:
            for f in self.followers.values():
                await self.quorum.check(f)
        for w in self.watchers:
            await w.step()
        await self.gossip.round()
        for f in self.followers.values():
            await f.check_freshness()
        await self.alerter.flush_webhooks()
        return 1 if self.serious_alerts() else 0

    # ------------------------------------------------------------------ daemon

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set (or a task fails: then ``failure`` says why and ``stop`` is set)."""
        o = self.opts
        loops: list[tuple[str, Callable[[], Awaitable[None]]]] = []
        for f in self.followers.values():
            loops.append((f"log {f.origin}", self._follow_loop(f)))
        for w in self.watchers:
            loops.append((f"entries of {w.f.origin}", self._watch_loop(w)))
        if o.peers:
            loops.append(("gossip", self._every(o.gossip_seconds or o.poll_seconds, self._gossip_round)))
        if o.webhook:
            loops.append(("webhook", self._every(max(o.poll_seconds, 1.0), self._flush_webhooks)))
        tasks = [asyncio.create_task(self._guard(name, loop, stop)) for name, loop in loops]
        try:
            await stop.wait()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _guard(self, name: str, loop: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
        try:
            await loop()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or a broken state: stop with one line, not a traceback
            self.failure = f"{name}: {type(exc).__name__}: {exc}"
            stop.set()

    def _follow_loop(self, f: Follower) -> Callable[[], Awaitable[None]]:
        async def loop() -> None:
            while True:
                await f.poll()
                await f.check_freshness()
                if self.quorum is not None:
                    await self.quorum.check(f)
                await asyncio.sleep(self.opts.poll_seconds)
        return loop

    def _watch_loop(self, w: EntryWatcher) -> Callable[[], Awaitable[None]]:
        async def loop() -> None:
            while True:
                w.f.head_changed.clear()
                await w.step()
                try:
                    await asyncio.wait_for(w.f.head_changed.wait(), timeout=max(self.opts.poll_seconds, 1.0))
                except asyncio.TimeoutError:
                    pass
        return loop

    def _every(self, seconds: float, step: Callable[[], Awaitable[None]]) -> Callable[[], Awaitable[None]]:
        async def loop() -> None:
            while True:
                await step()
                await asyncio.sleep(seconds)
        return loop

    async def _gossip_round(self) -> None:
        await self.gossip.round()

    async def _flush_webhooks(self) -> None:
        await self.alerter.flush_webhooks()
