"""``ds.neurons``: sugar over the analysis functions for run Datasets."""

from __future__ import annotations

from typing import Any

import xarray as xr

from langneurons.analysis.identify import Method, identify


@xr.register_dataset_accessor("neurons")
class NeuronsAccessor:
    """``run.neurons.identify(...)`` and ``run.neurons.probability(...)`` on a run Dataset."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    def identify(self, method: Method = "ternary", **kwargs: Any) -> xr.Dataset:
        """Same as :func:`langneurons.identify` on this run."""
        return identify(self._ds, method, **kwargs)

    def probability(self, role: str = "response") -> xr.DataArray:
        """Activation probability ``n_active / n_tokens`` of one role (lazy when dask-backed)."""
        if role == "all":
            return self._ds.n_active.sum("role") / self._ds.n_tokens.sum("role")
        return self._ds.n_active.sel(role=role) / self._ds.n_tokens.sel(role=role)
