"""monitor.classify (the classification table and the freshness rule, spec/monitor.md §2) and
monitor.entries (judging entries for --watch-entries, §3): pure, table-driven, every case."""

from __future__ import annotations

import itertools

import pytest

from monitor.classify import (TABLE, Freshness, Observation, ProofOutcome, Relation, Source, StaleReason, Verdict,
                              classify, classify_freshness, consistency_range, relation_of)
from monitor.entries import DAY_MS, EntryChecker
from tlog.checkpoint import Checkpoint
from tlog.entry import (Entry, Erasure, EventEntry, Genesis, Leaf, payload_commitment, register_event, revoke_event,
                        rotate_event, sign_entry)
from tlog.keys import PrivateKey

L, P = Source.LOG, Source.PEER
F = ProofOutcome


def obs(relation: Relation, source: Source = L, *, sig: bool = True, below: bool = False, conflict: bool = False,
        proof: ProofOutcome = F.NOT_FETCHED) -> Observation:
    return Observation(sig, relation, source, below, conflict, proof)


CASES = [
    # (observation, verdict) -- one line per case of spec/monitor.md §2.1
    (obs(Relation.LARGER, sig=False), Verdict.BAD_SIGNATURE),
    (obs(Relation.EQUAL, P, sig=False, conflict=True), Verdict.BAD_SIGNATURE),
    (obs(Relation.FIRST), Verdict.NEW_CONSISTENT),
    (obs(Relation.FIRST, P), Verdict.NEW_CONSISTENT),
    (obs(Relation.EQUAL), Verdict.OLD_SAME_HISTORY),
    (obs(Relation.EQUAL, P), Verdict.OLD_SAME_HISTORY),
    (obs(Relation.EQUAL_OTHER_ROOT), Verdict.FORK),
    (obs(Relation.EQUAL_OTHER_ROOT, P), Verdict.FORK),
    (obs(Relation.SMALLER, conflict=True), Verdict.FORK),
    (obs(Relation.SMALLER, below=True, conflict=True), Verdict.FORK),  # a conflict beats a rollback
    (obs(Relation.LARGER, P, conflict=True, proof=F.VERIFIED), Verdict.FORK),
    (obs(Relation.SMALLER, L, below=True), Verdict.ROLLBACK),
    (obs(Relation.SMALLER, L, below=False), Verdict.NEEDS_PROOF),  # the head came from a peer
    (obs(Relation.SMALLER, P, below=True), Verdict.NEEDS_PROOF),  # "below served" is about the log's own answers
    (obs(Relation.LARGER), Verdict.NEEDS_PROOF),
    (obs(Relation.LARGER, proof=F.VERIFIED), Verdict.NEW_CONSISTENT),
    (obs(Relation.LARGER, P, proof=F.VERIFIED), Verdict.NEW_CONSISTENT),
    (obs(Relation.SMALLER, P, proof=F.VERIFIED), Verdict.OLD_SAME_HISTORY),
    (obs(Relation.SMALLER, L, proof=F.VERIFIED), Verdict.OLD_SAME_HISTORY),
    (obs(Relation.LARGER, proof=F.FAILED), Verdict.FORK),
    (obs(Relation.SMALLER, P, proof=F.FAILED), Verdict.FORK),
    (obs(Relation.LARGER, P, proof=F.UNAVAILABLE), Verdict.UNDECIDED),
    (obs(Relation.SMALLER, L, proof=F.UNAVAILABLE), Verdict.UNDECIDED),
]


@pytest.mark.parametrize("observation,verdict", CASES, ids=[f"{i}-{v.value}" for i, (_, v) in enumerate(CASES)])
def test_classification_table(observation, verdict):
    assert classify(observation)[0] is verdict


def test_table_is_exhaustive_and_two_phase():
    """Every observation has a verdict; NEEDS_PROOF only before the proof is fetched and only when the sizes
    differ; STALE comes only from the freshness rule."""
    for sig, rel, src, below, conflict, proof in itertools.product(
            (True, False), Relation, Source, (True, False), (True, False), ProofOutcome):
        verdict, reason = classify(Observation(sig, rel, src, below, conflict, proof))
        assert reason
        assert verdict is not Verdict.STALE
        if verdict is Verdict.NEEDS_PROOF:
            assert proof is F.NOT_FETCHED and rel in (Relation.LARGER, Relation.SMALLER)
        if proof is not F.NOT_FETCHED and rel in (Relation.LARGER, Relation.SMALLER) and sig and not conflict:
            assert verdict is not Verdict.NEEDS_PROOF
    assert len({row.verdict for row in TABLE}) == len(Verdict) - 1  # every verdict but STALE has a row


def cp(size: int, root: int = 0) -> Checkpoint:
    return Checkpoint("example.com/log", size, bytes([root]) * 32)


def test_relation_and_consistency_range():
    assert relation_of(cp(5), None) is Relation.FIRST
    assert relation_of(cp(5), cp(5)) is Relation.EQUAL
    assert relation_of(cp(5, 1), cp(5)) is Relation.EQUAL_OTHER_ROOT
    assert relation_of(cp(6), cp(5)) is Relation.LARGER
    assert relation_of(cp(4), cp(5)) is Relation.SMALLER
    assert consistency_range(cp(9), cp(4)) == (4, 9) == consistency_range(cp(4), cp(9))
    assert consistency_range(cp(0), cp(3)) == (0, 3)  # nothing is fetched from 0: only the empty root is checked
    with pytest.raises(AssertionError):
        consistency_range(cp(3), cp(3, 1))


# ---------------------------------------------------------------- freshness

S = 10_000  # stale-after, ms


