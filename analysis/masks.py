"""Neuron sets as the LAPE mask-file structure (one index array per language and layer), without
torch: :func:`masks_to_lists` and :func:`masks_from_lists`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray

from langneurons.analysis._validate import coordinate_values, is_dataset
from langneurons.errors import InputFormatError
from langneurons.names import LANGUAGE, LAYER, NEURON
from langneurons.plain import PlainDataset, PlainVariable

if TYPE_CHECKING:
    import xarray as xr


def masks_to_lists(result: xr.Dataset | PlainDataset) -> list[list[NDArray[np.int64]]]:
    """Per-language masks in the LAPE mask-file structure, without torch.

    Parameters
    ----------
    result : xarray.Dataset or PlainDataset
        An :func:`identify` result or any neuron-set Dataset with a boolean
        ``mask[language, layer, neuron]`` whose ``layer`` and ``neuron`` coordinates are
        ``0..L-1`` and ``0..N-1`` (the file indexes layers and neurons by position in the
        whole model).

    Returns
    -------
    list of list of numpy.ndarray
        One entry per language (in the Dataset's order), each a list with one sorted int64
        array of neuron indices per layer (empty where none). ``torch.save`` of this list with
        each array wrapped in ``torch.from_numpy`` is the LAPE mask file (Tang et al. 2024).
    """
    if not (is_dataset(result) or isinstance(result, PlainDataset)) or (
        "mask" not in result.data_vars
    ):
        raise InputFormatError("masks_to_lists needs a Dataset with mask[language, layer, neuron]")
    mask = result["mask"]
    if set(mask.dims) != {LANGUAGE, LAYER, NEURON} or mask.dtype != np.bool_:
        raise InputFormatError(
            f"mask must be a bool array over (language, layer, neuron), got dims "
            f"{tuple(mask.dims)} dtype {mask.dtype}"
        )
    for dim in (LAYER, NEURON):
        values = coordinate_values(result, dim)
        if not np.array_equal(values, np.arange(values.size)):
            raise InputFormatError(
                f"{dim} coordinate must be 0..{values.size - 1} to export a LAPE mask list "
                f"(one entry per {dim} of the whole model); select whole models only"
            )
    if isinstance(mask, PlainVariable):
        order = [mask.dims.index(d) for d in (LANGUAGE, LAYER, NEURON)]
        data = np.transpose(mask.data, order)
    else:
        data = np.asarray(mask.transpose(LANGUAGE, LAYER, NEURON).values)
    return [[np.flatnonzero(layer).astype(np.int64) for layer in lang] for lang in data]


def masks_from_lists(
    lists: Sequence[Sequence[ArrayLike]],
    languages: Sequence[str],
    n_layers: int,
    n_neurons: int,
) -> xr.Dataset:
    """Build a neuron-set Dataset from the LAPE mask-file structure, without torch.

    Parameters
    ----------
    lists : sequence of sequence of array_like
        One entry per language, each one 1-D integer index array per layer (e.g. the loaded
        LAPE mask file with tensors converted by ``.numpy()``).
    languages : sequence of str
        The language of each entry, in order.
    n_layers, n_neurons : int
        The model's layer count and neurons per layer.

    Returns
    -------
    xarray.Dataset
        ``mask[language, layer, neuron]`` (bool), coordinates ``language``, ``layer``
        (0..L-1) and ``neuron`` (0..N-1).

    Raises
    ------
    InputFormatError
        Lengths do not match ``languages`` / ``n_layers``, or an index array is not 1-D
        integers in ``[0, n_neurons)``.
    """
    names = [str(x) for x in languages]
    if len(set(names)) != len(names) or not names:
        raise InputFormatError(f"languages must be distinct and non-empty, got {names}")
    for name, value in (("n_layers", n_layers), ("n_neurons", n_neurons)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise InputFormatError(f"{name} must be an integer >= 0, got {value!r}")
    if len(lists) != len(names):
        raise InputFormatError(
            f"mask list has {len(lists)} language entries but {len(names)} languages were given"
        )
    mask = np.zeros((len(names), n_layers, n_neurons), dtype=np.bool_)
    for i, (name, per_layer) in enumerate(zip(names, lists, strict=True)):
        if len(per_layer) != n_layers:
            raise InputFormatError(
                f"mask list entry for language {name!r} has {len(per_layer)} layers, "
                f"expected {n_layers}"
            )
        for layer, indices in enumerate(per_layer):
            idx = np.asarray(indices)
            where = f"language {name!r} layer {layer}"
            if idx.ndim != 1 or (idx.size and idx.dtype.kind not in "iu"):
                raise InputFormatError(
                    f"mask indices for {where} must be a 1-D integer array, "
                    f"got shape {idx.shape} dtype {idx.dtype}"
                )
            if idx.size and (idx.min() < 0 or idx.max() >= n_neurons):
                raise InputFormatError(
                    f"mask indices for {where} must be in [0, {n_neurons}), "
                    f"got {int(idx.min())}..{int(idx.max())}"
                )
            mask[i, layer, idx.astype(np.int64)] = True
    import xarray as xr

    return xr.Dataset(
        {"mask": ((LANGUAGE, LAYER, NEURON), mask)},
        coords={
            LANGUAGE: np.array(names),
            LAYER: np.arange(n_layers),
            NEURON: np.arange(n_neurons),
        },
    )


__all__ = ["masks_to_lists", "masks_from_lists"]
