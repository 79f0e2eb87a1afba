"""Parallel prompt/response corpora: read, validate, hash and write them.

Two input formats are read, detected by content rather than by file extension:

JSON lines
    One object per line (blank lines ignored)::

        {"id": "q01", "language": "de", "prompt": "...", "response": "..."}

    The same ``id`` in several languages names the same item (the corpus is parallel).
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
worked answers, written for this project, in the ten languages of :data:`BUILTIN_LANGUAGES`.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Final

from langneurons.errors import InputFormatError, ParameterError

log = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

BUILTIN_LANGUAGES: Final = ("en", "zh", "es", "fr", "de", "ja", "ru", "bn", "th", "sw")
FIELDS: Final = ("language", "prompt", "response", "id")  # fields of a JSON-lines record
_HASH_HEADER: Final = "langneurons-corpus-v1"


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
    """

    language: str
    prompt: str
    response: str | None
    id: str


# ---------------------------------------------------------------------- languages
#: English language names (looked up case-insensitively) and their ISO 639-1 codes.
LANGUAGE_NAMES: Final[dict[str, str]] = {
    "Afrikaans": "af",
    "Albanian": "sq",
    "Amharic": "am",
    "Arabic": "ar",
    "Armenian": "hy",
    "Assamese": "as",
    "Azerbaijani": "az",
    "Basque": "eu",
    "Belarusian": "be",
    "Bengali": "bn",
    "Bangla": "bn",
    "Bosnian": "bs",
    "Bulgarian": "bg",
    "Burmese": "my",
    "Catalan": "ca",
    "Chinese": "zh",
    "Mandarin": "zh",
    "Croatian": "hr",
    "Czech": "cs",
    "Danish": "da",
    "Dutch": "nl",
    "English": "en",
    "Esperanto": "eo",
    "Estonian": "et",
    "Filipino": "tl",
    "Tagalog": "tl",
    "Finnish": "fi",
    "French": "fr",
    "Galician": "gl",
    "Georgian": "ka",
    "German": "de",
    "Greek": "el",
    "Gujarati": "gu",
    "Haitian Creole": "ht",
    "Hausa": "ha",
    "Hebrew": "he",
    "Hindi": "hi",
    "Hungarian": "hu",
    "Icelandic": "is",
    "Igbo": "ig",
    "Indonesian": "id",
    "Irish": "ga",
    "Italian": "it",
    "Japanese": "ja",
    "Javanese": "jv",
    "Kannada": "kn",
    "Kazakh": "kk",
    "Khmer": "km",
    "Kinyarwanda": "rw",
    "Korean": "ko",
    "Kurdish": "ku",
    "Kyrgyz": "ky",
    "Lao": "lo",
    "Latin": "la",
    "Latvian": "lv",
    "Lithuanian": "lt",
    "Luxembourgish": "lb",
    "Macedonian": "mk",
    "Malagasy": "mg",
    "Malay": "ms",
    "Malayalam": "ml",
    "Maltese": "mt",
    "Maori": "mi",
    "Marathi": "mr",
    "Mongolian": "mn",
    "Nepali": "ne",
    "Norwegian": "no",
    "Norwegian Bokmal": "nb",
    "Norwegian Nynorsk": "nn",
    "Odia": "or",
    "Oriya": "or",
    "Pashto": "ps",
    "Persian": "fa",
    "Farsi": "fa",
    "Polish": "pl",
    "Portuguese": "pt",
    "Punjabi": "pa",
    "Romanian": "ro",
    "Russian": "ru",
    "Serbian": "sr",
    "Shona": "sn",
    "Sindhi": "sd",
    "Sinhala": "si",
    "Slovak": "sk",
    "Slovenian": "sl",
    "Somali": "so",
    "Spanish": "es",
    "Sundanese": "su",
    "Swahili": "sw",
    "Kiswahili": "sw",
    "Swedish": "sv",
    "Tajik": "tg",
    "Tamil": "ta",
    "Tatar": "tt",
    "Telugu": "te",
    "Thai": "th",
    "Tibetan": "bo",
    "Tigrinya": "ti",
    "Turkish": "tr",
    "Turkmen": "tk",
    "Ukrainian": "uk",
    "Urdu": "ur",
    "Uyghur": "ug",
    "Uzbek": "uz",
    "Vietnamese": "vi",
    "Welsh": "cy",
    "Wolof": "wo",
    "Xhosa": "xh",
    "Yiddish": "yi",
    "Yoruba": "yo",
    "Zulu": "zu",
}

