"""Issue 11 for the per-neuron tests and probability intervals: the unit of replication chosen
from the data (``cluster``), token-level statistics labelled ``descriptive`` (or adjusted by a
stated design effect), and practical margins (``min_effect``). Bad input is pinned, in the
library and on the command line (one line, exit 1, nothing saved).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import xarray as xr
from scipy import special

from langneurons.analysis.neuron_tests import language_preference_tests
from langneurons.analysis.uncertainty import activation_probability
from langneurons.errors import ParameterError
from langneurons.store import create_store, open_store

from .conftest import make_counts, run_cli

LANGS = ["en", "de", "fr"]


def _run(responses: int = 3, items: int = 6, seed: int = 0, layers: int = 2, neurons: int = 5):
    """A numpy run with per-sequence counts; ``responses`` sequences per item and language,
    each item's sequences sharing an item effect (so items, not sequences, are independent)."""
    rng = np.random.default_rng(seed)
    k, n_seq = len(LANGS), items * responses
    total = k * n_seq
    t = rng.integers(20, 60, size=total)
    item_effect = np.repeat(rng.normal(0, 1, size=(k * items, layers, neurons)), responses, axis=0)
    p = special.expit(-2.0 + item_effect + 0.3 * rng.normal(size=(total, layers, neurons)))
    a = rng.binomial(t[:, None, None], p)
    seq_active = np.zeros((total, 2, layers, neurons), dtype=np.int64)
    seq_active[:, 1] = a
    seq_tokens = np.zeros((total, 2), dtype=np.int64)
    seq_tokens[:, 1] = t
    lang_of = np.repeat(np.arange(k), n_seq)
    n_active = np.stack([seq_active[lang_of == j].sum(axis=0) for j in range(k)])
    n_tokens = np.stack([seq_tokens[lang_of == j].sum(axis=0) for j in range(k)])
    ids = [f"item{(i % n_seq) // responses}" for i in range(total)]
    return xr.Dataset(
        {
            "n_active": (("language", "role", "layer", "neuron"), n_active),
            "n_tokens": (("language", "role"), n_tokens),
            "seq_n_active": (("sequence", "role", "layer", "neuron"), seq_active),
            "seq_n_tokens": (("sequence", "role"), seq_tokens),
        },
        coords={
            "language": LANGS,
            "role": ["prompt", "response"],
            "layer": np.arange(layers),
            "neuron": np.arange(neurons),
            "seq_language": ("sequence", [LANGS[j] for j in lang_of]),
            "seq_id": ("sequence", ids),
        },
    )


def _items_as_sequences(run: xr.Dataset) -> xr.Dataset:
    """The same run with each item's sequences (per language) added into one sequence."""
    key = [
        f"{lang}|{i}"
        for lang, i in zip(run["seq_language"].values, run["seq_id"].values, strict=True)
    ]
    keys = list(dict.fromkeys(key))
    index = np.array([keys.index(x) for x in key])
    merged = {}
    for name in ("seq_n_active", "seq_n_tokens"):
        v = run[name].values
        out = np.zeros((len(keys), *v.shape[1:]), dtype=v.dtype)
        np.add.at(out, index, v)
        merged[name] = (run[name].dims, out)
    return xr.Dataset(
        {"n_active": run["n_active"], "n_tokens": run["n_tokens"], **merged},
        coords={
            **{c: run[c] for c in ("language", "role", "layer", "neuron")},
            "seq_language": ("sequence", [x.split("|")[0] for x in keys]),
            "seq_id": ("sequence", [x.split("|")[1] for x in keys]),
        },
    )


def _without_seq_id(run: xr.Dataset) -> xr.Dataset:
    return run.drop_vars("seq_id")


def _without_sequences(run: xr.Dataset) -> xr.Dataset:
    return run.drop_vars(["seq_n_active", "seq_n_tokens", "seq_language", "seq_id"])


# --------------------------------------------------------------------------- unit of replication


