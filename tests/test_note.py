"""Tests for tlog.note (C2SP signed-note): the Go sumdb/note vector, key strings, strict parsing, fuzzing."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from tlog.errors import FormatError, SignatureError, TlogError
from tlog.note import (
    KEY_TYPE_ED25519,
    MAX_NOTE_SIZE,
    MAX_SIGNATURES,
    Note,
    Signature,
    Signer,
    UnverifiedNoteError,
    Verifier,
    add_signatures,
    compute_key_id,
    decode_base64_strict,
    ed25519_verify,
    generate_signer,
    is_valid_key_name,
    open_note,
    parse_note,
    parse_signature_line,
    sign_note,
    vkey_for,
)

# --- golang.org/x/mod/sumdb/note test vectors (note_test.go), reproduced as data -------------------

PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_B64 = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
ENOCH_B64 = "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ="
PETER_SIG = f"\u2014 PeterNeumann {PETER_B64}\n"
ENOCH_SIG = f"\u2014 EnochRoot {ENOCH_B64}\n"
GO_NOTE = (TEXT + "\n" + PETER_SIG).encode()
PETER_SEED = base64.b64decode(PETER_SKEY.split("+", 4)[4])[1:]  # the skey's base64 holds 0x01 || seed

ED25519_L = 2**252 + 27742317777372353535851937790883648493


def sig_of(b64: str, name: str) -> Signature:
    raw = base64.b64decode(b64)
    return Signature(name, int.from_bytes(raw[:4], "big"), raw[4:])


PETER = sig_of(PETER_B64, "PeterNeumann")
ENOCH = sig_of(ENOCH_B64, "EnochRoot")


@pytest.fixture(scope="module")
def peter() -> Verifier:
    return Verifier.from_vkey(PETER_VKEY)


@pytest.fixture(scope="module")
def enoch() -> Verifier:
    return Verifier.from_vkey(ENOCH_VKEY)


# --- known answers ---------------------------------------------------------------------------------


def test_go_vector_sign_is_byte_exact():
    signer = Signer.from_skey(PETER_SKEY)
    assert signer.name == "PeterNeumann"
    assert signer.key_id == 0xC74F20A3
    assert sign_note(TEXT, signer) == GO_NOTE
    assert sign_note(TEXT, [signer]) == GO_NOTE


def test_go_vector_keys_round_trip():
    signer = Signer.from_skey(PETER_SKEY)
    assert signer.to_skey() == PETER_SKEY
    assert signer.to_vkey() == PETER_VKEY
    assert vkey_for(signer) == PETER_VKEY
    assert signer.verifier().to_vkey() == PETER_VKEY
    again = generate_signer("PeterNeumann", PETER_SEED)
    assert again.to_skey() == PETER_SKEY
    assert Verifier.from_vkey(PETER_VKEY).to_vkey() == PETER_VKEY
    assert Verifier.from_vkey(ENOCH_VKEY).to_vkey() == ENOCH_VKEY


def test_key_id_is_sha256_of_name_newline_type_key():
    """signed-note: key ID = SHA-256(key name || 0x0A || 0x01 || public key)[:4] (big-endian)."""
    pub = base64.b64decode(PETER_VKEY.split("+", 2)[2])[1:]
    want = hashlib.sha256(b"PeterNeumann\n\x01" + pub).digest()[:4]
    assert compute_key_id("PeterNeumann", KEY_TYPE_ED25519, pub) == int.from_bytes(want, "big") == 0xC74F20A3


def test_open_one_verified_one_unverified(peter):
    n = open_note((TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode(), [peter])
    assert n == Note(TEXT, [PETER], [ENOCH])


def test_open_both_verified(peter, enoch):
    n = open_note((TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode(), [peter, enoch])
    assert n.verified == [PETER, ENOCH]
    assert n.unverified == []


def test_open_accepts_a_single_verifier(peter):
    assert open_note(GO_NOTE, peter).verified == [PETER]


def test_open_with_no_known_key_raises_with_the_note():
    with pytest.raises(UnverifiedNoteError) as info:
        open_note((TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode(), [])
    assert isinstance(info.value, SignatureError)
    assert str(info.value) == "note has no verifiable signatures"
    assert info.value.note == Note(TEXT, [], [PETER, ENOCH])


def test_open_duplicates_are_listed_once(peter):
    enoch_abcd = ENOCH_SIG[:60] + "ABCD" + ENOCH_SIG[60:]
    msg = TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + ENOCH_SIG + enoch_abcd
    n = open_note(msg.encode(), [peter])
    assert n.verified == [PETER]
    assert n.unverified == [ENOCH, parse_signature_line(enoch_abcd[:-1])]


def test_invalid_signature_from_known_key(peter):
    bad = TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(SignatureError, match="invalid signature for key PeterNeumann\\+c74f20a3"):
        open_note(bad.encode(), [peter])


def test_bad_signature_after_good_one_from_same_key_rejects(peter):
    """Stricter than Go (which skips repeats): every signature by a known key is verified."""
    flipped = bytearray(PETER.signature)
    flipped[10] ^= 1
    bad_line = Signature(PETER.name, PETER.key_id, bytes(flipped)).to_line()
    with pytest.raises(SignatureError, match="invalid signature"):
        open_note((TEXT + "\n" + PETER_SIG + bad_line).encode(), [peter])


def test_ambiguous_verifiers(peter, enoch):
    impostor = Verifier("EnochRoot", 0xAF0CFE78, lambda msg, sig: True)
    with pytest.raises(SignatureError, match="ambiguous key EnochRoot\\+af0cfe78"):
        open_note((TEXT + "\n" + ENOCH_SIG).encode(), [enoch, peter, impostor])
    # An ambiguity that no signature touches is harmless; the same key twice is not an ambiguity.
    assert open_note(GO_NOTE, [enoch, peter, impostor]).verified == [PETER]
    assert open_note(GO_NOTE, [peter, Verifier.from_vkey(PETER_VKEY)]).verified == [PETER]


def test_too_many_signatures(peter):
    assert open_note((TEXT + "\n" + PETER_SIG * MAX_SIGNATURES).encode(), [peter]).verified == [PETER]
    for verifiers in ([peter], []):
        with pytest.raises(FormatError, match="more than 100"):
            open_note((TEXT + "\n" + PETER_SIG * (MAX_SIGNATURES + 1)).encode(), verifiers)


GO_BAD_MESSAGES = {
    "text only": TEXT,
    "no signature lines": TEXT + "\n",
    "no final newline": TEXT + "\n" + PETER_SIG[:-1],
    "control byte": "\x01" + TEXT + "\n" + PETER_SIG,
    "invalid utf-8": "\udcff" + TEXT + "\n" + PETER_SIG,
    "name with space": TEXT + "\n" + "\u2014 Bad Name " + PETER_B64 + "\n",
    "unexpected line": TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
}


@pytest.mark.parametrize("name", sorted(GO_BAD_MESSAGES))
def test_go_bad_messages(name, peter):
    with pytest.raises(FormatError):
        open_note(GO_BAD_MESSAGES[name].encode("utf-8", "surrogateescape"), [peter])


# --- signature line strictness ---------------------------------------------------------------------

B64_BODY = PETER_B64
BAD_LINES = {
    "hyphen instead of em dash": f"- PeterNeumann {B64_BODY}",
    "en dash": f"\u2013 PeterNeumann {B64_BODY}",
    "double hyphen": f"-- PeterNeumann {B64_BODY}",
    "no space after dash": f"\u2014PeterNeumann {B64_BODY}",
    "two spaces after dash": f"\u2014  PeterNeumann {B64_BODY}",
    "two spaces after name": f"\u2014 PeterNeumann  {B64_BODY}",
    "trailing space": f"\u2014 PeterNeumann {B64_BODY} ",
    "tab separator": f"\u2014 PeterNeumann\t{B64_BODY}",
    "nbsp separator": f"\u2014 PeterNeumann\u00a0{B64_BODY}",
    "no signature": "\u2014 PeterNeumann ",
    "no name": f"\u2014 {B64_BODY}",
    "plus in name": f"\u2014 Peter+Neumann {B64_BODY}",
    "missing padding": f"\u2014 PeterNeumann {B64_BODY.rstrip('=')}",
    "extra padding": f"\u2014 PeterNeumann {B64_BODY}=",
    "url-safe alphabet": f"\u2014 PeterNeumann {B64_BODY.replace('/', '_')}",
    # 68 bytes -> 2 padding bits; 'M' (001100) -> 'N' (001101) sets one of them: same bytes, not canonical.
    "non-canonical padding bits": f"\u2014 PeterNeumann {B64_BODY[:-2]}N=",
    "only key id": f"\u2014 PeterNeumann {base64.b64encode(bytes.fromhex('c74f20a3')).decode()}",
    "carriage return": f"\u2014 PeterNeumann {B64_BODY}\r",
}


@pytest.mark.parametrize("name", sorted(BAD_LINES))
def test_malformed_signature_lines(name, peter):
    with pytest.raises(FormatError):
        open_note((TEXT + "\n" + BAD_LINES[name] + "\n").encode(), [peter])
    with pytest.raises(FormatError):
        parse_signature_line(BAD_LINES[name])


def test_non_canonical_padding_mutation_decodes_to_same_bytes():
    """The named mutation above really is a padding-bit change (so only the canonical check catches it)."""
    assert base64.b64decode(B64_BODY[:-2] + "N=") == base64.b64decode(B64_BODY)
    with pytest.raises(FormatError, match="non-canonical"):
        decode_base64_strict(B64_BODY[:-2] + "N=")


def _line_with(signature: bytes, name: str = "PeterNeumann", key_id: int = 0xC74F20A3) -> bytes:
    return (TEXT + "\n" + Signature(name, key_id, signature).to_line()).encode()


SIGNATURE_MUTATIONS = {
    "truncated": lambda s: s[:-1],
    "extended": lambda s: s + b"\x00",
    "first bit flipped": lambda s: bytes([s[0] ^ 1]) + s[1:],
    "last bit flipped": lambda s: s[:-1] + bytes([s[-1] ^ 0x80]),
    "non-canonical S (S + L)": lambda s: s[:32] + (int.from_bytes(s[32:], "little") + ED25519_L).to_bytes(32, "little"),
    "all zero": lambda s: bytes(64),
}


@pytest.mark.parametrize("name", sorted(SIGNATURE_MUTATIONS))
def test_signature_mutations_are_rejected(name, peter):
    mutated = SIGNATURE_MUTATIONS[name](PETER.signature)
    assert mutated != PETER.signature
    with pytest.raises(SignatureError, match="invalid signature"):
        open_note(_line_with(mutated), [peter])


def test_non_canonical_s_is_rejected_by_ed25519_verify(peter):
    key = Ed25519PublicKey.from_public_bytes(peter.public_key)
    msg = TEXT.encode()
    assert ed25519_verify(key, msg, PETER.signature)
    high = SIGNATURE_MUTATIONS["non-canonical S (S + L)"](PETER.signature)
    assert not ed25519_verify(key, msg, high)
    assert not ed25519_verify(key, msg, PETER.signature[:63])


def test_text_mutation_is_rejected(peter):
    with pytest.raises(SignatureError, match="invalid signature"):
        open_note(GO_NOTE.replace(b"problem,", b"problem;"), [peter])


def test_wrong_key_same_name_is_unknown(peter):
    other = generate_signer("PeterNeumann", b"\x07" * 32)
    assert other.key_id != peter.key_id
    with pytest.raises(UnverifiedNoteError):
        open_note(sign_note(TEXT, other), [peter])


def test_wrong_key_with_forged_key_id_is_invalid(peter):
    other = generate_signer("PeterNeumann", b"\x07" * 32)
    with pytest.raises(SignatureError, match="invalid signature"):
        open_note(_line_with(other.sign(TEXT.encode())), [peter])


def test_wrong_name_is_unknown(peter):
    with pytest.raises(UnverifiedNoteError) as info:
        open_note(GO_NOTE.replace(b"PeterNeumann", b"CarmenSandiego"), [peter])
    assert info.value.note.unverified[0].name == "CarmenSandiego"


# --- note framing ---------------------------------------------------------------------------------


BAD_NOTES = {
    "empty": b"",
    "crlf line endings": GO_NOTE.replace(b"\n", b"\r\n"),
    "carriage return in text": GO_NOTE.replace(b"problem,", b"problem,\r"),
    "nul byte": GO_NOTE.replace(b"If", b"I\x00"),
    "tab in text": GO_NOTE.replace(b"If you", b"If\tyou"),
    "invalid utf-8": GO_NOTE.replace(b"If", b"I\xc3"),
    "encoded surrogate": GO_NOTE.replace(b"If", b"I\xed\xa0\x80"),
    "overlong encoding": GO_NOTE.replace(b"If", b"I\xc0\xaf"),
    "missing blank line": GO_NOTE.replace(b".\n\n", b".\n"),
    "trailing blank line": GO_NOTE + b"\n",
    "garbage after signatures": GO_NOTE + b"garbage\n",
}


@pytest.mark.parametrize("name", sorted(BAD_NOTES))
def test_bad_note_framing(name, peter):
    with pytest.raises(FormatError):
        open_note(BAD_NOTES[name], [peter])


def test_note_size_cap(peter):
    big = ("a" * (MAX_NOTE_SIZE - 200) + "\n")
    signer = Signer.from_skey(PETER_SKEY)
    assert open_note(sign_note(big, signer), [peter]).text == big
    with pytest.raises(FormatError, match="more than"):
        sign_note("a" * MAX_NOTE_SIZE + "\n", signer)
    with pytest.raises(FormatError, match="more than"):
        open_note(b"a" * MAX_NOTE_SIZE + b"\n\n" + PETER_SIG.encode(), [peter])


def test_open_rejects_non_bytes(peter):
    with pytest.raises(FormatError):
        open_note(GO_NOTE.decode(), [peter])  # type: ignore[arg-type]


def test_empty_lines_in_text_round_trip(peter):
    signer = Signer.from_skey(PETER_SKEY)
    for text in ["\n", "a\n\nb\n", "a\n\n\n", "\n\n", "a\n\n\u2014 fake sig\n"]:
        assert open_note(sign_note(text, signer), [peter]).text == text


BAD_TEXTS = {
    "empty": "",
    "no final newline": "abc",
    "carriage return": "a\rb\n",
    "nul": "a\x00\n",
    "escape": "\x1b[31m\n",
    "lone surrogate": "a\ud800\n",
    "bytes": b"abc\n",
}


@pytest.mark.parametrize("name", sorted(BAD_TEXTS))
def test_sign_rejects_bad_text(name):
    with pytest.raises(FormatError):
        sign_note(BAD_TEXTS[name], Signer.from_skey(PETER_SKEY))  # type: ignore[arg-type]


def test_sign_needs_a_signer():
    with pytest.raises(FormatError, match="at least one signature"):
        sign_note(TEXT, [])


def test_add_signatures_appends_and_replaces(peter, enoch):
    signer = Signer.from_skey(PETER_SKEY)
    stale = Signature("PeterNeumann", 0xC74F20A3, b"\x01" * 64).to_line()
    note = (TEXT + "\n" + stale + ENOCH_SIG).encode()
    out = add_signatures(note, signer)
    assert out == (TEXT + "\n" + ENOCH_SIG + PETER_SIG).encode()
    assert open_note(out, [peter, enoch]).verified == [ENOCH, PETER]
    other = generate_signer("other.example", b"\x09" * 32)
    both = add_signatures(GO_NOTE, [other])
    assert both.startswith(GO_NOTE)
    assert open_note(both, [peter, other.verifier()]).verified[1].name == "other.example"


def test_parse_note_lists_every_signature_in_order():
    text, sigs = parse_note((TEXT + "\n" + ENOCH_SIG + PETER_SIG + ENOCH_SIG).encode())
    assert text == TEXT
    assert sigs == [ENOCH, PETER, ENOCH]
    assert [s.to_line() for s in sigs] == [ENOCH_SIG, PETER_SIG, ENOCH_SIG]


# --- key strings -----------------------------------------------------------------------------------


def test_every_vkey_mangling_is_rejected():
    """note_test.go TestNewVerifier: every proper substring and every single-byte increment fails."""
    for i in range(len(PETER_VKEY) + 1):
        for j in range(i + 1, len(PETER_VKEY) + 1):
            if (i, j) != (0, len(PETER_VKEY)):
                with pytest.raises(FormatError):
                    Verifier.from_vkey(PETER_VKEY[i:j])
    for i, c in enumerate(PETER_VKEY):
        with pytest.raises(FormatError):
            Verifier.from_vkey(PETER_VKEY[:i] + chr(ord(c) + 1) + PETER_VKEY[i + 1:])


def test_every_skey_mangling_is_rejected():
    for i in range(len(PETER_SKEY) + 1):
        for j in range(i + 1, len(PETER_SKEY) + 1):
            if (i, j) != (0, len(PETER_SKEY)):
                with pytest.raises(FormatError):
                    Signer.from_skey(PETER_SKEY[i:j])
    for i, c in enumerate(PETER_SKEY):
        with pytest.raises(FormatError):
            Signer.from_skey(PETER_SKEY[:i] + chr(ord(c) + 1) + PETER_SKEY[i + 1:])


def _vkey(name: str, raw: bytes) -> str:
    key_id = int.from_bytes(hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4], "big")
    return f"{name}+{key_id:08x}+{base64.b64encode(raw).decode()}"


PETER_PUB = base64.b64decode(PETER_VKEY.split("+", 2)[2])[1:]

BAD_VKEYS = {
    "wrong key id": "PeterNeumann+00000000+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "uppercase key id": "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "short key id": "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "signed key id": "PeterNeumann+-74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    # note_test.go: wrong length key, with adjusted key hash; unknown algorithm, with adjusted key hash.
    "go: wrong length": "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
    "go: unknown type": "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "type 0x02 with adjusted id": _vkey("PeterNeumann", b"\x02" + PETER_PUB),
    "short key with adjusted id": _vkey("PeterNeumann", b"\x01" + PETER_PUB[:31]),
    "long key with adjusted id": _vkey("PeterNeumann", b"\x01" + PETER_PUB + b"\x00"),
    "type byte only": _vkey("PeterNeumann", b"\x01"),
    "bad base64": "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T!",
    "base64 with space": "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhK qiBfsVkmqq/LDE4izWy10TW",
    "empty name": "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    "name with space": _vkey("Peter Neumann", b"\x01" + PETER_PUB),
    "trailing newline": PETER_VKEY + "\n",
    "two parts": "PeterNeumann+c74f20a3",
    "skey as vkey": PETER_SKEY,
    "huge": "a" * 5000 + "+00000000+AA==",
}


@pytest.mark.parametrize("name", sorted(BAD_VKEYS))
def test_bad_vkeys(name):
    with pytest.raises(FormatError):
        Verifier.from_vkey(BAD_VKEYS[name])


def test_vkey_base64_may_contain_plus():
    """Split on the first two '+' only: the key material's base64 may itself contain '+'."""
    for i in range(64):
        signer = generate_signer("example.com/log", bytes([i]) * 32)
        vkey = signer.to_vkey()
        if "+" in vkey.split("+", 2)[2]:
            assert Verifier.from_vkey(vkey).key_id == signer.key_id
            return
    pytest.fail("no seed produced a '+' in the key material")  # pragma: no cover


