"""Tests of ``langneurons.analysis.identify`` (the identification rules) and its kernels."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from langneurons.analysis import IdentifyParams
from langneurons.analysis import _kernels as kern
from langneurons.analysis.identify import (
    SUMMARY_KEYS,
    identify,
    masks_from_lists,
    masks_to_lists,
    params_of,
    select,
    summary,
)
from langneurons.errors import (
    InputFormatError,
    NoValidLambdaError,
    ParameterError,
    StoreValidationError,
)

FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "identify-small.npz"
CORRUPT = "the store is corrupt — run `langneurons validate`"

# case name -> identify() keyword arguments (shared/spec/identification.md, "Fixture")
FIXTURE_CASES: dict[str, dict[str, Any]] = {
    "ternary_top0.1_bar0.9": dict(method="ternary", top_rate=0.1, bar=0.9, lam_range=(0, 2)),
    "ternary_top0.06_bar0.95": dict(method="ternary", top_rate=0.06, bar=0.95, lam_range=(0, 2)),
    "ternary_top0.1_bar0.9_lam0.3": dict(method="ternary", top_rate=0.1, bar=0.9, lam=0.3),
    "lape_top0.05_filter0.9_bar0.9": dict(method="lape", top_rate=0.05, filter_rate=0.9, bar=0.9),
    "lape_top0.1_filter0.95_bar0.8": dict(method="lape", top_rate=0.1, filter_rate=0.95, bar=0.8),
}


# --------------------------------------------------------------------------- helpers


def make_run(
    response: Any,
    tokens: Any,
    prompt: Any = None,
    prompt_tokens: Any = None,
    languages: list[str] | None = None,
) -> xr.Dataset:
    """A run from counts ``[language, layer, neuron]`` and totals ``[language]`` per role."""
    response = np.asarray(response)
    tokens = np.asarray(tokens)
    prompt = np.zeros_like(response) if prompt is None else np.asarray(prompt)
    prompt_tokens = np.zeros_like(tokens) if prompt_tokens is None else np.asarray(prompt_tokens)
    k, n_layers, n_neurons = response.shape
    if languages is None:
        languages = [chr(ord("a") + i) for i in range(k)]
    return xr.Dataset(
        {
            "n_active": (
                ("language", "role", "layer", "neuron"),
                np.stack([prompt, response], axis=1),
            ),
            "n_tokens": (("language", "role"), np.stack([prompt_tokens, tokens], axis=1)),
        },
        coords={
            "language": languages,
            "role": ["prompt", "response"],
            "layer": np.arange(n_layers),
            "neuron": np.arange(n_neurons),
        },
    )


def random_run(k: int = 4, n_layers: int = 6, n_neurons: int = 40, seed: int = 0) -> xr.Dataset:
    """A small random run with both roles filled and a few language-bound neurons."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(500, 2000, size=(k, 2))
    p = rng.beta(1.5, 5.0, size=(1, n_layers, n_neurons)) * rng.uniform(0.8, 1.2, (k, 1, 1))
    p[:, 0, :5] = 0.01
    p[np.arange(5) % k, 0, np.arange(5)] = 0.7
    p = np.clip(p, 0, 1)
    counts = [rng.binomial(tokens[:, r, None, None], p) for r in range(2)]
    return make_run(counts[1], tokens[:, 1], counts[0], tokens[:, 0])


def k2_run() -> xr.Dataset:
    """K = 2, one layer: P = [.9,.1], [.1,.9], [.9,.9], [0,0] (hand-computed cases)."""
    response = np.array([[[90, 10, 90, 0]], [[10, 90, 90, 0]]])
    return make_run(response, [100, 100])


def ties_run() -> xr.Dataset:
    """K = 2, 2 x 3 neurons; at lambda 0 three neurons tie (P shares .8/.2 or .2/.8)."""
    a = np.array([[50, 90, 80], [80, 100, 20]])
    return make_run(np.stack([a, 100 - a]), [100, 100])


def ref_ternary_score(p: Sequence[float], lam: float) -> float:
    """Rule 1 score of one neuron, scalar Python following the spec line by line."""
    k = len(p)
    s = sum(p)
    q = [x / s for x in p] if s > 0 else [1 / k] * k
    q = [max(x, 1e-12) for x in q]
    total = sum(q)
    q = [x / total for x in q]
    h = -sum(x * math.log(x + 1e-30) for x in q) / math.log(k)
    norm_max = sum(1 / j for j in range(1, k + 1)) / k
    return h - lam * max(p) / norm_max


