"""The whole-log audit (``tlog audit``): re-derive a log from its raw data and check everything.

Normative description of every check and what it proves: spec/audit.md §5.  This module never imports
``tlog.server`` (tests/test_imports.py): it reads an export directory or a log's public tlog-tiles
endpoints through an :class:`AuditSource` (tlog/export.py).

The audit streams: entry bundles are read in index order, every leaf hash is folded into a
:class:`~tlog.tree.CompactRange` (O(log n) state) that rebuilds each hash tile as it completes
(:class:`TileRebuilder`), and the key registry is replayed leaf by leaf.  Memory is bounded by the number
of keys, erasures and findings, never by the number of entries.  Signature checks, the one expensive
step, run in a thread pool (libsodium releases the GIL) while the main thread decodes the next bundle.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from .audit import RegistryBundle
from .checkpoint import Checkpoint, open_checkpoint
from .entry import EventEntry, Leaf, payload_commitment
from .errors import FormatError, SignatureError, TlogError
from .hashing import EMPTY_ROOT, HASH_SIZE
from .keys import PublicKey
from .note import Verifier, encode_base64
from .registry import EntryRejected, Registry
from .tiles import TILE_HEIGHT, TILE_WIDTH, Tile, decode_entry_bundle, entry_tiles_for_size
from .tree import CompactRange

__all__ = ["TileRebuilder", "first_tile_difference", "Finding", "PayloadRecord", "AuditReport", "LogAuditor",
           "AuditSource", "run_audit"]


class TileRebuilder:
    """Rebuilds every C2SP tlog-tiles hash tile of a tree of ``size`` leaves from its leaf hashes, in index
    order, holding only the compact range and one growing tile per tile-level (spec/tiles.md §2).

    :meth:`add` returns each tile completed by the leaves, ``(Tile, bytes)``; :meth:`finish` returns the
    partial tiles once all ``size`` leaves were added.  Together they are exactly ``tiles_for_size(size)``.
    """

    def __init__(self, size: int | None = None):
        self.size = size  # None: not known in advance (a writer); finish() then closes at the leaves added
        self.range = CompactRange()
        self._buffers: dict[int, bytearray] = collections.defaultdict(bytearray)

    def add(self, leaf_hashes: list[bytes]) -> list[tuple[Tile, bytes]]:
        if self.size is not None and self.range.size + len(leaf_hashes) > self.size:
            raise FormatError(f"{self.range.size + len(leaf_hashes)} leaves exceed the tree size {self.size}")
        done: list[tuple[Tile, bytes]] = []
        buffers = self._buffers
        for level, index, node in self.range.extend(leaf_hashes):
            if level % TILE_HEIGHT:
                continue
            buf = buffers[level // TILE_HEIGHT]
            buf += node
            if index % TILE_WIDTH == TILE_WIDTH - 1:
                done.append((Tile(level // TILE_HEIGHT, index // TILE_WIDTH), bytes(buf)))
                buf.clear()
        return done

    def root(self) -> bytes:
        """MTH of the leaves added so far (RFC 6962 §2.1)."""
        return self.range.root()

    def finish(self) -> list[tuple[Tile, bytes]]:
        """The partial tiles, once every leaf was added."""
        size = self.range.size
        if self.size is not None and size != self.size:
            raise FormatError(f"only {size} of {self.size} leaves were added")
        done = []
        for level, buf in sorted(self._buffers.items()):
            if buf:
                count = size >> (TILE_HEIGHT * level)
                done.append((Tile(level, count // TILE_WIDTH, len(buf) // HASH_SIZE), bytes(buf)))
        return done


def first_tile_difference(tile: Tile, computed: bytes, stored: bytes | None) -> tuple[int, str, int] | None:
    """None when ``stored`` equals the recomputed tile; else (first leaf index affected, description, how
    many leaves from there the differing node covers)."""
    if stored == computed:
        return None
    shift = TILE_HEIGHT * tile.level
    if stored is None or len(stored) != len(computed):
        what = "is missing" if stored is None else f"is {len(stored)} bytes, want {len(computed)}"
        return tile.index * TILE_WIDTH << shift, f"{tile.path()} {what}", TILE_WIDTH << shift
    pos = next(i for i in range(0, len(computed), HASH_SIZE) if stored[i:i + HASH_SIZE] != computed[i:i + HASH_SIZE])
    node = tile.index * TILE_WIDTH + pos // HASH_SIZE
    return node << shift, (f"{tile.path()} hash {pos // HASH_SIZE} (node ({shift}, {node})) is "
                           f"{stored[pos:pos + HASH_SIZE].hex()[:16]}…, recomputed "
                           f"{computed[pos:pos + HASH_SIZE].hex()[:16]}…"), 1 << shift


# ============================================================================ whole-log audit

@dataclass(frozen=True)
class Finding:
    """One failed check: its name, the first entry index it concerns (None for the whole log), a reason."""

    check: str
    index: int | None
    detail: str
    span: int = 1  # a hash tile finding covers the leaves of the node that differs

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"check": self.check, "index": self.index, "detail": self.detail}
        if self.span > 1:
            out["leaves"] = [self.index, (self.index or 0) + self.span - 1]
        return out

    def line(self) -> str:
        at = f"index {self.index}" if self.index is not None else "the log"
        return f"{at} ({self.check}): {self.detail}"


@dataclass(frozen=True)
class PayloadRecord:
    """What an export holds for one entry's payload (spec/audit.md §4): ``status`` is ``present`` (with
    salt and payload), ``absent`` (the log served the entry without them) or ``operator``."""

    index: int
    status: str
    salt: bytes | None = None
    payload: bytes | None = None


class _Fatal(Exception):
    """A failure after which nothing further can be derived (a missing or unframeable bundle)."""

    def __init__(self, finding: Finding):
        super().__init__(finding.line())
        self.finding = finding


@dataclass
class _KeyUsage:
    first_index: int
    last_index: int
    last_ms: int
    count: int = 0


#: The order in which findings at the same index are listed: the data first, then what follows from it.
_CHECK_ORDER = ("checkpoint", "entry bundle", "leaf hash", "entry format", "timestamp", "key registry", "event entry",
                "signature", "payload file", "payload", "payload commitment", "payload missing", "hash tile",
                "registry bundle", "root")


@dataclass
class AuditReport:
    """The result of a whole-log audit (``tlog audit``).  ``ok`` when no check failed."""

    origin: str | None = None
    tree_size: int = 0
    root: bytes | None = None
    checkpoint: bytes | None = None
    entries: int = 0
    event_entries: int = 0
    operator_entries: int = 0
    signatures: int = 0
    hash_tiles: int = 0
    keys: int = 0
    erasures: int = 0
    payloads_exported: bool = False
    payloads_checked: int = 0
    payloads_erased: int = 0
    untrusted: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    findings_total: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.findings_total == 0

    def sorted_findings(self) -> list[Finding]:
        """By index, whole-log findings last.  A finding about a subtree (a hash tile) sorts right after the
        first finding about one of its leaves, which it follows from, or at its first leaf when there is
        none (then the tile itself is the damage); at one index the data checks come first."""
        order = {check: n for n, check in enumerate(_CHECK_ORDER)}
        points = sorted(f.index for f in self.findings if f.index is not None and f.span == 1)

        def key(f: Finding) -> tuple[bool, int, int]:
            at = f.index or 0
            if f.index is not None and f.span > 1:
                i = bisect.bisect_left(points, at)
                if i < len(points) and points[i] < at + f.span:
                    at = points[i]
            return f.index is None, at, order.get(f.check, 99)
        return sorted(self.findings, key=key)

    @property
    def first_failure(self) -> Finding | None:
        return self.sorted_findings()[0] if self.findings else None

    def to_json(self) -> dict[str, Any]:
        first = self.first_failure
        return {
            "ok": self.ok, "origin": self.origin, "tree_size": self.tree_size,
            "root": encode_base64(self.root) if self.root else None,
            "checkpoint": self.checkpoint.decode("utf-8", "replace") if self.checkpoint else None,
            "entries": self.entries, "event_entries": self.event_entries,
            "operator_entries": self.operator_entries, "signatures_verified": self.signatures,
            "hash_tiles": self.hash_tiles, "keys": self.keys, "erasures": self.erasures,
            "payloads": {"exported": self.payloads_exported, "checked": self.payloads_checked,
                         "erased": self.payloads_erased},
            "untrusted": self.untrusted,
            "first_failure": first.to_json() if first else None,
            "failures": [f.to_json() for f in self.sorted_findings()],
            "failures_total": self.findings_total,
            "seconds": round(self.seconds, 3),
            "entries_per_second": round(self.entries / self.seconds) if self.seconds > 0 else None,
        }

    def summary(self) -> str:
        """A few lines for a human."""
        head = f"audit of {self.origin} at tree size {self.tree_size}: "
        lines = [head + ("OK" if self.ok else f"FAILED, {self.findings_total} failed check(s)")]
        if self.ok:
            lines.append(f"  tree: {self.entries} leaf hashes, {self.hash_tiles} hash tile(s) and the root "
                         "match the signed checkpoint")
            lines.append(f"  registry: {self.keys} keys, {self.operator_entries} operator entries; "
                         f"{self.event_entries} event entries valid, {self.signatures} signatures verified")
            lines.append("  integration times never go backwards")
        if self.payloads_exported:
            lines.append(f"  payloads: {self.payloads_checked} commitments checked, {self.payloads_erased} "
                         "erased (each covered by an erasure entry)")
        else:
            lines.append("  payloads: not checked (they are only in an export made with a reader token)")
        for u in self.untrusted:
            lines.append(f"  WARNING: {u['entries']} entries from index {u['first_index']} are untrusted: key "
                         f"{u['name']!r} {u['key_id'][:16]} was compromised since {u['compromised_since_ms']}")
        first = self.first_failure
        if first is not None:
            lines.append(f"  first failure: {first.line()}")
            for f in self.sorted_findings()[1:10]:
                lines.append(f"  also: {f.line()}")
        rate = f", {self.entries / self.seconds:.0f} entries/s" if self.seconds > 0 else ""
        lines.append(f"  {self.seconds:.1f} s{rate}")
        return "\n".join(lines)


def _verify_signatures(items: list[tuple[int, PublicKey, bytes, bytes]]) -> list[tuple[int, str]]:
    """Runs in a worker thread: PyNaCl's libsodium call releases the GIL."""
    bad = []
    for index, key, message, signature in items:
        try:
            key.verify(message, signature)
        except SignatureError as exc:
            bad.append((index, f"key {key.key_id_hex[:16]}: {exc}"))
    return bad


