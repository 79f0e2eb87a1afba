"""``langneurons identify`` on a dense run: numpy from the store to the saved result, no xarray.

The command reads the counts into a PlainDataset, identifies in numpy and writes the result with
zarr directly; it must never import xarray, pandas, dask or scipy (half a second or more of the
process), and what it saves must be what the xarray path saves.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from langneurons.analysis import identify
from langneurons.store import ActivationStore, create_store, open_store

from .conftest import make_counts

HEAVY = ("xarray", "pandas", "dask", "scipy")
LANGS = ["en", "zh", "de", "fr"]


@pytest.fixture
def dense_store(tmp_path: Path) -> Path:
    path = tmp_path / "s.zarr"
    store = create_store(path)
    counts = make_counts(LANGS, layers=4, neurons=50, seed=3)
    store.create_run("m/base", n_layers=4, n_neurons=50, counts=counts)
    return path


def _imported(stderr: str) -> set[str]:
    """Top-level packages named by ``python -X importtime``."""
    out = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            out.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return out


@pytest.mark.parametrize(
    "options",
    [
        ["--lambda", "0.05"],
        ["--method", "lape", "--top-rate", "0.1"],
        ["--lambda", "auto", "--role", "all", "--bar", "0.9"],
    ],
)
def test_identify_command_saves_the_xarray_result_without_importing_xarray(
    dense_store: Path, options: list[str]
) -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "langneurons", "identify", str(dense_store),
         "--run", "m/base", "--name", "fast", *options],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "saved at m/base/identification/fast" in proc.stdout
    heavy = _imported(proc.stderr) & set(HEAVY)
    assert not heavy, f"langneurons identify imported {sorted(heavy)}"

    store = open_store(dense_store, mode="r+")
    run = store.open_run("m/base")
    kwargs: dict[str, object] = {"method": "ternary"}
    for flag, value in zip(options[::2], options[1::2], strict=True):
        key = {"--lambda": "lam", "--method": "method", "--top-rate": "top_rate",
               "--role": "role", "--bar": "bar"}[flag]  # fmt: skip
        kwargs[key] = value if key in ("method", "role") or value == "auto" else float(value)
    expected = identify(run, **kwargs)  # type: ignore[arg-type]
    fast = _assert_saved_as(store, expected)
    np.testing.assert_array_equal(fast["mask"].values, expected["mask"].values)


def _assert_saved_as(store: ActivationStore, expected: xr.Dataset) -> xr.Dataset:
    """Save ``expected`` (the API's result) as "slow" beside the command's "fast" one and
    check both read back identical (but for the save's own stamps); the command's, loaded."""
    store.save_result("m/base", "identification", "slow", expected)
    fast = store.open_result("m/base", "identification", "fast").load()
    slow = store.open_result("m/base", "identification", "slow").load()
    for ds in (fast, slow):
        for key in ("result_name", "result_saved", "result_token"):
            ds.attrs.pop(key, None)
    xr.testing.assert_identical(fast, slow)
    return fast


def test_identify_command_headline_is_printed(dense_store: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "langneurons", "identify", str(dense_store), "--run", "m/base",
         "--lambda", "0.05", "--no-save"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "not saved (--no-save)" in proc.stdout
    assert "neurons selected" in proc.stdout and "language" in proc.stdout
    for lang in LANGS:
        assert f"  {lang} " in proc.stdout


def test_identify_command_on_a_moe_run_saves_the_xarray_result(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mixture-of-experts run: its counts and routed tokens read as numpy, identified through
    the MoE rule; what is saved is what identify(open_run(...)) saves."""
    from ._moe_data import make_moe_counts
    from .conftest import run_cli

    path = tmp_path / "moe.zarr"
    store = create_store(path)
    counts = make_moe_counts(["en", "de", "fr"], layers=2, sequences=4, seed=5)
    store.create_run(
        "m/base", n_layers=2, n_neurons=counts.moe.n_neurons, moe=counts.moe, counts=counts,
        sequences=True,
    )  # fmt: skip
    code, out, err = run_cli(
        capsys, "identify", path, "--run", "m/base", "--method", "lape", "--rank", "expert",
        "--name", "fast",
    )  # fmt: skip
    assert code == 0, err
    assert "(rank expert)" in out
    store = open_store(path, mode="r+")
    _assert_saved_as(store, identify(store.open_run("m/base"), "lape", rank="expert"))
