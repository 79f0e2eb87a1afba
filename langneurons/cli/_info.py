"""``langneurons info`` of a local store read from its JSON metadata, without zarr or xarray.

Importing zarr and xarray takes most of a second, and ``info`` needs neither: the runs, shapes,
attributes and saved results are in ``zarr.json`` files (the root's consolidated metadata, and
each result folder's own), and so are a run's language labels and token totals (the
``token_totals`` attribute every commit rewrites), so numpy is not imported either; only runs
written before that attribute existed have their two small arrays decoded with numcodecs.
:func:`read_info` returns exactly what :meth:`langneurons.store.ActivationStore.info` returns
(a test compares them on many stores), or None for anything it does not read the store's own
way: a zip, a URL, another schema version, a missing or damaged chunk (their checksums are
still checked), an unfamiliar codec or layout, a group that is not a readable run.
The command then asks the store, which reads it or says what is wrong in its own words.

The schema's names are repeated here (importing ``langneurons.store.schema`` imports the whole
store); a test pins them to the schema.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
#: Versions read here: 3 marks a store holding a mixture-of-experts run (docs/design/moe.md).
READS = (2, 3)
STORE_ATTR = "langneurons"
ROLES = ("prompt", "response")
MOMENTS = ("act_sum", "act_sqsum")
SEQUENCES = ("seq_n_active", "seq_n_tokens", "seq_language", "seq_id")
MOE_SEQUENCES = (*SEQUENCES, "seq_n_routed")
MOE_ATTR = "moe"
RESULT_GROUPS = ("identification", "stats", "compare", "ablation")
JOURNAL = "_journal"
RESERVED_NAMES = frozenset({JOURNAL, *RESULT_GROUPS})
RESULTS_OF = "results_of"
PLANNED_UNITS = "planned_units"
TOKEN_TOTALS = "token_totals"
#: Run attributes stored as JSON text (``langneurons.store._attrs.JSON_ATTRS``).
JSON_ATTRS = ("provenance", "writes", "results_of", "migrated", "planned_units", "moe")

_STRING_CODECS = ["vlen-utf8", "zstd", "crc32c"]
_NUMBER_CODECS = ["bytes", "blosc", "crc32c"]
_KEYS = {"name": "default", "configuration": {"separator": "/"}}


class _Unread(Exception):
    """Something this reader does not read the way the store does: ask the store."""


def read_info(url: str) -> dict[str, Any] | None:
    """``open_store(url).info()`` of a local directory store, or None to ask the store."""
    if url.endswith(".zip") or ("://" in url and not url.startswith("file://")):
        return None
    path = Path(url.removeprefix("file://"))
    if not path.is_dir():
        return None
    try:
        return _Reader(url, path).info()
    except (_Unread, OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def _decode(attrs: dict[str, Any]) -> dict[str, Any]:
    """Nested run attributes (JSON text on disk) as data."""
    out = dict(attrs)
    for key in JSON_ATTRS:
        value = out.get(key)
        if isinstance(value, str):
            try:
                out[key] = json.loads(value)
            except ValueError:
                pass
    return out


def _incompleteness(attrs: dict[str, Any]) -> str | None:
    """As ``langneurons.store._plan.incompleteness``."""
    planned = _decode(attrs).get(PLANNED_UNITS)
    if PLANNED_UNITS not in attrs or not isinstance(planned, list):
        return None
    done: set[str] = set()
    for w in _decode(attrs).get("writes") or []:
        done.update(w.get("units", []))
        unit = w.get("provenance", {}).get("unit")
        if unit is not None:
            done.add(unit)
    missing = [str(u) for u in planned if u not in done]
    if not missing:
        return None
    n_done = len(planned) - len(missing)
    return f"incomplete: {n_done} of {len(planned)} units committed (e.g. {missing[0]!r} missing)"


class _Reader:
    def __init__(self, url: str, path: Path) -> None:
        self.url = url
        self.path = path

    def json(self, key: str) -> dict[str, Any] | None:
        file = self.path / key / "zarr.json" if key else self.path / "zarr.json"
        if not file.is_file():
            return None
        meta = json.loads(file.read_bytes())
        if not isinstance(meta, dict):
            raise _Unread(key)
        return meta

    def info(self) -> dict[str, Any]:
        root = self.json("")
        if root is None or root.get("node_type") != "group":
            raise _Unread("root")
        mark = (root.get("attributes") or {}).get(STORE_ATTR)
        if not isinstance(mark, dict) or type(mark.get("schema_version")) is not int:
            raise _Unread("not a store of this version")
        if mark["schema_version"] not in READS:
            raise _Unread("another version")
        cons = root["consolidated_metadata"]["metadata"]
        if not isinstance(cons, dict) or not all(isinstance(m, dict) for m in cons.values()):
            raise _Unread("consolidated metadata")
        self.cons: dict[str, dict[str, Any]] = cons
        version = mark["schema_version"]
        out: dict[str, Any] = {"store": self.url, "schema_version": version, "runs": {}}
        for run in sorted(p for p, m in cons.items() if self._is_run_meta(m)):
            out["runs"][run] = self.run(run)
        unreadable = self.unreadable()
        if unreadable:
            out["unreadable"] = [
                f"group {g!r} holds run arrays but no schema_version attribute; it is not a "
                "readable run"
                for g in unreadable
            ]
        for run, linked in self.linked().items():
            results = {kind: self.results(run, kind) for kind in RESULT_GROUPS}
            out.setdefault("results_only", {})[run] = {
                "results_of": linked,
                "results": {kind: names for kind, names in results.items() if names},
            }
        return out

    @staticmethod
    def _is_run_meta(meta: dict[str, Any]) -> bool:
        return meta.get("node_type") == "group" and "schema_version" in (
            meta.get("attributes") or {}
        )

    def run(self, run: str) -> dict[str, Any]:
        own = self.json(run)  # what the store's results() checks the run by
        if own is None or not self._is_run_meta(own):
            raise _Unread(run)
        attrs = self.cons[run].get("attributes") or {}
        langs, tokens = self.totals(run, attrs)
        shape = self.array(f"{run}/n_active")["shape"]
        if len(tokens) != len(langs) or any(len(row) != len(ROLES) for row in tokens):
            raise _Unread(run)
        entry: dict[str, Any] = {
            "languages": langs,
            "layers": int(shape[2]),
            "neurons": int(shape[-1]),
            "roles": list(ROLES),
            "n_tokens": {
                lang: dict(zip(ROLES, map(int, tokens[i]), strict=True))
                for i, lang in enumerate(langs)
            },
            "optional": [n for n in (*MOMENTS, *MOE_SEQUENCES) if f"{run}/{n}" in self.cons],
            "attrs": _decode(attrs),
        }
        moe = entry["attrs"].get(MOE_ATTR)
        if isinstance(moe, dict):  # a mixture-of-experts run: its experts, from the attribute
            entry["moe"] = {k: moe.get(k) for k in ("n_experts", "n_shared", "top_k")}
        incomplete = _incompleteness(attrs)
        if incomplete is not None:
            entry["incomplete"] = incomplete
        if f"{run}/seq_n_active" in self.cons:
            entry["sequences"] = int(self.array(f"{run}/seq_n_active")["shape"][0])
        for kind in RESULT_GROUPS:
            names = self.results(run, kind)
            if names:
                entry.setdefault("results", {})[kind] = names
        return entry

    def totals(self, run: str, attrs: dict[str, Any]) -> tuple[list[str], list[list[int]]]:
        """The run's language labels and token totals: from the attribute every commit writes
        (JSON, no numpy needed), or, for runs written before it, decoded from the arrays."""
        text = attrs.get(TOKEN_TOTALS)
        if text is None:
            return self.strings(f"{run}/language"), self.int_rows(f"{run}/n_tokens")
        totals = json.loads(text) if isinstance(text, str) else None
        if not isinstance(totals, dict):
            raise _Unread(run)
        langs, tokens = totals.get("language"), totals.get("n_tokens")
        # the arrays' chunks are still read and their checksums checked (a damaged or missing
        # chunk: the store reports it), only not decoded
        shape = self._chunks(f"{run}/language", _STRING_CODECS)[0]["shape"]
        self._chunks(f"{run}/n_tokens", _NUMBER_CODECS)
        if (
            not isinstance(langs, list)
            or not all(isinstance(x, str) for x in langs)
            or not isinstance(tokens, list)
            or not all(isinstance(r, list) and all(type(x) is int for x in r) for r in tokens)
            or shape != [len(langs)]
        ):
            raise _Unread(run)  # the store says what is wrong
        return langs, tokens

    # ------------------------------------------------------------------ results on disk
    def results(self, run: str, kind: str) -> list[str]:
        """As ``ActivationStore.results``: the files, not the consolidated summary."""
        meta = self.json(f"{run}/{kind}")
        if meta is None:
            return []
        if meta.get("node_type") != "group":
            raise _Unread(f"{run}/{kind}")
        names: list[str] = []
        self._walk(self.path / run / kind, "", names)
        return sorted(names)

    def _walk(self, folder: Path, prefix: str, names: list[str]) -> None:
        for child in sorted(os.listdir(folder)):
            file = folder / child / "zarr.json"
            if child == "zarr.json" or not file.is_file():
                continue  # zarr skips what is not a node
            meta = json.loads(file.read_bytes())
            if not isinstance(meta, dict) or meta.get("node_type") not in ("group", "array"):
                raise _Unread(str(file))
            if meta["node_type"] != "group":
                continue
            path = f"{prefix}{child}"
            hidden = any(part.startswith(".") for part in path.split("/"))
            if not hidden and self._has_array(folder / child):
                names.append(path)
            self._walk(folder / child, path + "/", names)

    @staticmethod
    def _has_array(folder: Path) -> bool:
        for child in os.listdir(folder):
            file = folder / child / "zarr.json"
            if child != "zarr.json" and file.is_file():
                meta = json.loads(file.read_bytes())
                if isinstance(meta, dict) and meta.get("node_type") == "array":
                    return True
        return False

    # ------------------------------------------------------------------ groups
    def unreadable(self) -> list[str]:
        """As ``ActivationStore.unreadable_groups``."""
        out = set()
        for key in self.cons:
            parent, _, name = key.rpartition("/")
            if name not in ("n_active", "n_tokens"):
                continue
            hidden = any(p.startswith(".") or p in RESERVED_NAMES for p in parent.split("/"))
            group = self.cons.get(parent)
            creating = f"{parent}/{JOURNAL}" in self.cons
            if parent and not hidden and not creating and isinstance(group, dict):
                if "schema_version" not in (group.get("attributes") or {}):
                    out.add(parent)
        return sorted(out)

    def linked(self) -> dict[str, dict[str, Any]]:
        """As ``ActivationStore.linked_runs``."""
        out: dict[str, dict[str, Any]] = {}
        for path, meta in self.cons.items():
            if meta.get("node_type") != "group":
                continue
            attrs = meta.get("attributes") or {}
            if RESULTS_OF not in attrs:
                continue
            linked = _decode({RESULTS_OF: attrs[RESULTS_OF]})[RESULTS_OF]
            if not isinstance(linked, dict):
                continue
            own = self.json(path)  # what the store's results() checks the group by
            own_attrs = (own or {}).get("attributes") or {}
            if not isinstance(_decode(own_attrs).get(RESULTS_OF), dict):
                raise _Unread(path)
            parts = path.split("/")
            if any(p in ("", ".", "..") or p in RESERVED_NAMES for p in parts):
                raise _Unread(path)
            out[path] = dict(linked)
        return dict(sorted(out.items()))

    # ------------------------------------------------------------------ arrays
    def array(self, key: str) -> dict[str, Any]:
        """An array's metadata, the same in the consolidated summary and in its own zarr.json."""
        meta = self.cons.get(key)
        if meta is None or meta.get("node_type") != "array" or self.json(key) != meta:
            raise _Unread(key)
        return meta

    def _chunks(self, key: str, codecs: list[str]) -> tuple[dict[str, Any], list[bytes]]:
        """The metadata and the checked, decompressed chunks (along the first axis) of ``key``."""
        meta = self.array(key)
        names = [c.get("name") for c in meta["codecs"]]
        grid = meta["chunk_grid"]
        if names != codecs or meta["chunk_key_encoding"] != _KEYS or grid["name"] != "regular":
            raise _Unread(key)
        shape, chunk = meta["shape"], grid["configuration"]["chunk_shape"]
        if any(c != s for c, s in zip(chunk[1:], shape[1:], strict=True)):
            raise _Unread(key)  # one chunk across every axis but the first
        import google_crc32c

        out = []
        for i in range(math.ceil(shape[0] / chunk[0]) if shape[0] else 0):
            name = "/".join(["c", str(i), *("0" * (len(shape) - 1))])
            data = (self.path / key / name).read_bytes()  # a missing chunk: OSError
            if len(data) < 4 or google_crc32c.value(data[:-4]) != int.from_bytes(
                data[-4:], "little"
            ):
                raise _Unread(key)
            out.append(data[:-4])
        return meta, out

    def strings(self, key: str) -> list[str]:
        """A one-dimensional string array (vlen-utf8, zstd)."""
        from numcodecs import zstd

        meta, chunks = self._chunks(key, _STRING_CODECS)
        if meta["data_type"] not in ("string", "variable_length_utf8") or len(meta["shape"]) != 1:
            raise _Unread(key)
        out: list[str] = []
        for chunk in chunks:
            raw = bytes(zstd.decompress(chunk))
            count, pos = int.from_bytes(raw[:4], "little"), 4
            for _ in range(count):
                size = int.from_bytes(raw[pos : pos + 4], "little")
                out.append(raw[pos + 4 : pos + 4 + size].decode("utf-8"))
                pos += 4 + size
        return out[: meta["shape"][0]]

    def int_rows(self, key: str) -> list[list[int]]:
        """A two-dimensional int64 array (little-endian bytes, blosc) as rows."""
        from numcodecs import blosc

        meta, chunks = self._chunks(key, _NUMBER_CODECS)
        endian = (meta["codecs"][0].get("configuration") or {}).get("endian")
        if meta["data_type"] != "int64" or len(meta["shape"]) != 2 or endian != "little":
            raise _Unread(key)
        width = meta["shape"][1]
        rows: list[list[int]] = []
        for chunk in chunks:
            raw = bytes(blosc.decompress(chunk))
            values = [
                int.from_bytes(raw[i : i + 8], "little", signed=True) for i in range(0, len(raw), 8)
            ]
            rows += [values[i : i + width] for i in range(0, len(values), width)]
        return rows[: meta["shape"][0]]
