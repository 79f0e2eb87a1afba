"""Faults: damaged chunk files, older schema versions, killed result writes, readers during
writes, concurrent writers of different runs, and shared zips that try to escape the store."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from langneurons.analysis import identify, language_preference_tests
from langneurons.errors import (
    CorruptStoreError,
    InvalidNameError,
    RunChangedError,
    SchemaVersionError,
)
from langneurons.store import create_store, decode_attrs, import_zip, migrate_store, open_store

from .conftest import V1_ZIP, make_counts, run_cli, v1_store

TESTS = Path(__file__).parent
KW: dict[str, Any] = {"top_rate": 0.2, "lam_range": (0.0, 2.0)}


def _store(path: Path) -> Path:
    store = create_store(path)
    counts = make_counts(["en", "de", "fr"], sequences=2, moments=True, seed=3)
    store.create_run("m/base", n_layers=3, n_neurons=7, moments=True, sequences=True, counts=counts)
    store.save_result("m/base", "identification", "t", identify(store.open_run("m/base"), **KW))
    assert store.validate() == []
    return path


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------ damaged chunk files
DAMAGE = [
    ("missing", "m/base/n_active/c/2/1/0/0", "run 'm/base', array 'n_active'", "is missing"),
    ("corrupted", "m/base/n_active/c/0/1/0/0", "run 'm/base', array 'n_active'",
     "fails its checksum"),
    ("corrupted sequences", "m/base/seq_n_active/c/0/1/0/0", "run 'm/base', array 'seq_n_active'",
     "fails its checksum"),
    ("missing tokens", "m/base/n_tokens/c/1/0", "run 'm/base', array 'n_tokens'", "is missing"),
    ("corrupted labels", "m/base/language/c/0", "run 'm/base', array 'language'",
     "fails its checksum"),
]  # fmt: skip


@pytest.mark.parametrize(("label", "key", "where", "problem"), DAMAGE, ids=[d[0] for d in DAMAGE])
def test_damaged_chunk_is_named_by_validate_and_every_reader(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    label: str,
    key: str,
    where: str,
    problem: str,
) -> None:
    path = _store(tmp_path / "s.zarr")
    chunk = path / key
    chunk.unlink() if problem == "is missing" else _flip(chunk)
    chunk_name = "c/" + key.split("/c/", 1)[1]
    expected = f"{where}: chunk {chunk_name} {problem}"
    store = open_store(path)
    assert store.validate() == [expected]

    # every reader that meets the damage names it (each reads what it needs, nothing more)
    readers: list[Callable[[], object]] = [
        lambda: store.open_run("m/base").load(),
        lambda: store.open_run("m/base", chunks={}).compute(),
        lambda: store.export_zip(tmp_path / "out.zip"),
    ]
    if "seq_" in key:
        readers.append(lambda: language_preference_tests(store.open_run("m/base"), role="all"))
        command = ["stats", "tests", path, "--run", "m/base", "--role", "all"]
    else:
        readers.append(lambda: identify(store.open_run("m/base"), "lape", top_rate=0.2,
                                        role="all"))  # fmt: skip
        command = ["identify", path, "--run", "m/base", "--method", "lape", "--role", "all"]
    if "language" in key or "n_tokens" in key:
        readers.append(store.info)
    if "language" in key:
        readers.append(lambda: store.languages("m/base"))
    for reader in readers:
        with pytest.raises(CorruptStoreError) as info:
            reader()
        message = str(info.value)
        assert message.startswith(expected), message
        assert "restore it from a copy" in message and "\n" not in message
    assert not (tmp_path / "out.zip").exists()

    # the command line, in a process of its own, says the same in one line, exit 1
    def langneurons(*args: object) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "langneurons", *map(str, args)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=300)

    proc = langneurons("validate", path)
    assert proc.returncode == 1 and proc.stderr.strip() == f"invalid: {expected}"
    proc = langneurons(*command, "--name", "x")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"langneurons: error: {expected}"), proc.stderr
    assert store.results("m/base", "identification") == ["t"]  # nothing new was saved


def test_damaged_result_chunk(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr")
    (path / "m/base/identification/t/score/c/0/0").unlink()
    store = open_store(path)
    expected = "result identification/t of run 'm/base', array 'score': chunk c/0/0 is missing"
    assert store.validate() == [expected]
    with pytest.raises(CorruptStoreError, match=expected):
        store.open_result("m/base", "identification", "t").load()


def test_all_zero_chunks_are_written(tmp_path: Path) -> None:
    """Schema 2 keeps every chunk, so an absent one is always damage, never implicit zeros."""
    store = create_store(tmp_path / "s.zarr")
    store.create_run(
        "r", n_layers=2, n_neurons=3, sequences=True, moments=True,
        languages=["en", "de"], sequence_labels=(["en", "de", "de"], ["a", "b", "c"]),
    )  # fmt: skip
    assert store.validate() == []
    run = tmp_path / "s.zarr" / "r"
    for key in ("n_tokens/c/0/0", "n_tokens/c/1/0", "seq_n_tokens/c/0/0", "seq_id/c/0"):
        assert (run / key).is_file(), key
    for lang in range(2):
        for role in range(2):
            assert (tmp_path / f"s.zarr/r/n_active/c/{lang}/{role}/0/0").is_file()
            assert (tmp_path / f"s.zarr/r/act_sum/c/{lang}/{role}/0/0").is_file()
    assert (tmp_path / "s.zarr/r/seq_n_active/c/0/1/0/0").is_file()


# ------------------------------------------------------------------ older schema versions


def test_older_store_is_refused_with_the_migration_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = v1_store(tmp_path)
    message = (
        f"store '{path}' has schema version 1, older than version 2 that this langneurons "
        f"reads; upgrade it with `langneurons migrate {path}`"
    )
    with pytest.raises(SchemaVersionError) as info:
        open_store(path)
    assert str(info.value) == message
    for args in (["info", path], ["validate", path], ["identify", path, "--run", "toy/base"]):
        code, _, err = run_cli(capsys, *args)
        assert (code, err.strip()) == (1, f"langneurons: error: {message}")


def test_migration_in_place_keeps_every_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = v1_store(tmp_path)
    import zarr

    old_store = zarr.storage.LocalStore(path, read_only=True)
    before = {run: xr.open_zarr(old_store, group=run).load() for run in ("toy/base", "toy/tuned")}
    old_result = xr.open_zarr(
        old_store, group="toy/base/identification/ternary", consolidated=False
    ).load()
    code, out, err = run_cli(capsys, "migrate", path)
    assert code == 0, err
    backup = tmp_path / "old.zarr.schema1.bak"
    assert out.splitlines() == [
        f"migrated {path} from schema version 1 to 2 (2 run(s), 1 result(s)) into {path}",
        f"the original is kept at {backup}; delete it once you are satisfied",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.zarr", "old.zarr.schema1.bak"]
    store = open_store(path)
    assert store.validate() == []
    for run, old in before.items():
        new = store.open_run(run).load()
        assert new.attrs["schema_version"] == 2
        assert decode_attrs(new.attrs)["migrated"]["from"] == 1
        for name, var in old.variables.items():
            assert new[name].dtype.kind == var.dtype.kind or var.dtype.kind in "OT"
            np.testing.assert_array_equal(new[name].values, var.values)
        assert decode_attrs(new.attrs)["writes"] == decode_attrs(old.attrs)["writes"]
        assert new.attrs["created"] == old.attrs["created"]
    result = store.open_result("toy/base", "identification", "ternary").load()
    assert result.attrs["result_kind"] == "identification"
    for name, var in old_result.variables.items():
        np.testing.assert_array_equal(result[name].values, var.values)
    # migrating again is refused: nothing to do
    code, _, err = run_cli(capsys, "migrate", path)
    assert code == 1 and "already has schema version 2; nothing to migrate" in err


def test_migration_from_a_zip_to_a_new_path_and_failure_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = migrate_store(V1_ZIP, tmp_path / "new.zarr")
    assert (done.runs, done.results, done.backup) == (2, 1, None)
    assert open_store(tmp_path / "new.zarr").validate() == []
    with pytest.raises(InvalidNameError, match="already exists; choose a new path"):
        migrate_store(V1_ZIP, tmp_path / "new.zarr")
    with pytest.raises(InvalidNameError, match="cannot migrate zip .* in place"):
        migrate_store(V1_ZIP)
    # a migration that fails half-way leaves the original as it was and no temporary files
    path = v1_store(tmp_path / "x")
    before = sorted(str(p.relative_to(path)) for p in path.rglob("*"))
    from langneurons.store import _migrate

    def broken(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(_migrate, "_copy_blocks", broken)
    with pytest.raises(OSError, match="disk full"):
        migrate_store(path)
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["old.zarr"]
    assert sorted(str(p.relative_to(path)) for p in path.rglob("*")) == before


# ------------------------------------------------------------------ killed while saving a result
_SAVE_CRASH = """
import os, sys
sys.path.insert(0, {tests!r})
from conftest import make_counts
import langneurons.store._store as st
from langneurons.analysis import identify, language_preference_tests
from langneurons.store import open_store
point, after = {point!r}, {after}
calls = 0
def crash_on(obj, name):
    original = getattr(obj, name)
    def crashing(*args, **kwargs):
        global calls
        calls += 1
        if calls == after:
            os._exit(9)
        return original(*args, **kwargs)
    setattr(obj, name, crashing)
