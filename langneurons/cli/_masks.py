"""The LAPE mask file format, read and written by the extract room (torch pickles it).

``langneurons.extract`` has no public mask reader and writer yet; until it has, its private
``_torchio`` module is used, and only here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _extract_function(name: str) -> Any:
    import langneurons.extract as extract

    found = getattr(extract, name, None)
    if found is None:
        from langneurons.extract import _torchio

        found = getattr(_torchio, name)
    return found


def load_mask(path: str | os.PathLike[str]) -> Any:
    """``masks[language][layer]`` of a LAPE mask file."""
    return _extract_function("load_mask")(path)


def save_mask(path: str | os.PathLike[str], masks: Sequence[Sequence[Any]]) -> Path:
    """Write ``masks[language][layer]`` as a LAPE mask file."""
    return Path(_extract_function("save_mask")(path, masks))
