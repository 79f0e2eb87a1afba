"""The ``langneurons`` command line.

Every command maps onto the Python API; errors print one line (``langneurons: error: ...``) and exit
non-zero, with a traceback only under ``--debug``.

One module per group of commands (``store``, ``extract``, ``analysis``, ``compare``), the options
they share in ``_options``; each command imports the rooms it needs when it runs, so
``langneurons --help`` and ``langneurons info`` load neither xarray, zarr nor scipy.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from langneurons.cli._options import EXIT_ERROR, EXIT_USAGE
from langneurons.errors import NO_SPACE, LangneuronsError, LangneuronsWarning

__all__ = ["EXIT_ERROR", "EXIT_USAGE", "cli", "main"]

log = logging.getLogger("langneurons")

_SHOWN: set[str] = set()  # warnings printed by this process


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    """langneurons' own warnings as one line on stderr; others as Python prints them."""
    if issubclass(category, LangneuronsWarning):
        text = " ".join(str(message).split())
        if text not in _SHOWN:  # once per command, however many replicates repeat it
            _SHOWN.add(text)
            click.echo(f"langneurons: warning: {text}", err=True)
        return
    warnings._showwarning_orig(message, category, filename, lineno, file, line)  # type: ignore[attr-defined]


class _LogLine(logging.Formatter):
    """Log records as the CLI's other lines: a warning is ``langneurons: warning: ...`` on one
    line, like the warnings of ``_show_warning`` (``--debug`` keeps the logger's name)."""

    def __init__(self, debug: bool) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self.debug = debug

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno >= logging.WARNING and not self.debug:
            text = " ".join(record.getMessage().split())
            return f"langneurons: {record.levelname.lower()}: {text}"
        return super().format(record)


#: Each command and where it is defined (module under ``langneurons.cli``, attribute): a command's
#: module is imported when the command runs, or when ``--help`` lists them all, so ``langneurons
#: info`` does not build the options of every other command first.
_COMMANDS = {
    # store
    "info": ("store", "info"),
    "validate": ("store", "validate"),
    "repair": ("store", "repair"),
    "export": ("store", "export"),
    "migrate": ("store", "migrate"),
    "import": ("store", "import_"),
    # models
    "extract": ("extract", "extract"),
    "ablate": ("extract", "ablate"),
    "ablate-accuracy": ("extract", "ablate_accuracy"),
    "demo": ("extract", "demo"),
    # analysis
    "identify": ("analysis", "identify"),
    "stats": ("analysis", "stats"),
    "compare": ("compare", "compare"),
    "report": ("analysis", "report"),
}


