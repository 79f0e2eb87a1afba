"""Render what a store holds as a report: HTML, Markdown, CSV tables, figures and sources.

:func:`write_report` reads runs and their saved results (identification, stats, compare,
ablation) and writes, into one folder:

- ``report.html``: self-contained (CSS inline, figures as base64 PNG, no external resources);
- ``report.md``: the same content in Markdown, figures linked from ``figures/``;
- ``tables/*.csv``: every table of the report;
- ``figures/*.svg`` and ``figures/*.png``: every figure;
- ``report.qmd`` (Quarto) and ``report.ipynb`` (Jupyter): sources that rebuild the same
  figures from the store through the public API (``langneurons.open_store`` and
  :mod:`langneurons.reports.figures`), parameterised by the store path.

Each figure is described once, as a call of a :mod:`~langneurons.reports.figures` function on
results loaded from the store; the report executes that call and the sources print it, so
both draw the same thing. Results are recognised by the variables they hold (a registry, see
``_KINDS``), not by their names.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import datetime as _dt
import html
import json
import logging
import math
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import xarray as xr

from langneurons.errors import LangneuronsError, ParameterError, RunNotFoundError
from langneurons.reports import figures
from langneurons.store import ActivationStore, open_store

log = logging.getLogger(__name__)

#: File that marks a folder as a langneurons report (only such folders are replaced).
MARKER: Final = ".langneurons-report"
#: Dimensions whose variables are distributions or per-neuron arrays, never tabulated.
SKIP_DIMS: Final = frozenset({"replicate", "permutation", "control", "neuron", "sequence"})
_MAX_ROWS: Final = 500  # longest 1-D table
_MAX_CELLS: Final = 5000  # largest 2-D table
_COUNT_ATTRS: Final = ("per_language", "per_layer", "appear", "shared_by_n")
_RESULT_KINDS: Final = ("stats", "compare", "ablation")


# --------------------------------------------------------------------------- figure calls


@dataclasses.dataclass(frozen=True)
class _Load:
    """A saved result, loaded with ``store.open_result``."""

    run: str
    kind: str
    name: str


@dataclasses.dataclass(frozen=True)
class _Call:
    """A call of a :mod:`figures` function; arguments may hold :class:`_Load` references."""

    func: str
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = ()

    def code(self) -> str:
        """The call as Python source, with ``store`` and ``figures`` in scope."""
        parts = [_code(a) for a in self.args] + [f"{k}={_code(v)}" for k, v in self.kwargs]
        one_line = f"figures.{self.func}({', '.join(parts)})"
        if len(one_line) <= 96:
            return one_line
        inner = "".join(f"    {p},\n" for p in parts)
        return f"figures.{self.func}(\n{inner})"


def _code(value: Any) -> str:
    """Python source of a call argument."""
    if isinstance(value, _Load):
        return f"store.open_result({value.run!r}, {value.kind!r}, {value.name!r})"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_code(v) for v in value) + "]"
    if value is None or isinstance(value, (str, int, float, bool)):
        return repr(value)
    raise TypeError(f"cannot write {type(value).__name__} as a figure argument")


class _Loader:
    """Open saved results once each."""

    def __init__(self, store: ActivationStore) -> None:
        self.store = store
        self._cache: dict[_Load, xr.Dataset] = {}

    def __call__(self, ref: _Load) -> xr.Dataset:
        if ref not in self._cache:
            self._cache[ref] = self.store.open_result(ref.run, ref.kind, ref.name)
        return self._cache[ref]

    def resolve(self, value: Any) -> Any:
        """A call argument with every reference replaced by its Dataset."""
        if isinstance(value, _Load):
            return self(value)
        if isinstance(value, (list, tuple)):
            return [self.resolve(v) for v in value]
        return value


# --------------------------------------------------------------------------- report model


@dataclasses.dataclass
class _Para:
    text: str


@dataclasses.dataclass
class _Pre:
    text: str


@dataclasses.dataclass
class _Table:
    slug: str
    title: str
    columns: list[str]
    rows: list[list[Any]]


@dataclasses.dataclass
class _Fig:
    slug: str
    title: str
    call: _Call
    png: bytes | None = None
    error: str | None = None


_Block = _Para | _Pre | _Table | _Fig


@dataclasses.dataclass
class _Section:
    anchor: str
    title: str
    level: int
    blocks: list[_Block] = dataclasses.field(default_factory=list)


class _Slugs:
    """Unique file-name-safe slugs."""

    def __init__(self) -> None:
        self._used: set[str] = set()

    def __call__(self, *parts: str) -> str:
        base = re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")[:90] or "item"
        slug, i = base, 2
        while slug in self._used:
            slug, i = f"{base}-{i}", i + 1
        self._used.add(slug)
        return slug


# --------------------------------------------------------------------------- value formatting


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as Python values (for JSON and cells)."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _units_summary(units: list[str]) -> str:
    """``"12: en/0 ... zh/3"`` for the unit keys of a folded write-log entry."""
    if not units:
        return ""
    if len(units) <= 3:
        return f"{len(units)}: " + ", ".join(units)
    return f"{len(units)}: {units[0]} ... {units[-1]}"


def _json(value: Any, indent: int | None = None) -> str:
    """Compact (or indented) JSON of attributes; NaN written as NaN."""
    seps = (", ", ": ") if indent is None else (",", ": ")
    return json.dumps(_plain(value), indent=indent, separators=seps, sort_keys=False, default=str)


def _cell(value: Any) -> str:
    """A value as table text."""
    value = _plain(value)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.6g}"
    if isinstance(value, str):
        return value
    return _json(value)


def _csv_cell(value: Any) -> str:
    """A value for CSV: full precision floats, JSON for nested values."""
    value = _plain(value)
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else repr(value)
    if isinstance(value, (list, dict)):
        return _json(value)
    return _cell(value)


def _is_number(value: Any) -> bool:
    value = _plain(value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --------------------------------------------------------------------------- result kinds


@dataclasses.dataclass(frozen=True)
class _Context:
    """What a figure builder knows: the result, where it is saved, the run's other results."""

    load: _Load
    ds: xr.Dataset
    identifications: dict[str, xr.Dataset]


