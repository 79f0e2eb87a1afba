"""Render what a store holds as a report: HTML, Markdown, CSV tables, figures and sources.

:func:`write_report` reads runs and their saved results (identification, stats, compare,
ablation) and writes, into one folder:

- ``report.html``: self-contained (CSS inline, figures as base64 PNG, no external resources);
- ``report.md``: the same content in Markdown, figures linked from ``figures/``;
- ``tables/*.csv``: every table of the report;
- ``figures/*.svg`` and ``figures/*.png``: every figure;
- ``report.qmd`` (Quarto) and ``report.ipynb`` (Jupyter): places to continue from, which open
  the store, the runs and the saved results, show the key tables and rebuild the figures
  through the public API, parameterised by the store path.

The report leads with the answer: a summary per run and per comparison (headline numbers,
each marked inference or descriptive, and the key figures); parameters, provenance and full
tables follow as an appendix. Paths are written relative to the report folder, so the folder
can be moved and shared together with its store. Tables are sorted deterministically: the same
store gives the same table bytes.

Each figure is described once, as a call of a :mod:`~langneurons.reports.figures` function on
results loaded from the store; the report executes that call and the sources print it, so
both draw the same thing. Results are recognised by the variables they hold (a registry, see
``_KINDS``), not by their names.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import xarray as xr

from langneurons._progress import progress
from langneurons.errors import LangneuronsError, ParameterError, RunNotFoundError
from langneurons.reports import _summary as summ
from langneurons.reports import figures
from langneurons.reports._blocks import (
    Call,
    Code,
    Fig,
    Items,
    Load,
    Para,
    Pre,
    Ref,
    Section,
    Slugs,
    Table,
    json_text,
    plain,
)
from langneurons.reports._paths import PathView
from langneurons.reports._render import html_page, markdown, write_csv
from langneurons.reports._sources import notebook, qmd, source_cells
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

#: What each figure counts, for its caption.
_CAPTIONS: Final[Mapping[str, str]] = {
    "layer_types": (
        "Specific (1 language) and related (2..K-1 languages) neurons are counted among the "
        "rule's selected neurons, per layer (upper panels); general neurons (above tau in all K "
        "languages) are counted over all neurons (lower panels, own axis). Shaded bands and "
        "numbers: stages; bars at the top: bootstrap intervals of the stage boundaries."
    ),
    "per_language": (
        "Selected neurons assigned to each language (P > tau there), split into specific and "
        "related; black tick: the language's whole mask."
    ),
    "overlap_matrix": (
        "Jaccard index |A ∩ B| / |A ∪ B| of the neuron sets named on the axes; grey cells: "
        "both sets empty."
    ),
    "shared_by": "All neurons, by the number N of languages in which P > tau.",
    "type_change": (
        "Change in the number of neurons of each type, per layer and over all layers (second "
        "run minus first), with bootstrap percentile intervals from resampling sequences; "
        "specific, related, unassigned: of the selected neurons; general: of all neurons."
    ),
    "transitions": (
        "Every neuron's type in the first run (rows) and in the second (columns); cells: "
        "neurons, colour: fraction of the row. none: not selected by the rule; unassigned: "
        "selected, but above tau in no language."
    ),
    "deactivation_heatmap": (
        "Cells: perplexity change (%) on the evaluated language (columns) when the row "
        "language's neurons are switched off, and below it the mean over random sets of the "
        "same size in the same layers (ctrl). Right: own-language damage minus the mean damage "
        "on the other languages, against the same for each random set, with the control p-value."
    ),
    "stability": (
        "Left: neurons selected in at least one bootstrap replicate (sequences resampled within "
        "each language), by the fraction of replicates that selected them. Right: per language, "
        "the Jaccard index of each replicate's mask with the full-data mask."
    ),
    "qvalues": (
        "Left: p- and FDR q-values of all (neuron, language) tests; right: neurons significant "
        "for each language at the FDR level."
    ),
}


class _Loader:
    """Open saved results once each."""

    def __init__(self, store: ActivationStore) -> None:
        self.store = store
        self._cache: dict[Load, xr.Dataset] = {}

    def __call__(self, ref: Load) -> xr.Dataset:
        if ref not in self._cache:
            self._cache[ref] = self.store.open_result(ref.run, ref.kind, ref.name)
        return self._cache[ref]

    def resolve(self, value: Any) -> Any:
        """A call argument with every reference replaced by its Dataset."""
        if isinstance(value, Load):
            return self(value)
        if isinstance(value, (list, tuple)):
            return [self.resolve(v) for v in value]
        return value


def _units_summary(units: list[str]) -> str:
    """``"12: en/0 ... zh/3"`` for the unit keys of a folded write-log entry."""
    if not units:
        return ""
    if len(units) <= 3:
        return f"{len(units)}: " + ", ".join(units)
    return f"{len(units)}: {units[0]} ... {units[-1]}"


# --------------------------------------------------------------------------- result kinds


@dataclasses.dataclass(frozen=True)
class _Context:
    """What a figure builder knows: the result, where it is saved, the run's other results."""

    load: Load
    ds: xr.Dataset
    identifications: dict[str, xr.Dataset]
    pair: tuple[str, str] | None = None  # (first run, second run) of a comparison


