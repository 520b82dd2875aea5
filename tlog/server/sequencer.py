"""The batching sequencer: the single writer of the tree.

Handlers hand it entries whose signatures they already verified; it gathers whatever is queued into
one batch (group commit: while one batch commits, the next one fills), and for each batch:

1. drops duplicates (same entry identity, which excludes the signature bytes: the original index is
   returned), both against storage and inside the batch;
2. stamps every leaf with the log's integration time (never earlier than the previous one) and re-checks
   each event entry's key against the registry at that time;
3. extends a *copy* of the compact range and of the right-most tiles in memory;
4. checks the new root against the previous checkpoint with an RFC 9162 §2.1.4 consistency proof
   read from the new tiles — an InvariantError stops the sequencer if it fails;
5. signs a checkpoint whose timestamp is strictly greater than the previous one;
6. commits leaves, payloads, tiles, checkpoint and head in one storage transaction, the head moving by
   compare-and-swap from the old size;
7. only then swaps the in-memory state and answers the waiting handlers.

Crash ordering: nothing is acknowledged before step 6 returns.  A crash before the commit loses only
unacknowledged entries; a crash after it keeps a batch that no writer saw acknowledged, and retries
get the original indices through deduplication.  The in-memory state is replaced only after the
commit, so a failed commit leaves memory equal to storage.

A failed commit: ``StorageFullError`` fails the batch's writers (507) and later batches try again, so
writes resume when space returns; any other storage failure (an I/O error, a failed fsync, the head
moved under us) stops all writes until restart: a failed fsync is never retried and acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from ..checkpoint import Checkpoint, sign_checkpoint
from ..entry import Leaf, decode_body
from ..errors import InvariantError, TlogError
from ..hashing import HASH_SIZE
from ..note import Signer
from ..proof import consistency_plan, inclusion_path, range_plan, verify_consistency
from ..registry import Registry
from ..tiles import TILE_WIDTH, tiles_for_size, update_tiles
from ..tree import CompactRange, perfect_subtrees
from .storage import Batch, Head, NewLeaf, Storage, StorageFullError
from .treereader import TreeReader, tile_interior

__all__ = ["Pending", "Integrated", "Sequencer", "BacklogFullError", "WritesStoppedError", "RateLimitedError"]

log = logging.getLogger("tlog.sequencer")


class BacklogFullError(Exception):
    """The integration queue is full: the client should retry later (503 with Retry-After)."""


class WritesStoppedError(Exception):
    """Writes are stopped after a storage failure or a failed self-check (503, reads keep working)."""


class RateLimitedError(Exception):
    """A provisioning key over its rate limit (429 with Retry-After)."""

    def __init__(self, message: str, retry_after: float):
        super().__init__(message)
        self.retry_after = retry_after


class _TokenBucket:
    """Per-key rate limit: ``rate`` entries per second, bursts of up to ``rate``."""

    __slots__ = ("rate", "tokens", "stamp")

    def __init__(self, rate: float, now: float):
        self.rate, self.tokens, self.stamp = rate, rate, now

    def take(self, now: float) -> float:
        """0 when a token was taken, else the seconds until one is available."""
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass
class Pending:
    """An entry waiting for integration.  ``body``/``signature`` are already verified."""

    body: bytes
    signature: bytes
    identity: bytes
    key_id: bytes | None = None
    salt: bytes | None = None
    payload: bytes | None = None
    operator: bool = False
    future: asyncio.Future = field(default=None)  # type: ignore[assignment]


class Integrated(NamedTuple):
    """The sequencer's answer: where the entry is and the checkpoint that covers it.  (A named tuple:
    one is made per entry in the sequencer and again in the worker that reads the answer.)"""

    index: int
    leaf: bytes
    head: Head
    duplicate: bool = False
    proof: tuple[bytes, ...] | None = None  # the inclusion proof in ``head``, when the sender made it


def _entry_ms(body: bytes) -> int:
    """The writer's timestamp inside a body (0 if it has none or does not decode; the batch checks
    it properly): twins share it, and storage clusters its deduplication index by it."""
    try:
        return getattr(decode_body(body), "timestamp_ms", 0)
    except TlogError:
        return 0


class Sequencer:
    """Owns the compact range, the right-most tiles, the head and the key registry in memory."""

    def __init__(self, storage: Storage, signer: Signer, origin: str, *, clock_ms: Callable[[], int],
                 max_batch: int = 4096, max_pending: int = 50_000):
        self.storage = storage
        self.signer = signer
        self.origin = origin
        self.clock_ms = clock_ms
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.queue: asyncio.Queue[Pending] = asyncio.Queue()
        self.stopped: Exception | None = None
        self.head: Head | None = None
        self.range = CompactRange()
        self.partial: dict[int, bytes] = {}
        self.registry: Registry | None = None
        self.last_integrated_ms = 0
        self.batches = 0
        self.on_batch: list[Callable[[list[NewLeaf], Head], None]] = []
        self._inflight: dict[bytes, asyncio.Future] = {}
        self._buckets: dict[bytes, _TokenBucket] = {}
        self._task: asyncio.Task | None = None

    # -- start-up ---------------------------------------------------------------------------------

    async def load(self) -> None:
        """Rebuild the in-memory state from storage and check it against the stored head."""
        head = await self.storage.head()
        if head is None:
            raise InvariantError("database has no head: not initialised")
        reader = TreeReader(self.storage.read_tiles)
        ids = perfect_subtrees(head.size)
        self.range = CompactRange.from_hashes(head.size, await reader.read_hashes(ids, head.size))
        if self.range.root() != head.root:
            raise InvariantError(f"stored tiles give root {self.range.root().hex()} at size {head.size}, "
                                 f"the head says {head.root.hex()}")
        self.partial = await self._load_partial(head.size)
        self.registry = None
        if head.size:
            self.registry = Registry.replay(
                ((i, Leaf.decode(b)) for i, b in await self.storage.operator_leaves()), sparse=True)
            self.registry.advance(head.size)
        if head.size:
            last = await self.storage.read_leaves(head.size - 1, head.size)
            self.last_integrated_ms = Leaf.decode(last[0]).integrated_ms
        self.head = head

    async def _load_partial(self, size: int) -> dict[int, bytes]:
        """The right-most partial hash tile of each level, as ``update_tiles`` expects them."""
        partial = [t for t in tiles_for_size(size) if not t.is_full]
        return dict(zip((t.level for t in partial), await self.storage.read_tiles(partial)))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="tlog-sequencer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None
        while not self.queue.empty():
            p = self.queue.get_nowait()
            if not p.future.done():
                p.future.set_exception(WritesStoppedError("server shutting down"))

    # -- submission -------------------------------------------------------------------------------

    def check_rate(self, key_id: bytes, rate: int) -> None:
        """Per-key rate limit (entries per second; 0 = none), enforced here so that it holds across
        every process that hands entries to this sequencer."""
        if rate <= 0:
            return
        now = asyncio.get_running_loop().time()
        bucket = self._buckets.get(key_id)
        if bucket is None or bucket.rate != rate:
            bucket = self._buckets[key_id] = _TokenBucket(float(rate), now)
        wait = bucket.take(now)
        if wait:
            raise RateLimitedError(f"key {key_id.hex()[:16]} is over its limit of {rate} entries/s", wait)

    def enqueue(self, pending: Pending, rate: int = 0) -> asyncio.Future:
        """Queue a verified entry.  The future resolves once the entry is durable and covered by a
        signed checkpoint (or fails with the reason); raises at once when the entry cannot be queued.

        An entry whose twin (same identity) is still waiting gets the twin's answer as a duplicate."""
        if self.stopped is not None:
            raise WritesStoppedError(f"writes are stopped: {self.stopped}")
        if pending.key_id is not None and not pending.operator:
            self.check_rate(pending.key_id, rate)
        loop = asyncio.get_running_loop()
        twin = self._inflight.get(pending.identity)
        if twin is not None:
            return self._duplicate_of(twin, loop.create_future())
        if self.queue.qsize() >= self.max_pending:
            raise BacklogFullError(f"integration backlog is full ({self.queue.qsize()} entries)")
        fut = pending.future = loop.create_future()
        self._inflight[pending.identity] = fut
        fut.add_done_callback(lambda f, ident=pending.identity: self._forget(ident, f))
        self.queue.put_nowait(pending)
        return fut

    def _forget(self, identity: bytes, fut: asyncio.Future) -> None:
        if self._inflight.get(identity) is fut:
            del self._inflight[identity]

    @staticmethod
    def _duplicate_of(twin: asyncio.Future, fut: asyncio.Future) -> asyncio.Future:
        def copy(t: asyncio.Future) -> None:
            if fut.done():
                return
            if t.cancelled():
                fut.set_exception(WritesStoppedError("server shutting down"))
            elif t.exception() is not None:
                fut.set_exception(t.exception())
            else:
                r: Integrated = t.result()
                fut.set_result(Integrated(r.index, r.leaf, r.head, duplicate=True, proof=r.proof))
        twin.add_done_callback(copy)
        return fut

    async def submit(self, pending: Pending, rate: int = 0) -> Integrated:
        """Queue a verified entry and wait until it is durable and covered by a signed checkpoint
        (a cancelled caller does not cancel the entry)."""
        return await asyncio.shield(self.enqueue(pending, rate))

    async def _run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            if self.stopped is not None:
                self._fail(batch, WritesStoppedError(f"writes are stopped: {self.stopped}"))
                continue
            try:
                await self._integrate(batch)
            except StorageFullError as exc:
                log.error("batch of %d not committed: %s", len(batch), exc)
                self._fail(batch, exc)
            except Exception as exc:  # an I/O error, a failed fsync, a broken invariant: stop writing
                log.critical("writes stopped: %s", exc, exc_info=True)
                self.stopped = exc
                self._fail(batch, WritesStoppedError(f"writes are stopped: {exc}"))

    @staticmethod
    def _fail(batch: list[Pending], exc: Exception) -> None:
        for p in batch:
            if not p.future.done():
                p.future.set_exception(exc)

    # -- one batch --------------------------------------------------------------------------------

    async def _integrate(self, batch: list[Pending]) -> None:
        head = self.head
        if head is None:
            raise InvariantError("sequencer not loaded")
        fresh = await self._dedupe(batch, head)
        if not fresh:
            return
        now = max(self.clock_ms(), self.last_integrated_ms)
        # A batch with operator entries changes the registry: it works on a private copy, swapped in
        # only after the commit.  An event-only batch reads the shared registry and changes nothing.
        mixed = any(p.operator for p in fresh)
        registry = self.registry.copy() if mixed and self.registry is not None else self.registry
        leaves, accepted, registry = self._make_leaves(fresh, head.size, now, registry, mixed)
        if not leaves:
            return
        new_range = self.range.copy()
        nodes = new_range.extend([x.leaf_hash for x in leaves])
        update = update_tiles(head.size, self.partial, nodes)
        new_root = new_range.root()
        known = self._known_nodes(self.range, nodes)
        self._check_consistency(head, known, new_range.size, new_root)
        new_head = self._sign(new_range.size, new_root, head)
        interiors = {t: tile_interior(d) for t, d in update.tiles.items() if len(d) == TILE_WIDTH * HASH_SIZE}
        await self.storage.commit_batch(Batch(leaves, update.tiles, new_head, tile_interiors=interiors),
                                        expected_size=head.size)
        # Committed: now, and only now, memory moves forward and writers are answered.
        proofs = self._receipt_proofs(known, [leaf.index for _, leaf in accepted], new_head.size)
        self.range, self.partial, self.head = new_range, update.partial, new_head
        if registry is not None:
            registry.advance(new_head.size)
        self.registry, self.last_integrated_ms = registry, now
        self.batches += 1
        for (p, leaf), proof in zip(accepted, proofs):
            if not p.future.done():
                p.future.set_result(Integrated(leaf.index, leaf.leaf, new_head, proof=proof))
        for hook in self.on_batch:
            hook(leaves, new_head)

    @staticmethod
    def _known_nodes(old: CompactRange, nodes: list[tuple[int, int, bytes]]) -> dict[tuple[int, int], bytes]:
        """The perfect subtrees a batch's proofs can need, by node id: those the batch completed
        (``nodes``) and the old compact range's."""
        known = {(level, index): h for level, index, h in nodes}
        known.update(zip(perfect_subtrees(old.size), old.hashes))
        return known

    @staticmethod
    def _receipt_proofs(known: dict[tuple[int, int], bytes], indices: list[int],
                        size: int) -> list[tuple[bytes, ...]]:
        """Inclusion proofs (RFC 9162 §2.1.3.1) of the batch's entries in the new tree, from memory.

        Every node such a proof needs is a perfect subtree that either holds a leaf of the batch (so
        the batch completed it: it is in ``known``) or lies wholly left of the batch, and then, being a
        left sibling whose parent reaches into the batch, is one of the old compact range's subtrees.
        The right-border element (``inclusion_path``) lies inside the batch and is shared by every
        entry whose path meets the border at the same level: it is folded once per batch."""
        borders: dict[int, bytes] = {}

        def hashes(ids: list, lo: int) -> tuple[bytes, ...]:
            if lo >= 0 and lo not in borders:
                plan = range_plan(lo, size)
                [borders[lo]] = plan.rehash([known[node] for node in plan.ids])
            return tuple(borders[lo] if node is None else known[node] for node in ids)

        if not indices:
            return []
        # Above bit ``shared`` the batch's indices agree: that part of every path is the same.
        shared = (indices[0] ^ indices[-1]).bit_length()
        top = hashes(*inclusion_path(indices[0], size, from_level=shared))
        return [hashes(*inclusion_path(i, size, to_level=shared)) + top for i in indices]

    async def _dedupe(self, batch: list[Pending], head: Head) -> list[Pending]:
        known = await self.storage.find_identities([(p.identity, _entry_ms(p.body)) for p in batch])
        fresh: list[Pending] = []
        for p in batch:
            index = known.get(p.identity)
            if index is None:
                fresh.append(p)
                continue
            leaf = (await self.storage.read_leaves(index, index + 1))[0]
            p.future.set_result(Integrated(index, leaf, head, duplicate=True))
        return fresh

    def _make_leaves(self, fresh: list[Pending], size: int, now: int, registry: Registry | None,
                     mixed: bool) -> tuple[list[NewLeaf], list[tuple[Pending, NewLeaf]], Registry | None]:
        leaves: list[NewLeaf] = []
        accepted: list[tuple[Pending, NewLeaf]] = []
        for p in fresh:
            index = size + len(leaves)
            leaf = Leaf(p.body, p.signature, now)
            try:
                registry = self._admit(registry, index, leaf, p, mixed)
            except TlogError as exc:
                p.future.set_exception(exc)
                continue
            new = NewLeaf(index=index, leaf=leaf.encode(), identity=p.identity, leaf_hash=leaf.hash(),
                          key_id=p.key_id, integrated_ms=now, salt=p.salt, payload=p.payload,
                          operator=p.operator, entry_ms=getattr(leaf.entry, "timestamp_ms", 0))
            leaves.append(new)
            accepted.append((p, new))
        return leaves, accepted, registry

    @staticmethod
    def _admit(registry: Registry | None, index: int, leaf: Leaf, p: Pending, mixed: bool) -> Registry:
        """Check the entry against the registry at its integration time (the handler already verified
        the signature).  In a mixed batch every leaf is applied to the private copy in order; in an
        event-only batch the registry cannot change inside the batch, so checking at its own size is
        the same as checking at the entry's index."""
        if index == 0:
            return Registry.replay([(0, leaf)])
        if registry is None:
            raise InvariantError("no key registry at a non-empty tree")
        if not mixed:
            registry.check_event(registry.size, leaf, verify_signature=False)
            return registry
        if not p.operator:
            registry.check_event(index, leaf, verify_signature=False)
        registry.apply(index, leaf)
        return registry

    @staticmethod
    def _check_consistency(head: Head, known: dict[tuple[int, int], bytes], size: int, root: bytes) -> None:
        """RFC 9162 §2.1.4.2: the new root must extend the last signed one, checked before signing.

        The proof is built by the RFC 9162 §2.1.4.1 algorithm from the nodes the batch completed and
        the old compact range (every node it needs is one or the other, as for receipts), and verified
        against the old checkpoint's root: an independent check of the compact range's new root."""
        if head.size == 0:
            return
        plan = consistency_plan(head.size, size)
        try:
            proof = plan.rehash([known[node] for node in plan.ids])
            verify_consistency(head.size, size, proof, head.root, root)
        except (TlogError, KeyError) as exc:
            raise InvariantError(f"new tree {size} is not consistent with checkpoint {head.size}: {exc!r}") from exc

    def _sign(self, size: int, root: bytes, head: Head) -> Head:
        timestamp = max(self.clock_ms(), head.timestamp_ms + 1)  # strictly increasing, even if the clock steps back
        note = sign_checkpoint(Checkpoint(self.origin, size, root), self.signer)
        return Head(size, root, timestamp, note)

    def current_tiles(self) -> dict[tuple[int, int], bytes]:
        """The right-most partial hash tile of each level at the current head, by (level, tile index),
        for readers (tiles only grow, so a narrower, older width is a prefix of these)."""
        head = self.head
        if head is None:
            return {}
        return {(level, (head.size >> (8 * level)) // 256): data for level, data in self.partial.items()
                if level >= 0}

    def backlog(self) -> int:
        return self.queue.qsize()
