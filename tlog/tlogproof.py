"""C2SP tlog-proof (https://c2sp.org/tlog-proof): the offline-verifiable receipt that an entry is logged.

A proof is a sequence of newline-terminated lines:

    c2sp.org/tlog-proof@v1
    extra <base64 opaque extra data>        (optional)
    index <zero-based leaf index, canonical decimal>
    <base64 hash>                           (zero or more: the RFC 6962 §2.1.1 inclusion proof,
    ...                                      from the leaf's sibling up to the root's child)
    <empty line>
    <the signed checkpoint note, verbatim, with any witness cosignatures>

tlog's receipts carry the leaf bytes (the ``tlog.entry.Leaf`` encoding) in ``extra``.  The extra data
is not authenticated by the format itself: :func:`verify_tlog_proof` hashes it into the RFC 6962 leaf
hash and checks the inclusion proof against the signed root, which is what authenticates it.

Parsing is strict and canonical (the proof re-formats to the same bytes).  Pure: no I/O, no clock.
"""

from __future__ import annotations

import functools

from dataclasses import dataclass
from typing import Iterable, Sequence

from tlog.checkpoint import MAX_TREE_SIZE, Checkpoint, open_checkpoint, parse_decimal
from tlog.cosignature import check_quorum
from tlog.errors import FormatError
from tlog.hashing import HASH_SIZE, leaf_hash as rfc6962_leaf_hash
from tlog.note import MAX_NOTE_SIZE, Verifier, decode_base64_strict, encode_base64, parse_note
from tlog.proof import verify_inclusion

__all__ = [
    "TLOG_PROOF_HEADER",
    "MAX_EXTRA_SIZE",
    "MAX_PROOF_HASHES",
    "MAX_TLOG_PROOF_SIZE",
    "TlogProof",
    "verify_tlog_proof",
]

#: tlog-proof "Format": the first line.
TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"
#: Upper bound on the decoded extra data.
MAX_EXTRA_SIZE = 1 << 20
#: An inclusion proof in a tree of fewer than 2**63 leaves has at most 63 hashes.
MAX_PROOF_HASHES = 63
#: Upper bound on an encoded proof: header, base64 extra, index, hashes and the note.
MAX_TLOG_PROOF_SIZE = 64 + (MAX_EXTRA_SIZE * 4 // 3 + 16) + 32 + MAX_PROOF_HASHES * 45 + 1 + MAX_NOTE_SIZE


def _check_note(note: object) -> bytes:
    """The embedded checkpoint must be a well-formed signed note whose text is a checkpoint."""
    if not isinstance(note, (bytes, bytearray)):
        raise FormatError("tlog-proof checkpoint must be bytes (a signed note)")
    return _checked_note(bytes(note))


@functools.lru_cache(maxsize=64)
def _checked_note(note: bytes) -> bytes:
    """Parsing is pure, so its answer for the same bytes is remembered: a log issues many receipts
    against one checkpoint.  (Failures raise and are not remembered.)"""
    text, _ = parse_note(note)
    Checkpoint.parse(text)
    return note


def format_head(index: int, proof_b64: list[str], extra_b64: str | None = None, newline: str = "\n") -> str:
    """The text of an encoded proof before its checkpoint (tlog-proof "Format"): the header line, the
    extra line if any, the index line, one line per proof hash, then the empty line.  Takes the hashes
    and extra data already in base64, for a caller that also writes them elsewhere (the server's
    receipts, which pass ``newline="\\n"``: the text as it stands inside a JSON string);
    :meth:`TlogProof.format` is the checked way to build a proof."""
    lines = [TLOG_PROOF_HEADER]
    if extra_b64 is not None:
        lines.append("extra " + extra_b64)
    lines.append(f"index {index}")
    lines.extend(proof_b64)
    return newline.join(lines) + newline + newline


@dataclass(frozen=True)
class TlogProof:
    """A tlog-proof: leaf ``index``, inclusion ``proof`` hashes, the signed ``checkpoint_note``, ``extra``.

    ``extra`` is None (no extra line) or non-empty bytes: an empty extra line would make two encodings
    of "no extra data".  Construction validates every field, so :meth:`format` always parses back.
    """

    index: int
    proof: Sequence[bytes]
    checkpoint_note: bytes
    extra: bytes | None = None

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int) or not 0 <= self.index <= MAX_TREE_SIZE:
            raise FormatError(f"tlog-proof index {self.index!r} is not in [0, 2**63)")
        if isinstance(self.proof, (bytes, bytearray, str)):
            raise FormatError("tlog-proof proof must be a sequence of hashes")
        proof = tuple(self.proof)
        if len(proof) > MAX_PROOF_HASHES:
            raise FormatError(f"tlog-proof has {len(proof)} proof hashes, more than {MAX_PROOF_HASHES}")
        for i, h in enumerate(proof):
            if not isinstance(h, bytes) or len(h) != HASH_SIZE:
                raise FormatError(f"tlog-proof proof hash {i} is not {HASH_SIZE} bytes")
        object.__setattr__(self, "proof", proof)
        object.__setattr__(self, "checkpoint_note", _check_note(self.checkpoint_note))
        if self.extra is not None:
            if not isinstance(self.extra, bytes) or not 0 < len(self.extra) <= MAX_EXTRA_SIZE:
                raise FormatError(f"tlog-proof extra must be None or 1..{MAX_EXTRA_SIZE} bytes")

    def format(self) -> bytes:
        """The encoded proof (tlog-proof "Format")."""
        extra = None if self.extra is None else encode_base64(self.extra)
        head = format_head(self.index, [encode_base64(h) for h in self.proof], extra)
        return head.encode("ascii") + self.checkpoint_note

    @classmethod
    def parse(cls, data: bytes) -> TlogProof:
        """Parse an encoded proof strictly (tlog-proof "Format"); FormatError otherwise."""
        if not isinstance(data, (bytes, bytearray)):
            raise FormatError("a tlog-proof is bytes")
        data = bytes(data)
        if len(data) > MAX_TLOG_PROOF_SIZE:
            raise FormatError(f"tlog-proof is {len(data)} bytes, more than {MAX_TLOG_PROOF_SIZE}")
        line, pos = _next_line(data, 0)
        if line != TLOG_PROOF_HEADER:
            raise FormatError(f"tlog-proof must start with {TLOG_PROOF_HEADER!r}")
        line, pos = _next_line(data, pos)
        extra = None
        if line.startswith("extra "):
            extra = decode_base64_strict(line[len("extra "):], "tlog-proof extra")
            if not extra:
                raise FormatError("tlog-proof extra line carries no data")
            line, pos = _next_line(data, pos)
        if not line.startswith("index "):
            raise FormatError("tlog-proof is missing its index line")
        index = parse_decimal(line[len("index "):], "tlog-proof index")
        proof, pos = _parse_hashes(data, pos)
        return cls(index, proof, data[pos:], extra)