_NAME_BY_LOWER: Final = {name.lower(): code for name, code in LANGUAGE_NAMES.items()}
#: First English name of each code in LANGUAGE_NAMES (for messages).
_NAME_OF: Final = {code: name for name, code in reversed(LANGUAGE_NAMES.items())}

#: Every ISO 639-1 code (the base of an accepted language tag).
KNOWN_CODES: Final[frozenset[str]] = frozenset(
    (
        "aa ab ae af ak am an ar as av ay az ba be bg bi bm bn bo br bs ca ce ch co cr cs cu cv "
        "cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho "
        "hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku "
        "kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn "
        "no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm "
        "sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi "
        "vo wa wo xh yi yo za zh zu"
    ).split()
)

#: Codes often given by mistake (ISO 639-2/639-3 codes, country codes) and the ISO 639-1 code
#: to suggest instead; never accepted silently.
_HINTS: Final = {
    "jp": "ja", "cn": "zh", "gr": "el", "ua": "uk", "cz": "cs", "dk": "da", "vn": "vi",
    "gb": "en", "ir": "fa", "il": "he", "kp": "ko",
    "ara": "ar", "ben": "bn", "chi": "zh", "zho": "zh", "cmn": "zh", "deu": "de", "ger": "de",
    "eng": "en", "fra": "fr", "fre": "fr", "hin": "hi", "ind": "id", "ita": "it", "jpn": "ja",
    "kor": "ko", "nld": "nl", "dut": "nl", "pol": "pl", "por": "pt", "rus": "ru", "spa": "es",
    "swa": "sw", "swh": "sw", "tha": "th", "tur": "tr", "ukr": "uk", "vie": "vi", "fas": "fa",
    "per": "fa", "heb": "he", "ell": "el", "gre": "el", "ces": "cs", "cze": "cs", "swe": "sv",
}  # fmt: skip
#: Suggestion candidates: (text, code, similarity cutoff); codes need a closer match than names.
_SUGGESTION_POOL: Final = [(code, code, 0.5) for code in _NAME_OF] + [
    (name, code, 0.6) for name, code in _NAME_BY_LOWER.items()
]
#: Tie-break for suggestions: the built-in languages first, then the named ones in name order.
_POPULARITY: Final = {
    code: rank
    for rank, code in enumerate(dict.fromkeys([*BUILTIN_LANGUAGES, *LANGUAGE_NAMES.values()]))
}

# base code, then an optional script (4 letters) and an optional region (2 letters or 3 digits)
_TAG = re.compile(r"^([A-Za-z]{2})(?:[-_]([A-Za-z]{4}))?(?:[-_]([A-Za-z]{2}|[0-9]{3}))?$")


def _canonical_tag(value: str) -> str | None:
    """``value`` as a canonical language tag ("zh-Hans", "pt-BR") if its base code is known."""
    match = _TAG.match(value)
    if match is None or match.group(1).lower() not in KNOWN_CODES:
        return None
    base, script, region = match.groups()
    parts = [base.lower()]
    if script:
        parts.append(script.title())
    if region:
        parts.append(region.upper())
    return "-".join(parts)


def _suggest(value: str) -> str:
    """' (did you mean ...?);' for the known codes and names closest to ``value`` ('' if none)."""
    key = " ".join(value.lower().split())
    match = _TAG.match(key)
    if match is not None:
        key = match.group(1)  # a tag with an unknown base: suggest for the base
    scores: dict[str, float] = {}
    if key in _HINTS:
        scores[_HINTS[key]] = 1.0
    for candidate, code, cutoff in _SUGGESTION_POOL:
        score = difflib.SequenceMatcher(None, key, candidate).ratio()
        if score >= cutoff and score > scores.get(code, 0.0):
            scores[code] = score
    if not scores:
        return ""
    best = sorted(scores, key=lambda code: (-scores[code], _POPULARITY.get(code, len(_POPULARITY))))
    shown = ", ".join(f"{code!r} ({_NAME_OF.get(code, code)})" for code in best[:3])
    return f" (did you mean {shown}?);"


def _unknown_language_message(value: object) -> str:
    """One-line message for a language that is neither a known code nor a known name."""
    hint = _suggest(value) if isinstance(value, str) else ""
    return (
        f"unknown language {value!r}{hint or ';'} use an ISO 639-1 code such as 'de' or "
        "'zh-Hans', or an English name such as 'German'"
    )


