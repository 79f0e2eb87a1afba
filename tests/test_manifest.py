"""Chunk manifests (issue 18 item 4): a checksum binds a chunk to its place. A valid chunk copied
from another run, or two languages' chunks swapped, is named by ``validate`` and refused by every
reader; appends, rollbacks and results keep the manifests true; stores written before manifests
stay readable, noted as unverified until ``repair --rebind``. Also item 10: an interrupted write
whose undo file is truncated."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

from langneurons.analysis import identify
from langneurons.errors import CorruptStoreError
from langneurons.store import Counts, _arrays, _journal, _manifest, create_store, open_store

from .conftest import make_counts, run_cli

KW = {"top_rate": 0.2, "lam_range": (0.0, 2.0)}
COPIED = (
    "run 'm/base', array 'n_active': chunk c/0/1/0/0 is not the chunk written there (no chunk "
    "written to this array had its checksum: copied from elsewhere, or written by another tool)"
)


def _two_runs(path: Path) -> Path:
    store = create_store(path)
    for run, seed in (("m/base", 0), ("m/other", 1)):
        counts = make_counts(["en", "de", "fr"], layers=4, neurons=30, seed=seed, sequences=5)
        store.create_run(run, n_layers=4, n_neurons=30, sequences=True, counts=counts)
    return path


def _swap(a: Path, b: Path) -> None:
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)


def test_a_chunk_copied_from_another_run_is_named_and_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _two_runs(tmp_path / "s.zarr")
    shutil.copy(path / "m/other/n_active/c/0/1/0/0", path / "m/base/n_active/c/0/1/0/0")
    store = open_store(path)
    assert store.validate() == [COPIED]
    with pytest.raises(CorruptStoreError) as err:
        identify(store.open_run("m/base"), **KW)
    assert str(err.value).startswith(COPIED + "; the store is damaged: restore it from a copy")
    code, _, out = run_cli(capsys, "validate", path)
    assert code == 1 and f"invalid: {COPIED}" in out
    code, _, out = run_cli(capsys, "export", path, tmp_path / "x.zip")
    assert code == 1 and COPIED in out and not (tmp_path / "x.zip").exists()
    assert open_store(path).validate("m/other") == []  # the source is untouched


def test_swapped_languages_are_named_even_when_the_counts_still_fit(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    store = create_store(path)
    # two languages with the same token totals: a swap breaks no count check
    counts = make_counts(["en", "de"], layers=4, neurons=30, seed=0)
    counts.n_tokens[1] = counts.n_tokens[0]
    counts.n_active[1] = np.minimum(counts.n_active[1], counts.n_tokens[0][:, None, None])
    store.create_run("m/base", n_layers=4, n_neurons=30, counts=counts)
    _swap(path / "m/base/n_active/c/0/1/0/0", path / "m/base/n_active/c/1/1/0/0")
    assert open_store(path).validate() == [
        "run 'm/base', array 'n_active': chunk c/0/1/0/0 is not the chunk written there (its "
        "bytes are the chunk written at c/1/1/0/0: chunks swapped or copied)",
        "run 'm/base', array 'n_active': chunk c/1/1/0/0 is not the chunk written there (its "
        "bytes are the chunk written at c/0/1/0/0: chunks swapped or copied)",
    ]


def test_a_deleted_manifest_of_a_run_that_had_them_is_damage(tmp_path: Path) -> None:
    path = _two_runs(tmp_path / "s.zarr")
    (path / "m/base/n_tokens/chunk_manifest.json").unlink()
    assert open_store(path).validate() == [
        "run 'm/base', array 'n_tokens': its chunk manifest chunk_manifest.json is missing"
    ]
    (path / "m/base/n_active/chunk_manifest.json").write_text("{not json")
    problems = open_store(path).validate()
    assert any(p.startswith("run 'm/base', array 'n_active': its chunk manifest is damaged (")
               for p in problems)  # fmt: skip
    with pytest.raises(CorruptStoreError, match="array 'n_active': its chunk manifest is damaged"):
        _ = open_store(path).open_run("m/base").n_active.values


def _seq_counts(seq: list[int], labels: list[str], ids: list[str], seed: int) -> Counts:
    """Counts of some pre-allocated sequence slots (4 x 30, one sequence each)."""
    rng = np.random.default_rng(seed)
    langs = sorted({labels[i] for i in seq})
    stok = rng.integers(5, 10, size=(len(seq), 2))
    sact = rng.integers(0, 5, size=(len(seq), 2, 4, 30))
    tok = np.zeros((len(langs), 2), dtype=np.int64)
    act = np.zeros((len(langs), 2, 4, 30), dtype=np.int64)
    for j, i in enumerate(seq):
        tok[langs.index(labels[i])] += stok[j]
        act[langs.index(labels[i])] += sact[j]
    return Counts(
        langs,
        act,
        tok,
        seq_n_active=sact,
        seq_n_tokens=stok,
        seq_language=[labels[i] for i in seq],
        seq_id=[ids[i] for i in seq],
        seq_index=seq,
    )


def test_merges_appends_and_results_keep_the_manifests_true(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    store = create_store(path)
    labels = ["en"] * 10 + ["de"] * 10
    ids = [f"s{i}" for i in range(20)]
    store.create_run(
        "m/base",
        n_layers=4,
        n_neurons=30,
        sequences=True,
        languages=["en", "de"],
        sequence_labels=(labels, ids),
    )
    writer = store.writer("m/base")
    for u, seq in enumerate(([0, 1, 10], [2, 11, 12], [3])):
        writer.merge_counts(_seq_counts(seq, labels, ids, u), unit=f"u{u}")
    store.create_run("m/app", n_layers=4, n_neurons=30, sequences=True)
    for lang, seed in (("en", 0), ("de", 1), ("fr", 2)):
        counts = make_counts([lang], layers=4, neurons=30, seed=seed, sequences=3)
        store.merge_counts("m/app", counts)
    store.save_result("m/base", "identification", "lape", identify(store.open_run("m/base"), **KW))
    assert open_store(path).validate() == []
    assert open_store(path).notes() == []
    # a chunk moved after all of that is still caught, in the run and in the result
    _swap(path / "m/app/seq_n_active/c/0/1/0/0", path / "m/app/seq_n_active/c/1/1/0/0")
    result = path / "m/base/identification/lape"
    target = sorted(p for p in result.rglob("*") if p.is_file() and "/c/" in str(p))[0]
    shutil.copy(path / "m/base/n_tokens/c/0/0", target)  # a valid chunk, from elsewhere
    problems = open_store(path).validate()
    assert any("array 'seq_n_active': chunk c/0/1/0/0 is not the chunk" in p for p in problems)
    name = target.relative_to(result).parts[0]
    assert any(
        f"result identification/lape of run 'm/base', array '{name}': chunk c/" in p
        and "copied from elsewhere" in p
        for p in problems
    )


@pytest.mark.parametrize("append", [False, True], ids=["merge", "append"])
def test_a_rolled_back_write_leaves_the_manifests_true(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, append: bool
) -> None:
    """Killed after its chunks are written but before its manifests are: the rollback re-records
    what it writes, the partial chunk rows at the end of each array included."""
    path = tmp_path / "s.zarr"
    store = create_store(path)
    counts = make_counts(["en", "de"], layers=4, neurons=30, seed=0, sequences=5)
    store.create_run("m/base", n_layers=4, n_neurons=30, sequences=True, counts=counts)

    flush = _manifest.flush

    def killed(*args: object, **kwargs: bool) -> None:
        monkeypatch.setattr(_manifest, "flush", flush)  # the rollback records as usual
        raise KeyboardInterrupt

    monkeypatch.setattr(_manifest, "flush", killed)
    more = make_counts(["fr"] if append else ["de"], layers=4, neurons=30, seed=3, sequences=3)
    with pytest.raises(KeyboardInterrupt):
        store.merge_counts("m/base", more)
    monkeypatch.undo()
    assert open_store(path).validate() == []
    np.testing.assert_array_equal(open_store(path).open_run("m/base").n_active, counts.n_active)


def _legacy(path: Path) -> None:
    """What a store written before chunk manifests looks like: no manifests, no marker."""
    for manifest in path.rglob("chunk_manifest.json"):
        manifest.unlink()
    for meta in path.rglob("zarr.json"):
        node = json.loads(meta.read_text())
        node.get("attributes", {}).pop("chunk_manifests", None)
        meta.write_text(json.dumps(node))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr's notice that consolidation is not in the spec
        zarr.consolidate_metadata(str(path))


def test_stores_written_before_manifests_stay_readable_and_can_be_rebound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _two_runs(tmp_path / "s.zarr")
    store = open_store(path, mode="r+")
    store.save_result("m/base", "identification", "lape", identify(store.open_run("m/base"), **KW))
    _legacy(path)
    store = open_store(path, mode="r+")
    before = identify(store.open_run("m/base"), **KW)
    assert store.validate() == []
    code, out, _ = run_cli(capsys, "validate", path)
    assert code == 0 and out.endswith("ok: 2 run(s) valid in " + str(path) + "\n")
    assert (
        "note: run 'm/other': chunk places unverified in 10 array(s) written before chunk "
        "manifests (e.g. 'm/other/language'); once the data is known good, record them with "
        f"`langneurons repair --rebind {path}`\n"
    ) in out
    # results too (an identification stores no transposed copy of its mask: 21, not 22)
    assert "note: run 'm/base': chunk places unverified in 21 array(s)" in out
    # writes to an old run keep working and leave it unverified (never half a manifest)
    store.merge_counts("m/base", make_counts(["sw"], layers=4, neurons=30, seed=5, sequences=2))
    assert not (path / "m/base/n_active/chunk_manifest.json").exists()
    code, out, _ = run_cli(capsys, "repair", "--rebind", path)
    assert code == 0 and "recorded the chunk places of" in out
    code, out, _ = run_cli(capsys, "validate", path)
    assert code == 0 and "note:" not in out
    shutil.copy(path / "m/other/n_active/c/0/1/0/0", path / "m/base/n_active/c/0/1/0/0")
    assert open_store(path).validate() == [COPIED]
    del before


def test_rebind_refuses_a_damaged_array_and_records_nothing(tmp_path: Path) -> None:
    path = _two_runs(tmp_path / "s.zarr")
    _legacy(path)
    chunk = path / "m/base/n_active/c/0/0/0/0"
    data = bytearray(chunk.read_bytes())
    data[20] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(CorruptStoreError, match="array 'n_active': chunk c/0/0/0/0 fails its"):
        open_store(path, mode="r+").repair_report(rebind=True)
    assert not list(path.rglob("chunk_manifest.json"))


# ------------------------------------------------------------------ item 10: truncated undo.npz
def _interrupted(path: Path, monkeypatch: pytest.MonkeyPatch, merge: bool) -> None:
    """A store whose last write was killed mid-way (its journal armed), undo file truncated."""
    store = create_store(path)
    counts = make_counts(["en", "de"], layers=4, neurons=30, seed=0, sequences=5)
    store.create_run("m/base", n_layers=4, n_neurons=30, sequences=True, counts=counts)

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(_arrays, "apply", killed)
    monkeypatch.setattr(_journal.Journal, "roll_back", lambda self: False)  # a kill: no rollback
    with pytest.raises(KeyboardInterrupt):
        more = make_counts(["de" if merge else "fr"], layers=4, neurons=30, sequences=2)
        store.merge_counts("m/base", more)
    monkeypatch.undo()
    undo = path / "m/base/_journal/undo.npz"
    undo.write_bytes(undo.read_bytes()[:50])


def test_a_truncated_undo_file_is_a_clear_end_not_a_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.zarr"
    _interrupted(path, monkeypatch, merge=True)
    lost = (
        "run 'm/base' holds an interrupted write whose undo data (m/base/_journal/undo.npz) is "
        "damaged (File is not a zip file), so the values it replaced cannot be put back: the rows "
        "of 'de' in n_active and n_tokens may hold part of that write; restore the folder of run "
        "'m/base' from a copy, or remove it and write the run again"
    )
    assert open_store(path).validate() == [lost]  # not "run repair"
    code, _, err = run_cli(capsys, "repair", path)
    assert code == 1 and err.strip() == f"langneurons: error: {lost}"
    assert (path / "m/base/_journal/zarr.json").exists()  # nothing was changed


def test_a_truncated_undo_file_that_is_not_needed_is_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.zarr"
    _interrupted(path, monkeypatch, merge=False)  # an append replaces no values
    code, out, _ = run_cli(capsys, "repair", path)
    assert code == 0 and "rolled back 1 interrupted write(s): ['m/base']" in out
    assert open_store(path).validate() == []
    assert open_store(path).languages("m/base") == ["en", "de"]