class LogAuditor:
    """Re-derives a log from its raw data, one entry bundle at a time (spec/audit.md §5).

    Feed every entry bundle in order with :meth:`feed` (and the payload records, when exported); compare
    each tile it reports as rebuilt with the stored one (:meth:`check_tile`); then :meth:`finish`, run the
    second pass over :meth:`rescans` if any, and read :meth:`report`.
    """

    def __init__(self, checkpoint: Checkpoint, note: bytes, *, jobs: int = 2, executor: Executor | None = None,
                 max_findings: int = 1000):
        self.cp = checkpoint
        self.rebuilder = TileRebuilder(checkpoint.size)
        self.registry = Registry()
        self.report_ = AuditReport(origin=checkpoint.origin, tree_size=checkpoint.size, root=checkpoint.root,
                                   checkpoint=note)
        self._max_findings = max_findings
        self._prev_ms = 0
        self._usage: dict[bytes, _KeyUsage] = {}
        self._absent: set[int] = set()
        self._own_executor = executor is None and jobs > 0
        self._executor = executor or (ThreadPoolExecutor(jobs, thread_name_prefix="tlog-audit") if jobs > 0 else None)
        self._inflight: collections.deque[Future] = collections.deque()
        self._pending: list[tuple[int, PublicKey, bytes, bytes]] = []
        self._max_inflight = 4 * max(jobs, 1)
        self._started = time.monotonic()

    # -- findings ---------------------------------------------------------------------------------

    def fail(self, check: str, index: int | None, detail: str, span: int = 1) -> None:
        self.report_.findings_total += 1
        if len(self.report_.findings) < self._max_findings:
            self.report_.findings.append(Finding(check, index, detail, span))

    # -- pass 1 -----------------------------------------------------------------------------------

    def feed(self, bundle_tile: Tile, bundle: bytes | None,
             payloads: list[PayloadRecord] | None = None) -> list[tuple[Tile, bytes]]:
        """Audit entry bundle ``bundle_tile``; returns the hash tiles rebuilt so far, to compare."""
        start = bundle_tile.index * TILE_WIDTH
        if bundle is None:
            raise _Fatal(Finding("entry bundle", start, f"{bundle_tile.path()} is missing"))
        try:
            entries = decode_entry_bundle(bundle, bundle_tile.width)
        except FormatError as exc:
            raise _Fatal(Finding("entry bundle", start, f"{bundle_tile.path()}: {exc}")) from None
        sha = hashlib.sha256
        done = self.rebuilder.add([sha(b"\x00" + e).digest() for e in entries])
        by_index = self._payloads(bundle_tile, payloads)
        for i, raw in enumerate(entries):
            self._entry(start + i, raw, by_index)
        self.report_.entries += len(entries)
        return done

    def _payloads(self, tile: Tile, records: list[PayloadRecord] | None) -> dict[int, PayloadRecord] | None:
        if records is None:
            return None
        start = tile.index * TILE_WIDTH
        if [r.index for r in records] != list(range(start, start + tile.width)):
            self.fail("payload file", start, f"payload records for {tile.path()} do not list entries "
                                             f"{start}..{start + tile.width - 1} in order")
        return {r.index: r for r in records}

    def _entry(self, index: int, raw: bytes, payloads: dict[int, PayloadRecord] | None) -> None:
        try:
            leaf = Leaf.decode(raw)
        except FormatError as exc:
            self._skip(index, "entry format", str(exc))
            return
        if leaf.integrated_ms < self._prev_ms:
            self.fail("timestamp", index, f"integrated at {leaf.integrated_ms}, before entry {index - 1} "
                                          f"({self._prev_ms})")
        self._prev_ms = max(self._prev_ms, leaf.integrated_ms)
        try:
            self.registry.apply(index, leaf)
        except EntryRejected as exc:
            self._skip(index, "key registry", str(exc))
            return
        entry = leaf.entry
        if type(entry) is EventEntry and index:
            self._event(index, leaf, entry, payloads)
        else:
            self.report_.operator_entries += 1

    def _skip(self, index: int, check: str, detail: str) -> None:
        self.fail(check, index, detail)
        if index == 0:
            raise _Fatal(Finding(check, 0, "no valid genesis: the key registry cannot be replayed"))
        self.registry.advance(index + 1)  # the entry changes nothing; the next one is judged at index + 1

    def _event(self, index: int, leaf: Leaf, entry: EventEntry, payloads: dict[int, PayloadRecord] | None) -> None:
        self.report_.event_entries += 1
        try:
            rec = self.registry.check_event(index, leaf, verify_signature=False)
        except EntryRejected as exc:
            self.fail("event entry", index, str(exc))
        else:
            usage = self._usage.get(rec.key_id)
            if usage is None:
                usage = self._usage[rec.key_id] = _KeyUsage(index, index, leaf.integrated_ms)
            usage.last_index, usage.last_ms = index, leaf.integrated_ms
            usage.count += 1
            self._queue_signature(index, rec.public_key, leaf.signing_message(), leaf.signature)
        if payloads is not None:
            self._payload(index, entry, payloads.get(index))

    def _queue_signature(self, index: int, key: PublicKey, message: bytes, signature: bytes) -> None:
        self._pending.append((index, key, message, signature))

    def flush_signatures(self, wait: bool = False) -> None:
        """Hand the queued signature checks to the pool; collect finished ones (all, with ``wait``)."""
        items, self._pending = self._pending, []
        if items:
            self.report_.signatures += len(items)
            if self._executor is None:
                self._collect(_verify_signatures(items))
            else:
                self._inflight.append(self._executor.submit(_verify_signatures, items))
        while self._inflight and (wait or len(self._inflight) > self._max_inflight or self._inflight[0].done()):
            self._collect(self._inflight.popleft().result())

    def _collect(self, bad: list[tuple[int, str]]) -> None:
        for index, detail in bad:
            self.fail("signature", index, detail)

    def _payload(self, index: int, entry: EventEntry, record: PayloadRecord | None) -> None:
        if record is None:
            return  # reported by _payloads
        if record.status == "absent":
            self._absent.add(index)
            return
        if record.status != "present" or record.salt is None or record.payload is None:
            self.fail("payload", index, f"an event entry's payload record has status {record.status!r}")
            return
        try:
            ok = payload_commitment(record.salt, record.payload) == entry.commitment
        except FormatError as exc:
            self.fail("payload commitment", index, str(exc))
            return
        self.report_.payloads_checked += 1
        if not ok:
            self.fail("payload commitment", index, "the exported payload and salt do not match the commitment")

    def check_tile(self, tile: Tile, computed: bytes, stored: bytes | None) -> None:
        """Compare a stored hash tile with the one rebuilt from the entries."""
        self.report_.hash_tiles += 1
        diff = first_tile_difference(tile, computed, stored)
        if diff is not None:
            self.fail("leaf hash" if tile.level == 0 else "hash tile", *diff)

    # -- the end ----------------------------------------------------------------------------------

    def finish(self) -> list[tuple[Tile, bytes]]:
        """After the last bundle: the partial tiles to compare; checks the root, erasures, signatures."""
        self.flush_signatures(wait=True)
        done = self.rebuilder.finish()
        root = self.rebuilder.root() if self.cp.size else EMPTY_ROOT
        if root != self.cp.root:
            self.fail("root", None, f"the entries hash to root {encode_base64(root)}, the signed checkpoint says "
                                    f"{encode_base64(self.cp.root)}")
        erasures = self.registry.erasures if self.registry.size else {}
        for index in sorted(self._absent):
            if index in erasures:
                self.report_.payloads_erased += 1
            else:
                self.fail("payload missing", index, "the payload was deleted but no erasure entry covers it")
        return done

    def rescans(self) -> list[tuple[bytes, int, int, int]]:
        """The second pass "compromised since" needs: ``(key_id, since_ms, first, last)`` for each key whose
        compromise time falls before the last entry it signed (spec/keys.md §3: those entries, accepted when
        they were sequenced, are untrusted now).  Re-read entries ``first..last`` and call :meth:`rescan`."""
        out = []
        for key_id, usage in self._usage.items():
            rec = self.registry.keys[key_id]
            since = rec.compromised_since_ms
            if since is not None and usage.last_ms >= since:
                out.append((key_id, since, usage.first_index, usage.last_index))
        return out

    def rescan(self, key_id: bytes, since: int, start: int, entries: Iterable[bytes]) -> None:
        """Second pass over entries from index ``start``: count those of ``key_id`` integrated at or after
        ``since``.  Integration times never decrease, so the first one found is the first untrusted one."""
        rec = self.registry.keys[key_id]
        item = next((u for u in self.report_.untrusted if u["key_id"] == key_id.hex()), None)
        for i, raw in enumerate(entries, start):
            try:
                leaf = Leaf.decode(raw)
            except FormatError:
                continue
            entry = leaf.entry
            if type(entry) is EventEntry and entry.key_id == key_id and leaf.integrated_ms >= since and (
                    rec.revoked_index is None or i < rec.revoked_index):
                if item is None:
                    item = {"key_id": key_id.hex(), "name": rec.name, "compromised_since_ms": since,
                            "revoked_index": rec.revoked_index, "entries": 0, "first_index": i}
                    self.report_.untrusted.append(item)
                item["entries"] += 1

    def report(self) -> AuditReport:
        r = self.report_
        if self.registry.size:
            r.keys, r.erasures = len(self.registry.keys), len(self.registry.erasures)
        r.seconds = time.monotonic() - self._started
        return r

    def close(self) -> None:
        if self._own_executor and self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)


