"""``identify`` on a :class:`~langneurons.plain.PlainDataset` (the command line's path).

It must give exactly what it gives on the same run as an :class:`xarray.Dataset` (variables,
labels, dtypes, coordinates, attributes; floats bit for bit), raise the same errors for bad input,
and, as a whole process, never import xarray, pandas, dask or scipy.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from typing import Any

import numpy as np
import pytest
import xarray as xr

from langneurons.analysis.identify import identify, masks_to_lists, summary
from langneurons.errors import (
    InputFormatError,
    LambdaAtBoundWarning,
    ParameterError,
    StoreValidationError,
)
from langneurons.plain import PlainDataset, PlainVariable

from ._moe_runs import moe_run
from .test_identify import FIXTURE, FIXTURE_CASES, make_run, random_run


def plain_run(
    k: int = 4,
    n_layers: int = 5,
    n_neurons: int = 30,
    seed: int = 0,
    *,
    with_coords: bool = True,
) -> PlainDataset:
    """A random run built in numpy alone, as the store's plain reader gives one."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(200, 900, size=(k, 2)).astype(np.int64)
    p = rng.beta(1.5, 5.0, size=(k, 1, n_layers, n_neurons))
    p[:, :, 0, :4] = 0.01
    p[np.arange(4) % k, :, 0, np.arange(4)] = 0.8
    active = rng.binomial(tokens[:, :, None, None], np.clip(p, 0, 1)).astype(np.int64)
    coords = {"role": PlainVariable(("role",), np.array(["prompt", "response"]))}
    if with_coords:  # else labels 0..n-1, as xarray gives a dimension without coordinate
        coords |= {
            "language": PlainVariable(("language",), np.array([f"l{i}" for i in range(k)])),
            "layer": PlainVariable(("layer",), np.arange(2, n_layers + 2, dtype=np.int32)),
            "neuron": PlainVariable(("neuron",), np.arange(n_neurons, dtype=np.int64)),
        }
    return PlainDataset(
        {
            "n_active": PlainVariable(("language", "role", "layer", "neuron"), active),
            "n_tokens": PlainVariable(("language", "role"), tokens),
        },
        coords,
        {"model": "test/model"},
    )


def both(run: PlainDataset, **kwargs: Any) -> tuple[xr.Dataset, xr.Dataset]:
    """``identify(run).to_xarray()`` and ``identify(run.to_xarray())``, same warnings."""
    with warnings.catch_warnings(record=True) as plain_warnings:
        warnings.simplefilter("always")
        plain = identify(run, **kwargs)
    with warnings.catch_warnings(record=True) as xr_warnings:
        warnings.simplefilter("always")
        labelled = identify(run.to_xarray(), **kwargs)
    assert isinstance(plain, PlainDataset)
    assert [(w.category, str(w.message)) for w in plain_warnings] == [
        (w.category, str(w.message)) for w in xr_warnings
    ]
    return plain.to_xarray(), labelled


def assert_exactly_equal(a: xr.Dataset, b: xr.Dataset) -> None:
    """Identical content, dtypes included, floats bit for bit (NaN where NaN)."""
    xr.testing.assert_identical(a, b)
    for name in (*a.data_vars, *a.coords):
        va, vb = a[name].values, b[name].values
        assert va.dtype == vb.dtype, name
        if va.dtype.kind == "f":
            assert np.array_equal(va.view(np.uint64), vb.view(np.uint64)), name
    assert summary(a) == summary(b)


