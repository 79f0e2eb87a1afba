"""Mixture-of-experts runs in the store (issue 17, docs/design/moe.md): counts, writes, reads,
validation, results with an expert dim, the schema version, export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
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
        ({"expert_neurons": (4.5, 4)}, "expert_neurons must be integers, one per expert"),
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
    with pytest.raises(StoreValidationError, match="but run 'new' is created with no experts"):
        store.create_run("new", n_layers=2, n_neurons=6, counts=other_k)
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


# ---------------------------------------------------------------------- info, version
def test_info_shows_experts_and_both_readers_agree(tmp_path: Path, capsys) -> None:
    from langneurons.cli._info import read_info

    from .conftest import run_cli

    path = tmp_path / "s.zarr"
    store, _ = _moe_store(path, sequences=2)
    store.create_run(
        "dense", n_layers=2, n_neurons=6, counts=make_counts(["de"], layers=2, neurons=6)
    )
    info = open_store(path).info()
    assert info["schema_version"] == schema.MOE_SCHEMA_VERSION
    entry = info["runs"]["moe/base"]
    assert entry["layers"] == 2 and entry["neurons"] == 6
    assert entry["moe"] == {"n_experts": 4, "n_shared": 1, "top_k": 2}
    assert "seq_n_routed" in entry["optional"] and "moe" not in info["runs"]["dense"]
    fast = read_info(str(path))
    assert fast is not None and json.dumps(fast) == json.dumps(info)
    code, out, _ = run_cli(capsys, "info", path)
    assert code == 0
    assert "2 layers x 4 routed + 1 shared experts (top-2) x 6 neurons" in out
    assert "(schema version 3)" in out


def test_a_moe_run_makes_the_store_version_3(tmp_path: Path) -> None:
    """Releases that read only version 2 refuse such a store in their own clear line."""
    path = tmp_path / "s.zarr"
    store = create_store(path)
    store.create_run(
        "dense", n_layers=2, n_neurons=6, counts=make_counts(["de"], layers=2, neurons=6)
    )
    root = json.loads((path / "zarr.json").read_text())
    assert root["attributes"]["langneurons"]["schema_version"] == 2  # dense stays readable
    _, counts = _moe_store(path)
    root = json.loads((path / "zarr.json").read_text())
    assert root["attributes"]["langneurons"]["schema_version"] == 3
    reopened = open_store(path)
    assert reopened.validate() == [] and reopened.runs() == ["dense", "moe/base"]
    assert reopened.open_run("dense").attrs["schema_version"] == 2
    from langneurons.store import migrate_store

    with pytest.raises(StoreValidationError, match="already has schema version 3; nothing to"):
        migrate_store(path, tmp_path / "new.zarr")


# ---------------------------------------------------------------------- results
def _expert_result(ds) -> xr.Dataset:
    """An identification-like result over (language, layer, expert, neuron), as analysis makes."""
    rng = np.random.default_rng(5)
    dims = ("language", "layer", "expert", "neuron")
    shape = tuple(ds.sizes[d] for d in dims)
    mask = rng.random(shape) < 0.3
    types = np.array(["specific", "none", "undefined", "padding"])[rng.integers(0, 4, shape[1:])]
    coords = {d: ds[d].values for d in dims}
    coords[EXPERT_SHARED] = ("expert", ds[EXPERT_SHARED].values)
    coords[EXPERT_NEURONS] = ("expert", ds[EXPERT_NEURONS].values)
    return xr.Dataset(
        {
            "mask": (dims, mask),
            "score": (dims[1:], rng.random(shape[1:])),
            "neuron_type": (dims[1:], types),
            "n_language_neurons": (dims[:3], mask.sum(axis=-1)),
        },
        coords=coords,
        attrs={"method": "lape", "rank": "expert", "min_routed": 1},
    )


def test_results_with_an_expert_dim_save_and_load(tmp_path: Path) -> None:
    path = tmp_path / "s.zarr"
    store, _ = _moe_store(path)
    result = _expert_result(store.open_run("moe/base"))
    assert store.save_result("moe/base", "identification", "lape", result) == (
        "moe/base/identification/lape"
    )
    store.save_result("moe/base", "stats", "experts", result[["n_language_neurons"]])
    back = open_store(path).open_result("moe/base", "identification", "lape")
    for name in ("mask", "score", "neuron_type", "n_language_neurons"):
        assert back[name].dims == result[name].dims
        np.testing.assert_array_equal(back[name].values, result[name].values)
    assert back[EXPERT_SHARED].values.tolist() == [False] * 4 + [True]
    stored = zarr.open_group(path, mode="r", path="moe/base/identification/lape")
    assert stored["neuron_type"].dtype == np.int8  # undefined and padding are coded too
    assert "undefined padding" in stored["neuron_type"].attrs["flag_meanings"]
    assert back.attrs["rank"] == "expert"
    stats = open_store(path).open_result("moe/base", "stats", "experts")
    assert stats.n_language_neurons.dims == ("language", "layer", "expert")
    assert store.validate() == []
    info = open_store(path).info()["runs"]["moe/base"]["results"]
    assert info == {"identification": ["lape"], "stats": ["experts"]}


# ---------------------------------------------------------------------- export
def test_exports_carry_a_moe_run(tmp_path: Path, monkeypatch) -> None:
    pa = pytest.importorskip("pyarrow.parquet")
    pytest.importorskip("h5netcdf")
    from langneurons.store import _export_parquet, decode_attrs

    path = tmp_path / "s.zarr"
    store, counts = _moe_store(path, sequences=2)
    result = _expert_result(store.open_run("moe/base"))
    store.save_result("moe/base", "identification", "lape", result)
    opened = open_store(path)
    # zip: the whole store, read back by plain xarray through zarr's ZipStore
    archive = opened.export_zip(tmp_path / "s.zip")
    zipped = open_store(archive)
    assert zipped.validate() == []
    np.testing.assert_array_equal(zipped.open_run("moe/base")[N_ROUTED].values, counts.n_routed)
    # netCDF: counts at the root, coords and the moe attribute carried
    (nc,) = opened.export_netcdf(tmp_path / "nc")
    with xr.open_dataset(nc) as found:
        assert found.n_active.dims == MOE_COUNT_DIMS
        np.testing.assert_array_equal(found.n_active.values, counts.n_active)
        np.testing.assert_array_equal(found[N_ROUTED].values, counts.n_routed)
        assert found[EXPERT_SHARED].values.tolist() == [False] * 4 + [True]
        assert decode_attrs(found.attrs)[MOE_ATTR]["top_k"] == 2
    with xr.open_dataset(nc, group="identification/lape") as found:
        assert found.mask.dims == ("language", "layer", "expert", "neuron")
    # Parquet: one row per (language, role, layer, expert, neuron), P over the routed tokens
    monkeypatch.setattr(_export_parquet, "ROWS_PER_GROUP", 2 * 2 * 5 * 6)  # a layer a group
    (pq,) = opened.export_parquet(tmp_path / "pq")
    table = pa.read_table(pq).to_pandas()
    assert list(table.columns[:11]) == [
        "run",
        "language",
        "role",
        "layer",
        "expert",
        "neuron",
        "n_active",
        "n_tokens",
        "n_routed",
        "P",
        "type_lape",
    ]
    assert len(table) == 2 * 2 * 2 * 5 * 6
    row = table[
        (table.language == "en")
        & (table.role == "response")
        & (table.layer == 1)
        & (table.expert == 2)
        & (table.neuron == 3)
    ].iloc[0]
    routed = int(np.asarray(counts.n_routed)[1, 1, 1, 2])
    assert row.n_active == counts.n_active[1, 1, 1, 2, 3] and row.n_routed == routed
    assert row.P == pytest.approx(counts.n_active[1, 1, 1, 2, 3] / routed)
    padding = table[(table.expert == 4) & (table.neuron >= 3)]
    assert len(padding) and padding.P.isna().all() and (padding.n_active == 0).all()
    assert row.type_lape == result.neuron_type.values[1, 2, 3]
    # the dataset folder: the zip and the tables, checked
    folder = opened.export_dataset(tmp_path / "ds", license="cc-by-4.0")
    assert (folder / "store.zip").is_file() and (folder / "data" / "moe" / "base.parquet").is_file()
    text = (folder / "README.md").read_text()
    assert "| shape | 2 layers x 4 routed + 1 shared experts (top-2) x 6 neurons |" in text
    assert "schema version 3" in text


# ---------------------------------------------------------------------- concurrency, bad input
_WRITER = """
import sys, time
sys.path.insert(0, {root!r})
from tests._moe_data import make_moe_counts
from langneurons.store import open_store
while time.time() < {start}:
    time.sleep(0.005)
