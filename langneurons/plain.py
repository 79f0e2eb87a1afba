"""A Dataset's content as plain numpy arrays, for the paths that must start fast (ground floor).

Importing xarray costs about half a second (it brings pandas, and Dask's array module on the
first Variable it builds). The command line's ``identify`` has no use for labelled arithmetic:
it reads two count arrays, runs numpy kernels and writes the result. :class:`PlainDataset`
carries exactly what an :class:`xarray.Dataset` of numpy-backed variables would (dims, values,
attributes, coordinates) so that the store can read and write it and the analysis can compute
on it without importing xarray; :meth:`PlainDataset.to_xarray` gives the very Dataset the xarray
path builds, and :meth:`PlainDataset.from_xarray` takes one back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import xarray as xr


@dataclass(frozen=True)
class PlainVariable:
    """One variable: its dimension names, its numpy values and its attributes."""

    dims: tuple[str, ...]
    data: np.ndarray
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.data, np.ndarray):
            raise TypeError(f"data must be a numpy array, got {type(self.data).__name__}")
        if len(self.dims) != self.data.ndim:
            raise ValueError(
                f"{len(self.dims)} dims {self.dims} for an array of {self.data.ndim} dimensions"
            )

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.data.dtype

    @property
    def values(self) -> np.ndarray:
        return self.data


@dataclass(frozen=True)
class PlainDataset:
    """Data variables and coordinates (name -> :class:`PlainVariable`) and attributes.

    The sizes of a dimension must agree across variables, as in xarray. Coordinates are keyed
    by name; a dimension coordinate has its dimension's name and that one dimension.
    """

    data_vars: Mapping[str, PlainVariable]
    coords: Mapping[str, PlainVariable] = field(default_factory=dict)
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        sizes: dict[str, int] = {}
        for name, var in (*self.coords.items(), *self.data_vars.items()):
            for dim, n in zip(var.dims, var.data.shape, strict=True):
                if sizes.setdefault(dim, n) != n:
                    raise ValueError(
                        f"dimension {dim!r} has size {sizes[dim]} elsewhere but {n} in {name!r}"
                    )
        overlap = set(self.coords) & set(self.data_vars)
        if overlap:
            raise ValueError(f"{sorted(overlap)} are both coordinates and data variables")

    @property
    def sizes(self) -> dict[str, int]:
        """Dimension name -> size, in order of first appearance (coordinates first)."""
        out: dict[str, int] = {}
        for var in (*self.coords.values(), *self.data_vars.values()):
            for dim, n in zip(var.dims, var.data.shape, strict=True):
                out.setdefault(dim, n)
        return out

    @property
    def dims(self) -> dict[str, int]:
        return self.sizes

    def __contains__(self, name: object) -> bool:
        return name in self.data_vars or name in self.coords

    def __getitem__(self, name: str) -> PlainVariable:
        if name in self.data_vars:
            return self.data_vars[name]
        if name in self.coords:
            return self.coords[name]
        raise KeyError(name)

    def to_xarray(self) -> xr.Dataset:
        """The same content as an :class:`xarray.Dataset` (the arrays are not copied)."""
        import xarray as xr

        def spec(var: PlainVariable) -> tuple[tuple[str, ...], np.ndarray, dict[str, Any]]:
            return (var.dims, var.data, dict(var.attrs))

        return xr.Dataset(
            {name: spec(var) for name, var in self.data_vars.items()},
            coords={name: spec(var) for name, var in self.coords.items()},
            attrs=dict(self.attrs),
        )

    @classmethod
    def from_xarray(cls, ds: xr.Dataset) -> PlainDataset:
        """A Dataset's content (lazy variables are read)."""

        def plain(var: Any) -> PlainVariable:
            return PlainVariable(tuple(var.dims), np.asarray(var.values), dict(var.attrs))

        return cls(
            {str(name): plain(var) for name, var in ds.data_vars.items()},
            {str(name): plain(var) for name, var in ds.coords.items()},
            dict(ds.attrs),
        )


__all__ = ["PlainDataset", "PlainVariable"]
