"""The monitor as a C2SP tlog-witness (monitor/witness.py, spec/witness.md): every row of the status table with
real signed checkpoints, concurrent requests racing on the same old size, a SIGKILL between persisting and
answering, the evidence kept for refused requests, and the command line (keygen, flags)."""

from __future__ import annotations

import asyncio
import io
import json
import os
import random
import stat

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from monitor.app import make_app
from monitor.service import Monitor, Options
from monitor.witness import WitnessedLog, load_witness_key
from tests.witnesses import MemLog, make_witness_key, monitor_cmd, seeded_signer, start_witness
from tlog.checkpoint import Checkpoint
from tlog.cosignature import check_quorum, generate_cosigner, verify_cosignature
from tlog.errors import FormatError, ProofError
from tlog.evidence import verify_evidence
from tlog.note import Verifier, encode_base64, parse_note
from tlog.witness import (AddCheckpoint, SizeConflict, check_add_checkpoint, parse_cosignatures, parse_size)

ORIGIN = "example.com/witnessed"
OTHER = "example.com/other"


@pytest.fixture
def log() -> MemLog:
    return MemLog(seeded_signer(ORIGIN), 80)


@pytest.fixture
def fork() -> MemLog:
    """Same key, same first 7 leaves, another history after them."""
    return MemLog(seeded_signer(ORIGIN), 80, fork_at=7)


@pytest.fixture
async def witness(tmp_path, log):
    other = seeded_signer(OTHER)
    cosigner = generate_cosigner("witness.example/w1", b"\x07" * 32)
    out = io.StringIO()
    opts = Options(state_dir=str(tmp_path / "w"), logs=[], witness_key=cosigner,
                   witnessed=[WitnessedLog(ORIGIN, (log.signer.verifier(),), (log.signer.to_vkey(),)),
                              WitnessedLog(OTHER, (other.verifier(),), (other.to_vkey(),))])
    monitor = Monitor(opts, out=out)
    await monitor.open()
    client = TestClient(TestServer(make_app(monitor)))
    await client.start_server()
    client.cosigner, client.monitor, client.out = cosigner, monitor, out  # type: ignore[attr-defined]
    yield client
    await client.close()
    await monitor.close()


async def post(client, body: bytes) -> tuple[int, str, bytes]:
    async with client.post("/add-checkpoint", data=body) as r:
        return r.status, r.headers.get("Content-Type", ""), await r.read()


async def stored(client, origin: str = ORIGIN) -> int:
    return (await client.monitor.witness.cosigned(origin)).size


def check_cosigned(client, note: bytes, body: bytes) -> None:
    """A 200 answer: exactly one cosignature line, by this witness, valid on the note's checkpoint."""
    [sig] = parse_cosignatures(body)
    text, _ = parse_note(note)
    verify_cosignature(client.cosigner.verifier(), text, sig)


# ------------------------------------------------------------------ the status table, row by row

async def test_200_first_then_consistent_then_same_again(witness, log):
    status, ctype, body = await post(witness, log.request(0, 5))
    assert status == 200 and ctype.startswith("text/plain")
    check_cosigned(witness, log.note(5), body)
    assert await stored(witness) == 5
    for old, new in ((5, 9), (9, 9), (9, 16), (16, 17), (17, 64)):  # incl. a power of two and the same size
        status, _, body = await post(witness, log.request(old, new))
        assert status == 200, body
        check_cosigned(witness, log.note(new), body)
        assert await stored(witness) == new
    async with witness.get("/witness/checkpoint", params={"origin": ORIGIN}) as r:
        assert r.status == 200
        served = await r.read()
    assert check_quorum(served, [witness.cosigner.verifier()], 1, origin=ORIGIN) == ["witness.example/w1"]
    async with witness.get("/witness") as r:
        info = await r.json()
    assert info["vkey"] == witness.cosigner.to_vkey()
    assert {x["origin"]: x["size"] for x in info["logs"]} == {ORIGIN: 64, OTHER: 0}


async def test_checkpoint_with_other_signatures_is_cosigned(witness, log):
    other_witness = generate_cosigner("someone.else/w", b"\x09" * 32)
    note = log.note(3)
    note += other_witness.cosign(parse_note(note)[0], 1_700_000_000).encode()  # unknown keys are ignored
    status, _, body = await post(witness, log.request(0, 3, note=note))
    assert status == 200
    check_cosigned(witness, note, body)


