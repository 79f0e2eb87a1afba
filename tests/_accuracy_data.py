"""Shared builders of the accuracy tests."""

from __future__ import annotations

import numpy as np
import xarray as xr


def accuracy_ablation(correct: np.ndarray, base: np.ndarray, langs: list[str]) -> xr.Dataset:
    """An accuracy ablation: correct[panel, deactivated, variant, item], items per language."""
    n_items = correct.shape[-1] // len(langs)
    return xr.Dataset(
        {
            "correct": (("panel", "deactivated", "variant", "item"), correct),
            "baseline_correct": (("item",), base),
            "n_neurons": (
                ("panel", "deactivated", "variant"),
                np.full(correct.shape[:3], 3, np.int64),
            ),
        },
        coords={
            "panel": ["specific"],
            "deactivated": langs,
            "variant": np.arange(correct.shape[2]),
            "item_language": ("item", np.repeat(langs, n_items)),
        },
        attrs={"kind": "accuracy"},
    )
