"""Tests for tlog.tlogproof (C2SP tlog-proof receipts): exact format, strict parsing, offline verification."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tlog.checkpoint import Checkpoint, sign_checkpoint
from tlog.cosignature import generate_cosigner
from tlog.errors import FormatError, ProofError, SignatureError, TlogError
from tlog.hashing import leaf_hash, node_hash
from tlog.note import add_signatures, generate_signer, sign_note
from tlog.tlogproof import MAX_PROOF_HASHES, TLOG_PROOF_HEADER, TlogProof, verify_tlog_proof

ORIGIN = "example.com/fancylog"
LOG = generate_signer(ORIGIN, b"\x41" * 32)
WITNESSES = [generate_cosigner(f"witness{i}.example", bytes([0x50 + i]) * 32) for i in range(3)]
W_VERIFIERS = [w.verifier() for w in WITNESSES]


# --- an independent RFC 6962 §2.1 oracle (recursive MTH and PATH), used only to build proofs ---------


def mth(hashes: list[bytes]) -> bytes:
    if len(hashes) == 1:
        return hashes[0]
    k = 1 << ((len(hashes) - 1).bit_length() - 1)  # largest power of two smaller than n
    return node_hash(mth(hashes[:k]), mth(hashes[k:]))


def path(m: int, hashes: list[bytes]) -> list[bytes]:
    if len(hashes) == 1:
        return []
    k = 1 << ((len(hashes) - 1).bit_length() - 1)
    if m < k:
        return path(m, hashes[:k]) + [mth(hashes[k:])]
    return path(m - k, hashes[k:]) + [mth(hashes[:k])]


def leaves(n: int) -> list[bytes]:
    return [f"leaf {i}".encode() for i in range(n)]


def signed_tree(n: int, cosigners=WITNESSES[:2], origin: str = ORIGIN, log=LOG) -> tuple[Checkpoint, bytes]:
    cp = Checkpoint(origin, n, mth([leaf_hash(x) for x in leaves(n)]))
    note = sign_checkpoint(cp, log)
    if cosigners:
        note = add_signatures(note, [w.note_signer(1700000000) for w in cosigners])
    return cp, note


def receipt(index: int, n: int, **kw) -> TlogProof:
    _, note = signed_tree(n, **kw)
    hashes = [leaf_hash(x) for x in leaves(n)]
    return TlogProof(index, path(index, hashes), note, leaves(n)[index])


def verify(tp, **kw):
    args = dict(origin=ORIGIN, log_verifier=LOG.verifier())
    args.update(kw)
    return verify_tlog_proof(tp, **args)


GOOD = receipt(5, 11)
GOOD_BYTES = GOOD.format()


# --- format ---------------------------------------------------------------------------------------


def test_format_is_exact():
    text = GOOD_BYTES.decode()
    lines = text.split("\n")
    assert lines[0] == "c2sp.org/tlog-proof@v1" == TLOG_PROOF_HEADER
    assert lines[1] == "extra " + base64.b64encode(b"leaf 5").decode()
    assert lines[2] == "index 5"
    hashes = path(5, [leaf_hash(x) for x in leaves(11)])
    assert lines[3:3 + len(hashes)] == [base64.b64encode(h).decode() for h in hashes]
    assert lines[3 + len(hashes)] == ""
    assert GOOD_BYTES.endswith(b"\n\n" + GOOD.checkpoint_note)
    assert text.index("\n\n") == len("\n".join(lines[:3 + len(hashes)]))


def test_format_without_extra_and_without_hashes():
    _, note = signed_tree(1)
    tp = TlogProof(0, [], note)
    assert tp.format() == b"c2sp.org/tlog-proof@v1\nindex 0\n\n" + note
    assert TlogProof.parse(tp.format()) == tp
    assert verify(tp, leaf_hash=leaf_hash(b"leaf 0")).size == 1


def test_parse_round_trip():
    parsed = TlogProof.parse(GOOD_BYTES)
    assert parsed == GOOD
    assert parsed.proof == tuple(GOOD.proof)
    assert parsed.format() == GOOD_BYTES
    assert TlogProof.parse(bytearray(GOOD_BYTES)) == GOOD


# --- verification ---------------------------------------------------------------------------------


def test_verify_every_index_of_small_trees():
    for n in range(1, 10):
        _, note = signed_tree(n, cosigners=())
        hashes = [leaf_hash(x) for x in leaves(n)]
        for i in range(n):
            tp = TlogProof.parse(TlogProof(i, path(i, hashes), note, leaves(n)[i]).format())
            cp = verify(tp)
            assert (cp.origin, cp.size, cp.root) == (ORIGIN, n, mth(hashes))


def test_verify_with_witness_quorum():
    assert verify(GOOD, witness_verifiers=W_VERIFIERS, quorum=2).size == 11
    assert verify(GOOD_BYTES, witness_verifiers=W_VERIFIERS, quorum=1).size == 11
    with pytest.raises(SignatureError, match="quorum is 3"):
        verify(GOOD, witness_verifiers=W_VERIFIERS, quorum=3)


def test_leaf_hash_argument_overrides_extra():
    assert verify(GOOD, leaf_hash=leaf_hash(b"leaf 5")).size == 11
    with pytest.raises(ProofError):
        verify(GOOD, leaf_hash=leaf_hash(b"leaf 6"))
    no_extra = TlogProof(GOOD.index, GOOD.proof, GOOD.checkpoint_note)
    with pytest.raises(FormatError, match="no extra data"):
        verify(no_extra)
    assert verify(no_extra, leaf_hash=leaf_hash(b"leaf 5")).size == 11


def _replace(tp: TlogProof, **kw) -> TlogProof:
    fields = dict(index=tp.index, proof=tp.proof, checkpoint_note=tp.checkpoint_note, extra=tp.extra)
    fields.update(kw)
    return TlogProof(**fields)


def _flip(h: bytes) -> bytes:
    return bytes([h[0] ^ 1]) + h[1:]


VERIFY_MUTATIONS = {
    "index + 1": (lambda tp: _replace(tp, index=tp.index + 1), ProofError),
    "index - 1": (lambda tp: _replace(tp, index=tp.index - 1), ProofError),
    "index = size": (lambda tp: _replace(tp, index=11), ProofError),
    "first proof hash flipped": (lambda tp: _replace(tp, proof=(_flip(tp.proof[0]),) + tp.proof[1:]), ProofError),
    "last proof hash flipped": (lambda tp: _replace(tp, proof=tp.proof[:-1] + (_flip(tp.proof[-1]),)), ProofError),
    "proof hash dropped": (lambda tp: _replace(tp, proof=tp.proof[:-1]), ProofError),
    "proof hash added": (lambda tp: _replace(tp, proof=tp.proof + (bytes(32),)), ProofError),
    "proof hashes swapped": (lambda tp: _replace(tp, proof=(tp.proof[1], tp.proof[0]) + tp.proof[2:]), ProofError),
    "empty proof": (lambda tp: _replace(tp, proof=()), ProofError),
    "extra changed": (lambda tp: _replace(tp, extra=b"leaf 6"), ProofError),
    "checkpoint from another origin": (
        lambda tp: _replace(tp, checkpoint_note=signed_tree(11, origin="example.com/other")[1]), SignatureError),
    "checkpoint by an unknown key": (
        lambda tp: _replace(tp, checkpoint_note=signed_tree(11, log=generate_signer(ORIGIN, b"\x42" * 32))[1]),
        SignatureError),
    "checkpoint of another size": (lambda tp: _replace(tp, checkpoint_note=signed_tree(12)[1]), ProofError),
}


@pytest.mark.parametrize("name", sorted(VERIFY_MUTATIONS))
def test_verify_mutations(name):
    mutate, error = VERIFY_MUTATIONS[name]
    with pytest.raises(error):
        verify(mutate(GOOD))


def test_tampered_log_signature():
    text = GOOD.checkpoint_note.decode()
    body, sigs = text.split("\n\n", 1)
    log_line, rest = sigs.split("\n", 1)
    prefix, b64 = log_line.rsplit(" ", 1)
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 1
    tampered = (body + "\n\n" + prefix + " " + base64.b64encode(bytes(raw)).decode() + "\n" + rest).encode()
    with pytest.raises(SignatureError, match="invalid signature"):
        verify(_replace(GOOD, checkpoint_note=tampered))
    changed_text = GOOD.checkpoint_note.replace(b"\n11\n", b"\n12\n", 1)
    with pytest.raises(SignatureError):
        verify(_replace(GOOD, checkpoint_note=changed_text))


def test_verify_rejects_bad_arguments():
    with pytest.raises(FormatError):
        verify("not a proof")  # type: ignore[arg-type]
    with pytest.raises(ProofError):
        verify(GOOD, leaf_hash=b"short")
    with pytest.raises(FormatError):
        verify(GOOD, witness_verifiers=W_VERIFIERS, quorum=-1)


# --- strict parsing -------------------------------------------------------------------------------

HEAD, NOTE = GOOD_BYTES.split(b"\n\n", 1)
HEAD_LINES = HEAD.decode().split("\n")  # header, extra, index, hashes...


def _join(head_lines: list[str], note: bytes = NOTE, sep: str = "\n\n") -> bytes:
    return "\n".join(head_lines).encode() + sep.encode() + note


def _set(i: int, value: str) -> bytes:
    lines = list(HEAD_LINES)
    lines[i] = value
    return _join(lines)


H0 = HEAD_LINES[3]
B64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# 32 bytes -> 2 padding bits in the last character before '=': flipping the lowest one keeps the bytes.
H0_PADDING_BIT = H0[:-2] + B64_ALPHABET[B64_ALPHABET.index(H0[-2]) ^ 1] + "="
PARSE_MUTATIONS = {
    "wrong header": _set(0, "c2sp.org/tlog-proof@v2"),
    "header with trailing space": _set(0, TLOG_PROOF_HEADER + " "),
    "no header": _join(HEAD_LINES[1:]),
    "index leading zero": _set(2, "index 05"),
    "index plus sign": _set(2, "index +5"),
    "index two spaces": _set(2, "index  5"),
    "index negative": _set(2, "index -5"),
    "index 2**63": _set(2, f"index {2**63}"),
    "index missing": _join(HEAD_LINES[:2] + HEAD_LINES[3:]),
    "index without value": _set(2, "index "),
    "Index capitalised": _set(2, "Index 5"),
    "extra after index": _join([HEAD_LINES[0], HEAD_LINES[2], HEAD_LINES[1]] + HEAD_LINES[3:]),
    "extra twice": _join(HEAD_LINES[:2] + HEAD_LINES[1:]),
    "extra empty": _set(1, "extra "),
    "extra without space": _set(1, "extra" + HEAD_LINES[1][6:]),
    "extra bad base64": _set(1, "extra !!!"),
    "extra missing padding": _set(1, "extra " + base64.b64encode(b"leaf").decode().rstrip("=")),
    "hash 31 bytes": _set(3, base64.b64encode(bytes(31)).decode()),
    "hash 33 bytes": _set(3, base64.b64encode(bytes(33)).decode()),
    "hash non-canonical padding bits": _set(3, H0_PADDING_BIT),
    "hash with trailing space": _set(3, H0 + " "),
    "hash in hex": _set(3, bytes(32).hex()),
    "missing blank line": _join(HEAD_LINES, sep="\n"),
    "two blank lines": _join(HEAD_LINES, sep="\n\n\n"),
    "crlf": GOOD_BYTES.replace(b"\n", b"\r\n"),
    "crlf in head only": _join(HEAD_LINES).replace(b"\n", b"\r\n", 3),
    "no checkpoint": _join(HEAD_LINES, note=b""),
    "checkpoint without signatures": _join(HEAD_LINES, note=NOTE.split(b"\n\n")[0] + b"\n"),
    "checkpoint text not a checkpoint": _join(HEAD_LINES, note=sign_note("hello\n", LOG)),
    "trailing garbage": GOOD_BYTES + b"garbage\n",
    "trailing newline": GOOD_BYTES + b"\n",
    "truncated in head": HEAD[:30],
    "non-ascii in head": _set(2, "index \u0665"),
    "empty": b"",
    "64 hashes": _join(HEAD_LINES[:3] + [H0] * (MAX_PROOF_HASHES + 1)),
}


def test_hash_padding_mutation_keeps_bytes():
    assert H0_PADDING_BIT != H0
    assert base64.b64decode(H0_PADDING_BIT) == base64.b64decode(H0)


@pytest.mark.parametrize("name", sorted(PARSE_MUTATIONS))
def test_parse_mutations(name):
    with pytest.raises(FormatError):
        TlogProof.parse(PARSE_MUTATIONS[name])


def test_63_hashes_parse():
    tp = TlogProof.parse(_join(HEAD_LINES[:3] + [H0] * MAX_PROOF_HASHES))
    assert len(tp.proof) == MAX_PROOF_HASHES


BAD_FIELDS = {
    "negative index": dict(index=-1),
    "index 2**63": dict(index=2**63),
    "bool index": dict(index=True),
    "short hash": dict(proof=[bytes(31)]),
    "str hash": dict(proof=["a" * 32]),
    "proof as bytes": dict(proof=bytes(32)),
    "too many hashes": dict(proof=[bytes(32)] * 64),
    "empty extra": dict(extra=b""),
    "str extra": dict(extra="leaf"),
    "note as str": dict(checkpoint_note=GOOD.checkpoint_note.decode()),
    "note not signed": dict(checkpoint_note=b"example.com/fancylog\n11\n" + base64.b64encode(bytes(32)) + b"\n"),
}


@pytest.mark.parametrize("name", sorted(BAD_FIELDS))
def test_constructor_validates(name):
    with pytest.raises(FormatError):
        _replace(GOOD, **BAD_FIELDS[name])


def test_parse_rejects_non_bytes():
    with pytest.raises(FormatError):
        TlogProof.parse(GOOD_BYTES.decode())  # type: ignore[arg-type]


# --- properties and fuzzing -----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(index=st.integers(0, 2**63 - 1), proof=st.lists(st.binary(min_size=32, max_size=32), max_size=MAX_PROOF_HASHES),
       extra=st.none() | st.binary(min_size=1, max_size=200))
def test_format_parse_round_trip(index, proof, extra):
    tp = TlogProof(index, proof, GOOD.checkpoint_note, extra)
    encoded = tp.format()
    assert TlogProof.parse(encoded) == tp
    assert TlogProof.parse(encoded).format() == encoded


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_random_receipts_verify(data):
    n = data.draw(st.integers(1, 40))
    i = data.draw(st.integers(0, n - 1))
    tp = TlogProof.parse(receipt(i, n).format())
    assert verify(tp, witness_verifiers=W_VERIFIERS, quorum=2).size == n


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_parse(data):
    try:
        TlogProof.parse(data)
    except TlogError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_parse_with_valid_header(data):
    try:
        TlogProof.parse(b"c2sp.org/tlog-proof@v1\n" + data)
    except TlogError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(GOOD_BYTES) - 1), st.integers(1, 255))
def test_fuzz_byte_mutations(pos, delta):
    """Any single-byte change is rejected, except inside a witness line when no quorum is asked for."""
    mutated = bytearray(GOOD_BYTES)
    mutated[pos] = (mutated[pos] + delta) % 256
    try:
        cp = verify(bytes(mutated))
    except TlogError:
        return
    assert cp == Checkpoint.parse(GOOD.checkpoint_note.split(b"\n\n")[0].decode() + "\n")
    assert pos > GOOD_BYTES.index("\n\u2014 witness0".encode())  # only an (ignored) witness line changed
    with pytest.raises(TlogError):
        verify(bytes(mutated), witness_verifiers=W_VERIFIERS, quorum=2)
