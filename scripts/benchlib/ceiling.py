"""The ceiling for signed appends on this machine: a bare aiohttp handler that only parses the request
and verifies the entry's Ed25519 signature (no sequencing, no storage), on every core (one process
per core, SO_REUSEPORT on one port).  Run: python ceiling.py --port P --procs N; prints "ready"."""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import signal
import socket
import sys

from aiohttp import web

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tlog.entry import EventEntry, Leaf, decode_body  # noqa: E402
from tlog.keys import PublicKey  # noqa: E402


def _serve(sock: socket.socket, keys: dict[bytes, PublicKey]) -> None:
    async def handle(request: web.Request) -> web.Response:
        obj = json.loads(await request.read())
        body = base64.b64decode(obj["entry"], validate=True)
        sig = base64.b64decode(obj["signature"], validate=True)
        entry = decode_body(body)
        if not isinstance(entry, EventEntry):
            return web.json_response({"error": "not an event"}, status=400)
        keys[entry.key_id].verify(Leaf(body, sig, 0).signing_message(), sig)
        return web.json_response({"ok": True}, status=201)

    app = web.Application()
    app.router.add_post("/v1/entries", handle)
    web.run_app(app, sock=sock, print=None, access_log=None, handle_signals=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--keys", required=True, help="file with one public key (ed25519:...) per line")
    args = ap.parse_args()
    with open(args.keys) as f:
        keys = {k.key_id: k for k in (PublicKey.from_text(line.strip()) for line in f if line.strip())}
    procs = []
    for _ in range(args.procs):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", args.port))
        sock.listen(1024)
        p = multiprocessing.Process(target=_serve, args=(sock, keys), daemon=True)
        p.start()
        sock.close()
        procs.append(p)
    print("ready", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        for p in procs:
            p.join()
    finally:
        for p in procs:
            p.terminate()


if __name__ == "__main__":
    main()
