"""Progress of long work: a bar on a terminal, log lines elsewhere, nothing when quiet.

Library code reports progress through :func:`progress` and never prints; the CLI chooses how it is
shown with :func:`configure` (``--quiet`` silences it). Without the CLI (a script, a notebook) the
default is ``"log"``: one ``INFO`` record of the ``langneurons.progress`` logger per line, which
shows only where logging is configured to show it.

The modes:

- ``bar``: a tqdm bar on stderr (items or tokens done, rate, ETA);
- ``lines``: one plain line on stderr per step of work, at most one every ``interval`` seconds
  (the first one interval after the start, so quick work prints nothing; the last always once
  a line was printed), for logs of batch jobs and CI;
- ``log``: the same lines as ``INFO`` log records;
- ``quiet``: nothing.
- ``auto``: ``bar`` when stderr is a terminal, ``lines`` otherwise.

This module imports nothing of langneurons' rooms, so every room may use it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal, TextIO

Mode = Literal["auto", "bar", "lines", "log", "quiet"]
MODES: tuple[str, ...] = ("auto", "bar", "lines", "log", "quiet")

log = logging.getLogger("langneurons.progress")

_state: dict[str, Any] = {"mode": "log", "interval": 5.0, "stream": None}


def configure(mode: Mode = "auto", *, interval: float = 5.0, stream: TextIO | None = None) -> None:
    """Choose how progress is shown from now on (the CLI calls this once per command)."""
    if mode not in MODES:
        raise ValueError(f"progress mode {mode!r} is not one of {', '.join(MODES)}")
    if mode == "auto":
        out = stream if stream is not None else sys.stderr
        mode = "bar" if _isatty(out) else "lines"
    _state.update(mode=mode, interval=float(interval), stream=stream)


def current_mode() -> str:
    """The mode :func:`progress` uses now (never ``auto``)."""
    return str(_state["mode"])


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _amount(value: float, unit: str) -> str:
    if unit in ("tok", "B"):
        for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= factor:
                return f"{value / factor:.1f}{suffix}"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


class Task:
    """One piece of long work: ``update(n)`` as it advances, ``note(text)`` for a status word."""

    def __init__(self, desc: str, total: float | None, unit: str) -> None:
        self.desc, self.total, self.unit = desc, total, unit
        self.done = 0.0
        self.status = ""
        self.mode = current_mode()
        self.started = time.monotonic()
        # the first line comes one interval after the start: quick work prints nothing
        self._last_line = self.started
        self._last_done = -1.0
        self._printed = False
        self._bar: Any = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total,
                desc=desc,
                unit=unit,
                unit_scale=unit in ("tok", "B"),
                disable=False,  # explicit, so the TQDM_DISABLE set for third-party bars is moot
                file=_state["stream"] or sys.stderr,
                dynamic_ncols=True,
                leave=True,
            )

    def update(self, n: float = 1) -> None:
        """Advance by ``n`` units of work."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.mode in ("lines", "log"):
            now = time.monotonic()
            if now - self._last_line >= _state["interval"]:
                self._line(now)

    def note(self, status: str) -> None:
        """Show a short status beside the count (e.g. the unit being worked on)."""
        self.status = status
        if self._bar is not None:
            self._bar.set_postfix_str(status, refresh=True)

    def line(self) -> str:
        """The progress as one plain line: done/total, percent, rate and ETA."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        parts = [f"[{self.desc}]"]
        if self.total:
            pct = 100.0 * self.done / self.total
            parts.append(
                f"{_amount(self.done, self.unit)}/{_amount(self.total, self.unit)} {self.unit}"
                f" ({pct:.0f}%)"
            )
        else:
            parts.append(f"{_amount(self.done, self.unit)} {self.unit}")
        parts.append(f"{_amount(rate, self.unit)} {self.unit}/s")
        parts.append(f"elapsed {_duration(elapsed)}")
        if self.total and 0 < self.done < self.total and rate > 0:
            parts.append(f"ETA {_duration((self.total - self.done) / rate)}")
        if self.status:
            parts.append(self.status)
        return " ".join(parts[:1]) + " " + ", ".join(parts[1:])

    def _line(self, now: float) -> None:
        self._last_line, self._last_done, self._printed = now, self.done, True
        text = self.line()
        if self.mode == "log":
            log.info("%s", text)
        else:
            stream = _state["stream"] or sys.stderr
            print(text, file=stream, flush=True)

    def close(self) -> None:
        """Finish: close the bar, or write the last line."""
        if self._bar is not None:
            self._bar.close()
        elif self.mode in ("lines", "log") and self.done > 0 and self.done != self._last_done:
            now = time.monotonic()
            if self._printed or now - self.started >= _state["interval"]:
                self._line(now)


@contextmanager
def progress(desc: str, total: float | None = None, unit: str = "it") -> Iterator[Task]:
    """Report the progress of a piece of work named ``desc`` of ``total`` ``unit``s."""
    task = Task(desc, total, unit)
    try:
        yield task
    finally:
        task.close()


__all__ = ["MODES", "Mode", "Task", "configure", "current_mode", "progress"]