@pytest.mark.parametrize("mutate", [
    lambda b: b.replace(b"\n\n", b"\n", 1),                       # no blank line
    lambda b: b.replace(b"old 5", b"old 05"),                     # non-canonical
    lambda b: b.replace(b"old 5", b"old +5"),
    lambda b: b.replace(b"old 5", b"old -1"),
    lambda b: b.replace(b"old 5", b"old  5"),
    lambda b: b.replace(b"old 5", b"Old 5"),
    lambda b: b.replace(b"old 5\n", b"old 5\r\n"),
    lambda b: b.replace(b"old 5", b"old 99999999999999999999"),
    lambda b: b.replace(b"=\n", b"\n", 1),                        # base64 without padding
    lambda b: b.replace(b"=\n", b"=\n!!!!\n", 1),                 # a proof line that is not base64
    lambda b: b.replace(b"=\n", b"=\n" + encode_base64(b"\x01" * 31).encode() + b"\n", 1),  # 31-byte hash
    lambda b: b.split(b"\n\n", 1)[0] + b"\n\n",                   # no checkpoint
    lambda b: b.split(b"\n\n", 1)[0] + b"\n\nnot a note\n",       # not a note
    lambda b: b.replace(b"\n\n", b"\n\xff\n\n", 1),               # not ASCII
], ids=["no-blank", "old-05", "old-+5", "old--1", "old-two-spaces", "Old", "crlf", "old-huge", "unpadded",
        "not-base64", "short-hash", "no-note", "not-a-note", "non-ascii"])
async def test_400_malformed(witness, log, mutate):
    assert (await post(witness, log.request(0, 5)))[0] == 200
    body = mutate(log.request(5, 9))
    status, _, _ = await post(witness, body)
    assert status == 400
    assert await stored(witness) == 5


async def test_400_too_many_proof_lines_and_old_above_size(witness, log):
    assert (await post(witness, log.request(0, 5)))[0] == 200
    body = b"old 5\n" + (encode_base64(b"\x00" * 32).encode() + b"\n") * 64 + b"\n" + log.note(9)
    assert (await post(witness, body))[0] == 400
    assert (await post(witness, log.request(9, 5, proof=[])))[0] == 400  # old larger than the checkpoint
    body = log.request(5, 9) + b"\n"  # trailing garbage after the note's signatures
    assert (await post(witness, body))[0] == 400
    assert await stored(witness) == 5


async def test_404_unknown_origin(witness):
    stranger = MemLog(seeded_signer("example.com/stranger"), 8)
    status, _, _ = await post(witness, stranger.request(0, 4))
    assert status == 404
    async with witness.get("/witness/checkpoint", params={"origin": "example.com/stranger"}) as r:
        assert r.status == 404
    async with witness.get("/witness/checkpoint", params={"origin": ORIGIN}) as r:
        assert r.status == 404  # witnessed, nothing cosigned yet


async def test_403_not_signed_by_the_log(witness, log):
    impostor = MemLog(seeded_signer(ORIGIN, 666), 8)  # same origin, another key
    assert (await post(witness, impostor.request(0, 4)))[0] == 403
    note = log.note(4)
    text, sigs = parse_note(note)
    tampered = note.replace(text.encode(), text.replace("\n4\n", "\n5\n").encode())  # text changed, signature not
    assert (await post(witness, log.request(0, 5, note=tampered)))[0] == 403
    only_unknown = text.encode() + b"\n" + generate_cosigner("x.example/w", b"\x01" * 32).cosign(text, 1).encode()
    assert (await post(witness, log.request(0, 4, note=only_unknown)))[0] == 403
    assert await stored(witness) == 0


async def test_409_wrong_old_size_carries_the_known_size(witness, log):
    assert (await post(witness, log.request(0, 9)))[0] == 200
    for old, new in ((0, 12), (5, 12), (10, 12), (12, 12)):
        status, ctype, body = await post(witness, log.request(old, new))
        assert (status, ctype, body) == (409, "text/x.tlog.size", b"9\n")
        assert parse_size(body) == 9
    assert await stored(witness) == 9


