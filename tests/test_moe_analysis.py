"""Analysis of mixture-of-experts runs: per-expert identification, language experts, routing
comparison (issue 17, docs/design/moe.md), on hand-built runs with known answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from langneurons.analysis import identify, select, summary
from langneurons.analysis.routing import language_experts, routing_change
from langneurons.errors import ParameterError, StoreValidationError

from ._moe_runs import moe_run, routing_run
from .test_identify import make_run

FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "identify-small.npz"
RULES: list[dict[str, Any]] = [
    dict(method="ternary", top_rate=0.1, bar=0.9, lam_range=(0, 2)),
    dict(method="ternary", top_rate=0.1, bar=0.9, lam=0.3),
    dict(method="lape", top_rate=0.1, filter_rate=0.9, bar=0.8),
]


def split_experts(n_active: np.ndarray, n_experts: int) -> np.ndarray:
    """Dense ``[language, layer, neuron]`` as ``[language, layer, expert, neuron / E]``."""
    k, n_layers, n_neurons = n_active.shape
    return n_active.reshape(k, n_layers, n_experts, n_neurons // n_experts)


def random_counts(seed: int = 0, k: int = 3, layers: int = 3, experts: int = 4, neurons: int = 10):
    rng = np.random.default_rng(seed)
    routed = rng.integers(40, 400, size=(k, layers, experts))
    p = rng.beta(1.0, 3.0, size=(1, layers, experts, neurons)) * rng.uniform(0.5, 1.5, (k, 1, 1, 1))
    active = rng.binomial(routed[..., None], np.clip(p, 0, 1))
    return active, routed


@pytest.fixture(scope="module")
def fixture_npz() -> dict[str, np.ndarray]:
    if not FIXTURE.exists():
        pytest.skip(f"shared fixture not found at {FIXTURE}")
    with np.load(FIXTURE, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


# --------------------------------------------------------------------------- reduces to dense


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r['method']}-{r.get('lam', 'auto')}")
def test_experts_seeing_every_token_give_the_dense_result_bit_for_bit(
    fixture_npz: dict[str, np.ndarray], rule: dict[str, Any]
) -> None:
    """With n_routed == n_tokens everywhere, P is the dense P and rank="model" is the dense rule
    on the (layer, expert, neuron) units in order: the spec fixture's answers, bit for bit."""
    dense_active, tokens = fixture_npz["n_active"], fixture_npz["n_tokens"]
    languages = tuple(str(x) for x in fixture_npz["languages"])
    n_experts = 2
    active = split_experts(dense_active, n_experts)
    routed = np.broadcast_to(tokens[:, None, None], active.shape[:3]).copy()
    moe = identify(moe_run(active, routed, tokens, languages=languages), **rule)
    dense = identify(make_run(dense_active, tokens, languages=list(languages)), **rule)
    shape = moe["score"].shape
    for name in ("score", "selected", "shared_by", "n_assigned", "general"):
        np.testing.assert_array_equal(moe[name].values, dense[name].values.reshape(shape), name)
    np.testing.assert_array_equal(
        moe["mask"].values, dense["mask"].values.reshape(moe["mask"].shape)
    )
    assert moe.attrs["tau"] == dense.attrs["tau"]
    assert moe.attrs["lambda"] == dense.attrs.get("lambda")
    for key in ("appear", "per_language", "shared_by_n", "n_selected"):
        assert moe.attrs[key] == dense.attrs[key], key
    assert moe.attrs["rank"] == "model" and moe.attrs["n_undefined_cells"] == 0


