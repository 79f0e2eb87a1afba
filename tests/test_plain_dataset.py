"""PlainDataset: a Dataset's content without xarray, and its round trip through xarray."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from langneurons.plain import PlainDataset, PlainVariable


def _plain() -> PlainDataset:
    return PlainDataset(
        {
            "n_active": PlainVariable(("language", "layer"), np.arange(6).reshape(2, 3)),
            "score": PlainVariable(("layer",), np.array([0.5, np.nan, 1.0]), {"units": "nats"}),
        },
        {
            "language": PlainVariable(("language",), np.array(["en", "zh"])),
            "layer": PlainVariable(("layer",), np.arange(3)),
        },
        {"method": "ternary", "per_layer": {"specific": [1, 2, 3]}},
    )


def test_to_xarray_is_the_dataset_built_directly() -> None:
    expected = xr.Dataset(
        {
            "n_active": (("language", "layer"), np.arange(6).reshape(2, 3)),
            "score": (("layer",), np.array([0.5, np.nan, 1.0]), {"units": "nats"}),
        },
        coords={"language": ["en", "zh"], "layer": np.arange(3)},
        attrs={"method": "ternary", "per_layer": {"specific": [1, 2, 3]}},
    )
    xr.testing.assert_identical(_plain().to_xarray(), expected)


def test_round_trip_through_xarray() -> None:
    ds = _plain().to_xarray()
    back = PlainDataset.from_xarray(ds)
    xr.testing.assert_identical(back.to_xarray(), ds)
    assert back.sizes == {"language": 2, "layer": 3}
    assert "score" in back and "language" in back and "nope" not in back
    np.testing.assert_array_equal(back["n_active"].values, np.arange(6).reshape(2, 3))


def test_sizes_that_disagree_are_refused() -> None:
    with pytest.raises(ValueError, match="dimension 'layer' has size 3 elsewhere but 4"):
        PlainDataset(
            {
                "a": PlainVariable(("layer",), np.zeros(3)),
                "b": PlainVariable(("layer",), np.zeros(4)),
            }
        )


def test_bad_variables_are_refused() -> None:
    with pytest.raises(ValueError, match="1 dims"):
        PlainVariable(("layer",), np.zeros((2, 2)))
    with pytest.raises(TypeError, match="numpy array"):
        PlainVariable(("layer",), [1, 2])  # type: ignore[arg-type]
    with pytest.raises(KeyError):
        _plain()["missing"]


def test_importing_it_does_not_import_xarray() -> None:
    code = "import sys, langneurons.plain; print('xarray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
