"""Every public analysis accepts runs and saved results as plain xarray opens them.

``store.open_run`` gives string labels as numpy unicode (``<U``); plain ``xr.open_zarr`` on the
store directory or on its exported zip gives NumPy ``StringDType`` (dask-backed for non-index
coordinates such as ``seq_language``), and other writers give object arrays of str or bytes.
Each analysis must give, on every such Dataset, exactly what it gives on the library's path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import dask.array
import numpy as np
import pytest
import xarray as xr
import zarr

from langneurons import analysis
from langneurons.analysis import (
    accuracy_effects,
    activation_probability,
    bootstrap_identification,
    bootstrap_stages,
    cochran_q,
    compare_model_groups,
    compare_models,
    compare_type_distributions,
    compare_with_identification,
    deactivation_effects,
    group_comparison,
    identify,
    language_experts,
    language_overlap,
    language_preference_tests,
    mask_change,
    masks_from_lists,
    masks_to_lists,
    mcnemar,
    membership_change,
    overlap,
    routing_change,
    segment_stages,
    select,
    shared_by_change,
    spontaneous_alignment,
    stage_profile,
    summary,
    trajectories,
    transition_table,
    type_change,
    type_switches,
    type_table,
)
from langneurons.analysis._validate import as_labels
from langneurons.store import create_store, open_store

from ._accuracy_data import accuracy_ablation
from .conftest import make_counts

# the automatic lambda of these tiny random runs may stop at the top of its range; that is not
# what this file tests
pytestmark = pytest.mark.filterwarnings("ignore:the automatic lambda")

LANGS = ["en", "de", "fr"]
LAYERS, NEURONS = 6, 40
N_BOOT, N_PERM = 5, 50
BASE, ALIGNED = "m/base", "m/aligned"

#: what each input is: (run, result kind, result name); kind None for the run itself
GROUPS: dict[str, tuple[str, str | None, str | None]] = {
    "base": (BASE, None, None),
    "aligned": (ALIGNED, None, None),
    "ternary": (BASE, "identification", "ternary"),
    "lape": (BASE, "identification", "lape"),
    "aligned_ternary": (ALIGNED, "identification", "ternary"),
    "tests": (BASE, "stats", "tests"),
    "ablation": (BASE, "ablation", "demo"),
    "accuracy": (BASE, "ablation", "accuracy-demo"),
}

#: how the inputs are opened: (source, labels, backing); "library" is the reference
VARIANTS = [
    *[
        ("plain", labels, backing)
        for labels in ("stored", "object", "unicode", "bytes")
        for backing in ("dask", "memory")
    ],
    ("zip", "stored", "dask"),
    ("zip", "stored", "memory"),
]

Inputs = Mapping[str, xr.Dataset]


def ablation() -> xr.Dataset:
    """A small synthetic deactivation experiment over :data:`LANGS`."""
    rng = np.random.default_rng(0)
    k, controls = len(LANGS), 20
    base = rng.uniform(1.5, 2.5, k)
    damage = 0.05 + rng.normal(0, 0.01, (k, k)) + 0.5 * np.eye(k)
    control = base[None, :, None] + 0.05 + rng.normal(0, 0.01, (k, k, controls))
    return xr.Dataset(
        {
            "nll": (("deactivated", "evaluated"), np.vstack([base, base + damage])),
            "control_nll": (
                ("deactivated", "evaluated", "control"),
                np.concatenate([np.full((1, k, controls), np.nan), control]),
            ),
        },
        coords={"deactivated": ["none", *LANGS], "evaluated": LANGS, "control": range(controls)},
    )


def accuracy() -> xr.Dataset:
    """A small synthetic accuracy ablation over :data:`LANGS` (8 items each, 19 controls)."""
    rng = np.random.default_rng(1)
    k, items = len(LANGS), 8
    correct = rng.random((1, k, 20, k * items)) < 0.6
    return accuracy_ablation(correct, rng.random(k * items) < 0.8, list(LANGS))


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two per-sequence runs and saved results, in a store directory and its exported zip."""
    tmp = tmp_path_factory.mktemp("plain")
    path = tmp / "s.zarr"
    store = create_store(path)
    for run, seed in ((BASE, 1), (ALIGNED, 2)):
        counts = make_counts(LANGS, layers=LAYERS, neurons=NEURONS, seed=seed, sequences=8)
        store.create_run(run, n_layers=LAYERS, n_neurons=NEURONS, sequences=True, counts=counts)
    base, aligned = store.open_run(BASE), store.open_run(ALIGNED)
    store.save_result(BASE, "identification", "ternary", identify(base))
    store.save_result(BASE, "identification", "lape", identify(base, "lape"))
    store.save_result(ALIGNED, "identification", "ternary", identify(aligned))
    store.save_result(BASE, "stats", "tests", language_preference_tests(base))
    store.save_result(BASE, "ablation", "demo", ablation())
    store.save_result(BASE, "ablation", "accuracy-demo", accuracy())
    zip_path = store.export_zip(tmp / "s.zip")
    zips: list[zarr.storage.ZipStore] = []
    yield {"store": open_store(path), "path": path, "zip": zip_path, "zips": zips, "cache": {}}
    for zs in zips:
        zs.close()


