"""Import activation counts saved by the papers' reference code into an activation store.

Two formats are read, both with ``torch.load(weights_only=True)`` (see :mod:`._torchio`):

``njunlp``
    The "full minus prefix" files of Zhang et al. (2025): per language,
    ``activation.{lang}.{tag}.pt`` (prompt + response) and ``prefix.activation.{lang}.{tag}.pt``
    (prompt alone), each ``{"total_tokens": int, "over_zero": int64[layers, neurons]}``. Prompt
    counts are the prefix file; response counts are ``max(full - prefix, 0)`` cell by cell with
    ``max(total_full - total_prefix, 1)`` tokens (spec: identification, "Importing the full minus
    prefix files").
``lape``
    The files of Tang et al. (2024), one per language, ``{"n": int, "over_zero": int[layers,
    neurons]}`` over all tokens of a plain-text corpus. They are stored under the ``response``
    role (the default role of every analysis); prompt counts and tokens are 0.

Everything is read and validated before the store is touched, so bad input leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from langneurons._deprecate import renamed_keywords
from langneurons._progress import progress
from langneurons.errors import (
    InputFormatError,
    ParameterError,
    RunExistsError,
    StoreValidationError,
)
from langneurons.extract._torchio import int_array, load_pt, require_torch
from langneurons.store import Counts, RunMetadata, create_store, schema

log = logging.getLogger(__name__)

NJUNLP_ROLES = "prompt = prefix file; response = full minus prefix"
LAPE_ROLES = "all tokens stored under response"

PathLike = str | os.PathLike[str]


# ---------------------------------------------------------------------- validation helpers
def _check_languages(languages: Sequence[str]) -> list[str]:
    """The language list as labels, or ParameterError."""
    if isinstance(languages, str) or not isinstance(languages, Sequence):
        raise ParameterError(
            f"languages must be a list of language codes such as ['de', 'fr'], not {languages!r}"
        )
    if len(languages) == 0:
        raise ParameterError("languages is empty; give at least one language code")
    out = []
    for label in languages:
        try:
            out.append(schema.check_language(label))
        except StoreValidationError as exc:
            raise ParameterError(str(exc)) from None
    seen: set[str] = set()
    for label in out:
        if label in seen:
            raise ParameterError(f"language {label!r} is given twice; list each language once")
        seen.add(label)
    return out


def _check_total(value: Any, key: str, path: Path) -> int:
    """A token total from a file: a non-negative Python int or 0-d integer tensor."""
    torch = require_torch()
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        value = int_array(value, f"{path}: {key!r}").item()
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InputFormatError(
            f"{path}: {key!r} is {value!r} ({type(value).__name__}); expected an integer token "
            "total"
        )
    if value < 0:
        raise InputFormatError(f"{path}: {key!r} is {value}; token totals must be >= 0")
    if value > np.iinfo(np.int64).max:
        raise InputFormatError(
            f"{path}: {key!r} is {value}, above the int64 limit {np.iinfo(np.int64).max}; "
            "check the file: no real token total is this large"
        )
    return int(value)


def _read_stats(path: Path, total_key: str) -> tuple[int, np.ndarray]:
    """Load ``{total_key: int, "over_zero": int[layers, neurons]}`` and check it."""
    obj = load_pt(path)
    keys = (total_key, "over_zero")
    if not isinstance(obj, dict):
        raise InputFormatError(
            f"{path} holds a {type(obj).__name__}; expected a dict with keys {keys!r}"
        )
    for key in keys:
        if key not in obj:
            have = ", ".join(repr(k) for k in obj) or "none"
            raise InputFormatError(f"{path} has no key {key!r} (keys: {have}); expected {keys!r}")
    total = _check_total(obj[total_key], total_key, path)
    over_zero = int_array(obj["over_zero"], f"{path}: 'over_zero'")
    if over_zero.ndim != 2 or 0 in over_zero.shape:
        raise InputFormatError(
            f"{path}: 'over_zero' has shape {tuple(over_zero.shape)}; expected [layers, neurons] "
            "with at least one of each"
        )
    if over_zero.dtype.kind == "u" and over_zero.size and over_zero.max() > np.iinfo(np.int64).max:
        raise InputFormatError(f"{path}: 'over_zero' holds counts that overflow int64")
    over_zero = over_zero.astype(np.int64)
    negative = int((over_zero < 0).sum())
    if negative:
        raise InputFormatError(
            f"{path}: 'over_zero' holds {negative} negative counts; counts must be >= 0"
        )
    above = int((over_zero > total).sum())
    if above:
        raise InputFormatError(
            f"{path}: 'over_zero' exceeds {total_key}={total} at {above} cells; a count can never "
            "exceed the tokens counted"
        )
    return total, over_zero


def _check_same_shape(
    shapes: dict[str, tuple[int, ...]], language: str, shape: tuple[int, ...]
) -> None:
    """All languages must have the first language's [layers, neurons]."""
    if shapes:
        first, first_shape = next(iter(shapes.items()))
        if shape != first_shape:
            raise InputFormatError(
                f"language {language!r} has over_zero of shape {shape} but {first!r} has "
                f"{first_shape}; all languages must come from the same model"
            )
    shapes[language] = shape


