"""Tests for tlog.checkpoint (C2SP tlog-checkpoint): byte-exact format, strict parsing, sign/open."""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tlog.checkpoint import (
    MAX_CHECKPOINT_SIZE,
    MAX_TREE_SIZE,
    Checkpoint,
    open_checkpoint,
    parse_decimal,
    sign_checkpoint,
)
from tlog.errors import FormatError, SignatureError, TlogError
from tlog.hashing import EMPTY_ROOT
from tlog.note import UnverifiedNoteError, Verifier, add_signatures, generate_signer, parse_note, sign_note

# The example of the tlog-checkpoint spec (text and its log signature line, whose key is not published).
SPEC_TEXT = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_SIG = ("\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1g"
            "GzGku9nTo+zyWE+xeMcTOAYQ8=\n")
SPEC_ROOT = base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")

ORIGIN = "example.com/behind-the-sofa"
LOG_SEED = hashlib.sha256(b"tlog test log key").digest()
LOG_SKEY = "PRIVATE+KEY+example.com/behind-the-sofa+e3215534+AS9FeRaVnU9xLixfMsjA3TdJB0jifGveepI8b5WNc9wB"
LOG_VKEY = "example.com/behind-the-sofa+e3215534+AbBwMTDnyHfE6v1DzuMuZADKkqYanD67hpkkxY1S4dk/"
# Golden: Ed25519 is deterministic, so the signed checkpoint is byte-exact.
GOLDEN_NOTE = (SPEC_TEXT + "\n\u2014 example.com/behind-the-sofa 4yFVNMkAX1QyizuNm61Xquyd3QO5k0J2wvJtb5vH5/xcVop6"
               "Te5nWptpRbpbKBXgyP7jaxbcCAPYXpHjUwLbvp3N5QM=\n").encode()


@pytest.fixture(scope="module")
def log():
    return generate_signer(ORIGIN, LOG_SEED)


def test_spec_example_parses_and_formats_byte_exact():
    cp = Checkpoint.parse(SPEC_TEXT)
    assert cp == Checkpoint(ORIGIN, 20852163, SPEC_ROOT)
    assert cp.extensions == ()
    assert cp.format() == SPEC_TEXT
    assert Checkpoint.parse(SPEC_TEXT.encode()) == cp


def test_spec_example_note_is_well_formed():
    text, sigs = parse_note((SPEC_TEXT + "\n" + SPEC_SIG).encode())
    assert text == SPEC_TEXT
    assert [s.name for s in sigs] == [ORIGIN]
    assert len(sigs[0].signature) == 64


def test_golden_signed_checkpoint(log):
    assert log.to_skey() == LOG_SKEY
    assert log.to_vkey() == LOG_VKEY
    cp = Checkpoint.parse(SPEC_TEXT)
    assert sign_checkpoint(cp, log) == GOLDEN_NOTE
    got, note = open_checkpoint(GOLDEN_NOTE, ORIGIN, Verifier.from_vkey(LOG_VKEY))
    assert got == cp
    assert note.text == SPEC_TEXT
    assert [s.name for s in note.verified] == [ORIGIN]


def test_empty_tree_and_extensions_round_trip():
    empty = Checkpoint("log.example", 0, EMPTY_ROOT)
    assert empty.format() == "log.example\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    ext = Checkpoint("log.example", 5, bytes(32), ("ext one", "\u2014 ext two"))
    assert ext.format().endswith("\next one\n\u2014 ext two\n")
    assert Checkpoint.parse(ext.format()) == ext
    assert Checkpoint("log.example", 5, bytes(32), ["a"]).extensions == ("a",)


def test_largest_size():
    cp = Checkpoint("o", MAX_TREE_SIZE, bytes(32))
    assert MAX_TREE_SIZE == 2**63 - 1
    assert Checkpoint.parse(cp.format()).size == 2**63 - 1


def _with_line(index: int, value: str) -> str:
    lines = SPEC_TEXT[:-1].split("\n")
    lines[index] = value
    return "\n".join(lines) + "\n"


ROOT_B64 = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="