def convert(values: np.ndarray, labels: str) -> np.ndarray:
    """String labels as object str, ``<U`` or bytes."""
    items = [str(x) for x in values.ravel().tolist()]
    if labels == "bytes":
        return np.array([s.encode() for s in items], dtype=np.bytes_).reshape(values.shape)
    out = np.empty(len(items), dtype=object) if labels == "object" else np.array(items)
    out[:] = items
    return out.reshape(values.shape)


def relabel(ds: xr.Dataset, labels: str) -> xr.Dataset:
    """``ds`` with its string variables converted, dask-backed where they were."""
    if labels == "stored":
        return ds
    for name, var in ds.variables.items():
        # bytes index coordinates cannot be selected with str keys (ds.sel(role="response"))
        if var.dtype.kind not in "OTUS" or (labels == "bytes" and name in ds.indexes):
            continue
        values = convert(np.asarray(var.values), labels)
        if var.chunks is not None:
            values = dask.array.from_array(values, chunks=var.chunks)
        new = (var.dims, values, var.attrs)
        ds = ds.assign_coords({name: new}) if name in ds.coords else ds.assign({name: new})
    return ds


def open_group(shared: dict[str, Any], source: str, key: str) -> xr.Dataset:
    """One input, opened by the library or by plain xarray (store directory or zip)."""
    run, kind, name = GROUPS[key]
    if source == "library":
        store = shared["store"]
        return store.open_run(run) if kind is None else store.open_result(run, kind, name)
    group = run if kind is None else f"{run}/{kind}/{name}"
    if source == "plain":
        return xr.open_zarr(shared["path"], group=group)
    zs = zarr.storage.ZipStore(shared["zip"], mode="r")
    shared["zips"].append(zs)
    return xr.open_zarr(zs, group=group)


def inputs(shared: dict[str, Any], variant: tuple[str, str, str]) -> Inputs:
    """Every input opened the ``variant`` way (cached per module)."""
    cache = shared["cache"]
    if variant not in cache:
        source, labels, backing = variant
        out = {key: relabel(open_group(shared, source, key), labels) for key in GROUPS}
        cache[variant] = {k: v.load() if backing == "memory" else v for k, v in out.items()}
    return cache[variant]


# --------------------------------------------------------------------------- the analyses


