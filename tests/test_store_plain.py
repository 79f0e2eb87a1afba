"""Runs read as numpy and results written from numpy (``read_run``, ``save_result`` of a
PlainDataset): the same data, checks and bytes as the xarray paths, without importing xarray."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from langneurons.errors import (
    CorruptStoreError,
    IncompleteRunError,
    InterruptedWriteError,
    InvalidNameError,
    ParameterError,
    RunNotFoundError,
)
from langneurons.plain import PlainDataset, PlainVariable
from langneurons.store import RunMetadata, create_store, open_store

from ._moe_data import make_moe_counts
from .conftest import make_counts, run_python

LANGS = ["en", "de", "zh-Hant", "ру"]
SIZES = [6, 4, 6, 5, 3]  # four routed experts of different sizes, then one shared
#: Group attributes that differ between two saves of the same result.
PER_SAVE = ("result_saved", "result_token")


def _build(path: Path) -> Path:
    store = create_store(path)
    counts = make_counts(LANGS, sequences=3, moments=True)
    store.create_run("m/base", n_layers=3, n_neurons=7, sequences=True, moments=True,
                     counts=counts)  # fmt: skip
    store.create_run("m/plain", n_layers=3, n_neurons=7, counts=make_counts(LANGS[:2], seed=1))
    moe = make_moe_counts(["de", "en"], expert_neurons=SIZES, sequences=2, moments=True)
    assert moe.moe is not None
    store.create_run(
        "moe/base",
        n_layers=moe.shape[0],
        n_neurons=moe.moe.n_neurons,
        metadata=RunMetadata(model="tiny-moe"),
        moments=True,
        sequences=True,
        moe=moe.moe,
        counts=moe,
    )
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("plain") / "s.zarr")


@pytest.fixture
def path(built: Path, tmp_path: Path) -> Path:
    """A fresh copy of the built store (tests that write or damage it)."""
    return Path(shutil.copytree(built, tmp_path / "s.zarr"))


# ---------------------------------------------------------------------- read_run
@pytest.mark.parametrize("run", ["m/base", "m/plain", "moe/base"])
@pytest.mark.parametrize(
    "variables", [None, ["n_active"], ["n_tokens"], ["seq_n_active", "n_tokens", "act_sum"]]
)
def test_read_run_gives_what_open_run_loads(
    built: Path, run: str, variables: list[str] | None
) -> None:
    store = open_store(built)
    if variables is not None and "seq_n_active" in variables and run == "m/plain":
        variables = ["n_tokens", "n_active"]
    plain = store.read_run(run, variables=variables)
    ds = store.open_run(run)
    expected = (ds if variables is None else ds[variables]).load()
    got = plain.to_xarray()
    xr.testing.assert_identical(got, expected)
    assert list(plain.data_vars) == list(expected.data_vars)
    for name, var in expected.variables.items():  # identical() compares values, not dtypes
        assert plain[str(name)].dtype == var.dtype, name
        assert isinstance(plain[str(name)].data, np.ndarray)


def test_read_run_leaves_what_xarray_decodes_to_xarray(path: Path) -> None:
    """A run whose array carries an attribute xarray decodes is read through open_run."""
    root = json.loads((path / "zarr.json").read_text())
    for meta in (
        root["consolidated_metadata"]["metadata"]["m/plain/n_tokens"],
        own := json.loads((path / "m/plain/n_tokens/zarr.json").read_text()),
    ):
        meta["attributes"]["scale_factor"] = 0.5
    (path / "zarr.json").write_text(json.dumps(root))
    (path / "m/plain/n_tokens/zarr.json").write_text(json.dumps(own))
    store = open_store(path)
    expected = store.open_run("m/plain")[["n_tokens"]].load()
    assert expected.n_tokens.dtype.kind == "f"  # scaled by xarray
    xr.testing.assert_identical(store.read_run("m/plain", variables=["n_tokens"]).to_xarray(),
                                expected)  # fmt: skip


def test_read_run_refuses_what_open_run_refuses(path: Path) -> None:
    store = open_store(path, mode="r+")
    store.create_run("m/half", n_layers=3, n_neurons=7, languages=["en", "de"],
                     planned_units=["en/0", "de/0"])  # fmt: skip

    def same(exc: type[Exception], run: str, **kw: Any) -> str:
        with pytest.raises(exc) as want:
            _ = open_store(path).open_run(run, **kw).load()
        with pytest.raises(exc) as got:
            open_store(path).read_run(run, **kw)
        assert str(got.value) == str(want.value)
        return str(got.value)

    assert "is not in store" in same(RunNotFoundError, "m/nope")
    assert "is incomplete" in same(IncompleteRunError, "m/half")
    assert open_store(path).read_run("m/half", allow_incomplete=True).sizes["language"] == 2
    with pytest.raises(ParameterError, match=r"^run 'm/base' has no data variable 'nope'; choose"):
        store.read_run("m/base", variables=["n_active", "nope"])
    with pytest.raises(ParameterError, match=r"^variables must be a list of names, not the str"):
        store.read_run("m/base", variables="n_active")
    chunk = path / "m/base/n_active/c/1/0/0/0"
    good = chunk.read_bytes()
    chunk.write_bytes(good[:-5] + bytes([good[-5] ^ 1]) + good[-4:])
    assert "c/1/0/0/0 fails its checksum" in same(CorruptStoreError, "m/base")
    chunk.write_bytes((path / "m/base/n_active/c/2/0/0/0").read_bytes())  # intact, misplaced
    assert "is not the chunk written there" in same(CorruptStoreError, "m/base")
    chunk.unlink()
    assert "c/1/0/0/0 is missing" in same(CorruptStoreError, "m/base")
    chunk.write_bytes(good)
    (path / "m/base/language/zarr.json").unlink()  # damaged metadata
    assert "zarr.json is missing" in same(CorruptStoreError, "m/base")
    journal = path / "m/plain/_journal"
    journal.mkdir()
    (journal / "zarr.json").write_text(
        json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"armed": True}})
    )
    assert "holds an interrupted write" in same(InterruptedWriteError, "m/plain")


def test_read_run_and_save_result_import_no_xarray(path: Path) -> None:
    code = f"""
