"""The report's assembly: which saved results go into which section, as blocks.

:class:`Builder` reads the store's runs and saved results and lays them out as sections
(nothing drawn yet): a summary per run and per comparison first, then the appendix (store and
runs, each run's provenance, tokens, identifications and other results, and identifications
compared across runs). A figure is a :class:`~langneurons.reports._blocks.Call` on saved
results (:class:`~langneurons.reports._blocks.Load`) or on derived ones
(:class:`~langneurons.reports._blocks.Derive`, made by :mod:`~langneurons.reports.derived`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import xarray as xr

from langneurons.errors import LangneuronsError
from langneurons.names import EXPERT, LAYER, NEURON
from langneurons.reports import _summary as summ
from langneurons.reports import figures
from langneurons.reports._blocks import (
    Call,
    Code,
    Derive,
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
)
from langneurons.reports._kinds import (
    CAPTIONS,
    MODELS_LABEL,
    Context,
    accuracy_effects_of,
    effects_of,
    kind_of,
    stage_call,
)
from langneurons.reports._load import Loader
from langneurons.reports._tables import (
    attrs_table,
    coord_labels,
    key_codes,
    units_summary,
    variable_tables,
)
from langneurons.store import ActivationStore

_COUNT_ATTRS: Final = ("per_language", "per_layer", "appear", "shared_by_n")
_RESULT_KINDS: Final = ("stats", "compare", "ablation")


def _compare_groups(store: ActivationStore, runs: list[str]) -> list[tuple[str, str, str | None]]:
    """Comparisons saved under the runs: (run, name prefix, the other run or None)."""
    out = []
    for run in runs:
        prefixes = sorted({name.split("/", 1)[0] for name in store.results(run, "compare")})
        for prefix in prefixes:
            out.append((run, prefix, _other_run(prefix, run, store.runs())))
    return out


def _is_models(ds: xr.Dataset) -> bool:
    """Whether a saved comparison is a cross-model one (compare_models)."""
    kind = kind_of(ds)
    return kind is not None and kind.label == MODELS_LABEL


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


class Builder:
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
        self.loader = Loader(store)
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
        caption = CAPTIONS.get(call.func, "")
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

    def saved_effects(self, run: str) -> dict[str, Load]:
        """Deactivation effects saved by ``stats deactivation``, by the ablation they read."""
        out: dict[str, Load] = {}
        for name in self.store.results(run, "stats"):
            ref = Load(run, "stats", name)
            ds = self.loader(ref)
            ablation = ds.attrs.get("ablation")
            if ("damage" in ds or "drop" in ds) and isinstance(ablation, str):
                out.setdefault(ablation, ref)
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
            kind = kind_of(ds)
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
                call = stage_call(run, name, stages[method])
            else:
                call = Call(
                    "layer_types",
                    ([Load(run, "identification", name)],),
                    (("labels", [f"{run} · {name}"]),),
                )
            figs.append((f"Neuron types per layer ({run} · {name})", call))
        saved = self.saved_effects(run)
        for name in self.store.results(run, "ablation"):
            ref = Load(run, "ablation", name)
            ds = self.loader(ref)
            if ds.attrs.get("kind") == "accuracy":  # accuracy-based: its own line and figure
                lines.append(self._accuracy(run, name, ref, saved, figs))
                continue
            # the effects saved by `stats deactivation`; derived (once, shared with the
            # figure) only when none were saved; an effects result under "ablation" as it is
            effects: Load | Derive = ref if "damage" in ds else saved.get(name) or effects_of(ref)
            try:
                lines.append(summ.deactivation_line(ds, self.loader.resolve(effects)))
            except (LangneuronsError, KeyError, ValueError) as exc:
                lines.append(f"Deactivation {name}: could not be summarised ({exc}).")
            figs.append(
                (
                    f"Deactivation: perplexity change ({run} · {name})",
                    Call("deactivation_heatmap", (effects,)),
                )
            )
        for text in warnings:
            sec.blocks.append(Para(text, "warning"))
        sec.blocks.append(Items(lines or ["No saved results: see the appendix."]))
        for title, call in figs:
            self.figure(sec, title, call)

    def _accuracy(
        self, run: str, name: str, ref: Load, saved: dict[str, Load], figs: list[tuple[str, Call]]
    ) -> str:
        """The summary line of an accuracy ablation; its heatmaps are added to ``figs``."""
        effects: Load | Derive = saved.get(name) or accuracy_effects_of(ref)
        try:
            line = summ.accuracy_line(name, self.loader.resolve(effects))
        except (LangneuronsError, KeyError, ValueError) as exc:
            line = f"Accuracy deactivation {name}: could not be summarised ({exc})."
        title = f"Deactivation: accuracy drop per panel ({run} · {name})"
        figs.append((title, Call("accuracy_heatmap", (effects,))))
        return line

    def comparison_summary(self, run: str, prefix: str, other: str | None) -> None:
        first = other or "the first run"
        names = [n for n in self.store.results(run, "compare") if n.split("/", 1)[0] == prefix]
        results = {n: self.loader(Load(run, "compare", n)) for n in names}
        models = {n: ds for n, ds in results.items() if _is_models(ds)}
        if models:
            self.models_summary(run, models)
            results = {n: ds for n, ds in results.items() if n not in models}
            if not results:
                return
        sec = self.section(f"{run} vs {other or prefix}", 3, summary=True)
        lines: list[str] = []
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
            kind = kind_of(ds)
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

    def models_summary(self, run: str, results: dict[str, xr.Dataset]) -> None:
        """The cross-model section: models of different shapes side by side."""
        for name, ds in results.items():
            models = ", ".join(str(m) for m in ds["model"].values)
            sec = self.section(f"Cross-model comparison: {models}", 3, summary=True)
            sec.blocks.append(Items(summ.models_lines(ds)))
            kind = kind_of(ds)
            if kind is not None and kind.figures is not None:
                ctx = Context(Load(run, "compare", name), ds, {})
                for title, call in kind.figures(ctx):
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
                    units_summary(w.get("units", [])),
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
            attrs_table(
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
            layers = coord_labels(ds, LAYER) if LAYER in ds.dims else list(range(n_layers))
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
            overlaps = Derive("language_overlap", (ref,))
            self.figure(sec, "Overlap of the languages' masks", Call("overlap_matrix", (overlaps,)))
        if "shared_by_n" in attrs:
            self.figure(
                sec,
                "Neurons shared by N languages",
                Call("shared_by", ([ref],), (("labels", [run]),)),
            )
        if "n_language_neurons" in ds:  # a mixture-of-experts identification
            self.figure(sec, "Language neurons per expert", Call("expert_neurons", (ref,)))

    def result(self, ref: Load, identifications: dict[str, xr.Dataset]) -> None:
        ds = self.loader(ref)
        kind = kind_of(ds)
        sec = self.section(f"{ref.run}: {ref.kind} {ref.name}", 3)
        label = kind.label if kind else "a result langneurons does not recognise"
        sec.blocks.append(Para(f"Saved at {ref.run}/{ref.kind}/{ref.name}: {label}."))
        sec.blocks.extend(key_codes(ref, ds, kind))
        prefix = f"{ref.run}-{ref.kind}-{ref.name}"
        if ds.attrs:
            sec.blocks.append(attrs_table(ds.attrs, self.slugs(prefix, "attrs"), "Attributes"))
        tables, omitted = variable_tables(ds, self.slugs, prefix, "Variables")
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
            effects = self.saved_effects(ref.run).get(ref.name) if ref.kind == "ablation" else None
            for title, call in kind.figures(Context(ref, ds, identifications, pair, effects)):
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
                if ds.sizes.get(LAYER) == first.sizes.get(LAYER)
                and ds.sizes.get(NEURON) == first.sizes.get(NEURON)
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
            if EXPERT in first.dims:
                sec.blocks.append(
                    Para(
                        "Mixture-of-experts runs: no overlap matrix between runs (its chance "
                        "null counts a layer x neuron grid); the routing change between runs "
                        "is under the aligned run's stats (routing-change)."
                    )
                )
            else:
                self.figure(
                    sec,
                    f"Overlap of the selected neurons between runs ({name})",
                    Call(
                        "overlap_matrix",
                        (Derive("derived.run_overlap", (same,), (("labels", labels),)),),
                    ),
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


__all__ = ["Builder"]
