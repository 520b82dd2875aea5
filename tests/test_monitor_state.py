"""monitor.state (compare-and-swap heads, the alert outbox, restarts) and the follower on top of it, against an
in-process fake log built on the RFC 6962 oracle: restart keeps the head, never re-alerts, never accepts a
rollback; forks and freezes are classified and carry evidence that verifies offline."""

from __future__ import annotations

import asyncio
import io
import json
import os
import random

import pytest

from monitor.alerts import Alert, Alerter, Kind, Severity
from monitor.classify import Verdict
from monitor.follower import BadInput, Follower, LogConfig
from monitor.logapi import Refused, Unreachable
from monitor.metrics import Metrics
from monitor.state import AlertRow, MonitorState, Signed
from tests.oracle import Oracle, rfc_leaf_hash
from tlog.checkpoint import Checkpoint, sign_checkpoint
from tlog.errors import InvariantError
from tlog.evidence import EvidenceKind, verify_evidence
from tlog.note import Signer

ORIGIN = "example.com/monitored"
SIGNER = Signer.generate(ORIGIN, seed=bytes(range(32)))


def tree(prefix: str, n: int, common: int = 0) -> Oracle:
    return Oracle([rfc_leaf_hash(b"common %d" % i) for i in range(common)]
                  + [rfc_leaf_hash(f"{prefix} {i}".encode()) for i in range(n - common)])


def signed(t: Oracle, size: int, signer: Signer = SIGNER) -> Signed:
    note = sign_checkpoint(Checkpoint(ORIGIN, size, t.root(size)), signer)
    return Signed(Checkpoint(ORIGIN, size, t.root(size)), note)


# ---------------------------------------------------------------- state: compare-and-swap, restart, outbox

async def test_head_moves_forward_only_by_compare_and_swap(tmp_path):
    state = await MonitorState.open(str(tmp_path))
    try:
        t = tree("a", 50)
        await state.ensure_log(ORIGIN, SIGNER.to_vkey(), "http://log", 1)
        assert await state.advance_head(ORIGIN, None, signed(t, 3))
        assert not await state.advance_head(ORIGIN, None, signed(t, 4))  # stale "old": lost the race
        assert not await state.advance_head(ORIGIN, 2, signed(t, 4))
        assert await state.advance_head(ORIGIN, 3, signed(t, 10))
        for bad in (10, 9, 1):
            with pytest.raises(InvariantError):
                await state.advance_head(ORIGIN, 10, signed(t, bad))
        assert (await state.get_log(ORIGIN)).head.size == 10
    finally:
        await state.close()


async def test_concurrent_updates_never_move_backwards(tmp_path):
    """Many tasks on two connections (as two processes would be) race to advance the head: each reads the
    head, picks a larger size and tries the CAS.  Exactly the winners' sizes are ever stored, and the sequence
    of heads read by an observer never decreases."""
    t = tree("a", 300)
    s1, s2 = await MonitorState.open(str(tmp_path)), await MonitorState.open(str(tmp_path))
    try:
        await s1.ensure_log(ORIGIN, SIGNER.to_vkey(), "http://log", 1)
        rng = random.Random(7)
        won: list[int] = []
        seen: list[int] = []

        async def writer(state: MonitorState) -> None:
            for _ in range(15):
                head = (await state.get_log(ORIGIN)).head
                old = head.size if head else None
                new = (old or 0) + rng.randint(1, 3)
                if await state.advance_head(ORIGIN, old, signed(t, new)):
                    won.append(new)
                await asyncio.sleep(0)

        async def observer() -> None:
            for _ in range(60):
                head = (await s2.get_log(ORIGIN)).head
                seen.append(head.size if head else 0)
                await asyncio.sleep(0)

        await asyncio.gather(*(writer(s) for s in (s1, s2, s1, s2)), observer())
        assert won == sorted(won) and len(set(won)) == len(won)
        assert seen == sorted(seen)
        assert (await s1.get_log(ORIGIN)).head.size == won[-1]
    finally:
        await s1.close()
        await s2.close()


async def test_restart_keeps_head_and_alert_keys(tmp_path):
    t = tree("a", 9)
    state = await MonitorState.open(str(tmp_path))
    await state.ensure_log(ORIGIN, SIGNER.to_vkey(), "http://log", 1)
    await state.advance_head(ORIGIN, None, signed(t, 9))
    row = AlertRow("k1", "fork", "alert", ORIGIN, 5, '{"kind": "fork"}')
    assert await state.add_alert(row)
    assert not await state.add_alert(row)
    await state.close()
    state = await MonitorState.open(str(tmp_path))
    try:
        r = await state.ensure_log(ORIGIN, SIGNER.to_vkey(), "http://moved", 2)  # configuration changes, head stays
        assert r.head.size == 9 and r.head.root == t.root(9) and r.url == "http://moved" and r.added_ms == 1
        assert not await state.add_alert(row)
        assert [a.key for a in await state.undelivered_alerts()] == ["k1"]  # inserted, never delivered
        await state.mark_delivered("k1")
        assert await state.undelivered_alerts() == []
    finally:
        await state.close()


