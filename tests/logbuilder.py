"""Builds small logs in memory and writes them as export directories (tlog.export.write_export), with
every key the test needs: the log's signer, the operator key and writer keys.  A forged log is built the
same way, so the audit sees a log whose tiles and checkpoint are all consistent and must find the lie in
the entries themselves."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from tlog.checkpoint import Checkpoint, sign_checkpoint
from tlog.entry import (Erasure, EventEntry, Genesis, Leaf, payload_commitment, register_event, revoke_event,
                        sign_entry)
from tlog.export import PayloadRecord, write_export
from tlog.keys import PrivateKey
from tlog.note import Signer, vkey_for
from tlog.proof import inclusion_plan
from tlog.tiles import TileHashReader
from tlog.tlogproof import TlogProof

T0 = 1_760_000_000_000
DAY = 86_400_000


def seeded_key(n: int) -> PrivateKey:
    return PrivateKey.from_ed25519_seed(hashlib.sha256(b"tlog-test-key-%d" % n).digest())


@dataclass
class LogBuilder:
    origin: str = "example.com/audit-test"
    now: int = T0
    signer: Signer = field(default_factory=lambda: Signer.generate("example.com/audit-test", seed=bytes(32)))
    operator: PrivateKey = field(default_factory=lambda: seeded_key(0))
    leaves: list[bytes] = field(default_factory=list)
    payloads: dict[int, tuple[bytes, bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        genesis = Genesis(self.origin, self.operator.public_key, self.now)
        self._append(genesis, self.operator)

    @property
    def vkey(self) -> str:
        return vkey_for(self.signer)

    def _append(self, entry, key: PrivateKey, integrated: int | None = None) -> int:
        if integrated is not None:
            self.now = integrated  # a forged log may go back in time
        leaf = Leaf(entry.encode(), sign_entry(entry, key), self.now)
        self.leaves.append(leaf.encode())
        self.now += 1
        return len(self.leaves) - 1

    def register(self, key: PrivateKey, name: str) -> int:
        ev = register_event(self.origin, self.now, key.public_key, name, T0 - DAY, T0 + 300 * DAY)
        return self._append(ev, self.operator)

    def revoke(self, key: PrivateKey, compromised_since: int | None = None) -> int:
        return self._append(revoke_event(self.origin, self.now, key.public_key.key_id, compromised_since),
                            self.operator)

    def erase(self, index: int, reason: str = "test") -> int:
        self.payloads.pop(index, None)  # as the server does: the payload goes with the erasure
        return self._append(Erasure(self.origin, index, reason, self.now), self.operator)

    def event(self, key: PrivateKey, payload: bytes | None = None, integrated: int | None = None) -> int:
        payload = b'{"n": %d}' % len(self.leaves) if payload is None else payload
        salt = hashlib.sha256(b"salt" + payload + bytes([len(self.leaves) % 256])).digest()
        ts = self.now if integrated is None else integrated
        entry = EventEntry(self.origin, key.public_key.key_id, ts, payload_commitment(salt, payload))
        index = self._append(entry, key, integrated)
        self.payloads[index] = (salt, payload)
        return index

    def events(self, key: PrivateKey, count: int) -> list[int]:
        return [self.event(key) for _ in range(count)]

    def payload_record(self, index: int, leaf: bytes) -> PayloadRecord:
        if index not in self.payloads:
            return PayloadRecord(index, "operator" if index == 0 or not isinstance(
                Leaf.decode(leaf).entry, EventEntry) else "absent")
        salt, payload = self.payloads[index]
        return PayloadRecord(index, "present", salt, payload)

    def write(self, out: str, *, payloads: bool = True) -> Checkpoint:
        return write_export(str(out), self.origin, list(self.leaves),
                            lambda cp: sign_checkpoint(cp, self.signer),
                            payloads=self.payload_record if payloads else None, durable=False)

    def receipt(self, out: str, index: int) -> bytes:
        """A C2SP tlog-proof for entry ``index`` in the export written to ``out``."""
        with open(os.path.join(out, "checkpoint"), "rb") as f:
            note = f.read()
        size = len(self.leaves)

        def read(tiles):
            result = []
            for t in tiles:
                with open(os.path.join(out, t.path()), "rb") as f:
                    result.append(f.read()[:t.width * 32])
            return result

        plan = inclusion_plan(index, size)
        proof = plan.rehash(TileHashReader(size, read).read_hashes(plan.ids))
        return TlogProof(index, proof, note, self.leaves[index]).format()
