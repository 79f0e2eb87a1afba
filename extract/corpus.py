"""Parallel prompt/response corpora: read, validate, hash and write them.

Two input formats are read, detected by content rather than by file extension:

JSON lines
    One object per line (blank lines ignored)::

        {"id": "q01", "language": "de", "prompt": "...", "response": "...", "answer": "7"}

    The same ``id`` in several languages names the same item (the corpus is parallel).
    ``answer`` (optional) is the item's short reference answer, used by accuracy-based
    deactivation.
MAPO JSON
    One JSON document whose top level is a list of items (or an object holding exactly one such
    list), as written by the MAPO generation scripts::

        [{"lang": "German", "instruction": "...", "answers": [{"generated": "..."}, ...]}, ...]

    Each answer becomes one record. An item's id is its ``"id"`` when it has one, else its index
    among the items of its language (so that the n-th German item and the n-th French item share
    an id); with several answers, ``-0``, ``-1``, ... is appended.

Languages are stored as ISO 639-1 codes, optionally with a script or region subtag
(``"zh-Hans"``, ``"pt-BR"``); English language names (``"German"``) are mapped to their codes.

The built-in corpus (:func:`builtin_corpus`) holds 32 short grade-school maths word problems with
worked answers, written for this project, in the ten languages of :data:`BUILTIN_LANGUAGES`. It is
split by item into an identification part (``q01``-``q24``) and a held-out evaluation part
(``q25``-``q32``, :data:`BUILTIN_PARTS`), so that deactivation is never scored on the items the
neurons were identified from.

Language codes and names live in ``_languages``, the two parsers and :class:`Record` in
``_formats``; their public names are importable from here as before.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Final

from langneurons.errors import InputFormatError, ParameterError
from langneurons.extract._formats import FIELDS, Record, decode_text, parse, short
from langneurons.extract._languages import (
    BUILTIN_LANGUAGES,
    KNOWN_CODES,
    LANGUAGE_NAMES,
    check_language_filter,
    language_code,
)

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

_HASH_HEADER: Final = "langneurons-corpus-v1"


def read_records(
    path: PathLike,
    *,
    require_response: bool = True,
    languages: Sequence[str] | None = None,
) -> list[Record]:
    """Read a parallel corpus from a JSON-lines or MAPO JSON file.

    The format is detected from the content: a file whose first non-blank character is ``[``,
    or is ``{`` and whose whole text is one JSON object holding a list, is MAPO JSON; anything
    else is read as JSON lines.

    Parameters
    ----------
    path
        The file.
    require_response
        When True (the default) every record needs a non-empty response; when False a missing
        or null response gives ``Record.response = None``.
    languages
        Keep only these languages (codes or English names), in file order; each must occur in
        the file. ``None`` keeps all.

    Returns
    -------
    list of Record
        In file order.

    Raises
    ------
    InputFormatError
        The file is missing, empty, not UTF-8, not valid JSON, or a record is malformed (missing
        or blank fields, non-string fields, unknown language, duplicate ``(language, id)``); or a
        requested language does not occur. JSON-lines messages name ``path:line``.
    ParameterError
        ``languages`` is not a list of known language codes or names.
    """
    wanted = check_language_filter(languages)
    path = Path(path)
    if not path.exists():
        raise InputFormatError(
            f"corpus file {str(path)!r} does not exist; give the path of a JSON lines or MAPO "
            "JSON file"
        )
    if path.is_dir():
        raise InputFormatError(
            f"corpus file {str(path)!r} is a directory; give the path of a JSON lines or MAPO "
            "JSON file"
        )
    text = decode_text(path, path.read_bytes())
    stripped = text.lstrip()
    if not stripped:
        raise InputFormatError(
            f"{path} is empty; expected JSON lines (one record per line) or a MAPO JSON list"
        )
    located = parse(path, text, stripped, require_response)
    if not located:
        raise InputFormatError(f"{path} holds no records; expected at least one")
    seen: dict[tuple[str, str], str] = {}
    for where, label, record in located:
        key = (record.language, record.id)
        if key in seen:
            raise InputFormatError(
                f"{where}: duplicate record (language {record.language!r}, id {record.id!r}), "
                f"first at {seen[key]}; ids must be unique within a language"
            )
        seen[key] = label
    records = [record for _, _, record in located]
    if wanted is not None:
        present = {r.language for r in records}
        for code in wanted:
            if code not in present:
                raise InputFormatError(
                    f"{path}: language {code!r} was requested but is not in the file (it has "
                    f"{', '.join(sorted(present))})"
                )
        keep = set(wanted)
        records = [r for r in records if r.language in keep]
    log.debug("read %d records from %s", len(records), path)
    return records


# ---------------------------------------------------------------------- hashing and writing
def corpus_hash(records: Iterable[Record]) -> str:
    """Content hash of a corpus, ``"sha256:<hex>"``.

    The hash covers each record's language, id, prompt and response, in order, serialised as
    compact UTF-8 JSON (``[["de", "q01", "...", "..."], ...]`` after a format header), so it is
    the same on every platform and Python version and changes when any text or the order does.
    """
    rows = []
    for record in records:
        if not isinstance(record, Record):
            raise ParameterError(f"corpus_hash needs Record objects, got {short(record)}")
        rows.append([record.language, record.id, record.prompt, record.response])
    payload = json.dumps([_HASH_HEADER, rows], ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(payload.encode("utf-8")).hexdigest()


def write_records(path: PathLike, records: Iterable[Record]) -> None:
    """Write records as JSON lines, atomically (a temporary file, then :func:`os.replace`).

    Each line is ``{"id", "language", "prompt", "response"}`` (and ``"answer"`` when the record
    has one); a ``None`` response is written as ``null`` (read it back with
    ``require_response=False``).

    Raises
    ------
    ParameterError
        ``records`` is empty or holds something other than :class:`Record`, or the target
        directory does not exist.
    """
    rows = list(records)
    if not rows:
        raise ParameterError("records is empty; give at least one Record to write")
    for row in rows:
        if not isinstance(row, Record):
            raise ParameterError(f"write_records needs Record objects, got {short(row)}")
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        raise ParameterError(
            f"cannot write {str(path)!r}: directory {str(parent)!r} does not exist"
        )
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            for r in rows:
                obj = {
                    "id": r.id,
                    "language": r.language,
                    "prompt": r.prompt,
                    "response": r.response,
                }
                if r.answer is not None:
                    obj["answer"] = r.answer
                fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.debug("wrote %d records to %s", len(rows), path)


# ---------------------------------------------------------------------- built-in corpus
@functools.cache
def _builtin_records() -> tuple[Record, ...]:
    """The packaged corpus, read once."""
    resource = resources.files("langneurons.extract") / "data" / "corpus.jsonl"
    with resources.as_file(resource) as file:
        return tuple(read_records(file))


#: The built-in corpus's parts: item ids used to identify neurons, and held-out ids to evaluate.
BUILTIN_PARTS: Final = {
    "identify": tuple(f"q{i:02d}" for i in range(1, 25)),
    "evaluate": tuple(f"q{i:02d}" for i in range(25, 33)),
}


def builtin_corpus(
    languages: Sequence[str] | None = None, *, part: str | None = None
) -> list[Record]:
    """The built-in parallel corpus of grade-school maths word problems with worked answers.

    32 problems (ids ``"q01"`` to ``"q32"``), written for this project, each in the ten
    languages of :data:`BUILTIN_LANGUAGES`; numbers are the same in every language, and each
    record's ``answer`` is the problem's number. Records are grouped by language in
    :data:`BUILTIN_LANGUAGES` order, ids ascending.

    Parameters
    ----------
    languages
        Keep only these languages (codes or English names); ``None`` keeps all ten.
    part
        ``"identify"`` (24 problems, ``q01``-``q24``) or ``"evaluate"`` (8 held-out problems,
        ``q25``-``q32``); ``None`` gives all 32. Identify on one part and deactivate on the
        other, so the evaluation is not circular.

    Raises
    ------
    ParameterError
        A requested language is unknown or not in the built-in corpus, or ``part`` is unknown.
    """
    if part is not None and part not in BUILTIN_PARTS:
        raise ParameterError(
            f"part {part!r} of the built-in corpus is unknown; use one of "
            f"{', '.join(BUILTIN_PARTS)} (or None for all)"
        )
    wanted = check_language_filter(languages)
    records = list(_builtin_records())
    if part is not None:
        ids = set(BUILTIN_PARTS[part])
        records = [r for r in records if r.id in ids]
    if wanted is None:
        return records
    for code in wanted:
        if code not in BUILTIN_LANGUAGES:
            raise ParameterError(
                f"language {code!r} is not in the built-in corpus (it has "
                f"{', '.join(BUILTIN_LANGUAGES)}); give a corpus file with read_records"
            )
    keep = set(wanted)
    return [r for r in records if r.language in keep]


__all__ = [
    "BUILTIN_LANGUAGES",
    "BUILTIN_PARTS",
    "FIELDS",
    "KNOWN_CODES",
    "LANGUAGE_NAMES",
    "Record",
    "builtin_corpus",
    "corpus_hash",
    "language_code",
    "read_records",
    "write_records",
]
