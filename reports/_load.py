"""Open a report's results once each: saved ones from the store, derived ones through
:mod:`~langneurons.reports.derived` (the only place a report calls an analysis function)."""

from __future__ import annotations

from typing import Any

import xarray as xr

from langneurons.reports._blocks import Derive, Load
from langneurons.reports.derived import DERIVATIONS
from langneurons.store import ActivationStore


class Loader:
    """Saved and derived results, each opened or derived once and kept."""

    def __init__(self, store: ActivationStore) -> None:
        self.store = store
        self._cache: dict[Load, xr.Dataset] = {}
        self._derived: dict[str, Any] = {}  # by source code: arguments may hold lists

    def __call__(self, ref: Load) -> xr.Dataset:
        """A saved result."""
        if ref not in self._cache:
            self._cache[ref] = self.store.open_result(ref.run, ref.kind, ref.name)
        return self._cache[ref]

    def derived(self, ref: Derive) -> Any:
        """A derived result: ``DERIVATIONS[ref.func]`` of the resolved arguments, once."""
        key = ref.code()
        if key not in self._derived:
            func = DERIVATIONS[ref.func]
            args = [self.resolve(a) for a in ref.args]
            kwargs = {k: self.resolve(v) for k, v in ref.kwargs}
            self._derived[key] = func(*args, **kwargs)
        return self._derived[key]

    def resolve(self, value: Any) -> Any:
        """A call argument with every load and derivation replaced by its result."""
        if isinstance(value, Load):
            return self(value)
        if isinstance(value, Derive):
            return self.derived(value)
        if isinstance(value, (list, tuple)):
            return [self.resolve(v) for v in value]
        return value


__all__ = ["Loader"]
