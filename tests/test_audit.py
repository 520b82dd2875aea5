"""The offline auditor (tlog/audit.py, spec/audit.md): receipts and whole logs, built in memory and
written as export directories; every named mutation must be found and located."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import tracemalloc

import pytest

from tests.logbuilder import T0, LogBuilder, seeded_key
from tlog.audit import RegistryBundle, WitnessPolicy, verify_receipt
from tlog.logaudit import AuditReport, run_audit
from tlog.cosignature import generate_cosigner
from tlog.entry import EventEntry, Leaf, RegisterKey, payload_commitment, sign_entry
from tlog.errors import FormatError
from tlog.export import DirSource, decode_payload_records, encode_payload_records
from tlog.note import Verifier, add_signatures
from tlog.tiles import Tile
from tlog.tlogproof import TlogProof

WRITER, OTHER = seeded_key(1), seeded_key(2)


def audit(path, vkey: str, jobs: int = 2) -> AuditReport:
    return asyncio.run(run_audit(DirSource(str(path)), Verifier.from_vkey(vkey), jobs=jobs))


def small_log(events: int = 300) -> LogBuilder:
    b = LogBuilder()
    b.register(WRITER, "billing")
    b.events(WRITER, events)
    return b


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def flip(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def bundle_offset(path: str, position: int) -> int:
    """Byte offset of entry ``position``'s data inside an entry bundle."""
    data = read(path)
    pos = 0
    for _ in range(position):
        pos += 2 + int.from_bytes(data[pos:pos + 2], "big")
    return pos + 2


# ---------------------------------------------------------------------------------------------- receipts

@pytest.fixture(scope="module")
def receipt_log(tmp_path_factory):
    b = small_log(5)
    out = str(tmp_path_factory.mktemp("receipt-log"))
    b.write(out)
    return b, out


def test_receipt_ok_with_writer_key(receipt_log):
    b, out = receipt_log
    v = verify_receipt(b.receipt(out, 3), log_verifier=Verifier.from_vkey(b.vkey), writer_key=WRITER.public_key)
    assert v.ok and v.index == 3 and v.tree_size == 7
    assert v.line().startswith("OK: entry 3 is in example.com/audit-test at tree size 7; checked: checkpoint "
                               "signature, inclusion proof, provisioning signature")


def test_receipt_with_registry_payload_and_salt(receipt_log):
    b, out = receipt_log
    bundle = RegistryBundle.parse(read(os.path.join(out, "registry.json")))
    salt, payload = b.payloads[4]
    v = verify_receipt(b.receipt(out, 4), log_verifier=Verifier.from_vkey(b.vkey), registry=bundle,
                       payload=payload, salt=salt)
    assert v.ok and "payload commitment" in v.passed and any("key 'billing'" in p for p in v.passed)
    v = verify_receipt(b.receipt(out, 4), log_verifier=Verifier.from_vkey(b.vkey), registry=bundle,
                       payload=payload + b" ", salt=salt)
    assert (v.failed, v.reason) == ("payload commitment", "the payload and salt do not match the entry's commitment")


@pytest.mark.parametrize("mutation, check", [
    ("other log key", "checkpoint signature"),
    ("proof hash", "inclusion proof"),
    ("wrong writer", "provisioning signature"),
    ("truncated", "receipt format"),
    ("other index", "inclusion proof"),
])
def test_receipt_mutations(receipt_log, mutation, check):
    b, out = receipt_log
    raw = b.receipt(out, 3)
    tp = TlogProof.parse(raw)
    log_key, writer = Verifier.from_vkey(b.vkey), WRITER.public_key
    if mutation == "other log key":
        log_key = Verifier.from_vkey(LogBuilder(signer=__import__("tlog.note").note.Signer.generate(
            "example.com/audit-test")).vkey)
    elif mutation == "proof hash":
        raw = TlogProof(tp.index, [bytes(32)] + list(tp.proof[1:]), tp.checkpoint_note, tp.extra).format()
    elif mutation == "wrong writer":
        writer = OTHER.public_key
    elif mutation == "truncated":
        raw = raw[:40]
    elif mutation == "other index":
        raw = TlogProof(tp.index + 1, tp.proof, tp.checkpoint_note, tp.extra).format()
    v = verify_receipt(raw, log_verifier=log_key, writer_key=writer)
    assert not v.ok and v.failed == check, v
    assert v.line().startswith(f"FAILED ({check}): ")


