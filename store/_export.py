"""What every export format shares: its optional dependency, a staged output, labels, comparison.

An export is assembled in a temporary folder next to its destination (named as
:mod:`~langneurons.store._leftovers` names such things, so a killed export is cleaned up by the
next one) and renamed into place only once it has been written, read back and compared with the
store: a failed export leaves nothing behind, and a destination that exists is never touched.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import xarray as xr
from numpy.typing import NDArray

from langneurons._fs import apply_umask
from langneurons.errors import MissingDependencyError, StoreValidationError
from langneurons.store import _leftovers

#: Elements compared at a time when an export is checked against the store (bounded memory).
COMPARE_BLOCK = 4 << 20


def require(module: str, fmt: str) -> ModuleType:
    """Import ``module`` for the export format ``fmt``, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"export --format {fmt} needs the Python package {module.split('.')[0]!r}; install "
            "it with pip install 'langneurons[share]'"
        ) from exc


@contextlib.contextmanager
def staged(dest: Path, op: str) -> Iterator[Path]:
    """A fresh folder next to ``dest`` to build the export in, renamed to ``dest`` on success.

    On any error the folder is removed and ``dest`` is left as it was (not created).
    """
    _leftovers.check_new(dest, op)
    made = [p for p in reversed(dest.parents) if not p.exists()]  # folders this export makes
    dest.parent.mkdir(parents=True, exist_ok=True)
    _leftovers.clean_next_to(dest, op)
    tmp = Path(
        tempfile.mkdtemp(prefix=_leftovers.tmp_prefix(dest, op), suffix=".tmp", dir=dest.parent)
    )
    done = False
    try:
        yield tmp
        for path in [tmp, *tmp.rglob("*")]:
            apply_umask(path)  # mkdtemp makes it private; an export is an ordinary folder
        _leftovers.check_new(dest, op)  # made meanwhile by someone else: theirs stays
        os.rename(tmp, dest)
        done = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not done:
            for folder in reversed(made):  # ours, and only while still empty
                with contextlib.suppress(OSError):
                    folder.rmdir()


def run_file(folder: Path, run: str, suffix: str) -> Path:
    """The file of ``run`` (a checked run path, ``a/b``) under ``folder``: ``folder/a/b.SUFFIX``."""
    path = folder.joinpath(*run.split("/")).with_name(run.split("/")[-1] + suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def labels(var: xr.DataArray | xr.Variable) -> NDArray[np.str_]:
    """A variable's labels as numpy unicode: strings of any dtype, or integer codes that carry
    CF ``flag_values`` / ``flag_meanings`` attributes (decoded to their meanings)."""
    values = np.asarray(var.values)
    attrs = var.attrs
    if values.dtype.kind in "iu" and "flag_meanings" in attrs:
        meanings = str(attrs["flag_meanings"]).split()
        codes = np.asarray(attrs.get("flag_values", np.arange(len(meanings))))
        if len(codes) != len(meanings):
            raise StoreValidationError(
                f"variable {getattr(var, 'name', '')!r}: {len(codes)} flag_values but "
                f"{len(meanings)} flag_meanings"
            )
        table = dict(zip(codes.tolist(), meanings, strict=True))
        unknown = set(np.unique(values).tolist()) - set(table)
        if unknown:
            raise StoreValidationError(
                f"variable {getattr(var, 'name', '')!r} holds codes {sorted(unknown)} that "
                "flag_values does not name"
            )
        lookup = np.array([table[c] for c in sorted(table)], dtype=str)
        return lookup[np.searchsorted(sorted(table), values)]
    if values.dtype.kind == "U":
        return values
    if values.dtype.kind == "S":
        return np.strings.decode(values, "utf-8")
    items = [x.decode() if isinstance(x, bytes) else str(x) for x in values.ravel().tolist()]
    return np.array(items, dtype=np.str_).reshape(values.shape)


def blocks(shape: tuple[int, ...]) -> Iterator[tuple[slice, ...]]:
    """Index tuples cutting an array of ``shape`` along its first axis into bounded blocks."""
    if not shape:
        yield ()
        return
    per_row = max(1, int(np.prod(shape[1:], dtype=np.int64)))
    step = max(1, COMPARE_BLOCK // per_row)
    for start in range(0, shape[0], step):
        yield (slice(start, min(start + step, shape[0])),)


def same_values(a: Any, b: Any) -> bool:
    """Whether two blocks hold the same values (strings compared as text, NaN equal to NaN)."""
    x, y = np.asarray(a), np.asarray(b)
    if x.shape != y.shape:
        return False
    if x.dtype.kind in "USOT" or y.dtype.kind in "USOT":
        return bool(np.array_equal(_text(x), _text(y)))
    if x.dtype.kind == "f" or y.dtype.kind == "f":
        return bool(np.array_equal(x, y, equal_nan=True))
    return bool(np.array_equal(x, y))


def _text(values: NDArray[Any]) -> NDArray[np.str_]:
    if values.dtype.kind == "U":
        return values
    items = [v.decode() if isinstance(v, bytes) else str(v) for v in values.ravel().tolist()]
    return np.array(items, dtype=np.str_).reshape(values.shape)


def compare(expected: xr.Dataset, found: xr.Dataset, where: str) -> None:
    """Raise StoreValidationError unless ``found`` holds every variable of ``expected`` with the
    same dims, dtype kind and values (read block by block)."""
    for name, var in expected.variables.items():
        if name not in found.variables:
            raise StoreValidationError(
                f"{where}: variable {name!r} is missing from what was written"
            )
        got = found.variables[name]
        if tuple(got.dims) != tuple(var.dims) or got.shape != var.shape:
            raise StoreValidationError(
                f"{where}: variable {name!r} was written as {got.dims} {got.shape}, not "
                f"{var.dims} {var.shape}"
            )
        kinds = {var.dtype.kind, got.dtype.kind}
        if not (kinds <= set("USOT") or var.dtype == got.dtype):
            raise StoreValidationError(
                f"{where}: variable {name!r} was written as {got.dtype}, not {var.dtype}"
            )
        for index in blocks(var.shape):
            if not same_values(var[index].values, got[index].values):
                raise StoreValidationError(
                    f"{where}: variable {name!r} differs from the store at {index}; the written "
                    "copy is damaged (disk or library fault)"
                )
