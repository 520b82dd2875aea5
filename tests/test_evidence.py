"""tlog.evidence: every evidence kind verifies offline, proves exactly what spec/monitor.md §5 says it proves,
and is rejected when tampered with (named mutations); strict parsing; the verify-evidence command glue."""

from __future__ import annotations

import base64
import json

import pytest

from monitor import verify_cli
from tests.oracle import Oracle, rfc_leaf_hash
from tlog.checkpoint import Checkpoint, sign_checkpoint
from tlog.errors import FormatError, SignatureError, TlogError
from tlog.evidence import Evidence, EvidenceError, EvidenceKind, verify_evidence
from tlog.note import Signer

ORIGIN = "example.com/evidence-log"
SIGNER = Signer.generate(ORIGIN, seed=bytes(range(32)))
OTHER = Signer.generate(ORIGIN, seed=bytes(32))
VKEY = SIGNER.to_vkey()

# Two histories that share their first 3 leaves.
A = Oracle([rfc_leaf_hash(b"common %d" % i) for i in range(3)] + [rfc_leaf_hash(b"a %d" % i) for i in range(9)])
B = Oracle([rfc_leaf_hash(b"common %d" % i) for i in range(3)] + [rfc_leaf_hash(b"b %d" % i) for i in range(9)])


def note(tree: Oracle, size: int, signer: Signer = SIGNER, origin: str = ORIGIN) -> bytes:
    return sign_checkpoint(Checkpoint(origin, size, tree.root(size)), signer)


def same_size(size: int = 6) -> Evidence:
    return Evidence(EvidenceKind.FORK_SAME_SIZE, ORIGIN, VKEY, note(A, size), note(B, size))


def prefix(m: int, n: int) -> Evidence:
    """A's checkpoint at m; B's at n with B's own proof m -> n and B's root at m (what a monitor following
    B computes from B's tiles)."""
    return Evidence(EvidenceKind.FORK_PREFIX, ORIGIN, VKEY, note(A, m), note(B, n), proof=tuple(B.proof(m, n)),
                    prefix_root=B.root(m))


def unproven(m: int = 5, n: int = 9) -> Evidence:
    return Evidence(EvidenceKind.FORK_UNPROVEN, ORIGIN, VKEY, note(A, m), note(B, n), proof=tuple(B.proof(m, n)),
                    log_answer="the log's consistency proof fails")


def rollback() -> Evidence:
    return Evidence(EvidenceKind.ROLLBACK, ORIGIN, VKEY, note(A, 9), note(A, 5),
                    observed=({"time_ms": 1000, "source": "log"}, {"time_ms": 2000, "source": "log"}))


def edit(ev: Evidence, **changes) -> dict:
    obj = ev.to_json()
    obj.update(changes)
    return obj


def flip(b64: str) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[0] ^= 1
    return base64.b64encode(bytes(raw)).decode()


# ---------------------------------------------------------------- what each kind proves

def test_same_size_fork_is_proven():
    v = verify_evidence(same_size(), SIGNER.verifier())
    assert v.kind is EvidenceKind.FORK_SAME_SIZE and v.proves_misbehaviour
    assert [c.size for c in v.checkpoints] == [6, 6] and v.summary.startswith("PROVEN")


@pytest.mark.parametrize("m,n", [(4, 9), (5, 9), (6, 12), (4, 5), (7, 8), (8, 12)])  # powers of two and not
def test_prefix_fork_is_proven(m, n):
    v = verify_evidence(prefix(m, n), SIGNER.verifier())
    assert v.proves_misbehaviour and v.kind is EvidenceKind.FORK_PREFIX and "PROVEN" in v.summary


def test_unproven_fork_and_rollback_verify_but_prove_nothing():
    for ev in (unproven(), rollback()):
        v = verify_evidence(ev, [OTHER.verifier(), SIGNER.verifier()])  # a key list, as during a rotation
        assert not v.proves_misbehaviour and v.summary.startswith("NOT A PROOF")


