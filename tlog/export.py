"""``tlog export``: a complete, self-contained, resumable copy of a log, and the sources ``tlog audit`` reads.

Layout of an export directory (normative: spec/audit.md §4), mirroring C2SP tlog-tiles paths::

    DIR/checkpoint                      the signed checkpoint that pins the snapshot (written last)
    DIR/checkpoint.pending              while an export runs: the checkpoint it is downloading
    DIR/tile/<L>/<N>[.p/<W>]            every hash tile of the tree at the checkpoint's size
    DIR/tile/entries/<N>[.p/<W>]        every entry bundle
    DIR/payloads/<N>[.p/<W>]            with a reader token: one JSON line per entry of bundle <N>
    DIR/registry.json                   the operator entries with inclusion proofs (tlog.audit.RegistryBundle)
    DIR/export.json                     what was exported: origin, size, log URL, payloads yes/no

Every file is written atomically (a temporary file, fsync, rename), so an interrupted export leaves only
complete files; re-running it resumes with the same pinned checkpoint (``checkpoint.pending``) and skips
every file already present with the right length.  Tiles and bundles of a given width never change.
This module never imports ``tlog.server``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from .audit import RegistryBundle
from .logaudit import PayloadRecord, TileRebuilder
from .checkpoint import Checkpoint, open_checkpoint
from .entry import EventEntry, Leaf
from .errors import ConsistencyError, FormatError, TlogError
from .hashing import HASH_SIZE, leaf_hash
from .note import Verifier
from .proof import inclusion_plan, root_plan
from .tiles import (TILE_WIDTH, Tile, TileHashReader, decode_entry_bundle, encode_tile_index, entry_tiles_for_size,
                    tiles_for_size)

__all__ = ["ExportError", "ExportResult", "DirSource", "HttpSource", "export_log", "write_export",
           "write_registry_bundle", "write_atomic",
           "payload_path", "encode_payload_records", "decode_payload_records"]

MAX_PAYLOAD_FILE = 256 << 20


class ExportError(TlogError):
    """The export cannot go on: the log refused a request, or returned data of the wrong shape."""


def write_atomic(path: str, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the whole new one:
    a temporary file in the same directory, fsync (unless ``durable=False``), rename over ``path``."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix="." + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def payload_path(bundle: Tile) -> str:
    """``payloads/<N>[.p/<W>]``: the payload records of entry bundle ``tile/entries/<N>[.p/<W>]``."""
    suffix = "" if bundle.is_full else f".p/{bundle.width}"
    return f"payloads/{encode_tile_index(bundle.index)}{suffix}"


def encode_payload_records(records: Iterable[PayloadRecord]) -> bytes:
    """One JSON object per line: ``{"index", "status"[, "salt", "payload"]}`` (base64)."""
    lines = []
    for r in records:
        obj: dict[str, Any] = {"index": r.index, "status": r.status}
        if r.status == "present":
            obj["salt"] = base64.b64encode(r.salt or b"").decode()
            obj["payload"] = base64.b64encode(r.payload or b"").decode()
        lines.append(json.dumps(obj, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode()


def decode_payload_records(data: bytes) -> list[PayloadRecord]:
    """Strict inverse of :func:`encode_payload_records` (FormatError)."""
    if len(data) > MAX_PAYLOAD_FILE or not data.endswith(b"\n"):
        raise FormatError("payload file is too large or does not end in a newline")
    out = []
    for n, line in enumerate(data[:-1].split(b"\n")):
        try:
            obj = json.loads(line)
            status = obj["status"]
            fields = {"index", "status", "salt", "payload"} if status == "present" else {"index", "status"}
            if set(obj) != fields or status not in ("present", "absent", "operator"):
                raise ValueError("unexpected fields or status")
            salt = base64.b64decode(obj["salt"], validate=True) if status == "present" else None
            payload = base64.b64decode(obj["payload"], validate=True) if status == "present" else None
            index = obj["index"]
            if isinstance(index, bool) or not isinstance(index, int):
                raise ValueError("index is not an integer")
        except (ValueError, KeyError, TypeError) as exc:
            raise FormatError(f"payload file line {n + 1}: {exc}") from None
        out.append(PayloadRecord(index, status, salt, payload))
    return out


# ============================================================================ sources for tlog audit

class DirSource:
    """An export directory as an :class:`~tlog.logaudit.AuditSource` (plain file reads)."""

    def __init__(self, root: str):
        self.root = root
        meta = _read(os.path.join(root, "export.json"))
        self._payloads = bool(meta and json.loads(meta).get("payloads"))

    @property
    def has_payloads(self) -> bool:
        return self._payloads

    async def checkpoint(self) -> bytes:
        data = _read(os.path.join(self.root, "checkpoint"))
        if data is None:
            pending = os.path.exists(os.path.join(self.root, "checkpoint.pending"))
            raise ExportError(f"{self.root} holds no complete export (no checkpoint"
                              f"{'; an export is still in progress: re-run tlog export' if pending else ''})")
        return data

    async def read_tile(self, tile: Tile) -> bytes | None:
        return _read(os.path.join(self.root, tile.path()))

    async def read_payloads(self, bundle: Tile) -> list[PayloadRecord] | None:
        data = _read(os.path.join(self.root, payload_path(bundle)))
        return None if data is None else decode_payload_records(data)

    async def registry_bundle(self) -> bytes | None:
        return _read(os.path.join(self.root, "registry.json"))


class _Http:
    """GET with a few retries; the log's answers are checked by the caller."""

    def __init__(self, url: str, session: aiohttp.ClientSession, concurrency: int = 8):
        self.url = url.rstrip("/")
        self.session = session
        self.limit = asyncio.Semaphore(concurrency)

    async def request(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """(status, body), retrying connection errors, 429 and 5xx a few times."""
        for attempt in range(4):
            try:
                async with self.limit, self.session.get(self.url + path, headers=headers) as resp:
                    status, body = resp.status, await resp.read()
                if status < 500 and status != 429:
                    return status, body
            except (aiohttp.ClientConnectionError, asyncio.TimeoutError):
                if attempt == 3:
                    raise
            if attempt < 3:
                await asyncio.sleep(0.2 * 2 ** attempt)
        return status, body

    async def get(self, path: str, *, missing_ok: bool = False) -> bytes | None:
        status, body = await self.request(path)
        if status == 404 and missing_ok:
            return None
        if status != 200:
            raise ExportError(f"GET {path}: {status} {body[:200].decode('utf-8', 'replace').strip()}")
        return body


class HttpSource:
    """A log's public tlog-tiles endpoints as an :class:`~tlog.logaudit.AuditSource` (no payloads)."""

    has_payloads = False

    def __init__(self, url: str, session: aiohttp.ClientSession):
        self._http = _Http(url, session)

    async def checkpoint(self) -> bytes:
        return await self._http.get("/checkpoint")  # type: ignore[return-value]

    async def read_tile(self, tile: Tile) -> bytes | None:
        return await self._http.get("/" + tile.path(), missing_ok=True)

    async def read_payloads(self, bundle: Tile) -> list[PayloadRecord] | None:
        return None

    async def registry_bundle(self) -> bytes | None:
        return None


# ============================================================================ export

class ProgressBar(Protocol):
    def update(self, n: int) -> Any: ...

    def close(self) -> Any: ...


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


ProgressFactory = Callable[[str, int], ProgressBar]


@dataclass(frozen=True)
class ExportResult:
    origin: str
    size: int
    previous_size: int | None
    downloaded: int
    skipped: int
    payloads: bool


def _tile_ok(tile: Tile, data: bytes | None) -> bool:
    """Whether a stored tile or bundle has the shape its path promises (the audit checks the content)."""
    if data is None:
        return False
    if not tile.is_entries:
        return len(data) == tile.width * HASH_SIZE
    try:
        decode_entry_bundle(data, tile.width)
    except FormatError:
        return False
    return True


def _is_event(raw: bytes) -> bool:
    """Whether a leaf holds an event entry; an undecodable leaf counts as one (the audit reports it)."""
    try:
        return type(Leaf.decode(raw).entry) is EventEntry
    except FormatError:
        return True


async def _pool(jobs: Iterator[Callable[[], Awaitable[None]]], workers: int) -> None:
    """Run the jobs with at most ``workers`` at a time, without materialising the iterator."""
    async def worker() -> None:
        for job in jobs:
            await job()

    await asyncio.gather(*(worker() for _ in range(workers)))


class _Exporter:
    def __init__(self, http: _Http, out: str, verifier: Verifier, token: str | None, progress: ProgressFactory):
        self.http, self.out, self.verifier, self.token, self.progress = http, out, verifier, token, progress
        self.downloaded = self.skipped = 0

    def path(self, rel: str) -> str:
        return os.path.join(self.out, rel)

    async def pin(self) -> tuple[Checkpoint, bytes, tuple[Checkpoint, bytes] | None]:
        """The snapshot: a pending checkpoint (resume) or the log's latest; and the previous export's."""
        old = _read(self.path("checkpoint"))
        previous = None
        if old is not None:
            previous = (open_checkpoint(old, self.verifier.name, self.verifier)[0], old)
        note = _read(self.path("checkpoint.pending"))
        if note is None:
            note = await self.http.get("/checkpoint")
            assert note is not None
        cp, _ = open_checkpoint(note, self.verifier.name, self.verifier)
        if previous is not None and cp.size < previous[0].size:
            raise ConsistencyError(f"the log's checkpoint (size {cp.size}) is smaller than this export's "
                                   f"(size {previous[0].size}): a rollback", old_note=previous[1], new_note=note)
        write_atomic(self.path("checkpoint.pending"), note)
        return cp, note, previous

    async def fetch(self, tile: Tile, bar: ProgressBar) -> None:
        path = self.path(tile.path())
        if _tile_ok(tile, _read(path)):
            self.skipped += 1
        else:
            data = await self.http.get("/" + tile.path())
            if not _tile_ok(tile, data):
                raise ExportError(f"the log served a malformed {tile.path()} ({len(data or b'')} bytes)")
            write_atomic(path, data)  # type: ignore[arg-type]
            self.downloaded += 1
        bar.update(tile.width if tile.is_entries else 1)

    async def tiles(self, size: int) -> None:
        bar = self.progress("entry bundles", size)
        hashes = self.progress("hash tiles", sum(1 for _ in tiles_for_size(size)))
        try:
            await _pool((lambda t=t: self.fetch(t, bar) for t in entry_tiles_for_size(size)), 8)
            await _pool((lambda t=t: self.fetch(t, hashes) for t in tiles_for_size(size)), 8)
        finally:
            bar.close()
            hashes.close()

    async def payload_file(self, bundle: Tile, bar: ProgressBar) -> None:
        path = self.path(payload_path(bundle))
        if os.path.exists(path):
            self.skipped += 1
            bar.update(bundle.width)
            return
        raw = _read(self.path(bundle.path()))
        entries = decode_entry_bundle(raw or b"", bundle.width)
        start = bundle.index * TILE_WIDTH
        records = await asyncio.gather(*(self.payload(start + i, e) for i, e in enumerate(entries)))
        write_atomic(path, encode_payload_records(records))
        bar.update(bundle.width)

    async def payload(self, index: int, raw: bytes) -> PayloadRecord:
        """GET /v1/entries/<I> with the reader token.  A payload the log cannot produce (500: it is gone
        without an erasure) is recorded as absent, so that the audit names the entry."""
        if index == 0 or not _is_event(raw):
            return PayloadRecord(index, "operator")
        path = f"/v1/entries/{index}"
        status, body = await self.http.request(path, {"Authorization": f"Bearer {self.token}"})
        if status in (401, 403):
            raise ExportError(f"the log refused the reader token ({status}: {body[:200].decode('utf-8', 'replace')})")
        if status == 500:
            return PayloadRecord(index, "absent")
        if status != 200:
            raise ExportError(f"GET {path}: {status} {body[:200].decode('utf-8', 'replace').strip()}")
        try:
            obj = json.loads(body)
            if obj.get("payload") is None:
                if obj.get("payload_access") == "reader token required":
                    raise ExportError("the log served no payload: it wants a reader token (--token)")
                return PayloadRecord(index, "absent")
            return PayloadRecord(index, "present", base64.b64decode(obj["salt"], validate=True),
                                 base64.b64decode(obj["payload"], validate=True))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ExportError(f"GET {path}: malformed answer: {exc}") from None

    async def payloads(self, size: int) -> None:
        bar = self.progress("payloads", size)
        try:
            await _pool((lambda t=t: self.payload_file(t, bar) for t in entry_tiles_for_size(size)), 4)
        finally:
            bar.close()

    def local_reader(self, size: int) -> TileHashReader:
        return _local_reader(self.out, size)

    def check_roots(self, cp: Checkpoint, note: bytes, previous: tuple[Checkpoint, bytes] | None) -> None:
        """The downloaded tiles give the signed root, and the previous export's root at its size (a
        consistency check without asking the log for a proof)."""
        reader = self.local_reader(cp.size)
        for want, want_note in [(cp, note)] + ([previous] if previous else []):
            plan = root_plan(want.size)
            root = plan.rehash(reader.read_hashes(plan.ids))[0]
            if root != want.root:
                raise ConsistencyError(f"the downloaded tiles give root {root.hex()} at size {want.size}, the "
                                       f"checkpoint says {want.root.hex()}", old_note=want_note, new_note=note)

    def registry(self, cp: Checkpoint, note: bytes) -> None:
        write_registry_bundle(self.out, cp, note)

    def tidy(self, size: int) -> None:
        """Remove partial tiles and payload files of an earlier, smaller snapshot."""
        keep = {t.path() for t in tiles_for_size(size)} | {t.path() for t in entry_tiles_for_size(size)}
        keep |= {payload_path(t) for t in entry_tiles_for_size(size) if not t.is_full}
        for base in ("tile", "payloads"):
            for folder, _, files in os.walk(self.path(base)):
                for name in files:
                    rel = os.path.relpath(os.path.join(folder, name), self.out).replace(os.sep, "/")
                    if "/" in rel and rel.rsplit("/", 2)[-2].endswith(".p") and rel not in keep:
                        os.unlink(os.path.join(folder, name))


def _local_reader(out: str, size: int) -> TileHashReader:
    """Node hashes of the tree of ``size`` leaves, read from the hash tiles of an export directory."""
    def read(tiles: list[Tile]) -> list[bytes]:
        result = []
        for t in tiles:
            data = _read(os.path.join(out, t.path()))
            if data is None or len(data) < t.width * HASH_SIZE:
                raise ExportError(f"{t.path()} is missing from the export")
            result.append(data[:t.width * HASH_SIZE])
        return result
    return TileHashReader(size, read)


def write_registry_bundle(out: str, cp: Checkpoint, note: bytes) -> None:
    """DIR/registry.json: every operator entry of the export, with an inclusion proof computed from its
    own tiles against ``note`` (tlog.audit.RegistryBundle)."""
    reader = _local_reader(out, cp.size)
    entries = []
    for bundle in entry_tiles_for_size(cp.size):
        raw = _read(os.path.join(out, bundle.path())) or b""
        for i, leaf in enumerate(decode_entry_bundle(raw, bundle.width), bundle.index * TILE_WIDTH):
            if i == 0 or not _is_event(leaf):
                plan = inclusion_plan(i, cp.size)
                entries.append((i, leaf, tuple(plan.rehash(reader.read_hashes(plan.ids)))))
    write_atomic(os.path.join(out, "registry.json"), RegistryBundle(note, tuple(entries)).to_json())


def _write_meta(out: str, cp: Checkpoint, log: str | None, payloads: bool) -> None:
    meta = {"format": "tlog-export/v1", "origin": cp.origin, "tree_size": cp.size, "log": log,
            "payloads": payloads}
    write_atomic(os.path.join(out, "export.json"), json.dumps(meta, indent=2).encode() + b"\n")


def write_export(out: str, origin: str, leaves: Iterable[bytes], sign: Callable[[Checkpoint], bytes], *,
                 payloads: Callable[[int, bytes], PayloadRecord] | None = None, durable: bool = True) -> Checkpoint:
    """Write an export directory for the log whose leaves are ``leaves`` (in index order), without a server:
    entry bundles, every hash tile (rebuilt by :class:`tlog.logaudit.TileRebuilder`), the checkpoint ``sign``
    returns, registry.json and, when ``payloads(index, leaf)`` is given, the payload files.  For benchmarks and for building test logs
    (a forged one too: it is only as honest as its input).  Streams: memory does not grow with the size.
    ``durable=False`` skips the fsyncs (a benchmark's throw-away export)."""
    os.makedirs(out, exist_ok=True)
    rebuilder = TileRebuilder()
    batch: list[bytes] = []

    def flush() -> None:
        start = rebuilder.range.size
        bundle = Tile(-1, start // TILE_WIDTH, len(batch))
        write_atomic(os.path.join(out, bundle.path()), b"".join(len(e).to_bytes(2, "big") + e for e in batch),
                     durable=durable)
        if payloads is not None:
            records = [payloads(start + i, e) for i, e in enumerate(batch)]
            write_atomic(os.path.join(out, payload_path(bundle)), encode_payload_records(records), durable=durable)
        for tile, data in rebuilder.add([leaf_hash(e) for e in batch]):
            write_atomic(os.path.join(out, tile.path()), data, durable=durable)
        batch.clear()

    for leaf in leaves:
        batch.append(leaf)
        if len(batch) == TILE_WIDTH:
            flush()
    if batch:
        flush()
    for tile, data in rebuilder.finish():
        write_atomic(os.path.join(out, tile.path()), data, durable=durable)
    size = rebuilder.range.size
    cp = Checkpoint(origin, size, rebuilder.root())
    note = sign(cp)
    write_registry_bundle(out, cp, note)
    _write_meta(out, cp, None, payloads is not None)
    write_atomic(os.path.join(out, "checkpoint"), note)
    return cp


async def export_log(url: str, out: str, *, verifier: Verifier, token: str | None = None,
                     session: aiohttp.ClientSession | None = None,
                     progress: ProgressFactory | None = None) -> ExportResult:
    """Download a consistent snapshot of the log at ``url`` into ``out`` (see the module docstring)."""
    own = session is None
    session = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
    try:
        ex = _Exporter(_Http(url, session), out, verifier, token, progress or (lambda desc, total: _NoProgress()))
        os.makedirs(out, exist_ok=True)
        cp, note, previous = await ex.pin()
        await ex.tiles(cp.size)
        if token is not None:
            await ex.payloads(cp.size)
        ex.check_roots(cp, note, previous)
        ex.registry(cp, note)
        _write_meta(out, cp, url, token is not None)
        write_atomic(ex.path("checkpoint"), note)  # the commit point: the export is complete
        os.unlink(ex.path("checkpoint.pending"))
        ex.tidy(cp.size)
        return ExportResult(cp.origin, cp.size, previous[0].size if previous else None, ex.downloaded,
                            ex.skipped, token is not None)
    finally:
        if own:
            await session.close()