def moe_view(ds: xr.Dataset, n_experts: int = 4) -> xr.Dataset:
    """A per-sequence dense run in the MoE layout (docs/design/moe.md) by plain xarray: its
    neurons split into ``n_experts`` experts that each see every token; labels and backing kept.
    """
    active = ds["n_active"].transpose("language", "role", "layer", "neuron")
    data = active.data.reshape(*active.shape[:3], n_experts, NEURONS // n_experts)
    expert = xr.DataArray(np.zeros(n_experts, dtype=np.int64), dims="expert")
    tokens = ds["n_tokens"].astype(np.int64)
    seq_tokens = ds["seq_n_tokens"].astype(np.int64)
    layer = xr.zeros_like(ds["layer"], dtype=np.int64)
    out = xr.Dataset(
        {
            "n_active": (("language", "role", "layer", "expert", "neuron"), data),
            "n_routed": (tokens + layer + expert).transpose("language", "role", "layer", "expert"),
            "n_tokens": ds["n_tokens"],
            "seq_n_routed": (seq_tokens + layer + expert).transpose(
                "sequence", "role", "layer", "expert"
            ),
            "seq_n_tokens": ds["seq_n_tokens"],
            "seq_language": ds["seq_language"],
            "seq_id": ds["seq_id"],
        },
        coords={"expert": np.arange(n_experts), "neuron": np.arange(NEURONS // n_experts)},
    )
    return out.assign_coords(expert_shared=("expert", np.zeros(n_experts, dtype=bool)))


CASES: dict[str, Callable[[Inputs], Any]] = {
    "identify": lambda d: identify(d["base"]),
    "identify[lape, all roles]": lambda d: identify(d["base"], "lape", role="all"),
    "identify[language subset]": lambda d: identify(d["base"].sel(language=["fr", "en"])),
    "summary": lambda d: summary(d["ternary"]),
    "select": lambda d: select(d["ternary"], top_rate=0.02),
    "select[lape]": lambda d: select(d["lape"], top_rate=0.02, bar=0.9),
    "masks_to_lists": lambda d: masks_to_lists(d["lape"]),
    "masks_from_lists": lambda d: masks_from_lists(
        masks_to_lists(d["lape"]), d["lape"]["language"].values, LAYERS, NEURONS
    ),
    "activation_probability[wilson]": lambda d: activation_probability(d["base"], method="wilson"),
    "activation_probability[cluster]": lambda d: activation_probability(
        d["base"], method="cluster"
    ),
    "activation_probability[bootstrap]": lambda d: activation_probability(
        d["base"], method="bootstrap", n_boot=N_BOOT
    ),
    "activation_probability[language subset]": lambda d: activation_probability(
        d["base"].sel(language=["de", "en"]), method="cluster"
    ),
    "language_preference_tests[cluster]": lambda d: language_preference_tests(d["base"]),
    "language_preference_tests[binomial]": lambda d: language_preference_tests(
        d["base"], method="binomial", role="prompt"
    ),
    "compare_with_identification": lambda d: compare_with_identification(d["tests"], d["ternary"]),
    "bootstrap_identification": lambda d: bootstrap_identification(d["base"], n_boot=N_BOOT),
    "bootstrap_stages": lambda d: bootstrap_stages(d["base"], n_boot=N_BOOT),
    "stage_profile": lambda d: stage_profile(d["ternary"]),
    "segment_stages": lambda d: segment_stages(stage_profile(d["ternary"]), 3),
    "type_table": lambda d: type_table(d["ternary"]),
    "compare_models": lambda d: compare_models(
        [d["base"], d["aligned"]], [d["ternary"], d["aligned_ternary"]], n_boot=N_BOOT, bins=2
    ),
    "compare_model_groups": lambda d: compare_model_groups(
        {"a": [d["ternary"], d["aligned_ternary"]], "b": [d["aligned_ternary"], d["ternary"]]},
        bins=2,
    ),
    "compare_type_distributions": lambda d: compare_type_distributions(
        d["ternary"], d["aligned_ternary"]
    ),
    "type_change": lambda d: type_change(d["base"], d["aligned"], n_boot=N_BOOT),
    "shared_by_change": lambda d: shared_by_change(d["base"], d["aligned"], n_boot=N_BOOT),
    "mask_change": lambda d: mask_change(d["base"], d["aligned"], n_perm=N_PERM),
    "type_switches": lambda d: type_switches(d["base"], d["aligned"], n_perm=N_PERM),
    "spontaneous_alignment": lambda d: spontaneous_alignment(
        d["base"], d["aligned"], ["en"], n_boot=N_BOOT, n_perm=N_PERM
    ),
    "overlap": lambda d: overlap(d["ternary"], d["aligned_ternary"]),
    "transition_table": lambda d: transition_table(d["ternary"], d["aligned_ternary"]),
    "mcnemar": lambda d: mcnemar(d["ternary"], d["aligned_ternary"]),
    "mcnemar[language]": lambda d: mcnemar(d["ternary"], d["aligned_ternary"], "de"),
    "membership_change": lambda d: membership_change(d["ternary"], d["aligned_ternary"]),
    "group_comparison": lambda d: group_comparison(
        {"base": [d["ternary"], d["lape"]], "aligned": [d["aligned_ternary"], d["ternary"]]},
        test="permutation",
    ),
    "cochran_q": lambda d: cochran_q([d["ternary"], d["aligned_ternary"], d["lape"]]),
    "trajectories": lambda d: trajectories([d["ternary"], d["aligned_ternary"]]),
    "language_overlap": lambda d: language_overlap(d["ternary"]),
    "deactivation_effects": lambda d: deactivation_effects(d["ablation"], n_perm=N_PERM),
    "accuracy_effects": lambda d: accuracy_effects(d["accuracy"]),
    "identify[moe, rank=layer]": lambda d: identify(moe_view(d["base"]), "lape", rank="layer"),
    "language_experts": lambda d: language_experts(moe_view(d["base"]), n_boot=N_BOOT),
    "routing_change": lambda d: routing_change(
        moe_view(d["base"]), moe_view(d["aligned"]), n_perm=N_PERM
    ),
    "neurons.identify": lambda d: d["base"].neurons.identify("lape"),
    "neurons.probability": lambda d: d["base"].neurons.probability(),
    "neurons.probability[all]": lambda d: d["base"].neurons.probability("all"),
}


#: plain xarray arithmetic, which keeps the input's coordinates (and their dtypes) as they are
PASSTHROUGH = {"neurons.probability", "neurons.probability[all]"}


def assert_same(out: Any, ref: Any, *, same_dtypes: bool = True) -> None:
    """Identical results, with string labels of the same dtype unless ``same_dtypes`` is off."""
    if isinstance(ref, (xr.Dataset, xr.DataArray)):
        out = out.compute()
        xr.testing.assert_identical(out, ref)
        if not same_dtypes:
            return
        for name, var in ref.coords.items():
            assert out[name].dtype == var.dtype, name
        if isinstance(ref, xr.Dataset):
            for name, var in ref.data_vars.items():
                assert out[name].dtype == var.dtype, name
    else:
        np.testing.assert_equal(out, ref)


@pytest.fixture(scope="module")
def reference(shared: dict[str, Any]) -> dict[str, Any]:
    """Each analysis on the inputs as the library opens them."""
    library = {key: open_group(shared, "library", key) for key in GROUPS}
    out = {}
    for name, fn in CASES.items():
        result = fn(library)
        out[name] = result.compute() if isinstance(result, (xr.Dataset, xr.DataArray)) else result
    return out


def test_plain_xarray_gives_stringdtype_labels(shared: dict[str, Any]) -> None:
    plain = inputs(shared, ("plain", "stored", "dask"))["base"]
    for name in ("language", "role", "seq_language", "seq_id"):
        assert plain[name].dtype.kind == "T", name
    assert plain["seq_language"].chunks is not None


def test_every_public_analysis_is_covered() -> None:
    covered = {name.split("[")[0] for name in CASES}
    public = {
        name
        for name in analysis.__all__
        if callable(getattr(analysis, name)) and not isinstance(getattr(analysis, name), type)
    }
    assert public <= covered, sorted(public - covered)


@pytest.mark.parametrize("variant", VARIANTS, ids=["-".join(v) for v in VARIANTS])
@pytest.mark.parametrize("case", list(CASES))
def test_analysis_on_plainly_opened_inputs(
    shared: dict[str, Any], reference: dict[str, Any], case: str, variant: tuple[str, str, str]
) -> None:
    out = CASES[case](inputs(shared, variant))
    assert_same(out, reference[case], same_dtypes=case not in PASSTHROUGH)


def test_selections_on_stringdtype_coordinates(shared: dict[str, Any]) -> None:
    plain = inputs(shared, ("plain", "stored", "dask"))["base"]
    library = open_group(shared, "library", "base")
    for sel in ({"role": "response"}, {"language": "de"}, {"language": ["fr", "en"]}):
        xr.testing.assert_identical(
            plain["n_active"].sel(sel).compute(), library["n_active"].sel(sel).compute()
        )
    assert (plain["language"] == "de").values.tolist() == [False, True, False]
    fr = plain["seq_language"] == "fr"
    assert int(fr.sum()) == 8


# --------------------------------------------------------------------------- as_labels


@pytest.mark.parametrize(
    "values",
    [
        np.array(["en", "de"]),
        np.array(["en", "de"], dtype=np.dtypes.StringDType()),
        np.array(["en", "de"], dtype=object),
        np.array([b"en", b"de"]),
        np.array([b"en", "de"], dtype=object),
        dask.array.from_array(np.array(["en", "de"], dtype=np.dtypes.StringDType()), chunks=1),
        xr.DataArray(np.array(["en", "de"], dtype=object), dims="x"),
    ],
    ids=["unicode", "stringdtype", "object", "bytes", "object-bytes", "dask", "dataarray"],
)
def test_as_labels(values: Any) -> None:
    out = as_labels(values)
    assert out.dtype.kind == "U"
    assert out.tolist() == ["en", "de"]


def test_as_labels_keeps_shape_and_unicode() -> None:
    grid = np.array([["é", "none"], ["ru", "th"]], dtype=np.dtypes.StringDType())
    out = as_labels(grid)
    assert out.shape == (2, 2) and out.dtype.kind == "U"
    assert out.tolist() == [["é", "none"], ["ru", "th"]]
    assert as_labels(np.array(["é".encode()], dtype=object)).tolist() == ["é"]
    assert as_labels(np.array([], dtype=np.dtypes.StringDType())).shape == (0,)