if point == "chunk":
    import zarr.storage
    crash_on(zarr.storage.LocalStore, "set")
else:
    crash_on(st.ActivationStore, point)
store = open_store({path!r}, mode="r+")
run = store.open_run("m/base")
store.save_result("m/base", "identification", "t", identify(run, "lape", top_rate=0.5))
print(calls)
"""


@pytest.mark.parametrize(
    ("point", "after"),
    [("chunk", 1), ("chunk", 6), ("chunk", 15), ("_delete_group", 2), ("_move", 1),
     ("_consolidate", 1)],
    ids=["first-file", "mid-arrays", "late-arrays", "old-deleted", "before-move",
         "before-consolidate"],
)  # fmt: skip
def test_killed_while_saving_a_result(tmp_path: Path, point: str, after: int) -> None:
    path = _store(tmp_path / "s.zarr")
    store = open_store(path)
    old = store.open_result("m/base", "identification", "t").load()
    new = identify(store.open_run("m/base"), "lape", top_rate=0.5)
    code = _SAVE_CRASH.format(tests=str(TESTS), path=str(path), point=point, after=after)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    store = open_store(path, mode="r+")
    assert store.validate() == []
    names = store.results("m/base", "identification")
    assert names in ([], ["t"])
    if names:
        seen = store.open_result("m/base", "identification", "t").load()
        ok_old = seen.drop_attrs().identical(old.drop_attrs())
        ok_new = seen.drop_attrs().identical(new.drop_attrs())
        assert ok_old or ok_new, seen
    # repair clears what the killed writer left; saving again works
    store.repair()
    assert not [p for p in (path / "m/base/identification").iterdir() if p.name.startswith(".")]
    store.save_result("m/base", "identification", "t", new)
    xr.testing.assert_identical(
        store.open_result("m/base", "identification", "t").load().drop_attrs(), new.drop_attrs()
    )


# ------------------------------------------------------------------ readers during writes
_WRITER = """
import sys, time
sys.path.insert(0, {tests!r})
from conftest import make_counts
from langneurons.store import open_store
store = open_store({path!r}, mode="r+")
for seed in range({n}):
    store.merge_counts("m/base", make_counts(["en", "de"], seed=100 + seed, moments=True))
    time.sleep(0.01)