@pytest.mark.parametrize("fresh,expect", [
    (Freshness(100_000, 95_000, None, 0, S), None),                       # idle but answering: fresh
    (Freshness(100_000, 90_000, None, 0, S), None),                       # exactly at the limit: fresh
    (Freshness(100_000, 89_999, None, 0, S), (StaleReason.UNREACHABLE, 89_999)),
    (Freshness(100_000, 99_000, 95_000, 0, S), None),                     # behind, not for long
    (Freshness(100_000, 99_000, 80_000, 0, S), (StaleReason.WITHHOLDING, 80_000)),
    (Freshness(100_000, 50_000, 80_000, 0, S), (StaleReason.UNREACHABLE, 50_000)),  # first rule wins
    (Freshness(100_000, 99_000, None, 0, S, max_idle_ms=60_000), (StaleReason.IDLE, 0)),
    (Freshness(100_000, 99_000, None, 50_000, S, max_idle_ms=60_000), None),
])
def test_freshness_rule(fresh, expect):
    assert classify_freshness(fresh) == expect


# ---------------------------------------------------------------- entries (--watch-entries)

ORIGIN = "example.com/log"
OP = PrivateKey.from_ed25519_seed(bytes(32))
W1, W2, W3 = (PrivateKey.from_ed25519_seed(bytes([i]) * 32) for i in (1, 2, 3))
T = 1_700_000_000_000
COMMIT = payload_commitment(bytes(16), b"payload")


def leaf(entry: Entry, signer: PrivateKey, t: int = T) -> bytes:
    return Leaf(entry.encode(), sign_entry(entry, signer), t).encode()


def ev(writer: PrivateKey, t: int = T + 1000, signer: PrivateKey | None = None) -> bytes:
    return leaf(EventEntry(ORIGIN, writer.public_key.key_id, t, COMMIT), signer or writer, t)


def test_entry_checker_reports_key_events_and_bad_entries():
    c = EntryChecker(ORIGIN)
    leaves = [
        leaf(Genesis(ORIGIN, OP.public_key, T), OP),                                                  # 0
        leaf(register_event(ORIGIN, T, W1.public_key, "billing", T, T + 30 * DAY_MS), OP),           # 1 notice
        ev(W1),                                                                                       # 2 fine
        ev(W2),                                                                                       # 3 unknown key
        ev(W1, signer=W2),                                                                            # 4 bad signature
        leaf(rotate_event(ORIGIN, T, W1.public_key.key_id, W2.public_key, "billing", T, T + 20 * DAY_MS,
                          T + 2000), OP),                                                             # 5 notice
        ev(W2, T + 3000),                                                                             # 6 fine
        ev(W1, T + 3000),                                                                             # 7 retired
        leaf(revoke_event(ORIGIN, T, W2.public_key.key_id), OP),                                     # 8 notice
        ev(W2, T + 4000),                                                                             # 9 revoked
        leaf(register_event(ORIGIN, T, W3.public_key, "x", T, T + DAY_MS), W3),                      # 10 not by OP
        b"\x01garbage",                                                                               # 11 not a leaf
        leaf(Erasure(ORIGIN, 2, "GDPR", T), OP),                                                      # 12 notice
        ev(W1, T + 500),                                                                              # 13 fine: before
    ]                                                                                                 # W1 retires
    found = {i: c.feed(i, raw) for i, raw in enumerate(leaves)}
    kinds = {i: [(f.kind, f.severity) for f in fs] for i, fs in found.items()}
    assert kinds[0] == kinds[2] == kinds[6] == kinds[13] == []
    for i in (1, 5, 8, 12):
        assert kinds[i] == [("key-event", "notice")], i
    assert found[1][0].details["action"] == "register" and "billing" in found[1][0].message
    assert found[5][0].details["action"] == "rotate" and found[8][0].details["action"] == "revoke"
    for i, reason in ((3, "unknown key"), (4, "bad signature"), (7, "expired"), (9, "revoked")):
        assert kinds[i] == [("bad-entry", "alert")], i
        assert found[i][0].details["reason"] == reason, (i, found[i][0].message)
        assert "not valid at that point" in found[i][0].message
    assert kinds[10] == [("bad-entry", "alert")] and "invalid operator entry" in found[10][0].message
    assert kinds[11] == [("bad-entry", "alert")] and "not a valid leaf" in found[11][0].message
    assert c.registry.size == len(leaves)
    assert [i for i, _ in c.take_applied()] == [0, 1, 5, 8, 12] and c.take_applied() == []
    keys = {f.key for fs in found.values() for f in fs}
    assert len(keys) == sum(len(fs) for fs in found.values())  # every finding has its own dedup key


def test_entry_checker_warns_before_keys_end():
    c = EntryChecker(ORIGIN)
    c.feed(0, leaf(Genesis(ORIGIN, OP.public_key, T), OP))
    c.feed(1, leaf(register_event(ORIGIN, T, W1.public_key, "soon", T, T + 10 * DAY_MS), OP))
    c.feed(2, leaf(register_event(ORIGIN, T, W2.public_key, "later", T, T + 100 * DAY_MS), OP))
    c.feed(3, leaf(register_event(ORIGIN, T, W3.public_key, "gone", T, T + 5 * DAY_MS), OP))
    c.feed(4, leaf(revoke_event(ORIGIN, T, W3.public_key.key_id), OP))
    warnings = c.expiring(T, 30 * DAY_MS)
    assert [(w.kind, w.severity, w.details["name"]) for w in warnings] == [("key-expiring", "warning", "soon")]
    assert c.expiring(T + 11 * DAY_MS, 30 * DAY_MS) == []  # already ended: nothing to rotate in time
    assert [w.details["name"] for w in c.expiring(T, 120 * DAY_MS)] == ["soon", "later"]
