"""Who sees payloads: the JSON view of entries with their payloads gated by reader tokens (spec/privacy.md).

Public, to anyone: the tree, tiles, checkpoints, proofs, every leaf (which holds only a salted
commitment to its payload), key events and erasures.  Payloads and salts: only with a valid reader
token.  Every payload returned is counted for its token and logged (``payload_read``).

An event entry's view carries ``payload_access``:

* ``"granted"`` with ``salt`` and ``payload`` (base64);
* ``"reader token required"`` with ``salt`` and ``payload`` null (no ``Authorization`` header);
* ``"erased"`` with ``salt`` and ``payload`` null and ``erasure`` = what :func:`erasure_record` says
  (public: the Erasure entry itself is in the tree).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..entry import EventEntry
from ..note import encode_base64
from .erasure import erasure_record
from .logs import log_event
from .storage import MissingDataError
from .tokens import TokenInfo, parse_bearer

if TYPE_CHECKING:
    from .state import LogState

__all__ = ["authenticate", "entry_views", "TOKEN_REQUIRED", "GRANTED", "ERASED"]

TOKEN_REQUIRED = "reader token required"
GRANTED = "granted"
ERASED = "erased"

_audit = logging.getLogger("tlog.audit")


async def authenticate(state: LogState, authorization: str | None) -> TokenInfo | None:
    """The reader token of an ``Authorization`` header; None without one; TokenError if it is bad."""
    token = parse_bearer(authorization)
    if token is None:
        return None
    if state.tokens is None:
        raise AssertionError("token store not open")
    try:
        return await state.tokens.authenticate(token, state.clock_ms())
    except Exception as exc:
        state.metrics.payload_refusals.labels(type(exc).__name__).inc()
        raise


async def entry_views(state: LogState, rows: list[tuple[int, bytes]], reader: TokenInfo | None) -> list[dict]:
    """``describe_entry`` of each (index, leaf), with payload, salt and erasure fields for event entries."""
    views = []
    read: list[int] = []
    for index, leaf_bytes in rows:
        view = state.describe_entry(index, leaf_bytes)
        if view["kind"] == EventEntry.__name__:
            if await _payload_fields(state, view, index, reader):
                read.append(index)
        views.append(view)
    if read and reader is not None:
        _count_reads(state, reader, read)
    return views


async def _payload_fields(state: LogState, view: dict, index: int, reader: TokenInfo | None) -> bool:
    """Fill salt/payload/payload_access/erasure; True when a payload was returned."""
    view["salt"] = view["payload"] = None
    if await _erased(state, view, index):
        return False
    if reader is None:
        view["payload_access"] = TOKEN_REQUIRED
        return False
    stored = await state.storage.read_payload(index)
    if stored is None:
        # The erasure may have committed while we read: the registry moves right after the commit.
        if await _erased(state, view, index):
            return False
        raise MissingDataError(f"entry {index} has no payload and no erasure covers it")
    view["salt"], view["payload"] = encode_base64(stored[0]), encode_base64(stored[1])
    view["payload_access"] = GRANTED
    return True


async def _erased(state: LogState, view: dict, index: int) -> bool:
    erasure_index = state.sequencer.registry.erasures.get(index)
    if erasure_index is None:
        return False
    view["payload_access"] = ERASED
    view["erasure"] = await erasure_record(state.storage, index, erasure_index)
    return True


def _count_reads(state: LogState, reader: TokenInfo, indices: list[int]) -> None:
    now = state.clock_ms()
    if state.tokens is not None:
        state.tokens.record_read(reader, now, len(indices))
    state.metrics.payload_reads.labels(reader.id).inc(len(indices))
    for index in indices:
        log_event(_audit, "payload_read", token_id=reader.id, token_name=reader.name, role=reader.role,
                  index=index, at_ms=now)
