"""Mixture-of-experts runs in the store (issue 17, docs/design/moe.md): counts, writes, reads,
validation, results with an expert dim, the schema version, export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from langneurons.errors import StoreValidationError
from langneurons.names import (
    EXPERT,
    EXPERT_NEURONS,
    EXPERT_SHARED,
    MOE_ATTR,
    MOE_COUNT_DIMS,
    MOE_SEQ_DIMS,
    N_ROUTED,
    SEQ_N_ROUTED,
)
from langneurons.store import Counts, MoeLayout, RunMetadata, create_store, open_store, schema

from ._moe_data import make_moe_counts
from .conftest import make_counts, rerecord, run_python

SIZES = [6, 4, 6, 5, 3]  # four routed experts of different sizes, then one shared


def _moe_store(path: Path, langs=("de", "en"), **kw) -> tuple[object, Counts]:
    store = create_store(path)
    counts = make_moe_counts(list(langs), expert_neurons=SIZES, **kw)
    assert counts.moe is not None
    store.create_run(
        "moe/base",
        n_layers=counts.shape[0],
        n_neurons=counts.moe.n_neurons,
        metadata=RunMetadata(model="tiny-moe"),
        moments=counts.has_moments,
        sequences=counts.has_sequences,
        moe=counts.moe,
        counts=counts,
    )
    return store, counts


# ---------------------------------------------------------------------- counts
def test_builder_makes_valid_counts_of_every_shape() -> None:
    counts = make_moe_counts(["de", "en"], layers=3, experts=8, shared=2, top_k=2, neurons=5)
    assert counts.n_active.shape == (2, 2, 3, 10, 5)
    assert counts.n_routed is not None and counts.n_routed.shape == (2, 2, 3, 10)
    routed = counts.n_routed[..., :8].sum(axis=-1)
    assert (routed == 2 * counts.n_tokens[:, :, None]).all()
    assert (counts.n_routed[..., 8:] == counts.n_tokens[:, :, None, None]).all()
    seq = make_moe_counts(["de"], sequences=3, expert_neurons=SIZES, moments=True)
    assert seq.seq_n_routed is not None and seq.seq_n_active is not None
    assert seq.seq_n_active.shape == (3, 2, 2, 5, 6)
    sub = make_moe_counts(["de", "en", "fr"], sequences=2).subset(["fr", "de"])
    assert sub.languages == ["fr", "de"] and sub.is_moe
    assert sub.seq_language == ["de", "de", "fr", "fr"]  # sequences keep their order


def _moe_parts(**change):
    counts = make_moe_counts(["de"], expert_neurons=SIZES, sequences=2)
    parts = {
        "languages": ["de"],
        "n_active": counts.n_active.copy(),
        "n_tokens": counts.n_tokens.copy(),
        "n_routed": np.asarray(counts.n_routed).copy(),
        "moe": counts.moe,
    }
    parts.update(change)
    return parts


def test_counts_refuse_each_broken_invariant() -> None:
    parts = _moe_parts()
    active, routed, tokens = parts["n_active"], parts["n_routed"], parts["n_tokens"]
    cases = []
    above = active.copy()
    above[0, 1, 0, 0, 0] = routed[0, 1, 0, 0] + 1
    cases.append(({"n_active": above}, "n_active exceeds n_routed for 'de' role 'response'"))
    padded = active.copy()
    padded[0, 0, 1, 4, 5] = 1  # expert 4 has 3 neurons: neuron 5 is padding
    cases.append(({"n_active": padded}, "counts padding neurons"))
    off = routed.copy()
    off[0, 0, 1, 0] += 1
    cases.append(
        ({"n_routed": off}, "n_routed of the routed experts adds up to")
    )  # top_k x tokens broken
    shared = routed.copy()
    shared[0, 1, 0, 4] -= 1
    shared[0, 1, 0, 4] = max(shared[0, 1, 0, 4], 0)
    cases.append(({"n_routed": shared}, "a shared expert sees every token"))
    cases.append(({"n_routed": None}, "MoE counts need n_routed"))
    cases.append(({"moe": None}, "n_routed given without moe"))
    cases.append(({"n_routed": routed[:, :, :, :4]}, "n_routed has shape"))
    cases.append(({"n_active": active[..., :5]}, "experts x 5 neurons"))
    cases.append(({"n_active": active[:, :, :, 0]}, "n_active has 4 dims; expected 5"))
    cases.append(({"n_tokens": tokens + 1}, "adds up to"))
    for change, message in cases:
        with pytest.raises(StoreValidationError, match=message.replace("(", r"\(")) as info:
            Counts(**_moe_parts(**change))
        assert "\n" not in str(info.value)


def test_counts_refuse_sequences_that_do_not_add_up() -> None:
    counts = make_moe_counts(["de"], sequences=2)
    kwargs = {
        "languages": ["de"],
        "n_active": counts.n_active,
        "n_tokens": counts.n_tokens,
        "n_routed": counts.n_routed,
        "moe": counts.moe,
        "seq_n_active": counts.seq_n_active,
        "seq_n_tokens": counts.seq_n_tokens,
        "seq_language": counts.seq_language,
        "seq_id": counts.seq_id,
    }
    with pytest.raises(StoreValidationError, match="need all of seq_n_active, seq_n_routed"):
        Counts(**kwargs)  # type: ignore[arg-type]
    moved = np.asarray(counts.seq_n_active).copy()
    j = np.argwhere(moved[0] > 0)[0]
    moved[(0, *j)] -= 1  # still valid per sequence, no longer the per-language sum
    with pytest.raises(StoreValidationError, match="seq_n_active summed per language differs"):
        Counts(**{**kwargs, "seq_n_routed": counts.seq_n_routed, "seq_n_active": moved})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"expert_neurons": (4, 4), "n_shared": 2}, "needs at least one routed expert"),
        ({"expert_neurons": (4, 4), "top_k": 3}, "top_k is 3; it must be between 1 and the 2"),
        ({"expert_neurons": (4, 0)}, "expert_neurons holds 0"),
        ({"expert_neurons": (4, 4), "top_k": True}, "top_k must be an integer"),
    ],
)
def test_layout_refuses_bad_parameters(kwargs, message) -> None:
    with pytest.raises(StoreValidationError, match=message):
        MoeLayout(**kwargs)


# ---------------------------------------------------------------------- write and read
def test_round_trip_and_contract(tmp_path: Path) -> None:
    store, counts = _moe_store(tmp_path / "s.zarr", sequences=2, moments=True)
    ds = open_store(tmp_path / "s.zarr").open_run("moe/base")
    assert ds.n_active.dims == MOE_COUNT_DIMS
    assert ds[N_ROUTED].dims == MOE_COUNT_DIMS[:-1]
    assert ds.seq_n_active.dims == MOE_SEQ_DIMS and ds[SEQ_N_ROUTED].dims == MOE_SEQ_DIMS[:-1]
    assert ds.act_sum.dims == MOE_COUNT_DIMS
    for name in (EXPERT, EXPERT_SHARED, EXPERT_NEURONS):
        assert name in ds.coords and ds[name].dims == (EXPERT,)
    assert ds[EXPERT].values.tolist() == [0, 1, 2, 3, 4]
    assert ds[EXPERT_SHARED].values.tolist() == [False] * 4 + [True]
    assert ds[EXPERT_NEURONS].values.tolist() == SIZES
    np.testing.assert_array_equal(ds.n_active.values, counts.n_active)
    np.testing.assert_array_equal(ds[N_ROUTED].values, counts.n_routed)
    np.testing.assert_array_equal(ds[SEQ_N_ROUTED].values, counts.seq_n_routed)
    assert ds.act_sum.values.tobytes() == np.asarray(counts.act_sum).tobytes()
    assert json.loads(ds.attrs[MOE_ATTR]) == {
        "n_experts": 4,
        "n_shared": 1,
        "top_k": 2,
        "model_type": "qwen2_moe",
    }
    assert ds.attrs["schema_version"] == schema.MOE_SCHEMA_VERSION
    assert store.validate() == []


def test_plain_xarray_opens_a_moe_run(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    _, counts = _moe_store(path, sequences=2)
    code = f"""
