"""Tables of saved results: their attributes and small variables, and the sources' key tables.

Rows are sorted deterministically (variables by name, attributes by key), so the same store
gives the same table bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import xarray as xr

from langneurons.names import NEURON, SEQUENCE
from langneurons.reports._blocks import Code, Load, Slugs, Table, plain
from langneurons.reports._kinds import Kind

#: Dimensions whose variables are distributions or per-neuron arrays, never tabulated.
SKIP_DIMS: Final = frozenset({"replicate", "permutation", "control", NEURON, SEQUENCE})
_MAX_ROWS: Final = 500  # longest 1-D table
_MAX_CELLS: Final = 5000  # largest 2-D table


def units_summary(units: list[str]) -> str:
    """``"12: en/0 ... zh/3"`` for the unit keys of a folded write-log entry."""
    if not units:
        return ""
    if len(units) <= 3:
        return f"{len(units)}: " + ", ".join(units)
    return f"{len(units)}: {units[0]} ... {units[-1]}"


def variable_tables(
    ds: xr.Dataset, slugs: Slugs, prefix: str, title: str
) -> tuple[list[Table], list[str]]:
    """Tables of a result's small variables (sorted by name); and the names of those left out."""
    tables: list[Table] = []
    omitted: list[str] = []
    scalars: list[list[Any]] = []
    by_dim: dict[str, list[str]] = {}
    two_d: dict[tuple[str, str], list[str]] = {}
    index = set(ds.indexes)
    candidates = sorted(str(n) for n in ds.data_vars) + sorted(
        str(c) for c in ds.coords if c not in index
    )
    for name in candidates:
        var = ds[name]
        dims = [str(d) for d in var.dims]
        if var.ndim == 0:
            scalars.append([name, var.values.item()])
        elif SKIP_DIMS & set(dims) or var.ndim > 2:
            omitted.append(f"{name}[{', '.join(dims)}]")
        elif var.ndim == 1 and var.size <= _MAX_ROWS:
            by_dim.setdefault(dims[0], []).append(name)
        elif var.ndim == 2 and var.size <= _MAX_CELLS:
            two_d.setdefault((dims[0], dims[1]), []).append(name)
        else:
            omitted.append(f"{name}[{', '.join(dims)}]")
    if scalars:
        tables.append(
            Table(slugs(prefix, "scalars"), f"{title}: scalars", ["variable", "value"], scalars)
        )
    for dim in sorted(by_dim):
        names = by_dim[dim]
        coord = coord_labels(ds, dim)
        columns = {n: plain(ds[n].values) for n in names}
        rows = [[c] + [columns[n][i] for n in names] for i, c in enumerate(coord)]
        tables.append(Table(slugs(prefix, "by", dim), f"{title}: by {dim}", [dim, *names], rows))
    for d0, d1 in sorted(two_d):
        names = two_d[(d0, d1)]
        c0, c1 = coord_labels(ds, d0), coord_labels(ds, d1)
        if len(names) == 1:  # one variable: a matrix, rows d0 and columns d1
            values = plain(ds[names[0]].transpose(d0, d1).values)
            rows = [[c] + values[i] for i, c in enumerate(c0)]
            header = [f"{d0} \\ {d1}", *[str(c) for c in c1]]
            label = f"{title}: {names[0]}[{d0}, {d1}]"
            tables.append(Table(slugs(prefix, names[0]), label, header, rows))
            continue
        arrays = [plain(ds[n].transpose(d0, d1).values) for n in names]
        rows = [
            [a, b] + [arr[i][j] for arr in arrays]
            for i, a in enumerate(c0)
            for j, b in enumerate(c1)
        ]
        label = f"{title}: by {d0} and {d1}"
        tables.append(Table(slugs(prefix, "by", d0, d1), label, [d0, d1, *names], rows))
    return tables, omitted


def coord_labels(ds: xr.Dataset, dim: str) -> list[Any]:
    """A dimension's labels (positions when it has no coordinate)."""
    if dim in ds.coords:
        return list(plain(ds[dim].values))
    return list(range(ds.sizes[dim]))


def attrs_table(attrs: Mapping[str, Any], slug: str, title: str, skip: Sequence[str] = ()) -> Table:
    """Parameters and other attributes, one row each, sorted by name."""
    rows = [[str(k), attrs[k]] for k in sorted(attrs, key=str) if k not in skip]
    return Table(slug, title, ["attribute", "value"], rows)


def key_codes(ref: Load, ds: xr.Dataset, kind: Kind | None) -> list[Code]:
    """Notebook cells that open a result and show its key table(s) as pandas objects."""
    opener = f"res = {ref.code()}"
    what = kind.label if kind else "a saved result"
    if kind is not None and kind.key_attr and isinstance(ds.attrs.get(kind.key_attr), Mapping):
        source = f"{opener}\npd.Series(res.attrs[{kind.key_attr!r}], name={kind.key_attr!r})"
        return [Code(source + ".to_frame()", f"{what}: {kind.key_attr}")]
    if kind is not None and kind.key_dims is not None:
        names = sorted(str(n) for n, v in ds.data_vars.items() if v.dims == kind.key_dims)
    elif kind is not None:
        names = [n for n in kind.key if n in ds.variables]
    else:
        names = []
    if not names:
        return [Code(f"{opener}\nres", what, "open")]
    groups: dict[tuple[str, ...], list[str]] = {}
    for n in names:
        groups.setdefault(tuple(str(d) for d in ds[n].dims), []).append(n)
    codes = []
    for i, (dims, group) in enumerate(groups.items()):
        head = f"{opener}\n" if i == 0 else ""
        if len(dims) == 2 and len(group) == 1:
            expr = f"res[{group[0]!r}].to_pandas()"
        elif len(dims) <= 1:
            expr = f"res[{group!r}].to_pandas()"
        else:
            expr = f"res[{group!r}].to_dataframe()"
        codes.append(Code(head + expr, f"{what}: {', '.join(group)}"))
    return codes


__all__ = [
    "SKIP_DIMS",
    "attrs_table",
    "coord_labels",
    "key_codes",
    "units_summary",
    "variable_tables",
]