async def test_alerter_delivers_once_and_redelivers_after_a_crash(tmp_path):
    out = io.StringIO()
    alerts_file = str(tmp_path / "alerts.jsonl")
    state = await MonitorState.open(str(tmp_path / "st"))
    try:
        alerter = Alerter(state, alerts_file=alerts_file, out=out)
        alert = Alert(Kind.STALE, Severity.ALERT, ORIGIN, "frozen", "stale:x", 1_700_000_000_123)
        assert await alerter.raise_alert(alert)
        assert not await alerter.raise_alert(alert)
        line = json.loads(out.getvalue())
        assert line["kind"] == "stale" and line["time"] == "2023-11-14T22:13:20.123Z" and line["evidence"] is None
        # A crash after the outbox insert and before delivery: the next start delivers it.
        await state.add_alert(AlertRow("late", "rollback", "alert", ORIGIN, 7, '{"kind": "rollback"}'))
        await Alerter(state, alerts_file=alerts_file, out=out).deliver_pending()
        with open(alerts_file) as f:
            assert [json.loads(x)["kind"] for x in f] == ["stale", "rollback"]
    finally:
        await state.close()


async def test_webhook_gets_every_alert_and_is_retried(tmp_path):
    import aiohttp
    from aiohttp import web

    got: list[dict] = []
    fail = {"left": 1}

    async def hook(request: web.Request) -> web.Response:
        if fail["left"]:
            fail["left"] -= 1
            return web.Response(status=503)
        got.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    state = await MonitorState.open(str(tmp_path))
    async with aiohttp.ClientSession() as http:
        try:
            alerter = Alerter(state, webhook=f"http://{host}:{port}/hook", session=lambda: http, out=io.StringIO())
            for n in range(2):
                await alerter.raise_alert(Alert(Kind.FORK, Severity.ALERT, ORIGIN, "m", f"k{n}", n))
            await alerter.flush_webhooks()  # the first POST fails: the rest wait for the next round
            assert got == []
            await alerter.flush_webhooks()
            await alerter.flush_webhooks()
            assert [a["key"] for a in got] == ["k0", "k1"]
        finally:
            await state.close()
            await runner.cleanup()


# ---------------------------------------------------------------- the follower against a fake log

class FakeLog:
    """The three reads the follower makes, served from an oracle tree (replaceable to simulate attacks)."""

    def __init__(self, t: Oracle, size: int):
        self.tree, self.size, self.down = t, size, False

    def _check(self) -> None:
        if self.down:
            raise Unreachable("connection refused")

    async def checkpoint(self) -> bytes:
        self._check()
        return signed(self.tree, self.size).note

    async def consistency_proof(self, m: int, n: int) -> list[bytes]:
        self._check()
        if not 0 < m <= n <= self.size:
            raise Refused(400, f"second {n} is beyond the tree size {self.size}")
        return self.tree.proof(m, n)

    async def tree_root(self, size: int) -> bytes:
        self._check()
        return self.tree.root(size)


class Clock:
    def __init__(self) -> None:
        self.ms = 1_700_000_000_000

    def __call__(self) -> int:
        return self.ms


class Rig:
    def __init__(self, directory: str, log: FakeLog, clock: Clock):
        self.dir, self.log, self.clock, self.out = directory, log, clock, io.StringIO()

    async def __aenter__(self) -> Follower:
        self.state = await MonitorState.open(self.dir)
        alerter = Alerter(self.state, out=self.out)
        self.f = Follower(LogConfig(SIGNER.verifier(), SIGNER.to_vkey(), "http://fake"), self.state, self.log,
                          alerter, Metrics(), clock_ms=self.clock, stale_after_ms=10_000)  # type: ignore[arg-type]
        await self.f.start()
        return self.f

    async def __aexit__(self, *exc: object) -> None:
        await self.state.close()

    def alerts(self) -> list[dict]:
        return [json.loads(x) for x in self.out.getvalue().splitlines()]


def evidence_of(alert: dict):
    with open(alert["evidence"], "rb") as f:
        return verify_evidence(f.read(), SIGNER.verifier())


