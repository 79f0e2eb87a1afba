"""What the commands share: option groups declared once, their parsing, and the results target.

Light on purpose: click and the standard library only. The rooms (store, analysis, extract)
are imported inside the functions that use them, so ``langneurons --help`` stays fast.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click

from langneurons._defaults import IDENTIFY as _D

if TYPE_CHECKING:  # imported inside the functions that need them
    import xarray as xr

    from langneurons.analysis.params import IdentifyParams
    from langneurons.plain import PlainDataset
    from langneurons.store import ActivationStore

EXIT_ERROR = 1
EXIT_USAGE = 2


def echo_json(data: Any) -> None:
    """Print ``data`` as indented JSON (anything else as its ``str``)."""
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def split_list(value: str | None) -> list[str]:
    """``"en, de,,fr"`` -> ``["en", "de", "fr"]``; None -> ``[]``."""
    if value is None:
        return []
    return [x.strip() for x in value.split(",") if x.strip()]


def _apply(options: Sequence[Any], func: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(options):
        func = option(func)
    return func


# --------------------------------------------------------------------------- identification
def parse_lambda(value: str) -> str | float:
    """``--lambda``: ``"auto"`` or a number."""
    if value == "auto":
        return "auto"
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither 'auto' nor a number") from None


def parse_range(value: str) -> tuple[float, float]:
    """``--lambda-range``: ``LO,HI``."""
    try:
        lo, hi = (float(x) for x in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not LO,HI (e.g. 0,0.2)") from None
    return lo, hi


#: The identification options: (click parameter name, IdentifyParams field, parser). Their
#: defaults are IdentifyParams' own (a test pins that they agree).
IDENTIFY_FIELDS: tuple[tuple[str, str, Callable[[Any], Any]], ...] = (
    ("method", "method", str),
    ("role", "role", str),
    ("top_rate", "top_rate", float),
    ("bar", "bar", float),
    ("filter_rate", "filter_rate", float),
    ("lam", "lam", parse_lambda),
    ("lambda_range", "lam_range", parse_range),
    ("eps", "eps", float),
    ("lambda_widen", "lam_widen", int),
)


def identify_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The identification parameters (every command that runs an identification takes them)."""
    options = [
        click.option(
            "--method",
            type=click.Choice(["ternary", "lape"]),
            default=_D["method"],
            show_default=True,
            help="ternary: entropy-lambda rule; lape: the LAPE baseline.",
        ),
        click.option(
            "--role",
            type=click.Choice(["response", "prompt", "all"]),
            default=_D["role"],
            show_default=True,
            help="Which tokens' counts to use.",
        ),
        click.option("--top-rate", type=float, default=_D["top_rate"], show_default=True),
        click.option("--bar", type=float, default=_D["bar"], show_default=True),
        click.option(
            "--filter-rate",
            type=float,
            default=_D["filter_rate"],
            show_default=True,
            help="LAPE only.",
        ),
        click.option(
            "--lambda",
            "lam",
            default=_D["lam"],
            show_default=True,
            help="auto, or a fixed lambda (ternary only).",
        ),
        click.option(
            "--lambda-range",
            default=",".join(str(x) for x in _D["lam_range"]),
            show_default=True,
            help="LO,HI searched by the automatic lambda.",
        ),
        click.option("--eps", type=float, default=_D["eps"], show_default=True),
        click.option(
            "--lambda-widen",
            type=int,
            default=_D["lam_widen"],
            show_default=True,
            help="Double the top of --lambda-range up to N times (at most 10) while the "
            "automatic lambda's condition still holds there.",
        ),
    ]
    return _apply(options, func)


#: The option that sets each IdentifyParams field, to name it in errors.
_OPTION_OF = {field: "--" + name.replace("_", "-") for name, field, _ in IDENTIFY_FIELDS}
_OPTION_OF["lam"] = "--lambda"


def identify_params(values: dict[str, Any]) -> IdentifyParams:
    """Pop the identification options out of a command's parameters, as one IdentifyParams.

    An option the chosen rule does not use (``--lambda`` for LAPE, ``--filter-rate`` for the
    ternary rule) is refused rather than ignored, and errors name the options, not the
    Python parameters.
    """
    from langneurons.analysis.params import IdentifyParams
    from langneurons.errors import ParameterError

    given = {field: parse(values.pop(name)) for name, field, parse in IDENTIFY_FIELDS}
    unused = {"lape": ("lam", "lam_range", "lam_widen"), "ternary": ("filter_rate",)}
    for field in unused.get(str(given["method"]), ()):
        if given[field] != _D[field]:  # the options' defaults are IdentifyParams' own
            raise ParameterError(
                f"{_OPTION_OF[field]} does not apply to --method {given['method']} (it is "
                f"the {'ternary' if field != 'filter_rate' else 'LAPE'} rule's); drop it"
            )
    try:
        return IdentifyParams(**given)
    except ParameterError as exc:
        text = str(exc)
        first = text.split(" ", 1)[0]
        if first in _OPTION_OF:
            raise ParameterError(_OPTION_OF[first] + text[len(first) :]) from exc
        raise


# --------------------------------------------------------------------------- results
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
    return _apply(options, func)


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
        self.source: ActivationStore
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

    def read_run(self, run: str, variables: Sequence[str]) -> PlainDataset:
        """Some variables of a run, read whole into numpy without importing xarray."""
        return self.source.read_run(
            run, variables=variables, allow_incomplete=self.allow_incomplete
        )

    def open_result(self, run: str, kind: str, name: str) -> xr.Dataset:
        """A saved result: from the results store first, then from the analysed store."""
        if self.results is not self.source:
            try:
                return self.results.open_result(run, kind, name)
            except LookupError:
                pass
        return self.source.open_result(run, kind, name)

    def save(self, run: str, kind: str, name: str, ds: xr.Dataset | PlainDataset) -> str | None:
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
