"""Paired resampling, the layer-stratified overlap null, membership tests that can reject, and
comparisons of groups of replicate runs (library and ``compare runs``)."""

from __future__ import annotations

import itertools
import math
import warnings

import numpy as np
import pytest
import scipy.stats
import xarray as xr
from statsmodels.stats.contingency_tables import SquareTable

from langneurons.analysis import IdentifyParams as P
from langneurons.analysis import identify, type_change
from langneurons.analysis.compare import (
    group_comparison,
    mcnemar,
    membership_change,
    overlap,
)
from langneurons.analysis.distributions import resolve_paired
from langneurons.analysis.membership import bowker, stuart_maxwell
from langneurons.errors import ParameterError
from langneurons.store import create_store

from .conftest import make_counts, run_cli
from .test_stats_compare import small_run

PARAMS = P(top_rate=0.1)


def _ids(run: xr.Dataset, ids: list[str]) -> xr.Dataset:
    return run.assign(seq_id=("sequence", np.asarray(ids)))


# --------------------------------------------------------------------------- label swaps


def test_swap_weights_give_every_unit_to_exactly_one_pseudo_run() -> None:
    from langneurons.analysis._resample import design, draw_swaps, replicate_seeds, units

    a, b = small_run(0), small_run(1)
    plans = []
    for run in (a, b):
        d = design(run, ("response",), "test", name="run")
        plans.append(units(run, d, "item"))
    plans[1] = plans[1].onto(plans[0], ("a", "b"))
    w_a, w_b = draw_swaps(plans, replicate_seeds(3, 50))
    assert set(np.unique(w_a)) == {0, 1} and set(np.unique(w_b)) == {0, 1}
    # the runs list the same sequences in the same order here: a unit is in one pseudo-run
    assert (w_a + w_b == 1).all()
    again = draw_swaps(plans, replicate_seeds(3, 50))
    assert (again[0] == w_a).all()  # one stream per seed


def test_swap_test_of_identical_runs_finds_nothing_and_states_its_null() -> None:
    a = small_run(0)
    out = type_change(a, a, n_boot=0, n_perm=19, params=PARAMS, seed=4)
    assert (out["change"].values == 0).all()
    assert (out["change_pvalue_swap"].values == 1.0).all()
    assert (out["total_change_pvalue_swap"].values == 1.0).all()
    assert out.attrs["min_pvalue_swap"] == 0.05 and out.attrs["n_perm"] == 19
    assert "exchangeable unit by unit" in out.attrs["pvalue_swap"]
    assert out["swap_total_change"].dims == ("permutation", "type")


def test_swap_test_p_values_are_permutation_p_values() -> None:
    a, b = small_run(0), small_run(1)
    out = type_change(a, b, n_boot=0, n_perm=19, params=PARAMS, seed=2)
    p = out["total_change_pvalue_swap"].values
    null = out["swap_total_change"].values
    change = out["total_change"].values
    expected = (1 + (np.abs(null) >= np.abs(change)).sum(axis=0)) / 20
    assert np.allclose(p, expected)
    # every pseudo-run pair splits the same tokens: the null of the total selection is 0
    assert (null.sum(axis=1) == 0).all()
    same = type_change(a, b, n_boot=0, n_perm=19, params=PARAMS, seed=2)
    assert np.array_equal(same["swap_total_change"].values, null)


def test_swap_test_needs_paired_runs() -> None:
    a, b = small_run(0), small_run(1)
    other = _ids(b, [f"x{i}" for i in range(b.sizes["sequence"])])
    with pytest.raises(
        ParameterError,
        match=r"^n_perm > 0 swaps items between the runs, so both need the same seq_ids \(the "
        r"same corpus, paired\); pass n_perm=0 for runs on different corpora$",
    ):
        type_change(a, other, n_boot=0, n_perm=9, params=PARAMS)
    with pytest.raises(ParameterError, match=r"^n_perm must be"):
        type_change(a, b, n_perm=-1, params=PARAMS)


# --------------------------------------------------------------------------- paired="auto"


