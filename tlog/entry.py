"""The entry format: canonical binary entry bodies and the tree leaf that carries them (normative: spec/entry.md).

Every body starts with a version byte (1) and a kind byte; integers are big-endian; strings are UTF-8 with a
length prefix; times are uint64 milliseconds since the Unix epoch, passed in by the caller.  Decoding is strict:
exact lengths, no trailing bytes, valid UTF-8, size caps; each class validates its fields on construction, so
every value that exists re-encodes to the bytes it was decoded from.

Signatures cover ``"tlog-entry-signature-v1" 0x00 || body`` (domain separation); entry identity covers
``"tlog-entry-identity-v1" 0x00 || body`` only, never the signature (ECDSA signatures are malleable).

Pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

from tlog.errors import FormatError
from tlog.hashing import leaf_hash
from tlog.keys import KEY_ID_SIZE, KeyType, PrivateKey, PublicKey

__all__ = [
    "VERSION",
    "EntryKind",
    "KeyAction",
    "EventEntry",
    "Genesis",
    "KeyEvent",
    "RegisterKey",
    "RotateKey",
    "RevokeKey",
    "Erasure",
    "Entry",
    "Leaf",
    "decode_body",
    "payload_commitment",
    "register_event",
    "rotate_event",
    "revoke_event",
    "sign_entry",
    "verify_entry_signature",
    "SIGNATURE_CONTEXT",
    "IDENTITY_CONTEXT",
    "PAYLOAD_CONTEXT",
    "MAX_LEAF_SIZE",
    "MAX_ORIGIN_SIZE",
    "MAX_NAME_SIZE",
    "MAX_REASON_SIZE",
    "MAX_SIGNATURE_SIZE",
    "MIN_SALT_SIZE",
    "MAX_SALT_SIZE",
    "DEFAULT_MAX_KEY_LIFETIME_MS",
    "DEFAULT_MAX_SKEW_MS",
]

VERSION = 1
SIGNATURE_CONTEXT = b"tlog-entry-signature-v1\x00"
IDENTITY_CONTEXT = b"tlog-entry-identity-v1\x00"
PAYLOAD_CONTEXT = b"tlog-payload-v1\x00"
MAX_LEAF_SIZE = 65535  # the encoded leaf is < 65536 bytes (one uint16 entry-bundle record)
MAX_ORIGIN_SIZE = 255
MAX_NAME_SIZE = 64
MAX_REASON_SIZE = 1024
MAX_SIGNATURE_SIZE = 255
MIN_SALT_SIZE, MAX_SALT_SIZE = 16, 255
DEFAULT_MAX_KEY_LIFETIME_MS = 365 * 24 * 3600 * 1000
DEFAULT_MAX_SKEW_MS = 5 * 60 * 1000
_U32, _U64 = 2**32, 2**64
_HASH_SIZE = 32


class EntryKind(enum.IntEnum):
    """The kind byte of a body (spec/entry.md §Kinds)."""

    EVENT = 1
    GENESIS = 2
    KEY_EVENT = 3
    ERASURE = 4


class KeyAction(enum.IntEnum):
    """The action byte of a key event (spec/entry.md §Key events)."""

    REGISTER = 1
    ROTATE = 2
    REVOKE = 3

    @property
    def text(self) -> str:
        """Lowercase name: ``register``, ``rotate``, ``revoke``."""
        return self.name.lower()


# ---------------------------------------------------------------- field validation (FormatError on bad values)

def _check_int(name: str, value: object, limit: int, minimum: int = 0) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value < limit:
        raise FormatError(f"{name} must be an integer in [{minimum}, {limit}), got {value!r}")


def _check_hash(name: str, value: object) -> None:
    if not isinstance(value, bytes) or len(value) != _HASH_SIZE:
        raise FormatError(f"{name} must be {_HASH_SIZE} bytes")


def _utf8(name: str, value: object, lo: int, hi: int) -> bytes:
    if not isinstance(value, str):
        raise FormatError(f"{name} must be a string")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError(f"{name} is not valid Unicode (lone surrogate)") from None
    if not lo <= len(raw) <= hi:
        raise FormatError(f"{name} must be {lo}..{hi} UTF-8 bytes, got {len(raw)}")
    return raw


def _check_printable(name: str, value: object, hi: int) -> None:
    """Origins and key names: 1..hi UTF-8 bytes of printable characters (no controls, no newlines)."""
    _utf8(name, value, 1, hi)
    if not value.isprintable():  # type: ignore[union-attr]
        raise FormatError(f"{name} must be printable, got {value!r}")


def _check_reason(value: object) -> None:
    _utf8("reason", value, 0, MAX_REASON_SIZE)
    if not all(c == "\n" or c.isprintable() for c in value):  # type: ignore[union-attr]
        raise FormatError("reason must be printable text (newlines allowed)")


# ---------------------------------------------------------------- encoding helpers

def _u8(v: int) -> bytes:
    return bytes((v,))


def _u64(v: int) -> bytes:
    return v.to_bytes(8, "big")


def _str8(s: str) -> bytes:
    raw = s.encode("utf-8")
    return _u8(len(raw)) + raw


def _str16(s: str) -> bytes:
    raw = s.encode("utf-8")
    return len(raw).to_bytes(2, "big") + raw


def _opt_u64(v: int | None) -> bytes:
    return b"\x00" if v is None else b"\x01" + _u64(v)


class _Reader:
    """A cursor over a body; every read is bounds-checked and raises FormatError."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.data):
            raise FormatError(f"truncated: need {n} bytes at offset {self.pos}, have {len(self.data) - self.pos}")
        out, self.pos = self.data[self.pos:end], end
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def text(self, name: str, prefix_size: int) -> str:
        raw = self.take(self.uint(prefix_size))
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{name} is not valid UTF-8") from None

    def key(self) -> PublicKey:
        key_type = KeyType.from_byte(self.u8())
        return PublicKey(key_type, self.take(key_type.raw_size))

    def opt_u64(self, name: str) -> int | None:
        flag = self.u8()
        if flag > 1:
            raise FormatError(f"{name}: presence flag must be 0 or 1, got {flag}")
        return self.uint(8) if flag else None

    def end(self) -> None:
        if self.pos != len(self.data):
            raise FormatError(f"{len(self.data) - self.pos} trailing bytes after offset {self.pos}")