# ============================================================================ the driver

class AuditSource(Protocol):
    """Where the raw data comes from: an export directory or a log's tlog-tiles endpoints (tlog/export.py)."""

    async def checkpoint(self) -> bytes: ...

    async def read_tile(self, tile: Tile) -> bytes | None:
        """A hash tile or entry bundle, or None when it does not exist."""

    async def read_payloads(self, bundle: Tile) -> list[PayloadRecord] | None:
        """The payload records of an entry bundle; None when the source has no payloads."""

    @property
    def has_payloads(self) -> bool: ...

    async def registry_bundle(self) -> bytes | None:
        """DIR/registry.json of an export, to compare with the replayed registry."""


Progress = Callable[[int], None]


async def run_audit(source: AuditSource, log_verifier: Verifier, *, jobs: int = 2, prefetch: int = 8,
                    progress: Progress | None = None) -> AuditReport:
    """Audit a whole log from ``source`` against the log's verifier key (spec/audit.md §5)."""
    note = await source.checkpoint()
    try:
        cp, _ = open_checkpoint(note, log_verifier.name, log_verifier)
    except TlogError as exc:
        report = AuditReport(origin=log_verifier.name, checkpoint=note, findings_total=1)
        report.findings.append(Finding("checkpoint", None, f"the checkpoint does not verify: {exc}"))
        return report
    auditor = LogAuditor(cp, note, jobs=jobs)
    auditor.report_.payloads_exported = source.has_payloads
    try:
        await _pass_one(source, auditor, prefetch, progress)
        await _pass_two(source, auditor)
        await _check_registry_bundle(source, auditor, log_verifier)
    except _Fatal as exc:
        auditor.fail(exc.finding.check, exc.finding.index, exc.finding.detail + " (audit stopped here)")
    finally:
        auditor.close()
    return auditor.report()


