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
from matplotlib.figure import Figure

import langneurons as ln
from langneurons.analysis import (
    bootstrap_stages,
    compare_type_distributions,
    deactivation_effects,
    identify,
    mcnemar,
    overlap,
    shared_by_change,
    transition_table,
    type_change,
)
from langneurons.errors import InputFormatError, ParameterError, RunNotFoundError
from langneurons.reports import figures, write_report
from langneurons.reports.report import MARKER

from .conftest import make_counts, run_python

LANGS = ["en", "de", "fr", "zh"]
KW: dict[str, Any] = {"top_rate": 0.1}
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


def ablation(langs: list[str], controls: int = 6, seed: int = 0) -> xr.Dataset:
    """A synthetic ablation result: own-language damage 0.5, others and controls ~0.05."""
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
        "stages": bootstrap_stages(base, n_boot=4, **KW),
        "type_change": type_change(base, aligned, n_boot=4, **KW),
        "shared_by_change": shared_by_change(base, aligned, n_boot=4, **KW),
        "overlap": overlap(ib, ia),
        "transitions": transition_table(ib, ia),
        "ablation": ablation(LANGS),
    }
    if HAS_STABILITY:
        from langneurons.analysis.stability import bootstrap_identification

        out["stability"] = bootstrap_identification(base, n_boot=4, **KW)
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
        # three type lines, plus a boundary interval per stage boundary
        assert len(a.lines) >= 3
        assert len(a.patches) >= 2  # shaded stages
        assert {t.get_text() for t in a.texts} >= {"1", "2", "3", "4"}
    assert len(fig.legends) == 2  # types, stages


def _check_type_change(fig: Figure) -> None:
    main = fig.axes[0]
    assert len(main.collections) == 4  # one interval bar set per type
    assert len(main.lines) >= 4
    assert len(fig.axes[1].collections) == 4  # totals


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
    "layer_types": (_layer_types, 2, _check_layer_types),
    "type_change": (lambda r: figures.type_change(r["type_change"]), 2, _check_type_change),
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
    "overlap_languages": (lambda r: figures.overlap_matrix(r["base"]), 2, _cells(K * K)),
    "overlap_runs": (
        lambda r: figures.overlap_matrix([r["base"], r["aligned"], r["base"]], ["a", "b", "c"]),
        2,
        _cells(9),
    ),
    "overlap_result": (lambda r: figures.overlap_matrix(r["overlap"]), 2, _cells(K * 3)),
    "transitions": (lambda r: figures.transitions(r["transitions"]), 2, _cells(25)),
    # heatmap, dominance, colour bar
    "deactivation": (lambda r: figures.deactivation_heatmap(r["ablation"]), 3, _check_deactivation),
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
    assert png.startswith(PNG_MAGIC)
    image = matplotlib.image.imread(io.BytesIO(png))
    assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0.01


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
    fig3 = Figure()
    one = fig3.subplots()
    assert figures.type_change(res["type_change"], ax=one) is fig3  # main panel only
    assert figures.deactivation_heatmap(res["ablation"], ax=Figure().subplots()) is not None


def test_figure_input_errors(res: dict[str, xr.Dataset], tmp_path: Path) -> None:
    with pytest.raises(
        InputFormatError,
        match=r"^results must be an identification result; it lacks variables "
        r"\['neuron_type', 'general'\]",
    ):
        figures.layer_types(xr.Dataset())
    with pytest.raises(ParameterError, match=r"^labels must be 2 names \(one per result\)"):
        figures.layer_types([res["base"], res["aligned"]], labels=["x"])
    with pytest.raises(ParameterError, match=r"^ax must be 2 matplotlib Axes for this figure"):
        figures.layer_types([res["base"], res["aligned"]], ax=Figure().subplots())
    with pytest.raises(ParameterError, match=r"^stages must be None, one Dataset, or 2"):
        figures.layer_types([res["base"], res["aligned"]], stages=[res["stages"]])
    with pytest.raises(InputFormatError, match=r"^ablation.deactivated has no 'none' row"):
        figures.deactivation_heatmap(res["ablation"].sel(deactivated=LANGS))
    with pytest.raises(InputFormatError, match=r"^result has no attrs\['per_language'\]"):
        figures.per_language(res["stages"])
    with pytest.raises(ParameterError, match=r"^give at least 2 results to compare runs"):
        figures.overlap_matrix([res["base"]])
    with pytest.raises(ParameterError, match=r"^formats must be among svg, png, pdf"):
        figures.save(Figure(), tmp_path / "x", ("jpg",))


