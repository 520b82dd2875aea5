"""C2SP signed-note (https://c2sp.org/signed-note): notes, Ed25519 signers and verifiers, key strings.

A *note* is a *text* (UTF-8, ending in a newline) followed by a blank line and one or more *signature
lines* ``— <key name> base64(key ID || signature)``.  The *key ID* is the first four bytes of
``SHA-256(key name || 0x0A || signature type || public key)`` read as a big-endian uint32.

Key strings follow golang.org/x/mod/sumdb/note:

* verifier key (*vkey*): ``<name>+<key ID as 8 lowercase hex digits>+base64(type || public key)``;
* signer key (*skey*): ``PRIVATE+KEY+<name>+<key ID>+base64(type || Ed25519 seed)``.

Parsing is strict and canonical (see spec/formats.md): size caps, exact framing, strict base64 that
re-encodes to the same text, valid UTF-8, no ASCII control characters other than newline.  Every
problem with the input raises :class:`~tlog.errors.FormatError` (framing) or
:class:`~tlog.errors.SignatureError` (a signature that is bad or missing).

Pure: no I/O, no clock.  Randomness is used only by :func:`generate_signer` when no seed is given.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Iterable, Protocol, Self, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tlog.errors import FormatError, InvariantError, SignatureError
from tlog.keys import ed25519_sign

__all__ = [
    "KEY_TYPE_ED25519",
    "KEY_TYPE_COSIGNATURE_V1",
    "MAX_NOTE_SIZE",
    "MAX_SIGNATURES",
    "MAX_KEY_TEXT_SIZE",
    "SIGNATURE_PREFIX",
    "decode_base64_strict",
    "encode_base64",
    "is_valid_key_name",
    "compute_key_id",
    "ed25519_verify",
    "load_ed25519_public_key",
    "NoteSigner",
    "NamedKey",
    "Signer",
    "Verifier",
    "generate_signer",
    "vkey_for",
    "Signature",
    "Note",
    "UnverifiedNoteError",
    "parse_note",
    "parse_signature_line",
    "sign_note",
    "add_signatures",
    "open_note",
]

#: signed-note "Signature types": 0x01 is Ed25519 over the note text.
KEY_TYPE_ED25519 = 0x01
#: signed-note "Signature types": 0x04 is the timestamped Ed25519 witness cosignature (tlog-cosignature).
KEY_TYPE_COSIGNATURE_V1 = 0x04

#: Upper bound on an encoded note, signatures included (signed-note lets verifiers cap the size).
MAX_NOTE_SIZE = 1 << 20
#: Upper bound on signature lines in one note (signed-note: verifiers MUST accept at least 16).
MAX_SIGNATURES = 100
#: Upper bound on a vkey or skey string.
MAX_KEY_TEXT_SIZE = 4096

#: Every signature line starts with an em dash (U+2014) and a space.
SIGNATURE_PREFIX = "\u2014 "

_KEY_ID_SIZE = 4
_ED25519_KEY_SIZE = 32
_ED25519_SIGNATURE_SIZE = 64
#: The order L of the Ed25519 base point (RFC 8032 §5.1); a canonical S is < L.
_ED25519_L = 2**252 + 27742317777372353535851937790883648493
_HEX_DIGITS = frozenset("0123456789abcdef")
_SKEY_PREFIX = "PRIVATE+KEY+"


# ---------------------------------------------------------------------------------------------
# Primitives shared by the C2SP formats


def decode_base64_strict(text: str, what: str = "base64") -> bytes:
    """Decode standard base64 (RFC 4648 §4) strictly: alphabet, padding, and a canonical encoding.

    The input must re-encode to exactly the same text, so non-zero padding bits and missing or extra
    ``=`` are rejected.  Raises FormatError naming ``what``.
    """
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error) as exc:  # non-ASCII text raises ValueError
        raise FormatError(f"{what}: invalid base64") from exc
    if base64.b64encode(raw).decode("ascii") != text:
        raise FormatError(f"{what}: non-canonical base64")
    return raw


def encode_base64(raw: bytes) -> str:
    """Standard base64 (RFC 4648 §4) with padding, as text."""
    return base64.b64encode(raw).decode("ascii")


def is_valid_key_name(name: object) -> bool:
    """signed-note "Format": a key name is non-empty and has no Unicode spaces and no ``+``.

    Also rejected: ASCII control characters (forbidden anywhere in a note) and text that is not valid
    UTF-8 (lone surrogates).  The set of spaces is Go's ``unicode.IsSpace`` (``str.isspace``).
    """
    if not isinstance(name, str) or not name or "+" in name:
        return False
    if any(c.isspace() or c < " " for c in name):
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _require_name(name: object) -> str:
    if not is_valid_key_name(name):
        raise FormatError(f"invalid key name {name!r}: must be non-empty, without spaces or '+'")
    return cast(str, name)


def compute_key_id(name: str, key_type: int, public_key: bytes) -> int:
    """signed-note key ID: SHA-256(key name || 0x0A || signature type || public key)[:4], big-endian."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([key_type]) + public_key).digest()
    return int.from_bytes(digest[:_KEY_ID_SIZE], "big")