BAD_TEXTS = {
    # tree size: canonical decimal only
    "size leading zero": _with_line(1, "020852163"),
    "size zero padded": _with_line(1, "00"),
    "size plus sign": _with_line(1, "+5"),
    "size leading space": _with_line(1, " 5"),
    "size trailing space": _with_line(1, "5 "),
    "size underscore": _with_line(1, "5_0"),
    "size negative zero": _with_line(1, "-0"),
    "size negative": _with_line(1, "-1"),
    "size hex": _with_line(1, "0x10"),
    "size arabic-indic digits": _with_line(1, "\u0663"),
    "size fullwidth digits": _with_line(1, "\uff15"),
    "size empty": _with_line(1, ""),
    "size 2**63": _with_line(1, str(2**63)),
    "size 2**64": _with_line(1, str(2**64)),
    "size float": _with_line(1, "5.0"),
    # root hash: strict base64 of exactly 32 bytes
    "root 31 bytes": _with_line(2, base64.b64encode(bytes(31)).decode()),
    "root 33 bytes": _with_line(2, base64.b64encode(bytes(33)).decode()),
    "root empty": _with_line(2, ""),
    "root missing padding": _with_line(2, ROOT_B64[:-1]),
    "root extra padding": _with_line(2, ROOT_B64 + "="),
    # 32 bytes -> 2 padding bits; 'I' (001000) -> 'J' (001001) sets one of them.
    "root non-canonical padding bits": _with_line(2, ROOT_B64[:-2] + "J="),
    "root url-safe alphabet": _with_line(2, base64.urlsafe_b64encode(b"\xfb" * 32).decode()),
    "root with space": _with_line(2, ROOT_B64[:10] + " " + ROOT_B64[10:]),
    "root hex": _with_line(2, SPEC_ROOT.hex()),
    # framing
    "empty origin": _with_line(0, ""),
    "origin with carriage return": _with_line(0, ORIGIN + "\r"),
    "origin with tab": _with_line(0, "example.com\tlog"),
    "missing trailing newline": SPEC_TEXT[:-1],
    "extension without trailing newline": SPEC_TEXT + "ext",
    "two lines": "example.com\n5\n",
    "empty": "",
    "just newline": "\n",
    "crlf": SPEC_TEXT.replace("\n", "\r\n"),
    "empty extension line": SPEC_TEXT + "\n",
    "empty line between extensions": SPEC_TEXT + "a\n\nb\n",
    "extension with nul": SPEC_TEXT + "a\x00\n",
    "lone surrogate": _with_line(0, "a\ud800"),
}


@pytest.mark.parametrize("name", sorted(BAD_TEXTS))
def test_parse_rejects(name):
    with pytest.raises(FormatError):
        Checkpoint.parse(BAD_TEXTS[name])


def test_non_canonical_root_mutation_decodes_to_same_bytes():
    assert base64.b64decode(ROOT_B64[:-2] + "J=") == SPEC_ROOT


def test_parse_rejects_bad_bytes_and_types():
    for bad in [b"\xff" + SPEC_TEXT.encode(), b"a\xed\xa0\x80\n5\n" + ROOT_B64.encode() + b"\n", 5, None]:
        with pytest.raises(FormatError):
            Checkpoint.parse(bad)  # type: ignore[arg-type]


def test_size_cap():
    ext = ("x" * 1000,) * (MAX_CHECKPOINT_SIZE // 1001 - 1)
    cp = Checkpoint("o", 1, bytes(32), ext)
    assert Checkpoint.parse(cp.format()) == cp
    with pytest.raises(FormatError, match="larger"):
        Checkpoint("o", 1, bytes(32), ext + ("x" * 2000,))
    with pytest.raises(FormatError, match="larger"):
        Checkpoint.parse(cp.format() + "y" * 2000 + "\n")


BAD_FIELDS = {
    "empty origin": ("", 1, bytes(32), ()),
    "origin with newline": ("a\nb", 1, bytes(32), ()),
    "origin not a string": (b"o", 1, bytes(32), ()),
    "negative size": ("o", -1, bytes(32), ()),
    "size 2**63": ("o", 2**63, bytes(32), ()),
    "bool size": ("o", True, bytes(32), ()),
    "float size": ("o", 1.0, bytes(32), ()),
    "short root": ("o", 1, bytes(31), ()),
    "long root": ("o", 1, bytes(33), ()),
    "str root": ("o", 1, "a" * 32, ()),
    "extension string": ("o", 1, bytes(32), "abc"),
    "empty extension": ("o", 1, bytes(32), ("",)),
    "extension with newline": ("o", 1, bytes(32), ("a\nb",)),
}


@pytest.mark.parametrize("name", sorted(BAD_FIELDS))
def test_constructor_validates(name):
    with pytest.raises(FormatError):
        Checkpoint(*BAD_FIELDS[name])  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["0", "1", "9", "10", "20852163", str(2**63 - 1)])
