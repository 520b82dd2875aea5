"""C2SP tlog-checkpoint (https://c2sp.org/tlog-checkpoint): a log's signed tree head as a note text.

The note text is at least three non-empty lines, each ending in a newline:

1. the **origin**, a non-empty identifier of the log;
2. the **tree size**, ASCII decimal without leading zeroes (``0`` for the empty tree);
3. the **root hash**, base64 of the 32-byte RFC 6962 Merkle tree hash at that size;
4. optional, non-empty **extension lines**.

Parsing is strict and canonical: a checkpoint is accepted only if it re-formats to the same text.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from tlog.errors import FormatError, SignatureError
from tlog.hashing import HASH_SIZE
from tlog.note import (
    Note,
    NoteSigner,
    Verifier,
    decode_base64_strict,
    encode_base64,
    open_note,
    sign_note,
)

__all__ = [
    "MAX_CHECKPOINT_SIZE",
    "MAX_TREE_SIZE",
    "parse_decimal",
    "Checkpoint",
    "sign_checkpoint",
    "open_checkpoint",
]

#: Upper bound on a checkpoint note text (a real one is ~100 bytes; extensions are NOT RECOMMENDED).
MAX_CHECKPOINT_SIZE = 1 << 16
#: Tree sizes (and indexes) are below 2**63, as in Go's int64-based sumdb/tlog.
MAX_TREE_SIZE = (1 << 63) - 1

_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")


def parse_decimal(text: str, what: str, limit: int = MAX_TREE_SIZE) -> int:
    """Parse a canonical ASCII decimal in ``[0, limit]``: no sign, spaces, underscores or leading zeroes.

    ``int()`` alone would accept ``"+5"``, ``" 5"``, ``"5_0"``, ``"05"`` and non-ASCII digits; this does not.
    """
    if not isinstance(text, str) or _DECIMAL.fullmatch(text) is None:
        raise FormatError(f"{what} {text!r} is not a canonical decimal")
    value = int(text)
    if value > limit:
        raise FormatError(f"{what} {value} is larger than {limit}")
    return value


def _check_line(line: object, what: str) -> str:
    """A non-empty line without newline or other ASCII control characters (signed-note forbids them)."""
    if not isinstance(line, str) or not line:
        raise FormatError(f"{what} must be a non-empty string")
    for c in line:
        if c < " ":
            raise FormatError(f"{what} contains control character U+{ord(c):04X}")
    try:
        line.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise FormatError(f"{what} is not valid UTF-8") from exc
    return line


@dataclass(frozen=True)
class Checkpoint:
    """A tlog-checkpoint: origin, tree size, root hash and extension lines (without newlines).

    Construction validates every field, so :meth:`format` always yields text that :meth:`parse` accepts.
    """

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_line(self.origin, "checkpoint origin")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 0 <= self.size <= MAX_TREE_SIZE:
            raise FormatError(f"checkpoint tree size {self.size!r} is not in [0, 2**63)")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_SIZE:
            raise FormatError(f"checkpoint root hash must be {HASH_SIZE} bytes")
        if isinstance(self.extensions, str):
            raise FormatError("checkpoint extensions must be a sequence of lines, not a string")
        object.__setattr__(self, "extensions", tuple(self.extensions))
        for line in self.extensions:
            _check_line(line, "checkpoint extension line")
        if len(self.format().encode("utf-8")) > MAX_CHECKPOINT_SIZE:
            raise FormatError(f"checkpoint is larger than {MAX_CHECKPOINT_SIZE} bytes")

    def format(self) -> str:
        """The note text: origin, size, base64 root, extension lines, each ending in a newline."""
        lines = [self.origin, str(self.size), encode_base64(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str | bytes) -> Checkpoint:
        """Parse a checkpoint note text (tlog-checkpoint "Note text") strictly; FormatError otherwise."""
        if isinstance(text, (bytes, bytearray)):
            if len(text) > MAX_CHECKPOINT_SIZE:
                raise FormatError(f"checkpoint is larger than {MAX_CHECKPOINT_SIZE} bytes")
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise FormatError("checkpoint is not valid UTF-8") from exc
        if not isinstance(text, str):
            raise FormatError("checkpoint text must be str or bytes")
        if len(text) > MAX_CHECKPOINT_SIZE:
            raise FormatError(f"checkpoint is larger than {MAX_CHECKPOINT_SIZE} bytes")
        if not text.endswith("\n"):
            raise FormatError("checkpoint text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise FormatError(f"checkpoint has {len(lines)} lines, want at least 3")
        size = parse_decimal(lines[1], "checkpoint tree size")
        root = decode_base64_strict(lines[2], "checkpoint root hash")
        if len(root) != HASH_SIZE:
            raise FormatError(f"checkpoint root hash is {len(root)} bytes, want {HASH_SIZE}")
        return cls(lines[0], size, root, tuple(lines[3:]))


def sign_checkpoint(cp: Checkpoint, signer: NoteSigner | Iterable[NoteSigner]) -> bytes:
    """The signed note of ``cp`` (tlog-checkpoint "Signatures"): the log's key name SHOULD be the origin."""
    return sign_note(cp.format(), signer)


def open_checkpoint(note: bytes, origin: str, verifier: Verifier | Iterable[Verifier]) -> tuple[Checkpoint, Note]:
    """Verify a signed checkpoint from the log ``origin`` and parse it.

    ``verifier`` is the log's key (or several, e.g. during a key rotation).  Witness cosignatures and
    other unknown signatures are left in ``Note.unverified``.  Raises SignatureError when no log key
    signed (or a log signature is bad) or when the checkpoint names another origin; FormatError when
    the note or its text is malformed.
    """
    opened = open_note(note, verifier)
    cp = Checkpoint.parse(opened.text)
    if cp.origin != origin:
        raise SignatureError(f"checkpoint origin {cp.origin!r} is not the expected origin {origin!r}")
    return cp, opened
