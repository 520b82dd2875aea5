"""Provisioning keys: the keys writers and the operator sign entries with (spec/keys.md, spec/entry.md).

Two key types:

* **Ed25519** (RFC 8032), raw 32-byte public keys, 64-byte signatures.  Verified with PyNaCl (libsodium's
  ``crypto_sign_open``, about twice as fast as ``cryptography`` here).  Verification is *strict* and does not
  depend on which library runs it: we reject, before any library sees them, public keys that are not canonical
  (y >= p), not on the curve, or of small order; signatures whose S is not canonical (S >= L, RFC 8032 §5.1.7
  step 1) or whose R is a small-order point.  libsodium applies exactly these rules itself; OpenSSL does not
  reject small-order A or R, so it accepts forgeries under the identity key.  With our pre-checks both libraries
  answer the same on every input (tests/test_keys.py checks each case).
* **ECDSA P-256** (FIPS 186-5, SEC 1), raw 65-byte uncompressed SEC 1 points (0x04 || X || Y, checked to lie
  on the curve), signatures ECDSA-SHA256 in strict DER (X.690 §10): we parse the ``ECDSA-Sig-Value`` ourselves,
  reject BER (long-form or indefinite lengths), non-minimal or negative integers, r or s outside [1, n-1],
  wrong tags and trailing bytes, and require the re-encoding to equal the input.  ECDSA is malleable:
  (r, n - s) verifies as well as (r, s); entry identity (tlog.entry.Leaf.identity) never covers signatures.

Key id (spec/keys.md): SHA-256("tlog-key-id-v1" || 0x00 || type byte || raw).

:func:`ed25519_sign` is libsodium's Ed25519 signing for the signed-note keys (tlog/note.py): RFC 8032
signatures are deterministic, so it makes the bytes ``cryptography`` makes, in half the time; this module
is the one place PyNaCl is used (tests/test_imports.py).

Pure: no I/O, no clock, no randomness except in :meth:`PrivateKey.generate`, which delegates to
``cryptography``.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from nacl.bindings import crypto_sign, crypto_sign_open
from nacl.exceptions import CryptoError

from tlog.errors import FormatError, InvariantError, SignatureError

__all__ = [
    "ed25519_sign",
    "KeyType",
    "PublicKey",
    "PrivateKey",
    "KEY_ID_SIZE",
    "ED25519_SIGNATURE_SIZE",
    "P256_MAX_SIGNATURE_SIZE",
    "MAX_PEM_SIZE",
    "encode_der_signature",
    "decode_der_signature",
]


def ed25519_sign(secret: bytes, message: bytes) -> bytes:
    """The 64-byte RFC 8032 Ed25519 signature of ``message`` under ``secret``, libsodium's 64-byte
    secret key (the 32-byte seed, then the 32-byte public key)."""
    if len(secret) != 64:
        raise FormatError(f"Ed25519 secret key is {len(secret)} bytes, want 64 (seed || public key)")
    return crypto_sign(message, secret)[:64]

KEY_ID_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
P256_MAX_SIGNATURE_SIZE = 72  # 0x30 len (0x02 0x21 00 r[32]) (0x02 0x21 00 s[32])
MAX_PEM_SIZE = 16 * 1024
_MAX_TEXT_SIZE = 128  # "p256:" + base64 of 65 bytes is 93 characters
_KEY_ID_PREFIX = b"tlog-key-id-v1\x00"

# Ed25519 (RFC 8032 §5.1): field prime p, group order L, curve constant d.
_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_Y_MASK = (1 << 255) - 1
# y-coordinates of the eight small-order points, plus the non-canonical p, p+1 (libsodium's blacklist):
_SMALL_ORDER_Y = frozenset({
    0, 1, _P - 1, _P, _P + 1,
    int.from_bytes(bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"), "little"),
    int.from_bytes(bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"), "little"),
})

# NIST P-256 (FIPS 186-5 / SEC 2 §2.4.2): y^2 = x^3 - 3x + b over GF(p); group order n.
_P256_P = 2**256 - 2**224 + 2**192 + 2**96 - 1
_P256_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
_P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


class KeyType(enum.IntEnum):
    """The key type; the value is the wire byte used in key ids and entries (spec/entry.md)."""

    ED25519 = 1
    P256 = 2

    @property
    def text(self) -> str:
        """The text prefix: ``ed25519`` or ``p256``."""
        return _TEXT_NAMES[self]

    @property
    def raw_size(self) -> int:
        """The length of the raw public key: 32 (Ed25519) or 65 (uncompressed P-256)."""
        return 32 if self is KeyType.ED25519 else 65

    @classmethod
    def from_byte(cls, value: int) -> KeyType:
        """The key type for a wire byte; FormatError for an unknown one."""
        try:
            return cls(value)
        except ValueError:
            raise FormatError(f"unknown key type {value}") from None


_TEXT_NAMES = {KeyType.ED25519: "ed25519", KeyType.P256: "p256"}
_BY_TEXT = {v: k for k, v in _TEXT_NAMES.items()}


def _check_ed25519_point(raw: bytes) -> None:
    """RFC 8032 §5.1.3 point decoding, strict: canonical y < p, x recoverable, not of small order."""
    y = int.from_bytes(raw, "little") & _Y_MASK
    if y >= _P:
        raise FormatError("ed25519 public key is not canonical (y >= p)")
    if y in _SMALL_ORDER_Y:
        raise FormatError("ed25519 public key is a small-order point")
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x2 = u * pow(v, _P - 2, _P) % _P
    if pow(x2, (_P - 1) // 2, _P) != 1:  # x2 == 0 only for y = ±1, excluded above
        raise FormatError("ed25519 public key is not a point on the curve")


def _check_p256_point(raw: bytes) -> None:
    """SEC 1 §2.3.4 uncompressed point: 0x04 || X || Y with X, Y < p and Y^2 = X^3 - 3X + b."""
    if raw[0] != 0x04:
        raise FormatError("p256 public key must be an uncompressed SEC 1 point (0x04 prefix)")
    x, y = int.from_bytes(raw[1:33], "big"), int.from_bytes(raw[33:], "big")
    if x >= _P256_P or y >= _P256_P:
        raise FormatError("p256 public key coordinate out of range")
    if (y * y - (x * x * x - 3 * x + _P256_B)) % _P256_P != 0:
        raise FormatError("p256 public key is not a point on the curve")


def _ed25519_precheck(sig: bytes) -> None:
    """The signature rules libsodium applies and OpenSSL does not all apply: |sig| = 64, S < L, R not small-order."""
    if len(sig) != ED25519_SIGNATURE_SIZE:
        raise SignatureError(f"ed25519 signature must be 64 bytes, got {len(sig)}")
    if int.from_bytes(sig[32:], "little") >= _L:
        raise SignatureError("ed25519 signature is not canonical (S >= L)")
    if int.from_bytes(sig[:32], "little") & _Y_MASK in _SMALL_ORDER_Y:
        raise SignatureError("ed25519 signature R is a small-order point")


def encode_der_signature(r: int, s: int) -> bytes:
    """DER (X.690 §8.3, §10) of ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER } (RFC 3279 §2.2.3)."""
    def integer(v: int) -> bytes:
        if not isinstance(v, int) or v < 0 or v.bit_length() > 256:
            raise FormatError("ECDSA integers must be in [0, 2**256)")
        body = v.to_bytes(v.bit_length() // 8 + 1, "big")  # one leading 0x00 exactly when the top bit is set
        return b"\x02" + bytes([len(body)]) + body

    content = integer(r) + integer(s)  # at most 70 bytes: short-form length
    return b"\x30" + bytes([len(content)]) + content


def _der_integer(data: bytes, pos: int) -> tuple[int, int]:
    """One DER INTEGER at ``pos``: short-form length, minimal, non-negative.  Returns (value, next position)."""
    if pos + 2 > len(data) or data[pos] != 0x02:
        raise SignatureError("DER signature: expected INTEGER")
    length = data[pos + 1]
    if length == 0 or length > 33:  # also rejects long-form (0x81..) and indefinite (0x80) lengths
        raise SignatureError(f"DER signature: bad INTEGER length byte {length:#x}")
    body = data[pos + 2:pos + 2 + length]
    if len(body) != length:
        raise SignatureError("DER signature: truncated INTEGER")
    if body[0] & 0x80:
        raise SignatureError("DER signature: negative INTEGER")
    if length > 1 and body[0] == 0 and not body[1] & 0x80:
        raise SignatureError("DER signature: non-minimal INTEGER")
    return int.from_bytes(body, "big"), pos + 2 + length


def decode_der_signature(sig: bytes) -> tuple[int, int]:
    """Strict DER ECDSA-Sig-Value for P-256: returns (r, s), both in [1, n-1]; SignatureError otherwise."""
    if not 8 <= len(sig) <= P256_MAX_SIGNATURE_SIZE:
        raise SignatureError(f"DER signature length {len(sig)} out of range 8..{P256_MAX_SIGNATURE_SIZE}")
    if sig[0] != 0x30:
        raise SignatureError("DER signature: expected SEQUENCE")
    if sig[1] != len(sig) - 2:  # short form only: contents are at most 70 bytes
        raise SignatureError("DER signature: SEQUENCE length does not match (BER, truncation or trailing bytes)")
    r, pos = _der_integer(sig, 2)
    s, pos = _der_integer(sig, pos)
    if pos != len(sig):
        raise SignatureError("DER signature: trailing bytes inside SEQUENCE")
    for name, v in (("r", r), ("s", s)):
        if not 1 <= v < _P256_N:
            raise SignatureError(f"DER signature: {name} out of range [1, n-1]")
    if encode_der_signature(r, s) != sig:
        raise SignatureError("DER signature is not canonical")
    return r, s


@dataclass(frozen=True)
class PublicKey:
    """A provisioning public key.  Construction validates the point (FormatError)."""

    key_type: KeyType
    raw: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.key_type, KeyType):
            raise FormatError(f"key_type must be a KeyType, got {self.key_type!r}")
        if not isinstance(self.raw, bytes) or len(self.raw) != self.key_type.raw_size:
            raise FormatError(f"{self.key_type.text} public key must be {self.key_type.raw_size} bytes")
        if self.key_type is KeyType.ED25519:
            _check_ed25519_point(self.raw)
        else:
            _check_p256_point(self.raw)

    @functools.cached_property
    def key_id(self) -> bytes:
        """SHA-256("tlog-key-id-v1" 0x00 || type byte || raw), spec/keys.md §Key ids."""
        return hashlib.sha256(_KEY_ID_PREFIX + self.to_bytes()).digest()

    @property
    def key_id_hex(self) -> str:
        """The key id in lowercase hex."""
        return self.key_id.hex()

    def to_bytes(self) -> bytes:
        """Type byte || raw: the encoding inside entries (spec/entry.md)."""
        return bytes([self.key_type]) + self.raw

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicKey:
        """Strict inverse of :meth:`to_bytes`: known type byte, exact length, valid point."""
        if not isinstance(data, bytes) or not data:
            raise FormatError("empty public key encoding")
        key_type = KeyType.from_byte(data[0])
        if len(data) != 1 + key_type.raw_size:
            raise FormatError(f"{key_type.text} public key encoding must be {1 + key_type.raw_size} bytes")
        return cls(key_type, data[1:])

    def to_text(self) -> str:
        """``ed25519:<base64 raw>`` or ``p256:<base64 raw>`` (standard base64, padded)."""
        return f"{self.key_type.text}:{base64.b64encode(self.raw).decode('ascii')}"

    @classmethod
    def from_text(cls, text: str) -> PublicKey:
        """Strict inverse of :meth:`to_text`: known prefix, canonical padded base64, valid point."""
        if not isinstance(text, str) or len(text) > _MAX_TEXT_SIZE:
            raise FormatError("public key text too long or not a string")
        prefix, sep, b64 = text.partition(":")
        if not sep or prefix not in _BY_TEXT:
            raise FormatError(f"public key text must start with ed25519: or p256:, got {text[:20]!r}")
        try:
            raw = base64.b64decode(b64.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise FormatError("public key text: invalid base64") from None
        if base64.b64encode(raw).decode("ascii") != b64:
            raise FormatError("public key text: non-canonical base64")
        return cls(_BY_TEXT[prefix], raw)

    @functools.cached_property
    def _p256(self) -> ec.EllipticCurvePublicKey:
        try:
            return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), self.raw)
        except ValueError as e:  # __post_init__ already checked the point
            raise InvariantError(f"validated p256 point rejected by cryptography: {e}") from None

    def verify(self, message: bytes, signature: bytes) -> None:
        """Verify ``signature`` over ``message``; SignatureError if it is malformed, non-canonical or wrong."""
        if not isinstance(signature, bytes) or not isinstance(message, bytes):
            raise SignatureError("message and signature must be bytes")
        if self.key_type is KeyType.ED25519:
            _ed25519_precheck(signature)
            try:
                crypto_sign_open(signature + message, self.raw)
            except CryptoError:
                raise SignatureError("ed25519 signature does not verify") from None
            return
        decode_der_signature(signature)
        try:
            self._p256.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise SignatureError("p256 signature does not verify") from None

    def _verify_ed25519_openssl(self, message: bytes, signature: bytes) -> None:
        """The same check as :meth:`verify` through OpenSSL instead of libsodium (tests compare the two)."""
        _ed25519_precheck(signature)
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(self.raw).verify(signature, message)
        except InvalidSignature:
            raise SignatureError("ed25519 signature does not verify") from None


def _load_pem(data: bytes) -> Any:
    if not isinstance(data, bytes) or len(data) > MAX_PEM_SIZE:
        raise FormatError("PEM private key must be bytes of at most 16 KiB")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise FormatError("not an unencrypted PEM private key") from None


@dataclass(frozen=True, eq=False)
class PrivateKey:
    """A provisioning private key (Ed25519 or P-256).  Secret material never appears in ``repr``."""

    key_type: KeyType
    _key: Any = field(repr=False)

    @classmethod
    def generate(cls, key_type: KeyType) -> PrivateKey:
        """A fresh key from ``cryptography``'s generator (the only randomness in this module)."""
        if key_type is KeyType.ED25519:
            return cls(key_type, ed25519.Ed25519PrivateKey.generate())
        if key_type is KeyType.P256:
            return cls(key_type, ec.generate_private_key(ec.SECP256R1()))
        raise FormatError(f"unknown key type {key_type!r}")

    @classmethod
    def from_ed25519_seed(cls, seed: bytes) -> PrivateKey:
        """The Ed25519 key with this 32-byte RFC 8032 seed (deterministic: tests and golden files)."""
        if not isinstance(seed, bytes) or len(seed) != 32:
            raise FormatError("ed25519 seed must be 32 bytes")
        return cls(KeyType.ED25519, ed25519.Ed25519PrivateKey.from_private_bytes(seed))

    @functools.cached_property
    def public_key(self) -> PublicKey:
        """The matching :class:`PublicKey`."""
        pub = self._key.public_key()
        if self.key_type is KeyType.ED25519:
            return PublicKey(KeyType.ED25519, pub.public_bytes_raw())
        raw = pub.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        return PublicKey(KeyType.P256, raw)

    def sign(self, message: bytes) -> bytes:
        """Ed25519: 64 bytes (deterministic).  P-256: ECDSA-SHA256, strict DER (randomized)."""
        if self.key_type is KeyType.ED25519:
            return bytes(self._key.sign(message))
        return bytes(self._key.sign(message, ec.ECDSA(hashes.SHA256())))

    def to_pem(self) -> bytes:
        """PKCS #8 PEM (RFC 5958, RFC 7468), unencrypted."""
        return bytes(self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    @classmethod
    def from_pem(cls, data: bytes, key_type: KeyType | None = None) -> PrivateKey:
        """Load an unencrypted PEM Ed25519 or P-256 private key; FormatError for garbage, any other algorithm
        or curve, or a key that is not of ``key_type`` when one is given."""
        key = _load_pem(data)
        if isinstance(key, ed25519.Ed25519PrivateKey):
            found = KeyType.ED25519
        elif isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
            found = KeyType.P256
        else:
            raise FormatError(f"unsupported private key type {type(key).__name__}")
        if key_type is not None and found is not key_type:
            raise FormatError(f"expected a {key_type.text} private key, got {found.text}")
        return cls(found, key)