FigureBuilder = Callable[[_Context], list[tuple[str, _Call]]]


@dataclasses.dataclass(frozen=True)
class _Kind:
    """A kind of result, recognised by its variables (and dimensions)."""

    label: str
    needs: tuple[str, ...]
    dims: tuple[str, ...] = ()
    figures: FigureBuilder | None = None

    def matches(self, ds: xr.Dataset) -> bool:
        return all(v in ds.variables for v in self.needs) and all(d in ds.dims for d in self.dims)


def _one(title: str, func: str) -> FigureBuilder:
    """A builder drawing ``figures.func(result)``."""
    return lambda ctx: [(title, _Call(func, (ctx.load,)))]


def _stage_figures(ctx: _Context) -> list[tuple[str, _Call]]:
    """Stages drawn over the layer-type counts of a saved identification with the same rule."""
    method = ctx.ds.attrs.get("method")
    for name, ident in ctx.identifications.items():
        if ident.attrs.get("method") == method:
            ref = _Load(ctx.load.run, "identification", name)
            call = _Call(
                "layer_types", ([ref],), (("labels", [f"{ref.run} · {name}"]), ("stages", ctx.load))
            )
            return [(f"Stages over the neuron types of identification {name}", call)]
    return []


_KINDS: Final[tuple[_Kind, ...]] = (
    _Kind(
        "stage boundaries (bootstrap_stages)", ("stage_label", "start", "end"), (), _stage_figures
    ),
    _Kind(
        "per-layer change of neuron types between two runs (type_change)",
        ("change", "change_low", "change_high"),
        ("layer", "type"),
        _one("Change of neuron types per layer", "type_change"),
    ),
    _Kind(
        "change of the shared-by-N histogram between two runs (shared_by_change)",
        ("base", "aligned", "change"),
        ("n_shared",),
        _one("Neurons shared by N languages, before and after", "shared_by"),
    ),
    _Kind(
        "overlap of two runs' neuron sets (overlap)",
        ("jaccard", "type_jaccard"),
        ("language", "set"),
        _one("Overlap of the neuron sets of the two runs", "overlap_matrix"),
    ),
    _Kind(
        "type transitions between two runs (transition_table)",
        ("count",),
        ("from_type", "to_type"),
        _one("Type transitions", "transitions"),
    ),
    _Kind(
        "chi-square comparison of type distributions (compare_type_distributions)",
        ("residual", "cramers_v"),
    ),
    _Kind("McNemar test of membership (mcnemar)", ("table", "n_a_only")),
    _Kind("Cochran's Q over checkpoints (cochran_q)", ("n_discordant", "proportion")),
    _Kind("counts over checkpoints (trajectories)", ("layer_types", "n_selected"), ("checkpoint",)),
    _Kind("spontaneous alignment (spontaneous_alignment)", ("trained", "difference")),
    _Kind(
        "deactivation effects (deactivation_effects)",
        ("damage", "dominance"),
        (),
        _one("Deactivation damage against random controls", "deactivation_heatmap"),
    ),
    _Kind(
        "deactivation experiment (ablation)",
        ("nll", "control_nll"),
        (),
        _one(
            "Perplexity change when each language's neurons are switched off",
            "deactivation_heatmap",
        ),
    ),
    _Kind(
        "per-neuron language preference tests (language_preference_tests)",
        ("q", "significant"),
        (),
        _one("p and q values", "qvalues"),
    ),
    _Kind(
        "FDR-significant neurons against an identification (compare_with_identification)",
        ("n_significant", "n_rule"),
    ),
    _Kind(
        "stability of the identification (bootstrap_identification)",
        ("selection_frequency", "jaccard"),
        (),
        _one("Identification stability", "stability"),
    ),
    _Kind(
        "activation probabilities with intervals (activation_probability)", ("p", "lower", "upper")
    ),
)


