"""The kvoff exception hierarchy.

Every error kvoff raises on bad input is a :class:`KvoffError`, and also the built-in
exception a Python user would naturally catch: an unknown hash is a ``KeyError``, a bad
argument a ``ValueError``, a hash of the wrong type a ``TypeError``. A failed call leaves
the state it was given exactly as it was.
"""

from __future__ import annotations

__all__ = [
    "HashTypeError",
    "InvalidArgumentError",
    "InvalidStateError",
    "KvoffError",
    "UnknownHashError",
    "UnknownJobError",
]


class KvoffError(Exception):
    """Base class of every error kvoff raises."""


class UnknownHashError(KvoffError, KeyError):
    """A block hash the manager does not hold."""

    def __str__(self) -> str:
        # KeyError's __str__ quotes its argument as a repr; keep the message readable.
        return str(self.args[0]) if self.args else ""


class UnknownJobError(KvoffError, KeyError):
    """A job id that was never submitted, or has already completed."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class InvalidStateError(KvoffError, ValueError):
    """The call is well-formed but the current state does not allow it (a load of a block that
    is not ready, a completion with nothing in flight, a double completion)."""


class InvalidArgumentError(KvoffError, ValueError):
    """A malformed argument: duplicate hashes in one call, sizes out of range, unknown names,
    mismatched lengths, ids out of range."""


class HashTypeError(KvoffError, TypeError):
    """A block hash that is neither ``bytes`` nor ``int``."""