async def test_follow_restart_and_rollback(tmp_path):
    a = tree("a", 40)
    log, clock = FakeLog(a, 5), Clock()
    rig = Rig(str(tmp_path), log, clock)
    async with rig as f:
        assert await f.poll() is Verdict.NEW_CONSISTENT
        log.size = 17
        assert await f.poll() is Verdict.NEW_CONSISTENT
        assert await f.poll() is Verdict.OLD_SAME_HISTORY
        assert rig.alerts() == []
    log.size = 9  # restored from an older copy of its data
    rig = Rig(str(tmp_path), log, clock)
    async with rig as f:
        assert (await f.row()).head.size == 17  # the restart kept the head
        assert await f.poll() is Verdict.ROLLBACK
        assert await f.poll() is Verdict.ROLLBACK
        [alert] = rig.alerts()
        assert alert["kind"] == "rollback" and alert["details"] == {"served_size": 17, "size": 9,
                                                                    "evidence_kind": "rollback"}
        v = evidence_of(alert)
        assert v.kind is EvidenceKind.ROLLBACK and not v.proves_misbehaviour
        assert (await f.row()).head.size == 17
    rig = Rig(str(tmp_path), log, clock)
    async with rig as f:
        assert await f.poll() is Verdict.ROLLBACK
        assert rig.alerts() == []  # no re-alert after a restart, and the rollback was not accepted
        assert (await f.row()).head.size == 17


async def test_rolled_back_log_that_grows_again_is_a_proven_fork(tmp_path):
    a, b = tree("a", 40), tree("b", 40, common=9)
    log = FakeLog(a, 17)
    rig = Rig(str(tmp_path), log, Clock())
    async with rig as f:
        await f.poll()
        log.tree, log.size = b, 30  # restored to 9, then different entries appended
        assert await f.poll() is Verdict.FORK
        [alert] = rig.alerts()
        v = evidence_of(alert)
        assert v.kind is EvidenceKind.FORK_PREFIX and v.proves_misbehaviour
        assert (await f.row()).head.size == 17


@pytest.mark.parametrize("peer_size,kind", [(12, EvidenceKind.FORK_SAME_SIZE), (8, EvidenceKind.FORK_PREFIX),
                                            (16, EvidenceKind.FORK_UNPROVEN)])
async def test_split_view_seen_through_gossip(tmp_path, peer_size, kind):
    """This monitor follows history A (size 12); a peer was shown history B (same key, 5 leaves in common)."""
    a, b = tree("a", 40, common=5), tree("b", 40, common=5)
    rig = Rig(str(tmp_path), FakeLog(a, 12), Clock())
    async with rig as f:
        await f.poll()
        verdict, _, cp = await f.consider_peer(signed(b, peer_size).note, "http://peer")
        assert verdict is Verdict.FORK and cp.size == peer_size
        [alert] = rig.alerts()
        assert alert["kind"] == "fork" and alert["details"]["proven"] is kind.proves_misbehaviour
        v = evidence_of(alert)
        assert v.kind is kind
        assert (await f.row()).head.size == 12  # a fork never moves the head
        # The same pair again (or after a restart) raises nothing new.
        await f.consider_peer(signed(b, peer_size).note, "http://peer")
        assert len(rig.alerts()) == 1


async def test_peer_checkpoints_on_the_same_history_are_fine(tmp_path):
    a = tree("a", 40)
    log = FakeLog(a, 12)
    rig = Rig(str(tmp_path), log, Clock())
    async with rig as f:
        await f.poll()
        assert (await f.consider_peer(signed(a, 7).note, "p"))[0] is Verdict.OLD_SAME_HISTORY
        assert (await f.consider_peer(signed(a, 12).note, "p"))[0] is Verdict.OLD_SAME_HISTORY
        log.size = 20  # the peer saw a newer checkpoint than this monitor did
        assert (await f.consider_peer(signed(a, 20).note, "p"))[0] is Verdict.OLD_SAME_HISTORY  # polled first
        assert (await f.row()).head.size == 20
        log.size = 25
        log.down = True  # the proof cannot be fetched: undecided, nothing alerted, head unchanged
        assert (await f.consider_peer(signed(a, 25).note, "p"))[0] is Verdict.UNDECIDED
        log.down = False
        assert (await f.consider_peer(signed(a, 25).note, "p"))[0] is Verdict.OLD_SAME_HISTORY
        with pytest.raises(BadInput):
            await f.consider_peer(signed(a, 30, Signer.generate(ORIGIN, seed=bytes(32))).note, "p")
        with pytest.raises(BadInput):
            await f.consider_peer(b"not a note", "p")
        assert rig.alerts() == [] and await f.state.checkpoint_count(ORIGIN) == 4  # 12, 7, 20, 25


