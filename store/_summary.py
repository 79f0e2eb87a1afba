"""The store's summary: the consolidated metadata in the root's ``zarr.json``.

Plain xarray opens a store through it, so every write refreshes it (:func:`consolidate`),
and it holds an entry for every node of the store: the one part of the store that grows with
it. This module keeps each write and read from paying for that growth:

- :func:`consolidate` refreshes only the entries of the groups a write touched, keeping the
  text of the others, to the bytes zarr's whole-store walk writes;
- :class:`LeanRoot` shows writers the root without the summary, which zarr would otherwise
  read and parse for every array it creates;
- :func:`scoped` shows a reader of one run that run's entries alone, found in the root's
  text, where opening the run would build the metadata of every array in the store.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import unicodedata
from collections.abc import Sequence
from typing import Any

import zarr
from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.core.group import AsyncGroup, ConsolidatedMetadata, GroupMetadata
from zarr.core.metadata import ArrayV3Metadata
from zarr.storage import StorePath, WrapperStore

from langneurons.errors import NO_SPACE, OutOfSpaceError
from langneurons.store import schema
from langneurons.store._nodes import quiet

ROOT = "zarr.json"  # the root group's metadata


class LeanRoot(WrapperStore[Store]):
    """A view of a store that shows the root's ``zarr.json`` without its consolidated metadata
    (read once per view; a write to it through the view is seen by the next read).

    zarr reads the root's metadata to open the root, for every array it creates (no array may
    sit above a new one) and for every group it requires. With the store's consolidated
    metadata in it, each of those reads parsed every node's entry, so that a write, or a
    look at a few groups, cost time linear in the store. Writers and the store's own walks
    open the store through this view; readers that want the summary use the store itself.
    """

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self._root: list[bytes | None] = []  # the root as shown, once read

    def _with_store(self, store: Store) -> LeanRoot:
        out = type(self)(store)
        out._root = self._root  # one reading, whatever the view
        return out

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        if key != ROOT or byte_range is not None:
            return await self._store.get(key, prototype, byte_range)
        if not self._root:
            raw = await self._store.get(key, prototype)
            self._root[:] = [None if raw is None else _without_summary(raw.to_bytes())]
        shown = self._root[0]
        return None if shown is None else prototype.buffer.from_bytes(shown)

    async def set(self, key: str, value: Buffer) -> None:
        await self._store.set(key, value)
        if key == ROOT:
            self._root.clear()

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        await self._store.set_if_not_exists(key, value)
        if key == ROOT and not (self._root and self._root[0] is not None):
            self._root.clear()  # a root that was there is left as it was

    async def delete(self, key: str) -> None:
        await self._store.delete(key)
        if key == ROOT:
            self._root.clear()


_SUMMARY = b'\n  "consolidated_metadata": {'  # the root's keys as zarr lays them out: one
_NEXT_KEY = b'\n  "'  # level deep, the summary between the root's own fields and its node type
_NODE_TYPE = b'\n  "node_type": '


def _without_summary(raw: bytes) -> bytes:
    """The root's ``zarr.json`` without its consolidated metadata (unchanged when unparsable:
    zarr then reports it as it would).

    In zarr's layout the summary is cut out of the text (json holds no raw newline in a
    string, so a line indented one level that opens with a quote is one of the root's keys),
    and only the rest, a few hundred bytes, is parsed to check the cut; any other layout is
    parsed whole (50 ms for the root of 200 runs with their results).
    """
    start, end = raw.find(_SUMMARY), raw.rfind(_NODE_TYPE)  # (no UTF-8 byte is ASCII's)
    if 0 <= start < end and raw.find(_NEXT_KEY, start + 1, end) < 0:
        cut = raw[:start] + raw[end:]
        try:
            rest = json.loads(cut)
        except ValueError:
            rest = None
        if isinstance(rest, dict) and "consolidated_metadata" not in rest:
            return cut
    try:
        meta = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(meta, dict) or "consolidated_metadata" not in meta:
        return raw
    meta.pop("consolidated_metadata")
    return json.dumps(meta, allow_nan=True).encode()


def consolidate(
    zstore: Store, changed: Sequence[str] | None = None, *, gone: Sequence[str] = ()
) -> None:
    """Refresh the consolidated metadata (what plain xarray and readers see).

    ``changed``: the groups a write touched (a run, a result's folder). Only the entries of
    those subtrees and of their ancestors are read again; the rest are kept from the root's
    consolidated metadata, so a write costs the same in a store of 1 run or of 1,000 (zarr's
    own consolidation reads every node of the store). The root's ``zarr.json`` is the bytes
    zarr's consolidation writes (tested after every kind of write). None (and a root without
    consolidated metadata, or a changed path no longer reachable from the root): the whole
    store is walked, as ``repair`` does. ``gone``: groups about to be deleted (a replaced
    result's old copy), dropped from the listing without being read.

    It is refreshed after a write has committed (or rolled back), so running out of space here
    loses nothing: the error says so, and that ``repair`` refreshes it once there is room.
    """
    try:
        with quiet():
            if changed is None or not zarr.core.sync.sync(_consolidate_part(zstore, changed, gone)):
                zarr.consolidate_metadata(zstore)
    except OSError as exc:
        if exc.errno not in NO_SPACE:
            raise
        raise OutOfSpaceError(
            f"the store's consolidated metadata (what plain xarray reads) could not be refreshed: "
            f"{NO_SPACE[exc.errno]} ({exc.strerror}); everything written before it is saved "
            "and consistent: free some space and run `langneurons repair STORE` to refresh it"
        ) from exc


def _entry(raw: bytes) -> dict[str, Any] | None:
    """A node's ``zarr.json`` as its entry in consolidated metadata (zarr's parse, then
    ``to_dict``), or None when it is no zarr v3 node (a walk does not list it)."""
    try:
        meta = json.loads(raw)
        if not isinstance(meta, dict) or meta.get("zarr_format") != 3:
            return None
        if meta.get("node_type") == "array":
            return dict(ArrayV3Metadata.from_dict(meta).to_dict())
        if meta.get("node_type") == "group":
            group = GroupMetadata.from_dict(meta)
            flat = dataclasses.replace(group, consolidated_metadata=ConsolidatedMetadata({}))
            return dict(flat.to_dict())
    except (ValueError, TypeError, KeyError):
        return None
    return None


async def _consolidate_part(zstore: Store, changed: Sequence[str], gone: Sequence[str]) -> bool:
    """:func:`consolidate` of the ``changed`` subtrees; False (nothing written) when the whole
    store must be walked instead."""
    proto = default_buffer_prototype()
    found = await zstore.get("zarr.json", proto)
    raw_root = b"" if found is None else found.to_bytes()
    try:
        root = json.loads(raw_root) if found is not None else None
    except ValueError:
        return False
    if not isinstance(root, dict):
        return False
    held = root.get("consolidated_metadata")
    if not isinstance(held, dict) or not isinstance(held.get("metadata"), dict):
        return False
    entries: dict[str, Any] = dict(held["metadata"])
    paths = sorted({p.strip("/") for p in changed})
    if "" in paths:  # the root: everything
        return False
    for path in [*paths, *(g.strip("/") for g in gone)]:
        for key in [k for k in entries if k == path or k.startswith(path + "/")]:
            del entries[key]
    ancestors = sorted({a for p in paths for a in schema.lineage(p)[:-1]})
    tops = [p for p in paths if not any(p.startswith(q + "/") for q in paths)]
    fresh: set[str] = set()  # entries read now (the others keep their text)
    raws = await asyncio.gather(*(zstore.get(f"{p}/zarr.json", proto) for p in ancestors + tops))
    for path, raw in zip(ancestors + tops, raws, strict=True):
        entry = None if raw is None else _entry(raw.to_bytes())
        if path in ancestors and (entry is None or entry.get("node_type") != "group"):
            return False  # the walk would not reach what lies below: walk it all
        if entry is None:
            continue  # deleted (or never a node): its entries are gone
        entries[path] = entry
        fresh.add(path)
        if path not in tops or entry.get("node_type") != "group":
            continue  # an ancestor: its own entry only
        group = await AsyncGroup.open(StorePath(zstore, path), use_consolidated=False)
        async for key, node in group.members(max_depth=None, use_consolidated_for_children=False):
            meta = node.metadata
            if isinstance(meta, GroupMetadata):  # as zarr's walk lists a group: no children
                meta = dataclasses.replace(meta, consolidated_metadata=ConsolidatedMetadata({}))
            entries[f"{path}/{key}"] = dict(meta.to_dict())
            fresh.add(f"{path}/{key}")
    order = sorted(
        entries, key=lambda k: (k.count("/"), unicodedata.normalize("NFKC", k).casefold())
    )
    kept = _entry_texts(raw_root, list(held["metadata"]))
    text = _render(root, held, {k: entries[k] for k in order}, kept, fresh)
    await zstore.set("zarr.json", proto.buffer.from_bytes(text.encode()))
    return True


_INDENT = 2  # zarr's default json_indent: the layout _entries_span reads
_ENTRIES = b"\n" + b" " * 2 * _INDENT + b'"metadata": {\n'  # the summary's listing, opened
_ENTRY = b"\n" + b" " * 3 * _INDENT + b'"'  # an entry, opened by its key
_END = b"\n" + b" " * 2 * _INDENT + b"}"  # the listing, closed


def _render(
    root: dict[str, Any],
    held: dict[str, Any],
    entries: dict[str, Any],
    kept: dict[str, str] | None,
    fresh: set[str],
) -> str:
    """The root's ``zarr.json`` with ``entries`` as its consolidated metadata, as
    ``json.dumps(..., indent=json_indent, allow_nan=True)`` (zarr's writer) renders it.

    With zarr's default indent, json renders in Python, about 50 ms for the 1.7 MB root of a
    store of 200 runs; so the entries a write did not touch keep their text from the root as
    it was (``kept``), and only the root's own fields and the ``fresh`` entries are rendered.
    """
    indent = zarr.config.get("json_indent")
    whole = {**root, "consolidated_metadata": {**held, "metadata": entries}}
    if indent != _INDENT or kept is None or not entries:
        return json.dumps(whole, indent=indent, allow_nan=True)
    sentinel = "\x00langneurons entries\x00"
    marker = json.dumps(sentinel)
    head = json.dumps(
        {**root, "consolidated_metadata": {**held, "metadata": sentinel}},
        indent=indent,
        allow_nan=True,
    )
    if head.count(marker) != 1:  # the sentinel's text elsewhere in the root: render it all
        return json.dumps(whole, indent=indent, allow_nan=True)
    pad = "\n" + " " * 3 * _INDENT
    parts = []
    for key, entry in entries.items():
        text = kept.get(key) if key not in fresh else None
        if text is None:
            text = json.dumps(entry, indent=indent, allow_nan=True).replace("\n", pad)
        parts.append(f"{pad[1:]}{json.dumps(key)}: {text}")
    body = "{\n" + ",\n".join(parts) + "\n" + " " * 2 * _INDENT + "}"
    return head.replace(marker, body)


def _entries_span(raw: bytes) -> tuple[int, int] | None:
    """Where the entries of the summary lie in the root's ``zarr.json`` bytes ``raw``, as json
    renders it with zarr's default indent: from the newline before the first entry to the line
    that closes them; None when the root is laid out otherwise or lists no entry.

    In that layout each entry starts on a line indented three levels with its key's quote;
    every line inside an entry is indented deeper (json strings hold no raw newline), and the
    listing ends at the first line indented two levels.
    """
    top = raw.find(_SUMMARY + b"\n")
    start = raw.find(_ENTRIES, top) if top >= 0 else -1
    end = raw.find(_END, start) if start >= 0 else -1
    if end < 0:
        return None
    start += len(_ENTRIES) - 1  # keep the newline: every entry starts after one
    return (start, end) if raw.find(_ENTRY, start, end) == start else None


def _entry_texts(raw: bytes, keys: list[str]) -> dict[str, str] | None:
    """``{path: its entry's text}`` of the summary in the root's ``zarr.json`` bytes (see
    :func:`_entries_span`); None when it is laid out otherwise or does not list exactly
    ``keys``, in order."""
    span = _entries_span(raw)
    if span is None:
        return None
    start, end = span
    pieces = raw[start:end].split(_ENTRY)[1:]
    if len(pieces) != len(keys):
        return None
    out: dict[str, str] = {}
    for piece, key in zip(pieces, keys, strict=True):
        lead = json.dumps(key).encode()[1:] + b": "  # the key as json renders it, after its quote
        if not piece.startswith(lead):
            return None
        try:
            out[key] = piece[len(lead) :].removesuffix(b",").decode()
        except UnicodeDecodeError:
            return None
    return out


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


def _scoped_text(raw: bytes, path: str) -> tuple[dict[str, Any], bytes] | None:
    """:func:`scoped` of a root in zarr's layout, from its text: the kept entries are found by
    the lines that open them (a search for each key, or for the subtree's prefix) and only
    they are parsed; None for any other layout (or a kept entry that does not parse)."""
    span = _entries_span(raw)
    if span is None:
        return None
    start, end = span
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
