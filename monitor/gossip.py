"""Gossip between monitors (spec/monitor.md §3): each round, with every peer, pull its verified heads, push
ours, and exchange the evidence that proves forks.

Every foreign checkpoint goes through :meth:`Follower.consider_peer`: the same classification as the log's
own checkpoints, with the consistency proof asked of the log.  Only checkpoints this monitor verified
(its heads) and evidence that verifies offline are ever sent on, so a bad checkpoint is not propagated.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from collections.abc import Callable
from urllib.parse import quote

import aiohttp

from tlog.evidence import MAX_EVIDENCE_SIZE
from tlog.note import MAX_NOTE_SIZE

from .follower import BadInput, Follower
from .metrics import Metrics

__all__ = ["Gossip", "CHECKPOINT_TYPE", "MAX_GOSSIP_SIZE"]

CHECKPOINT_TYPE = "text/plain; charset=utf-8"
#: A pull answer lists one checkpoint per log.
MAX_GOSSIP_SIZE = 64 * MAX_NOTE_SIZE


class PeerError(Exception):
    pass


class Gossip:
    def __init__(self, followers: dict[str, Follower], peers: list[str],
                 session: Callable[[], aiohttp.ClientSession], metrics: Metrics):
        self.followers = followers
        self.peers = [p.rstrip("/") for p in peers]
        self._session = session
        self.metrics = metrics
        self._pushed_evidence: dict[str, set[str]] = {p: set() for p in self.peers}
        self._peer_ok: dict[str, bool] = {}

    async def round(self) -> None:
        """One gossip round with every peer, concurrently."""
        await asyncio.gather(*(self._exchange(peer) for peer in self.peers))

    async def _exchange(self, peer: str) -> None:
        try:
            await self._pull_checkpoints(peer)
            await self._push_checkpoints(peer)
            for origin, follower in self.followers.items():
                await self._pull_evidence(peer, origin, follower)
                await self._push_evidence(peer, origin, follower)
        # RecursionError: JSON nested deeper than the parser's stack (json.loads raises it, not ValueError).
        except (PeerError, aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError, RecursionError) as exc:
            self.metrics.gossip_errors.labels(peer).inc()
            if self._peer_ok.get(peer, True):
                print(f"tlog-monitor: gossip with {peer} failed: {str(exc) or type(exc).__name__}",
                      file=sys.stderr, flush=True)
            self._peer_ok[peer] = False
            return
        if not self._peer_ok.get(peer, True):
            print(f"tlog-monitor: gossip with {peer} works again", file=sys.stderr, flush=True)
        self._peer_ok[peer] = True

    async def _get(self, url: str, limit: int) -> bytes:
        async with self._session().get(url) as resp:
            body = await resp.content.read(limit + 1)
            if resp.status != 200 or len(body) > limit:
                raise PeerError(f"GET {url}: status {resp.status}")
            return body

    async def _pull_checkpoints(self, peer: str) -> None:
        obj = json.loads(await self._get(f"{peer}/gossip", MAX_GOSSIP_SIZE))
        items = obj.get("checkpoints") if isinstance(obj, dict) else None
        if not isinstance(items, list):
            raise PeerError(f"{peer}/gossip: no list of checkpoints")
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("checkpoint"), str):
                raise PeerError(f"{peer}/gossip: malformed item")
            follower = self.followers.get(item.get("origin"))  # type: ignore[arg-type]
            if follower is None:
                continue  # a log this monitor does not follow
            try:
                await follower.consider_peer(item["checkpoint"].encode("utf-8"), peer)
            except BadInput as exc:
                print(f"tlog-monitor: {peer} gossiped a bad checkpoint: {exc}", file=sys.stderr, flush=True)

    async def _push_checkpoints(self, peer: str) -> None:
        for follower in self.followers.values():
            row = await follower.row()
            if row.head is None:
                continue
            async with self._session().post(f"{peer}/gossip", data=row.head.note,
                                            headers={"Content-Type": CHECKPOINT_TYPE}) as resp:
                await resp.read()
                if resp.status not in (200, 404):  # 404: the peer does not follow this log
                    raise PeerError(f"POST {peer}/gossip: status {resp.status}")

    async def _pull_evidence(self, peer: str, origin: str, follower: Follower) -> None:
        url = f"{peer}/gossip/evidence?origin={quote(origin, safe='')}"
        async with self._session().get(url) as resp:
            body = await resp.content.read(MAX_GOSSIP_SIZE + 1)
            if resp.status == 404:
                return
            if resp.status != 200 or len(body) > MAX_GOSSIP_SIZE:
                raise PeerError(f"GET {url}: status {resp.status}")
        obj = json.loads(body)
        docs = obj.get("evidence") if isinstance(obj, dict) else None
        if not isinstance(docs, list):
            raise PeerError(f"{url}: no list of evidence")
        for doc in docs:
            try:
                await follower.adopt_evidence(json.dumps(doc).encode(), peer)
            except BadInput as exc:
                print(f"tlog-monitor: {peer} sent evidence that proves nothing: {exc}", file=sys.stderr, flush=True)

    async def _push_evidence(self, peer: str, origin: str, follower: Follower) -> None:
        sent = self._pushed_evidence[peer]
        for body in await follower.state.proven_evidence(origin):
            digest = hashlib.sha256(body).hexdigest()
            if digest in sent or len(body) > MAX_EVIDENCE_SIZE:
                continue
            async with self._session().post(f"{peer}/gossip/evidence", data=body,
                                            headers={"Content-Type": "application/json"}) as resp:
                await resp.read()
                if resp.status not in (200, 404):
                    raise PeerError(f"POST {peer}/gossip/evidence: status {resp.status}")
            sent.add(digest)
