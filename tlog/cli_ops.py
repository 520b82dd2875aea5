"""``tlog`` commands for operating a log (spec/privacy.md): reader tokens, erasure, search, key timelines.

``tlog tokens …`` work on the data directory's database directly (local administration; safe while
the server runs: SQLite WAL, and the server reads the tokens table on every request).  The others talk
to the log over HTTP and verify what it returns.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from typing import Any

from .cli import (CliError, VerifyFailed, _client, _log_args, _now_ms, _operator_args, _out, fmt_time,
                  load_private_key, parse_time, proven_registry)
from .client import LogClient
from .entry import Erasure, EventEntry, Leaf

__all__ = ["add_commands"]


# -- tokens (local) ---------------------------------------------------------------------------------

async def _token_store(data: str):
    from .server.config import ConfigError, LogConfig
    from .server.tokens import TokenStore

    try:
        LogConfig.load(data)
    except ConfigError as exc:
        raise CliError(str(exc)) from exc
    return await TokenStore.open(os.path.join(data, "log.db"))


async def cmd_tokens_create(args: argparse.Namespace) -> int:
    now = _now_ms()
    expires = parse_time(args.expires, now) if args.expires else None
    store = await _token_store(args.data)
    try:
        token, info = await store.create(args.role, args.name or args.role, now, expires)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    finally:
        await store.close()
    if args.json:
        _out({"token": token, **info.to_json(now)})
        return 0
    print(token)
    print(f"id {info.id}, role {info.role}, name {info.name!r}, expires {fmt_time(info.expires_ms)}", file=sys.stderr)
    print("store the token now: it is shown once; the log keeps only its SHA-256", file=sys.stderr)
    return 0


async def cmd_tokens_revoke(args: argparse.Namespace) -> int:
    token_id = args.token_id
    if token_id.startswith("tlog_"):  # the whole token was given: its id is the part after tlog_
        token_id = token_id.split("_")[1] if token_id.count("_") >= 2 else token_id
    store = await _token_store(args.data)
    try:
        info = await store.revoke(token_id, _now_ms())
    except KeyError as exc:
        raise CliError(str(exc.args[0])) from exc
    finally:
        await store.close()
    print(f"token {info.id} ({info.name!r}) revoked at {fmt_time(info.revoked_ms)}; the server refuses it from now on")
    return 0


async def cmd_tokens_list(args: argparse.Namespace) -> int:
    now = _now_ms()
    store = await _token_store(args.data)
    try:
        tokens = await store.list()
    finally:
        await store.close()
    if args.json:
        _out([t.to_json(now) for t in tokens])
        return 0
    print(f"{'id':<16}  {'role':<6}  {'status':<7}  {'reads':>7}  {'last read':<24}  {'expires':<24}  name")
    for t in tokens:
        print(f"{t.id:<16}  {t.role:<6}  {t.status(now):<7}  {t.reads:>7}  {fmt_time(t.last_read_ms):<24}  "
              f"{fmt_time(t.expires_ms):<24}  {t.name}")
    return 0


# -- erase ------------------------------------------------------------------------------------------

async def cmd_erase(args: argparse.Namespace) -> int:
    operator = load_private_key(args.operator_key)
    async with _client(args) as client:
        cp = await client.checkpoint()
        if not 1 <= args.index < cp.size:
            raise CliError(f"no event entry {args.index} in a log of size {cp.size}")
        event = Erasure(client.origin, args.index, args.reason, _now_ms())
        receipt = await client.submit_operator_entry(event, operator)
    print(f"erased the payload and salt of entry {args.index}: erasure recorded at index {receipt.index} "
          f"(tree size {receipt.checkpoint.size}); receipt verified")
    if args.receipt:
        with open(args.receipt, "wb") as f:
            f.write(receipt.tlog_proof)
    return 0


# -- search -----------------------------------------------------------------------------------------

def _payload_text(entry: dict) -> str:
    access = entry.get("payload_access")
    if access == "erased":
        e = entry.get("erasure") or {}
        return f"[erased at {fmt_time(e.get('erased_ms'))} by entry {e.get('erasure_index')}: {e.get('reason')!r}]"
    if entry.get("payload") is None:
        return f"[{access}]" if access else ""
    raw = base64.b64decode(entry["payload"])
    try:
        text = raw.decode("utf-8").rstrip("\n")
        if text.isprintable():
            return text
    except UnicodeDecodeError:
        pass
    return "base64:" + entry["payload"]


def _line(entry: dict) -> str:
    who = entry.get("key_name") or ("" if entry.get("kind") != "EventEntry" else (entry.get("key_id") or "")[:16])
    kind = {"EventEntry": "event"}.get(entry.get("kind", ""), entry.get("kind", "?"))
    detail = _payload_text(entry) if kind == "event" else json.dumps(entry.get("event", {}), sort_keys=True)
    return f"{entry['index']:>8}  {fmt_time(entry.get('integrated_ms'))}  {who:<20}  {kind:<10}  {detail}"


class _Checker:
    """--verify: inclusion proof of every result against a verified checkpoint, payload commitment,
    the provisioning signature against the registry the log proves, and that the result matches the
    query (key, time range, index order)."""

    def __init__(self, client: LogClient, since: int | None, until: int | None):
        self.client, self.since, self.until = client, since, until
        self.cp = None
        self.registry = None
        self.key_ids: set[str] | None = None
        self.last = -1

    async def start(self, key: str | None) -> None:
        self.registry, _, _ = await proven_registry(self.client)
        self.cp = self.client.latest[0] if self.client.latest else await self.client.checkpoint()
        if key is not None:
            ids = {kid.hex() for kid, rec in self.registry.keys.items() if rec.name == key}
            self.key_ids = ids or {key}

    async def check(self, entry: dict, tree_size: int) -> None:
        if tree_size > self.cp.size:
            self.cp = await self.client.checkpoint()
            self.registry, _, _ = await proven_registry(self.client)
        await self.client.verify_entry(entry, self.cp)
        index = entry["index"]
        leaf = Leaf.decode(base64.b64decode(entry["leaf"]))
        if index <= self.last:
            raise VerifyFailed(f"result {index} is out of order (after {self.last})")
        self.last = index
        if self.key_ids is not None and getattr(leaf.entry, "key_id", b"").hex() not in self.key_ids:
            raise VerifyFailed(f"result {index} is not signed by the key searched for")
        t = leaf.integrated_ms
        if (self.since is not None and t < self.since) or (self.until is not None and t >= self.until):
            raise VerifyFailed(f"result {index} integrated at {t} is outside the time range")
        if isinstance(leaf.entry, EventEntry):
            self.registry.check_event(index, leaf)


def _when(text: str, now: int) -> int:
    """A search bound: milliseconds, ``-2d`` (ago), or what :func:`parse_time` reads."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    if text.startswith("-"):
        return 2 * now - parse_time("+" + text[1:], now)
    return parse_time(text, now)


