"""Tests of langneurons.extract.corpus: the built-in corpus, the readers, hashing and writing."""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from langneurons.errors import InputFormatError, ParameterError
from langneurons.extract import corpus
from langneurons.extract.corpus import (
    BUILTIN_LANGUAGES,
    KNOWN_CODES,
    LANGUAGE_NAMES,
    Record,
    builtin_corpus,
    corpus_hash,
    language_code,
    read_records,
    write_records,
)
from langneurons.extract.engine import load_records
from langneurons.store import schema


# ---------------------------------------------------------------------- helpers
def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """Write rows (objects or raw strings) as JSON lines."""
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def rec(
    id: Any = "q1", language: Any = "de", prompt: Any = "Frage?", response: Any = "Antwort."
) -> dict[str, Any]:
    """One JSON-lines record as a dict."""
    return {"id": id, "language": language, "prompt": prompt, "response": response}


def numbers(text: str) -> list[int]:
    """Every integer in ``text``, in any script's decimal digits."""
    return [int(m) for m in re.findall(r"\d+", text)]


def script_of(char: str) -> str:
    """Coarse script of a letter, from its Unicode name."""
    code = ord(char)
    if 0x4E00 <= code <= 0x9FFF:
        return "cjk"
    if 0x3040 <= code <= 0x30FF:
        return "kana"
    if 0x0400 <= code <= 0x04FF:
        return "cyrillic"
    if 0x0980 <= code <= 0x09FF:
        return "bengali"
    if 0x0E00 <= code <= 0x0E7F:
        return "thai"
    if unicodedata.name(char, "").startswith("LATIN"):
        return "latin"
    return "other"


EXPECTED_SCRIPTS = {
    "en": {"latin"},
    "es": {"latin"},
    "fr": {"latin"},
    "de": {"latin"},
    "sw": {"latin"},
    "zh": {"cjk"},
    "ja": {"cjk", "kana"},
    "ru": {"cyrillic"},
    "bn": {"bengali"},
    "th": {"thai"},
}


# ---------------------------------------------------------------------- built-in corpus
@pytest.fixture(scope="module")
def builtin() -> list[Record]:
    return builtin_corpus()


def by_key(records: list[Record]) -> dict[tuple[str, str], Record]:
    return {(r.language, r.id): r for r in records}


def test_builtin_languages() -> None:
    assert BUILTIN_LANGUAGES == ("en", "zh", "es", "fr", "de", "ja", "ru", "bn", "th", "sw")
    assert set(EXPECTED_SCRIPTS) == set(BUILTIN_LANGUAGES)


def test_builtin_is_parallel(builtin: list[Record]) -> None:
    ids = sorted({r.id for r in builtin})
    assert len(ids) >= 30
    assert len(builtin) == len(ids) * len(BUILTIN_LANGUAGES) >= 300
    counts = Counter((r.language, r.id) for r in builtin)
    assert set(counts.values()) == {1}
    for lang in BUILTIN_LANGUAGES:
        assert sorted(r.id for r in builtin if r.language == lang) == ids


def test_builtin_order(builtin: list[Record]) -> None:
    """Grouped by language in BUILTIN_LANGUAGES order, ids ascending within a language."""
    keys = [(BUILTIN_LANGUAGES.index(r.language), r.id) for r in builtin]
    assert keys == sorted(keys)


def test_builtin_fields(builtin: list[Record]) -> None:
    for r in builtin:
        assert isinstance(r, Record)
        assert r.prompt.strip() and r.prompt == r.prompt.strip()
        assert r.response is not None and r.response.strip() and r.response == r.response.strip()
        assert len(r.prompt) <= 200 and len(r.response) <= 200, (r.language, r.id)
        assert re.fullmatch(r"q\d\d", r.id)
        assert schema.check_language(r.language) == r.language


