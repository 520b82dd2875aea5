"""Every bad request gets a 4xx with a one-line reason (never a 500, never a traceback), and the tree
is unchanged afterwards.  Runs against a real server process."""

from __future__ import annotations

import base64
import io
import json
import os
import random
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


@pytest.mark.parametrize("path", [
    "/v1/proofs/inclusion?index=1&tree_size=2&index=0",
    "/v1/proofs/consistency?first=1&second=2&second=2",
    "/v1/entries?limit=5&limit=6",
    "/v1/checkpoint/cosigned?cosigned=1&cosigned=0",
    "/checkpoint?x=1&x=1",
])
async def test_repeated_query_parameter_is_400(world, path):
    """Which of two values counts would be the server's choice (spec/http-api.md): refused everywhere."""
    server, _, _, http = world
    await expect(http, "GET", server.url + path, 400, contains="more than once")
    once = path.rsplit("&", 1)[0]  # the same request without the repeat is not refused for it
    async with http.get(server.url + once) as r:
        assert r.status != 400 or "more than once" not in await r.text()


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


# ---------------------------------------------------------------------------------------------------------
# Issue 8: hostile uploads, every proof parameter, the witness endpoint, the admin surface, key files,
# backpressure.  A server with tight limits: 1 s to send a body, 64 KiB per body, 4 entries of backlog.

TIGHT = {"request_timeout_seconds": 1.0, "max_body_bytes": 64 * 1024, "max_pending": 4}


@pytest.fixture
def tight_server(tmp_path):
    import json as _json

    from tests.conftest import init_log, start_server

    data = str(tmp_path / "log")
    init_log(data)
    path = os.path.join(data, "config.json")
    with open(path) as f:
        config = _json.load(f)
    with open(path, "w") as f:
        _json.dump({**config, **TIGHT}, f)
    server = start_server(data)
    yield server
    server.stop()


async def _raw_request(url: str, head: str):
    """An open connection on which the request line and headers were sent (the body is up to the test)."""
    import asyncio
    from urllib.parse import urlsplit

    u = urlsplit(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    writer.write(head.encode())
    await writer.drain()
    return reader, writer


async def _response(reader, timeout: float = 10) -> tuple[int, bytes]:
    import asyncio

    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    status = int(head.split(b" ", 2)[1])
    length = int(next((line.split(b":", 1)[1] for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), b"0"))
    body = await asyncio.wait_for(reader.readexactly(length), timeout)
    assert b"Traceback" not in body
    return status, body


def _post_head(extra: str) -> str:
    return f"POST /v1/entries HTTP/1.1\r\nHost: tlog\r\nContent-Type: application/json\r\n{extra}\r\n"


async def test_slow_trickle_upload_times_out_with_408(tight_server):
    import asyncio

    async with aiohttp.ClientSession() as http:
        before = await size_of(http, tight_server.url)
    reader, writer = await _raw_request(tight_server.url, _post_head("Content-Length: 400\r\n"))
    started = time.monotonic()
    try:
        answer = asyncio.ensure_future(_response(reader))
        for _ in range(40):  # one byte every 0.1 s: the whole body would take 40 s
            if answer.done():
                break
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.1)
        status, body = await answer
    finally:
        writer.close()
    elapsed = time.monotonic() - started
    assert status == 408 and b"not received in time" in body, body
    assert 0.9 <= elapsed < 3.5, elapsed  # request_timeout_seconds = 1
    async with aiohttp.ClientSession() as http:
        assert await size_of(http, tight_server.url) == before


async def test_content_length_over_the_limit_is_refused_before_the_body_is_read(tight_server):
    reader, writer = await _raw_request(tight_server.url, _post_head(f"Content-Length: {100 << 20}\r\n"))
    try:  # not one byte of the 100 MiB is sent: the answer comes from the header alone
        status, body = await _response(reader, timeout=5)
    finally:
        writer.close()
    assert status == 413 and b"the limit is 65536" in body, body


async def test_chunked_body_over_the_limit_is_refused_once_the_limit_is_crossed(tight_server):
    import asyncio

    reader, writer = await _raw_request(tight_server.url, _post_head("Transfer-Encoding: chunked\r\n"))
    sent, chunk = 0, b"{" + b" " * 8191
    answer = asyncio.ensure_future(_response(reader))
    try:
        while not answer.done() and sent < 100 << 20:  # the client would send 100 MiB
            try:
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
            except ConnectionError:
                break
            sent += len(chunk)
            await asyncio.sleep(0.01)
        status, body = await answer
    finally:
        writer.close()
    assert status == 413 and b"over the limit of 65536" in body, body
    assert 64 * 1024 < sent <= 4 << 20, sent  # refused soon after the limit, long before the end


