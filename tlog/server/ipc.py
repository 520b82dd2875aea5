"""Hand-off between HTTP worker processes and the sequencer process (``tlog serve --workers N``).

Workers verify signatures, keys and commitments (the costly, parallel part) and send each verified
entry over a Unix socket to the one process that owns the database and the sequencer; it answers when
the entry is durable and covered by a signed checkpoint.  Two processes never write the tree.

Messages are batched both ways, so that the cost of a hand-off (a system call, a wake-up, a frame) is
paid per batch rather than per entry: a worker sends whatever its handlers submitted during one turn
of its event loop as one frame, and the sequencer process answers a committed batch's entries of one
worker in one frame.  Requests and answers are matched by id, so order does not matter.

Framing: every frame is a big-endian uint32 length and that many bytes: a uint16 count, then that many
messages, each a uint32 length and the message.  A submission is ``uint32 id, uint8 kind (1 event,
2 operator), uint32 rate limit`` then the byte strings body, signature, identity, key id, salt,
payload, each as a uint32 length and the bytes.  The answer is ``uint32 id, uint8 status``; status 0
carries ``uint64 index, uint8 duplicate`` and the byte strings leaf, checkpoint note and inclusion
proof (the concatenated hashes), then ``uint64 size, uint64 timestamp_ms``, a uint8 flag saying whether
the proof is there, and the 32-byte root; status 1 is an error with a uint16 kind and a UTF-8 message.
The proof is the entry's inclusion proof in that checkpoint, made by the sequencer process from the
tree it holds in memory, so a worker needs no database read to answer an append.  A submission with
kind 3 asks for the sequencer's status (backlog, and why writes are stopped, if they are); its answer
has status 2 and the text.  Kinds 4 and 5 carry a worker's metrics snapshot (one byte string,
tlog/server/metrics.py): 4 only stores it (the answer is status 2 with no text), 5 stores it and asks
for the merged Prometheus text of every process (status 2, the text).
"""

from __future__ import annotations

import asyncio
import itertools
import struct
from collections.abc import Awaitable, Callable

from ..errors import FormatError, KeyRegistryError, SignatureError, TlogError
from .sequencer import BacklogFullError, Integrated, Pending, RateLimitedError, WritesStoppedError
from .storage import Head, StorageFullError

__all__ = ["SequencerServer", "SequencerClient", "encode_frame", "decode_frame"]

_LEN = struct.Struct(">I")
_COUNT = struct.Struct(">H")
_SUB = struct.Struct(">IBI")
_OK = struct.Struct(">IBQB")
_TAIL = struct.Struct(">QQB")
_MAX_FRAME = 1 << 24
_MAX_COUNT = 0xFFFF
#: A frame is closed once it holds this many bytes (a single larger message still gets a frame).
_FRAME_TARGET = 1 << 20
KIND_EVENT, KIND_OPERATOR, KIND_STATUS, KIND_METRICS_PUSH, KIND_METRICS = 1, 2, 3, 4, 5


# Errors that cross the socket, by wire number.  Anything else is an internal error on the other side.
_ERRORS: list[type[Exception]] = [KeyRegistryError, SignatureError, FormatError, BacklogFullError,
                                  WritesStoppedError, StorageFullError, RateLimitedError, TlogError]


def _bytes(*parts: bytes) -> bytes:
    return b"".join(_LEN.pack(len(p)) + p for p in parts)


def _take(data: bytes, pos: int) -> tuple[bytes, int]:
    """The byte string at ``pos`` (uint32 length, then the bytes) and the position after it.  Slicing
    the bytes copies once, as ``bytes(memoryview[...])`` would, without the view."""
    if pos + 4 > len(data):
        raise FormatError("truncated message")
    (n,) = _LEN.unpack_from(data, pos)
    end = pos + 4 + n
    if end > len(data):
        raise FormatError("truncated message")
    return data[pos + 4:end], end


