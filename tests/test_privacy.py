"""Payload privacy and erasure, end to end with real `tlog serve` processes (spec/privacy.md).

* payloads need a reader token: none, revoked, expired and malformed tokens are refused, a valid
  one works and every read is counted (database) and logged (structured log line);
* `tlog erase`: payload and salt are gone (API, and the raw bytes of log.db and log.db-wal), while
  every receipt, inclusion proof, consistency proof and checkpoint issued before still verifies.
"""

from __future__ import annotations

import base64
import json
import os
import time

import aiohttp
import pytest

from tests.conftest import tlog_cmd
from tlog.checkpoint import open_checkpoint
from tlog.client import LogClient, LogServerError
from tlog.entry import Erasure, Leaf, register_event
from tlog.keys import KeyType, PrivateKey
from tlog.note import Verifier
from tlog.proof import verify_consistency, verify_inclusion
from tlog.server.config import check_private_file
from tlog.tlogproof import TlogProof, verify_tlog_proof


def _env(server) -> dict:
    return {"TLOG_LOG": server.url, "TLOG_LOG_KEY": server.vkey}


def operator_key(data: str) -> PrivateKey:
    return PrivateKey.from_pem(check_private_file(os.path.join(data, "operator.key")))


async def register(client: LogClient, data: str, key: PrivateKey, name: str):
    now = time.time_ns() // 1_000_000
    event = register_event(client.origin, now, key.public_key, name, now - 1000, now + 86_400_000)
    return await client.submit_operator_entry(event, operator_key(data))


def create_token(data: str, *extra: str) -> str:
    out = tlog_cmd("tokens", "create", "--data", data, *extra).stdout.decode().strip()
    assert out.startswith("tlog_") and "\n" not in out
    return out


def token_id(token: str) -> str:
    return token.split("_", 2)[1]


def tokens_json(data: str) -> dict[str, dict]:
    return {t["id"]: t for t in json.loads(tlog_cmd("tokens", "list", "--data", data, "--json").stdout)}


