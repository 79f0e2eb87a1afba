"""Limits: zip bombs, out of disk space or memory, and the remaining tracebacks of issue 18.

Every case ends in one line that names the problem and the fix, a non-zero exit code, and nothing
half-written next to or inside the store.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import zarr

from langneurons.errors import NotAStoreError, OutOfSpaceError
from langneurons.store import create_store, import_zip, open_store

from .conftest import make_counts, run_cli, write_reference_files

RUN = "m/base"
IDENTIFY = ["--run", RUN, "--method", "lape", "--top-rate", "0.2", "--role", "all"]


def _store(path: Path) -> Path:
    store = create_store(path)
    store.create_run(RUN, n_layers=3, n_neurons=7, counts=make_counts(["en", "de", "fr"]))
    return path


def _names(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


# ------------------------------------------------------------------ 8. zip bomb
def _bomb(tmp: Path, member: str, size: int) -> Path:
    """An export whose ``member`` is replaced by ``size`` zero bytes (deflated: a few KB)."""
    _store(tmp / "s.zarr")
    good = open_store(tmp / "s.zarr").export_zip(tmp / "good.zip")
    bomb = tmp / "bomb.zip"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            if info.filename != member:
                out.writestr(info, src.read(info))
        out.writestr(member, b"\0" * size)
    return bomb


@pytest.mark.parametrize(
    ("member", "size", "limit"),
    [
        # a chunk of n_active (1, 1, 3, 7) int64: 168 bytes, plus the codec overhead
        (f"{RUN}/n_active/c/0/0/0/0", 2**20, 168 + 1024),
        ("zarr.json", 256 * 2**20 + 1, 256 * 2**20),
    ],
)
def test_a_zip_bomb_is_refused_before_anything_is_written(
    tmp_path: Path, member: str, size: int, limit: int, capsys: pytest.CaptureFixture[str]
) -> None:
    bomb = _bomb(tmp_path, member, size)
    assert bomb.stat().st_size < 2**20  # it claims far more than it weighs
    dest = tmp_path / "out" / "b.zarr"
    line = (
        f"{str(bomb)!r}: member {member!r} unpacks to {size} bytes, more than the {limit} its "
        "place in a store can hold; refusing the archive (a damaged export or a zip bomb)"
    )
    with pytest.raises(NotAStoreError) as caught:
        import_zip(bomb, dest)
    assert str(caught.value) == line
    code, out, err = run_cli(capsys, "import", "zip", bomb, "--store", dest)
    assert (code, out, err) == (1, "", f"langneurons: error: {line}\n")
    assert not (tmp_path / "out").exists()


def test_an_honest_export_still_unpacks(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr")
    back = import_zip(open_store(path).export_zip(tmp_path / "s.zip"), tmp_path / "back.zarr")
    assert back.validate() == [] and back.runs() == [RUN]


def test_unpacking_more_than_the_free_space_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _store(tmp_path / "s.zarr")
    export = open_store(path).export_zip(tmp_path / "s.zip")

    class Usage:
        free = 100

    monkeypatch.setattr("shutil.disk_usage", lambda _: Usage)
    dest = tmp_path / "out" / "b.zarr"
    with pytest.raises(OutOfSpaceError, match=r"^unpacking needs \d+ bytes next to '.*b\.zarr' "
                       r"but only 100 are free; free some space or unpack elsewhere$"):  # fmt: skip
        import_zip(export, dest)
    assert _names(tmp_path / "out") == []


# ------------------------------------------------------------------ 9. out of space and memory
def _no_space(code: int) -> Any:
    async def set_(self: Any, key: str, value: Any) -> None:
        raise OSError(code, "No space left" if code == errno.ENOSPC else "File too large", key)

    return set_


NO_SPACE_LINE = (
    "langneurons: error: {what} writing {key} ({why}); free some space or raise the limit and "
    "run the command again (an interrupted store write is rolled back by `langneurons repair "
    "STORE`)\n"
)


@pytest.mark.parametrize(
    ("code", "what", "why"),
    [
        (errno.ENOSPC, "out of disk space", "No space left"),
        (errno.EFBIG, "over the file-size limit (ulimit -f)", "File too large"),
    ],
)
def test_out_of_space_on_each_write_path_is_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    code: int,
    what: str,
    why: str,
) -> None:
    path = _store(tmp_path / "s.zarr")
    export = open_store(path).export_zip(tmp_path / "s.zip")
    before = _names(tmp_path)

    # export: the zip is written next to its destination and removed on failure
    def full(self: Any, name: Any, data: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError(code, why, "x.zip")

    with monkeypatch.context() as m:
        m.setattr(zipfile.ZipFile, "writestr", full)
        out = run_cli(capsys, "export", path, tmp_path / "e" / "again.zip")
    assert out == (1, "", NO_SPACE_LINE.format(what=what, key="x.zip", why=why))
    assert _names(tmp_path / "e") == []

    # import zip: the unpacked folder is removed on failure
    def copy(*args: Any, **kwargs: Any) -> None:
        raise OSError(code, why, "chunk")

    with monkeypatch.context() as m:
        m.setattr("shutil.copyfileobj", copy)
        out = run_cli(capsys, "import", "zip", export, "--store", tmp_path / "u" / "b.zarr")
    assert out == (1, "", NO_SPACE_LINE.format(what=what, key="chunk", why=why))
    assert _names(tmp_path / "u") == []

    # identify's save into the store: nothing of the result is left
    with monkeypatch.context() as m:
        m.setattr(zarr.storage.LocalStore, "set", _no_space(code))
        c, o, err = run_cli(capsys, "identify", path, *IDENTIFY)
    assert (c, o) == (1, "")
    assert err.startswith(f"langneurons: error: {what} writing ") and f"({why})" in err
    assert "identification" not in {p.name for p in (path / RUN).iterdir()}
    assert open_store(path).validate() == []
    assert _names(tmp_path) == sorted([*before, "e", "u"])  # empty folders made for the targets


def _identify_module() -> Any:
    import importlib

    return importlib.import_module("langneurons.analysis.identify")


def test_out_of_memory_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _store(tmp_path / "s.zarr")

    def no_memory(*args: Any, **kwargs: Any) -> None:
        raise MemoryError("Unable to allocate 745. GiB for an array")

    monkeypatch.setattr(_identify_module(), "identify", no_memory)
    code, out, err = run_cli(capsys, "identify", path, *IDENTIFY)
    assert (code, out) == (1, "")
    assert err == (
        "langneurons: error: out of memory (Unable to allocate 745. GiB for an array); raise the "
        "memory limit (ulimit -v) or work on a smaller selection (fewer languages, layers or "
        "sequences)\n"
    )


def test_other_oserrors_keep_their_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only the resource errors become one line; an unexpected OSError is a bug to see."""
    path = _store(tmp_path / "s.zarr")

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(_identify_module(), "identify", broken)
    with pytest.raises(OSError, match="Input/output error"):
        run_cli(capsys, "identify", path, *IDENTIFY)


