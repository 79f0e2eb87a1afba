"""Getting a store from a path or URL: open one, create one, or unpack a zip export into one."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import zarr.storage

from langneurons._deprecate import renamed_keywords
from langneurons._progress import progress
from langneurons.errors import (
    InvalidNameError,
    NotAStoreError,
    RunExistsError,
    StoreNotFoundError,
    StoreValidationError,
)
from langneurons.store import _leftovers, _nodes, _remote, _zip, schema
from langneurons.store._store import ActivationStore, repair_hint

StorePath = str | os.PathLike[str]


@renamed_keywords(url="store")
def open_store(
    store: StorePath, mode: Literal["r", "r+"] = "r", *, any_version: bool = False
) -> ActivationStore:
    """Open an existing langneurons store.

    Parameters
    ----------
    store
        A local path, ``file://`` or ``memory://`` URL (any fsspec URL zarr supports), or a
        ``.zip`` file made by :meth:`ActivationStore.export_zip` (read-only). (Named ``url``
        before 0.2; that name still works, with a DeprecationWarning.)
    mode
        ``"r"`` to read, ``"r+"`` to write.
    any_version
        Open a store of another schema version without refusing it; only ``repair`` (whose
        journal is the same in every version) and :func:`migrate_store` should need this.
    """
    url = os.fspath(store)
    path = _nodes.local_path(url)
    if path is not None and not path.exists():
        raise StoreNotFoundError(
            f"store {url!r} does not exist; "
            + (_backup_hint(path, url) or "check the path or create it with `langneurons import`")
        )
    if path is not None and path.is_file() and not url.endswith(".zip"):
        raise NotAStoreError(f"{url!r} is a file, not a Zarr store directory")
    try:
        zstore = _nodes.zarr_store(url, read_only=mode == "r")
    except (zipfile.BadZipFile, OSError) as exc:
        raise NotAStoreError(f"{url!r} cannot be opened as a Zarr store: {exc}") from exc
    raw = _nodes.raw(zstore, "zarr.json")
    if raw is None:
        if path is None and not url.endswith(".zip"):
            raise StoreNotFoundError(f"store {url!r} does not exist (no zarr.json found)")
        raise NotAStoreError(
            f"{url!r} is not a Zarr v3 store (no zarr.json); point to a store made by langneurons"
        )
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise NotAStoreError(f"{url!r} has an unreadable zarr.json: {exc}") from exc
    attrs = meta.get("attributes", {}).get(schema.STORE_ATTR)
    if meta.get("node_type") != "group" or not isinstance(attrs, dict):
        raise NotAStoreError(
            f"{url!r} is a Zarr store but not a langneurons store; create one with "
            "`langneurons import` or langneurons.create_store"
        )
    if not any_version:
        schema.check_version(attrs.get("schema_version"), f"store {url!r}", url)
    return ActivationStore(url, zstore, read_only=mode == "r")


@renamed_keywords(url="store")
def create_store(store: StorePath, *, exist_ok: bool = True) -> ActivationStore:
    """Create an empty store, or open an existing one for writing when ``exist_ok``.

    ``store`` is a local path or any fsspec URL zarr supports (named ``url`` before 0.2; that
    name still works, with a DeprecationWarning).
    """
    url = os.fspath(store)
    if url.endswith(".zip"):
        raise InvalidNameError(
            f"cannot write into zip {url!r}; create a directory store and export it"
        )
    path = _nodes.local_path(url)
    if path is not None and path.is_file():
        raise NotAStoreError(f"{url!r} is a file, not a Zarr store directory; choose a new path")
    if path is not None and path.is_dir() and not (path / "zarr.json").exists():
        if any(path.iterdir()):
            raise NotAStoreError(
                f"{url!r} is a non-empty directory that is not a Zarr store; choose a new path"
            )
    zstore = _nodes.zarr_store(url, read_only=False)
    if _nodes.exists(zstore, "zarr.json"):
        if not exist_ok:
            raise RunExistsError(f"store {url!r} already exists; open it instead")
        return open_store(url, mode="r+")
    if path is None:
        # a store on S3 is created under its write lock (one of several concurrent creators
        # writes the root, the others open it); other URLs catch the lost race instead
        lock = _remote.object_lock(zstore, url)
        with lock if lock is not None else contextlib.nullcontext():
            if _nodes.exists(zstore, "zarr.json"):
                if not exist_ok:
                    raise RunExistsError(f"store {url!r} already exists; open it instead")
                return open_store(url, mode="r+")
            try:
                _nodes.init_store(zstore)
            except FileExistsError:
                if not exist_ok:
                    raise RunExistsError(f"store {url!r} already exists; open it instead") from None
                return open_store(url, mode="r+")
        return ActivationStore(url, zstore, read_only=False)
    # Local stores are built next to their path and renamed into place, so a concurrent
    # creator never sees a half-made store; the loser of the race opens the winner's.
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise NotAStoreError(
            f"cannot create store {url!r}: {str(blocking)!r} is a file, not a folder; "
            "choose a path inside a folder"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    _leftovers.clean_next_to(path, "create")
    tmp = _leftovers.tmp_path(path, "create")
    try:
        _nodes.init_store(zarr.storage.LocalStore(tmp, read_only=False))
        try:
            os.rename(tmp, path)
        except OSError:
            if not (path / "zarr.json").exists():
                raise
            if not exist_ok:
                raise RunExistsError(f"store {url!r} already exists; open it instead") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return open_store(url, mode="r+")


@renamed_keywords(dest="store")
def import_zip(src: StorePath, store: StorePath) -> ActivationStore:
    """Unpack a zip export into a new directory store ``store`` (which must not exist).

    Every member must be a plain relative key of a Zarr store: absolute names, ``..``
    components, backslashes, drive letters and links are refused before anything is written
    (no zip-slip). The store is unpacked next to ``store``, checked, and only then renamed into
    place, so a refused or failed import leaves nothing behind. (``store`` was named ``dest``
    before 0.2; that name still works, with a DeprecationWarning.)
    """
    source = Path(src)

    def check(unpacked: Path) -> None:
        problems = open_store(unpacked).validate()
        if problems:
            # the unpacked folder is removed: a hint must name the archive, never that folder
            hint = repair_hint(str(source), archive=True)
            first = problems[0].replace(repair_hint(str(unpacked)), hint)
            raise StoreValidationError(f"{str(source)!r} holds an invalid store: {first}")

    url = os.fspath(store)
    if _nodes.local_path(url) is None:
        return _import_zip_remote(source, url, check)
    dest = Path(url)
    _zip.unpack(source, dest, check)
    return open_store(dest, mode="r+")


def _import_zip_remote(source: Path, url: str, check: Callable[[Path], None]) -> ActivationStore:
    """Unpack a zip export into a new store at a URL (object storage), checked before upload.

    The archive is unpacked and validated locally first (as for a directory), then uploaded with
    the root ``zarr.json`` last: until that key is written no reader sees a store at ``url``, and
    an upload that fails deletes what it had written.
    """
    if url.endswith(".zip"):
        raise InvalidNameError(f"cannot unpack into zip {url!r}; give a directory or bucket path")
    zstore = _nodes.zarr_store(url, read_only=False)
    if _nodes.keys(zstore):
        raise RunExistsError(
            f"{url!r} already holds objects; give a new path for the store (nothing is replaced)"
        )
    with tempfile.TemporaryDirectory(prefix="langneurons-import-") as work:
        local = Path(work) / "store.zarr"
        _zip.unpack(source, local, check)
        keys = _nodes.keys(zarr.storage.LocalStore(local, read_only=True))
        ordered = [k for k in keys if k != "zarr.json"] + ["zarr.json"]
        written: list[str] = []
        try:
            with progress("upload", total=len(ordered), unit="file") as task:
                for key in ordered:
                    _nodes.put(zstore, key, (local / key).read_bytes())
                    written.append(key)
                    task.update()
        except BaseException:
            for key in reversed(written):
                with contextlib.suppress(Exception):
                    _nodes.delete(zstore, key)
            raise
    return open_store(url, mode="r+")


def _backup_hint(path: Path, url: str) -> str | None:
    """How to recover a store that an interrupted in-place migration left as its backup."""
    parent = path.parent
    if not parent.is_dir():
        return None
    backups = sorted(parent.glob(f"{glob.escape(path.name)}.schema*.bak"))
    if not backups:
        return None
    return (
        f"an interrupted `langneurons migrate` left the original at {str(backups[-1])!r}: "
        f"rename it back to {url!r} and run the migration again"
    )
