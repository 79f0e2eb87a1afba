"""Reading and writing ``.pt`` files safely: the only place langneurons calls ``torch.load``.

Torch is imported lazily, inside functions, so that importing :mod:`langneurons.extract` works
without the ``extract`` extra. Every file is loaded with ``torch.load(weights_only=True)``: plain
tensors, numbers, strings, lists and dicts load; arbitrary pickled objects are refused.
"""

from __future__ import annotations

import os
import pickle
import re
import uuid
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from langneurons._fs import unwritable_folder
from langneurons.errors import InputFormatError, MissingDependencyError, ParameterError

_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


def require_torch() -> ModuleType:
    """Return the ``torch`` module, or raise MissingDependencyError when it is not installed."""
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError(
            "reading and writing .pt files needs torch; install it with "
            "pip install 'langneurons[extract]'"
        ) from exc
    return torch


def _one_line(text: str) -> str:
    """Collapse a (torch) message onto one line, without terminal escape codes."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    return " ".join(text.split())


def load_pt(path: str | os.PathLike[str]) -> Any:
    """Load a ``.pt`` file with ``torch.load(weights_only=True, map_location="cpu")``.

    Raises
    ------
    InputFormatError
        The file does not exist, is a directory, holds pickled objects beyond tensors (refused
        for safety), or is not a readable torch file. The message is one line and names the file.
    MissingDependencyError
        torch is not installed.
    """
    torch = require_torch()
    path = Path(path)
    if not path.exists():
        raise InputFormatError(f"{path} does not exist; check the path")
    if not path.is_file():
        raise InputFormatError(f"{path} is a directory, not a .pt file")
    try:
        with warnings.catch_warnings():
            # legacy (non-zip) files saved with a newer pickle protocol load fine but warn
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if "Weights only load failed" in msg:
            found = _UNSAFE_GLOBAL.search(msg)
            what = f" ({found.group(1)})" if found else ""
            raise InputFormatError(
                f"{path} holds pickled Python objects beyond tensors{what}; refused for safety "
                "(torch.load weights_only=True) — re-save it with plain tensors"
            ) from None
        raise InputFormatError(
            f"{path} is not a readable torch file: {_one_line(msg) or type(exc).__name__}"
        ) from None
    except (RuntimeError, EOFError, KeyError, ValueError, OSError, AttributeError) as exc:
        detail = _one_line(str(exc)) or type(exc).__name__
        raise InputFormatError(
            f"{path} is not a readable torch file ({type(exc).__name__}: {detail}); "
            "it should be made by torch.save"
        ) from None


EXPANSION_LIMIT = 2**30  # a broadcast view may expand this far past the bytes the file holds


def int_array(value: Any, where: str) -> np.ndarray:
    """An integer torch tensor as a numpy array; InputFormatError for anything else."""
    torch = require_torch()
    if not isinstance(value, torch.Tensor):
        raise InputFormatError(f"{where} is a {type(value).__name__}; expected an integer tensor")
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        dtype = str(value.dtype).removeprefix("torch.")
        raise InputFormatError(f"{where} has dtype {dtype}; expected an integer tensor")
    if value.is_meta:
        raise InputFormatError(
            f"{where} is a meta tensor: it has a shape but no values; save the real tensor"
        )
    if value.layout != torch.strided:
        value = value.to_dense()
    needed = value.numel() * value.element_size()
    stored = value.untyped_storage().nbytes()
    if needed > max(stored, EXPANSION_LIMIT):
        raise InputFormatError(
            f"{where} is a view of {stored} stored bytes that expands to {needed} bytes (shape "
            f"{tuple(value.shape)}); save it with .contiguous() if the counts are real"
        )
    return np.asarray(value.detach().cpu().numpy())


# ---------------------------------------------------------------------- LAPE masks
def _check_layer_indices(arr: np.ndarray, where: str, n_neurons: int | None) -> str | None:
    """Return what is wrong with one layer's index array, or None."""
    if arr.ndim != 1:
        return f"{where} has {arr.ndim} dims; expected a 1-D tensor of neuron indices"
    if arr.dtype.kind not in "iu":
        return f"{where} has dtype {arr.dtype}; expected integer neuron indices"
    if arr.size and int(arr.min()) < 0:
        return f"{where} holds negative neuron index {int(arr.min())}; indices must be >= 0"
    if arr.size > 1 and not bool((np.diff(arr) > 0).all()):
        return f"{where} is not sorted without repeats; indices must be strictly increasing"
    if n_neurons is not None and arr.size and int(arr.max()) >= n_neurons:
        return f"{where} holds neuron index {int(arr.max())}; the layer has {n_neurons} neurons"
    return None


