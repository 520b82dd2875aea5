"""Erasure that keeps every proof valid (spec/privacy.md, spec/keys.md §2.2 ERASURE).

An erasure is an operator-signed ``Erasure`` entry appended to the log like any key event.  The tree
is not touched: the erased entry's leaf (which holds only the payload's salted commitment) stays, so
every receipt, inclusion proof, consistency proof and checkpoint issued before stays valid.  What goes
is the payload and the salt, deleted by the storage in the same transaction as the Erasure leaf
(storage contract 5), then purged from the write-ahead log (:class:`Purger`).

Anyone can check an erasure: the Erasure leaf is in the tree, signed by the operator key of the
genesis, names the erased index and says why; the key registry lists ``index → erasure index``
(``GET /v1/keys``), and ``GET /v1/entries/<I>`` of an erased entry says when, by which entry and why.
"""

from __future__ import annotations

import asyncio
import logging

from ..entry import Erasure, Leaf, sign_entry
from ..keys import PrivateKey
from .storage import Storage

__all__ = ["sign_erasure", "erasure_record", "Purger"]

log = logging.getLogger("tlog.erasure")


def sign_erasure(origin: str, index: int, reason: str, timestamp_ms: int, operator: PrivateKey) -> tuple[bytes, bytes]:
    """(body, signature) of an Erasure of entry ``index``, signed by the operator key (spec/entry.md §2.4)."""
    entry = Erasure(origin, index, reason, timestamp_ms)
    return entry.encode(), sign_entry(entry, operator)


async def erasure_record(storage: Storage, erased_index: int, erasure_index: int) -> dict:
    """What a read of an erased entry says: by which entry, when (the log's integration time of the
    Erasure leaf), the operator's signing time and the reason."""
    leaf = Leaf.decode((await storage.read_leaves(erasure_index, erasure_index + 1))[0])
    entry = leaf.entry
    if not isinstance(entry, Erasure) or entry.index != erased_index:
        raise AssertionError(f"entry {erasure_index} is not the erasure of {erased_index}")
    return {"erasure_index": erasure_index, "erased_ms": leaf.integrated_ms,
            "operator_timestamp_ms": entry.timestamp_ms, "reason": entry.reason}


class Purger:
    """Runs :meth:`Storage.purge` after erasures, coalescing concurrent requests: a caller returns
    once a purge that *started after its request* has finished (so a batch of erasures costs one or
    two WAL checkpoints, not one each)."""

    def __init__(self, storage: Storage, attempts: int = 5, pause: float = 0.05):
        self.storage = storage
        self.attempts = attempts
        self.pause = pause
        self._lock = asyncio.Lock()
        self._requested = 0
        self._done = 0

    async def purge(self) -> bool:
        self._requested += 1
        mine = self._requested
        async with self._lock:
            if self._done >= mine:
                return True
            covers = self._requested
            for attempt in range(self.attempts):
                try:
                    if await self.storage.purge():
                        self._done = covers
                        return True
                except Exception:  # never fail the erasure itself: it is committed; the next purge retries
                    log.exception("WAL purge after an erasure failed")
                    return False
                await asyncio.sleep(self.pause * (attempt + 1))
            log.warning("WAL purge after an erasure did not complete (readers busy); it will be retried")
            return False