"""


def test_reader_during_writes_sees_one_committed_state_or_is_told(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    store = create_store(path)
    store.create_run("m/base", n_layers=3, n_neurons=7, moments=True,
                     counts=make_counts(["en", "de"], seed=99, moments=True))  # fmt: skip
    n = 25
    parts = [make_counts(["en", "de"], seed=99, moments=True)] + [
        make_counts(["en", "de"], seed=100 + s, moments=True) for s in range(n)
    ]
    states = np.cumsum([p.n_active for p in parts], axis=0)
    tokens = np.cumsum([p.n_tokens for p in parts], axis=0)
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER.format(tests=str(TESTS), path=str(path), n=n)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen: set[int] = set()
    changed = 0
    while writer.poll() is None:
        try:
            ds = open_store(path).open_run("m/base", chunks={"language": 1})
            active, tok = ds.n_active.values, ds.n_tokens.values
        except RunChangedError as exc:
            assert "changed while it was being read" in str(exc)
            changed += 1
            continue
        match = [k for k in range(n + 1) if np.array_equal(states[k], active)]
        assert match, "a reader saw a mixture of two states"
        assert np.array_equal(tokens[match[0]], tok)
        seen.add(match[0])
    _, err = writer.communicate()
    assert writer.returncode == 0, err
    assert len(seen) >= 2, (seen, changed)
    final = open_store(path).open_run("m/base").load()
    np.testing.assert_array_equal(final.n_active.values, states[-1])


def test_a_lazy_reader_is_told_when_its_run_or_result_changes(tmp_path: Path) -> None:
    path = _store(tmp_path / "s.zarr")
    store = open_store(path, mode="r+")
    run = store.open_run("m/base")
    result = store.open_result("m/base", "identification", "t")
    store.merge_counts("m/base", make_counts(["en"], sequences=2, moments=True, seed=9))
    with pytest.raises(RunChangedError, match=r"^run 'm/base' changed while it was being read"):
        run.n_active.load()
    store.save_result("m/base", "identification", "t", identify(store.open_run("m/base"), **KW))
    with pytest.raises(
        RunChangedError, match=r"^result identification/t of run 'm/base' changed while"
    ):
        result.load()
    # opened again, both read the new state
    assert store.open_run("m/base").n_tokens.sel(language="en").values.sum() > 0
    store.open_result("m/base", "identification", "t").load()


def test_concurrent_writers_of_different_runs(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    create_store(path)
    code = """