class _LazyGroup(click.Group):
    """A group whose commands are imported from their modules when first asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in _COMMANDS:
            import importlib

            module, name = _COMMANDS[cmd_name]
            command = getattr(importlib.import_module(f"langneurons.cli.{module}"), name)
            self.add_command(command, cmd_name)
        return self.commands.get(cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.option("-v", "--verbose", is_flag=True, help="Log what happens to stderr.")
@click.option(
    "-q", "--quiet", is_flag=True, help="No progress bars or progress lines (answers still print)."
)
@click.version_option(package_name="langneurons")
def cli(debug: bool, verbose: bool, quiet: bool) -> None:
    """langneurons: find and compare language neurons in multilingual LLMs."""
    from langneurons import _progress

    # long work shows a bar on a terminal, one line per step otherwise (logs, CI), or nothing
    interval = float(os.environ.get("LANGNEURONS_PROGRESS_INTERVAL", "5") or 5)
    _progress.configure("quiet" if quiet else "auto", interval=interval)
    # langneurons' warnings: each distinct one printed once per command, as one line
    warnings.showwarning = _show_warning
    warnings.simplefilter("always", LangneuronsWarning)
    _SHOWN.clear()
    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    handler = logging.StreamHandler()
    handler.setFormatter(_LogLine(debug))
    logging.basicConfig(level=level, handlers=[handler])
    if not (verbose or debug):
        # the CLI owns the terminal: no model-loading bars or notices from transformers
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        # third-party bars (e.g. GGUF de-quantisation); langneurons' own bars set `disable`
        os.environ.setdefault("TQDM_DISABLE", "1")
        transformers = sys.modules.get("transformers")
        if transformers is not None:  # already imported (e.g. main() called in-process)
            transformers.utils.logging.disable_progress_bar()
            transformers.utils.logging.set_verbosity_error()


def resource_line(exc: BaseException) -> str | None:
    """One line for running out of disk, file size, memory or threads; None for anything else."""
    if isinstance(exc, OSError) and exc.errno in NO_SPACE:
        where = f" writing {exc.filename}" if exc.filename else ""
        return (
            f"{NO_SPACE[exc.errno]}{where} ({exc.strerror}); free some space or raise the limit "
            "and run the command again (an interrupted store write is rolled back by "
            "`langneurons repair STORE`)"
        )
    if isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)  # torch's allocator
    ):
        detail = f" ({exc})" if str(exc) else ""
        return (
            f"out of memory{detail}; raise the memory limit (ulimit -v) or work on a smaller "
            "selection (fewer languages, layers or sequences)"
        )
    if isinstance(exc, RuntimeError) and any(
        m in str(exc) for m in ("can't start new thread", "cannot join thread before it is started")
    ):
        return (
            "out of memory or threads: could not start a thread; raise the memory limit "
            "(ulimit -v) or the process limit (ulimit -u)"
        )
    return None


# The address space (``ulimit -v``) the numerical libraries need to load and start their threads,
# measured: below about 500 MiB `identify` hangs inside scipy's import, fails to map numpy's or
# scipy's shared objects, or cannot start a thread; torch alone maps about 650 MiB and a tiny
# model's extraction needs about 2 GiB. Refusing up
# front is the only way to a clear line: a hang or a crash in native code cannot be caught.
_MIN_ADDRESS_SPACE = {"extract": 2 << 30, "ablate": 2 << 30, "ablate-accuracy": 2 << 30,
                      "demo": 2 << 30}  # fmt: skip
_MIN_ADDRESS_SPACE_DEFAULT = 1 << 30
_LIGHT = {"info", "--help", "-h", "--version"}


def address_space_line(args: Sequence[str]) -> str | None:
    """One line when ``ulimit -v`` is too low for the command to load its libraries, else None."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    words = [a for a in args if not a.startswith("-") or a in _LIGHT]
    if soft == resource.RLIM_INFINITY or not words or words[0] in _LIGHT or _LIGHT & set(args):
        return None
    need = _MIN_ADDRESS_SPACE.get(words[0], _MIN_ADDRESS_SPACE_DEFAULT)
    if soft >= need:
        return None
    return (
        f"the memory limit (ulimit -v) is {soft >> 20} MiB, below the {need >> 20} MiB that "
        f"`langneurons {words[0]}` needs to load its libraries (below it they hang or crash in "
        f"native code); raise it, e.g. `ulimit -v {need >> 10}` or `ulimit -v unlimited`"
    )


_TEMPORARY = re.compile(r"^\.(?P<dest>.+)\.langneurons-[a-z]+-\d+-[^/]*\.tmp$")


def permission_line(exc: BaseException) -> str | None:
    """A permission error as one line that names the user's path (not our temporary one next
    to it) and the fix; None for anything else."""
    if not isinstance(exc, PermissionError) or not exc.filename:
        return None
    path = Path(os.fsdecode(exc.filename))
    match = _TEMPORARY.match(path.name)
    where = path.parent / match["dest"] if match else path
    return (
        f"permission denied for {str(where)!r} ({exc.strerror or 'not allowed'}); choose a "
        "path you can write, or change its permissions"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code (errors print one line unless --debug)."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    too_little = address_space_line(args)
    if too_little is not None:
        click.echo(f"langneurons: error: {too_little}", err=True)
        return EXIT_ERROR
    try:
        result = cli.main(args=args, prog_name="langneurons", standalone_mode=False)
    except click.exceptions.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return EXIT_ERROR
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_ERROR
    except (
        LangneuronsError,
        PermissionError,
        FileNotFoundError,
        NotADirectoryError,
        MemoryError,
        OSError,
        RuntimeError,
    ) as exc:
        if debug:
            raise
        line = resource_line(exc) or permission_line(exc)
        if line is None and not isinstance(
            exc, (LangneuronsError, PermissionError, FileNotFoundError, NotADirectoryError)
        ):
            raise
        message = " ".join((line or str(exc)).split())
        click.echo(f"langneurons: error: {message}", err=True)
        # a read that failed inside zarr's concurrent fetches leaves sibling fetches pending;
        # asyncio would report each of them at exit, after the one line that says what is wrong
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)
        warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
        return EXIT_ERROR
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
