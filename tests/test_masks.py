"""Both rules' results round-trip through the LAPE mask file format (torch.save of LongTensors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from langneurons.analysis import identify, masks_from_lists, masks_to_lists
from langneurons.store import create_store

from .conftest import make_counts

torch = pytest.importorskip("torch")

from langneurons.extract import load_mask, save_mask  # noqa: E402


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [("ternary", {"lam_range": (0.0, 2.0)}), ("ternary", {"lam": 0.3}), ("lape", {})],
)
def test_mask_file_round_trip(tmp_path: Path, method: str, kwargs: dict[str, object]) -> None:
    store = create_store(tmp_path / "s.zarr")
    counts = make_counts(["en", "de", "fr", "zh"], layers=4, neurons=50, seed=7)
    store.create_run("r", n_layers=4, n_neurons=50, counts=counts)
    run = store.open_run("r")
    result = identify(run, method, top_rate=0.1, bar=0.8, **kwargs)  # type: ignore[arg-type]
    path = save_mask(tmp_path / f"{method}.pt", masks_to_lists(result))

    raw = torch.load(path, weights_only=True)
    assert len(raw) == 4 and all(len(entry) == 4 for entry in raw)
    assert all(t.dtype == torch.int64 and t.ndim == 1 for entry in raw for t in entry)
    assert all(bool((t[1:] > t[:-1]).all()) for entry in raw for t in entry)

    back = masks_from_lists(load_mask(path), ["en", "de", "fr", "zh"], 4, 50)
    np.testing.assert_array_equal(back["mask"].values, result["mask"].values)
    assert int(back["mask"].sum()) == sum(v["mask"] for v in result.attrs["per_language"].values())
