"""What a checkpoint means for the log that signed it: the monitor's classification table (spec/monitor.md §2).

Pure and table-driven: no I/O, no clock (times are passed in).  The follower describes what it saw as an
:class:`Observation` and :func:`classify` returns the :class:`Verdict` of the first matching row of
:data:`TABLE`.  Classification runs in two phases, like the proof code: a first call may answer
``NEEDS_PROOF`` (with :func:`consistency_range` naming the sizes); the follower fetches and verifies the
consistency proof from the log and classifies again with the :class:`ProofOutcome`.

Freshness (freeze detection) is a second, separate table: :func:`classify_freshness`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import Any

from tlog.checkpoint import Checkpoint
from tlog.errors import InvariantError

__all__ = [
    "Verdict",
    "Source",
    "Relation",
    "ProofOutcome",
    "Observation",
    "TABLE",
    "classify",
    "relation_of",
    "consistency_range",
    "Freshness",
    "StaleReason",
    "classify_freshness",
]


class Verdict(enum.StrEnum):
    """The meaning of one checkpoint (spec/monitor.md §2.1)."""

    NEW_CONSISTENT = "new-consistent"      # larger than the head and proved consistent with it (or the first)
    OLD_SAME_HISTORY = "old-same-history"  # not larger, and on the head's history (equal, or proved)
    FORK = "fork"                          # same size with another root, or no valid consistency proof
    ROLLBACK = "rollback"                  # the log's own checkpoint went backwards
    BAD_SIGNATURE = "bad-signature"        # not a checkpoint of this log signed by its key
    STALE = "stale"                        # freeze: see classify_freshness
    NEEDS_PROOF = "needs-proof"            # phase one only: fetch the consistency proof, then classify again
    UNDECIDED = "undecided"                # the proof could not be fetched (network, 5xx): try again later


class Source(enum.StrEnum):
    """Where the checkpoint came from."""

    LOG = "log"    # the log's own /checkpoint, polled by this monitor
    PEER = "peer"  # a peer monitor (gossip push or pull)


class Relation(enum.StrEnum):
    """The checkpoint compared with the monitor's verified head (the largest verified checkpoint)."""

    FIRST = "first"              # no head yet
    EQUAL = "equal"              # same size, same root
    EQUAL_OTHER_ROOT = "equal-other-root"
    LARGER = "larger"
    SMALLER = "smaller"


class ProofOutcome(enum.StrEnum):
    """The consistency proof between the checkpoint and the head, as the log served it."""

    NOT_FETCHED = "not-fetched"
    VERIFIED = "verified"
    FAILED = "failed"            # the log answered with a proof that does not verify, or refused (4xx)
    UNAVAILABLE = "unavailable"  # network error, timeout, 5xx: says nothing about the log's honesty


@dataclass(frozen=True)
class Observation:
    """Everything the table looks at.

    ``below_served``: the checkpoint came from the log itself and is smaller than the largest checkpoint the
    log itself served this monitor before.  ``same_size_conflict``: the monitor stored (verified) a checkpoint
    of the same size with another root before.
    """

    signature_ok: bool
    relation: Relation = Relation.FIRST
    source: Source = Source.LOG
    below_served: bool = False
    same_size_conflict: bool = False
    proof: ProofOutcome = ProofOutcome.NOT_FETCHED


_ANY = None


@dataclass(frozen=True)
class Row:
    """One row of the table: the fields that must match (unset = any), the verdict and why."""

    verdict: Verdict
    reason: str
    signature_ok: bool | None = _ANY
    relation: frozenset[Relation] | None = _ANY
    source: Source | None = _ANY
    below_served: bool | None = _ANY
    same_size_conflict: bool | None = _ANY
    proof: frozenset[ProofOutcome] | None = _ANY

    def matches(self, obs: Observation) -> bool:
        for f in fields(Observation):
            want: Any = getattr(self, f.name)
            have = getattr(obs, f.name)
            if want is _ANY:
                continue
            if isinstance(want, frozenset) and have not in want:
                return False
            if not isinstance(want, frozenset) and have != want:
                return False
        return True


def _set(*values: Any) -> frozenset[Any]:
    return frozenset(values)


_MOVED = _set(Relation.LARGER, Relation.SMALLER)

