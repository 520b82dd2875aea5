"""Evidence of log misbehaviour: the file a monitor writes when it sees a fork or a rollback, and the
offline check anyone can run on it (normative: spec/monitor.md §6).

An evidence file is JSON (``"format": "tlog-evidence/v1"``) holding two checkpoint notes exactly as the log
signed them, plus, depending on the kind, a consistency proof (RFC 9162 §2.1.4) and the prefix root it
binds.  :func:`verify_evidence` re-checks it with nothing but the log's verifier key:

=================  =======================================================================  ==========
kind               what is re-checked offline                                               proves
=================  =======================================================================  ==========
fork-same-size     both notes verify; same size; different roots                            yes
fork-prefix        both notes verify; sizes m < n; the proof verifies from ``prefix_root``  yes
                   (size m) to the larger root (size n); ``prefix_root`` differs from the
                   smaller checkpoint's root
fork-unproven      both notes verify; sizes m < n; the proof as served does NOT verify       no
                   between the two roots (the log failed to prove consistency)
rollback           both notes verify; the first (served earlier) is larger than the second   no
=================  =======================================================================  ==========

"proves" means: an honest append-only log can never sign both checkpoints (barring a SHA-256 collision).
The last two kinds record what a monitor saw; the order of observation and the log's failure to answer
rest on the monitor's word.  Pure apart from JSON parsing: no I/O, no clock.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tlog.checkpoint import Checkpoint, open_checkpoint
from tlog.errors import FormatError, ProofError, TlogError
from tlog.hashing import HASH_SIZE
from tlog.note import MAX_NOTE_SIZE, Verifier, decode_base64_strict, encode_base64
from tlog.proof import verify_consistency

__all__ = [
    "EVIDENCE_FORMAT",
    "MAX_EVIDENCE_SIZE",
    "EvidenceKind",
    "EvidenceError",
    "Evidence",
    "EvidenceVerdict",
    "verify_evidence",
]

EVIDENCE_FORMAT = "tlog-evidence/v1"
#: Two notes of at most 1 MiB each, a proof of at most 126 hashes and some text.
MAX_EVIDENCE_SIZE = 4 * MAX_NOTE_SIZE
_MAX_PROOF = 2 * 63
_MAX_TEXT = 4096
_REQUIRED = {"format", "kind", "origin", "log_key", "checkpoints", "sizes"}
_OPTIONAL = {"consistency_proof", "prefix_root", "log_answer", "observed", "detected_ms"}


class EvidenceKind(enum.StrEnum):
    """What an evidence file claims (spec/monitor.md §6.2)."""

    FORK_SAME_SIZE = "fork-same-size"
    FORK_PREFIX = "fork-prefix"
    FORK_UNPROVEN = "fork-unproven"
    ROLLBACK = "rollback"

    @property
    def proves_misbehaviour(self) -> bool:
        """Whether a valid file of this kind is, on its own, proof that the log signed two histories."""
        return self in (EvidenceKind.FORK_SAME_SIZE, EvidenceKind.FORK_PREFIX)


class EvidenceError(TlogError):
    """Evidence that does not show what it claims (tampered with, or built wrongly)."""


@dataclass(frozen=True)
class Evidence:
    """Two signed checkpoints of one log and what the monitor saw between them.

    ``first``/``second`` are note bytes.  For ``fork-prefix`` and ``fork-unproven`` ``first`` is the smaller
    checkpoint; for ``rollback`` ``first`` is the larger one, served earlier.  ``observed`` holds one
    ``{"time_ms": int, "source": str}`` per checkpoint (informative; not re-checkable).
    """

    kind: EvidenceKind
    origin: str
    log_key: str
    first: bytes
    second: bytes
    proof: tuple[bytes, ...] = ()
    prefix_root: bytes | None = None
    log_answer: str | None = None
    observed: tuple[Mapping[str, Any], ...] = ()
    detected_ms: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", EvidenceKind(self.kind))
        object.__setattr__(self, "proof", tuple(self.proof))
        object.__setattr__(self, "observed", tuple(self.observed))

    @property
    def sizes(self) -> tuple[int, int]:
        """The tree sizes of ``first`` and ``second``, read from the note texts (nothing verified)."""
        return _size_of(self.first), _size_of(self.second)

    def to_json(self) -> dict[str, Any]:
        """The JSON object of the evidence file (spec/monitor.md §6.1)."""
        obj: dict[str, Any] = {
            "format": EVIDENCE_FORMAT, "kind": self.kind.value, "origin": self.origin, "log_key": self.log_key,
            "checkpoints": [self.first.decode("utf-8"), self.second.decode("utf-8")],
            "sizes": list(self.sizes),
            "consistency_proof": [encode_base64(h) for h in self.proof],
            "prefix_root": None if self.prefix_root is None else encode_base64(self.prefix_root),
            "log_answer": self.log_answer,
            "observed": [dict(o) for o in self.observed],
            "detected_ms": self.detected_ms,
        }
        return obj

    def encode(self) -> bytes:
        """The evidence file: indented JSON with sorted keys and a final newline."""
        return (json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n").encode("utf-8")

    def digest(self) -> str:
        """Hex SHA-256 of the claim (kind, origin, both notes, proof, prefix root): the same misbehaviour
        seen twice, or received from a peer, has the same digest whatever the observation times."""
        h = hashlib.sha256()
        for part in (self.kind.value.encode(), self.origin.encode(), self.first, self.second,
                     b"".join(self.proof), self.prefix_root or b""):
            h.update(len(part).to_bytes(8, "big") + part)
        return h.hexdigest()

    @classmethod
    def parse(cls, data: bytes | str | Mapping[str, Any]) -> Evidence:
        """Parse an evidence file strictly (FormatError): known fields only, canonical base64, 32-byte hashes."""
        obj = _load(data)
        missing, unknown = _REQUIRED - obj.keys(), obj.keys() - _REQUIRED - _OPTIONAL
        if missing or unknown:
            raise FormatError(f"evidence fields: missing {sorted(missing)}, unknown {sorted(unknown)}")
        if obj["format"] != EVIDENCE_FORMAT:
            raise FormatError(f"evidence format {obj['format']!r} is not {EVIDENCE_FORMAT!r}")
        try:
            kind = EvidenceKind(obj["kind"])
        except ValueError:
            raise FormatError(f"unknown evidence kind {obj['kind']!r}") from None
        first, second = _notes(obj["checkpoints"])
        sizes = _sizes(obj["sizes"])
        ev = cls(kind, _text(obj["origin"], "origin"), _text(obj["log_key"], "log_key"), first, second,
                 _proof(obj.get("consistency_proof") or []), _opt_hash(obj.get("prefix_root")),
                 _opt_text(obj.get("log_answer"), "log_answer"), _observed(obj.get("observed") or []),
                 _opt_int(obj.get("detected_ms"), "detected_ms"))
        if ev.sizes != sizes:
            raise FormatError(f"evidence sizes {list(sizes)} do not match its checkpoints {list(ev.sizes)}")
        return ev


@dataclass(frozen=True)
class EvidenceVerdict:
    """The result of a successful :func:`verify_evidence`: the evidence shows what its kind claims.

    ``proves_misbehaviour`` is True only for the kinds that prove, offline, that the log signed two
    incompatible histories; ``summary`` is one line saying what was checked and what it means.
    """

    kind: EvidenceKind
    origin: str
    checkpoints: tuple[Checkpoint, Checkpoint]
    proves_misbehaviour: bool
    summary: str


def verify_evidence(data: bytes | str | Mapping[str, Any] | Evidence,
                    log_verifier: Verifier | Iterable[Verifier]) -> EvidenceVerdict:
    """Re-check an evidence file offline against the log's verifier key(s) (the caller's trusted key, not
    the ``log_key`` written in the file).

    Returns an :class:`EvidenceVerdict`; raises FormatError (malformed), SignatureError (a note that the
    log's key did not sign, or of another origin) or :class:`EvidenceError` (the notes and proof do not
    show what the kind claims, e.g. a proof that was altered).
    """
    ev = data if isinstance(data, Evidence) else Evidence.parse(data)
    verifiers = [log_verifier] if isinstance(log_verifier, Verifier) else list(log_verifier)
    a, _ = open_checkpoint(ev.first, ev.origin, verifiers)
    b, _ = open_checkpoint(ev.second, ev.origin, verifiers)
    check = _CHECKS[ev.kind]
    summary = check(ev, a, b)
    return EvidenceVerdict(ev.kind, ev.origin, (a, b), ev.kind.proves_misbehaviour, summary)


# ---------------------------------------------------------------- one check per kind

def _check_same_size(ev: Evidence, a: Checkpoint, b: Checkpoint) -> str:
    if a.size != b.size or a.root == b.root:
        raise EvidenceError(f"fork-same-size needs one size and two roots, got sizes {a.size}, {b.size} "
                            f"and {'equal' if a.root == b.root else 'different'} roots")
    _no_proof(ev)
    return (f"PROVEN fork of {ev.origin}: the log signed two different trees of size {a.size} "
            f"(roots {encode_base64(a.root)} and {encode_base64(b.root)})")


def _check_prefix(ev: Evidence, a: Checkpoint, b: Checkpoint) -> str:
    if not 0 < a.size < b.size:
        raise EvidenceError(f"fork-prefix needs sizes 0 < m < n, got {a.size} and {b.size}")
    if ev.prefix_root is None or ev.log_answer is not None:
        raise EvidenceError("fork-prefix needs a prefix_root and no log_answer")
    try:
        verify_consistency(a.size, b.size, ev.proof, ev.prefix_root, b.root)
    except ProofError as exc:
        raise EvidenceError(f"the consistency proof does not bind prefix_root to the size-{b.size} "
                            f"checkpoint: {exc}") from None
    if ev.prefix_root == a.root:
        raise EvidenceError(f"prefix_root equals the size-{a.size} root: the checkpoints are consistent")
    return (f"PROVEN fork of {ev.origin}: the signed tree of size {b.size} has prefix root "
            f"{encode_base64(ev.prefix_root)} at size {a.size}, but the log also signed root "
            f"{encode_base64(a.root)} for size {a.size}")


def _check_unproven(ev: Evidence, a: Checkpoint, b: Checkpoint) -> str:
    if not a.size < b.size:
        raise EvidenceError(f"fork-unproven needs sizes m < n, got {a.size} and {b.size}")
    if ev.prefix_root is not None:
        raise EvidenceError("fork-unproven carries no prefix_root")
    try:
        verify_consistency(a.size, b.size, ev.proof, a.root, b.root)
    except ProofError as exc:
        answer = f"; the log answered: {ev.log_answer}" if ev.log_answer else ""
        return (f"NOT A PROOF: both checkpoints of {ev.origin} (sizes {a.size}, {b.size}) are signed by the log "
                f"and the consistency proof it served fails ({exc}){answer}")
    raise EvidenceError(f"the consistency proof verifies: sizes {a.size} and {b.size} are consistent")


def _check_rollback(ev: Evidence, a: Checkpoint, b: Checkpoint) -> str:
    if not a.size > b.size:
        raise EvidenceError(f"rollback needs the first checkpoint larger, got sizes {a.size} then {b.size}")
    if ev.prefix_root is not None:
        raise EvidenceError("rollback carries no prefix_root")
    return (f"NOT A PROOF: the log {ev.origin} signed both checkpoints; that it served size {a.size} before "
            f"size {b.size} rests on the monitor's observation times")


def _no_proof(ev: Evidence) -> None:
    if ev.proof or ev.prefix_root is not None:
        raise EvidenceError(f"{ev.kind} carries no consistency proof or prefix root")


_CHECKS = {
    EvidenceKind.FORK_SAME_SIZE: _check_same_size,
    EvidenceKind.FORK_PREFIX: _check_prefix,
    EvidenceKind.FORK_UNPROVEN: _check_unproven,
    EvidenceKind.ROLLBACK: _check_rollback,
}


# ---------------------------------------------------------------- strict field parsing

def _load(data: bytes | str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(data, Mapping):
        return dict(data)
    if isinstance(data, str):
        data = data.encode("utf-8")
    if not isinstance(data, (bytes, bytearray)):
        raise FormatError("evidence must be bytes, text or a JSON object")
    if len(data) > MAX_EVIDENCE_SIZE:
        raise FormatError(f"evidence is larger than {MAX_EVIDENCE_SIZE} bytes")
    try:
        obj = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"evidence is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise FormatError("evidence is not a JSON object")
    return obj


def _size_of(note: bytes) -> int:
    if not isinstance(note, (bytes, bytearray)):
        raise FormatError("checkpoint note must be bytes")
    text, sep, _ = bytes(note).rpartition(b"\n\n")
    if not sep:
        raise FormatError("checkpoint note has no signature block")
    return Checkpoint.parse(text + b"\n").size


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
        raise FormatError(f"evidence {what} must be a non-empty string of at most {_MAX_TEXT} characters")
    return value


def _opt_text(value: object, what: str) -> str | None:
    return None if value is None else _text(value, what)


def _opt_int(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise FormatError(f"evidence {what} must be a non-negative integer")
    return value


def _notes(value: object) -> tuple[bytes, bytes]:
    if not isinstance(value, list) or len(value) != 2 or not all(isinstance(v, str) for v in value):
        raise FormatError("evidence checkpoints must be a list of two note texts")
    notes = tuple(v.encode("utf-8") for v in value)
    if any(len(n) > MAX_NOTE_SIZE for n in notes):
        raise FormatError(f"evidence checkpoint note is larger than {MAX_NOTE_SIZE} bytes")
    return notes[0], notes[1]


def _sizes(value: object) -> tuple[int, int]:
    if not isinstance(value, list) or len(value) != 2:
        raise FormatError("evidence sizes must be a list of two integers")
    a, b = (_opt_int(v, "size") for v in value)
    if a is None or b is None:
        raise FormatError("evidence sizes must be a list of two integers")
    return a, b


def _hash(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise FormatError(f"evidence {what} must be a base64 string")
    raw = decode_base64_strict(value, f"evidence {what}")
    if len(raw) != HASH_SIZE:
        raise FormatError(f"evidence {what} is {len(raw)} bytes, want {HASH_SIZE}")
    return raw


def _opt_hash(value: object) -> bytes | None:
    return None if value is None else _hash(value, "prefix_root")


def _proof(value: object) -> tuple[bytes, ...]:
    if not isinstance(value, list) or len(value) > _MAX_PROOF:
        raise FormatError(f"evidence consistency_proof must be a list of at most {_MAX_PROOF} hashes")
    return tuple(_hash(v, "consistency_proof hash") for v in value)


def _observed(value: object) -> tuple[Mapping[str, Any], ...]:
    if not isinstance(value, list) or len(value) > 2:
        raise FormatError("evidence observed must be a list of at most two objects")
    out = []
    for item in value:
        if not isinstance(item, dict) or set(item) - {"time_ms", "source"}:
            raise FormatError("evidence observed items are {time_ms, source} objects")
        _opt_int(item.get("time_ms"), "observed time_ms")
        _opt_text(item.get("source"), "observed source")
        out.append(dict(item))
    return tuple(out)
