"""Witness cosigning end to end with real processes (spec/witness.md): a log with a 2-of-3 witness policy and
three ``tlog-monitor`` witnesses.  Appends get cosigned checkpoints; with one witness down the quorum still
holds; with two down appends still succeed but the receipts say the quorum is not met and ``tlog verify
--witness-policy`` refuses them; a fork of the log (a copy of its data directory, same keys, other entries)
is refused by every witness."""

from __future__ import annotations

import asyncio
import functools
import base64
import json
import os
import shutil
import time

import aiohttp
import pytest

from tests.conftest import init_log, start_server, tlog_cmd
from tests.conftest import wait_for as _wait_for
from tests.test_monitor_e2e import start_monitor
from tests.witnesses import WitnessProcess, start_witness
from tlog.audit import WitnessPolicy
from tlog.client import LogClient, WitnessQuorumError
from tlog.cosignature import CosignatureVerifier, check_quorum
from tlog.entry import register_event
from tlog.keys import KeyType, PrivateKey
from tlog.note import parse_note
from tlog.tlogproof import TlogProof, verify_tlog_proof
from tlog.witness import AddCheckpoint, parse_size

ORIGIN = "example.com/test-log"
NAMES = ["w1.example/witness", "w2.example/witness", "w3.example/witness"]


def configure(data: str, witnesses: list[WitnessProcess], quorum: int = 2) -> WitnessPolicy:
    path = os.path.join(data, "config.json")
    with open(path) as f:
        config = json.load(f)
    config["witnesses"] = [{"name": w.name, "vkey": w.vkey, "url": w.url} for w in witnesses]
    config["witness_quorum"] = quorum
    config["witness_timeout_seconds"] = 3
    with open(path, "w") as f:
        json.dump(config, f)
    return WitnessPolicy(quorum, tuple(CosignatureVerifier.from_vkey(w.vkey) for w in witnesses))


wait_for = functools.partial(_wait_for, timeout=15, interval=0.05)


async def writer_key(url: str, vkey: str, data: str) -> PrivateKey:
    with open(os.path.join(data, "operator.key"), "rb") as f:
        operator = PrivateKey.from_pem(f.read())
    writer = PrivateKey.generate(KeyType.ED25519)
    now = time.time_ns() // 1_000_000
    async with LogClient(url, log_key=vkey) as client:
        await client.submit_operator_entry(
            register_event(ORIGIN, now, writer.public_key, "writer", now - 1000, now + 86_400_000), operator)
    return writer


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, bytes]:
    async with http.get(url) as r:
        return r.status, await r.read()


def witnesses_for(tmp_path, vkey: str) -> list[WitnessProcess]:
    return [start_witness(tmp_path, name, [vkey]) for name in NAMES]


@pytest.fixture
def cleanup():
    procs: list = []
    yield procs
    for p in reversed(procs):
        p.stop()


