"""The JSON answers written by hand on the hot paths (receipts, inclusion and consistency proofs)
are the same JSON values ``json.dumps`` gives for the documented objects (spec/http-api.md)."""

from __future__ import annotations

import base64
import json

import pytest

from tlog.checkpoint import Checkpoint, sign_checkpoint
from tlog.errors import InvariantError
from tlog.note import generate_signer
from tlog.server.handlers import _proof_response
from tlog.server.state import Receipt
from tlog.tlogproof import TlogProof


def _note(origin: str) -> bytes:
    return sign_checkpoint(Checkpoint(origin, 5, bytes(range(32))), generate_signer(origin))


@pytest.mark.parametrize("proof_len", [0, 1, 3, 24])
@pytest.mark.parametrize("duplicate", [False, True])
def test_receipt_bytes_are_the_receipt_json(proof_len: int, duplicate: bool) -> None:
    note = _note('example.com/"quoted"—ü\\log')
    proof = [bytes([i]) * 32 for i in range(proof_len)]
    receipt = Receipt(3, b"\x00leaf\xff" * 7, note, proof, duplicate)
    got = json.loads(receipt.to_json_bytes())
    assert got == receipt.to_json()  # to_json builds the text with the checked TlogProof.format
    parsed = TlogProof.parse(got["receipt"].encode())
    assert (parsed.index, list(parsed.proof), parsed.checkpoint_note, parsed.extra) == (3, proof, note, receipt.leaf)


def test_a_receipt_with_a_short_proof_hash_fails_loudly() -> None:
    receipt = Receipt(3, b"leaf", _note("example.com/log"), [bytes(32), bytes(31)], False)
    with pytest.raises(InvariantError):
        receipt.to_json_bytes()


@pytest.mark.parametrize("proof_len", [0, 1, 24])
def test_proof_bodies_are_the_documented_json(proof_len: int) -> None:
    proof = [bytes([i]) * 32 for i in range(proof_len)]
    body = json.loads(_proof_response(b'"index":7,"tree_size":9', proof).body)
    want = {"index": 7, "tree_size": 9, "proof": [base64.b64encode(h).decode() for h in proof]}
    assert body == want
    response = _proof_response(b'"first":1,"second":9', proof)
    assert response.content_type == "application/json" and response.charset == "utf-8"


@pytest.mark.parametrize("value", [0, -3, 2**70, 1.0, 0.1, 1e-7, 123456789.123, 1e300, float("inf"), float("nan"),
                                   True, False, None, "", 'q"uo\\te\n', "é€😀", b"raw", [1]])
def test_access_line_values_are_what_json_dumps_writes(value) -> None:
    from tlog.server.logs import _json_value

    assert _json_value(value) == json.dumps(value, default=str)


def test_an_access_line_is_one_json_object_with_the_fields_in_order() -> None:
    import io

    from tlog.server import logs

    buf = io.StringIO()
    logs.setup_logging(stream=buf)
    try:
        fields = {"method": "GET", "path": '/v1/"x"?a=é', "route": "/v1/x", "status": 200, "duration_ms": 1.234,
                  "remote": None, "bytes": 12}
        logs._ACCESS_LINES.write("rid-1", *fields.values())
        logs._ACCESS_LINES.flush()
    finally:
        logs.setup_logging()
    [line] = buf.getvalue().splitlines()
    obj = json.loads(line)
    assert list(obj) == ["ts", "level", "logger", "event", "request_id", *fields]
    assert obj["event"] == "request" and obj["request_id"] == "rid-1" and {k: obj[k] for k in fields} == fields
