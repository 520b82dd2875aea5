"""tlog.registry: replaying key events and checking event entries (spec/keys.md)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tlog.entry import (Entry, Erasure, EventEntry, Genesis, KeyAction, KeyEvent, Leaf, payload_commitment,
                        register_event, revoke_event, rotate_event, sign_entry)
from tlog.errors import KeyRegistryError
from tlog.keys import KeyType, PrivateKey, decode_der_signature, encode_der_signature
from tlog.registry import EntryRejected, KeyRecord, Reason, Registry

ORIGIN = "example.com/log"
OP = PrivateKey.from_ed25519_seed(bytes(32))
W1, W2, W3 = (PrivateKey.from_ed25519_seed(bytes([i]) * 32) for i in (1, 2, 3))
P256 = PrivateKey.generate(KeyType.P256)
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
T = 1_700_000_000_000
SEC, DAY = 1000, 86_400_000
COMMIT = payload_commitment(bytes(16), b"payload")


def make_leaf(entry: Entry, signer: PrivateKey, t: int) -> Leaf:
    return Leaf(entry.encode(), sign_entry(entry, signer), t)


def event(writer: PrivateKey, t: int, ts: int | None = None, origin: str = ORIGIN,
          signer: PrivateKey | None = None) -> Leaf:
    entry = EventEntry(origin, writer.public_key.key_id, t if ts is None else ts, COMMIT)
    return make_leaf(entry, signer or writer, t)


class Log:
    """A log under construction: every leaf is applied to ``reg`` as it is appended, as the server does."""

    def __init__(self, lifetime: int = 365 * DAY, skew: int = 5 * 60 * SEC) -> None:
        self.leaves: list[Leaf] = []
        self.reg = Registry()
        self.append(make_leaf(Genesis(ORIGIN, OP.public_key, T, lifetime, skew), OP, T))

    def append(self, leaf: Leaf) -> int:
        index = len(self.leaves)
        self.reg.apply(index, leaf)
        self.leaves.append(leaf)
        return index

    def op(self, entry: Entry, t: int = T, signer: PrivateKey = OP) -> int:
        return self.append(make_leaf(entry, signer, t))

    def register(self, key: PrivateKey, name: str = "writer-1", nb: int = T, na: int = T + 30 * DAY,
                 t: int = T, rate: int = 0) -> int:
        return self.op(register_event(ORIGIN, t, key.public_key, name, nb, na, rate), t)

    def write(self, writer: PrivateKey, t: int, **kw: object) -> int:
        """Append an event after checking it at append time (raises like the server would refuse)."""
        leaf = event(writer, t, **kw)  # type: ignore[arg-type]
        self.reg.check_event(len(self.leaves), leaf)
        return self.append(leaf)

    def write_unchecked(self, writer: PrivateKey, t: int, **kw: object) -> int:
        return self.append(event(writer, t, **kw))  # type: ignore[arg-type]

    def check(self, index: int) -> KeyRecord:
        return self.reg.check_event(index, self.leaves[index])


def rejected(reason: Reason, fn: Callable[[], object]) -> EntryRejected:
    with pytest.raises(EntryRejected) as info:
        fn()
    assert info.value.reason is reason, str(info.value)
    assert isinstance(info.value, KeyRegistryError)
    assert str(info.value).startswith(f"entry {info.value.index}: {reason}: ")
    return info.value


def refused(log: Log, reason: Reason, entry: Entry, t: int = T, signer: PrivateKey = OP) -> None:
    """An operator entry is refused and leaves the registry exactly as it was."""
    before, size = log.reg.to_json(), log.reg.size
    err = rejected(reason, lambda: log.op(entry, t, signer))
    assert err.index == size
    assert log.reg.to_json() == before and log.reg.size == size


# ------------------------------------------------------------------ genesis and sequencing

def test_genesis_parameters() -> None:
    log = Log(lifetime=DAY, skew=SEC)
    assert log.reg.operator_key == OP.public_key and log.reg.origin == ORIGIN
    assert log.reg.max_key_lifetime_ms == DAY and log.reg.max_skew_ms == SEC
    assert log.reg.size == 1 and log.reg.is_operator_index(0) and dict(log.reg.keys) == {}


def test_genesis_rules() -> None:
    g = Genesis(ORIGIN, OP.public_key, T)
    rejected(Reason.BAD_SIGNATURE, lambda: Registry().apply(0, make_leaf(g, W1, T)))
    rejected(Reason.NO_GENESIS, lambda: Registry().apply(0, event(W1, T)))
    rejected(Reason.NO_GENESIS, lambda: Registry().apply(0, make_leaf(register_event(
        ORIGIN, T, W1.public_key, "w", T, T + 1), OP, T)))
    rejected(Reason.OUT_OF_ORDER, lambda: Registry().apply(1, make_leaf(g, OP, T)))
    log = Log()
    refused(log, Reason.UNEXPECTED_GENESIS, g)
    rejected(Reason.OUT_OF_ORDER, lambda: log.reg.apply(0, log.leaves[0]))
    rejected(Reason.OUT_OF_ORDER, lambda: log.reg.apply(2, event(W1, T)))
    with pytest.raises(KeyRegistryError):
        _ = Registry().operator_key
    with pytest.raises(KeyRegistryError):
        Registry().to_json()


# ------------------------------------------------------------------ REGISTER

def test_register_then_valid() -> None:
    log = Log()
    r = log.register(W1, rate=50)
    i = log.write(W1, T + SEC)
    rec = log.check(i)
    assert rec.public_key == W1.public_key and rec.name == "writer-1" and rec.registered_index == r
    assert rec.rate_limit == 50 and rec.history == ((r, KeyAction.REGISTER),)
    assert log.reg.by_name("writer-1") == rec and log.reg.by_name("nobody") is None
    assert log.reg.keys[W1.public_key.key_id] == rec


def test_event_before_registration_is_unknown() -> None:
    log = Log()
    early = log.write_unchecked(W1, T)
    log.register(W1)
    rejected(Reason.UNKNOWN_KEY, lambda: log.check(early))  # still unknown after replaying the registration
    rejected(Reason.UNKNOWN_KEY, lambda: log.write(W2, T))  # never registered


def test_validity_window_boundaries() -> None:
    log = Log()
    log.register(W1, nb=T + SEC, na=T + DAY)
    rejected(Reason.NOT_YET_VALID, lambda: log.write(W1, T + SEC - 1))
    log.write(W1, T + SEC)
    log.write(W1, T + DAY)
    rejected(Reason.EXPIRED, lambda: log.write(W1, T + DAY + 1))


def test_register_rules() -> None:
    log = Log(lifetime=DAY)
    log.register(W1, nb=T, na=T + DAY)  # exactly the maximum lifetime
    refused(log, Reason.LIFETIME_EXCEEDED, register_event(ORIGIN, T, W2.public_key, "w2", T, T + DAY + 1))
    refused(log, Reason.BAD_VALIDITY, register_event(ORIGIN, T, W2.public_key, "w2", T, T))
    refused(log, Reason.BAD_VALIDITY, register_event(ORIGIN, T, W2.public_key, "w2", T + 1, T))
    refused(log, Reason.DUPLICATE_KEY, register_event(ORIGIN, T, W1.public_key, "other", T, T + 1))
    refused(log, Reason.OPERATOR_KEY, register_event(ORIGIN, T, OP.public_key, "op", T, T + 1))
    refused(log, Reason.NAME_IN_USE, register_event(ORIGIN, T, W2.public_key, "writer-1", T, T + 1))


def test_rotate_requires_the_current_key_for_the_name() -> None:
    """An expired key whose name now belongs to another key cannot be rotated: one live key per name."""
    log = Log()
    log.register(W1, nb=T, na=T + DAY)
    log.op(register_event(ORIGIN, T + 2 * DAY, W2.public_key, "writer-1", T + 2 * DAY, T + 3 * DAY), T + 2 * DAY)
    refused(log, Reason.NOT_CURRENT, rotate_event(ORIGIN, T + 2 * DAY, W1.public_key.key_id, W3.public_key,
                                                  "writer-1", T + 2 * DAY, T + 3 * DAY, T), T + 2 * DAY)


def test_name_reusable_after_expiry_or_revocation() -> None:
    log = Log()
    log.register(W1, nb=T, na=T + DAY)
    log.op(register_event(ORIGIN, T + DAY + 1, W2.public_key, "writer-1", T + DAY, T + 2 * DAY), T + DAY + 1)
    assert log.reg.by_name("writer-1").public_key == W2.public_key  # type: ignore[union-attr]
    log.op(revoke_event(ORIGIN, T + DAY + 2, W2.public_key.key_id), T + DAY + 2)
    assert log.reg.by_name("writer-1") is None
    log.register(W3, nb=T + DAY, na=T + 3 * DAY, t=T + DAY + 3)
    assert log.reg.by_name("writer-1").public_key == W3.public_key  # type: ignore[union-attr]


# ------------------------------------------------------------------ ROTATE

def test_rotate_with_overlap() -> None:
    log = Log()
    log.register(W1, nb=T, na=T + 10 * DAY)
    before = log.write(W1, T + DAY - SEC)
    rot = log.op(rotate_event(ORIGIN, T + DAY, W1.public_key.key_id, W2.public_key, "writer-1",
                              T + DAY, T + 11 * DAY, retire_at_ms=T + 2 * DAY), T + DAY)
    both = (log.write(W1, T + DAY + SEC), log.write(W2, T + DAY + SEC), log.write(W1, T + 2 * DAY))
    err = rejected(Reason.EXPIRED, lambda: log.write(W1, T + 2 * DAY + 1))
    assert "retired by rotation" in str(err)
    log.write(W2, T + 2 * DAY + 1)
    for i in (before, *both):
        log.check(i)
    old, new = log.reg.keys[W1.public_key.key_id], log.reg.keys[W2.public_key.key_id]
    assert old.replaced_by == new.key_id and new.replaces == old.key_id
    assert old.retired_index == rot and old.effective_not_after_ms == T + 2 * DAY and old.not_after_ms == T + 10 * DAY
    assert old.history == ((1, KeyAction.REGISTER), (rot, KeyAction.ROTATE))
    assert new.history == ((rot, KeyAction.ROTATE),) and new.registered_index == rot
    assert log.reg.by_name("writer-1") == new


def test_rotation_does_not_retroactively_expire_earlier_entries() -> None:
    """Retirement takes effect by index: an entry sequenced before the ROTATE keeps the registered not_after."""
    log = Log()
    log.register(W1, nb=T, na=T + 10 * DAY)
    early = log.write(W1, T + 3 * DAY)
    log.op(rotate_event(ORIGIN, T, W1.public_key.key_id, W2.public_key, "writer-1", T, T + DAY, T + DAY))
    log.check(early)
    rejected(Reason.EXPIRED, lambda: log.write(W1, T + 3 * DAY))


def test_rotate_rules() -> None:
    log = Log(lifetime=DAY)
    log.register(W1, na=T + DAY)
    old = W1.public_key.key_id

    def rot(new: PrivateKey, name: str = "writer-1", old_id: bytes = old, na: int = T + DAY) -> Entry:
        return rotate_event(ORIGIN, T, old_id, new.public_key, name, T, na, T + DAY)

    refused(log, Reason.UNKNOWN_KEY, rot(W2, old_id=W3.public_key.key_id))
    refused(log, Reason.NAME_MISMATCH, rot(W2, name="writer-2"))
    refused(log, Reason.DUPLICATE_KEY, rot(W1))
    refused(log, Reason.OPERATOR_KEY, rot(OP))
    refused(log, Reason.LIFETIME_EXCEEDED, rot(W2, na=T + DAY + 1))
    log.op(rot(W2))
    refused(log, Reason.ALREADY_ROTATED, rot(W3))
    with pytest.raises(TypeError):
        KeyEvent(origin=ORIGIN, timestamp_ms=T)
    log.op(revoke_event(ORIGIN, T, W2.public_key.key_id))
    refused(log, Reason.REVOKED, rot(W3, old_id=W2.public_key.key_id))


# ------------------------------------------------------------------ REVOKE

def test_revoke_by_index() -> None:
    log = Log()
    log.register(W1)
    valid = log.write(W1, T + SEC)
    rev = log.op(revoke_event(ORIGIN, T + 2 * SEC, W1.public_key.key_id), T + 2 * SEC)
    err = rejected(Reason.REVOKED, lambda: log.write(W1, T + 3 * SEC))
    assert str(rev) in str(err)
    assert log.check(valid).revoked_index == rev  # valid before the revocation, also after replay
    assert log.reg.by_name("writer-1") is None


def test_compromised_since_retroactively_invalidates() -> None:
    log = Log()
    log.register(W1)
    ok, bad = log.write(W1, T + SEC), log.write(W1, T + 10 * SEC)  # both valid when appended
    log.op(revoke_event(ORIGIN, T + 20 * SEC, W1.public_key.key_id, compromised_since_ms=T + 5 * SEC),
           T + 20 * SEC)
    log.check(ok)
    rejected(Reason.COMPROMISED, lambda: log.check(bad))
    rejected(Reason.REVOKED, lambda: log.write(W1, T + 21 * SEC))


def test_revoke_rules_and_re_revocation() -> None:
    log = Log()
    log.register(W1)
    refused(log, Reason.UNKNOWN_KEY, revoke_event(ORIGIN, T, W2.public_key.key_id))
    first = log.op(revoke_event(ORIGIN, T, W1.public_key.key_id))
    refused(log, Reason.ALREADY_REVOKED, revoke_event(ORIGIN, T, W1.public_key.key_id))
    second = log.op(revoke_event(ORIGIN, T, W1.public_key.key_id, T + 9))
    refused(log, Reason.ALREADY_REVOKED, revoke_event(ORIGIN, T, W1.public_key.key_id, T + 10))
    log.op(revoke_event(ORIGIN, T, W1.public_key.key_id, T + 5))
    rec = log.reg.keys[W1.public_key.key_id]
    assert rec.revoked_index == first and rec.compromised_since_ms == T + 5
    assert [a for _, a in rec.history] == [KeyAction.REGISTER] + [KeyAction.REVOKE] * 3
    assert rec.history[2] == (second, KeyAction.REVOKE)


# ------------------------------------------------------------------ operator signatures, origins, erasures

@pytest.mark.parametrize("kind", ["register", "rotate", "revoke", "erasure"])
def test_operator_entries_must_be_signed_by_the_operator(kind: str) -> None:
    log = Log()
    log.register(W1)
    i = log.write(W1, T)
    entries = {
        "register": register_event(ORIGIN, T, W2.public_key, "w2", T, T + 1),
        "rotate": rotate_event(ORIGIN, T, W1.public_key.key_id, W2.public_key, "writer-1", T, T + 1, T),
        "revoke": revoke_event(ORIGIN, T, W1.public_key.key_id),
        "erasure": Erasure(ORIGIN, i, "gdpr", T),
    }
    refused(log, Reason.BAD_SIGNATURE, entries[kind], signer=W1)  # the writer cannot manage keys
    refused(log, Reason.WRONG_ORIGIN, _with_origin(entries[kind], "other.example/log"))
    log.op(entries[kind])


def _with_origin(entry: Entry, origin: str) -> Entry:
    import dataclasses
    return dataclasses.replace(entry, origin=origin)  # type: ignore[type-var]


def test_event_wrong_origin() -> None:
    log = Log()
    log.register(W1)
    rejected(Reason.WRONG_ORIGIN, lambda: log.write(W1, T, origin="other.example/log"))


def test_erasure_rules() -> None:
    log = Log()
    reg_index = log.register(W1)
    i = log.write(W1, T)
    refused(log, Reason.BAD_ERASURE, Erasure(ORIGIN, 0, "genesis", T))
    refused(log, Reason.BAD_ERASURE, Erasure(ORIGIN, reg_index, "key event", T))
    refused(log, Reason.BAD_ERASURE, Erasure(ORIGIN, log.reg.size, "itself", T))
    refused(log, Reason.BAD_ERASURE, Erasure(ORIGIN, 99, "future", T))
    e = log.op(Erasure(ORIGIN, i, "gdpr", T))
    refused(log, Reason.BAD_ERASURE, Erasure(ORIGIN, i, "again", T))
    refused(log, Reason.BAD_ERASURE, Erasure(ORIGIN, e, "an erasure", T))
    assert dict(log.reg.erasures) == {i: e}
    log.check(i)  # erasing the payload does not change the entry's validity


# ------------------------------------------------------------------ check_event details

def test_timestamp_skew_boundaries() -> None:
    log = Log(skew=SEC)
    log.register(W1)
    t = T + DAY
    log.write(W1, t, ts=t - SEC)
    log.write(W1, t, ts=t + SEC)
    rejected(Reason.TIMESTAMP_SKEW, lambda: log.write(W1, t, ts=t - SEC - 1))
    rejected(Reason.TIMESTAMP_SKEW, lambda: log.write(W1, t, ts=t + SEC + 1))


def test_bad_signature() -> None:
    log = Log()
    log.register(W1)
    rejected(Reason.BAD_SIGNATURE, lambda: log.write(W1, T, signer=W2))
    leaf = event(W1, T)
    forged = Leaf(leaf.body, leaf.signature[:-1] + bytes([leaf.signature[-1] ^ 1]), T)
    rejected(Reason.BAD_SIGNATURE, lambda: log.reg.check_event(log.reg.size, forged))


def test_p256_writer_and_malleated_twin() -> None:
    log = Log()
    log.register(P256, name="hsm-writer")
    leaf = event(P256, T + SEC)
    r, s = decode_der_signature(leaf.signature)
    twin = Leaf(leaf.body, encode_der_signature(r, N - s), leaf.integrated_ms)
    assert log.reg.check_event(log.reg.size, leaf) == log.reg.check_event(log.reg.size, twin)
    assert twin.identity() == leaf.identity()


def test_check_event_only_judges_event_entries() -> None:
    log = Log()
    reg_index = log.register(W1)
    i = log.write(W1, T)
    rejected(Reason.NOT_AN_EVENT, lambda: log.reg.check_event(0, log.leaves[i]))
    rejected(Reason.NOT_AN_EVENT, lambda: log.reg.check_event(reg_index, log.leaves[i]))
    rejected(Reason.NOT_AN_EVENT, lambda: log.reg.check_event(log.reg.size + 1, log.leaves[i]))
    rejected(Reason.NOT_AN_EVENT, lambda: log.reg.check_event(log.reg.size, log.leaves[reg_index]))


def test_to_json() -> None:
    log = Log()
    log.register(W1, rate=5)
    log.op(rotate_event(ORIGIN, T, W1.public_key.key_id, W2.public_key, "writer-1", T, T + DAY, T + DAY))
    log.op(revoke_event(ORIGIN, T, W2.public_key.key_id, T + 7))
    doc = json.loads(json.dumps(log.reg.to_json()))
    assert doc["origin"] == ORIGIN and doc["size"] == 4
    assert doc["operator_key"] == OP.public_key.to_text() and doc["operator_key_id"] == OP.public_key.key_id_hex
    assert list(doc["keys"]) == [W1.public_key.key_id_hex, W2.public_key.key_id_hex]
    k1, k2 = doc["keys"].values()
    assert k1["public_key"] == W1.public_key.to_text() and k1["key_type"] == "ed25519" and k1["rate_limit"] == 5
    assert k1["replaced_by"] == k2["key_id"] == W2.public_key.key_id_hex and k2["replaces"] == k1["key_id"]
    assert k2["revoked_index"] == 3 and k2["compromised_since_ms"] == T + 7
    assert k1["history"] == [{"index": 1, "action": "register"}, {"index": 2, "action": "rotate"}]
    assert doc["names"] == {} and doc["erasures"] == []


# ------------------------------------------------------------------ replay equals incremental application

def _scenario() -> Log:
    log = Log(lifetime=20 * DAY, skew=10 * SEC)
    log.register(W1, nb=T, na=T + 10 * DAY)
    log.register(P256, name="hsm", nb=T, na=T + 20 * DAY)
    for k in range(5):
        log.write_unchecked(W1, T + k * DAY)
        log.write_unchecked(P256, T + k * DAY + 1, ts=T + k * DAY + 20 * SEC)  # some skewed
    log.op(rotate_event(ORIGIN, T, W1.public_key.key_id, W2.public_key, "writer-1", T + 4 * DAY, T + 14 * DAY,
                        T + 6 * DAY), T + 5 * DAY)
    for k in range(5, 9):
        log.write_unchecked(W1, T + k * DAY)
        log.write_unchecked(W2, T + k * DAY)
    log.op(revoke_event(ORIGIN, T, P256.public_key.key_id, T + 2 * DAY), T + 9 * DAY)
    log.op(Erasure(ORIGIN, 3, "request", T), T + 9 * DAY)
    log.write_unchecked(P256, T + 9 * DAY)
    log.write_unchecked(W3, T + 9 * DAY)
    return log


def _verdict(reg: Registry, index: int, leaf: Leaf) -> str:
    try:
        reg.check_event(index, leaf)
        return "ok"
    except EntryRejected as e:
        return str(e.reason)


def test_replay_equals_incremental() -> None:
    log = _scenario()
    replayed = Registry.replay(enumerate(log.leaves))
    assert replayed.to_json() == log.reg.to_json()
    events = [i for i in range(1, len(log.leaves)) if not replayed.is_operator_index(i)]
    verdicts = [_verdict(replayed, i, log.leaves[i]) for i in events]
    assert verdicts == [_verdict(log.reg, i, log.leaves[i]) for i in events]
    assert set(verdicts) == {"ok", "expired", "compromised", "revoked", "timestamp skew", "unknown key"}


_OPS = st.lists(st.one_of(
    st.tuples(st.just("register"), st.integers(0, 3), st.integers(-1, 1), st.integers(0, 3)),
    st.tuples(st.just("rotate"), st.integers(0, 3), st.integers(0, 3), st.integers(-1, 2)),
    st.tuples(st.just("revoke"), st.integers(0, 3), st.none() | st.integers(-2, 1)),
    st.tuples(st.just("event"), st.integers(0, 3), st.integers(-3, 3)),
    st.tuples(st.just("event"), st.integers(0, 3), st.integers(-3, 3)),
    st.tuples(st.just("erase"), st.integers(1, 5)),
), max_size=30)
_WRITERS = [W1, W2, W3, P256]
_HOUR = DAY // 24


def _op_entry(log: Log, op: tuple, t: int) -> Entry:  # type: ignore[type-arg]
    kind, k = op[0], op[1]
    if kind == "register":
        _, _, nb, length = op
        return register_event(ORIGIN, t, _WRITERS[k].public_key, f"n{k}", t + nb * DAY, t + (nb + length) * DAY)
    if kind == "rotate":
        _, _, new, retire = op
        old = log.reg.keys.get(_WRITERS[k].public_key.key_id)
        return rotate_event(ORIGIN, t, _WRITERS[k].public_key.key_id, _WRITERS[new].public_key,
                            old.name if old else "x", t, t + 2 * DAY, t + retire * DAY)
    if kind == "revoke":
        _, _, since = op
        return revoke_event(ORIGIN, t, _WRITERS[k].public_key.key_id, None if since is None else t + since * DAY)
    return Erasure(ORIGIN, max(0, log.reg.size - k), "r", t)


@settings(max_examples=150, deadline=None)
@given(_OPS, st.lists(st.sampled_from([0, 1, _HOUR, 12 * _HOUR, DAY, 2 * DAY]), min_size=32, max_size=32))
def test_append_time_verdicts_survive_replay(ops: list[tuple], steps: list[int]) -> None:  # type: ignore[type-arg]
    """Checking at append time == checking after replaying everything, except retroactive compromise."""
    log, t, verdicts = Log(lifetime=3 * DAY, skew=DAY), T, {}
    for op, step in zip([("register", 0, 0, 3), ("register", 3, 0, 3)] + ops, steps):
        t += step
        if op[0] == "event":
            leaf = event(_WRITERS[op[1]], t, ts=t + op[2] * DAY // 2)
            verdicts[log.reg.size] = _verdict(log.reg, log.reg.size, leaf)
            log.append(leaf)  # a misbehaving log appends even rejected events: the auditor must agree
            continue
        try:
            log.op(_op_entry(log, op, t), t)
        except EntryRejected:
            pass  # refused at append time, never enters the log
    final = Registry.replay(enumerate(log.leaves))
    assert final.to_json() == log.reg.to_json()
    for i, then in verdicts.items():
        now = _verdict(final, i, log.leaves[i])
        if now != then:
            rec = final.keys[log.leaves[i].entry.key_id]  # type: ignore[union-attr]
            assert now == "compromised" and rec.compromised_since_ms is not None
            assert log.leaves[i].integrated_ms >= rec.compromised_since_ms


def test_sparse_replay_and_advance() -> None:
    """A caller holding only the operator entries replays them sparsely: the same registry as a full replay."""
    log = _scenario()
    operator = [(i, leaf) for i, leaf in enumerate(log.leaves) if log.reg.is_operator_index(i)]
    sparse = Registry.replay(operator, sparse=True)
    sparse.advance(len(log.leaves))
    assert sparse.to_json() == log.reg.to_json()
    rejected(Reason.OUT_OF_ORDER, lambda: Registry.replay(operator))  # gaps need sparse=True
    rejected(Reason.OUT_OF_ORDER, lambda: sparse.advance(3))  # never backwards
    rejected(Reason.OUT_OF_ORDER, lambda: Registry().advance(1))  # index 0 is the genesis
    sparse.advance(sparse.size)
    leaf = event(W2, T + 8 * DAY)
    sparse.check_event(sparse.size, leaf)
    sparse.advance(sparse.size + 10)
    sparse.apply(sparse.size, leaf)


def test_copy_is_independent() -> None:
    import copy
    log = Log()
    log.register(P256)
    log.write(P256, T)  # caches a cryptography verifier object inside the public key: deepcopy must cope
    for clone in (log.reg.copy(), copy.deepcopy(log.reg), copy.copy(log.reg)):
        before = log.reg.to_json()
        assert clone.to_json() == before
        clone.apply(clone.size, make_leaf(revoke_event(ORIGIN, T, P256.public_key.key_id), OP, T))
        assert log.reg.to_json() == before and clone.size == log.reg.size + 1
        assert clone.keys[P256.public_key.key_id].revoked_index is not None


def test_check_event_without_signature_verification() -> None:
    log = Log()
    log.register(W1)
    forged = event(W1, T, signer=W2)
    rejected(Reason.BAD_SIGNATURE, lambda: log.reg.check_event(log.reg.size, forged))
    assert log.reg.check_event(log.reg.size, forged, verify_signature=False).public_key == W1.public_key
    rejected(Reason.EXPIRED, lambda: log.reg.check_event(log.reg.size, event(W1, T + 31 * DAY),
                                                         verify_signature=False))


def test_apply_is_cheap_for_events() -> None:
    """Event entries only advance the size: the same leaf object can be applied many times over."""
    log = Log()
    log.register(W1)
    leaf = event(W1, T)
    before = log.reg.to_json()
    for i in range(log.reg.size, log.reg.size + 20000):
        log.reg.apply(i, leaf)
    assert log.reg.size == 20002
    assert {k: v for k, v in log.reg.to_json().items() if k != "size"} == \
        {k: v for k, v in before.items() if k != "size"}
