"""Judging the log's entries (``--watch-entries``): replay key events, re-check every event entry's
provisioning signature and key validity, report key events and keys near the end of their validity
(spec/monitor.md §4).  Pure: leaves in, findings out; times are passed in.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from tlog.entry import Erasure, EventEntry, Genesis, Leaf, RegisterKey, RevokeKey, RotateKey
from tlog.errors import KeyRegistryError, TlogError
from tlog.registry import EntryRejected, KeyRecord, Registry

__all__ = ["Finding", "EntryChecker", "DAY_MS"]

DAY_MS = 86_400_000


@dataclass(frozen=True)
class Finding:
    """Something to report: ``kind`` and ``severity`` are alert kinds (monitor/alerts.py); ``key`` dedups."""

    kind: str
    severity: str
    key: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


def _when(ms: int) -> str:
    try:
        return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return f"{ms} ms"


class EntryChecker:
    """Feeds leaves in index order into a :class:`Registry` and judges each one.

    ``registry`` is the registry rebuilt from the operator entries below ``registry.size`` (see
    :meth:`Registry.replay` with ``sparse=True``).  The checker never raises on the log's data: an invalid
    leaf or operator entry becomes a finding and is skipped (declared an event entry, which cannot change
    the registry).
    """

    def __init__(self, origin: str, registry: Registry | None = None):
        self.origin = origin
        self.registry = registry if registry is not None else Registry()
        self.applied_operator_leaves: list[tuple[int, bytes]] = []  # applied since the last take_applied()

    def take_applied(self) -> list[tuple[int, bytes]]:
        out, self.applied_operator_leaves = self.applied_operator_leaves, []
        return out

    def feed(self, index: int, raw: bytes) -> list[Finding]:
        """Judge the leaf at ``index`` (== registry.size) given as the encoded leaf bytes."""
        try:
            leaf = Leaf.decode(raw)
        except TlogError as exc:
            self.registry.advance(index + 1)
            return [self._bad(index, f"entry {index} is not a valid leaf: {exc}")]
        entry = leaf.entry
        if index > 0 and type(entry) is EventEntry:
            self.registry.apply(index, leaf)
            try:
                self.registry.check_event(index, leaf)
            except (EntryRejected, KeyRegistryError) as exc:
                return [self._bad(index, f"entry {index} is signed by a key not valid at that point: {exc}",
                                  reason=str(getattr(exc, "reason", "")), key_id=entry.key_id.hex())]
            return []
        try:
            self.registry.apply(index, leaf)
        except KeyRegistryError as exc:
            self.registry.advance(index + 1)
            return [self._bad(index, f"invalid operator entry {index}: {exc}")]
        self.applied_operator_leaves.append((index, raw))
        return self._operator_finding(index, leaf)

    def _bad(self, index: int, message: str, **details: Any) -> Finding:
        return Finding("bad-entry", "alert", f"bad-entry:{self.origin}:{index}", f"{self.origin}: {message}",
                       {"index": index, **details})

    def _operator_finding(self, index: int, leaf: Leaf) -> list[Finding]:
        entry = leaf.entry
        if isinstance(entry, Genesis):
            return []
        if isinstance(entry, Erasure):
            text = f"entry {entry.index} erased at index {index}: {entry.reason}"
            return [self._notice(index, text, "erase", entry_index=entry.index)]
        if isinstance(entry, (RegisterKey, RotateKey)):
            rec = self.registry.keys[entry.key.key_id]
            verb = "registered" if isinstance(entry, RegisterKey) else (
                f"rotated in (replacing {entry.old_key_id.hex()[:16]}, which retires at {_when(entry.retire_at_ms)})")
            text = (f"key {rec.name} ({rec.key_id.hex()[:16]}) {verb} at index {index}, valid "
                    f"{_when(rec.not_before_ms)} .. {_when(rec.not_after_ms)}")
            return [self._notice(index, text, entry.action.text, key_id=rec.key_id.hex(), name=rec.name)]
        if isinstance(entry, RevokeKey):
            rec = self.registry.keys[entry.key_id]
            since = entry.compromised_since_ms
            since_text = "" if since is None else f", compromised since {_when(since)}"
            text = f"key {rec.name} ({rec.key_id.hex()[:16]}) revoked at index {index}{since_text}"
            return [self._notice(index, text, "revoke", key_id=rec.key_id.hex(), name=rec.name)]
        return []

    def _notice(self, index: int, text: str, action: str, **details: Any) -> Finding:
        return Finding("key-event", "notice", f"key-event:{self.origin}:{index}", f"{self.origin}: {text}",
                       {"index": index, "action": action, **details})

    def expiring(self, now_ms: int, window_ms: int) -> list[Finding]:
        """A warning for each live key (not revoked, not rotated away) whose validity ends within
        ``window_ms`` from ``now_ms`` (and has not ended yet)."""
        out = []
        for rec in self.registry.keys.values():
            if not self._live(rec):
                continue
            end = rec.effective_not_after_ms
            if now_ms <= end <= now_ms + window_ms:
                out.append(Finding(
                    "key-expiring", "warning", f"key-expiring:{self.origin}:{rec.key_id.hex()}:{end}",
                    f"{self.origin}: key {rec.name} ({rec.key_id.hex()[:16]}) stops being valid at {_when(end)}, "
                    f"in {(end - now_ms) / DAY_MS:.1f} days: rotate it",
                    {"key_id": rec.key_id.hex(), "name": rec.name, "not_after_ms": end}))
        return out

    @staticmethod
    def _live(rec: KeyRecord) -> bool:
        return rec.revoked_index is None and rec.replaced_by is None
