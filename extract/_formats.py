"""The corpus file formats: JSON lines and MAPO JSON, parsed into :class:`Record` objects.

Each parser returns its records with their locations (``path:line`` or ``path: item i``) so the
caller can name the place of a duplicate; the formats themselves are described in
:mod:`langneurons.extract.corpus`, which reads files through :func:`parse` and re-exports
:class:`Record`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Final

from langneurons.errors import InputFormatError, ParameterError
from langneurons.extract._languages import language_code

FIELDS: Final = ("language", "prompt", "response", "id")  # fields of a JSON-lines record


@dataclasses.dataclass(frozen=True)
class Record:
    """One prompt (and, when known, its response) in one language.

    Parameters
    ----------
    language
        Language code, e.g. ``"de"`` or ``"zh-Hans"``.
    prompt
        The question or instruction given to the model.
    response
        The answer (reference or generated); ``None`` when only prompts are known.
    id
        Item identifier; the same id in several languages names the same (parallel) item.
    answer
        The item's reference answer, when it has a short one (a number for a maths problem);
        accuracy-based deactivation scores generated answers against it. ``None`` when unknown.
        It is not part of :func:`~langneurons.extract.corpus.corpus_hash`: the model never
        reads it.
    """

    language: str
    prompt: str
    response: str | None
    id: str
    answer: str | None = None


# ---------------------------------------------------------------------- reading
def decode_text(path: Path, data: bytes) -> str:
    """The file's text (UTF-8, optional BOM), or InputFormatError naming the bad line."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InputFormatError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {column}); "
            "save the file as UTF-8"
        ) from None
    return text.removeprefix("\ufeff")


def _check_text(value: Any, field: str, where: str) -> str:
    """A string field of a record: a string, not blank (an id also without surrounding spaces)."""
    if not isinstance(value, str):
        raise InputFormatError(
            f"{where}: field {field!r} is {value!r} ({type(value).__name__}); expected a string"
        )
    if field in ("prompt", "response") and not value.strip():
        raise InputFormatError(f"{where}: field {field!r} is empty; give non-empty text")
    if field == "id" and (not value or value != value.strip()):
        raise InputFormatError(
            f"{where}: field 'id' is {value!r}; give a non-empty id without surrounding spaces"
        )
    return value