import sys
import numpy as np
from langneurons.plain import PlainDataset, PlainVariable
from langneurons.store import open_store
store = open_store({str(path)!r}, mode="r+")
run = store.read_run("m/base", variables=["n_active", "n_tokens"])
p = run["n_active"].data[:, 1] / run["n_tokens"].data[:, 1, None, None]
types = np.where(p.max(axis=0) > 0.5, "specific", "none")
result = PlainDataset(
    {{"mask": PlainVariable(("language", "layer", "neuron"), p > 0.5),
      "probability": PlainVariable(("language", "layer", "neuron"), p),
      "neuron_type": PlainVariable(("layer", "neuron"), types)}},
    {{n: run.coords[n] for n in ("language", "layer", "neuron")}},
    {{"method": "test"}},
)
store.save_result("m/base", "identification", "plain", result)
heavy = sorted(m for m in ("xarray", "pandas", "dask") if m in sys.modules)
print("heavy:", heavy)
"""
    assert run_python(code).strip().splitlines()[-1] == "heavy: []"
    saved = open_store(path).open_result("m/base", "identification", "plain")
    assert saved.neuron_type.dtype.kind == "U" and saved.attrs["method"] == "test"


# ---------------------------------------------------------------------- save_result
def _results() -> dict[str, tuple[str, str, xr.Dataset]]:
    """(run, kind, result) of each shape of result the equivalence test saves both ways."""
    from langneurons.analysis import identify

    store = open_store(_RESULTS_STORE)
    dense, moe = store.open_run("m/base"), store.open_run("moe/base")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {
            "ternary-fixed": ("m/base", "identification", identify(dense, lam=0.05, top_rate=0.2)),
            "ternary-auto": ("m/base", "identification", identify(dense, top_rate=0.2)),
            "lape": ("m/base", "identification", identify(dense, method="lape", top_rate=0.3)),
            "moe-lape": ("moe/base", "identification", identify(moe, method="lape")),
            "moe-ternary": ("moe/base", "identification", identify(moe, top_rate=0.2)),
        }
    ident = out["ternary-fixed"][2]
    probs = ident[["probability"]].assign(
        count=(("layer",), np.arange(3, dtype=np.uint16)),
        share=(("language",), np.linspace(0, 1, 4, dtype=np.float32)),
        label=((), np.array("x")),
        tau=((), 0.25),
    )
    probs.attrs = {"kind": "test", "values": np.arange(3), "scalar": np.float64(0.5), "none": None}
    out["stats"] = ("m/base", "stats", probs)
    types = ident[["neuron_type", "selected"]].assign_coords(
        tag=(("layer",), np.array(["a", "bb", "ccc"]))  # a non-dimension coordinate
    )
    out["compare"] = ("m/base", "compare", types)
    coords = {"note": (("extra",), np.array(["a", "b"])), "extra": np.arange(2), "z": ((), 1)}
    out["unattached"] = ("m/base", "ablation", ident[["score"]].assign_coords(coords))
    values = np.random.default_rng(3).random((41, 3001))  # chunked by zarr, edge chunks padded
    values[0, :5] = [np.nan, np.inf, -np.inf, 0.0, -0.0]
    big = {
        "p": (("item", "neuron2"), values),
        "hit": (("item", "neuron2"), values > 0.5),
        "n": (("item",), np.arange(41)),
        "cube": (("item", "neuron2", "k"), np.arange(41 * 3001 * 3).reshape(41, 3001, 3)),
    }
    out["big"] = ("m/base", "stats", xr.Dataset(big))
    return out


_RESULTS_STORE = Path()


def _no_xarray(self: PlainDataset) -> xr.Dataset:
    raise AssertionError("the plain result went through xarray")


def _files(group: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for file in sorted(group.rglob("*")):
        if not file.is_file():
            continue
        key = str(file.relative_to(group))
        if file.name == "zarr.json":
            meta = json.loads(file.read_text())
            for attr in PER_SAVE:
                meta.get("attributes", {}).pop(attr, None)
            out[key] = meta
        else:
            out[key] = file.read_bytes()
    return out


@pytest.mark.parametrize(
    "case",
    [
        "ternary-fixed",
        "ternary-auto",
        "lape",
        "moe-lape",
        "moe-ternary",
        "stats",
        "compare",
        "unattached",
        "big",
    ],  # fmt: skip
)
def test_a_plain_result_is_saved_to_the_same_bytes(built: Path, tmp_path: Path, case: str) -> None:
    global _RESULTS_STORE
    _RESULTS_STORE = built
    run, kind, result = _results()[case]
    paths = {}
    for how in ("xarray", "plain"):
        paths[how] = Path(shutil.copytree(built, tmp_path / how))
        store = open_store(paths[how], mode="r+")
        given = result if how == "xarray" else PlainDataset.from_xarray(result)
        with pytest.MonkeyPatch.context() as mp:  # written directly, not through xarray
            mp.setattr(PlainDataset, "to_xarray", _no_xarray)
            assert store.save_result(run, kind, "r/x", given) == f"{run}/{kind}/r/x"
    a, b = (_files(paths[how] / run / kind / "r/x") for how in ("xarray", "plain"))
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key] == b[key], key
    opened = [open_store(paths[how]).open_result(run, kind, "r/x") for how in ("xarray", "plain")]
    xr.testing.assert_identical(*(ds.drop_attrs(deep=False).load() for ds in opened))
    assert {k: v for k, v in opened[0].attrs.items() if k not in PER_SAVE} == {
        k: v for k, v in opened[1].attrs.items() if k not in PER_SAVE
    }
    for how in ("xarray", "plain"):  # the store's consolidated view and checks are the same
        assert open_store(paths[how]).validate() == []


def test_what_only_xarray_encodes_goes_through_xarray(path: Path) -> None:
    """Datetimes, objects and CF attributes: saved via ``to_xarray`` (the same result)."""
    base = xr.Dataset(
        {"p": (("layer",), np.array([0.5, np.nan, 1.0]))}, coords={"layer": np.arange(3)}
    )
    cases = {
        "when": base.assign(when=(("layer",), np.array(["2024-01-01"] * 3, dtype="M8[ns]"))),
        "obj": base.assign(obj=(("layer",), np.array(["a", None, "c"], dtype=object))),
        "fill": base.assign(q=(("layer",), np.ones(3), {"_FillValue": -1.0})),
        "half": base.assign(h=(("layer",), np.ones(3, dtype=np.float16))),
    }
    store = open_store(path, mode="r+")
    for name, ds in cases.items():
        store.save_result("m/base", "stats", f"x-{name}", ds)
        store.save_result("m/base", "stats", f"p-{name}", PlainDataset.from_xarray(ds))
        got, want = (store.open_result("m/base", "stats", f"{w}-{name}") for w in ("p", "x"))
        xr.testing.assert_identical(
            got.drop_attrs(deep=False).load(), want.drop_attrs(deep=False).load()
        )


def test_bad_saves_fail_the_same_way(path: Path) -> None:
    store = open_store(path, mode="r+")
    result = xr.Dataset({"p": (("layer",), np.ones(3))})
    store.save_result("m/base", "stats", "lape", result)
    plain = PlainDataset({"p": PlainVariable(("layer",), np.ones(3))})
    for args in (
        ("m/base", "nope", "x"),  # kind
        ("m/base", "stats", "../x"),  # name
        ("m/base", "stats", ""),
        ("m/nope", "stats", "x"),  # run
        ("m/base", "stats", "lape/sub"),  # nests inside a result
    ):
        errors = []
        for given in (result, plain):
            with pytest.raises(Exception) as info:
                store.save_result(*args, given)  # type: ignore[arg-type]
            errors.append((type(info.value), str(info.value)))
        assert errors[0] == errors[1], args
        assert issubclass(errors[0][0], (InvalidNameError, RunNotFoundError)), errors[0]
    ro = open_store(path)
    with pytest.raises(PermissionError, match="open it with mode='r\\+'"):
        ro.save_result("m/base", "stats", "y", plain)
    assert store.results("m/base", "stats") == ["lape"]  # nothing half-written left
