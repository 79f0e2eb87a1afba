"""Checks shared by the analysis modules, in one place.

Parameter checks (one-line :class:`~langneurons.errors.ParameterError` messages naming the
parameter, the value and what is allowed), the structural checks of runs and results
(:class:`~langneurons.errors.StoreValidationError` for a run that breaks the schema), string
labels whatever their dtype, and the one cleaner that makes values JSON-ready for ``attrs``.

The checks a run goes through before identification (:func:`require_variable`,
:func:`require_roles`, :func:`role_counts`, :func:`coordinate`) also take a
:class:`~langneurons.plain.PlainDataset`, and this module imports xarray only where it builds
xarray objects: ``langneurons.analysis.identify`` computes on numpy runs without importing it.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from langneurons._type_codes import as_type_labels
from langneurons.errors import ParameterError, StoreValidationError
from langneurons.names import (
    ALL_TYPES,
    EXPERT,
    LANGUAGE,
    LAYER,
    N_ACTIVE,
    N_TOKENS,
    NEURON,
    ROLE,
    ROLES,
)
from langneurons.plain import PlainDataset, PlainVariable

if TYPE_CHECKING:
    import xarray as xr
    from typing_extensions import TypeIs


def is_dataset(obj: object) -> TypeIs[xr.Dataset]:
    """True when ``obj`` is an :class:`xarray.Dataset`, without importing xarray (an object can
    only be one when xarray is imported already)."""
    xarray = sys.modules.get("xarray")
    return xarray is not None and isinstance(obj, xarray.Dataset)


def coordinate(ds: xr.Dataset | PlainDataset, dim: str) -> Any:
    """``ds[dim]`` for a Dataset; for a PlainDataset its coordinate variable, or ``0..n-1``
    (int64) where the dimension has no coordinate, as xarray gives then."""
    if isinstance(ds, PlainDataset):
        if dim in ds.coords:
            return ds.coords[dim]
        return np.arange(ds.sizes[dim], dtype=np.int64)
    return ds[dim]


def coordinate_values(ds: xr.Dataset | PlainDataset, dim: str) -> NDArray[Any]:
    """The values of :func:`coordinate` as a numpy array."""
    coord = coordinate(ds, dim)
    return np.asarray(getattr(coord, "values", coord))


def check_choice(name: str, value: object, allowed: Sequence[str]) -> str:
    """A string option among ``allowed``."""
    if not isinstance(value, str) or value not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        raise ParameterError(f"{name} must be one of {options}, got {value!r}")
    return value


def check_open_unit(name: str, value: object) -> float:
    """A level in the open interval (0, 1), such as ``ci`` or ``alpha``."""
    if isinstance(value, Real) and not isinstance(value, bool) and 0.0 < float(value) < 1.0:
        return float(value)
    raise ParameterError(f"{name} must be a number in (0, 1), got {value!r}")


def check_int(name: str, value: object, minimum: int) -> int:
    """An integer ``>= minimum`` (bools are not integers here)."""
    if isinstance(value, Integral) and not isinstance(value, bool) and int(value) >= minimum:
        return int(value)
    raise ParameterError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_n_boot(value: object) -> int:
    """Bootstrap replicates: 0 (none) or an integer >= 2 (one replicate has no spread, so its
    "interval" is a point that may not even hold the estimate)."""
    n = check_int("n_boot", value, 0)
    if n == 1:
        raise ParameterError(
            "n_boot must be 0 (no bootstrap) or an integer >= 2, got 1: one replicate gives no "
            "interval"
        )
    return n


def as_labels(values: object) -> NDArray[np.str_]:
    """String labels as numpy unicode (``<U``), whatever their dtype or backing.

    Labels arrive as ``<U`` from ``open_run``, as NumPy ``StringDType`` from plain
    ``xr.open_zarr``, as object arrays of str, or as bytes; dask-backed or in memory. Neuron
    types stored as integer codes with CF ``flag_values``/``flag_meanings`` attributes (a
    DataArray opened with plain xarray) are decoded to their meanings.
    """
    arr = as_type_labels(values)
    if arr.dtype.kind == "U":
        return arr
    if arr.dtype.kind == "T":  # StringDType casts to unicode only with an explicit width
        return arr.astype(f"U{max(1, int(np.strings.str_len(arr).max(initial=0)))}")
    if arr.dtype.kind == "S":
        return np.strings.decode(arr, "utf-8")
    items = [x.decode() if isinstance(x, bytes) else str(x) for x in arr.ravel().tolist()]
    return np.array(items, dtype=np.str_).reshape(arr.shape)


def check_seed(seed: object) -> int:
    """A random seed: an integer >= 0 (recorded with the result)."""
    return check_int("seed", seed, 0)


def check_dataset(obj: object, name: str, what: str = "an xarray.Dataset") -> xr.Dataset:
    """``obj`` when it is a Dataset, else a ParameterError naming the argument."""
    if not is_dataset(obj):
        raise ParameterError(f"{name} must be {what}, got {type(obj).__name__}")
    return obj


def require_variable(
    run: xr.Dataset | PlainDataset, name: str, dims: Sequence[str], kinds: str = "iuf"
) -> Any:
    """``run[name]`` after checking it exists with exactly these dims and a dtype in ``kinds``."""
    expected = f"{name}[{', '.join(dims)}]"
    if name not in run.data_vars:
        raise StoreValidationError(f"run has no variable {name!r}; expected {expected}")
    var = run[name]
    if EXPERT not in dims and set(var.dims) == set(dims) | {EXPERT}:
        raise ParameterError(
            f"{name} has an expert dimension: this is a mixture-of-experts run, which this "
            "analysis does not handle; `identify` and `stats experts` do (docs/design/moe.md)"
        )
    if set(var.dims) != set(dims):
        raise StoreValidationError(
            f"{name} has dims {tuple(var.dims)}, expected {expected}; the run breaks the schema"
        )
    if var.dtype.kind not in kinds:
        raise StoreValidationError(
            f"{name} has dtype {var.dtype}, expected integer counts; the run breaks the schema"
        )
    return var


def require_roles(run: xr.Dataset | PlainDataset, roles: Sequence[str]) -> list[str]:
    """The run's stored roles, after checking it has every one of ``roles`` (each once)."""
    stored = as_labels(coordinate(run, ROLE)).tolist()
    if len(set(stored)) != len(stored):
        raise StoreValidationError(
            f"run has a role twice (roles: {stored}); the run breaks the schema"
        )
    for r in roles:
        if r not in stored:
            raise StoreValidationError(
                f"run has no role {r!r} (roles: {stored}); the run breaks the schema"
            )
    return stored


