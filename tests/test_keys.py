"""tlog.keys: key encodings, key ids, strict Ed25519 and strict-DER P-256 signatures, PEM private keys."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_sign_open
from nacl.exceptions import CryptoError

from tlog.errors import FormatError, SignatureError, TlogError
from tlog.keys import (KeyType, PrivateKey, PublicKey, decode_der_signature, encode_der_signature)

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P256_P = 2**256 - 2**224 + 2**192 + 2**96 - 1

ZERO_SEED_PUB_TEXT = "ed25519:O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik="
ZERO = PrivateKey.from_ed25519_seed(bytes(32))
P256_KEY = PrivateKey.generate(KeyType.P256)

# RFC 6979 §A.2.5: P-256, SHA-256, message "sample".
RFC6979_PUB = bytes.fromhex(
    "04" "60FED4BA255A9D31C961EB74C6356D68C049B8923B61FA6CE669622E60F29FB6"
    "7903FE1008B8BC99A41AE9E95628BC64F2F1B20C2D7E9F5177A3C294D4462299")
RFC6979_R = 0xEFD48B2AACB6A8FD1140DD9CD45E81D69D2C877B56AAF991C34D0EA84EAF3716
RFC6979_S = 0xF7CB1C942D657C41D436C7A1B6E29F65F3E900DBB9AFF4064DC4AB2F843ACDA8


def ed_enc(y: int, sign: int = 0) -> bytes:
    """Encode a y coordinate (any value < 2**255) with the given x sign bit, as RFC 8032 §5.1.2 does."""
    return (y | (sign << 255)).to_bytes(32, "little")


# ------------------------------------------------------------------ known answers

def test_ed25519_rfc8032_test1() -> None:
    """RFC 8032 §7.1 TEST 1 (empty message) verifies; any flipped bit does not."""
    pub = PublicKey(KeyType.ED25519, bytes.fromhex(
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"))
    sig = bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
        "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b")
    pub.verify(b"", sig)
    key = PrivateKey.from_ed25519_seed(bytes.fromhex(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
    assert key.public_key == pub
    assert key.sign(b"") == sig
    with pytest.raises(SignatureError):
        pub.verify(b"\x00", sig)


def test_ed25519_zero_seed_golden() -> None:
    """Ed25519 is deterministic: the zero-seed key, its id and a signature are byte-exact."""
    pub = ZERO.public_key
    assert pub.to_text() == ZERO_SEED_PUB_TEXT
    assert pub.to_bytes().hex() == "01" "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29"
    expected_id = hashlib.sha256(b"tlog-key-id-v1\x00" + b"\x01" + pub.raw).digest()
    assert pub.key_id == expected_id
    assert pub.key_id_hex == expected_id.hex()
    sig = ZERO.sign(b"tlog")
    assert sig == ZERO.sign(b"tlog") and len(sig) == 64
    pub.verify(b"tlog", sig)


def test_p256_rfc6979_vector_and_malleated_twin() -> None:
    """RFC 6979 §A.2.5 verifies, and so does its malleated twin (r, n - s); s itself is high."""
    pub = PublicKey(KeyType.P256, RFC6979_PUB)
    pub.verify(b"sample", encode_der_signature(RFC6979_R, RFC6979_S))
    pub.verify(b"sample", encode_der_signature(RFC6979_R, N - RFC6979_S))
    with pytest.raises(SignatureError):
        pub.verify(b"samplf", encode_der_signature(RFC6979_R, RFC6979_S))
    expected_id = hashlib.sha256(b"tlog-key-id-v1\x00" + b"\x02" + RFC6979_PUB).digest()
    assert pub.key_id == expected_id


def test_key_ids_are_domain_separated_by_type() -> None:
    assert len(ZERO.public_key.key_id) == 32
    assert ZERO.public_key.key_id != P256_KEY.public_key.key_id
    assert ZERO.public_key.key_id != hashlib.sha256(ZERO.public_key.raw).digest()


# ------------------------------------------------------------------ public key encodings

@pytest.mark.parametrize("key", [ZERO, P256_KEY], ids=["ed25519", "p256"])
def test_public_key_round_trips(key: PrivateKey) -> None:
    pub = key.public_key
    assert PublicKey.from_text(pub.to_text()) == pub
    assert PublicKey.from_bytes(pub.to_bytes()) == pub
    assert pub.to_text().startswith(pub.key_type.text + ":")
    assert len(pub.to_bytes()) == 1 + pub.key_type.raw_size


BAD_TEXTS = {
    "no-colon": "ed25519O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=",
    "upper-prefix": ZERO_SEED_PUB_TEXT.replace("ed25519", "ED25519"),
    "unknown-prefix": ZERO_SEED_PUB_TEXT.replace("ed25519", "ed448"),
    "p256-prefix-on-ed-key": ZERO_SEED_PUB_TEXT.replace("ed25519", "p256"),
    "unpadded": ZERO_SEED_PUB_TEXT.rstrip("="),
    "non-canonical-padding-bits": ZERO_SEED_PUB_TEXT[:-2] + "j=",
    "url-safe-alphabet": "ed25519:" + base64.urlsafe_b64encode(b"\xfb" * 32).decode(),
    "space": ZERO_SEED_PUB_TEXT.replace(":", ": "),
    "trailing-newline": ZERO_SEED_PUB_TEXT + "\n",
    "too-long": "ed25519:" + "A" * 200,
    "short-key": "ed25519:" + base64.b64encode(bytes(31)).decode(),
    "empty": "",
    "non-ascii": "ed25519:" + "é" * 44,
}


@pytest.mark.parametrize("name", sorted(BAD_TEXTS))
def test_from_text_rejects(name: str) -> None:
    with pytest.raises(FormatError):
        PublicKey.from_text(BAD_TEXTS[name])


def _p256_point(x: int, y: int) -> bytes:
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


G_X = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
G_Y = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5
P256_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B


def _small_x_point() -> tuple[int, int]:
    """A valid P-256 point with a small x, so that x + p still fits in 32 bytes (p = 3 mod 4: sqrt by power)."""
    for x in range(1, 100):
        rhs = (x**3 - 3 * x + P256_B) % P256_P
        y = pow(rhs, (P256_P + 1) // 4, P256_P)
        if y * y % P256_P == rhs:
            return x, y
    raise AssertionError("no small-x point")


SMALL_X, SMALL_Y = _small_x_point()

BAD_KEYS = {
    "ed-31-bytes": (KeyType.ED25519, bytes(31)),
    "ed-33-bytes": (KeyType.ED25519, bytes(33)),
    "ed-identity": (KeyType.ED25519, ed_enc(1)),
    "ed-identity-sign-bit": (KeyType.ED25519, ed_enc(1, 1)),
    "ed-order-2": (KeyType.ED25519, ed_enc(P - 1)),
    "ed-order-4": (KeyType.ED25519, ed_enc(0)),
    "ed-order-8": (KeyType.ED25519, bytes.fromhex(
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05")),
    "ed-order-8-b": (KeyType.ED25519, bytes.fromhex(
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")),
    "ed-non-canonical-y=p+3": (KeyType.ED25519, ed_enc(P + 3)),
    "ed-non-canonical-y=p+1": (KeyType.ED25519, ed_enc(P + 1)),
    "ed-not-on-curve-y=2": (KeyType.ED25519, ed_enc(2)),
    "p256-64-bytes": (KeyType.P256, bytes(64)),
    "p256-compressed": (KeyType.P256, b"\x02" + G_X.to_bytes(32, "big")),
    "p256-prefix-03": (KeyType.P256, b"\x03" + _p256_point(G_X, G_Y)[1:]),
    "p256-prefix-06-hybrid": (KeyType.P256, b"\x06" + _p256_point(G_X, G_Y)[1:]),
    "p256-off-curve": (KeyType.P256, _p256_point(G_X, G_Y + 1)),
    "p256-x-plus-p": (KeyType.P256, _p256_point(SMALL_X + P256_P, SMALL_Y)),
    "p256-zero-point": (KeyType.P256, _p256_point(0, 0)),
}


@pytest.mark.parametrize("name", sorted(BAD_KEYS))
def test_public_key_rejects_invalid_points(name: str) -> None:
    key_type, raw = BAD_KEYS[name]
    with pytest.raises(FormatError):
        PublicKey(key_type, raw)
    with pytest.raises(FormatError):
        PublicKey.from_bytes(bytes([key_type]) + raw)


def test_p256_valid_points() -> None:
    PublicKey(KeyType.P256, _p256_point(G_X, G_Y))
    PublicKey(KeyType.P256, _p256_point(SMALL_X, SMALL_Y))  # the canonical twin of "p256-x-plus-p" is valid


@pytest.mark.parametrize("data", [b"", b"\x00" + bytes(32), b"\x03" + bytes(32), ZERO.public_key.to_bytes()[:-1],
                                  ZERO.public_key.to_bytes() + b"\x00"])
def test_from_bytes_rejects(data: bytes) -> None:
    with pytest.raises(FormatError):
        PublicKey.from_bytes(data)


def test_constructor_rejects_wrong_types() -> None:
    with pytest.raises(FormatError):
        PublicKey(1, ZERO.public_key.raw)  # type: ignore[arg-type]
    with pytest.raises(FormatError):
        PublicKey(KeyType.ED25519, bytearray(ZERO.public_key.raw))  # type: ignore[arg-type]
    with pytest.raises(FormatError):
        KeyType.from_byte(0)


@given(st.binary(max_size=80))
def test_fuzz_from_bytes(data: bytes) -> None:
    try:
        key = PublicKey.from_bytes(data)
    except TlogError:
        return
    assert key.to_bytes() == data


@given(st.text(max_size=120))
def test_fuzz_from_text(text: str) -> None:
    try:
        key = PublicKey.from_text(text)
    except TlogError:
        return
    assert key.to_text() == text


# ------------------------------------------------------------------ Ed25519 strictness: both libraries agree

def _raw_nacl(pk: bytes, msg: bytes, sig: bytes) -> bool:
    try:
        crypto_sign_open(sig + msg, pk)
        return True
    except CryptoError:
        return False


def _raw_openssl(pk: bytes, msg: bytes, sig: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(pk).verify(sig, msg)
        return True
    except Exception:  # noqa: BLE001 - InvalidSignature or ValueError: a rejection either way
        return False


def _ours(pk: bytes, msg: bytes, sig: bytes, openssl: bool = False) -> bool:
    try:
        key = PublicKey(KeyType.ED25519, pk)
        (key._verify_ed25519_openssl if openssl else key.verify)(msg, sig)
        return True
    except TlogError:
        return False


def _clamped_scalar(seed: bytes) -> int:
    h = hashlib.sha512(seed).digest()
    return (int.from_bytes(h[:32], "little") & ~7 & ((1 << 254) - 1)) | (1 << 254)


def _ed_cases() -> dict[str, tuple[bytes, bytes, bytes, bool]]:
    msg = b"tlog strictness"
    pk = ZERO.public_key.raw
    sig = ZERO.sign(msg)
    s = int.from_bytes(sig[32:], "little")
    a = _clamped_scalar(bytes(32))
    ident = ed_enc(1)
    # R = identity, S = k*a: satisfies [S]B = R + [k]A, so only the small-order-R rule rejects it.
    k = int.from_bytes(hashlib.sha512(ident + pk + msg).digest(), "little") % L
    other = PrivateKey.from_ed25519_seed(b"\x01" * 32)
    flip = lambda b, i: b[:i] + bytes([b[i] ^ 1]) + b[i + 1:]  # noqa: E731
    return {
        "valid": (pk, msg, sig, True),
        "truncated-63": (pk, msg, sig[:63], False),
        "extended-65": (pk, msg, sig + b"\x00", False),
        "empty-sig": (pk, msg, b"", False),
        "flip-R": (pk, msg, flip(sig, 0), False),
        "flip-S": (pk, msg, flip(sig, 40), False),
        "flip-msg": (pk, flip(msg, 0), sig, False),
        "S-plus-L": (pk, msg, sig[:32] + (s + L).to_bytes(32, "little"), False),
        "S-plus-2L": (pk, msg, sig[:32] + (s + 2 * L).to_bytes(32, "little"), False),
        "S-high-bit": (pk, msg, sig[:63] + bytes([sig[63] | 0x80]), False),
        "wrong-key": (other.public_key.raw, msg, sig, False),
        "identity-R": (pk, msg, ident + (k * a % L).to_bytes(32, "little"), False),
        "identity-A-universal-forgery": (ident, msg, pk + (a % L).to_bytes(32, "little"), False),
        "non-canonical-R": (pk, msg, ed_enc(P + 3) + sig[32:], False),
        "non-canonical-A": (ed_enc(P + 3), msg, sig, False),
        "small-order-A-order-8": (BAD_KEYS["ed-order-8"][1], msg, sig, False),
    }


ED_CASES = _ed_cases()


@pytest.mark.parametrize("name", sorted(ED_CASES))
def test_ed25519_strictness_libsodium_and_openssl_agree(name: str) -> None:
    """Our verify (libsodium) and the same checks through OpenSSL give one answer, libsodium's own."""
    pk, msg, sig, expected = ED_CASES[name]
    assert _ours(pk, msg, sig) is expected
    assert _ours(pk, msg, sig, openssl=True) is expected
    assert _raw_nacl(pk, msg, sig) is expected