class _Body:
    """Shared behaviour of every body class: the header and the signing message."""

    kind: ClassVar[EntryKind]

    def _fields(self) -> bytes:
        raise NotImplementedError

    def encode(self) -> bytes:
        """The canonical body: version byte, kind byte, fields (spec/entry.md)."""
        return bytes((VERSION, self.kind)) + self._fields()

    def signing_message(self) -> bytes:
        """``"tlog-entry-signature-v1" 0x00 || body``: what the signature covers (spec/entry.md §Signatures)."""
        return SIGNATURE_CONTEXT + self.encode()


# ---------------------------------------------------------------- the body kinds

@dataclass(frozen=True)
class EventEntry(_Body):
    """Kind 1: an audit event, signed by the writer key ``key_id`` (spec/entry.md §Event)."""

    origin: str
    key_id: bytes
    timestamp_ms: int
    commitment: bytes
    kind: ClassVar[EntryKind] = EntryKind.EVENT

    def __post_init__(self) -> None:
        _check_printable("origin", self.origin, MAX_ORIGIN_SIZE)
        _check_hash("key_id", self.key_id)
        _check_int("timestamp_ms", self.timestamp_ms, _U64)
        _check_hash("commitment", self.commitment)

    def _fields(self) -> bytes:
        return _str8(self.origin) + self.key_id + _u64(self.timestamp_ms) + self.commitment

    @classmethod
    def _read(cls, r: _Reader) -> EventEntry:
        return cls(r.text("origin", 1), r.take(KEY_ID_SIZE), r.uint(8), r.take(_HASH_SIZE))


@dataclass(frozen=True)
class Genesis(_Body):
    """Kind 2: entry 0, self-signed by the operator key; fixes the log's parameters (spec/keys.md)."""

    origin: str
    operator_key: PublicKey
    created_ms: int
    max_key_lifetime_ms: int = DEFAULT_MAX_KEY_LIFETIME_MS
    max_skew_ms: int = DEFAULT_MAX_SKEW_MS
    kind: ClassVar[EntryKind] = EntryKind.GENESIS

    def __post_init__(self) -> None:
        _check_printable("origin", self.origin, MAX_ORIGIN_SIZE)
        if not isinstance(self.operator_key, PublicKey):
            raise FormatError("operator_key must be a PublicKey")
        _check_int("created_ms", self.created_ms, _U64)
        _check_int("max_key_lifetime_ms", self.max_key_lifetime_ms, _U64, minimum=1)
        _check_int("max_skew_ms", self.max_skew_ms, _U64)

    def _fields(self) -> bytes:
        return (_str8(self.origin) + self.operator_key.to_bytes() + _u64(self.created_ms)
                + _u64(self.max_key_lifetime_ms) + _u64(self.max_skew_ms))

    @classmethod
    def _read(cls, r: _Reader) -> Genesis:
        return cls(r.text("origin", 1), r.key(), r.uint(8), r.uint(8), r.uint(8))