import sys
sys.path.insert(0, {tests!r})
from conftest import make_counts
from langneurons.store import open_store
store = open_store({path!r}, mode="r+")
run = sys.argv[1]
store.create_run(run, n_layers=3, n_neurons=7, languages=["en", "de", "fr"])
for i in range(8):
    lang = ["en", "de", "fr"][i % 3]
    store.merge_counts(run, make_counts([lang], seed=int(sys.argv[2]) + i))
"""
    runs = [("a/base", 0), ("a/tuned", 100), ("b/base", 200)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code.format(tests=str(TESTS), path=str(path)), run, str(seed)],
            stderr=subprocess.PIPE, text=True,
        )
        for run, seed in runs
    ]  # fmt: skip
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    store = open_store(path)
    assert store.runs() == sorted(r for r, _ in runs)
    assert store.validate() == []
    for run, seed in runs:
        ds = store.open_run(run).load()
        for j, lang in enumerate(["en", "de", "fr"]):
            expected = sum(make_counts([lang], seed=seed + i).n_active[0]
                           for i in range(8) if i % 3 == j)  # fmt: skip
            np.testing.assert_array_equal(ds.n_active.sel(language=lang).values, expected)


# ------------------------------------------------------------------ shared zips
def test_export_and_import_zip_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = _store(tmp_path / "s.zarr")
    code, out, err = run_cli(capsys, "export", path, tmp_path / "s.zip")
    assert code == 0, err
    code, out, err = run_cli(capsys, "import", "zip", tmp_path / "s.zip", "--store",
                          tmp_path / "back.zarr")  # fmt: skip
    assert (code, out.strip()) == (0, f"unpacked 1 run(s) into {tmp_path / 'back.zarr'}")
    back = open_store(tmp_path / "back.zarr", mode="r+")
    xr.testing.assert_identical(back.open_run("m/base").load(),
                                open_store(path).open_run("m/base").load())  # fmt: skip
    back.merge_counts("m/base", make_counts(["en"], sequences=2, moments=True, seed=8))


def _evil_zip(tmp: Path, name: str, *, link: bool = False) -> Path:
    good = _store(tmp / "good.zarr")
    open_store(good).export_zip(tmp / "good.zip")
    evil = tmp / "evil.zip"
    shutil.copy(tmp / "good.zip", evil)
    with zipfile.ZipFile(evil, "a") as zf:
        info = zipfile.ZipInfo(name)
        if link:
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
        else:
            zf.writestr(info, b"pwned")
    return evil


EVIL = [
    ("parent", "../escaped.txt", "would escape the store"),
    ("nested parent", "m/base/../../../escaped.txt", "would escape the store"),
    ("absolute", "/tmp/escaped.txt", "would escape the store"),
    ("backslash", "..\\escaped.txt", "would escape the store"),
    ("drive", "C:/escaped.txt", "would escape the store"),
    ("link", "m/base/n_active/c/link", "is a link; refusing the archive"),
]


@pytest.mark.parametrize(("label", "name", "message"), EVIL, ids=[e[0] for e in EVIL])
def test_zip_slip_is_refused_and_nothing_is_written(
    tmp_path: Path, label: str, name: str, message: str
) -> None:
    evil = _evil_zip(tmp_path, name, link=label == "link")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(InvalidNameError, match=message):
        import_zip(evil, tmp_path / "out" / "new.zarr")
    after = sorted(p.name for p in tmp_path.iterdir())
    assert after in (before, sorted([*before, "out"]))
    assert not (tmp_path / "out" / "new.zarr").exists()
    if (tmp_path / "out").exists():
        assert list((tmp_path / "out").iterdir()) == []
    assert not (tmp_path.parent / "escaped.txt").exists()
    assert not Path("/tmp/escaped.txt").exists()


def test_import_zip_refuses_other_archives(tmp_path: Path) -> None:
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("notes.txt", "hello")
    with pytest.raises(Exception, match="holds no zarr.json; it is not a store export"):
        import_zip(plain, tmp_path / "new.zarr")
    (tmp_path / "fake.zip").write_text("not a zip")
    with pytest.raises(Exception, match="is not a zip file"):
        import_zip(tmp_path / "fake.zip", tmp_path / "new.zarr")
    assert not (tmp_path / "new.zarr").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