async def test_two_of_three_quorum_survives_one_down_not_two(tmp_path, cleanup):
    data = str(tmp_path / "log")
    vkey = init_log(data)
    ws = witnesses_for(tmp_path, vkey)
    cleanup.extend(ws)
    policy = configure(data, ws)
    policy_file = tmp_path / "policy.json"
    policy_file.write_bytes(policy.to_json())
    server = start_server(data)
    cleanup.append(server)
    writer = await writer_key(server.url, vkey, data)
    (tmp_path / "writer.pem").write_bytes(writer.to_pem())
    os.chmod(tmp_path / "writer.pem", 0o600)
    monitor = start_monitor(tmp_path, "m", [(server.url, vkey)], "--witness-policy", str(policy_file),
                            "--stale-after", "1")
    cleanup.append(monitor)

    async def quorum_status(http: aiohttp.ClientSession) -> dict | None:
        status, body = await get(http, f"{monitor.url}/status")
        return json.loads(body)["logs"][0]["witness_quorum"]

    async with aiohttp.ClientSession() as http, \
            LogClient(server.url, log_key=vkey, witness_policy=policy, witness_wait=10) as client:
        # All three up: the append's receipt is against a checkpoint at least two witnesses cosigned.
        r = await client.append(writer, b"event 1")
        assert len(r.witnesses) >= 2 and set(r.witnesses) <= set(NAMES)
        verify_tlog_proof(TlogProof.parse(r.tlog_proof), origin=ORIGIN, log_verifier=client.verifier,
                          witness_verifiers=policy.witnesses, quorum=2)
        receipt_file = tmp_path / "r1.tlog-proof"
        receipt_file.write_bytes(r.tlog_proof)
        tlog_cmd("verify", str(receipt_file), "--log-key", vkey, "--witness-policy", str(policy_file))

        async def all_three() -> bool:
            status, note = await get(http, f"{server.url}/checkpoint")
            return status == 200 and len(check_quorum(note, policy.witnesses, 0)) == 3
        await wait_for(all_three, "the latest checkpoint cosigned by all three witnesses")
        cp = await client.checkpoint()
        assert sorted(client.latest_witnesses) == NAMES and cp.size == r.checkpoint.size

        async def monitor_sees_three() -> bool:
            q = await quorum_status(http)
            return q is not None and q["size"] == cp.size and sorted(q["witnesses"]) == NAMES and q["quorum_met"]
        await wait_for(monitor_sees_three, "the monitor to report three cosigners")
        status, body = await get(http, f"{server.url}/v1/witnesses")
        info = json.loads(body)
        assert status == 200 and info["cosigned_size"] == info["tree_size"] == cp.size
        assert WitnessPolicy.parse(json.dumps(info["policy"]).encode()).to_json() == policy.to_json()
        assert all(w["last_error"] is None and w["cosigned_size"] == cp.size for w in info["witnesses"])

        # One witness down: appends continue and the quorum still holds.
        ws[0].kill()
        for i in range(3):
            r = await client.append(writer, b"event 2.%d" % i)
            assert set(r.witnesses) == set(NAMES[1:]), r.witnesses
        receipt_file.write_bytes(r.tlog_proof)
        tlog_cmd("verify", str(receipt_file), "--log-key", vkey, "--witness-policy", str(policy_file))
        status, body = await get(http, f"{server.url}/v1/witnesses")
        down = json.loads(body)["witnesses"][0]
        assert down["name"] == NAMES[0] and down["last_error"] and down["failures"] >= 1

        # Two down: appends still succeed at once (log-signed receipts) but no quorum is reached.
        cosigned_before = int(parse_note((await get(http, f"{server.url}/v1/checkpoint/cosigned"))[1])[0]
                              .split("\n")[1])
        ws[1].kill()
        async with LogClient(server.url, log_key=vkey) as plain:
            t0 = time.monotonic()
            plain_receipts = [await plain.append(writer, b"event 3.%d" % i) for i in range(3)]
            assert time.monotonic() - t0 < 5  # a witness that is down never blocks an append
        last = plain_receipts[-1]
        with pytest.raises(WitnessQuorumError) as exc:
            async with LogClient(server.url, log_key=vkey, witness_policy=policy, witness_wait=0.5) as impatient:
                await impatient.append(writer, b"event 4")
        assert exc.value.receipt is not None and exc.value.receipt.index == last.index + 1  # in the log anyway
        index = exc.value.receipt.index
        status, body = await get(http, f"{server.url}/v1/receipts/{index}")
        answer = json.loads(body)
        assert status == 200 and answer["quorum"] == 2 and answer["quorum_met"] is False
        assert answer["witnesses"] in ([], [NAMES[2]])
        status, body = await get(http, f"{server.url}/v1/receipts/{index}?cosigned=1")
        assert status == 404 and "quorum" in json.loads(body)["error"]
        status, note = await get(http, f"{server.url}/v1/checkpoint/cosigned")
        assert status == 200 and int(parse_note(note)[0].split("\n")[1]) == cosigned_before <= index
        receipt_file.write_bytes(answer["receipt"].encode())
        refused = tlog_cmd("verify", str(receipt_file), "--log-key", vkey, "--witness-policy", str(policy_file),
                           check=False)
        assert refused.returncode == 1 and b"witness quorum" in refused.stderr
        tlog_cmd("verify", str(receipt_file), "--log-key", vkey)  # the log's signature alone is fine

        async def monitor_warns() -> bool:
            q = await quorum_status(http)
            return q is not None and not q["quorum_met"] and any(
                a["kind"] == "witness-quorum" and a["severity"] == "warning" for a in monitor.alerts())
        await wait_for(monitor_warns, "the monitor's witness-quorum warning")

        # An old entry still has its cosigned receipt (against the last checkpoint that met the quorum).
        status, body = await get(http, f"{server.url}/v1/receipts/1?cosigned=1")
        assert status == 200 and json.loads(body)["quorum_met"] is True
        # The second witness comes back (same state, same key): the quorum is reached again.
        ws[1] = start_witness(tmp_path, NAMES[1], [vkey], listen=ws[1].url.removeprefix("http://"))
        cleanup.append(ws[1])
        again = await client.cosigned_receipt(index, wait=20)
        assert NAMES[1] in again.witnesses and again.index == index
    out = tlog_cmd("receipt", str(index), "--log", server.url, "--log-key", vkey, "--witness-policy", str(policy_file),
                   "--receipt", str(receipt_file))
    assert b"cosigned by" in out.stderr
    tlog_cmd("verify", str(receipt_file), "--log-key", vkey, "--witness-policy", str(policy_file))
    ws[1].kill()  # back to one witness: the command line says the quorum is not met, and why
    out = tlog_cmd("append", "--log", server.url, "--log-key", vkey, "--key", str(tmp_path / "writer.pem"),
                   "--witness-policy", str(policy_file), "--witness-wait", "0.3", "--receipt", str(receipt_file),
                   input=b"event 5", check=False)
    assert out.returncode == 1 and b"witness quorum" in out.stderr and b"tlog receipt" in out.stderr
    tlog_cmd("verify", str(receipt_file), "--log-key", vkey)  # the log-signed receipt was still written


