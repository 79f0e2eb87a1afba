"""Tests of langneurons.reports: every figure, and the HTML/Markdown/CSV/Quarto/Jupyter report."""

from __future__ import annotations

import base64
import csv
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.image
import numpy as np
import pytest
import xarray as xr
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import langneurons as ln
from langneurons._format import significant
from langneurons.analysis import (
    bootstrap_stages,
    compare_type_distributions,
    deactivation_effects,
    identify,
    language_overlap,
    mcnemar,
    overlap,
    shared_by_change,
    transition_table,
    type_change,
)
from langneurons.analysis.params import IdentifyParams
from langneurons.errors import InputFormatError, ParameterError, RunNotFoundError
from langneurons.reports import derived, figures, write_report
from langneurons.reports.report import MARKER

from .conftest import make_counts, run_python

LANGS = ["en", "de", "fr", "zh"]
KW: dict[str, Any] = {"top_rate": 0.1}
P = IdentifyParams(**KW)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HAS_STABILITY = importlib.util.find_spec("langneurons.analysis.stability") is not None
HAS_TESTS = importlib.util.find_spec("langneurons.analysis.neuron_tests") is not None
CHROMIUM = Path("/usr/bin/chromium")


# --------------------------------------------------------------------------- synthetic inputs


def counts(seed: int, layers: int = 8, neurons: int = 40) -> ln.Counts:
    return make_counts(LANGS, layers=layers, neurons=neurons, seed=seed, sequences=6)


def memory_run(seed: int, layers: int = 8, neurons: int = 40) -> xr.Dataset:
    """A run Dataset with per-sequence counts, in memory."""
    c = counts(seed, layers, neurons)
    return xr.Dataset(
        {
            "n_active": (("language", "role", "layer", "neuron"), c.n_active),
            "n_tokens": (("language", "role"), c.n_tokens),
            "seq_n_active": (("sequence", "role", "layer", "neuron"), c.seq_n_active),
            "seq_n_tokens": (("sequence", "role"), c.seq_n_tokens),
        },
        coords={
            "language": LANGS,
            "role": ["prompt", "response"],
            "layer": np.arange(layers),
            "neuron": np.arange(neurons),
            "seq_language": ("sequence", list(c.seq_language or [])),
            "seq_id": ("sequence", list(c.seq_id or [])),
        },
    )


def ablation(langs: list[str], controls: int = 19, seed: int = 0) -> xr.Dataset:
    """A synthetic ablation result: own-language damage 0.5, others and controls ~0.05 (no
    per-item values, like an ablation made before they were stored)."""
    rng = np.random.default_rng(seed)
    k = len(langs)
    base = rng.uniform(1.5, 2.5, k)
    damage = 0.05 + rng.normal(0, 0.01, (k, k))
    damage[np.arange(k), np.arange(k)] += 0.5
    nll = np.vstack([base, base + damage])
    control = base[None, :, None] + 0.05 + rng.normal(0, 0.01, (k, k, controls))
    control = np.concatenate([np.full((1, k, controls), np.nan), control])
    return xr.Dataset(
        {
            "nll": (("deactivated", "evaluated"), nll),
            "ppl": (("deactivated", "evaluated"), np.exp(nll)),
            "control_nll": (("deactivated", "evaluated", "control"), control),
            "n_neurons": (("deactivated",), np.array([0] + [20] * k)),
        },
        coords={
            "deactivated": ["none", *langs],
            "evaluated": langs,
            "control": np.arange(controls),
        },
        attrs={"identification": "ternary", "controls": controls, "seed": 0},
    )


@pytest.fixture(scope="module")
def res() -> dict[str, xr.Dataset]:
    """In-memory results of every kind the figures draw."""
    base, aligned = memory_run(0), memory_run(1)
    ib, ia = identify(base, **KW), identify(aligned, **KW)
    out = {
        "base": ib,
        "aligned": ia,
        "stages": bootstrap_stages(base, n_boot=4, params=P),
        "type_change": type_change(base, aligned, n_boot=4, params=P),
        "shared_by_change": shared_by_change(base, aligned, n_boot=4, params=P),
        "overlap": overlap(ib, ia),
        "transitions": transition_table(ib, ia),
        "ablation": ablation(LANGS),
    }
    if HAS_STABILITY:
        from langneurons.analysis.stability import bootstrap_identification

        out["stability"] = bootstrap_identification(base, n_boot=4, params=P)
    if HAS_TESTS:
        from langneurons.analysis.neuron_tests import language_preference_tests

        out["tests"] = language_preference_tests(base)
    return out


# --------------------------------------------------------------------------- figures

K = len(LANGS)


def _layer_types(r: dict[str, xr.Dataset]) -> Figure:
    return figures.layer_types([r["base"], r["aligned"]], ["base", "aligned"], r["stages"])


def _check_layer_types(fig: Figure) -> None:
    panels = [a for a in fig.axes if a.get_title(loc="left") in ("base", "aligned")]
    assert len(panels) == 2
    for a in panels:
        # specific and related lines, plus a boundary interval per stage boundary
        assert len(a.lines) >= 2
        assert len(a.patches) >= 2  # shaded stages
        assert {t.get_text() for t in a.texts} >= {"1", "2", "3", "4"}
        assert a.get_ylabel() in ("selected neurons", "")
    # general neurons (counted over all neurons) have panels and a y axis of their own
    general = [a for a in fig.axes if a not in panels]
    assert len(general) == 2 and "general" in general[0].get_ylabel()
    assert all([ln.get_label() for ln in a.lines].count("general") == 1 for a in general)
    assert len(fig.legends) == 2  # types, stages


