"""The ``tlog`` command line.  Every failure is one line on stderr and a non-zero exit, never a traceback.

Exit codes: 0 success, 1 verification failed / refused by the log, 2 usage, input or configuration
error, 3 cannot reach the log, 4 integrity failure (stored data contradicts itself).
"""

from __future__ import annotations

import argparse
import base64
import asyncio
import datetime as dt
import json
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from .client import LogClient, LogServerError, WitnessQuorumError
from .entry import EventEntry, Leaf, register_event, revoke_event, rotate_event
from .errors import InvariantError, TlogError
from .evidence import MAX_EVIDENCE_SIZE, verify_evidence
from .server.config import ConfigError
from .server.storage import StorageError
from .keys import KeyType, PrivateKey, PublicKey
from .note import Verifier
from .registry import Registry
from .timefmt import iso8601_ms

__all__ = ["main", "parse_time", "CliError"]

DAY_MS = 86_400_000
DEFAULT_LOG = "http://127.0.0.1:8080"


class CliError(Exception):
    """A usage or input problem, reported as one line (exit 2)."""


class VerifyFailed(Exception):
    """A verification that failed (exit 1)."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


_REL = re.compile(r"\+?(\d+)([smhdw])")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": DAY_MS, "w": 7 * DAY_MS}


def parse_time(text: str, now_ms: int) -> int:
    """``now``, a relative ``+30d`` / ``12h`` / ``90m`` from now, or an ISO 8601 date or time (UTC if no zone)."""
    text = text.strip()
    if text == "now":
        return now_ms
    m = _REL.fullmatch(text)
    if m:
        return now_ms + int(m.group(1)) * _UNIT_MS[m.group(2)]
    try:
        return iso8601_ms(text)
    except ValueError as exc:
        raise CliError(f"cannot read time {text!r}: use now, +30d, 12h or 2026-12-31T00:00:00Z") from exc


def fmt_time(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


# -- keys and files ---------------------------------------------------------------------------------

def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CliError(f"cannot read {what} {path}: {exc.strerror}") from exc


def load_private_key(path: str) -> PrivateKey:
    from .server.config import ConfigError, check_private_file

    try:
        return PrivateKey.from_pem(check_private_file(path))
    except ConfigError as exc:
        raise CliError(str(exc)) from exc


def load_public_key(text_or_path: str) -> PublicKey:
    text = text_or_path
    if os.path.exists(text_or_path):
        text = _read(text_or_path, "public key").decode("utf-8", "replace").strip()
    return PublicKey.from_text(text)


def load_vkey(value: str | None) -> Verifier:
    value = value or os.environ.get("TLOG_LOG_KEY")
    if not value:
        raise CliError("the log's verifier key is needed: --log-key VKEY (or a file), or TLOG_LOG_KEY "
                       "(printed by `tlog init` and `tlog serve`)")
    if os.path.exists(value):
        value = _read(value, "verifier key").decode().strip()
    return Verifier.from_vkey(value)


def _log_url(args: argparse.Namespace) -> str:
    return args.log or os.environ.get("TLOG_LOG") or DEFAULT_LOG


def _client(args: argparse.Namespace) -> LogClient:
    token = getattr(args, "token", None) or os.environ.get("TLOG_TOKEN") or None  # reader token: payloads
    policy = None
    if getattr(args, "witness_policy", None):  # spec/witness.md §4: checkpoints and receipts need the quorum
        from .audit import WitnessPolicy

        policy = WitnessPolicy.parse(_read(args.witness_policy, "witness policy"))
    return LogClient(_log_url(args), log_key=load_vkey(args.log_key), token=token, witness_policy=policy,
                     witness_wait=getattr(args, "witness_wait", 10.0))


def _out(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


# -- commands ---------------------------------------------------------------------------------------

async def cmd_init(args: argparse.Namespace) -> int:
    from .server.config import ConfigError
    from .server.init import init_log

    try:
        res = await init_log(args.data, args.origin, max_key_lifetime_days=args.max_key_lifetime_days)
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    print(f"vkey: {res.vkey}")
    print(f"operator key: {os.path.join(args.data, 'operator.key')} ({res.operator_public})")
    print(f"created log {args.origin!r} in {args.data}; start it with: tlog serve --data {args.data}")
    return 0


async def cmd_serve(args: argparse.Namespace) -> int:
    from .server.app import serve
    from .server.config import ConfigError, LogConfig

    try:
        LogConfig.load(args.data)
        vkey = _read(os.path.join(args.data, "log.vkey"), "verifier key").decode().strip()
    except ConfigError as exc:
        raise CliError(str(exc)) from exc

    def ready(url: str) -> None:
        print(f"vkey: {vkey}", flush=True)
        print(f"listening on {url}", flush=True)

    await serve(args.data, args.listen, ready=ready, workers=args.workers)
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from .server.config import ConfigError, write_private_file

    key = PrivateKey.generate(KeyType.ED25519 if args.type == "ed25519" else KeyType.P256)
    try:
        if os.path.exists(args.out + ".pub"):
            raise ConfigError(f"refusing to overwrite existing {args.out}.pub")
        write_private_file(args.out, key.to_pem())
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    with open(args.out + ".pub", "x") as f:
        f.write(key.public_key.to_text() + "\n")
    print(f"public key: {key.public_key.to_text()}")
    print(f"key id: {key.public_key.key_id_hex}")
    print(f"wrote {args.out} (private, 0600) and {args.out}.pub")
    return 0


async def _registry_info(client: LogClient) -> dict:
    info = await client.keys()
    reg = info.get("registry") if isinstance(info, dict) else None
    if not isinstance(reg, dict):
        raise TlogError("the log's /v1/keys answer is malformed")
    return reg


def _resolve_key_id(reg: dict, ref: str) -> bytes:
    """A key given as a hex key id, a key name, or a public key (text or .pub file)."""
    keys = reg.get("keys", {})
    if re.fullmatch(r"[0-9a-f]{64}", ref):
        return bytes.fromhex(ref)
    current = reg.get("names", {}).get(ref)
    if current:
        return bytes.fromhex(current)
    matches = [kid for kid, rec in keys.items() if rec.get("name") == ref]
    if matches:
        return bytes.fromhex(max(matches, key=lambda k: keys[k].get("registered_index", 0)))
    try:
        return load_public_key(ref).key_id
    except TlogError as exc:
        raise CliError(f"no key {ref!r}: give a key id, a registered name or a public key") from exc


async def _submit_operator(args: argparse.Namespace, make: Callable[[dict, int], Any]) -> int:
    operator = load_private_key(args.operator_key)
    async with _client(args) as client:
        reg = await _registry_info(client)
        event = make(reg, _now_ms())
        receipt = await client.submit_operator_entry(event, operator)
    print(f"{event.action.text if hasattr(event.action, 'text') else event.action} recorded at index "
          f"{receipt.index} (tree size {receipt.checkpoint.size})")
    if args.receipt:
        with open(args.receipt, "wb") as f:
            f.write(receipt.tlog_proof)
    return 0


def _window(args: argparse.Namespace, reg: dict, now: int) -> tuple[int, int]:
    not_before = parse_time(args.not_before, now) if args.not_before else now
    lifetime = int(reg.get("max_key_lifetime_ms", 365 * DAY_MS))
    not_after = parse_time(args.not_after, now) if args.not_after else not_before + lifetime
    return not_before, not_after


async def cmd_keys_register(args: argparse.Namespace) -> int:
    key = load_public_key(args.key)

    def make(reg: dict, now: int):
        nb, na = _window(args, reg, now)
        return register_event(reg["origin"], now, key, args.name, nb, na, args.rate)

    return await _submit_operator(args, make)


async def cmd_keys_rotate(args: argparse.Namespace) -> int:
    key = load_public_key(args.key)

    def make(reg: dict, now: int):
        old = _resolve_key_id(reg, args.old)
        old_rec = reg.get("keys", {}).get(old.hex(), {})
        nb, na = _window(args, reg, now)
        retire = parse_time(args.overlap if args.overlap.startswith("+") else "+" + args.overlap, now)
        name = args.name or old_rec.get("name")
        if not name:
            raise CliError("--name is needed: the old key is not in the registry")
        return rotate_event(reg["origin"], now, old, key, name, nb, na, retire,
                            args.rate if args.rate is not None else int(old_rec.get("rate_limit", 0)))

    return await _submit_operator(args, make)


async def cmd_keys_revoke(args: argparse.Namespace) -> int:
    def make(reg: dict, now: int):
        since = parse_time(args.compromised_since, now) if args.compromised_since else None
        return revoke_event(reg["origin"], now, _resolve_key_id(reg, args.key), since)

    return await _submit_operator(args, make)


async def proven_registry(client: LogClient) -> tuple[Registry, int, int]:
    """The key registry as the log proves it: every operator entry the log lists is fetched with an
    inclusion proof against a verified checkpoint and replayed locally.  Returns (registry, tree size,
    number of operator entries)."""
    cp = await client.checkpoint()
    reg = await _registry_info(client)
    leaves = []
    for index in reg.get("operator_entries", []):
        entry = await client.get_entry(int(index))
        leaves.append((int(index), Leaf.decode(base64.b64decode(entry["leaf"], validate=True))))
    registry = Registry.replay(leaves, sparse=True)
    registry.advance(cp.size)
    return registry, cp.size, len(leaves)


async def cmd_keys_list(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        registry, size, count = await proven_registry(client)
    data = registry.to_json()
    if args.json:
        _out({"tree_size": size, "registry": data})
        return 0
    print(f"key registry of {registry.origin} at tree size {size} "
          f"({count} operator entries, each verified by an inclusion proof)")
    for kid, rec in data["keys"].items():
        print(f"  {rec['name']:<20} {kid[:16]}  {rec['key_type']:<7} {fmt_time(rec['not_before_ms'])} .. "
              f"{fmt_time(rec['effective_not_after_ms'])}  {_key_state(rec)}  "
              f"(registered at {rec['registered_index']})")
    return 0


def _key_state(rec: dict) -> str:
    if rec.get("compromised_since_ms") is not None:
        return f"COMPROMISED since {fmt_time(rec['compromised_since_ms'])}"
    if rec.get("revoked_index") is not None:
        return f"revoked at {rec['revoked_index']}"
    if rec.get("replaced_by"):
        return f"rotated at {rec['retired_index']} to {rec['replaced_by'][:16]}"
    return "active"


def _payload(args: argparse.Namespace) -> bytes:
    if args.payload_file:
        return _read(args.payload_file, "payload")
    if sys.stdin.isatty():
        raise CliError("give the event on stdin or with --payload-file")
    return sys.stdin.buffer.read()


async def cmd_append(args: argparse.Namespace) -> int:
    key = load_private_key(args.key)
    payload = _payload(args)
    async with _client(args) as client:
        try:
            receipt = await client.append(key, payload)
        except WitnessQuorumError as exc:
            if exc.receipt is None:
                raise
            _write_receipt(args, exc.receipt)
            raise VerifyFailed(f"appended at index {exc.receipt.index}, but no checkpoint with the witness quorum "
                               f"covers it yet (the receipt written is signed by the log alone); later: tlog receipt "
                               f"{exc.receipt.index} --witness-policy {args.witness_policy}") from None
    what = "already in the log at" if receipt.duplicate else "appended at"
    cosigned = f"; cosigned by {', '.join(receipt.witnesses)}" if args.witness_policy else ""
    print(f"{what} index {receipt.index} (tree size {receipt.checkpoint.size}); receipt verified{cosigned}",
          file=sys.stderr)
    _write_receipt(args, receipt)
    return 0


async def cmd_receipt(args: argparse.Namespace) -> int:
    """A receipt for an entry: against the latest checkpoint, or with --witness-policy against the newest
    checkpoint that met the quorum (waiting up to --witness-wait seconds): the upgrade of an append's receipt."""
    async with _client(args) as client:
        if args.witness_policy:
            receipt = await client.cosigned_receipt(args.index)
        else:
            receipt = await client.receipt(args.index)
    cosigned = f"; cosigned by {', '.join(receipt.witnesses) or 'none'}" if args.witness_policy else ""
    print(f"entry {receipt.index} at tree size {receipt.checkpoint.size}; receipt verified{cosigned}", file=sys.stderr)
    _write_receipt(args, receipt)
    return 0


