"""The running log: storage, sequencer, keys and limits, wired together for the handlers.

Everything the handlers do that is not HTTP lives here, so handlers stay thin.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import tiles as tiles_mod
from ..entry import Erasure, EventEntry, Genesis, KeyEvent, Leaf, decode_body, payload_commitment
from ..errors import FormatError, InvariantError, KeyRegistryError, ProofError
from ..hashing import HASH_SIZE
from ..note import Signer, encode_base64
from ..tlogproof import TlogProof, format_head
from .config import LogConfig, check_private_file
from .erasure import Purger
from .logs import json_str, log_event
from .metrics import Metrics
from .sequencer import Integrated, Pending, RateLimitedError, Sequencer
from .sqlite import SQLiteStorage, open_storage
from .storage import Head
from .tokens import TokenStore
from .treereader import TreeReader

__all__ = ["LogState", "RateLimitedError", "NotFoundError", "TooLargeError", "Receipt"]


_oplog = logging.getLogger("tlog.operator")


class NotFoundError(Exception):
    """The thing asked for does not exist (yet)."""


class TooLargeError(Exception):
    """A body or payload over the configured limit."""


@dataclass(frozen=True)
class Receipt:
    index: int
    leaf: bytes
    checkpoint: bytes
    proof: list[bytes]
    duplicate: bool

    def tlog_proof(self) -> bytes:
        return TlogProof(self.index, self.proof, self.checkpoint, self.leaf).format()

    def to_json(self) -> dict:
        return {"index": self.index, "leaf": encode_base64(self.leaf), "checkpoint": self.checkpoint.decode(),
                "proof": [encode_base64(h) for h in self.proof], "duplicate": self.duplicate,
                "receipt": self.tlog_proof().decode()}

    def to_json_bytes(self) -> bytes:
        """``to_json()`` as compact JSON, written directly (a receipt goes out with every append, and
        ``json.dumps`` of the dict was most of its cost): each hash is put in base64 once for the
        list and the tlog-proof text, whose lines need no JSON escape but their newlines; the
        checkpoint's JSON string is made once per checkpoint."""
        if any(len(h) != HASH_SIZE for h in self.proof):
            raise InvariantError(f"receipt for entry {self.index} carries a proof hash that is not {HASH_SIZE} bytes")
        proof = [encode_base64(h) for h in self.proof]
        leaf = encode_base64(self.leaf)
        note = _json_note(self.checkpoint)
        text = format_head(self.index, proof, leaf, newline="\\n") + note[1:-1]
        listed = '","'.join(proof)
        return (f'{{"index":{self.index},"leaf":"{leaf}","checkpoint":{note},'
                f'"proof":[{chr(34) + listed + chr(34) if proof else ""}],'
                f'"duplicate":{"true" if self.duplicate else "false"},"receipt":"{text}"}}').encode()


@functools.lru_cache(maxsize=16)
def _json_note(note: bytes) -> str:
    return json_str(note.decode())


