"""Damaged metadata: every reader checks a run's arrays against the schema before computing."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from langneurons.errors import CorruptStoreError, SchemaVersionError
from langneurons.store import create_store, open_store

from .conftest import make_counts, run_cli

RUN = "m/base"
DAMAGED = (
    "; the store is damaged: restore it from a copy or re-create the run "
    "(`langneurons validate STORE` lists all damage)"
)
IDENTIFY = ["--run", RUN, "--method", "lape", "--top-rate", "0.2", "--role", "all"]


def _store(path: Path) -> Path:
    store = create_store(path)
    store.create_run(RUN, n_layers=3, n_neurons=7, counts=make_counts(["en", "de", "zh"]))
    return path


def _edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def _consolidated(store: Path, name: str) -> Callable[[Callable[[dict[str, Any]], None]], None]:
    def edit(change: Callable[[dict[str, Any]], None]) -> None:
        _edit(
            store / "zarr.json",
            lambda root: change(
                root["consolidated_metadata"]["metadata"][f"{RUN}/{name}".rstrip("/")]
            ),
        )

    return edit


def _deleted(store: Path) -> None:
    shutil.rmtree(store / RUN / "n_active")


def _float64(store: Path) -> None:
    _edit(store / RUN / "n_tokens" / "zarr.json", lambda m: m.update(data_type="float64"))


def _no_checksum(store: Path) -> None:
    def drop(meta: dict[str, Any]) -> None:
        meta["codecs"] = [c for c in meta["codecs"] if c["name"] != "crc32c"]

    _edit(store / RUN / "n_active" / "zarr.json", drop)
    _consolidated(store, "n_active")(drop)
    chunk = store / RUN / "n_active" / "c" / "0" / "1" / "0" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # a flipped bit the checksum no longer catches
    chunk.write_bytes(bytes(raw))


def _shape(store: Path) -> None:
    _consolidated(store, "n_active")(lambda m: m.update(shape=[3, 2, 4, 7]))


def _huge(store: Path) -> None:
    """A coordinate and its array claiming 10**12 neurons, in both places (consistent shapes)."""
    for name in ("neuron", "n_active"):

        def grow(meta: dict[str, Any]) -> None:
            meta["shape"][-1] = 10**12

        _edit(store / RUN / name / "zarr.json", grow)
        _consolidated(store, name)(grow)


TAMPERINGS = {
    "array-deleted": (
        _deleted,
        ["run 'm/base', array 'n_active': is in the consolidated metadata but its zarr.json is "
         "missing"],
    ),
    "dtype-edited": (
        _float64,
        ["run 'm/base', array 'n_tokens': has data type 'float64'; the schema requires int64 "
         "(in its zarr.json)"],
    ),
    "checksum-removed": (
        _no_checksum,
        ["run 'm/base', array 'n_active': has no crc32c checksum codec (in its zarr.json)",
         "run 'm/base', array 'n_active': has no crc32c checksum codec (in its consolidated "
         "metadata)"],
    ),
    "consolidated-shape-edited": (
        _shape,
        ["run 'm/base', array 'n_active': has shape [3, 2, 3, 7] in its zarr.json but "
         "[3, 2, 4, 7] in the consolidated metadata"],
    ),
    "shape-edited-to-10**12": (
        _huge,
        # read, the coordinate alone would allocate 7.3 TiB before any chunk was checked
        ["run 'm/base', array 'neuron': has shape [1000000000000], 142857142858 chunks, but "
         "only 1 were ever written to it (its shape was edited)",
         "run 'm/base', array 'n_active': has shape [3, 2, 3, 1000000000000], 857142857148 "
         "chunks, but only 6 were ever written to it (its shape was edited)"],
    ),
}  # fmt: skip


def test_an_intact_store_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _store(tmp_path / "s.zarr")
    assert open_store(path).validate() == []
    assert run_cli(capsys, "identify", path, *IDENTIFY)[0] == 0


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
def test_damaged_metadata_is_refused(
    tmp_path: Path, tampering: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _store(tmp_path / "s.zarr")
    damage, problems = TAMPERINGS[tampering]
    damage(path)

    assert open_store(path).validate() == problems
    code, out, err = run_cli(capsys, "validate", path)
    assert code == 1 and out == ""
    assert err.splitlines() == [f"invalid: {p}" for p in problems]

    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    line = f"{problems[0]}{more}{DAMAGED}"
    with pytest.raises(CorruptStoreError) as caught:
        open_store(path).open_run(RUN)
    assert str(caught.value) == line
    code, out, err = run_cli(capsys, "identify", path, *IDENTIFY)
    assert (code, out) == (1, "")
    assert err == f"langneurons: error: {line}\n"
    assert not (path / RUN / "identification").exists()  # nothing saved


# ----------------------------------------------------------------------------- unclear messages
def _attrs_of_run(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Edit the run's attributes in its zarr.json and in the consolidated metadata alike."""
    _edit(path / RUN / "zarr.json", lambda m: change(m["attributes"]))
    _consolidated(path, "")(lambda m: change(m["attributes"]))


def test_run_without_schema_version_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _store(tmp_path / "s.zarr")
    _attrs_of_run(path, lambda a: a.pop("schema_version"))
    line = (
        "group 'm/base' holds run arrays but no schema_version attribute; it is not a readable run"
    )
    assert open_store(path).runs() == []
    assert open_store(path).info()["unreadable"] == [line]
    code, out, _ = run_cli(capsys, "info", path)
    assert code == 0 and f"  no runs\nnote: {line}\n" in out
    assert open_store(path).validate() == [line]
    code, out, err = run_cli(capsys, "validate", path)
    assert (code, out, err) == (1, "", f"invalid: {line}\n")
    code, out, err = run_cli(capsys, "identify", path, *IDENTIFY)
    assert (code, out) == (1, "")
    assert err == f"langneurons: error: {line}; list the runs with `langneurons info STORE`\n"


def test_run_without_zarr_json_is_damage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _store(tmp_path / "s.zarr")
    (path / RUN / "zarr.json").unlink()
    assert open_store(path).validate() == ["run 'm/base' has no zarr.json"]
    code, out, err = run_cli(capsys, "validate", path)
    assert (code, out, err) == (1, "", "invalid: run 'm/base' has no zarr.json\n")
    line = f"run 'm/base' has no zarr.json{DAMAGED}"
    with pytest.raises(CorruptStoreError) as caught:
        open_store(path).open_run(RUN)
    assert str(caught.value) == line
    code, out, err = run_cli(capsys, "identify", path, *IDENTIFY)
    assert (code, out, err) == (1, "", f"langneurons: error: {line}\n")


def test_schema_version_as_a_string(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _store(tmp_path / "s.zarr")
    _attrs_of_run(path, lambda a: a.update(schema_version="2"))
    line = (
        "run 'm/base': schema_version must be the integer 2, found the string '2'; the attribute "
        "is damaged: restore the store from a copy"
    )
    assert open_store(path).validate() == [line]
    code, out, err = run_cli(capsys, "validate", path)
    assert (code, out, err) == (1, "", f"invalid: {line}\n")
    with pytest.raises(SchemaVersionError) as caught:
        open_store(path).open_run(RUN)
    assert str(caught.value) == line
    code, out, err = run_cli(capsys, "identify", path, *IDENTIFY)
    assert (code, out, err) == (1, "", f"langneurons: error: {line}\n")
    assert not (path / RUN / "identification").exists()
