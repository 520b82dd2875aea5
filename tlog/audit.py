"""Offline verification of one receipt (:func:`verify_receipt`, ``tlog verify``), the witness policy and
the registry file it may use.  The whole-log audit is in tlog/logaudit.py.

Normative description of every check and what it proves: spec/audit.md.  This module never imports
``tlog.server`` (tests/test_imports.py): it works from public data only and never trusts the operator for
anything the data can prove.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .checkpoint import Checkpoint, open_checkpoint
from .cosignature import CosignatureVerifier, check_quorum
from .entry import EventEntry, Leaf, payload_commitment
from .errors import FormatError, TlogError
from .hashing import HASH_SIZE, leaf_hash
from .keys import PublicKey
from .note import Verifier, encode_base64
from .proof import verify_inclusion
from .registry import Registry
from .tlogproof import TlogProof

__all__ = ["Verdict", "WitnessPolicy", "RegistryBundle", "verify_receipt"]

MAX_POLICY_SIZE = 1 << 20
MAX_REGISTRY_BUNDLE_SIZE = 256 << 20
REGISTRY_BUNDLE_FORMAT = "tlog-registry-bundle/v1"


def _unb64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise FormatError(f"{what} is not a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FormatError(f"{what} is not valid base64") from exc
    if encode_base64(raw) != value:
        raise FormatError(f"{what} is not canonical base64")
    return raw


def _json_object(data: bytes, what: str, limit: int, keys: set[str]) -> dict[str, Any]:
    if len(data) > limit:
        raise FormatError(f"{what} is {len(data)} bytes, more than {limit}")
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormatError(f"{what} is not JSON: {exc}") from exc
    if not isinstance(obj, dict) or set(obj) != keys:
        raise FormatError(f"{what} must be a JSON object with exactly the fields {sorted(keys)}")
    return obj


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 63:
        raise FormatError(f"{what} must be an integer in [0, 2**63)")
    return value


# ============================================================================ receipts

@dataclass(frozen=True)
class WitnessPolicy:
    """Which witnesses' cosignatures a verifier requires: ``quorum`` of ``witnesses`` (spec/audit.md §2).

    File format (JSON)::

        {"quorum": 2, "witnesses": [{"name": "w1.example", "vkey": "w1.example+7d5e1a2b+BK..."}, ...]}

    Every ``vkey`` is a C2SP tlog-cosignature ``cosignature/v1`` verifier key (type 0x04) whose key name is
    ``name``; names are distinct; ``1 <= quorum <= len(witnesses)``.
    """

    quorum: int
    witnesses: tuple[CosignatureVerifier, ...]

    @classmethod
    def parse(cls, data: bytes) -> WitnessPolicy:
        """Parse a witness policy file strictly (FormatError)."""
        obj = _json_object(data, "witness policy", MAX_POLICY_SIZE, {"quorum", "witnesses"})
        items = obj["witnesses"]
        if not isinstance(items, list) or not items:
            raise FormatError("witness policy: witnesses must be a non-empty list")
        verifiers: list[CosignatureVerifier] = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or set(item) != {"name", "vkey"} or not isinstance(item["vkey"], str):
                raise FormatError(f"witness policy: witness {i} must be {{\"name\": ..., \"vkey\": ...}}")
            verifier = CosignatureVerifier.from_vkey(item["vkey"])
            if verifier.name != item["name"]:
                raise FormatError(f"witness policy: witness {i} is named {item['name']!r} but its vkey is "
                                  f"for {verifier.name!r}")
            if any(v.name == verifier.name for v in verifiers):
                raise FormatError(f"witness policy: witness {verifier.name!r} is listed twice")
            verifiers.append(verifier)
        quorum = _int(obj["quorum"], "witness policy quorum")
        if not 1 <= quorum <= len(verifiers):
            raise FormatError(f"witness policy: quorum {quorum} is not in [1, {len(verifiers)}]")
        return cls(quorum, tuple(verifiers))

    def to_json(self) -> bytes:
        return json.dumps({"quorum": self.quorum, "witnesses": [
            {"name": v.name, "vkey": v.to_vkey()} for v in self.witnesses]}, indent=2).encode() + b"\n"


@dataclass(frozen=True)
class RegistryBundle:
    """The log's operator entries, each with an inclusion proof against one signed checkpoint: enough to
    replay the key registry at that checkpoint's size offline (spec/audit.md §3, written by ``tlog export``
    as ``DIR/registry.json``).  Inclusion proves each listed entry is in the log; that *no* operator entry
    is missing is proved only by auditing the whole log (``tlog audit`` compares the list)."""

    checkpoint_note: bytes
    entries: tuple[tuple[int, bytes, tuple[bytes, ...]], ...]  # (index, leaf bytes, inclusion proof)

    def to_json(self) -> bytes:
        entries = [{"index": i, "leaf": encode_base64(leaf), "proof": [encode_base64(h) for h in proof]}
                   for i, leaf, proof in self.entries]
        obj = {"format": REGISTRY_BUNDLE_FORMAT, "checkpoint": self.checkpoint_note.decode("utf-8"),
               "entries": entries}
        return json.dumps(obj, indent=1).encode() + b"\n"

    @classmethod
    def parse(cls, data: bytes) -> RegistryBundle:
        obj = _json_object(data, "registry bundle", MAX_REGISTRY_BUNDLE_SIZE, {"format", "checkpoint", "entries"})
        if obj["format"] != REGISTRY_BUNDLE_FORMAT or not isinstance(obj["checkpoint"], str):
            raise FormatError(f"registry bundle: format must be {REGISTRY_BUNDLE_FORMAT!r} with a checkpoint note")
        if not isinstance(obj["entries"], list):
            raise FormatError("registry bundle: entries must be a list")
        entries = []
        for n, item in enumerate(obj["entries"]):
            if not isinstance(item, dict) or set(item) != {"index", "leaf", "proof"} or not isinstance(
                    item["proof"], list):
                raise FormatError(f"registry bundle: entry {n} must be {{index, leaf, proof}}")
            proof = tuple(_unb64(h, f"registry bundle entry {n} proof") for h in item["proof"])
            if any(len(h) != HASH_SIZE for h in proof):
                raise FormatError(f"registry bundle: entry {n} has a proof hash that is not {HASH_SIZE} bytes")
            entries.append((_int(item["index"], "registry bundle index"),
                            _unb64(item["leaf"], f"registry bundle entry {n} leaf"), proof))
        return cls(obj["checkpoint"].encode("utf-8"), tuple(entries))

    def registry(self, log_verifier: Verifier) -> tuple[Registry, Checkpoint]:
        """Verify the checkpoint and every entry's inclusion, then replay: the registry at the checkpoint's
        size.  Raises SignatureError, ProofError, FormatError or KeyRegistryError."""
        cp, _ = open_checkpoint(self.checkpoint_note, log_verifier.name, log_verifier)
        leaves = []
        for index, raw, proof in self.entries:
            if leaves and index <= leaves[-1][0]:
                raise FormatError(f"registry bundle: index {index} is out of order")
            verify_inclusion(leaf_hash(raw), index, cp.size, list(proof), cp.root)
            leaves.append((index, Leaf.decode(raw)))
        if not leaves or leaves[0][0] != 0:
            raise FormatError("registry bundle does not start with the genesis entry (index 0)")
        registry = Registry.replay(leaves, sparse=True)
        registry.advance(cp.size)
        return registry, cp


@dataclass
class Verdict:
    """The outcome of :func:`verify_receipt`: which checks passed, were skipped, or the one that failed."""

    index: int | None = None
    origin: str | None = None
    tree_size: int | None = None
    passed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: str | None = None
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.failed is None

    def line(self) -> str:
        """One line for a human: ``OK: ...`` or ``FAILED (<check>): <reason>``."""
        if not self.ok:
            return f"FAILED ({self.failed}): {self.reason}"
        where = f"entry {self.index} is in {self.origin} at tree size {self.tree_size}"
        extra = f"; not checked: {', '.join(self.skipped)}" if self.skipped else ""
        return f"OK: {where}; checked: {', '.join(self.passed)}{extra}"

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "index": self.index, "origin": self.origin, "tree_size": self.tree_size,
                "passed": self.passed, "skipped": self.skipped, "failed": self.failed, "reason": self.reason}


class _Failed(Exception):
    def __init__(self, check: str, reason: str):
        super().__init__(reason)
        self.check = check


def _step(check: str, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except TlogError as exc:
        raise _Failed(check, str(exc)) from exc


def verify_receipt(receipt: bytes, *, log_verifier: Verifier, writer_key: PublicKey | None = None,
                   registry: RegistryBundle | None = None, witnesses: WitnessPolicy | None = None,
                   payload: bytes | None = None, salt: bytes | None = None) -> Verdict:
    """Check a receipt (C2SP tlog-proof carrying the leaf in ``extra``) fully offline (spec/audit.md §1).

    In order: the receipt parses; the checkpoint is signed by ``log_verifier``; ``witnesses.quorum`` of the
    policy's witnesses cosigned it; the leaf decodes and names the checkpoint's origin; the RFC 9162
    §2.1.3.2 inclusion proof leads from the leaf hash to the signed root; the provisioning signature verifies
    (under ``writer_key``, or as judged by the replayed ``registry``: spec/keys.md §3); the payload and salt
    match the entry's commitment.  Never raises for bad input: the first failing check is in the Verdict.
    """
    v = Verdict()
    try:
        _verify_receipt(v, receipt, log_verifier, writer_key, registry, witnesses, payload, salt)
    except _Failed as exc:
        v.failed, v.reason = exc.check, str(exc)
    return v


def _verify_receipt(v: Verdict, receipt: bytes, log_verifier: Verifier, writer_key: PublicKey | None,
                    bundle: RegistryBundle | None, witnesses: WitnessPolicy | None,
                    payload: bytes | None, salt: bytes | None) -> None:
    tp = _step("receipt format", lambda: TlogProof.parse(receipt))
    v.index = tp.index
    cp, _ = _step("checkpoint signature", lambda: open_checkpoint(tp.checkpoint_note, log_verifier.name,
                                                                   log_verifier))
    v.origin, v.tree_size = cp.origin, cp.size
    v.passed.append("checkpoint signature")
    if witnesses is not None:
        names = _step("witness quorum", lambda: check_quorum(tp.checkpoint_note, witnesses.witnesses,
                                                             witnesses.quorum, origin=cp.origin))
        v.passed.append(f"witness quorum ({len(names)} of {witnesses.quorum} needed: {', '.join(names)})")
    else:
        v.skipped.append("witness cosignatures (give --witness-policy)")
    if tp.extra is None:
        raise _Failed("leaf", "the receipt carries no leaf (no extra line)")
    leaf = _step("leaf", lambda: Leaf.decode(tp.extra))
    if leaf.entry.origin != cp.origin:
        raise _Failed("leaf", f"the entry is for log {leaf.entry.origin!r}, the checkpoint for {cp.origin!r}")
    _step("inclusion proof", lambda: verify_inclusion(leaf_hash(tp.extra), tp.index, cp.size,
                                                      list(tp.proof), cp.root))
    v.passed.append("inclusion proof")
    _check_signer(v, tp.index, leaf, writer_key, bundle, log_verifier)
    _check_payload(v, leaf, payload, salt)


def _check_signer(v: Verdict, index: int, leaf: Leaf, writer_key: PublicKey | None,
                  bundle: RegistryBundle | None, log_verifier: Verifier) -> None:
    entry = leaf.entry
    if writer_key is not None:
        if isinstance(entry, EventEntry) and entry.key_id != writer_key.key_id:
            raise _Failed("provisioning signature", f"the entry names key {entry.key_id.hex()[:16]}, "
                                                    f"not the given key {writer_key.key_id_hex[:16]}")
        _step("provisioning signature", lambda: writer_key.verify(leaf.signing_message(), leaf.signature))
        v.passed.append(f"provisioning signature (key {writer_key.key_id_hex[:16]})")
    elif bundle is not None:
        registry, rcp = _step("registry", lambda: bundle.registry(log_verifier))
        if isinstance(entry, EventEntry):
            if index >= rcp.size:
                raise _Failed("registry", f"the registry file covers the log up to size {rcp.size}, the entry "
                                          f"is at index {index}: export the registry again")
            rec = _step("key registry", lambda: registry.check_event(index, leaf))
            v.passed.append(f"key registry (key {rec.name!r} {rec.key_id.hex()[:16]} valid at index {index}, "
                            f"signature verified; registry at size {rcp.size})")
        else:
            _step("provisioning signature", lambda: registry.operator_key.verify(leaf.signing_message(),
                                                                                 leaf.signature))
            v.passed.append("operator signature")
    else:
        v.skipped.append("provisioning signature (give --writer-key or --registry)")


def _check_payload(v: Verdict, leaf: Leaf, payload: bytes | None, salt: bytes | None) -> None:
    if payload is None and salt is None:
        v.skipped.append("payload (give --payload and --salt)")
        return
    if payload is None or salt is None:
        raise _Failed("payload commitment", "both the payload and its salt are needed")
    entry = leaf.entry
    if not isinstance(entry, EventEntry):
        raise _Failed("payload commitment", f"a {type(entry).__name__} entry has no payload")
    got = _step("payload commitment", lambda: payload_commitment(salt, payload))
    if got != entry.commitment:
        raise _Failed("payload commitment", "the payload and salt do not match the entry's commitment")
    v.passed.append("payload commitment")
