"""Which language is an answer written in? A small script and word-profile detector.

Accuracy-based deactivation counts an answer as correct only when it is *in the language it
was asked in*: a model whose German neurons are switched off may still compute the number and
answer in English. This module checks that, and only that:

- **Why not a language-ID package.** fastText's ``lid.176`` or CLD3 would need model weights
  or a compiled extension in the ``extract`` extra, and their verdicts can change between
  releases. This detector is pure Python, deterministic, offline and reads in one sitting. It
  answers "written in the expected language?" for the languages a maths benchmark such as MGSM
  uses, not fine language identification (no dialects, no close pairs such as es/pt are
  guaranteed apart).
- **Own-script languages** (zh, ja, ko, ru, uk, bn, hi, th, ar, he, el, ...) are told by the
  Unicode script of their letters: the script holding most letters wins; Han text with kana
  (at least a tenth of its letters) is Japanese, Han without kana is Chinese.
- **Latin-script languages** (en, de, fr, es, sw, and pt, it, nl, id as fallbacks) are told by
  a profile: each word found in a language's list of frequent function and maths-answer words
  scores 2, a word ending in one of its characteristic endings scores 1 (as does, for Swahili, a
  word starting with a verb's subject-tense prefix), and a letter only its
  orthography uses (ß, ñ, ç, ...) scores 2. The best score wins if it is at least 2 and beats
  the runner-up.
- **Unknown.** Text with fewer than :data:`MIN_LETTERS` letters (a bare number, an empty
  answer), or a tie, or no profile hit, gives ``"unknown"`` rather than a guess. The accuracy
  scorer counts an unknown answer as *not* in the expected language (a number alone is no
  evidence of answering in the language), so unknown can only lower accuracy; the number
  check is recorded separately (``number_ok``) so the two failures can be told apart.

The detector is checked on every prompt and reference response of the built-in corpus (all
ten languages), and on wrong-language answers (an English answer to a German question).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Final

UNKNOWN: Final = "unknown"
#: Fewer letters than this (Latin script) or than MIN_SCRIPT_LETTERS (other scripts): unknown.
MIN_LETTERS: Final = 4
MIN_SCRIPT_LETTERS: Final = 2

#: Unicode script (the first word of a character's name) -> language, for one-language scripts.
_SCRIPT_LANGUAGE: Final = {
    "CYRILLIC": "ru",
    "BENGALI": "bn",
    "THAI": "th",
    "HANGUL": "ko",
    "DEVANAGARI": "hi",
    "ARABIC": "ar",
    "HEBREW": "he",
    "GREEK": "el",
    "TAMIL": "ta",
    "TELUGU": "te",
    "GEORGIAN": "ka",
    "ARMENIAN": "hy",
    "GUJARATI": "gu",
    "KANNADA": "kn",
    "MALAYALAM": "ml",
    "GURMUKHI": "pa",
    "KHMER": "km",
    "LAO": "lo",
    "MYANMAR": "my",
    "ETHIOPIC": "am",
}
#: Languages sharing a script with the one named above: any of them counts as that script's.
_SAME_SCRIPT: Final = {"uk": "ru", "bg": "ru", "sr": "ru", "mr": "hi", "ne": "hi", "fa": "ar"}

_WORDS: Final[dict[str, str]] = {
    "en": "the a an and is are was were of to in on for so he she it they has have had there "
    "each every total answer left more than with after then this that which will be at by from "
    "how many much per day days his her their its now altogether",
    "de": "der die das den dem des und ist sind war hat haben es er sie ein eine einen einem "
    "einer zu im in mit nach von für also dann noch jeden jede jeder pro tag tage insgesamt "
    "antwort übrig sind wie viele bleiben bleibt zusammen kostet kosten sein ihr ihre",
    "fr": "le la les un une des du de et est sont a ont il elle ils elles en au aux pour par "
    "avec donc puis reste restent chaque jour jours total réponse qui que il y sa son ses leur "
    "fait font après combien coûte coûtent ensemble",
    "es": "el la los las un una unos unas y es son de del en al con por para que le les se "
    "así hay tiene tienen cada día días total respuesta quedan queda luego después su sus "
    "cuesta cuestan juntos entre",
    "sw": "na ni kwa ya wa za la cha vya kila siku jumla jibu hiyo hivyo kisha baada ana wana "
    "kuna yake zake wake kwenye katika pamoja sasa mwanzoni moja ngapi "
    "sarafu mara",
    "pt": "o os as um uma e é são do da dos das no na nos nas com por para que tem têm cada "
    "dia dias total resposta então depois seu sua não",
    "it": "lo la i gli le un una e è sono di del della dei in con per che ha hanno ogni "
    "giorno giorni totale risposta quindi poi dopo suo sua non",
    "nl": "de het een en is zijn van in op voor met dat die heeft hebben elke dag dagen totaal "
    "antwoord dus dan na zijn haar niet",
    "id": "dan yang di ke dari adalah ada setiap hari jumlah jawaban jadi lalu setelah dia "
    "mereka untuk dengan tidak",
}
_ENDINGS: Final[dict[str, tuple[str, ...]]] = {
    "en": ("ing", "ed", "ly", "th", "ght", "ks", "es"),
    "de": ("en", "ung", "cht", "sch", "keit", "lich", "ern", "st"),
    "fr": ("ent", "eux", "ais", "ait", "it", "ez", "é", "ée", "ées", "tion", "eau", "eaux", "ère"),
    "es": ("as", "os", "an", "ción", "mente", "ado", "ada", "ía", "ña"),
    "sw": ("ka", "wa", "ya", "za", "ni", "ji", "ba", "ua", "nyi", "mba", "nda"),
    "pt": ("ção", "ões", "ão", "nh", "lh"),
    "it": ("zione", "gli", "cchi", "tti", "zza"),
    "nl": ("ijk", "oe", "aa", "ee", "uu"),
    "id": ("kan", "nya", "lah"),
}
#: Word beginnings (of words over four letters): Swahili verbs carry subject and tense prefixes.
_PREFIXES: Final[dict[str, tuple[str, ...]]] = {
    "sw": (
        "ana",
        "ali",
        "ata",
        "ame",
        "ina",
        "ita",
        "ime",
        "ili",
        "zina",
        "zime",
        "zita",
        "wana",
        "wali",
        "wata",
        "vina",
        "kina",
        "lina",
        "yana",
        "mw",
        "mi",
        "ku",
    ),  # fmt: skip
    "es": ("ll",),
}
_LETTERS: Final[dict[str, str]] = {
    "de": "äöüß",
    "fr": "éèêàçôûœëïî",
    "es": "ñáíóú¿¡",
    "pt": "ãõâ",
    "it": "ì",
    "nl": "ĳ",
}
#: Languages the Latin profiles tell apart; the first five are the built-in corpus's.
LATIN_LANGUAGES: Final = tuple(_WORDS)
#: Every language the detector can return.
SUPPORTED: Final = frozenset({"zh", "ja", *_SCRIPT_LANGUAGE.values(), *_WORDS})
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


@functools.cache
def _script(char: str) -> str:
    """The script of a letter: the first word of its Unicode name (kana folded together)."""
    name = unicodedata.name(char, "")
    if name.startswith(("CJK", "KANGXI")):
        return "HAN"
    if name.startswith(("HIRAGANA", "KATAKANA")):
        return "KANA"
    return name.split(" ", 1)[0] if name else ""


def script_shares(text: str) -> dict[str, int]:
    """Letters (and combining marks, which Thai and Bengali vowels are) per script."""
    out: dict[str, int] = {}
    for char in text:
        if unicodedata.category(char)[0] in "LM":
            script = _script(char)
            if script:
                out[script] = out.get(script, 0) + 1
    return out


def _latin(text: str) -> str:
    """The best Latin-script profile of ``text``, or unknown."""
    words = [w.lower() for w in _WORD.findall(text)]
    scores = dict.fromkeys(LATIN_LANGUAGES, 0)
    for lang in LATIN_LANGUAGES:
        vocabulary = _vocabulary(lang)
        endings, prefixes = _ENDINGS[lang], _PREFIXES.get(lang, ())
        for word in words:
            if word in vocabulary:
                scores[lang] += 2
                continue
            if len(word) > 2 and word.endswith(endings):
                scores[lang] += 1
            if len(word) > 4 and word.startswith(prefixes):
                scores[lang] += 1
        scores[lang] += 2 * sum(text.lower().count(c) for c in _LETTERS.get(lang, ""))
    ranked = sorted(scores.values(), reverse=True)
    best = max(scores, key=lambda k: scores[k])
    if ranked[0] < 2 or ranked[0] == ranked[1]:
        return UNKNOWN
    return best


@functools.cache
def _vocabulary(lang: str) -> frozenset[str]:
    return frozenset(_WORDS[lang].split())


def detect_language(text: str) -> str:
    """The language code of ``text`` (``"unknown"`` when too short or undecided).

    Parameters
    ----------
    text
        An answer, as generated.

    Returns
    -------
    str
        An ISO 639-1 code: an own-script language (``zh``, ``ja``, ``ru``, ``bn``, ``th``, ...)
        by the script of most letters, or a Latin-script language of :data:`LATIN_LANGUAGES`
        by its word profile; ``"unknown"`` when fewer letters than :data:`MIN_LETTERS` (Latin)
        or :data:`MIN_SCRIPT_LETTERS` (other scripts) are found, or the profile is undecided.
    """
    shares = script_shares(text)
    if not shares:
        return UNKNOWN
    han, kana = shares.get("HAN", 0), shares.get("KANA", 0)
    cjk = han + kana
    top = max(shares, key=lambda k: shares[k])
    if cjk >= shares[top] and cjk >= MIN_SCRIPT_LETTERS:
        return "ja" if kana and kana >= 0.1 * cjk else "zh"
    if top in _SCRIPT_LANGUAGE:
        return _SCRIPT_LANGUAGE[top] if shares[top] >= MIN_SCRIPT_LETTERS else UNKNOWN
    if top == "LATIN" and shares[top] >= MIN_LETTERS:
        return _latin(text)
    return UNKNOWN


def detectable(language: str) -> str | None:
    """The code :func:`detect_language` gives for ``language``, or None if it cannot tell it."""
    base = language.split("-")[0].lower()
    base = _SAME_SCRIPT.get(base, base)
    return base if base in SUPPORTED else None


def in_language(text: str, language: str) -> bool:
    """Whether ``text`` is detected as ``language`` (its base code; scripts sharing one count)."""
    return detect_language(text) == detectable(language)


__all__ = [
    "LATIN_LANGUAGES",
    "MIN_LETTERS",
    "SUPPORTED",
    "UNKNOWN",
    "detect_language",
    "detectable",
    "in_language",
]