def _check_directory(directory: PathLike) -> Path:
    path = Path(directory)
    if not path.exists():
        raise InputFormatError(f"directory {path} does not exist; check the path")
    if not path.is_dir():
        raise InputFormatError(f"{path} is a file; expected the directory holding the .pt files")
    return path


# ---------------------------------------------------------------------- readers
def read_njunlp(
    directory: PathLike, tag: str, languages: Sequence[str]
) -> tuple[Counts, dict[str, Any]]:
    """Read the "full minus prefix" activation files of Zhang et al. (2025) into counts.

    For each language ``lang`` the directory must hold ``activation.{lang}.{tag}.pt`` (the model
    run over prompt + response) and ``prefix.activation.{lang}.{tag}.pt`` (prompt alone), each
    ``{"total_tokens": int, "over_zero": int64[layers, neurons]}``. Then

    - prompt: ``n_active = over_zero_prefix``, ``n_tokens = total_tokens_prefix``;
    - response: ``n_active = max(over_zero_full - over_zero_prefix, 0)`` cell by cell and
      ``n_tokens = max(total_tokens_full - total_tokens_prefix, 1)``.

    Negative differences (re-tokenisation at the prompt/response boundary) are clamped to 0 and
    counted in the report. A difference above the response token total cannot be stored (a count
    never exceeds its tokens); it is clamped to the total and counted separately.

    Parameters
    ----------
    directory
        Folder holding the files.
    tag
        The part of the file names after the language (``activation.de.{tag}.pt``).
    languages
        Language codes, in the order the store will hold them.

    Returns
    -------
    counts, report
        ``report`` holds ``format``, ``directory``, ``tag``, ``languages``, ``layers``,
        ``neurons``, ``files``, ``n_tokens`` (per language and role, as stored),
        ``source_tokens`` (per language, ``full`` and ``prefix`` totals as read), ``clamped_cells``
        (per language) and ``clamped_cells_total``, ``clamped_above_cells`` (per language) and
        ``clamped_above_cells_total``, ``clamped_tokens`` (languages whose prefix total was not
        below the full total, with the raw difference) and ``roles``.

    Raises
    ------
    ParameterError
        Empty or duplicate languages, an invalid tag.
    InputFormatError
        A missing directory or file, a file that is not such a dict of integer counts, or shapes
        that differ between files.
    """
    langs = _check_languages(languages)
    if not isinstance(tag, str) or not tag or "/" in tag or os.sep in tag:
        raise ParameterError(
            f"tag {tag!r} is invalid; give the file-name part after the language, e.g. 'train' "
            "for activation.de.train.pt"
        )
    folder = _check_directory(directory)
    pairs = {
        lang: (
            folder / f"activation.{lang}.{tag}.pt",
            folder / f"prefix.activation.{lang}.{tag}.pt",
        )
        for lang in langs
    }
    for lang, (full, prefix) in pairs.items():
        for path in (full, prefix):
            if not path.is_file():
                raise InputFormatError(
                    f"{path} does not exist; language {lang!r} needs both {full.name} "
                    f"(prompt + response) and {prefix.name} (prompt only)"
                )

    k = len(langs)
    shapes: dict[str, tuple[int, ...]] = {}
    n_active: np.ndarray | None = None
    n_tokens = np.zeros((k, 2), dtype=np.int64)
    files: list[str] = []
    source_tokens: dict[str, dict[str, int]] = {}
    clamped: dict[str, int] = {}
    clamped_above: dict[str, int] = {}
    clamped_tokens: dict[str, int] = {}
    with progress("import njunlp", total=2 * k, unit="file") as task:
        for i, lang in enumerate(langs):
            full, prefix = pairs[lang]
            task.note(full.name)
            total_full, oz_full = _read_stats(full, "total_tokens")
            task.update(1)
            task.note(prefix.name)
            total_prefix, oz_prefix = _read_stats(prefix, "total_tokens")
            task.update(1)
            files += [full.name, prefix.name]
            if oz_prefix.shape != oz_full.shape:
                raise InputFormatError(
                    f"{prefix.name} has over_zero of shape {oz_prefix.shape} but {full.name} has "
                    f"{oz_full.shape}; both files of language {lang!r} must come from the same "
                    "model"
                )
            _check_same_shape(shapes, lang, oz_full.shape)
            if n_active is None:
                n_active = np.zeros((k, 2, *oz_full.shape), dtype=np.int64)
            diff = oz_full - oz_prefix
            raw_tokens = total_full - total_prefix
            tokens = max(raw_tokens, 1)
            clamped[lang] = int((diff < 0).sum())
            clamped_above[lang] = int((diff > tokens).sum())
            if raw_tokens < 1:
                clamped_tokens[lang] = raw_tokens
            n_active[i, 0] = oz_prefix
            n_active[i, 1] = np.clip(diff, 0, tokens)
            n_tokens[i] = (total_prefix, tokens)
            source_tokens[lang] = {"full": total_full, "prefix": total_prefix}
            if clamped[lang] or clamped_above[lang] or lang in clamped_tokens:
                log.info(
                    "%s: clamped %d negative and %d too-large response counts (response tokens %d "
                    "from %d - %d)",
                    lang,
                    clamped[lang],
                    clamped_above[lang],
                    tokens,
                    total_full,
                    total_prefix,
                )
    assert n_active is not None  # langs is non-empty
    counts = Counts(languages=langs, n_active=n_active, n_tokens=n_tokens)
    report: dict[str, Any] = {
        "format": "njunlp",
        "directory": str(folder),
        "tag": tag,
        "languages": langs,
        "layers": counts.shape[0],
        "neurons": counts.shape[1],
        "files": files,
        "n_tokens": _tokens_by_role(langs, n_tokens),
        "source_tokens": source_tokens,
        "clamped_cells": clamped,
        "clamped_cells_total": sum(clamped.values()),
        "clamped_above_cells": clamped_above,
        "clamped_above_cells_total": sum(clamped_above.values()),
        "clamped_tokens": clamped_tokens,
        "roles": NJUNLP_ROLES,
    }
    return counts, report