@pytest.mark.parametrize("rule", RULES, ids=lambda r: f"{r['method']}-{r.get('lam', 'auto')}")
def test_rank_expert_and_layer_are_the_dense_rule_on_each_scope(rule: dict[str, Any]) -> None:
    active, routed = random_counts(seed=3)
    run = moe_run(active, routed, routed[:, 0].sum(axis=1))
    by_expert = identify(run, rank="expert", **rule)
    by_layer = identify(run, rank="layer", **rule)
    assert by_expert.attrs["rank"] == "expert" and by_layer.attrs["rank"] == "layer"
    assert by_expert["tau"].dims == ("layer", "expert") and by_layer["tau"].dims == ("layer",)
    assert by_expert.attrs["tau"] is None
    n_layers, n_experts = routed.shape[1:]
    # a cell alone: a dense run of one layer whose tokens are the expert's routed tokens
    for layer in range(n_layers):
        for expert in range(n_experts):
            cell = active[:, layer, expert][:, None, :]
            dense = identify(make_run(cell, routed[:, layer, expert]), **rule)
            got = by_expert.isel(layer=layer, expert=expert)
            np.testing.assert_array_equal(got["selected"].values, dense["selected"].values[0])
            np.testing.assert_array_equal(got["score"].values, dense["score"].values[0])
            assert float(got["tau"]) == dense.attrs["tau"]
    # a layer alone: where a layer's experts share one denominator per language, rank="layer"
    # is the dense rule on that layer's (expert, neuron) units
    even = np.broadcast_to(routed[:, :, :1], routed.shape).copy()
    act = np.minimum(active, even[..., None])
    by_layer = identify(moe_run(act, even, even[:, 0].sum(axis=1)), rank="layer", **rule)
    for layer in range(n_layers):
        flat = act[:, layer].reshape(act.shape[0], 1, -1)
        dense = identify(make_run(flat, even[:, layer, 0]), **rule)
        got = by_layer.isel(layer=layer)
        np.testing.assert_array_equal(got["selected"].values.reshape(-1), dense["selected"][0])
        np.testing.assert_array_equal(got["score"].values.reshape(-1), dense["score"][0])
        assert float(got["tau"]) == dense.attrs["tau"]


# --------------------------------------------------------------------------- denominators


def hand_run(**kw: Any) -> xr.Dataset:
    """K = 2 (en, de), one layer, two experts of two neurons.

    Expert 0 receives 100 en and 10 de tokens; its neuron 0 fires on 50 en and 5 de tokens
    (P = .5, .5: not language-bound, although its raw counts are 10:1). Expert 1 receives 100
    en and 10 de tokens; its neuron 0 fires on 10 en and 10 de tokens (P = .1, 1.0: German).
    The neurons 1 fire on every routed token (P = 1, 1: general)."""
    active = np.array([[[[50, 100], [10, 100]]], [[[5, 10], [10, 10]]]])
    routed = np.array([[[100, 100]], [[10, 10]]])
    return moe_run(active, routed, np.array([100, 10]), languages=("en", "de"), top_k=1, **kw)


def test_probabilities_use_the_experts_own_token_count() -> None:
    result = identify(hand_run(), "lape", top_rate=0.25, filter_rate=0.25, bar=0.25)
    p = result["probability"].sel(layer=0)
    np.testing.assert_array_equal(p.sel(language="en").values, [[0.5, 1.0], [0.1, 1.0]])
    np.testing.assert_array_equal(p.sel(language="de").values, [[0.5, 1.0], [1.0, 1.0]])
    # one of the four units is selected: the German one (lowest entropy, above the filter)
    assert result.attrs["n_selected"] == 1
    assert bool(result["selected"].sel(layer=0, expert=1, neuron=0))
    assert result["neuron_type"].sel(layer=0, expert=1, neuron=0).item() == "specific"
    assert result["mask"].sel(language="de").values.sum() == 1
    assert result["mask"].sel(language="en").values.sum() == 0
    assert result["n_language_neurons"].sel(language="de", layer=0).values.tolist() == [0, 1]
    assert result.attrs["per_expert"]["specific"] == [0, 1]
    assert summary(result)["per_language"]["de"] == {"specific": 1, "related": 0, "mask": 1}


# --------------------------------------------------------------------------- undefined P


def test_an_expert_without_tokens_of_a_language_is_undefined_not_zero() -> None:
    active, routed = random_counts(seed=5, k=3, layers=2, experts=3, neurons=6)
    active[1, 1, 2] = 0
    routed[1, 1, 2] = 0  # expert 2 of layer 1 saw no token of the second language
    run = moe_run(active, routed, routed[:, 0].sum(axis=1))
    result = identify(run, "lape", top_rate=0.2, filter_rate=0.5, bar=0.5)
    cell = result.isel(layer=1, expert=2)
    assert (cell["neuron_type"].values == "undefined").all()
    assert not cell["selected"].values.any() and not cell["analysed"].values.any()
    assert np.isnan(cell["score"].values).all()
    assert np.isnan(cell["probability"].isel(language=1).values).all()
    assert not np.isnan(cell["probability"].isel(language=0).values).any()  # defined ones kept
    assert not bool(result["defined"].isel(language=1, layer=1, expert=2))
    assert result.attrs["n_undefined_cells"] == 1
    assert result.attrs["n_undefined_neurons"] == 6
    assert result.attrs["undefined_cells"] == [{"layer": 1, "expert": 2, "languages": ["de"]}]
    assert result.attrs["n_units"] == 2 * 3 * 6 - 6
    # the other units are exactly what the run without that cell gives: tau over defined units
    p = result["probability"].values[:, result["analysed"].values]
    ranks = round(p.size * 0.5)
    assert result.attrs["tau"] == float(np.sort(p.reshape(-1))[ranks - 1])