async def test_409_same_size_other_root_is_a_proven_fork(witness, log, fork, tmp_path):
    assert (await post(witness, log.request(0, 9)))[0] == 200
    status, ctype, body = await post(witness, fork.request(9, 9))
    assert (status, ctype, body) == (409, "text/x.tlog.size", b"9\n")
    assert await stored(witness) == 9
    [alert] = [json.loads(line) for line in witness.out.getvalue().splitlines()]
    assert alert["kind"] == "fork" and alert["details"]["proven"] is True
    with open(alert["evidence"], "rb") as f:
        verdict = verify_evidence(f.read(), log.signer.verifier())
    assert verdict.proves_misbehaviour
    [refusal] = await witness.monitor.witness.store.refusals(ORIGIN)
    assert refusal["status"] == 409 and os.path.exists(refusal["path"])


async def test_422_bad_proofs_are_refused_and_kept(witness, log, fork):
    assert (await post(witness, log.request(0, 9)))[0] == 200
    good = log.proof(9, 20)
    flipped = [bytes([good[0][0] ^ 1]) + good[0][1:], *good[1:]]
    bodies = [
        log.request(9, 20, proof=good[:-1]),           # truncated
        log.request(9, 20, proof=good + [good[0]]),    # one too many
        log.request(9, 20, proof=flipped),             # a bit flipped
        log.request(9, 20, proof=list(reversed(good))),
        fork.request(9, 20),                           # a forked history: its own proof, from its own size 9
        log.request(9, 9, proof=[good[0]]),            # equal sizes need an empty proof
    ]
    for body in bodies:
        status, _, answer = await post(witness, body)
        assert status == 422, answer
    assert await stored(witness) == 9
    refusals = await witness.monitor.witness.store.refusals(ORIGIN)
    assert len(refusals) == len(bodies) and {r["status"] for r in refusals} == {422}
    for r in refusals:
        with open(r["path"]) as f:
            doc = json.load(f)
        assert doc["format"] == "tlog-witness-refusal/v1" and doc["origin"] == ORIGIN
        assert doc["request"].encode() in bodies and doc["known_checkpoint"].encode().startswith(
            log.note(9).rstrip(b"\n").rsplit(b"\n", 1)[0])
    assert (await post(witness, log.request(9, 20)))[0] == 200  # the honest proof still goes through


async def test_422_nonempty_proof_from_size_zero(witness, log):
    status, _, _ = await post(witness, log.request(0, 5, proof=[log.oracle.root(4)]))
    assert status == 422
    assert await stored(witness) == 0


async def test_405_wrong_method(witness):
    async with witness.get("/add-checkpoint") as r:
        assert r.status == 405


def test_check_add_checkpoint_order():
    """Pure rule: 400 before 409 before the root check before 422, as tlog-witness lists them."""
    log = MemLog(seeded_signer(ORIGIN), 20)

    def cp(n: int) -> Checkpoint:
        return Checkpoint(ORIGIN, n, log.oracle.root(n))

    req = AddCheckpoint.parse(log.request(12, 10, proof=[b"\x00" * 32]))
    with pytest.raises(FormatError):
        check_add_checkpoint(req, cp(10), 5, log.oracle.root(5))  # old > size, although old != known too
    with pytest.raises(SizeConflict) as exc:
        check_add_checkpoint(AddCheckpoint.parse(log.request(4, 10, proof=[b"\x00" * 32])), cp(10), 5,
                             log.oracle.root(5))
    assert exc.value.known_size == 5 and not exc.value.same_size_fork
    with pytest.raises(SizeConflict) as exc:
        check_add_checkpoint(AddCheckpoint.parse(log.request(5, 5, proof=[b"\x00" * 32])), cp(5), 5, b"\x01" * 32)
    assert exc.value.same_size_fork
    with pytest.raises(ProofError):
        check_add_checkpoint(AddCheckpoint.parse(log.request(5, 10, proof=[b"\x00" * 32])), cp(10), 5,
                             log.oracle.root(5))
    check_add_checkpoint(AddCheckpoint.parse(log.request(5, 10)), cp(10), 5, log.oracle.root(5))


def test_request_format_round_trip():
    log = MemLog(seeded_signer(ORIGIN), 40)
    for old, new in ((0, 1), (1, 2), (3, 33), (32, 33), (7, 7)):
        body = log.request(old, new)
        req = AddCheckpoint.parse(body)
        assert req.format() == body and req.old_size == old and req.proof == tuple(log.proof(old, new))
    assert AddCheckpoint.parse(log.request(3, 33)).origin() == ORIGIN


# ------------------------------------------------------------------ concurrency