FigureBuilder = Callable[[_Context], list[tuple[str, Call]]]


@dataclasses.dataclass(frozen=True)
class _Kind:
    """A kind of result, recognised by its variables (and dimensions).

    ``key`` names the variables of its key table in the sources (filtered to those present);
    ``key_dims`` picks every variable with exactly these dimensions instead; ``key_attr`` a
    mapping in the attributes (e.g. counts per language).
    """

    label: str
    needs: tuple[str, ...]
    dims: tuple[str, ...] = ()
    figures: FigureBuilder | None = None
    key: tuple[str, ...] = ()
    key_dims: tuple[str, ...] | None = None
    key_attr: str | None = None

    def matches(self, ds: xr.Dataset) -> bool:
        return all(v in ds.variables for v in self.needs) and all(d in ds.dims for d in self.dims)


def _one(title: str, func: str, *, labelled: bool = False) -> FigureBuilder:
    """A builder drawing ``figures.func(result)`` (with the two runs' names when ``labelled``)."""

    def build(ctx: _Context) -> list[tuple[str, Call]]:
        kwargs: tuple[tuple[str, Any], ...] = ()
        if labelled and ctx.pair is not None:
            kwargs = (("labels", list(ctx.pair)),)
        return [(title, Call(func, (ctx.load,), kwargs))]

    return build


def _stage_call(run: str, name: str, stages: Load) -> Call:
    """Stages drawn over the layer-type counts of identification ``name`` of ``run``."""
    ref = Load(run, "identification", name)
    return Call("layer_types", ([ref],), (("labels", [f"{run} · {name}"]), ("stages", stages)))


def _stage_figures(ctx: _Context) -> list[tuple[str, Call]]:
    """Stages drawn over the layer-type counts of a saved identification with the same rule."""
    method = ctx.ds.attrs.get("method")
    for name, ident in sorted(ctx.identifications.items()):
        if ident.attrs.get("method") == method:
            call = _stage_call(ctx.load.run, name, ctx.load)
            return [(f"Stages over the neuron types of identification {name}", call)]
    return []