def stored_roles(role: str) -> tuple[str, ...]:
    """The stored roles whose counts a ``role`` parameter reads (``"all"``: both, summed)."""
    return tuple(ROLES) if role == "all" else (role,)


def require_result(obj: object, name: str, variables: Sequence[str]) -> xr.Dataset:
    """``obj`` after checking it is an identification result with these variables."""
    what = "an identification result (the Dataset returned by identify())"
    if not is_dataset(obj):
        raise ParameterError(f"{name} must be {what}, got {type(obj).__name__}")
    missing = [v for v in variables if v not in obj.variables]
    if missing:
        raise ParameterError(f"{name} must be {what}; it lacks variables {missing}")
    return obj


def run_languages(run: xr.Dataset | PlainDataset) -> list[str]:
    """A run's language labels, in order, after checking each is a distinct, non-empty label
    (per-language results are keyed by them: a repeated one would merge two languages)."""
    languages = as_labels(coordinate(run, LANGUAGE)).tolist()
    seen: set[str] = set()
    for i, lang in enumerate(languages):
        if not lang.strip():
            raise ParameterError(
                f"language label {i} of the run is empty; give every language a name with "
                "run.assign_coords(language=[...])"
            )
        if lang in seen:
            raise ParameterError(
                f"language {lang!r} appears twice in the run's language labels; give each "
                "language its own label with run.assign_coords(language=[...]) (or drop one "
                "with run.isel(language=...))"
            )
        seen.add(lang)
    return languages


def languages_of(ds: xr.Dataset) -> list[str]:
    """Language labels of a run or result, in order (empty without a language coordinate)."""
    return as_labels(ds[LANGUAGE]).tolist() if LANGUAGE in ds.coords else []


