"""tlog.entry: golden encodings, round trips, strict decoding, signatures, identity (spec/entry.md)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tlog.entry import (DEFAULT_MAX_KEY_LIFETIME_MS, DEFAULT_MAX_SKEW_MS, Entry, Erasure, EventEntry, Genesis,
                        KeyAction, Leaf, RegisterKey, RevokeKey, RotateKey, decode_body, payload_commitment,
                        register_event, revoke_event, rotate_event, sign_entry, verify_entry_signature)
from tlog.errors import FormatError, SignatureError, TlogError
from tlog.hashing import leaf_hash
from tlog.keys import KeyType, PrivateKey, decode_der_signature, encode_der_signature

N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
ORIGIN = "example.com/log"
ORIGIN_HEX = "0f" + ORIGIN.encode().hex()
OP = PrivateKey.from_ed25519_seed(bytes(32))
W = PrivateKey.from_ed25519_seed(b"\x02" * 32)
P256 = PrivateKey.generate(KeyType.P256)
OP_KEY_HEX = "01" "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"
W_KEY_HEX = "01" "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394"
W_ID_HEX = "484887319a3cc3476d82e4e03b316c9d88bad0824af10b80fcc0f5b9fa486eda"
T0 = 1_700_000_000_000  # 0x0000018bcfe56800
T0_HEX = "0000018bcfe56800"
COMMIT = payload_commitment(bytes(16), b"hello")
COMMIT_HEX = "dfdbf5563fd7570ed0a10f7be6dbd597a6e59be9931e3cb992d54aead20294dc"


def h(*parts: str) -> bytes:
    return bytes.fromhex("".join(parts))


# ------------------------------------------------------------------ golden encodings, one per kind and action

GOLDEN: dict[str, tuple[Entry, bytes]] = {
    "event": (EventEntry(ORIGIN, W.public_key.key_id, T0, COMMIT),
              h("01", "01", ORIGIN_HEX, W_ID_HEX, T0_HEX, COMMIT_HEX)),
    "genesis": (Genesis(ORIGIN, OP.public_key, 1000),
                h("01", "02", ORIGIN_HEX, OP_KEY_HEX, "00000000000003e8", "0000000757b12c00", "00000000000493e0")),
    "register": (register_event(ORIGIN, T0, W.public_key, "writer-1", T0, T0 + 86_400_000, 10),
                 h("01", "03", "01", ORIGIN_HEX, T0_HEX, W_KEY_HEX, "08", b"writer-1".hex(), T0_HEX,
                   "0000018bd50bc400", "0000000a")),
    "rotate": (rotate_event(ORIGIN, T0, OP.public_key.key_id, W.public_key, "w", 1, 2, 3),
               h("01", "03", "02", ORIGIN_HEX, T0_HEX, OP.public_key.key_id.hex(), W_KEY_HEX, "01", "77",
                 "0000000000000001", "0000000000000002", "00000000", "0000000000000003")),
    "revoke": (revoke_event(ORIGIN, T0, W.public_key.key_id),
               h("01", "03", "03", ORIGIN_HEX, T0_HEX, W_ID_HEX, "00")),
    "revoke-compromised": (revoke_event(ORIGIN, T0, W.public_key.key_id, 5),
                           h("01", "03", "03", ORIGIN_HEX, T0_HEX, W_ID_HEX, "01", "0000000000000005")),
    "erasure": (Erasure(ORIGIN, 7, "gdpr", T0),
                h("01", "04", ORIGIN_HEX, "0000000000000007", "0004", b"gdpr".hex(), T0_HEX)),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_encoding(name: str) -> None:
    entry, expected = GOLDEN[name]
    assert entry.encode() == expected
    assert decode_body(expected) == entry
    assert entry.signing_message() == b"tlog-entry-signature-v1\x00" + expected


def test_golden_constants() -> None:
    assert W.public_key.to_bytes().hex() == W_KEY_HEX and W.public_key.key_id.hex() == W_ID_HEX
    assert T0.to_bytes(8, "big").hex() == T0_HEX
    assert (T0 + 86_400_000).to_bytes(8, "big").hex() == "0000018bd50bc400"
    assert DEFAULT_MAX_KEY_LIFETIME_MS == 31_536_000_000 and DEFAULT_MAX_SKEW_MS == 300_000
    # Independent formula: printf 'tlog-payload-v1\0\x10' ; head -c16 /dev/zero ; printf hello | sha256sum
    assert COMMIT.hex() == COMMIT_HEX
    assert COMMIT == hashlib.sha256(b"tlog-payload-v1\x00\x10" + bytes(16) + b"hello").digest()


def test_golden_signed_genesis_leaf() -> None:
    """Ed25519 is deterministic, so the signature, the leaf, its hash and identity are byte-exact."""
    genesis, body = GOLDEN["genesis"]
    sig = sign_entry(genesis, OP)
    assert sig.hex() == ("c2e85f5ece0e61b43e8b8e57546ee49f46cacedcc6c8b5ab14dde42bb32d5419"
                         "f5b82ea39f9a7b622416bbc32f31d6bbb82f5ddb490693b5d2f75e9cd52b950c")
    leaf = Leaf(body, sig, 1001)
    enc = leaf.encode()
    assert enc == h("01", "00000000000003e9", "004b") + body + h("0040") + sig
    assert Leaf.decode(enc) == leaf and leaf.entry == genesis
    assert leaf.hash() == leaf_hash(enc)
    assert leaf.hash().hex() == "7d60e1377d2294d5b921247bce0f3d68000f43e5571f40b3736a08d805903f16"
    assert leaf.identity() == hashlib.sha256(b"tlog-entry-identity-v1\x00" + body).digest()
    assert leaf.identity().hex() == "f604dce22d64a2fd5b14addc8421b300e888fb59ac7c147c5f1526c26c821526"
    assert leaf.signing_message() == genesis.signing_message()


def test_key_event_classes() -> None:
    assert isinstance(GOLDEN["register"][0], RegisterKey) and GOLDEN["register"][0].action is KeyAction.REGISTER
    assert isinstance(GOLDEN["rotate"][0], RotateKey) and GOLDEN["rotate"][0].action is KeyAction.ROTATE
    assert isinstance(GOLDEN["revoke"][0], RevokeKey) and GOLDEN["revoke"][0].action.text == "revoke"


# ------------------------------------------------------------------ strict decoding: named mutations

@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_decode_rejects_truncation_trailing_version_kind(name: str) -> None:
    body = GOLDEN[name][1]
    for i in range(len(body)):
        with pytest.raises(FormatError):
            decode_body(body[:i])
    for bad in (body + b"\x00", body + body, b"\x00" + body[1:], b"\x02" + body[1:], b"\xff" + body[1:],
                body[:1] + b"\x00" + body[2:], body[:1] + b"\x05" + body[2:], body[:1] + b"\xff" + body[2:]):
        with pytest.raises(FormatError):
            decode_body(bad)


def _replace(body: bytes, old: bytes, new: bytes) -> bytes:
    assert body.count(old) == 1
    return body.replace(old, new)


EV, GEN, REG, ROT, REV, REVC, ERA = (GOLDEN[k][1] for k in
                                      ("event", "genesis", "register", "rotate", "revoke", "revoke-compromised",
                                       "erasure"))
NAME = bytes([8]) + b"writer-1"

MUTATIONS: dict[str, bytes] = {
    "origin-invalid-utf8": _replace(EV, ORIGIN.encode(), b"\xff" * 15),
    "origin-overlong-utf8": _replace(EV, ORIGIN.encode(), b"example.com\xc0\xaflo"),
    "origin-surrogate-utf8": _replace(EV, ORIGIN.encode(), b"example.co\xed\xa0\x80log"),
    "origin-newline": _replace(EV, ORIGIN.encode(), b"example.com\nlog"),
    "origin-nul": _replace(EV, ORIGIN.encode(), b"example.com\x00log"),
    "origin-empty": _replace(EV, bytes.fromhex(ORIGIN_HEX), b"\x00"),
    "origin-length-too-long": _replace(EV, bytes.fromhex(ORIGIN_HEX), b"\x10" + ORIGIN.encode()),
    "name-empty": _replace(REG, NAME, b"\x00"),
    "name-over-64": _replace(REG, NAME, b"\x41" + b"a" * 65),
    "name-invalid-utf8": _replace(REG, NAME, b"\x08writer-\xff"),
    "name-tab": _replace(REG, NAME, b"\x08writer\t1"),
    "reason-over-1024": _replace(ERA, b"\x00\x04gdpr", b"\x04\x01" + b"r" * 1025),
    "reason-invalid-utf8": _replace(ERA, b"\x00\x04gdpr", b"\x00\x04gd\xe2\x82"),
    "reason-control": _replace(ERA, b"\x00\x04gdpr", b"\x00\x04gd\x07r"),
    "unknown-action-0": REG[:2] + b"\x00" + REG[3:],
    "unknown-action-4": REG[:2] + b"\x04" + REG[3:],
    "presence-flag-2": REVC[:-9] + b"\x02" + REVC[-8:],
    "presence-flag-1-missing-value": REV[:-1] + b"\x01",
    "presence-flag-0-with-value": REVC[:-9] + b"\x00" + REVC[-8:],
    "genesis-unknown-key-type": _replace(GEN, bytes.fromhex(OP_KEY_HEX), b"\x03" + bytes.fromhex(OP_KEY_HEX)[1:]),
    "genesis-key-type-p256-short": _replace(GEN, bytes.fromhex(OP_KEY_HEX), b"\x02" + bytes.fromhex(OP_KEY_HEX)[1:]),
    "genesis-small-order-key": _replace(GEN, bytes.fromhex(OP_KEY_HEX), b"\x01\x01" + bytes(31)),
    "genesis-zero-lifetime": _replace(GEN, bytes.fromhex("0000000757b12c00"), bytes(8)),
    "register-wrong-key-type-for-length": _replace(REG, bytes.fromhex(W_KEY_HEX),
                                                   b"\x02" + bytes.fromhex(W_KEY_HEX)[1:]),
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
def test_decode_rejects_mutation(name: str) -> None:
    with pytest.raises(FormatError):
        decode_body(MUTATIONS[name])


# ------------------------------------------------------------------ constructors validate

BAD_CONSTRUCTIONS: dict[str, Callable[[], object]] = {
    "key-id-31": lambda: EventEntry(ORIGIN, bytes(31), T0, COMMIT),
    "commitment-str": lambda: EventEntry(ORIGIN, bytes(32), T0, "x" * 32),
    "timestamp-negative": lambda: EventEntry(ORIGIN, bytes(32), -1, COMMIT),
    "timestamp-2**64": lambda: EventEntry(ORIGIN, bytes(32), 2**64, COMMIT),
    "timestamp-bool": lambda: EventEntry(ORIGIN, bytes(32), True, COMMIT),
    "timestamp-float": lambda: EventEntry(ORIGIN, bytes(32), 1.0, COMMIT),
    "origin-empty": lambda: EventEntry("", bytes(32), T0, COMMIT),
    "origin-256-bytes": lambda: EventEntry("é" * 128, bytes(32), T0, COMMIT),
    "origin-lone-surrogate": lambda: EventEntry("a\ud800", bytes(32), T0, COMMIT),
    "origin-bytes": lambda: EventEntry(b"o", bytes(32), T0, COMMIT),
    "genesis-key-not-publickey": lambda: Genesis(ORIGIN, OP.public_key.raw, 0),
    "genesis-zero-lifetime": lambda: Genesis(ORIGIN, OP.public_key, 0, 0),
    "register-rate-2**32": lambda: register_event(ORIGIN, 0, W.public_key, "w", 0, 1, 2**32),
    "register-name-65": lambda: register_event(ORIGIN, 0, W.public_key, "n" * 65, 0, 1),
    "register-name-newline": lambda: register_event(ORIGIN, 0, W.public_key, "a\nb", 0, 1),
    "rotate-old-id-short": lambda: rotate_event(ORIGIN, 0, b"x", W.public_key, "w", 0, 1, 1),
    "rotate-retire-negative": lambda: rotate_event(ORIGIN, 0, bytes(32), W.public_key, "w", 0, 1, -1),
    "revoke-compromised-negative": lambda: revoke_event(ORIGIN, 0, bytes(32), -5),
    "erasure-reason-1025": lambda: Erasure(ORIGIN, 1, "r" * 1025, 0),
    "erasure-reason-nul": lambda: Erasure(ORIGIN, 1, "a\x00", 0),
    "erasure-index-negative": lambda: Erasure(ORIGIN, -1, "", 0),
    "leaf-empty-signature": lambda: Leaf(EV, b"", 0),
    "leaf-signature-256": lambda: Leaf(EV, b"s" * 256, 0),
    "leaf-bad-body": lambda: Leaf(EV[:-1], b"s", 0),
    "leaf-integrated-negative": lambda: Leaf(EV, b"s", -1),
    "leaf-body-str": lambda: Leaf("body", b"s", 0),
}


@pytest.mark.parametrize("name", sorted(BAD_CONSTRUCTIONS))
def test_constructors_reject(name: str) -> None:
    with pytest.raises(FormatError):
        BAD_CONSTRUCTIONS[name]()


def test_text_limits_are_inclusive() -> None:
    assert decode_body(EventEntry("é" * 127 + "a", bytes(32), 0, COMMIT).encode()).origin == "é" * 127 + "a"
    register_event(ORIGIN, 0, W.public_key, "n" * 64, 0, 1)
    e = Erasure(ORIGIN, 2**64 - 1, "line one\nline two " + "r" * (1024 - 18), 2**64 - 1)
    assert decode_body(e.encode()) == e


# ------------------------------------------------------------------ leaf decoding

def _golden_leaf() -> Leaf:
    return Leaf(GEN, sign_entry(GOLDEN["genesis"][0], OP), 1001)


def test_leaf_decode_rejects() -> None:
    enc = _golden_leaf().encode()
    for i in range(len(enc)):
        with pytest.raises(FormatError):
            Leaf.decode(enc[:i])
    body_len = len(GEN)
    bad = {
        "trailing": enc + b"\x00",
        "version-0": b"\x00" + enc[1:],
        "version-2": b"\x02" + enc[1:],
        "body-length+1": enc[:9] + (body_len + 1).to_bytes(2, "big") + enc[11:],
        "body-length-1": enc[:9] + (body_len - 1).to_bytes(2, "big") + enc[11:],
        "sig-length-0": enc[:11 + body_len] + b"\x00\x00",
        "sig-length+1": enc[:11 + body_len] + b"\x00\x41" + enc[13 + body_len:],
        "too-large": b"\x01" + bytes(65535),
        "body-invalid": enc[:11] + b"\x01\x09" + enc[13:],
        "not-bytes": bytearray(enc),
    }
    for name, data in bad.items():
        with pytest.raises(FormatError):
            Leaf.decode(data)  # type: ignore[arg-type]
        assert name


# ------------------------------------------------------------------ signatures, identity, commitments

@pytest.mark.parametrize("key", [W, P256], ids=["ed25519", "p256"])
def test_sign_and_verify_entry(key: PrivateKey) -> None:
    entry = EventEntry(ORIGIN, key.public_key.key_id, T0, COMMIT)
    sig = sign_entry(entry, key)
    verify_entry_signature(entry, sig, key.public_key)
    other = EventEntry(ORIGIN, key.public_key.key_id, T0 + 1, COMMIT)
    with pytest.raises(SignatureError):
        verify_entry_signature(other, sig, key.public_key)
    with pytest.raises(SignatureError):
        verify_entry_signature(entry, sig, OP.public_key)
    with pytest.raises(SignatureError):  # domain separation: a signature over the bare body is not valid
        verify_entry_signature(entry, key.sign(entry.encode()), key.public_key)


def test_malleated_p256_twin_has_same_identity() -> None:
    entry = EventEntry(ORIGIN, P256.public_key.key_id, T0, COMMIT)
    sig = sign_entry(entry, P256)
    r, s = decode_der_signature(sig)
    twin = encode_der_signature(r, N - s)
    verify_entry_signature(entry, twin, P256.public_key)
    a, b = Leaf(entry.encode(), sig, T0), Leaf(entry.encode(), twin, T0)
    assert a.identity() == b.identity()
    assert a.hash() != b.hash()
    assert Leaf(entry.encode(), sig, T0 + 1).identity() == a.identity()


def test_payload_commitment_rules() -> None:
    for bad in (bytes(15), bytes(256), "s" * 16):
        with pytest.raises(FormatError):
            payload_commitment(bad, b"p")  # type: ignore[arg-type]
    with pytest.raises(FormatError):
        payload_commitment(bytes(16), "payload")  # type: ignore[arg-type]
    assert len(payload_commitment(bytes(255), b"")) == 32
    # The length prefix makes the salt/payload split unambiguous.
    assert payload_commitment(bytes(16) + b"h", b"ello") != payload_commitment(bytes(16), b"hello")


# ------------------------------------------------------------------ round trips and fuzzing

_printable = st.text(st.characters(codec="utf-8"), min_size=1, max_size=30).filter(str.isprintable)
_u64 = st.integers(0, 2**64 - 1)
_id = st.binary(min_size=32, max_size=32)
_pub = st.sampled_from([OP.public_key, W.public_key, P256.public_key])
_reason = st.text(st.characters(codec="utf-8"), max_size=40).filter(
    lambda s: all(c == "\n" or c.isprintable() for c in s))

ENTRIES = st.one_of(
    st.builds(EventEntry, _printable, _id, _u64, _id),
    st.builds(Genesis, _printable, _pub, _u64, st.integers(1, 2**64 - 1), _u64),
    st.builds(register_event, _printable, _u64, _pub, _printable, _u64, _u64, st.integers(0, 2**32 - 1)),
    st.builds(rotate_event, _printable, _u64, _id, _pub, _printable, _u64, _u64, _u64, st.integers(0, 2**32 - 1)),
    st.builds(revoke_event, _printable, _u64, _id, st.none() | _u64),
    st.builds(Erasure, _printable, _u64, _reason, _u64),
)


@settings(max_examples=300)
@given(ENTRIES, st.binary(min_size=1, max_size=255), _u64)
def test_round_trip(entry: Entry, sig: bytes, t: int) -> None:
    body = entry.encode()
    assert decode_body(body) == entry
    leaf = Leaf(body, sig, t)
    enc = leaf.encode()
    assert Leaf.decode(enc) == leaf and Leaf.decode(enc).encode() == enc
    assert leaf.entry == entry


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_fuzz_decode_body(data: bytes) -> None:
    try:
        entry = decode_body(data)
    except TlogError:
        return
    assert entry.encode() == data


@settings(max_examples=500)
@given(st.integers(0, 255), st.binary(max_size=255), st.binary(min_size=72, max_size=72), st.binary(max_size=2))
def test_event_fast_path_decodes_as_the_general_reader(n: int, origin: bytes, tail: bytes, extra: bytes) -> None:
    """Event-shaped bodies (any origin bytes, any declared length): the one-struct path of
    ``_decode_body`` gives the same entry, or the same kind of error, as reading field by field."""
    from tlog.entry import _decode_body, _read_body

    for data in (bytes([1, 1, len(origin)]) + origin + tail + extra, bytes([1, 1, n]) + origin + tail):
        outcome = []
        for decode in (_decode_body, _read_body):
            try:
                outcome.append(decode(data))
            except FormatError:
                outcome.append(FormatError)
        assert outcome[0] == outcome[1]


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_fuzz_leaf_decode(data: bytes) -> None:
    try:
        leaf = Leaf.decode(data)
    except TlogError:
        return
    assert leaf.encode() == data


@settings(max_examples=400)
@given(st.sampled_from(sorted(GOLDEN)), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4),
       st.integers(0, 3))
def test_fuzz_mutated_golden_bodies(name: str, edits: list[tuple[int, int]], cut: int) -> None:
    """Byte edits and tail cuts of valid bodies: a TlogError or a value that re-encodes to the same bytes."""
    data = bytearray(GOLDEN[name][1])
    for pos, value in edits:
        data[pos % len(data)] = value
    mutated = bytes(data[:len(data) - cut])
    try:
        entry = decode_body(mutated)
    except TlogError:
        return
    assert entry.encode() == mutated