class LogState:
    """One open log."""

    def __init__(self, data_dir: str, config: LogConfig, storage: SQLiteStorage, signer: Signer,
                 clock_ms: Callable[[], int], sequencer=None):
        self.data_dir = data_dir
        self.config = config
        self.storage = storage
        self.signer = signer
        self.clock_ms = clock_ms
        # The sequencer, or in an HTTP worker process (tlog/server/workers.py) its remote stand-in.
        self.sequencer = sequencer or Sequencer(storage, signer, config.origin, clock_ms=clock_ms,
                                                max_batch=config.max_batch, max_pending=config.max_pending)
        self.reader = TreeReader(storage.read_tile_trees, overlay=self.sequencer.current_tiles,
                                 read_path=storage.read_tile_path)
        # Operating the log (spec/privacy.md): reader tokens (opened by ``open``), metrics, WAL purges.
        self.tokens: TokenStore | None = None
        self.purger = Purger(storage)
        self.metrics = Metrics()
        self.metrics.bind(lambda: self.sequencer.head, clock_ms, self.sequencer.backlog,
                          lambda: self.sequencer.stopped is not None)
        self.sequencer.on_batch.append(self.metrics.on_batch)
        if hasattr(self.sequencer, "metrics_snapshot"):  # an HTTP worker: counts go to the sequencer process
            self.sequencer.metrics_snapshot = self.metrics.snapshot

    @classmethod
    async def open(cls, data_dir: str, clock_ms: Callable[[], int] | None = None,
                   worker_socket: str | None = None) -> LogState:
        """Open the log.  With ``worker_socket`` this process is an HTTP worker: writes go to the
        sequencer process listening there (tlog/server/workers.py)."""
        config = LogConfig.load(data_dir)
        signer = Signer.from_skey(check_private_file(os.path.join(data_dir, "log.key")).decode().strip())
        storage = await open_storage(os.path.join(data_dir, "log.db"))
        remote = None
        if worker_socket is not None:
            from .workers import RemoteSequencer

            remote = RemoteSequencer(storage, worker_socket)
        state = cls(data_dir, config, storage, signer, clock_ms or (lambda: time.time_ns() // 1_000_000),
                    sequencer=remote)
        try:
            await state.sequencer.load()
            state.tokens = await TokenStore.open(storage.path)
        except BaseException:
            await storage.close()
            raise
        await state.purger.purge()  # an erasure whose purge a crash interrupted leaves nothing behind
        state.sequencer.start()
        return state

    async def close(self) -> None:
        await self.sequencer.stop()
        if self.tokens is not None:
            await self.tokens.close()
        await self.storage.close()

    @property
    def head(self) -> Head:
        head = self.sequencer.head
        if head is None:
            raise InvariantError("log not loaded")
        return head

    # -- writes -----------------------------------------------------------------------------------

    async def append_event(self, body: bytes, signature: bytes, salt: bytes, payload: bytes) -> Receipt:
        """Verify a writer's signed event entry and wait for its receipt (counted in the metrics)."""
        start = time.perf_counter()
        try:
            receipt = await self._append_event(body, signature, salt, payload)
        except Exception as exc:
            self.metrics.append_failed(exc, body, self.sequencer.registry)
            raise
        self.metrics.append_done(receipt.duplicate, body, time.perf_counter() - start)
        return receipt

    async def _append_event(self, body: bytes, signature: bytes, salt: bytes, payload: bytes) -> Receipt:
        if len(payload) > self.config.max_payload_bytes:
            raise TooLargeError(f"payload is {len(payload)} bytes, the limit is {self.config.max_payload_bytes}")
        entry = decode_body(body)
        if not isinstance(entry, EventEntry):
            raise FormatError("POST /v1/entries takes event entries; key events go to /v1/key-events")
        if entry.origin != self.config.origin:
            raise KeyRegistryError(f"entry is for log {entry.origin!r}, this is {self.config.origin!r}")
        if payload_commitment(salt, payload) != entry.commitment:
            raise FormatError("payload and salt do not match the entry's commitment")
        # The integration time the sequencer will stamp: never earlier than the last one, even when the
        # clock stepped back (checking against the raw clock would refuse every writer for that long).
        now = max(self.clock_ms(), getattr(self.sequencer, "last_integrated_ms", 0))
        leaf = Leaf(body, signature, now)
        record = await self._check_event(leaf)
        queued = time.perf_counter()
        result = await self.sequencer.submit(Pending(body, signature, leaf.identity(), key_id=entry.key_id,
                                                     salt=salt, payload=payload),
                                             record.rate_limit or self.config.default_rate_limit)
        self.metrics.integration.observe(time.perf_counter() - queued)
        return await self._receipt(result)

    async def append_operator(self, body: bytes, signature: bytes) -> Receipt:
        """An operator-signed key event or erasure: checked in full when it is integrated."""
        entry = decode_body(body)
        if not isinstance(entry, (KeyEvent, Erasure)):
            raise FormatError("only key events and erasures are operator entries")
        if entry.origin != self.config.origin:
            raise KeyRegistryError(f"entry is for log {entry.origin!r}, this is {self.config.origin!r}")
        leaf = Leaf(body, signature, self.clock_ms())
        try:
            probe = self.sequencer.registry.copy()
            probe.apply(probe.size, leaf)  # fail fast with the reason; re-checked in the batch
            result = await self.sequencer.submit(Pending(body, signature, leaf.identity(), operator=True))
        except Exception as exc:
            self.metrics.operator_failed(exc)
            raise
        receipt = await self._receipt(result)
        self.metrics.operator_appends.labels("duplicate" if receipt.duplicate else "accepted", "").inc()
        if not receipt.duplicate:
            self._log_operator_entry(receipt.index, entry)
        if isinstance(entry, Erasure):
            await self.purger.purge()  # the payload's old pages leave the WAL before the receipt goes out
        return receipt

    @staticmethod
    def _log_operator_entry(index: int, entry: KeyEvent | Erasure) -> None:
        """One structured log line per key event and erasure (spec/privacy.md)."""
        if isinstance(entry, Erasure):
            log_event(_oplog, "erasure", index=index, erased_index=entry.index, reason=entry.reason,
                      operator_timestamp_ms=entry.timestamp_ms)
            return
        log_event(_oplog, "key_event", index=index, action=entry.action.text, **_entry_json(entry))

    async def _check_event(self, leaf: Leaf):
        """The key, its validity and the signature, against the registry as far as it goes (the
        sequencer's own re-check at integration time is authoritative).  A worker process whose copy
        does not know the key yet refreshes it once and checks again."""
        try:
            return self.sequencer.registry.check_event(self.sequencer.registry.size, leaf)
        except KeyRegistryError:
            refresh = getattr(self.sequencer, "refresh", None)
            if refresh is None:
                raise
            await refresh()
            return self.sequencer.registry.check_event(self.sequencer.registry.size, leaf)

    async def with_proof(self, result: Integrated) -> Integrated:
        """For the worker hand-off (tlog/server/ipc.py): a result without an inclusion proof (a duplicate
        found in storage) gets one, read from the tiles."""
        if result.proof is not None:
            return result
        head = result.head if result.head.size > result.index else self.head
        proof = await self.inclusion_proof(result.index, head.size)
        return Integrated(result.index, result.leaf, head, result.duplicate, tuple(proof))

    async def _receipt(self, result: Integrated) -> Receipt:
        head = result.head
        if result.proof is not None and head.size > result.index:
            return Receipt(result.index, result.leaf, head.note, list(result.proof), result.duplicate)
        if result.duplicate and head.size <= result.index:
            head = self.head
        proof = await self.inclusion_proof(result.index, head.size)
        return Receipt(result.index, result.leaf, head.note, proof, result.duplicate)

    # -- reads ------------------------------------------------------------------------------------

    async def _head_covering(self, size: int) -> Head:
        """The head, caught up with storage first when ``size`` is beyond it: in an HTTP worker process
        the head follows the sequencer a poll behind, and a client holding a receipt from another
        worker may already ask about a larger tree."""
        head = self.head
        if size > head.size:
            refresh = getattr(self.sequencer, "refresh", None)
            if refresh is not None:
                await refresh()
                head = self.head
        return head

    async def metrics_text(self) -> bytes:
        """``GET /metrics``: this process's registry, or in an HTTP worker the sum over every process of
        ``tlog serve --workers N``, rendered by the sequencer process (tlog/server/metrics.py)."""
        client = getattr(self.sequencer, "client", None)
        if client is None:
            return self.metrics.render()
        return await client.metrics(self.metrics.snapshot())

    async def latest_head(self) -> Head:
        """The newest committed head.  In an HTTP worker process it is read from storage, so that
        /checkpoint is never older than a receipt another worker has just issued."""
        refresh = getattr(self.sequencer, "refresh", None)
        if refresh is not None:
            await refresh()
        return self.head

    async def _check_size(self, size: int) -> int:
        head = await self._head_covering(size)
        if size > head.size:
            raise ProofError(f"tree_size {size} is beyond the current size {head.size}")
        return size

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        await self._check_size(size)
        if not 0 <= index < size:
            raise ProofError(f"index {index} is not in a tree of size {size}")
        return await self.reader.inclusion_proof(index, size)

    async def consistency_proof(self, first: int, second: int) -> list[bytes]:
        await self._check_size(second)
        if not 0 <= first <= second:
            raise ProofError(f"first {first} must be between 0 and second {second}")
        return await self.reader.consistency_proof(first, second)

    async def find_leaf_hash(self, leaf_hash: bytes, size: int) -> int:
        if len(leaf_hash) != HASH_SIZE:
            raise FormatError(f"a leaf hash is {HASH_SIZE} bytes, not {len(leaf_hash)}")
        index = await self.storage.find_leaf_hash(leaf_hash)
        if index is None or index >= size:
            raise NotFoundError(f"no leaf with that hash in the tree of size {size}")
        return index

    async def leaf(self, index: int) -> bytes:
        head = await self._head_covering(index + 1)
        if not 0 <= index < head.size:
            raise NotFoundError(f"no entry {index}: the tree has {head.size} entries")
        return (await self.storage.read_leaves(index, index + 1))[0]

    async def hash_tile(self, tile: tiles_mod.Tile) -> bytes:
        size = (await self._head_covering((tile.index * 256 + tile.width) << (8 * tile.level))).size
        count = size >> (8 * tile.level)
        have = min(256, count - tile.index * 256)
        if tile.width > have:
            raise NotFoundError(f"{tile.path()} does not exist at tree size {size}")
        return (await self.storage.read_tiles([tile]))[0]

    async def entry_bundle(self, tile: tiles_mod.Tile) -> bytes:
        size = (await self._head_covering(tile.index * 256 + tile.width)).size
        have = min(256, size - tile.index * 256)
        if tile.width > have:
            raise NotFoundError(f"{tile.path()} does not exist at tree size {size}")
        start = tile.index * 256
        return tiles_mod.encode_entry_bundle(await self.storage.read_leaves(start, start + tile.width))

    def registry_json(self) -> dict:
        return self.sequencer.registry.to_json()

    def describe_entry(self, index: int, leaf_bytes: bytes) -> dict:
        leaf = Leaf.decode(leaf_bytes)
        entry = leaf.entry
        out = {"index": index, "leaf": encode_base64(leaf_bytes), "integrated_ms": leaf.integrated_ms,
               "kind": type(entry).__name__}
        if isinstance(entry, EventEntry):
            record = self.sequencer.registry.keys.get(entry.key_id)
            out.update(key_id=entry.key_id.hex(), key_name=getattr(record, "name", None),
                       timestamp_ms=entry.timestamp_ms, commitment=encode_base64(entry.commitment))
        elif isinstance(entry, (KeyEvent, Genesis, Erasure)):
            out["event"] = _entry_json(entry)
        return out


def _entry_json(entry) -> dict:
    out = {}
    for name, value in vars(entry).items() if hasattr(entry, "__dict__") else []:
        out[name] = encode_base64(value) if isinstance(value, bytes) else (
            value.to_text() if hasattr(value, "to_text") else value)
    return out

