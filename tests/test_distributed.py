"""Analyses run unchanged on a Dask distributed cluster (processes), matching the threads."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import xarray as xr

distributed = pytest.importorskip("distributed")

from langneurons.analysis import (  # noqa: E402
    activation_probability,
    bootstrap_identification,
    bootstrap_stages,
    identify,
    language_preference_tests,
    type_change,
)
from langneurons.analysis.params import IdentifyParams  # noqa: E402
from langneurons.store import create_store, open_store  # noqa: E402

from .conftest import make_counts  # noqa: E402

KW = {"top_rate": 0.05, "lam_range": (0.0, 2.0)}
P = IdentifyParams(**KW)
Runs = tuple[xr.Dataset, xr.Dataset]

# every analysis that reads a run, with small but real parameters
ANALYSES: dict[str, Callable[[Runs], xr.Dataset]] = {
    "identify": lambda r: identify(r[0], "ternary", **KW),
    "bootstrap_identification": lambda r: bootstrap_identification(
        r[0], n_boot=8, seed=3, params=P
    ),
    "language_preference_tests": lambda r: language_preference_tests(r[0], method="cluster"),
    "activation_probability (cluster)": lambda r: activation_probability(r[0], method="cluster"),
    "activation_probability (bootstrap)": lambda r: activation_probability(
        r[0], method="bootstrap", n_boot=20, seed=1
    ),
    "bootstrap_stages": lambda r: bootstrap_stages(r[0], n_stages=2, n_boot=5, seed=2, params=P),
    "type_change": lambda r: type_change(r[0], r[1], n_boot=5, seed=4, params=P),
}


@pytest.fixture(scope="module")
def run_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dist") / "s.zarr"
    store = create_store(path)
    for run, seed in (("base", 4), ("aligned", 5)):
        counts = make_counts(
            ["en", "de", "fr", "zh"], layers=6, neurons=40, sequences=12, seed=seed
        )
        store.create_run(run, n_layers=6, n_neurons=40, sequences=True, counts=counts)
    return path


def _runs(path: Path, chunked: bool) -> Runs:
    store = open_store(path)
    base, aligned = store.open_run("base"), store.open_run("aligned")
    if chunked:
        return base.chunk({"layer": 2}), aligned.chunk({"layer": 2})
    return base, aligned  # the store's own lazy (pinned, checked) arrays


def test_local_cluster_with_processes_matches_threads(run_path: Path) -> None:
    threaded = {name: f(_runs(run_path, True)) for name, f in ANALYSES.items()}
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        on_cluster = {}
        for name, f in ANALYSES.items():
            with distributed.get_task_stream(client) as stream:
                on_cluster[name] = f(_runs(run_path, True))
            assert stream.data, f"{name} ran nothing on the cluster"
        # the lazily opened store arrays travel to the worker processes too
        with distributed.get_task_stream(client) as stream:
            lazy = language_preference_tests(_runs(run_path, False)[0], method="cluster")
        assert stream.data
    for name in ANALYSES:
        xr.testing.assert_identical(threaded[name], on_cluster[name])
    xr.testing.assert_identical(threaded["language_preference_tests"], lazy)