def test_receipt_judged_by_a_registry_where_the_key_was_later_compromised(tmp_path):
    b = small_log(3)
    b.revoke(WRITER, compromised_since=T0)  # every entry of the key is untrusted now
    b.write(str(tmp_path))
    bundle = RegistryBundle.parse((tmp_path / "registry.json").read_bytes())
    v = verify_receipt(b.receipt(str(tmp_path), 2), log_verifier=Verifier.from_vkey(b.vkey), registry=bundle)
    assert v.failed == "key registry" and "compromised" in v.reason


def test_receipt_newer_than_the_registry(tmp_path, receipt_log):
    b, out = receipt_log
    old = RegistryBundle.parse(read(os.path.join(out, "registry.json")))
    b2 = small_log(10)
    b2.write(str(tmp_path))
    v = verify_receipt(b2.receipt(str(tmp_path), 9), log_verifier=Verifier.from_vkey(b2.vkey), registry=old)
    assert v.failed == "registry" and "export the registry again" in v.reason


def test_registry_bundle_with_a_bad_proof_is_refused(receipt_log):
    b, out = receipt_log
    obj = json.loads(read(os.path.join(out, "registry.json")))
    obj["entries"][1]["proof"][0] = base64.b64encode(bytes(32)).decode()
    bundle = RegistryBundle.parse(json.dumps(obj).encode())
    v = verify_receipt(b.receipt(out, 3), log_verifier=Verifier.from_vkey(b.vkey), registry=bundle)
    assert v.failed == "registry"


def _cosigned(raw: bytes, *cosigners) -> bytes:
    tp = TlogProof.parse(raw)
    note = add_signatures(tp.checkpoint_note, [c.note_signer(1_700_000_000) for c in cosigners])
    return TlogProof(tp.index, tp.proof, note, tp.extra).format()


def test_witness_quorum(receipt_log):
    b, out = receipt_log
    w1, w2, w3 = (generate_cosigner(f"w{i}.example", seed=bytes([i]) * 32) for i in (1, 2, 3))
    policy = WitnessPolicy.parse(json.dumps({"quorum": 2, "witnesses": [
        {"name": w.name, "vkey": w.to_vkey()} for w in (w1, w2, w3)]}).encode())
    raw = b.receipt(out, 2)
    key = Verifier.from_vkey(b.vkey)
    v = verify_receipt(_cosigned(raw, w1, w3), log_verifier=key, witnesses=policy)
    assert v.ok and any(p.startswith("witness quorum (2 of 2 needed: w1.example, w3.example)") for p in v.passed)
    v = verify_receipt(_cosigned(raw, w2), log_verifier=key, witnesses=policy)
    assert v.failed == "witness quorum" and "1 witness cosignatures, quorum is 2" in v.reason
    assert WitnessPolicy.parse(policy.to_json()).to_json() == policy.to_json()


@pytest.mark.parametrize("policy", [
    {"quorum": 0, "witnesses": [{"name": "w1.example", "vkey": "W"}]},
    {"quorum": 1, "witnesses": []},
    {"quorum": 2, "witnesses": [{"name": "w1.example", "vkey": "W"}]},
    {"quorum": 1, "witnesses": [{"name": "other", "vkey": "W"}]},
    {"quorum": 1, "witnesses": [{"name": "w1.example", "vkey": "W"}, {"name": "w1.example", "vkey": "W"}]},
    {"quorum": 1, "witnesses": [{"name": "w1.example", "vkey": "L"}]},
    {"quorum": "1", "witnesses": [{"name": "w1.example", "vkey": "W"}]},
    {"quorum": 1, "witnesses": [{"name": "w1.example", "vkey": "W"}], "extra": 1},
])
def test_witness_policy_is_parsed_strictly(policy):
    w1 = generate_cosigner("w1.example", seed=bytes(32))
    text = json.dumps(policy).replace('"W"', json.dumps(w1.to_vkey()))
    text = text.replace('"L"', json.dumps(LogBuilder().vkey))
    with pytest.raises(FormatError):
        WitnessPolicy.parse(text.encode())


# ---------------------------------------------------------------------------------------------- whole log