async def _prefetched(source: AuditSource, size: int, window: int
                      ) -> AsyncIterator[tuple[Tile, bytes | None, bytes | None, list[PayloadRecord] | None]]:
    """Entry bundles with their level-0 tile and payload records, in order, ``window`` requests ahead."""

    async def load(t: Tile) -> tuple[Tile, bytes | None, bytes | None, list[PayloadRecord] | None]:
        bundle, tile0 = await asyncio.gather(source.read_tile(t), source.read_tile(Tile(0, t.index, t.width)))
        payloads = await source.read_payloads(t) if source.has_payloads else None
        return t, bundle, tile0, payloads

    queue: collections.deque[Awaitable] = collections.deque()
    tiles = entry_tiles_for_size(size)
    for t in tiles:
        queue.append(asyncio.ensure_future(load(t)))
        if len(queue) >= window:
            yield await queue.popleft()
    while queue:
        yield await queue.popleft()


async def _pass_one(source: AuditSource, auditor: LogAuditor, prefetch: int, progress: Progress | None) -> None:
    level0: dict[Tile, bytes | None] = {}
    async for tile, bundle, tile0, payloads in _prefetched(source, auditor.cp.size, prefetch):
        level0[Tile(0, tile.index, tile.width)] = tile0
        if source.has_payloads and payloads is None:
            auditor.fail("payload file", tile.index * TILE_WIDTH, f"the payloads of {tile.path()} are missing")
        done = auditor.feed(tile, bundle, payloads)
        auditor.flush_signatures()
        await _compare(source, auditor, done, level0)
        if progress:
            progress(tile.width)
    await _compare(source, auditor, auditor.finish(), level0)