@dataclass(frozen=True, kw_only=True)
class KeyEvent(_Body):
    """Kind 3: a key-registry event signed by the operator key.  Use the subclasses (spec/keys.md)."""

    origin: str
    timestamp_ms: int
    kind: ClassVar[EntryKind] = EntryKind.KEY_EVENT
    action: ClassVar[KeyAction]

    def __post_init__(self) -> None:
        if type(self) is KeyEvent:
            raise TypeError("KeyEvent is abstract: use RegisterKey, RotateKey or RevokeKey")
        _check_printable("origin", self.origin, MAX_ORIGIN_SIZE)
        _check_int("timestamp_ms", self.timestamp_ms, _U64)

    def _header(self) -> bytes:
        return _u8(self.action) + _str8(self.origin) + _u64(self.timestamp_ms)


def _check_registration(ev: RegisterKey | RotateKey) -> None:
    if not isinstance(ev.key, PublicKey):
        raise FormatError("key must be a PublicKey")
    _check_printable("name", ev.name, MAX_NAME_SIZE)
    _check_int("not_before_ms", ev.not_before_ms, _U64)
    _check_int("not_after_ms", ev.not_after_ms, _U64)
    _check_int("rate_limit", ev.rate_limit, _U32)


def _registration(ev: RegisterKey | RotateKey) -> bytes:
    return (ev.key.to_bytes() + _str8(ev.name) + _u64(ev.not_before_ms) + _u64(ev.not_after_ms)
            + ev.rate_limit.to_bytes(4, "big"))


@dataclass(frozen=True, kw_only=True)
class RegisterKey(KeyEvent):
    """Action 1: register a writer key valid for integration times [not_before_ms, not_after_ms]."""

    key: PublicKey
    name: str
    not_before_ms: int
    not_after_ms: int
    rate_limit: int = 0  # entries per second; 0 = no limit
    action: ClassVar[KeyAction] = KeyAction.REGISTER

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_registration(self)

    def _fields(self) -> bytes:
        return self._header() + _registration(self)


@dataclass(frozen=True, kw_only=True)
class RotateKey(KeyEvent):
    """Action 2: register ``key`` as the successor of ``old_key_id``, which retires at ``retire_at_ms``."""

    old_key_id: bytes
    key: PublicKey
    name: str
    not_before_ms: int
    not_after_ms: int
    retire_at_ms: int
    rate_limit: int = 0
    action: ClassVar[KeyAction] = KeyAction.ROTATE

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_hash("old_key_id", self.old_key_id)
        _check_registration(self)
        _check_int("retire_at_ms", self.retire_at_ms, _U64)

    def _fields(self) -> bytes:
        return self._header() + self.old_key_id + _registration(self) + _u64(self.retire_at_ms)


@dataclass(frozen=True, kw_only=True)
class RevokeKey(KeyEvent):
    """Action 3: revoke ``key_id``; with ``compromised_since_ms`` also distrust entries integrated since then."""

    key_id: bytes
    compromised_since_ms: int | None = None
    action: ClassVar[KeyAction] = KeyAction.REVOKE

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_hash("key_id", self.key_id)
        if self.compromised_since_ms is not None:
            _check_int("compromised_since_ms", self.compromised_since_ms, _U64)

    def _fields(self) -> bytes:
        return self._header() + self.key_id + _opt_u64(self.compromised_since_ms)


def _read_registration(r: _Reader) -> dict[str, Any]:
    """The registration fields shared by REGISTER and ROTATE, in wire order."""
    return {"key": r.key(), "name": r.text("name", 1), "not_before_ms": r.uint(8), "not_after_ms": r.uint(8),
            "rate_limit": r.uint(4)}


def _read_key_event(r: _Reader) -> KeyEvent:
    action = r.u8()
    origin, ts = r.text("origin", 1), r.uint(8)
    if action == KeyAction.REGISTER:
        return RegisterKey(origin=origin, timestamp_ms=ts, **_read_registration(r))
    if action == KeyAction.ROTATE:
        old = r.take(KEY_ID_SIZE)
        fields = _read_registration(r)
        return RotateKey(origin=origin, timestamp_ms=ts, old_key_id=old, **fields, retire_at_ms=r.uint(8))
    if action == KeyAction.REVOKE:
        return RevokeKey(origin=origin, timestamp_ms=ts, key_id=r.take(KEY_ID_SIZE),
                         compromised_since_ms=r.opt_u64("compromised_since_ms"))
    raise FormatError(f"unknown key event action {action}")