_KINDS: Final[tuple[_Kind, ...]] = (
    _Kind(
        "stage boundaries (bootstrap_stages)",
        ("stage_label", "start", "end"),
        (),
        _stage_figures,
        key=("start", "end", "length", "start_low", "start_high", "start_mode_fraction"),
    ),
    _Kind(
        "per-layer change of neuron types between two runs (type_change)",
        ("change", "change_low", "change_high"),
        ("layer", "type"),
        _one("Change of neuron types per layer", "type_change", labelled=True),
        key=(
            "total_base",
            "total_aligned",
            "total_change",
            "total_change_low",
            "total_change_high",
        ),
    ),
    _Kind(
        "change of the shared-by-N histogram between two runs (shared_by_change)",
        ("base", "aligned", "change"),
        ("n_shared",),
        _one("Neurons shared by N languages, before and after", "shared_by", labelled=True),
        key=("base", "aligned", "change", "change_low", "change_high"),
    ),
    _Kind(
        "overlap of two runs' neuron sets (overlap)",
        ("jaccard", "type_jaccard"),
        ("language", "set"),
        _one("Overlap of the neuron sets of the two runs", "overlap_matrix"),
        key=("type_n_a", "type_n_b", "type_n_both", "type_jaccard"),
    ),
    _Kind(
        "type transitions between two runs (transition_table)",
        ("count",),
        ("from_type", "to_type"),
        _one("Type transitions", "transitions", labelled=True),
        key=("count",),
    ),
    _Kind(
        "chi-square comparison of type distributions (compare_type_distributions)",
        ("residual", "cramers_v"),
        key=("statistic", "dof", "pvalue", "cramers_v", "n"),
    ),
    _Kind(
        "McNemar test of membership (mcnemar)",
        ("table", "n_a_only"),
        key=("statistic", "pvalue", "n_a_only", "n_b_only", "n_both", "n_neither"),
    ),
    _Kind("Cochran's Q over checkpoints (cochran_q)", ("n_discordant", "proportion")),
    _Kind("counts over checkpoints (trajectories)", ("layer_types", "n_selected"), ("checkpoint",)),
    _Kind("spontaneous alignment (spontaneous_alignment)", ("trained", "difference")),
    _Kind(
        "deactivation effects (deactivation_effects)",
        ("damage", "dominance"),
        (),
        _one("Deactivation damage against random controls", "deactivation_heatmap"),
        key=("ppl_ratio",),
    ),
    _Kind(
        "deactivation experiment (ablation)",
        ("nll", "control_nll"),
        (),
        _one(
            "Perplexity change when each language's neurons are switched off",
            "deactivation_heatmap",
        ),
        key=("ppl",),
    ),
    _Kind(
        "per-neuron language preference tests (language_preference_tests)",
        ("q", "significant"),
        (),
        _one("p and q values", "qvalues"),
        key_attr="n_significant_per_language",
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
        key_dims=("language",),
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
        coord = _coord(ds, dim)
        columns = {n: plain(ds[n].values) for n in names}
        rows = [[c] + [columns[n][i] for n in names] for i, c in enumerate(coord)]
        tables.append(Table(slugs(prefix, "by", dim), f"{title}: by {dim}", [dim, *names], rows))
    for d0, d1 in sorted(two_d):
        names = two_d[(d0, d1)]
        c0, c1 = _coord(ds, d0), _coord(ds, d1)
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


def _coord(ds: xr.Dataset, dim: str) -> list[Any]:
    """A dimension's labels (positions when it has no coordinate)."""
    if dim in ds.coords:
        return list(plain(ds[dim].values))
    return list(range(ds.sizes[dim]))


def _attrs_table(
    attrs: Mapping[str, Any], slug: str, title: str, skip: Sequence[str] = ()
) -> Table:
    """Parameters and other attributes, one row each, sorted by name."""
    rows = [[str(k), attrs[k]] for k in sorted(attrs, key=str) if k not in skip]
    return Table(slug, title, ["attribute", "value"], rows)


def _key_codes(ref: Load, ds: xr.Dataset, kind: _Kind | None) -> list[Code]:
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


# --------------------------------------------------------------------------- building


def _compare_groups(store: ActivationStore, runs: list[str]) -> list[tuple[str, str, str | None]]:
    """Comparisons saved under the runs: (run, name prefix, the other run or None)."""
    out = []
    for run in runs:
        prefixes = sorted({name.split("/", 1)[0] for name in store.results(run, "compare")})
        for prefix in prefixes:
            out.append((run, prefix, _other_run(prefix, run, store.runs())))
    return out


def _other_run(prefix: str, run: str, available: list[str]) -> str | None:
    """The base run a compare prefix names (``vs-BASE``, slashes written as ``_``)."""
    if not prefix.startswith("vs-"):
        return None
    tag = prefix[3:]
    exact = [r for r in available if r != run and r.replace("/", "_") == tag]
    if exact:
        return exact[0]
    tail = [r for r in available if r != run and r.rsplit("/", 1)[-1] == tag]
    return tail[0] if len(tail) == 1 else None


class _Builder:
    """Collect the sections of a report (data and figure calls; nothing drawn yet)."""

    def __init__(self, store: ActivationStore, runs: list[str], store_shown: str) -> None:
        self.store = store
        self.runs = runs
        self.store_shown = store_shown
        self.slugs = Slugs()  # tables
        self.fig_slugs = Slugs()
        self.anchors = Slugs()
        self.sections: list[Section] = []
        self.info = store.info()
        self.loader = _Loader(store)
        self.placed: dict[str, Fig] = {}  # figure calls already in the report, by their code
        self.comparisons = _compare_groups(store, runs)

    def section(self, title: str, level: int, *, summary: bool = False) -> Section:
        sec = Section(self.anchors("sec", title), title, level, summary=summary)
        self.sections.append(sec)
        return sec

    def figure(self, sec: Section, title: str, call: Call) -> None:
        """A figure, or a pointer to it where the same call is already in the report."""
        code = call.code()
        if code in self.placed:
            sec.blocks.append(Ref(self.placed[code]))
            return
        caption = _CAPTIONS.get(call.func, "")
        fig = Fig(self.fig_slugs(sec.title, call.func), title, call, caption)
        self.placed[code] = fig
        sec.blocks.append(fig)

    def identifications(self, run: str) -> dict[str, xr.Dataset]:
        return {
            name: self.loader(Load(run, "identification", name))
            for name in self.store.results(run, "identification")
        }

    def build(self) -> list[Section]:
        self.summary()
        self.overview()
        for i, run in enumerate(self.runs):
            self.run(run, _letter(i + 1))
        self.across_runs(_letter(len(self.runs) + 1))
        return self.sections

    # ---------------------------------------------------------------- summary
    def summary(self) -> None:
        sec = self.section("Summary", 2, summary=True)
        sec.blocks.append(Para(summ.intro()))
        in_comparison = {r for run, _, other in self.comparisons for r in (run, other) if other}
        for run in self.runs:
            self.run_summary(run, show_types=run not in in_comparison)
        for run, prefix, other in self.comparisons:
            self.comparison_summary(run, prefix, other)

    def _stages(self, run: str) -> dict[str, Load]:
        """Saved stages results of a run, by identification rule (the first of each)."""
        out: dict[str, Load] = {}
        for name in self.store.results(run, "stats"):
            ref = Load(run, "stats", name)
            ds = self.loader(ref)
            if "stage_label" in ds and "start" in ds:
                out.setdefault(str(ds.attrs.get("method", "")), ref)
        return out

    def run_summary(self, run: str, *, show_types: bool) -> None:
        sec = self.section(f"Run {run}", 3, summary=True)
        lines: list[str] = []
        warnings: list[str] = []
        idents = self.identifications(run)
        for name, ident in idents.items():
            lines.append(summ.identification_line(name, ident))
            warning = summ.lambda_warning(ident.attrs)
            if warning:
                warnings.append(f"{run} · identification {name}: {warning}")
        figs: list[tuple[str, Call]] = []
        stages = self._stages(run)
        for name in self.store.results(run, "stats"):
            ref = Load(run, "stats", name)
            ds = self.loader(ref)
            kind = _kind_of(ds)
            label = kind.label if kind else ""
            if label.endswith("(bootstrap_stages)"):
                lines.append(summ.stages_line(ds))
            elif label.endswith("(bootstrap_identification)"):
                lines.append(summ.stability_line(ds))
            elif label.endswith("(language_preference_tests)"):
                lines.append(summ.tests_line(ds))
        if show_types and idents:
            name = _primary(idents, stages)
            method = str(idents[name].attrs.get("method", ""))
            if method in stages:
                call = _stage_call(run, name, stages[method])
            else:
                call = Call(
                    "layer_types",
                    ([Load(run, "identification", name)],),
                    (("labels", [f"{run} · {name}"]),),
                )
            figs.append((f"Neuron types per layer ({run} · {name})", call))
        for name in self.store.results(run, "ablation"):
            ref = Load(run, "ablation", name)
            ds = self.loader(ref)
            try:
                from langneurons.analysis.deactivation import deactivation_effects

                effects = ds if "damage" in ds else deactivation_effects(ds, n_perm=1000)
                lines.append(summ.deactivation_line(ds, effects))
            except (LangneuronsError, KeyError, ValueError) as exc:
                lines.append(f"Deactivation {name}: could not be summarised ({exc}).")
            figs.append(
                (
                    f"Deactivation: perplexity change ({run} · {name})",
                    Call("deactivation_heatmap", (ref,)),
                )
            )
        for text in warnings:
            sec.blocks.append(Para(text, "warning"))
        sec.blocks.append(Items(lines or ["No saved results: see the appendix."]))
        for title, call in figs:
            self.figure(sec, title, call)

    def comparison_summary(self, run: str, prefix: str, other: str | None) -> None:
        first = other or "the first run"
        sec = self.section(f"{run} vs {other or prefix}", 3, summary=True)
        lines: list[str] = []
        names = [n for n in self.store.results(run, "compare") if n.split("/", 1)[0] == prefix]
        results = {n: self.loader(Load(run, "compare", n)) for n in names}
        method = next(
            (str(ds.attrs["method"]) for ds in results.values() if "method" in ds.attrs), None
        )
        figs: list[tuple[str, Call]] = []
        if other is not None:
            a_idents, b_idents = self.identifications(other), self.identifications(run)
            common = [n for n in a_idents if n in b_idents]
            for name in common:
                lines.append(summ.totals_line(name, other, run, a_idents[name], b_idents[name]))
            chosen = [n for n in common if a_idents[n].attrs.get("method") == method] or common
            if chosen:
                pair = [r for r in self.runs if r in (other, run)]
                if len(pair) == 2:
                    call = self._across_call(chosen[0], pair)
                    figs.append((f"Neuron types per layer ({chosen[0]})", call))
        for name, ds in results.items():
            kind = _kind_of(ds)
            if kind is not None:
                lines += summ.lines_of(kind.label, ds)
                if kind.label.endswith("(type_change)"):
                    ref = Load(run, "compare", name)
                    kwargs = (("labels", [first, run]),) if other else ()
                    figs.append(
                        ("Change of neuron types per layer", Call("type_change", (ref,), kwargs))
                    )
        sec.blocks.append(Items(lines or ["No summary lines: see the appendix."]))
        for title, call in figs:
            self.figure(sec, title, call)

    def _across_call(self, name: str, runs: list[str]) -> Call:
        """Neuron types per layer of identification ``name`` in ``runs``, with their stages."""
        refs = [Load(r, "identification", name) for r in runs]
        stage_refs = [
            self._stages(r.run).get(str(self.loader(r).attrs.get("method"))) for r in refs
        ]
        kwargs: list[tuple[str, Any]] = [("labels", list(runs))]
        if any(s is not None for s in stage_refs):
            kwargs.append(("stages", stage_refs))
        return Call("layer_types", (refs,), tuple(kwargs))

    # ---------------------------------------------------------------- appendix
    def overview(self) -> None:
        from langneurons._version import __version__

        sec = self.section("Appendix A. Store and runs", 2)
        sec.blocks.append(
            Para(
                f"Store {self.store_shown} (schema version {self.info['schema_version']}), "
                f"{len(self.runs)} run(s) reported; written by langneurons {__version__}."
            )
        )
        rows = []
        for run in self.runs:
            entry = self.info["runs"][run]
            results = "; ".join(
                f"{kind}: {', '.join(sorted(names))}"
                for kind, names in sorted(entry.get("results", {}).items())
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
        sec.blocks.append(Table(self.slugs("runs"), "Runs", columns, rows))

    def run(self, run: str, letter: str) -> None:
        entry = self.info["runs"][run]
        meta = self.store.run_metadata(run)
        attrs = entry["attrs"]
        top = self.section(f"Appendix {letter}. Run {run}", 2)
        top.blocks.append(
            Code(
                f"run = store.open_run({run!r})\nrun",
                f"The run {run} (lazy xarray Dataset)",
                "open",
            )
        )
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
            ["optional arrays", ", ".join(sorted(entry["optional"])) or "none"],
        ]
        prov.blocks.append(
            Table(self.slugs(run, "provenance"), "Run attributes", ["attribute", "value"], rows)
        )
        prov.blocks.append(Para("Provenance:"))
        prov.blocks.append(Pre(json_text(dict(meta.provenance), indent=2)))
        writes = attrs.get("writes") or []
        if writes:
            wrows = [
                [
                    i + 1,
                    w.get("time", ""),
                    w.get("action", ""),
                    ", ".join(map(str, w.get("languages", []))),
                    w.get("sequences", ""),
                    json_text(w.get("provenance", {})),
                    _units_summary(w.get("units", [])),
                ]
                for i, w in enumerate(writes)
            ]
            columns = ["#", "time", "action", "languages", "sequences", "provenance", "units"]
            prov.blocks.append(Table(self.slugs(run, "writes"), "Writes", columns, wrows))
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
            Table(
                self.slugs(run, "tokens"),
                "Counted tokens per language and role",
                ["language", "prompt", "response", "total"],
                trows,
            )
        )
        identifications = self.identifications(run)
        for name, ident in identifications.items():
            self.identification(run, name, ident)
        for kind in _RESULT_KINDS:
            for name in self.store.results(run, kind):
                self.result(Load(run, kind, name), identifications)

    def identification(self, run: str, name: str, ds: xr.Dataset) -> None:
        sec = self.section(f"{run}: identification {name}", 3)
        attrs = ds.attrs
        ref = Load(run, "identification", name)
        sec.blocks.append(
            Para(
                f"Method {attrs.get('method', '?')}: {attrs.get('n_selected', '?')} neurons "
                f"selected, tau {summ.num(attrs.get('tau'), 6)}"
                + (f", lambda {summ.num(attrs['lambda'], 6)}" if "lambda" in attrs else "")
                + f". Saved at {run}/identification/{name}."
            )
        )
        warning = summ.lambda_warning(attrs)
        if warning:
            sec.blocks.append(Para(warning, "warning"))
        sec.blocks.append(
            Code(
                f"res = {ref.code()}\ntype_table(res).to_pandas()",
                f"Neurons per layer and type ({summ.TYPE_COUNTS})",
            )
        )
        if attrs.get("per_language"):
            sec.blocks.append(
                Code('pd.DataFrame(res.attrs["per_language"]).T', "Selected neurons per language")
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
                Table(
                    self.slugs(run, "identification", name, "per-language"),
                    "Per language (selected neurons)",
                    ["language", "specific", "related", "mask"],
                    rows,
                )
            )
        per_layer = attrs.get("per_layer") or {}
        if per_layer:
            types = [t for t in figures.TYPE_COLORS if t in per_layer]
            types += sorted(t for t in per_layer if t not in types)
            n_layers = len(next(iter(per_layer.values())))
            layers = _coord(ds, "layer") if "layer" in ds.dims else list(range(n_layers))
            rows = [[layers[i]] + [per_layer[t][i] for t in types] for i in range(n_layers)]
            rows.append(["all"] + [sum(per_layer[t]) for t in types])
            sec.blocks.append(
                Table(
                    self.slugs(run, "identification", name, "per-layer"),
                    f"Per layer ({summ.TYPE_COUNTS})",
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
                    Table(
                        self.slugs(run, "identification", name, key),
                        label,
                        [column, "neurons"],
                        rows,
                    )
                )
        # stages are drawn over these counts in the stages result's own section
        call = Call("layer_types", ([ref],), (("labels", [f"{run} · {name}"]),))
        self.figure(sec, "Neuron types per layer", call)
        self.figure(sec, "Specific and related neurons per language", Call("per_language", (ref,)))
        if "mask" in ds:
            self.figure(sec, "Overlap of the languages' masks", Call("overlap_matrix", (ref,)))
        if "shared_by_n" in attrs:
            self.figure(
                sec,
                "Neurons shared by N languages",
                Call("shared_by", ([ref],), (("labels", [run]),)),
            )

    def result(self, ref: Load, identifications: dict[str, xr.Dataset]) -> None:
        ds = self.loader(ref)
        kind = _kind_of(ds)
        sec = self.section(f"{ref.run}: {ref.kind} {ref.name}", 3)
        label = kind.label if kind else "a result langneurons does not recognise"
        sec.blocks.append(Para(f"Saved at {ref.run}/{ref.kind}/{ref.name}: {label}."))
        sec.blocks.extend(_key_codes(ref, ds, kind))
        prefix = f"{ref.run}-{ref.kind}-{ref.name}"
        if ds.attrs:
            sec.blocks.append(_attrs_table(ds.attrs, self.slugs(prefix, "attrs"), "Attributes"))
        tables, omitted = _variable_tables(ds, self.slugs, prefix, "Variables")
        sec.blocks.extend(tables)
        if omitted:
            sec.blocks.append(
                Para(
                    "Not tabulated (per neuron, per replicate or too large; read them with "
                    f"store.open_result): {', '.join(omitted)}."
                )
            )
        if kind is not None and kind.figures is not None:
            pair = None
            if ref.kind == "compare":
                other = _other_run(ref.name.split("/", 1)[0], ref.run, self.store.runs())
                pair = (other, ref.run) if other else None
            for title, call in kind.figures(_Context(ref, ds, identifications, pair)):
                self.figure(sec, title, call)

    def across_runs(self, letter: str) -> None:
        if len(self.runs) < 2:
            return
        names: dict[str, list[str]] = {}
        for run in self.runs:
            for name in self.store.results(run, "identification"):
                names.setdefault(name, []).append(run)
        groups = {name: runs for name, runs in sorted(names.items()) if len(runs) >= 2}
        if not groups:
            return
        self.section(f"Appendix {letter}. Across runs", 2)
        for name, runs in groups.items():
            refs = [Load(run, "identification", name) for run in runs]
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
            types = [t for t in figures.TYPE_COLORS if t != "none"]
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
                        *[sum(per_layer.get(t, [])) for t in types],
                    ]
                )
            columns = ["run", "method", "selected", "tau", "lambda", *types]
            sec.blocks.append(
                Table(self.slugs("across", name), f"Totals ({summ.TYPE_COUNTS})", columns, rows)
            )
            listing = ", ".join(repr(r) for r in runs)
            sec.blocks.append(
                Code(
                    f"pd.DataFrame({{run: store.open_result(run, 'identification', {name!r})"
                    f".attrs['n_selected'] for run in [{listing}]}}, index=['selected'])",
                    f"Selected neurons of identification {name} in each run",
                )
            )
            if len(same) < 2:
                sec.blocks.append(Para("The runs differ in shape or languages; no joint figures."))
                continue
            if len(same) < len(refs):
                left = ", ".join(r.run for r in refs if r not in same)
                sec.blocks.append(Para(f"Left out of the joint figures (other shape): {left}."))
            labels = [r.run for r in same]
            self.figure(sec, f"Neuron types per layer ({name})", self._across_call(name, labels))
            self.figure(
                sec,
                f"Overlap of the selected neurons between runs ({name})",
                Call("overlap_matrix", (same,), (("labels", labels),)),
            )
            self.figure(
                sec,
                f"Neurons shared by N languages ({name})",
                Call("shared_by", (same,), (("labels", labels),)),
            )


