"""The held-out check of deactivation: evaluation items must not be identification sequences."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from langneurons.errors import ParameterError
from langneurons.extract._heldout import heldout_check
from langneurons.extract.corpus import builtin_corpus, corpus_hash


def _run(records: list, per_sequence: bool = True) -> xr.Dataset:
    coords = {}
    if per_sequence:
        coords = {
            "seq_language": ("sequence", np.array([r.language for r in records], dtype=object)),
            "seq_id": ("sequence", np.array([r.id for r in records], dtype=object)),
        }
    ds = xr.Dataset(coords=coords)
    ds.attrs["corpus_hash"] = corpus_hash(records)
    return ds


def test_builtin_parts_are_held_out_from_each_other() -> None:
    run = _run(builtin_corpus(["de", "en"], part="identify"))
    out = heldout_check(run, builtin_corpus(["de", "en"], part="evaluate"), run="m/base")
    assert out["heldout"] == "disjoint" and out["heldout_overlap"] == 0
    assert "no evaluation item is among the 48 sequences of run 'm/base'" in out["heldout_note"]


def test_overlap_is_an_error_naming_the_first_shared_item() -> None:
    run = _run(builtin_corpus(["de", "en"]))
    with pytest.raises(
        ParameterError,
        match=r"^16 of 16 evaluation items were also read to identify the neurons of run 'm/base' "
        r"\(first: language 'de', id 'q25'\); deactivation scored on them is circular: evaluate on "
        r"held-out items \(e\.g\. 'builtin:evaluate' after extracting 'builtin:identify'\), or "
        r"pass --allow-overlap$",
    ):
        heldout_check(run, builtin_corpus(["de", "en"], part="evaluate"), run="m/base")


def test_overlap_allowed_is_recorded() -> None:
    run = _run(builtin_corpus(["de"]))
    out = heldout_check(run, builtin_corpus(["de"], part="evaluate"), allow_overlap=True)
    assert out["heldout"] == "overlap allowed" and out["heldout_overlap"] == 8


def test_same_language_id_in_another_language_is_not_an_overlap() -> None:
    run = _run(builtin_corpus(["de"]))
    out = heldout_check(run, builtin_corpus(["en"]))
    assert out["heldout"] == "disjoint"


def test_without_seq_ids_only_the_identical_corpus_is_caught() -> None:
    records = builtin_corpus(["de"])
    run = _run(records, per_sequence=False)
    with pytest.raises(ParameterError, match=r"^the evaluation data is the corpus the run was"):
        heldout_check(run, records)
    out = heldout_check(run, builtin_corpus(["de"], part="evaluate"))
    assert out["heldout"] == "unchecked" and "cannot be checked" in out["heldout_note"]