def _check_answer(value: Any, where: str) -> str | None:
    """The optional ``answer`` field: absent/null, a non-blank string, or a number (as text)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InputFormatError(
            f"{where}: field 'answer' is {short(value)} ({type(value).__name__}); expected a "
            "string or a number"
        )
    text = str(value).strip()
    if not text:
        raise InputFormatError(f"{where}: field 'answer' is empty; give the answer or leave it out")
    return text


def _check_code(value: Any, field: str, where: str) -> str:
    """A language field as a code, or InputFormatError with a suggestion."""
    if not isinstance(value, str):
        raise InputFormatError(
            f"{where}: field {field!r} is {value!r} ({type(value).__name__}); expected a string"
        )
    try:
        return language_code(value)
    except ParameterError as exc:
        raise InputFormatError(f"{where}: {exc}") from None


def _parse_jsonl(path: Path, text: str, require_response: bool) -> list[tuple[str, str, Record]]:
    """Records of a JSON-lines text, each with its location (``path:line``, ``line n``)."""
    out: list[tuple[str, str, Record]] = []
    required = [f for f in FIELDS if f != "response" or require_response]
    # split on "\n" only: str.splitlines would also split at U+2028 etc., legal inside JSON strings
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputFormatError(
                f"{where}:{exc.colno}: malformed JSON ({exc.msg}); each line must hold one "
                "JSON object"
            ) from None
        if not isinstance(obj, dict):
            raise InputFormatError(
                f"{where}: expected a JSON object with fields {', '.join(FIELDS)}, got "
                f"{type(obj).__name__} {short(obj)}"
            )
        missing = [f for f in required if f not in obj]
        if missing:
            raise InputFormatError(
                f"{where}: missing field{'s' if len(missing) > 1 else ''} "
                f"{', '.join(repr(f) for f in missing)}; each record needs "
                f"{', '.join(required)}"
            )
        if require_response and obj["response"] is None:
            raise InputFormatError(
                f"{where}: field 'response' is null; give the response text, or read with "
                "require_response=False"
            )
        response = obj.get("response")
        record = Record(
            language=_check_code(obj["language"], "language", where),
            prompt=_check_text(obj["prompt"], "prompt", where),
            response=None if response is None else _check_text(response, "response", where),
            id=_check_text(obj["id"], "id", where),
            answer=_check_answer(obj.get("answer"), where),
        )
        out.append((where, f"line {number}", record))
    return out


_ANSWER_IN = re.compile(r"Please answer in ([A-Za-z][A-Za-z ]*?)\s*\.")


def _mapo_items(path: Path, doc: Any) -> list[Any]:
    """The list of items of a MAPO document (a list, or an object holding exactly one list)."""
    if isinstance(doc, list):
        return doc
    lists = [key for key, value in doc.items() if isinstance(value, list)]
    if len(lists) != 1:
        found = f"lists under {', '.join(repr(k) for k in lists)}" if lists else "no list"
        raise InputFormatError(
            f"{path}: a JSON object at the top level must hold exactly one list of items, "
            f"found {found}"
        )
    items: list[Any] = doc[lists[0]]
    return items


def _parse_mapo(
    path: Path, items: list[Any], require_response: bool
) -> list[tuple[str, str, Record]]:
    """Records of a MAPO item list, each with its location (``path: item i``, ``item i``)."""
    out: list[tuple[str, str, Record]] = []
    index_in_language: dict[str, int] = {}
    for i, item in enumerate(items):
        where = f"{path}: item {i}"
        if not isinstance(item, dict):
            raise InputFormatError(
                f"{where}: expected a JSON object with 'lang', 'instruction' and 'answers', got "
                f"{type(item).__name__} {short(item)}"
            )
        prompt_key = "instruction" if "instruction" in item else "prompt"
        if prompt_key not in item:
            raise InputFormatError(f"{where}: missing field 'instruction'; each item needs one")
        prompt = _check_text(item[prompt_key], prompt_key, where)
        if "lang" in item:
            language = _check_code(item["lang"], "lang", where)
        else:
            match = _ANSWER_IN.search(prompt)
            if match is None:
                raise InputFormatError(
                    f"{where}: missing field 'lang' (and no 'Please answer in <Language>.' in "
                    "the instruction); each item needs its language"
                )
            language = _check_code(match.group(1), "lang", where)
        position = index_in_language.get(language, 0)
        index_in_language[language] = position + 1
        if "id" in item:
            raw_id = item["id"]
            if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
                raise InputFormatError(
                    f"{where}: field 'id' is {raw_id!r} ({type(raw_id).__name__}); expected a "
                    "string or an integer"
                )
            base_id = _check_text(str(raw_id), "id", where)
        else:
            base_id = str(position)
        answers = _mapo_answers(item, where, require_response)
        if not answers:
            out.append((where, f"item {i}", Record(language, prompt, None, base_id)))
        for j, response in enumerate(answers):
            rid = base_id if len(answers) == 1 else f"{base_id}-{j}"
            label = f"item {i}, answer {j}"
            out.append((f"{path}: {label}", label, Record(language, prompt, response, rid)))
    return out


def _mapo_answers(item: dict[str, Any], where: str, require_response: bool) -> list[str]:
    """The generated answers of one MAPO item (``answers[*].generated``, or ``result``)."""
    if "answers" in item:
        answers = item["answers"]
        if not isinstance(answers, list):
            raise InputFormatError(
                f"{where}: field 'answers' is {type(answers).__name__}; expected a list of "
                "{'generated': ...} objects"
            )
    elif "result" in item:
        answers = [{"generated": item["result"]}]
    else:
        answers = []
    out = []
    for j, answer in enumerate(answers):
        if not isinstance(answer, dict) or "generated" not in answer:
            raise InputFormatError(
                f"{where}, answer {j}: expected an object with field 'generated', got "
                f"{short(answer)}"
            )
        out.append(_check_text(answer["generated"], "response", f"{where}, answer {j}"))
    if not out and require_response:
        raise InputFormatError(
            f"{where}: missing field 'answers' (or it is empty); give at least one "
            "{'generated': ...} answer, or read with require_response=False"
        )
    return out


def short(value: Any, limit: int = 40) -> str:
    """repr of a value cut to ``limit`` characters, for messages."""
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse(
    path: Path, text: str, stripped: str, require_response: bool
) -> list[tuple[str, str, Record]]:
    """Dispatch on the content: a MAPO JSON document, else JSON lines."""
    if stripped[0] == "[":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputFormatError(
                f"{path}:{exc.lineno}:{exc.colno}: malformed JSON ({exc.msg}); a file starting "
                "with '[' must be one JSON list of MAPO items"
            ) from None
        return _parse_mapo(path, _mapo_items(path, doc), require_response)
    if stripped[0] == "{":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError:
            doc = None  # not a single document: JSON lines (or malformed, reported per line)
        if _is_mapo_container(doc):
            return _parse_mapo(path, _mapo_items(path, doc), require_response)
    return _parse_jsonl(path, text, require_response)


def _is_mapo_container(doc: Any) -> bool:
    """True for a top-level object holding a list of items (not a one-line JSONL record)."""
    return (
        isinstance(doc, dict)
        and "language" not in doc
        and any(isinstance(value, list) for value in doc.values())
    )