def test_clean_log_audits_ok(tmp_path):
    b = small_log(300)
    erased = b.event(WRITER)
    b.erase(erased)
    b.write(str(tmp_path))
    for jobs in (0, 2):
        r = audit(tmp_path, b.vkey, jobs=jobs)
        assert r.ok, r.summary()
        assert (r.entries, r.event_entries, r.operator_entries, r.signatures) == (304, 301, 3, 301)
        assert (r.payloads_checked, r.payloads_erased, r.keys, r.erasures) == (300, 1, 1, 1)
        assert r.hash_tiles == 3  # tile/0/000, tile/0/001.p/48, tile/1/000.p/1
    report = r.to_json()
    assert report["ok"] and report["first_failure"] is None and report["tree_size"] == 304


def test_flipped_bit_in_an_entry_bundle(tmp_path):
    b = small_log(300)
    b.write(str(tmp_path))
    path = str(tmp_path / "tile/entries/001.p/46")
    flip(path, bundle_offset(path, 10) + 120)  # inside entry 266's signature
    r = audit(tmp_path, b.vkey)
    assert not r.ok and r.first_failure.index == 266 and r.first_failure.check == "leaf hash"
    checks = {(f.check, f.index) for f in r.findings}
    assert checks == {("leaf hash", 266), ("signature", 266), ("root", None)}  # tile/1/000.p/1 covers 0..255 only


def test_flipped_bit_in_a_level0_hash_tile(tmp_path):
    b = small_log(300)
    b.write(str(tmp_path))
    flip(str(tmp_path / "tile/0/000"), 32 * 77 + 5)
    r = audit(tmp_path, b.vkey)
    assert [(f.check, f.index) for f in r.findings] == [("leaf hash", 77)]
    assert "tile/0/000 hash 77" in r.findings[0].detail


def test_flipped_bit_in_a_level1_hash_tile(tmp_path):
    b = small_log(300)
    b.write(str(tmp_path))
    flip(str(tmp_path / "tile/1/000.p/1"), 3)
    r = audit(tmp_path, b.vkey)
    assert [(f.check, f.index) for f in r.findings] == [("hash tile", 0)]


@pytest.mark.parametrize("where", ["root", "signature", "size"])
def test_flipped_bit_in_the_checkpoint(tmp_path, where):
    b = small_log(20)
    b.write(str(tmp_path))
    note = (tmp_path / "checkpoint").read_bytes()
    offset = {"root": note.index(b"\n", note.index(b"\n") + 1) + 3, "signature": len(note) - 10,
              "size": note.index(b"\n") + 1}[where]
    flip(str(tmp_path / "checkpoint"), offset)
    r = audit(tmp_path, b.vkey)
    assert not r.ok and r.first_failure.check == "checkpoint"


def test_removed_entry(tmp_path):
    b = small_log(300)
    b.write(str(tmp_path))
    path = str(tmp_path / "tile/entries/000")
    data = read(path)
    start = bundle_offset(path, 100) - 2
    end = bundle_offset(path, 101) - 2
    with open(path, "wb") as f:
        f.write(data[:start] + data[end:])
    r = audit(tmp_path, b.vkey)
    assert not r.ok and r.first_failure.check == "entry bundle" and r.first_failure.index == 0
    assert "holds 255 entries, want 256" in r.first_failure.detail


def test_missing_tile_and_bundle(tmp_path):
    b = small_log(300)
    b.write(str(tmp_path))
    os.unlink(tmp_path / "tile/1/000.p/1")
    r = audit(tmp_path, b.vkey)
    assert [(f.check, f.index) for f in r.findings] == [("hash tile", 0)]
    assert "tile/1/000.p/1 is missing" in r.findings[0].detail
    os.unlink(tmp_path / "tile/entries/001.p/46")
    r = audit(tmp_path, b.vkey)
    assert r.first_failure.check == "entry bundle" and r.first_failure.index == 256


def test_spliced_entry_signed_by_a_revoked_key(tmp_path):
    """A forged log, re-derived with the same keys (tiles and checkpoint all consistent): the only lie is
    an entry signed by a key after its revocation."""
    b = small_log(10)
    b.revoke(WRITER)
    b.register(OTHER, "billing-2")
    b.events(OTHER, 5)
    spliced = b.event(WRITER)  # a valid signature, by a revoked key
    b.events(OTHER, 3)
    b.write(str(tmp_path))
    r = audit(tmp_path, b.vkey)
    assert [(f.check, f.index) for f in r.findings] == [("event entry", spliced)]
    assert "revoked" in r.findings[0].detail