def encode_frames(messages: list[bytes]) -> list[bytes]:
    """Messages packed into as few frames as the limits allow (each frame with its length prefix)."""
    frames, part, size = [], [], 2
    for m in messages:
        if part and (len(part) == _MAX_COUNT or size + 4 + len(m) > _FRAME_TARGET):
            frames.append(_close(part, size))
            part, size = [], 2
        part.append(_LEN.pack(len(m)) + m)
        size += 4 + len(m)
    if part:
        frames.append(_close(part, size))
    return frames


def _close(part: list[bytes], size: int) -> bytes:
    if size > _MAX_FRAME:
        raise FormatError(f"message of {size} bytes is over the frame limit")
    return _LEN.pack(size) + _COUNT.pack(len(part)) + b"".join(part)


def encode_frame(messages: list[bytes]) -> bytes:
    """One frame holding ``messages`` (for tests and callers that know they fit)."""
    [frame] = encode_frames(messages)
    return frame


def decode_frame(frame: bytes) -> list[bytes]:
    """The messages of a frame's body (the bytes after its length prefix)."""
    if len(frame) < 2:
        raise FormatError("truncated frame")
    (count,) = _COUNT.unpack_from(frame)
    pos, out = 2, []
    for _ in range(count):
        message, pos = _take(frame, pos)
        out.append(message)
    if pos != len(frame):
        raise FormatError("trailing bytes after the last message")
    return out


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (n,) = _LEN.unpack(await reader.readexactly(4))
    if n > _MAX_FRAME:
        raise FormatError(f"frame of {n} bytes")
    return await reader.readexactly(n)


def encode_submission(req_id: int, p: Pending, rate: int) -> bytes:
    kind = KIND_OPERATOR if p.operator else KIND_EVENT
    return _SUB.pack(req_id, kind, rate) + _bytes(
        p.body, p.signature, p.identity, p.key_id or b"", p.salt or b"", p.payload or b"")


def decode_submission(message: bytes) -> tuple[int, int, int, Pending | None]:
    if len(message) < _SUB.size:
        raise FormatError("truncated submission")
    req_id, kind, rate = _SUB.unpack_from(message)
    if kind == KIND_STATUS:
        return req_id, kind, rate, None
    if kind not in (KIND_EVENT, KIND_OPERATOR):
        raise FormatError(f"unknown submission kind {kind}")
    pos = _SUB.size
    body, pos = _take(message, pos)
    sig, pos = _take(message, pos)
    ident, pos = _take(message, pos)
    key_id, pos = _take(message, pos)
    salt, pos = _take(message, pos)
    payload, pos = _take(message, pos)
    event = kind == KIND_EVENT
    p = Pending(body, sig, ident, key_id=key_id or None, salt=salt if event else None,
                payload=payload if event else None, operator=not event)
    return req_id, kind, rate, p


def encode_result(req_id: int, r: Integrated) -> bytes:
    h = r.head
    proof = b"".join(r.proof or ())
    return (_OK.pack(req_id, 0, r.index, r.duplicate) + _bytes(r.leaf, h.note, proof)
            + _TAIL.pack(h.size, h.timestamp_ms, r.proof is not None) + h.root)


def decode_result(message: bytes, heads: dict[bytes, Head] | None = None) -> tuple[int, Integrated | Exception]:
    """An answer; ``heads`` (note → Head) lets the answers of one batch share one Head."""
    req_id, status = _ID_STATUS.unpack_from(message)
    if status != 0:
        (kind,) = struct.unpack_from(">H", message, 5)
        text = message[7:].decode("utf-8", "replace")
        return req_id, _make_error(kind, text)
    index, dup = struct.unpack_from(">QB", message, 5)
    leaf, pos = _take(message, 14)
    note, pos = _take(message, pos)
    proof, pos = _take(message, pos)
    if pos + _TAIL.size + 32 > len(message):
        raise FormatError("truncated message")
    size, ts, has_proof = _TAIL.unpack_from(message, pos)
    head = heads.get(note) if heads is not None else None
    if head is None:
        head = Head(size, message[pos + _TAIL.size:pos + _TAIL.size + 32], ts, note)
        if heads is not None:
            heads[note] = head
    hashes = _split_hashes(proof) if has_proof else None
    return req_id, Integrated(index, leaf, head, bool(dup), hashes)


