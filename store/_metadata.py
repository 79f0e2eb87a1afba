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


def scoped(raw: bytes | None, path: str) -> tuple[dict[str, Any] | None, bytes | None]:
    """The consolidated metadata of the root ``zarr.json`` bytes ``raw`` (``{node path:
    entry}``) for ``path``, its subtree and its ancestors, and those bytes with only these
    entries kept (None, None when the root has no consolidated metadata).

    Opening a group through consolidated metadata builds the metadata object of every node
    listed: a reader of one run shown the whole store's paid time linear in the store (about
    0.1 s a read at 200 runs here). The kept entries are the ones zarr navigates to the run
    and reads below it, unchanged, and the only ones the metadata checks of the run look up.
    A root in zarr's layout is not parsed whole (:func:`_scoped_text`; ``open_store`` has
    parsed it).
    """
    if raw is not None:
        fast = _scoped_text(raw, path)
        if fast is not None:
            return fast
    try:
        root = json.loads(raw) if raw is not None else None
    except ValueError:
        return None, None
    entry = root.get("consolidated_metadata") if isinstance(root, dict) else None
    metadata = entry.get("metadata") if isinstance(entry, dict) else None
    if not isinstance(root, dict) or not isinstance(entry, dict) or not isinstance(metadata, dict):
        return None, None
    above = set(schema.lineage(path))  # the run and its ancestors
    below = path.strip("/") + "/"
    kept = {k: v for k, v in metadata.items() if k in above or k.startswith(below)}
    shown = {**root, "consolidated_metadata": {**entry, "metadata": kept}}
    return kept, json.dumps(shown, allow_nan=True).encode()


_SUMMARY = b'\n  "consolidated_metadata": {\n'  # zarr's layout, indented two spaces a level
_ENTRIES = b'\n    "metadata": {\n'
_ENTRY = b'\n      "'  # an entry's key (json holds no raw newline in a string)
_END = b"\n    }"


def _scoped_text(raw: bytes, path: str) -> tuple[dict[str, Any], bytes] | None:
    """:func:`scoped` of a root in zarr's layout, from its text: the kept entries are found by
    the lines that open them (a search for each key, or for the subtree's prefix) and only
    they are parsed; None for any other layout (or a kept entry that does not parse)."""
    top = raw.find(_SUMMARY)
    start = raw.find(_ENTRIES, top) if top >= 0 else -1
    end = raw.find(_END, start) if start >= 0 else -1
    if end < 0 or raw.find(_ENTRY, start, end) != start + len(_ENTRIES) - 1:
        return None
    start += len(_ENTRIES) - 1  # at the newline before the first entry
    needles = [_ENTRY + json.dumps(n).encode()[1:] + b": " for n in schema.lineage(path)]
    needles.append(_ENTRY + json.dumps(path.strip("/") + "/").encode()[1:-1])  # escaped per
    spans = set()  # character, so the subtree's keys start with its escaped prefix
    for needle in needles:
        at = raw.find(needle, start, end)
        while at >= 0:
            stop = raw.find(_ENTRY, at + 1, end)
            stop = end if stop < 0 else stop
            spans.add((at, stop))
            at = raw.find(needle, stop, end)
    kept: dict[str, Any] = {}
    pieces = []
    for at, stop in sorted(spans):
        piece = raw[at + len(_ENTRY) : stop].removesuffix(b",")
        close = piece.find(b'": ')
        try:
            kept[json.loads(b'"' + piece[: close + 1])] = json.loads(piece[close + 3 :])
        except ValueError:
            return None
        pieces.append(piece)
    body = b",".join(_ENTRY + p for p in pieces)
    return kept, raw[:start] + body + raw[end:]


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