async def cmd_search(args: argparse.Namespace) -> int:
    now = _now_ms()
    since = _when(args.since, now) if args.since else None
    until = _when(args.until, now) if args.until else None
    shown = 0
    async with _client(args) as client:
        checker = _Checker(client, since, until) if args.verify else None
        if checker is not None:
            await checker.start(args.key)
        after = args.after
        while args.limit is None or shown < args.limit:
            page_size = min(1000, args.limit - shown) if args.limit is not None else 1000
            page = await client.search(key=args.key, since_ms=since, until_ms=until, after=after, limit=page_size)
            for entry in page["entries"]:
                if checker is not None:
                    await checker.check(entry, page["tree_size"])
                print(json.dumps(entry, sort_keys=True) if args.json else _line(entry))
                shown += 1
            after = page.get("next")
            if after is None:
                break
    if not args.json:
        how = "each verified: inclusion proof, payload commitment, signature, query" if args.verify else "not verified"
        print(f"{shown} entries ({how})", file=sys.stderr)
    return 0


# -- key timeline -----------------------------------------------------------------------------------

async def cmd_keys_timeline(args: argparse.Namespace) -> int:
    """Every dated step in a key's life, each event entry fetched with its inclusion proof."""
    async with _client(args) as client:
        data = await client.key_timeline(args.key)
        for key in data.get("keys", []):
            for ev in key.get("timeline", []):
                got = await client.get_entry(int(ev["index"]))
                leaf = Leaf.decode(base64.b64decode(got["leaf"], validate=True))
                if leaf.integrated_ms != ev.get("time_ms"):
                    raise VerifyFailed(f"entry {ev['index']}: the timeline's time does not match the leaf")
                if ev["event"].startswith(("first used", "last used")) and \
                        getattr(leaf.entry, "key_id", b"").hex() != key["key_id"]:
                    raise VerifyFailed(f"entry {ev['index']} is not signed by key {key['key_id']}")
    if args.json:
        _out(data)
        return 0
    for key in data.get("keys", []):
        rec = key["record"]
        print(f"key {key['name']}  {key['key_id']}  {rec.get('key_type', '')}")
        print(f"  valid {fmt_time(rec.get('not_before_ms'))} .. {fmt_time(rec.get('effective_not_after_ms'))}"
              f"  rate limit {rec.get('rate_limit') or 'none'}")
        for ev in key["timeline"]:
            print(f"  {fmt_time(ev['time_ms'])}  #{ev['index']:<8} {ev['event']}")
        if rec.get("compromised_since_ms") is not None:
            print(f"  entries integrated from {fmt_time(rec['compromised_since_ms'])} on are UNTRUSTED (compromised)")
    print(f"(tree size {data.get('tree_size')}; every dated entry verified by an inclusion proof)", file=sys.stderr)
    return 0