def test_auto_clusters_on_items_when_they_repeat() -> None:
    run = _run(responses=3)
    tests = language_preference_tests(run)
    assert tests.attrs["cluster"] == "item" and tests.attrs["cluster_requested"] == "auto"
    assert tests.attrs["n_items"] == {lang: 6 for lang in LANGS}
    # the t reference has at most (items of the language - 1) degrees of freedom
    df = tests["df"].values
    assert (df[np.isfinite(df)] <= 5).all() and (df[np.isfinite(df)] > 4.99).mean() > 0.5
    assert tests.attrs["inference"] == "valid"
    assert "independent items" in tests.attrs["assumption"]
    prob = activation_probability(run)
    assert prob.attrs["cluster"] == "item" and prob.attrs["n_items"] == {lang: 6 for lang in LANGS}
    once = _run(responses=1)
    assert language_preference_tests(once).attrs["cluster"] == "sequence"
    assert activation_probability(once).attrs["cluster"] == "sequence"
    # without seq_id auto falls back to the sequence
    assert language_preference_tests(_without_seq_id(run)).attrs["cluster"] == "sequence"


def test_item_clusters_equal_sequences_added_per_item() -> None:
    # oracle: clustering on items == clustering on sequences after adding up each item's ones
    run = _run(responses=3)
    merged = _items_as_sequences(run)
    for fn in (language_preference_tests, activation_probability):
        a = fn(run, cluster="item")
        b = fn(merged, cluster="sequence")
        for name in a.data_vars:
            np.testing.assert_allclose(a[name].values, b[name].values, rtol=1e-12, err_msg=name)
    seq = language_preference_tests(run, cluster="sequence")
    assert seq.attrs["cluster"] == "sequence"
    # forcing sequences when items repeat: not valid inference, and the result says why
    for res in (seq, activation_probability(run, method="cluster", cluster="sequence")):
        assert res.attrs["inference"] == "descriptive"
        assert res.attrs["inference_reason"].startswith(
            "cluster='sequence' while seq_ids repeat within a language: the sequences of one "
            "item are not independent"
        )
    assert language_preference_tests(merged, cluster="sequence").attrs["inference"] == "valid"
    assert not np.allclose(seq["se"].values, language_preference_tests(run)["se"].values)


def test_item_bootstrap_draws_items() -> None:
    run = _run(responses=3)
    res = activation_probability(run, method="bootstrap", n_boot=50, cluster="item")
    assert res.attrs["cluster"] == "item"
    assert np.isfinite(res["lower"].values).all()


def test_cluster_interval_is_korn_graubard() -> None:
    # oracle: Clopper-Pearson (scipy's beta quantiles) at the effective sample size
    # n* = T / max(D, median D of the language, 1) with D = se^2 T / (p (1 - p)), scaled by
    # (z / t_{n-1})^2, n = 5 sequences
    from scipy import stats

    run = _run(responses=1, items=5)
    res = activation_probability(run, method="cluster", ci=0.9)
    assert "Korn-Graubard" in res.attrs["interval"]
    tokens = run["n_tokens"].sel(role="response").values.astype(float)
    p, se = res["p"].values, res["se"].values  # [layer, neuron, language]
    with np.errstate(divide="ignore", invalid="ignore"):
        deff = np.where((se > 0) & (p * (1 - p) > 0), se**2 * tokens / (p * (1 - p)), np.nan)
    floor = np.maximum(np.nanmedian(deff.reshape(-1, deff.shape[-1]), axis=0), 1.0)
    np.testing.assert_allclose(res["design_effect_floor"].values, floor)
    assert (floor > 1).any()  # the floor binds somewhere in this run
    d_used = np.maximum(np.nan_to_num(deff, nan=1.0), floor)
    n_eff = tokens / d_used * (stats.norm.ppf(0.95) / stats.t.ppf(0.95, 4)) ** 2
    x = p * n_eff
    np.testing.assert_allclose(res["lower"].values, stats.beta.ppf(0.05, x, n_eff - x + 1))
    np.testing.assert_allclose(res["upper"].values, stats.beta.ppf(0.95, x + 1, n_eff - x))
    assert ((res["lower"] <= res["p"]) & (res["p"] <= res["upper"])).all()


