"""Alerts: one JSON line each, on stdout and in ``--alerts FILE``, POSTed to ``--webhook URL``; evidence files.

Delivery is at-least-once through the outbox in the state (monitor/state.py): an alert is inserted under
its deduplication key first, then written out and marked delivered.  An alert whose key was raised before
(also before a restart) is not raised again.  Format: spec/monitor.md §5.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import aiohttp

from tlog.evidence import Evidence

from .state import AlertRow, EvidenceRow, MonitorState

__all__ = ["Kind", "Severity", "Alert", "Alerter", "write_evidence_file", "SERIOUS"]

WEBHOOK_ATTEMPTS = 5


class Severity(enum.StrEnum):
    ALERT = "alert"      # the log misbehaved, or may have
    WARNING = "warning"  # needs attention soon
    NOTICE = "notice"    # for the record


SERIOUS = frozenset({Severity.ALERT, Severity.WARNING})


class Kind(enum.StrEnum):
    FORK = "fork"
    ROLLBACK = "rollback"
    STALE = "stale"
    RECOVERED = "recovered"
    BAD_SIGNATURE = "bad-signature"
    ENTRIES_MISMATCH = "entries-mismatch"
    BAD_ENTRY = "bad-entry"
    KEY_EVENT = "key-event"
    KEY_EXPIRING = "key-expiring"
    WITNESS_QUORUM = "witness-quorum"


@dataclass(frozen=True)
class Alert:
    """One alert before delivery.  ``key`` deduplicates it (spec/monitor.md §5.2)."""

    kind: Kind
    severity: Severity
    origin: str
    message: str
    key: str
    time_ms: int
    evidence: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """The JSON line (no newline), keys sorted."""
        when = dt.datetime.fromtimestamp(self.time_ms / 1000, dt.timezone.utc)
        obj = {"kind": self.kind.value, "severity": self.severity.value, "origin": self.origin,
               "time": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.time_ms % 1000:03d}Z",
               "time_ms": self.time_ms, "message": self.message, "evidence": self.evidence,
               "key": self.key, "details": self.details}
        return json.dumps(obj, sort_keys=True, ensure_ascii=False)

    def row(self) -> AlertRow:
        return AlertRow(self.key, self.kind.value, self.severity.value, self.origin, self.time_ms, self.line())


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text)[:60]


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def write_evidence_file(directory: str, evidence: Evidence) -> str:
    """Write ``evidence`` durably as DIR/evidence/<kind>-<origin>-<digest>.json (idempotent); its path."""
    digest = evidence.digest()
    path = os.path.join(directory, "evidence", f"{evidence.kind.value}-{_safe(evidence.origin)}-{digest[:16]}.json")
    if not os.path.exists(path):
        await asyncio.to_thread(_write_atomic, path, evidence.encode())
    return os.path.abspath(path)


class Alerter:
    """Raises alerts: dedup in the state, then stdout, the alerts file and the webhook."""

    def __init__(self, state: MonitorState, *, alerts_file: str | None = None, webhook: str | None = None,
                 session: Callable[[], aiohttp.ClientSession] | None = None, out: TextIO | None = None,
                 on_alert: Callable[[AlertRow], None] | None = None):
        self.state = state
        self.alerts_file = alerts_file
        self.webhook = webhook
        self._session = session
        self._out = out
        self.on_alert = on_alert
        self.raised: list[AlertRow] = []  # alerts raised (new) by this process
        self._webhook_lock = asyncio.Lock()

    async def raise_alert(self, alert: Alert, evidence: Evidence | None = None, *,
                          evidence_source: str = "self") -> bool:
        """Raise ``alert`` unless its key was raised before; with ``evidence``, write the evidence file
        first and name it in the alert.  True if the alert is new."""
        ev_row = None
        if evidence is not None:
            path = await write_evidence_file(self.state.directory, evidence)
            alert = Alert(alert.kind, alert.severity, alert.origin, alert.message, alert.key, alert.time_ms,
                          path, {**alert.details, "evidence_kind": evidence.kind.value})
            ev_row = EvidenceRow(evidence.digest(), evidence.origin, evidence.kind.value,
                                 evidence.kind.proves_misbehaviour, evidence.encode(), path, evidence_source,
                                 alert.time_ms)
        row = alert.row()
        if not await self.state.add_alert(row, ev_row):
            return False
        await self.deliver(row)
        return True

    async def deliver(self, row: AlertRow) -> None:
        """Write the line to stdout and the alerts file, then mark it delivered."""
        out = self._out or sys.stdout
        out.write(row.line + "\n")
        out.flush()
        if self.alerts_file:
            await asyncio.to_thread(_append_line, self.alerts_file, row.line)
        await self.state.mark_delivered(row.key)
        self.raised.append(row)
        if self.on_alert:
            self.on_alert(row)

    async def deliver_pending(self) -> None:
        """Deliver the alerts a previous run inserted but did not deliver (it stopped in between)."""
        for row in await self.state.undelivered_alerts():
            await self.deliver(row)

    async def flush_webhooks(self) -> None:
        """POST every alert not yet accepted by the webhook (2xx), up to WEBHOOK_ATTEMPTS tries each."""
        if not self.webhook or self._session is None:
            return
        async with self._webhook_lock:
            for row in await self.state.pending_webhooks(WEBHOOK_ATTEMPTS):
                ok = await self._post(self._session(), self.webhook, row)
                await self.state.webhook_result(row.key, ok)
                if not ok:
                    break  # the webhook is down: try the rest next round

    @staticmethod
    async def _post(session: aiohttp.ClientSession, url: str, row: AlertRow) -> bool:
        try:
            async with session.post(url, data=row.line.encode(),
                                            headers={"Content-Type": "application/json"}) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return True
                reason = f"status {resp.status}"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
        print(f"tlog-monitor: webhook {url} did not take alert {row.key}: {reason}", file=sys.stderr,
              flush=True)
        return False


def _append_line(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())
