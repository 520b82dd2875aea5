"""C2SP tlog-cosignature (https://c2sp.org/tlog-cosignature): Ed25519 ``cosignature/v1`` witness cosignatures.

A cosignature is a note signature on a checkpoint whose key ID uses signature type 0x04:

    key ID = SHA-256(<name> || "\\n" || 0x04 || 32-byte Ed25519 cosigner public key)[:4]

and whose signature bytes are a ``timestamped_signature``: ``u64 timestamp`` (big-endian POSIX seconds,
at most 2**63 - 1) followed by the 64-byte Ed25519 signature of the *signed message*

    cosignature/v1\\n
    time <timestamp in ASCII decimal>\\n
    <the whole checkpoint note text, extension lines included>

Semantics (tlog-cosignature "Ed25519 signed message"): as of that time, the checkpoint is the largest
consistent tree head the cosigner has observed for the origin.  The message does not commit to the
cosigner name, so one key must never serve two cosigners.

Times are integers passed in by the caller: this module never reads a clock.
"""

from __future__ import annotations

from typing import ClassVar, Iterable

from tlog.checkpoint import Checkpoint
from tlog.errors import FormatError, SignatureError
from tlog.note import (
    KEY_TYPE_COSIGNATURE_V1,
    NamedKey,
    Signature,
    UnverifiedNoteError,
    Verifier,
    compute_key_id,
    ed25519_verify,
    is_valid_key_name,
    load_ed25519_public_key,
    open_note,
    parse_note,
    parse_signature_line,
)

__all__ = [
    "COSIGNATURE_V1_HEADER",
    "MAX_TIMESTAMP",
    "TIMESTAMPED_SIGNATURE_SIZE",
    "cosignature_message",
    "CosignatureSigner",
    "CosignatureVerifier",
    "generate_cosigner",
    "cosignature_timestamp",
    "verify_cosignature",
    "check_quorum",
]

#: tlog-cosignature: the header line of the Ed25519 signed message, for domain separation.
COSIGNATURE_V1_HEADER = "cosignature/v1\n"
#: tlog-cosignature: "timestamp ... MUST NOT exceed 2^63 - 1".
MAX_TIMESTAMP = (1 << 63) - 1
#: u64 timestamp || 64-byte Ed25519 signature.
TIMESTAMPED_SIGNATURE_SIZE = 8 + 64


def _check_timestamp(timestamp: object) -> int:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or not 0 <= timestamp <= MAX_TIMESTAMP:
        raise FormatError(f"cosignature timestamp {timestamp!r} is not in [0, 2**63)")
    return timestamp


def cosignature_message(checkpoint_text: str, timestamp: int) -> bytes:
    """tlog-cosignature "Ed25519 signed message": header, ``time <T>`` line, then the checkpoint text.

    The text must be a well-formed checkpoint (FormatError otherwise), so a cosigner never signs
    anything else and a verifier never accepts a cosignature over anything else.
    """
    _check_timestamp(timestamp)
    Checkpoint.parse(checkpoint_text)
    return f"{COSIGNATURE_V1_HEADER}time {timestamp}\n{checkpoint_text}".encode("utf-8")


class _TimestampedNoteSigner:
    """A note signer (``NoteSigner``) that cosigns with a fixed timestamp, for sign_note/add_signatures."""

    def __init__(self, cosigner: CosignatureSigner, timestamp: int):
        self._cosigner = cosigner
        self._timestamp = _check_timestamp(timestamp)

    @property
    def name(self) -> str:
        return self._cosigner.name

    @property
    def key_id(self) -> int:
        return self._cosigner.key_id

    def sign(self, message: bytes) -> bytes:
        return self._cosigner.timestamped_signature(message.decode("utf-8"), self._timestamp)


class CosignatureSigner(NamedKey):
    """A witness cosigner: an Ed25519 key and a name, key ID computed with type 0x04.

    ``to_skey()`` / ``CosignatureSigner.from_skey()`` use type byte 0x04 in the key string.
    """

    key_type: ClassVar[int] = KEY_TYPE_COSIGNATURE_V1

    def timestamped_signature(self, checkpoint_text: str, timestamp: int) -> bytes:
        """The ``timestamped_signature``: u64 big-endian timestamp || Ed25519 signature (72 bytes)."""
        message = cosignature_message(checkpoint_text, timestamp)
        return timestamp.to_bytes(8, "big") + self._ed25519_sign(message)

    def cosign(self, checkpoint_text: str, timestamp: int) -> str:
        """The note signature line ``— <name> base64(key ID || timestamp || signature)\\n``."""
        sig = Signature(self.name, self.key_id, self.timestamped_signature(checkpoint_text, timestamp))
        return sig.to_line()

    def note_signer(self, timestamp: int) -> _TimestampedNoteSigner:
        """A note signer bound to ``timestamp``, usable with ``sign_note`` and ``add_signatures``."""
        return _TimestampedNoteSigner(self, timestamp)

    def verifier(self) -> CosignatureVerifier:
        """The :class:`CosignatureVerifier` for this cosigner."""
        return CosignatureVerifier(self.name, self.public_key)