def assert_json_clean(obj: Any) -> None:
    """Attributes must serialise to JSON with plain Python types and no None."""
    json.dumps(obj)
    if isinstance(obj, dict):
        for value in obj.values():
            assert_json_clean(value)
    elif isinstance(obj, list):
        for value in obj:
            assert_json_clean(value)
    else:
        assert obj is not None
        assert type(obj) in (str, int, float, bool), type(obj)


def assert_same_result(a: xr.Dataset, b: xr.Dataset) -> None:
    """Identical variables, coordinates and attributes."""
    xr.testing.assert_identical(a, b)
    assert a.attrs == b.attrs
    for name in a.data_vars:
        assert isinstance(a[name].data, np.ndarray)
        assert isinstance(b[name].data, np.ndarray)


# --------------------------------------------------------------------------- (a) fixture


@pytest.fixture(scope="module")
def fixture_npz() -> Any:
    if not FIXTURE.exists():
        pytest.skip(f"shared fixture not found at {FIXTURE}")
    with np.load(FIXTURE, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def fixture_run(fixture_npz: dict[str, np.ndarray]) -> xr.Dataset:
    return make_run(
        fixture_npz["n_active"],
        fixture_npz["n_tokens"],
        languages=[str(x) for x in fixture_npz["languages"]],
    )


@pytest.mark.parametrize("case", list(FIXTURE_CASES))
def test_fixture_case(
    case: str, fixture_npz: dict[str, np.ndarray], fixture_run: xr.Dataset
) -> None:
    result = identify(fixture_run, **FIXTURE_CASES[case])
    np.testing.assert_array_equal(result["selected"].values, fixture_npz[f"{case}__selected"])
    np.testing.assert_array_equal(result["assigned"].values, fixture_npz[f"{case}__assigned"])
    if f"{case}__tau" in fixture_npz:
        assert result.attrs["tau"] == float(fixture_npz[f"{case}__tau"])
    if f"{case}__lambda" in fixture_npz:
        assert result.attrs["lambda"] == float(fixture_npz[f"{case}__lambda"])
    if f"{case}__score" in fixture_npz:
        expected = fixture_npz[f"{case}__score"]
        got = result["score"].values
        np.testing.assert_array_equal(np.isinf(got), np.isinf(expected))
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert result.attrs["languages"] == [str(x) for x in fixture_npz["languages"]]


def test_fixture_cases_cover_the_file(fixture_npz: dict[str, np.ndarray]) -> None:
    cases = {key.split("__")[0] for key in fixture_npz if "__" in key}
    assert cases == set(FIXTURE_CASES)


# --------------------------------------------------------------------------- (b) hand cases


def test_ties_at_the_cut_go_to_the_lowest_layer_major_index() -> None:
    run = ties_run()
    result = identify(run, lam=0.0, top_rate=0.5, bar=0.5)  # k = round(6 * 0.5) = 3
    score = result["score"].values
    assert score[0, 2] == score[1, 0] == score[1, 2]
    # order: (1,1) ~ 0, (0,1) = H(.9,.1), then the tie (0,2) < (1,0) < (1,2), then (0,0) = 1
    expected = np.array([[False, True, True], [False, True, False]])
    np.testing.assert_array_equal(result["selected"].values, expected)
    result4 = identify(run, lam=0.0, top_rate=0.65, bar=0.5)  # round(3.9) = 4
    expected[1, 0] = True
    np.testing.assert_array_equal(result4["selected"].values, expected)
    stable = np.argsort(score.reshape(-1), kind="stable")[:4]
    np.testing.assert_array_equal(np.flatnonzero(expected), np.sort(stable))


def test_scores_follow_the_spec_formula() -> None:
    run = random_run(k=3, n_layers=2, n_neurons=8, seed=3)
    result = identify(run, lam=0.37, top_rate=0.25)
    p = (run["n_active"].sel(role="response") / run["n_tokens"].sel(role="response")).values
    for layer in range(2):
        for neuron in range(8):
            expected = ref_ternary_score(list(p[:, layer, neuron]), 0.37)
            assert result["score"].values[layer, neuron] == pytest.approx(expected, abs=1e-13)


def test_all_zero_neurons_get_uniform_shares() -> None:
    response = np.array([[[0, 30, 0]], [[0, 10, 20]], [[0, 5, 0]]])
    run = make_run(response, [100, 100, 100])
    ternary = identify(run, lam=0.1, top_rate=1.0, bar=0.5)
    assert ternary["score"].values[0, 0] == pytest.approx(1.0, abs=1e-12)
    assert ternary["score"].values[0, 0] == pytest.approx(ref_ternary_score([0, 0, 0], 0.1))
    assert ternary["neuron_type"].values[0, 0] == "unassigned"
    lape = identify(run, "lape", top_rate=1.0, filter_rate=0.5, bar=0.5)
    assert np.isinf(lape["score"].values[0, 0])  # no language above the filter: never selected
    assert lape["selected"].values.tolist() == [[False, True, True]]
    assert lape.attrs["n_selected"] == 2


def test_two_languages_hand_computed() -> None:
    result = identify(k2_run(), lam=0.0, top_rate=1.0, bar=0.5)
    # sorted P: 0 0 .1 .1 .9 .9 .9 .9; rank round(8 * .5) = 4 -> tau = 0.1
    assert result.attrs["tau"] == 0.1
    assert result["neuron_type"].values.tolist() == [
        ["specific", "specific", "general", "unassigned"]
    ]
    assert result["n_assigned"].values.tolist() == [[1, 1, 2, 0]]
    assert result["shared_by"].values.tolist() == [[1, 1, 2, 0]]
    assert result["general"].values.tolist() == [[False, False, True, False]]
    assert summary(result) == {
        "method": "ternary",
        "lambda": 0.0,
        "tau": 0.1,
        "selected": 4,
        "appear": [1, 2, 1],
        "per_language": {
            "a": {"specific": 1, "related": 0, "mask": 2},
            "b": {"specific": 1, "related": 0, "mask": 2},
        },
        "per_layer": {"specific": [2], "related": [0], "general": [1], "unassigned": [1]},
        "shared_by_n": [1, 2, 1],
    }
    mask = result["mask"].values
    assert mask[:, 0].tolist() == [[True, False, True, False], [False, True, True, False]]
    np.testing.assert_array_equal(result["assigned"].transpose(*mask_dims()).values, mask)


def mask_dims() -> tuple[str, str, str]:
    return ("language", "layer", "neuron")


def test_types_three_languages() -> None:
    response = np.array([[[90, 90, 90, 5, 0]], [[5, 90, 90, 5, 0]], [[5, 5, 90, 5, 0]]])
    result = identify(make_run(response, [100] * 3), lam=0.0, top_rate=1.0, bar=0.5)
    assert result.attrs["tau"] == 0.05
    assert result["neuron_type"].values.tolist() == [
        ["specific", "related", "general", "unassigned", "unassigned"]
    ]
    assert result.attrs["appear"] == [2, 1, 1, 1]
    assert result.attrs["per_language"]["b"] == {"specific": 0, "related": 1, "mask": 2}


def test_top_rate_rounding_to_zero_selects_nothing() -> None:
    result = identify(k2_run(), top_rate=0.01)  # round(4 * 0.01) = 0
    assert result.attrs["n_selected"] == 0
    assert not result["selected"].values.any()
    assert set(result["neuron_type"].values.ravel()) == {"none"}
    assert result.attrs["appear"] == [0, 0, 0]
    # every lambda is ok; hi being ok does not stop the bisection, so best ends below hi
    assert result.attrs["lambda"] == 0.19921875
    trace = result.attrs["lambda_search"]
    assert trace[:3] == [[0.0, True], [0.2, True], [0.1, True]]
    assert len(trace) == 10


def test_top_rate_one_selects_everything() -> None:
    result = identify(k2_run(), lam=0.05, top_rate=1.0)
    assert result["selected"].values.all()
    assert "none" not in set(result["neuron_type"].values.ravel())
    assert result.attrs["n_selected"] == 4


def test_no_valid_lambda() -> None:
    with pytest.raises(NoValidLambdaError) as info:
        identify(k2_run(), top_rate=1.0, bar=0.5)
    assert str(info.value) == (
        "no lambda in [0.0, 0.2] (eps 0.001) leaves every selected neuron short of all 2 "
        "languages; widen lam_range (--lambda-range) or lower top_rate (--top-rate)"
    )


def test_automatic_lambda_bisection_trace() -> None:
    run = random_run(seed=5)
    result = identify(run, lam_range=(0.0, 1.0), eps=0.01, top_rate=0.1, bar=0.8)
    trace = result.attrs["lambda_search"]
    assert [x for x, _ in trace[:2]] == [0.0, 1.0]
    lo, hi = 0.0, 1.0
    best = None
    oks = iter(ok for _, ok in trace)
    if next(oks):
        best = lo
    if next(oks):
        best = hi
    for lam, ok in trace[2:]:
        assert lam == (lo + hi) / 2
        assert next(oks) == ok
        if ok:
            best, lo = lam, lam
        else:
            hi = lam
    assert hi - lo <= 0.01
    assert result.attrs["lambda"] == best
    selected_all_k = result["selected"] & result["general"]
    assert not selected_all_k.values.any()


def test_nan_in_counts() -> None:
    response = np.full((2, 1, 3), 5.0)
    response[1, 0, 2] = np.nan
    with pytest.raises(StoreValidationError) as info:
        identify(make_run(response, [10.0, 10.0]))
    assert (
        str(info.value) == f"n_active has NaN for language 'b' role 'response' at 1 cell; {CORRUPT}"
    )


def test_counts_above_totals() -> None:
    response = np.full((2, 2, 3), 50)
    response[1, 0, :2] = 101
    response[1, 1, 0] = 120
    with pytest.raises(StoreValidationError) as info:
        identify(make_run(response, [100, 100], languages=["en", "de"]))
    assert str(info.value) == (
        "n_active exceeds n_tokens for language 'de' role 'response' at 3 cells; " + CORRUPT
    )


def test_negative_counts_in_the_other_role_when_role_all() -> None:
    response = np.full((2, 1, 3), 5)
    prompt = response.copy()
    prompt[0, 0, 1] = -1
    run = make_run(response, [10, 10], prompt, [10, 10], languages=["en", "de"])
    identify(run, lam=0.1, bar=0.5, top_rate=0.5)  # the response role alone is fine
    with pytest.raises(StoreValidationError) as info:
        identify(run, role="all", lam=0.1, bar=0.5, top_rate=0.5)
    assert (
        str(info.value)
        == f"n_active is negative for language 'en' role 'prompt' at 1 cell; {CORRUPT}"
    )


def test_zero_tokens_for_a_language() -> None:
    run = make_run(np.zeros((2, 1, 3), dtype=int), [10, 0], languages=["en", "sw"])
    with pytest.raises(ParameterError) as info:
        identify(run)
    assert str(info.value) == (
        "n_tokens is 0 for language 'sw' with role='response', so its activation probabilities "
        "are undefined; choose another role (--role), or drop the language (in Python: "
        "run.sel(language=[...]))"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_rate": 0}, "top_rate must be in (0, 1], got 0"),
        ({"top_rate": 1.5}, "top_rate must be in (0, 1], got 1.5"),
        ({"top_rate": True}, "top_rate must be in (0, 1], got True"),
        ({"bar": -0.1}, "bar must be in (0, 1], got -0.1"),
        ({"filter_rate": float("nan")}, "filter_rate must be in (0, 1], got nan"),
        ({"method": "foo"}, "method must be one of 'ternary', 'lape', got 'foo'"),
        ({"role": "both"}, "role must be one of 'response', 'prompt', 'all', got 'both'"),
        ({"lam": -0.1}, "lam must be 'auto' or a finite number >= 0, got -0.1"),
        ({"lam": float("nan")}, "lam must be 'auto' or a finite number >= 0, got nan"),
        ({"lam": "automatic"}, "lam must be 'auto' or a finite number >= 0, got 'automatic'"),
        (
            {"lam_range": (0.3, 0.1)},
            "lam_range must be a pair (lo, hi) of finite numbers with 0 <= lo <= hi, "
            "got (0.3, 0.1)",
        ),
        ({"eps": 0}, "eps must be a finite number > 0, got 0"),
        ({"eps": -1e-3}, "eps must be a finite number > 0, got -0.001"),
    ],
)
def test_parameter_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ParameterError) as info:
        identify(k2_run(), **kwargs)
    assert str(info.value) == message


