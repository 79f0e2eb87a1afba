"""The ``stats``, ``compare`` and ``ablate`` commands (registered on the main CLI group)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:  # numpy, xarray and the rooms are imported inside the commands that need them
    import xarray as xr

# Variables larger than this are saved in the store but left out of --json output.
JSON_MAX_SIZE = 20_000


def to_jsonable(ds: xr.Dataset, saved: str | None = None) -> dict[str, Any]:
    """A result Dataset as plain JSON data: attrs, and every small variable with its dims."""
    out: dict[str, Any] = {"saved": saved, "attrs": _clean(ds.attrs), "variables": {}}
    for name, var in ds.variables.items():
        if var.size > JSON_MAX_SIZE:
            out["variables"][name] = {
                "dims": list(var.dims),
                "shape": list(var.shape),
                "omitted": "too large; read it from the store",
            }
            continue
        out["variables"][name] = {"dims": list(var.dims), "values": _clean(var.values.tolist())}
    return out


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    import numpy as np

    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def emit(results: dict[str, tuple[xr.Dataset, str | None]], as_json: bool) -> None:
    """Print results (name -> (dataset, where saved)) as JSON or as their headline tables."""
    from langneurons._cli_tables import headline

    if as_json:
        data = {name: to_jsonable(ds, path) for name, (ds, path) in results.items()}
        click.echo(json.dumps(data, indent=2))
        return
    for name, (ds, path) in results.items():
        click.echo(f"{name}: " + (f"saved at {path}" if path else "not saved (--no-save)"))
        for line in headline(name, ds):
            click.echo(line)


def results_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Where an analysis saves its results: the store itself, another store, or nowhere."""
    options = [
        click.option(
            "--results-store",
            default=None,
            metavar="PATH",
            help="Save results in this writable store (made if missing) instead of STORE; "
            "for read-only stores: a shared zip, a read-only folder or bucket.",
        ),
        click.option("--no-save", is_flag=True, help="Print the results without saving them."),
        click.option(
            "--allow-incomplete",
            is_flag=True,
            help="Analyse a run whose extraction has not committed every unit (refused otherwise).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


class Target:
    """The store an analysis reads, and where its results go (``--results-store``/``--no-save``).

    Without either option, results are saved in the analysed store itself; a store that cannot
    be written (a zip, an ``http(s)://`` URL, a folder without write permission) is refused up
    front with the two options named, before anything is computed.
    """

    def __init__(
        self,
        store: str,
        results_store: str | None = None,
        no_save: bool = False,
        allow_incomplete: bool = False,
    ):
        from langneurons.errors import ParameterError
        from langneurons.store import create_store, open_store

        if results_store and no_save:
            raise ParameterError("--results-store and --no-save exclude each other; choose one")
        self.url, self.no_save = store, no_save
        self.allow_incomplete = allow_incomplete
        if results_store or no_save:
            self.source = open_store(store)
        else:
            why = _read_only_reason(store)
            if why:
                raise ParameterError(
                    f"store {store!r} is read-only ({why}); save the results in a writable store "
                    "with --results-store PATH, or print them without saving with --no-save"
                )
            self.source = open_store(store, mode="r+")
        self.results = create_store(results_store, exist_ok=True) if results_store else self.source
        self.results_url = results_store
        self._linked: set[str] = set()  # runs linked in the results store by this command

    def open_run(self, run: str) -> xr.Dataset:
        return self.source.open_run(run, allow_incomplete=self.allow_incomplete)

    def open_result(self, run: str, kind: str, name: str) -> xr.Dataset:
        """A saved result: from the results store first, then from the analysed store."""
        if self.results is not self.source:
            try:
                return self.results.open_result(run, kind, name)
            except LookupError:
                pass
        return self.source.open_result(run, kind, name)

    def save(self, run: str, kind: str, name: str, ds: xr.Dataset) -> str | None:
        """Save a result; return where (None with --no-save)."""
        if self.no_save:
            return None
        if self.results is not self.source:
            if run not in self._linked:  # once per run, not once per saved part
                self.results.link_run(run, self.source)
                self._linked.add(run)
            return f"{self.results.save_result(run, kind, name, ds)} in {self.results_url}"
        return self.source.save_result(run, kind, name, ds)


def _read_only_reason(store: str) -> str | None:
    """Why a store cannot take results, or None when it can."""
    import os
    from pathlib import Path

    if store.endswith(".zip"):
        return "a zip file"
    if store.startswith(("http://", "https://")):
        return "an HTTP URL"
    path = (
        Path(store.removeprefix("file://"))
        if "://" not in store or store.startswith("file://")
        else None
    )
    if path is not None and path.is_dir() and not os.access(path, os.W_OK):
        return "no write permission"
    return None


def identify_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The identification parameters, for commands that re-run identification."""
    options = [
        click.option(
            "--method", type=click.Choice(["ternary", "lape"]), default="ternary", show_default=True
        ),
        click.option(
            "--role",
            type=click.Choice(["response", "prompt", "all"]),
            default="response",
            show_default=True,
        ),
        click.option("--top-rate", type=float, default=0.01, show_default=True),
        click.option("--bar", type=float, default=0.95, show_default=True),
        click.option("--filter-rate", type=float, default=0.95, show_default=True),
        click.option("--lambda", "lam", default="auto", show_default=True),
        click.option("--lambda-range", default="0.0,0.2", show_default=True),
        click.option("--eps", type=float, default=1e-3, show_default=True),
        click.option(
            "--lambda-widen",
            type=int,
            default=0,
            show_default=True,
            help="Double the top of --lambda-range up to N times while the condition holds there.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def identify_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    """Pop the identification options out of a command's parameters, as identify() kwargs."""
    from langneurons.cli import _parse_lambda, _parse_range

    return {
        "role": params.pop("role"),
        "top_rate": params.pop("top_rate"),
        "bar": params.pop("bar"),
        "filter_rate": params.pop("filter_rate"),
        "lam": _parse_lambda(params.pop("lam")),
        "lam_range": _parse_range(params.pop("lambda_range")),
        "eps": params.pop("eps"),
        "lam_widen": params.pop("lambda_widen"),
    }


def _only(kwargs: dict[str, Any], method: str) -> dict[str, Any]:
    """Drop the parameters a rule does not take (LAPE has no lambda)."""
    if method == "lape":
        return {
            k: v for k, v in kwargs.items() if k not in ("lam", "lam_range", "eps", "lam_widen")
        }
    return {k: v for k, v in kwargs.items() if k != "filter_rate"}


def register(cli: click.Group) -> None:
    """Add ``stats``, ``compare`` and ``ablate`` to the main group."""

    @cli.group()
    def stats() -> None:
        """Statistics on one run, saved under RUN/stats/NAME."""

    @stats.command("stages")
    @click.argument("store")
    @click.option("--run", required=True)
    @click.option("--n-stages", type=int, default=4, show_default=True)
    @click.option("--n-boot", type=int, default=200, show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--name", default="stages", show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    @results_options
    @identify_options
    def stats_stages(
        store: str,
        run: str,
        n_stages: int,
        n_boot: int,
        seed: int,
        name: str,
        as_json: bool,
        results_store: str | None,
        no_save: bool,
        allow_incomplete: bool,
        method: str,
        **params: Any,
    ) -> None:
        """Four-stage partition of the layers with bootstrap intervals on the boundaries."""
        from langneurons.analysis.stages import bootstrap_stages

        target = Target(store, results_store, no_save, allow_incomplete)
        kwargs = _only(identify_kwargs(params), method)
        ds = bootstrap_stages(
            target.open_run(run),
            n_stages=n_stages,
            n_boot=n_boot,
            seed=seed,
            method=method,
            **kwargs,
        )
        emit({"stages": (ds, target.save(run, "stats", name, ds))}, as_json)

    @stats.command("deactivation")
    @click.argument("store")
    @click.option("--run", required=True)
    @click.option("--ablation", required=True, help="Name of a saved `langneurons ablate` result.")
    @click.option("--n-perm", type=int, default=10000, show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--name", default="deactivation", show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    @results_options
    def stats_deactivation(
        store: str,
        run: str,
        ablation: str,
        n_perm: int,
        seed: int,
        name: str,
        as_json: bool,
        results_store: str | None,
        no_save: bool,
        allow_incomplete: bool,
    ) -> None:
        """Diagonal dominance of deactivation damage against random-neuron controls."""
        from langneurons.analysis.deactivation import deactivation_effects

        target = Target(store, results_store, no_save, allow_incomplete)
        ds = deactivation_effects(
            target.open_result(run, "ablation", ablation), n_perm=n_perm, seed=seed
        )
        emit({"deactivation": (ds, target.save(run, "stats", name, ds))}, as_json)

    @stats.command("probability")
    @click.argument("store")
    @click.option("--run", required=True)
    @click.option("--role", type=click.Choice(["response", "prompt", "all"]), default="response")
    @click.option(
        "--method",
        type=click.Choice(["auto", "bootstrap", "cluster", "wilson"]),
        default="auto",
        show_default=True,
    )
    @click.option("--ci", type=float, default=0.95, show_default=True)
    @click.option("--n-boot", type=int, default=1000, show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--name", default="probability", show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    @results_options
    def stats_probability(
        store: str,
        run: str,
        role: str,
        method: str,
        ci: float,
        n_boot: int,
        seed: int,
        name: str,
        as_json: bool,
        results_store: str | None,
        no_save: bool,
        allow_incomplete: bool,
    ) -> None:
        """Activation probabilities with confidence intervals."""
        from langneurons.analysis.uncertainty import activation_probability

        target = Target(store, results_store, no_save, allow_incomplete)
        ds = activation_probability(
            target.open_run(run), role=role, method=method, ci=ci, n_boot=n_boot, seed=seed
        )
        emit({"probability": (ds, target.save(run, "stats", name, ds))}, as_json)

    @stats.command("tests")
    @click.argument("store")
    @click.option("--run", required=True)
    @click.option("--role", type=click.Choice(["response", "prompt", "all"]), default="response")
    @click.option(
        "--method",
        type=click.Choice(["auto", "cluster", "binomial"]),
        default="auto",
        show_default=True,
    )
    @click.option(
        "--correction", type=click.Choice(["fdr_bh", "fdr_by"]), default="fdr_bh", show_default=True
    )
    @click.option("--alpha", type=float, default=0.05, show_default=True)
    @click.option(
        "--identification",
        default=None,
        help="Compare the significant neurons with this saved identification.",
    )
    @click.option("--name", default="tests", show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    @results_options
    def stats_tests(
        store: str,
        run: str,
        role: str,
        method: str,
        correction: str,
        alpha: float,
        identification: str | None,
        name: str,
        as_json: bool,
        results_store: str | None,
        no_save: bool,
        allow_incomplete: bool,
    ) -> None:
        """Per-neuron, per-language tests of higher activation, with FDR control."""
        from langneurons.analysis.neuron_tests import (
            compare_with_identification,
            language_preference_tests,
        )

        target = Target(store, results_store, no_save, allow_incomplete)
        ds = language_preference_tests(
            target.open_run(run), role=role, method=method, correction=correction, alpha=alpha
        )
        results = {"tests": (ds, target.save(run, "stats", name, ds))}
        if identification:
            ident = target.open_result(run, "identification", identification)
            versus = compare_with_identification(ds, ident)
            import xarray as xr

            if not isinstance(versus, xr.Dataset):
                versus = xr.Dataset(attrs=_clean(versus))
            path = target.save(run, "stats", f"{name}-vs-{identification}", versus)
            results["versus_identification"] = (versus, path)
        emit(results, as_json)

    @stats.command("stability")
    @click.argument("store")
    @click.option("--run", required=True)
    @click.option("--n-boot", type=int, default=200, show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--name", default=None, help="Default: stability-METHOD.")
    @click.option("--json", "as_json", is_flag=True)
    @results_options
    @identify_options
    def stats_stability(
        store: str,
        run: str,
        n_boot: int,
        seed: int,
        name: str | None,
        as_json: bool,
        results_store: str | None,
        no_save: bool,
        allow_incomplete: bool,
        method: str,
        **params: Any,
    ) -> None:
        """Bootstrap the whole identification over sequences: selection frequency, Jaccard, CIs."""
        from langneurons.analysis.stability import bootstrap_identification

        target = Target(store, results_store, no_save, allow_incomplete)
        kwargs = _only(identify_kwargs(params), method)
        ds = bootstrap_identification(
            target.open_run(run), method, n_boot=n_boot, seed=seed, **kwargs
        )
        path = target.save(run, "stats", name or f"stability-{method}", ds)
        emit({"stability": (ds, path)}, as_json)

    @cli.group()
    def compare() -> None:
        """Compare runs (base vs aligned, or a series of checkpoints); saved under compare/."""

    @compare.command("runs")
    @click.argument("store")
    @click.option("--base", required=True, help="The base run.")
    @click.option("--aligned", required=True, help="The aligned (or other) run.")
    @click.option(
        "--trained-languages",
        default=None,
        help="Languages the aligned model was trained on: test spontaneous alignment.",
    )
    @click.option("--n-boot", type=int, default=200, show_default=True)
    @click.option("--n-perm", type=int, default=10000, show_default=True)
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--name", default=None, help="Default: vs-BASE (slashes become '_').")
    @click.option("--json", "as_json", is_flag=True)
    @results_options
    @identify_options
    def compare_runs(
        store: str,
        base: str,
        aligned: str,
        trained_languages: str | None,
        n_boot: int,
        n_perm: int,
        seed: int,
        name: str | None,
        as_json: bool,
        results_store: str | None,
        no_save: bool,
        allow_incomplete: bool,
        method: str,
        **params: Any,
    ) -> None:
        """Type distributions, per-layer change, overlaps, transitions and McNemar of two runs."""
        from langneurons.analysis import compare as cmp
        from langneurons.analysis import distributions as dist
        from langneurons.analysis.identify import identify
        from langneurons.cli import _split_languages

        target = Target(store, results_store, no_save, allow_incomplete)
        kwargs = _only(identify_kwargs(params), method)
        base_run, aligned_run = target.open_run(base), target.open_run(aligned)
        a = identify(base_run, method, **kwargs)
        b = identify(aligned_run, method, **kwargs)
        prefix = name or f"vs-{base.replace('/', '_')}"
        parts: dict[str, xr.Dataset] = {
            "types": dist.compare_type_distributions(a, b),
            "overlap": cmp.overlap(a, b),
            "transitions": cmp.transition_table(a, b),
            "mcnemar": cmp.mcnemar(a, b),
        }
        has_seq = "seq_n_active" in base_run and "seq_n_active" in aligned_run
        if has_seq and n_boot > 0:
            parts["type_change"] = dist.type_change(
                base_run, aligned_run, method, n_boot=n_boot, seed=seed, **kwargs
            )
            parts["shared_by_change"] = dist.shared_by_change(
                base_run, aligned_run, method, n_boot=n_boot, seed=seed, **kwargs
            )
        if trained_languages:
            parts["spontaneous"] = cmp.spontaneous_alignment(
                base_run,
                aligned_run,
                _split_languages(trained_languages),
                method=method,
                n_boot=n_boot if has_seq else 0,
                n_perm=n_perm,
                seed=seed,
                **kwargs,
            )
        results = {
            part: (ds, target.save(aligned, "compare", f"{prefix}/{part}", ds))
            for part, ds in parts.items()
        }
        emit(results, as_json)

    @compare.command("checkpoints")
    @click.argument("store")
    @click.option("--runs", "runs_", required=True, help="Comma-separated runs, in order.")
    @click.option("--labels", default=None, help="Comma-separated labels (default: the runs).")
    @click.option("--name", default="checkpoints", show_default=True)
    @click.option("--json", "as_json", is_flag=True)
    @results_options
    @identify_options
    def compare_checkpoints(
        store: str,
        runs_: str,
        labels: str | None,
        name: str,
        as_json: bool,
        results_store: str | None,
        no_save: bool,
        allow_incomplete: bool,
        method: str,
        **params: Any,
    ) -> None:
        """Trajectories of every count over an ordered series of runs, and Cochran's Q."""
        from langneurons.analysis import compare as cmp
        from langneurons.analysis.identify import identify
        from langneurons.cli import _split_languages

        target = Target(store, results_store, no_save, allow_incomplete)
        kwargs = _only(identify_kwargs(params), method)
        names = _split_languages(runs_)
        results_ = [identify(target.open_run(r), method, **kwargs) for r in names]
        tags = _split_languages(labels) if labels else names
        parts = {
            "trajectories": cmp.trajectories(results_, tags),
            "cochran_q": cmp.cochran_q(results_, labels=tags),
        }
        out = {
            part: (ds, target.save(names[-1], "compare", f"{name}/{part}", ds))
            for part, ds in parts.items()
        }
        emit(out, as_json)

    @cli.command()
    @click.option(
        "--model",
        required=True,
        help="The run's model: directory, .gguf file, or Hugging Face id in the local cache.",
    )
    @click.option("--gguf-file", default=None)
    @click.option("--revision", default=None, help="Branch, tag or commit of a Hugging Face id.")
    @click.option(
        "--allow-download",
        is_flag=True,
        help="Download a Hugging Face id that is not in the local cache.",
    )
    @click.option("--store", "store_url", required=True)
    @click.option("--run", required=True)
    @click.option("--identification", required=True, help="A saved identification of the run.")
    @click.option("--data", required=True, help="Evaluation records (JSONL or MAPO JSON).")
    @click.option("--languages", default=None, help="Evaluate only these languages.")
    @click.option(
        "--controls",
        type=int,
        default=3,
        show_default=True,
        help="Random-neuron controls per language.",
    )
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--batch-tokens", type=int, default=4096, show_default=True)
    @click.option("--max-length", type=int, default=1024, show_default=True)
    @click.option("--device", default="auto", show_default=True)
    @click.option("--dtype", default="auto", show_default=True)
    @click.option("--chat-template", is_flag=True)
    @click.option("--hook-module", default=None)
    @click.option("--trust-remote-code", is_flag=True)
    @click.option("--name", default=None, help="Default: the identification's name.")
    @click.option(
        "--resume",
        is_flag=True,
        help="Complete an interrupted ablation of that name (same parameters).",
    )
    @click.option(
        "--checkpoint-seconds",
        type=float,
        default=10.0,
        show_default=True,
        help="Save finished units at most this often (0: after every unit).",
    )
    @click.option("--json", "as_json", is_flag=True)
    def ablate(
        model: str,
        gguf_file: str | None,
        revision: str | None,
        allow_download: bool,
        store_url: str,
        run: str,
        identification: str,
        data: str,
        languages: str | None,
        controls: int,
        seed: int,
        batch_tokens: int,
        max_length: int,
        device: str,
        dtype: str,
        chat_template: bool,
        hook_module: str | None,
        trust_remote_code: bool,
        name: str | None,
        resume: bool,
        checkpoint_seconds: float,
        as_json: bool,
    ) -> None:
        """Deactivate each language's neurons and measure every language's perplexity.

        Finished (deactivated set, language) units are saved every --checkpoint-seconds; --resume
        completes a killed run with the same result an uninterrupted one gives.
        """
        from langneurons.cli import _split_languages
        from langneurons.extract.ablation import ablate as run_ablate

        ds = run_ablate(
            model,
            store_url,
            run,
            identification,
            data,
            gguf_file=gguf_file,
            languages=_split_languages(languages) or None,
            controls=controls,
            seed=seed,
            batch_tokens=batch_tokens,
            max_length=max_length,
            device=device,
            dtype=dtype,
            chat_template=chat_template,
            hook_module=hook_module,
            trust_remote_code=trust_remote_code,
            name=name,
            resume=resume,
            checkpoint_seconds=checkpoint_seconds,
            revision=revision,
            allow_download=allow_download,
        )
        path = f"{run}/ablation/{name or identification}"
        if as_json:
            emit({"ablation": (ds, path)}, True)
            return
        click.echo(f"ablation saved at {path}; perplexity (rows deactivated, columns evaluated):")
        evaluated = [str(x) for x in ds.evaluated.values]
        click.echo(f"{'':<10}" + "".join(f"{x:>10}" for x in evaluated))
        for label in ds.deactivated.values:
            row = ds.ppl.sel(deactivated=label).values
            click.echo(f"{str(label):<10}" + "".join(f"{v:>10.3f}" for v in row))