store = open_store({path!r}, mode="r+")
for lang, seed in {jobs!r}:
    store.merge_counts("r", make_moe_counts([lang], seed=seed, sequences=2, expert_neurons={sizes}))
"""


def test_two_processes_merge_moe_counts_concurrently(tmp_path: Path) -> None:
    import subprocess
    import sys
    import time

    path = tmp_path / "s.zarr"
    layout = make_moe_counts(["x"], expert_neurons=SIZES).moe
    create_store(path).create_run("r", n_layers=2, n_neurons=6, moe=layout, sequences=True)
    jobs = [[("en", 1), ("de", 2), ("en", 3)], [("en", 11), ("fr", 12), ("de", 13)]]
    start = time.time() + 2.0
    root = str(Path(__file__).parents[1])
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WRITER.format(root=root, path=str(path), jobs=j, start=start, sizes=SIZES),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        for j in jobs
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    ds = open_store(path).open_run("r").load()
    for lang in ("en", "de", "fr"):
        seeds = [s for part in jobs for x, s in part if x == lang]
        parts = [make_moe_counts([lang], seed=s, sequences=2, expert_neurons=SIZES) for s in seeds]
        np.testing.assert_array_equal(
            ds[N_ROUTED].sel(language=lang).values, sum(np.asarray(p.n_routed)[0] for p in parts)
        )
        np.testing.assert_array_equal(
            ds.n_active.sel(language=lang).values, sum(p.n_active[0] for p in parts)
        )
    assert ds.sizes["sequence"] == 12
    assert open_store(path).validate() == []


def test_bad_layout_arguments_are_one_line(tmp_path: Path) -> None:
    store = create_store(tmp_path / "s.zarr")
    with pytest.raises(StoreValidationError, match="moe must be a langneurons.store.MoeLayout"):
        store.create_run("r", n_layers=2, n_neurons=6, moe={"n_experts": 4})  # type: ignore[arg-type]
    counts = make_moe_counts(["de"])
    with pytest.raises(StoreValidationError, match="moe must be a langneurons.store.MoeLayout"):
        Counts(["de"], counts.n_active, counts.n_tokens, n_routed=counts.n_routed, moe={"a": 1})  # type: ignore[arg-type]
    assert store.runs() == []


def test_validate_command_names_a_moe_problem(tmp_path: Path, capsys) -> None:
    from .conftest import run_cli

    path = tmp_path / "s.zarr"
    _, counts = _moe_store(path)
    run = zarr.open_group(path, mode="r+", path="moe/base", use_consolidated=False)
    run["n_routed"][0, 0, 1, 0] = int(np.asarray(counts.n_routed)[0, 0, 1, 0]) + 1
    rerecord(path, "moe/base/n_routed")
    code, out, err = run_cli(capsys, "validate", path)
    assert code == 1
    assert "invalid: run 'moe/base': n_routed of the routed experts adds up to" in err


def test_validate_reads_sequences_a_block_at_a_time(tmp_path: Path, monkeypatch) -> None:
    """Per-sequence routing is checked a chunk row at a time; a problem in a late block is found."""
    from langneurons.store import _nodes

    path = tmp_path / "s.zarr"
    store, counts = _moe_store(path, langs=("de", "en", "fr"), sequences=3)
    run = zarr.open_group(path, mode="r+", path="moe/base", use_consolidated=False)
    run["seq_n_routed"][7, 0, 0, 4] += 1  # the shared expert of fr's second sequence
    rerecord(path, "moe/base/seq_n_routed")
    real = _nodes.chunk_rows
    monkeypatch.setattr(
        _nodes,
        "chunk_rows",
        lambda a: (slice(i, min(i + 2, a.shape[0])) for i in range(0, a.shape[0], 2)),
    )
    problems = store.validate()
    monkeypatch.setattr(_nodes, "chunk_rows", real)
    assert any("seq_n_routed of shared expert 4" in p and "'item1'" in p for p in problems), (
        problems
    )
    assert any("seq_n_routed summed per language differs from n_routed" in p for p in problems)


def test_damaged_or_misplaced_moe_chunks_are_named(tmp_path: Path) -> None:
    from langneurons.errors import CorruptStoreError

    path = tmp_path / "s.zarr"
    store, _ = _moe_store(path)
    chunks = path / "moe" / "base" / "n_routed" / "c"
    de, en = chunks / "0" / "0" / "0" / "0", chunks / "1" / "0" / "0" / "0"
    de_bytes, en_bytes = de.read_bytes(), en.read_bytes()
    de.write_bytes(en_bytes)  # a valid chunk, checksum and all, of another language's row
    problems = store.validate()
    assert problems and "array 'n_routed'" in problems[0], problems
    assert problems == [
        "run 'moe/base', array 'n_routed': chunk c/0/0/0/0 is not the chunk written there (its "
        "bytes are the chunk written at c/1/0/0/0: chunks swapped or copied)"
    ]
    with pytest.raises(CorruptStoreError, match="n_routed"):
        open_store(path).open_run("moe/base")[N_ROUTED].load()
    de.write_bytes(de_bytes[:-1] + bytes([de_bytes[-1] ^ 1]))  # a flipped bit
    problems = store.validate()
    assert problems and "array 'n_routed'" in problems[0] and "checksum" in problems[0]
    de.write_bytes(de_bytes)
    assert store.validate() == []