def _letter(i: int) -> str:
    """Appendix letters: A, B, ..., Z, then AA, AB, ..."""
    out = ""
    i += 1  # appendix A is the store overview; runs start at B
    while i > 0:
        i, rest = divmod(i - 1, 26)
        out = chr(ord("A") + rest) + out
    return out


def _primary(idents: Mapping[str, xr.Dataset], stages: Mapping[str, Load]) -> str:
    """The identification a run's summary draws: one with stages, else ternary, else the first."""
    names = sorted(idents)
    for name in names:
        if str(idents[name].attrs.get("method", "")) in stages:
            return name
    ternary = [n for n in names if idents[n].attrs.get("method") == "ternary"]
    return (ternary or names)[0]


# --------------------------------------------------------------------------- drawing


def _draw(sections: list[Section], loader: _Loader, folder: Path) -> None:
    """Execute every figure call; save SVG and PNG; keep the PNG bytes for the HTML."""
    blocks = [b for sec in sections for b in sec.blocks if isinstance(b, Fig)]
    with progress("report", total=len(blocks), unit="figure") as task:
        for block in blocks:
            task.note(block.slug)
            call = block.call
            try:
                args = [loader.resolve(a) for a in call.args]
                kwargs = {k: loader.resolve(v) for k, v in call.kwargs}
                fig = getattr(figures, call.func)(*args, **kwargs)
            except (LangneuronsError, KeyError, ValueError) as exc:  # a result it cannot draw
                log.warning("figure %s could not be drawn: %s", block.slug, exc)
                block.error = str(exc)
                task.update()
                continue
            paths = figures.save(fig, folder / block.slug, ("svg", "png"))
            block.png = paths[1].read_bytes()
            task.update()


