"""Hand-off between HTTP worker processes and the sequencer process (``tlog serve --workers N``).

Workers verify signatures, keys and commitments (the costly, parallel part) and send each verified
entry over a Unix socket to the one process that owns the database and the sequencer; it answers when
the entry is durable and covered by a signed checkpoint.  Two processes never write the tree.

Framing: every message is a big-endian uint32 length and that many bytes.  A submission is
``uint32 id, uint8 kind (1 event, 2 operator), uint32 rate limit`` then the byte strings body,
signature, identity, key id, salt, payload, each as a uint32 length and the bytes.  The answer is
``uint32 id, uint8 status``; status 0 carries ``uint64 index, uint8 duplicate`` and the byte strings
leaf and checkpoint note, then ``uint64 size, uint64 timestamp_ms`` and the 32-byte root; any other
status is an error with a uint16 kind and a UTF-8 message.  The answer also carries the inclusion proof
of the entry in that checkpoint (the byte string of concatenated hashes, and a uint8 flag after the
timestamp saying whether it is there), made by the sequencer process from the tiles it holds in memory,
so a worker needs no database read to answer an append.  A request with kind 3 asks for the
sequencer's status (backlog, and why writes are stopped, if they are).
"""

from __future__ import annotations

import asyncio
import itertools
import struct
from collections.abc import Awaitable, Callable

from ..errors import FormatError, KeyRegistryError, SignatureError, TlogError
from .sequencer import BacklogFullError, Integrated, Pending, RateLimitedError, WritesStoppedError
from .storage import Head, StorageFullError

__all__ = ["SequencerServer", "SequencerClient"]

_LEN = struct.Struct(">I")
_MAX_FRAME = 1 << 24
KIND_EVENT, KIND_OPERATOR, KIND_STATUS = 1, 2, 3


# Errors that cross the socket, by wire number.  Anything else is an internal error on the other side.
_ERRORS: list[type[Exception]] = [KeyRegistryError, SignatureError, FormatError, BacklogFullError,
                                  WritesStoppedError, StorageFullError, RateLimitedError, TlogError]


def _bytes(*parts: bytes) -> bytes:
    return b"".join(_LEN.pack(len(p)) + p for p in parts)


def _take(buf: memoryview, pos: int) -> tuple[bytes, int]:
    (n,) = _LEN.unpack_from(buf, pos)
    pos += 4
    if pos + n > len(buf):
        raise FormatError("truncated frame")
    return bytes(buf[pos:pos + n]), pos + n


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    (n,) = _LEN.unpack(await reader.readexactly(4))
    if n > _MAX_FRAME:
        raise FormatError(f"frame of {n} bytes")
    return await reader.readexactly(n)


def _write_frame(writer: asyncio.StreamWriter, payload: bytes) -> None:
    writer.write(_LEN.pack(len(payload)) + payload)


def encode_submission(req_id: int, p: Pending, rate: int) -> bytes:
    kind = KIND_OPERATOR if p.operator else KIND_EVENT
    return struct.pack(">IBI", req_id, kind, rate) + _bytes(
        p.body, p.signature, p.identity, p.key_id or b"", p.salt or b"", p.payload or b"")


def decode_submission(frame: bytes) -> tuple[int, int, int, Pending | None]:
    req_id, kind, rate = struct.unpack_from(">IBI", frame)
    if kind == KIND_STATUS:
        return req_id, kind, rate, None
    buf, pos, fields = memoryview(frame), 9, []
    for _ in range(6):
        value, pos = _take(buf, pos)
        fields.append(value)
    body, sig, ident, key_id, salt, payload = fields
    p = Pending(body, sig, ident, key_id=key_id or None, salt=salt if kind == KIND_EVENT else None,
                payload=payload if kind == KIND_EVENT else None, operator=kind == KIND_OPERATOR)
    return req_id, kind, rate, p


def encode_result(req_id: int, r: Integrated) -> bytes:
    h = r.head
    proof = b"".join(r.proof or ())
    return (struct.pack(">IBQB", req_id, 0, r.index, r.duplicate) + _bytes(r.leaf, h.note, proof)
            + struct.pack(">QQB", h.size, h.timestamp_ms, r.proof is not None) + h.root)


def decode_result(frame: bytes) -> tuple[int, Integrated | Exception]:
    req_id, status = struct.unpack_from(">IB", frame)
    buf = memoryview(frame)
    if status != 0:
        (kind,) = struct.unpack_from(">H", frame, 5)
        message = bytes(buf[7:]).decode("utf-8", "replace")
        return req_id, _make_error(kind, message)
    index, dup = struct.unpack_from(">QB", frame, 5)
    leaf, pos = _take(buf, 14)
    note, pos = _take(buf, pos)
    proof, pos = _take(buf, pos)
    size, ts, has_proof = struct.unpack_from(">QQB", frame, pos)
    root = bytes(buf[pos + 17:pos + 49])
    hashes = tuple(proof[i:i + 32] for i in range(0, len(proof), 32)) if has_proof else None
    return req_id, Integrated(index, leaf, Head(size, root, ts, note), bool(dup), hashes)


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


Submit = Callable[[Pending, int], Awaitable[Integrated]]
Status = Callable[[], str]


class SequencerServer:
    """In the sequencer process: accepts worker connections and submits their entries."""

    def __init__(self, path: str, submit: Submit, status: Status):
        self.path = path
        self._submit = submit
        self._status = status
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
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
        try:
            while True:
                frame = await _read_frame(reader)
                task = asyncio.ensure_future(self._one(frame, writer))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError, FormatError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _one(self, frame: bytes, writer: asyncio.StreamWriter) -> None:
        req_id = struct.unpack_from(">I", frame)[0]
        try:
            req_id, kind, rate, pending = decode_submission(frame)
            if pending is None:
                out = struct.pack(">IBH", req_id, 2, 0) + self._status().encode()
            else:
                out = encode_result(req_id, await self._submit(pending, rate))
        except Exception as exc:  # every failure goes back to the worker, which maps it to a status
            out = encode_error(req_id, exc)
        if not writer.is_closing():
            _write_frame(writer, out)


class SequencerClient:
    """In a worker process: one connection to the sequencer process, requests multiplexed by id."""

    def __init__(self, path: str):
        self.path = path
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None

    async def connect(self) -> None:
        reader, self._writer = await asyncio.open_unix_connection(self.path)
        self._reader_task = asyncio.ensure_future(self._read_answers(reader))

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self._writer is not None:
            self._writer.close()

    async def _read_answers(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                frame = await _read_frame(reader)
                req_id, status = struct.unpack_from(">IB", frame)
                fut = self._waiting.pop(req_id, None)
                if fut is None or fut.done():
                    continue
                if status == 2:
                    fut.set_result(frame[7:].decode())
                else:
                    fut.set_result(decode_result(frame)[1])
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(WritesStoppedError("the sequencer process is gone"))
            self._waiting.clear()

    async def _request(self, payload_for: Callable[[int], bytes]):
        if self._writer is None or self._writer.is_closing():
            raise WritesStoppedError("no connection to the sequencer process")
        req_id = next(self._ids) & 0xFFFFFFFF
        fut = asyncio.get_running_loop().create_future()
        self._waiting[req_id] = fut
        _write_frame(self._writer, payload_for(req_id))
        return await fut

    async def submit(self, pending: Pending, rate: int = 0) -> Integrated:
        result = await self._request(lambda i: encode_submission(i, pending, rate))
        if isinstance(result, Exception):
            raise result
        return result

    async def status(self) -> str:
        return await self._request(lambda i: struct.pack(">IBI", i, KIND_STATUS, 0))