@pytest.mark.parametrize("lang", BUILTIN_LANGUAGES)
def test_builtin_scripts(builtin: list[Record], lang: str) -> None:
    """Every letter of a language's text is in its native script (names transliterated too)."""
    allowed = EXPECTED_SCRIPTS[lang]
    for r in builtin:
        if r.language != lang:
            continue
        assert r.response is not None
        letters = [c for c in r.prompt + r.response if c.isalpha() and c != "ー"]
        scripts = {script_of(c) for c in letters}
        assert scripts <= allowed, (r.id, scripts - allowed)
        if lang == "ja":
            assert "kana" in scripts, r.id  # Japanese, not Chinese
    if lang == "zh":  # simplified, not traditional: a few tell-tale characters
        text = "".join(r.prompt for r in builtin if r.language == "zh")
        assert not set("們個書車買賣後還這") & set(text)
        assert set("个书买还") <= set(text)


def test_builtin_digits(builtin: list[Record]) -> None:
    """Bengali writes Bengali digits; every other language ASCII digits."""
    for r in builtin:
        assert r.response is not None
        digits = {c for c in r.prompt + r.response if c.isdigit()}
        if r.language == "bn":
            assert digits and all(0x09E6 <= ord(c) <= 0x09EF for c in digits), r.id
        else:
            assert digits and digits <= set("0123456789"), (r.language, r.id)


def test_builtin_numbers_agree(builtin: list[Record]) -> None:
    """The numbers of each problem are the same in every language, and so is the answer."""
    table = by_key(builtin)
    for (lang, qid), r in table.items():
        en = table["en", qid]
        assert r.response is not None and en.response is not None
        assert set(numbers(r.prompt)) == set(numbers(en.prompt)), (lang, qid)
        assert set(numbers(r.response)) == set(numbers(en.response)), (lang, qid)
        assert numbers(r.response)[-1] == numbers(en.response)[-1], (lang, qid)


def test_builtin_arithmetic(builtin: list[Record]) -> None:
    """Every worked step 'a op b = c' is right."""
    ops = {"+": int.__add__, "-": int.__sub__, "×": int.__mul__, "÷": int.__floordiv__}
    for r in builtin:
        assert r.response is not None
        steps = re.findall(r"(\d+) ([-+×÷]) (\d+) = (\d+)", r.response)
        assert steps, (r.language, r.id)
        for a, op, b, c in steps:
            assert ops[op](int(a), int(b)) == int(c), (r.language, r.id, a, op, b, c)
            if op == "÷":
                assert int(a) % int(b) == 0


def test_builtin_corpus_filter() -> None:
    recs = builtin_corpus(["de", "Thai"])
    assert {r.language for r in recs} == {"de", "th"}
    assert len(recs) == 2 * len({r.id for r in recs})
    assert builtin_corpus(["de"]) == [r for r in builtin_corpus() if r.language == "de"]


def test_builtin_corpus_errors() -> None:
    with pytest.raises(
        ParameterError,
        match=r"^language 'it' is not in the built-in corpus \(it has en, zh, es, fr, de, ja, ru, "
        r"bn, th, sw\); give a corpus file with read_records$",
    ):
        builtin_corpus(["it"])
    with pytest.raises(ParameterError, match=r"^language 'de' is given twice"):
        builtin_corpus(["de", "German"])
    with pytest.raises(ParameterError, match=r"^languages must be a list of language codes"):
        builtin_corpus("de")
    with pytest.raises(ParameterError, match=r"^languages is empty"):
        builtin_corpus([])
    with pytest.raises(ParameterError, match=r"^unknown language 'Germn' \(did you mean 'de'"):
        builtin_corpus(["Germn"])


def test_builtin_parts_are_disjoint_and_cover_the_corpus(builtin: list[Record]) -> None:
    identify = builtin_corpus(part="identify")
    evaluate = builtin_corpus(["de", "en"], part="evaluate")
    assert {r.id for r in identify} == {f"q{i:02d}" for i in range(1, 25)}
    assert {r.id for r in evaluate} == {f"q{i:02d}" for i in range(25, 33)}
    assert {r.language for r in evaluate} == {"de", "en"}
    assert len(identify) + len(builtin_corpus(part="evaluate")) == len(builtin)
    assert load_records("builtin:evaluate") == builtin_corpus(part="evaluate")
    assert load_records("builtin:identify") == identify
    with pytest.raises(ParameterError, match=r"^part 'test' of the built-in corpus is unknown; "):
        load_records("builtin:test")


