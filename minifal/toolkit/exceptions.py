"""``fal.toolkit.exceptions``: the errors the toolkit's files and key-value store raise.

fal spells the base class ``FalTookitException`` (sic); the name is kept so that ``except`` clauses
written for fal catch the same errors here.
"""

from __future__ import annotations


class FalTookitException(Exception):
    """Base class of every toolkit error."""


class FileUploadException(FalTookitException):
    """A file could not be stored in its repository."""


class FileUploadFallbackException(FileUploadException):
    """The repository and every fallback failed; the message lists each attempt in order."""


class KVStoreException(FalTookitException):
    """A key-value store operation failed (bad key, store unreachable, store error)."""


__all__ = [
    "FalTookitException",
    "FileUploadException",
    "FileUploadFallbackException",
    "KVStoreException",
]