def _kind_of(ds: xr.Dataset) -> _Kind | None:
    """The first registered kind whose variables the result holds."""
    return next((k for k in _KINDS if k.matches(ds)), None)


# --------------------------------------------------------------------------- tables


def _variable_tables(
    ds: xr.Dataset, slugs: _Slugs, prefix: str, title: str
) -> tuple[list[_Table], list[str]]:
    """Tables of a result's small variables; and the names of those left out."""
    tables: list[_Table] = []
    omitted: list[str] = []
    scalars: list[list[Any]] = []
    by_dim: dict[str, list[str]] = {}
    two_d: dict[tuple[str, str], list[str]] = {}
    index = set(ds.indexes)
    candidates = list(ds.data_vars) + [c for c in ds.coords if c not in index]
    for name in candidates:
        var = ds[name]
        dims = [str(d) for d in var.dims]
        if var.ndim == 0:
            scalars.append([str(name), var.values.item()])
        elif SKIP_DIMS & set(dims) or var.ndim > 2:
            omitted.append(f"{name}[{', '.join(dims)}]")
        elif var.ndim == 1 and var.size <= _MAX_ROWS:
            by_dim.setdefault(dims[0], []).append(str(name))
        elif var.ndim == 2 and var.size <= _MAX_CELLS:
            two_d.setdefault((dims[0], dims[1]), []).append(str(name))
        else:
            omitted.append(f"{name}[{', '.join(dims)}]")
    if scalars:
        tables.append(
            _Table(slugs(prefix, "scalars"), f"{title}: scalars", ["variable", "value"], scalars)
        )
    for dim, names in by_dim.items():
        coord = _coord(ds, dim)
        columns = {n: np.asarray(ds[n].values).tolist() for n in names}
        rows = [[c] + [columns[n][i] for n in names] for i, c in enumerate(coord)]
        tables.append(_Table(slugs(prefix, "by", dim), f"{title}: by {dim}", [dim, *names], rows))
    for (d0, d1), names in two_d.items():
        c0, c1 = _coord(ds, d0), _coord(ds, d1)
        if len(names) == 1:  # one variable: a matrix, rows d0 and columns d1
            values = np.asarray(ds[names[0]].transpose(d0, d1).values)
            rows = [[c] + values[i].tolist() for i, c in enumerate(c0)]
            header = [f"{d0} \\ {d1}", *[str(c) for c in c1]]
            label = f"{title}: {names[0]}[{d0}, {d1}]"
            tables.append(_Table(slugs(prefix, names[0]), label, header, rows))
            continue
        arrays = [np.asarray(ds[n].transpose(d0, d1).values) for n in names]
        rows = [
            [a, b] + [arr[i, j] for arr in arrays]
            for i, a in enumerate(c0)
            for j, b in enumerate(c1)
        ]
        label = f"{title}: by {d0} and {d1}"
        tables.append(_Table(slugs(prefix, "by", d0, d1), label, [d0, d1, *names], rows))
    return tables, omitted


def _coord(ds: xr.Dataset, dim: str) -> list[Any]:
    """A dimension's labels (positions when it has no coordinate)."""
    if dim in ds.coords:
        return [_plain(x) for x in np.asarray(ds[dim].values).tolist()]
    return list(range(ds.sizes[dim]))


def _attrs_table(
    attrs: Mapping[str, Any], slug: str, title: str, skip: Sequence[str] = ()
) -> _Table:
    """Parameters and other attributes, one row each."""
    rows = [[str(k), v] for k, v in attrs.items() if k not in skip]
    return _Table(slug, title, ["attribute", "value"], rows)


# --------------------------------------------------------------------------- building