def test_builtin_answers_are_the_last_number_of_every_response(builtin: list[Record]) -> None:
    """Each record's answer is its problem's number, and every language's response ends on it."""
    for r in builtin:
        assert r.answer is not None and r.answer.isdigit(), r
        assert r.response is not None
        last = re.findall(r"\d+", r.response)[-1]
        assert int(last) == int(r.answer), (r.language, r.id)


def test_answer_field_round_trips_and_is_not_hashed(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"id": "a", "language": "de", "prompt": "p", "response": "r", "answer": 7}\n'
        '{"id": "b", "language": "de", "prompt": "p", "response": "r", "answer": " 3.5 "}\n'
        '{"id": "c", "language": "de", "prompt": "p", "response": "r"}\n',
        encoding="utf-8",
    )
    records = read_records(path)
    assert [r.answer for r in records] == ["7", "3.5", None]
    write_records(tmp_path / "out.jsonl", records)
    assert read_records(tmp_path / "out.jsonl") == records
    plain = [Record(r.language, r.prompt, r.response, r.id) for r in records]
    assert corpus_hash(plain) == corpus_hash(records)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("true", r"field 'answer' is true \(bool\); expected a string or a number$"),
        ('""', r"field 'answer' is empty; give the answer or leave it out$"),
        ("[1]", r"field 'answer' is \[1\] \(list\); expected a string or a number$"),
    ],
)
def test_bad_answer_field(tmp_path: Path, value: str, message: str) -> None:
    path = tmp_path / "c.jsonl"
    path.write_text(
        f'{{"id": "a", "language": "de", "prompt": "p", "response": "r", "answer": {value}}}\n',
        encoding="utf-8",
    )
    with pytest.raises(InputFormatError, match=r"^.*c\.jsonl:1: " + message):
        read_records(path)


def test_builtin_hash_is_stable(builtin: list[Record]) -> None:
    """Reading twice gives equal records and hash; the package file is what is read."""
    assert corpus_hash(builtin) == corpus_hash(builtin_corpus())
    path = Path(corpus.__file__).parent / "data" / "corpus.jsonl"
    assert read_records(path) == builtin


# ---------------------------------------------------------------------- language codes
def test_known_codes() -> None:
    assert len(KNOWN_CODES) >= 60
    assert all(re.fullmatch(r"[a-z]{2}", c) for c in KNOWN_CODES)
    assert set(LANGUAGE_NAMES.values()) <= KNOWN_CODES
    assert set(BUILTIN_LANGUAGES) <= KNOWN_CODES
    assert len(LANGUAGE_NAMES) >= 40


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("German", "de"),
        ("german", "de"),
        ("GERMAN", "de"),
        ("Chinese", "zh"),
        ("Swahili", "sw"),
        ("Bengali", "bn"),
        ("Thai", "th"),
        ("Japanese", "ja"),
        ("Russian", "ru"),
        ("Spanish", "es"),
        ("French", "fr"),
        ("English", "en"),
        ("Haitian  creole", "ht"),
        (" thai ", "th"),
        ("de", "de"),
        ("DE", "de"),
        ("zh-Hans", "zh-Hans"),
        ("zh_hans", "zh-Hans"),
        ("pt-br", "pt-BR"),
        ("es-419", "es-419"),
        ("zh-Hant-TW", "zh-Hant-TW"),
    ],
)
def test_language_code(value: str, code: str) -> None:
    assert language_code(value) == code
    assert schema.check_language(code) == code