def test_empty_and_single_language_sets() -> None:
    run = k2_run()
    with pytest.raises(ParameterError) as info:
        identify(run.isel(language=[]))
    assert str(info.value) == (
        "the run has no languages (its language dimension is empty); "
        "identification needs at least 2"
    )
    with pytest.raises(ParameterError) as info:
        identify(run.isel(language=[0]))
    assert str(info.value) == "identification needs at least 2 languages, the run has 1 ('a')"


def test_tau_rank_zero_is_an_error() -> None:
    with pytest.raises(ParameterError) as info:
        identify(k2_run(), bar=0.05, lam=0.0)  # round(8 * 0.05) = 0
    assert str(info.value) == (
        "bar=0.05 puts tau at rank round(8 * 0.05) = 0 of the 8 activation probabilities, "
        "which is undefined; use bar > 0.0625"
    )


def test_schema_errors() -> None:
    run = k2_run()
    with pytest.raises(StoreValidationError) as info:
        identify(run.drop_vars("n_tokens"))
    assert str(info.value) == "run has no variable 'n_tokens'; expected n_tokens[language, role]"
    with pytest.raises(StoreValidationError) as info:
        identify(run.sel(role=["response"]), role="prompt")
    assert str(info.value) == (
        "run has no role 'prompt' (roles: ['response']); the run breaks the schema"
    )
    with pytest.raises(ParameterError) as bad_type:
        identify(run["n_active"])
    assert str(bad_type.value) == "run must be an xarray.Dataset, got DataArray"