_ID_STATUS = struct.Struct(">IB")
_HASHES: dict[int, struct.Struct] = {}


def _split_hashes(proof: bytes) -> tuple[bytes, ...]:
    """The concatenated proof hashes as a tuple of 32-byte strings (one ``struct`` call: a fifth of the
    cost of slicing them in Python; the formats are cached per count, at most 64 at a tree size < 2^64)."""
    count, rest = divmod(len(proof), 32)
    if rest or count > 64:
        raise FormatError(f"proof of {len(proof)} bytes is not a list of at most 64 hashes")
    fmt = _HASHES.get(count)
    if fmt is None:
        fmt = _HASHES[count] = struct.Struct("32s" * count)
    return fmt.unpack(proof)


def _make_error(kind: int, message: str) -> Exception:
    if kind == _ERRORS.index(RateLimitedError):
        text, _, wait = message.rpartition("|")
        return RateLimitedError(text, float(wait or 1))
    if kind < len(_ERRORS):
        return _ERRORS[kind](message)
    return RuntimeError(f"sequencer process failed: {message}")


def encode_error(req_id: int, exc: BaseException) -> bytes:
    kind = next((i for i, t in enumerate(_ERRORS) if isinstance(exc, t)), 0xFFFF)
    message = str(exc)
    if isinstance(exc, RateLimitedError):
        message = f"{message}|{exc.retry_after}"
    return struct.pack(">IBH", req_id, 1, kind) + message.encode()


def encode_status(req_id: int, text: str) -> bytes:
    return struct.pack(">IBH", req_id, 2, 0) + text.encode()


#: ``enqueue(pending, rate)``: an awaitable of the entry's Integrated (a Future on the fast path).
Enqueue = Callable[[Pending, int], Awaitable[Integrated]]
#: ``complete(result)``: adds the inclusion proof to a result that has none (duplicates).
Complete = Callable[[Integrated], Awaitable[Integrated]]
Status = Callable[[], str]
#: ``metrics(snapshots)``: the Prometheus text of this process with the workers' snapshots added in.
RenderMetrics = Callable[[list[bytes]], bytes]


class _Outbox:
    """Messages for one peer, written as frames once per event-loop turn."""

    def __init__(self, writer: asyncio.StreamWriter):
        self.writer = writer
        self.messages: list[bytes] = []

    def put(self, message: bytes) -> None:
        if not self.messages:
            asyncio.get_running_loop().call_soon(self.flush)
        self.messages.append(message)

    def flush(self) -> None:
        messages, self.messages = self.messages, []
        if self.writer.is_closing() or not messages:
            return
        self.writer.writelines(encode_frames(messages))