def read_lape(files: Sequence[PathLike], languages: Sequence[str]) -> tuple[Counts, dict[str, Any]]:
    """Read the activation files of Tang et al. (2024, LAPE) into counts.

    Each file is ``{"n": int, "over_zero": int[layers, neurons]}`` over every token of a
    language's corpus. The counts are stored under the ``response`` role (``n_active =
    over_zero``, ``n_tokens = n``); prompt counts and tokens are 0.

    Parameters
    ----------
    files
        One file per language, in the order of ``languages``.
    languages
        Language codes, in the order the store will hold them.

    Returns
    -------
    counts, report
        ``report`` holds ``format``, ``languages``, ``layers``, ``neurons``, ``files`` (names),
        ``n_tokens`` (per language and role, as stored) and ``roles``.

    Raises
    ------
    ParameterError
        Empty or duplicate languages or files, or as many files as languages not given.
    InputFormatError
        A missing file, a file that is not such a dict of integer counts, or shapes that differ
        between languages.
    """
    langs = _check_languages(languages)
    if isinstance(files, str | os.PathLike) or not isinstance(files, Sequence):
        raise ParameterError(f"files must be a list of paths, one per language, not {files!r}")
    paths = [Path(f) for f in files]
    if len(paths) != len(langs):
        raise ParameterError(
            f"{len(paths)} files but {len(langs)} languages; give one file per language, in the "
            "same order"
        )
    seen: set[Path] = set()
    for path in paths:
        if path.resolve() in seen:
            raise ParameterError(f"file {path} is given twice; give one file per language")
        seen.add(path.resolve())
    for lang, path in zip(langs, paths, strict=True):
        if not path.is_file():
            what = "is a directory, not a file" if path.is_dir() else "does not exist"
            raise InputFormatError(f"{path} {what}; it was given for language {lang!r}")

    k = len(langs)
    shapes: dict[str, tuple[int, ...]] = {}
    n_active: np.ndarray | None = None
    n_tokens = np.zeros((k, 2), dtype=np.int64)
    with progress("import lape", total=k, unit="file") as task:
        for i, (lang, path) in enumerate(zip(langs, paths, strict=True)):
            task.note(path.name)
            total, over_zero = _read_stats(path, "n")
            task.update(1)
            _check_same_shape(shapes, lang, over_zero.shape)
            if n_active is None:
                n_active = np.zeros((k, 2, *over_zero.shape), dtype=np.int64)
            n_active[i, 1] = over_zero
            n_tokens[i, 1] = total
    assert n_active is not None  # langs is non-empty
    counts = Counts(languages=langs, n_active=n_active, n_tokens=n_tokens)
    report: dict[str, Any] = {
        "format": "lape",
        "languages": langs,
        "layers": counts.shape[0],
        "neurons": counts.shape[1],
        "files": [p.name for p in paths],
        "n_tokens": _tokens_by_role(langs, n_tokens),
        "roles": LAPE_ROLES,
    }
    return counts, report


def _tokens_by_role(langs: Sequence[str], n_tokens: np.ndarray) -> dict[str, dict[str, int]]:
    return {
        lang: {role: int(n_tokens[i, r]) for r, role in enumerate(schema.ROLES)}
        for i, lang in enumerate(langs)
    }