def test_openssl_alone_is_laxer_which_is_why_we_precheck() -> None:
    """OpenSSL accepts small-order R and a universal forgery under the identity key; libsodium and we do not."""
    for name in ("identity-R", "identity-A-universal-forgery"):
        pk, msg, sig, _ = ED_CASES[name]
        assert _raw_openssl(pk, msg, sig)
        assert not _raw_nacl(pk, msg, sig)
    pk, _, sig, _ = ED_CASES["identity-A-universal-forgery"]
    assert _raw_openssl(pk, b"any message at all", sig)


@settings(max_examples=60, deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), msg=st.binary(max_size=64), noise=st.binary(min_size=64, max_size=64))
def test_ed25519_libraries_agree_on_random_inputs(seed: bytes, msg: bytes, noise: bytes) -> None:
    key = PrivateKey.from_ed25519_seed(seed)
    sig = key.sign(msg)
    pk = key.public_key.raw
    assert _ours(pk, msg, sig) and _ours(pk, msg, sig, openssl=True) and _raw_nacl(pk, msg, sig)
    assert _ours(pk, msg, noise) == _ours(pk, msg, noise, openssl=True) == _raw_nacl(pk, msg, noise)


# ------------------------------------------------------------------ P-256 strict DER

def _der(*parts: bytes) -> bytes:
    content = b"".join(parts)
    return b"\x30" + bytes([len(content)]) + content