@pytest.mark.parametrize("method", ["ternary", "lape"])
def test_role_all_sums_both_roles(method: str) -> None:
    run = random_run(seed=1)
    summed = make_run(
        run["n_active"].sum("role").values,
        run["n_tokens"].sum("role").values,
        languages=list(run["language"].values),
    )
    kwargs: dict[str, Any] = dict(top_rate=0.1, bar=0.8, lam=0.1)
    if method == "lape":
        kwargs = dict(top_rate=0.1, bar=0.8, filter_rate=0.9)
    got = identify(run, method, role="all", **kwargs)
    expected = identify(summed, method, **kwargs)
    assert got.attrs.pop("role") == "all"
    expected.attrs.pop("role")
    assert_same_result(got, expected)


def test_role_prompt_uses_the_prompt_counts() -> None:
    run = random_run(seed=2)
    swapped = run.assign_coords(role=["response", "prompt"]).sortby("role")
    got = identify(run, role="prompt", top_rate=0.1, bar=0.8)
    expected = identify(swapped, role="response", top_rate=0.1, bar=0.8)
    assert got.attrs.pop("role") == "prompt"
    expected.attrs.pop("role")
    assert_same_result(got, expected)
    assert not identify(run, top_rate=0.1, bar=0.8)["selected"].equals(got["selected"])


