"""Language names and codes: canonical tags, English names, and suggestions for typos.

Languages are stored as ISO 639-1 codes, optionally with a script or region subtag
(``"zh-Hans"``, ``"pt-BR"``); English language names (``"German"``) are mapped to their codes.
An unknown value is refused with the closest known codes suggested. Public names are
re-exported by :mod:`langneurons.extract.corpus`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Final

from langneurons.errors import ParameterError

#: The ten languages of the built-in corpus (see :func:`langneurons.extract.corpus.builtin_corpus`).
BUILTIN_LANGUAGES: Final = ("en", "zh", "es", "fr", "de", "ja", "ru", "bn", "th", "sw")

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


def check_language_filter(languages: Sequence[str] | None) -> list[str] | None:
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