# --------------------------------------------------------------------------- descriptive labels


def test_token_level_results_say_descriptive() -> None:
    run = _without_sequences(_run())
    tests = language_preference_tests(run)
    prob = activation_probability(run)
    for res in (tests, prob):
        assert res.attrs["inference"] == "descriptive" and res.attrs["cluster"] == "token"
    # the effect and its (descriptive) 95 % interval
    np.testing.assert_allclose(
        (tests["effect_upper"] - tests["effect"]).values, 1.959963984540054 * tests["se"].values
    )


def test_design_effect_inflates_the_variance() -> None:
    run = _without_sequences(_run())
    plain = language_preference_tests(run)
    one = language_preference_tests(run, design_effect=1)
    np.testing.assert_array_equal(plain["statistic"].values, one["statistic"].values)
    assert one.attrs["inference"] == "design-effect adjusted (D=1)"
    four = language_preference_tests(run, design_effect=4.0)
    assert four.attrs["inference"] == "design-effect adjusted (D=4)"
    assert four.attrs["design_effect"] == 4.0
    np.testing.assert_allclose(four["se"].values, 2 * plain["se"].values)
    np.testing.assert_allclose(four["statistic"].values, plain["statistic"].values / 2)
    # Wilson with D: the Wilson interval of (x / D, n / D)
    prob = activation_probability(run, design_effect=4.0)
    shrunk = run.assign(n_active=run["n_active"] / 4.0, n_tokens=run["n_tokens"] / 4.0)
    ref = activation_probability(shrunk)
    for name in ("p", "lower", "upper", "se"):
        np.testing.assert_allclose(prob[name].values, ref[name].values)
    assert prob.attrs["inference"] == "design-effect adjusted (D=4)"


def _conditional_oracle(run: xr.Dataset, deff: float) -> np.ndarray:
    """P(Bin(X', pi) >= x_k') on counts divided by D (1 - pooled P), as scipy's beta cdf."""
    x = run["n_active"].sel(role="response").values.astype(np.float64)  # [lang, layer, neuron]
    n = run["n_tokens"].sel(role="response").values.astype(np.float64)
    total = x.sum(axis=0)
    scale = deff * (1.0 - total / n.sum())
    pi = (n / n.sum())[:, None, None]
    k, m = x / scale, total / scale
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(x > 0, scipy.stats.beta.cdf(pi, k, m - k + 1.0), 1.0)
    return np.moveaxis(p, 0, -1)  # [layer, neuron, language]


def test_design_effect_p_values_are_the_conditional_tail_on_effective_counts() -> None:
    """With D, p is the binomial tail of the count given the neuron's total (moments matched
    to the hypergeometric, variance times D): the normal tail was liberal on sparse counts."""
    run = _without_sequences(_run())
    for deff in (1.0, 4.0):
        res = language_preference_tests(run, design_effect=deff)
        np.testing.assert_allclose(res["p"].values, _conditional_oracle(run, deff), rtol=1e-10)
    # integer counts, nothing pooled away: exactly scipy's binomial upper tail
    from langneurons.analysis._kernels import conditional_tail

    x = np.array([[7.0], [3.0], [2.0]])
    n = np.array([100.0, 100.0, 200.0])
    p = conditional_tail(x, n, np.zeros(1), 1.0)
    expect = scipy.stats.binom.sf(x[:, 0] - 1, 12, n / 400.0)
    np.testing.assert_allclose(p[:, 0], expect, rtol=1e-12)
    # with a margin the p-value is never below the plain test's
    margin = language_preference_tests(run, design_effect=4.0, min_effect=0.01)
    plain = language_preference_tests(run, design_effect=4.0)
    assert (margin["p"].values >= plain["p"].values).all()


# --------------------------------------------------------------------------- margins