def test_entry_with_a_bad_signature_in_a_forged_log(tmp_path):
    b = small_log(10)
    entry = EventEntry(b.origin, WRITER.public_key.key_id, b.now, payload_commitment(bytes(16), b"x"))
    b.leaves.append(Leaf(entry.encode(), sign_entry(entry, OTHER), b.now).encode())  # signed by the wrong key
    b.payloads[len(b.leaves) - 1] = (bytes(16), b"x")
    b.write(str(tmp_path))
    r = audit(tmp_path, b.vkey)
    assert [(f.check, f.index) for f in r.findings] == [("signature", 12)]


def test_operator_entry_not_signed_by_the_operator(tmp_path):
    b = small_log(3)
    ev = RegisterKey(origin=b.origin, timestamp_ms=b.now, key=OTHER.public_key, name="intruder",
                     not_before_ms=T0, not_after_ms=T0 + 10**9)
    b.leaves.append(Leaf(ev.encode(), sign_entry(ev, OTHER), b.now).encode())
    b.event(OTHER)  # its key never got registered
    b.write(str(tmp_path))
    r = audit(tmp_path, b.vkey)
    assert [(f.check, f.index) for f in r.sorted_findings()] == [
        ("key registry", 5), ("event entry", 6), ("registry bundle", None)]  # registry.json holds it too


def test_timestamps_going_backwards(tmp_path):
    b = small_log(5)
    b.event(WRITER, integrated=b.now - 1000)
    b.events(WRITER, 2)
    b.write(str(tmp_path))
    r = audit(tmp_path, b.vkey)
    assert r.first_failure.check == "timestamp" and r.first_failure.index == 7


def test_payload_tampered_and_payload_deleted_without_erasure(tmp_path):
    b = small_log(20)
    b.write(str(tmp_path))
    path = tmp_path / "payloads/000.p/22"
    records = decode_payload_records(path.read_bytes())
    records[5] = records[5].__class__(5, "present", records[5].salt, b"changed")
    records[9] = records[9].__class__(9, "absent")
    path.write_bytes(encode_payload_records(records))
    r = audit(tmp_path, b.vkey)
    assert [(f.check, f.index) for f in r.findings] == [("payload commitment", 5), ("payload missing", 9)]


def test_compromised_since_marks_earlier_entries_untrusted(tmp_path):
    """Entries sequenced before the revocation but integrated after the compromise time are untrusted
    (spec/keys.md §3): found by the second pass, reported, not a failure of the log."""
    b = small_log(0)
    b.events(WRITER, 400)
    since = b.now - 50  # the last 50 entries of the key
    b.revoke(WRITER, compromised_since=since)
    b.write(str(tmp_path))
    r = audit(tmp_path, b.vkey)
    assert r.ok, r.summary()
    [u] = r.untrusted
    assert (u["entries"], u["first_index"], u["name"]) == (50, 352, "billing")
    assert "WARNING: 50 entries from index 352 are untrusted" in r.summary()


def test_registry_json_must_list_every_operator_entry(tmp_path):
    b = small_log(5)
    b.register(OTHER, "second")
    b.write(str(tmp_path))
    obj = json.loads((tmp_path / "registry.json").read_text())
    obj["entries"] = [e for e in obj["entries"] if e["index"] != 7]
    (tmp_path / "registry.json").write_text(json.dumps(obj))
    r = audit(tmp_path, b.vkey)
    assert [(f.check, f.index) for f in r.findings] == [("registry bundle", 7)]


def _peak(tmp_path, events: int) -> int:
    b = LogBuilder()
    b.register(WRITER, "w")
    for _ in range(events):
        b.event(WRITER)
        if len(b.leaves) % 4096 == 0:
            b.payloads.clear()  # keep the builder small; the export gets "absent" records
    out = tmp_path / f"log{events}"
    b.write(str(out), payloads=False)
    tracemalloc.start()
    try:
        r = audit(out, b.vkey, jobs=1)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        assert r.ok, r.summary()


def test_audit_memory_does_not_grow_with_the_log(tmp_path):
    small, large = _peak(tmp_path, 2_000), _peak(tmp_path, 16_000)
    assert large < small * 1.5 + 200_000, (small, large)


def test_bundle_paths_are_tlog_tiles_paths(tmp_path):
    b = small_log(300)
    b.write(str(tmp_path))
    names = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert names == ["checkpoint", "export.json", "payloads/000", "payloads/001.p/46", "registry.json",
                     "tile/0/000", "tile/0/001.p/46", "tile/1/000.p/1", "tile/entries/000",
                     "tile/entries/001.p/46"]
    assert Tile(-1, 1, 46).path() == "tile/entries/001.p/46"