def _check_type_change(fig: Figure) -> None:
    # selected types (specific, related, unassigned) above, general (of all neurons) below
    main, total, general, general_total = fig.axes
    assert len(main.collections) == 3  # one interval bar set per type
    assert len(main.lines) >= 3
    assert len(total.collections) == 3  # totals
    assert len(general.collections) == 1 and len(general_total.collections) == 1
    assert "aligned − base" in main.get_title(loc="left")


def _check_shared_by(fig: Figure) -> None:
    assert len(fig.axes[0].patches) == 2 * (K + 1)


def _check_shared_by_change(fig: Figure) -> None:
    assert len(fig.axes[0].patches) == 2 * (K + 1)
    assert len(fig.axes[1].collections) == 1  # intervals of the change


def _check_per_language(fig: Figure) -> None:
    assert len(fig.axes[0].patches) == 2 * K  # specific and related bars
    assert len(fig.axes[0].lines) == 1  # mask sizes


def _cells(n: int) -> Callable[[Figure], None]:
    def check(fig: Figure) -> None:
        assert len(fig.axes[0].images) == 1
        assert len(fig.axes[0].texts) == n

    return check


def _check_transitions(fig: Figure) -> None:
    _cells(25)(fig)
    heat = fig.axes[0]
    assert heat.get_ylabel() == "type in m/base"  # the run names, not "first/second run"
    assert heat.get_xlabel().startswith("type in m/aligned")
    assert "none: not selected" in heat.get_xlabel()  # none vs unassigned defined
    assert "unassigned: selected, but above tau in no language" in heat.get_xlabel()


def _check_deactivation(fig: Figure) -> None:
    heat, dominance = fig.axes[0], fig.axes[1]
    assert len(heat.texts) == K * K
    assert all("ctrl" in t.get_text() for t in heat.texts)
    assert len(heat.patches) == K  # own-language outlines
    assert len(dominance.lines) == K + 2  # controls per language, the real sets, zero line
    assert all("p=" in t.get_text() for t in dominance.get_yticklabels())


def _check_stability(fig: Figure) -> None:
    assert len(fig.axes[0].patches) == 20
    assert len(fig.axes[1].lines) > K


def _check_qvalues(fig: Figure) -> None:
    assert len(fig.axes[0].patches) >= 2
    assert len(fig.axes[1].patches) == K


Case = tuple[Callable[[dict[str, xr.Dataset]], Figure], int, Callable[[Figure], None]]
CASES: dict[str, Case] = {
    "layer_types": (_layer_types, 4, _check_layer_types),
    "type_change": (lambda r: figures.type_change(r["type_change"]), 4, _check_type_change),
    "shared_by": (
        lambda r: figures.shared_by({"base": r["base"], "aligned": r["aligned"]}),
        1,
        _check_shared_by,
    ),
    "shared_by_change": (
        lambda r: figures.shared_by(r["shared_by_change"]),
        2,
        _check_shared_by_change,
    ),
    "per_language": (lambda r: figures.per_language(r["base"]), 1, _check_per_language),
    # heatmaps: the heatmap and its colour bar
    "overlap_languages": (
        lambda r: figures.overlap_matrix(language_overlap(r["base"])),
        2,
        _cells(K * K),
    ),
    "overlap_runs": (
        lambda r: figures.overlap_matrix(
            derived.run_overlap(
                [r["base"], r["aligned"], r["base"]],
                ["model/base", "model/aligned", "model/base-2"],
            )
        ),
        2,
        _cells(9),
    ),
    "overlap_result": (lambda r: figures.overlap_matrix(r["overlap"]), 2, _cells(K * 3)),
    "transitions": (
        lambda r: figures.transitions(r["transitions"], labels=["m/base", "m/aligned"]),
        2,
        _check_transitions,
    ),
    # heatmap, dominance, colour bar
    "deactivation_effects": (
        lambda r: figures.deactivation_heatmap(deactivation_effects(r["ablation"])),
        3,
        _check_deactivation,
    ),
}
if HAS_STABILITY:
    CASES["stability"] = (lambda r: figures.stability(r["stability"]), 2, _check_stability)
if HAS_TESTS:
    CASES["qvalues"] = (lambda r: figures.qvalues(r["tests"]), 2, _check_qvalues)


@pytest.mark.parametrize("case", sorted(CASES))
def test_figure(case: str, res: dict[str, xr.Dataset], tmp_path: Path) -> None:
    draw, n_axes, check = CASES[case]
    before = dict(matplotlib.rcParams)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # our figures draw without warnings
        fig = draw(res)
        assert isinstance(fig, Figure)
        assert len(fig.axes) == n_axes
        check(fig)
        paths = figures.save(fig, tmp_path / "sub" / case)
    assert dict(matplotlib.rcParams) == before  # the style never leaks
    assert [p.name for p in paths] == [f"{case}.svg", f"{case}.png"]
    svg, png = (p.read_bytes() for p in paths)
    assert svg.startswith(b"<?xml") and b"<svg" in svg
    assert b"<text" in svg  # text stays text (svg.fonttype "none"), searchable and editable
    assert_no_overlaps(fig)
    assert png.startswith(PNG_MAGIC)
    image = matplotlib.image.imread(io.BytesIO(png))
    assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0.01


