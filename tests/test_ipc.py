"""The worker ↔ sequencer hand-off: frames round-trip, errors keep their kind, answers find their
requests when many are in flight, and a dead sequencer process fails every waiting request."""

from __future__ import annotations

import asyncio
import os

import pytest

from tlog.errors import FormatError, KeyRegistryError
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


def test_truncated_or_malformed_answer_is_a_format_error():
    head = Head(10, b"r" * 32, 1234, b"note\n")
    good = ipc.encode_result(4, Integrated(9, b"leaf", head, proof=(b"a" * 32, b"b" * 32)))
    for cut in range(14, len(good)):  # every truncation after the fixed header
        with pytest.raises(FormatError):
            ipc.decode_result(good[:cut])
    odd = ipc.encode_result(4, Integrated(9, b"leaf", head, proof=(b"a" * 31,)))  # not a list of hashes
    with pytest.raises(FormatError):
        ipc.decode_result(odd)


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


async def test_metrics_snapshots_from_every_connection_are_merged(tmp_path):
    """Kinds 4 and 5: a push is stored, a scrape stores its own snapshot and gets the text rendered
    from the latest snapshot of every connection; a server wired without metrics answers a scrape
    with an internal error (a 500 at the worker), never a client error."""
    path = str(tmp_path / "seq.sock")
    seen: list[list[bytes]] = []

    def render(snapshots: list[bytes]) -> bytes:
        seen.append(sorted(snapshots))
        return b"merged " + b"+".join(sorted(snapshots))

    server = ipc.SequencerServer(path, None, lambda: "", metrics=render)
    await server.start()
    a, b = ipc.SequencerClient(path), ipc.SequencerClient(path)
    await a.connect()
    await b.connect()
    try:
        await a.push_metrics(b"a1")
        assert await b.metrics(b"b1") == b"merged a1+b1"
        await a.push_metrics(b"a2")  # a newer snapshot replaces the connection's older one
        assert await a.metrics(b"a3") == b"merged a3+b1"
        assert seen == [[b"a1", b"b1"], [b"a3", b"b1"]]  # a push renders nothing
    finally:
        await a.close()
        await b.close()
        await server.close()
    bare = ipc.SequencerServer(path, None, lambda: "")
    await bare.start()
    c = ipc.SequencerClient(path)
    await c.connect()
    try:
        with pytest.raises(RuntimeError, match="keeps no metrics"):
            await c.metrics(b"c")
    finally:
        await c.close()
        await bare.close()


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


def test_frames_pack_many_messages_and_parse_strictly():
    messages = [b"m%d" % i * (i % 7) for i in range(300)]
    [frame] = ipc.encode_frames(messages)
    assert int.from_bytes(frame[:4], "big") == len(frame) - 4
    assert ipc.decode_frame(frame[4:]) == messages
    for bad in (frame[4:-1], frame[4:] + b"\0", frame[4:5]):
        with pytest.raises(FormatError):
            ipc.decode_frame(bad)
    big = [b"x" * 300_000 for _ in range(8)]  # 2.4 MB: more than one frame's worth
    frames = ipc.encode_frames(big)
    assert len(frames) > 1 and [m for f in frames for m in ipc.decode_frame(f[4:])] == big


async def test_submissions_of_one_loop_turn_share_a_frame(tmp_path):
    """The hand-off is paid per batch: what handlers submit in one turn of the loop is one frame, and
    the sequencer process answers a batch in one frame."""
    path = str(tmp_path / "seq.sock")
    frames_seen: list[int] = []
    head = Head(1, b"\0" * 32, 1, b"n\n")
    served = []

    async def serve(reader, writer):
        served.append(writer)
        while True:
            try:
                body = await ipc._read_frame(reader)
            except asyncio.IncompleteReadError:
                writer.close()
                return
            messages = ipc.decode_frame(body)
            frames_seen.append(len(messages))
            answers = []
            for m in messages:
                req_id, _, _, p = ipc.decode_submission(m)
                answers.append(ipc.encode_result(req_id, Integrated(int(p.body[4:]), p.body, head, proof=())))
            writer.writelines(ipc.encode_frames(answers))

    server = await asyncio.start_unix_server(serve, path=path)
    client = ipc.SequencerClient(path)
    await client.connect()
    try:
        results = await asyncio.gather(*(client.submit(pending(i)) for i in range(40)))
        assert [r.index for r in results] == list(range(40))
        assert frames_seen == [40]
        assert len({id(r.head) for r in results}) == 1  # one Head for the answers of one frame
    finally:
        await client.close()
        for w in served:
            w.close()
        server.close()
        await server.wait_closed()
