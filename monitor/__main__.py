"""``tlog-monitor`` / ``python -m monitor``: the command line (spec/monitor.md §8).

Exit codes: 0 stopped normally (SIGINT/SIGTERM) or ``--once`` found nothing serious; 1 ``--once`` raised
an alert or a warning; 2 usage or configuration error (including a state directory in use); 3 the monitor
failed while running.  Every failure is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import signal
import sys
from typing import NoReturn

from aiohttp import web

from tlog.audit import WitnessPolicy
from tlog.errors import TlogError
from tlog.note import Verifier, is_valid_key_name

from .follower import LogConfig
from .service import Monitor, Options
from .state import StateError
from .witness import load_witness_key, parse_witnessed, write_witness_key

__all__ = ["main", "build_parser", "parse_options"]


class UsageError(Exception):
    """Reported as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tlog-monitor", description="Follow tlog logs, gossip with peer monitors, alert on forks, "
                "rollbacks and freezes (spec/monitor.md).")
    p.add_argument("--state", required=True, metavar="DIR", help="state directory (SQLite database, evidence files)")
    p.add_argument("--log", action="append", default=[], metavar="URL", help="a log to follow (repeatable)")
    p.add_argument("--log-key", action="append", default=[], metavar="VKEY",
                   help="the verifier key (string or file) of the --log at the same position; its name is the origin")
    p.add_argument("--listen", metavar="HOST:PORT", help="serve gossip, /status and /metrics here (port 0: any)")
    p.add_argument("--peer", action="append", default=[], metavar="URL", help="a peer monitor (repeatable)")
    p.add_argument("--poll", type=_seconds, default=10.0, metavar="SECONDS", help="poll interval (default 10)")
    p.add_argument("--gossip-interval", type=_seconds, metavar="SECONDS", help="default: the poll interval")
    p.add_argument("--stale-after", type=_seconds, default=300.0, metavar="SECONDS",
                   help="alert when a log gives no valid checkpoint, or withholds one it signed, this long (300)")
    p.add_argument("--max-idle", type=_seconds, metavar="SECONDS",
                   help="also alert when a log's checkpoint does not change for this long (for logs that must grow)")
    p.add_argument("--alerts", metavar="FILE", help="append every alert (JSON lines) to FILE")
    p.add_argument("--webhook", metavar="URL", help="POST every alert (JSON) to URL")
    p.add_argument("--watch-entries", action="store_true",
                   help="download every entry, verify it and its key, report key events")
    p.add_argument("--expiry-warning-days", type=_seconds, default=30.0, metavar="DAYS",
                   help="warn when a key's validity ends within DAYS (30)")
    p.add_argument("--timeout", type=_seconds, default=10.0, metavar="SECONDS", help="HTTP timeout (10)")
    p.add_argument("--once", action="store_true", help="poll, check and gossip once, then exit (1 if alerts)")
    w = p.add_argument_group("witness (C2SP tlog-witness, spec/witness.md)")
    w.add_argument("--witness-key", metavar="FILE",
                   help="cosign with this key (tlog-monitor keygen) and serve POST /add-checkpoint")
    w.add_argument("--witness", action="append", default=[], metavar="VKEY",
                   help="the verifier key (string or file) of a log to witness; its name is the origin (repeatable)")
    w.add_argument("--witness-policy", metavar="FILE",
                   help="check the followed logs' checkpoints for this witness quorum (spec/audit.md §2)")
    return p


def build_keygen_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tlog-monitor keygen", description="Create a witness key (cosignature/v1, spec/witness.md).")
    p.add_argument("--out", required=True, metavar="FILE", help="the key file to create (mode 0600, never overwritten)")
    p.add_argument("--name", required=True, help="the witness's name, e.g. witness.example.com/w1")
    return p


def keygen(argv: list[str]) -> int:
    """``tlog-monitor keygen --out FILE --name NAME``: prints ``witness vkey: <vkey>``."""
    try:
        args = build_keygen_parser().parse_args(argv)
        if not is_valid_key_name(args.name):
            raise UsageError(f"--name {args.name!r} is not a key name (no spaces, no '+')")
        signer = write_witness_key(args.out, args.name)
    except UsageError as exc:
        print(f"tlog-monitor keygen: {exc}", file=sys.stderr)
        return 2
    except FileExistsError:
        print(f"tlog-monitor keygen: refusing to overwrite {args.out}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"tlog-monitor keygen: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"witness vkey: {signer.to_vkey()}")
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1e9:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _vkey(value: str, flag: str = "--log-key") -> tuple[Verifier, str]:
    text = value
    if os.path.isfile(value):
        try:
            with open(value, encoding="utf-8") as f:
                text = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read verifier key file {value}: {exc}") from None
    try:
        verifier = Verifier.from_vkey(text)
    except TlogError as exc:
        raise UsageError(f"{flag} {value!r}: {exc}") from None
    return verifier, text