def test_min_routed_leaves_out_experts_with_too_few_tokens() -> None:
    active, routed = random_counts(seed=2, k=3, layers=2, experts=3, neurons=6)
    routed[1, 0, 0] = 15
    active[1, 0, 0] = np.minimum(active[1, 0, 0], 15)
    run = moe_run(active, routed, routed[:, 0].sum(axis=1))
    result = identify(run, "lape", top_rate=0.2, filter_rate=0.5, bar=0.5, min_routed=16)
    assert result.attrs["n_undefined_cells"] == 1 and result.attrs["min_routed"] == 16
    assert result.attrs["undefined_cells"] == [{"layer": 0, "expert": 0, "languages": ["de"]}]
    # with min_routed > 0 the probability of a defined-but-rare language is still kept out
    assert np.isnan(result["probability"].isel(language=1, layer=0, expert=0).values).all()
    result = identify(run, "lape", top_rate=0.2, filter_rate=0.5, bar=0.5, min_routed=15)
    assert result.attrs["n_undefined_cells"] == 0
    with pytest.raises(ParameterError, match=r"^no expert received at least min_routed=1000"):
        identify(run, "lape", rank="expert", min_routed=1000)
    with pytest.raises(ParameterError, match=r"^min_routed must be an integer >= 1, got 0$"):
        identify(run, min_routed=0)


# --------------------------------------------------------------------------- padding


def test_padding_neurons_are_never_analysed() -> None:
    active, routed = random_counts(seed=7, k=3, layers=2, experts=3, neurons=6)
    active[:, :, 1, 4:] = 0  # expert 1 has 4 neurons
    run = moe_run(active, routed, routed[:, 0].sum(axis=1), expert_neurons=np.array([6, 4, 6]))
    for rank in ("model", "layer", "expert"):
        result = identify(run, "lape", top_rate=0.5, filter_rate=0.3, bar=0.5, rank=rank)
        pad = result.isel(expert=1, neuron=slice(4, None))
        assert (pad["neuron_type"].values == "padding").all()
        assert not pad["selected"].values.any() and not pad["mask"].values.any()
        assert np.isnan(pad["probability"].values).all()
        assert result.attrs["n_padding"] == 2 * 2 and result.attrs["n_units"] == 2 * 16
    active[0, 0, 1, 5] = 1
    bad = moe_run(active, routed, routed[:, 0].sum(axis=1), expert_neurons=np.array([6, 4, 6]))
    with pytest.raises(StoreValidationError, match=r"^padding neurons .* hold nonzero n_active"):
        identify(bad)


# --------------------------------------------------------------------------- bad input


def test_bad_input_is_one_clear_line() -> None:
    active, routed = random_counts(seed=1)
    run = moe_run(active, routed, routed[:, 0].sum(axis=1))
    with pytest.raises(ParameterError, match=r"^rank must be one of 'model', 'layer', 'expert'"):
        identify(run, rank="neuron")
    dense = make_run(active.reshape(3, 3, -1), routed[:, 0].sum(axis=1))
    with pytest.raises(ParameterError, match=r"^rank and min_routed apply to mixture-of-experts"):
        identify(dense, rank="layer")
    with pytest.raises(ParameterError, match=r"^select\(\) re-selects dense identifications"):
        select(identify(run, "lape"), top_rate=0.2)
    over = active.copy()
    over[2, 1, 3, 0] = routed[2, 1, 3] + 1
    with pytest.raises(StoreValidationError, match=r"^n_active exceeds n_routed for language"):
        identify(moe_run(over, routed, routed[:, 0].sum(axis=1)))
    with pytest.raises(StoreValidationError, match=r"^run has no variable 'n_routed'"):
        identify(run.drop_vars("n_routed"))