@pytest.mark.parametrize("method", ["cluster", "binomial"])
def test_margin_tests_the_interval_null(method: str) -> None:
    run = _run(responses=1, items=12)
    base = language_preference_tests(run, method=method)
    assert base.attrs["min_effect"] == 0.0
    assert base.attrs["n_significant_without_margin"] == base.attrs["n_significant"]
    delta = 0.02
    res = language_preference_tests(run, method=method, min_effect=delta)
    assert res.attrs["min_effect"] == delta
    assert res.attrs["n_significant_without_margin"] == base.attrs["n_significant"]
    assert res.attrs["n_significant"] <= base.attrs["n_significant"]
    np.testing.assert_array_equal(res["effect"].values, base["effect"].values)
    if method == "cluster":  # same variance, the statistic shifted by the margin
        z = (res["effect"].values - delta) / res["se"].values
        np.testing.assert_allclose(res["statistic"].values, z)
        np.testing.assert_allclose(res["p"].values, special.stdtr(res["df"].values, -z))
    else:  # the unpooled variance of the two rates
        r, rr = res["rate"].values, res["rate_rest"].values
        n = run["n_tokens"].sel(role="response").values.astype(float)
        n_rest = n.sum() - n
        var = r * (1 - r) / n + rr * (1 - rr) / n_rest
        z = (res["effect"].values - delta) / np.sqrt(var)
        np.testing.assert_allclose(res["p"].values, special.ndtr(-z))
    assert (res["p"].values >= base["p"].values - 1e-12).mean() > 0.95


# --------------------------------------------------------------------------- bad input

BAD_API = [
    ({"min_effect": 1.0}, r"min_effect must be a number in \[0, 1\) \(a margin on P\[language\] "
     r"- P\[rest\]; 0 tests P\[language\] <= P\[rest\]\), got 1.0"),
    ({"min_effect": -0.1}, r"min_effect must be a number in \[0, 1\) .*got -0.1"),
    ({"design_effect": 0.5}, r"design_effect must be a number >= 1 \(the variance inflation of "
     r"token counts; effective n = n / D\), got 0.5"),
    ({"cluster": "token"}, r"cluster must be one of 'auto', 'item', 'sequence', got 'token'"),
    ({"design_effect": 2.0}, r"design_effect applies to the token-level method 'binomial'; "
     r"method='auto' uses 'cluster', which estimates the dependence from per-sequence counts; "
     r"drop design_effect or pass method='binomial'"),
]  # fmt: skip