def assert_no_overlaps(fig: Figure) -> None:
    """Legends lie outside every Axes; the texts drawn in one Axes never overlap each other."""
    FigureCanvasAgg(fig).draw()
    boxes = [a.get_window_extent() for a in fig.axes]
    own = [a.get_legend() for a in fig.axes]
    legends = list(fig.legends) + [legend for legend in own if legend is not None]
    for legend in legends:
        box = legend.get_window_extent()
        for a, axbox in zip(fig.axes, boxes, strict=True):
            assert not box.overlaps(axbox), (legend.get_texts()[0].get_text(), a.get_title())
    for a in fig.axes:
        ticks = [t.get_window_extent() for t in a.get_xticklabels() if t.get_text().strip()]
        for first, second in zip(ticks, ticks[1:], strict=False):
            assert not first.overlaps(second), (a.get_title(loc="left"), first, second)
        texts = [t.get_window_extent() for t in a.texts if t.get_text().strip()]
        for i, first in enumerate(texts):
            for second in texts[i + 1 :]:
                assert not first.overlaps(second), (a.get_title(loc="left"), first, second)


def test_significant_digits() -> None:
    assert significant(0.0512) == "0.0512"
    assert significant(1.0) == "1.00"
    assert significant(1456.7) == "1457"
    assert significant(0.000123456) == "0.000123"
    assert significant(0.0042, sign=True) == "+0.00420"
    assert significant(-0.5, sign=True) == "-0.500"
    assert significant(float("nan")) == "–"
    assert significant(0.0) == "0"


@pytest.mark.skipif(not HAS_STABILITY or not HAS_TESTS, reason="analysis modules missing")
def test_uncertainty_figures_refuse_other_results(res: dict[str, xr.Dataset]) -> None:
    with pytest.raises(InputFormatError, match=r"^stability_result must be a "):
        figures.stability(res["base"])
    with pytest.raises(InputFormatError, match=r"^tests_result must be a "):
        figures.qvalues(res["base"])


def test_figures_draw_on_given_axes(res: dict[str, xr.Dataset]) -> None:
    fig = Figure()
    ax = fig.subplots()
    assert figures.per_language(res["base"], ax=ax) is fig
    fig2 = Figure()
    axes = fig2.subplots(1, 2)
    assert figures.layer_types([res["base"], res["aligned"]], ax=list(axes)) is fig2
    assert [a.get_title(loc="left") for a in axes] == ["result 1", "result 2"]
    assert len(fig2.axes) == 4  # general neurons on a second y axis of each panel
    fig4 = Figure()
    four = list(fig4.subplots(2, 2).T.ravel())  # per result: selected types, then general
    assert figures.layer_types([res["base"], res["aligned"]], ax=four) is fig4
    assert len(fig4.axes) == 4 and all(a.lines for a in four)
    fig3 = Figure()
    one = fig3.subplots()
    assert figures.type_change(res["type_change"], ax=one) is fig3  # main panel only
    effects = deactivation_effects(res["ablation"])
    assert figures.deactivation_heatmap(effects, ax=Figure().subplots()) is not None


def test_figure_input_errors(res: dict[str, xr.Dataset], tmp_path: Path) -> None:
    with pytest.raises(
        InputFormatError,
        match=r"^results must be an identification result; it lacks variables "
        r"\['neuron_type', 'general'\]",
    ):
        figures.layer_types(xr.Dataset())
    with pytest.raises(ParameterError, match=r"^labels must be 2 names \(one per result\)"):
        figures.layer_types([res["base"], res["aligned"]], labels=["x"])
    with pytest.raises(ParameterError, match=r"^ax must be 2 or 4 matplotlib Axes for this figure"):
        figures.layer_types([res["base"], res["aligned"]], ax=Figure().subplots())
    with pytest.raises(ParameterError, match=r"^labels must be 2 names \(rows' run, columns'"):
        figures.transitions(res["transitions"], labels=["a"])
    with pytest.raises(ParameterError, match=r"^stages must be None, one Dataset, or 2"):
        figures.layer_types([res["base"], res["aligned"]], stages=[res["stages"]])
    with pytest.raises(
        InputFormatError,
        match=r"^effects is an ablation result; pass its effects: deactivation_heatmap\("
        r"langneurons\.analysis\.deactivation_effects\(ablation\)\)",
    ):
        figures.deactivation_heatmap(res["ablation"])
    with pytest.raises(InputFormatError, match=r"^result has no attrs\['per_language'\]"):
        figures.per_language(res["stages"])
    with pytest.raises(
        InputFormatError,
        match=r"^matrix_or_result is an identification result; pass the Jaccard index of its "
        r"languages' masks: overlap_matrix\(langneurons\.analysis\.language_overlap\(result\)\)",
    ):
        figures.overlap_matrix(res["base"])
    with pytest.raises(
        ParameterError,
        match=r"^matrix_or_result is a collection of results; pass their run-by-run Jaccard "
        r"matrix: overlap_matrix\(langneurons\.reports\.derived\.run_overlap\(",
    ):
        figures.overlap_matrix([res["base"], res["aligned"]])
    with pytest.raises(ParameterError, match=r"^give at least 2 results to compare runs"):
        derived.run_overlap([res["base"]])
    with pytest.raises(InputFormatError, match=r"^result has no attrs\['per_layer'\]"):
        figures.layer_types(res["base"].assign_attrs(per_layer=None))
    with pytest.raises(ParameterError, match=r"^formats must be among svg, png, pdf"):
        figures.save(Figure(), tmp_path / "x", ("jpg",))