def test_auto_pairs_runs_of_one_corpus_and_records_it() -> None:
    a, b = small_run(0), small_run(1)
    assert resolve_paired(a, b, "auto", "sequence", 10) is True
    assert resolve_paired(a, b, "auto", "item", 10) is True
    assert resolve_paired(a, b, False, "sequence", 10) is False
    assert resolve_paired(a, b, "auto", "sequence", 0) is False  # nothing resampled
    out = type_change(a, b, n_boot=3, params=PARAMS)
    assert out.attrs["paired"] is True and out.attrs["paired_requested"] == "auto"
    assert out.attrs["cluster"] == "sequence" and "paired" in out.attrs["resampling"]
    assert type_change(a, b, n_boot=3, params=PARAMS, paired=False).attrs["paired"] is False


def test_auto_does_not_pair_runs_of_other_corpora() -> None:
    a, b = small_run(0), small_run(1)
    other = _ids(b, [f"x{i}" for i in range(b.sizes["sequence"])])
    assert resolve_paired(a, other, "auto", "item", 10) is False
    assert resolve_paired(a, b.drop_vars("seq_id"), "auto", "sequence", 10) is False
    out = type_change(a, other, n_boot=2, params=PARAMS)
    assert out.attrs["paired"] is False


def test_pairing_bad_inputs() -> None:
    a, b = small_run(0), small_run(1)
    ids = [str(x) for x in b["seq_id"].values]
    partly = _ids(b, [f"x{i}" if i < 5 else x for i, x in enumerate(ids)])
    msg = (
        r"^base_run and aligned_run share \d+ of their \d+ item keys; a paired resampling needs "
        r"the same ones in both \(the same corpus\): pass paired=False to resample each run on "
        r"its own$"
    )
    with pytest.raises(ParameterError, match=msg):
        resolve_paired(a, partly, "auto", "item", 10)
    with pytest.raises(ParameterError, match=msg.replace("item keys", "item keys")):
        type_change(a, partly, n_boot=2, params=PARAMS, cluster="item")
    assert type_change(a, partly, n_boot=2, params=PARAMS, paired=False).attrs["paired"] is False
    with pytest.raises(ParameterError, match=r"^paired must be True, False or 'auto', got 'yes'$"):
        type_change(a, b, n_boot=2, params=PARAMS, paired="yes")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match=r"^paired=True needs seq_id\[sequence\] in both runs"):
        resolve_paired(a, b.drop_vars("seq_id"), True, "sequence", 10)
    other = _ids(b, [f"x{i}" for i in range(b.sizes["sequence"])])
    with pytest.raises(ParameterError, match=r"share 0 of their \d+ item keys"):
        resolve_paired(a, other, True, "item", 10)


def test_repeated_seq_ids_pair_as_items_only() -> None:
    a = small_run(0)
    repeated = _ids(a, ["same"] * a.sizes["sequence"])
    with pytest.raises(
        ParameterError,
        match=r"^seq_ids repeat within a language, so sequences cannot be paired one to one; "
        r"pass cluster='item' \(pairs the items\) or paired=False$",
    ):
        resolve_paired(repeated, repeated, "auto", "sequence", 10)
    assert resolve_paired(repeated, repeated, "auto", "item", 10) is True


# --------------------------------------------------------------------------- overlap


def _result(selected: np.ndarray, k: int = 2) -> xr.Dataset:
    """A minimal identification-shaped result: the selection, specific to language 0."""
    layers, neurons = selected.shape
    mask = np.stack([selected] + [np.zeros_like(selected)] * (k - 1))
    return xr.Dataset(
        {
            "selected": (("layer", "neuron"), selected),
            "mask": (("language", "layer", "neuron"), mask),
            "neuron_type": (("layer", "neuron"), np.where(selected, "specific", "none")),
            "general": (("layer", "neuron"), np.zeros_like(selected)),
        },
        coords={"language": [f"l{i}" for i in range(k)]},
    )


