"""Neuron types stored as int8 codes with CF flags; no stored copy of ``mask`` (issue 15)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from langneurons import _type_codes
from langneurons.analysis import identify, type_table
from langneurons.analysis.type_tables import neuron_types
from langneurons.store import create_store

from .conftest import make_counts


@pytest.fixture
def saved(tmp_path: Path) -> tuple[Path, xr.Dataset]:
    counts = make_counts(["en", "de", "fr"], layers=3, neurons=40, seed=3)
    store = create_store(tmp_path / "s.zarr")
    store.create_run("m/base", n_layers=counts.n_active.shape[2],
                     n_neurons=counts.n_active.shape[3], counts=counts)  # fmt: skip
    result = identify(store.open_run("m/base"), lam=0.05)
    store.save_result("m/base", "identification", "ternary", result)
    return tmp_path / "s.zarr", result


def test_plain_xarray_shows_codes_and_their_meanings(saved: tuple[Path, xr.Dataset]) -> None:
    path, result = saved
    plain = xr.open_zarr(path, group="m/base/identification/ternary", consolidated=False)
    var = plain["neuron_type"]
    assert var.dtype == np.int8
    assert var.attrs["flag_values"] == [0, 1, 2, 3, 4]
    assert var.attrs["flag_meanings"] == "none unassigned specific related general"
    assert "assigned" not in plain.data_vars  # no transposed duplicate of mask on disk
    labels = np.array(var.attrs["flag_meanings"].split())[var.values]
    np.testing.assert_array_equal(labels, result["neuron_type"].values)
    # the readers decode it: the same tables as from the in-memory result
    np.testing.assert_array_equal(neuron_types(plain), neuron_types(result))
    xr.testing.assert_equal(type_table(plain).compute(), type_table(result))


def test_open_result_gives_labels_and_assigned_back(saved: tuple[Path, xr.Dataset]) -> None:
    from langneurons.store import open_store

    path, result = saved
    back = open_store(path).open_result("m/base", "identification", "ternary")
    assert back["neuron_type"].dtype.kind == "U"
    assert "flag_values" not in back["neuron_type"].attrs
    np.testing.assert_array_equal(back["neuron_type"].values, result["neuron_type"].values)
    np.testing.assert_array_equal(back["assigned"].values, result["assigned"].values)
    assert back["assigned"].dims == ("layer", "neuron", "language")


def test_old_string_results_still_read(tmp_path: Path, saved: tuple[Path, xr.Dataset]) -> None:
    _, result = saved
    old = result.assign(neuron_type=result["neuron_type"].astype(object))  # as saved before
    old = old.assign_coords(language=old["language"].astype(object))
    old.to_zarr(tmp_path / "old.zarr", zarr_format=3, consolidated=False)
    plain = xr.open_zarr(tmp_path / "old.zarr", consolidated=False)
    assert plain["neuron_type"].dtype.kind in "OT"
    np.testing.assert_array_equal(neuron_types(plain), neuron_types(result))
    xr.testing.assert_equal(type_table(plain).compute(), type_table(result))


def test_encode_decode_round_trip_and_errors() -> None:
    labels = np.array([["none", "specific"], ["general", "related"]])
    codes = _type_codes.encode(labels)
    assert codes.dtype == np.int8
    np.testing.assert_array_equal(_type_codes.decode(codes, _type_codes.flag_attrs()), labels)
    with pytest.raises(ValueError, match="'bogus', not one of"):
        _type_codes.encode(np.array(["none", "bogus"]))
    with pytest.raises(ValueError, match="outside its flag_values"):
        _type_codes.decode(np.array([7], dtype=np.int8), _type_codes.flag_attrs())
    with pytest.raises(ValueError, match="do not pair up"):
        _type_codes.decode(codes, {"flag_values": [0, 1], "flag_meanings": "none"})
    # other flag orders decode by their own attributes
    attrs = {"flag_values": [2, 5], "flag_meanings": "general none"}
    np.testing.assert_array_equal(
        _type_codes.decode(np.array([5, 2]), attrs), np.array(["none", "general"])
    )


def test_unknown_labels_are_stored_as_strings(
    tmp_path: Path, saved: tuple[Path, xr.Dataset]
) -> None:
    from langneurons.store import open_store

    path, result = saved
    odd = result.assign(neuron_type=result["neuron_type"].where(result["selected"], "other"))
    store = open_store(path, "r+")
    store.save_result("m/base", "identification", "odd", odd)
    plain = xr.open_zarr(path, group="m/base/identification/odd", consolidated=False)
    assert plain["neuron_type"].dtype.kind in "OT"
