"""Every error langneurons raises on purpose.

Each subclasses :class:`LangneuronsError` and a builtin, so callers can catch either.
Messages are one line: what is wrong, then what to do about it.
"""

from __future__ import annotations

import errno


class LangneuronsError(Exception):
    """Base class of all langneurons errors (the CLI prints these as one line)."""


class StoreNotFoundError(LangneuronsError, FileNotFoundError):
    """The store path does not exist."""


class NotAStoreError(LangneuronsError, ValueError):
    """The path exists but is not a langneurons Zarr store."""


class SchemaVersionError(LangneuronsError, ValueError):
    """The store was written with a schema version this release cannot read."""


class RunNotFoundError(LangneuronsError, LookupError):
    """The named run is not in the store."""


class RunExistsError(LangneuronsError, FileExistsError):
    """A run of that name already exists."""


class InvalidNameError(LangneuronsError, ValueError):
    """A run or result name would escape the store or collide with reserved names."""


class AlreadyWrittenError(LangneuronsError, FileExistsError):
    """A write with the same unit key was already committed to the run."""


class StoreValidationError(LangneuronsError, ValueError):
    """A store or run breaks the schema (dims, dtypes, counts)."""


class InterruptedWriteError(LangneuronsError, RuntimeError):
    """A run holds a write that never finished; it must be rolled back first."""


class CorruptStoreError(LangneuronsError, OSError):
    """A chunk file of the store is missing or fails its checksum."""


class RunChangedError(LangneuronsError, RuntimeError):
    """A run (or result) changed while it was being read; open it again."""


class IncompleteRunError(LangneuronsError, RuntimeError):
    """An extraction planned units that are not all committed; an analysis would see part of it."""


class InputFormatError(LangneuronsError, ValueError):
    """An input file (activation, mask, corpus) has the wrong structure."""


class ParameterError(LangneuronsError, ValueError):
    """A parameter is outside its allowed values."""


class NoValidLambdaError(LangneuronsError, ValueError):
    """No lambda in the search range satisfies the automatic-lambda condition."""


class MissingDependencyError(LangneuronsError, ImportError):
    """An optional dependency (an extra) is needed for this operation."""


class RemoteStoreError(LangneuronsError, OSError):
    """An object store cannot be reached, or refuses to talk without credentials."""


class StorePermissionError(LangneuronsError, PermissionError):
    """The object store denies reading or writing a store with the credentials given."""


class LockTimeoutError(LangneuronsError, TimeoutError):
    """Another process held a store's write lock for longer than a writer would wait."""


class LockLostError(LangneuronsError):
    """A writer's lease on a store's write lock ran out before it finished (it writes no more)."""


class OutOfSpaceError(LangneuronsError, OSError):
    """A write ran out of disk space, hit the file-size limit, or ran out of memory."""


#: The errnos of a write that ran out of room, and how a message names each.
NO_SPACE: dict[int, str] = {
    errno.ENOSPC: "out of disk space",
    errno.EDQUOT: "over the disk quota",
    errno.EFBIG: "over the file-size limit (ulimit -f)",
}


class LangneuronsWarning(UserWarning):
    """Base class of langneurons' warnings (the CLI prints these as one line)."""


class LambdaAtBoundWarning(LangneuronsWarning):
    """The automatic lambda ended at the top of its search range: the largest may lie above."""


__all__ = [
    "NO_SPACE",
    "LangneuronsError",
    "LangneuronsWarning",
    "LambdaAtBoundWarning",
    "StoreNotFoundError",
    "NotAStoreError",
    "SchemaVersionError",
    "RunNotFoundError",
    "RunExistsError",
    "InvalidNameError",
    "StoreValidationError",
    "AlreadyWrittenError",
    "InterruptedWriteError",
    "CorruptStoreError",
    "RunChangedError",
    "IncompleteRunError",
    "InputFormatError",
    "ParameterError",
    "NoValidLambdaError",
    "MissingDependencyError",
    "OutOfSpaceError",
    "RemoteStoreError",
    "LockLostError",
    "LockTimeoutError",
    "StorePermissionError",
]