def test_result_structure_and_attrs() -> None:
    run = random_run(seed=4)
    result = identify(run, top_rate=0.1, bar=0.8)
    assert set(result.data_vars) == {
        "score",
        "selected",
        "assigned",
        "mask",
        "neuron_type",
        "n_assigned",
        "general",
        "shared_by",
        "probability",
    }
    assert result["assigned"].dims == ("layer", "neuron", "language")
    assert result["mask"].dims == ("language", "layer", "neuron")
    assert result["score"].dtype == np.float64
    assert_json_clean(result.attrs)
    attrs = result.attrs
    assert attrs["lam_requested"] == "auto"
    assert attrs["lam_range"] == [0.0, 0.2]
    k = len(attrs["languages"])
    assert len(attrs["appear"]) == len(attrs["shared_by_n"]) == k + 1
    assert sum(attrs["appear"]) == attrs["n_selected"] == int(result["selected"].sum())
    assert sum(attrs["shared_by_n"]) == run.sizes["layer"] * run.sizes["neuron"]
    for name, counts in attrs["per_layer"].items():
        assert len(counts) == run.sizes["layer"], name
    mask = result["mask"]
    assert not (mask & ~result["selected"]).any()
    for lang, counts in attrs["per_language"].items():
        assert counts["mask"] == int(mask.sel(language=lang).sum())
    assert tuple(summary(result)) == SUMMARY_KEYS
    lape = identify(run, "lape", top_rate=0.1, bar=0.8)
    assert_json_clean(lape.attrs)
    assert "lambda" not in lape.attrs
    assert summary(lape)["lambda"] is None
    with pytest.raises(ParameterError):
        summary(run)


