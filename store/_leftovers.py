"""What a killed langneurons process leaves behind, and how it is recognised and removed.

Next to a destination: exports, ``import zip``, migrations and new stores are assembled next to
their destination and renamed into place. Their temporary names say whose they are,
``.DEST.langneurons-OP-PID-XXXX.tmp``, so that a process killed before the rename leaves
something recognisable; the next operation of the same kind to the same destination removes it
once it is older than the current process and its writer is gone (:func:`clean_next_to`).

Inside a store (:func:`orphans`): a local store deletes a group by renaming it to a hidden
tombstone first (:func:`tombstone`), so a killed delete leaves ``.NAME~deleted-XXXXXXXX.tmp``,
which ``repair`` removes. A folder under a group that is no Zarr node (no ``zarr.json``) is
sorted by what it holds: only Zarr's bookkeeping files (manifests, journal undo data, no chunk
and no node below) are the remains of a killed write, and are removed; Zarr data (chunks, or
nodes below it) lost its metadata or is what a killed delete on object storage left, and is
never removed (``repair`` restores its ``zarr.json`` from the consolidated metadata where it
can, and reports it otherwise); empty folders and folders holding other files are left alone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import stat
import time
import uuid
from pathlib import Path

from zarr.abc.store import Store
from zarr.core.buffer import default_buffer_prototype

from langneurons.errors import RunExistsError
from langneurons.store import schema

log = logging.getLogger(__name__)

_STARTED = time.time()  # anything older was not made by this process
_TAG = "langneurons"


def tmp_prefix(dest: Path, op: str) -> str:
    """The start of this process's temporary names for ``op`` next to ``dest``."""
    return f".{dest.name}.{_TAG}-{op}-{os.getpid()}-"


def tmp_path(dest: Path, op: str) -> Path:
    """A fresh temporary path for ``op`` next to ``dest`` (not created)."""
    return dest.parent / f"{tmp_prefix(dest, op)}{uuid.uuid4().hex[:8]}.tmp"


def exists_error(dest: Path, fmt: str) -> RunExistsError:
    """The refusal of a ``fmt`` export to a ``dest`` that exists: nothing of the user's is ever
    replaced."""
    return RunExistsError(
        f"{str(dest)!r} already exists; give a new path for the {fmt} export (nothing is replaced)"
    )


def check_new(dest: Path, fmt: str) -> None:
    """Refuse a destination that exists (an export never replaces what a user has)."""
    if dest.exists() or dest.is_symlink():
        raise exists_error(dest, fmt)


def _alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def clean_next_to(dest: Path, op: str) -> list[Path]:
    """Remove what a killed ``op`` to ``dest`` left next to it; return what was removed.

    Only entries named ``.DEST.langneurons-OP-PID-*.tmp`` whose process ``PID`` is gone and that
    were last modified before this process started are removed: never a running operation's
    files, never anything else.
    """
    pattern = re.compile(rf"^\.{re.escape(dest.name)}\.{_TAG}-{re.escape(op)}-(\d+)-[^/]*\.tmp$")
    try:
        entries = list(os.scandir(dest.parent))
    except (FileNotFoundError, NotADirectoryError):
        return []
    removed = []
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None:
            continue
        try:
            info = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if info.st_mtime >= _STARTED or _alive(int(match[1])) or stat.S_ISLNK(info.st_mode):
            continue
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            Path(entry.path).unlink(missing_ok=True)
        log.warning("removed %s, left by a langneurons %s that was killed", entry.path, op)
        removed.append(Path(entry.path))
    return removed


_TOMBSTONE = re.compile(r"^\..+~deleted-[0-9a-f]{8}\.tmp$")


def tombstone(name: str) -> str:
    """The hidden name a folder ``name`` is renamed to before it is deleted."""
    return f".{name}~deleted-{uuid.uuid4().hex[:8]}.tmp"


def _is_chunk(parts: list[str]) -> bool:
    """Whether a key (relative to an orphaned folder) is a chunk: ARRAY/c/0/1/... (ARRAY/c for
    a 0-d array)."""
    return "c" in parts and all(p.isdigit() for p in parts[parts.index("c") + 1 :])


def _is_data(parts: list[str]) -> bool:
    """Whether a key below an orphaned folder is data: a chunk, or a node's metadata."""
    return parts[-1] == "zarr.json" or _is_chunk(parts)


def _zarr_file(parts: list[str]) -> bool:
    """Whether a key (relative to an orphaned folder) is a file Zarr, the journal or a manifest
    writes."""
    return _is_data(parts) or parts[-1] in ("undo.npz", schema.CHUNK_MANIFEST)


@dataclasses.dataclass
class Orphans:
    """Folders under a group that are no Zarr node, by what they hold (see the module)."""

    ours: list[str] = dataclasses.field(default_factory=list)  # tombstones, bookkeeping only
    data: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # path -> its keys
    foreign: list[str] = dataclasses.field(default_factory=list)  # other files: left alone
    empty: list[str] = dataclasses.field(default_factory=list)  # nothing in them: left alone


async def orphans(store: Store) -> Orphans:
    """Folders under a group that are no Zarr node, and tombstones of killed deletes."""
    proto = default_buffer_prototype()
    found = Orphans()

    async def walk(group: str) -> None:
        children = sorted([c async for c in store.list_dir(group)])
        for child in children:
            path = f"{group}/{child}" if group else child
            if await store.exists(path):
                continue  # a file
            if _TOMBSTONE.match(child):
                found.ours.append(path)
                continue
            raw = await store.get(f"{path}/zarr.json", proto)
            if raw is not None:
                if _is_group(raw.to_bytes()):
                    await walk(path)
                continue  # an array, or a node we cannot read: never touched
            keys = [k async for k in store.list_prefix(path + "/")]
            rest = [k[len(path) + 1 :].split("/") for k in keys]
            if not keys:
                found.empty.append(path)
            elif any(_is_data(p) for p in rest):
                found.data[path] = keys  # (beside other files too: never removed)
            elif not all(_zarr_file(p) for p in rest):
                found.foreign.append(path)
            else:
                found.ours.append(path)

    await walk("")
    return found


def _is_group(raw: bytes) -> bool:
    """Whether a ``zarr.json`` describes a group."""
    try:
        meta = json.loads(raw)
    except ValueError:
        return False
    return isinstance(meta, dict) and meta.get("node_type") == "group"
