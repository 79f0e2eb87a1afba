"""Tests of langneurons.extract.importers and the .pt helpers in langneurons.extract._torchio."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import xarray as xr  # noqa: E402

from langneurons.errors import (  # noqa: E402
    InputFormatError,
    InvalidNameError,
    MissingDependencyError,
    ParameterError,
    StoreValidationError,
)
from langneurons.extract import _torchio  # noqa: E402
from langneurons.extract._torchio import load_mask, load_pt, require_torch, save_mask  # noqa: E402
from langneurons.extract.importers import (  # noqa: E402
    import_lape,
    import_njunlp,
    read_lape,
    read_njunlp,
)
from langneurons.store import open_store  # noqa: E402

pytestmark = pytest.mark.requires_torch

LANGS = ["zh", "de", "fr"]  # deliberately not sorted: the store must keep this order
TAG = "train"
RUN = "toy/base"
L, N = 3, 5


class Evil:
    """A custom class: torch.load(weights_only=True) must refuse to unpickle it."""


# ---------------------------------------------------------------------- fixtures
def _njunlp_data() -> dict[str, dict[str, Any]]:
    """Full and prefix statistics per language, with some negative full - prefix cells."""
    rng = np.random.default_rng(0)
    out: dict[str, dict[str, Any]] = {}
    for i, lang in enumerate(LANGS):
        prefix_total = 100 + 10 * i
        full_total = prefix_total + 50 + i
        prefix = rng.integers(10, 60, size=(L, N), dtype=np.int64)
        full = prefix + rng.integers(0, 40, size=(L, N), dtype=np.int64)
        out[lang] = {
            "full_total": full_total,
            "prefix_total": prefix_total,
            "full": full,
            "prefix": prefix,
        }
    # re-tokenisation at the boundary: full below prefix in a few cells
    out["de"]["full"][0, 0] = out["de"]["prefix"][0, 0] - 3
    out["de"]["full"][2, 4] = out["de"]["prefix"][2, 4] - 1
    out["fr"]["full"][1, 2] = out["fr"]["prefix"][1, 2] - 7
    return out


def _save_njunlp(folder: Path, lang: str, d: dict[str, Any], tag: str = TAG) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"total_tokens": d["full_total"], "over_zero": torch.from_numpy(d["full"])},
        folder / f"activation.{lang}.{tag}.pt",
    )
    torch.save(
        {"total_tokens": d["prefix_total"], "over_zero": torch.from_numpy(d["prefix"])},
        folder / f"prefix.activation.{lang}.{tag}.pt",
    )


@pytest.fixture
def njunlp(tmp_path: Path) -> tuple[Path, dict[str, dict[str, Any]]]:
    data = _njunlp_data()
    folder = tmp_path / "acts"
    for lang, d in data.items():
        _save_njunlp(folder, lang, d)
    return folder, data


def _lape_data() -> dict[str, dict[str, Any]]:
    rng = np.random.default_rng(1)
    return {
        lang: {"n": 200 + i, "over_zero": rng.integers(0, 200, size=(L, N)).astype(np.int32)}
        for i, lang in enumerate(LANGS)
    }


@pytest.fixture
def lape(tmp_path: Path) -> tuple[list[Path], dict[str, dict[str, Any]]]:
    data = _lape_data()
    folder = tmp_path / "lape"
    folder.mkdir()
    files = []
    for lang, d in data.items():
        # the LAPE reference names files without a .pt suffix; int32 counts as it saves them
        path = folder / f"activation.{lang}.train.llama-7b"
        torch.save({"n": d["n"], "over_zero": torch.from_numpy(d["over_zero"])}, path)
        files.append(path)
    return files, data


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store.zarr"


def _expected_njunlp(data: dict[str, dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    n_active = np.zeros((len(LANGS), 2, L, N), dtype=np.int64)
    n_tokens = np.zeros((len(LANGS), 2), dtype=np.int64)
    for i, lang in enumerate(LANGS):
        d = data[lang]
        n_active[i, 0] = d["prefix"]
        n_active[i, 1] = np.maximum(d["full"] - d["prefix"], 0)
        n_tokens[i] = (d["prefix_total"], max(d["full_total"] - d["prefix_total"], 1))
    return n_active, n_tokens


def _run_values(path: Path, run: str = RUN) -> tuple[list[str], np.ndarray, np.ndarray]:
    ds = open_store(path).open_run(run)
    return [str(x) for x in ds["language"].values], ds["n_active"].values, ds["n_tokens"].values


# ---------------------------------------------------------------------- njunlp
def test_read_njunlp_computes_full_minus_prefix_and_reports_clamps(njunlp):
    folder, data = njunlp
    counts, report = read_njunlp(folder, TAG, LANGS)
    n_active, n_tokens = _expected_njunlp(data)
    assert list(counts.languages) == LANGS
    assert counts.n_active.dtype == np.int64
    np.testing.assert_array_equal(counts.n_active, n_active)
    np.testing.assert_array_equal(counts.n_tokens, n_tokens)
    # the clamped cells hold 0, not the negative difference
    assert counts.n_active[1, 1, 0, 0] == 0 and counts.n_active[1, 1, 2, 4] == 0
    assert counts.n_active[2, 1, 1, 2] == 0
    assert report["clamped_cells"] == {"zh": 0, "de": 2, "fr": 1}
    assert report["clamped_cells_total"] == 3
    assert report["clamped_above_cells_total"] == 0
    assert report["clamped_tokens"] == {}
    assert report["files"] == [
        name
        for lang in LANGS
        for name in (f"activation.{lang}.{TAG}.pt", f"prefix.activation.{lang}.{TAG}.pt")
    ]
    assert report["n_tokens"]["de"] == {
        "prompt": data["de"]["prefix_total"],
        "response": data["de"]["full_total"] - data["de"]["prefix_total"],
    }
    assert report["source_tokens"]["fr"] == {
        "full": data["fr"]["full_total"],
        "prefix": data["fr"]["prefix_total"],
    }
    assert (report["layers"], report["neurons"]) == (L, N)
    assert report["roles"] == "prompt = prefix file; response = full minus prefix"


def test_import_njunlp_round_trips_bit_exactly(njunlp, store_path):
    folder, data = njunlp
    report = import_njunlp(store_path, RUN, folder, TAG, LANGS, model="org/toy-7b")
    assert report["action"] == "created" and report["run"] == RUN
    assert report["clamped_cells_total"] == 3
    n_active, n_tokens = _expected_njunlp(data)

    langs, got_active, got_tokens = _run_values(store_path)
    assert langs == LANGS
    assert got_active.dtype == np.int64 and got_tokens.dtype == np.int64
    np.testing.assert_array_equal(got_active, n_active)
    np.testing.assert_array_equal(got_tokens, n_tokens)

    plain = xr.open_zarr(store_path, group=RUN)
    assert [str(x) for x in plain["language"].values] == LANGS
    assert [str(x) for x in plain["role"].values] == ["prompt", "response"]
    np.testing.assert_array_equal(plain["n_active"].values, n_active)
    np.testing.assert_array_equal(plain["n_tokens"].values, n_tokens)
    assert plain["n_active"].dims == ("language", "role", "layer", "neuron")

    meta = open_store(store_path).run_metadata(RUN)
    assert meta.model == "org/toy-7b"
    assert meta.dtype == "unknown" and meta.hook_point == ""
    assert meta.corpus == "" and meta.corpus_hash == ""
    prov = dict(meta.provenance)
    assert prov["method"] == "imported" and prov["format"] == "njunlp"
    assert prov["tag"] == TAG
    assert prov["files"] == report["files"]
    assert prov["clamped_cells"] == {"zh": 0, "de": 2, "fr": 1}
    assert prov["roles"] == report["roles"]
    assert open_store(store_path).validate() == []


def test_njunlp_prefix_total_above_full_total_clamps_tokens_to_one(tmp_path, store_path):
    folder = tmp_path / "acts"
    prefix = np.array([[3, 0, 2]], dtype=np.int64)
    full = np.array([[2, 1, 5]], dtype=np.int64)  # differences -1, 1, 3
    _save_njunlp(
        folder, "de", {"full_total": 9, "prefix_total": 10, "full": full, "prefix": prefix}
    )
    report = import_njunlp(store_path, RUN, folder, TAG, ["de"])
    assert report["n_tokens"]["de"] == {"prompt": 10, "response": 1}
    assert report["clamped_tokens"] == {"de": -1}
    assert report["clamped_cells"] == {"de": 1}
    # 3 > 1 response token cannot be stored; it is clamped to the token total and reported
    assert report["clamped_above_cells"] == {"de": 1}
    _, got_active, got_tokens = _run_values(store_path)
    np.testing.assert_array_equal(got_active[0, 1], [[0, 1, 1]])
    np.testing.assert_array_equal(got_tokens, [[10, 1]])
    assert open_store(store_path).run_metadata(RUN).provenance["clamped_tokens"] == {"de": -1}


def test_njunlp_accepts_tensor_totals_and_legacy_files(tmp_path):
    folder = tmp_path / "acts"
    folder.mkdir()
    oz = torch.tensor([[1, 2]], dtype=torch.int64)
    torch.save(
        {"total_tokens": torch.tensor(5), "over_zero": oz + 1},
        folder / "activation.de.x.pt",
        _use_new_zipfile_serialization=False,
    )
    torch.save({"total_tokens": 2, "over_zero": oz}, folder / "prefix.activation.de.x.pt")
    counts, _ = read_njunlp(folder, "x", ["de"])
    np.testing.assert_array_equal(counts.n_active[0], [[[1, 2]], [[1, 1]]])
    np.testing.assert_array_equal(counts.n_tokens, [[2, 3]])


def test_njunlp_adds_and_merges_into_existing_run(njunlp, store_path):
    folder, data = njunlp
    import_njunlp(store_path, RUN, folder, TAG, ["zh", "de"])
    report = import_njunlp(store_path, RUN, folder, TAG, ["fr"])
    assert report["action"] == "added"
    n_active, n_tokens = _expected_njunlp(data)
    langs, got_active, got_tokens = _run_values(store_path)
    assert langs == LANGS
    np.testing.assert_array_equal(got_active, n_active)
    np.testing.assert_array_equal(got_tokens, n_tokens)

    report = import_njunlp(store_path, RUN, folder, TAG, ["de"], merge=True)
    assert report["action"] == "merged"
    langs, got_active, got_tokens = _run_values(store_path)
    assert langs == LANGS
    np.testing.assert_array_equal(got_active[1], 2 * n_active[1])
    np.testing.assert_array_equal(got_tokens[1], 2 * n_tokens[1])
    np.testing.assert_array_equal(got_active[[0, 2]], n_active[[0, 2]])


def test_njunlp_existing_language_without_merge_leaves_run_unchanged(njunlp, store_path):
    folder, _ = njunlp
    import_njunlp(store_path, RUN, folder, TAG, ["zh", "de"])
    before = _run_values(store_path)
    with pytest.raises(StoreValidationError, match="language 'de' is already in run 'toy/base'"):
        import_njunlp(store_path, RUN, folder, TAG, ["fr", "de"])
    after = _run_values(store_path)
    assert after[0] == before[0] == ["zh", "de"]
    np.testing.assert_array_equal(after[1], before[1])
    np.testing.assert_array_equal(after[2], before[2])


def test_njunlp_other_model_refused_and_run_unchanged(njunlp, store_path):
    folder, _ = njunlp
    import_njunlp(store_path, RUN, folder, TAG, ["zh"], model="a")
    with pytest.raises(ParameterError, match="model 'b' differs from the model 'a' of run"):
        import_njunlp(store_path, RUN, folder, TAG, ["de"], model="b")
    assert _run_values(store_path)[0] == ["zh"]


def test_njunlp_shape_unlike_existing_run_leaves_run_unchanged(njunlp, tmp_path, store_path):
    folder, _ = njunlp
    import_njunlp(store_path, RUN, folder, TAG, ["zh"])
    other = tmp_path / "other"
    z = np.zeros((2, 2), dtype=np.int64)
    _save_njunlp(other, "ja", {"full_total": 1, "prefix_total": 0, "full": z, "prefix": z})
    with pytest.raises(StoreValidationError, match="counts have 2 layers x 2 neurons but run"):
        import_njunlp(store_path, RUN, other, TAG, ["ja"])
    assert _run_values(store_path)[0] == ["zh"]
    assert open_store(store_path).validate() == []


# ---------------------------------------------------------------------- lape
def test_import_lape_stores_everything_under_response(lape, store_path):
    files, data = lape
    report = import_lape(store_path, RUN, files, LANGS, model="llama-7b")
    assert report["roles"] == "all tokens stored under response"
    assert report["files"] == [p.name for p in files]
    assert report["n_tokens"]["de"] == {"prompt": 0, "response": data["de"]["n"]}
    assert report["action"] == "created"

    langs, got_active, got_tokens = _run_values(store_path)
    assert langs == LANGS
    for i, lang in enumerate(LANGS):
        np.testing.assert_array_equal(got_active[i, 0], np.zeros((L, N), dtype=np.int64))
        np.testing.assert_array_equal(got_active[i, 1], data[lang]["over_zero"].astype(np.int64))
        np.testing.assert_array_equal(got_tokens[i], [0, data[lang]["n"]])
    plain = xr.open_zarr(store_path, group=RUN)
    np.testing.assert_array_equal(plain["n_active"].values, got_active)
    prov = dict(open_store(store_path).run_metadata(RUN).provenance)
    assert prov == {
        "method": "imported",
        "format": "lape",
        "files": [p.name for p in files],
        "roles": "all tokens stored under response",
    }


def test_read_lape_matches_files(lape):
    files, data = lape
    counts, report = read_lape(files, LANGS)
    assert list(counts.languages) == LANGS
    assert counts.n_active.dtype == np.int64
    np.testing.assert_array_equal(counts.n_active[:, 1], [data[x]["over_zero"] for x in LANGS])
    assert (report["layers"], report["neurons"]) == (L, N)


# ---------------------------------------------------------------------- bad input
def _write_pt(path: Path, obj: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def _ok(total: int = 10, shape: tuple[int, int] = (L, N)) -> dict[str, Any]:
    return {"total_tokens": total, "over_zero": torch.ones(shape, dtype=torch.int64)}


def _njunlp_pair(folder: Path, lang: str, full: Any, prefix: Any) -> None:
    _write_pt(folder / f"activation.{lang}.{TAG}.pt", full)
    _write_pt(folder / f"prefix.activation.{lang}.{TAG}.pt", prefix)


NJUNLP_BAD: list[tuple[str, Any, Any, type[Exception], str]] = [
    (
        "negative total",
        {"total_tokens": -1, "over_zero": torch.zeros((L, N), dtype=torch.int64)},
        _ok(),
        InputFormatError,
        r"activation\.de\.train\.pt: 'total_tokens' is -1; token totals must be >= 0",
    ),
    (
        "float total",
        {"total_tokens": 10.0, "over_zero": torch.zeros((L, N), dtype=torch.int64)},
        _ok(),
        InputFormatError,
        r"'total_tokens' is 10\.0 \(float\); expected an integer token total",
    ),
    (
        "negative counts",
        _ok(),
        {"total_tokens": 5, "over_zero": -torch.ones((L, N), dtype=torch.int64)},
        InputFormatError,
        r"prefix\.activation\.de\.train\.pt: 'over_zero' holds 15 negative counts",
    ),
    (
        "float counts",
        {"total_tokens": 10, "over_zero": torch.ones((L, N))},
        _ok(),
        InputFormatError,
        r"activation\.de\.train\.pt: 'over_zero' has dtype float32; expected an integer tensor",
    ),
    (
        "bool counts",
        {"total_tokens": 10, "over_zero": torch.ones((L, N), dtype=torch.bool)},
        _ok(),
        InputFormatError,
        r"'over_zero' has dtype bool; expected an integer tensor",
    ),
    (
        "over_zero not a tensor",
        {"total_tokens": 10, "over_zero": [[1, 2]]},
        _ok(),
        InputFormatError,
        r"'over_zero' is a list; expected an integer tensor",
    ),
    (
        "missing key",
        {"n": 10, "over_zero": torch.ones((L, N), dtype=torch.int64)},
        _ok(),
        InputFormatError,
        r"activation\.de\.train\.pt has no key 'total_tokens' \(keys: 'n', 'over_zero'\)",
    ),
    (
        "missing over_zero",
        _ok(),
        {"total_tokens": 10},
        InputFormatError,
        r"prefix\.activation\.de\.train\.pt has no key 'over_zero'",
    ),
    (
        "not a dict",
        torch.ones((L, N), dtype=torch.int64),
        _ok(),
        InputFormatError,
        r"activation\.de\.train\.pt holds a Tensor; expected a dict with keys",
    ),
    (
        "1-D counts",
        {"total_tokens": 10, "over_zero": torch.ones(N, dtype=torch.int64)},
        _ok(),
        InputFormatError,
        r"'over_zero' has shape \(5,\); expected \[layers, neurons\]",
    ),
    (
        "counts above tokens",
        _ok(total=0),
        _ok(),
        InputFormatError,
        r"'over_zero' exceeds total_tokens=0 at 15 cells; a count can never exceed",
    ),
    (
        "full and prefix shapes differ",
        _ok(shape=(L, N)),
        _ok(shape=(L, N + 1)),
        InputFormatError,
        r"prefix\.activation\.de\.train\.pt has over_zero of shape \(3, 6\) but "
        r"activation\.de\.train\.pt has \(3, 5\); both files of language 'de'",
    ),
    (
        "pickled object",
        {"total_tokens": 10, "over_zero": Evil()},
        _ok(),
        InputFormatError,
        r"activation\.de\.train\.pt holds pickled Python objects beyond tensors "
        r"\([\w.]*Evil\); refused for safety \(torch\.load weights_only=True\) — re-save it",
    ),
]


@pytest.mark.parametrize(
    ("full", "prefix", "error", "match"),
    [case[1:] for case in NJUNLP_BAD],
    ids=[case[0] for case in NJUNLP_BAD],
)
def test_njunlp_bad_file_writes_nothing(tmp_path, store_path, full, prefix, error, match):
    folder = tmp_path / "acts"
    _njunlp_pair(folder, "zh", _ok(), _ok())
    _njunlp_pair(folder, "de", full, prefix)
    with pytest.raises(error, match=match) as info:
        import_njunlp(store_path, RUN, folder, TAG, ["zh", "de"])
    assert "\n" not in str(info.value)
    assert not store_path.exists()


def test_njunlp_bad_file_leaves_existing_run_unchanged(njunlp, tmp_path, store_path):
    folder, _ = njunlp
    import_njunlp(store_path, RUN, folder, TAG, ["zh"])
    before = _run_values(store_path)
    bad = tmp_path / "bad"
    _njunlp_pair(bad, "de", _ok(), {"total_tokens": -4, "over_zero": torch.ones((L, N))})
    with pytest.raises(InputFormatError, match="'total_tokens' is -4"):
        import_njunlp(store_path, RUN, bad, TAG, ["de"], merge=True)
    after = _run_values(store_path)
    assert after[0] == before[0] == ["zh"]
    np.testing.assert_array_equal(after[1], before[1])


def test_njunlp_languages_with_different_shapes(tmp_path, store_path):
    folder = tmp_path / "acts"
    _njunlp_pair(folder, "zh", _ok(shape=(L, N)), _ok(shape=(L, N)))
    _njunlp_pair(folder, "de", _ok(shape=(L + 1, N)), _ok(shape=(L + 1, N)))
    with pytest.raises(
        InputFormatError,
        match=r"language 'de' has over_zero of shape \(4, 5\) but 'zh' has \(3, 5\); all "
        "languages must come from the same model",
    ):
        import_njunlp(store_path, RUN, folder, TAG, ["zh", "de"])
    assert not store_path.exists()


def test_njunlp_pickled_object_via_pickle_module(tmp_path, store_path):
    folder = tmp_path / "acts"
    _njunlp_pair(folder, "de", _ok(), _ok())
    with open(folder / f"prefix.activation.de.{TAG}.pt", "wb") as fh:
        pickle.dump({"total_tokens": 1, "over_zero": Evil()}, fh, protocol=2)
    with pytest.raises(
        InputFormatError,
        match=r"prefix\.activation\.de\.train\.pt holds pickled Python objects beyond tensors",
    ):
        import_njunlp(store_path, RUN, folder, TAG, ["de"])
    assert not store_path.exists()


@pytest.mark.parametrize(
    "content", [b"", b"hello, not a torch file", b"PK\x03\x04 truncated zip"], ids=repr
)
def test_njunlp_unreadable_file(tmp_path, store_path, content):
    folder = tmp_path / "acts"
    _njunlp_pair(folder, "de", _ok(), _ok())
    (folder / f"activation.de.{TAG}.pt").write_bytes(content)
    with pytest.raises(InputFormatError, match=r"activation\.de\.train\.pt is not a readable") as e:
        import_njunlp(store_path, RUN, folder, TAG, ["de"])
    assert "\n" not in str(e.value)
    assert not store_path.exists()


@pytest.mark.parametrize("which", ["full", "prefix"])
def test_njunlp_missing_file(njunlp, store_path, which):
    folder, _ = njunlp
    name = f"activation.fr.{TAG}.pt" if which == "full" else f"prefix.activation.fr.{TAG}.pt"
    (folder / name).unlink()
    with pytest.raises(
        InputFormatError,
        match=rf"{name.replace('.', '[.]')} does not exist; language 'fr' needs both "
        r"activation\.fr\.train\.pt \(prompt \+ response\) and prefix\.activation\.fr\.train\.pt "
        r"\(prompt only\)",
    ):
        import_njunlp(store_path, RUN, folder, TAG, LANGS)
    assert not store_path.exists()


def test_njunlp_missing_directory(tmp_path, store_path):
    with pytest.raises(InputFormatError, match=r"directory .*nowhere does not exist"):
        import_njunlp(store_path, RUN, tmp_path / "nowhere", TAG, LANGS)
    assert not store_path.exists()


@pytest.mark.parametrize(
    ("languages", "error", "match"),
    [
        ([], ParameterError, "languages is empty; give at least one language code"),
        (["de", "zh", "de"], ParameterError, "language 'de' is given twice; list each language"),
        ("de", ParameterError, "languages must be a list of language codes"),
        (["de", ""], ParameterError, "language label '' is invalid"),
        (["de/x"], ParameterError, "language label 'de/x' is invalid"),
    ],
)
def test_njunlp_bad_languages(njunlp, store_path, languages, error, match):
    folder, _ = njunlp
    with pytest.raises(error, match=match):
        import_njunlp(store_path, RUN, folder, TAG, languages)
    assert not store_path.exists()


@pytest.mark.parametrize("tag", ["", "a/b"])
def test_njunlp_bad_tag(njunlp, store_path, tag):
    folder, _ = njunlp
    with pytest.raises(ParameterError, match=r"tag '.*' is invalid; give the file-name part"):
        import_njunlp(store_path, RUN, folder, tag, LANGS)
    assert not store_path.exists()


def test_bad_run_name_is_refused_before_anything(njunlp, store_path):
    folder, _ = njunlp
    with pytest.raises(InvalidNameError, match="run name '../up' contains '..'"):
        import_njunlp(store_path, "../up", folder, TAG, LANGS)
    assert not store_path.exists()


# ---------------------------------------------------------------------- lape bad input
def test_lape_file_count_mismatch(lape, store_path):
    files, _ = lape
    with pytest.raises(
        ParameterError,
        match="2 files but 3 languages; give one file per language, in the same order",
    ):
        import_lape(store_path, RUN, files[:2], LANGS)
    assert not store_path.exists()


def test_lape_bad_inputs(lape, tmp_path, store_path):
    files, _ = lape
    cases: list[tuple[list[Any], list[str], type[Exception], str]] = [
        ([], [], ParameterError, "languages is empty"),
        ([files[0], files[0]], ["zh", "de"], ParameterError, "is given twice; give one file"),
        (
            [files[0], tmp_path / "missing.pt"],
            ["zh", "de"],
            InputFormatError,
            r"missing\.pt does not exist; it was given for language 'de'",
        ),
        (
            [_write_pt(tmp_path / "bad1.pt", {"total_tokens": 3, "over_zero": torch.ones(2, 2)})],
            ["de"],
            InputFormatError,
            r"bad1\.pt has no key 'n' \(keys: 'total_tokens', 'over_zero'\)",
        ),
        (
            [files[0], _write_pt(tmp_path / "bad2.pt", {"n": 300, "over_zero": torch.ones(1, 1)})],
            ["zh", "de"],
            InputFormatError,
            r"bad2\.pt: 'over_zero' has dtype float32; expected an integer tensor",
        ),
        (
            [
                files[0],
                _write_pt(
                    tmp_path / "bad3.pt", {"n": 300, "over_zero": torch.ones(L, 2 * N).int()}
                ),
            ],
            ["zh", "de"],
            InputFormatError,
            r"language 'de' has over_zero of shape \(3, 10\) but 'zh' has \(3, 5\)",
        ),
        (
            [_write_pt(tmp_path / "bad4.pt", {"n": Evil(), "over_zero": torch.ones(1, 1)})],
            ["de"],
            InputFormatError,
            r"bad4\.pt holds pickled Python objects beyond tensors",
        ),
    ]
    for paths, langs, error, match in cases:
        with pytest.raises(error, match=match):
            import_lape(store_path, RUN, paths, langs)
        assert not store_path.exists()
    with pytest.raises(ParameterError, match="files must be a list of paths"):
        import_lape(store_path, RUN, str(files[0]), ["de"])
    assert not store_path.exists()


# ---------------------------------------------------------------------- masks
def test_mask_round_trip_in_lape_format(tmp_path):
    masks: list[list[np.ndarray]] = [
        [np.array([0, 3, 7]), np.array([], dtype=np.int64), np.array([2])],
        [np.array([], dtype=np.int64), np.array([1, 2], dtype=np.int32), np.array([0, 9])],
    ]
    path = save_mask(tmp_path / "sub" / "mask.pt", masks)
    assert path == tmp_path / "sub" / "mask.pt"
    assert sorted(p.name for p in path.parent.iterdir()) == ["mask.pt"]  # no temp file left
    raw = torch.load(path, weights_only=True)
    assert isinstance(raw, list) and len(raw) == 2
    assert all(isinstance(layers, list) and len(layers) == 3 for layers in raw)
    assert all(t.dtype == torch.int64 and t.ndim == 1 for layers in raw for t in layers)
    back = load_mask(path, n_layers=3, n_neurons=10)
    for got, want in zip(back, masks, strict=True):
        for g, w in zip(got, want, strict=True):
            assert g.dtype == np.int64
            np.testing.assert_array_equal(g, w)


def test_save_mask_replaces_atomically(tmp_path):
    path = tmp_path / "mask.pt"
    save_mask(path, [[np.array([1])]])
    save_mask(path, [[np.array([2, 3])]])
    np.testing.assert_array_equal(load_mask(path)[0][0], [2, 3])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.pt"]


def test_load_mask_accepts_reference_style_empty_layers(tmp_path):
    # the LAPE reference writes torch.tensor(list).long(); a bare torch.tensor([]) is float
    path = _write_pt(tmp_path / "m.pt", [[torch.tensor([]), torch.tensor([4, 5]).long()]])
    got = load_mask(path)
    assert got[0][0].dtype == np.int64 and got[0][0].shape == (0,)


@pytest.mark.parametrize(
    ("obj", "kwargs", "match"),
    [
        ({"a": 1}, {}, r"holds a dict; a LAPE mask file holds a list with one entry per language"),
        ([], {}, r"holds an empty list"),
        ([torch.tensor([1])], {}, r"entry 0 is a Tensor; expected a list with one tensor"),
        (
            [[torch.tensor([1])], [torch.tensor([1]), torch.tensor([2])]],
            {},
            r"entry 1 has 2 layers but entry 0 has 1; every language needs the same number",
        ),
        ([[torch.tensor([1])]], {"n_layers": 2}, r"entry 0 has 1 layers but n_layers has 2"),
        ([[torch.tensor([2, 1])]], {}, r"entry 0 layer 0 is not sorted without repeats"),
        ([[torch.tensor([1, 1])]], {}, r"entry 0 layer 0 is not sorted without repeats"),
        ([[torch.tensor([-1, 1])]], {}, r"entry 0 layer 0 holds negative neuron index -1"),
        ([[torch.tensor([0.5])]], {}, r"entry 0 layer 0 has dtype float32; expected an integer"),
        ([[torch.tensor([[1]])]], {}, r"entry 0 layer 0 has 2 dims; expected a 1-D tensor"),
        ([[[1, 2]]], {}, r"entry 0 layer 0 is a list; expected an integer tensor"),
        ([[torch.tensor([3, 10])]], {"n_neurons": 10}, r"holds neuron index 10; the layer has 10"),
    ],
)
def test_load_mask_rejects_bad_structure(tmp_path, obj, kwargs, match):
    path = _write_pt(tmp_path / "m.pt", obj)
    with pytest.raises(InputFormatError, match=match):
        load_mask(path, **kwargs)


def test_load_mask_refuses_pickled_objects(tmp_path):
    path = _write_pt(tmp_path / "m.pt", [[Evil()]])
    with pytest.raises(InputFormatError, match=r"m\.pt holds pickled Python objects"):
        load_mask(path)


@pytest.mark.parametrize(
    ("masks", "match"),
    [
        ([], "masks is empty"),
        (np.zeros((1, 1)), "masks must be a list"),
        ([np.array([1])], r"masks\[0\] is a ndarray; expected a list"),
        ([[np.array([1])], []], r"masks\[1\] has 0 layers but masks\[0\] has 1"),
        ([[np.array([3, 2])]], r"masks\[0\]\[0\] is not sorted without repeats"),
        ([[np.array([-2])]], r"masks\[0\]\[0\] holds negative neuron index -2"),
        ([[np.array([1.0])]], r"masks\[0\]\[0\] has dtype float64; expected integer"),
    ],
)
def test_save_mask_rejects_bad_masks(tmp_path, masks, match):
    with pytest.raises(ParameterError, match=match):
        save_mask(tmp_path / "m.pt", masks)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- torch handling
def test_load_pt_missing_file_and_directory(tmp_path):
    with pytest.raises(InputFormatError, match=r"nope\.pt does not exist"):
        load_pt(tmp_path / "nope.pt")
    with pytest.raises(InputFormatError, match="is a directory, not a .pt file"):
        load_pt(tmp_path)


def test_require_torch_without_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'langneurons\[extract\]'"):
        require_torch()
    with pytest.raises(MissingDependencyError):
        _torchio.load_pt("anything.pt")


def test_importing_extract_does_not_import_torch():
    code = (
        "import sys, langneurons.extract, langneurons.extract.importers, "
        "langneurons.extract._torchio; print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_import_store_url_keyword_still_works_with_a_warning(njunlp, store_path):
    folder, _ = njunlp
    with pytest.warns(DeprecationWarning, match=r"import_njunlp\(store_url=...\) is deprecated"):
        report = import_njunlp(store_url=store_path, run=RUN, directory=folder, tag=TAG,
                               languages=["zh"])  # fmt: skip
    assert report["action"] == "created"