# --------------------------------------------------------------------------- (c) dask


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(method="ternary", top_rate=0.1, bar=0.8),
        dict(method="ternary", top_rate=0.1, bar=0.8, lam=0.05, role="all"),
        dict(method="lape", top_rate=0.1, bar=0.8, filter_rate=0.9),
        dict(method="lape", top_rate=0.2, bar=0.9, filter_rate=0.5, role="prompt"),
    ],
)
def test_dask_backed_equals_numpy_backed(kwargs: dict[str, Any]) -> None:
    run = random_run(seed=7)
    eager = identify(run, **kwargs)
    for chunks in ({"layer": 2}, {"language": 1, "role": 1, "layer": 4}):
        lazy = run.chunk(chunks)
        assert lazy["n_active"].chunks is not None
        assert_same_result(identify(lazy, **kwargs), eager)


@pytest.mark.parametrize("case", list(FIXTURE_CASES))
def test_dask_backed_fixture(case: str, fixture_run: xr.Dataset) -> None:
    kwargs = FIXTURE_CASES[case]
    assert_same_result(
        identify(fixture_run.chunk({"layer": 2}), **kwargs), identify(fixture_run, **kwargs)
    )


# --------------------------------------------------------------------------- (d) mask lists


@pytest.mark.parametrize("method", ["ternary", "lape"])
def test_mask_lists_round_trip(method: str) -> None:
    run = random_run(seed=8)
    result = identify(run, method, top_rate=0.2, bar=0.8)
    lists = masks_to_lists(result)
    languages = result.attrs["languages"]
    assert len(lists) == len(languages)
    for per_layer in lists:
        assert len(per_layer) == run.sizes["layer"]
        for idx in per_layer:
            assert idx.dtype == np.int64
            assert np.all(np.diff(idx) > 0)
    back = masks_from_lists(lists, languages, run.sizes["layer"], run.sizes["neuron"])
    xr.testing.assert_equal(back["mask"], result["mask"])
    assert masks_to_lists(back)[1][0].tolist() == lists[1][0].tolist()


def test_masks_from_lists_accepts_plain_lists_and_empty_layers() -> None:
    back = masks_from_lists([[[2, 0], []], [[], [1]]], ["en", "zh"], 2, 3)
    assert back["mask"].values.tolist() == [
        [[True, False, True], [False, False, False]],
        [[False, False, False], [False, True, False]],
    ]


@pytest.mark.parametrize(
    ("lists", "message"),
    [
        ([[[0]]], "mask list has 1 language entries but 2 languages were given"),
        ([[[0]], [[1], [2]]], "mask list entry for language 'en' has 1 layers, expected 2"),
        (
            [[[0], [3]], [[], []]],
            "mask indices for language 'en' layer 1 must be in [0, 3), got 3..3",
        ),
        (
            [[[0], [-1]], [[], []]],
            "mask indices for language 'en' layer 1 must be in [0, 3), got -1..-1",
        ),
        (
            [[[0.5], []], [[], []]],
            "mask indices for language 'en' layer 0 must be a 1-D integer array, "
            "got shape (1,) dtype float64",
        ),
        (
            [[[[0]], []], [[], []]],
            "mask indices for language 'en' layer 0 must be a 1-D integer array, "
            "got shape (1, 1) dtype int64",
        ),
    ],
)
def test_masks_from_lists_errors(lists: Any, message: str) -> None:
    with pytest.raises(InputFormatError) as info:
        masks_from_lists(lists, ["en", "zh"], 2, 3)
    assert str(info.value) == message


def test_masks_to_lists_needs_whole_model_positions() -> None:
    result = identify(random_run(seed=9), top_rate=0.1, bar=0.8)
    with pytest.raises(InputFormatError) as info:
        masks_to_lists(result.isel(layer=slice(1, None)))
    assert str(info.value) == (
        "layer coordinate must be 0..4 to export a LAPE mask list (one entry per layer of the "
        "whole model); select whole models only"
    )
    with pytest.raises(InputFormatError):
        masks_to_lists(result.drop_vars("mask"))


# --------------------------------------------------------------------------- (e) properties


