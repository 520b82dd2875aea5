"""An async client for a tlog server that verifies everything it returns.

Every checkpoint is verified against the pinned log verifier key and checked for consistency with
the last checkpoint this client saw (RFC 9162 §2.1.4.2; a failure raises ConsistencyError carrying both
signed checkpoints and the proof).  Every receipt's inclusion proof is verified (RFC 9162 §2.1.3.2)
before it is returned.  The HTTP transport is an ``aiohttp.ClientSession`` the caller may supply.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

from .checkpoint import Checkpoint, open_checkpoint
from .cosignature import check_quorum
from .entry import EventEntry, Leaf, payload_commitment, sign_entry
from .errors import ConsistencyError, FormatError, ProofError, SignatureError, TlogError
from .hashing import HASH_SIZE
from .keys import PrivateKey
from .note import Verifier, encode_base64
from .proof import verify_consistency, verify_inclusion
from .tlogproof import TlogProof, verify_tlog_proof

__all__ = ["LogClient", "SyncLogClient", "ClientReceipt", "LogServerError", "WitnessQuorumError", "new_salt"]

if TYPE_CHECKING:
    from .audit import WitnessPolicy

SALT_SIZE = 32


class LogServerError(TlogError):
    """The server refused a request; ``status`` is the HTTP status and the message its reason."""

    def __init__(self, status: int, message: str, retry_after: float | None = None):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.reason = message
        self.retry_after = retry_after


class WitnessQuorumError(SignatureError):
    """A checkpoint or receipt lacks the witness quorum the client's policy requires (spec/witness.md §4).

    After an append, ``receipt`` is the log-signed receipt: the entry *is* in the log, only not yet in a
    checkpoint enough witnesses cosigned (retry later with :meth:`LogClient.cosigned_receipt`)."""

    def __init__(self, message: str, receipt: ClientReceipt | None = None):
        super().__init__(message)
        self.receipt = receipt


def new_salt() -> bytes:
    """A fresh random salt for a payload commitment (spec/entry.md)."""
    return os.urandom(SALT_SIZE)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _unb64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise FormatError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FormatError(f"{what} is not valid base64") from exc


def _hashes(values: Any, what: str) -> list[bytes]:
    if not isinstance(values, list):
        raise FormatError(f"{what} is not a list")
    out = [_unb64(v, what) for v in values]
    if any(len(h) != HASH_SIZE for h in out):
        raise FormatError(f"{what} holds a hash that is not {HASH_SIZE} bytes")
    return out


@dataclass(frozen=True)
class ClientReceipt:
    """A verified receipt: the leaf at ``index`` is in the tree of ``checkpoint`` (a C2SP tlog-proof)."""

    index: int
    leaf: Leaf
    checkpoint: Checkpoint
    tlog_proof: bytes
    duplicate: bool
    witnesses: tuple[str, ...] = ()  # the policy's witnesses that cosigned ``checkpoint`` (with a policy)


class LogClient:
    """``async with LogClient(url, log_key=vkey) as c: receipt = await c.append(key, payload)``."""

    def __init__(self, url: str, *, log_key: str | Verifier, origin: str | None = None,
                 session: aiohttp.ClientSession | None = None, timeout: float = 30.0, token: str | None = None,
                 witness_policy: WitnessPolicy | None = None, witness_wait: float = 10.0):
        """``token``: a reader token (``tlog tokens create``), sent as ``Authorization: Bearer`` so that
        entry reads and searches return payloads (spec/privacy.md).

        ``witness_policy`` (a :class:`tlog.audit.WitnessPolicy`): every checkpoint this client returns or
        relies on must carry cosignatures of ``quorum`` of its witnesses, and an append returns its receipt
        against such a checkpoint, waiting up to ``witness_wait`` seconds for one (spec/witness.md §4)."""
        self.url = url.rstrip("/")
        self.token = token
        self.verifier = log_key if isinstance(log_key, Verifier) else Verifier.from_vkey(log_key)
        self.origin = origin or self.verifier.name
        self._session = session
        self._own_session = session is None
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self.latest: tuple[Checkpoint, bytes] | None = None
        self.witness_policy = witness_policy
        self.witness_wait = witness_wait
        self.latest_witnesses: list[str] = []  # the policy's witnesses that cosigned the last accepted checkpoint

    async def __aenter__(self) -> LogClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _request(self, method: str, path: str, *, json_body: Any = None, raw: bool = False) -> Any:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        async with self._http().request(method, self.url + path, json=json_body, headers=headers) as resp:
            body = await resp.read()
            if resp.status >= 400:
                retry = resp.headers.get("Retry-After")
                raise LogServerError(resp.status, _reason(body), float(retry) if retry else None)
            if raw:
                return body
            try:
                return await resp.json(content_type=None)
            except ValueError as exc:
                raise FormatError(f"{path}: the server's answer is not JSON") from exc

    # -- checkpoints and proofs -----------------------------------------------------------------

    async def checkpoint(self) -> Checkpoint:
        """The log's latest checkpoint, verified and checked for consistency with the last one seen.

        With a witness policy: the latest one if it already has the quorum, else the newest that has
        (``GET /v1/checkpoint/cosigned``); :class:`WitnessQuorumError` if there is none."""
        note = await self._request("GET", "/checkpoint", raw=True)
        if self.witness_policy is not None and not self._has_quorum(note):
            try:
                note = await self._request("GET", "/v1/checkpoint/cosigned", raw=True)
            except LogServerError as exc:
                raise WitnessQuorumError(f"no checkpoint of {self.origin} has the witness quorum: {exc}") from exc
        return await self.accept_checkpoint(note)

    def _has_quorum(self, note: bytes) -> bool:
        try:
            self.cosigners(note)
        except TlogError:
            return False
        return True

    def cosigners(self, note: bytes) -> list[str]:
        """The policy's witnesses with a valid cosignature on ``note``; WitnessQuorumError below the quorum."""
        p = self.witness_policy
        try:
            return check_quorum(note, p.witnesses, p.quorum, origin=self.origin)
        except SignatureError as exc:
            raise WitnessQuorumError(f"checkpoint of {self.origin}: {exc}") from exc

    async def accept_checkpoint(self, note: bytes, *, require_quorum: bool = True) -> Checkpoint:
        """Verify ``note`` (and, with a policy and ``require_quorum``, its witness quorum), check it is
        consistent with the last checkpoint seen and remember the larger of the two."""
        cp, _ = open_checkpoint(note, self.origin, self.verifier)
        names = self.cosigners(note) if self.witness_policy is not None and require_quorum else None
        if self.latest is not None:
            await self._check_consistent(self.latest, (cp, note))
        if self.latest is None or cp.size >= self.latest[0].size:
            self.latest = (cp, note)
        if names is not None:
            self.latest_witnesses = names
        return cp

    async def _check_consistent(self, a: tuple[Checkpoint, bytes], b: tuple[Checkpoint, bytes]) -> None:
        (old, old_note), (new, new_note) = sorted([a, b], key=lambda x: x[0].size)
        proof: list[bytes] = []
        try:
            if old.size == new.size:
                if old.root != new.root:
                    raise ProofError("two checkpoints of the same size with different roots")
                return
            proof = await self.consistency_proof(old.size, new.size)
            verify_consistency(old.size, new.size, proof, old.root, new.root)
        except ProofError as exc:
            raise ConsistencyError(f"log {self.origin} is inconsistent between sizes {old.size} and "
                                   f"{new.size}: {exc}", old_note=old_note, new_note=new_note,
                                   proof=proof) from exc

    async def consistency_proof(self, first: int, second: int) -> list[bytes]:
        body = await self._request("GET", f"/v1/proofs/consistency?first={first}&second={second}")
        return _hashes(body.get("proof") if isinstance(body, dict) else None, "consistency proof")

    async def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        body = await self._request("GET", f"/v1/proofs/inclusion?index={index}&tree_size={tree_size}")
        return _hashes(body.get("proof") if isinstance(body, dict) else None, "inclusion proof")

    # -- writes -----------------------------------------------------------------------------------

    async def append(self, key: PrivateKey, payload: bytes, *, timestamp_ms: int | None = None,
                     salt: bytes | None = None) -> ClientReceipt:
        """Sign ``payload`` as an event entry with the provisioning ``key``, submit it, verify the receipt."""
        salt = new_salt() if salt is None else salt
        entry = EventEntry(self.origin, key.public_key.key_id,
                           _now_ms() if timestamp_ms is None else timestamp_ms,
                           payload_commitment(salt, payload))
        return await self.submit_event(entry, sign_entry(entry, key), salt, payload)

    async def submit_event(self, entry: EventEntry, signature: bytes, salt: bytes,
                           payload: bytes) -> ClientReceipt:
        body = {"entry": encode_base64(entry.encode()), "signature": encode_base64(signature),
                "salt": encode_base64(salt), "payload": encode_base64(payload)}
        answer = await self._request("POST", "/v1/entries", json_body=body)
        return await self._witnessed(await self._verify_receipt(answer, entry.encode()))

    async def submit_operator_entry(self, entry: Any, key: PrivateKey) -> ClientReceipt:
        """Submit an operator-signed key event or erasure (``tlog keys …``, ``tlog erase``)."""
        body = {"entry": encode_base64(entry.encode()), "signature": encode_base64(sign_entry(entry, key))}
        answer = await self._request("POST", "/v1/operator-entries", json_body=body)
        return await self._witnessed(await self._verify_receipt(answer, entry.encode()))

    async def _verify_receipt(self, answer: Any, body: bytes) -> ClientReceipt:
        if not isinstance(answer, dict) or not isinstance(answer.get("receipt"), str):
            raise FormatError("the server's receipt is malformed")
        raw = answer["receipt"].encode()
        tp = TlogProof.parse(raw)
        cp = verify_tlog_proof(tp, origin=self.origin, log_verifier=self.verifier)
        leaf = Leaf.decode(tp.extra or b"")
        if leaf.body != body:
            raise ProofError("the receipt is for another entry than the one submitted")
        await self.accept_checkpoint(tp.checkpoint_note, require_quorum=False)
        return ClientReceipt(tp.index, leaf, cp, raw, bool(answer.get("duplicate")))

    async def receipt(self, index: int) -> ClientReceipt:
        """A verified receipt for entry ``index`` against the latest checkpoint (``GET /v1/receipts/<I>``),
        with the cosignatures it has so far (``witnesses`` lists the policy's, if the client has one)."""
        answer = await self._request("GET", f"/v1/receipts/{index}")
        if not isinstance(answer, dict) or not isinstance(answer.get("receipt"), str):
            raise FormatError("the server's receipt is malformed")
        raw = answer["receipt"].encode()
        tp = TlogProof.parse(raw)
        cp = verify_tlog_proof(tp, origin=self.origin, log_verifier=self.verifier)
        if tp.index != index:
            raise ProofError(f"the receipt is for another entry than {index}")
        await self.accept_checkpoint(tp.checkpoint_note, require_quorum=False)
        names: list[str] = []
        if self.witness_policy is not None:
            names = check_quorum(tp.checkpoint_note, self.witness_policy.witnesses, 0, origin=self.origin)
        return ClientReceipt(tp.index, Leaf.decode(tp.extra or b""), cp, raw, False, tuple(names))

    async def _witnessed(self, receipt: ClientReceipt) -> ClientReceipt:
        return receipt if self.witness_policy is None else await self.cosigned_receipt(receipt)

    async def cosigned_receipt(self, receipt: ClientReceipt | int, *, wait: float | None = None) -> ClientReceipt:
        """The receipt of an entry against the newest checkpoint that met the witness quorum
        (``GET /v1/receipts/<I>?cosigned=1``), asked again until ``wait`` (default ``witness_wait``) seconds
        have passed; :class:`WitnessQuorumError` (carrying ``receipt`` if one was given) if none by then."""
        if self.witness_policy is None:
            raise FormatError("a cosigned receipt needs a witness policy (LogClient(witness_policy=...))")
        index = receipt if isinstance(receipt, int) else receipt.index
        given = receipt if isinstance(receipt, ClientReceipt) else None
        deadline = time.monotonic() + (self.witness_wait if wait is None else wait)
        delay = 0.02
        while True:
            try:
                answer = await self._request("GET", f"/v1/receipts/{index}?cosigned=1")
                break
            except LogServerError as exc:
                if exc.status != 404 or time.monotonic() >= deadline:
                    raise WitnessQuorumError(f"entry {index} of {self.origin} is in no checkpoint with the witness "
                                             f"quorum yet: {exc.reason}", given) from exc
            await asyncio.sleep(max(0.0, min(delay, deadline - time.monotonic())))
            delay = min(delay * 2, 0.5)
        if not isinstance(answer, dict) or not isinstance(answer.get("receipt"), str):
            raise FormatError("the server's receipt is malformed")
        raw = answer["receipt"].encode()
        tp = TlogProof.parse(raw)
        names = self.cosigners(tp.checkpoint_note)
        cp = verify_tlog_proof(tp, origin=self.origin, log_verifier=self.verifier)
        leaf = Leaf.decode(tp.extra or b"")
        if tp.index != index or (given is not None and leaf.body != given.leaf.body):
            raise ProofError(f"the cosigned receipt is for another entry than {index}")
        await self.accept_checkpoint(tp.checkpoint_note)
        return ClientReceipt(tp.index, leaf, cp, raw, given.duplicate if given else False, tuple(names))

    # -- reads ------------------------------------------------------------------------------------

    async def get_entry(self, index: int) -> dict:
        """An entry with its leaf verified by an inclusion proof against the latest checkpoint, and its
        payload (when the token allows it) checked against the leaf's commitment."""
        cp = await self.checkpoint()
        answer = await self._request("GET", f"/v1/entries/{index}")
        if not isinstance(answer, dict) or answer.get("index") != index:
            raise FormatError(f"the server answered for another entry than {index}")
        await self.verify_entry(answer, cp)
        return answer

    async def verify_entry(self, answer: dict, cp: Checkpoint) -> None:
        """Check an entry view (``GET /v1/entries/<I>``, a search result): its leaf is at its index in
        the tree of ``cp`` (inclusion proof), and a payload it carries matches the commitment.  Adds
        ``verified_in_tree_size``."""
        index = answer.get("index")
        if not isinstance(index, int) or not 0 <= index < cp.size:
            raise ProofError(f"entry index {index!r} is not in the tree of size {cp.size}")
        leaf = Leaf.decode(_unb64(answer.get("leaf"), "leaf"))
        proof = await self.inclusion_proof(index, cp.size)
        verify_inclusion(leaf.hash(), index, cp.size, proof, cp.root)
        if answer.get("payload") is not None:
            entry = leaf.entry
            salt, payload = _unb64(answer.get("salt"), "salt"), _unb64(answer["payload"], "payload")
            if not isinstance(entry, EventEntry) or payload_commitment(salt, payload) != entry.commitment:
                raise ProofError(f"entry {index}: the payload does not match the leaf's commitment")
        answer["verified_in_tree_size"] = cp.size

    async def search(self, *, key: str | None = None, since_ms: int | None = None, until_ms: int | None = None,
                     after: int | None = None, limit: int | None = None) -> dict:
        """One page of ``GET /v1/entries`` (not verified: see :meth:`verify_entry`); ``next`` is the
        ``after`` of the following page, None on the last."""
        params = {"key": key, "since": since_ms, "until": until_ms, "after": after, "limit": limit}
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        answer = await self._request("GET", "/v1/entries" + (f"?{query}" if query else ""))
        if not isinstance(answer, dict) or not isinstance(answer.get("entries"), list):
            raise FormatError("the server's search answer is malformed")
        return answer

    async def search_all(self, **query: Any) -> AsyncIterator[dict]:
        """Every result of a search, following ``next`` page after page."""
        after = query.pop("after", None)
        while True:
            page = await self.search(after=after, **query)
            for entry in page["entries"]:
                yield entry
            after = page.get("next")
            if after is None:
                return

    async def key_timeline(self, key: str) -> dict:
        """``GET /v1/keys/<key id or name>``: records, usage and dated timeline of the key(s)."""
        return await self._request("GET", "/v1/keys/" + urllib.parse.quote(key, safe=""))

    async def keys(self) -> dict:
        return await self._request("GET", "/v1/keys")

    async def healthz(self) -> dict:
        return await self._request("GET", "/healthz")


def _reason(body: bytes) -> str:
    try:
        obj = json.loads(body)
        if isinstance(obj, dict) and isinstance(obj.get("error"), str):
            return obj["error"]
    except ValueError:
        pass
    return body[:200].decode("utf-8", "replace").strip() or "no reason given"


class SyncLogClient:
    """A synchronous wrapper for scripts: the same methods, run on a private event loop."""

    def __init__(self, url: str, *, log_key: str | Verifier, origin: str | None = None, timeout: float = 30.0,
                 token: str | None = None, witness_policy: WitnessPolicy | None = None, witness_wait: float = 10.0):
        self._loop = asyncio.new_event_loop()
        self._client = LogClient(url, log_key=log_key, origin=origin, timeout=timeout, token=token,
                                 witness_policy=witness_policy, witness_wait=witness_wait)

    def __enter__(self) -> SyncLogClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._loop.run_until_complete(self._client.close())
        self._loop.close()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._loop.run_until_complete(attr(*args, **kwargs))

        return call