def test_language_overlap_is_the_jaccard_of_the_masks(res: dict[str, xr.Dataset]) -> None:
    result = res["base"]
    fig = figures.overlap_matrix(result)
    mask = result["mask"].values.reshape(K, -1)
    i, j = 0, 3
    both, union = (mask[i] & mask[j]).sum(), (mask[i] | mask[j]).sum()
    texts = {
        (round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
        for t in fig.axes[0].texts
    }
    assert texts[(i, j)] == f"{both / union:.2f}"
    assert texts[(i, i)] == "1.00"


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
                provenance={"method": "extracted", "command": "<script>alert(1)</script>"},
            ),
        )
    base, aligned = store.open_run("m/base"), store.open_run("m/aligned")
    for run, ds in (("m/base", base), ("m/aligned", aligned)):
        store.save_result(run, "identification", "ternary", identify(ds, **KW))
        store.save_result(run, "stats", "stages", bootstrap_stages(ds, n_boot=3, **KW))
    ib, ia = identify(base, **KW), identify(aligned, **KW)
    parts = {
        "type_change": type_change(base, aligned, n_boot=3, **KW),
        "shared_by_change": shared_by_change(base, aligned, n_boot=3, **KW),
        "overlap": overlap(ib, ia),
        "transitions": transition_table(ib, ia),
        "types": compare_type_distributions(ib, ia),
        "mcnemar": mcnemar(ib, ia),
    }
    for part, ds in parts.items():
        store.save_result("m/aligned", "compare", f"vs-base/{part}", ds)
    store.save_result("m/base", "ablation", "ternary", ablation(LANGS))
    if HAS_TESTS:
        from langneurons.analysis.neuron_tests import language_preference_tests

        store.save_result("m/base", "stats", "tests", language_preference_tests(base))
    if HAS_STABILITY:
        from langneurons.analysis.stability import bootstrap_identification

        store.save_result(
            "m/base", "stats", "stability", bootstrap_identification(base, n_boot=3, **KW)
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


def _code_cells(qmd: str) -> list[str]:
    return re.findall(r"```\{python\}\n(.*?)```", qmd, flags=re.S)


@pytest.mark.slow
def test_report_qmd_uses_the_public_api(report: Path) -> None:
    qmd = (report / "report.qmd").read_text(encoding="utf-8")
    store = str((report.parent / "store.zarr").resolve())
    header = qmd.split("---", 2)[1]
    assert "params:" in header and f"STORE: {json.dumps(store)}" in header
    assert "jupyter: python3" in header
    cells = _code_cells(qmd)
    assert cells[0] == f"#| tags: [parameters]\nSTORE = {store!r}\n"
    assert "import langneurons\n" in cells[1]
    assert "store = langneurons.open_store(STORE)" in cells[1]
    assert "from langneurons.reports import figures" in cells[1]
    figure_cells = cells[2:]
    assert len(figure_cells) == len(list((report / "figures").glob("*.png")))
    for cell in figure_cells:
        label, caption, *_ = cell.splitlines()
        assert re.fullmatch(r"#\| label: fig-[a-z0-9-]+", label)
        assert caption.startswith("#| fig-cap: ")
    code = "\n".join(
        line for cell in cells for line in cell.splitlines() if not line.startswith("#|")
    )
    imports = re.findall(r"^\s*(?:from|import) .*$", code, flags=re.M)
    assert sorted(imports) == ["from langneurons.reports import figures", "import langneurons"]
    calls = re.findall(r"\b((?:[A-Za-z_][\w]*\.)+[A-Za-z_]\w*)\(", code)
    public = set(figures.__all__)
    for call in calls:
        head, _, func = call.rpartition(".")
        assert (head == "figures" and func in public) or call in (
            "store.open_result",
            "langneurons.open_store",
        ), call
    assert "_" not in "".join(re.findall(r"figures\.(_\w+)", code))


@pytest.mark.slow
def test_report_notebook_runs(
    report: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(report / "report.ipynb", as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].metadata["tags"] == ["parameters"]
    store = str((report.parent / "store.zarr").resolve())
    assert code[0].source == f"STORE = {store!r}"
    # a kernel spec named python3 that runs this interpreter (the venv's), found first
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "langneurons tests", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    work = tmp_path / "work"
    work.mkdir()
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(work)}}
    )
    client.execute()
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == len(code) - 2 == len(list((report / "figures").glob("*.png")))
    for o in images:
        assert base64.b64decode(o["data"]["image/png"]).startswith(PNG_MAGIC)


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_report_renders_in_chromium(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={shot}",
            "--window-size=1200,2000",
            (report / "report.html").resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    image = matplotlib.image.imread(shot)
    assert image.shape[:2] == (2000, 1200)
    assert image[..., :3].std() > 0.05  # not a blank page
    assert (image[..., :3].mean(axis=-1) < 0.5).mean() > 0.005  # dark pixels: text
    embedded_pngs((report / "report.html").read_text(encoding="utf-8"))  # no broken image


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


def test_report_without_saved_results(tmp_path: Path) -> None:
    store = ln.create_store(tmp_path / "bare.zarr")
    store.create_run("bare", n_layers=2, n_neurons=5, sequences=True, counts=counts(2, 2, 5))
    path = write_report(store, tmp_path / "out")
    text = path.read_text()
    assert "Run bare" in text and "<img" not in text
    assert not list((tmp_path / "out" / "figures").iterdir())
    nb = json.loads((tmp_path / "out" / "report.ipynb").read_text())
    sources = [c["source"] for c in nb["cells"] if c["cell_type"] == "code"]
    assert len(sources) == 2 and sources[0].startswith("STORE = ")
    shutil.rmtree(tmp_path / "out")
    assert os.listdir(tmp_path) == ["bare.zarr"]