def test_role_all_sums_both_roles() -> None:
    run = hand_run()
    one = identify(run, "lape", top_rate=0.25, filter_rate=0.5, bar=0.5)
    both = identify(run, "lape", top_rate=0.25, filter_rate=0.5, bar=0.5, role="all")
    np.testing.assert_array_equal(one["probability"].values, both["probability"].values)
    np.testing.assert_array_equal(one["selected"].values, both["selected"].values)


# --------------------------------------------------------------------------- language experts


def simulated_routing(
    seed: int,
    p: np.ndarray,
    n_seq: int = 12,
    languages: tuple[str, ...] = ("en", "de", "fr"),
    ids: list[str] | None = None,
) -> xr.Dataset:
    """Per-sequence routing (top-1) with routing probabilities ``p[language, layer, expert]``."""
    rng = np.random.default_rng(seed)
    seq_lang = [lang for lang in languages for _ in range(n_seq)]
    if ids is None:
        ids = [f"item{j}" for _ in languages for j in range(n_seq)]
    tok = rng.integers(20, 60, len(seq_lang))
    routed = np.stack(
        [
            np.stack([rng.multinomial(t, p[languages.index(lang), li]) for li in range(p.shape[1])])
            for t, lang in zip(tok, seq_lang, strict=True)
        ]
    )
    return routing_run(routed, tok, seq_lang, languages=languages, seq_ids=ids)


def test_language_experts_known_shares_and_types() -> None:
    """K = 2, one layer, top-1 over 3 routed experts and 1 shared one. en: 10 tokens, all to
    expert 0; de: 20 tokens, 10 to expert 0 and 10 to expert 1; expert 2 gets none."""
    seq = np.array([[[5, 0, 0, 5]], [[5, 0, 0, 5]], [[5, 5, 0, 10]], [[5, 5, 0, 10]]])
    run = routing_run(
        seq, np.array([5, 5, 10, 10]), ["en", "en", "de", "de"], languages=("en", "de")
    )
    run = run.assign_coords(expert_shared=("expert", [False, False, False, True]))
    result = language_experts(run, n_boot=50)
    np.testing.assert_array_equal(
        result["share"].sel(layer=0).values, [[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.0, 1.0]]
    )
    # expert 0: profile (1, .5): q = (2/3, 1/3), specificity 1 - H / log 2
    q = np.array([2 / 3, 1 / 3])
    expected = 1 + (q * np.log(q)).sum() / np.log(2)
    spec = result["specificity"].sel(layer=0).values
    assert spec[0] == pytest.approx(expected, rel=1e-12)
    assert spec[1] == 1.0 and np.isnan(spec[2]) and np.isnan(spec[3])
    # preferred: share > 1.5 x mean share (expert 0: 1 > 1.125? no; expert 1: .5 > .375 in de)
    assert result["expert_type"].sel(layer=0).values.tolist() == [
        "general",
        "specific",
        "unrouted",
        "shared",
    ]
    assert result["top_language"].sel(layer=0, expert=1).item() == "de"
    assert result.attrs["per_language"] == {"en": 0, "de": 1}
    assert result.attrs["inference"] == "descriptive" and result.attrs["unit"] == "sequence"
    assert result.attrs["inference_reason"].startswith("fewer than 16 sequences in some language")
    assert (result["share_low"] <= result["share"] + 1e-12).all()
    assert (result["share_high"] >= result["share"] - 1e-12).all()
    # descriptive: no per-sequence routing
    bare = run.drop_vars(["seq_n_routed"])
    described = language_experts(bare)
    assert described.attrs["inference"] == "descriptive"
    assert "seq_n_routed" in described.attrs["inference_reason"]
    assert "share_low" not in described
    xr.testing.assert_equal(described["share"], result["share"])