async def test_deeply_nested_json_is_400_not_500(world):
    server, _, _, http = world
    before = await size_of(http, server.url)
    for body in (b"[" * 200_000, b'{"entry": ' * 100_000, b"[" * 100_000 + b"]" * 100_000):
        await expect(http, "POST", server.url + "/v1/entries", 400, data=body, contains="JSON",
                     headers={"Content-Type": "application/json"})
        await expect(http, "POST", server.url + "/v1/operator-entries", 400, data=body,
                     headers={"Content-Type": "application/json"})
    assert await size_of(http, server.url) == before


INCLUSION_MORE = [
    "index=0&tree_size=0", "index=1&tree_size=9223372036854775807", "index=9223372036854775808&tree_size=1",
    "index=1.0&tree_size=5", "index=1e2&tree_size=5", "index=0x1&tree_size=5", "index=%201&tree_size=5",
    "index=%EF%BC%91&tree_size=5", "index=%D9%A1&tree_size=5", "index=1&tree_size=-0", "index=&tree_size=5",
    "index=%FF&tree_size=5", "hash=&tree_size=5", "hash=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%3D&tree_size=-1",
]
CONSISTENCY_MORE = [
    "first=2&second=1", "first=0&second=-1", "second=5", "first=1&second=abc", "first=1&second=1.5",
    "first=0&second=99999999999999999999999", "first=9223372036854775807&second=9223372036854775807",
    "first=-0&second=1", "first=%EF%BC%91&second=2", "first=1&second=+2",
]
OTHER_PARAMETERS = [
    ("/v1/receipts/-1", 400), ("/v1/receipts/abc", 400), ("/v1/receipts/01", 400), ("/v1/receipts/1.0", 400),
    ("/v1/receipts/99999999999999999999", 400), ("/v1/receipts/9223372036854775807", 404),
    ("/v1/receipts/1?cosigned=2", 400), ("/v1/receipts/1?cosigned=", 400), ("/v1/receipts/1?index=2", 400),
    ("/v1/receipts/1?cosigned=1", 404), ("/v1/entries/9223372036854775808", 400),
    ("/v1/entries?limit=-1", 400), ("/v1/entries?limit=0", 400), ("/v1/entries?limit=abc", 400),
    ("/v1/entries?limit=1001", 400), ("/v1/entries?after=-1", 400), ("/v1/entries?after=1e3", 400),
    ("/v1/entries?since=yesterday", 400), ("/v1/entries?since=0001-01-01T00:00:00Z", 400),
    ("/v1/entries?until=99999999999999999999", 400), ("/v1/keys/%FF%FE", 404),
]


async def test_every_proof_and_numeric_parameter(world):
    """Negative, huge, non-numeric, non-canonical, non-ASCII digits and out-of-order, on every endpoint
    that takes an index or a size (one server for all: each case is its own request)."""
    server, _, _, http = world
    before = await size_of(http, server.url)
    for query in INCLUSION_MORE:
        await expect(http, "GET", f"{server.url}/v1/proofs/inclusion?{query}", 400)
    for query in CONSISTENCY_MORE:
        await expect(http, "GET", f"{server.url}/v1/proofs/consistency?{query}", 400)
    for path, status in OTHER_PARAMETERS:
        await expect(http, "GET", server.url + path, status)
    assert await size_of(http, server.url) == before


async def test_garbage_to_the_witness_endpoint(tmp_path):
    """POST /add-checkpoint of a real `tlog-monitor` in witness mode: 4xx for anything malformed, never
    a 500 or a traceback, and nothing cosigned."""
    from tests.witnesses import seeded_signer, start_witness

    signer = seeded_signer("example.com/witnessed")
    witness = start_witness(tmp_path, "witness.example/w", [signer.to_vkey()])
    rng = random.Random(8)
    bodies = [b"", b"\n", b"\n\n\n", b"old 0\n\n", b"old -1\n\nexample.com/witnessed\n1\n\n", b"\xff\xfe\xfd\n\n",
              b"old 0\n\n" + b"\x00" * 500, b"old 99999999999999999999999\n\nx\n", b"old 0\n" + b"AAAA\n" * 10_000,
              b"[" * 50_000, os.urandom(2048), bytes(rng.randrange(256) for _ in range(300)),
              b"old 0\n\nexample.com/witnessed\n5\n" + b"A" * 44 + b"\n\n\xe2\x80\x94 x\n", b"x" * (3 << 20)]
    try:
        async with aiohttp.ClientSession() as http:
            for body in bodies:
                async with http.post(witness.url + "/add-checkpoint", data=io.BytesIO(body)) as r:
                    answer = await r.read()
                    assert 400 <= r.status < 500, (body[:60], r.status, answer[:200])
                    assert b"Traceback" not in answer
            async with http.get(witness.url + "/witness") as r:
                info = await r.json()
        assert all(not x.get("size") for x in info["logs"]), info
    finally:
        witness.stop()


