"""C2SP tlog-witness (https://c2sp.org/tlog-witness): the ``add-checkpoint`` wire format and the witness's
consistency rule, with no I/O.

A log (the client) asks a witness to cosign a checkpoint with ``POST <prefix>/add-checkpoint`` and the body

    old <size of the checkpoint the client believes the witness last cosigned>\\n
    <base64 hash>\\n                     zero to 63 lines: an RFC 6962 consistency proof from old to new
    \\n
    <the signed checkpoint note>

The witness answers ``200`` with one or more note signature lines (its ``cosignature/v1`` cosignatures),
or ``409`` with the size it knows as ``<decimal>\\n`` (``Content-Type: text/x.tlog.size``), or another
status (spec/witness.md §2 has the whole table).

:func:`check_add_checkpoint` is the witness's decision once the note has been opened with the log's key:
it raises :class:`SizeConflict` (409), :class:`~tlog.errors.ProofError` (422) or
:class:`~tlog.errors.FormatError` (400), in the order tlog-witness gives.  The witness then persists the new
checkpoint with a compare-and-swap on the old size before it answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tlog.checkpoint import Checkpoint, parse_decimal
from tlog.errors import FormatError, ProofError, TlogError
from tlog.hashing import HASH_SIZE
from tlog.note import MAX_NOTE_SIZE, Signature, decode_base64_strict, encode_base64, parse_note, \
    parse_signature_line
from tlog.proof import verify_consistency

__all__ = [
    "ADD_CHECKPOINT_PATH",
    "SIZE_CONTENT_TYPE",
    "MAX_PROOF_LINES",
    "MAX_REQUEST_SIZE",
    "AddCheckpoint",
    "SizeConflict",
    "check_add_checkpoint",
    "format_size",
    "parse_size",
    "format_cosignatures",
    "parse_cosignatures",
    "attach_cosignatures",
]

#: tlog-witness: the path below the witness's submission prefix.
ADD_CHECKPOINT_PATH = "/add-checkpoint"
#: tlog-witness: the media type of a 409 answer, whose body is the witness's known size.
SIZE_CONTENT_TYPE = "text/x.tlog.size"
#: tlog-witness: "The client MUST NOT send more than 63 consistency proof lines."
MAX_PROOF_LINES = 63
#: The old line (at most 24 bytes), 63 proof lines of 45 bytes, the blank line and a note.
MAX_REQUEST_SIZE = 24 + MAX_PROOF_LINES * (44 + 1) + 1 + MAX_NOTE_SIZE


class SizeConflict(TlogError):
    """tlog-witness 409: ``old`` is not the size the witness last cosigned (``known_size``), or it is and the
    checkpoint has that size with another root (``same_size_fork``: a fork, proven by the two notes)."""

    def __init__(self, message: str, known_size: int, *, same_size_fork: bool = False):
        super().__init__(message)
        self.known_size = known_size
        self.same_size_fork = same_size_fork


@dataclass(frozen=True)
class AddCheckpoint:
    """An ``add-checkpoint`` request body: the old size, the consistency proof and the checkpoint note."""

    old_size: int
    proof: tuple[bytes, ...]
    note: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "proof", tuple(self.proof))
        if isinstance(self.old_size, bool) or not isinstance(self.old_size, int) or not 0 <= self.old_size < 1 << 63:
            raise FormatError(f"old size {self.old_size!r} is not in [0, 2**63)")
        if len(self.proof) > MAX_PROOF_LINES:
            raise FormatError(f"{len(self.proof)} consistency proof lines, at most {MAX_PROOF_LINES}")
        if any(not isinstance(h, bytes) or len(h) != HASH_SIZE for h in self.proof):
            raise FormatError(f"a consistency proof hash is not {HASH_SIZE} bytes")

    def format(self) -> bytes:
        """The request body: ``old N``, the proof lines, a blank line, the note verbatim."""
        head = f"old {self.old_size}\n" + "".join(encode_base64(h) + "\n" for h in self.proof) + "\n"
        return head.encode("ascii") + self.note

    @classmethod
    def parse(cls, body: bytes) -> AddCheckpoint:
        """Parse a request body strictly (FormatError): canonical decimal, canonical base64 of 32-byte
        hashes, at most 63 of them, every line ending in a newline, and a note after the first blank line.

        The note is only split off here; the caller opens it with the log's keys.
        """
        if not isinstance(body, (bytes, bytearray)):
            raise FormatError("an add-checkpoint body is bytes")
        if len(body) > MAX_REQUEST_SIZE:
            raise FormatError(f"add-checkpoint body is {len(body)} bytes, more than {MAX_REQUEST_SIZE}")
        head, sep, note = bytes(body).partition(b"\n\n")
        if not sep:
            raise FormatError("add-checkpoint body has no blank line before the checkpoint")
        try:
            lines = head.decode("ascii").split("\n")
        except UnicodeDecodeError as exc:
            raise FormatError("add-checkpoint old size and proof lines must be ASCII") from exc
        first = lines[0]
        if not first.startswith("old "):
            raise FormatError("add-checkpoint body must start with 'old <size>'")
        old = parse_decimal(first[4:], "old size")
        if len(lines) - 1 > MAX_PROOF_LINES:
            raise FormatError(f"{len(lines) - 1} consistency proof lines, at most {MAX_PROOF_LINES}")
        proof = []
        for i, line in enumerate(lines[1:]):
            h = decode_base64_strict(line, f"consistency proof line {i + 1}")
            if len(h) != HASH_SIZE:
                raise FormatError(f"consistency proof line {i + 1} is {len(h)} bytes, want {HASH_SIZE}")
            proof.append(h)
        if not note:
            raise FormatError("add-checkpoint body has no checkpoint after the blank line")
        return cls(old, tuple(proof), note)

    def checkpoint_text(self) -> str:
        """The note's text (framing checked, signatures not verified)."""
        return parse_note(self.note)[0]

    def origin(self) -> str:
        """The checkpoint's origin line, read from the note without verifying it (to find the log's keys)."""
        return Checkpoint.parse(self.checkpoint_text()).origin