@pytest.mark.parametrize(
    ("value", "suggested"),
    [
        ("Germn", "'de' (German)"),
        ("deu", "'de' (German)"),
        ("jp", "'ja' (Japanese)"),
        ("cn", "'zh' (Chinese)"),
        ("Swahilli", "'sw' (Swahili)"),
        ("xx-Hans", "'xh' (Xhosa)"),
    ],
)
def test_language_code_suggests(value: str, suggested: str) -> None:
    with pytest.raises(ParameterError) as info:
        language_code(value)
    message = str(info.value)
    assert message.startswith(f"unknown language {value!r} (did you mean {suggested}")
    assert message.endswith(
        "?); use an ISO 639-1 code such as 'de' or 'zh-Hans', or an English name such as 'German'"
    )
    assert "\n" not in message


def test_language_code_no_suggestion() -> None:
    with pytest.raises(
        ParameterError,
        match=r"^unknown language 'klingon'; use an ISO 639-1 code such as 'de' or 'zh-Hans', "
        r"or an English name such as 'German'$",
    ):
        language_code("klingon")


@pytest.mark.parametrize("value", ["", "d", "de-", "de-Latn-XYZ", "de/fr", "zz"])
def test_language_code_rejects(value: str) -> None:
    with pytest.raises(ParameterError, match=r"^unknown language"):
        language_code(value)


def test_language_code_not_a_string() -> None:
    with pytest.raises(
        ParameterError, match=r"^language must be a string such as 'de' or 'German', not 5$"
    ):
        bad: Any = 5
        language_code(bad)


# ---------------------------------------------------------------------- JSON lines
def test_read_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [
            rec("q1", "de", "Frage 1?", "Antwort 1."),
            "",
            "   ",
            rec("q1", "French", "Question 1 ?", "Réponse 1.") | {"extra": [1, 2]},
            rec("q2", "zh-hans", "问题\u2028二？", "回答。"),
        ],
    )
    records = read_records(path)
    assert records == [
        Record("de", "Frage 1?", "Antwort 1.", "q1"),
        Record("fr", "Question 1 ?", "Réponse 1.", "q1"),
        Record("zh-Hans", "问题\u2028二？", "回答。", "q2"),
    ]
    assert read_records(str(path), languages=["fr", "de"]) == records[:2]  # file order kept


def test_read_jsonl_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(rec()).encode() + b"\r\n\r\n")
    assert read_records(path) == [Record("de", "Frage?", "Antwort.", "q1")]


def test_read_jsonl_single_line(tmp_path: Path) -> None:
    """A one-record file is one complete JSON object, but still JSON lines."""
    path = tmp_path / "one.json"
    path.write_text(json.dumps(rec()), encoding="utf-8")
    assert read_records(path) == [Record("de", "Frage?", "Antwort.", "q1")]


def test_read_jsonl_without_responses(tmp_path: Path) -> None:
    rows = [rec("q1"), rec("q2", response=None), {"id": "q3", "language": "de", "prompt": "P?"}]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    records = read_records(path, require_response=False)
    assert [r.response for r in records] == ["Antwort.", None, None]


def test_detect_by_content_not_extension(tmp_path: Path) -> None:
    jsonl_named_json = write_jsonl(tmp_path / "a.json", [rec("q1"), rec("q2")])
    assert [r.id for r in read_records(jsonl_named_json)] == ["q1", "q2"]
    mapo_named_jsonl = tmp_path / "b.jsonl"
    mapo_named_jsonl.write_text(
        json.dumps([{"lang": "German", "instruction": "P", "answers": [{"generated": "A"}]}])
    )
    assert read_records(mapo_named_jsonl) == [Record("de", "P", "A", "0")]


# ---------------------------------------------------------------------- MAPO JSON
def mapo_items() -> list[dict[str, Any]]:
    return [
        {"lang": "German", "instruction": "Frage A", "answers": [{"generated": "Antwort A"}]},
        {
            "lang": "French",
            "instruction": "Question A",
            "answers": [{"generated": "Réponse A1"}, {"generated": "Réponse A2"}],
        },
        {"lang": "German", "instruction": "Frage B", "answers": [{"generated": "Antwort B"}]},
        {"lang": "thai", "id": 7, "instruction": "คำถาม", "answers": [{"generated": "คำตอบ"}]},
        {
            "instruction": "Intro. Please answer in Swahili.\n\n### Instruction:\nSwali",
            "result": "Jibu",
        },
    ]