def _relative(sections: list[Section], view: PathView) -> None:
    """Rewrite absolute local paths in every block relative to the report folder."""
    for sec in sections:
        for block in sec.blocks:
            if isinstance(block, (Para, Pre)):
                block.text = view.text(block.text)
            elif isinstance(block, Items):
                block.lines = [view.text(line) for line in block.lines]
            elif isinstance(block, Table):
                block.title = view.text(block.title)
                block.rows = [[view.value(plain(v)) for v in row] for row in block.rows]


# --------------------------------------------------------------------------- public API


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

    The report opens with a summary per run and per comparison: the headline numbers (lambda,
    tau, selected neurons, types, stages with their layer ranges, stability, tests, the strongest
    deactivation effects, what changed between runs), each marked as inference (sequences as
    the sampled unit) or descriptive, a warning when an automatic lambda ended at the top of
    its search range, and the key figures. The appendix follows: for every run (or those
    given) its provenance (model, revision, hook point, activation, dtype, corpus and hash, tool
    version, creation time, provenance and every write), token totals per language and role,
    every saved identification with its parameters and count tables and figures, and every
    saved stats, compare and ablation result (its attributes, tables of its small variables,
    and the figure that fits its kind); with two or more runs, identifications of the same name
    compared across runs.

    Local paths (the store, files named in provenance and results) are written relative to
    ``out_dir`` where they share a folder with it, so the report folder can be moved and shared
    together with its store; the sources' ``STORE`` parameter is such a relative path. Tables
    are sorted deterministically: the same store gives the same tables, byte for byte.

    The report is assembled in a temporary folder next to ``out_dir`` and moved into place
    when complete, so a failure leaves nothing half-written. An existing ``out_dir`` is
    replaced only when it is empty or an earlier report.

    Parameters
    ----------
    store : ActivationStore, str or path
        An open store, or its path/URL (opened read-only).
    out_dir : str or path
        Folder to write: ``report.html`` (self-contained), ``report.md``, ``tables/*.csv``,
        ``figures/*.svg`` and ``*.png``, ``report.qmd`` and ``report.ipynb`` (which open the
        store, runs and results, show the key tables and rebuild the figures).
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
    view = PathView(out, opened.url)
    location = view.store
    title = title or "langneurons report"
    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    from langneurons._version import __version__

    subtitle = f"Store {location}; written {now} by langneurons {__version__}"
    builder = _Builder(opened, chosen, location)
    sections = builder.build()
    _relative(sections, view)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the report is an ordinary folder
        (tmp / "figures").mkdir()
        (tmp / "tables").mkdir()
        _draw(sections, builder.loader, tmp / "figures")
        for sec in sections:
            for block in sec.blocks:
                if isinstance(block, Table):
                    write_csv(block, tmp / "tables")
        (tmp / "report.html").write_text(html_page(sections, title, subtitle), encoding="utf-8")
        (tmp / "report.md").write_text(markdown(sections, title, subtitle), encoding="utf-8")
        cells = source_cells(sections, location)
        (tmp / "report.qmd").write_text(qmd(cells, title, location), encoding="utf-8")
        book = notebook(cells, title)
        (tmp / "report.ipynb").write_text(json.dumps(book, indent=1) + "\n", encoding="utf-8")
        marker = {"store": location, "runs": chosen, "written": now, "langneurons": __version__}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("report of %d run(s) written to %s", len(chosen), out)
    return out / "report.html"


__all__ = ["write_report"]