def test_layer_null_is_the_exact_distribution_of_random_sets_with_those_layer_sizes() -> None:
    rng = np.random.default_rng(0)
    sa = np.zeros((3, 6), dtype=bool)
    sb = np.zeros((3, 6), dtype=bool)
    for layer, (na, nb) in enumerate([(3, 2), (1, 4), (2, 2)]):
        sa[layer, rng.choice(6, na, replace=False)] = True
        sb[layer, rng.choice(6, nb, replace=False)] = True
    out = overlap(_result(sa), _result(sb))
    both = int((sa & sb).sum())
    # enumerate every placement of B's per-layer sets: the exact null distribution
    per_layer = [
        [int(sa[layer, list(c)].sum()) for c in itertools.combinations(range(6), nb)]
        for layer, nb in enumerate([2, 4, 2])
    ]
    totals = np.array([sum(x) for x in itertools.product(*per_layer)])
    sel = out.sel(type="selected")
    assert sel["type_expected"].item() == pytest.approx(totals.mean())
    assert sel["type_pvalue"].item() == pytest.approx(np.mean(totals >= both))
    assert sel["type_n_both"].item() == both
    assert out.attrs["null"] == "layer" and "per-layer" in out.attrs["pvalue"]
    assert out.attrs["inference"] == "valid" and "inference_reason" not in out.attrs
    uniform_all = overlap(_result(sa), _result(sb), null="uniform")
    assert uniform_all.attrs["inference"] == "descriptive"
    assert uniform_all.attrs["inference_reason"].startswith("null='uniform' ignores the layer")
    uniform = uniform_all.sel(type="selected")
    assert uniform["type_pvalue"].item() == pytest.approx(
        scipy.stats.hypergeom.sf(both - 1, 18, sa.sum(), sb.sum())
    )
    with pytest.raises(
        ParameterError, match=r"^null must be one of 'layer', 'uniform', got 'global'$"
    ):
        overlap(_result(sa), _result(sb), null="global")  # type: ignore[arg-type]


def test_layer_null_does_not_count_a_shared_layer_profile_as_overlap() -> None:
    """Independent sets crowded into the same layer: significant under the uniform null only."""
    rng = np.random.default_rng(1)
    p_layer, p_uniform = [], []
    for _ in range(200):
        sets = []
        for _ in range(2):
            s = np.zeros((8, 40), dtype=bool)
            s[0, rng.choice(40, 20, replace=False)] = True
            s[7, rng.choice(40, 20, replace=False)] = True
            s[3, rng.choice(40, 2, replace=False)] = True
            sets.append(_result(s))
        p_layer.append(overlap(*sets)["type_pvalue"].sel(type="selected").item())
        p_uniform.append(overlap(*sets, null="uniform")["type_pvalue"].sel(type="selected").item())
    assert np.mean(np.array(p_layer) <= 0.05) <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 200)
    assert np.mean(np.array(p_uniform) <= 0.05) > 0.9


# --------------------------------------------------------------------------- membership


def _two_identifications() -> tuple[xr.Dataset, xr.Dataset]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return identify(small_run(0), top_rate=0.1), identify(small_run(1), top_rate=0.1)


def test_a_margin_fixed_by_top_rate_is_not_tested() -> None:
    a, b = _two_identifications()
    out = mcnemar(a, b)
    assert out.attrs["degenerate"] is True
    assert out.attrs["reason"].startswith(
        "every result selects round(L*N*top_rate) = 12 neurons (top_rate=0.1), so the "
        "selection's size is equal by construction"
    )
    assert math.isnan(out["pvalue"].item()) and math.isnan(out["statistic"].item())
    assert out["n_a_only"].item() == out["n_b_only"].item()
    assert mcnemar(a, b, "en").attrs["degenerate"] is False  # a mask's size varies


def test_membership_change_tests_what_can_change() -> None:
    a, b = _two_identifications()
    out = membership_change(a, b)
    assert out.attrs["degenerate"] is True and "reason" in out.attrs
    assert out["language"].values.tolist() == ["en", "de", "fr"]
    assert out["type"].values.tolist() == ["specific", "related", "general"]
    assert np.isfinite(out["language_pvalue"].values).all()
    assert out["count"].sum().item() == 4 * 30
    assert math.isnan(out["pvalue"].item())  # the selection, as mcnemar says
    en = mcnemar(a, b, "en")
    assert out["language_pvalue"].sel(language="en").item() == pytest.approx(en["pvalue"].item())
    # Bowker and Stuart-Maxwell condition on the fixed "none" margin: one df fewer
    assert out["stuart_maxwell_df"].item() >= 1