def same_grid(a: xr.Dataset, b: xr.Dataset, names: tuple[str, str]) -> None:
    """ParameterError unless ``a`` and ``b`` have the same layer x neuron grid."""
    na, nb = names
    shape_a = (a.sizes.get(LAYER, 0), a.sizes.get(NEURON, 0))
    shape_b = (b.sizes.get(LAYER, 0), b.sizes.get(NEURON, 0))
    if shape_a != shape_b:
        raise ParameterError(
            f"{na} and {nb} must have the same layer x neuron shape; {na} has "
            f"{shape_a[0]} x {shape_a[1]}, {nb} has {shape_b[0]} x {shape_b[1]}"
        )
    for dim in (LAYER, NEURON):
        if dim in a.coords and dim in b.coords:
            if not np.array_equal(np.asarray(a[dim].values), np.asarray(b[dim].values)):
                raise ParameterError(
                    f"{na} and {nb} must cover the same {dim}s; their {dim} coordinates differ"
                )


def same_languages(a: xr.Dataset, b: xr.Dataset, names: tuple[str, str]) -> None:
    """ParameterError unless ``a`` and ``b`` hold the same set of languages."""
    la, lb = languages_of(a), languages_of(b)
    if set(la) != set(lb):
        only_a = [x for x in la if x not in lb]
        only_b = [x for x in lb if x not in la]
        raise ParameterError(
            f"{names[0]} and {names[1]} must have the same languages; only in {names[0]}: "
            f"{only_a}, only in {names[1]}: {only_b}"
        )


def check_runs(base: object, aligned: object) -> tuple[xr.Dataset, xr.Dataset]:
    """A (base, aligned) pair of runs: Datasets on one grid with the same languages."""
    b = check_dataset(base, "base_run", "an xarray.Dataset (a run)")
    a = check_dataset(aligned, "aligned_run", "an xarray.Dataset (a run)")
    same_grid(b, a, ("base_run", "aligned_run"))
    same_languages(b, a, ("base_run", "aligned_run"))
    return b, a


def check_types(types: object) -> tuple[str, ...]:
    """A non-empty sequence of distinct neuron-type names (of :data:`ALL_TYPES`)."""
    if isinstance(types, str) or not isinstance(types, Sequence) or not types:
        raise ParameterError(f"types must be a non-empty sequence of type names, got {types!r}")
    out = tuple(types)
    bad = [t for t in out if t not in ALL_TYPES]
    if bad or len(set(out)) != len(out):
        allowed = ", ".join(repr(t) for t in ALL_TYPES)
        raise ParameterError(f"types must be distinct names among {allowed}, got {list(out)!r}")
    return out


