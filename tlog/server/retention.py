"""Retention: payloads older than the log's retention period are erased, on a schedule (spec/privacy.md).

With ``retention_days > 0`` in config.json the server loads the operator key (DIR/operator.key) and,
every ``retention_interval_seconds``, appends an operator-signed ``Erasure`` entry for each event entry
integrated more than ``retention_days`` before now whose payload is still stored — exactly what
``tlog erase`` does by hand, so every erasure is in the tree, signed, with its reason.  Nothing in the
tree is removed.  The clock is the log's (injected in tests).

Finding the work costs two index searches: the time index gives the first index at the cutoff, and
the payloads still stored below it are the smallest rows of ``payloads`` (older ones were erased by
earlier passes).  Erasures are submitted ``chunk`` at a time, concurrently, so each chunk is one batch:
one transaction and one WAL purge.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from typing import TYPE_CHECKING

from ..errors import KeyRegistryError
from ..keys import PrivateKey
from .config import DAY_MS, ConfigError, check_private_file
from .erasure import sign_erasure
from .logs import log_event

if TYPE_CHECKING:
    from .state import LogState

__all__ = ["Retention", "load_operator_key"]

log = logging.getLogger("tlog.retention")


def load_operator_key(data_dir: str) -> PrivateKey:
    path = os.path.join(data_dir, "operator.key")
    if not os.path.exists(path):
        raise ConfigError(f"retention_days is set but {path} is missing: the server signs retention "
                          "erasures with the operator key")
    return PrivateKey.from_pem(check_private_file(path))


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Retention:
    """One log's retention schedule.  :meth:`run_once` is one pass; :meth:`run` loops forever."""

    def __init__(self, state: LogState, operator: PrivateKey, days: float, interval_seconds: float,
                 chunk: int = 256):
        self.state = state
        self.operator = operator
        self.days = days
        self.interval = interval_seconds
        self.chunk = chunk

    def cutoff_ms(self) -> int:
        return self.state.clock_ms() - int(self.days * DAY_MS)

    async def run_once(self) -> list[int]:
        """Erase every payload integrated before the cutoff; returns the erased indices."""
        state = self.state
        cutoff = self.cutoff_ms()
        end = await state.storage.first_index_at(cutoff, state.head.size)
        reason = f"retention: integrated before {_iso(cutoff)} ({self.days:g}-day retention period)"
        erased: list[int] = []
        skip: set[int] = set()
        while True:
            todo = [i for i in await state.storage.payload_indices(end, self.chunk + len(skip)) if i not in skip]
            if not todo:
                break
            results = await asyncio.gather(*(self._erase(i, reason) for i in todo[:self.chunk]))
            for index, ok in zip(todo, results):
                if ok:
                    erased.append(index)
                else:
                    skip.add(index)
        if erased:
            log_event(log, "retention", erased=len(erased), first=erased[0], last=erased[-1], cutoff_ms=cutoff)
        return erased

    async def _erase(self, index: int, reason: str) -> bool:
        state = self.state
        body, sig = sign_erasure(state.config.origin, index, reason, state.clock_ms(), self.operator)
        try:
            await state.append_operator(body, sig)
            return True
        except KeyRegistryError as exc:  # erased by hand meanwhile, or not an event entry: leave it
            log_event(log, "retention_skip", logging.WARNING, index=index, reason=str(exc))
            return False

    async def run(self) -> None:
        while True:
            try:
                await self.run_once()
                self.state.metrics.retention_runs.labels("ok").inc()
            except asyncio.CancelledError:
                raise
            except Exception:  # a failed pass (writes stopped, storage full) is retried next interval
                self.state.metrics.retention_runs.labels("failed").inc()
                log.exception("retention pass failed")
            await asyncio.sleep(self.interval)
