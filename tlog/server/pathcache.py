"""The path cache: the stored inclusion paths (``tile_paths``) again, in a flat file read by offset.

Why: at 10,000,000 leaves almost every inclusion proof reads one stored path from the database, and in
a server worker that SQLite read (a read transaction: two file locks, a stat, one or two page reads)
cost about 30 µs of the ~85 µs a proof request took; a ``pread`` at a computed offset costs 1–2 µs.
The database stays the only source of truth: the cache is derived from it, may be missing, partly
written or deleted at any time, and is never backed up.

Format (``log.db.paths`` beside ``log.db``): record ``i`` (the ``tile_paths`` rowid, 16 per full level-0
tile) is at offset ``i * RECORD_BYTES``: the 1,088-byte path, then a 4-byte tag: the CRC-32 (zlib's,
ISO-HDLC), big-endian, of log key ‖ record number (8 bytes, big-endian) ‖ path, where the log key is the
leaf hash of entry 0, which no other log shares.  The tag is a checksum bound to the log, not a MAC:
whoever can write the cache can write ``log.db`` too (spec/threat-model.md).  A CRC detects every
damage a record meets here (a flipped byte, a torn or zeroed tail, a record in the wrong slot or from
another log) with certainty or with odds of 2**-32, at a third of a SHA-256's cost (0.3 against 0.9 µs
per 1 KB record; at 10,000,000 entries nearly every proof checks one).
A record whose tag does not verify — never written, torn by a crash, zeros past a lost write, or a
file from another log — is a miss, and the reader takes the path from the database and writes the
record (every process that reads may fill the cache; the bytes of a record are fixed once its tile
is full, so concurrent writers write the same bytes).

Crash ordering (the writer side, ``SQLiteStorage._write_batch``): the records of the tiles a batch
fills are written *before* that batch's COMMIT, so no reader that sees the new head can find an older
record for those tiles.  A record can only be stale if a batch wrote it, failed to commit, and the
later batch that filled the same tile lost its write in a power cut; the scrub compares every record
with the database, and clients verify every proof against a signed checkpoint, so a stale record can
cost availability, never integrity.
"""

from __future__ import annotations

import os
import sqlite3
import zlib

from ..hashing import leaf_hash
from .treereader import PATH_BYTES

__all__ = ["PathCache", "RECORD_BYTES", "TAG_BYTES", "cache_path", "log_key"]

TAG_BYTES = 4
RECORD_BYTES = PATH_BYTES + TAG_BYTES


def cache_path(db_path: str) -> str:
    """The path cache of the database at ``db_path``."""
    return db_path + ".paths"


def log_key(conn: sqlite3.Connection) -> bytes | None:
    """The log's key for the cache's tags: the leaf hash of entry 0 (None while the log has none)."""
    row = conn.execute("SELECT leaf FROM leaves WHERE idx = 0").fetchone()
    return None if row is None else leaf_hash(bytes(row[0]))


class PathCache:
    """One process's handle on the path cache.  ``key`` is the log's key (leaf hash of entry 0).

    Opened read-write and created when missing (``writable=False``: only opened, for the scrub);
    read-only when the directory is (a reader of a read-only copy); disabled (every ``get`` a miss,
    ``put`` a no-op) when it cannot be opened."""

    def __init__(self, path: str, key: bytes, writable: bool = True):
        if len(key) != 32:
            raise ValueError("the path cache key is a 32-byte leaf hash")
        self.path = path
        self._keyed = zlib.crc32(key)  # the CRC of the key, continued per tag
        self._fd: int | None = None
        self.writable = False
        try:
            if not writable:
                raise PermissionError
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self.writable = True
        except OSError:
            try:
                self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self._fd = None

    def tag(self, record: int, path: bytes) -> bytes:
        return zlib.crc32(path, zlib.crc32(record.to_bytes(8, "big"), self._keyed)).to_bytes(TAG_BYTES, "big")

    def get(self, record: int) -> bytes | None:
        """The path of ``record`` if the cache holds a record that verifies, else None."""
        if self._fd is None:
            return None
        try:
            data = os.pread(self._fd, RECORD_BYTES, record * RECORD_BYTES)
        except OSError:
            return None
        if len(data) != RECORD_BYTES:
            return None
        path = data[:PATH_BYTES]
        if data[PATH_BYTES:] != self.tag(record, path):
            return None
        return path

    def put(self, first: int, paths: list[bytes]) -> None:
        """Write the records ``first``, ``first + 1``, … (one ``pwrite``).  Best effort: the cache is
        only a cache, so a full disk or a read-only file costs speed, never an answer."""
        if self._fd is None or not self.writable or not paths:
            return
        if any(len(p) != PATH_BYTES for p in paths):
            raise ValueError(f"a stored path is {PATH_BYTES} bytes")
        data = b"".join(p + self.tag(first + k, p) for k, p in enumerate(paths))
        try:
            os.pwrite(self._fd, data, first * RECORD_BYTES)
        except OSError:
            self.writable = False

    def prewarm(self, max_bytes: int = 2 << 30) -> None:
        """Ask the kernel to read the file into the page cache in the background (a server just
        started, or a file paged out): proofs then find their record in memory.  Files above
        ``max_bytes`` are left to be read as proofs need them."""
        if self._fd is None:
            return
        try:
            size = os.fstat(self._fd).st_size
            if size > max_bytes:
                return
            # One call per 4 MiB: Linux reads ahead at most a few MiB per WILLNEED call (one call for
            # the whole 653 MB file of a 10,000,000-entry log brought in 8 MB; this loop, all of it).
            for offset in range(0, size, 4 << 20):
                os.posix_fadvise(self._fd, offset, 4 << 20, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None