ADMIN_LIKE = [
    ("POST", "/v1/tokens"), ("GET", "/v1/tokens"), ("DELETE", "/v1/tokens/x"), ("POST", "/admin"),
    ("GET", "/admin/tokens"), ("POST", "/v1/erase"), ("POST", "/v1/keys"), ("PUT", "/v1/keys/x"),
    ("DELETE", "/v1/keys/x"), ("DELETE", "/v1/entries/1"), ("PUT", "/v1/entries/1"), ("POST", "/v1/config"),
    ("POST", "/v1/checkpoint"), ("PUT", "/checkpoint"), ("POST", "/tile/0/000"), ("GET", "/debug"),
]


async def test_no_admin_operation_on_the_public_listener(world):
    """Tokens, erasures and configuration are local operations (`tlog tokens|erase` on the data directory)
    or operator-signed entries; the HTTP listener offers nothing else that changes the log."""
    server, _, _, http = world
    before = await size_of(http, server.url)
    for method, path in ADMIN_LIKE:
        async with http.request(method, server.url + path, json={"name": "x", "role": "admin"}) as r:
            assert r.status in (404, 405), (method, path, r.status)
    assert await size_of(http, server.url) == before


@pytest.mark.parametrize("name, mode", [("log.key", 0o640), ("operator.key", 0o604)])
def test_serve_refuses_private_key_files_others_can_access(tmp_path, name, mode):
    from tests.conftest import init_log, tlog_cmd

    data = str(tmp_path / "log")
    init_log(data)
    os.chmod(os.path.join(data, name), mode)
    proc = tlog_cmd("serve", "--data", data, "--listen", "127.0.0.1:0", check=False, timeout=30)
    assert proc.returncode == 2 and b"chmod 600" in proc.stderr and name.encode() in proc.stderr, proc.stderr
    assert b"Traceback" not in proc.stderr


async def test_backpressure_503_while_integration_is_stalled(tight_server):
    """The integration queue holds 4 entries (max_pending): while the database's write lock is held by
    someone else, the sequencer cannot commit; further appends get 503 with Retry-After at once, reads
    go on, and every entry that was accepted is integrated once the lock is released."""
    import asyncio
    import sqlite3

    from tests.crashkit import Ledger, register_keys, submission
    from tlog.note import Verifier

    server = tight_server
    [key] = await register_keys(server.url, server.vkey, server.data, 1)
    ledger = Ledger(ORIGIN, Verifier.from_vkey(server.vkey))
    lock = sqlite3.connect(os.path.join(server.data, "log.db"), isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")  # the write lock: the sequencer's next commit waits (busy timeout 10 s)
    try:
        async with aiohttp.ClientSession() as http:
            before = await size_of(http, server.url)

            async def one(i: int):
                sub = submission(ORIGIN, key, b"%d" % i)
                async with http.post(server.url + "/v1/entries", json=sub.request) as r:
                    return sub, r.status, r.headers.get("Retry-After"), await r.read()

            tasks = [asyncio.ensure_future(one(i)) for i in range(30)]
            await asyncio.sleep(1.5)
            early = [t.result() for t in tasks if t.done()]  # answered while nothing can be committed
            assert early and all(status == 503 for _, status, _, _ in early), early[:3]
            assert await size_of(http, server.url) == before  # reads are served meanwhile
            lock.execute("ROLLBACK")
            results = await asyncio.gather(*tasks)
            refused = [(retry, body) for _, status, retry, body in results if status == 503]
            accepted = [(sub, json.loads(body)) for sub, status, _, body in results if status == 201]
            assert len(accepted) + len(refused) == 30 and len(accepted) >= 1, [r[1] for r in results]
            assert all(int(retry) >= 1 and b"backlog" in body for retry, body in refused)
            for sub, answer in accepted:
                ledger.ack(sub, answer)
            assert await size_of(http, server.url) == before + len(accepted)
    finally:
        lock.close()
    assert ledger.problems == []


async def test_ecdsa_malleated_duplicate_gets_the_same_index(world):
    """(r, s) and (r, n - s) are both valid ECDSA signatures of one entry: the second is a duplicate
    (the identity excludes the signature), answered with the original index and nothing added."""
    server, keys, _, http = world
    req = event_request(keys["p256"])
    async with http.post(server.url + "/v1/entries", json=req) as r:
        assert r.status == 201
        first = await r.json()
    before = await size_of(http, server.url)
    r_, s_ = decode_der_signature(base64.b64decode(req["signature"]))
    twin = {**req, "signature": b64(encode_der_signature(r_, N_P256 - s_))}
    assert twin["signature"] != req["signature"]
    async with http.post(server.url + "/v1/entries", json=twin) as r:
        assert r.status == 200
        again = await r.json()
    assert again["index"] == first["index"] and again["duplicate"] is True
    assert await size_of(http, server.url) == before