async def get_raw(url: str, index: int, token: str | None = None) -> tuple[int, dict, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/v1/entries/{index}", headers=headers) as r:
            return r.status, await r.json(), dict(r.headers)


async def test_payload_needs_a_valid_reader_token(log_server):
    data = log_server.data
    writer = PrivateKey.generate(KeyType.ED25519)
    async with LogClient(log_server.url, log_key=log_server.vkey) as client:
        await register(client, data, writer, "w1")
        receipt = await client.append(writer, b'{"patient":"P-123"}')
    index = receipt.index

    # No token: the entry, its leaf and commitment, but no payload and no salt, and why.
    status, body, _ = await get_raw(log_server.url, index)
    assert status == 200
    assert body["payload"] is None and body["salt"] is None
    assert body["payload_access"] == "reader token required"
    assert base64.b64decode(body["leaf"]) == receipt.leaf.encode()

    # A valid token: the payload, checked against the commitment by the client.
    token = create_token(data, "--name", "auditor")
    async with LogClient(log_server.url, log_key=log_server.vkey, token=token) as client:
        got = await client.get_entry(index)
        assert base64.b64decode(got["payload"]) == b'{"patient":"P-123"}'
        assert got["payload_access"] == "granted" and len(base64.b64decode(got["salt"])) == 32
        await client.get_entry(index)
    cli = json.loads(tlog_cmd("get", str(index), "--token", token, env=_env(log_server)).stdout)
    assert base64.b64decode(cli["payload"]) == b'{"patient":"P-123"}'

    # Counted per token in the database (flushed shortly after the reads) ...
    deadline = time.monotonic() + 10
    while tokens_json(data)[token_id(token)]["reads"] < 3:
        assert time.monotonic() < deadline, tokens_json(data)
        time.sleep(0.1)
    assert tokens_json(data)[token_id(token)]["last_read_ms"] is not None
    # ... and logged: who read what, when, with the request id.
    reads = [e for e in log_server.logs() if e["event"] == "payload_read"]
    assert len(reads) == 3 and {e["index"] for e in reads} == {index}
    assert all(e["token_id"] == token_id(token) and e["token_name"] == "auditor" and e["request_id"] for e in reads)

    # Malformed, unknown, revoked and expired tokens: 401 with a one-line reason, never the payload.
    forged = f"tlog_{token_id(token)}_{'A' * 43}"
    for bad, reason in [("nonsense", "malformed"), (forged, "unknown token")]:
        status, body, headers = await get_raw(log_server.url, index, bad)
        assert status == 401 and reason in body["error"] and "\n" not in body["error"]
        assert 'error="invalid_token"' in headers["WWW-Authenticate"]
    revoked = create_token(data, "--name", "leaver")
    assert (await get_raw(log_server.url, index, revoked))[0] == 200
    out = tlog_cmd("tokens", "revoke", "--data", data, token_id(revoked)).stdout
    assert b"revoked" in out
    status, body, _ = await get_raw(log_server.url, index, revoked)  # no restart needed
    assert status == 401 and "revoked" in body["error"]
    expiring = create_token(data, "--expires", "+1s")
    assert (await get_raw(log_server.url, index, expiring))[0] == 200
    time.sleep(1.2)
    status, body, _ = await get_raw(log_server.url, index, expiring)
    assert status == 401 and "expired" in body["error"]
    async with LogClient(log_server.url, log_key=log_server.vkey, token=revoked) as client:
        with pytest.raises(LogServerError) as err:
            await client.get_entry(index)
        assert err.value.status == 401
    listed = tokens_json(data)
    assert listed[token_id(revoked)]["status"] == "revoked" and listed[token_id(expiring)]["status"] == "expired"
    # The database holds only hashes of the tokens.
    with open(os.path.join(data, "log.db"), "rb") as f:
        raw = f.read()
    assert token.encode() not in raw and token.split("_", 2)[2].encode() not in raw


async def test_every_writing_connection_overwrites_deleted_bytes(tmp_path):
    """secure_delete on the writer (which deletes erased payloads), the purge and the tokens connections."""
    from tlog.server.init import init_log as init
    from tlog.server.sqlite import _pragma, open_storage
    from tlog.server.tokens import TokenStore

    await init(str(tmp_path / "log"), "example.com/secure-delete")
    path = str(tmp_path / "log" / "log.db")
    store = await open_storage(path)
    tokens = await TokenStore.open(path)
    try:
        assert await store.purge()  # opens the purge connection
        assert await store._w.run(store._w.pragma, "secure_delete") == "1"
        assert await store._w.run(store._w.pragma, "journal_mode") == "wal"
        for conn in (store._admin, tokens._conn):
            assert await _pragma(conn, "secure_delete") == "1"
            assert await _pragma(conn, "journal_mode") == "wal"
    finally:
        await tokens.close()
        await store.close()


def _files(data: str) -> bytes:
    out = b""
    for name in ("log.db", "log.db-wal"):
        path = os.path.join(data, name)
        if os.path.exists(path):
            with open(path, "rb") as f:
                out += f.read()
    return out


async def test_erasure_removes_payload_and_keeps_every_proof(log_server, tmp_path):
    data, env = log_server.data, _env(log_server)
    secret = b"SSN-078-05-1120-" + os.urandom(8).hex().encode()
    writer = PrivateKey.generate(KeyType.ED25519)
    verifier = Verifier.from_vkey(log_server.vkey)
    async with LogClient(log_server.url, log_key=log_server.vkey) as client:
        await register(client, data, writer, "hr")
        receipts = [await client.append(writer, b"before %d" % i) for i in range(3)]
        target = await client.append(writer, secret)
        receipts += [target] + [await client.append(writer, b"after %d" % i) for i in range(3)]
        cp_before = await client.checkpoint()
        cp_note_before = client.latest[1]
        proofs_before = {r.index: await client.inclusion_proof(r.index, cp_before.size) for r in receipts}
    token = create_token(data)
    salt = base64.b64decode((await get_raw(log_server.url, target.index, token))[1]["salt"])
    assert secret in _files(data) and salt in _files(data)  # the check below is meaningful

    out = tlog_cmd("erase", str(target.index), "--reason", "GDPR art. 17 request 2026-117",
                   "--operator-key", os.path.join(data, "operator.key"),
                   "--receipt", str(tmp_path / "erasure.tlog-proof"), env=env)
    assert b"erased the payload and salt of entry %d" % target.index in out.stdout

    # Gone: from the API (with a valid token), and from the raw bytes of the database and its WAL.
    status, body, _ = await get_raw(log_server.url, target.index, token)
    assert status == 200 and body["payload"] is None and body["salt"] is None
    assert body["payload_access"] == "erased"
    erasure = body["erasure"]
    assert erasure["reason"] == "GDPR art. 17 request 2026-117" and erasure["erasure_index"] == cp_before.size
    assert erasure["erased_ms"] >= body["integrated_ms"]
    raw = _files(data)
    assert secret not in raw and salt not in raw
    # The erasure entry itself is public, operator-signed, and names the index.
    status, ev, _ = await get_raw(log_server.url, erasure["erasure_index"])
    assert ev["kind"] == "Erasure" and ev["event"]["index"] == target.index
    leaf = Leaf.decode(base64.b64decode(ev["leaf"]))
    assert isinstance(leaf.entry, Erasure)
    operator_key(data).public_key.verify(leaf.signing_message(), leaf.signature)
    async with aiohttp.ClientSession() as http:
        async with http.get(log_server.url + "/v1/keys") as r:
            registry = (await r.json())["registry"]
    assert {"index": target.index, "erasure_index": erasure["erasure_index"]} in registry["erasures"]
    # A second erasure of the same entry is refused (403), nothing appended.
    again = tlog_cmd("erase", str(target.index), "--reason", "again",
                     "--operator-key", os.path.join(data, "operator.key"), env=env, check=False)
    assert again.returncode == 1 and b"already erased" in again.stderr

    # Every receipt issued before still verifies offline, and so do the old proofs and checkpoint.
    async with LogClient(log_server.url, log_key=log_server.vkey) as client:
        cp_after = await client.checkpoint()
        consistency = await client.consistency_proof(cp_before.size, cp_after.size)
        verify_consistency(cp_before.size, cp_after.size, consistency, cp_before.root, cp_after.root)
        for r in receipts:
            verify_tlog_proof(TlogProof.parse(r.tlog_proof), origin=verifier.name, log_verifier=verifier)
            verify_inclusion(r.leaf.hash(), r.index, cp_before.size, proofs_before[r.index], cp_before.root)
            assert await client.inclusion_proof(r.index, cp_before.size) == proofs_before[r.index]
            got = await client.get_entry(r.index)  # inclusion in the new tree
            assert base64.b64decode(got["leaf"]) == r.leaf.encode()
    open_checkpoint(cp_note_before, verifier.name, verifier)
    ok = tlog_cmd("verify", str(tmp_path / "erasure.tlog-proof"), "--log-key", log_server.vkey)
    assert ok.stdout.startswith(b"OK")
    logs = [e for e in log_server.logs() if e["event"] == "erasure"]
    assert logs and logs[-1]["erased_index"] == target.index and logs[-1]["request_id"]