def save_mask(path: str | os.PathLike[str], masks: Sequence[Sequence[np.ndarray]]) -> Path:
    """Write per-language neuron masks in the LAPE mask format, atomically.

    The file is ``torch.save`` of a list with one entry per language, each a list with one
    ``torch.LongTensor`` per layer holding that language's sorted neuron indices (Tang et al.
    2024, "Language-Specific Neurons"). It is written next to ``path`` and renamed into place, so
    readers see the old file or the new one, never a partial write.

    Parameters
    ----------
    path
        Destination file; its parent directories are created.
    masks
        ``masks[language][layer]``: 1-D integer arrays of strictly increasing, non-negative neuron
        indices (empty where a layer has none). Every language must have the same number of layers.

    Returns
    -------
    Path
        The path written.
    """
    torch = require_torch()
    path = Path(path)
    if isinstance(masks, np.ndarray) or not isinstance(masks, Sequence):
        raise ParameterError(
            f"masks must be a list (one entry per language) of lists of index arrays, "
            f"not {type(masks).__name__}"
        )
    if not masks:
        raise ParameterError("masks is empty; give one list of per-layer indices per language")
    n_layers = None
    out: list[list[Any]] = []
    for k, layers in enumerate(masks):
        if isinstance(layers, np.ndarray) or not isinstance(layers, Sequence):
            raise ParameterError(
                f"masks[{k}] is a {type(layers).__name__}; expected a list with one index array "
                "per layer"
            )
        if n_layers is None:
            n_layers = len(layers)
        if len(layers) != n_layers or n_layers == 0:
            raise ParameterError(
                f"masks[{k}] has {len(layers)} layers but masks[0] has {n_layers}; every "
                "language needs the same number (at least one) of layers"
            )
        row = []
        for layer, idx in enumerate(layers):
            arr = np.asarray(idx)
            if arr.size == 0:
                arr = arr.astype(np.int64).reshape(0)
            problem = _check_layer_indices(arr, f"masks[{k}][{layer}]", None)
            if problem:
                raise ParameterError(problem)
            row.append(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.int64)))
        out.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb") as fh:
            torch.save(out, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def check_mask_target(path: str | os.PathLike[str]) -> Path:
    """Where :func:`save_mask` may write ``path`` for a command: a new file, or a LAPE mask file
    (an earlier export, replaced). Raises ParameterError for a folder, for a file that is not a
    mask file (nothing of the user's is replaced) and for a folder that cannot be written."""
    path = Path(path)
    if path.is_dir():
        raise ParameterError(f"mask file {str(path)!r} is a folder; give a file path")
    if path.exists() or path.is_symlink():
        try:
            load_mask(path)
        except (InputFormatError, OSError, ValueError) as exc:
            raise ParameterError(
                f"{str(path)!r} already exists and is not a LAPE mask file; give a new path for "
                "the mask (nothing is replaced)"
            ) from exc
        return path
    parent = unwritable_folder(path)
    if parent is not None:
        raise ParameterError(
            f"cannot write the mask file {str(path)!r}: {str(parent)!r} is not a writable "
            "folder; give a path you can write"
        )
    return path


def load_mask(
    path: str | os.PathLike[str],
    *,
    n_layers: int | None = None,
    n_neurons: int | None = None,
) -> list[list[np.ndarray]]:
    """Read a LAPE mask file (see :func:`save_mask`) into ``masks[language][layer]`` int64 arrays.

    Parameters
    ----------
    path
        A file written by :func:`save_mask` or by the LAPE reference code.
    n_layers, n_neurons
        When given, the file must have this many layers and indices below ``n_neurons``.

    Raises
    ------
    InputFormatError
        The file is not a list of lists of 1-D integer tensors with the same number of layers for
        every language, or holds negative, unsorted, repeated or out-of-range indices.
    """
    torch = require_torch()
    obj = load_pt(path)
    if not isinstance(obj, list | tuple) or not obj:
        what = "an empty list" if isinstance(obj, list | tuple) else f"a {type(obj).__name__}"
        raise InputFormatError(
            f"{path} holds {what}; a LAPE mask file holds a list with one entry per language"
        )
    expected = n_layers
    masks: list[list[np.ndarray]] = []
    for k, layers in enumerate(obj):
        if not isinstance(layers, list | tuple):
            raise InputFormatError(
                f"{path}: entry {k} is a {type(layers).__name__}; expected a list with one tensor "
                "per layer"
            )
        if expected is None:
            expected = len(layers)
        if len(layers) != expected or not layers:
            source = "n_layers" if n_layers is not None else "entry 0"
            raise InputFormatError(
                f"{path}: entry {k} has {len(layers)} layers but {source} has {expected}; every "
                "language needs the same number (at least one) of layers"
            )
        row = []
        for layer, t in enumerate(layers):
            where = f"{path}: entry {k} layer {layer}"
            if isinstance(t, torch.Tensor) and t.numel() == 0:
                t = t.reshape(0).long()  # an empty layer may be saved as float torch.tensor([])
            arr = int_array(t, where)
            problem = _check_layer_indices(arr, where, n_neurons)
            if problem:
                raise InputFormatError(problem)
            row.append(arr.astype(np.int64, copy=True))
        masks.append(row)
    return masks
