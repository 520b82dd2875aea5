"""The storage contract of the log server.

A backend stores the tree (leaves, hash tiles), payloads beside it, every published checkpoint and the
head.  The sequencer is the only writer; readers may run concurrently with it.

Contract (every backend, tested by tests/test_storage_contract.py):

1. ``commit_batch`` is atomic and durable: when it returns, every leaf, payload, tile, the checkpoint
   and the new head of the batch survive a crash (power loss included); when it raises, none of them
   is visible, ever.  There is no partial batch.
2. The head only moves forward, by compare-and-swap: ``commit_batch(batch, expected_size)`` fails with
   :class:`HeadMovedError` and changes nothing unless the stored head size is ``expected_size``.
3. Reads see only committed data.  ``read_tiles`` answers a (possibly partial) tile of width ``W``
   with exactly ``32 * W`` bytes, the prefix of what is stored; a tile that is not stored (or is
   shorter than asked) raises :class:`MissingDataError` (an invariant failure for the caller: the
   tree says it should be there).  ``read_tile_trees`` may append a full tile's stored interior (its
   little tree's levels 1-7, ``Batch.tile_interiors``, stored with the batch that filled the tile);
   readers recompute it when it is absent, so a database written before interiors were kept still
   serves every proof.  Likewise ``read_tile_path``: the 16 inclusion paths of a full level-0 tile,
   stored with the batch that filled it, or None (readers then read the tile).
4. Errors of the medium (disk full, I/O error, a failed fsync) raise :class:`StorageFullError` or
   :class:`StorageFailedError`.  After a failed commit the backend must not be trusted to have or
   not have written anything until it is reopened: the caller stops writing (a failed fsync is never
   retried and acknowledged).
5. Erasure (spec/privacy.md): a batch holding an ``Erasure`` leaf for entry ``i`` deletes the salt
   and payload of ``i`` in the same transaction, and the backend overwrites the deleted bytes
   (SQLite: ``secure_delete``); :meth:`Storage.purge` then removes old copies of pages that held them
   (SQLite: a ``TRUNCATE`` checkpoint of the WAL).  Leaves, tiles and checkpoints are never removed.

Life of an entry (see tlog/server/sequencer.py for the sequencer's half):
``POST /v1/entries`` → handler verifies signature, key and commitment → sequencer queue → batch of
entries gets indices, the log's integration timestamp and leaf hashes → compact range and tiles
extended in memory → new root checked by a consistency proof against the old checkpoint → checkpoint
signed → ``commit_batch`` (one SQLite transaction, WAL + synchronous=FULL: the COMMIT is the
durability point) → in-memory head advanced → HTTP response with the receipt.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import NamedTuple

from ..tiles import Tile

__all__ = [
    "StorageError", "HeadMovedError", "MissingDataError", "StorageFullError", "StorageFailedError",
    "Head", "NewLeaf", "Batch", "Storage",
]


class StorageError(Exception):
    """Base class of storage failures (not a client's mistake)."""


class HeadMovedError(StorageError):
    """The compare-and-swap on the head failed: someone else moved it (a second writer)."""


class MissingDataError(StorageError):
    """Data the tree says exists is not stored: corruption or a truncated database."""


class StorageFullError(StorageError):
    """The medium is full; nothing of the failed batch was committed."""


class StorageFailedError(StorageError):
    """An I/O error or failed fsync; the backend must be reopened before writing again."""


@dataclass(frozen=True)
class Head:
    """The latest published checkpoint: tree size, root, its timestamp and the signed note."""

    size: int
    root: bytes
    timestamp_ms: int
    note: bytes


class NewLeaf(NamedTuple):
    """One leaf of a batch, with what the indexes need.  (A named tuple, immutable like the frozen
    dataclasses around it: one is made per entry on the sequencer's hot path, at a third of the cost.)"""

    index: int
    leaf: bytes
    identity: bytes
    leaf_hash: bytes
    key_id: bytes | None
    integrated_ms: int
    salt: bytes | None = None
    payload: bytes | None = None
    operator: bool = False
    #: the writer's timestamp inside the body (0 when the body has none): twins share it, so a
    #: backend may cluster its deduplication index by it (see find_identities)
    entry_ms: int = 0


@dataclass(frozen=True)
class Batch:
    """Everything one sequencer step commits at once."""

    leaves: list[NewLeaf]
    tiles: dict[Tile, bytes]
    head: Head
    meta: dict[str, bytes] = field(default_factory=dict)
    #: The interior (levels 1-7 of the little tree, tlog/server/treereader.tile_interior) of each tile
    #: that became full in this batch.
    tile_interiors: dict[Tile, bytes] = field(default_factory=dict)


class Storage(abc.ABC):
    """What the sequencer and the handlers need from a backend.  See the module docstring."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def head(self) -> Head | None:
        """The stored head, or None for a database that was never initialised."""

    @abc.abstractmethod
    async def commit_batch(self, batch: Batch, expected_size: int) -> None:
        """Atomically store the batch and move the head from ``expected_size`` to ``batch.head``."""

    @abc.abstractmethod
    async def read_tiles(self, tiles: list[Tile]) -> list[bytes]:
        """Hash tiles, each exactly ``32 * tile.width`` bytes."""

    async def read_tile_trees(self, tiles: list[Tile]) -> list[bytes]:
        """For proofs: like :meth:`read_tiles`, but a full tile whose interior was stored comes with it
        appended (``32 * (256 + 254)`` bytes).  A backend that keeps no interiors answers ``read_tiles``."""
        return await self.read_tiles(tiles)

    def read_tile_path(self, tile_index: int, group: int) -> bytes | None:
        """For inclusion proofs, synchronously: the stored path of leaves ``16 * group`` to
        ``16 * group + 15`` of full level-0 tile ``tile_index`` (treereader.tile_paths, written with
        the batch that filled the tile), or None when it is not stored (readers then use the tile)."""
        return None

    @abc.abstractmethod
    async def read_leaves(self, start: int, end: int) -> list[bytes]:
        """Leaf bytes for indices ``start <= i < end`` (all of them must exist)."""

    @abc.abstractmethod
    async def find_identities(self, identities: list[tuple[bytes, int]]) -> dict[bytes, int]:
        """Indices of already stored entries with these identities (deduplication), each given with
        the timestamp inside its body (``NewLeaf.entry_ms``), which a twin shares."""

    @abc.abstractmethod
    async def find_leaf_hash(self, leaf_hash: bytes) -> int | None:
        """Index of the leaf with this RFC 6962 leaf hash, if any."""

    @abc.abstractmethod
    async def read_payload(self, index: int) -> tuple[bytes, bytes] | None:
        """(salt, payload) of an event entry, or None when there is none (erased or operator entry)."""

    @abc.abstractmethod
    async def operator_leaves(self, since: int = 0) -> list[tuple[int, bytes]]:
        """(index, leaf) of every operator entry at index >= since, in index order: replays the key
        registry."""

    @abc.abstractmethod
    async def checkpoints(self, after_size: int = -1, limit: int = 1000) -> list[tuple[int, bytes]]:
        """Published checkpoints (size, note) with size > after_size, ascending."""

    @abc.abstractmethod
    async def get_meta(self, name: str) -> bytes | None: ...

    # -- operating the log (search, retention, privacy); optional for test doubles -------------------

    async def first_index_at(self, time_ms: int, size: int) -> int:
        """The smallest index below ``size`` whose integration time is ``>= time_ms`` (``size`` if none).
        Integration times never decrease along the tree, so this bounds a time range by indices."""
        raise NotImplementedError

    async def search_leaves(self, key_id: bytes | None, start: int, end: int, limit: int,
                            since_ms: int | None = None, until_ms: int | None = None) -> list[tuple[int, bytes]]:
        """Up to ``limit`` (index, leaf) with ``start <= index < end``, in index order: every leaf, or
        the event entries signed by ``key_id``; ``since_ms <= integrated_ms < until_ms`` when given."""
        raise NotImplementedError

    async def key_usage(self, key_id: bytes, size: int) -> tuple[int, int | None, int | None]:
        """(count, first index, last index) of the event entries of ``key_id`` below ``size``."""
        raise NotImplementedError

    async def payload_indices(self, end: int, limit: int) -> list[int]:
        """Up to ``limit`` indices below ``end`` that still hold a payload, ascending (retention)."""
        raise NotImplementedError

    async def purge(self) -> bool:
        """Remove stale copies of deleted bytes (after an erasure); True when complete."""
        raise NotImplementedError