def _write_receipt(args: argparse.Namespace, receipt: Any) -> None:
    if args.receipt:
        with open(args.receipt, "wb") as f:
            f.write(receipt.tlog_proof)
        print(f"receipt written to {args.receipt}", file=sys.stderr)
    else:
        sys.stdout.write(receipt.tlog_proof.decode())


async def cmd_get(args: argparse.Namespace) -> int:
    """An entry, its inclusion proof verified against a verified checkpoint and, for an event, its
    provisioning signature and key validity checked against the registry the log proves."""
    async with _client(args) as client:
        entry = await client.get_entry(args.index)
        leaf = Leaf.decode(base64.b64decode(entry["leaf"], validate=True))
        if isinstance(leaf.entry, EventEntry):
            registry, _, _ = await proven_registry(client)
            record = registry.check_event(args.index, leaf)
            entry["signature_verified_with"] = record.key_id.hex()
    _out(entry)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Offline (spec/audit.md §1): checkpoint signature, witness quorum, inclusion proof, leaf, the
    provisioning signature (a writer key or a registry file) and the payload commitment."""
    from .audit import RegistryBundle, WitnessPolicy, verify_receipt

    verifier = load_vkey(args.log_key)
    if (args.payload is None) != (args.salt is None):
        raise CliError("--payload and --salt go together")
    registry = None
    if args.registry:
        path = os.path.join(args.registry, "registry.json") if os.path.isdir(args.registry) else args.registry
        registry = RegistryBundle.parse(_read(path, "registry file"))
    verdict = verify_receipt(
        _read(args.receipt, "receipt"), log_verifier=verifier,
        writer_key=load_public_key(args.writer_key) if args.writer_key else None, registry=registry,
        witnesses=WitnessPolicy.parse(_read(args.witness_policy, "witness policy")) if args.witness_policy else None,
        payload=_read(args.payload, "payload") if args.payload else None,
        salt=_salt(args.salt) if args.salt else None)
    if args.json:
        _out(verdict.to_json())
    if not verdict.ok:
        raise VerifyFailed(f"receipt INVALID: {verdict.failed}: {verdict.reason}")
    if not args.json:
        print(verdict.line())
    return 0


def _salt(text: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except ValueError as exc:
        raise CliError("--salt must be base64 (the salt the writer kept, 16..255 bytes)") from exc


def _progress(args: argparse.Namespace) -> Callable[[str, int], Any]:
    """tqdm progress bars on stderr (only on a terminal unless --progress)."""
    from tqdm import tqdm

    def bar(desc: str, total: int) -> Any:
        return tqdm(total=total, desc=desc, file=sys.stderr, unit=" tiles" if desc == "hash tiles" else " entries",
                    unit_scale=True, dynamic_ncols=True, leave=False, disable=False if args.progress else None)
    return bar


async def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_log

    verifier = load_vkey(args.log_key)
    res = await export_log(_log_url(args), args.out, verifier=verifier, token=args.token,
                           progress=_progress(args))
    grew = f" (was {res.previous_size})" if res.previous_size is not None else ""
    print(f"exported {res.origin} at tree size {res.size}{grew} to {args.out}: {res.downloaded} files downloaded, "
          f"{res.skipped} already there; payloads {'included' if res.payloads else 'not included (no --token)'}")
    return 0


async def cmd_audit(args: argparse.Namespace) -> int:
    from .logaudit import run_audit
    from .export import DirSource, HttpSource

    verifier = load_vkey(args.log_key)
    bars = _progress(args)
    session = None
    if args.dir:
        source: Any = DirSource(args.dir)
    else:
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        source = HttpSource(args.log, session)
    try:
        cp_size = _checkpoint_size(await source.checkpoint())
        bar = bars("audit", cp_size)
        try:
            report = await run_audit(source, verifier, jobs=args.jobs, progress=bar.update)
        finally:
            bar.close()
    finally:
        if session is not None:
            await session.close()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report.to_json(), f, indent=2)
            f.write("\n")
    print(report.summary())
    if not report.ok:
        first = report.first_failure
        raise VerifyFailed(f"audit FAILED at {first.line() if first else 'the log'}")
    return 0


def _checkpoint_size(note: bytes) -> int:
    """The tree size a checkpoint note claims (for the progress bar; the audit verifies it)."""
    from .checkpoint import Checkpoint
    from .note import parse_note

    try:
        return Checkpoint.parse(parse_note(note)[0]).size
    except TlogError:
        return 0


async def cmd_fsck(args: argparse.Namespace) -> int:
    from .server.scrub import fsck

    report = await fsck(args.data)
    print(report.summary())
    if not report.ok:
        raise VerifyFailed(f"fsck FAILED: {report.problems[0]}")
    return 0


# -- tlog verify-evidence ------------------------------------------------------------------------------

def verify_evidence_file(path: str, log_key: str) -> int:
    """``tlog verify-evidence``: exit 0 only when the file proves misbehaviour (spec/monitor.md); verify the evidence file at ``path`` against the log's verifier key (a vkey string or a file)."""
    try:
        verifier = load_vkey(log_key)
        with open(path, "rb") as f:
            data = f.read(MAX_EVIDENCE_SIZE + 1)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"tlog: cannot read {exc.filename if isinstance(exc, OSError) else log_key}: {exc}", file=sys.stderr)
        return 2
    except (TlogError, CliError) as exc:
        print(f"tlog: --log-key: {exc}", file=sys.stderr)
        return 2
    try:
        verdict = verify_evidence(data, verifier)
    except TlogError as exc:
        print(f"evidence INVALID: {exc}", file=sys.stderr)
        return 1
    print(verdict.summary)
    return 0 if verdict.proves_misbehaviour else 1


