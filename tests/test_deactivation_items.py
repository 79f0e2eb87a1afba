"""Deactivation effects: the controls a test at alpha needs, intervals and a t-test over items
(checked against a hand computation), and the CLI's --alpha and headline."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import xarray as xr

from langneurons.analysis.deactivation import NO_ITEMS, deactivation_effects
from langneurons.errors import ParameterError
from langneurons.store import create_store, open_store

from .conftest import make_counts, run_cli

LANGS = ["en", "de", "zh"]


def item_ablation(controls: int = 19, seed: int = 0, diagonal: float = 0.3) -> xr.Dataset:
    """Three languages, four records each (ids q0 q1 q1 q2: q1 has two records), per-item NLL."""
    rng = np.random.default_rng(seed)
    k, ids = len(LANGS), ["q0", "q1", "q1", "q2"]
    n = len(ids)
    tokens = rng.integers(20, 60, size=k * n)
    base = tokens * rng.uniform(1.5, 2.5, k * n)
    rows = [base]
    for d in range(k):
        extra = np.where(np.repeat(np.arange(k), n) == d, diagonal, 0.0)
        rows.append(base + tokens * (0.05 + extra + rng.normal(0, 0.05, k * n)))
    item = np.stack(rows)
    ctrl = base[None, :, None] + tokens[None, :, None] * (
        0.05 + rng.normal(0, 0.05, (k, k * n, controls))
    )
    ctrl = np.concatenate([np.full((1, k * n, controls), np.nan), ctrl])
    per_lang = tokens.reshape(k, n).sum(axis=1)
    nll = item.reshape(k + 1, k, n).sum(axis=2) / per_lang
    cnll = ctrl.reshape(k + 1, k, n, controls).sum(axis=2) / per_lang[None, :, None]
    return xr.Dataset(
        {
            "nll": (("deactivated", "evaluated"), nll),
            "control_nll": (("deactivated", "evaluated", "control"), cnll),
            "item_nll": (("deactivated", "item"), item),
            "control_item_nll": (("deactivated", "item", "control"), ctrl),
            "item_tokens": (("item",), tokens),
        },
        coords={
            "deactivated": ["none", *LANGS],
            "evaluated": LANGS,
            "control": np.arange(controls),
            "item_language": ("item", np.repeat(LANGS, n)),
            "item_id": ("item", np.tile(ids, k)),
        },
        attrs={"result_name": "ternary", "heldout": "disjoint", "heldout_note": "checked"},
    )


def _by_hand(abl: xr.Dataset, d: str, e: str) -> tuple[float, float, int]:
    """Damage, its HC3 variance and clusters: items of e summed per id, ratio estimator."""
    on = abl.item_language.values == e
    ids = abl.item_id.values[on]
    a = abl.item_nll.sel(deactivated=d).values[on]
    b = abl.item_nll.sel(deactivated="none").values[on]
    t = abl.item_tokens.values[on].astype(float)
    clusters = sorted(set(ids))
    diff = np.array([(a - b)[ids == c].sum() for c in clusters])
    tok = np.array([t[ids == c].sum() for c in clusters])
    delta = diff.sum() / tok.sum()
    n = len(clusters)
    z = (diff - delta * tok) / (1 - tok / tok.sum())  # leverage of a ratio: t_i / T
    return delta, (z**2).sum() / tok.sum() ** 2, n


def test_intervals_match_the_hand_computation() -> None:
    abl = item_ablation()
    out = deactivation_effects(abl, n_perm=10)
    assert out.attrs["alpha"] == 0.05 and out.attrs["level"] == 0.95
    assert out.attrs["inference"] == "valid" and out.attrs["heldout"] == "disjoint"
    for d in LANGS:
        parts, dfs = [], []
        for e in LANGS:
            delta, var, n = _by_hand(abl, d, e)
            assert n == 3  # q1's two records are one cluster
            got = out.sel(deactivated=d, evaluated=e)
            assert float(got.damage) == pytest.approx(delta, rel=1e-12)
            half = scipy.stats.t.ppf(0.975, n - 1) * math.sqrt(var)
            assert float(got.damage_low) == pytest.approx(delta - half, rel=1e-10)
            assert float(got.damage_high) == pytest.approx(delta + half, rel=1e-10)
            w = 1.0 if e == d else 1.0 / (len(LANGS) - 1) ** 2
            parts.append(w * var)
            dfs.append(n - 1)
        var_dom = sum(parts)
        df = var_dom**2 / sum(p**2 / f for p, f in zip(parts, dfs, strict=True))
        got = out.sel(deactivated=d)
        assert float(got.dominance_se) == pytest.approx(math.sqrt(var_dom), rel=1e-10)
        assert float(got.dominance_df) == pytest.approx(df, rel=1e-10)
        half = scipy.stats.t.ppf(0.975, df) * math.sqrt(var_dom)
        assert float(got.dominance_low) == pytest.approx(float(got.dominance) - half, rel=1e-10)
        p = scipy.stats.t.sf(float(got.dominance) / math.sqrt(var_dom), df)
        assert float(got.pvalue_items) == pytest.approx(p, rel=1e-10)
    assert (out.pvalue_items.values < 0.05).all()  # a planted 0.3 per token
    np.testing.assert_allclose(out.min_pvalue_control.values, 0.05)
    json.dumps(out.attrs, allow_nan=False)


def test_level_follows_alpha_and_dask_agrees() -> None:
    abl = item_ablation(controls=99)
    narrow = deactivation_effects(abl, alpha=0.2, n_perm=10)
    wide = deactivation_effects(abl, alpha=0.01, n_perm=10)
    assert narrow.attrs["level"] == pytest.approx(0.8)
    assert ((wide.dominance_high - wide.dominance_low) > (narrow.dominance_high -
            narrow.dominance_low)).all()  # fmt: skip
    xr.testing.assert_identical(
        deactivation_effects(abl.chunk({"item": 5, "control": 7}), alpha=0.01, n_perm=10), wide
    )


def test_too_few_controls_for_alpha_is_refused_with_the_fix() -> None:
    abl = item_ablation(controls=3)
    with pytest.raises(ParameterError) as info:
        deactivation_effects(abl)
    assert str(info.value) == (
        "ablation 'ternary' has 3 random controls per language: its smallest control p-value is "
        "1/(3+1) = 0.25, above alpha 0.05; ablate with --controls 19 or more, or pass "
        "alpha=None (--alpha none) to report the control comparison as descriptive"
    )
    with pytest.raises(ParameterError, match=r"--controls 99 or more"):
        deactivation_effects(item_ablation(controls=19), alpha=0.01)
    holes = item_ablation(controls=19)
    holes["control_nll"][2, :, :2] = np.nan  # two controls of 'de' missing
    with pytest.raises(
        ParameterError,
        match=r"^ablation 'ternary' has as few as 17 usable random controls \(language 'de'\): "
        r"its smallest control p-value is 1/\(17\+1\) = 0\.0556, above alpha 0\.05;",
    ):
        deactivation_effects(holes)
    out = deactivation_effects(abl, alpha=None, n_perm=10)
    assert out.attrs["inference"] == "descriptive" and out.attrs["alpha"] == "none"
    assert (
        "descriptive (3 random controls per language give a smallest control p-value of 0.25)"
        in out.attrs["inference_reason"]
    )
    assert out.attrs["level"] == 0.95
    np.testing.assert_allclose(out.min_pvalue_control.values, 0.25)
    assert out.dominance_low.notnull().all()  # the item intervals do not need controls


@pytest.mark.parametrize("alpha", [0, 1, 1.5, -0.1, "0.05", True])
def test_alpha_outside_the_unit_interval(alpha: object) -> None:
    with pytest.raises(ParameterError, match=r"^alpha must be a number in \(0, 1\), got "):
        deactivation_effects(item_ablation(), alpha=alpha)  # type: ignore[arg-type]


def test_without_item_values_the_intervals_say_why() -> None:
    abl = item_ablation().drop_vars(["item_nll", "control_item_nll", "item_tokens"])
    out = deactivation_effects(abl, n_perm=10)
    assert (
        out.attrs["intervals"]
        == NO_ITEMS
        == ("no per-item values (ablated before per-item NLL was stored): intervals unavailable")
    )
    for name in ("damage_low", "damage_high", "dominance_low", "dominance_se", "pvalue_items"):
        assert out[name].isnull().all(), name
    assert out.pvalue_control.notnull().all()


# --------------------------------------------------------------------------- the CLI
@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "s.zarr"
    created = create_store(path)
    created.create_run("r", n_layers=3, n_neurons=7, counts=make_counts(LANGS))
    created.save_result("r", "ablation", "ternary", item_ablation())
    created.save_result("r", "ablation", "old", item_ablation(controls=3))
    return path


def test_cli_headline_and_json(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "stats", "deactivation", str(store), "--run", "r",
                             "--ablation", "ternary", "--n-perm", "10")  # fmt: skip
    assert code == 0, err
    head = [line.split() for line in out.splitlines()[1:3]]
    assert head[0] == ["deactivated", "dominance", "95%", "CI", "(items)", "p", "vs", "controls",
                       "p", "items", "controls"]  # fmt: skip
    assert head[1][0] == "en" and head[1][2].startswith("[") and head[1][-1] == "19"
    assert "smallest attainable control p: 0.05" in out
    assert "held-out evaluation: disjoint (checked)" in out
    code, out, err = run_cli(capsys, "stats", "deactivation", str(store), "--run", "r",
                             "--ablation", "ternary", "--n-perm", "10", "--name", "j",
                             "--json")  # fmt: skip
    assert code == 0, err
    data = json.loads(out)["deactivation"]
    for name in ("dominance_low", "dominance_high", "pvalue_items", "min_pvalue_control"):
        assert name in data["variables"], name
    assert data["attrs"]["heldout"] == "disjoint" and data["attrs"]["alpha"] == 0.05


def test_cli_alpha_none_on_an_old_ablation(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "stats", "deactivation", str(store), "--run", "r",
                             "--ablation", "old", "--alpha", "none", "--n-perm", "10")  # fmt: skip
    assert code == 0, err
    assert "smallest attainable control p: 0.25" in out
    assert "descriptive: alpha=None: the control comparison is descriptive" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ablation", "old"],
         "langneurons: error: ablation 'old' has 3 random controls per language: its smallest "
         "control p-value is 1/(3+1) = 0.25, above alpha 0.05; ablate with --controls 19 or "
         "more, or pass alpha=None (--alpha none) to report the control comparison as "
         "descriptive"),
        (["--ablation", "ternary", "--alpha", "1"],
         "langneurons: error: --alpha must be a number in (0, 1) or 'none', got '1'"),
        (["--ablation", "ternary", "--alpha", "five"],
         "langneurons: error: --alpha must be a number in (0, 1) or 'none', got 'five'"),
    ],
)  # fmt: skip
def test_cli_bad_alpha_or_controls_saves_nothing(
    store: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _, err = run_cli(capsys, "stats", "deactivation", str(store), "--run", "r", *args)
    assert code == 1
    assert err.strip() == message
    assert open_store(store).results("r", "stats") == []


def test_an_empty_set_gives_a_degenerate_interval_and_no_item_p() -> None:
    abl = item_ablation()
    none = abl.item_nll.sel(deactivated="none").values
    abl["item_nll"].loc[{"deactivated": "de"}] = none  # de's set is empty: nothing changes
    abl["nll"].loc[{"deactivated": "de"}] = abl.nll.sel(deactivated="none").values
    out = deactivation_effects(abl, n_perm=10).sel(deactivated="de")
    assert float(out.dominance) == 0.0 and float(out.dominance_se) == 0.0
    assert float(out.dominance_low) == float(out.dominance_high) == 0.0
    assert math.isnan(float(out.pvalue_items))