@st.composite
def runs(draw: st.DrawFn) -> xr.Dataset:
    k = draw(st.integers(2, 4))
    n_layers = draw(st.integers(1, 3))
    n_neurons = draw(st.integers(1, 6))
    tokens = np.array(draw(st.lists(st.integers(1, 20), min_size=k, max_size=k)))
    fractions = draw(
        st.lists(
            st.integers(0, 4), min_size=k * n_layers * n_neurons, max_size=k * n_layers * n_neurons
        )
    )
    # few distinct values, so ties are common
    response = (np.array(fractions).reshape(k, n_layers, n_neurons) * tokens[:, None, None]) // 4
    return make_run(response, tokens)


rates = st.sampled_from([0.05, 0.1, 0.25, 0.5, 0.75, 1.0])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(run=runs(), top_rate=rates, bar=rates, lam=st.sampled_from([0.0, 0.1, 0.5, 2.0]))
def test_ternary_properties(run: xr.Dataset, top_rate: float, bar: float, lam: float) -> None:
    m = run.sizes["layer"] * run.sizes["neuron"]
    assume(round(m * run.sizes["language"] * bar) >= 1)
    result = identify(run, top_rate=top_rate, bar=bar, lam=lam)
    k = round(m * top_rate)
    assert result.attrs["n_selected"] == k
    score = result["score"].values.reshape(-1)
    stable = np.sort(np.argsort(score, kind="stable")[:k])
    np.testing.assert_array_equal(np.flatnonzero(result["selected"].values), stable)
    p = (run["n_active"].sel(role="response") / run["n_tokens"].sel(role="response")).transpose(
        "layer", "neuron", "language"
    )
    above = p.values > result.attrs["tau"]
    np.testing.assert_array_equal(
        result["assigned"].values, above & result["selected"].values[..., None]
    )
    assert sum(result.attrs["appear"]) == k
    assert_json_clean(result.attrs)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(run=runs(), top_rate=rates, bar=rates, filter_rate=rates)
def test_lape_properties(run: xr.Dataset, top_rate: float, bar: float, filter_rate: float) -> None:
    n = run.sizes["language"] * run.sizes["layer"] * run.sizes["neuron"]
    assume(round(n * bar) >= 1 and round(n * filter_rate) >= 1)
    result = identify(run, "lape", top_rate=top_rate, bar=bar, filter_rate=filter_rate)
    score = result["score"].values
    k = round(score.size * top_rate)
    finite = int(np.isfinite(score).sum())
    assert result.attrs["n_selected"] == min(k, finite)
    assert not (result["selected"].values & np.isinf(score)).any()
    assert not (result["mask"] & ~result["selected"]).any()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(run=runs(), top_rate=rates, bar=rates)
def test_automatic_lambda_property(run: xr.Dataset, top_rate: float, bar: float) -> None:
    n = run.sizes["language"] * run.sizes["layer"] * run.sizes["neuron"]
    assume(round(n * bar) >= 1)
    try:
        result = identify(run, top_rate=top_rate, bar=bar, lam_range=(0.0, 1.0), eps=0.05)
    except NoValidLambdaError:
        return
    assert not (result["selected"] & result["general"]).values.any()
    assert [result.attrs["lambda"], True] in result.attrs["lambda_search"]


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(st.integers(0, 5), min_size=1, max_size=40),
    data=st.data(),
)
def test_select_smallest_is_a_stable_sort(values: list[int], data: st.DataObject) -> None:
    score = np.array(values, dtype=np.float64)
    k = data.draw(st.integers(0, len(values)))
    expected = np.zeros(len(values), dtype=bool)
    expected[np.argsort(score, kind="stable")[:k]] = True
    np.testing.assert_array_equal(kern.select_smallest(score, k), expected)


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(st.floats(0, 1), min_size=1, max_size=50),
    q=st.floats(0.01, 1.0),
)
def test_quantile_matches_sorting(values: list[float], q: float) -> None:
    flat = np.array(values)
    rank = round(flat.size * q)
    assume(rank >= 1)
    assert kern.quantile_thresholds(flat, [q]) == [float(np.sort(flat)[rank - 1])]


# --------------------------------------------------------------------------- score, then select


