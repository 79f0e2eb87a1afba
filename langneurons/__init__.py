"""langneurons: language neurons in multilingual LLMs.

Extract activation counts once (``langneurons.extract``, the only part that needs torch), keep them
in a Zarr v3 store (``langneurons.store``), and analyse them offline with xarray and Dask
(``langneurons.analysis``, ``langneurons.reports``).
"""

from __future__ import annotations

from langneurons import errors
from langneurons.analysis import identify, masks_from_lists, masks_to_lists, summary
from langneurons.store import (
    SCHEMA_VERSION,
    ActivationStore,
    Counts,
    RunMetadata,
    create_store,
    open_store,
)

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "ActivationStore",
    "Counts",
    "RunMetadata",
    "__version__",
    "create_store",
    "errors",
    "identify",
    "masks_from_lists",
    "masks_to_lists",
    "open_store",
    "summary",
]
