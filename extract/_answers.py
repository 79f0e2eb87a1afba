"""Scoring a generated answer: is its final number the reference, and is it in the language?

MGSM-style scoring (Shi et al. 2023; Zhang et al. 2025 score deactivated models the same way):
the *last* number written in the answer is the model's answer. Numbers are read in any Unicode
decimal digits (Bengali ``৪৫``, full-width ``４５``, Thai ``๔๕`` read as 45), with a sign and
separators: when both ``,`` and ``.`` occur the last one is the decimal point; a single kind
that occurs more than once, or once before exactly three digits (``1,200``, ``1.200``), separates
thousands; otherwise it is the decimal point (``2.5``, ``2,5``). Number words (``four``, ``四``)
are not read: such an answer counts as having no number.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from decimal import Decimal, InvalidOperation

from langneurons.extract._langid import detect_language, in_language

_NUMBER = re.compile(r"[-−]?\d+(?:[.,]\d+)*")


def _ascii_digits(text: str) -> str:
    return "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in text)


def read_number(token: str) -> Decimal | None:
    """A number as written (``"1,200"``, ``"2,5"``, ``"৪৫"``), or None if it is not one."""
    text = _ascii_digits(token.strip().replace("−", "-"))
    seps = [c for c in text if c in ",."]
    if seps:
        last = max(text.rfind(","), text.rfind("."))
        if len(set(seps)) == 2:
            point = text[last]
        elif len(seps) > 1 or len(text) - last - 1 == 3:
            point = ""  # thousands only
        else:
            point = seps[0]
        for sep in ",.":
            if sep != point:
                text = text.replace(sep, "")
        text = text.replace(point, ".") if point else text
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def final_number(text: str) -> Decimal | None:
    """The last number in ``text`` (see the module docstring), or None."""
    found = _NUMBER.findall(text)
    return read_number(found[-1]) if found else None


@dataclasses.dataclass(frozen=True)
class Score:
    """How one generated answer scored."""

    number_ok: bool  # its final number equals the reference answer
    language_ok: bool  # it is detected as the question's language
    detected: str  # the detected language, or "unknown"

    @property
    def correct(self) -> bool:
        return self.number_ok and self.language_ok


def score_answer(text: str, answer: str, language: str) -> Score:
    """Score ``text`` against the reference ``answer`` of a question in ``language``.

    An answer whose language is unknown (too short, undecided) is not in the language.
    """
    reference = read_number(answer)
    got = final_number(text)
    number_ok = reference is not None and got is not None and got == reference
    return Score(number_ok, in_language(text, language), detect_language(text))


__all__ = ["Score", "final_number", "read_number", "score_answer"]