@pytest.mark.parametrize(
    ("method", "fixed"),
    [("ternary", {"lam": 0.05}), ("lape", {}), ("ternary", {"lam_range": (0, 2)})],
    ids=["ternary-fixed-lam", "lape", "ternary-auto-lam"],
)
def test_select_equals_identify_at_another_rate(method: str, fixed: dict[str, Any]) -> None:
    run = random_run(seed=7)
    first = identify(run, method, top_rate=0.05, bar=0.9, **fixed)  # type: ignore[arg-type]
    for top_rate, bar in ((0.1, None), (0.02, 0.8), (0.05, 0.9)):
        again = select(first, top_rate=top_rate, bar=bar)
        direct = identify(
            run,
            method,  # type: ignore[arg-type]
            top_rate=top_rate,
            bar=0.9 if bar is None else bar,
            **fixed,
        )
        assert_same_result(again, direct)


def test_select_from_a_lazy_saved_result() -> None:
    run = random_run(seed=8)
    lazy = identify(run, "lape", top_rate=0.05).chunk()
    again = select(lazy, top_rate=0.1)
    assert_same_result(again, identify(run, "lape", top_rate=0.1))
    assert params_of(lazy) == IdentifyParams(method="lape", top_rate=0.05)


def test_select_refuses_results_without_probabilities() -> None:
    result = identify(random_run(seed=1), top_rate=0.1).drop_vars("probability")
    with pytest.raises(ParameterError, match=r"^identification lacks \['probability'\]"):
        select(result, top_rate=0.2)
    with pytest.raises(ParameterError, match=r"^top_rate must be in \(0, 1\], got 2$"):
        select(identify(random_run(seed=1), top_rate=0.1), top_rate=2)


def test_identify_params_is_the_one_place_of_the_defaults() -> None:
    import inspect

    signature = inspect.signature(identify).parameters
    defaults = IdentifyParams()
    for name in IdentifyParams.fields():
        assert signature[name].default == getattr(defaults, name), name
    with pytest.raises(ParameterError, match=r"^top_rate must be in \(0, 1\], got 0$"):
        IdentifyParams(top_rate=0)
    with pytest.raises(ParameterError, match=r"^lam_widen must be an integer from 0 to 10"):
        IdentifyParams(lam_widen=11)
    with pytest.raises(ParameterError, match=r"unknown identification parameter 'top'"):
        IdentifyParams.from_mapping({"top": 0.1})
    params = IdentifyParams(top_rate=1, lam=0, lam_range=[0, 1])  # type: ignore[arg-type]
    assert params.top_rate == 1.0 and params.lam == 0.0 and params.lam_range == (0.0, 1.0)
    assert json.loads(json.dumps(params.to_attrs())) == params.to_attrs()
    run = random_run(seed=2)
    assert_same_result(
        identify(run, "lape", **IdentifyParams(top_rate=0.1).keywords()),
        identify(run, "lape", top_rate=0.1),
    )


def test_a_top_rate_that_selects_nothing_says_so() -> None:
    """round(48 x 0.01) = 0: nothing is selected (as the spec's count says), and the warning
    names the fix rather than the lambda bound, which an empty selection meets trivially."""
    import warnings as _warnings

    import xarray as xr

    from langneurons.analysis import identify as run_identify
    from langneurons.errors import LambdaAtBoundWarning, LangneuronsWarning

    rng = np.random.default_rng(0)
    run = xr.Dataset(
        {
            "n_active": (
                ("language", "role", "layer", "neuron"),
                rng.integers(0, 50, (3, 2, 3, 16)),
            ),
            "n_tokens": (("language", "role"), np.full((3, 2), 100)),
        },
        coords={"language": ["en", "de", "fr"], "role": ["prompt", "response"]},
    )
    for method in ("ternary", "lape"):
        with _warnings.catch_warnings(record=True) as seen:
            _warnings.simplefilter("always")
            result = run_identify(run, method)
        assert result.attrs["n_top"] == 0 and int(result["selected"].sum()) == 0
        messages = [str(w.message) for w in seen if issubclass(w.category, LangneuronsWarning)]
        assert messages == [
            "top_rate=0.01 selects round(48 x 0.01) = 0 of the run's 48 neurons, so nothing is "
            "selected; raise top_rate (--top-rate) above 0.0104"
        ], method
        assert not [w for w in seen if issubclass(w.category, LambdaAtBoundWarning)]