def ed25519_verify(public_key: Ed25519PublicKey, message: bytes, signature: bytes) -> bool:
    """RFC 8032 Ed25519 verification that also insists on a 64-byte signature with canonical S < L."""
    if len(signature) != _ED25519_SIGNATURE_SIZE:
        return False
    if int.from_bytes(signature[32:], "little") >= _ED25519_L:
        return False
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _raw_public_key(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _raw_seed(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def load_ed25519_public_key(raw: bytes) -> Ed25519PublicKey:
    """A 32-byte RFC 8032 Ed25519 public key; FormatError for any other length."""
    if len(raw) != _ED25519_KEY_SIZE:
        raise FormatError(f"Ed25519 public key is {len(raw)} bytes, want {_ED25519_KEY_SIZE}")
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise FormatError("invalid Ed25519 public key") from exc


def _parse_key_id(text: str) -> int:
    if len(text) != 8 or not set(text) <= _HEX_DIGITS:
        raise FormatError(f"key ID {text!r} is not 8 lowercase hex digits")
    return int(text, 16)


def _split_key_text(text: object, what: str) -> tuple[str, int, int, bytes]:
    """Split ``name+keyid+base64(type||key)``; base64 may contain '+', so split on the first two only."""
    if not isinstance(text, str) or len(text) > MAX_KEY_TEXT_SIZE:
        raise FormatError(f"{what}: not a string of at most {MAX_KEY_TEXT_SIZE} characters")
    parts = text.split("+", 2)
    if len(parts) != 3:
        raise FormatError(f"{what}: want <name>+<key ID>+<base64 key>")
    name = _require_name(parts[0])
    key_id = _parse_key_id(parts[1])
    raw = decode_base64_strict(parts[2], f"{what} key")
    if len(raw) < 2:
        raise FormatError(f"{what}: key material too short")
    return name, key_id, raw[0], raw[1:]


# ---------------------------------------------------------------------------------------------
# Keys


class NoteSigner(Protocol):
    """Anything that can sign a note text: a key name, a key ID and ``sign(text bytes) -> signature``."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def sign(self, message: bytes) -> bytes: ...


class NamedKey:
    """An Ed25519 private key with a key name: the part shared by :class:`Signer` and cosigners.

    ``key_type`` (a class attribute) is the signed-note signature type byte used in the key ID and
    in the key strings.  ``repr`` never shows the private key.
    """

    key_type: ClassVar[int] = KEY_TYPE_ED25519

    def __init__(self, name: str, private_key: Ed25519PrivateKey):
        if not isinstance(private_key, Ed25519PrivateKey):
            raise FormatError("private key must be an Ed25519PrivateKey")
        self._name = _require_name(name)
        self._private_key = private_key
        self._public_key = _raw_public_key(private_key)
        self._key_id = compute_key_id(self._name, self.key_type, self._public_key)
        # libsodium's secret key (seed || public key) for tlog.keys.ed25519_sign: the bytes
        # `cryptography` makes, in half the time (the sequencer signs every batch).
        self._sodium_key = _raw_seed(private_key) + self._public_key

    def _ed25519_sign(self, message: bytes) -> bytes:
        """The 64-byte RFC 8032 Ed25519 signature of ``message``."""
        return ed25519_sign(self._sodium_key, message)

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> int:
        return self._key_id

    @property
    def public_key(self) -> bytes:
        """The 32-byte Ed25519 public key (RFC 8032 encoding)."""
        return self._public_key

    def to_skey(self) -> str:
        """The signer key string ``PRIVATE+KEY+<name>+<key ID>+base64(type || seed)``: keep it secret."""
        raw = bytes([self.key_type]) + _raw_seed(self._private_key)
        return f"{_SKEY_PREFIX}{self._name}+{self._key_id:08x}+{encode_base64(raw)}"

    def to_vkey(self) -> str:
        """The verifier key string ``<name>+<key ID>+base64(type || public key)``."""
        raw = bytes([self.key_type]) + self._public_key
        return f"{self._name}+{self._key_id:08x}+{encode_base64(raw)}"

    @classmethod
    def from_skey(cls, text: str) -> Self:
        """Parse a signer key string of this class's key type; the key ID must match the derived key."""
        if not isinstance(text, str) or not text.startswith(_SKEY_PREFIX):
            raise FormatError("signer key must start with PRIVATE+KEY+")
        name, key_id, key_type, seed = _split_key_text(text[len(_SKEY_PREFIX):], "signer key")
        if key_type != cls.key_type:
            raise FormatError(f"signer key type 0x{key_type:02x}, want 0x{cls.key_type:02x}")
        if len(seed) != _ED25519_KEY_SIZE:
            raise FormatError(f"Ed25519 seed is {len(seed)} bytes, want {_ED25519_KEY_SIZE}")
        key = cls(name, Ed25519PrivateKey.from_private_bytes(seed))
        if key.key_id != key_id:
            raise FormatError(f"signer key ID {key_id:08x} does not match the key ({key.key_id:08x})")
        return key

    @classmethod
    def generate(cls, name: str, seed: bytes | None = None) -> Self:
        """A key from a 32-byte seed (deterministic, for golden tests) or a fresh random key."""
        if seed is None:
            return cls(name, Ed25519PrivateKey.generate())
        if not isinstance(seed, (bytes, bytearray)) or len(seed) != _ED25519_KEY_SIZE:
            raise FormatError(f"Ed25519 seed must be {_ED25519_KEY_SIZE} bytes")
        return cls(name, Ed25519PrivateKey.from_private_bytes(bytes(seed)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r}, key_id={self._key_id:08x})"


class Signer(NamedKey):
    """signed-note "Ed25519 signatures": signs the note text with type 0x01."""

    key_type: ClassVar[int] = KEY_TYPE_ED25519

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message`` (the note text, UTF-8)."""
        return self._ed25519_sign(message)

    def verifier(self) -> Verifier:
        """The :class:`Verifier` for this signer's public key."""
        return Verifier.ed25519(self._name, self._public_key)


def generate_signer(name: str, seed: bytes | None = None) -> Signer:
    """A note :class:`Signer` named ``name``: from a 32-byte Ed25519 seed, or random when seed is None."""
    return Signer.generate(name, seed)


def vkey_for(signer: NamedKey) -> str:
    """The verifier key string for ``signer`` (a :class:`Signer` or a cosignature signer)."""
    return signer.to_vkey()


class Verifier:
    """Verifies signatures by one key: a key name, a key ID and ``verify(msg, sig) -> bool``.

    ``key_type`` and ``public_key`` are known for verifiers built from key material (and are what
    :meth:`to_vkey` encodes); a verifier built from a bare function has them as None.
    """

    def __init__(self, name: str, key_id: int, verify: Callable[[bytes, bytes], bool], *,
                 key_type: int | None = None, public_key: bytes | None = None):
        if not isinstance(key_id, int) or not 0 <= key_id < 1 << 32:
            raise FormatError(f"key ID {key_id!r} is not a uint32")
        self._name = _require_name(name)
        self._key_id = key_id
        self._verify = verify
        self._key_type = key_type
        self._public_key = public_key

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> int:
        return self._key_id

    @property
    def key_type(self) -> int | None:
        return self._key_type

    @property
    def public_key(self) -> bytes | None:
        return self._public_key

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (the bytes after the key ID) is valid for ``message``."""
        return bool(self._verify(message, signature))

    def to_vkey(self) -> str:
        """The verifier key string ``<name>+<key ID>+base64(type || public key)``."""
        if self._key_type is None or self._public_key is None:
            raise FormatError("this verifier has no key material to encode")
        raw = bytes([self._key_type]) + self._public_key
        return f"{self._name}+{self._key_id:08x}+{encode_base64(raw)}"

    def same_key(self, other: Verifier) -> bool:
        """Whether both verifiers are for the same name, key ID, type and public key."""
        if self is other:
            return True
        return (self._public_key is not None and self._name == other.name and self._key_id == other.key_id
                and self._key_type == other.key_type and self._public_key == other.public_key)

    @classmethod
    def ed25519(cls, name: str, public_key: bytes) -> Verifier:
        """A type 0x01 Ed25519 verifier for a 32-byte public key."""
        key = load_ed25519_public_key(public_key)
        return cls(name, compute_key_id(_require_name(name), KEY_TYPE_ED25519, public_key),
                   lambda msg, sig: ed25519_verify(key, msg, sig),
                   key_type=KEY_TYPE_ED25519, public_key=bytes(public_key))

    @staticmethod
    def from_vkey(text: str) -> Verifier:
        """Parse a verifier key string: type 0x01 (Ed25519) or 0x04 (cosignature/v1).

        The key ID in the string must equal the one computed from the name, type and key.
        """
        name, key_id, key_type, public_key = _split_key_text(text, "verifier key")
        if key_type == KEY_TYPE_ED25519:
            verifier = Verifier.ed25519(name, public_key)
        elif key_type == KEY_TYPE_COSIGNATURE_V1:
            from tlog.cosignature import CosignatureVerifier  # deferred: cosignature imports this module

            verifier = CosignatureVerifier(name, public_key)
        else:
            raise FormatError(f"unknown verifier key type 0x{key_type:02x}")
        if verifier.key_id != key_id:
            raise FormatError(f"verifier key ID {key_id:08x} does not match the key ({verifier.key_id:08x})")
        return verifier

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r}, key_id={self._key_id:08x})"


# ---------------------------------------------------------------------------------------------
# Notes


@dataclass(frozen=True)
class Signature:
    """One signature line: key name, key ID, and the signature bytes that follow the key ID."""

    name: str
    key_id: int
    signature: bytes

    @property
    def base64(self) -> str:
        """base64(key ID || signature), as it appears on the line."""
        return encode_base64(self.key_id.to_bytes(_KEY_ID_SIZE, "big") + self.signature)

    def to_line(self) -> str:
        """``— <name> <base64>\\n``."""
        return f"{SIGNATURE_PREFIX}{self.name} {self.base64}\n"


@dataclass(frozen=True)
class Note:
    """An opened note: the text (final newline included) and its verified and unverified signatures."""

    text: str
    verified: list[Signature] = field(default_factory=list)
    unverified: list[Signature] = field(default_factory=list)


class UnverifiedNoteError(SignatureError):
    """A well-formed note that no known key signed.  ``note`` carries the parsed, unverified note."""

    def __init__(self, message: str, note: Note):
        super().__init__(message)
        self.note = note


def _check_text(text: object) -> str:
    """signed-note "Format": non-empty valid UTF-8 ending in newline, no control characters but newline."""
    if not isinstance(text, str) or not text.endswith("\n"):
        raise FormatError("note text must be a string ending in a newline")
    for c in text:
        if c < " " and c != "\n":
            raise FormatError(f"note text contains control character U+{ord(c):04X}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FormatError("note text is not valid UTF-8") from exc
    return text


def _decode_note(note: object) -> str:
    if not isinstance(note, (bytes, bytearray, memoryview)):
        raise FormatError("a note is bytes")
    if len(note) > MAX_NOTE_SIZE:
        raise FormatError(f"note is {len(note)} bytes, more than {MAX_NOTE_SIZE}")
    try:
        decoded = bytes(note).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError("note is not valid UTF-8") from exc
    for c in decoded:
        if c < " " and c != "\n":
            raise FormatError(f"note contains control character U+{ord(c):04X}")
    return decoded


def parse_signature_line(line: str) -> Signature:
    """``— <key name> base64(key ID || signature)``: exactly one space after the dash and the name."""
    if not line.startswith(SIGNATURE_PREFIX):
        raise FormatError("signature line does not start with an em dash and a space")
    name, sep, b64 = line[len(SIGNATURE_PREFIX):].partition(" ")
    if not sep or not is_valid_key_name(name):
        raise FormatError(f"signature line has an invalid key name {name!r}")
    raw = decode_base64_strict(b64, "signature")
    if len(raw) <= _KEY_ID_SIZE:
        raise FormatError("signature is too short to hold a key ID and a signature")
    return Signature(name, int.from_bytes(raw[:_KEY_ID_SIZE], "big"), raw[_KEY_ID_SIZE:])


def parse_note(note: bytes) -> tuple[str, list[Signature]]:
    """Split a note into its text and every signature line, in order, verifying nothing.

    signed-note "Format": the text is separated from the signatures by the last empty line; the
    signature block is one or more lines, each ending in a newline.  At most MAX_SIGNATURES lines.
    """
    decoded = _decode_note(note)
    split = decoded.rfind("\n\n")
    if split < 0:
        raise FormatError("note has no blank line before its signatures")
    text, block = decoded[: split + 1], decoded[split + 2:]
    if not block or not block.endswith("\n"):
        raise FormatError("note must end with at least one newline-terminated signature line")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise FormatError(f"note has {len(lines)} signatures, more than {MAX_SIGNATURES}")
    return text, [parse_signature_line(line) for line in lines]


def _signature_line(text_bytes: bytes, signer: NoteSigner) -> Signature:
    name = _require_name(signer.name)
    key_id = signer.key_id
    if not isinstance(key_id, int) or not 0 <= key_id < 1 << 32:
        raise InvariantError(f"signer {name!r} has a key ID that is not a uint32")
    return Signature(name, key_id, bytes(signer.sign(text_bytes)))


def _signer_list(signers: NoteSigner | Iterable[NoteSigner]) -> list[NoteSigner]:
    if hasattr(signers, "sign") and hasattr(signers, "key_id"):
        return [cast(NoteSigner, signers)]
    return list(cast(Iterable[NoteSigner], signers))


def _encode_note(text: str, signatures: list[Signature]) -> bytes:
    if not signatures:
        raise FormatError("a signed note needs at least one signature")
    if len(signatures) > MAX_SIGNATURES:
        raise FormatError(f"{len(signatures)} signatures, more than {MAX_SIGNATURES}")
    encoded = (text + "\n" + "".join(s.to_line() for s in signatures)).encode("utf-8")
    if len(encoded) > MAX_NOTE_SIZE:
        raise FormatError(f"signed note would be {len(encoded)} bytes, more than {MAX_NOTE_SIZE}")
    return encoded


def sign_note(text: str, signers: NoteSigner | Iterable[NoteSigner]) -> bytes:
    """Sign ``text`` with every signer and return the encoded note (signed-note "Format")."""
    text_bytes = _check_text(text).encode("utf-8")
    return _encode_note(text, [_signature_line(text_bytes, s) for s in _signer_list(signers)])


def add_signatures(note: bytes, signers: NoteSigner | Iterable[NoteSigner]) -> bytes:
    """Add signatures to an encoded note: existing lines stay first, new ones follow.

    An existing signature by the same key (name and key ID) as a new signer is replaced, as Go's
    ``note.Sign`` does.  Nothing is verified here.
    """
    text, existing = parse_note(note)
    text_bytes = text.encode("utf-8")
    new = [_signature_line(text_bytes, s) for s in _signer_list(signers)]
    replaced = {(s.name, s.key_id) for s in new}
    kept = [s for s in existing if (s.name, s.key_id) not in replaced]
    return _encode_note(text, kept + new)


_AMBIGUOUS = object()


def _index_verifiers(verifiers: Verifier | Iterable[Verifier]) -> dict[tuple[str, int], object]:
    index: dict[tuple[str, int], object] = {}
    for v in [verifiers] if isinstance(verifiers, Verifier) else list(verifiers):
        if not isinstance(v, Verifier):
            raise FormatError(f"not a Verifier: {v!r}")
        k = (v.name, v.key_id)
        prior = index.get(k)
        if prior is None:
            index[k] = v
        elif prior is not _AMBIGUOUS and not v.same_key(prior):  # type: ignore[arg-type]
            index[k] = _AMBIGUOUS
    return index


def open_note(note: bytes, verifiers: Verifier | Iterable[Verifier]) -> Note:
    """Parse ``note`` and check its signatures against the known ``verifiers`` (signed-note "Signatures").

    * A signature whose (key name, key ID) matches no verifier is kept, once, in ``.unverified``.
    * Every signature from a known key is verified; one that fails is a SignatureError (the whole
      note is rejected), as is a (name, key ID) matched by two different verifiers.
    * ``.verified`` lists each known key once (its first signature).
    * No verified signature at all: :class:`UnverifiedNoteError` (a SignatureError) with the note.
    """
    text, signatures = parse_note(note)
    known = _index_verifiers(verifiers)
    text_bytes = text.encode("utf-8")
    verified: list[Signature] = []
    unverified: list[Signature] = []
    seen: set[tuple[str, int]] = set()
    for sig in signatures:
        key = (sig.name, sig.key_id)
        verifier = known.get(key)
        if verifier is None:
            if sig not in unverified:
                unverified.append(sig)
            continue
        if verifier is _AMBIGUOUS:
            raise SignatureError(f"ambiguous key {sig.name}+{sig.key_id:08x}")
        if not verifier.verify(text_bytes, sig.signature):  # type: ignore[attr-defined]
            raise SignatureError(f"invalid signature for key {sig.name}+{sig.key_id:08x}")
        if key not in seen:
            seen.add(key)
            verified.append(sig)
    if not verified:
        raise UnverifiedNoteError("note has no verifiable signatures", Note(text, [], unverified))
    return Note(text, verified, unverified)