def test_bowker_and_stuart_maxwell_against_statsmodels() -> None:
    table = np.array([[20, 5, 3, 0], [9, 15, 2, 1], [4, 6, 30, 2], [1, 2, 0, 7]])
    ref = SquareTable(table, shift_zeros=False)
    stat, df, p = bowker(table)
    sym = ref.symmetry()
    assert stat == pytest.approx(sym.statistic) and df == sym.df and p == pytest.approx(sym.pvalue)
    stat, df, p = stuart_maxwell(table)
    hom = ref.homogeneity()
    assert stat == pytest.approx(hom.statistic) and df == hom.df and p == pytest.approx(hom.pvalue)
    assert math.isnan(bowker(np.diag([3, 4]))[0])  # nothing discordant: no test


# --------------------------------------------------------------------------- groups


def _identified(seed: int, extra: int = 0) -> xr.Dataset:
    """An identification of a small run; ``extra`` more related neurons in layer 0."""
    res = identify(small_run(seed), top_rate=0.1)
    kinds = res["neuron_type"].values.copy()
    kinds[0, :extra] = "related"
    return res.assign(neuron_type=(("layer", "neuron"), kinds))


def test_three_against_three_runs_is_an_exact_permutation_with_its_smallest_p() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        high = [_identified(s, extra=10 + s) for s in range(3)]
        low = [_identified(s + 3) for s in range(3)]
    out = group_comparison({"aligned": high, "base": low})
    assert out.attrs["permutation"] == "exact" and out.attrs["n_splits"] == 20
    assert out.attrs["min_pvalue"] == pytest.approx(0.1)  # a split and its mirror: 2 / 20
    assert out.attrs["tests"] == ["permutation", "welch"]
    assert out.attrs["groups"] == {
        "aligned": ["aligned/0", "aligned/1", "aligned/2"],
        "base": ["base/0", "base/1", "base/2"],
    }
    related = out.sel(layer=0, type="related")
    assert related["difference"].item() > 0
    assert related["perm_pvalue"].item() == pytest.approx(0.1)
    assert related["welch_pvalue"].item() < 0.01
    assert out["layer_counts"].shape == (6, 4, 4)
    assert out.attrs["fixed_counts"] == ["selected"]  # one top_rate: 12 neurons in every run
    assert np.isnan(out["total_perm_pvalue"].sel(count="selected").item())
    assert "smallest attainable permutation p-value is 0.1" in out.attrs["note"]
    # 2 against 3: no mirror split, 10 splits, smallest p 1/10
    two = group_comparison({"a": high[:2], "b": low})
    assert two.attrs["n_splits"] == 10 and two.attrs["min_pvalue"] == pytest.approx(0.1)


def test_one_run_per_group_is_descriptive() -> None:
    a, b = _two_identifications()
    out = group_comparison({"x": [a], "y": [b]})
    assert out.attrs["inference"] == "descriptive" and out.attrs["tests"] == []
    assert "text-sampling noise only, not training variance" in out.attrs["note"]
    assert np.isnan(out["perm_pvalue"].values).all()


def test_group_comparison_bad_inputs() -> None:
    a, b = _two_identifications()
    with pytest.raises(
        ParameterError,
        match=r"^group 'y' has 1 run; Welch's t needs at least 2 runs per group: add runs or "
        r"pass test='permutation'$",
    ):
        group_comparison({"x": [a, b], "y": [b]}, test="welch")
    with pytest.raises(
        ParameterError,
        match=r"^groups 'x' and 'y' have 1 run each; a permutation across runs needs at least "
        r"3 runs in all",
    ):
        group_comparison({"x": [a], "y": [b]}, test="permutation")
    with pytest.raises(ParameterError, match=r"^groups must hold exactly two groups, got 3"):
        group_comparison({"x": [a], "y": [b], "z": [a]})
    with pytest.raises(ParameterError, match=r"^group 'y' is empty; give it at least one run$"):
        group_comparison({"x": [a], "y": []})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = identify(small_run(2, layers=3), top_rate=0.1)
    with pytest.raises(
        ParameterError, match=r"^x/0 and y/0 must have the same layer x neuron shape"
    ):
        group_comparison({"x": [a], "y": [small]})


# --------------------------------------------------------------------------- the command line


@pytest.fixture(scope="module")
def group_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("groups") / "s.zarr"
    store = create_store(path)
    for i, name in enumerate(["m/a1", "m/a2", "m/b1", "m/b2"]):
        counts = make_counts(["en", "de", "fr"], layers=3, neurons=20, seed=i, sequences=4)
        store.create_run(name, n_layers=3, n_neurons=20, sequences=True, counts=counts)
    counts = make_counts(["en", "de", "fr"], layers=4, neurons=20, seed=9, sequences=4)
    store.create_run("m/other", n_layers=4, n_neurons=20, sequences=True, counts=counts)
    return str(path)


