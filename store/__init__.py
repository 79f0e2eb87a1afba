"""langneurons.store: the on-disk activation store (Zarr v3) and its schema."""

from __future__ import annotations

from langneurons.store import schema
from langneurons.store._attrs import decode as decode_attrs
from langneurons.store._counts import Counts
from langneurons.store._migrate import Migration, migrate_store
from langneurons.store._open import create_store, import_zip, open_store
from langneurons.store._store import ActivationStore, RunWriter
from langneurons.store.schema import SCHEMA_VERSION, MoeLayout, RunMetadata

__all__ = [
    "decode_attrs",
    "SCHEMA_VERSION",
    "ActivationStore",
    "Counts",
    "Migration",
    "MoeLayout",
    "RunMetadata",
    "RunWriter",
    "create_store",
    "import_zip",
    "migrate_store",
    "open_store",
    "schema",
]
