"""Analyses run unchanged on a Dask distributed cluster (processes), matching the threads."""

from __future__ import annotations

from pathlib import Path

import pytest
import xarray as xr

distributed = pytest.importorskip("distributed")

from langneurons.analysis import (  # noqa: E402
    bootstrap_identification,
    identify,
    language_preference_tests,
)
from langneurons.store import create_store, open_store  # noqa: E402

from .conftest import make_counts  # noqa: E402


@pytest.fixture(scope="module")
def run_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("dist") / "s.zarr"
    counts = make_counts(["en", "de", "fr", "zh"], layers=6, neurons=40, sequences=12, seed=4)
    create_store(path).create_run("r", n_layers=6, n_neurons=40, sequences=True, counts=counts)
    return path


def test_local_cluster_with_processes_matches_threads(run_path: Path) -> None:
    threaded_run = open_store(run_path).open_run("r").chunk({"layer": 2})
    threaded = identify(threaded_run, "ternary", top_rate=0.05, lam_range=(0.0, 2.0))
    boot = bootstrap_identification(
        threaded_run, "ternary", n_boot=8, seed=3, top_rate=0.05, lam_range=(0.0, 2.0)
    )
    tests = language_preference_tests(threaded_run, method="cluster")
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        run = open_store(run_path).open_run("r").chunk({"layer": 2})
        on_cluster = identify(run, "ternary", top_rate=0.05, lam_range=(0.0, 2.0))
        boot_cluster = bootstrap_identification(
            run, "ternary", n_boot=8, seed=3, top_rate=0.05, lam_range=(0.0, 2.0)
        )
        tests_cluster = language_preference_tests(run, method="cluster")
        # the store's own lazy (pinned, checked) arrays travel to the worker processes too
        lazy = language_preference_tests(open_store(run_path).open_run("r"), method="cluster")
    xr.testing.assert_identical(threaded, on_cluster)
    xr.testing.assert_identical(boot, boot_cluster)
    xr.testing.assert_identical(tests, tests_cluster)
    xr.testing.assert_identical(tests, lazy)