async def test_concurrent_same_old_exactly_one_wins(witness, log):
    assert (await post(witness, log.request(0, 9)))[0] == 200
    sizes = list(range(10, 40))
    results = await asyncio.gather(*(post(witness, log.request(9, n)) for n in sizes))
    winners = [n for n, (status, _, _) in zip(sizes, results) if status == 200]
    assert len(winners) == 1
    for n, (status, ctype, body) in zip(sizes, results):
        if n != winners[0]:
            assert (status, ctype, body) == (409, "text/x.tlog.size", f"{winners[0]}\n".encode())
    assert await stored(witness) == winners[0]


async def test_concurrent_storm_never_moves_backwards(witness, log):
    """Clients chase the witness's size (learned from 409s) with checkpoints of random sizes while an
    observer reads the stored size: every observation is at least the one before."""
    rng = random.Random(6962)
    observed: list[int] = []
    done = asyncio.Event()

    async def observe() -> None:
        while not done.is_set():
            observed.append(await stored(witness))
            await asyncio.sleep(0)

    async def client(n: int) -> list[int]:
        old, wins = 0, []
        for _ in range(20):
            if old > n:
                break
            status, _, body = await post(witness, log.request(old, n))
            if status == 200:
                wins.append(n)
                break
            assert status == 409, body
            old = parse_size(body)
        return wins

    watcher = asyncio.create_task(observe())
    wins = await asyncio.gather(*(client(rng.randrange(1, 80)) for _ in range(40)))
    done.set()
    await watcher
    observed.append(await stored(witness))
    assert observed == sorted(observed)
    assert observed[-1] == max(n for w in wins for n in w)


# ------------------------------------------------------------------ processes: crash, restart, CLI

async def test_sigkill_between_persist_and_reply_keeps_the_checkpoint(tmp_path, log):
    vkey = log.signer.to_vkey()
    w = start_witness(tmp_path, "witness.example/crash", [vkey], env={"TLOG_MONITOR_TEST_CRASH": "after-persist"})
    try:
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.ClientError):
                async with http.post(f"{w.url}/add-checkpoint", data=log.request(0, 13)) as r:
                    await r.read()
        assert w.proc.wait(timeout=10) == -9  # died by SIGKILL right after the UPDATE committed
    finally:
        w.kill()
    w = start_witness(tmp_path, "witness.example/crash", [vkey])
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{w.url}/witness/checkpoint", params={"origin": ORIGIN}) as r:
                assert r.status == 200
                note = await r.read()
            assert check_quorum(note, [Verifier.from_vkey(w.vkey)], 1, origin=ORIGIN)
            assert parse_note(note)[0] == parse_note(log.note(13))[0]
            async with http.post(f"{w.url}/add-checkpoint", data=log.request(0, 13)) as r:  # the client's retry
                assert (r.status, await r.read()) == (409, b"13\n")
            async with http.post(f"{w.url}/add-checkpoint", data=log.request(13, 13)) as r:
                assert r.status == 200
                [sig] = parse_cosignatures(await r.read())
                verify_cosignature(Verifier.from_vkey(w.vkey), parse_note(log.note(13))[0], sig)
    finally:
        w.stop()


def test_keygen_and_flags(tmp_path, log):
    key = str(tmp_path / "w.key")
    vkey = make_witness_key(key, "witness.example/k")
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert Verifier.from_vkey(vkey).key_type == 0x04 and load_witness_key(key).to_vkey() == vkey
    again = monitor_cmd("keygen", "--out", key, "--name", "witness.example/k")
    assert again.returncode == 2 and b"refusing to overwrite" in again.stderr
    assert monitor_cmd("keygen", "--out", str(tmp_path / "x"), "--name", "bad name").returncode == 2
    state = str(tmp_path / "s")
    no_key = monitor_cmd("--state", state, "--witness", log.signer.to_vkey(), "--once")
    assert no_key.returncode == 2 and b"--witness-key" in no_key.stderr
    os.chmod(key, 0o644)
    loose = monitor_cmd("--state", state, "--witness-key", key, "--witness", log.signer.to_vkey(), "--once")
    assert loose.returncode == 2 and b"chmod 600" in loose.stderr
    os.chmod(key, 0o600)
    cosign_key = monitor_cmd("--state", state, "--witness-key", key, "--witness", vkey, "--once")
    assert cosign_key.returncode == 2  # a witness key is not a log key
    ok = monitor_cmd("--state", state, "--witness-key", key, "--witness", log.signer.to_vkey(), "--once")
    assert ok.returncode == 0 and ok.stdout.decode().startswith(f"witness vkey: {vkey}\n"), ok.stderr
