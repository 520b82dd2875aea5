"""The few log reads the monitor makes (spec/http-api.md), over a shared ``aiohttp.ClientSession``.

Failures split in two, because they mean different things to the classification table:
:class:`Refused` (a 4xx answer: the log itself declined, which counts against it) and
:class:`Unreachable` (no answer, a timeout or a 5xx: says nothing about the log's honesty).
Nothing returned here is trusted: callers verify it against signed checkpoints.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import aiohttp

from tlog.errors import FormatError, TlogError
from tlog.hashing import HASH_SIZE
from tlog.note import MAX_NOTE_SIZE, decode_base64_strict
from tlog.proof import root_plan
from tlog.tiles import TILE_WIDTH, Tile, hashes_from_tiles, tiles_for_nodes

__all__ = ["LogAPI", "Refused", "Unreachable", "MAX_BUNDLE_SIZE"]

MAX_BUNDLE_SIZE = TILE_WIDTH * (2 + 0xFFFF)
_MAX_JSON = 1 << 16


class Unreachable(Exception):
    """No usable answer: connection error, timeout, 5xx."""


class Refused(TlogError):
    """The log answered 4xx; ``status`` and the log's one-line reason."""

    def __init__(self, status: int, reason: str):
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


class LogAPI:
    """Reads of one log at ``url``; ``session`` returns the shared client session."""

    def __init__(self, url: str, session: Callable[[], aiohttp.ClientSession]):
        self.url = url.rstrip("/")
        self._session = session

    async def _get(self, path: str, limit: int) -> bytes:
        try:
            async with self._session().get(self.url + path) as resp:
                body = await resp.content.read(limit + 1)
                if resp.status >= 500 or resp.status in (408, 429):
                    raise Unreachable(f"GET {path}: {resp.status} {_reason(body)}")
                if resp.status >= 400:
                    raise Refused(resp.status, _reason(body))
                if resp.status != 200:
                    raise Unreachable(f"GET {path}: unexpected status {resp.status}")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise Unreachable(f"GET {path}: {str(exc) or type(exc).__name__}") from None
        if len(body) > limit:
            raise FormatError(f"GET {path}: answer larger than {limit} bytes")
        return body

    async def checkpoint(self) -> bytes:
        """The signed checkpoint note the log serves now (not verified here)."""
        return await self._get("/checkpoint", MAX_NOTE_SIZE)

    async def consistency_proof(self, first: int, second: int) -> list[bytes]:
        """RFC 9162 §2.1.4.1 proof between two sizes, as served (not verified here)."""
        body = await self._get(f"/v1/proofs/consistency?first={first}&second={second}", _MAX_JSON)
        try:
            obj = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser's stack
            raise FormatError("the consistency proof answer is not JSON") from None
        proof = obj.get("proof") if isinstance(obj, dict) else None
        if not isinstance(proof, list) or len(proof) > 126 or not all(isinstance(h, str) for h in proof):
            raise FormatError("the consistency proof answer has no list of hashes")
        hashes = [decode_base64_strict(h, "consistency proof hash") for h in proof]
        if any(len(h) != HASH_SIZE for h in hashes):
            raise FormatError(f"a consistency proof hash is not {HASH_SIZE} bytes")
        return hashes

    async def tile(self, tile: Tile) -> bytes:
        """A hash tile or entry bundle (C2SP tlog-tiles), at the width given."""
        limit = MAX_BUNDLE_SIZE if tile.is_entries else tile.width * HASH_SIZE
        return await self._get("/" + tile.path(), limit)

    async def tree_root(self, size: int) -> bytes:
        """MTH of the first ``size`` leaves of the tree the log serves now, rebuilt from its hash tiles
        (RFC 6962 §2.1; tlog.proof.root_plan).  Unauthenticated: bind it to a signed root with a proof."""
        plan = root_plan(size)
        tiles = tiles_for_nodes(plan.ids, size)
        contents = await asyncio.gather(*(self.tile(t) for t in tiles))
        return plan.rehash(hashes_from_tiles(plan.ids, size, dict(zip(tiles, contents))))[0]


def _reason(body: bytes) -> str:
    try:
        obj = json.loads(body)
        if isinstance(obj, dict) and isinstance(obj.get("error"), str):
            return obj["error"][:200]
    except (ValueError, RecursionError):
        pass
    return body[:200].decode("utf-8", "replace").strip() or "no reason given"
