"""Limits: zip bombs, out of disk space or memory, and the remaining tracebacks of issue 18.

Every case ends in one line that names the problem and the fix, a non-zero exit code, and nothing
half-written next to or inside the store.
"""

from __future__ import annotations

import errno
import zipfile
from pathlib import Path
from typing import Any

import pytest
import zarr

from langneurons.errors import NotAStoreError, OutOfSpaceError
from langneurons.store import create_store, import_zip, open_store

from .conftest import make_counts, run_cli

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