class _Builder:
    """Collect the sections of a report (data and figure calls; nothing drawn yet)."""

    def __init__(self, store: ActivationStore, runs: list[str], location: str) -> None:
        self.store = store
        self.runs = runs
        self.location = location
        self.slugs = _Slugs()  # tables
        self.fig_slugs = _Slugs()
        self.anchors = _Slugs()
        self.sections: list[_Section] = []
        self.info = store.info()
        self.loader = _Loader(store)

    def section(self, title: str, level: int) -> _Section:
        sec = _Section(self.anchors("sec", title), title, level)
        self.sections.append(sec)
        return sec

    def figure(self, sec: _Section, title: str, call: _Call) -> None:
        sec.blocks.append(_Fig(self.fig_slugs(sec.title, call.func), title, call))

    def build(self) -> list[_Section]:
        self.overview()
        for run in self.runs:
            self.run(run)
        self.across_runs()
        return self.sections

    # ---------------------------------------------------------------- overview
    def overview(self) -> None:
        from langneurons import __version__

        sec = self.section("Overview", 2)
        sec.blocks.append(
            _Para(
                f"Store {self.location} (schema version {self.info['schema_version']}), "
                f"{len(self.runs)} run(s) reported; written by langneurons {__version__}."
            )
        )
        rows = []
        for run in self.runs:
            entry = self.info["runs"][run]
            results = "; ".join(
                f"{kind}: {', '.join(names)}" for kind, names in entry.get("results", {}).items()
            )
            attrs = entry["attrs"]
            rows.append(
                [
                    run,
                    attrs.get("model", ""),
                    attrs.get("revision", ""),
                    entry["layers"],
                    entry["neurons"],
                    ", ".join(entry["languages"]),
                    results or "none",
                ]
            )
        columns = ["run", "model", "revision", "layers", "neurons", "languages", "results"]
        sec.blocks.append(_Table(self.slugs("runs"), "Runs", columns, rows))

    # ---------------------------------------------------------------- one run
    def run(self, run: str) -> None:
        entry = self.info["runs"][run]
        meta = self.store.run_metadata(run)
        attrs = entry["attrs"]
        self.section(f"Run {run}", 2)
        prov = self.section(f"{run}: provenance", 3)
        rows: list[list[Any]] = [
            ["model", meta.model],
            ["revision", meta.revision],
            ["hook point", meta.hook_point],
            ["activation", meta.activation],
            ["dtype", meta.dtype],
            ["corpus", meta.corpus],
            ["corpus hash", meta.corpus_hash],
            ["tool version", meta.tool_version],
            ["created", meta.created],
            ["updated", attrs.get("updated", "")],
            ["schema version", meta.schema_version],
            ["layers x neurons", f"{entry['layers']} x {entry['neurons']}"],
            ["languages", ", ".join(entry["languages"])],
            ["sequences", entry.get("sequences", "none")],
            ["optional arrays", ", ".join(entry["optional"]) or "none"],
        ]
        prov.blocks.append(
            _Table(self.slugs(run, "provenance"), "Run attributes", ["attribute", "value"], rows)
        )
        prov.blocks.append(_Para("Provenance:"))
        prov.blocks.append(_Pre(_json(dict(meta.provenance), indent=2)))
        writes = attrs.get("writes") or []
        if writes:
            wrows = [
                [
                    i + 1,
                    w.get("time", ""),
                    w.get("action", ""),
                    ", ".join(map(str, w.get("languages", []))),
                    w.get("sequences", ""),
                    _json(w.get("provenance", {})),
                    _units_summary(w.get("units", [])),
                ]
                for i, w in enumerate(writes)
            ]
            columns = ["#", "time", "action", "languages", "sequences", "provenance", "units"]
            prov.blocks.append(_Table(self.slugs(run, "writes"), "Writes", columns, wrows))
        tokens = self.section(f"{run}: token totals", 3)
        trows = []
        totals = {"prompt": 0, "response": 0}
        for lang, per_role in entry["n_tokens"].items():
            p, r = int(per_role.get("prompt", 0)), int(per_role.get("response", 0))
            totals["prompt"] += p
            totals["response"] += r
            trows.append([lang, p, r, p + r])
        trows.append(["all", totals["prompt"], totals["response"], sum(totals.values())])
        tokens.blocks.append(
            _Table(
                self.slugs(run, "tokens"),
                "Counted tokens per language and role",
                ["language", "prompt", "response", "total"],
                trows,
            )
        )
        identifications = {
            name: self.loader(_Load(run, "identification", name))
            for name in self.store.results(run, "identification")
        }
        for name, ident in identifications.items():
            self.identification(run, name, ident)
        for kind in _RESULT_KINDS:
            for name in self.store.results(run, kind):
                self.result(_Load(run, kind, name), identifications)

    def _stages(self, run: str) -> dict[str, _Load]:
        """Saved stages results of a run, by identification rule (the first of each)."""
        out: dict[str, _Load] = {}
        for name in self.store.results(run, "stats"):
            ref = _Load(run, "stats", name)
            ds = self.loader(ref)
            if "stage_label" in ds and "start" in ds:
                out.setdefault(str(ds.attrs.get("method", "")), ref)
        return out

    def identification(self, run: str, name: str, ds: xr.Dataset) -> None:
        sec = self.section(f"{run}: identification {name}", 3)
        attrs = ds.attrs
        ref = _Load(run, "identification", name)
        sec.blocks.append(
            _Para(
                f"Method {attrs.get('method', '?')}: {attrs.get('n_selected', '?')} neurons "
                f"selected, tau {_cell(attrs.get('tau'))}"
                + (f", lambda {_cell(attrs['lambda'])}" if "lambda" in attrs else "")
                + f". Saved at {run}/identification/{name}."
            )
        )
        sec.blocks.append(
            _attrs_table(
                attrs,
                self.slugs(run, "identification", name, "parameters"),
                "Parameters",
                _COUNT_ATTRS,
            )
        )
        per_lang = attrs.get("per_language") or {}
        if per_lang:
            rows = [
                [lang, c.get("specific"), c.get("related"), c.get("mask")]
                for lang, c in per_lang.items()
            ]
            sec.blocks.append(
                _Table(
                    self.slugs(run, "identification", name, "per-language"),
                    "Per language",
                    ["language", "specific", "related", "mask"],
                    rows,
                )
            )
        per_layer = attrs.get("per_layer") or {}
        if per_layer:
            types = list(per_layer)
            n_layers = len(next(iter(per_layer.values())))
            layers = _coord(ds, "layer") if "layer" in ds.dims else list(range(n_layers))
            rows = [[layers[i]] + [per_layer[t][i] for t in types] for i in range(n_layers)]
            rows.append(["all"] + [sum(per_layer[t]) for t in types])
            sec.blocks.append(
                _Table(
                    self.slugs(run, "identification", name, "per-layer"),
                    "Per layer",
                    ["layer", *types],
                    rows,
                )
            )
        for key, label, column in (
            ("appear", "Selected neurons by number of assigned languages (appear)", "m"),
            ("shared_by_n", "All neurons by number of languages above tau (shared-by-N)", "N"),
        ):
            hist = attrs.get(key)
            if isinstance(hist, Sequence) and not isinstance(hist, str):
                rows = [[i, c] for i, c in enumerate(hist)]
                sec.blocks.append(
                    _Table(
                        self.slugs(run, "identification", name, key),
                        label,
                        [column, "neurons"],
                        rows,
                    )
                )
        # stages are drawn over these counts in the stages result's own section
        call = _Call("layer_types", ([ref],), (("labels", [f"{run} · {name}"]),))
        self.figure(sec, "Neuron types per layer", call)
        self.figure(sec, "Specific and related neurons per language", _Call("per_language", (ref,)))
        if "mask" in ds:
            self.figure(sec, "Overlap of the languages' masks", _Call("overlap_matrix", (ref,)))
        if "shared_by_n" in attrs:
            self.figure(
                sec,
                "Neurons shared by N languages",
                _Call("shared_by", ([ref],), (("labels", [run]),)),
            )

    def result(self, ref: _Load, identifications: dict[str, xr.Dataset]) -> None:
        ds = self.loader(ref)
        kind = _kind_of(ds)
        sec = self.section(f"{ref.run}: {ref.kind} {ref.name}", 3)
        label = kind.label if kind else "a result langneurons does not recognise"
        sec.blocks.append(_Para(f"Saved at {ref.run}/{ref.kind}/{ref.name}: {label}."))
        prefix = f"{ref.run}-{ref.kind}-{ref.name}"
        if ds.attrs:
            sec.blocks.append(_attrs_table(ds.attrs, self.slugs(prefix, "attrs"), "Attributes"))
        tables, omitted = _variable_tables(ds, self.slugs, prefix, "Variables")
        sec.blocks.extend(tables)
        if omitted:
            sec.blocks.append(
                _Para(
                    "Not tabulated (per neuron, per replicate or too large; read them with "
                    f"store.open_result): {', '.join(omitted)}."
                )
            )
        if kind is not None and kind.figures is not None:
            for title, call in kind.figures(_Context(ref, ds, identifications)):
                self.figure(sec, title, call)

    # ---------------------------------------------------------------- across runs
    def across_runs(self) -> None:
        if len(self.runs) < 2:
            return
        names: dict[str, list[str]] = {}
        for run in self.runs:
            for name in self.store.results(run, "identification"):
                names.setdefault(name, []).append(run)
        groups = {name: runs for name, runs in names.items() if len(runs) >= 2}
        if not groups:
            return
        self.section("Across runs", 2)
        for name, runs in groups.items():
            refs = [_Load(run, "identification", name) for run in runs]
            loaded = [self.loader(r) for r in refs]
            first = loaded[0]
            same = [
                r
                for r, ds in zip(refs, loaded, strict=True)
                if ds.sizes.get("layer") == first.sizes.get("layer")
                and ds.sizes.get("neuron") == first.sizes.get("neuron")
                and sorted(ds.attrs.get("languages", []))
                == sorted(first.attrs.get("languages", []))
            ]
            sec = self.section(f"Identification {name} across runs", 3)
            rows = []
            for r, ds in zip(refs, loaded, strict=True):
                per_layer = ds.attrs.get("per_layer", {})
                rows.append(
                    [
                        r.run,
                        ds.attrs.get("method"),
                        ds.attrs.get("n_selected"),
                        ds.attrs.get("tau"),
                        ds.attrs.get("lambda"),
                        *[sum(per_layer.get(t, [])) for t in figures.TYPE_COLORS if t != "none"],
                    ]
                )
            columns = ["run", "method", "selected", "tau", "lambda", "specific", "related"]
            columns += ["general", "unassigned"]
            sec.blocks.append(_Table(self.slugs("across", name), "Totals", columns, rows))
            if len(same) < 2:
                sec.blocks.append(_Para("The runs differ in shape or languages; no joint figures."))
                continue
            if len(same) < len(refs):
                left = ", ".join(r.run for r in refs if r not in same)
                sec.blocks.append(_Para(f"Left out of the joint figures (other shape): {left}."))
            labels = [r.run for r in same]
            stage_refs = [
                self._stages(r.run).get(str(self.loader(r).attrs.get("method"))) for r in same
            ]
            kwargs: list[tuple[str, Any]] = [("labels", labels)]
            if any(s is not None for s in stage_refs):
                kwargs.append(("stages", stage_refs))
            self.figure(
                sec,
                f"Neuron types per layer ({name})",
                _Call("layer_types", (same,), tuple(kwargs)),
            )
            self.figure(
                sec,
                f"Overlap of the selected neurons between runs ({name})",
                _Call("overlap_matrix", (same,), (("labels", labels),)),
            )
            self.figure(
                sec,
                f"Neurons shared by N languages ({name})",
                _Call("shared_by", (same,), (("labels", labels),)),
            )


