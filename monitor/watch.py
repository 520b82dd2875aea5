"""``--watch-entries``: download every entry up to the verified head and judge it (spec/monitor.md §4).

Life of a watched entry: the entry bundles (C2SP tlog-tiles ``tile/entries/N``) covering
``[watched, head)`` are fetched at their width for the head's size; every leaf's RFC 6962 leaf hash is
appended to a compact range that continues the one stored in the state; when the range reaches the
head's size its root must equal the head's signed root (so every leaf is bound to the signed checkpoint
without trusting any tile); each leaf is judged by :class:`~monitor.entries.EntryChecker`.  Only then are
the new watched size, the compact range, the applied operator entries and the findings committed in one
transaction (monitor/state.py ``save_watch``), and the findings delivered.
"""

from __future__ import annotations

import sys

from tlog.entry import Leaf
from tlog.errors import FormatError
from tlog.hashing import leaf_hash
from tlog.note import encode_base64
from tlog.registry import Registry
from tlog.tiles import ENTRIES_LEVEL, TILE_WIDTH, Tile, decode_entry_bundle
from tlog.tree import CompactRange

from .alerts import Alert, Kind, Severity
from .entries import DAY_MS, EntryChecker, Finding
from .follower import Follower
from .logapi import Refused, Unreachable
from .state import Signed

__all__ = ["EntryWatcher"]


class EntryWatcher:
    def __init__(self, follower: Follower, *, expiry_warning_days: float = 30):
        self.f = follower
        self.window_ms = int(expiry_warning_days * DAY_MS)
        self._checker: EntryChecker | None = None
        self._range: CompactRange | None = None
        self._last_error: str | None = None

    async def _load(self) -> tuple[EntryChecker, CompactRange]:
        if self._checker is None or self._range is None:
            size, hashes, operator_leaves = await self.f.state.watch_progress(self.f.origin)
            registry = Registry()
            for index, raw in operator_leaves:
                registry.advance(index)
                registry.apply(index, Leaf.decode(raw))
            registry.advance(size)
            self._checker = EntryChecker(self.f.origin, registry)
            self._range = CompactRange.from_hashes(size, hashes)
        return self._checker, self._range

    async def step(self) -> bool:
        """Check the entries up to the current head, then warn about keys near their end.  True if the
        watched size moved."""
        row = await self.f.row()
        checker, compact = await self._load()
        moved = False
        if row.head is not None and row.head.size > compact.size:
            try:
                moved = await self._check_up_to(row.head, checker, compact)
                self._last_error = None
            except (Unreachable, Refused) as exc:
                self._reset()
                if str(exc) != self._last_error:  # one line per new problem, not one per poll
                    print(f"tlog-monitor: entries of {self.f.origin} not available: {exc}", file=sys.stderr,
                          flush=True)
                self._last_error = str(exc)
            except BaseException:
                self._reset()
                raise
        if self._checker is not None:
            for finding in self._checker.expiring(self.f.clock(), self.window_ms):
                await self.f.alerter.raise_alert(self._alert(finding))
        return moved

    def _reset(self) -> None:
        """Drop the in-memory registry and range: they are rebuilt from the state next time."""
        self._checker = self._range = None

    async def _check_up_to(self, head: Signed, checker: EntryChecker, compact: CompactRange) -> bool:
        start, end = compact.size, head.size
        findings: list[Finding] = []
        for n in range(start // TILE_WIDTH, (end + TILE_WIDTH - 1) // TILE_WIDTH):
            width = min(TILE_WIDTH, end - n * TILE_WIDTH)
            data = await self.f.api.tile(Tile(ENTRIES_LEVEL, n, width))
            try:
                leaves = decode_entry_bundle(data, expected_count=width)
            except FormatError as exc:
                await self._mismatch(head, f"entry bundle {n} (width {width}) is malformed: {exc}")
                self._reset()
                return False
            for offset in range(max(0, start - n * TILE_WIDTH), width):
                raw = leaves[offset]
                compact.append(leaf_hash(raw))
                findings.extend(checker.feed(n * TILE_WIDTH + offset, raw))
        if compact.root() != head.root:
            await self._mismatch(head, f"the entries [0, {end}) hash to root {encode_base64(compact.root())}, "
                                       f"not the signed root {encode_base64(head.root)}")
            self._reset()
            return False
        alerts = [self._alert(x) for x in findings]
        ok = await self.f.state.save_watch(self.f.origin, start, end, compact.hashes, checker.take_applied(),
                                           [a.row() for a in alerts])
        if not ok:
            self._reset()
            return False
        await self.f.alerter.deliver_pending()
        return True

    def _alert(self, finding: Finding) -> Alert:
        return Alert(Kind(finding.kind), Severity(finding.severity), self.f.origin, finding.message, finding.key,
                     self.f.clock(), details=finding.details)

    async def _mismatch(self, head: Signed, message: str) -> None:
        await self.f.alerter.raise_alert(Alert(
            Kind.ENTRIES_MISMATCH, Severity.ALERT, self.f.origin, f"{self.f.origin}: {message}",
            f"entries-mismatch:{self.f.origin}:{head.size}:{head.root.hex()}", self.f.clock(),
            details={"size": head.size}))