def _int(body: bytes) -> bytes:
    return b"\x02" + bytes([len(body)]) + body


def _minimal(v: int) -> bytes:
    return v.to_bytes(v.bit_length() // 8 + 1, "big")


def _p256_cases() -> dict[str, bytes]:
    r, s = RFC6979_R, RFC6979_S
    good = encode_der_signature(r, s)
    content = good[2:]
    return {
        "long-form-seq-length": b"\x30\x81" + bytes([len(content)]) + content,
        "long-form-seq-length-2": b"\x30\x82\x00" + bytes([len(content)]) + content,
        "indefinite-length": b"\x30\x80" + content + b"\x00\x00",
        "long-form-int-length": _der(b"\x02\x81\x21" + _minimal(r), _int(_minimal(s))),
        "non-minimal-r": _der(_int(b"\x00" + _minimal(r)), _int(_minimal(s))),
        "non-minimal-small-r": _der(_int(b"\x00\x01"), _int(_minimal(s))),
        "negative-r": _der(_int(r.to_bytes(32, "big")), _int(_minimal(s))),
        "trailing-garbage": good + b"\x00",
        "trailing-inside-seq": _der(_int(_minimal(r)), _int(_minimal(s)), b"\x00"),
        "r-zero": _der(_int(b"\x00"), _int(_minimal(s))),
        "s-zero": _der(_int(_minimal(r)), _int(b"\x00")),
        "s-equals-n": _der(_int(_minimal(r)), _int(_minimal(N))),
        "s-n-plus-s": _der(_int(_minimal(r)), _int(_minimal(N + 1))),
        "r-equals-n": _der(_int(_minimal(N)), _int(_minimal(s))),
        "empty-int": _der(_int(b""), _int(_minimal(s))),
        "wrong-seq-tag": b"\x31" + good[1:],
        "wrong-int-tag": _der(b"\x03" + _int(_minimal(r))[1:], _int(_minimal(s))),
        "one-integer": _der(_int(_minimal(r))),
        "three-integers": _der(_int(_minimal(r)), _int(_minimal(s)), _int(b"\x01")),
        "raw-r-s-64": r.to_bytes(32, "big") + s.to_bytes(32, "big"),
        "seq-length-too-long": b"\x30" + bytes([good[1] + 1]) + content,
        "seq-length-too-short": b"\x30" + bytes([good[1] - 1]) + content,
        "empty": b"",
    }


P256_CASES = _p256_cases()


@pytest.mark.parametrize("name", sorted(P256_CASES))
def test_p256_strict_der_rejects(name: str) -> None:
    pub = PublicKey(KeyType.P256, RFC6979_PUB)
    with pytest.raises(SignatureError):
        decode_der_signature(P256_CASES[name])
    with pytest.raises(SignatureError):
        pub.verify(b"sample", P256_CASES[name])


def test_p256_truncated_at_every_position() -> None:
    good = encode_der_signature(RFC6979_R, RFC6979_S)
    for i in range(len(good)):
        with pytest.raises(SignatureError):
            decode_der_signature(good[:i])


def test_p256_sign_verify_wrong_key_and_flipped_bit() -> None:
    sig = P256_KEY.sign(b"m")
    assert decode_der_signature(sig)  # cryptography emits strict DER
    P256_KEY.public_key.verify(b"m", sig)
    with pytest.raises(SignatureError):
        PrivateKey.generate(KeyType.P256).public_key.verify(b"m", sig)
    r, s = decode_der_signature(sig)
    with pytest.raises(SignatureError):
        P256_KEY.public_key.verify(b"m", encode_der_signature(r, s ^ 1))
    with pytest.raises(SignatureError):
        ZERO.public_key.verify(b"m", sig)  # a DER signature is not an Ed25519 signature


@given(st.integers(1, N - 1), st.integers(1, N - 1))
def test_der_round_trip(r: int, s: int) -> None:
    der = encode_der_signature(r, s)
    assert len(der) <= 72
    assert decode_der_signature(der) == (r, s)


@given(st.binary(max_size=80))
def test_fuzz_der(data: bytes) -> None:
    try:
        r, s = decode_der_signature(data)
    except SignatureError:
        return
    assert encode_der_signature(r, s) == data


def test_encode_der_rejects_out_of_range() -> None:
    for bad in (-1, 2**256):
        with pytest.raises(FormatError):
            encode_der_signature(bad, 1)


# ------------------------------------------------------------------ private keys

@pytest.mark.parametrize("key_type", list(KeyType))
def test_private_key_pem_round_trip(key_type: KeyType) -> None:
    key = PrivateKey.generate(key_type)
    pem = key.to_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    again = PrivateKey.from_pem(pem)
    assert again.key_type is key_type
    assert again.public_key == key.public_key
    assert PrivateKey.from_pem(pem, key_type).public_key == key.public_key
    other = KeyType.P256 if key_type is KeyType.ED25519 else KeyType.ED25519
    with pytest.raises(FormatError):
        PrivateKey.from_pem(pem, other)
    again.public_key.verify(b"x", key.sign(b"x"))


def _pem(key: object, encryption: serialization.KeySerializationEncryption | None = None) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption or serialization.NoEncryption())