def generate_cosigner(name: str, seed: bytes | None = None) -> CosignatureSigner:
    """A :class:`CosignatureSigner` from a 32-byte Ed25519 seed, or a random one when seed is None."""
    return CosignatureSigner.generate(name, seed)


class CosignatureVerifier(Verifier):
    """Verifies ``cosignature/v1`` signatures of one cosigner; a note :class:`~tlog.note.Verifier`.

    ``verify(text, sig)`` takes the note text and the ``timestamped_signature`` bytes, so it plugs into
    ``open_note``.  Its vkey string has type 0x04.
    """

    def __init__(self, name: str, public_key: bytes):
        if not is_valid_key_name(name):
            raise FormatError(f"invalid key name {name!r}: must be non-empty, without spaces or '+'")
        key = load_ed25519_public_key(public_key)

        def verify(message: bytes, signature: bytes) -> bool:
            if len(signature) != TIMESTAMPED_SIGNATURE_SIZE:
                return False
            timestamp = int.from_bytes(signature[:8], "big")
            try:
                signed = cosignature_message(message.decode("utf-8"), timestamp)
            except (FormatError, UnicodeDecodeError):
                return False
            return ed25519_verify(key, signed, signature[8:])

        super().__init__(name, compute_key_id(name, KEY_TYPE_COSIGNATURE_V1, public_key), verify,
                         key_type=KEY_TYPE_COSIGNATURE_V1, public_key=bytes(public_key))

    @classmethod
    def from_vkey(cls, text: str) -> CosignatureVerifier:  # type: ignore[override]
        """Parse a type 0x04 verifier key string (FormatError for any other type)."""
        verifier = Verifier.from_vkey(text)
        if not isinstance(verifier, cls):
            raise FormatError("verifier key is not a cosignature/v1 (type 0x04) key")
        return verifier


def cosignature_timestamp(signature: Signature) -> int:
    """The timestamp of a cosignature, without verifying it (FormatError if it is not 72 bytes)."""
    raw = signature.signature
    if len(raw) != TIMESTAMPED_SIGNATURE_SIZE:
        raise FormatError(f"cosignature is {len(raw)} bytes, want {TIMESTAMPED_SIGNATURE_SIZE}")
    return _check_timestamp(int.from_bytes(raw[:8], "big"))


def verify_cosignature(verifier: CosignatureVerifier, checkpoint_text: str, signature: Signature | str) -> int:
    """Verify one cosignature (a Signature or a signature line) on ``checkpoint_text``; return its timestamp.

    Raises SignatureError when the line is for another key (name or key ID) or does not verify.
    """
    sig = signature if isinstance(signature, Signature) else _single_line(signature)
    if (sig.name, sig.key_id) != (verifier.name, verifier.key_id):
        raise SignatureError(f"cosignature is by {sig.name}+{sig.key_id:08x}, not by "
                             f"{verifier.name}+{verifier.key_id:08x}")
    timestamp = cosignature_timestamp(sig)
    if not isinstance(checkpoint_text, str) or not verifier.verify(checkpoint_text.encode("utf-8"), sig.signature):
        raise SignatureError(f"invalid cosignature for key {sig.name}+{sig.key_id:08x}")
    return timestamp


def _single_line(line: object) -> Signature:
    if not isinstance(line, str) or not line.endswith("\n") or "\n" in line[:-1]:
        raise FormatError("a signature line is one line ending in a newline")
    return parse_signature_line(line[:-1])


def check_quorum(note: bytes, witness_verifiers: Verifier | Iterable[Verifier], quorum: int, *,
                 origin: str | None = None) -> list[str]:
    """Count the witnesses that cosigned a checkpoint note; SignatureError below ``quorum``.

    Returns the names of the witnesses with a valid cosignature, each once, in note order.  Log and
    unknown signatures are ignored; a bad cosignature from a known witness rejects the note (signed-note
    "Signatures").  ``origin``, when given, must be the checkpoint's origin.
    """
    if isinstance(quorum, bool) or not isinstance(quorum, int) or quorum < 0:
        raise FormatError(f"quorum {quorum!r} must be a non-negative integer")
    cp = Checkpoint.parse(parse_note(note)[0])
    if origin is not None and cp.origin != origin:
        raise SignatureError(f"checkpoint origin {cp.origin!r} is not the expected origin {origin!r}")
    try:
        verified = open_note(note, witness_verifiers).verified
    except UnverifiedNoteError:
        verified = []
    names: list[str] = []
    for sig in verified:
        if sig.name not in names:
            names.append(sig.name)
    if len(names) < quorum:
        raise SignatureError(f"{len(names)} witness cosignatures, quorum is {quorum}")
    return names
