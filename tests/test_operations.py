"""Metrics, structured logs with request ids, and retention with an injected clock."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import time

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from tests.test_privacy import _files, create_token, operator_key, register
from tlog.client import LogClient, LogServerError
from tlog.entry import EventEntry, payload_commitment, sign_entry
from tlog.keys import KeyType, PrivateKey
from tlog.note import Verifier
from tlog.proof import verify_consistency
from tlog.server.app import make_app
from tlog.server.config import ConfigError, LogConfig
from tlog.server.init import init_log
from tlog.tlogproof import TlogProof, verify_tlog_proof

DAY_MS = 86_400_000


class Clock:
    """The log's clock: real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0

    def __call__(self) -> int:
        return time.time_ns() // 1_000_000 + self.offset


async def start_app(data: str, clock: Clock | None = None) -> tuple[TestServer, str]:
    server = TestServer(make_app(data, clock_ms=clock), host="127.0.0.1")
    await server.start_server()
    return server, str(server.make_url("")).rstrip("/")


def set_config(data: str, **values) -> None:
    path = LogConfig.path(data)
    with open(path) as f:
        config = json.load(f)
    config.update(values)
    with open(path, "w") as f:
        json.dump(config, f)


async def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/metrics") as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
            text = await r.text()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_parse_and_move(tmp_path):
    data = str(tmp_path / "log")
    res = await init_log(data, "example.com/metrics")
    server, url = await start_app(data)
    try:
        writer, stranger = PrivateKey.generate(KeyType.ED25519), PrivateKey.generate(KeyType.ED25519)
        kid = writer.public_key.key_id.hex()
        first = await scrape(url)
        assert value(first, "tlog_tree_size") == 1 and value(first, "tlog_checkpoint_age_seconds") >= 0
        async with LogClient(url, log_key=res.vkey) as client:
            await register(client, data, writer, "w")
            receipts = [await client.append(writer, b"m%d" % i) for i in range(3)]
            salt = os.urandom(16)
            await client.append(writer, b"dup", salt=salt, timestamp_ms=time.time_ns() // 1_000_000)
            dup_entry = EventEntry(client.origin, writer.public_key.key_id, time.time_ns() // 1_000_000,
                                   payload_commitment(salt, b"dup"))
            with pytest.raises(LogServerError) as err:  # unknown key
                await client.append(stranger, b"who?")
            assert err.value.status == 403
            with pytest.raises(LogServerError):  # bad signature
                await client.submit_event(dup_entry, sign_entry(dup_entry, stranger), salt, b"dup")
            token = create_token(data)
        async with LogClient(url, log_key=res.vkey, token=token) as reader:
            await reader.get_entry(receipts[0].index)
        after = await scrape(url)
        assert value(after, "tlog_appends_total", outcome="accepted", reason="", key_id=kid) == 4
        assert value(after, "tlog_appends_total", outcome="rejected", reason="unknown_key", key_id="unknown") == 1
        assert value(after, "tlog_appends_total", outcome="rejected", reason="bad_signature", key_id=kid) == 1
        assert value(after, "tlog_key_events_total", action="register") == 1
        assert value(after, "tlog_integration_latency_seconds_count") == 4
        assert value(after, "tlog_receipt_latency_seconds_count") == 4
        assert value(after, "tlog_batch_size_count") == 5 and value(after, "tlog_batch_size_sum") == 5
        assert value(after, "tlog_tree_size") == 6
        assert value(after, "tlog_payload_reads_total", token_id=token.split("_")[1]) == 1
        assert value(after, "tlog_http_requests_total", method="GET", route="/v1/entries/{index}", status="200") == 1
        assert value(after, "tlog_http_requests_total", method="POST", route="/v1/entries", status="403") == 2
        assert value(after, "tlog_erasures_total") == 0
        async with LogClient(url, log_key=res.vkey) as client:
            from tlog.entry import Erasure
            await client.submit_operator_entry(Erasure(client.origin, receipts[1].index, "test", 1),
                                               operator_key(data))
        assert value(await scrape(url), "tlog_erasures_total") == 1
    finally:
        await server.close()


async def test_request_ids_and_json_log_lines(log_server):
    async with aiohttp.ClientSession() as http:
        async with http.get(log_server.url + "/checkpoint", headers={"X-Request-Id": "trace-42.a"}) as r:
            assert r.headers["X-Request-Id"] == "trace-42.a"
        async with http.get(log_server.url + "/v1/entries/999", headers={"X-Request-Id": "bad id;" + "x" * 200}) as r:
            assert r.status == 404
            generated = r.headers["X-Request-Id"]
            # A fresh id, not the unsafe one echoed (a random id may well contain "bad": 0xbad...).
            assert re.fullmatch(r"[0-9a-f]{16}", generated), generated
        async with http.get(log_server.url + "/nowhere") as r:
            assert r.status == 404 and r.headers["X-Request-Id"]
    deadline = time.monotonic() + 5
    while True:
        lines = [e for e in log_server.logs() if e["event"] == "request"]
        by_id = {e["request_id"]: e for e in lines}
        if "trace-42.a" in by_id and generated in by_id or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert by_id["trace-42.a"]["status"] == 200 and by_id["trace-42.a"]["route"] == "/checkpoint"
    assert by_id[generated]["status"] == 404 and by_id[generated]["route"] == "/v1/entries/{index}"
    assert all({"ts", "level", "method", "path", "duration_ms"} <= set(e) for e in lines)
    writer = PrivateKey.generate(KeyType.ED25519)
    async with LogClient(log_server.url, log_key=log_server.vkey) as client:
        await register(client, log_server.data, writer, "logged")
    deadline = time.monotonic() + 5
    while not [e for e in log_server.logs() if e["event"] == "key_event"] and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    [event] = [e for e in log_server.logs() if e["event"] == "key_event"]
    assert event["action"] == "register" and event["name"] == "logged" and event["request_id"]


async def test_retention_erases_old_payloads_by_signed_erasures(tmp_path):
    data = str(tmp_path / "log")
    res = await init_log(data, "example.com/retention")
    set_config(data, retention_days=1, retention_interval_seconds=0.05)
    clock = Clock()
    server, url = await start_app(data, clock)
    verifier = Verifier.from_vkey(res.vkey)
    try:
        writer = PrivateKey.generate(KeyType.ED25519)
        async with LogClient(url, log_key=res.vkey) as client:
            await register(client, data, writer, "w")
            old = [await client.append(writer, b"old-%d" % i, timestamp_ms=clock()) for i in range(5)]
            clock.offset = DAY_MS // 2
            await asyncio.sleep(0.3)  # passes run: nothing is a day old yet
            assert (await client.keys())["registry"]["erasures"] == []
            new = [await client.append(writer, b"new-%d" % i, timestamp_ms=clock()) for i in range(2)]
            cp_before = await client.checkpoint()
            clock.offset = DAY_MS + DAY_MS // 4  # the old entries are now more than a day old
            deadline = time.monotonic() + 10
            while len((await client.keys())["registry"]["erasures"]) < len(old):
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # and nothing more is erased by later passes
            erasures = (await client.keys())["registry"]["erasures"]
            assert sorted(e["index"] for e in erasures) == [r.index for r in old]
            token = create_token(data)
            client.token = token
            for r in old:
                got = await client.get_entry(r.index)
                assert got["payload_access"] == "erased" and got["payload"] is None
                assert got["erasure"]["reason"].startswith("retention:")
                ev = await client.get_entry(got["erasure"]["erasure_index"])
                assert ev["kind"] == "Erasure" and ev["event"]["index"] == r.index
            for r in new:
                got = await client.get_entry(r.index)
                assert base64.b64decode(got["payload"]) in (b"new-0", b"new-1")
            cp_after = await client.checkpoint()
            verify_consistency(cp_before.size, cp_after.size,
                               await client.consistency_proof(cp_before.size, cp_after.size),
                               cp_before.root, cp_after.root)
            for r in old + new:  # nothing in the tree was removed: every receipt still verifies
                verify_tlog_proof(TlogProof.parse(r.tlog_proof), origin=verifier.name, log_verifier=verifier)
        raw = _files(data)
        assert not any(b"old-%d" % i in raw for i in range(5)) and b"new-0" in raw
        samples = await scrape(url)
        assert value(samples, "tlog_erasures_total") == 5 and value(samples, "tlog_retention_runs_total", outcome="ok") > 2
    finally:
        await server.close()


async def test_retention_config_is_checked(tmp_path):
    data = str(tmp_path / "log")
    await init_log(data, "example.com/retention-config")
    for bad in (-1, "30", True):
        set_config(data, retention_days=bad)
        with pytest.raises(ConfigError, match="retention_days"):
            LogConfig.load(data)
    set_config(data, retention_days=30, retention_interval_seconds=0)
    with pytest.raises(ConfigError, match="retention_interval_seconds"):
        LogConfig.load(data)
    set_config(data, retention_days=30, retention_interval_seconds=60)
    os.rename(os.path.join(data, "operator.key"), os.path.join(data, "operator.key.offline"))
    server = TestServer(make_app(data), host="127.0.0.1")
    with pytest.raises(ConfigError, match="operator.key"):
        await server.start_server()
    await server.close()