def test_language_experts_find_a_planted_language_expert() -> None:
    p = np.full((3, 2, 4), 0.25)
    p[1, 0] = [0.7, 0.1, 0.1, 0.1]  # German tokens go to expert 0 of layer 0
    run = simulated_routing(0, p, n_seq=16)
    result = language_experts(run, n_boot=200)
    assert result.attrs["inference"] == "valid" and result.attrs["n_clusters"]["de"] == 16
    assert result.attrs["specificity_inference"] == "descriptive"
    # the share interval of (de, layer 0, expert 0) by hand: jackknife se, t on the logit scale
    from scipy import special

    de = run["seq_language"].values == "de"
    a = run["seq_n_routed"].sel(role="response").values[de, 0, 0].astype(float)
    t = run["seq_n_tokens"].sel(role="response").values[de].astype(float)
    s = a.sum() / t.sum()
    loo = (a.sum() - a) / (t.sum() - t)
    se = np.sqrt(15 / 16 * ((loo - loo.mean()) ** 2).sum())
    width = special.stdtrit(15, 0.975) * se / (s * (1 - s))
    logit = np.log(s / (1 - s))
    cell = result.sel(language="de", layer=0, expert=0)
    assert float(cell["share_low"]) == pytest.approx(special.expit(logit - width), rel=1e-12)
    assert float(cell["share_high"]) == pytest.approx(special.expit(logit + width), rel=1e-12)
    types = result["expert_type"].values
    assert types[0, 0] == "specific" and result["top_language"].values[0, 0] == "de"
    assert (types[1] == "general").all()
    low = result["specificity_low"].values
    assert low[0, 0] > result["specificity_high"].values[1].max()


def test_items_are_the_unit_when_they_repeat() -> None:
    p = np.full((2, 1, 3), 1 / 3)
    ids = [f"item{j // 2}" for _ in range(2) for j in range(12)]  # two responses per item
    run = simulated_routing(1, p, languages=("en", "de"), ids=ids)
    assert language_experts(run, n_boot=20).attrs["unit"] == "item"
    assert language_experts(run, n_boot=20, cluster="sequence").attrs["unit"] == "sequence"


def test_routing_counts_that_do_not_add_up_are_refused() -> None:
    p = np.full((2, 1, 3), 1 / 3)
    run = simulated_routing(2, p, languages=("en", "de"))
    bad = run.copy(deep=True)
    bad["seq_n_routed"][0, 1, 0, 0] += 1
    with pytest.raises(StoreValidationError, match=r"^run's per-sequence routing counts"):
        language_experts(bad)
    with pytest.raises(ParameterError, match=r"^ratio must be a number > 1, got 1$"):
        language_experts(run, ratio=1)
    dense = make_run(np.zeros((2, 1, 3), dtype=int), [5, 5])
    with pytest.raises(ParameterError, match=r"needs a mixture-of-experts run"):
        language_experts(dense)


# --------------------------------------------------------------------------- routing change


def test_routing_change_of_a_run_with_itself_is_null() -> None:
    run = simulated_routing(3, np.full((3, 2, 4), 0.25))
    result = routing_change(run, run, n_perm=100)
    assert (result["change"].values == 0).all()
    assert (result["pvalue"].values == 1).all() and result.attrs["n_significant"] == 0


def test_routing_change_finds_a_planted_shift_and_corrects_per_layer() -> None:
    from statsmodels.stats.multitest import multipletests

    p = np.full((3, 2, 4), 0.25)
    shifted = p.copy()
    shifted[1, 0] = [0.7, 0.1, 0.1, 0.1]
    base, aligned = simulated_routing(4, p), simulated_routing(5, shifted)
    result = routing_change(base, aligned, n_perm=300)
    assert result.attrs["inference"] == "valid" and result.attrs["unit"] == "item"
    sig = result["significant"].values
    assert sig[1, 0].all() and not sig[:, 1].any()
    assert result.attrs["per_layer"][1] == 0
    np.testing.assert_allclose(
        result["change"].values, result["aligned_share"].values - result["base_share"].values
    )
    for layer in range(2):
        p_layer = result["pvalue"].values[:, layer].reshape(-1)
        q = multipletests(p_layer, method="fdr_bh")[1]
        np.testing.assert_allclose(result["q"].values[:, layer].reshape(-1), q)
    # descriptive without per-sequence counts; refused when the runs differ in shape
    described = routing_change(base.drop_vars("seq_n_routed"), aligned)
    assert described.attrs["inference"] == "descriptive" and "pvalue" not in described
    with pytest.raises(ParameterError, match=r"^base_run and aligned_run must hold the same"):
        routing_change(base, aligned.isel(expert=slice(0, 3)))


def test_routing_change_needs_the_same_items() -> None:
    p = np.full((2, 1, 3), 1 / 3)
    base = simulated_routing(6, p, languages=("en", "de"))
    other = simulated_routing(
        7, p, languages=("en", "de"), ids=[f"x{j}" for _ in range(2) for j in range(12)]
    )
    with pytest.raises(ParameterError, match=r"^base_run and aligned_run must hold the same items"):
        routing_change(base, other, n_perm=10)
    described = routing_change(base, other.drop_vars("seq_id"), n_perm=10)
    assert described.attrs["inference"] == "descriptive"
    assert described.attrs["inference_reason"] == (
        "aligned_run has no seq_id, so the items of the two runs cannot be paired"
    )