@pytest.mark.parametrize(("kwargs", "message"), BAD_API)
def test_bad_parameters_pinned(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        language_preference_tests(_run(), **kwargs)  # type: ignore[arg-type]


def test_item_clusters_need_item_ids() -> None:
    run = _run()
    no_id = (
        "cluster='item' needs item ids (seq_id[sequence]), which run lacks; extract with "
        "--per-sequence and item ids, or use cluster='sequence' (or 'auto')"
    )
    for fn in (language_preference_tests, activation_probability):
        with pytest.raises(ParameterError, match=re.escape(no_id)):
            fn(_without_seq_id(run), cluster="item")
        with pytest.raises(
            ParameterError,
            match=re.escape(
                "cluster='item' needs per-sequence counts (seq_n_active), which this run lacks; "
                "extract with --per-sequence, or leave cluster='auto'"
            ),
        ):
            fn(_without_sequences(run), cluster="item")
    with pytest.raises(
        ParameterError, match="design_effect applies to the token-level method 'wilson'"
    ):
        activation_probability(run, design_effect=2.0)
    with pytest.raises(ParameterError, match="design_effect must be a number >= 1"):
        activation_probability(_without_sequences(run), design_effect=float("nan"))


# --------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inference")
    tokens = root / "tokens.zarr"
    create_store(tokens).create_run(
        "r", n_layers=3, n_neurons=7, counts=make_counts(LANGS, layers=3, neurons=7)
    )
    seqs = root / "seqs.zarr"
    counts = make_counts(LANGS, layers=3, neurons=7, sequences=6, seed=2)
    create_store(seqs).create_run("r", n_layers=3, n_neurons=7, sequences=True, counts=counts)
    return {"tokens": tokens, "seqs": seqs}


def test_cli_warns_once_for_token_level_and_json_shows_inference(
    stores: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "stats", "tests", stores["tokens"], "--run", "r", "--no-save")
    assert code == 0, err
    assert err == (
        "langneurons: warning: token-level p-values and intervals assume independent tokens and "
        "are not valid inference (tokens of one sequence are dependent); extract with "
        "--per-sequence for valid ones, or pass --design-effect D\n"
    )
    assert "inference: descriptive" in out
    code, out, err = run_cli(capsys, "stats", "probability", stores["tokens"], "--run", "r",
                             "--no-save", "--json")  # fmt: skip
    assert code == 0 and err.count("langneurons: warning:") == 1
    assert json.loads(out)["probability"]["attrs"]["inference"] == "descriptive"
    code, out, err = run_cli(capsys, "stats", "tests", stores["tokens"], "--run", "r",
                             "--no-save", "--design-effect", "3", "--json")  # fmt: skip
    assert code == 0 and err == ""
    attrs = json.loads(out)["tests"]["attrs"]
    assert attrs["inference"] == "design-effect adjusted (D=3)" and attrs["design_effect"] == 3


def test_cli_margin_and_cluster_headline(
    stores: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, "stats", "tests", stores["seqs"], "--run", "r", "--no-save",
                             "--min-effect", "0.05", "--cluster", "sequence")  # fmt: skip
    assert code == 0 and err == "", err
    assert "significant with margin 0.05" in out
    assert re.search(r"without the margin: \d+ significant", out)
    assert "unit of replication: sequence (6 to 6 per language)" in out
    assert "inference: valid" in out
    code, out, err = run_cli(capsys, "stats", "probability", stores["seqs"], "--run", "r",
                             "--no-save", "--json")  # fmt: skip
    attrs = json.loads(out)["probability"]["attrs"]
    assert code == 0 and attrs["inference"] == "valid" and attrs["cluster"] == "sequence"


CLI_BAD = [
    (["stats", "tests", "{seqs}", "--run", "r", "--min-effect", "1"],
     "min_effect must be a number in [0, 1)"),
    (["stats", "tests", "{tokens}", "--run", "r", "--design-effect", "0.5"],
     "design_effect must be a number >= 1"),
    (["stats", "probability", "{tokens}", "--run", "r", "--design-effect", "0.9"],
     "design_effect must be a number >= 1"),
    (["stats", "tests", "{tokens}", "--run", "r", "--cluster", "item"],
     "cluster='item' needs per-sequence counts (seq_n_active), which this run lacks"),
    (["stats", "probability", "{tokens}", "--run", "r", "--cluster", "item"],
     "cluster='item' needs per-sequence counts (seq_n_active), which this run lacks"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), CLI_BAD)
def test_cli_bad_input_one_line_nothing_saved(
    stores: dict[str, Path], capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    argv = [a.format(**{k: str(v) for k, v in stores.items()}) for a in args]
    before = {k: set(open_store(v).results("r", "stats")) for k, v in stores.items()}
    code, out, err = run_cli(capsys, *argv)
    assert code == 1 and out == ""
    assert err.startswith("langneurons: error: ") and message in err
    assert len(err.strip().splitlines()) == 1, err
    assert {k: set(open_store(v).results("r", "stats")) for k, v in stores.items()} == before


def test_cli_unknown_cluster_is_a_usage_error(
    stores: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "stats", "tests", stores["seqs"], "--run", "r", "--cluster", "x")
    assert code == 2
    assert "Invalid value for '--cluster': 'x' is not one of 'auto', 'item', 'sequence'" in err


def test_percentile_bootstrap_intervals_say_descriptive_and_why() -> None:
    """The suite finds the percentile bootstrap undercovering: its result says so itself."""
    run = _run(responses=1, items=12)
    boot = activation_probability(run, method="bootstrap", n_boot=20, seed=0)
    assert boot.attrs["inference"] == "descriptive"
    assert "method='cluster'" in boot.attrs["inference_reason"]
    cluster = activation_probability(run, method="cluster")
    assert cluster.attrs["inference"] == "valid" and "inference_reason" not in cluster.attrs
