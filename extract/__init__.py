"""langneurons.extract: run a model once and count its neurons' activations.

The only subpackage that uses torch and transformers (the ``extract`` extra); they are imported
when a model is loaded, not when this package is imported.
"""

from __future__ import annotations

from langneurons.extract.ablation import ablate
from langneurons.extract.corpus import BUILTIN_LANGUAGES, Record, builtin_corpus, read_records
from langneurons.extract.engine import LoadedModel, extract, from_pretrained_objects, load_model
from langneurons.extract.tiny import tiny_model

__all__ = [
    "BUILTIN_LANGUAGES",
    "LoadedModel",
    "Record",
    "ablate",
    "builtin_corpus",
    "extract",
    "from_pretrained_objects",
    "load_model",
    "read_records",
    "tiny_model",
]