@dataclass(frozen=True)
class Erasure(_Body):
    """Kind 4: the operator states that the payload of entry ``index`` was erased (spec/entry.md §Erasure)."""

    origin: str
    index: int
    reason: str
    timestamp_ms: int
    kind: ClassVar[EntryKind] = EntryKind.ERASURE

    def __post_init__(self) -> None:
        _check_printable("origin", self.origin, MAX_ORIGIN_SIZE)
        _check_int("index", self.index, _U64)
        _check_reason(self.reason)
        _check_int("timestamp_ms", self.timestamp_ms, _U64)

    def _fields(self) -> bytes:
        return _str8(self.origin) + _u64(self.index) + _str16(self.reason) + _u64(self.timestamp_ms)

    @classmethod
    def _read(cls, r: _Reader) -> Erasure:
        return cls(r.text("origin", 1), r.uint(8), r.text("reason", 2), r.uint(8))


Entry = Union[EventEntry, Genesis, RegisterKey, RotateKey, RevokeKey, Erasure]

_EVENT_PREFIX = bytes([VERSION, EntryKind.EVENT])
_EVENT_TAIL = struct.Struct(f">{KEY_ID_SIZE}sQ{_HASH_SIZE}s")  # key id, timestamp_ms, commitment

_READERS = {
    EntryKind.EVENT: EventEntry._read,
    EntryKind.GENESIS: Genesis._read,
    EntryKind.KEY_EVENT: _read_key_event,
    EntryKind.ERASURE: Erasure._read,
}


def decode_body(data: bytes) -> Entry:
    """Decode any body strictly (spec/entry.md): version 1, a known kind, exact framing, no trailing bytes.

    Entries are immutable, so the last few decodings are remembered: the append path decodes one body
    in several places (handler, leaf, metrics) and pays for it once."""
    if not isinstance(data, bytes):
        raise FormatError("body must be bytes")
    if len(data) <= _CACHED_BODY_SIZE:
        return _decode_body_cached(data)
    return _decode_body(data)


_CACHED_BODY_SIZE = 4096


@functools.lru_cache(maxsize=512)
def _decode_body_cached(data: bytes) -> Entry:
    return _decode_body(data)


def _decode_body(data: bytes) -> Entry:
    if len(data) > MAX_LEAF_SIZE:
        raise FormatError(f"body of {len(data)} bytes exceeds {MAX_LEAF_SIZE}")
    if len(data) > 2 and data[:2] == _EVENT_PREFIX and len(data) == 3 + data[2] + _EVENT_TAIL.size:
        # The usual body, an event of exactly the right length, read in one struct call: the same
        # checks as the general path below (EventEntry's own validation included), at half the cost.
        # Anything else, malformed events too, goes the general way and gets its error from there.
        try:
            origin = data[3:3 + data[2]].decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError("origin is not valid UTF-8") from None
        return EventEntry(origin, *_EVENT_TAIL.unpack_from(data, 3 + data[2]))
    return _read_body(data)


def _read_body(data: bytes) -> Entry:
    """Any body, field by field."""
    r = _Reader(data)
    version, kind = r.u8(), r.u8()
    if version != VERSION:
        raise FormatError(f"unsupported entry version {version}")
    reader = _READERS.get(kind)  # type: ignore[call-overload]
    if reader is None:
        raise FormatError(f"unknown entry kind {kind}")
    entry = reader(r)
    r.end()
    return entry  # type: ignore[no-any-return]


# ---------------------------------------------------------------- helpers

def payload_commitment(salt: bytes, payload: bytes) -> bytes:
    """SHA-256("tlog-payload-v1" 0x00 || uint8 len(salt) || salt || payload), salt 16..255 bytes (spec/entry.md)."""
    if not isinstance(salt, bytes) or not MIN_SALT_SIZE <= len(salt) <= MAX_SALT_SIZE:
        raise FormatError(f"salt must be {MIN_SALT_SIZE}..{MAX_SALT_SIZE} bytes")
    if not isinstance(payload, bytes):
        raise FormatError("payload must be bytes")
    return hashlib.sha256(PAYLOAD_CONTEXT + _u8(len(salt)) + salt + payload).digest()