BAD_PEMS = {
    "garbage": b"not a key",
    "empty": b"",
    "truncated": ZERO.to_pem()[:60],
    "p384": _pem(ec.generate_private_key(ec.SECP384R1())),
    "x25519": _pem(x25519.X25519PrivateKey.generate()),
    "encrypted": _pem(ed25519.Ed25519PrivateKey.generate(), serialization.BestAvailableEncryption(b"pw")),
    "public-key-pem": ZERO._key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
    "oversized": b"-----BEGIN PRIVATE KEY-----\n" + b"A" * 20000,
}


@pytest.mark.parametrize("name", sorted(BAD_PEMS))
def test_from_pem_rejects(name: str) -> None:
    with pytest.raises(FormatError):
        PrivateKey.from_pem(BAD_PEMS[name])


@settings(max_examples=50)
@given(st.binary(max_size=300))
def test_fuzz_from_pem(data: bytes) -> None:
    with pytest.raises(FormatError):
        PrivateKey.from_pem(b"-----BEGIN PRIVATE KEY-----\n" + data)


def test_private_key_repr_hides_secret_and_seed_checks() -> None:
    assert "_key" not in repr(ZERO) and "Ed25519PrivateKey" not in repr(ZERO)
    with pytest.raises(FormatError):
        PrivateKey.from_ed25519_seed(bytes(31))
    with pytest.raises(FormatError):
        PrivateKey.generate(3)  # type: ignore[arg-type]


@settings(max_examples=150)
@given(st.sampled_from([ZERO, P256_KEY]), st.binary(max_size=80), st.binary(max_size=16))
def test_fuzz_verify(key: PrivateKey, sig: bytes, msg: bytes) -> None:
    """Random signature bytes: verify raises SignatureError and nothing else."""
    with pytest.raises(SignatureError):
        key.public_key.verify(msg, sig)