def _saved(path: str) -> list[str]:
    from langneurons.store import open_store

    store = open_store(path)
    return [n for r in ("m/a1", "m/b1") for n in store.results(r, "compare")]


def test_compare_groups_on_the_command_line(
    group_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        capsys, "compare", "runs", group_store, "--group", "aligned=m/a1,m/a2",
        "--group", "base=m/b1,m/b2", "--top-rate", "0.1",
    )  # fmt: skip
    assert code == 0, err
    assert "groups: saved at m/a1/compare/groups-aligned-vs-base/groups" in out
    assert "perm p (min 0.333)" in out and "Welch p" in out


def test_compare_two_unrelated_runs_prints_the_reason_not_a_p_value(
    group_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        capsys, "compare", "runs", group_store, "--base", "m/a1", "--aligned", "m/b1",
        "--top-rate", "0.1", "--n-boot", "0", "--no-save",
    )  # fmt: skip
    assert code == 0, err
    assert "selection: every result selects round(L*N*top_rate)" in out
    assert "mask en" in out and "Stuart-Maxwell" in out


def test_compare_runs_reports_the_swap_test_of_the_type_change(
    group_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        capsys, "compare", "runs", group_store, "--base", "m/a1", "--aligned", "m/b1",
        "--top-rate", "0.1", "--n-boot", "3", "--n-swap", "9", "--no-save",
    )  # fmt: skip
    assert code == 0, err
    table = out[out.index("type_change: not saved") :]
    assert "  type        base  aligned  change        0.95 CI  boot p  swap p" in table
    assert "swap p (9 permutations of the total, smallest attainable 0.1): two-sided " in table
    masks = out[out.index("mask_change: not saved") :]
    assert "  language  base  aligned  change  swap p  max-T p" in masks
    assert "max-T p: familywise over languages" in masks and "inference: valid" in masks
    switches = out[out.index("type_switches: not saved") :]
    assert (
        "  neurons switching type: " in switches
        and "(one-sided; smallest attainable 0.1)" in switches
    )
    assert "forward  back  net  swap p" in switches and "none -> specific" in switches


def test_type_switches_against_label_swapped_runs(group_store: str) -> None:
    from langneurons.analysis import IdentifyParams, transition_table, type_switches
    from langneurons.store import open_store

    store = open_store(group_store)
    a, b = store.open_run("m/a1").load(), store.open_run("m/b1").load()
    params = IdentifyParams(top_rate=0.1, lam_widen=10)
    out = type_switches(a, b, params=params, n_perm=19, seed=4)
    table = transition_table(identify(a, top_rate=0.1, lam_widen=10),
                             identify(b, top_rate=0.1, lam_widen=10))  # fmt: skip
    np.testing.assert_array_equal(out["count"], table["count"])
    assert int(out["changed"]) == int(table["changed"])
    count = out["count"].values
    assert out["asymmetry"].values[1, 2] == count[1, 2] - count[2, 1]
    assert np.isnan(out["asymmetry"].values[2, 1]) and np.isnan(out["asymmetry"].values[0, 0])
    assert 1 / 20 <= float(out["changed_pvalue_swap"]) <= 1
    assert out.attrs["inference"] == "valid" and out.sizes["permutation"] == 19
    # a run against itself: nothing switches, nothing is asymmetric
    same = type_switches(a, a, params=params, n_perm=9)
    assert int(same["changed"]) == 0 and float(same["changed_pvalue_swap"]) == 1.0
    with pytest.raises(ParameterError, match=r"^type_switches swaps items between the runs"):
        type_switches(a, b, params=params, n_perm=9, paired=False)