# -- parsers ----------------------------------------------------------------------------------------

def _token_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--token", help="reader token, to see payloads (default $TLOG_TOKEN)")


def add_commands(sub: Any, keys: Any) -> None:
    """Add the commands above to ``tlog``'s subparsers (``keys``: the ``tlog keys`` subparsers)."""
    tokens = sub.add_parser("tokens", help="reader tokens (local: works on DIR/log.db)").add_subparsers(
        dest="tokens_command", required=True)
    p = tokens.add_parser("create", help="create a token; prints it once")
    p.add_argument("--data", required=True)
    p.add_argument("--role", choices=["reader"], default="reader")
    p.add_argument("--name", help="who or what holds it (default: the role)")
    p.add_argument("--expires", help="when it stops working: +30d, 12h, or an ISO 8601 time (default: never)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_tokens_create)
    p = tokens.add_parser("revoke", help="revoke a token (effective at once)")
    p.add_argument("--data", required=True)
    p.add_argument("token_id", help="the token's id (or the token)")
    p.set_defaults(run=cmd_tokens_revoke)
    p = tokens.add_parser("list", help="every token, with its status and payload read count")
    p.add_argument("--data", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_tokens_list)

    p = sub.add_parser("erase", help="erase an entry's payload and salt (an operator-signed Erasure entry)")
    p.add_argument("index", type=int)
    p.add_argument("--reason", required=True, help="why (recorded in the log, public)")
    _operator_args(p)
    p.set_defaults(run=cmd_erase)

    p = sub.add_parser("search", help="search entries by key, time and index")
    _log_args(p)
    _token_arg(p)
    p.add_argument("--key", help="key id (hex) or key name (every key that carried the name)")
    p.add_argument("--since", help="integrated at or after: ISO 8601, milliseconds, or --since=-2d / --since=-12h (ago)")
    p.add_argument("--until", help="integrated before (same forms, or now)")
    p.add_argument("--after", type=int, help="only indices above this one (a cursor)")
    p.add_argument("--limit", type=int, help="at most this many results (default: all)")
    p.add_argument("--verify", action="store_true", help="check every result's inclusion proof, payload "
                   "commitment and signature against a verified checkpoint and the proven registry")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(run=cmd_search)

    p = keys.add_parser("timeline", help="a key's life: registered, first/last used, rotated, revoked")
    p.add_argument("key", help="key id (hex) or name")
    _log_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=cmd_keys_timeline)
