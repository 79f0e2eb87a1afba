"""A store as a dataset repository: a dataset card, the store as one zip, the Parquet tables.

Layout of ``DEST/``::

    README.md                 dataset card: YAML metadata (licence, languages, tags, one config
                              per run naming its Parquet file, and each run's model, revision,
                              corpus and hash), then how it was made and how to load it
    store.zip                 the whole store (``langneurons export --format zip``)
    data/<run path>.parquet   the long-form neuron table of each run (``--format parquet``)

Nothing is uploaded. The card's ``configs`` are what the ``datasets`` library (and a dataset hub's
viewer) read: ``load_dataset(DEST, "<config>")`` loads one run's table with the Parquet loader.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import xarray as xr

from langneurons._version import __version__
from langneurons.errors import StoreValidationError
from langneurons.store import _attrs, _export, _export_parquet, schema

ZIP_NAME, DATA_DIR, CARD = "store.zip", "data", "README.md"


@dataclasses.dataclass(frozen=True)
class Parts:
    """What the store hands the dataset writer (it holds the store's read lock meanwhile)."""

    store_url: str
    runs: Sequence[str]
    info: dict[str, Any]
    write_zip: Callable[[Path], Path]
    #: the runs of a store zip and its problems (``validate``), read back from the zip
    read_zip: Callable[[Path], tuple[list[str], list[str]]]
    open_run: Callable[[str], xr.Dataset]
    identifications: Callable[[str], list[tuple[str, xr.Dataset]]]


def config_name(run: str) -> str:
    """The dataset config of a run: its path with ``/`` written as ``--``."""
    return run.replace("/", "--")


def write(dest: Path, parts: Parts, *, license: str, title: str | None) -> Path:
    """Write the dataset folder ``dest`` (new) from ``parts``; return ``dest``."""
    license = _check_license(license)
    _export.require("pyarrow", "dataset")
    with _export.staged(dest, "export-dataset") as tmp:
        zipped = parts.write_zip(tmp / ZIP_NAME)
        _check_zip(zipped, parts)
        tables = _export_parquet.write_into(
            tmp / DATA_DIR, parts.runs, parts.open_run, parts.identifications
        )
        files = {
            run: path.relative_to(tmp).as_posix()
            for run, path in zip(parts.runs, tables, strict=True)
        }
        digest = _sha256(zipped)
        text = card(parts, files, license=license, title=title, zip_sha256=digest)
        (tmp / CARD).write_text(text, encoding="utf-8")
    return dest


def _check_license(license: object) -> str:
    if not isinstance(license, str) or not license.strip() or "\n" in license:
        raise StoreValidationError(
            f"licence {license!r} is not a licence identifier; give one such as cc-by-4.0, mit "
            "or other (or unknown)"
        )
    return license.strip()


def _check_zip(path: Path, parts: Parts) -> None:
    """Open the zip as a store and validate it (every chunk's checksum and place)."""
    found, problems = parts.read_zip(path)
    if problems:
        raise StoreValidationError(
            f"the store zip written for the dataset is invalid: {problems[0]}; the copy is "
            "damaged (disk or library fault)"
        )
    missing = [run for run in parts.runs if run not in found]
    if missing:
        raise StoreValidationError(
            f"the store zip written for the dataset lacks run {missing[0]!r}"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


# ---------------------------------------------------------------------- the card
def card(
    parts: Parts, files: dict[str, str], *, license: str, title: str | None, zip_sha256: str
) -> str:
    """The dataset card: YAML front matter, then prose on what it holds and how to load it."""
    runs = {run: _run_entry(parts.info["runs"][run]) for run in parts.runs}
    languages = sorted({lang for entry in runs.values() for lang in entry["languages"]})
    models = sorted({entry["model"] for entry in runs.values() if entry["model"]})
    name = title or f"Language-neuron activation counts: {', '.join(models) or 'langneurons'}"
    meta: dict[str, Any] = {
        "license": license,
        "pretty_name": name,
        "language": languages,
        "tags": ["langneurons", "interpretability", "language-neurons", "activation-counts"],
        "configs": [
            {
                "config_name": config_name(run),
                "data_files": [{"split": "train", "path": files[run]}],
                **({"default": True} if i == 0 else {}),
            }
            for i, run in enumerate(parts.runs)
        ],
        "langneurons": {
            "schema_version": parts.info.get("schema_version", schema.SCHEMA_VERSION),
            "tool_version": __version__,
            "store_zip": ZIP_NAME,
            "store_zip_sha256": zip_sha256,
            "runs": runs,
        },
    }
    lines = ["---", *yaml_lines(meta), "---", "", f"# {name}", ""]
    lines += [
        "Counts of how often each MLP neuron of a language model is active (activation > 0) on",
        "the tokens of each language, made with [langneurons](https://pypi.org/project/langneurons/)"
        f" {__version__}. Counts and token totals are additive (shards merge by addition);",
        "the probability `P = n_active / n_tokens` is computed from them.",
        "",
        f"- `{ZIP_NAME}`: the whole activation store (Zarr v3, schema version "
        f"{parts.info.get('schema_version', schema.SCHEMA_VERSION)}), {zip_sha256}",
        f"- `{DATA_DIR}/`: one Parquet table per run, one row per (language, role, layer, neuron)",
        *(
            [
                "  (mixture-of-experts runs: per (language, role, layer, expert, neuron), with "
                "`n_routed` and `P = n_active / n_routed`)"
            ]
            if any("moe" in entry for entry in runs.values())
            else []
        ),
        "",
        f"**Licence:** `{license}`."
        + (
            " Set the licence of these counts (the model's and the corpus's terms apply) "
            "before sharing them."
            if license in ("unknown", "other")
            else ""
        ),
        "",
    ]
    for run, entry in runs.items():
        lines += _run_section(run, entry, files[run])
    lines += _loading(parts.runs[0], files[parts.runs[0]])
    return "\n".join(lines) + "\n"


def _run_entry(info: dict[str, Any]) -> dict[str, Any]:
    """What the card says of one run (from :meth:`ActivationStore.info`)."""
    attrs = _attrs.decode(info["attrs"])
    prov = attrs.get("provenance") if isinstance(attrs.get("provenance"), dict) else {}
    entry = {
        "model": str(attrs.get("model", "")),
        "revision": str(attrs.get("revision", "")),
        "corpus": str(attrs.get("corpus", "")),
        "corpus_hash": str(attrs.get("corpus_hash", "")),
        "hook_point": str(attrs.get("hook_point", "")),
        "activation": str(attrs.get("activation", "")),
        "dtype": str(attrs.get("dtype", "")),
        "created": str(attrs.get("created", "")),
        "tool_version": str(attrs.get("tool_version", "")),
        "made": str((prov or {}).get("method", "")),
        "languages": list(info["languages"]),
        "layers": int(info["layers"]),
        "neurons": int(info["neurons"]),
        "n_tokens": info["n_tokens"],
        "identification": list(info.get("results", {}).get("identification", [])),
    }
    if "sequences" in info:
        entry["sequences"] = int(info["sequences"])
    if "moe" in info:  # a mixture-of-experts run
        entry["moe"] = dict(info["moe"])
    if prov:
        entry["provenance"] = prov
    return entry


def _experts(entry: dict[str, Any]) -> str:
    """``"8 routed + 1 shared experts (top-2) x "`` of a MoE run's card entry ("" when dense)."""
    moe = entry.get("moe")
    if not moe:
        return ""
    shared = f" + {moe['n_shared']} shared" if moe.get("n_shared") else ""
    return f"{moe['n_experts']} routed{shared} experts (top-{moe['top_k']}) x "


def _run_section(run: str, entry: dict[str, Any], file: str) -> list[str]:
    lines = [
        f"## Run `{run}` (config `{config_name(run)}`)",
        "",
        "| | |",
        "| --- | --- |",
        f"| model | `{entry['model'] or '?'}` {entry['revision']} |",
        f"| corpus | {entry['corpus'] or '?'} ({entry['corpus_hash'] or 'no hash recorded'}) |",
        f"| counted | {entry['hook_point'] or '?'} ({entry['activation'] or '?'}, "
        f"{entry['dtype']}) |",
        f"| shape | {entry['layers']} layers x {_experts(entry)}{entry['neurons']} neurons |",
        f"| languages | {' '.join(entry['languages'])} |",
        f"| how it was made | {entry['made'] or '?'} by langneurons {entry['tool_version']}, "
        f"{entry['created']} |",
        f"| table | `{file}` |",
    ]
    if entry["identification"]:
        cols = ", ".join(
            f"`{c}`" for name in entry["identification"] for c in _export_parquet.column_names(name)
        )
        lines.append(f"| identification results | {cols} |")
    lines.append("")
    prov = entry.get("provenance")
    if prov:
        lines += ["Provenance:", "", "```json", json.dumps(prov, indent=2), "```", ""]
    return lines


def _loading(run: str, file: str) -> list[str]:
    return [
        "## How to load it",
        "",
        "With the `datasets` library (one config per run):",
        "",
        "```python",
        "from datasets import load_dataset",
        f'table = load_dataset("path/to/this/folder", "{config_name(run)}", split="train")',
        "```",
        "",
        "With pandas, polars or DuckDB:",
        "",
        "```python",
        "import pandas as pd",
        f'df = pd.read_parquet("{file}")',
        "",
        "import duckdb",
        f"duckdb.sql(\"SELECT language, layer, avg(P) FROM '{file}' GROUP BY ALL\")",
        "```",
        "",
        "The store itself, with plain xarray or langneurons:",
        "",
        "```python",
        "import xarray as xr, zarr",
        f'ds = xr.open_zarr(zarr.storage.ZipStore("{ZIP_NAME}", mode="r"), group="{run}")',
        "",
        "import langneurons",
        f'ds = langneurons.open_store("{ZIP_NAME}").open_run("{run}")',
        "```",
        "",
        f"or unpack it with `langneurons import zip {ZIP_NAME} --store store.zarr`.",
    ]


# ---------------------------------------------------------------------- YAML
def yaml_lines(value: Any, indent: int = 0) -> list[str]:
    """Block-style YAML of mappings, lists and scalars (scalars as JSON, which YAML reads)."""
    pad = " " * indent
    out: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if _is_scalar(item) or item == [] or item == {}:
                out.append(f"{pad}{_key(key)}: {_scalar(item)}")
            else:
                out.append(f"{pad}{_key(key)}:")
                out.extend(yaml_lines(item, indent + 2))
        return out
    for item in value:
        if _is_scalar(item) or item == [] or item == {}:
            out.append(f"{pad}- {_scalar(item)}")
            continue
        nested = yaml_lines(item, indent + 2)
        out.append(f"{pad}- {nested[0].lstrip()}")
        out.extend(nested[1:])
    return out


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, (dict, list, tuple))


def _scalar(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


_PLAIN_KEY = re.compile(r"^[a-z_][a-z0-9_]*$")
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})


def _key(key: Any) -> str:
    """A mapping key: bare when plainly a word YAML reads as text, else quoted."""
    text = str(key)
    plain = _PLAIN_KEY.match(text) is not None and text not in _YAML_WORDS
    return text if plain else json.dumps(text, ensure_ascii=False)