async def test_peer_head_ahead_of_the_log_is_withholding(tmp_path):
    """The log signed size 20 (a peer has it, the log proves it) but keeps serving 12 to this monitor."""
    a = tree("a", 40)
    log, clock = FakeLog(a, 20), Clock()  # proofs come from the real tree of size 20 ...
    log.checkpoint = FakeLog(a, 12).checkpoint  # type: ignore[method-assign]  # ... but /checkpoint says 12
    rig = Rig(str(tmp_path), log, clock)
    async with rig as f:
        await f.poll()
        assert (await f.consider_peer(signed(a, 20).note, "p"))[0] is Verdict.NEW_CONSISTENT
        await f.poll()
        await f.check_freshness()
        assert rig.alerts() == [] and (await f.row()).behind_since_ms == clock.ms
        clock.ms += 10_001
        await f.poll()
        await f.check_freshness()
        [alert] = rig.alerts()
        assert alert["kind"] == "stale" and alert["details"]["reason"] == "withholding"


async def test_freeze_alerts_once_across_restarts_then_recovers(tmp_path):
    a = tree("a", 40)
    log, clock = FakeLog(a, 5), Clock()
    rig = Rig(str(tmp_path), log, clock)
    async with rig as f:
        await f.poll()
        log.down = True
        clock.ms += 5_000
        assert await f.poll() is None
        await f.check_freshness()
        assert rig.alerts() == []
        clock.ms += 6_000
        await f.check_freshness()
        [alert] = rig.alerts()
        assert alert["kind"] == "stale" and alert["details"]["reason"] == "unreachable"
    rig = Rig(str(tmp_path), log, clock)
    async with rig as f:
        clock.ms += 60_000
        await f.poll()
        await f.check_freshness()
        assert rig.alerts() == []  # the same episode: not raised again after a restart
        log.down = False
        await f.poll()
        await f.check_freshness()
        assert [x["kind"] for x in rig.alerts()] == ["recovered"]
        log.down = True  # a second episode is a new alert
        clock.ms += 10_001
        await f.poll()
        await f.check_freshness()
        assert [x["kind"] for x in rig.alerts()] == ["recovered", "stale"]


async def test_evidence_from_a_peer_is_adopted_only_if_it_proves_a_fork(tmp_path):
    from tlog.evidence import Evidence

    a, b = tree("a", 40, common=3), tree("b", 40, common=3)
    rig = Rig(str(tmp_path), FakeLog(a, 9), Clock())
    async with rig as f:
        await f.poll()
        proven = Evidence(EvidenceKind.FORK_SAME_SIZE, ORIGIN, SIGNER.to_vkey(), signed(a, 7).note, signed(b, 7).note)
        assert await f.adopt_evidence(proven.encode(), "p")
        assert not await f.adopt_evidence(proven.encode(), "p")
        assert [x["kind"] for x in rig.alerts()] == ["fork"]
        assert await f.state.proven_evidence(ORIGIN) == [proven.encode()]
        rollback = Evidence(EvidenceKind.ROLLBACK, ORIGIN, SIGNER.to_vkey(), signed(a, 9).note, signed(a, 7).note)
        tampered = proven.to_json()
        tampered["checkpoints"].reverse()
        tampered["checkpoints"][0] = tampered["checkpoints"][1]
        for bad in (rollback.encode(), json.dumps(tampered).encode(), b"{}"):
            with pytest.raises(BadInput):
                await f.adopt_evidence(bad, "p")
        assert len(rig.alerts()) == 1
        assert os.path.exists(rig.alerts()[0]["evidence"])


# ---------------------------------------------------------------- --watch-entries against a fake log

class EntryLog(FakeLog):
    """A fake log of real leaves that also serves entry bundles."""

    def __init__(self, leaves: list[bytes]):
        self.leaves = leaves
        super().__init__(Oracle([rfc_leaf_hash(x) for x in leaves]), len(leaves))

    async def tile(self, tile) -> bytes:
        from tlog.tiles import encode_entry_bundle

        self._check()
        start = tile.index * 256
        return encode_entry_bundle(self.leaves[start:start + tile.width])


