"""The key registry: the log's own key events replayed into the set of writer keys (normative: spec/keys.md).

Entry 0 is a self-signed :class:`~tlog.entry.Genesis`; every later :class:`~tlog.entry.KeyEvent` and
:class:`~tlog.entry.Erasure` is signed by its operator key and carries its origin.  :meth:`Registry.apply`
folds one leaf in (index order, no gaps); :meth:`Registry.check_event` judges an event entry against the keys.

Every decision except "compromised since" is made by *index*, so checking an event at append time and
checking it after replaying the whole log agree; a revocation with ``compromised_since_ms`` can retroactively
invalidate earlier entries by their integration time (spec/keys.md §Revocation).

``apply`` is O(1) and allocation-free for event entries (they never change the registry), because an auditor
replays every leaf of the log.  Pure: no I/O, no clock.
"""

from __future__ import annotations

import dataclasses
import enum
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tlog.entry import (Entry, Erasure, EventEntry, Genesis, KeyAction, Leaf, RegisterKey, RevokeKey,
                        RotateKey)
from tlog.errors import KeyRegistryError, SignatureError
from tlog.keys import PublicKey

__all__ = ["Registry", "KeyRecord", "Reason", "EntryRejected"]


class Reason(enum.StrEnum):
    """Why an entry was rejected; the text starts the :class:`EntryRejected` message (spec/keys.md §Reasons)."""

    # check_event: an event entry
    UNKNOWN_KEY = "unknown key"
    NOT_YET_VALID = "not yet valid"
    EXPIRED = "expired"
    REVOKED = "revoked"
    COMPROMISED = "compromised"
    WRONG_ORIGIN = "wrong origin"
    TIMESTAMP_SKEW = "timestamp skew"
    BAD_SIGNATURE = "bad signature"
    NOT_AN_EVENT = "not an event entry"
    # apply: sequencing and operator events
    OUT_OF_ORDER = "out of order"
    NO_GENESIS = "no genesis"
    UNEXPECTED_GENESIS = "unexpected genesis"
    DUPLICATE_KEY = "duplicate key"
    OPERATOR_KEY = "operator key"
    BAD_VALIDITY = "bad validity period"
    LIFETIME_EXCEEDED = "lifetime exceeded"
    NAME_IN_USE = "name in use"
    NAME_MISMATCH = "name mismatch"
    ALREADY_ROTATED = "already rotated"
    NOT_CURRENT = "not current"
    ALREADY_REVOKED = "already revoked"
    BAD_ERASURE = "bad erasure"