def test_read_mapo_list(tmp_path: Path) -> None:
    path = tmp_path / "gen.json"
    path.write_text("\n  " + json.dumps(mapo_items(), ensure_ascii=False, indent=2))
    records = read_records(path)
    assert [(r.language, r.id, r.prompt, r.response) for r in records] == [
        ("de", "0", "Frage A", "Antwort A"),
        ("fr", "0-0", "Question A", "Réponse A1"),
        ("fr", "0-1", "Question A", "Réponse A2"),
        ("de", "1", "Frage B", "Antwort B"),  # index among the German items: parallel ids
        ("th", "7", "คำถาม", "คำตอบ"),
        ("sw", "0", mapo_items()[4]["instruction"], "Jibu"),
    ]
    assert [r.id for r in read_records(path, languages=["German"])] == ["0", "1"]


def test_read_mapo_dict_holding_list(tmp_path: Path) -> None:
    path = tmp_path / "gen.json"
    path.write_text(json.dumps({"model": "m", "data": mapo_items()[:1]}))
    assert read_records(path) == [Record("de", "Frage A", "Antwort A", "0")]


def test_read_mapo_without_answers(tmp_path: Path) -> None:
    path = tmp_path / "gen.json"
    path.write_text(json.dumps([{"lang": "German", "instruction": "P", "answers": []}]))
    assert read_records(path, require_response=False) == [Record("de", "P", None, "0")]
    with pytest.raises(
        InputFormatError,
        match=r"gen\.json: item 0: missing field 'answers' \(or it is empty\); give at least one "
        r"\{'generated': \.\.\.\} answer, or read with require_response=False$",
    ):
        read_records(path)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            [1],
            r": item 0: expected a JSON object with 'lang', 'instruction' and 'answers', got "
            r"int 1$",
        ),
        ([{"lang": "German", "answers": []}], r": item 0: missing field 'instruction'"),
        (
            [{"instruction": "P", "answers": [{"generated": "A"}]}],
            r": item 0: missing field 'lang' \(and no 'Please answer in <Language>\.' in the "
            r"instruction\); each item needs its language$",
        ),
        (
            [{"lang": "Germn", "instruction": "P", "answers": [{"generated": "A"}]}],
            r": item 0: unknown language 'Germn' \(did you mean 'de' \(German\)",
        ),
        (
            [{"lang": "German", "instruction": "P", "answers": {"generated": "A"}}],
            r": item 0: field 'answers' is dict; expected a list of \{'generated': \.\.\.\} "
            r"objects$",
        ),
        (
            [{"lang": "German", "instruction": "P", "answers": ["A"]}],
            r": item 0, answer 0: expected an object with field 'generated', got 'A'$",
        ),
        (
            [{"lang": "German", "instruction": "P", "answers": [{"generated": " "}]}],
            r": item 0, answer 0: field 'response' is empty; give non-empty text$",
        ),
        (
            [{"lang": "German", "instruction": 3, "answers": [{"generated": "A"}]}],
            r": item 0: field 'instruction' is 3 \(int\); expected a string$",
        ),
        (
            [{"lang": "de", "id": 1.5, "instruction": "P", "answers": [{"generated": "A"}]}],
            r": item 0: field 'id' is 1\.5 \(float\); expected a string or an integer$",
        ),
        (
            [
                {"lang": "de", "id": "x", "instruction": "P", "answers": [{"generated": "A"}]},
                {"lang": "de", "id": "x", "instruction": "Q", "answers": [{"generated": "B"}]},
            ],
            r": item 1, answer 0: duplicate record \(language 'de', id 'x'\), first at item 0, "
            r"answer 0; ids must be unique within a language$",
        ),
        (
            {"a": [], "b": []},
            r": a JSON object at the top level must hold exactly one list of items, found lists "
            r"under 'a', 'b'$",
        ),
        ([], r" holds no records; expected at least one$"),
    ],
)
def test_read_mapo_errors(tmp_path: Path, doc: Any, message: str) -> None:
    path = tmp_path / "gen.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputFormatError, match=r"^" + re.escape(str(path)) + message):
        read_records(path)