def _next_line(data: bytes, pos: int) -> tuple[str, int]:
    """The ASCII line starting at ``pos`` (without its newline) and the position after the newline."""
    end = data.find(b"\n", pos)
    if end < 0:
        raise FormatError("tlog-proof ends in the middle of its header lines")
    try:
        line = data[pos:end].decode("ascii")
    except UnicodeDecodeError as exc:
        raise FormatError("tlog-proof header lines must be ASCII") from exc
    return line, end + 1


def _parse_hashes(data: bytes, pos: int) -> tuple[list[bytes], int]:
    """Proof hash lines up to and including the empty line that precedes the checkpoint."""
    proof: list[bytes] = []
    while True:
        line, pos = _next_line(data, pos)
        if line == "":
            return proof, pos
        if len(proof) == MAX_PROOF_HASHES:
            raise FormatError(f"tlog-proof has more than {MAX_PROOF_HASHES} proof hashes")
        h = decode_base64_strict(line, f"tlog-proof proof hash {len(proof)}")
        if len(h) != HASH_SIZE:
            raise FormatError(f"tlog-proof proof hash {len(proof)} is {len(h)} bytes, want {HASH_SIZE}")
        proof.append(h)


def verify_tlog_proof(tp: TlogProof | bytes, *, origin: str, log_verifier: Verifier | Iterable[Verifier],
                      leaf_hash: bytes | None = None, witness_verifiers: Iterable[Verifier] = (),
                      quorum: int = 0) -> Checkpoint:
    """Verify a tlog-proof offline and return the checkpoint it proves inclusion in.

    1. The checkpoint note must be signed by ``log_verifier`` for ``origin`` (tlog-checkpoint).
    2. When ``quorum > 0``, at least ``quorum`` distinct witnesses of ``witness_verifiers`` must have
       valid cosignatures on it (tlog-cosignature).
    3. The inclusion proof must lead from the leaf hash at ``index`` to the checkpoint's root
       (RFC 9162 §2.1.3.2).  The leaf hash is ``leaf_hash`` when given, else the RFC 6962 leaf hash
       of ``extra`` (tlog receipts carry the leaf bytes there).

    Raises SignatureError (log signature, origin, quorum), ProofError (inclusion) or FormatError.
    """
    if isinstance(tp, (bytes, bytearray)):
        tp = TlogProof.parse(tp)
    if not isinstance(tp, TlogProof):
        raise FormatError("verify_tlog_proof needs a TlogProof or its encoding")
    cp, _ = open_checkpoint(tp.checkpoint_note, origin, log_verifier)
    if quorum:
        check_quorum(tp.checkpoint_note, witness_verifiers, quorum, origin=origin)
    if leaf_hash is None:
        if tp.extra is None:
            raise FormatError("tlog-proof has no extra data and no leaf hash was given")
        leaf_hash = rfc6962_leaf_hash(tp.extra)
    verify_inclusion(leaf_hash, tp.index, cp.size, list(tp.proof), cp.root)
    return cp