CASES: dict[str, dict[str, Any]] = {
    "ternary fixed lambda": dict(lam=0.05),
    "ternary auto lambda": dict(lam_range=(0, 2)),
    "ternary auto lambda widened": dict(lam_range=(0, 0.01), lam_widen=3),
    "lape": dict(method="lape"),
    "lape role=all": dict(method="lape", role="all", top_rate=0.05, bar=0.8),
    "ternary role=all": dict(role="all", lam=0.2),
    "ternary role=prompt": dict(role="prompt", lam=0.0, top_rate=0.2),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("with_coords", [True, False])
def test_plain_equals_xarray(case: str, with_coords: bool) -> None:
    run = plain_run(with_coords=with_coords)
    plain, labelled = both(run, **CASES[case])
    assert_exactly_equal(plain, labelled)
    assert set(plain.data_vars) >= {"assigned", "neuron_type", "mask", "probability"}


@pytest.mark.parametrize("case", list(FIXTURE_CASES))
def test_spec_fixture_on_a_plain_run(case: str) -> None:
    """The spec's fixture (shared/spec/identification.md) through the plain path: the selection
    and assignment it lists, and exactly the xarray path's result."""
    if not FIXTURE.exists():
        pytest.skip(f"shared fixture not found at {FIXTURE}")
    with np.load(FIXTURE, allow_pickle=False) as data:
        npz = {key: data[key] for key in data.files}
    run = make_run(npz["n_active"], npz["n_tokens"], languages=[str(x) for x in npz["languages"]])
    plain, labelled = both(PlainDataset.from_xarray(run), **FIXTURE_CASES[case])
    np.testing.assert_array_equal(plain["selected"].values, npz[f"{case}__selected"])
    np.testing.assert_array_equal(plain["assigned"].values, npz[f"{case}__assigned"])
    assert_exactly_equal(plain, labelled)


def test_lambda_at_bound_warns_the_same() -> None:
    with pytest.warns(LambdaAtBoundWarning):
        identify(plain_run(), lam_range=(0, 1e-6))
    plain, labelled = both(plain_run(), lam_range=(0, 1e-6))
    assert plain.attrs["lambda_at_bound"]
    assert_exactly_equal(plain, labelled)


@pytest.mark.parametrize("method", ["ternary", "lape"])
def test_a_store_run_made_plain_gives_the_same_result(method: str) -> None:
    """A labelled run with a language subset, transposed counts and float totals."""
    run = random_run(k=5, seed=3).isel(language=[4, 0, 2, 1])
    run = run.transpose("neuron", "role", "layer", "language")
    run["n_tokens"] = run["n_tokens"].astype(np.float64)
    plain = identify(PlainDataset.from_xarray(run), method)
    assert isinstance(plain, PlainDataset)
    assert_exactly_equal(plain.to_xarray(), identify(run, method))


def test_moe_plain_run_goes_through_the_moe_path() -> None:
    rng = np.random.default_rng(1)
    routed = rng.integers(20, 60, size=(3, 2, 4))
    active = rng.binomial(routed[..., None], 0.3, size=(3, 2, 4, 6))
    run = moe_run(active, routed, routed.sum(axis=2).max(axis=1))
    plain = identify(PlainDataset.from_xarray(run), "lape", rank="layer")
    assert isinstance(plain, PlainDataset)
    xr.testing.assert_identical(plain.to_xarray(), identify(run, "lape", rank="layer"))


def _edit(run: PlainDataset, **variables: np.ndarray) -> PlainDataset:
    data = dict(run.data_vars)
    for name, values in variables.items():
        data[name] = PlainVariable(data[name].dims, values)
    return PlainDataset(data, run.coords, run.attrs)


def _languages(run: PlainDataset, keep: list[int]) -> PlainDataset:
    data = {
        name: PlainVariable(var.dims, np.take(var.data, keep, axis=0))
        for name, var in run.data_vars.items()
    }
    coords = dict(run.coords)
    coords["language"] = PlainVariable(("language",), run.coords["language"].data[keep])
    return PlainDataset(data, coords, run.attrs)


def _bad_runs() -> dict[str, tuple[PlainDataset, dict[str, Any]]]:
    run = plain_run(k=3)
    active, tokens = run["n_active"].data, run["n_tokens"].data
    nan = active.astype(np.float64)
    nan[1, 1, 0, 2] = np.nan
    negative = active.copy()
    negative[2, 0, 1, 1] = -1
    above = active.copy()
    above[0, 1, 2, :3] = tokens[0, 1] + 1
    no_tokens = tokens.copy()
    no_tokens[2, 1] = 0
    no_prompt = PlainDataset(
        {
            "n_active": PlainVariable(run["n_active"].dims, active[:, 1:]),
            "n_tokens": PlainVariable(run["n_tokens"].dims, tokens[:, 1:]),
        },
        {**run.coords, "role": PlainVariable(("role",), np.array(["response"]))},
    )
    no_var = PlainDataset({"n_active": run["n_active"]}, run.coords)
    wrong_dims = PlainDataset(
        {**run.data_vars, "n_tokens": PlainVariable(("language",), tokens[:, 1])},
        run.coords,
    )
    return {
        "one language": (_languages(run, [0]), {}),
        "no language": (_languages(run, []), {}),
        "NaN count": (_edit(run, n_active=nan), {}),
        "negative count in the other role": (_edit(run, n_active=negative), {"role": "all"}),
        "n_active above n_tokens": (_edit(run, n_active=above), {}),
        "no tokens": (_edit(run, n_tokens=no_tokens), {}),
        "missing variable": (no_var, {}),
        "missing role": (no_prompt, {"role": "prompt"}),
        "wrong dims": (wrong_dims, {}),
        "rank on a dense run": (run, {"rank": "layer"}),
        "bad parameter": (run, {"top_rate": 2.0}),
        "tau rank 0": (run, {"bar": 1e-9}),
    }


@pytest.mark.parametrize("case", list(_bad_runs()))
def test_bad_input_gives_the_same_error(case: str) -> None:
    run, kwargs = _bad_runs()[case]
    errors: list[tuple[type, str]] = []
    for given in (run, run.to_xarray()):
        with pytest.raises((ParameterError, StoreValidationError)) as info:
            identify(given, **kwargs)
        errors.append((type(info.value), str(info.value)))
    assert errors[0] == errors[1]


def test_wrong_type_and_summary_of_a_plain_result() -> None:
    with pytest.raises(ParameterError, match="run must be an xarray.Dataset, got dict"):
        identify({"n_active": 1})  # type: ignore[call-overload]
    result = identify(plain_run(), lam=0.1)
    assert summary(result) == summary(result.to_xarray())
    assert summary(result)["selected"] == result.attrs["n_selected"]


@pytest.mark.parametrize("with_coords", [True, False])
def test_mask_lists_of_a_plain_result(with_coords: bool) -> None:
    result = identify(plain_run(with_coords=with_coords), "lape", top_rate=0.1)
    if with_coords:  # layers 2.. are not whole-model positions: refused alike
        for given in (result, result.to_xarray()):
            with pytest.raises(InputFormatError, match="layer coordinate must be 0..4"):
                masks_to_lists(given)
        return
    lists = masks_to_lists(result)
    expected = masks_to_lists(result.to_xarray())
    assert [[a.tolist() for a in lang] for lang in lists] == [
        [a.tolist() for a in lang] for lang in expected
    ]
    assert sum(a.size for lang in lists for a in lang) == int(result["mask"].data.sum()) > 0


def test_duplicate_roles_are_refused_alike() -> None:
    run = plain_run(k=2)
    dup = PlainDataset(
        dict(run.data_vars),
        {**run.coords, "role": PlainVariable(("role",), np.array(["response", "response"]))},
    )
    message = "run has a role twice (roles: ['response', 'response']); the run breaks the schema"
    for given in (dup, make_run(np.ones((2, 1, 2)), [3, 3]).assign_coords(role=["a", "a"])):
        with pytest.raises(StoreValidationError) as info:
            identify(given)
        if given is dup:
            assert str(info.value) == message


SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from langneurons.plain import PlainDataset, PlainVariable
    from langneurons.analysis.identify import identify, masks_to_lists, summary

    rng = np.random.default_rng(0)
    tokens = rng.integers(100, 500, size=(3, 2))
    active = rng.binomial(tokens[:, :, None, None], 0.2, size=(3, 2, 4, 20))
    run = PlainDataset(
        {
            "n_active": PlainVariable(("language", "role", "layer", "neuron"), active),
            "n_tokens": PlainVariable(("language", "role"), tokens),
        },
        {
            "language": PlainVariable(("language",), np.array(["en", "de", "fr"])),
            "role": PlainVariable(("role",), np.array(["prompt", "response"])),
        },
    )
    for kwargs in ({}, {"lam": 0.1}, {"method": "lape", "role": "all"}):
        result = identify(run, **kwargs)
        assert isinstance(result, PlainDataset), type(result)
        summary(result)
    try:
        identify(run, top_rate=3.0)
    except Exception as err:
        print(type(err).__name__)
    import langneurons.analysis
    heavy = sorted(m for m in ("xarray", "pandas", "dask", "scipy") if m in sys.modules)
    print("heavy", heavy)
    """
)


def test_identify_on_a_plain_run_imports_no_xarray() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split("\n")[:2] == ["ParameterError", "heavy []"], out.stdout + out.stderr


PACKAGE_SCRIPT = textwrap.dedent(
    """
    import sys
    import langneurons.analysis as analysis
    import langneurons.analysis.identify
    heavy = sorted(m for m in ("xarray", "pandas", "dask", "scipy") if m in sys.modules)
    assert heavy == [], heavy
    assert callable(analysis.identify) and analysis.identify.__name__ == "identify"
    assert set(analysis.__all__) <= set(dir(analysis)), set(analysis.__all__) - set(dir(analysis))
    import xarray as xr
    assert not hasattr(xr.Dataset(), "neurons")  # imported after the package, not yet used
    analysis.type_table  # the first use of a lazily imported name registers ds.neurons
    assert hasattr(xr.Dataset(), "neurons")
    for name in analysis.__all__:
        getattr(analysis, name)
    print("ok")
    """
)


def test_the_package_imports_the_rest_lazily_and_registers_the_accessor_on_use() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PACKAGE_SCRIPT], capture_output=True, text=True, timeout=120
    )
    assert out.stdout.strip() == "ok", out.stdout + out.stderr


def test_the_accessor_is_registered_at_import_when_xarray_is_there() -> None:
    script = (
        "import xarray as xr\nimport langneurons.analysis\nprint(hasattr(xr.Dataset(), 'neurons'))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr
    run = make_run(np.array([[[5, 1]], [[1, 5]]]), [10, 10])
    xr.testing.assert_identical(run.neurons.identify(lam=0.1), identify(run, lam=0.1))


def test_a_top_level_name_registers_the_accessor_before_xarray_is_imported() -> None:
    script = (
        "import langneurons as ln\nln.identify\nimport xarray as xr\n"
        "print(hasattr(xr.Dataset(), 'neurons'))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.stdout.strip() == "True", out.stderr