#: First match wins.  Every Observation matches some row (the last rows are exhaustive over ``proof``).
TABLE: tuple[Row, ...] = (
    Row(Verdict.BAD_SIGNATURE, "the note is not a checkpoint of this log signed by its key", signature_ok=False),
    Row(Verdict.FORK, "a checkpoint of the same size with another root was verified before",
        same_size_conflict=True),
    Row(Verdict.FORK, "same size as the head, different root", relation=_set(Relation.EQUAL_OTHER_ROOT)),
    Row(Verdict.NEW_CONSISTENT, "first checkpoint of this log (trusted on first use)",
        relation=_set(Relation.FIRST)),
    Row(Verdict.OLD_SAME_HISTORY, "same size and root as the head", relation=_set(Relation.EQUAL)),
    Row(Verdict.ROLLBACK, "the log served a smaller checkpoint than it served this monitor before",
        relation=_set(Relation.SMALLER), source=Source.LOG, below_served=True),
    Row(Verdict.NEEDS_PROOF, "sizes differ: a consistency proof is needed", relation=_MOVED,
        proof=_set(ProofOutcome.NOT_FETCHED)),
    Row(Verdict.UNDECIDED, "the consistency proof could not be fetched", proof=_set(ProofOutcome.UNAVAILABLE)),
    Row(Verdict.NEW_CONSISTENT, "larger than the head, consistency proved", relation=_set(Relation.LARGER),
        proof=_set(ProofOutcome.VERIFIED)),
    Row(Verdict.OLD_SAME_HISTORY, "smaller than the head, consistency proved", relation=_set(Relation.SMALLER),
        proof=_set(ProofOutcome.VERIFIED)),
    Row(Verdict.FORK, "the log gave no valid consistency proof between the two sizes",
        proof=_set(ProofOutcome.FAILED)),
)


def classify(obs: Observation) -> tuple[Verdict, str]:
    """The verdict and reason of the first row of :data:`TABLE` that matches ``obs``."""
    for row in TABLE:
        if row.matches(obs):
            return row.verdict, row.reason
    raise InvariantError(f"no classification row matches {obs}")  # the table is exhaustive


def relation_of(cp: Checkpoint, head: Checkpoint | None) -> Relation:
    """How ``cp`` compares with the verified ``head``."""
    if head is None:
        return Relation.FIRST
    if cp.size == head.size:
        return Relation.EQUAL if cp.root == head.root else Relation.EQUAL_OTHER_ROOT
    return Relation.LARGER if cp.size > head.size else Relation.SMALLER


def consistency_range(cp: Checkpoint, head: Checkpoint) -> tuple[int, int]:
    """The (first, second) sizes of the consistency proof that relates ``cp`` and ``head`` (RFC 9162
    §2.1.4).  ``first`` may be 0: then nothing is fetched, since the empty tree is a prefix of every tree
    and only its root (SHA-256 of nothing) needs checking."""
    m, n = sorted((cp.size, head.size))
    if m == n:
        raise InvariantError(f"no consistency proof is needed between sizes {m} and {n}")
    return m, n


# ---------------------------------------------------------------- freshness

class StaleReason(enum.StrEnum):
    UNREACHABLE = "unreachable"  # the log has not answered with a valid checkpoint
    WITHHOLDING = "withholding"  # the log serves a smaller checkpoint than one it signed (seen via gossip)
    IDLE = "idle"                # the log's checkpoint has not changed (only with --max-idle)


@dataclass(frozen=True)
class Freshness:
    """Times in milliseconds.  ``last_answer_ms``: the last time the log answered /checkpoint with a note its
    key signed (or when the log was added to the monitor); ``behind_since_ms``: since when the log's own
    checkpoint has been smaller than the verified head (None if it is not); ``last_change_ms``: when the
    checkpoint the log serves last changed."""

    now_ms: int
    last_answer_ms: int
    behind_since_ms: int | None
    last_change_ms: int
    stale_after_ms: int
    max_idle_ms: int | None = None


def classify_freshness(f: Freshness) -> tuple[StaleReason, int] | None:
    """None if the log is fresh; else why it is stale and since when (the start of the episode, which
    names the alert so that a restart does not raise it again).  First match wins."""
    rules: tuple[tuple[StaleReason, int | None, int | None], ...] = (
        (StaleReason.UNREACHABLE, f.last_answer_ms, f.stale_after_ms),
        (StaleReason.WITHHOLDING, f.behind_since_ms, f.stale_after_ms),
        (StaleReason.IDLE, f.last_change_ms, f.max_idle_ms),
    )
    for reason, since, limit in rules:
        if since is not None and limit is not None and f.now_ms - since > limit:
            return reason, since
    return None
