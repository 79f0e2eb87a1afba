"""Local paths as a shareable report shows them: relative to the report folder.

A report folder moved (or zipped and sent) together with its store keeps working when every
path it names is relative to it: the store that the sources reopen (``STORE = "../store.zarr"``)
and the files that results and provenance name (a model folder, a data file). A path is made
relative when it lies under the folder that holds both the report and the store; other paths
under the user's home are shown as ``~/...``; URLs and other paths stay as they are.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any


def local_path(url: str) -> Path | None:
    """The local path of a store URL (``file://`` or a plain path); None for other schemes."""
    if url.startswith("file://"):
        return Path(url[len("file://") :])
    if "://" in url:
        return None
    return Path(url)


class PathView:
    """Rewrite absolute local paths in report text relative to the report folder ``out``."""

    def __init__(self, out: str | os.PathLike[str], store_url: str) -> None:
        self.out = Path(os.path.abspath(out))
        local = local_path(store_url)
        self.store_abs: str = str(Path(os.path.abspath(local))) if local is not None else store_url
        self.base: str | None = None
        if local is not None:
            common = os.path.commonpath([str(self.out), self.store_abs])
            if Path(common).parent != Path(common):  # not the file-system root
                self.base = common
        self._rules: list[tuple[re.Pattern[str], str]] = []
        if self.base is not None:
            self._rules.append((_pattern(self.base), os.path.relpath(self.base, self.out)))
        home = os.path.expanduser("~")
        if home not in ("", "/", "~") and (self.base is None or not home.startswith(self.base)):
            self._rules.append((_pattern(home), "~"))

    @property
    def store(self) -> str:
        """The store as the sources open it: relative to the report folder where possible."""
        if self.base is None:
            return self.store_abs
        return Path(os.path.relpath(self.store_abs, self.out)).as_posix()

    def text(self, text: str) -> str:
        """``text`` with every absolute path under the shared folder (or home) rewritten."""
        for pattern, replacement in self._rules:
            text = pattern.sub(replacement.replace("\\", "\\\\"), text)
        return text

    def value(self, value: Any) -> Any:
        """A cell value with its strings rewritten (lists and mappings too)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.value(v) for v in value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        return value


def _pattern(prefix: str) -> re.Pattern[str]:
    """``prefix`` as a whole path or the start of one (never the start of a longer name)."""
    return re.compile(r"(?<![\w.~/-])" + re.escape(prefix.rstrip("/")) + r"(?![\w.-])")


__all__ = ["PathView", "local_path"]