def cmd_verify_evidence(args: argparse.Namespace) -> int:
    return verify_evidence_file(args.evidence, args.log_key or os.environ.get("TLOG_LOG_KEY", ""))


# -- argument parsing -------------------------------------------------------------------------------

def _log_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log", help=f"log URL (default $TLOG_LOG or {DEFAULT_LOG})")
    p.add_argument("--log-key", help="the log's verifier key string or file (default $TLOG_LOG_KEY)")


def _witness_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--witness-policy", help="JSON witness policy (spec/audit.md §2): the receipt's checkpoint must "
                                            "carry the quorum of cosignatures (spec/witness.md)")
    p.add_argument("--witness-wait", type=float, default=10.0, metavar="SECONDS",
                   help="how long to wait for a checkpoint with the quorum (default 10)")


def _operator_args(p: argparse.ArgumentParser) -> None:
    _log_args(p)
    p.add_argument("--operator-key", required=True, help="the operator key file (DIR/operator.key)")
    p.add_argument("--receipt", help="write the key event's receipt (C2SP tlog-proof) here")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tlog", description="tlog: a verifiable audit log")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="create a new log in a data directory")
    p.add_argument("--data", required=True)
    p.add_argument("--origin", required=True, help="the log's name, e.g. example.com/audit")
    p.add_argument("--max-key-lifetime-days", type=int, default=365)
    p.set_defaults(run=cmd_init)

    p = sub.add_parser("serve", help="run the log server")
    p.add_argument("--data", required=True)
    p.add_argument("--listen", default="127.0.0.1:8080")
    p.add_argument("--workers", type=int, default=0,
                   help="HTTP worker processes (use the cores: e.g. the number of cores); 0 = one process")
    p.set_defaults(run=cmd_serve, event_loop="server")

    p = sub.add_parser("keygen", help="generate a provisioning key (FILE 0600 and FILE.pub)")
    p.add_argument("--out", required=True)
    p.add_argument("--type", choices=["ed25519", "p256"], default="ed25519")
    p.set_defaults(run=cmd_keygen)

    keys = sub.add_parser("keys", help="the key registry").add_subparsers(dest="keys_command", required=True)
    p = keys.add_parser("register", help="register a provisioning key")
    _operator_args(p)
    p.add_argument("--key", required=True, help="public key file (FILE.pub) or text")
    p.add_argument("--name", required=True)
    p.add_argument("--not-before")
    p.add_argument("--not-after", help="default: not-before + the log's maximum key lifetime")
    p.add_argument("--rate", type=int, default=0, help="entries per second (0 = no limit)")
    p.set_defaults(run=cmd_keys_register)
    p = keys.add_parser("rotate", help="register a new key and retire the old one after an overlap")
    _operator_args(p)
    p.add_argument("--old", required=True, help="old key: key id, name or public key")
    p.add_argument("--key", required=True, help="the new public key")
    p.add_argument("--name")
    p.add_argument("--overlap", default="7d", help="how long the old key stays valid (default 7d)")
    p.add_argument("--not-before")
    p.add_argument("--not-after")
    p.add_argument("--rate", type=int)
    p.set_defaults(run=cmd_keys_rotate)
    p = keys.add_parser("revoke", help="revoke a key")
    _operator_args(p)
    p.add_argument("--key", required=True, help="key id, name or public key")
    p.add_argument("--compromised-since", help="entries integrated at or after this time are untrusted")
    p.set_defaults(run=cmd_keys_revoke)
    p = keys.add_parser("list", help="show the key registry as the log proves it")
    _log_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_keys_list)

    p = sub.add_parser("append", help="sign and append an event (stdin or --payload-file)")
    _log_args(p)
    p.add_argument("--key", required=True, help="provisioning key file")
    p.add_argument("--receipt", help="write the receipt (C2SP tlog-proof) here instead of stdout")
    p.add_argument("--payload-file")
    _witness_args(p)
    p.set_defaults(run=cmd_append)

    p = sub.add_parser("receipt", help="fetch and verify an entry's receipt (with --witness-policy: a cosigned one)")
    p.add_argument("index", type=int)
    _log_args(p)
    p.add_argument("--receipt", help="write the receipt (C2SP tlog-proof) here instead of stdout")
    _witness_args(p)
    p.set_defaults(run=cmd_receipt)

    p = sub.add_parser("get", help="fetch and verify an entry")
    p.add_argument("index", type=int)
    _log_args(p)
    p.add_argument("--token", help="reader token, to see the payload (default $TLOG_TOKEN)")
    _witness_args(p)
    p.set_defaults(run=cmd_get)

    p = sub.add_parser("verify", help="verify a receipt offline (no network)")
    p.add_argument("receipt")
    p.add_argument("--log-key", help="the log's verifier key (default $TLOG_LOG_KEY)")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--writer-key", help="the writer's public key, to check the provisioning signature")
    who.add_argument("--registry", help="a registry file (DIR/registry.json of `tlog export`, or DIR): checks "
                                        "the key was valid at the entry's index and the signature")
    p.add_argument("--witness-policy", help="JSON witness policy (spec/audit.md): require a cosignature quorum")
    p.add_argument("--payload", help="the payload file, to check the entry's commitment")
    p.add_argument("--salt", help="the payload's salt (base64)")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON")
    p.set_defaults(run=cmd_verify)

    p = sub.add_parser("verify-evidence", help="check a monitor's evidence file offline (spec/monitor.md)")
    p.add_argument("evidence")
    p.add_argument("--log-key", help="the log's verifier key string or file (default $TLOG_LOG_KEY)")
    p.set_defaults(run=cmd_verify_evidence)

    p = sub.add_parser("export", help="download a complete, resumable copy of the log (tiles, bundles, payloads)")
    _log_args(p)
    p.add_argument("--out", required=True, help="export directory (spec/audit.md)")
    p.add_argument("--token", help="reader token: also export payloads (GET /v1/entries/<I>)")
    p.add_argument("--progress", action="store_true", help="progress bars even when stderr is not a terminal")
    p.set_defaults(run=cmd_export)

    p = sub.add_parser("audit", help="re-derive and check a whole log from its raw data")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--log", help="audit a log server's public tiles directly")
    src.add_argument("--dir", help="audit an export directory (tlog export)")
    p.add_argument("--log-key", help="the log's verifier key (default $TLOG_LOG_KEY)")
    p.add_argument("--json", metavar="REPORT", help="also write the report as JSON to this file")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="threads verifying signatures (default: the CPU count; 0 = in the main thread)")
    p.add_argument("--progress", action="store_true", help="a progress bar even when stderr is not a terminal")
    p.set_defaults(run=cmd_audit)

    p = sub.add_parser("fsck", help="offline: re-hash a server's stored leaves and tiles against its signed roots")
    p.add_argument("--data", required=True)
    p.set_defaults(run=cmd_fsck)
    from .cli_ops import add_commands  # tokens, erase, search, keys timeline (spec/privacy.md)

    add_commands(sub, keys)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.run(args)
        if asyncio.iscoroutine(result):
            if getattr(args, "event_loop", None) == "server":  # uvloop: tlog/server/eventloop.py
                from .server.eventloop import run as run_server

                result = run_server(result)
            else:
                result = asyncio.run(result)
        return int(result or 0)
    except VerifyFailed as exc:
        print(f"tlog: {exc}", file=sys.stderr)
        return 1
    except LogServerError as exc:
        print(f"tlog: the log refused: {exc}", file=sys.stderr)
        return 1
    except CliError as exc:
        print(f"tlog: {exc}", file=sys.stderr)
        return 2
    except (ConfigError, StorageError) as exc:
        print(f"tlog: {exc}", file=sys.stderr)
        return 2
    except InvariantError as exc:
        print(f"tlog: integrity failure, refusing to continue: {exc}", file=sys.stderr)
        return 4
    except TlogError as exc:
        print(f"tlog: {exc}", file=sys.stderr)
        return 1
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        print(f"tlog: cannot reach the log at {getattr(args, 'log', None) or DEFAULT_LOG}: {exc}",
              file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
