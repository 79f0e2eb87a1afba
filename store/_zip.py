"""A store as one zip file: writing an export, and unpacking one safely.

An export is a plain zip of the store's keys (stored, not compressed: chunks are compressed
already), which zarr's ``ZipStore`` and so xarray read as they are. Unpacking refuses any member
that is not a plain relative key (no zip-slip). Both build their output next to the target and
rename it into place, so a failed export or import leaves nothing behind.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from langneurons._fs import apply_umask, unwritable_folder
from langneurons._progress import progress
from langneurons.errors import (
    InvalidNameError,
    NotAStoreError,
    OutOfSpaceError,
    RunExistsError,
    StoreNotFoundError,
)
from langneurons.store import _leftovers


def check_target(dest: Path) -> None:
    """An export goes to a ``.zip`` path."""
    if dest.suffix != ".zip":
        raise InvalidNameError(f"export target {str(dest)!r} must end in .zip")


def _place(tmp: Path, dest: Path) -> None:
    """Rename ``tmp`` to ``dest`` unless ``dest`` appeared meanwhile (a hard link fails on an
    existing name, where a rename would replace it)."""
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise _leftovers.exists_error(dest, "zip") from None
    except OSError:  # a file system without hard links: check, then rename
        if dest.exists() or dest.is_symlink():
            raise _leftovers.exists_error(dest, "zip") from None
        os.replace(tmp, dest)
        return
    tmp.unlink()


def write(dest: Path, items: Iterable[tuple[str, bytes]], n: int) -> Path:
    """Write ``n`` ``(key, bytes)`` items as the new zip ``dest``, atomically; a ``dest`` that
    exists (a file, a folder, a link) is never replaced."""
    check_target(dest)
    _leftovers.check_new(dest, "zip")
    dest.parent.mkdir(parents=True, exist_ok=True)
    _leftovers.clean_next_to(dest, "export")
    fd, tmp = tempfile.mkstemp(
        prefix=_leftovers.tmp_prefix(dest, "export"), suffix=".tmp", dir=dest.parent
    )
    os.close(fd)
    try:
        with (
            zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf,
            progress("export", total=n, unit="file") as task,
        ):
            for key, data in items:
                zf.writestr(key, data)
                task.update()
        apply_umask(tmp)  # mkstemp makes it private; an export is an ordinary file
        _place(Path(tmp), dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def unpack(src: Path, dest: Path, check: Callable[[Path], None]) -> None:
    """Unpack the zip ``src`` into the new directory ``dest`` (which must not exist).

    Every member must be a plain relative key of a Zarr store: absolute names, ``..``
    components, backslashes, drive letters and links are refused before anything is written.
    The archive is unpacked next to ``dest``, passed to ``check`` (which raises to refuse it),
    and only then renamed into place.
    """
    if dest.exists():
        raise RunExistsError(f"{str(dest)!r} already exists; give a new path for the store")
    if not src.exists():
        raise StoreNotFoundError(f"zip {str(src)!r} does not exist; check the path")
    try:
        archive = zipfile.ZipFile(src)
    except (zipfile.BadZipFile, OSError) as exc:
        raise NotAStoreError(f"{str(src)!r} is not a zip file: {exc}") from exc
    with archive:
        members = archive.infolist()
        for info in members:
            check_member(src, info)
        if "zarr.json" not in {m.filename for m in members}:
            raise NotAStoreError(f"{str(src)!r} holds no zarr.json; it is not a store export")
        check_sizes(src, archive, members)
        dest.parent.mkdir(parents=True, exist_ok=True)
        check_space(dest, sum(m.file_size for m in members if not m.is_dir()))
        _leftovers.clean_next_to(dest, "import")
        tmp = Path(
            tempfile.mkdtemp(
                prefix=_leftovers.tmp_prefix(dest, "import"), suffix=".tmp", dir=dest.parent
            )
        )
        try:
            root = tmp.resolve()
            with progress("import zip", total=len(members), unit="file") as task:
                for info in members:
                    task.update()
                    if info.is_dir():
                        continue
                    target = (tmp / info.filename).resolve()
                    if root not in target.parents:  # belt and braces after check_member
                        raise InvalidNameError(f"zip member {info.filename!r} escapes the store")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(info) as fh, open(target, "wb") as out:
                        shutil.copyfileobj(fh, out)
            check(tmp)
            apply_umask(tmp)  # mkdtemp makes it private; the store is an ordinary folder
            os.rename(tmp, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


METADATA_LIMIT = 256 * 2**20  # a zarr.json (the consolidated one included) or an unsized chunk
CHUNK_OVERHEAD = 1024  # blosc's header (16-32 bytes) and the 4-byte checksum, with room to spare


def check_sizes(src: Path, archive: zipfile.ZipFile, members: list[zipfile.ZipInfo]) -> None:
    """Refuse a member that claims more bytes than its place in the store can hold (a zip bomb).

    A chunk of a fixed-size array holds at most its chunk's bytes plus the codec overhead, as its
    array's ``zarr.json`` in the archive says; every other member is bounded by
    :data:`METADATA_LIMIT`. ``zipfile`` never unpacks more than a member claims.
    """
    bounds: dict[str, int] = {}
    for info in members:
        name = info.filename
        if name.endswith("/zarr.json") and info.file_size <= METADATA_LIMIT:
            bound = _chunk_bound(archive, info)
            if bound is not None:
                bounds[name[: -len("/zarr.json")]] = bound
    for info in members:
        match = _CHUNK.match(info.filename)
        limit = bounds.get(match["array"], METADATA_LIMIT) if match else METADATA_LIMIT
        if info.file_size > limit:
            raise NotAStoreError(
                f"{str(src)!r}: member {info.filename!r} unpacks to {info.file_size} bytes, more "
                f"than the {limit} its place in a store can hold; refusing the archive "
                "(a damaged export or a zip bomb)"
            )


_CHUNK = re.compile(r"^(?P<array>.+)/c(/\d+)*$")


def _chunk_bound(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> int | None:
    """The largest a stored chunk of this array can be, or None (not an array, unsized type)."""
    try:
        meta = json.loads(archive.read(info))
        itemsize = np.dtype(meta["data_type"]).itemsize
        shape = meta["chunk_grid"]["configuration"]["chunk_shape"]
        cells = math.prod(int(n) for n in shape)
    except (ValueError, TypeError, KeyError, zipfile.BadZipFile):
        return None  # not a fixed-size array: the general bound applies
    if meta.get("node_type") != "array" or np.dtype(meta["data_type"]).kind not in "biuf":
        return None
    return cells * itemsize + CHUNK_OVERHEAD


def check_space(dest: Path, needed: int) -> None:
    """Refuse to start writing ``needed`` bytes next to ``dest`` when the disk has less free
    (or when its folder cannot be written at all: a read-only file system reports no space)."""
    parent = unwritable_folder(dest)
    if parent is not None:
        raise PermissionError(
            f"cannot write {str(dest)!r}: its folder {str(parent)!r} is not writable; unpack "
            "into a folder you can write"
        )
    free = shutil.disk_usage(dest.parent).free
    if needed > free:
        raise OutOfSpaceError(
            f"unpacking needs {needed} bytes next to {str(dest)!r} but only {free} are free; "
            "free some space or unpack elsewhere"
        )


def check_member(src: Path, info: zipfile.ZipInfo) -> None:
    """Refuse a member that would land outside the store, or that is a link."""
    name = info.filename
    bad = (
        name.startswith("/")
        or "\\" in name
        or re.match(r"^[A-Za-z]:", name) is not None
        or any(part in ("", ".", "..") for part in name.rstrip("/").split("/"))
    )
    if bad:
        raise InvalidNameError(
            f"{str(src)!r}: member {name!r} would escape the store (absolute, '..' or drive); "
            "refusing the whole archive"
        )
    mode = (info.external_attr >> 16) & 0o170000
    if mode == 0o120000:
        raise InvalidNameError(f"{str(src)!r}: member {name!r} is a link; refusing the archive")