def language_code(name_or_code: str) -> str:
    """Return the canonical language code for a code or an English language name.

    Parameters
    ----------
    name_or_code
        An ISO 639-1 code (``"de"``, any case), a tag with a script or region subtag
        (``"zh-Hans"``, ``"pt_br"``), or an English name (``"German"``, any case).

    Returns
    -------
    str
        The code: lower-case base, title-case script, upper-case region (``"pt-BR"``).

    Raises
    ------
    ParameterError
        When the value is not a string, or neither a known code nor a known name; the message
        suggests the closest known codes.
    """
    if not isinstance(name_or_code, str):
        raise ParameterError(
            f"language must be a string such as 'de' or 'German', not {name_or_code!r}"
        )
    value = name_or_code.strip()
    tag = _canonical_tag(value)
    if tag is not None:
        return tag
    code = _NAME_BY_LOWER.get(" ".join(value.lower().split()))
    if code is not None:
        return code
    raise ParameterError(_unknown_language_message(name_or_code))


def _check_language_filter(languages: Sequence[str] | None) -> list[str] | None:
    """The requested languages as codes (None for all), or ParameterError."""
    if languages is None:
        return None
    if isinstance(languages, str) or not isinstance(languages, Sequence):
        raise ParameterError(
            f"languages must be a list of language codes such as ['de', 'fr'], not {languages!r}"
        )
    if len(languages) == 0:
        raise ParameterError("languages is empty; give at least one language code, or None for all")
    codes = [language_code(value) for value in languages]
    seen: set[str] = set()
    for code in codes:
        if code in seen:
            raise ParameterError(f"language {code!r} is given twice; list each language once")
        seen.add(code)
    return codes


# ---------------------------------------------------------------------- reading
def _decode(path: Path, data: bytes) -> str:
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
                f"{type(obj).__name__} {_short(obj)}"
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
                f"{type(item).__name__} {_short(item)}"
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
                f"{_short(answer)}"
            )
        out.append(_check_text(answer["generated"], "response", f"{where}, answer {j}"))
    if not out and require_response:
        raise InputFormatError(
            f"{where}: missing field 'answers' (or it is empty); give at least one "
            "{'generated': ...} answer, or read with require_response=False"
        )
    return out


def _short(value: Any, limit: int = 40) -> str:
    """repr of a value cut to ``limit`` characters, for messages."""
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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
    wanted = _check_language_filter(languages)
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
    text = _decode(path, path.read_bytes())
    stripped = text.lstrip()
    if not stripped:
        raise InputFormatError(
            f"{path} is empty; expected JSON lines (one record per line) or a MAPO JSON list"
        )
    located = _parse(path, text, stripped, require_response)
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


def _parse(
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
            raise ParameterError(f"corpus_hash needs Record objects, got {_short(record)}")
        rows.append([record.language, record.id, record.prompt, record.response])
    payload = json.dumps([_HASH_HEADER, rows], ensure_ascii=False, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(payload.encode("utf-8")).hexdigest()


def write_records(path: PathLike, records: Iterable[Record]) -> None:
    """Write records as JSON lines, atomically (a temporary file, then :func:`os.replace`).

    Each line is ``{"id", "language", "prompt", "response"}``; a ``None`` response is written
    as ``null`` (read it back with ``require_response=False``).

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
            raise ParameterError(f"write_records needs Record objects, got {_short(row)}")
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


def builtin_corpus(languages: Sequence[str] | None = None) -> list[Record]:
    """The built-in parallel corpus of grade-school maths word problems with worked answers.

    32 problems (ids ``"q01"`` to ``"q32"``), written for this project, each in the ten
    languages of :data:`BUILTIN_LANGUAGES`; numbers are the same in every language. Records are
    grouped by language in :data:`BUILTIN_LANGUAGES` order, ids ascending.

    Parameters
    ----------
    languages
        Keep only these languages (codes or English names); ``None`` keeps all ten.

    Raises
    ------
    ParameterError
        A requested language is unknown or not in the built-in corpus.
    """
    wanted = _check_language_filter(languages)
    records = list(_builtin_records())
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
    "KNOWN_CODES",
    "LANGUAGE_NAMES",
    "Record",
    "builtin_corpus",
    "corpus_hash",
    "language_code",
    "read_records",
    "write_records",
]