def jsonable(value: Any) -> Any:
    """``value`` with tuples as lists and numpy scalars as Python scalars (for ``attrs``)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


#: The end of every message about counts that break the schema.
CORRUPT = "the store is corrupt — run `langneurons validate`"


def check_counts(
    n_active: NDArray[Any], n_tokens: NDArray[Any], languages: list[str], role: str
) -> None:
    """Raise StoreValidationError for NaN, negative counts, or n_active above n_tokens."""

    def first_bad(bad: NDArray[np.bool_], what: str) -> None:
        if not bad.any():
            return
        per_language = bad.reshape(bad.shape[0], -1).sum(axis=1)
        i = int(np.flatnonzero(per_language)[0])
        n = int(per_language[i])
        raise StoreValidationError(
            f"{what} for language {languages[i]!r} role {role!r} "
            f"at {n} cell{'' if n == 1 else 's'}; {CORRUPT}"
        )

    # the common, valid case in one min and one max reduction per language, with no boolean
    # copies of the counts; the element-wise checks below only run to word an error
    if n_active.size and n_tokens.size:
        flat = n_active.reshape(n_active.shape[0], -1)
        if flat.dtype.kind == "i" and n_tokens.dtype.kind in "iu" and np.all(n_tokens >= 0):
            # one max per language: seen as unsigned, a negative count exceeds every total
            unsigned = flat.view(np.dtype(f"u{flat.dtype.itemsize}"))
            if bool(np.all(unsigned.max(axis=1) <= n_tokens.astype(np.uint64))):
                return
        else:
            low, high = flat.min(axis=1), flat.max(axis=1)
            with np.errstate(invalid="ignore"):
                fine = np.all(low >= 0) and np.all(high <= n_tokens) and np.all(n_tokens >= 0)
            if bool(fine):  # NaN anywhere makes a comparison False
                return
    if n_tokens.dtype.kind == "f":
        first_bad(np.isnan(n_tokens)[:, None], "n_tokens is NaN")
    first_bad((n_tokens < 0)[:, None], "n_tokens is negative")
    if n_active.dtype.kind == "f":
        first_bad(np.isnan(n_active), "n_active has NaN")
    first_bad(n_active < 0, "n_active is negative")
    first_bad(n_active > n_tokens[:, None, None], "n_active exceeds n_tokens")


def check_tokens(totals: NDArray[Any], languages: list[str], roles: tuple[str, ...]) -> None:
    """ParameterError when a language has no tokens for the role (its P is undefined)."""
    empty = np.flatnonzero(~(totals > 0))
    if empty.size:
        role = "all" if len(roles) > 1 else roles[0]
        raise ParameterError(
            f"n_tokens is 0 for language {languages[int(empty[0])]!r} with role={role!r}, so "
            "its activation probabilities are undefined; choose another role (--role), or "
            "drop the language (in Python: run.sel(language=[...]))"
        )


def checked_role_sums(
    run: xr.Dataset | PlainDataset, languages: list[str], roles: tuple[str, ...]
) -> tuple[NDArray[Any], NDArray[Any]]:
    """``n_active[language, layer, neuron]`` and ``n_tokens[language]`` summed over ``roles``
    (:func:`role_counts`), after checking each role's counts with :func:`check_counts`."""
    counts = role_counts(run, roles)
    for r, (active, tokens) in counts.items():
        check_counts(active, tokens, languages, r)
    n_active, n_tokens = counts[roles[0]]
    for r in roles[1:]:  # role="all": sum the additive counts of both roles
        n_active = n_active + counts[r][0]
        n_tokens = n_tokens + counts[r][1]
    return n_active, n_tokens


def role_counts(
    run: xr.Dataset | PlainDataset, roles: Sequence[str]
) -> dict[str, tuple[NDArray[Any], NDArray[Any]]]:
    """``n_active[language, layer, neuron]`` and ``n_tokens[language]`` of each role, as numpy.

    Without dask the roles are taken by position in the role index, no Dataset built: a
    numpy-backed run (or a PlainDataset) is only viewed, not copied, and a lazily opened one
    reads the chunks of the roles asked for alone. A dask-backed run is computed in one pass.
    The roles must have passed :func:`require_roles`.
    """
    if isinstance(run, PlainDataset):
        stored = as_labels(coordinate(run, ROLE)).tolist()
        return {
            r: (
                _at_role(run.data_vars[N_ACTIVE], stored.index(r), (LANGUAGE, LAYER, NEURON)),
                _at_role(run.data_vars[N_TOKENS], stored.index(r), (LANGUAGE,)),
            )
            for r in roles
        }
    import xarray as xr

    active, tokens = run.variables[N_ACTIVE], run.variables[N_TOKENS]
    where = run.indexes.get(ROLE)
    if active.chunks is None and tokens.chunks is None and where is not None and where.is_unique:
        out = {}
        for r in roles:
            at = {ROLE: where.get_loc(r)}
            a = active.isel(at).transpose(LANGUAGE, LAYER, NEURON).values
            out[r] = (a, tokens.isel(at).transpose(LANGUAGE).values)
        return out
    parts: dict[str, xr.DataArray] = {}
    for r in roles:
        parts[f"a_{r}"] = run[N_ACTIVE].sel({ROLE: r}, drop=True).transpose(LANGUAGE, LAYER, NEURON)
        parts[f"t_{r}"] = run[N_TOKENS].sel({ROLE: r}, drop=True)
    loaded = xr.Dataset(parts).compute()
    return {r: (loaded[f"a_{r}"].values, loaded[f"t_{r}"].values) for r in roles}


def _at_role(var: PlainVariable, at: int, dims: tuple[str, ...]) -> NDArray[Any]:
    """``var.isel(role=at).transpose(*dims).values`` of a plain variable (a view, no copy)."""
    axis = var.dims.index(ROLE)
    rest = [d for d in var.dims if d != ROLE]
    taken = var.data[(slice(None),) * axis + (at,)]
    return np.transpose(taken, [rest.index(d) for d in dims])