# ---------------------------------------------------------------- named mutations are rejected

def test_tampered_notes_are_rejected():
    obj = same_size().to_json()
    b_root = base64.b64encode(B.root(6)).decode()
    obj["checkpoints"][1] = obj["checkpoints"][1].replace(b_root, flip(b_root))
    with pytest.raises(SignatureError):
        verify_evidence(obj, SIGNER.verifier())


@pytest.mark.parametrize("mutation", ["proof-bit-flip", "truncated-proof", "extra-proof-hash", "prefix-root-flip",
                                      "prefix-is-own-root", "swapped-checkpoints", "consistent-pair"])
def test_prefix_fork_mutations_are_rejected(mutation):
    ev = prefix(5, 9)
    obj = ev.to_json()
    if mutation == "proof-bit-flip":
        obj["consistency_proof"][1] = flip(obj["consistency_proof"][1])
    elif mutation == "truncated-proof":
        obj["consistency_proof"] = obj["consistency_proof"][:-1]
    elif mutation == "extra-proof-hash":
        obj["consistency_proof"].append(obj["consistency_proof"][0])
    elif mutation == "prefix-root-flip":
        obj["prefix_root"] = flip(obj["prefix_root"])
    elif mutation == "prefix-is-own-root":
        obj["prefix_root"] = base64.b64encode(A.root(5)).decode()
    elif mutation == "swapped-checkpoints":
        obj["checkpoints"].reverse()
        obj["sizes"].reverse()
    elif mutation == "consistent-pair":  # an honest log: A at 5 and A at 9 with A's proof
        obj = Evidence(EvidenceKind.FORK_PREFIX, ORIGIN, VKEY, note(A, 5), note(A, 9), proof=tuple(A.proof(5, 9)),
                       prefix_root=A.root(5)).to_json()
    with pytest.raises(EvidenceError):
        verify_evidence(obj, SIGNER.verifier())


def test_same_size_mutations_are_rejected():
    equal = Evidence(EvidenceKind.FORK_SAME_SIZE, ORIGIN, VKEY, note(A, 6), note(A, 6))
    other_sizes = Evidence(EvidenceKind.FORK_SAME_SIZE, ORIGIN, VKEY, note(A, 6), note(B, 7))
    with_proof = Evidence(EvidenceKind.FORK_SAME_SIZE, ORIGIN, VKEY, note(A, 6), note(B, 6), proof=(bytes(32),))
    for ev in (equal, other_sizes, with_proof):
        with pytest.raises(EvidenceError):
            verify_evidence(ev, SIGNER.verifier())


def test_unproven_with_a_valid_proof_and_bad_rollback_order_are_rejected():
    honest = Evidence(EvidenceKind.FORK_UNPROVEN, ORIGIN, VKEY, note(A, 5), note(A, 9), proof=tuple(A.proof(5, 9)))
    forward = Evidence(EvidenceKind.ROLLBACK, ORIGIN, VKEY, note(A, 5), note(A, 9))
    for ev in (honest, forward):
        with pytest.raises(EvidenceError):
            verify_evidence(ev, SIGNER.verifier())


def test_another_logs_key_or_origin_is_rejected():
    with pytest.raises(SignatureError):
        verify_evidence(same_size(), OTHER.verifier())
    other_origin = Signer.generate("example.com/elsewhere", seed=bytes(range(32)))
    foreign = note(B, 6, other_origin, "example.com/elsewhere")
    ev = Evidence(EvidenceKind.FORK_SAME_SIZE, ORIGIN, VKEY, note(A, 6), foreign)
    with pytest.raises(SignatureError):
        verify_evidence(ev, [SIGNER.verifier(), other_origin.verifier()])


# ---------------------------------------------------------------- strict parsing

