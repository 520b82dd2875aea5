"""tlog: a verifiable audit log (RFC 6962 Merkle tree, C2SP checkpoints, tiles and witnesses)."""

__version__ = "0.1.0"