# ---------------------------------------------------------------------- importers
@renamed_keywords(store_url="store")
def import_njunlp(
    store: PathLike,
    run: str,
    directory: PathLike,
    tag: str,
    languages: Sequence[str],
    *,
    model: str = "",
    merge: bool = False,
) -> dict[str, Any]:
    """Import "full minus prefix" files (see :func:`read_njunlp`) into a run of a store.

    Every file is read and validated first; only then is the store created (when missing) and the
    run created with these languages, or the languages added to the existing run (summed into
    languages already there when ``merge``). The run's provenance records the format, the file
    names, the tag, the clamped cells and how the roles were filled.

    Parameters
    ----------
    store
        Store path or URL (created when missing). (Named ``store_url`` before 0.2; that name
        still works, with a DeprecationWarning.)
    run
        Run path, e.g. ``"qwen2.5-7b/base"``.
    directory, tag, languages
        As in :func:`read_njunlp`.
    model
        Model name recorded in the run's metadata ("" when unknown).
    merge
        Add the counts to languages already in the run instead of refusing them.

    Returns
    -------
    dict
        The report of :func:`read_njunlp` plus ``store``, ``run``, ``model`` and ``action``
        (``"created"``, ``"added"`` or ``"merged"``).
    """
    run = _check_target(run, model)
    counts, report = read_njunlp(directory, tag, languages)
    provenance = {
        "method": "imported",
        "format": "njunlp",
        "files": report["files"],
        "tag": tag,
        "clamped_cells": report["clamped_cells"],
        "clamped_above_cells": report["clamped_above_cells"],
        "clamped_tokens": report["clamped_tokens"],
        "roles": NJUNLP_ROLES,
    }
    return _write(store, run, counts, report, provenance, model=model, merge=merge)


@renamed_keywords(store_url="store")
def import_lape(
    store: PathLike,
    run: str,
    files: Sequence[PathLike],
    languages: Sequence[str],
    *,
    model: str = "",
    merge: bool = False,
) -> dict[str, Any]:
    """Import LAPE activation files (see :func:`read_lape`) into a run of a store.

    Every file is read and validated first; only then is the store created (when missing) and the
    run created with these languages, or the languages added to the existing run (summed into
    languages already there when ``merge``). The counts go under the ``response`` role.

    Parameters
    ----------
    store
        Store path or URL (created when missing). (Named ``store_url`` before 0.2; that name
        still works, with a DeprecationWarning.)
    run
        Run path, e.g. ``"llama-2-7b/base"``.
    files, languages
        As in :func:`read_lape`.
    model
        Model name recorded in the run's metadata ("" when unknown).
    merge
        Add the counts to languages already in the run instead of refusing them.

    Returns
    -------
    dict
        The report of :func:`read_lape` plus ``store``, ``run``, ``model`` and ``action``.
    """
    run = _check_target(run, model)
    counts, report = read_lape(files, languages)
    provenance = {
        "method": "imported",
        "format": "lape",
        "files": report["files"],
        "roles": LAPE_ROLES,
    }
    return _write(store, run, counts, report, provenance, model=model, merge=merge)


def _check_target(run: str, model: str) -> str:
    """Check the run name and model before any file is read."""
    if not isinstance(model, str):
        raise ParameterError(f"model must be a string (a name or path), not {model!r}")
    return schema.check_name(run)


def _write(
    store: PathLike,
    run: str,
    counts: Counts,
    report: dict[str, Any],
    provenance: dict[str, Any],
    *,
    model: str,
    merge: bool,
) -> dict[str, Any]:
    """Create the run with ``counts``, or add or merge them into the existing run."""
    url = os.fspath(store)
    meta = RunMetadata(model=model, dtype="unknown", hook_point="", provenance=provenance)
    opened = create_store(url)
    action = ""
    if run not in opened.runs():
        layers, neurons = counts.shape
        try:
            opened.create_run(run, n_layers=layers, n_neurons=neurons, metadata=meta, counts=counts)
            action = "created"
        except RunExistsError:  # another writer created it since we looked
            pass
    if not action:
        writer = opened.writer(run)
        existing = writer.metadata().model
        if model and existing and model != existing:
            raise ParameterError(
                f"model {model!r} differs from the model {existing!r} of run {run!r}; import into "
                "a run of the same model or choose another run"
            )
        if merge:
            writer.merge_counts(counts, provenance=provenance)
            action = "merged"
        else:
            writer.add_languages(counts, provenance=provenance)
            action = "added"
    log.info(
        "imported %s (%s) into %s run %s (%s)",
        ", ".join(counts.languages),
        report["format"],
        url,
        run,
        action,
    )
    return {**report, "store": url, "run": run, "model": model, "action": action}