def _entry_leaves(n_events: int, t: int) -> list[bytes]:
    """Genesis, one writer key (valid 10 days), ``n_events`` events by it: real leaves of ORIGIN."""
    from tlog.entry import EventEntry, Genesis, Leaf, payload_commitment, register_event, sign_entry
    from tlog.keys import PrivateKey

    op, w = PrivateKey.from_ed25519_seed(bytes(32)), PrivateKey.from_ed25519_seed(bytes([1]) * 32)

    def leaf(entry, signer, when: int) -> bytes:
        return Leaf(entry.encode(), sign_entry(entry, signer), when).encode()

    events = [EventEntry(ORIGIN, w.public_key.key_id, t + i, payload_commitment(bytes(16), b"%d" % i))
              for i in range(n_events)]
    return [leaf(Genesis(ORIGIN, op.public_key, t), op, t),
            leaf(register_event(ORIGIN, t, w.public_key, "w1", t, t + 10 * 86_400_000), op, t),
            *(leaf(e, w, e.timestamp_ms) for e in events)]


async def test_entry_watcher_checks_every_entry_and_survives_a_restart(tmp_path):
    from monitor.watch import EntryWatcher

    clock = Clock()
    leaves = _entry_leaves(300, clock.ms)  # more than one entry bundle
    log = EntryLog(leaves[:150])
    rig = Rig(str(tmp_path), log, clock)
    async with rig as f:
        await f.poll()
        w = EntryWatcher(f, expiry_warning_days=5)
        assert await w.step()
        assert [a["kind"] for a in rig.alerts()] == ["key-event"]
    log.leaves, log.tree, log.size = leaves, Oracle([rfc_leaf_hash(x) for x in leaves]), len(leaves)
    rig = Rig(str(tmp_path), log, clock)
    async with rig as f:
        w = EntryWatcher(f, expiry_warning_days=30)  # the registry comes back from the state
        await f.poll()
        assert await w.step() and not await w.step()
        assert [a["kind"] for a in rig.alerts()] == ["key-expiring"]  # no re-notice, no "unknown key"
        size, _, operator = await f.state.watch_progress(ORIGIN)
        assert size == len(leaves) and [i for i, _ in operator] == [0, 1]


async def test_entry_watcher_catches_entries_that_do_not_match_the_signed_root(tmp_path):
    from monitor.watch import EntryWatcher

    clock = Clock()
    leaves = _entry_leaves(5, clock.ms)
    log = EntryLog(leaves)
    rig = Rig(str(tmp_path), log, clock)
    async with rig as f:
        await f.poll()
        log.leaves = leaves[:4] + [leaves[5], leaves[4]] + leaves[6:]  # two entries swapped in the bundle
        w = EntryWatcher(f)
        assert not await w.step() and not await w.step()
        assert [a["kind"] for a in rig.alerts()] == ["entries-mismatch"]
        assert (await f.state.watch_progress(ORIGIN))[0] == 0  # nothing committed


async def test_gossip_survives_a_peer_that_sends_deeply_nested_json(tmp_path):
    """A peer answering /gossip with JSON nested deeper than the parser's stack is a failed exchange
    with that peer (counted, said once), not a crash of the gossip round."""
    import aiohttp
    from aiohttp import web

    from monitor.gossip import Gossip

    nested = b"[" * 100_000 + b"]" * 100_000

    async def deep(request: web.Request) -> web.Response:
        return web.Response(body=nested, content_type="application/json")

    app = web.Application()
    app.router.add_get("/gossip", deep)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    metrics = Metrics()
    try:
        async with aiohttp.ClientSession() as session:
            gossip = Gossip({}, [f"http://127.0.0.1:{port}"], lambda: session, metrics)
            await gossip.round()
            await gossip.round()
    finally:
        await runner.cleanup()
    assert metrics.gossip_errors.labels(f"http://127.0.0.1:{port}")._value.get() == 2


@pytest.mark.parametrize("status", [200, 400])
async def test_a_log_answering_deeply_nested_json_is_a_format_error_or_a_refusal(status):
    """A consistency proof answer (or a refusal's reason) nested deeper than the parser's stack is a
    bad answer from the log, not an exception that ends the monitor's poll."""
    import aiohttp
    from aiohttp import web

    from monitor.logapi import LogAPI
    from tlog.errors import FormatError

    nested = b"[" * 30_000 + b"]" * 30_000  # under the 64 KB answer limit

    async def deep(request: web.Request) -> web.Response:
        return web.Response(body=nested, status=status, content_type="application/json")

    app = web.Application()
    app.router.add_get("/v1/proofs/consistency", deep)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        async with aiohttp.ClientSession() as session:
            api = LogAPI(f"http://127.0.0.1:{runner.addresses[0][1]}", lambda: session)
            with pytest.raises(FormatError if status == 200 else Refused):
                await api.consistency_proof(1, 2)
    finally:
        await runner.cleanup()
