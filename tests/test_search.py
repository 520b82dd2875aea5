"""Search (GET /v1/entries?…, `tlog search`) and key timelines (`tlog keys timeline`).

A real server with several keys (one rotated, so a name covers two key ids) and interleaved entries:
every query returns exactly the expected entries, in index order, across page boundaries; `--verify`
checks each result's inclusion proof; the SQL behind the queries is an index search (query plans).
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import time

import aiohttp
import pytest

from tests.conftest import tlog_cmd
from tests.test_privacy import create_token, operator_key, register
from tlog.client import LogClient
from tlog.entry import Leaf, rotate_event
from tlog.keys import KeyType, PrivateKey
from tlog.errors import ProofError
from tlog.proof import verify_inclusion
from tlog.server import sqlite as sqlite_backend
from tlog.tiles import decode_entry_bundle


def _env(server) -> dict:
    return {"TLOG_LOG": server.url, "TLOG_LOG_KEY": server.vkey}


@pytest.fixture
async def world(log_server):
    """Keys a, b, c (c rotated to c2 half-way) writing interleaved entries; returns the leaves by index."""
    keys = {n: PrivateKey.generate(KeyType.ED25519) for n in ("a", "b", "c", "c2")}
    async with LogClient(log_server.url, log_key=log_server.vkey) as client:
        for name in ("a", "b", "c"):
            await register(client, log_server.data, keys[name], name)
        for i in range(24):
            name = "abc"[i % 3] if i < 12 or i % 3 != 2 else "c2"
            if i == 12:
                now = time.time_ns() // 1_000_000
                ev = rotate_event(client.origin, now, keys["c"].public_key.key_id, keys["c2"].public_key, "c",
                                  now - 1000, now + 86_400_000, now + 60_000)
                await client.submit_operator_entry(ev, operator_key(log_server.data))
            await client.append(keys[name], b"%s-%d" % (name.encode(), i))
            if i % 5 == 4:
                time.sleep(0.01)  # distinct integration times for the time filters
        cp = await client.checkpoint()
    assert cp.size < 256  # one partial entry bundle holds every leaf
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{log_server.url}/tile/entries/000.p/{cp.size}") as r:
            leaves = {i: Leaf.decode(b) for i, b in enumerate(decode_entry_bundle(await r.read()))}
    return log_server, keys, leaves


async def _search_all(url: str, query: dict, token: str | None = None) -> tuple[list[dict], int]:
    query = dict(query)
    out, pages, after = [], 0, query.pop("after", None)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http:
        while True:
            params = {k: str(v) for k, v in {**query, "after": after}.items() if v is not None}
            async with http.get(url + "/v1/entries", params=params, headers=headers) as r:
                assert r.status == 200, await r.text()
                page = await r.json()
            pages += 1
            assert len(page["entries"]) <= int(query.get("limit", 100))
            out += page["entries"]
            after = page["next"]
            if after is None:
                return out, pages
            assert after == page["entries"][-1]["index"]


def _expected(leaves: dict[int, Leaf], key_ids: set[bytes] | None = None, since=None, until=None, after=None):
    return [i for i, leaf in sorted(leaves.items())
            if (key_ids is None or getattr(leaf.entry, "key_id", None) in key_ids)
            and (since is None or leaf.integrated_ms >= since) and (until is None or leaf.integrated_ms < until)
            and (after is None or i > after)]


async def test_search_returns_exactly_the_matching_entries_across_pages(world):
    server, keys, leaves = world
    kid = {n: k.public_key.key_id for n, k in keys.items()}
    times = sorted({leaf.integrated_ms for leaf in leaves.values()})
    since, until = times[len(times) // 4], times[3 * len(times) // 4]
    cases = [
        ({}, _expected(leaves)),
        ({"key": "a"}, _expected(leaves, {kid["a"]})),
        ({"key": kid["b"].hex()}, _expected(leaves, {kid["b"]})),
        ({"key": "c"}, _expected(leaves, {kid["c"], kid["c2"]})),  # a name covers the rotation
        ({"key": kid["c2"].hex()}, _expected(leaves, {kid["c2"]})),
        ({"since": since}, _expected(leaves, since=since)),
        ({"until": until}, _expected(leaves, until=until)),
        ({"key": "c", "since": since, "until": until}, _expected(leaves, {kid["c"], kid["c2"]}, since, until)),
        ({"key": "a", "after": 10}, _expected(leaves, {kid["a"]}, after=10)),
        ({"since": until, "until": since}, []),
    ]
    assert len(cases[3][1]) == 8 and cases[7][1]
    for query, expected in cases:
        for limit in (1, 3, 7, 1000):
            got, pages = await _search_all(server.url, {**query, "limit": limit})
            assert [e["index"] for e in got] == expected, (query, limit)
            assert pages == max(1, -(-len(expected) // limit))
            for e in got:
                assert base64.b64decode(e["leaf"]) == leaves[e["index"]].encode()
    # ISO 8601 times are the same bounds as milliseconds.
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(since // 1000)) + ".%03dZ" % (since % 1000)
    assert (await _search_all(server.url, {"since": iso}))[0] == (await _search_all(server.url, {"since": since}))[0]
    # Without a token no payloads; with one, payloads (counted like any read).
    got, _ = await _search_all(server.url, {"key": "a", "limit": 5})
    assert all(e["payload"] is None and e["payload_access"] == "reader token required" for e in got)
    token = create_token(server.data)
    got, _ = await _search_all(server.url, {"key": "a", "limit": 5}, token)
    assert [base64.b64decode(e["payload"]) for e in got] == [b"a-%d" % i for i in range(0, 24, 3)]


@pytest.mark.parametrize("query, status, words", [
    ("limit=0", 400, "limit"), ("limit=1001", 400, "limit"), ("limit=01", 400, "limit"),
    ("after=-1", 400, "after"), ("since=yesterday", 400, "since"), ("until=1e3", 400, "until"),
    ("colour=red", 400, "unknown"), ("key=nobody", 404, "nobody"), ("key=" + "ab" * 32, 404, "not registered"),
    ("after=1&after=2", 400, "once"),
])
async def test_search_rejects_bad_queries(log_server, query, status, words):
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{log_server.url}/v1/entries?{query}") as r:
            assert r.status == status
            assert words in (await r.json())["error"]


async def test_cli_search_verify_json_and_key_timeline(world):
    server, keys, leaves = world
    env = _env(server)
    token = create_token(server.data)
    out = tlog_cmd("search", "--key", "c", "--verify", "--json", "--token", token, env=env).stdout.decode()
    results = [json.loads(line) for line in out.splitlines()]
    kid = {keys["c"].public_key.key_id, keys["c2"].public_key.key_id}
    assert [r["index"] for r in results] == _expected(leaves, kid)
    async with LogClient(server.url, log_key=server.vkey) as client:
        cp = await client.checkpoint()
        for r in results:  # every --verify'd result carries a valid inclusion proof
            assert r["verified_in_tree_size"] == cp.size and r["payload_access"] == "granted"
            proof = await client.inclusion_proof(r["index"], cp.size)
            verify_inclusion(Leaf.decode(base64.b64decode(r["leaf"])).hash(), r["index"], cp.size, proof, cp.root)
        # The client checks a payload against the leaf's commitment: a swapped payload is caught.
        forged = {**results[0], "payload": base64.b64encode(b"c-999").decode()}
        with pytest.raises(ProofError, match="commitment"):
            await client.verify_entry(forged, cp)
    text = tlog_cmd("search", "--key", "a", "--limit", "3", "--token", token, env=env)
    lines = text.stdout.decode().splitlines()
    assert len(lines) == 3 and "a-0" in lines[0] and " a " in lines[0] and b"3 entries" in text.stderr
    timeline = tlog_cmd("keys", "timeline", "c", env=env).stdout.decode()
    assert "registered" in timeline and "rotated to " + keys["c2"].public_key.key_id.hex() in timeline
    assert "last used (4 entries)" in timeline and "first used" in timeline
    data = json.loads(tlog_cmd("keys", "timeline", keys["a"].public_key.key_id.hex(), "--json", env=env).stdout)
    [a] = data["keys"]
    assert a["usage"]["count"] == 8 and a["usage"]["first_index"] == min(_expected(leaves, {keys["a"].public_key.key_id}))
    missing = tlog_cmd("keys", "timeline", "nobody", env=env, check=False)
    assert missing.returncode == 1 and b"nobody" in missing.stderr and b"Traceback" not in missing.stderr


def test_search_queries_are_index_searches(tmp_path):
    """Whatever the log's size, each query is a B-tree search: the plan never scans a table."""
    db = str(tmp_path / "plan.db")
    conn = sqlite3.connect(db)
    conn.executescript(sqlite_backend._schema())
    rows = [(i, b"x", i, i, bytes([i % 7]) * 32 if i % 11 else None, 1000 + i // 3) for i in range(5000)]
    conn.executemany("INSERT INTO leaves (idx, leaf, ident, lhash, key_id, integrated_ms) VALUES (?,?,?,?,?,?)", rows)
    conn.execute("INSERT INTO head (id, size, root, timestamp_ms, note) VALUES (1, 5000, x'', 0, x'')")
    conn.execute(sqlite_backend.SQL_INDEX_LHASH, (0, 4096))
    conn.execute(sqlite_backend.SQL_INDEX_KEY, (0, 4096))
    conn.execute("ANALYZE")
    bits = sqlite_backend.INDEX_CHUNK_BITS
    tail = "leaves USING INTEGER PRIMARY KEY (rowid>?"  # the unindexed tail: a range of the rowid
    for sql, params, uses in [
        (sqlite_backend.SQL_FIRST_AT, (1500,), ["leaves_time"]),
        (sqlite_backend.SQL_SEARCH_ALL, (10, 4000, 0, 1 << 62, 101), ["INTEGER PRIMARY KEY"]),
        (sqlite_backend.sql_search_key(bits), (bytes(32), 10, 4000, 0, 1 << 62, 101),
         ["k USING PRIMARY KEY (key_id=?", tail]),
        (sqlite_backend.sql_key_usage(bits), (bytes(32), 4000), ["key_index USING PRIMARY KEY (key_id=?", tail]),
        (sqlite_backend.sql_find_lhash(bits, 3), (1, 2, 3), ["lhash_index USING PRIMARY KEY (lhash=?", tail]),
        (sqlite_backend.SQL_PAYLOAD_INDICES, (4000, 256), ["INTEGER PRIMARY KEY"]),
    ]:
        steps = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
        plan = " | ".join(steps)
        # No table is ever scanned: every step reads a B-tree by key (a SCAN of a subquery's rows is
        # not a table scan, and only the key-usage count has one).
        scans = [s for s in steps if s.startswith("SCAN") and "subquery" not in s]
        assert not scans and all(u in plan for u in uses), (sql, plan)
        assert any(s.startswith("SEARCH") for s in steps), plan
    sorted_by_key = [int(i) for (i,) in conn.execute("SELECT idx FROM key_index")]
    assert len(sorted_by_key) == sum(1 for i in range(4096) if i % 11)
    conn.close()
    assert os.path.exists(db)