# --------------------------------------------------------------------------- drawing


def _draw(sections: list[_Section], loader: _Loader, folder: Path) -> None:
    """Execute every figure call; save SVG and PNG; keep the PNG bytes for the HTML."""
    for sec in sections:
        for block in sec.blocks:
            if not isinstance(block, _Fig):
                continue
            call = block.call
            try:
                args = [loader.resolve(a) for a in call.args]
                kwargs = {k: loader.resolve(v) for k, v in call.kwargs}
                fig = getattr(figures, call.func)(*args, **kwargs)
            except (LangneuronsError, KeyError, ValueError) as exc:  # a result it cannot draw
                log.warning("figure %s could not be drawn: %s", block.slug, exc)
                block.error = str(exc)
                continue
            paths = figures.save(fig, folder / block.slug, ("svg", "png"))
            block.png = paths[1].read_bytes()


# --------------------------------------------------------------------------- rendering

_CSS: Final = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
margin:0;color:#1b1b1b;background:#fff;line-height:1.45}
header,main,footer{max-width:1100px;margin:0 auto;padding:0 1.5rem}
header{padding-top:1.5rem;border-bottom:1px solid #ddd}
h1{font-size:1.6rem;margin:.2rem 0 .6rem}h2{font-size:1.3rem;margin-top:2.2rem;
border-bottom:2px solid #0072B2;padding-bottom:.2rem}h3{font-size:1.08rem;margin-top:1.6rem}
nav ul{columns:2;font-size:.88rem;padding-left:1.2rem}nav li.l3{margin-left:1rem}
a{color:#0072B2}
.table-wrap{overflow-x:auto;margin:.6rem 0 1rem}
table{border-collapse:collapse;font-size:.82rem;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:600;padding:.2rem 0}
th,td{border:1px solid #d6d6d6;padding:.18rem .5rem;vertical-align:top;text-align:left;
max-width:38rem;overflow-wrap:anywhere}
th{background:#f3f3f3}td.num{text-align:right}
.file{color:#666;font-size:.75rem;margin:.1rem 0 0}
pre{background:#f6f6f6;padding:.6rem;overflow-x:auto;font-size:.78rem}
figure{margin:1rem 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85rem;color:#444}
.note{color:#8a3b00}
footer{color:#666;font-size:.8rem;padding:2rem 1.5rem}
"""


def _html(sections: list[_Section], title: str, subtitle: str) -> str:
    esc = html.escape
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<header>",
        f"<h1>{esc(title)}</h1>",
        f"<p>{esc(subtitle)}</p>",
        "<nav><ul>",
    ]
    for sec in sections:
        out.append(
            f'<li class="l{sec.level}"><a href="#{esc(sec.anchor)}">{esc(sec.title)}</a></li>'
        )
    out += ["</ul></nav>", "</header>", "<main>"]
    for sec in sections:
        out.append(f'<section id="{esc(sec.anchor)}">')
        out.append(f"<h{sec.level}>{esc(sec.title)}</h{sec.level}>")
        for block in sec.blocks:
            out.append(_html_block(block))
        out.append("</section>")
    out += [
        "</main>",
        f"<footer>{esc(subtitle)}. Rebuild the figures with report.qmd or report.ipynb; "
        "tables are in tables/, figures in figures/.</footer>",
        "</body>",
        "</html>",
    ]
    return "\n".join(out) + "\n"


def _html_block(block: _Block) -> str:
    esc = html.escape
    if isinstance(block, _Para):
        return f"<p>{esc(block.text)}</p>"
    if isinstance(block, _Pre):
        return f"<pre>{esc(block.text)}</pre>"
    if isinstance(block, _Table):
        head = "".join(f"<th>{esc(c)}</th>" for c in block.columns)
        body = []
        for row in block.rows:
            cells = "".join(
                f'<td class="num">{esc(_cell(v))}</td>'
                if _is_number(v)
                else f"<td>{esc(_cell(v))}</td>"
                for v in row
            )
            body.append(f"<tr>{cells}</tr>")
        return (
            f'<div class="table-wrap" id="tab-{esc(block.slug)}"><table>'
            f"<caption>{esc(block.title)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>"
            f'<p class="file">tables/{esc(block.slug)}.csv</p></div>'
        )
    if block.png is None:
        reason = block.error or "not drawn"
        return f'<p class="note">Figure “{esc(block.title)}” could not be drawn: {esc(reason)}</p>'
    data = base64.b64encode(block.png).decode("ascii")
    return (
        f'<figure id="fig-{esc(block.slug)}"><img src="data:image/png;base64,{data}" '
        f'alt="{esc(block.title)}"><figcaption>{esc(block.title)} '
        f'<span class="file">(figures/{esc(block.slug)}.svg, .png)</span></figcaption></figure>'
    )


def _md_text(text: str) -> str:
    """Text for Markdown, with markup characters shown as they are."""
    return html.escape(text, quote=False)


def _md_cell(value: Any) -> str:
    text = _md_text(_cell(value)).replace("\\", "\\\\")
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown(sections: list[_Section], title: str, subtitle: str) -> str:
    out = [f"# {title}", "", subtitle, ""]
    for sec in sections:
        out += ["#" * sec.level + " " + sec.title, ""]
        for block in sec.blocks:
            if isinstance(block, _Para):
                out += [_md_text(block.text), ""]
            elif isinstance(block, _Pre):
                out += ["```json", block.text, "```", ""]
            elif isinstance(block, _Table):
                out += [f"**{block.title}** (`tables/{block.slug}.csv`)", ""]
                out.append("| " + " | ".join(_md_cell(c) for c in block.columns) + " |")
                out.append(
                    "|" + "|".join("---:" if _is_number(v) else "---" for v in _align(block)) + "|"
                )
                out += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in block.rows]
                out.append("")
            elif block.png is not None:
                out += [
                    f"![{block.title}](figures/{block.slug}.png)",
                    "",
                    f"*{block.title}* ([SVG](figures/{block.slug}.svg))",
                    "",
                ]
            else:
                out += [f"> Figure “{block.title}” could not be drawn: {block.error}", ""]
    return "\n".join(out) + "\n"


def _align(table: _Table) -> list[Any]:
    """A sample value per column (the first row's) to choose the alignment."""
    first = table.rows[0] if table.rows else []
    return [first[i] if i < len(first) else "" for i in range(len(table.columns))]


def _write_csv(table: _Table, folder: Path) -> None:
    with open(folder / f"{table.slug}.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([str(c) for c in table.columns])
        writer.writerows([[_csv_cell(v) for v in row] for row in table.rows])


# --------------------------------------------------------------------------- sources

_SETUP: Final = """\
%matplotlib inline
import langneurons
from langneurons.reports import figures

store = langneurons.open_store(STORE)"""


@dataclasses.dataclass(frozen=True)
class _Cell:
    """A cell of the sources: markdown, or code (``label``: "parameters", "setup" or a slug)."""

    kind: str
    source: str
    label: str = ""
    caption: str = ""


def _source_cells(sections: list[_Section], location: str) -> list[_Cell]:
    """The cells of the sources: parameters, setup, then headings and one cell per figure."""
    cells = [
        _Cell("code", f"STORE = {location!r}", "parameters"),
        _Cell("code", _SETUP, "setup"),
    ]
    parent: _Section | None = None  # a level-2 heading, written before its first figure
    for sec in sections:
        if sec.level <= 2:
            parent = sec
        drawn = [b for b in sec.blocks if isinstance(b, _Fig) and b.png is not None]
        if not drawn:
            continue
        if parent is not None and parent is not sec:
            cells.append(_Cell("markdown", "#" * parent.level + " " + parent.title))
        parent = None
        cells.append(_Cell("markdown", "#" * sec.level + " " + sec.title))
        for block in drawn:
            cells.append(_Cell("code", block.call.code(), block.slug, block.title))
    return cells


def _notebook(cells: list[_Cell], title: str) -> dict[str, Any]:
    """An nbformat 4.5 notebook (written without the nbformat package)."""
    out = [
        {
            "cell_type": "markdown",
            "id": "title",
            "metadata": {},
            "source": f"# {title}\n\nRebuilds the report's figures from the store. Set `STORE` "
            "in the next cell (tagged `parameters`, for papermill) to point elsewhere.",
        }
    ]
    for i, c in enumerate(cells):
        cell: dict[str, Any] = {
            "cell_type": c.kind,
            "id": f"cell-{i}",
            "metadata": {"tags": ["parameters"]} if c.label == "parameters" else {},
            "source": c.source,
        }
        if c.kind == "code":
            cell.update(execution_count=None, outputs=[])
        out.append(cell)
    return {
        "cells": out,
        "metadata": {
            "kernelspec": {
                "display_name": "Python 3 (ipykernel)",
                "language": "python",
                "name": "python3",
            },
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def _qmd(cells: list[_Cell], title: str, location: str) -> str:
    """A Quarto document; ``params`` and the parameters cell hold the store path."""
    out = [
        "---",
        f"title: {json.dumps(title)}",
        "format:",
        "  html:",
        "    embed-resources: true",
        "    toc: true",
        "jupyter: python3",
        "params:",
        f"  STORE: {json.dumps(location)}",
        "---",
        "",
        "Rebuilds the report's figures from the store: "
        "`quarto render report.qmd -P STORE:/path/to/store.zarr`.",
        "",
    ]
    for c in cells:
        if c.kind == "markdown":
            out += [c.source, ""]
            continue
        out.append("```{python}")
        if c.label == "parameters":
            out.append("#| tags: [parameters]")
        elif c.label != "setup":
            out += [f"#| label: fig-{c.label}", f"#| fig-cap: {json.dumps(c.caption)}"]
        out += [c.source, "```", ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- public API


def _location(store: ActivationStore) -> str:
    """The store's URL, absolute for local paths (the sources reopen it from anywhere)."""
    url = store.url
    if url.startswith("file://"):
        return str(Path(url[len("file://") :]).resolve())
    if "://" in url:
        return url
    return str(Path(url).resolve())


def _check_out_dir(out: Path) -> None:
    """Refuse a file, or a non-empty folder that is not an earlier report."""
    if out.exists() and not out.is_dir():
        raise ParameterError(f"out_dir {str(out)!r} is a file; give a folder path for the report")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
        raise ParameterError(
            f"out_dir {str(out)!r} is a non-empty folder that is not a langneurons report; "
            "choose a new folder or empty it"
        )


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished report into place (an earlier report is replaced)."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def write_report(
    store: ActivationStore | str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    runs: Sequence[str] | None = None,
    *,
    title: str | None = None,
) -> Path:
    """Write a report of a store's runs and saved results; return the HTML path.

    For every run (or those given): its provenance (model, revision, hook point, activation,
    dtype, corpus and hash, tool version, creation time, provenance and every write), token
    totals per language and role, every saved identification with its parameters and count
    tables (per language, per layer, appear, shared-by-N) and figures, and every saved stats,
    compare and ablation result (its attributes, tables of its small variables, and the
    figure that fits its kind). With two or more runs, identifications of the same name are
    also compared across runs.

    The report is assembled in a temporary folder next to ``out_dir`` and moved into place
    when complete, so a failure leaves nothing half-written. An existing ``out_dir`` is
    replaced only when it is empty or an earlier report.

    Parameters
    ----------
    store : ActivationStore, str or path
        An open store, or its path/URL (opened read-only).
    out_dir : str or path
        Folder to write: ``report.html`` (self-contained), ``report.md``, ``tables/*.csv``,
        ``figures/*.svg`` and ``*.png``, ``report.qmd`` and ``report.ipynb``.
    runs : sequence of str, optional
        Runs to report (default: all).
    title : str, optional
        Report title (default: "langneurons report").

    Returns
    -------
    pathlib.Path
        The path of ``report.html``.

    Raises
    ------
    ParameterError
        The store holds no runs, ``runs`` is empty, or ``out_dir`` is a file or a non-empty
        folder that is not a report.
    RunNotFoundError
        A run in ``runs`` is not in the store.
    """
    opened = store if isinstance(store, ActivationStore) else open_store(store, mode="r")
    available = opened.runs()
    if not available:
        raise ParameterError(
            f"store {opened.url!r} holds no runs; import or extract one first "
            "(`langneurons import ...`)"
        )
    if runs is None:
        chosen = available
    else:
        if isinstance(runs, str):
            runs = [runs]
        chosen = list(dict.fromkeys(str(r) for r in runs))
        if not chosen:
            raise ParameterError("runs is empty; give at least one run or None for all")
        missing = [r for r in chosen if r not in available]
        if missing:
            raise RunNotFoundError(
                f"run {missing[0]!r} is not in store {opened.url!r} (runs: "
                f"{', '.join(available)}); list them with `langneurons info STORE`"
            )
    out = Path(out_dir)
    _check_out_dir(out)
    location = _location(opened)
    title = title or "langneurons report"
    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    from langneurons import __version__

    subtitle = f"Store {location}; written {now} by langneurons {__version__}"
    builder = _Builder(opened, chosen, location)
    sections = builder.build()

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the report is an ordinary folder
        (tmp / "figures").mkdir()
        (tmp / "tables").mkdir()
        _draw(sections, builder.loader, tmp / "figures")
        for sec in sections:
            for block in sec.blocks:
                if isinstance(block, _Table):
                    _write_csv(block, tmp / "tables")
        (tmp / "report.html").write_text(_html(sections, title, subtitle), encoding="utf-8")
        (tmp / "report.md").write_text(_markdown(sections, title, subtitle), encoding="utf-8")
        cells = _source_cells(sections, location)
        (tmp / "report.qmd").write_text(_qmd(cells, title, location), encoding="utf-8")
        notebook = _notebook(cells, title)
        (tmp / "report.ipynb").write_text(json.dumps(notebook, indent=1) + "\n", encoding="utf-8")
        marker = {"store": location, "runs": chosen, "written": now, "langneurons": __version__}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("report of %d run(s) written to %s", len(chosen), out)
    return out / "report.html"


__all__ = ["write_report"]