class SequencerServer:
    """In the sequencer process: accepts worker connections and queues their entries."""

    def __init__(self, path: str, enqueue: Enqueue, status: Status, complete: Complete | None = None,
                 metrics: RenderMetrics | None = None):
        self.path = path
        self._enqueue = enqueue
        self._status = status
        self._complete = complete
        self._metrics = metrics
        # The latest metrics snapshot of each worker connection, kept after it closes (a scrape's
        # counters never go backwards).
        self._snapshots: dict[int, bytes] = {}
        self._connections = itertools.count()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Future] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._connection, path=self.path)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.close()
        for t in list(self._tasks):
            t.cancel()
        if self._server is not None:
            await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        out = _Outbox(writer)
        conn = next(self._connections)
        try:
            while True:
                for message in decode_frame(await _read_frame(reader)):
                    self._one(message, out, conn)
        except (asyncio.IncompleteReadError, ConnectionError, FormatError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _one(self, message: bytes, out: _Outbox, conn: int = 0) -> None:
        req_id = struct.unpack_from(">I", message)[0] if len(message) >= 4 else 0
        try:
            if len(message) >= _SUB.size and message[4] in (KIND_METRICS_PUSH, KIND_METRICS):
                self._snapshots[conn], _ = _take(message, _SUB.size)
                text = ""
                if message[4] == KIND_METRICS:
                    if self._metrics is None:
                        raise RuntimeError("this sequencer process keeps no metrics")  # a wiring bug: 500
                    text = self._metrics(list(self._snapshots.values())).decode()
                out.put(encode_status(req_id, text))
                return
            req_id, kind, rate, pending = decode_submission(message)
            if pending is None:
                out.put(encode_status(req_id, self._status()))
                return
            waiting = asyncio.ensure_future(self._enqueue(pending, rate))
        except Exception as exc:  # every failure goes back to the worker, which maps it to a status
            out.put(encode_error(req_id, exc))
            return
        self._tasks.add(waiting)
        waiting.add_done_callback(lambda fut: self._answer(req_id, fut, out))

    def _answer(self, req_id: int, fut: asyncio.Future, out: _Outbox) -> None:
        self._tasks.discard(fut)
        if fut.cancelled():
            out.put(encode_error(req_id, WritesStoppedError("server shutting down")))
            return
        exc = fut.exception()
        if exc is not None:
            out.put(encode_error(req_id, exc))
            return
        result = fut.result()
        if result.proof is None and self._complete is not None:  # a duplicate: its proof is read
            task = asyncio.ensure_future(self._complete(result))
            self._tasks.add(task)
            task.add_done_callback(lambda t: self._answer(req_id, t, out))
            return
        out.put(encode_result(req_id, result))


class SequencerClient:
    """In a worker process: one connection to the sequencer process, requests multiplexed by id."""

    def __init__(self, path: str):
        self.path = path
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._out: _Outbox | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None

    async def connect(self) -> None:
        reader, self._writer = await asyncio.open_unix_connection(self.path)
        self._out = _Outbox(self._writer)
        self._reader_task = asyncio.ensure_future(self._read_answers(reader))

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self._writer is not None:
            self._writer.close()

    async def _read_answers(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                heads: dict[bytes, Head] = {}
                for message in decode_frame(await _read_frame(reader)):
                    req_id, status = struct.unpack_from(">IB", message)
                    fut = self._waiting.pop(req_id, None)
                    if fut is None or fut.done():
                        continue
                    if status == 2:
                        fut.set_result(message[7:].decode())
                    else:
                        fut.set_result(decode_result(message, heads)[1])
        except (asyncio.IncompleteReadError, ConnectionError, FormatError, asyncio.CancelledError):
            pass
        finally:
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(WritesStoppedError("the sequencer process is gone"))
            self._waiting.clear()

    def _request(self, payload_for: Callable[[int], bytes]) -> asyncio.Future:
        if self._out is None or self._writer is None or self._writer.is_closing():
            raise WritesStoppedError("no connection to the sequencer process")
        req_id = next(self._ids) & 0xFFFFFFFF
        fut = asyncio.get_running_loop().create_future()
        self._waiting[req_id] = fut
        self._out.put(payload_for(req_id))
        return fut

    async def submit(self, pending: Pending, rate: int = 0) -> Integrated:
        result = await self._request(lambda i: encode_submission(i, pending, rate))
        if isinstance(result, Exception):
            raise result
        return result

    async def status(self) -> str:
        return await self._request(lambda i: _SUB.pack(i, KIND_STATUS, 0))

    async def push_metrics(self, snapshot: bytes) -> None:
        """Hand this worker's metrics snapshot to the sequencer process (tlog/server/metrics.py)."""
        await self._request(lambda i: _SUB.pack(i, KIND_METRICS_PUSH, 0) + _bytes(snapshot))

    async def metrics(self, snapshot: bytes) -> bytes:
        """The Prometheus text of every process, this worker's ``snapshot`` included."""
        result = await self._request(lambda i: _SUB.pack(i, KIND_METRICS, 0) + _bytes(snapshot))
        if isinstance(result, Exception):
            raise result
        return result.encode()
