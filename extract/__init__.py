"""langneurons.extract: run a model once and count its neurons' activations.

The only subpackage that uses torch and transformers (the ``extract`` extra); they are imported
when a model is loaded (or a mask file read or written with :func:`load_mask` and
:func:`save_mask`), not when this package is imported.
"""

from __future__ import annotations

from langneurons.extract._torchio import check_mask_target, load_mask, save_mask
from langneurons.extract.ablation import ablate
from langneurons.extract.accuracy import ablate_accuracy
from langneurons.extract.corpus import BUILTIN_LANGUAGES, Record, builtin_corpus, read_records
from langneurons.extract.engine import LoadedModel, extract, from_pretrained_objects, load_model
from langneurons.extract.tiny import tiny_model

__all__ = [
    "BUILTIN_LANGUAGES",
    "LoadedModel",
    "Record",
    "ablate",
    "ablate_accuracy",
    "builtin_corpus",
    "extract",
    "from_pretrained_objects",
    "check_mask_target",
    "load_mask",
    "load_model",
    "read_records",
    "save_mask",
    "tiny_model",
]