def _witness_options(args: argparse.Namespace) -> dict:
    out: dict = {"witness_crash_after_persist": os.environ.get("TLOG_MONITOR_TEST_CRASH") == "after-persist"}
    if bool(args.witness) != bool(args.witness_key):
        raise UsageError("--witness-key FILE and at least one --witness VKEY go together")
    if args.witness_key:
        try:
            out["witness_key"] = load_witness_key(args.witness_key)
            out["witnessed"] = parse_witnessed(args.witness, lambda v: _vkey(v, "--witness"))
        except (OSError, ValueError, TlogError) as exc:
            raise UsageError(f"witness: {getattr(exc, 'strerror', None) or exc}") from None
    if args.witness_policy:
        try:
            with open(args.witness_policy, "rb") as f:
                out["witness_policy"] = WitnessPolicy.parse(f.read())
        except (OSError, TlogError) as exc:
            raise UsageError(f"--witness-policy {args.witness_policy}: {getattr(exc, 'strerror', None) or exc}") \
                from None
    return out


def parse_options(argv: list[str] | None) -> tuple[Options, argparse.Namespace]:
    args = build_parser().parse_args(argv)
    if len(args.log) != len(args.log_key) or not (args.log or args.witness):
        raise UsageError("give each --log URL with its --log-key VKEY (at least one pair, or --witness)")
    logs = []
    for url, key in zip(args.log, args.log_key):
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"--log {url!r} is not an http(s) URL")
        verifier, text = _vkey(key)
        logs.append(LogConfig(verifier, text, url.rstrip("/")))
    origins = [c.origin for c in logs]
    if len(set(origins)) != len(origins):
        raise UsageError("two --log-key have the same name (origin)")
    for peer in args.peer:
        if not peer.startswith(("http://", "https://")):
            raise UsageError(f"--peer {peer!r} is not an http(s) URL")
    if args.listen is not None:
        _listen(args.listen)
    opts = Options(state_dir=args.state, logs=logs, peers=args.peer, poll_seconds=args.poll,
                   gossip_seconds=args.gossip_interval, stale_after_seconds=args.stale_after,
                   max_idle_seconds=args.max_idle, alerts_file=args.alerts, webhook=args.webhook,
                   watch_entries=args.watch_entries, expiry_warning_days=args.expiry_warning_days,
                   timeout_seconds=args.timeout, **_witness_options(args))
    return opts, args


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"--listen must be HOST:PORT, not {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _lock_state(directory: str) -> int:
    try:
        os.makedirs(directory, exist_ok=True)
        fd = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StateError(f"cannot use state directory {directory}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StateError(f"another monitor is using the state directory {directory}") from None
    return fd


async def _serve(monitor: Monitor, listen: str | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner = None
    if listen is not None:
        from .app import make_app

        host, port = _listen(listen)
        runner = web.AppRunner(make_app(monitor), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            raise StateError(f"cannot listen on {listen}: {exc.strerror}") from None
        bound = runner.addresses[0]
        print(f"listening on http://{bound[0]}:{bound[1]}", flush=True)
    try:
        await monitor.run(stop)
    finally:
        if runner is not None:
            await runner.cleanup()
    if monitor.failure:
        print(f"tlog-monitor: stopped: {monitor.failure}", file=sys.stderr, flush=True)
        return 3
    return 0


async def _main(opts: Options, args: argparse.Namespace) -> int:
    monitor = Monitor(opts)
    try:
        await monitor.open()
        if monitor.witness is not None:
            print(f"witness vkey: {monitor.witness.vkey}", flush=True)
        if args.once:
            return await monitor.run_once()
        return await _serve(monitor, args.listen)
    finally:
        await monitor.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["keygen"]:
        return keygen(argv[1:])
    try:
        opts, args = parse_options(argv)
        fd = _lock_state(opts.state_dir)
    except (UsageError, StateError) as exc:
        print(f"tlog-monitor: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_main(opts, args))
    except StateError as exc:
        print(f"tlog-monitor: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # one line, never a traceback
        print(f"tlog-monitor: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    finally:
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