import sys, xarray as xr
ds = xr.open_zarr({str(path)!r}, group="moe/base")
assert "langneurons" not in sys.modules
assert ds.n_active.dims == ("language", "role", "layer", "expert", "neuron"), ds.n_active.dims
assert ds.n_routed.dims == ("language", "role", "layer", "expert")
assert "expert_shared" in ds.coords and "expert_neurons" in ds.coords
p = (ds.n_active / ds.n_routed).sel(expert=ds.expert_shared.values.argmax())
print(int(ds.n_active.sum()), int(ds.n_routed.sum()), ds.expert_neurons.values.tolist())
"""
    out = run_python(code).split(maxsplit=2)
    assert int(out[0]) == int(counts.n_active.sum())
    assert int(out[1]) == int(np.asarray(counts.n_routed).sum())
    assert out[2].strip() == str(SIZES)


def test_add_and_merge_are_additive(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    store, first = _moe_store(path)
    more = make_moe_counts(["fr"], expert_neurons=SIZES, seed=1)
    store.add_languages("moe/base", more)
    shard = make_moe_counts(["de", "zh"], expert_neurons=SIZES, seed=2)
    store.writer("moe/base").merge_counts(shard, unit="shard-1")
    ds = open_store(path).open_run("moe/base")
    assert list(ds.language.values) == ["de", "en", "fr", "zh"]
    np.testing.assert_array_equal(
        ds.n_active.sel(language="de").values, first.n_active[0] + shard.n_active[0]
    )
    np.testing.assert_array_equal(
        ds[N_ROUTED].sel(language="de").values,
        np.asarray(first.n_routed)[0] + np.asarray(shard.n_routed)[0],
    )
    np.testing.assert_array_equal(ds[N_ROUTED].sel(language="fr").values, more.n_routed[0])
    assert store.committed_units("moe/base") == {"shard-1"}
    assert store.validate() == []


def test_preallocated_rows_and_sequence_slots(tmp_path: Path) -> None:
    """Concurrent-writer layout: rows and slots made up front, units added into them."""
    path = tmp_path / "s.zarr"
    store = create_store(path)
    full = make_moe_counts(["de", "en"], sequences=3, expert_neurons=SIZES)
    assert full.moe is not None and full.seq_language is not None and full.seq_id is not None
    store.create_run(
        "r",
        n_layers=2,
        n_neurons=6,
        moe=full.moe,
        sequences=True,
        languages=["de", "en"],
        sequence_labels=(full.seq_language, full.seq_id),
        planned_units=["de", "en"],
    )
    for lang in ("en", "de"):  # out of order
        rows = [i for i, x in enumerate(full.seq_language) if x == lang]
        unit = full.subset([lang])
        store.writer("r").merge_counts(
            Counts(
                [lang],
                unit.n_active,
                unit.n_tokens,
                n_routed=unit.n_routed,
                moe=full.moe,
                seq_n_active=unit.seq_n_active,
                seq_n_routed=unit.seq_n_routed,
                seq_n_tokens=unit.seq_n_tokens,
                seq_language=unit.seq_language,
                seq_id=unit.seq_id,
                seq_index=rows,
            ),
            unit=lang,
        )
    ds = store.open_run("r")
    np.testing.assert_array_equal(ds.n_active.values, full.n_active)
    np.testing.assert_array_equal(ds[SEQ_N_ROUTED].values, full.seq_n_routed)
    assert store.validate() == []


def test_interrupted_write_rolls_back(tmp_path: Path, monkeypatch) -> None:
    from langneurons.store import _arrays

    path = tmp_path / "s.zarr"
    store, first = _moe_store(path, sequences=2)
    real = _arrays.apply

    def dying(group, counts, plan, old=None):
        real(group, counts, plan, old)
        raise KeyboardInterrupt  # killed after writing, before the commit

    monkeypatch.setattr(_arrays, "apply", dying)
    with pytest.raises(KeyboardInterrupt):
        store.merge_counts(
            "moe/base", make_moe_counts(["de", "fr"], sequences=2, seed=4, expert_neurons=SIZES)
        )
    monkeypatch.setattr(_arrays, "apply", real)
    ds = store.open_run("moe/base")
    assert list(ds.language.values) == ["de", "en"]
    np.testing.assert_array_equal(ds[N_ROUTED].values, first.n_routed)
    assert ds.sizes["sequence"] == 4
    assert store.validate() == []


def test_mixing_dense_and_moe_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    store, _ = _moe_store(path)
    dense = make_counts(["fr"], layers=2, neurons=6)
    with pytest.raises(
        StoreValidationError, match="is a mixture-of-experts run .* counts are dense"
    ):
        store.add_languages("moe/base", dense)
    other_k = make_moe_counts(["fr"], expert_neurons=SIZES, top_k=1)
    with pytest.raises(StoreValidationError, match="top-1 .* but run 'moe/base' has .* top-2"):
        store.add_languages("moe/base", other_k)
    other_e = make_moe_counts(["fr"], experts=3, shared=1, neurons=6)
    with pytest.raises(StoreValidationError, match="3 routed \\+ 1 shared experts"):
        store.add_languages("moe/base", other_e)
    store.create_run("dense", n_layers=2, n_neurons=6, counts=dense)
    with pytest.raises(StoreValidationError, match="counts are per expert .* dense run"):
        store.add_languages("dense", make_moe_counts(["de"], expert_neurons=SIZES))
    with pytest.raises(StoreValidationError, match="n_neurons is 7 but the largest expert has 6"):
        store.create_run("bad", n_layers=2, n_neurons=7, moe=MoeLayout((6, 6)))
    assert store.languages("moe/base") == ["de", "en"]
    assert store.validate() == []


# ---------------------------------------------------------------------- validate
def test_validate_names_each_broken_invariant(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    store, counts = _moe_store(path, sequences=2)
    run = zarr.open_group(path, mode="r+", path="moe/base", use_consolidated=False)
    routed = np.asarray(counts.n_routed)
    run["n_active"][0, 1, 0, 0, 0] = int(routed[0, 1, 0, 0]) + 1
    run["n_active"][1, 0, 1, 4, 5] = 1  # padding
    run["n_routed"][1, 1, 0, 4] = int(counts.n_tokens[1, 1]) + 3  # a shared expert
    rerecord(path, "moe/base/n_active", "moe/base/n_routed")
    problems = store.validate()
    assert any("shared expert 4 is" in p for p in problems), problems
    assert any(
        "n_active exceeds n_routed for 'de' role 'response' at 1 cells" in p for p in problems
    ), problems
    assert any("counts 1 padding neurons" in p and "'en' role 'prompt'" in p for p in problems)
    assert any("seq_n_routed summed per language differs from n_routed" in p for p in problems)
    assert all(p.startswith("run 'moe/base': ") for p in problems)


def test_validate_refuses_a_bad_moe_attribute(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    store, _ = _moe_store(path)
    run = zarr.open_group(path, mode="r+", path="moe/base", use_consolidated=False)
    run.attrs[MOE_ATTR] = json.dumps({"n_experts": 3, "n_shared": 2, "top_k": 2})
    _consolidate(path)
    problems = store.validate()
    assert problems and "does not match the expert_shared coordinate" in problems[0]


def test_metadata_check_knows_moe_dims(tmp_path: Path) -> None:
    """A dense run with 5-D counts, or n_routed without the moe attribute, is named."""
    path = tmp_path / "s.zarr"
    store, _ = _moe_store(path)
    run = zarr.open_group(path, mode="r+", path="moe/base", use_consolidated=False)
    del run.attrs[MOE_ATTR]
    _consolidate(path)
    problems = store.validate()
    assert any("n_routed" in p and "no 'moe' attribute" in p for p in problems), problems
    assert any("has dims ('language', 'role', 'layer', 'expert', 'neuron')" in p for p in problems)


def _consolidate(path: Path) -> None:
    """Refresh the consolidated metadata after an edit (as a writer outside langneurons would)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(path)
