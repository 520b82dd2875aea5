"""Tests for tlog.cosignature (C2SP tlog-cosignature, Ed25519 cosignature/v1) and witness quorums."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from tlog.checkpoint import MAX_TREE_SIZE, Checkpoint, sign_checkpoint
from tlog.cosignature import (
    MAX_TIMESTAMP,
    CosignatureSigner,
    CosignatureVerifier,
    check_quorum,
    cosignature_message,
    cosignature_timestamp,
    generate_cosigner,
    verify_cosignature,
)
from tlog.errors import FormatError, SignatureError, TlogError
from tlog.note import (
    KEY_TYPE_COSIGNATURE_V1,
    Signature,
    Signer,
    UnverifiedNoteError,
    Verifier,
    add_signatures,
    generate_signer,
    open_note,
    parse_signature_line,
    sign_note,
)

SPEC_TEXT = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
# tlog-cosignature's example cosignature line and the signed message it shows for "time 1679315147".
SPEC_COSIG = ("\u2014 witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin"
              "1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==")
SPEC_MESSAGE = ("cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
                "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n")
# transparency-dev/formats note_cosigv1_test.go TestCoSigV1Timestamp: a cosignature made at 1727964367.
FORMATS_COSIG_B64 = "ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA=="

W1_SEED = hashlib.sha256(b"tlog test witness key").digest()
W1_SKEY = "PRIVATE+KEY+witness.example.com/w1+a622495a+BOBjL1DivB9k9qx5sx4BP3D2/3uz56utwvUUcVtB9tVJ"
W1_VKEY = "witness.example.com/w1+a622495a+BNevlIRodY6xxzez6y55rAe9VG7uIOJowdlR91ePLLYg"
# Golden: Ed25519 is deterministic, so our cosignature of the spec checkpoint at the spec time is byte-exact.
W1_GOLDEN = ("\u2014 witness.example.com/w1 piJJWgAAAABkGFDLL8S8Z0in3C8zFN1ghqUes38Eitm0zWgYLWXP/Kq2meKoHqz9KiLCMnrEG5S"
             "cVEs0T7luwWlhpLXi+qqbIZTnAg==\n")

ORIGIN = "example.com/behind-the-sofa"


@pytest.fixture(scope="module")
def w1() -> CosignatureSigner:
    return generate_cosigner("witness.example.com/w1", W1_SEED)


@pytest.fixture(scope="module")
def log() -> Signer:
    return generate_signer(ORIGIN, b"\x11" * 32)


# --- known answers --------------------------------------------------------------------------------


def test_spec_example_timestamp_and_key_id():
    sig = parse_signature_line(SPEC_COSIG)
    assert sig.key_id == 0x8D66CF3F
    assert len(sig.signature) == 72
    assert cosignature_timestamp(sig) == 1679315147


def test_formats_example_timestamp():
    raw = base64.b64decode(FORMATS_COSIG_B64)
    assert cosignature_timestamp(Signature("w", int.from_bytes(raw[:4], "big"), raw[4:])) == 1727964367


def test_signed_message_matches_spec_example():
    assert cosignature_message(SPEC_TEXT, 1679315147) == SPEC_MESSAGE.encode()


def test_golden_cosignature_and_keys(w1):
    assert w1.to_skey() == W1_SKEY
    assert w1.to_vkey() == W1_VKEY
    assert w1.cosign(SPEC_TEXT, 1679315147) == W1_GOLDEN
    assert CosignatureSigner.from_skey(W1_SKEY).cosign(SPEC_TEXT, 1679315147) == W1_GOLDEN


def test_cosignature_cross_checked_by_hand(w1):
    """Rebuild key ID, layout and signed message independently of tlog.cosignature."""
    priv = Ed25519PrivateKey.from_private_bytes(W1_SEED)
    pub = Ed25519PublicKey.from_public_bytes(w1.public_key)
    assert priv.public_key().public_bytes_raw() == w1.public_key
    key_id = hashlib.sha256(b"witness.example.com/w1\n\x04" + w1.public_key).digest()[:4]
    raw = base64.b64decode(W1_GOLDEN[len("\u2014 witness.example.com/w1 "):-1])
    assert raw[:4] == key_id
    assert raw[4:12] == (1679315147).to_bytes(8, "big")
    pub.verify(raw[12:], SPEC_MESSAGE.encode())  # raises if wrong
    assert raw[12:] == priv.sign(SPEC_MESSAGE.encode())


def test_key_type_byte_separates_ids(w1):
    """The same key and name as a plain Ed25519 note key (0x01) has another key ID."""
    plain = Signer.generate("witness.example.com/w1", W1_SEED)
    assert plain.public_key == w1.public_key
    assert plain.key_id != w1.key_id
    assert base64.b64decode(W1_VKEY.split("+", 2)[2])[0] == KEY_TYPE_COSIGNATURE_V1


# --- sign and verify ------------------------------------------------------------------------------


def test_verify_returns_the_timestamp(w1):
    v = CosignatureVerifier.from_vkey(W1_VKEY)
    for t in [0, 1, 1679315147, MAX_TIMESTAMP]:
        assert verify_cosignature(v, SPEC_TEXT, w1.cosign(SPEC_TEXT, t)) == t
    sig = parse_signature_line(W1_GOLDEN[:-1])
    assert verify_cosignature(v, SPEC_TEXT, sig) == 1679315147


def test_vkey_dispatch(w1):
    v = Verifier.from_vkey(W1_VKEY)
    assert isinstance(v, CosignatureVerifier)
    assert (v.name, v.key_id, v.to_vkey()) == (w1.name, w1.key_id, W1_VKEY)
    with pytest.raises(FormatError, match="not a cosignature"):
        CosignatureVerifier.from_vkey(generate_signer("a", bytes(32)).to_vkey())


def test_skey_types_do_not_mix(w1):
    with pytest.raises(FormatError):
        Signer.from_skey(W1_SKEY)
    with pytest.raises(FormatError):
        CosignatureSigner.from_skey(generate_signer("a", bytes(32)).to_skey())


@pytest.mark.parametrize("t", [-1, 2**63, 2**64, True, 1.5, "5"])
def test_timestamp_range(w1, t):
    with pytest.raises(FormatError):
        w1.cosign(SPEC_TEXT, t)


def test_cosign_refuses_non_checkpoints(w1):
    for text in ["hello\n", "o\n01\n" + "A" * 43 + "=\n", SPEC_TEXT + "\n", SPEC_TEXT[:-1]]:
        with pytest.raises(FormatError):
            w1.cosign(text, 1)


def _raw_line(name: str, key_id: int, timestamp: int, sig: bytes) -> str:
    return Signature(name, key_id, timestamp.to_bytes(8, "big") + sig).to_line()


COSIG_MUTATIONS = {
    "timestamp changed": lambda raw: (int.from_bytes(raw[:8], "big") + 1).to_bytes(8, "big") + raw[8:],
    "signature bit flipped": lambda raw: raw[:20] + bytes([raw[20] ^ 4]) + raw[21:],
    "timestamp dropped": lambda raw: raw[8:],
    "truncated": lambda raw: raw[:-1],
    "extended": lambda raw: raw + b"\x00",
}


@pytest.mark.parametrize("name", sorted(COSIG_MUTATIONS))
def test_cosignature_mutations(name, w1):
    v = w1.verifier()
    raw = parse_signature_line(W1_GOLDEN[:-1]).signature
    mutated = COSIG_MUTATIONS[name](raw)
    assert not v.verify(SPEC_TEXT.encode(), mutated)
    with pytest.raises(TlogError):
        verify_cosignature(v, SPEC_TEXT, Signature(w1.name, w1.key_id, mutated))


def test_timestamp_beyond_2_63_is_rejected_even_if_signed(w1):
    """A signature over "time 2**63" is by the right key, but the spec forbids that timestamp."""
    t = 2**63
    msg = f"cosignature/v1\ntime {t}\n{SPEC_TEXT}".encode()
    raw = t.to_bytes(8, "big") + Ed25519PrivateKey.from_private_bytes(W1_SEED).sign(msg)
    assert not w1.verifier().verify(SPEC_TEXT.encode(), raw)
    with pytest.raises(FormatError):
        cosignature_timestamp(Signature(w1.name, w1.key_id, raw))


def test_plain_signature_is_not_a_cosignature(w1):
    """An Ed25519 signature of the bare checkpoint (type 0x01 semantics) never passes as cosignature/v1."""
    plain = Ed25519PrivateKey.from_private_bytes(W1_SEED).sign(SPEC_TEXT.encode())
    assert not w1.verifier().verify(SPEC_TEXT.encode(), (5).to_bytes(8, "big") + plain)


def test_cosignature_covers_extension_lines(w1):
    cp = Checkpoint("o.example", 3, bytes(32), ("ext 1", "ext 2"))
    line = w1.cosign(cp.format(), 7)
    other = Checkpoint("o.example", 3, bytes(32), ("ext 1", "ext X"))
    assert verify_cosignature(w1.verifier(), cp.format(), line) == 7
    with pytest.raises(SignatureError):
        verify_cosignature(w1.verifier(), other.format(), line)


def test_verify_cosignature_checks_the_key(w1):
    w2 = generate_cosigner("witness.example.com/w2", b"\x22" * 32)
    with pytest.raises(SignatureError, match="not by"):
        verify_cosignature(w1.verifier(), SPEC_TEXT, w2.cosign(SPEC_TEXT, 1))
    for bad in [W1_GOLDEN[:-1], W1_GOLDEN + W1_GOLDEN, "junk\n"]:
        with pytest.raises(FormatError):
            verify_cosignature(w1.verifier(), SPEC_TEXT, bad)


def test_note_signer_and_open_note(w1, log):
    cp = Checkpoint.parse(SPEC_TEXT)
    note = sign_note(cp.format(), [log, w1.note_signer(1679315147)])
    assert note.decode().endswith(W1_GOLDEN)
    opened = open_note(note, [log.verifier(), w1.verifier()])
    assert [s.name for s in opened.verified] == [ORIGIN, w1.name]
    with pytest.raises(FormatError):
        w1.note_signer(-1)


# --- quorum ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def witnesses() -> list[CosignatureSigner]:
    return [generate_cosigner(f"w{i}.example", bytes([0x30 + i]) * 32) for i in range(3)]


def _cosigned(log, cosigners, timestamp=1000) -> bytes:
    note = sign_checkpoint(Checkpoint.parse(SPEC_TEXT), log)
    return add_signatures(note, [c.note_signer(timestamp) for c in cosigners]) if cosigners else note


def test_quorum_met(log, witnesses):
    note = _cosigned(log, witnesses[:2])
    verifiers = [w.verifier() for w in witnesses]
    assert check_quorum(note, verifiers, 2) == ["w0.example", "w1.example"]
    assert check_quorum(note, verifiers, 1, origin=ORIGIN) == ["w0.example", "w1.example"]
    assert check_quorum(note, verifiers, 0) == ["w0.example", "w1.example"]


def test_quorum_not_met(log, witnesses):
    note = _cosigned(log, witnesses[:2])
    with pytest.raises(SignatureError, match="2 witness cosignatures, quorum is 3"):
        check_quorum(note, [w.verifier() for w in witnesses], 3)


def test_quorum_zero_without_cosignatures(log, witnesses):
    assert check_quorum(_cosigned(log, []), [w.verifier() for w in witnesses], 0) == []
    with pytest.raises(SignatureError):
        check_quorum(_cosigned(log, []), [w.verifier() for w in witnesses], 1)


def test_quorum_counts_witnesses_not_signatures(log, witnesses):
    w0 = witnesses[0]
    note = add_signatures(_cosigned(log, [w0], 1000), [w0.note_signer(2000)])
    assert check_quorum(note, [w0.verifier(), witnesses[1].verifier()], 1) == ["w0.example"]
    rotated = generate_cosigner("w0.example", b"\x99" * 32)  # the same witness under a second key
    both = add_signatures(_cosigned(log, [w0]), [rotated.note_signer(3)])
    with pytest.raises(SignatureError):
        check_quorum(both, [w0.verifier(), rotated.verifier()], 2)


def test_quorum_ignores_log_and_unknown_signatures(log, witnesses):
    stranger = generate_cosigner("stranger.example", b"\x77" * 32)
    note = _cosigned(log, [stranger, witnesses[0]])
    assert check_quorum(note, [w.verifier() for w in witnesses], 1) == ["w0.example"]
    with pytest.raises(SignatureError):
        check_quorum(note, [w.verifier() for w in witnesses], 2)


def test_quorum_rejects_a_bad_cosignature_from_a_known_witness(log, witnesses):
    note = _cosigned(log, witnesses[:2]).decode()
    head, last = note[:-1].rsplit("\n", 1)
    sig = parse_signature_line(last)
    bad = Signature(sig.name, sig.key_id, sig.signature[:30] + bytes([sig.signature[30] ^ 1]) + sig.signature[31:])
    tampered = (head + "\n" + bad.to_line()).encode()
    with pytest.raises(SignatureError, match="invalid signature"):
        check_quorum(tampered, [w.verifier() for w in witnesses], 1)


def test_quorum_origin_and_arguments(log, witnesses):
    note = _cosigned(log, witnesses)
    verifiers = [w.verifier() for w in witnesses]
    with pytest.raises(SignatureError, match="origin"):
        check_quorum(note, verifiers, 1, origin="example.com/other")
    for q in [-1, True, 1.0]:
        with pytest.raises(FormatError):
            check_quorum(note, verifiers, q)  # type: ignore[arg-type]
    with pytest.raises(FormatError):
        check_quorum(sign_note("not a checkpoint\n", log), verifiers, 0)
    with pytest.raises(UnverifiedNoteError):
        open_note(note, [])


# --- properties and fuzzing -----------------------------------------------------------------------

lines = st.text(st.characters(min_codepoint=0x20, blacklist_categories=("Cs",)), min_size=1, max_size=20)
checkpoints = st.builds(Checkpoint, lines, st.integers(0, MAX_TREE_SIZE), st.binary(min_size=32, max_size=32),
                        st.lists(lines, max_size=2).map(tuple))


@settings(max_examples=60, deadline=None)
@given(cp=checkpoints, t=st.integers(0, MAX_TIMESTAMP))
def test_cosign_verify_round_trip(w1, cp, t):
    line = w1.cosign(cp.format(), t)
    assert verify_cosignature(w1.verifier(), cp.format(), line) == t
    assert cosignature_timestamp(parse_signature_line(line[:-1])) == t


@settings(max_examples=300, deadline=None)
@given(msg=st.binary(max_size=120), sig=st.binary(max_size=100))
def test_fuzz_verifier_never_raises(w1, msg, sig):
    assert w1.verifier().verify(msg, sig) in (True, False)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=150))
def test_fuzz_verify_cosignature_lines(w1, line):
    try:
        verify_cosignature(w1.verifier(), SPEC_TEXT, line)
    except TlogError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_check_quorum(w1, data):
    try:
        check_quorum(data, [w1.verifier()], 1)
    except TlogError:
        pass
