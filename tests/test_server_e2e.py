"""End to end with real processes: `tlog init`, `tlog serve`, keygen, register, append through the CLI
and the client, receipts verified offline, proofs verified with the core library, tiles read back and
the root recomputed from them, a restart, and concurrent writers."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import stat
import time

import aiohttp
import pytest

from tests.conftest import init_log, start_server, tlog_cmd
from tlog.checkpoint import open_checkpoint
from tlog.client import LogClient
from tlog.entry import Leaf
from tlog.hashing import leaf_hash
from tlog.keys import KeyType, PrivateKey
from tlog.note import Verifier
from tlog.proof import verify_consistency, verify_inclusion
from tlog.tiles import TileHashReader, decode_entry_bundle, entry_tiles_for_size, tiles_for_size
from tlog.tree import CompactRange, perfect_subtrees
from tlog.tlogproof import TlogProof, verify_tlog_proof


def _env(server) -> dict:
    return {"TLOG_LOG": server.url, "TLOG_LOG_KEY": server.vkey}


def test_init_refuses_to_overwrite_and_serve_refuses_missing_log(tmp_path):
    data = str(tmp_path / "log")
    vkey = init_log(data, "example.com/once")
    assert vkey.startswith("example.com/once+")
    for name in ("log.key", "operator.key"):
        assert stat.S_IMODE(os.stat(os.path.join(data, name)).st_mode) == 0o600
    again = tlog_cmd("init", "--data", data, "--origin", "example.com/once", check=False)
    assert again.returncode == 2 and b"refusing to overwrite" in again.stderr
    assert b"Traceback" not in again.stderr
    for missing in (str(tmp_path / "nothing"), str(tmp_path)):
        proc = tlog_cmd("serve", "--data", missing, "--listen", "127.0.0.1:0", check=False)
        assert proc.returncode == 2, proc.stderr
        assert b"tlog init" in proc.stderr and b"Traceback" not in proc.stderr
    assert not os.path.exists(os.path.join(str(tmp_path / "nothing"), "log.db"))


def test_serve_refuses_key_files_readable_by_others(tmp_path):
    data = str(tmp_path / "log")
    init_log(data)
    os.chmod(os.path.join(data, "log.key"), 0o644)
    proc = tlog_cmd("serve", "--data", data, "--listen", "127.0.0.1:0", check=False)
    assert proc.returncode != 0 and b"chmod 600" in proc.stderr and b"Traceback" not in proc.stderr


def test_cli_workflow_register_append_verify(log_server, tmp_path):
    env = _env(log_server)
    key = str(tmp_path / "writer.key")
    out = tlog_cmd("keygen", "--out", key, "--type", "p256").stdout.decode()
    assert "public key: p256:" in out and stat.S_IMODE(os.stat(key).st_mode) == 0o600
    reg = tlog_cmd("keys", "register", "--operator-key", os.path.join(log_server.data, "operator.key"),
                   "--key", key + ".pub", "--name", "billing", "--rate", "100", env=env)
    assert b"recorded at index 1" in reg.stdout
    receipt = str(tmp_path / "r.tlog-proof")
    app = tlog_cmd("append", "--key", key, "--receipt", receipt, input=b'{"user":"alice"}', env=env)
    assert b"appended at index 2" in app.stderr
    ok = tlog_cmd("verify", receipt, "--log-key", log_server.vkey, "--writer-key", key + ".pub")
    assert ok.stdout.startswith(b"OK: entry 2 is in example.com/test-log at tree size 3")
    # The same receipt against another log's key, and a tampered receipt, fail with exit 1.
    other = Verifier.from_vkey(init_log(str(tmp_path / "other"), "example.com/test-log"))
    bad = tlog_cmd("verify", receipt, "--log-key", other.to_vkey(), check=False)
    assert bad.returncode == 1 and b"INVALID" in bad.stderr
    with open(receipt, "rb") as f:
        text = f.read().split(b"\n")
    text[3] = base64.b64encode(bytes(32))
    with open(receipt, "wb") as f:
        f.write(b"\n".join(text))
    bad = tlog_cmd("verify", receipt, "--log-key", log_server.vkey, check=False)
    assert bad.returncode == 1 and b"INVALID" in bad.stderr and b"Traceback" not in bad.stderr
    listing = tlog_cmd("keys", "list", "--json", env=env).stdout
    registry = json.loads(listing)["registry"]
    [record] = registry["keys"].values()
    assert record["name"] == "billing" and record["rate_limit"] == 100
    got = json.loads(tlog_cmd("get", "2", env=env).stdout)  # payloads need a reader token (spec/privacy.md)
    assert got["payload"] is None and got["payload_access"] == "reader token required"
    token = tlog_cmd("tokens", "create", "--data", log_server.data).stdout.decode().strip()
    got = json.loads(tlog_cmd("get", "2", "--token", token, env=env).stdout)
    assert base64.b64decode(got["payload"]) == b'{"user":"alice"}' and got["key_name"] == "billing"


async def _register(client: LogClient, data: str, key: PrivateKey, name: str):
    from tlog.entry import register_event
    from tlog.server.config import check_private_file

    operator = PrivateKey.from_pem(check_private_file(os.path.join(data, "operator.key")))
    now = time.time_ns() // 1_000_000
    event = register_event(client.origin, now, key.public_key, name, now - 1000, now + 86_400_000)
    return await client.submit_operator_entry(event, operator)


async def _recompute_from_tiles(url: str, size: int) -> tuple[bytes, list[bytes]]:
    """Root from hash tiles, and every leaf from the entry bundles, as an outside verifier would."""
    async with aiohttp.ClientSession() as http:
        async def fetch(path: str) -> bytes:
            async with http.get(f"{url}/{path}") as r:
                assert r.status == 200, (path, r.status)
                return await r.read()

        tiles = {t: await fetch(t.path()) for t in tiles_for_size(size)}
        leaves = []
        for t in entry_tiles_for_size(size):
            leaves += decode_entry_bundle(await fetch(t.path()), expected_count=t.width)
    reader = TileHashReader(size, lambda wanted: [tiles[t] for t in wanted])
    cr = CompactRange.from_hashes(size, reader.read_hashes(perfect_subtrees(size)))
    level0 = b"".join(data for t, data in sorted(tiles.items()) if t.level == 0)
    assert level0 == b"".join(leaf_hash(x) for x in leaves)
    return cr.root(), leaves


async def test_client_appends_proofs_and_tiles(log_server):
    writer = PrivateKey.generate(KeyType.ED25519)
    async with LogClient(log_server.url, log_key=log_server.vkey) as client:
        await _register(client, log_server.data, writer, "app")
        receipts = [await client.append(writer, f"event {i}".encode()) for i in range(20)]
        assert [r.index for r in receipts] == list(range(2, 22))
        cp = await client.checkpoint()
        assert cp.size == 22
        for r in receipts:  # every receipt verifies offline and is consistent with the latest head
            verify_tlog_proof(TlogProof.parse(r.tlog_proof), origin=client.origin, log_verifier=client.verifier)
            proof = await client.consistency_proof(r.checkpoint.size, cp.size)
            verify_consistency(r.checkpoint.size, cp.size, proof, r.checkpoint.root, cp.root)
            inc = await client.inclusion_proof(r.index, cp.size)
            verify_inclusion(r.leaf.hash(), r.index, cp.size, inc, cp.root)
    root, leaves = await _recompute_from_tiles(log_server.url, cp.size)
    assert root == cp.root and len(leaves) == 22
    assert Leaf.decode(leaves[5]).entry == receipts[3].leaf.entry


async def test_duplicate_returns_original_index(log_server):
    writer = PrivateKey.generate(KeyType.P256)
    async with LogClient(log_server.url, log_key=log_server.vkey) as client:
        await _register(client, log_server.data, writer, "dup")
        salt = os.urandom(16)
        first = await client.append(writer, b"same", salt=salt, timestamp_ms=None)
        entry = first.leaf.entry
        # Re-sign the same entry: ECDSA signatures differ each time, the identity does not.
        from tlog.entry import sign_entry

        second = await client.submit_event(entry, sign_entry(entry, writer), salt, b"same")
        assert second.duplicate and second.index == first.index
        assert (await client.checkpoint()).size == first.index + 1


async def test_restart_keeps_entries_and_checkpoint(tmp_path):
    data = str(tmp_path / "log")
    init_log(data)
    server = start_server(data)
    writer = PrivateKey.generate(KeyType.ED25519)
    try:
        async with LogClient(server.url, log_key=server.vkey) as client:
            await _register(client, data, writer, "w")
            receipts = [await client.append(writer, b"%d" % i) for i in range(5)]
            before = await client.checkpoint()
    finally:
        server.stop()
    server = start_server(data)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(server.url + "/checkpoint") as r:
                note = await r.read()
        cp, _ = open_checkpoint(note, "example.com/test-log", Verifier.from_vkey(server.vkey))
        assert (cp.size, cp.root) == (before.size, before.root)
        async with LogClient(server.url, log_key=server.vkey) as client:
            for r in receipts:
                got = await client.get_entry(r.index)
                assert base64.b64decode(got["leaf"]) == r.leaf.encode()
            more = await client.append(writer, b"after restart")
            assert more.index == before.size
    finally:
        server.stop()


async def test_concurrent_writers_get_distinct_indices(log_server):
    writers = [PrivateKey.generate(KeyType.ED25519) for _ in range(5)]
    async with LogClient(log_server.url, log_key=log_server.vkey) as client:
        for i, w in enumerate(writers):
            await _register(client, log_server.data, w, f"writer-{i}")
        start = (await client.checkpoint()).size

        async def one(n: int):
            async with LogClient(log_server.url, log_key=log_server.vkey) as c:
                return [await c.append(writers[n % 5], b"writer %d entry %d" % (n, k)) for k in range(3)]

        results = [r for batch in await asyncio.gather(*(one(n) for n in range(60))) for r in batch]
        indices = sorted(r.index for r in results)
        assert indices == list(range(start, start + 180))
        cp = await client.checkpoint()
        for r in results:
            verify_tlog_proof(TlogProof.parse(r.tlog_proof), origin=client.origin, log_verifier=client.verifier)
            proof = await client.consistency_proof(r.checkpoint.size, cp.size)
            verify_consistency(r.checkpoint.size, cp.size, proof, r.checkpoint.root, cp.root)
    root, leaves = await _recompute_from_tiles(log_server.url, cp.size)
    assert root == cp.root


@pytest.mark.parametrize("key_type", ["ed25519", "p256"])
def test_keygen_refuses_overwrite(tmp_path, key_type):
    key = str(tmp_path / "k")
    tlog_cmd("keygen", "--out", key, "--type", key_type)
    again = tlog_cmd("keygen", "--out", key, "--type", key_type, check=False)
    assert again.returncode == 2 and b"refusing to overwrite" in again.stderr


def test_cli_rotate_and_revoke(log_server, tmp_path):
    env = _env(log_server)
    op = os.path.join(log_server.data, "operator.key")
    old, new = str(tmp_path / "old.key"), str(tmp_path / "new.key")
    tlog_cmd("keygen", "--out", old)
    tlog_cmd("keygen", "--out", new, "--type", "p256")
    tlog_cmd("keys", "register", "--operator-key", op, "--key", old + ".pub", "--name", "svc", env=env)
    tlog_cmd("append", "--key", old, input=b"before rotation", env=env)
    rot = tlog_cmd("keys", "rotate", "--operator-key", op, "--old", "svc", "--key", new + ".pub",
                   "--overlap", "1h", env=env)
    assert b"rotate recorded at index 3" in rot.stdout
    # During the overlap both keys append.
    tlog_cmd("append", "--key", old, input=b"old key in overlap", env=env)
    tlog_cmd("append", "--key", new, input=b"new key", env=env)
    listing = json.loads(tlog_cmd("keys", "list", "--json", env=env).stdout)["registry"]
    recs = {r["name"] + ("-new" if r.get("replaces") else ""): r for r in listing["keys"].values()}
    assert recs["svc"]["replaced_by"] == recs["svc-new"]["key_id"]
    assert listing["names"]["svc"] == recs["svc-new"]["key_id"]
    rev = tlog_cmd("keys", "revoke", "--operator-key", op, "--key", old + ".pub",
                   "--compromised-since", "+1h", env=env)
    assert b"revoke recorded" in rev.stdout
    refused = tlog_cmd("append", "--key", old, input=b"after revocation", env=env, check=False)
    assert refused.returncode == 1 and b"403" in refused.stderr and b"revoked" in refused.stderr
    tlog_cmd("append", "--key", new, input=b"new key still fine", env=env)
    human = tlog_cmd("keys", "list", env=env).stdout.decode()
    assert "COMPROMISED since" in human and "active" in human
    # Without the operator key nothing is registered.
    stranger = str(tmp_path / "stranger.key")
    tlog_cmd("keygen", "--out", stranger)
    bad = tlog_cmd("keys", "register", "--operator-key", stranger, "--key", stranger + ".pub",
                   "--name", "x", env=env, check=False)
    assert bad.returncode == 1 and b"403" in bad.stderr


def test_sync_client_and_get_checks_registry(log_server, tmp_path):
    from tlog.client import SyncLogClient

    env = _env(log_server)
    key = str(tmp_path / "w.key")
    tlog_cmd("keygen", "--out", key)
    tlog_cmd("keys", "register", "--operator-key", os.path.join(log_server.data, "operator.key"),
             "--key", key + ".pub", "--name", "sync", env=env)
    with open(key, "rb") as f:
        writer = PrivateKey.from_pem(f.read())
    with SyncLogClient(log_server.url, log_key=log_server.vkey) as client:
        receipt = client.append(writer, b"from a script")
        assert receipt.index == 2 and client.checkpoint().size == 3
    got = json.loads(tlog_cmd("get", "2", env=env).stdout)
    assert got["signature_verified_with"] == writer.public_key.key_id_hex
    missing = tlog_cmd("get", "99", env=env, check=False)
    assert missing.returncode == 1 and b"404" in missing.stderr
    unreachable = tlog_cmd("get", "1", "--log", "http://127.0.0.1:1", env=env, check=False)
    assert unreachable.returncode == 3 and b"cannot reach" in unreachable.stderr
