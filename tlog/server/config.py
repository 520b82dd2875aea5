"""A log's data directory and its configuration.

Layout of ``DIR`` (created by ``tlog init``, never implicitly):

* ``config.json``  — origin and tunables (below); the operator may edit it.
* ``log.key``      — the checkpoint signer (C2SP signed-note private key string), mode 0600.
* ``operator.key`` — the operator's provisioning-type key (PKCS#8 PEM), mode 0600; signs key events.
* ``log.vkey``     — the log's verifier key string (public).
* ``operator.pub`` — the operator's public key (``ed25519:BASE64``).
* ``log.db``       — the SQLite database (WAL mode: also ``log.db-wal`` and ``log.db-shm``).
* ``log.db.paths`` — the path cache (tlog/server/pathcache.py): stored inclusion paths by offset, derived
  from ``log.db``, safe to delete, not part of a backup.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import asdict, dataclass, field, fields

__all__ = ["LogConfig", "ConfigError", "check_private_file", "write_private_file", "DAY_MS"]

DAY_MS = 86_400_000


class ConfigError(Exception):
    """A data directory or configuration that cannot be used (a clear message, never a traceback)."""


@dataclass
class LogConfig:
    origin: str
    max_key_lifetime_days: int = 365
    max_skew_seconds: int = 300
    max_body_bytes: int = 1 << 20
    max_payload_bytes: int = 256 * 1024
    max_batch: int = 4096
    max_pending: int = 50_000
    default_rate_limit: int = 0
    request_timeout_seconds: float = 30.0
    # Retention (tlog/server/retention.py, spec/privacy.md): payloads integrated more than
    # ``retention_days`` ago are erased by operator-signed Erasure entries (the server signs them with
    # DIR/operator.key), checked every ``retention_interval_seconds``.  0 keeps payloads forever.
    retention_days: float = 0
    retention_interval_seconds: float = 3600.0
    # Self-check (tlog/server/scrub.py): every ``scrub_interval_seconds`` the server re-hashes its stored
    # leaves and tiles against its signed checkpoints and stops writing on a mismatch.  0 disables it.
    scrub_interval_seconds: float = 3600.0
    # Start-up (tlog/server/scrub.py): ``PRAGMA quick_check`` reads the whole database.  Up to this many
    # bytes (database + write-ahead log) it runs before the server starts, which then refuses a damaged
    # file; above it, it runs in the background right after start and a failure stops writes (reads go
    # on), as a failed scrub does — a 4.8 GB log whose pages left the OS cache took minutes to check.
    startup_check_max_bytes: int = 1 << 30
    # Witnesses (tlog/server/witnessing.py, spec/witness.md §3): every new checkpoint is submitted to each
    # (C2SP tlog-witness), [{"name": ..., "vkey": <cosignature/v1 vkey>, "url": <submission prefix>}, ...];
    # a checkpoint cosigned by ``witness_quorum`` of them is served at /v1/checkpoint/cosigned.
    witnesses: list = field(default_factory=list)
    witness_quorum: int = 0
    witness_timeout_seconds: float = 10.0

    @staticmethod
    def path(data_dir: str) -> str:
        return os.path.join(data_dir, "config.json")

    @classmethod
    def load(cls, data_dir: str) -> LogConfig:
        path = cls.path(data_dir)
        if not os.path.isdir(data_dir):
            raise ConfigError(f"no data directory {data_dir!r}: create a log with `tlog init --data "
                              f"{data_dir} --origin ORIGIN` first")
        if not os.path.isfile(path):
            raise ConfigError(f"{data_dir!r} holds no log (no config.json): run `tlog init` first")
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.loads(f.read())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from exc
        known = {f.name: f.type for f in fields(cls)}
        if not isinstance(raw, dict) or set(raw) - set(known) or "origin" not in raw:
            raise ConfigError(f"{path}: unknown or missing settings {sorted(set(raw) ^ set(known))}")
        config = cls(**raw)
        for name in ("retention_days", "retention_interval_seconds", "scrub_interval_seconds"):
            value = getattr(config, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
                raise ConfigError(f"{path}: {name} must be a number >= 0, not {value!r}")
        value = config.startup_check_max_bytes
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{path}: startup_check_max_bytes must be an integer >= 0, not {value!r}")
        if config.retention_interval_seconds <= 0:
            raise ConfigError(f"{path}: retention_interval_seconds must be > 0")
        from .witnessing import WitnessingPolicy  # deferred: witnessing imports this module

        try:
            WitnessingPolicy.from_config(config)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        return config

    def save(self, data_dir: str) -> None:
        with open(self.path(data_dir), "x", encoding="utf-8") as f:
            json.dump(asdict(self), f, indent=2)
            f.write("\n")


def write_private_file(path: str, data: bytes) -> None:
    """Create ``path`` with mode 0600 and write ``data``; refuses to overwrite an existing file."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise ConfigError(f"refusing to overwrite existing key file {path}") from exc
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def check_private_file(path: str) -> bytes:
    """Read a private key file, refusing one that others can read or write."""
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise ConfigError(f"key file {path} does not exist") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"key file {path} is accessible by group or others (mode "
                          f"{stat.S_IMODE(st.st_mode):o}); run: chmod 600 {path}")
    with open(path, "rb") as f:
        return f.read()