# --------------------------------------------------------------------------- command line


@pytest.fixture
def moe_store(tmp_path: Path) -> Path:
    from langneurons.store import create_store

    from ._moe_data import make_moe_counts

    path = tmp_path / "s.zarr"
    store = create_store(path)
    for run, seed in (("m/base", 1), ("m/aligned", 2)):
        counts = make_moe_counts(["en", "de", "fr"], layers=2, sequences=16, seed=seed)
        store.create_run(
            run,
            n_layers=2,
            n_neurons=counts.moe.n_neurons,
            moe=counts.moe,
            counts=counts,
            sequences=True,
        )
    return path


def test_cli_identify_and_experts_on_a_moe_store(
    moe_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from langneurons.store import open_store

    from .conftest import run_cli

    code, out, err = run_cli(
        capsys, "identify", moe_store, "--run", "m/base", "--method", "lape", "--rank", "layer"
    )
    assert code == 0, err
    assert "thresholds and top-rate selection within each layer (rank layer)" in out
    saved = open_store(moe_store).open_result("m/base", "identification", "lape")
    assert saved.attrs["rank"] == "layer" and saved["mask"].dims[-2:] == ("expert", "neuron")
    code, out, err = run_cli(
        capsys,
        "stats",
        "experts",
        moe_store,
        "--run",
        "m/base",
        "--compare",
        "m/aligned",
        "--n-boot",
        50,
        "--n-perm",
        50,
    )
    assert code == 0, err
    assert (
        "language experts by routing (response tokens): 2 layers x 4 routed experts (+1 "
        "shared)" in out
    )
    assert "share intervals: 95 %" in out and "16-16 sequences per language" in out
    assert "routing change, base -> aligned:" in out and "Benjamini-Hochberg" in out
    store = open_store(moe_store)
    assert store.open_result("m/base", "stats", "experts").attrs["inference"] == "valid"
    assert "q" in store.open_result("m/aligned", "stats", "experts-change")


def test_cli_bad_moe_input_is_one_line(
    moe_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from .conftest import run_cli

    code, _, err = run_cli(
        capsys, "identify", moe_store, "--run", "m/base", "--export-mask", tmp_path / "m.pt"
    )
    assert code != 0 and err.count("\n") == 1
    assert "the LAPE mask file format has no expert dimension" in err
    code, _, err = run_cli(capsys, "stats", "experts", moe_store, "--run", "m/base", "--ratio", 1)
    assert code != 0 and "ratio must be a number > 1, got 1.0" in err


# --------------------------------------------------------------------------- figures and report


def test_figures_of_a_moe_run() -> None:
    from langneurons.errors import InputFormatError
    from langneurons.reports import figures

    p = np.full((3, 2, 4), 0.25)
    p[1, 0] = [0.7, 0.1, 0.1, 0.1]
    experts = language_experts(simulated_routing(0, p, n_seq=16), n_boot=20)
    fig = figures.routing_shares(experts)
    assert len(fig.axes) == 3 * 2  # a heatmap and its colour bar per language
    heatmaps = [a for a in fig.axes if a.images]
    assert heatmaps[1].get_title(loc="left") == "de: share of its tokens routed to each expert"
    assert len(heatmaps[1].patches) == 1  # expert 0 of layer 0 is outlined: German-specific
    assert len(heatmaps[0].patches) == 0
    assert len(figures.routing_shares(experts, language="fr").axes) == 2
    with pytest.raises(ParameterError, match=r"^language must be one of"):
        figures.routing_shares(experts, language="xx")
    active, routed = random_counts(seed=4)
    routed[2, 1, 3] = 0
    active[2, 1, 3] = 0
    result = identify(moe_run(active, routed, routed[:, 0].sum(axis=1)), "lape", rank="expert")
    fig = figures.expert_neurons(result)
    assert len(fig.axes) == 3 * 2
    image = fig.axes[0].images[0].get_array()
    assert bool(np.ma.getmaskarray(image)[1, 3]) and not np.ma.getmaskarray(image)[0, 0]
    dense = identify(make_run(active.reshape(3, 3, -1), routed[:, 0].sum(axis=1)))
    with pytest.raises(InputFormatError, match=r"^identification is dense"):
        figures.expert_neurons(dense)


def test_the_report_draws_the_moe_figures(
    moe_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from .conftest import run_cli

    assert run_cli(capsys, "identify", moe_store, "--run", "m/base", "--method", "lape")[0] == 0
    args = ("--run", "m/base", "--n-boot", 20, "--compare", "m/aligned", "--n-perm", 20)
    assert run_cli(capsys, "stats", "experts", moe_store, *args)[0] == 0
    code, _, err = run_cli(capsys, "report", moe_store, "--out", tmp_path / "rep")
    assert code == 0, err
    names = {p.name for p in (tmp_path / "rep" / "figures").glob("*.png")}
    assert "m-base-identification-lape-expert-neurons.png" in names
    assert "m-base-stats-experts-routing-shares.png" in names
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "routing change between two mixture-of-experts runs (routing_change)" in text


def test_the_report_across_moe_runs_skips_the_overlap_matrix_and_says_why(
    moe_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from .conftest import run_cli

    for run in ("m/base", "m/aligned"):
        assert run_cli(capsys, "identify", moe_store, "--run", run, "--method", "lape")[0] == 0
    code, _, err = run_cli(capsys, "report", moe_store, "--out", tmp_path / "rep")
    assert code == 0, err
    assert "could not be drawn" not in err
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "Mixture-of-experts runs: no overlap matrix between runs" in text


def test_comparisons_of_identifications_refuse_moe_results_in_one_line() -> None:
    from langneurons.analysis import overlap, transition_table

    counts, routed = random_counts()
    result = identify(moe_run(counts, routed, routed[:, 0].sum(axis=1)))
    for call in (lambda: overlap(result, result), lambda: transition_table(result, result)):
        with pytest.raises(ParameterError) as info:
            call()
        assert "\n" not in str(info.value)
        assert "a mixture-of-experts run (it has an expert dimension)" in str(info.value)


def test_dense_only_analyses_refuse_a_moe_run_in_one_line() -> None:
    from langneurons.analysis import activation_probability, bootstrap_identification

    p = np.full((2, 1, 3), 1 / 3)
    run = simulated_routing(8, p, languages=("en", "de"))
    run["seq_n_active"] = run["seq_n_routed"].expand_dims(neuron=2, axis=-1).astype(np.uint16) * 0
    for call in (
        lambda: activation_probability(run),
        lambda: bootstrap_identification(run, n_boot=2),
    ):
        with pytest.raises(ParameterError, match=r"has an expert dimension: this is a mixture"):
            call()


def test_share_intervals_need_no_bootstrap() -> None:
    run = simulated_routing(9, np.full((2, 1, 3), 1 / 3), n_seq=16, languages=("en", "de"))
    with_boot = language_experts(run, n_boot=20)
    without = language_experts(run, n_boot=0)
    xr.testing.assert_identical(with_boot["share_low"], without["share_low"])
    assert "specificity_low" not in without and without.attrs["inference"] == "valid"


def test_an_identification_with_undefined_cells_saves_and_reopens(tmp_path: Path) -> None:
    from langneurons.store import Counts, create_store

    from ._moe_data import make_moe_counts

    c = make_moe_counts(["en", "de", "fr"], layers=2, seed=3)
    routed = c.n_routed.copy()
    active = c.n_active.copy()
    routed[1, :, 0, 1] += routed[1, :, 0, 0]  # de tokens of layer 0 go to expert 1, not 0
    routed[1, :, 0, 0] = 0
    active[1, :, 0, 0] = 0
    moved = Counts(c.languages, active, c.n_tokens, n_routed=routed, moe=c.moe)
    store = create_store(tmp_path / "s.zarr")
    store.create_run("m/r", n_layers=2, n_neurons=c.moe.n_neurons, moe=c.moe, counts=moved)
    result = identify(store.open_run("m/r"), "lape", top_rate=0.1)
    assert result.attrs["undefined_cells"] == [{"layer": 0, "expert": 0, "languages": ["de"]}]
    store.save_result("m/r", "identification", "lape", result)
    back = store.open_result("m/r", "identification", "lape")
    assert (back["neuron_type"].sel(layer=0, expert=0).values == "undefined").all()
    np.testing.assert_array_equal(back["mask"].values, result["mask"].values)
    assert back.attrs["n_undefined_cells"] == 1
