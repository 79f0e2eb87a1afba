"""Integrity: nothing is lost or hidden silently. Names that are Zarr's own keys, results that
nest, token totals beyond int64, exports of invalid stores, and what killed processes leave
inside and next to a store."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr

from langneurons.analysis import identify
from langneurons.errors import (
    CorruptStoreError,
    InputFormatError,
    InvalidNameError,
    StoreValidationError,
)
from langneurons.store import (
    Counts,
    _leftovers,
    create_store,
    import_zip,
    migrate_store,
    open_store,
    schema,
)

from .conftest import make_counts, rerecord, run_cli, v1_store, write_reference_files

TESTS = Path(__file__).parent
REPO = TESTS.parent
MAX = 2**63 - 1
KW: dict[str, Any] = {"top_rate": 0.2, "lam_range": (0.0, 2.0)}


def _store(path: Path) -> Path:
    store = create_store(path)
    store.create_run("m/base", n_layers=3, n_neurons=7, counts=make_counts(["en", "de", "fr"]))
    return path


def _files(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def _run_py(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)


# ------------------------------------------------------------------ 1. Zarr's keys as names
ZARR_NAMES = ["a/zarr.json", "zarr.json", "m/.zarray", ".zgroup", "x/.zattrs/y", ".zmetadata",
              "a/ZARR.JSON"]  # fmt: skip


@pytest.mark.parametrize("name", ZARR_NAMES)
def test_zarr_metadata_keys_are_refused_as_run_and_result_names(name: str) -> None:
    part = next(p for p in name.split("/") if p.lower() in schema.ZARR_KEYS)
    for what in ("run", "result"):
        with pytest.raises(InvalidNameError) as info:
            schema.check_name(name, what)
        assert str(info.value) == (
            f"{what} name {name!r} uses the reserved component {part!r}; choose another name"
        )


def test_import_into_a_zarr_json_run_is_refused_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    write_reference_files(tmp_path / "pt", ["en", "de"])
    path = _store(tmp_path / "s.zarr")
    before = _files(path)
    args = ["import", "njunlp", tmp_path / "pt", "--tag", "t", "--languages", "en,de",
            "--store", path, "--run", "a/zarr.json"]  # fmt: skip
    code, out, err = run_cli(capsys, *args)
    assert (code, err.strip()) == (
        1,
        "langneurons: error: run name 'a/zarr.json' uses the reserved component 'zarr.json'; "
        "choose another name",
    )
    assert _files(path) == before


def test_result_named_zarr_json_is_refused_without_leftovers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _store(tmp_path / "s.zarr")
    before = _files(path)
    code, out, err = run_cli(capsys, "identify", path, "--run", "m/base", "--method", "lape",
                             "--top-rate", "0.2", "--name", "zarr.json")  # fmt: skip
    assert (code, err.strip()) == (
        1,
        "langneurons: error: result name 'zarr.json' uses the reserved component 'zarr.json'; "
        "choose another name",
    )
    assert _files(path) == before


# ------------------------------------------------------------------ 2. nested results
def _lape(store: Any, top_rate: float = 0.2) -> xr.Dataset:
    return identify(store.open_run("m/base"), "lape", top_rate=top_rate)


def test_a_result_never_silently_deletes_or_hides_another(tmp_path: Path) -> None:
    store = open_store(_store(tmp_path / "s.zarr"), mode="r+")
    result = _lape(store)
    store.save_result("m/base", "identification", "lape/sub", result)
    with pytest.raises(InvalidNameError) as info:
        store.save_result("m/base", "identification", "lape", result)
    assert str(info.value) == (
        "identification result 'lape' would contain the existing result 'lape/sub' of run "
        "'m/base'; choose another --name"
    )
    assert store.results("m/base", "identification") == ["lape/sub"]

    store.save_result("m/base", "identification", "ternary", result)
    with pytest.raises(InvalidNameError) as info:
        store.save_result("m/base", "identification", "ternary/sub", result)
    assert str(info.value) == (
        "identification result 'ternary/sub' would nest inside the existing result 'ternary' of "
        "run 'm/base'; choose another --name"
    )
    assert store.results("m/base", "identification") == ["lape/sub", "ternary"]
    assert store.validate() == []


def test_results_in_one_folder_and_saving_again_still_work(tmp_path: Path) -> None:
    store = open_store(_store(tmp_path / "s.zarr"), mode="r+")
    for part in ("types", "overlap", "change"):  # how `compare runs` saves its parts
        store.save_result("m/base", "compare", f"vs-base/{part}", _lape(store))
    with pytest.raises(InvalidNameError, match="would contain the existing result"):
        store.save_result("m/base", "compare", "vs-base", _lape(store))
    newer = _lape(store, top_rate=0.5)
    store.save_result("m/base", "compare", "vs-base/types", newer)  # the same name: replaced
    assert store.results("m/base", "compare") == [
        "vs-base/change",
        "vs-base/overlap",
        "vs-base/types",
    ]
    seen = store.open_result("m/base", "compare", "vs-base/types").load()
    xr.testing.assert_identical(seen.drop_attrs(), newer.drop_attrs())
    assert not [p for p in (tmp_path / "s.zarr").rglob(".*")]  # no swap leftovers


def test_identify_cli_refuses_a_name_that_would_delete_a_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _store(tmp_path / "s.zarr")
    args = ["identify", path, "--run", "m/base", "--method", "lape", "--top-rate", "0.2"]
    code, out, err = run_cli(capsys, *args, "--name", "lape/sub")
    assert code == 0, err
    code, out, err = run_cli(capsys, *args, "--name", "lape")
    assert (code, err.strip()) == (
        1,
        "langneurons: error: identification result 'lape' would contain the existing result "
        "'lape/sub' of run 'm/base'; choose another --name",
    )
    assert open_store(path).results("m/base", "identification") == ["lape/sub"]


# ------------------------------------------------------------------ 6. int64 limits
def _counts(tokens: Any, active_dtype: Any = np.int64, **kwargs: Any) -> Counts:
    tokens = np.asarray(tokens)
    active = np.zeros((tokens.shape[0], 2, 3, 7), dtype=active_dtype)
    return Counts(["en", "de"][: tokens.shape[0]], active, tokens, **kwargs)


INT64_CASES = [
    ("uint64 total", lambda: _counts(np.array([[2**64 - 1, 5]], dtype=np.uint64)),
     f"n_tokens for 'en' role 'prompt' is {2**64 - 1}, above the int64 limit {MAX}; check the "
     "input: no real count is this large"),
    ("python int total", lambda: _counts([[10**30, 5]]),
     f"n_tokens holds {10**30}, beyond the int64 limit {MAX}; check the input: no real count is "
     "this large"),
    ("roles add up", lambda: _counts([[MAX, 1]]),
     f"n_tokens adds up to {MAX + 1} over languages and roles, above the int64 limit {MAX} "
     f"(largest: 'en' role 'prompt', {MAX}); check the input: no real token total is this large"),
    ("languages add up", lambda: _counts([[2**62, 0], [0, 2**62]]),
     f"n_tokens adds up to {2**63} over languages and roles, above the int64 limit {MAX} "
     f"(largest: 'en' role 'prompt', {2**62}); check the input: no real token total is this "
     "large"),
    ("uint64 count", lambda: Counts(["en"], np.full((1, 2, 3, 7), 2**63, dtype=np.uint64),
                                    np.array([[MAX, 0]])),
     f"n_active for 'en' role 'prompt' is {2**63}, above the int64 limit {MAX}; check the "
     "input: no real count is this large"),
    ("uint64 sequence total", lambda: _counts(
        [[5, 0]], seq_n_active=np.zeros((1, 2, 3, 7), np.uint8),
        seq_n_tokens=np.array([[2**64 - 1, 0]], dtype=np.uint64), seq_language=["en"],
        seq_id=["q1"]),
     f"seq_n_tokens for 'q1' role 'prompt' is {2**64 - 1}, above the int64 limit {MAX}; check "
     "the input: no real count is this large"),
    ("sequence totals add up", lambda: _counts(
        [[5, 0]], seq_n_active=np.zeros((2, 2, 3, 7), np.uint8),
        seq_n_tokens=np.array([[MAX, 0], [MAX, 0]]),
        seq_language=["en", "en"], seq_id=["q1", "q2"]),
     f"seq_n_tokens adds up to {2 * MAX}, above the int64 limit {MAX}; check the input: no real "
     "token total is this large"),
]  # fmt: skip


@pytest.mark.parametrize(("label", "make", "message"), INT64_CASES, ids=[c[0] for c in INT64_CASES])
def test_counts_beyond_int64_are_refused(label: str, make: Any, message: str) -> None:
    with pytest.raises(StoreValidationError) as info:
        make()
    assert str(info.value) == message


def test_merging_past_int64_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    store = create_store(tmp_path / "s.zarr")
    big = _counts([[3 * 2**61, 5]])
    store.create_run("r", n_layers=3, n_neurons=7, counts=big)
    before = store.open_run("r").load()
    with pytest.raises(StoreValidationError) as info:
        store.merge_counts("r", big)
    assert str(info.value) == (
        f"run 'r': this write would make n_tokens add up to {6 * 2**61 + 10} over languages and "
        f"roles, above the int64 limit {MAX} (largest: 'en' role 'prompt', {6 * 2**61}); check "
        "the input: no real token total is this large"
    )
    other = Counts(["de"], np.zeros((1, 2, 3, 7), np.int64), np.array([[0, 2**62]]))
    with pytest.raises(StoreValidationError, match="'en' role 'prompt', 6917529027641081856"):
        store.add_languages("r", other)
    xr.testing.assert_identical(store.open_run("r").load(), before)
    assert store.validate() == []
    assert store.open_run("r").n_tokens.values.min() >= 0


def test_validate_reports_token_totals_beyond_int64(tmp_path: Path) -> None:
    store = create_store(tmp_path / "s.zarr")
    store.create_run("r", n_layers=3, n_neurons=7, counts=_counts([[5, 5], [5, 5]]))
    # Counts refuses such totals; a writer outside langneurons could still store them
    group = zarr.open_group(tmp_path / "s.zarr", mode="r+", path="r", use_consolidated=False)
    n_tokens = group["n_tokens"]
    assert isinstance(n_tokens, zarr.Array)
    n_tokens[:] = np.array([[2**62, 5], [2**62, 5]])
    rerecord(tmp_path / "s.zarr", "r/n_tokens")
    problems = store.validate()
    assert problems[0] == f"run 'r': n_tokens adds up to {2**63 + 10}, above the int64 limit {MAX}"
    # written behind the store's back, the arrays no longer match the run's token_totals either
    assert len(problems) == 2 and "token_totals attribute does not match" in problems[1]


@pytest.mark.parametrize(
    ("full", "prefix", "message"),
    [
        (10**30, 60, f"'total_tokens' is {10**30}, above the int64 limit {MAX}; check the file: "
                     "no real token total is this large"),
        (MAX, MAX, f"n_tokens adds up to {2**64} over languages and roles, above the int64 "
                   f"limit {MAX} (largest: 'en' role 'prompt', {MAX}); check the input: no real "
                   "token total is this large"),
    ],
    ids=["beyond int64", "prompt plus response"],
)  # fmt: skip
def test_import_of_totals_beyond_int64_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], full: int, prefix: int, message: str
) -> None:
    torch = pytest.importorskip("torch")
    pt = tmp_path / "pt"
    pt.mkdir()
    zeros = torch.zeros(3, 8, dtype=torch.int64)
    for lang in ("en", "de"):
        torch.save({"total_tokens": full, "over_zero": zeros}, pt / f"activation.{lang}.t.pt")
        prefix_file = pt / f"prefix.activation.{lang}.t.pt"
        torch.save({"total_tokens": prefix, "over_zero": zeros}, prefix_file)
    code, out, err = run_cli(capsys, "import", "njunlp", pt, "--tag", "t", "--languages", "en,de",
                             "--store", tmp_path / "s.zarr", "--run", "r")  # fmt: skip
    assert code == 1, out
    assert err.startswith("langneurons: error: ") and err.strip().endswith(message), err
    assert "\n" not in err.strip() and "Traceback" not in err
    if (tmp_path / "s.zarr").exists():
        assert open_store(tmp_path / "s.zarr").runs() == []


def test_importer_refuses_a_total_beyond_int64() -> None:
    pytest.importorskip("torch")
    from langneurons.extract.importers import _check_total

    with pytest.raises(InputFormatError, match="above the int64 limit"):
        _check_total(2**63, "n", Path("x.pt"))
    assert _check_total(MAX, "n", Path("x.pt")) == MAX


# ------------------------------------------------------------------ 7. export of an invalid store
def _swapped_store(tmp: Path) -> Path:
    """Valid chunks, checksums and all, of two languages swapped: counts above their totals."""
    path = tmp / "s.zarr"
    store = create_store(path)
    n_tokens = np.array([[1000, 1000], [10, 10]])
    n_active = np.zeros((2, 2, 3, 7), np.int64)
    n_active[0] = 900
    n_active[1] = 5
    store.create_run("m/base", n_layers=3, n_neurons=7, counts=Counts(["en", "de"], n_active,
                                                                      n_tokens))  # fmt: skip
    chunks = path / "m/base/n_active/c"
    for role in ("0", "1"):
        en, de = chunks / "0" / role / "0" / "0", chunks / "1" / role / "0" / "0"
        a, b = en.read_bytes(), de.read_bytes()
        en.write_bytes(b)
        de.write_bytes(a)
    rerecord(path, "m/base/n_active")  # a swap the manifest agrees with: the counts tell
    return path


def test_export_refuses_an_invalid_store_and_leaves_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _swapped_store(tmp_path)
    store = open_store(path)
    problems = store.validate()
    assert (
        problems[0] == "run 'm/base': n_active exceeds n_tokens for 'de' role 'prompt' at 21 cells"
    )
    dest = tmp_path / "out" / "s.zip"
    with pytest.raises(StoreValidationError) as info:
        store.export_zip(dest)
    assert str(info.value) == (
        f"store {str(path)!r} is invalid: run 'm/base': n_active exceeds n_tokens for 'de' role "
        "'prompt' at 21 cells (and 1 more); refusing to export it (`langneurons validate STORE` "
        "lists every problem)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]  # not even "out"
    code, out, err = run_cli(capsys, "export", path, dest)
    assert code == 1 and err.startswith(f"langneurons: error: store {str(path)!r} is invalid: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


def test_export_still_names_damage_first(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr")
    (path / "m/base/n_active/c/1/1/0/0").unlink()
    with pytest.raises(CorruptStoreError, match=r"^run 'm/base', array 'n_active': chunk "
                       r"c/1/1/0/0 is missing; the store is damaged"):  # fmt: skip
        open_store(path).export_zip(tmp_path / "s.zip")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


# ------------------------------------------------------------------ 12. leftovers of kill -9
_KILLED = """
import os, sys
sys.path.insert(0, {tests!r})
calls = 0
def crash_after(obj, name, after):
    original = getattr(obj, name)
    def crashing(*args, **kwargs):
        global calls
        calls += 1
        if calls == after:
            os._exit(9)
        return original(*args, **kwargs)
    setattr(obj, name, crashing)
{body}
"""


def _killed(body: str) -> None:
    proc = _run_py(_KILLED.format(tests=str(TESTS), body=body))
    assert proc.returncode == 9, proc.stderr


def _ours(parent: Path, dest: str, op: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir()
                  if p.name.startswith(f".{dest}.langneurons-{op}-"))  # fmt: skip


def test_killed_export_is_cleaned_up_by_the_next_export_and_nothing_else(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr")
    dest = tmp_path / "share" / "s.zip"
    _killed(
        "import zipfile\n"
        "from langneurons.store import open_store\n"
        "crash_after(zipfile.ZipFile, 'writestr', 5)\n"
        f"open_store({str(path)!r}).export_zip({str(dest)!r})\n"
    )
    left = _ours(dest.parent, "s.zip", "export")
    assert len(left) == 1 and left[0].endswith(".tmp"), left
    assert not dest.exists()
    # look-alikes that are not a killed export's: never touched
    others = [
        "tmpab12cd.zip.tmp",  # an older langneurons's name: not recognisably ours
        ".s.zip.other.tmp",
        ".t.zip.langneurons-export-1-x.tmp",  # another destination
        f".s.zip.langneurons-export-{os.getpid()}-x.tmp",  # a live process
        "s.zip.langneurons-export-1-x.tmp",  # not hidden
    ]
    for name in others:
        (dest.parent / name).write_text("keep")
        os.utime(dest.parent / name, (0, 0))
    proc = _run_py(f"from langneurons.cli import main; main(['export', {str(path)!r}, "
                   f"{str(dest)!r}])")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in dest.parent.iterdir()) == sorted([*others, "s.zip"])
    assert f"removed {dest.parent / left[0]}, left by a langneurons export that was killed" in (
        proc.stderr
    )
    back = import_zip(dest, tmp_path / "back.zarr")
    assert back.validate() == [] and back.runs() == ["m/base"]


def test_only_leftovers_older_than_this_process_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    dest = tmp_path / "s.zip"
    old = tmp_path / f".s.zip.langneurons-export-{dead}-old.tmp"
    new = tmp_path / f".s.zip.langneurons-export-{dead}-new.tmp"
    old.write_text("x")
    new.write_text("x")
    os.utime(old, (0, 0))
    os.utime(new, (time.time() + 60,) * 2)  # written after this process started
    assert _leftovers.clean_next_to(dest, "export") == [old]
    assert sorted(p.name for p in tmp_path.iterdir()) == [new.name]


def test_killed_import_zip_is_cleaned_up_by_the_next_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _store(tmp_path / "s.zarr")
    open_store(path).export_zip(tmp_path / "s.zip")
    dest = tmp_path / "new.zarr"
    _killed(
        "import shutil\n"
        "from langneurons.store import import_zip\n"
        "crash_after(shutil, 'copyfileobj', 4)\n"
        f"import_zip({str(tmp_path / 's.zip')!r}, {str(dest)!r})\n"
    )
    assert len(_ours(tmp_path, "new.zarr", "import")) == 1
    assert not dest.exists()
    monkeypatch.setattr(_leftovers, "_STARTED", time.time() + 1)  # as if a later process
    import_zip(tmp_path / "s.zip", dest).validate()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.zarr", "s.zarr", "s.zip"]


def test_killed_migration_is_cleaned_up_by_the_next_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = v1_store(tmp_path)
    before = _files(path)
    _killed(
        "from langneurons.store import _migrate, migrate_store\n"
        "crash_after(_migrate, '_copy_blocks', 3)\n"
        f"migrate_store({str(path)!r})\n"
    )
    assert len(_ours(tmp_path, "old.zarr", "migrate")) == 1
    assert _files(path) == before
    monkeypatch.setattr(_leftovers, "_STARTED", time.time() + 1)
    migrate_store(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.zarr", "old.zarr.schema1.bak"]
    assert open_store(path).validate() == []


def test_repair_removes_leftovers_restores_lost_metadata_and_never_deletes_data(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _store(tmp_path / "s.zarr")
    store = open_store(path, mode="r+")
    store.save_result("m/base", "identification", "t", identify(store.open_run("m/base"), **KW))
    store.save_result("m/base", "identification", "gone", _lape(store))
    store.create_run("x/dead", n_layers=3, n_neurons=7, counts=make_counts(["en"]))
    results = path / "m/base/identification"
    intact = {p: p.read_bytes() for p in path.rglob("zarr.json")}
    # lost metadata of data the consolidated metadata still describes: restored, not deleted
    (results / "gone/zarr.json").unlink()  # a result's group
    (path / "x/dead/zarr.json").unlink()  # a run's group
    (path / "x/dead/n_active/zarr.json").unlink()  # an array (every chunk there)
    (path / "x/zarr.json").unlink()  # a group above a run
    # data the consolidated metadata does not describe: left, and reported
    shutil.copytree(results / "t" / "mask", results / "copied")
    (results / "copied/zarr.json").unlink()
    # what killed writes and deletes leave: removed
    shutil.copytree(results / "t", results / ".t.tmp")  # a killed save's new result
    shutil.copytree(results / "t", results / ".t~deleted-0123abcd.tmp")  # a killed delete
    (results / "bookkeeping").mkdir()  # a killed write's manifest alone
    (results / "bookkeeping/chunk_manifest.json").write_text('{"crc32c": {}}')
    # someone else's, and empty folders: left alone
    (results / "empty/c").mkdir(parents=True)
    (path / "notes").mkdir()
    (path / "notes/readme.txt").write_text("mine")
    (path / "x/notes.txt").write_text("mine")
    kept = ["m/base/identification/t", "notes/readme.txt", "x/notes.txt", results / "empty/c"]
    with caplog.at_level(logging.WARNING, logger="langneurons"):
        done = open_store(path, mode="r+").repair_report()
    assert done.rolled_back == ()
    assert done.removed == (
        "m/base/identification/.t.tmp",
        "m/base/identification/.t~deleted-0123abcd.tmp",
        "m/base/identification/bookkeeping",
    )
    assert done.restored == (
        "m/base/identification/gone",
        "x",
        "x/dead",
        "x/dead/n_active",
    )
    assert done.damaged == ("m/base/identification/copied",)
    for leftover in done.removed:
        assert f"removing {leftover}, left by a write that was killed" in caplog.text
    assert "leaving notes: no Zarr node, but it holds files of others" in caplog.text
    assert "leaving m/base/identification/copied: it holds Zarr data but no zarr.json" in (
        caplog.text
    )
    assert all((path / k).exists() for k in kept) and (results / "copied/c").is_dir()
    assert {p: p.read_bytes() for p in path.rglob("zarr.json") if p in intact} == intact
    store = open_store(path, mode="r+")
    assert store.runs() == ["m/base", "x/dead"]
    assert store.results("m/base", "identification") == ["gone", "t"]
    xr.testing.assert_identical(
        store.open_result("m/base", "identification", "gone").drop_attrs(),
        _lape(store).drop_attrs(),
    )
    np.testing.assert_array_equal(
        store.open_run("x/dead").n_active.values, make_counts(["en"]).n_active
    )
    assert store.validate() == []
    again = store.repair_report()
    assert (again.removed, again.restored, again.damaged) == ((), (), done.damaged)


def test_a_killed_delete_leaves_a_tombstone_that_repair_removes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _store(tmp_path / "s.zarr")
    store = open_store(path, mode="r+")
    store.create_run("x/dead", n_layers=3, n_neurons=7, counts=make_counts(["en"]))
    real = shutil.rmtree

    def killed(where: Any, *args: Any, **kwargs: Any) -> None:  # dies after one array
        real(sorted(p for p in Path(where).iterdir() if p.is_dir())[0])
        raise OSError("killed")

    monkeypatch.setattr(shutil, "rmtree", killed)
    with pytest.raises(OSError, match="killed"):
        store.delete_run("x/dead")
    monkeypatch.setattr(shutil, "rmtree", real)
    assert not (path / "x/dead").exists()  # gone from its name at once
    (grave,) = (path / "x").glob(".dead~deleted-*.tmp")
    done = open_store(path, mode="r+").repair_report()
    assert done.removed == (f"x/{grave.name}",) and done.damaged == ()
    assert not grave.exists() and open_store(path).validate() == []


def test_repair_refuses_metadata_that_is_not_json_in_one_line(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr")
    (path / "m/base/n_tokens/zarr.json").write_text("{not json")
    with pytest.raises(CorruptStoreError) as info:
        open_store(path, mode="r+").repair_report()
    assert str(info.value).startswith(
        "'m/base/n_tokens/zarr.json' is not valid JSON (Expecting property name"
    )
    assert "\n" not in str(info.value)


def test_a_result_is_never_half_deleted_when_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(_store(tmp_path / "s.zarr"), mode="r+")
    old = _lape(store)
    store.save_result("m/base", "identification", "t", old)
    real = shutil.rmtree

    def killed(path: Any, *args: Any, **kwargs: Any) -> None:  # dies after one array
        first = sorted(p for p in Path(path).iterdir() if p.is_dir())[0]
        real(first)
        raise OSError("killed")

    monkeypatch.setattr(shutil, "rmtree", killed)
    with pytest.raises(OSError, match="killed"):
        store.save_result("m/base", "identification", "t", _lape(store, top_rate=0.5))
    monkeypatch.setattr(shutil, "rmtree", real)
    store = open_store(tmp_path / "s.zarr", mode="r+")
    seen = store.open_result("m/base", "identification", "t").load()  # the new one, whole
    xr.testing.assert_identical(seen.drop_attrs(), _lape(store, top_rate=0.5).drop_attrs())
    assert store.repair_report().removed == ("m/base/identification/.t~old.tmp",)