def test_mask_change_swaps_items_and_refuses_what_it_cannot_test(group_store: str) -> None:
    from langneurons.analysis import IdentifyParams, mask_change
    from langneurons.store import open_store

    store = open_store(group_store)
    a, b = store.open_run("m/a1").load(), store.open_run("m/b1").load()
    params = IdentifyParams(top_rate=0.1, lam_widen=10)
    out = mask_change(a, b, params=params, n_perm=19, seed=3)
    assert list(out["language"].values) == ["en", "de", "fr"]
    np.testing.assert_array_equal(out["change"], out["aligned"] - out["base"])
    p, maxt = out["change_pvalue_swap"].values, out["change_pvalue_maxt"].values
    assert ((p >= 1 / 20) & (p <= 1)).all() and (maxt >= p - 1e-12).all()  # max-T is stricter
    assert out.attrs["min_pvalue_swap"] == 1 / 20 and out.attrs["inference"] == "valid"
    assert out.sizes["permutation"] == 19
    # a run against itself changes nothing: every p is 1
    same = mask_change(a, a, params=params, n_perm=9, seed=3)
    assert (same["change"] == 0).all() and (same["change_pvalue_swap"] == 1).all()
    # the same seed, the same answer
    again = mask_change(a, b, params=params, n_perm=19, seed=3)
    xr.testing.assert_identical(out, again)
    with pytest.raises(ParameterError, match=r"^mask_change swaps items between the runs"):
        mask_change(a, b, params=params, n_perm=9, paired=False)
    with pytest.raises(ParameterError, match=r"n_perm"):
        mask_change(a, b, params=params, n_perm=0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--group", "a=m/a1", "--group", "a=m/b1"],
            "group name 'a' is given twice; name each group once",
        ),
        (["--group", "a=m/a1"], "compare runs takes exactly two --group options"),
        (
            ["--group", "a=m/a1,m/b1", "--group", "b=m/b1"],
            "run 'm/b1' is in group 'a' and again in 'b'; every run may be used once",
        ),
        (["--group", "a", "--group", "b=m/b1"], "--group 'a' must read NAME=RUN[,RUN...]"),
        (
            ["--base", "m/a1", "--group", "a=m/a1", "--group", "b=m/b1"],
            "give either --base and --aligned or two --group options, not both",
        ),
        (
            ["--group", "a=m/a1,m/a2", "--group", "b=m/other"],
            "must have the same layer x neuron shape",
        ),
        (
            ["--group", "a=m/a1,m/a2", "--group", "b=m/b1", "--test", "welch"],
            "group 'b' has 1 run; Welch's t needs at least 2 runs per group",
        ),
    ],
)
def test_compare_groups_bad_input_is_one_line_and_saves_nothing(
    group_store: str, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    before = _saved(group_store)
    code, out, err = run_cli(capsys, "compare", "runs", group_store, *args, "--top-rate", "0.1")
    assert code != 0
    errors = [line for line in err.splitlines() if line.startswith("langneurons: error:")]
    assert len(errors) == 1 and message in errors[0], err
    assert _saved(group_store) == before


def test_one_run_per_group_adds_the_text_sampling_bootstrap_and_says_so(
    group_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from langneurons import workflows
    from langneurons.store import open_store

    store = open_store(group_store)
    parts = workflows.compare_groups(
        {"x": [store.open_run("m/a1")], "y": [store.open_run("m/b1")]}, PARAMS, n_boot=3
    )
    assert set(parts) == {"groups", "type_change"}
    assert "text-sampling noise only, not training variance" in parts["type_change"].attrs["note"]
    assert parts["groups"].attrs["inference"] == "descriptive"
    code, out, err = run_cli(
        capsys, "compare", "runs", group_store, "--group", "x=m/a1", "--group", "y=m/b1",
        "--top-rate", "0.1", "--n-boot", "3", "--no-save",
    )  # fmt: skip
    assert code == 0, err
    assert "text-sampling noise only, not training variance" in out
    assert "inference: descriptive" in out


def test_compare_runs_needs_two_runs_or_two_groups(
    group_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "compare", "runs", group_store, "--base", "m/a1")
    assert code != 0
    assert "compare runs needs --base and --aligned, or two --group NAME=RUN,... options" in err


def test_compare_checkpoints_prints_why_cochran_q_is_not_tested(
    group_store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(
        capsys, "compare", "checkpoints", group_store, "--runs", "m/a1,m/a2,m/b1",
        "--top-rate", "0.1", "--no-save",
    )  # fmt: skip
    assert code == 0, err
    assert "cochran_q: not saved (--no-save)" in out
    assert "selection: every result selects round(L*N*top_rate)" in out
