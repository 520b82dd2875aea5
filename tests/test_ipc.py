"""The worker ↔ sequencer hand-off: frames round-trip, errors keep their kind, answers find their
requests when many are in flight, and a dead sequencer process fails every waiting request."""

from __future__ import annotations

import asyncio
import os

import pytest

from tlog.errors import KeyRegistryError
from tlog.server import ipc
from tlog.server.sequencer import BacklogFullError, Integrated, Pending, RateLimitedError, WritesStoppedError
from tlog.server.storage import Head, StorageFullError


def pending(i: int, operator: bool = False) -> Pending:
    return Pending(body=b"body%d" % i, signature=b"sig%d" % i, identity=os.urandom(32),
                   key_id=None if operator else b"k" * 32, salt=None if operator else b"s" * 16,
                   payload=None if operator else b"payload %d" % i, operator=operator)


def test_submission_round_trip():
    for op in (False, True):
        p = pending(7, op)
        req_id, kind, rate, back = ipc.decode_submission(ipc.encode_submission(42, p, 5))
        assert (req_id, rate, back.operator) == (42, 5, op)
        assert (back.body, back.signature, back.identity, back.key_id, back.salt, back.payload) == \
            (p.body, p.signature, p.identity, p.key_id, p.salt, p.payload)


def test_result_and_error_round_trip():
    head = Head(10, b"r" * 32, 1234, b"note\n")
    r = Integrated(9, b"leaf", head, duplicate=True)
    assert ipc.decode_result(ipc.encode_result(3, r)) == (3, r)
    for proof in ((), (b"a" * 32, b"b" * 32, b"c" * 32)):
        with_proof = Integrated(9, b"leaf", head, proof=proof)
        assert ipc.decode_result(ipc.encode_result(4, with_proof)) == (4, with_proof)
    for exc in (KeyRegistryError("unknown key"), BacklogFullError("full"), WritesStoppedError("stopped"),
                StorageFullError("disk"), RateLimitedError("slow down", 2.5)):
        req_id, back = ipc.decode_result(ipc.encode_error(8, exc))
        assert req_id == 8 and type(back) is type(exc) and str(back) == str(exc)
    assert ipc.decode_result(ipc.encode_error(1, RateLimitedError("x", 2.5)))[1].retry_after == 2.5
    _, other = ipc.decode_result(ipc.encode_error(1, ZeroDivisionError("boom")))
    assert isinstance(other, RuntimeError) and "boom" in str(other)


async def test_live_socket_many_in_flight(tmp_path):
    path = str(tmp_path / "seq.sock")
    head = Head(1, b"\0" * 32, 1, b"n\n")

    async def submit(p: Pending, rate: int) -> Integrated:
        n = int(p.body[4:])
        await asyncio.sleep((50 - n) / 10000)  # answers come back out of order
        if n == 13:
            raise KeyRegistryError("entry 13: unknown key")
        return Integrated(n, p.body, head)

    server = ipc.SequencerServer(path, submit, lambda: "backlog 0")
    await server.start()
    client = ipc.SequencerClient(path)
    await client.connect()
    try:
        results = await asyncio.gather(*(client.submit(pending(i)) for i in range(50)), return_exceptions=True)
        for i, r in enumerate(results):
            if i == 13:
                assert isinstance(r, KeyRegistryError)
            else:
                assert r.index == i and r.leaf == b"body%d" % i
        assert await client.status() == "backlog 0"
    finally:
        await client.close()
        await server.close()


async def test_sequencer_process_gone(tmp_path):
    path = str(tmp_path / "seq.sock")
    never = asyncio.Event()

    async def submit(p, rate):
        await never.wait()

    server = ipc.SequencerServer(path, submit, lambda: "")
    await server.start()
    client = ipc.SequencerClient(path)
    await client.connect()
    waiting = asyncio.ensure_future(client.submit(pending(1)))
    await asyncio.sleep(0.05)
    await server.close()
    with pytest.raises(WritesStoppedError):
        await asyncio.wait_for(waiting, 5)
    await client.close()
