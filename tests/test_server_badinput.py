"""Every bad request gets a 4xx with a one-line reason (never a 500, never a traceback), and the tree
is unchanged afterwards.  Runs against a real server process."""

from __future__ import annotations

import base64
import io
import os
import time

import aiohttp
import pytest

from tlog.client import LogClient
from tlog.entry import EventEntry, payload_commitment, register_event, revoke_event, sign_entry
from tlog.keys import KeyType, PrivateKey, decode_der_signature, encode_der_signature
from tlog.server.config import check_private_file

ORIGIN = "example.com/test-log"
N_P256 = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def event_request(key: PrivateKey, payload: bytes = b"{}", *, origin: str = ORIGIN, ts: int | None = None,
                  salt: bytes | None = None, sign_with: PrivateKey | None = None) -> dict:
    salt = salt or os.urandom(16)
    entry = EventEntry(origin, key.public_key.key_id, now_ms() if ts is None else ts,
                       payload_commitment(salt, payload))
    sig = sign_entry(entry, sign_with or key)
    return {"entry": b64(entry.encode()), "signature": b64(sig), "salt": b64(salt), "payload": b64(payload)}


@pytest.fixture
async def world(log_server):
    """A log with a valid Ed25519 writer, a valid P-256 writer, a revoked one, a not-yet-valid one and a
    rate-limited one."""
    operator = PrivateKey.from_pem(check_private_file(os.path.join(log_server.data, "operator.key")))
    keys = {name: PrivateKey.generate(KeyType.P256 if name == "p256" else KeyType.ED25519)
            for name in ("good", "p256", "revoked", "future", "limited", "unknown")}
    now = now_ms()
    day = 86_400_000
    async with LogClient(log_server.url, log_key=log_server.vkey) as client:
        for name in ("good", "p256", "revoked", "limited"):
            ev = register_event(ORIGIN, now, keys[name].public_key, name, now - 1000, now + day,
                                rate_limit=2 if name == "limited" else 0)
            await client.submit_operator_entry(ev, operator)
        ev = register_event(ORIGIN, now, keys["future"].public_key, "future", now + day, now + 2 * day)
        await client.submit_operator_entry(ev, operator)
        await client.submit_operator_entry(revoke_event(ORIGIN, now, keys["revoked"].public_key.key_id), operator)
    async with aiohttp.ClientSession() as http:
        yield log_server, keys, operator, http


async def size_of(http, url) -> int:
    async with http.get(url + "/checkpoint") as r:
        return int((await r.read()).split(b"\n")[1])


async def expect(http, method, url, status, *, data=None, json=None, headers=None, contains=None):
    async with http.request(method, url, data=data, json=json, headers=headers) as r:
        body = await r.read()
        assert r.status == status, (url, r.status, body[:300])
        assert b"Traceback" not in body
        text = body.decode()
        assert "\n" not in text.strip(), text
        err = (await r.json(content_type=None))["error"]
        if contains:
            assert contains.lower() in err.lower(), err
        return r


def _sig_variants(req: dict, key: PrivateKey) -> dict[str, dict]:
    sig = base64.b64decode(req["signature"])
    out = {
        "truncated": {**req, "signature": b64(sig[:-1])},
        "flipped": {**req, "signature": b64(bytes([sig[0] ^ 1]) + sig[1:])},
        "garbage": {**req, "signature": b64(os.urandom(len(sig)))},
        "empty": {**req, "signature": ""},
    }
    if key.public_key.key_type == KeyType.ED25519:
        # S + L: same value mod L, non-canonical encoding.
        L = 2**252 + 27742317777372353535851937790883648493
        s = int.from_bytes(sig[32:], "little") + L
        out["noncanonical_s"] = {**req, "signature": b64(sig[:32] + s.to_bytes(32, "little"))}
    else:
        r, s = decode_der_signature(sig)
        der = encode_der_signature(r, s)
        # BER: long-form length for a short sequence.
        out["ber_long_length"] = {**req, "signature": b64(b"\x30\x81" + der[1:])}
        out["trailing_garbage"] = {**req, "signature": b64(der + b"\x00")}
        out["s_zero"] = {**req, "signature": b64(encode_der_signature(r, 1)[:-1] + b"\x00")}
    return out


async def test_bad_signatures_refused_tree_unchanged(world):
    server, keys, _, http = world
    before = await size_of(http, server.url)
    for name in ("good", "p256"):
        req = event_request(keys[name])
        for label, bad in _sig_variants(req, keys[name]).items():
            status = 400 if label == "empty" else 403
            await expect(http, "POST", server.url + "/v1/entries", status, json=bad)
        wrong_key = event_request(keys[name], sign_with=keys["unknown"])
        await expect(http, "POST", server.url + "/v1/entries", 403, json=wrong_key, contains="signature")
    assert await size_of(http, server.url) == before


async def test_key_state_refusals(world):
    server, keys, _, http = world
    before = await size_of(http, server.url)
    url = server.url + "/v1/entries"
    await expect(http, "POST", url, 403, json=event_request(keys["unknown"]), contains="unknown")
    await expect(http, "POST", url, 403, json=event_request(keys["revoked"]), contains="revoked")
    await expect(http, "POST", url, 403, json=event_request(keys["future"]), contains="not yet valid")
    await expect(http, "POST", url, 403, json=event_request(keys["good"], origin="example.com/other"),
                 contains="other")
    await expect(http, "POST", url, 403, json=event_request(keys["good"], ts=now_ms() - 3_600_000),
                 contains="skew")
    await expect(http, "POST", url, 403, json=event_request(keys["good"], ts=now_ms() + 3_600_000),
                 contains="skew")
    assert await size_of(http, server.url) == before