def test_language_overlap_is_the_jaccard_of_the_masks(res: dict[str, xr.Dataset]) -> None:
    result = res["base"]
    fig = figures.overlap_matrix(language_overlap(result))
    mask = result["mask"].values.reshape(K, -1)
    i, j = 0, 3
    both, union = (mask[i] & mask[j]).sum(), (mask[i] | mask[j]).sum()
    texts = {
        (round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
        for t in fig.axes[0].texts
    }
    assert texts[(i, j)] == significant(both / union)  # three significant digits
    assert texts[(i, i)] == "1.00"


def test_deprecated_figure_inputs_warn(res: dict[str, xr.Dataset]) -> None:
    with pytest.warns(DeprecationWarning, match=r"langneurons\._format\.significant"):
        assert figures.significant(1.0) == "1.00"
    effects = deactivation_effects(res["ablation"])
    with pytest.warns(DeprecationWarning, match=r"^deactivation_heatmap ignores n_perm and seed"):
        figures.deactivation_heatmap(effects, n_perm=10)
    matrix = language_overlap(res["base"])
    with pytest.warns(DeprecationWarning, match=r"^overlap_matrix ignores labels"):
        figures.overlap_matrix(matrix, labels=LANGS)


def test_svg_is_reproducible(res: dict[str, xr.Dataset], tmp_path: Path) -> None:
    a = figures.save(figures.per_language(res["base"]), tmp_path / "a", ("svg",))[0]
    b = figures.save(figures.per_language(res["base"]), tmp_path / "b", ("svg",))[0]
    assert a.read_bytes() == b.read_bytes()


def test_reports_import_neither_pyplot_nor_torch() -> None:
    out = run_python(
        "import sys, tempfile\n"
        "import numpy as np, xarray as xr\n"
        "from langneurons.reports import figures\n"
        "per = {'en': {'specific': 1, 'related': 2, 'mask': 3}}\n"
        "ds = xr.Dataset(attrs={'per_language': per})\n"
        "fig = figures.per_language(ds)\n"
        "figures.save(fig, tempfile.mkdtemp() + '/f')\n"
        "print('matplotlib.pyplot' in sys.modules, 'torch' in sys.modules)\n",
        env={"MPLBACKEND": "Agg"},
    )
    assert out.split() == ["False", "False"]


# --------------------------------------------------------------------------- the report


def build_store(path: Path) -> Path:
    """Two runs with every kind of saved result the report draws."""
    store = ln.create_store(path)
    for i, run in enumerate(("m/base", "m/aligned")):
        store.create_run(
            run,
            n_layers=8,
            n_neurons=40,
            sequences=True,
            counts=counts(i),
            metadata=ln.RunMetadata(
                model="tiny <model>",
                revision=f"step-{i}",
                hook_point="model.layers.*.mlp.act_fn",
                activation="silu",
                dtype="float32",
                corpus="flores & co",
                corpus_hash="sha256:0123",
                provenance={
                    "method": "extracted",
                    "command": "<script>alert(1)</script>",
                    "source": str(path.parent / "activations" / f"run{i}.pt"),
                },
            ),
        )
    base, aligned = store.open_run("m/base"), store.open_run("m/aligned")
    for run, ds in (("m/base", base), ("m/aligned", aligned)):
        result = identify(ds, **KW)
        if run == "m/base":  # as identify() records an automatic lambda at its range's top
            result.attrs.update(lambda_at_bound=True, lam_range_searched=[0.0, 0.2])
        store.save_result(run, "identification", "ternary", result)
        store.save_result(run, "stats", "stages", bootstrap_stages(ds, n_boot=3, params=P))
    ib, ia = identify(base, **KW), identify(aligned, **KW)
    parts = {
        "type_change": type_change(base, aligned, n_boot=3, params=P),
        "shared_by_change": shared_by_change(base, aligned, n_boot=3, params=P),
        "overlap": overlap(ib, ia),
        "transitions": transition_table(ib, ia),
        "types": compare_type_distributions(ib, ia),
        "mcnemar": mcnemar(ib, ia),
    }
    for part, ds in parts.items():
        store.save_result("m/aligned", "compare", f"vs-base/{part}", ds)
    abl = ablation(LANGS, controls=3)  # the old default: the report's fallback must draw it
    abl.attrs["data"] = str(path.parent / "eval.jsonl")  # a local path, shown relative
    store.save_result("m/base", "ablation", "ternary", abl)
    if HAS_TESTS:
        from langneurons.analysis.neuron_tests import language_preference_tests

        store.save_result("m/base", "stats", "tests", language_preference_tests(base))
    if HAS_STABILITY:
        from langneurons.analysis.stability import bootstrap_identification

        store.save_result(
            "m/base", "stats", "stability", bootstrap_identification(base, n_boot=3, params=P)
        )
    return path


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the two-run store (built once; the slow part of this module)."""
    root = tmp_path_factory.mktemp("report")
    store = build_store(root / "store.zarr")
    html_path = write_report(store, root / "out")
    assert html_path == root / "out" / "report.html"
    return root / "out"


class _Tags(HTMLParser):
    """Collects every start tag with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def parse_html(text: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(text)
    return parser.tags


def embedded_pngs(text: str) -> list[bytes]:
    """The decoded PNG of every <img>, failing on any image that is not a data: PNG."""
    out = []
    for tag, attrs in parse_html(text):
        if tag != "img":
            continue
        src = attrs.get("src") or ""
        assert src.startswith("data:image/png;base64,"), src[:80]
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG_MAGIC)
        matplotlib.image.imread(io.BytesIO(data))  # decodes
        out.append(data)
    return out


@pytest.mark.slow
def test_report_files(report: Path) -> None:
    for name in ("report.html", "report.md", "report.qmd", "report.ipynb", MARKER):
        assert (report / name).stat().st_size > 0, name
    svgs = sorted(p.stem for p in (report / "figures").glob("*.svg"))
    pngs = sorted(p.stem for p in (report / "figures").glob("*.png"))
    assert svgs == pngs and len(pngs) >= 18
    assert all(p.stat().st_size > 1000 for p in (report / "figures").iterdir())
    tables = sorted((report / "tables").glob("*.csv"))
    assert len(tables) >= 30
    for path in tables:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        assert rows and all(rows[0]), path.name
        assert {len(r) for r in rows} == {len(rows[0])}, path.name
    # the numbers in the CSVs are the analysis results
    with open(report / "tables" / "m-base-identification-ternary-per-language.csv") as fh:
        per_lang = {r["language"]: r for r in csv.DictReader(fh)}
    with open(report / "tables" / "m-base-tokens.csv") as fh:
        tokens = {r["language"]: r for r in csv.DictReader(fh)}
    store = ln.open_store(report.parent / "store.zarr")
    saved = store.open_result("m/base", "identification", "ternary").attrs["per_language"]
    assert {k: int(v["specific"]) for k, v in per_lang.items()} == {
        k: v["specific"] for k, v in saved.items()
    }
    info = store.info()["runs"]["m/base"]["n_tokens"]
    assert int(tokens["de"]["response"]) == info["de"]["response"]
    assert int(tokens["all"]["total"]) == sum(sum(v.values()) for v in info.values())
    # no temporary folders left next to the report
    assert sorted(p.name for p in report.parent.iterdir()) == ["out", "store.zarr"]


@pytest.mark.slow
def test_report_html_is_self_contained_and_escaped(report: Path) -> None:
    text = (report / "report.html").read_text(encoding="utf-8")
    tags = parse_html(text)
    for tag, attrs in tags:
        for key in ("src", "href"):
            value = attrs.get(key)
            if value is not None:
                assert value.startswith(("data:", "#")), (tag, key, value[:80])
        assert tag not in ("script", "link", "iframe", "object", "embed")
    assert "url(" not in text and "@import" not in text
    anchors = {attrs.get("id") for _, attrs in tags}
    links = [(a.get("href") or "")[1:] for t, a in tags if t == "a" and a.get("href")]
    assert links and all(link in anchors for link in links)
    pngs = embedded_pngs(text)
    assert len(pngs) == len(list((report / "figures").glob("*.png")))
    assert "could not be drawn" not in text
    # provenance, with every attribute and markup escaped
    for needle in (
        "tiny &lt;model&gt;",
        "flores &amp; co",
        "sha256:0123",
        "model.layers.*.mlp.act_fn",
        "silu",
        "float32",
        "&lt;script&gt;alert(1)&lt;/script&gt;",
        "tool version",
        "created",
        "Writes",
        "Counted tokens per language and role",
        "m/aligned: compare vs-base/type_change",
        "deactivation experiment (ablation)",
        "Per layer",
        "shared-by-N",
        "lambda",
    ):
        assert needle in text, needle
    assert "<script>" not in text and "tiny <model>" not in text
    md = (report / "report.md").read_text(encoding="utf-8")
    for link in re.findall(r"\]\((figures/[^)]+)\)", md):
        assert (report / link).exists(), link
    assert "| language | prompt | response | total |" in md


@pytest.mark.slow
def test_report_leads_with_the_summary(report: Path) -> None:
    text = (report / "report.html").read_text(encoding="utf-8")
    h2 = re.findall(r"<h2>([^<]+)</h2>", text)
    assert h2[0] == "Summary" and h2[1].startswith("Appendix A.")
    assert all(title.startswith("Appendix") for title in h2[1:])
    summary = text[text.index("<h2>Summary</h2>") : text.index("<h2>Appendix A.")]
    for needle in (
        "Run m/base",
        "m/aligned vs m/base",  # the comparison saved under m/aligned as vs-base/*
        "lambda",
        "tau",
        "neurons selected",
        "Stages (ternary counts): 1 ",
        "Change over all layers",
        "strongest own-language perplexity changes",
        "Inference (sequences are the sampled unit)",
        "Descriptive",
    ):
        assert needle in summary, needle
    # the automatic lambda of m/base ended at the top of its range: a warning line says so
    assert re.search(
        r'<p class="warning">m/base · identification ternary: the automatic lambda', summary
    )
    assert "<img" in summary  # the key figures come with the summary, not pages later
    md = (report / "report.md").read_text(encoding="utf-8")
    assert md.index("## Summary") < md.index("## Appendix A.") < md.index("Run attributes")
    assert "> **Warning:** m/base · identification ternary: the automatic lambda" in md


@pytest.mark.slow
def test_report_paths_are_relative(report: Path) -> None:
    root = str(report.parent)
    for path in [report / n for n in ("report.html", "report.md", "report.qmd", "report.ipynb")]:
        text = path.read_text(encoding="utf-8")
        assert root not in text, path.name  # no absolute local (tmp) path anywhere
    for path in (report / "tables").glob("*.csv"):
        assert root not in path.read_text(encoding="utf-8"), path.name
    assert root not in (report / MARKER).read_text(encoding="utf-8")
    html_text = (report / "report.html").read_text(encoding="utf-8")
    assert "Store ../store.zarr;" in html_text
    assert "../activations/run0.pt" in html_text and "../eval.jsonl" in html_text


@pytest.mark.slow
def test_report_tables_are_deterministic(report: Path) -> None:
    # a second report beside the first (so that relative paths are the same), then removed
    again = write_report(report.parent / "store.zarr", report.parent / "again").parent
    try:
        _same_tables(report, again)
    finally:
        shutil.rmtree(again)


def _same_tables(report: Path, again: Path) -> None:
    first = {p.name: p.read_bytes() for p in (report / "tables").glob("*.csv")}
    second = {p.name: p.read_bytes() for p in (again / "tables").glob("*.csv")}
    assert first == second
    for name in ("report.md", "report.ipynb", "report.qmd"):  # identical but for the date
        strip = re.compile(r"written \S+ by")
        a = strip.sub("", (report / name).read_text(encoding="utf-8"))
        b = strip.sub("", (again / name).read_text(encoding="utf-8"))
        assert a == b, name
    svgs = sorted((report / "figures").glob("*.svg"))
    assert all(p.read_bytes() == (again / "figures" / p.name).read_bytes() for p in svgs)
    assert all(b"<text" in p.read_bytes() for p in svgs)


def _code_cells(qmd: str) -> list[str]:
    return re.findall(r"```\{python\}\n(.*?)```", qmd, flags=re.S)


@pytest.mark.slow
def test_report_qmd_uses_the_public_api(report: Path) -> None:
    qmd = (report / "report.qmd").read_text(encoding="utf-8")
    header = qmd.split("---", 2)[1]
    assert "params:" in header and 'STORE: "../store.zarr"' in header  # relative to the report
    assert "jupyter: python3" in header
    cells = _code_cells(qmd)
    assert cells[0] == "#| tags: [parameters]\nSTORE = '../store.zarr'\n"
    assert "import langneurons\n" in cells[1]
    assert "store = langneurons.open_store(STORE)" in cells[1]
    assert "from langneurons.reports import derived, figures" in cells[1]
    figure_cells = [c for c in cells if c.startswith("#| label: fig-")]
    assert len(figure_cells) == len(list((report / "figures").glob("*.png")))
    for cell in figure_cells:
        label, caption, *_ = cell.splitlines()
        assert re.fullmatch(r"#\| label: fig-[a-z0-9-]+", label)
        assert caption.startswith("#| fig-cap: ")
    tables = [c for c in cells if c.startswith("#| tags: [table]")]
    assert len(tables) >= 8
    assert any("store.open_run('m/base')" in c for c in cells)
    code = "\n".join(
        line for cell in cells for line in cell.splitlines() if not line.startswith("#|")
    )
    imports = re.findall(r"^\s*(?:from|import) .*$", code, flags=re.M)
    assert sorted(imports) == [
        "from langneurons.analysis import accuracy_effects, deactivation_effects",
        "from langneurons.analysis import language_overlap, type_table",
        "from langneurons.reports import derived, figures",
        "import langneurons",
        "import pandas as pd",
    ]
    calls = re.findall(r"\b((?:[A-Za-z_][\w]*\.)+[A-Za-z_]\w*)\(", code)
    public = set(figures.__all__)
    allowed = {
        "derived.run_overlap",
        "store.open_result",
        "store.open_run",
        "store.runs",
        "langneurons.open_store",
        "pd.DataFrame",
        "pd.Series",
    }
    for call in calls:
        head, _, func = call.rpartition(".")
        assert (head == "figures" and func in public) or call in allowed, call
    assert "_" not in "".join(re.findall(r"figures\.(_\w+)", code))


def _run_notebook(
    path: Path, workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """Execute a notebook offline with this interpreter's kernel; return it."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    # a kernel spec named python3 that runs this interpreter (the venv's), found first
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "langneurons tests", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=180, resources={"metadata": {"path": str(workdir)}}
    )
    client.execute()
    return nb


@pytest.mark.slow
def test_report_notebook_runs_where_the_report_moves(
    report: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the report folder moves together with its store: the relative STORE still finds it
    moved = tmp_path / "elsewhere"
    shutil.copytree(report.parent / "store.zarr", moved / "store.zarr")
    shutil.copytree(report, moved / "out")
    nb = _run_notebook(moved / "out" / "report.ipynb", moved / "out", tmp_path, monkeypatch)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].metadata["tags"] == ["parameters"]
    assert code[0].source == "STORE = '../store.zarr'"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == len(list((report / "figures").glob("*.png")))
    for o in images:
        assert base64.b64decode(o["data"]["image/png"]).startswith(PNG_MAGIC)
    # the run and the key tables are shown: every table cell has a DataFrame (or Series) output
    tables = [c for c in code if "table" in c.metadata.get("tags", [])]
    assert len(tables) >= 8
    for cell in tables:
        shown = [o for o in cell.outputs if o.output_type == "execute_result"]
        assert shown, cell.source
        data = shown[0]["data"]
        assert "text/html" in data or "text/plain" in data, cell.source
    html_tables = [c for c in tables if "<table" in c.outputs[0]["data"].get("text/html", "")]
    assert len(html_tables) >= len(tables) // 2  # pandas DataFrames, shown as tables
    opened = [c for c in code if "open" in c.metadata.get("tags", [])]
    assert opened and all(c.outputs for c in opened)
    assert any("xarray.Dataset" in str(c.outputs[0]["data"]) for c in opened)
    # the summary is the notebook's opening too
    first_md = [c.source for c in nb.cells if c.cell_type == "markdown"][1]
    assert first_md.startswith("## Summary")


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(CHROMIUM), *CHROMIUM_ARGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_report_renders_in_chromium(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    url = (report / "report.html").resolve().as_uri()
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,2000", url)
    image = matplotlib.image.imread(shot)
    assert image.shape[:2] == (2000, 1200)
    assert image[..., :3].std() > 0.05  # not a blank page
    assert (image[..., :3].mean(axis=-1) < 0.5).mean() > 0.005  # dark pixels: text
    embedded_pngs((report / "report.html").read_text(encoding="utf-8"))  # no broken image


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_every_figure_renders_in_chromium(report: Path, tmp_path: Path) -> None:
    # every SVG of the report, decoded and laid out by the browser (text as <text>)
    svgs = sorted((report / "figures").glob("*.svg"))
    page = tmp_path / "figures.html"
    images = "".join(
        f'<figure><img src="{p.resolve().as_uri()}" style="max-width:1100px"></figure>'
        for p in svgs
    )
    script = (
        "<script>window.addEventListener('load', () => {"
        "const out = [...document.images].map(i => [i.naturalWidth, i.naturalHeight]);"
        "document.body.setAttribute('data-sizes', JSON.stringify(out));});</script>"
    )
    page.write_text(f"<!DOCTYPE html><html><body>{images}{script}</body></html>")
    proc = chromium(
        tmp_path,
        "--allow-file-access-from-files",
        "--virtual-time-budget=10000",
        "--dump-dom",
        page.as_uri(),
    )
    found = re.search(r'data-sizes="([^"]+)"', proc.stdout)
    assert found, proc.stdout[-500:]
    sizes = json.loads(found.group(1).replace("&quot;", '"'))
    assert len(sizes) == len(svgs)
    assert all(w > 200 and h > 150 for w, h in sizes), list(
        zip([p.name for p in svgs], sizes, strict=True)
    )
    shot = tmp_path / "figures.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1200,6000", page.as_uri())
    image = matplotlib.image.imread(shot)
    assert image[..., :3].std() > 0.05


# --------------------------------------------------------------------------- errors, atomicity


@pytest.fixture
def small_store(tmp_path: Path) -> ln.ActivationStore:
    """One run with one identification: a quick report."""
    store = ln.create_store(tmp_path / "small.zarr")
    store.create_run("m/base", n_layers=3, n_neurons=20, sequences=True, counts=counts(0, 3, 20))
    store.save_result("m/base", "identification", "ternary", identify(store.open_run("m/base")))
    return ln.open_store(tmp_path / "small.zarr")


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_report_errors(tmp_path: Path, small_store: ln.ActivationStore) -> None:
    empty = ln.create_store(tmp_path / "empty.zarr")
    with pytest.raises(ParameterError, match=r"^store '.*empty\.zarr' holds no runs; import or"):
        write_report(empty, tmp_path / "r1")
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ParameterError, match=r"^out_dir '.*afile' is a file; give a folder path"):
        write_report(small_store, afile)
    assert afile.read_text() == "x"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(ParameterError, match=r"is a non-empty folder that is not a langneurons"):
        write_report(small_store, foreign)
    assert listing(foreign) == ["keep.txt"]
    with pytest.raises(RunNotFoundError, match=r"^run 'm/nope' is not in store"):
        write_report(small_store, tmp_path / "r2", runs=["m/nope"])
    with pytest.raises(ParameterError, match=r"^runs is empty"):
        write_report(small_store, tmp_path / "r3", runs=[])
    assert not any(
        p.name.startswith((".r1", ".r2", ".r3", "r1", "r2", "r3")) for p in tmp_path.iterdir()
    )


def test_failed_report_leaves_nothing_and_keeps_the_old_one(
    tmp_path: Path, small_store: ln.ActivationStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "reports" / "r"
    path = write_report(small_store.url, out, runs=["m/base"])  # a path works too
    assert path.exists()
    first = listing(out)
    assert "report.html" in first and "report.ipynb" in first and MARKER in first
    html_before = path.read_text()

    def boom(*args: Any, **kwargs: Any) -> list[Path]:
        raise OSError("disk full")

    monkeypatch.setattr(figures, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        write_report(small_store, out)
    assert listing(out) == first and path.read_text() == html_before
    assert sorted(p.name for p in out.parent.iterdir()) == ["r"]  # no temporary folder
    fresh = tmp_path / "fresh"
    with pytest.raises(OSError, match="disk full"):
        write_report(small_store, fresh)
    assert not fresh.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fresh")]
    monkeypatch.undo()
    # an earlier report is replaced by a new one
    write_report(small_store, out, title="second")
    assert "<title>second</title>" in path.read_text()
    assert sorted(p.name for p in out.parent.iterdir()) == ["r"]


def test_a_new_report_keeps_what_the_user_added_to_the_old_ones_folder(
    tmp_path: Path, small_store: ln.ActivationStore
) -> None:
    out = tmp_path / "r"
    write_report(small_store, out, runs=["m/base"])
    made = json.loads((out / MARKER).read_text(encoding="utf-8"))["files"]
    assert "report.html" in made and any(f.startswith("figures/") for f in made)
    (out / "notes.txt").write_text("mine")
    (out / "tables" / "mine.csv").write_text("a,b\n")
    (out / "drafts" / "empty").mkdir(parents=True)
    stale = next(out / f for f in made if f.startswith("figures/"))  # the old report's
    (out / "figures" / "old-figure.svg").write_text("<svg/>")  # listed by no marker: kept
    write_report(small_store, out, title="second")
    assert "<title>second</title>" in (out / "report.html").read_text()
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "tables" / "mine.csv").read_text() == "a,b\n"
    assert (out / "drafts" / "empty").is_dir() and (out / "figures" / "old-figure.svg").exists()
    assert stale.exists()  # written again by the new report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r", "small.zarr"]
    # a file of the user's where the new report writes one: refused, nothing changed
    (out / MARKER).write_text(json.dumps({"files": ["report.md"]}), encoding="utf-8")
    before = listing(out)
    clash = r"' was not written by the earlier report, but the new report writes a file of that"
    with pytest.raises(ParameterError, match=clash):
        write_report(small_store, out)
    assert listing(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_type_switches_and_transitions_are_told_apart(tmp_path: Path) -> None:
    """Both results have count[from_type, to_type]; the switch test (no fraction) was taken
    for a transition table and its figure failed on every report of a compared pair."""
    from langneurons.analysis import type_switches

    store = ln.create_store(tmp_path / "s.zarr")
    for run, seed in (("m/base", 0), ("m/aligned", 1)):
        store.create_run(run, n_layers=3, n_neurons=20, sequences=True, counts=counts(seed, 3, 20))
        store.save_result(run, "identification", "lape", identify(store.open_run(run), "lape"))
    base, aligned = store.open_run("m/base"), store.open_run("m/aligned")
    a, b = (store.open_result(r, "identification", "lape") for r in ("m/base", "m/aligned"))
    store.save_result("m/aligned", "compare", "vs-base/transitions", transition_table(a, b))
    switches = type_switches(base, aligned, "lape", params=IdentifyParams(top_rate=0.1), n_perm=9)
    store.save_result("m/aligned", "compare", "vs-base/switches", switches)
    text = write_report(store, tmp_path / "out").read_text(encoding="utf-8")
    assert "could not be drawn" not in text
    assert "paired type-switch test between two runs (type_switches)" in text
    assert "type transitions between two runs (transition_table)" in text


def test_report_without_saved_results(tmp_path: Path) -> None:
    store = ln.create_store(tmp_path / "bare.zarr")
    store.create_run("bare", n_layers=2, n_neurons=5, sequences=True, counts=counts(2, 2, 5))
    path = write_report(store, tmp_path / "out")
    text = path.read_text()
    assert "Run bare" in text and "<img" not in text
    assert not list((tmp_path / "out" / "figures").iterdir())
    nb = json.loads((tmp_path / "out" / "report.ipynb").read_text())
    sources = [c["source"] for c in nb["cells"] if c["cell_type"] == "code"]
    assert sources[0] == "STORE = '../bare.zarr'"
    assert sources[2] == "run = store.open_run('bare')\nrun"  # the run, to continue from
    assert len(sources) == 3
    shutil.rmtree(tmp_path / "out")
    assert os.listdir(tmp_path) == ["bare.zarr"]


def test_report_draws_saved_deactivation_effects_instead_of_deriving(tmp_path: Path) -> None:
    """`stats deactivation` saves the effects with the ablation's name; the report reads them."""
    store = ln.create_store(tmp_path / "s.zarr")
    store.create_run("m", n_layers=2, n_neurons=5, sequences=True, counts=counts(2, 2, 5))
    abl = ablation(LANGS, controls=3)  # too few controls for a test at 0.05
    store.save_result("m", "ablation", "ternary", abl)
    derived_code = "deactivation_effects(store.open_result('m', 'ablation', 'ternary')"
    write_report(store, tmp_path / "derived")
    qmd = (tmp_path / "derived" / "report.qmd").read_text()
    assert derived_code + ", alpha=None, n_perm=1000)" in qmd

    effects = deactivation_effects(abl, alpha=None, n_perm=50)
    assert effects.attrs["inference"] == "descriptive"
    effects.attrs["ablation"] = "ternary"
    store.save_result("m", "stats", "deactivation", effects)
    write_report(store, tmp_path / "saved")
    qmd = (tmp_path / "saved" / "report.qmd").read_text()
    assert derived_code not in qmd
    assert "deactivation_heatmap(store.open_result('m', 'stats', 'deactivation'))" in qmd
