"""langneurons.analysis: pure functions over xarray objects (no torch, no GPU)."""

from __future__ import annotations

from langneurons.analysis import _accessor as _accessor  # registers ds.neurons
from langneurons.analysis.identify import identify, masks_from_lists, masks_to_lists, summary

__all__ = ["identify", "masks_from_lists", "masks_to_lists", "summary"]