def register_event(origin: str, timestamp_ms: int, key: PublicKey, name: str, not_before_ms: int,
                   not_after_ms: int, rate_limit: int = 0) -> RegisterKey:
    """A REGISTER key event (spec/keys.md §REGISTER)."""
    return RegisterKey(origin=origin, timestamp_ms=timestamp_ms, key=key, name=name,
                       not_before_ms=not_before_ms, not_after_ms=not_after_ms, rate_limit=rate_limit)


def rotate_event(origin: str, timestamp_ms: int, old_key_id: bytes, key: PublicKey, name: str,
                 not_before_ms: int, not_after_ms: int, retire_at_ms: int, rate_limit: int = 0) -> RotateKey:
    """A ROTATE key event (spec/keys.md §ROTATE)."""
    return RotateKey(origin=origin, timestamp_ms=timestamp_ms, old_key_id=old_key_id, key=key, name=name,
                     not_before_ms=not_before_ms, not_after_ms=not_after_ms, retire_at_ms=retire_at_ms,
                     rate_limit=rate_limit)


def revoke_event(origin: str, timestamp_ms: int, key_id: bytes,
                 compromised_since_ms: int | None = None) -> RevokeKey:
    """A REVOKE key event (spec/keys.md §REVOKE)."""
    return RevokeKey(origin=origin, timestamp_ms=timestamp_ms, key_id=key_id,
                     compromised_since_ms=compromised_since_ms)


def sign_entry(entry: Entry, private_key: PrivateKey) -> bytes:
    """Sign ``entry.signing_message()`` (spec/entry.md §Signatures)."""
    return private_key.sign(entry.signing_message())


def verify_entry_signature(entry: Entry, signature: bytes, public_key: PublicKey) -> None:
    """Verify a signature over ``entry.signing_message()``; SignatureError if it does not verify."""
    public_key.verify(entry.signing_message(), signature)


# ---------------------------------------------------------------- the tree leaf

@dataclass(frozen=True)
class Leaf:
    """The tree leaf (spec/entry.md §Leaf): a body, its signature and the log's integration time.

    The body is decoded (strictly) on construction; ``.entry`` is the decoded value.
    """

    body: bytes
    signature: bytes
    integrated_ms: int
    _entry: Entry = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.body, bytes) or not isinstance(self.signature, bytes):
            raise FormatError("leaf body and signature must be bytes")
        if not 1 <= len(self.signature) <= MAX_SIGNATURE_SIZE:
            raise FormatError(f"signature must be 1..{MAX_SIGNATURE_SIZE} bytes, got {len(self.signature)}")
        _check_int("integrated_ms", self.integrated_ms, _U64)
        size = 13 + len(self.body) + len(self.signature)
        if size > MAX_LEAF_SIZE:
            raise FormatError(f"leaf of {size} bytes exceeds {MAX_LEAF_SIZE}")
        object.__setattr__(self, "_entry", decode_body(self.body))

    @property
    def entry(self) -> Entry:
        """The decoded body."""
        return self._entry

    def encode(self) -> bytes:
        """version (1) || uint64 integrated_ms || uint16 len || body || uint16 len || signature."""
        return b"".join((
            struct.pack(">BQH", VERSION, self.integrated_ms, len(self.body)), self.body,
            struct.pack(">H", len(self.signature)), self.signature))

    @classmethod
    def decode(cls, data: bytes) -> Leaf:
        """Strict inverse of :meth:`encode`."""
        if not isinstance(data, bytes) or len(data) > MAX_LEAF_SIZE:
            raise FormatError(f"leaf must be bytes of at most {MAX_LEAF_SIZE}")
        r = _Reader(data)
        version = r.u8()
        if version != VERSION:
            raise FormatError(f"unsupported leaf version {version}")
        integrated_ms, body = r.uint(8), r.take(r.uint(2))
        signature = r.take(r.uint(2))
        r.end()
        return cls(body, signature, integrated_ms)

    def signing_message(self) -> bytes:
        """What the signature covers: ``"tlog-entry-signature-v1" 0x00 || body``."""
        return SIGNATURE_CONTEXT + self.body

    def identity(self) -> bytes:
        """SHA-256("tlog-entry-identity-v1" 0x00 || body): the deduplication key; ignores the signature."""
        return hashlib.sha256(IDENTITY_CONTEXT + self.body).digest()

    def hash(self) -> bytes:
        """RFC 6962 §2.1 leaf hash of :meth:`encode`: the value in the Merkle tree."""
        return leaf_hash(self.encode())