def test_read_mapo_malformed(tmp_path: Path) -> None:
    path = tmp_path / "gen.json"
    path.write_text('[\n  {"lang": "German",\n   "instruction": }\n]')
    with pytest.raises(
        InputFormatError,
        match=r"gen\.json:3:19: malformed JSON \(Expecting value\); a file starting with '\[' must "
        r"be one JSON list of MAPO items$",
    ):
        read_records(path)


# ---------------------------------------------------------------------- JSON-lines errors
def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(
        InputFormatError,
        match=r"^corpus file '.*nope\.jsonl' does not exist; give the path of a JSON lines or "
        r"MAPO JSON file$",
    ):
        read_records(path)
    with pytest.raises(InputFormatError, match=r"^corpus file '.*' is a directory"):
        read_records(tmp_path)


@pytest.mark.parametrize("content", [b"", b"  \n\n \t\n"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(content)
    with pytest.raises(
        InputFormatError,
        match=r"c\.jsonl is empty; expected JSON lines \(one record per line\) or a MAPO JSON "
        r"list$",
    ):
        read_records(path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    good = json.dumps(rec()).encode()
    path.write_bytes(good + b"\n" + good + b"\n" + b'{"id": "q\xff"}\n')
    with pytest.raises(
        InputFormatError,
        match=r"c\.jsonl:3: not valid UTF-8 \(byte 0xff at column 10\); save the file as UTF-8$",
    ):
        read_records(path)


JSONL_ERRORS = [
    (
        '{"id": "q1", "language": "de",, }',
        r":2:31: malformed JSON \(Expecting property name enclosed in double quotes\); each line "
        r"must hold one JSON object$",
    ),
    (
        '["q1", "de"]',
        r":2: expected a JSON object with fields language, prompt, response, id, got "
        r"list \[\"q1\", \"de\"\]$",
    ),
    ('"text"', r":2: expected a JSON object .*, got str 'text'$"),
    (
        {"id": "q2", "language": "de"},
        r":2: missing fields 'prompt', 'response'; each record needs language, prompt, response, "
        r"id$",
    ),
    (
        {"id": "q2", "language": "de", "prompt": "P"},
        r":2: missing field 'response'; each record needs language, prompt, response, id$",
    ),
    (
        rec("q2", response=None),
        r":2: field 'response' is null; give the response text, or read with "
        r"require_response=False$",
    ),
    (rec("q2", prompt=""), r":2: field 'prompt' is empty; give non-empty text$"),
    (rec("q2", response=" \n\t"), r":2: field 'response' is empty; give non-empty text$"),
    (rec("q2", prompt=["a"]), r":2: field 'prompt' is \['a'\] \(list\); expected a string$"),
    (rec(2), r":2: field 'id' is 2 \(int\); expected a string$"),
    (rec(" q2"), r":2: field 'id' is ' q2'; give a non-empty id without surrounding spaces$"),
    (rec("q2", language=None), r":2: field 'language' is None \(NoneType\); expected a string$"),
    (
        rec("q2", language="ge"),
        r":2: unknown language 'ge' \(did you mean 'en' \(English\), 'es' \(Spanish\), 'de' "
        r"\(German\)\?\); use an ISO 639-1 code such as 'de' or 'zh-Hans', or an English name "
        r"such as 'German'$",
    ),
    (
        rec("q1", language="German"),
        r":2: duplicate record \(language 'de', id 'q1'\), first at line 1; ids must be unique "
        r"within a language$",
    ),
]


@pytest.mark.parametrize(("bad", "message"), JSONL_ERRORS)
def test_jsonl_errors(tmp_path: Path, bad: Any, message: str) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [rec("q1"), bad, rec("q3")])
    with pytest.raises(InputFormatError, match=r"^" + re.escape(str(path)) + message) as info:
        read_records(path)
    assert "\n" not in str(info.value)


def test_missing_fields_without_response(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [{"language": "de"}])
    with pytest.raises(
        InputFormatError,
        match=r"c\.jsonl:1: missing fields 'prompt', 'id'; each record needs language, prompt, "
        r"id$",
    ):
        read_records(path, require_response=False)


def test_requested_language_missing(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "c.jsonl", [rec("q1", "de"), rec("q1", "fr")])
    with pytest.raises(
        InputFormatError,
        match=r"c\.jsonl: language 'th' was requested but is not in the file \(it has de, fr\)$",
    ):
        read_records(path, languages=["de", "Thai"])
    with pytest.raises(ParameterError, match=r"^unknown language 'xx'"):
        read_records(path, languages=["xx"])
    with pytest.raises(ParameterError, match=r"^languages must be a list"):
        read_records(path, languages="de")


# ---------------------------------------------------------------------- hashing
# computed once; any change means stored corpus hashes no longer match their corpora
PINNED_HASH = "sha256:8db45d5992033f8cd0dc07e623aa341a3f6f8413f0d7b50acc253ddcbb968f2f"
RECORDS = [
    Record("de", "Frage?", "Antwort.", "q1"),
    Record("zh", "问题？", "回答。", "q1"),
    Record("de", "Zweite?", None, "q2"),
]


def test_corpus_hash_pinned() -> None:
    """The serialisation is fixed: this value must never change (it is recorded in stores)."""
    value = corpus_hash(RECORDS)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", value)
    assert value == "sha256:" + _expected_hash(RECORDS)
    assert value == PINNED_HASH


def _expected_hash(records: list[Record]) -> str:
    """The documented serialisation, spelled out independently."""
    rows = [[r.language, r.id, r.prompt, r.response] for r in records]
    payload = json.dumps(["langneurons-corpus-v1", rows], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def test_corpus_hash_sensitivity() -> None:
    base = corpus_hash(RECORDS)
    assert corpus_hash(list(RECORDS)) == base
    assert corpus_hash(iter(RECORDS)) == base
    assert corpus_hash(RECORDS[::-1]) != base  # order matters
    changed = [RECORDS[0], RECORDS[1], Record("de", "Zweite?", "", "q2")]
    assert corpus_hash(changed) != base  # None and "" differ
    assert corpus_hash([Record("de", "a", "b", "c")]) != corpus_hash([Record("de", "ab", "", "c")])
    with pytest.raises(ParameterError, match=r"^corpus_hash needs Record objects, got"):
        not_records: list[Any] = [("de", "a", "b", "c")]
        corpus_hash(not_records)


# ---------------------------------------------------------------------- writing
def test_write_round_trip(tmp_path: Path, builtin: list[Record]) -> None:
    path = tmp_path / "out.jsonl"
    write_records(path, builtin)
    assert read_records(path) == builtin
    assert corpus_hash(read_records(path)) == corpus_hash(builtin)
    first = json.loads(path.read_text(encoding="utf-8").split("\n")[0])
    assert list(first) == ["id", "language", "prompt", "response", "answer"]
    write_records(path, RECORDS)  # replaces the old file
    assert read_records(path, require_response=False) == RECORDS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.jsonl"
    write_records(path, RECORDS)
    before = path.read_bytes()
    calls = {"n": 0}
    real_dumps = json.dumps

    def failing_dumps(obj: Any, **kwargs: Any) -> str:
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real_dumps(obj, **kwargs)

    monkeypatch.setattr(corpus.json, "dumps", failing_dumps)
    with pytest.raises(OSError, match="disk full"):
        write_records(path, RECORDS)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_write_errors(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match=r"^records is empty; give at least one Record"):
        write_records(tmp_path / "a.jsonl", [])
    with pytest.raises(ParameterError, match=r"^write_records needs Record objects, got"):
        dicts: list[Any] = [rec()]
        write_records(tmp_path / "a.jsonl", dicts)
    with pytest.raises(ParameterError, match=r"^cannot write '.*a\.jsonl': directory '.*' does"):
        write_records(tmp_path / "missing" / "a.jsonl", RECORDS)
    assert not any(tmp_path.iterdir())
    assert os.listdir(tmp_path) == []