def test_round_trip_and_digest():
    for ev in (same_size(), prefix(5, 9), unproven(), rollback()):
        again = Evidence.parse(ev.encode())
        assert again == ev and again.encode() == ev.encode()
    a, b = rollback(), Evidence.parse(edit(rollback(), observed=[], detected_ms=5))
    assert a.digest() == b.digest()  # observation times are not part of the claim
    assert same_size().digest() != same_size(7).digest()


@pytest.mark.parametrize("change", [
    {"format": "tlog-evidence/v2"}, {"kind": "fork"}, {"unknown": 1}, {"sizes": [6, 7]}, {"sizes": [6]},
    {"checkpoints": ["x"]}, {"consistency_proof": ["AAAA"]}, {"prefix_root": "AAAA"},
    {"consistency_proof": [base64.b64encode(bytes(32)).decode().replace("=", "")]},
    {"detected_ms": -1}, {"detected_ms": True}, {"origin": ""}, {"observed": [{"when": 1}]},
])
def test_malformed_evidence_is_a_format_error(change):
    with pytest.raises(FormatError):
        Evidence.parse(edit(same_size(), **change))


def test_missing_field_non_json_and_oversize():
    obj = same_size().to_json()
    del obj["log_key"]
    for data in (obj, b"not json", b"[1, 2]", b"\xff\xfe", b" " * (5 << 20)):
        with pytest.raises(FormatError):
            verify_evidence(data, SIGNER.verifier())


# ---------------------------------------------------------------- the command glue (tlog verify-evidence)

def test_verify_cli_exit_codes(tmp_path, capsys):
    def write(name: str, data: bytes) -> str:
        path = tmp_path / name
        path.write_bytes(data)
        return str(path)

    proven = write("fork.json", prefix(5, 9).encode())
    key_file = write("log.vkey", (VKEY + "\n").encode())
    assert verify_cli.run(proven, VKEY) == 0 and verify_cli.run(proven, key_file) == 0
    assert "PROVEN" in capsys.readouterr().out
    assert verify_cli.run(write("rb.json", rollback().encode()), VKEY) == 1
    assert "NOT A PROOF" in capsys.readouterr().out
    tampered = json.loads(prefix(5, 9).encode())
    tampered["consistency_proof"][0] = flip(tampered["consistency_proof"][0])
    assert verify_cli.run(write("bad.json", json.dumps(tampered).encode()), VKEY) == 1
    assert "INVALID" in capsys.readouterr().err
    assert verify_cli.run(proven, OTHER.to_vkey()) == 1
    assert verify_cli.run(str(tmp_path / "missing.json"), VKEY) == 2
    assert verify_cli.run(proven, "not a key") == 2
    assert "Traceback" not in capsys.readouterr().err


def test_every_failure_is_a_tlog_error():
    for data in (b"{}", json.dumps(edit(same_size(), checkpoints=["a\n\n", "b\n\n"])).encode()):
        with pytest.raises(TlogError):
            verify_evidence(data, SIGNER.verifier())


def test_tlog_verify_evidence_command(tmp_path):
    """The real `tlog verify-evidence` command line, as an auditor runs it."""
    from tests.conftest import tlog_cmd

    proven = tmp_path / "fork.json"
    proven.write_bytes(prefix(5, 9).encode())
    ok = tlog_cmd("verify-evidence", str(proven), "--log-key", VKEY)
    assert b"PROVEN" in ok.stdout
    rb = tmp_path / "rollback.json"
    rb.write_bytes(rollback().encode())
    not_proof = tlog_cmd("verify-evidence", str(rb), "--log-key", VKEY, check=False)
    assert not_proof.returncode == 1 and b"NOT A PROOF" in not_proof.stdout
    wrong_key = tlog_cmd("verify-evidence", str(proven), "--log-key", OTHER.to_vkey(), check=False)
    assert wrong_key.returncode == 1 and b"Traceback" not in wrong_key.stderr
