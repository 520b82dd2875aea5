"""The library's error types.

Every low-level exception (``ValueError``, ``binascii.Error``, ``UnicodeDecodeError``,
``cryptography.exceptions.InvalidSignature`` …) raised while handling *input* is converted to one of
these, so callers catch ``TlogError`` and nothing else.  A broken *invariant* (our own bug, or storage
that lies) is not a ``TlogError``: it raises :class:`InvariantError`, a subclass of ``AssertionError``
that survives ``python -O``, so it fails loudly and differently.
"""

from __future__ import annotations

__all__ = [
    "TlogError",
    "FormatError",
    "ProofError",
    "SignatureError",
    "KeyRegistryError",
    "ConsistencyError",
    "InvariantError",
]


class TlogError(Exception):
    """Base class of every error the library raises for bad input or a failed verification."""


class FormatError(TlogError):
    """Input that does not parse: wrong framing, non-canonical numbers, bad base64, wrong lengths."""


class ProofError(TlogError):
    """A Merkle proof that does not verify or is malformed (wrong length, index out of range …).

    ``expected`` and ``computed`` carry the two roots when the failure is a root mismatch, so the caller
    can report evidence.
    """

    def __init__(self, message: str, *, expected: bytes | None = None, computed: bytes | None = None):
        super().__init__(message)
        self.expected = expected
        self.computed = computed


class SignatureError(TlogError):
    """A signature that is malformed, non-canonical, or does not verify under the key it claims."""


class KeyRegistryError(TlogError):
    """An entry whose provisioning key is unknown, not yet valid, expired or revoked at its index."""


class ConsistencyError(TlogError):
    """Two signed checkpoints that cannot both be honest: a fork, a rollback or a failed consistency proof.

    Carries the evidence: both signed checkpoints (note bytes) and the proof (list of hashes) that fails.
    """

    def __init__(self, message: str, *, old_note: bytes | None = None, new_note: bytes | None = None,
                 proof: list[bytes] | None = None):
        super().__init__(message)
        self.old_note = old_note
        self.new_note = new_note
        self.proof = proof or []


class InvariantError(AssertionError):
    """A broken internal invariant: never caused by bad input.  Not a TlogError on purpose."""