def test_parse_decimal_accepts_canonical(text):
    assert parse_decimal(text, "n") == int(text)
    assert str(parse_decimal(text, "n")) == text


def test_parse_decimal_limit():
    assert parse_decimal("10", "n", limit=10) == 10
    with pytest.raises(FormatError, match="larger"):
        parse_decimal("11", "n", limit=10)


# --- signing and opening --------------------------------------------------------------------------


def test_open_rejects_another_origin(log):
    note = sign_checkpoint(Checkpoint("example.com/other", 1, bytes(32)), log)
    with pytest.raises(SignatureError, match="origin 'example.com/other' is not the expected origin"):
        open_checkpoint(note, ORIGIN, log.verifier())


def test_open_rejects_unknown_key(log):
    other = generate_signer(ORIGIN, b"\x01" * 32)
    with pytest.raises(UnverifiedNoteError):
        open_checkpoint(GOLDEN_NOTE, ORIGIN, other.verifier())


def test_open_rejects_bad_signature(log):
    tampered = GOLDEN_NOTE.replace(b"20852163", b"20852164")
    with pytest.raises(SignatureError, match="invalid signature"):
        open_checkpoint(tampered, ORIGIN, log.verifier())


def test_open_rejects_signed_non_checkpoint(log):
    with pytest.raises(FormatError):
        open_checkpoint(sign_note(ORIGIN + "\nnot a size\n", log), ORIGIN, log.verifier())


def test_open_keeps_cosignatures_unverified_and_accepts_key_rotation(log):
    witness = generate_signer("witness.example", b"\x02" * 32)
    note = add_signatures(GOLDEN_NOTE, witness)
    cp, opened = open_checkpoint(note, ORIGIN, log.verifier())
    assert cp.size == 20852163
    assert [s.name for s in opened.unverified] == ["witness.example"]
    new_log = generate_signer(ORIGIN, b"\x03" * 32)
    rotated = sign_checkpoint(cp, new_log)
    assert open_checkpoint(rotated, ORIGIN, [log.verifier(), new_log.verifier()])[0] == cp


# --- properties and fuzzing -----------------------------------------------------------------------

lines = st.text(st.characters(min_codepoint=0x20, blacklist_categories=("Cs",)), min_size=1, max_size=30)
checkpoints = st.builds(Checkpoint, lines, st.integers(0, MAX_TREE_SIZE), st.binary(min_size=32, max_size=32),
                        st.lists(lines, max_size=3).map(tuple))


@settings(max_examples=200, deadline=None)
@given(checkpoints)
def test_format_parse_round_trip(cp):
    text = cp.format()
    assert Checkpoint.parse(text) == cp
    assert Checkpoint.parse(text).format() == text


@settings(max_examples=40, deadline=None)
@given(checkpoints)
def test_sign_open_round_trip(cp):
    signer = generate_signer(ORIGIN, LOG_SEED)
    got, note = open_checkpoint(sign_checkpoint(cp, signer), cp.origin, signer.verifier())
    assert got == cp
    assert note.text == cp.format()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_parse_decimal_is_canonical(text):
    try:
        value = parse_decimal(text, "n")
    except FormatError:
        return
    assert str(value) == text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_parse_text(text):
    try:
        cp = Checkpoint.parse(text)
    except FormatError:
        return
    assert cp.format() == text


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_parse_bytes(data):
    try:
        cp = Checkpoint.parse(data)
    except FormatError:
        return
    assert cp.format().encode() == data


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(GOLDEN_NOTE) - 1), st.integers(1, 255))
def test_fuzz_signed_checkpoint_mutations(pos, delta):
    mutated = bytearray(GOLDEN_NOTE)
    mutated[pos] = (mutated[pos] + delta) % 256
    with pytest.raises(TlogError):
        open_checkpoint(bytes(mutated), ORIGIN, Verifier.from_vkey(LOG_VKEY))
