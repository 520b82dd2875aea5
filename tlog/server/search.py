"""Search the log: ``GET /v1/entries?key=K&since=T&until=T&after=I&limit=N`` and key timelines.

Every query is a few index searches, whatever the log's size (schema.sql): a time bound becomes an
index bound through ``leaves_time`` (integration times never decrease along the tree: the sequencer
stamps each batch with ``max(clock, previous)``), then the index range is read through the primary
key, or through ``leaves_key (key_id, idx)`` for one key.  A key *name* means every key that ever
carried it (a rotation keeps the name), merged in index order.

Results are in index order, at most ``limit`` per page, and only below the tree size reported with
them, so each one is provable against that checkpoint.  ``next`` is the cursor for the following page
(pass it as ``after``), null on the last page.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..entry import Leaf
from ..errors import FormatError
from ..registry import Registry
from ..timefmt import iso8601_ms
from .state import NotFoundError

if TYPE_CHECKING:
    from .state import LogState

__all__ = ["SearchQuery", "parse_search_query", "parse_time_param", "resolve_key", "search", "key_timeline",
           "DEFAULT_LIMIT", "MAX_LIMIT"]

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_PARAMS = {"key", "since", "until", "after", "limit"}
_INT_RE = re.compile(r"0|[1-9][0-9]{0,18}")
_HEX_ID = re.compile(r"[0-9a-f]{64}")
_MAX_INT = (1 << 63) - 1


@dataclass(frozen=True)
class SearchQuery:
    key: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    after: int | None = None
    limit: int = DEFAULT_LIMIT

    def to_json(self) -> dict:
        return {"key": self.key, "since_ms": self.since_ms, "until_ms": self.until_ms, "after": self.after,
                "limit": self.limit}


def _int(name: str, raw: str) -> int:
    if not _INT_RE.fullmatch(raw) or int(raw) > _MAX_INT:
        raise FormatError(f"query parameter {name!r} must be a decimal integer in [0, 2**63-1], not {raw[:40]!r}")
    return int(raw)


def parse_time_param(name: str, raw: str) -> int:
    """Milliseconds since the epoch (canonical decimal) or an ISO 8601 time (UTC when no offset)."""
    if raw[:1].isdigit() and _INT_RE.fullmatch(raw):
        return _int(name, raw)
    try:
        ms = iso8601_ms(raw)
    except ValueError as exc:
        raise FormatError(f"query parameter {name!r} must be milliseconds or ISO 8601, not {raw[:40]!r}") from exc
    if not 0 <= ms <= _MAX_INT:
        raise FormatError(f"query parameter {name!r} is before 1970")
    return ms


def parse_search_query(query: Mapping[str, str]) -> SearchQuery:
    unknown = set(query) - _PARAMS
    if unknown:
        raise FormatError(f"unknown query parameters {sorted(unknown)}; known: {sorted(_PARAMS)}")
    getall = getattr(query, "getall", None)
    if getall is not None and any(len(getall(k)) > 1 for k in set(query)):
        raise FormatError("each query parameter may be given once")
    key = query.get("key")
    if key is not None and not 1 <= len(key) <= 64:
        raise FormatError("key must be a key id (64 hex digits) or a key name (1..64 characters)")
    limit = _int("limit", query["limit"]) if "limit" in query else DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise FormatError(f"limit must be 1..{MAX_LIMIT}, not {limit}")
    return SearchQuery(
        key=key,
        since_ms=parse_time_param("since", query["since"]) if "since" in query else None,
        until_ms=parse_time_param("until", query["until"]) if "until" in query else None,
        after=_int("after", query["after"]) if "after" in query else None,
        limit=limit)


def resolve_key(registry: Registry, ref: str) -> list[bytes]:
    """Key ids for a hex key id or a key name (every key ever registered under it, oldest first)."""
    if _HEX_ID.fullmatch(ref):
        kid = bytes.fromhex(ref)
        if kid not in registry.keys:
            raise NotFoundError(f"key {ref} is not registered in this log")
        return [kid]
    found = sorted((r for r in registry.keys.values() if r.name == ref), key=lambda r: r.registered_index)
    if not found:
        raise NotFoundError(f"no key id or key name {ref!r} in this log's registry")
    return [r.key_id for r in found]


async def _index_bounds(state: LogState, q: SearchQuery, size: int) -> tuple[int, int]:
    start = 0 if q.after is None else q.after + 1
    end = size
    if q.since_ms is not None:
        start = max(start, await state.storage.first_index_at(q.since_ms, size))
    if q.until_ms is not None:
        end = min(end, await state.storage.first_index_at(q.until_ms, size))
    return start, end


async def search(state: LogState, q: SearchQuery) -> tuple[int, list[tuple[int, bytes]], int | None]:
    """(tree size, [(index, leaf)] of one page, next cursor or None)."""
    size = state.head.size
    key_ids = None if q.key is None else resolve_key(state.sequencer.registry, q.key)
    start, end = await _index_bounds(state, q, size)
    if start >= end:
        return size, [], None
    want = q.limit + 1  # one more than a page tells whether there is a next page
    if key_ids is None:
        rows = await state.storage.search_leaves(None, start, end, want, q.since_ms, q.until_ms)
    else:
        pages = [await state.storage.search_leaves(k, start, end, want, q.since_ms, q.until_ms) for k in key_ids]
        rows = list(heapq.merge(*pages))[:want]
    more = len(rows) > q.limit
    rows = rows[:q.limit]
    return size, rows, rows[-1][0] if more else None


# -- key timelines ---------------------------------------------------------------------------------

async def _integrated_ms(state: LogState, index: int) -> int:
    return Leaf.decode((await state.storage.read_leaves(index, index + 1))[0]).integrated_ms


def _history_text(rec, index: int) -> str:
    if index == rec.registered_index:
        return "registered" if rec.replaces is None else f"registered (rotation of {rec.replaces.hex()})"
    if index == rec.retired_index:
        return f"rotated to {rec.replaced_by.hex()}" if rec.replaced_by else "rotated"
    if rec.compromised_since_ms is not None and index != rec.revoked_index:
        return "revocation updated (compromised since moved earlier)"
    return "revoked" if rec.compromised_since_ms is None else "revoked (compromised)"


async def key_timeline(state: LogState, ref: str) -> dict:
    """Every key for ``ref`` (key id or name) with its record, usage and dated timeline:
    registered, first used, last used (with the count), rotated, revoked, in index order."""
    size = state.head.size
    registry = state.sequencer.registry
    out = []
    for kid in resolve_key(registry, ref):
        rec = registry.keys[kid]
        count, first, last = await state.storage.key_usage(kid, size)
        events = [{"index": index, "time_ms": await _integrated_ms(state, index), "event": _history_text(rec, index)}
                  for index, _ in rec.history]
        if first is not None:
            events.append({"index": first, "time_ms": await _integrated_ms(state, first), "event": "first used"})
            events.append({"index": last, "time_ms": await _integrated_ms(state, last),
                           "event": f"last used ({count} entries)"})
        events.sort(key=lambda e: (e["index"], e["event"] != "first used"))
        usage = {"count": count, "first_index": first, "last_index": last}
        out.append({"key_id": kid.hex(), "name": rec.name, "record": rec.to_json(), "usage": usage,
                    "timeline": events})
    return {"tree_size": size, "ref": ref, "keys": out}
