"""langneurons: language neurons in multilingual LLMs.

Extract activation counts once (``langneurons.extract``, the only part that needs torch), keep them
in a Zarr v3 store (``langneurons.store``), and analyse them offline with xarray and Dask
(``langneurons.analysis``, ``langneurons.reports``).

The names below are imported when first used (PEP 562), so ``import langneurons`` and the command
line's start-up load neither xarray, zarr nor scipy until a command needs them. The ``ds.neurons``
accessor is registered by the first use of any of these names, or at once by ``import langneurons``
when xarray is already imported.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

from langneurons import errors
from langneurons._version import __version__

if TYPE_CHECKING:
    from langneurons.analysis import (
        compare_models,
        identify,
        masks_from_lists,
        masks_to_lists,
        summary,
    )
    from langneurons.store import (
        SCHEMA_VERSION,
        ActivationStore,
        Counts,
        MoeLayout,
        RunMetadata,
        create_store,
        open_store,
    )

#: Public name -> the module that defines it.
_LAZY: dict[str, str] = {
    "compare_models": "langneurons.analysis",
    "identify": "langneurons.analysis",
    "masks_from_lists": "langneurons.analysis",
    "masks_to_lists": "langneurons.analysis",
    "summary": "langneurons.analysis",
    "SCHEMA_VERSION": "langneurons.store",
    "ActivationStore": "langneurons.store",
    "Counts": "langneurons.store",
    "MoeLayout": "langneurons.store",
    "RunMetadata": "langneurons.store",
    "create_store": "langneurons.store",
    "open_store": "langneurons.store",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'langneurons' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    importlib.import_module("langneurons.analysis._accessor")  # registers ds.neurons
    globals()[name] = value  # later look-ups skip this function
    return value


if "xarray" in sys.modules:  # xarray is there already: register ds.neurons now, as before
    importlib.import_module("langneurons.analysis")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "SCHEMA_VERSION",
    "ActivationStore",
    "Counts",
    "MoeLayout",
    "RunMetadata",
    "__version__",
    "compare_models",
    "create_store",
    "errors",
    "identify",
    "masks_from_lists",
    "masks_to_lists",
    "open_store",
    "summary",
]