async def test_fork_is_refused_by_every_witness(tmp_path, cleanup):
    data = str(tmp_path / "log")
    vkey = init_log(data)
    ws = witnesses_for(tmp_path, vkey)
    cleanup.extend(ws)
    policy = configure(data, ws, quorum=3)
    server = start_server(data)
    writer = await writer_key(server.url, vkey, data)
    async with LogClient(server.url, log_key=vkey, witness_policy=policy) as client:
        fork_at = (await client.append(writer, b"common")).checkpoint.size
    server.stop()
    shutil.copytree(data, str(tmp_path / "fork"))  # the same keys, the same witness configuration
    server = start_server(data)
    cleanup.append(server)
    async with LogClient(server.url, log_key=vkey, witness_policy=policy) as client:
        for i in range(3):
            honest = await client.append(writer, b"honest %d" % i)
    size_a = honest.checkpoint.size
    assert set(honest.witnesses) == set(NAMES)

    fork = start_server(str(tmp_path / "fork"))
    cleanup.append(fork)
    fork_notes = {}
    async with LogClient(fork.url, log_key=vkey) as client:
        for i in range(5):
            r = await client.append(writer, b"forked %d" % i)
            fork_notes[r.checkpoint.size] = TlogProof.parse(r.tlog_proof).checkpoint_note
    size_b = max(fork_notes)
    assert size_a == fork_at + 3 and size_b == fork_at + 5

    async with aiohttp.ClientSession() as http:
        async def fork_refused() -> bool:
            _, body = await get(http, f"{fork.url}/v1/witnesses")
            return all(w["last_error"] and w["failures"] >= 1 for w in json.loads(body)["witnesses"])
        await wait_for(fork_refused, "the fork's own submissions to fail")
        status, note = await get(http, f"{fork.url}/v1/checkpoint/cosigned")
        assert status == 200 and int(parse_note(note)[0].split("\n")[1]) == fork_at  # never beyond the copy

        _, body = await get(http, f"{fork.url}/v1/proofs/consistency?first={size_a}&second={size_b}")
        proof = [base64.b64decode(h) for h in json.loads(body)["proof"]]
        for w in ws:
            # The fork's larger checkpoint with its own consistency proof from the witness's size: 422.
            body = AddCheckpoint(size_a, tuple(proof), fork_notes[size_b]).format()
            async with http.post(f"{w.url}/add-checkpoint", data=body) as r:
                assert r.status == 422, await r.text()
            # The fork's checkpoint of the witness's own size (another root): 409 with that size.
            async with http.post(f"{w.url}/add-checkpoint", data=AddCheckpoint(size_a, (), fork_notes[size_a])
                                 .format()) as r:
                assert r.status == 409 and parse_size(await r.read()) == size_a
            status, note = await get(http, f"{w.url}/witness/checkpoint?origin={ORIGIN}")
            assert status == 200 and parse_note(note)[0] == honest.checkpoint.format()  # still the honest one
            with open(w.out) as f:
                alerts = [json.loads(line) for line in f if line.startswith("{")]
            assert any(a["kind"] == "fork" and a["details"]["proven"] for a in alerts)
            _, body = await get(http, f"{w.url}/witness")
            assert json.loads(body)["logs"][0]["refusals"] >= 2


async def test_http_workers_serve_the_cosignatures(tmp_path, cleanup):
    """With ``tlog serve --workers 2`` the sequencer process collects the cosignatures and the workers, which
    answer every request, read them from DIR/witness.db."""
    data = str(tmp_path / "log")
    vkey = init_log(data)
    ws = [start_witness(tmp_path, name, [vkey]) for name in NAMES[:2]]
    cleanup.extend(ws)
    policy = configure(data, ws, quorum=2)
    server = start_server(data, extra=("--workers", "2"))
    cleanup.append(server)
    writer = await writer_key(server.url, vkey, data)
    async with aiohttp.ClientSession() as http, LogClient(server.url, log_key=vkey, witness_policy=policy) as client:
        receipts = [await client.append(writer, b"event %d" % i) for i in range(3)]
        assert all(sorted(r.witnesses) == NAMES[:2] for r in receipts)

        async def latest_cosigned() -> bool:
            status, note = await get(http, f"{server.url}/checkpoint")
            return status == 200 and len(check_quorum(note, policy.witnesses, 2)) == 2
        await wait_for(latest_cosigned, "the workers to serve the cosigned latest checkpoint")
        status, body = await get(http, f"{server.url}/v1/witnesses")
        assert status == 200 and json.loads(body)["cosigned_size"] == receipts[-1].checkpoint.size