# ------------------------------------------------------------------ 10. tracebacks on odd input
def test_a_store_under_a_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "afile").write_text("mine")
    line = (
        f"cannot create store {str(tmp_path / 'afile' / 'x.zarr')!r}: "
        f"{str(tmp_path / 'afile')!r} is a file, not a folder; choose a path inside a folder"
    )
    with pytest.raises(NotAStoreError) as caught:
        create_store(tmp_path / "afile" / "x.zarr")
    assert str(caught.value) == line
    assert (tmp_path / "afile").read_text() == "mine" and _names(tmp_path) == ["afile"]


DAMAGED = (
    "; the store is damaged: restore it from a copy or re-create the run "
    "(`langneurons validate STORE` lists all damage)"
)
NOT_JSON = (
    "is not valid JSON (Expecting property name enclosed in double quotes: line 1 column 2 "
    "(char 1))"
)


@pytest.mark.parametrize(
    ("key", "refusal"),
    [
        (f"{RUN}/zarr.json", f"'{RUN}/zarr.json' {NOT_JSON}"),
        (
            f"{RUN}/n_active/zarr.json",
            "run 'm/base', array 'n_active': has a zarr.json that is not an array's JSON metadata",
        ),
    ],
)
def test_metadata_that_is_not_json_is_named(
    tmp_path: Path, key: str, refusal: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _store(tmp_path / "s.zarr")
    (path / key).write_text("{not json")
    assert open_store(path).validate() == [f"{key!r} {NOT_JSON}"]
    assert run_cli(capsys, "validate", path) == (1, "", f"invalid: {key!r} {NOT_JSON}\n")
    code, out, err = run_cli(capsys, "identify", path, *IDENTIFY)
    assert (code, out, err) == (1, "", f"langneurons: error: {refusal}{DAMAGED}\n")


torch = pytest.importorskip("torch")


@pytest.mark.parametrize(
    ("tensor", "problem"),
    [
        (
            lambda: torch.empty((3, 8), dtype=torch.int64, device="meta"),
            "'over_zero' is a meta tensor: it has a shape but no values; save the real tensor",
        ),
        (
            lambda: torch.zeros(1, dtype=torch.int64).expand(10**6, 10**5),
            "'over_zero' is a view of 8 stored bytes that expands to 800000000000 bytes (shape "
            "(1000000, 100000)); save it with .contiguous() if the counts are real",
        ),
    ],
)
def test_tensors_without_their_values_are_refused(
    tmp_path: Path, tensor: Any, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pt = tmp_path / "lape.en.pt"
    torch.save({"n": 10, "over_zero": tensor()}, pt)
    store = tmp_path / "i.zarr"
    code, out, err = run_cli(
        capsys, "import", "lape", pt, "--languages", "en", "--store", store, "--run", "r"
    )
    assert (code, out, err) == (1, "", f"langneurons: error: {pt}: {problem}\n")
    assert not store.exists()


# ------------------------------------------------------------------ 11. a killed migration
def test_a_store_left_as_a_migration_backup_says_how_to_recover(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _store(tmp_path / "s.zarr")
    path.rename(tmp_path / "s.zarr.schema1.bak")  # killed between the two renames
    line = (
        f"store {str(path)!r} does not exist; an interrupted `langneurons migrate` left the "
        f"original at {str(tmp_path / 's.zarr.schema1.bak')!r}: rename it back to "
        f"{str(path)!r} and run the migration again"
    )
    assert run_cli(capsys, "info", path) == (1, "", f"langneurons: error: {line}\n")


# ------------------------------------------------------------------ 9. out of space at every write
class _FullAfter:
    """``LocalStore.set`` that fails with ``code`` on its ``k``-th call (0: never); counts calls."""

    def __init__(self, code: int, k: int) -> None:
        self.code, self.k, self.calls = code, k, 0
        self.original = zarr.storage.LocalStore.set

    def __call__(self) -> Any:
        async def set_(store: Any, key: str, value: Any) -> None:
            self.calls += 1
            if self.calls == self.k:
                raise OSError(self.code, os.strerror(self.code), key)
            await self.original(store, key, value)

        return set_


def _import(store: Path, *extra: str) -> list[str]:
    ref = str(store.parent / "ref")
    return ["import", "njunlp", ref, "--tag", "t", "--languages", "en,de,fr",
            "--store", str(store), "--run", RUN, *extra]  # fmt: skip


def _counts(store: Path) -> dict[str, bytes]:
    ds = open_store(store).open_run(RUN).load()
    return {name: ds[name].values.tobytes() for name in ("n_active", "n_tokens")}


REFRESH = (
    "langneurons: error: the store's consolidated metadata (what plain xarray reads) could not be "
    "refreshed: "
)


def _spread(n: int, most: int = 12) -> list[int]:
    """About ``most`` failure points spread over ``1..n``, always the first and the last."""
    return sorted({1, n, *range(1, n + 1, max(1, n // most))})


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG])
@pytest.mark.parametrize("mode", ["create", "merge"])
def test_out_of_space_at_any_write_of_an_import_leaves_the_store_as_it_was(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    mode: str,
    code: int,
) -> None:
    """Creating a store and run, or merging counts into one: whichever write runs out of space,
    one line, exit 1, and the store holds exactly what it held before (after the rollback that
    the next writer, or `repair`, does)."""
    write_reference_files(tmp_path / "ref", ["en", "de", "fr"])
    first = tmp_path / "first.zarr"
    assert run_cli(capsys, *_import(first))[0] == 0
    before = _counts(first)
    extra = ["--merge"] if mode == "merge" else []

    def attempt(k: int, store: Path) -> tuple[tuple[int, str, str], int]:
        full = _FullAfter(code, k)
        with monkeypatch.context() as m:
            m.setattr(zarr.storage.LocalStore, "set", full())
            out = run_cli(capsys, *_import(store, *extra))
        return out, full.calls

    if mode == "merge":
        shutil.copytree(first, tmp_path / "dry.zarr")
    (c, _, err), writes = attempt(0, tmp_path / "dry.zarr")
    assert c == 0, err
    done = _counts(tmp_path / "dry.zarr")  # what the command writes when there is room
    refreshed = 0
    for k in _spread(writes):
        store = tmp_path / f"s{k}.zarr"
        if mode == "merge":
            shutil.copytree(first, store)
        (c, out, err), _ = attempt(k, store)
        assert (c, out) == (1, ""), (k, err)
        if err.startswith(REFRESH):  # the write committed; only the refresh after it failed
            assert run_cli(capsys, "repair", store)[0] == 0, k
            assert open_store(store).validate() == [] and open_store(store).runs() == [RUN]
            assert _counts(store) == done, k
            refreshed += 1
            continue
        assert re.fullmatch(
            r"langneurons: error: (out of disk space|over the file-size limit \(ulimit -f\)) "
            r"writing \S+ \(.+\); free some space or raise the limit and run the command again "
            r"\(an interrupted store write is rolled back by `langneurons repair STORE`\)\n",
            err,
        ), (k, err)
        if not store.exists():  # the store's own metadata could not be written
            continue
        assert run_cli(capsys, "repair", store)[0] == 0, k
        reopened = open_store(store)
        assert reopened.validate() == [], k
        if mode == "create":
            assert reopened.runs() == [], k
        else:
            assert reopened.runs() == [RUN] and _counts(store) == before, k
        # nothing of ours is left beside the store either
        assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")], k
    assert refreshed >= 1  # the last write, the refresh after the commit, was tried


# ------------------------------------------------------------------ 9. a low ulimit -v
def _limited(limit: int, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    import resource

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))

    command = [sys.executable, "-m", "langneurons", *args]
    return subprocess.run(
        command, capture_output=True, text=True, cwd=cwd, preexec_fn=cap, timeout=60
    )


@pytest.mark.parametrize(
    ("limit_mib", "command", "need"),
    [(300, "identify", 1024), (450, "stats", 1024), (1600, "extract", 2048)],
)
def test_a_memory_limit_too_low_to_load_the_libraries_is_refused_up_front(
    tmp_path: Path, limit_mib: int, command: str, need: int
) -> None:
    """Under ``ulimit -v`` of 250-500 MiB, scipy's import hung (forever), numpy's or scipy's
    shared objects failed to map, or a thread could not start: a hang or a native crash cannot
    be caught, so a limit below what the command needs is refused before anything loads."""
    path = _store(tmp_path / "s.zarr")
    args = [command, str(path), *IDENTIFY[:2]] if command != "extract" else [command]
    proc = _limited(limit_mib << 20, *args, cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == (
        f"langneurons: error: the memory limit (ulimit -v) is {limit_mib} MiB, below the {need} "
        f"MiB that `langneurons {command}` needs to load its libraries (below it they hang or "
        f"crash in native code); raise it, e.g. `ulimit -v {need << 10}` or `ulimit -v "
        "unlimited`\n"
    )


def test_light_commands_run_under_a_low_memory_limit(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr")
    for args in (["info", str(path)], ["--help"], ["identify", "--help"], ["--version"]):
        proc = _limited(300 << 20, *args, cwd=tmp_path)
        assert proc.returncode == 0 and proc.stderr == "", (args, proc.stderr)


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            RuntimeError(
                "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't "
                "allocate memory: you tried to allocate 3264320 bytes."
            ),  # fmt: skip
            "out of memory ([enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't "
            "allocate memory: you tried to allocate 3264320 bytes.); raise the memory limit "
            "(ulimit -v) or work on a smaller selection (fewer languages, layers or sequences)",
        ),
        (
            RuntimeError("cannot join thread before it is started"),
            "out of memory or threads: could not start a thread; raise the memory limit "
            "(ulimit -v) or the process limit (ulimit -u)",
        ),
        (RuntimeError("something else"), None),
    ],
)
def test_memory_and_thread_errors_of_native_libraries_are_one_line(
    error: BaseException, line: str | None
) -> None:
    from langneurons.cli import resource_line

    assert resource_line(error) == line


# ------------------------------------------------------------------ 11. hints that lead somewhere
def test_an_export_holding_an_interrupted_write_names_a_repair_that_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The hint named the import's unpacked folder, deleted by then, and `repair` of a zip (which
    cannot be written); it now says to unzip the archive and repair the folder, which works."""
    import json

    path = _store(tmp_path / "s.zarr")
    good = open_store(path).export_zip(tmp_path / "good.zip")
    archive = tmp_path / "journal.zip"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(archive, "w") as out:
        for info in src.infolist():
            out.writestr(info, src.read(info))
        meta = {"zarr_format": 3, "node_type": "group", "attributes": {"op": "append"}}
        out.writestr(f"{RUN}/_journal/zarr.json", json.dumps(meta))
    hint = f"unzip {archive} into a new folder and run `langneurons repair FOLDER` there"

    code, out, err = run_cli(capsys, "import", "zip", archive, "--store", tmp_path / "u.zarr")
    assert (code, out) == (1, "")
    assert err == (
        f"langneurons: error: {str(archive)!r} holds an invalid store: run {RUN!r}: interrupted "
        f"write (journal present); {hint}\n"
    )
    assert run_cli(capsys, "validate", archive)[2] == (
        f"invalid: run {RUN!r}: interrupted write (journal present); {hint}\n"
    )
    code, out, err = run_cli(capsys, "identify", archive, *IDENTIFY, "--no-save")
    assert (code, err) == (1, f"langneurons: error: run {RUN!r} holds an interrupted write; "
                              f"{hint} to roll it back\n")  # fmt: skip
    # ... and the hint works
    folder = tmp_path / "folder"
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(folder)
    assert run_cli(capsys, "repair", folder)[0] == 0
    assert open_store(folder).validate() == []