async def test_operator_entries_need_the_operator_key(world):
    server, keys, operator, http = world
    before = await size_of(http, server.url)
    now = now_ms()
    ev = register_event(ORIGIN, now, keys["unknown"].public_key, "sneaky", now, now + 1000)
    forged = {"entry": b64(ev.encode()), "signature": b64(sign_entry(ev, keys["good"]))}
    await expect(http, "POST", server.url + "/v1/operator-entries", 403, json=forged)
    too_long = register_event(ORIGIN, now, keys["unknown"].public_key, "long", now, now + 400 * 86_400_000)
    await expect(http, "POST", server.url + "/v1/operator-entries", 403,
                 json={"entry": b64(too_long.encode()), "signature": b64(sign_entry(too_long, operator))},
                 contains="lifetime")
    event = event_request(keys["good"])
    await expect(http, "POST", server.url + "/v1/operator-entries", 400,
                 json={"entry": event["entry"], "signature": event["signature"]})
    assert await size_of(http, server.url) == before


async def test_malformed_bodies(world):
    server, keys, _, http = world
    before = await size_of(http, server.url)
    url = server.url + "/v1/entries"
    good = event_request(keys["good"])
    cases = [
        b"not json", b"\xff\xfe\x00garbage", b"[1,2,3]", b'"string"', b"{}", b"null",
    ]
    for body in cases:
        await expect(http, "POST", url, 400, data=body, headers={"Content-Type": "application/json"})
    for field in good:
        missing = {k: v for k, v in good.items() if k != field}
        await expect(http, "POST", url, 400, json=missing, contains=field)
        await expect(http, "POST", url, 400, json={**good, field: 12345}, contains=field)
        await expect(http, "POST", url, 400, json={**good, field: "!!notbase64!!"}, contains=field)
    await expect(http, "POST", url, 400, json={**good, "extra": "x"}, contains="unknown")
    await expect(http, "POST", url, 400, json={**good, "entry": b64(b"\x01\x01garbage")})
    await expect(http, "POST", url, 400, json={**good, "payload": b64(b"other payload")}, contains="commitment")
    # Non-canonical base64 (non-zero padding bits).
    sig = good["signature"]
    await expect(http, "POST", url, 400, json={**good, "salt": good["salt"][:-3] + "B=="}, contains="salt")
    assert sig
    assert await size_of(http, server.url) == before


async def test_oversized_bodies_and_payloads(world):
    server, keys, _, http = world
    before = await size_of(http, server.url)
    url = server.url + "/v1/entries"
    big = event_request(keys["good"], payload=b"x" * (300 * 1024))
    await expect(http, "POST", url, 413, json=big, contains="payload")
    await expect(http, "POST", url, 413, data=io.BytesIO(b"{" + b" " * (2 << 20) + b"}"),
                 headers={"Content-Type": "application/json"})
    assert await size_of(http, server.url) == before


async def test_rate_limit_429_others_unaffected(world):
    server, keys, _, http = world
    url = server.url + "/v1/entries"
    statuses = []
    for _ in range(6):
        async with http.post(url, json=event_request(keys["limited"])) as r:
            statuses.append(r.status)
            if r.status == 429:
                assert int(r.headers["Retry-After"]) >= 1
    assert 429 in statuses and statuses[0] == 201
    async with http.post(url, json=event_request(keys["good"])) as r:
        assert r.status == 201


@pytest.mark.parametrize("query", [
    "index=-1&tree_size=5", "index=abc&tree_size=5", "index=01&tree_size=5", "index=+1&tree_size=5",
    "index=1&tree_size=99999999999999999999999", "index=5&tree_size=5", "index=0&tree_size=1000000",
    "tree_size=5", "index=1", "index=1&tree_size=5&hash=AAAA", "hash=notb64&tree_size=5",
    "hash=AAAA&tree_size=5",
])
async def test_inclusion_parameters(world, query):
    server, _, _, http = world
    await expect(http, "GET", f"{server.url}/v1/proofs/inclusion?{query}", 400)


@pytest.mark.parametrize("query", [
    "first=3&second=2", "first=-1&second=2", "first=x&second=2", "first=1&second=1000000", "first=1",
    "first=1&second=9223372036854775808",
])
async def test_consistency_parameters(world, query):
    server, _, _, http = world
    await expect(http, "GET", f"{server.url}/v1/proofs/consistency?{query}", 400)


async def test_reads_of_missing_things(world):
    server, _, _, http = world
    await expect(http, "GET", server.url + "/v1/entries/999999", 404)
    await expect(http, "GET", server.url + "/v1/entries/-3", 400)
    await expect(http, "GET", server.url + "/v1/entries/abc", 400)
    await expect(http, "GET", server.url + "/tile/0/001", 404)
    await expect(http, "GET", server.url + "/tile/0/000.p/200", 404)
    await expect(http, "GET", server.url + "/tile/entries/000.p/200", 404)
    for bad in ("tile/0/1", "tile/0/000.p/0", "tile/x/000", "tile/0/x000/001", "tile/64/000", "tile/0/000.p/256"):
        await expect(http, "GET", f"{server.url}/{bad}", 400)
    await expect(http, "GET", server.url + "/nope", 404)
    await expect(http, "DELETE", server.url + "/v1/entries", 405)
    hash_lookup = f"{server.url}/v1/proofs/inclusion?hash={b64(bytes(32))}&tree_size=3"
    await expect(http, "GET", hash_lookup, 404)
