"""File-system helpers every room may use (imports nothing of langneurons' rooms)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask (read by setting it and setting it back, under a lock)."""
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def apply_umask(path: str | os.PathLike[str]) -> None:
    """Give a file or folder made by ``tempfile`` (0600 / 0700) the mode of an ordinary one.

    ``tempfile.mkstemp`` and ``mkdtemp`` create private paths; a file that is renamed into place
    as a user's output (an export, an unpacked store, a report) should get the permissions of any
    other file the user makes: ``0666`` (files) or ``0777`` (folders) less the umask.
    """
    p = Path(path)
    base = 0o777 if p.is_dir() else 0o666
    p.chmod(base & ~current_umask())


def unwritable_folder(path: str | os.PathLike[str]) -> Path | None:
    """The folder that stops ``path`` from being created (its nearest existing ancestor, when
    that is not a folder this process can write and enter), or None when it can be."""
    p = Path(path)
    parent = next((a for a in p.parents if a.exists()), Path("."))
    return None if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK) else parent