def check_add_checkpoint(req: AddCheckpoint, cp: Checkpoint, known_size: int, known_root: bytes | None) -> None:
    """tlog-witness add-checkpoint, after the signature check: may the witness cosign ``cp``?

    ``known_size``/``known_root`` is the latest checkpoint the witness cosigned for the origin (``0``/None if
    none).  In the specification's order:

    1. ``old`` above the checkpoint's size: FormatError (400).
    2. ``old`` is not ``known_size``: :class:`SizeConflict` (409, the body is ``known_size``).
    3. Same size, another root: :class:`SizeConflict` with ``same_size_fork`` (409: "If the old size matches
       the checkpoint size, the witness MUST check that the root hashes are also identical. If they don't
       match, the witness MUST respond with a 409").
    4. The proof is not an RFC 9162 §2.1.4 consistency proof from ``(known_size, known_root)`` to the
       checkpoint (it MUST be empty from size 0 and between equal sizes): ProofError (422).
    """
    old = req.old_size
    if old > cp.size:
        raise FormatError(f"old size {old} is larger than the checkpoint's size {cp.size}")
    if old != known_size:
        raise SizeConflict(f"old size {old} is not the size {known_size} this witness last cosigned", known_size)
    if old == 0:
        if req.proof:
            raise ProofError(f"a consistency proof from size 0 is empty, got {len(req.proof)} hashes")
        return
    if known_root is None:
        raise FormatError(f"no root recorded for size {known_size}")  # cannot happen: size > 0 has a root
    if old == cp.size and known_root != cp.root:
        raise SizeConflict(f"this witness cosigned another root at size {old}", known_size, same_size_fork=True)
    verify_consistency(old, cp.size, req.proof, known_root, cp.root)


def format_size(size: int) -> bytes:
    """A 409 body: the decimal size and a newline."""
    return f"{size}\n".encode("ascii")


def parse_size(body: bytes) -> int:
    """Parse a 409 body strictly: ``<canonical decimal>\\n`` (FormatError)."""
    try:
        text = bytes(body).decode("ascii")
    except UnicodeDecodeError as exc:
        raise FormatError("a tlog size body is ASCII") from exc
    if not text.endswith("\n") or "\n" in text[:-1]:
        raise FormatError("a tlog size body is one line ending in a newline")
    return parse_decimal(text[:-1], "witness size")


def format_cosignatures(lines: Iterable[str]) -> bytes:
    """A 200 body: the cosignature lines (each ``— <name> <base64>\\n``)."""
    out = "".join(lines)
    if not out:
        raise FormatError("a witness answers at least one cosignature line")
    return out.encode("utf-8")


def parse_cosignatures(body: bytes) -> list[Signature]:
    """Parse a 200 body: one or more note signature lines, each ending in a newline (FormatError)."""
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError("a witness answer is UTF-8") from exc
    if not text.endswith("\n") or len(text) > MAX_NOTE_SIZE:
        raise FormatError("a witness answer is signature lines, each ending in a newline")
    return [parse_signature_line(line) for line in text[:-1].split("\n")]


def attach_cosignatures(note: bytes, cosignatures: Sequence[Signature]) -> bytes:
    """``note`` with the cosignature lines appended after its own, skipping lines for a key (name and key
    ID) that already signed it.  Nothing is verified here."""
    _, existing = parse_note(note)
    have = {(s.name, s.key_id) for s in existing}
    extra = []
    for sig in cosignatures:
        if (sig.name, sig.key_id) not in have:
            have.add((sig.name, sig.key_id))
            extra.append(sig.to_line())
    out = bytes(note) + "".join(extra).encode("utf-8")
    parse_note(out)  # the result is still a note (at most MAX_SIGNATURES lines, MAX_NOTE_SIZE bytes)
    return out