async def _compare(source: AuditSource, auditor: LogAuditor, done: list[tuple[Tile, bytes]],
                   level0: dict[Tile, bytes | None]) -> None:
    for tile, computed in done:
        stored = level0.pop(tile) if tile.level == 0 and tile in level0 else await source.read_tile(tile)
        auditor.check_tile(tile, computed, stored)


async def _pass_two(source: AuditSource, auditor: LogAuditor) -> None:
    for key_id, since, first, last in auditor.rescans():
        for n in range(first // TILE_WIDTH, last // TILE_WIDTH + 1):
            width = min(TILE_WIDTH, auditor.cp.size - n * TILE_WIDTH)
            data = await source.read_tile(Tile(-1, n, width))
            if data is not None:
                auditor.rescan(key_id, since, n * TILE_WIDTH, decode_entry_bundle(data, width))


async def _check_registry_bundle(source: AuditSource, auditor: LogAuditor, log_verifier: Verifier) -> None:
    """An export's registry.json must verify and list exactly the operator entries the full replay found
    below its checkpoint's size."""
    data = await source.registry_bundle()
    if data is None or not auditor.registry.size:
        return
    try:
        bundle = RegistryBundle.parse(data)
        _, cp = bundle.registry(log_verifier)
    except TlogError as exc:
        auditor.fail("registry bundle", None, f"registry.json: {exc}")
        return
    if cp.size > auditor.cp.size:
        return  # a newer registry than the audited snapshot: nothing to compare it with
    listed = [i for i, _, _ in bundle.entries]
    want = [i for i in auditor.registry.to_json()["operator_entries"] if i < cp.size]
    if listed != want:
        missing, extra = sorted(set(want) - set(listed)), sorted(set(listed) - set(want))
        auditor.fail("registry bundle", (missing or extra)[0],
                     f"registry.json omits operator entries {missing[:10]} and lists {extra[:10]} that are not")