BAD_SKEYS = {
    "no prefix": PETER_SKEY[len("PRIVATE+KEY+"):],
    "lowercase prefix": PETER_SKEY.replace("PRIVATE+KEY", "private+key"),
    "wrong key id": PETER_SKEY.replace("c74f20a3", "c74f20a4"),
    "type 0x04": "PRIVATE+KEY+PeterNeumann+c74f20a3+"
                 + base64.b64encode(b"\x04" + PETER_SEED).decode(),
    "short seed": "PRIVATE+KEY+PeterNeumann+c74f20a3+"
                  + base64.b64encode(b"\x01" + PETER_SEED[:-1]).decode(),
    "vkey as skey": "PRIVATE+KEY+" + PETER_VKEY,
}


@pytest.mark.parametrize("name", sorted(BAD_SKEYS))
def test_bad_skeys(name):
    with pytest.raises(FormatError):
        Signer.from_skey(BAD_SKEYS[name])


BAD_NAMES = ["", "a b", "a+b", "a\tb", "a\nb", "a\u00a0b", "a\u2003b", "a\u3000b", "a\u0085b", "a\u2028b",
             "a\x00b", "a\ud800b", " ", "+"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_key_names(name):
    assert not is_valid_key_name(name)
    with pytest.raises(FormatError):
        generate_signer(name, bytes(32))


def test_good_key_names():
    for name in ["a", "example.com/log42", "h\u00e9llo", "\u2014", "oid/1.3.6.1", "x" * 300, "a\u200bb"]:
        assert is_valid_key_name(name)
        assert Verifier.from_vkey(generate_signer(name, bytes(32)).to_vkey()).name == name


def test_bad_seeds():
    for seed in [b"", bytes(31), bytes(33), "x" * 32]:
        with pytest.raises(FormatError):
            generate_signer("a", seed)  # type: ignore[arg-type]


def test_random_signer_round_trips():
    a, b = generate_signer("a.example"), generate_signer("a.example")
    assert a.public_key != b.public_key
    assert Signer.from_skey(a.to_skey()).public_key == a.public_key


def test_repr_hides_the_private_key():
    signer = Signer.from_skey(PETER_SKEY)
    assert "AYEKFALV" not in repr(signer)
    assert repr(signer) == "Signer('PeterNeumann', key_id=c74f20a3)"


def test_verifier_without_key_material_cannot_be_encoded():
    with pytest.raises(FormatError):
        Verifier("a", 1, lambda m, s: True).to_vkey()
    with pytest.raises(FormatError):
        Verifier("a", 1 << 32, lambda m, s: True)


# --- properties and fuzzing -----------------------------------------------------------------------

names = st.text(min_size=1, max_size=20).filter(is_valid_key_name)
texts = st.lists(
    st.text(st.characters(min_codepoint=0x20, blacklist_categories=("Cs",)), max_size=30), max_size=5
).map(lambda lines: "".join(line + "\n" for line in lines) or "\n")


@settings(max_examples=60, deadline=None)
@given(name=names, seed=st.binary(min_size=32, max_size=32))
def test_key_strings_round_trip(name, seed):
    signer = generate_signer(name, seed)
    again = Signer.from_skey(signer.to_skey())
    assert (again.name, again.key_id, again.public_key) == (signer.name, signer.key_id, signer.public_key)
    verifier = Verifier.from_vkey(signer.to_vkey())
    assert verifier.to_vkey() == signer.to_vkey()
    assert verifier.key_id == signer.key_id


@settings(max_examples=60, deadline=None)
@given(text=texts, seeds=st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=3, unique=True))
def test_sign_open_round_trip(text, seeds):
    signers = [generate_signer(f"k{i}.example", s) for i, s in enumerate(seeds)]
    note = sign_note(text, signers)
    opened = open_note(note, [s.verifier() for s in signers])
    assert opened.text == text
    assert [s.name for s in opened.verified] == [s.name for s in signers]
    assert parse_note(note)[0] == text


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_open_note_bytes(data):
    try:
        open_note(data, [Verifier.from_vkey(PETER_VKEY)])
    except TlogError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_open_note_text(text):
    try:
        open_note((text + "\n\n" + PETER_SIG).encode("utf-8", "surrogatepass"), [Verifier.from_vkey(PETER_VKEY)])
    except TlogError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(GO_NOTE) - 1), st.integers(1, 255))
def test_fuzz_note_byte_mutations(pos, delta):
    mutated = bytearray(GO_NOTE)
    mutated[pos] = (mutated[pos] + delta) % 256
    with pytest.raises(TlogError):
        open_note(bytes(mutated), [Verifier.from_vkey(PETER_VKEY)])


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_fuzz_key_strings(text):
    for parse in (Verifier.from_vkey, Signer.from_skey, parse_signature_line):
        try:
            parse(text)
        except FormatError:
            pass


@settings(max_examples=200, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=600))
def test_signatures_are_the_rfc8032_ones_cryptography_makes(seed, message):
    """Signer signs with libsodium (faster); Ed25519 is deterministic, so the bytes must be exactly
    those of `cryptography`'s key from the same seed, and they verify under the public key."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tlog.cosignature import CosignatureSigner

    reference = Ed25519PrivateKey.from_private_bytes(seed)
    for key in (Signer.generate("example.com/log", seed), CosignatureSigner.generate("example.com/w", seed)):
        assert key._ed25519_sign(message) == reference.sign(message)
    sig = Signer.generate("example.com/log", seed).sign(message)
    reference.public_key().verify(sig, message)  # raises if not
