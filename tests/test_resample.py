"""Tests of ``analysis._resample``: the one sequence-resampling engine of the analysis room."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from langneurons.analysis import (
    IdentifyParams,
    activation_probability,
    bootstrap_identification,
    bootstrap_stages,
    type_change,
)
from langneurons.analysis import _resample as rs
from langneurons.analysis.bootstrap import identified_replicates
from langneurons.errors import ParameterError, StoreValidationError

from .conftest import make_counts

LANGS = ["en", "de", "fr"]
P = IdentifyParams(top_rate=0.1, lam_range=(0, 2))


def run_of(seed: int = 0, sequences: int = 6) -> xr.Dataset:
    """An in-memory run of 3 languages whose sequences share items ``item0..``."""
    c = make_counts(LANGS, layers=3, neurons=20, seed=seed, sequences=sequences)
    return xr.Dataset(
        {
            "n_active": (("language", "role", "layer", "neuron"), c.n_active),
            "n_tokens": (("language", "role"), c.n_tokens),
            "seq_n_active": (("sequence", "role", "layer", "neuron"), c.seq_n_active),
            "seq_n_tokens": (("sequence", "role"), c.seq_n_tokens),
        },
        coords={
            "language": LANGS,
            "role": ["prompt", "response"],
            "layer": np.arange(3),
            "neuron": np.arange(20),
            "seq_language": ("sequence", list(c.seq_language or [])),
            "seq_id": ("sequence", list(c.seq_id or [])),
        },
    )


def test_sequence_weights_are_the_stratified_multinomial_stream() -> None:
    run = run_of()
    sampler = rs.Resampler(run, "response", "test")
    (w,) = rs.draw_weights([sampler.units], rs.replicate_seeds(3, 4))
    for b, seq in enumerate(np.random.SeedSequence(3).spawn(4)):
        rng = np.random.default_rng(seq)
        for members in sampler.design.members:
            n = members.size
            assert w[b, members].tolist() == rng.multinomial(n, np.full(n, 1 / n)).tolist()
    # each language keeps its number of sequences
    for members in sampler.design.members:
        assert (w[:, members].sum(axis=1) == members.size).all()


def test_unpaired_first_run_draws_what_it_draws_alone() -> None:
    a, b = rs.Resampler(run_of(0), "response", "t"), rs.Resampler(run_of(1), "response", "t")
    seeds = rs.replicate_seeds(5, 3)
    alone = rs.draw_weights([a.units], seeds)[0]
    wa, wb = rs.draw_weights([a.units, b.units], seeds)
    np.testing.assert_array_equal(alone, wa)
    assert not np.array_equal(wa, wb)  # the second run draws on from the same generator


def test_paired_draw_gives_both_runs_the_same_units() -> None:
    base, other = run_of(0), run_of(1)
    shuffled = other.isel(sequence=np.random.default_rng(0).permutation(other.sizes["sequence"]))
    a = rs.Resampler(base, "response", "t", name="base_run")
    b = rs.Resampler(shuffled, "response", "t", name="aligned_run")
    mapped = b.units.onto(a.units, ("base_run", "aligned_run"))
    wa, wb = rs.draw_weights([a.units, mapped], rs.replicate_seeds(1, 5), paired=True)
    key_a = list(zip(base["seq_language"].values, base["seq_id"].values, strict=True))
    key_b = list(zip(shuffled["seq_language"].values, shuffled["seq_id"].values, strict=True))
    weight_a = {k: wa[:, i].tolist() for i, k in enumerate(key_a)}
    for i, k in enumerate(key_b):
        assert wb[:, i].tolist() == weight_a[k]
    part = other.isel(sequence=slice(1, None))
    fewer = rs.units(part, rs.design(part, "response", "t", minimum=1), "sequence")
    with pytest.raises(ParameterError, match=r"must hold the same sequences to be resampled"):
        fewer.onto(a.units, ("base_run", "aligned_run"))


def test_item_cluster_draws_every_language_of_an_item_together() -> None:
    run = run_of(sequences=5)
    sampler = rs.Resampler(run, "response", "t", cluster="item")
    assert sampler.units.strata == (5,)
    (w,) = rs.draw_weights([sampler.units], rs.replicate_seeds(2, 6))
    ids = run["seq_id"].values
    for item in np.unique(ids):
        cols = w[:, ids == item]
        assert (cols == cols[:, :1]).all()  # one weight for the item in every language
    assert (w.sum(axis=1) == 3 * 5).all()
    with pytest.raises(ParameterError, match=r"^cluster must be one of 'sequence', 'item'"):
        rs.Resampler(run, "response", "t", cluster="token")
    with pytest.raises(ParameterError, match=r"has no seq_id\[sequence\]"):
        rs.Resampler(run.drop_vars("seq_id"), "response", "t", cluster="item")


def test_item_cluster_bootstraps_run_end_to_end() -> None:
    run = run_of(sequences=5)
    out = bootstrap_identification(run, n_boot=3, params=P, cluster="item")
    assert out.attrs["cluster"] == "item" and "items (seq_id" in out.attrs["resampling"]
    again = bootstrap_identification(run, n_boot=3, params=P, cluster="item")
    xr.testing.assert_identical(out, again)
    paired = type_change(run, run, n_boot=3, params=P, paired=True)
    # the same draw for both runs of one run: every replicate's change is exactly 0
    assert (paired["boot_change"].values == 0).all()
    assert paired.attrs["paired"] is True
    unpaired = type_change(run, run, n_boot=3, params=P, paired=False)
    assert unpaired.attrs["paired"] is False


@pytest.mark.parametrize(
    "call",
    [
        lambda r: bootstrap_identification(r, n_boot=2, params=P),
        lambda r: bootstrap_stages(r, n_stages=2, n_boot=2, params=P),
        lambda r: type_change(r, r, n_boot=2, params=P),
        lambda r: activation_probability(r, method="bootstrap", n_boot=2),
    ],
    ids=["stability", "stages", "type_change", "activation_probability"],
)
def test_one_policy_on_inconsistent_totals(call: object) -> None:
    run = run_of()
    tokens = run.assign(n_tokens=run["n_tokens"] + 1)
    with pytest.raises(
        StoreValidationError,
        match=r"run: seq_n_tokens of language 'en' sum to \d+ but n_tokens holds \d+; the store "
        r"is corrupt — run `langneurons validate`$",
    ):
        call(tokens)  # type: ignore[operator]
    active = run.copy(deep=True)
    active["n_active"].values[1, 1, 0, 0] += 1
    with pytest.raises(
        StoreValidationError,
        match=r"run: seq_n_active of language 'de' does not sum to n_active; the store is "
        r"corrupt — run `langneurons validate`$",
    ):
        call(active)  # type: ignore[operator]


def test_replicates_do_not_depend_on_the_block() -> None:
    run = run_of()
    sampler = rs.Resampler(run, "response", "t")
    blocks = [
        [
            (b, r, res.attrs["tau"])
            for b, r, res in identified_replicates([sampler], P, 4, 5, block=block)
            if not isinstance(res, str)
        ]
        for block in (1, 2, 5)
    ]
    assert blocks[0] == blocks[1] == blocks[2]
