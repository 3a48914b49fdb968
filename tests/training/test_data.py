"""General data loading (training.data): user CSV/JSONL files and their errors, dedup, the split."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from training.data import (
    DataError,
    Example,
    deduplicate,
    label_counts,
    load_file,
    stratified_split,
)

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
        "missing label field 'sentiment' (keys: ['label', 'text'])",
    ),
    (
        "d.jsonl",
        b'{"text": "a", "label": "p"}\n{"label": "n"}\n',
        {},
        2,
        "missing text field 'text' (keys: ['label'])",
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
        "missing weight field 'w' (keys: ['label', 'text'])",
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
