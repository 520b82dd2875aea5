"""``tlog init``: create a log (keys, database, genesis entry) in a new data directory."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from ..checkpoint import Checkpoint, sign_checkpoint
from ..entry import Genesis, Leaf, sign_entry
from ..hashing import EMPTY_ROOT
from ..keys import KeyType, PrivateKey
from ..note import Signer, vkey_for
from .config import DAY_MS, ConfigError, LogConfig, write_private_file
from .sequencer import Pending, Sequencer
from .sqlite import create_storage
from .storage import Head

__all__ = ["InitResult", "init_log"]


@dataclass(frozen=True)
class InitResult:
    vkey: str
    operator_public: str
    data_dir: str


def _prepare_dir(data_dir: str) -> None:
    if os.path.exists(data_dir):
        if not os.path.isdir(data_dir):
            raise ConfigError(f"{data_dir} exists and is not a directory")
        taken = [n for n in ("config.json", "log.db", "log.key", "operator.key") if
                 os.path.exists(os.path.join(data_dir, n))]
        if taken:
            raise ConfigError(f"{data_dir} already holds a log ({', '.join(taken)}); refusing to overwrite")
    else:
        os.makedirs(data_dir, mode=0o700)


async def init_log(data_dir: str, origin: str, *, max_key_lifetime_days: int = 365,
                   max_skew_seconds: int = 300, clock_ms=None) -> InitResult:
    """Create keys (0600), config, database and the genesis entry (index 0) of a new log."""
    clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
    config = LogConfig(origin=origin, max_key_lifetime_days=max_key_lifetime_days,
                       max_skew_seconds=max_skew_seconds)
    signer = Signer.generate(origin)
    operator = PrivateKey.generate(KeyType.ED25519)
    now = clock_ms()
    genesis = Genesis(origin, operator.public_key, now, max_key_lifetime_days * DAY_MS,
                      max_skew_seconds * 1000)
    _prepare_dir(data_dir)
    write_private_file(os.path.join(data_dir, "log.key"), signer.to_skey().encode() + b"\n")
    write_private_file(os.path.join(data_dir, "operator.key"), operator.to_pem())
    vkey = vkey_for(signer)
    with open(os.path.join(data_dir, "log.vkey"), "x") as f:
        f.write(vkey + "\n")
    with open(os.path.join(data_dir, "operator.pub"), "x") as f:
        f.write(operator.public_key.to_text() + "\n")
    empty = Head(0, EMPTY_ROOT, now, sign_checkpoint(Checkpoint(origin, 0, EMPTY_ROOT), signer))
    storage = await create_storage(os.path.join(data_dir, "log.db"), empty, {"origin": origin.encode()})
    try:
        seq = Sequencer(storage, signer, origin, clock_ms=clock_ms)
        await seq.load()
        seq.start()
        body = genesis.encode()
        leaf = Leaf(body, sign_entry(genesis, operator), now)
        await seq.submit(Pending(body, leaf.signature, leaf.identity(), operator=True))
        await seq.stop()
    finally:
        await storage.close()
    config.save(data_dir)
    return InitResult(vkey, operator.public_key.to_text(), data_dir)
