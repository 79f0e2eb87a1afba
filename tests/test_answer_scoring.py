"""Scoring generated answers: the final number in any digits, and the answer-language check."""

from __future__ import annotations

import pytest

from langneurons.extract._answers import final_number, read_number, score_answer
from langneurons.extract._langid import UNKNOWN, detect_language, in_language
from langneurons.extract.corpus import BUILTIN_LANGUAGES, builtin_corpus


# --------------------------------------------------------------------------- language check
def test_every_builtin_prompt_and_response_is_told_its_language() -> None:
    wrong = [
        (r.language, r.id, kind, detect_language(text))
        for r in builtin_corpus()
        for kind, text in (("prompt", r.prompt), ("response", r.response or ""))
        if detect_language(text) != r.language
    ]
    assert wrong == []
    assert {r.language for r in builtin_corpus()} == set(BUILTIN_LANGUAGES)


def test_an_answer_in_another_language_is_rejected() -> None:
    en = next(r for r in builtin_corpus(["en"]) if r.id == "q25")
    assert not in_language(en.response or "", "de")
    assert in_language(en.response or "", "en")
    for r in builtin_corpus(part="evaluate"):
        others = [x for x in BUILTIN_LANGUAGES if x != r.language]
        assert not any(in_language(r.response or "", x) for x in others), r


@pytest.mark.parametrize("text", ["", "4", "= 12.", "ok", "水"])
def test_too_short_text_is_unknown(text: str) -> None:
    assert detect_language(text) == UNKNOWN
    assert not in_language(text, "en")


# --------------------------------------------------------------------------- numbers
@pytest.mark.parametrize(
    ("token", "value"),
    [
        ("1,200", "1200"),
        ("1.200", "1200"),
        ("12,345,678", "12345678"),
        ("2.5", "2.5"),
        ("2,5", "2.5"),
        ("1.234,5", "1234.5"),
        ("৪৫", "45"),
        ("４５", "45"),
        ("๔๕", "45"),
        ("−3", "-3"),
    ],
)
def test_numbers_are_read_in_any_digits_and_separators(token: str, value: str) -> None:
    from decimal import Decimal

    assert read_number(token) == Decimal(value)


def test_the_final_number_is_the_answer_and_language_is_scored_apart() -> None:
    assert final_number("80 ÷ 20 = 4. Das Wasser reicht 4 Tage.") == 4
    assert final_number("no number here") is None
    right = score_answer("80 ÷ 20 = 4. Das Wasser reicht 4 Tage.", "4", "de")
    assert (right.correct, right.number_ok, right.language_ok) == (True, True, True)
    english = score_answer("80 ÷ 20 = 4. The water will last 4 days.", "4", "de")
    assert (english.correct, english.number_ok, english.language_ok) == (False, True, False)
    wrong = score_answer("80 ÷ 20 = 5. Das Wasser reicht 5 Tage.", "4", "de")
    assert (wrong.correct, wrong.number_ok, wrong.language_ok) == (False, False, True)
    assert score_answer("৮০ ÷ ২০ = ৪। পানিতে ৪ দিন চলবে।", "4", "bn").correct
