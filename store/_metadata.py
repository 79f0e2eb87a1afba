"""The metadata of a run's arrays, checked against the schema before anything is computed.

Chunk checksums (``_integrity``) catch damaged data, but not damaged metadata: an array whose
folder is gone reads as the fill value through the consolidated metadata, a ``data_type``
edited in an array's ``zarr.json`` reinterprets its bytes, an array without the ``crc32c``
codec is read unchecked, and a shape edited in the consolidated metadata alone disagrees with
the chunks. :func:`problems` reads only metadata (the store's root ``zarr.json`` and each
array's own ``zarr.json``, no chunk) and names each such problem; readers refuse a run that has
any, and ``validate`` lists them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from langneurons import names
from langneurons.store import schema

#: Zarr v3 data types of string arrays (variable-length UTF-8, as written and as older zarr names).
STRING_TYPES = ("string", "variable_length_utf8")

Reader = Callable[[str], "bytes | None"]


def _json(read: Reader, key: str) -> dict[str, Any] | None:
    raw = read(key)
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
    except ValueError:
        return None
    return meta if isinstance(meta, dict) else None


def consolidated(read: Reader) -> dict[str, Any] | None:
    """The consolidated metadata of the store's root (``{path: node metadata}``), if any."""
    root = _json(read, "zarr.json") or {}
    entry = root.get("consolidated_metadata")
    metadata = entry.get("metadata") if isinstance(entry, dict) else None
    return metadata if isinstance(metadata, dict) else None


def _dtype_problem(spec: schema.VariableSpec, data_type: object) -> str | None:
    if spec.kind == "T":
        ok = data_type in STRING_TYPES
        allowed = "a string type"
    elif spec.kind == "u":
        ok = data_type in schema.SEQ_DTYPES
        allowed = " or ".join(schema.SEQ_DTYPES)
    else:
        ok = data_type == spec.dtype
        allowed = str(spec.dtype)
    return None if ok else f"has data type {data_type!r}; the schema requires {allowed}"


def _claimed_chunks(meta: Mapping[str, Any]) -> int | None:
    """How many chunks an array's metadata says it has (None when its grid is not regular)."""
    grid = meta.get("chunk_grid")
    conf = grid.get("configuration") if isinstance(grid, dict) else None
    chunk = conf.get("chunk_shape") if isinstance(conf, dict) else None
    shape = meta.get("shape")
    if not isinstance(shape, list) or not isinstance(chunk, list) or len(chunk) != len(shape):
        return None
    if not all(isinstance(x, int) and x >= 0 for x in shape) or not all(
        isinstance(c, int) and c > 0 for c in chunk
    ):
        return None
    return math.prod(-(-s // c) for s, c in zip(shape, chunk, strict=True))


def _unwritten(read: Reader, array_path: str, meta: Mapping[str, Any]) -> str | None:
    """Why the array's shape claims more chunks than its manifest says were ever written.

    Every langneurons writer writes every chunk (all-zero ones too) and records it, so a shape
    that claims more is an edited shape: without this check, reading it allocates the claimed
    size (an edited coordinate of 10**12 neurons asked for 7 TiB) before any chunk is checked.
    """
    claimed = _claimed_chunks(meta)
    manifest = _json(read, f"{array_path}/{schema.CHUNK_MANIFEST}")
    entries = manifest.get("crc32c") if manifest is not None else None
    if claimed is None or not isinstance(entries, dict) or claimed <= len(entries):
        return None
    return (
        f"has shape {meta.get('shape')}, {claimed} chunks, but only {len(entries)} were ever "
        "written to it (its shape was edited)"
    )


def _has_crc(meta: Mapping[str, Any]) -> bool:
    codecs = meta.get("codecs") or []
    return bool(codecs) and isinstance(codecs[-1], dict) and codecs[-1].get("name") == "crc32c"


def problems(read: Reader, run: str, cons: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """``(array, problem)`` for each way the metadata of ``run``'s arrays breaks the schema.

    ``read(key)`` returns the bytes stored under a key (None when there are none); ``cons`` is
    the store's consolidated metadata (read from the root when not given).
    """
    if cons is None:
        cons = consolidated(read)
    out: list[tuple[str, str]] = []
    sizes: dict[str, tuple[int, str]] = {}
    group = _json(read, f"{run}/zarr.json") or {}
    attrs = group.get("attributes")
    moe = isinstance(attrs, dict) and names.MOE_ATTR in attrs  # a mixture-of-experts run
    if not moe and _json(read, f"{run}/{names.N_ROUTED}/zarr.json") is not None:
        out.append(
            (
                names.N_ROUTED,
                f"is there but the run has no {names.MOE_ATTR!r} attribute (the "
                "attribute of a mixture-of-experts run)",
            )
        )
    for name, spec in schema.variables(moe).items():
        own = _json(read, f"{run}/{name}/zarr.json")
        listed = None if cons is None else cons.get(f"{run}/{name}")
        if own is None or own.get("node_type") != "array":
            if read(f"{run}/{name}/zarr.json") is not None:
                out.append((name, "has a zarr.json that is not an array's JSON metadata"))
            elif listed is not None:
                out.append((name, "is in the consolidated metadata but its zarr.json is missing"))
            elif spec.group in ("required", "coordinate"):
                out.append((name, "is missing (every run has it)"))
            continue
        if cons is not None and not isinstance(listed, dict):
            out.append((name, "has a zarr.json but is missing from the consolidated metadata"))
            continue
        found: list[str] = []
        dims = tuple(own.get("dimension_names") or ())
        if dims != spec.dims:
            found.append(f"has dims {dims}; the schema requires {spec.dims}")
        for meta, where in ((own, "zarr.json"), (listed, "consolidated metadata")):
            if meta is None:
                continue
            bad = _dtype_problem(spec, meta.get("data_type"))
            if bad:
                found.append(f"{bad} (in its {where})")
            if not _has_crc(meta):
                found.append(f"has no crc32c checksum codec (in its {where})")
        shape = own.get("shape")
        if listed is not None and listed.get("shape") != shape:
            found.append(
                f"has shape {shape} in its zarr.json but {listed.get('shape')} in the consolidated "
                "metadata"
            )
        if not found:
            unwritten = _unwritten(read, f"{run}/{name}", own)
            if unwritten:
                found.append(unwritten)
        if not found and isinstance(shape, list) and len(shape) == len(dims):
            for dim, size in zip(dims, shape, strict=True):
                first = sizes.setdefault(dim, (size, name))
                if first[0] != size:
                    found.append(f"has {size} along {dim}; {first[1]!r} has {first[0]}")
        out.extend((name, p) for p in dict.fromkeys(found))
    return out