class EntryRejected(KeyRegistryError):
    """A KeyRegistryError that names the entry index and a machine-readable :class:`Reason`."""

    def __init__(self, index: int, reason: Reason, detail: str) -> None:
        super().__init__(f"entry {index}: {reason}: {detail}")
        self.index = index
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class KeyRecord:
    """One writer key as the registry knows it after the events applied so far (spec/keys.md §Key records).

    ``not_after_ms`` is the registered end of validity; a ROTATE at ``retired_index`` caps it at
    ``retire_at_ms`` for entries sequenced after the rotation (:meth:`not_after_for`).
    """

    public_key: PublicKey
    name: str
    registered_index: int
    not_before_ms: int
    not_after_ms: int
    rate_limit: int
    retired_index: int | None = None
    retire_at_ms: int | None = None
    revoked_index: int | None = None
    compromised_since_ms: int | None = None
    replaced_by: bytes | None = None
    replaces: bytes | None = None
    history: tuple[tuple[int, KeyAction], ...] = ()

    @property
    def key_id(self) -> bytes:
        """The key id (tlog.keys.PublicKey.key_id)."""
        return self.public_key.key_id

    @property
    def effective_not_after_ms(self) -> int:
        """min(not_after, retire_at) once rotated away, else not_after."""
        if self.retire_at_ms is None:
            return self.not_after_ms
        return min(self.not_after_ms, self.retire_at_ms)

    def not_after_for(self, index: int) -> int:
        """The end of validity that applies to an entry at ``index``: rotation only affects later entries."""
        if self.retired_index is not None and index > self.retired_index:
            return self.effective_not_after_ms
        return self.not_after_ms

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (for ``tlog keys list`` and ``/v1/keys``); key ids in hex."""
        return {
            "key_id": self.key_id.hex(), "public_key": self.public_key.to_text(),
            "key_type": self.public_key.key_type.text, "name": self.name,
            "registered_index": self.registered_index, "not_before_ms": self.not_before_ms,
            "not_after_ms": self.not_after_ms, "effective_not_after_ms": self.effective_not_after_ms,
            "retired_index": self.retired_index, "retire_at_ms": self.retire_at_ms, "rate_limit": self.rate_limit,
            "revoked_index": self.revoked_index, "compromised_since_ms": self.compromised_since_ms,
            "replaced_by": _hex(self.replaced_by), "replaces": _hex(self.replaces),
            "history": [{"index": i, "action": a.text} for i, a in self.history],
        }


def _hex(b: bytes | None) -> str | None:
    return None if b is None else b.hex()


class Registry:
    """The key registry of one log, built by replaying its leaves in index order."""

    def __init__(self) -> None:
        self._genesis: Genesis | None = None
        self._size = 0
        self._keys: dict[bytes, KeyRecord] = {}
        self._names: dict[str, bytes] = {}
        self._operator_indices: set[int] = set()
        self._erasures: dict[int, int] = {}

    @classmethod
    def replay(cls, leaves: Iterable[tuple[int, Leaf]], *, sparse: bool = False) -> Registry:
        """Apply every ``(index, leaf)`` in order, starting at index 0 (the genesis).

        With ``sparse=True`` the indices need only increase: the caller declares that every leaf it leaves
        out is an event entry (a server that keeps its operator entries apart; see :meth:`advance`).
        """
        registry = cls()
        for index, leaf in leaves:
            if sparse:
                registry.advance(index)
            registry.apply(index, leaf)
        return registry

    def copy(self) -> Registry:
        """An independent copy (key records are immutable and shared): apply to it without touching this one."""
        new = Registry()
        new._genesis, new._size = self._genesis, self._size
        new._keys, new._names = dict(self._keys), dict(self._names)
        new._operator_indices, new._erasures = set(self._operator_indices), dict(self._erasures)
        return new

    def __copy__(self) -> Registry:
        return self.copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> Registry:
        return self.copy()

    # ------------------------------------------------------------ read access

    @property
    def size(self) -> int:
        """The number of leaves applied: the index the next ``apply`` must carry."""
        return self._size

    @property
    def genesis(self) -> Genesis:
        """The genesis entry; KeyRegistryError before index 0 was applied."""
        if self._genesis is None:
            raise KeyRegistryError("registry is empty: no genesis applied")
        return self._genesis

    @property
    def origin(self) -> str:
        """The log's origin, from the genesis."""
        return self.genesis.origin

    @property
    def operator_key(self) -> PublicKey:
        """The operator key, from the genesis."""
        return self.genesis.operator_key

    @property
    def max_key_lifetime_ms(self) -> int:
        """The longest allowed validity period of a writer key, from the genesis."""
        return self.genesis.max_key_lifetime_ms

    @property
    def max_skew_ms(self) -> int:
        """The largest allowed |event timestamp - integration time|, from the genesis."""
        return self.genesis.max_skew_ms

    @property
    def keys(self) -> Mapping[bytes, KeyRecord]:
        """Every writer key ever registered, by key id (read-only view)."""
        return types.MappingProxyType(self._keys)

    @property
    def erasures(self) -> Mapping[int, int]:
        """Erased entry index -> index of the Erasure entry (read-only view)."""
        return types.MappingProxyType(self._erasures)

    def by_name(self, name: str) -> KeyRecord | None:
        """The current key for ``name``: the latest registered or rotated-in one, unless it was revoked."""
        key_id = self._names.get(name)
        return None if key_id is None else self._keys[key_id]

    def is_operator_index(self, index: int) -> bool:
        """Whether the entry at ``index`` is an operator entry (genesis, key event or erasure)."""
        return index in self._operator_indices

    # ------------------------------------------------------------ apply

    def advance(self, size: int) -> None:
        """Declare that the leaves ``[self.size, size)`` are event entries, which never change the registry:
        O(1), for callers that replay only the operator entries.  It cannot move backwards."""
        if size < self._size or (self._genesis is None and size > 0):
            raise EntryRejected(size, Reason.OUT_OF_ORDER, f"cannot advance a registry of size {self._size} to {size}")
        self._size = size

    def apply(self, index: int, leaf: Leaf) -> None:
        """Fold in the leaf at ``index`` (== :attr:`size`).  Event entries are not checked here (see
        :meth:`check_event`); operator entries are fully validated, and EntryRejected leaves the registry as is."""
        if index != self._size:
            raise EntryRejected(index, Reason.OUT_OF_ORDER, f"expected index {self._size}")
        entry = leaf.entry
        if type(entry) is EventEntry and index:
            self._size = index + 1
            return
        if index == 0:
            self._apply_genesis(leaf)
        else:
            self._apply_operator(index, leaf, entry)
        self._operator_indices.add(index)
        self._size = index + 1

    def _apply_genesis(self, leaf: Leaf) -> None:
        entry = leaf.entry
        if not isinstance(entry, Genesis):
            raise EntryRejected(0, Reason.NO_GENESIS, f"entry 0 must be a genesis, got {type(entry).__name__}")
        try:
            entry.operator_key.verify(leaf.signing_message(), leaf.signature)
        except SignatureError as e:
            raise EntryRejected(0, Reason.BAD_SIGNATURE, f"genesis is not self-signed: {e}") from None
        self._genesis = entry

    def _apply_operator(self, index: int, leaf: Leaf, entry: Entry) -> None:
        if isinstance(entry, Genesis):
            raise EntryRejected(index, Reason.UNEXPECTED_GENESIS, "a genesis is only allowed at index 0")
        if entry.origin != self.origin:
            raise EntryRejected(index, Reason.WRONG_ORIGIN, f"{entry.origin!r} != {self.origin!r}")
        try:
            self.operator_key.verify(leaf.signing_message(), leaf.signature)
        except SignatureError as e:
            raise EntryRejected(index, Reason.BAD_SIGNATURE, f"not signed by the operator key: {e}") from None
        if isinstance(entry, RegisterKey):
            self._register(index, leaf, entry)
        elif isinstance(entry, RotateKey):
            self._rotate(index, entry)
        elif isinstance(entry, RevokeKey):
            self._revoke(index, entry)
        elif isinstance(entry, Erasure):
            self._erase(index, entry)
        else:  # pragma: no cover - decode_body only yields the kinds above
            raise EntryRejected(index, Reason.NOT_AN_EVENT, f"unknown entry type {type(entry).__name__}")

    def _new_record(self, index: int, ev: RegisterKey | RotateKey) -> KeyRecord:
        """Validate a registration (REGISTER or the new key of a ROTATE) and build its record."""
        key_id = ev.key.key_id
        if key_id == self.operator_key.key_id:
            raise EntryRejected(index, Reason.OPERATOR_KEY, "the operator key cannot be a writer key")
        if key_id in self._keys:
            prior = self._keys[key_id].registered_index
            raise EntryRejected(index, Reason.DUPLICATE_KEY, f"key {key_id.hex()} already registered at {prior}")
        if ev.not_after_ms <= ev.not_before_ms:
            raise EntryRejected(index, Reason.BAD_VALIDITY,
                                f"not_after {ev.not_after_ms} <= not_before {ev.not_before_ms}")
        lifetime = ev.not_after_ms - ev.not_before_ms
        if lifetime > self.max_key_lifetime_ms:
            raise EntryRejected(index, Reason.LIFETIME_EXCEEDED,
                                f"validity {lifetime} ms > max_key_lifetime {self.max_key_lifetime_ms} ms")
        return KeyRecord(ev.key, ev.name, index, ev.not_before_ms, ev.not_after_ms, ev.rate_limit,
                         history=((index, ev.action),))

    def _register(self, index: int, leaf: Leaf, ev: RegisterKey) -> None:
        record = self._new_record(index, ev)
        current = self.by_name(ev.name)
        if current is not None and current.not_after_for(index) >= leaf.integrated_ms:
            raise EntryRejected(index, Reason.NAME_IN_USE,
                                f"name {ev.name!r} belongs to live key {current.key_id.hex()}; rotate it instead")
        self._keys[record.key_id] = record
        self._names[ev.name] = record.key_id

    def _rotate(self, index: int, ev: RotateKey) -> None:
        old = self._keys.get(ev.old_key_id)
        if old is None:
            raise EntryRejected(index, Reason.UNKNOWN_KEY, f"old key {ev.old_key_id.hex()} is not registered")
        if old.revoked_index is not None:
            raise EntryRejected(index, Reason.REVOKED, f"old key was revoked at {old.revoked_index}")
        if old.replaced_by is not None:
            raise EntryRejected(index, Reason.ALREADY_ROTATED, f"old key already replaced at {old.retired_index}")
        if ev.name != old.name:
            raise EntryRejected(index, Reason.NAME_MISMATCH, f"new name {ev.name!r} != old name {old.name!r}")
        if self._names.get(old.name) != old.key_id:
            raise EntryRejected(index, Reason.NOT_CURRENT, f"old key is no longer the current key for {old.name!r}")
        new = dataclasses.replace(self._new_record(index, ev), replaces=old.key_id)
        self._keys[old.key_id] = dataclasses.replace(
            old, retired_index=index, retire_at_ms=ev.retire_at_ms, replaced_by=new.key_id,
            history=old.history + ((index, KeyAction.ROTATE),))
        self._keys[new.key_id] = new
        self._names[ev.name] = new.key_id

    def _revoke(self, index: int, ev: RevokeKey) -> None:
        rec = self._keys.get(ev.key_id)
        if rec is None:
            raise EntryRejected(index, Reason.UNKNOWN_KEY, f"key {ev.key_id.hex()} is not registered")
        since = ev.compromised_since_ms
        if rec.revoked_index is not None and not (
                since is not None and (rec.compromised_since_ms is None or since < rec.compromised_since_ms)):
            raise EntryRejected(index, Reason.ALREADY_REVOKED,
                                f"revoked at {rec.revoked_index}; a new revocation may only move compromised_since "
                                "earlier")
        self._keys[ev.key_id] = dataclasses.replace(
            rec, revoked_index=rec.revoked_index if rec.revoked_index is not None else index,
            compromised_since_ms=since if since is not None else rec.compromised_since_ms,
            history=rec.history + ((index, KeyAction.REVOKE),))
        if self._names.get(rec.name) == ev.key_id:
            del self._names[rec.name]

    def _erase(self, index: int, ev: Erasure) -> None:
        target = ev.index
        if target >= index or target in self._operator_indices:
            raise EntryRejected(index, Reason.BAD_ERASURE, f"entry {target} is not an earlier event entry")
        if target in self._erasures:
            raise EntryRejected(index, Reason.BAD_ERASURE, f"entry {target} already erased at {self._erasures[target]}")
        self._erasures[target] = index

    # ------------------------------------------------------------ check_event

    def check_event(self, index: int, leaf: Leaf, *, verify_signature: bool = True) -> KeyRecord:
        """Judge the event entry at ``index`` (1 <= index <= :attr:`size`: already applied, or about to be).

        Returns the signing key's record, or raises EntryRejected with the first failing rule of
        spec/keys.md §3, in this order: not an event, wrong origin, unknown key, revoked, compromised,
        not yet valid, expired, timestamp skew, bad signature.  ``verify_signature=False`` skips only the last
        rule, for a caller that already verified this exact signature over this body.
        """
        entry = leaf.entry
        if type(entry) is not EventEntry or not 1 <= index <= self._size or index in self._operator_indices:
            raise EntryRejected(index, Reason.NOT_AN_EVENT,
                                f"{type(entry).__name__} at index {index} of a registry of size {self._size}")
        if entry.origin != self.origin:
            raise EntryRejected(index, Reason.WRONG_ORIGIN, f"{entry.origin!r} != {self.origin!r}")
        rec = self._keys.get(entry.key_id)
        if rec is None or rec.registered_index >= index:
            raise EntryRejected(index, Reason.UNKNOWN_KEY, f"key {entry.key_id.hex()} not registered before {index}")
        self._check_validity(index, leaf.integrated_ms, rec)
        skew = entry.timestamp_ms - leaf.integrated_ms
        if abs(skew) > self.max_skew_ms:
            raise EntryRejected(index, Reason.TIMESTAMP_SKEW,
                                f"timestamp {entry.timestamp_ms} is {skew} ms from integration time "
                                f"{leaf.integrated_ms} (max {self.max_skew_ms})")
        if verify_signature:
            try:
                rec.public_key.verify(leaf.signing_message(), leaf.signature)
            except SignatureError as e:
                raise EntryRejected(index, Reason.BAD_SIGNATURE, f"key {rec.key_id.hex()}: {e}") from None
        return rec

    @staticmethod
    def _check_validity(index: int, t: int, rec: KeyRecord) -> None:
        """Revocation (by index), compromise (by time), then the validity window at integration time ``t``."""
        kid = rec.key_id.hex()
        if rec.revoked_index is not None and rec.revoked_index < index:
            raise EntryRejected(index, Reason.REVOKED, f"key {kid} revoked at index {rec.revoked_index}")
        if rec.compromised_since_ms is not None and t >= rec.compromised_since_ms:
            raise EntryRejected(index, Reason.COMPROMISED,
                                f"key {kid} compromised since {rec.compromised_since_ms}, entry integrated at {t}")
        if t < rec.not_before_ms:
            raise EntryRejected(index, Reason.NOT_YET_VALID, f"key {kid} valid from {rec.not_before_ms}, entry at {t}")
        not_after = rec.not_after_for(index)
        if t > not_after:
            how = "retired by rotation" if not_after != rec.not_after_ms else "validity ended"
            raise EntryRejected(index, Reason.EXPIRED, f"key {kid} {how} at {not_after}, entry at {t}")

    # ------------------------------------------------------------ export

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict of the whole registry (``tlog keys list``, ``GET /v1/keys``); ``keys`` maps key id
        (hex) to :meth:`KeyRecord.to_json`, in registration order."""
        g = self.genesis
        return {
            "origin": g.origin, "size": self._size, "operator_key": g.operator_key.to_text(),
            "operator_key_id": g.operator_key.key_id_hex, "created_ms": g.created_ms,
            "max_key_lifetime_ms": g.max_key_lifetime_ms, "max_skew_ms": g.max_skew_ms,
            "keys": {r.key_id.hex(): r.to_json()
                     for r in sorted(self._keys.values(), key=lambda r: r.registered_index)},
            "names": {name: kid.hex() for name, kid in sorted(self._names.items())},
            "erasures": [{"index": t, "erasure_index": e} for t, e in sorted(self._erasures.items())],
            "operator_entries": sorted(self._operator_indices),
        }
