"""Labelled text for training and evaluation, whatever corpus it comes from.

The types every corpus is delivered as (`Example`, `Corpus`, `DataError`), loading a user's own
CSV or JSONL file, merging duplicate texts and the seeded train/dev/test split. A corpus that
needs its own repairs before it can be used lives in `training.corpora` and builds on this.

Everything here is plain Python (csv, json): loading data must not need torch, and the same
rows must come out on every machine, so nothing depends on `hash()` or on dict order luck.

Deduplication
-------------
Retweets and re-collected tweets repeat, sometimes with different labels, and a text that sits
in both the training and the test split inflates the test score. Texts are compared after
case-folding, collapsing whitespace, masking URLs (t.co links differ per copy) and removing a
leading "RT @user:"; duplicates are merged into the first occurrence. The merged label is the
one with the highest total weight (a tie goes to the label seen first); the merged weight is
that total divided by the number of copies, so a text its copies disagree on counts less.

User data
---------
`load_file` reads CSV (header row required) or JSONL (one object per line, blank lines allowed),
UTF-8 with or without a BOM. Text is used as written (no repair: a user's file is trusted to be
encoded correctly), duplicates are merged as above, and every problem raises `DataError` naming
the file, the line as a text editor shows it, and what is wrong.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

FileFormat = Literal["csv", "jsonl"]

# Hand-written labelled sets of text unlike the tweets (eval_data/README.md), shipped with the
# package: reported for models whose labels they use, never trained or tuned on.
EVAL_DATA = Path(__file__).resolve().parent / "eval_data"

_SUFFIX_FORMATS: dict[str, FileFormat] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass(frozen=True)
class Example:
    """One labelled text; `weight` scales its loss (a corpus's crowd agreement, say)."""

    text: str
    label: str
    weight: float = 1.0


@dataclass(frozen=True)
class Corpus:
    """Examples plus where they came from, so a model card can say what it was trained on."""

    examples: list[Example]
    source: str
    sha256: str
    report: dict[str, int] = field(default_factory=dict)


class DataError(Exception):
    """Bad or missing training data, with a message a user can act on.

    Problems in a file read `path:line: problem` (line 1-based, as an editor shows it);
    problems with the file as a whole read `path: problem`.
    """

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line

    @classmethod
    def at(cls, path: str | Path, line: int | None, problem: str) -> DataError:
        """The error for `problem` at `line` of `path` (`None`: the whole file)."""
        where = f"{path}:{line}" if line is not None else f"{path}"
        return cls(f"{where}: {problem}", path=str(path), line=line)


def label_counts(examples: Iterable[Example]) -> dict[str, int]:
    """Examples per label, labels in sorted order (stable for model cards and diffs)."""
    counts = Counter(example.label for example in examples)
    return {label: counts[label] for label in sorted(counts)}


# --- Deduplication ---------------------------------------------------------------------------

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_RETWEET_PREFIX = re.compile(r"^rt\s+@\w+:?\s*", re.IGNORECASE)


def clean_whitespace(text: str) -> str:
    """`text` with runs of whitespace as one space and none at either end."""
    return " ".join(text.split())


def dedup_key(text: str) -> str:
    """The form two texts share when one is a copy of the other (retweet, re-collection)."""
    key = clean_whitespace(_URL.sub("<url>", text)).casefold()
    return _RETWEET_PREFIX.sub("", key)


def deduplicate(examples: Sequence[Example]) -> tuple[list[Example], int, int]:
    """Merge examples with the same `dedup_key`: (merged examples, copies removed, conflicts).

    The first copy's text is kept. The label is the one with the highest total weight over the
    copies (ties: the label seen first) and the weight is that total over the number of copies,
    so copies that disagree make a weaker example. Order follows first occurrences.
    """
    groups: dict[str, list[Example]] = {}
    for example in examples:
        groups.setdefault(dedup_key(example.text), []).append(example)
    merged: list[Example] = []
    conflicts = 0
    for copies in groups.values():
        if len(copies) == 1:
            merged.append(copies[0])
            continue
        totals: dict[str, float] = {}
        for copy in copies:
            totals[copy.label] = totals.get(copy.label, 0.0) + copy.weight
        if len(totals) > 1:
            conflicts += 1
        label = max(totals, key=lambda name: totals[name])  # first seen wins a tie
        merged.append(Example(copies[0].text, label, totals[label] / len(copies)))
    return merged, len(examples) - len(merged), conflicts


# --- User files ------------------------------------------------------------------------------


def positive_number(value: object) -> float | None:
    """`value` as a finite number > 0, or None (bools are not numbers here)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    elif isinstance(value, int | float):
        number = float(value)
    else:
        return None
    return number if math.isfinite(number) and number > 0 else None


def _format_of(path: Path, file_format: FileFormat | None) -> FileFormat:
    if file_format is not None:
        if file_format not in ("csv", "jsonl"):
            raise ValueError(f"file_format must be 'csv' or 'jsonl', not {file_format!r}")
        return file_format
    try:
        return _SUFFIX_FORMATS[path.suffix.lower()]
    except KeyError:
        raise DataError.at(
            path,
            None,
            f"cannot tell the format from the suffix {path.suffix!r}: name the file .csv, "
            ".jsonl or .ndjson (or pass file_format='csv' or 'jsonl')",
        ) from None


def _read(path: Path) -> tuple[bytes, str]:
    """The file's bytes (for its sha256) and its text, UTF-8 with or without a BOM."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError.at(path, None, f"cannot read the file ({error.strerror})") from error
    try:
        return raw, raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataError.at(path, line, "not valid UTF-8 (save the file as UTF-8)") from error


@dataclass(frozen=True)
class _Fields:
    text: str
    label: str
    weight: str | None


def _example(path: Path, line: int, record: Mapping[str, object], fields: _Fields) -> Example:
    """Validate one record (a CSV row as strings, or a JSON object) into an Example."""
    for role, name in (("text", fields.text), ("label", fields.label), ("weight", fields.weight)):
        if name is not None and name not in record:
            # The keys the record does have: a misspelt or differently named field is then
            # one look away (a CSV header names its columns the same way).
            raise DataError.at(
                path, line, f"missing {role} field {name!r} (keys: {sorted(record)})"
            )
    text = record[fields.text]
    if not isinstance(text, str):
        raise DataError.at(
            path, line, f"text field {fields.text!r} must be a string, got {_kind(text)}"
        )
    if not text.strip():
        raise DataError.at(path, line, f"empty text in field {fields.text!r}")
    label = record[fields.label]
    if isinstance(label, int) and not isinstance(label, bool):
        label = str(label)
    if not isinstance(label, str):
        raise DataError.at(
            path,
            line,
            f"label field {fields.label!r} must be a string or an integer, got {_kind(label)}",
        )
    if not label.strip():
        raise DataError.at(path, line, f"empty label in field {fields.label!r}")
    weight = 1.0
    if fields.weight is not None:
        value = record[fields.weight]
        number = positive_number(value)
        if number is None:
            raise DataError.at(
                path,
                line,
                f"weight field {fields.weight!r} must be a positive number, "
                f"got {json.dumps(value)}",
            )
        weight = number
    return Example(text, label.strip(), weight)


def _kind(value: object) -> str:
    """How a JSON value's type reads in an error message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _csv_records(path: Path, content: str, fields: _Fields) -> Iterator[tuple[int, dict[str, str]]]:
    reader = csv.reader(io.StringIO(content, newline=""), strict=True)
    line = 1  # where the record being read starts; a quoted field may span several lines
    try:
        first = next(reader, None)
        if first is None:
            raise DataError.at(path, None, "the file is empty (a header row is required)")
        header = [name.strip() for name in first]
        if len(set(header)) != len(header):
            repeated = sorted({name for name in header if header.count(name) > 1})
            raise DataError.at(path, 1, f"repeated column names in the header: {repeated}")
        for role, name in (
            ("text", fields.text),
            ("label", fields.label),
            ("weight", fields.weight),
        ):
            if name is not None and name not in header:
                raise DataError.at(
                    path, 1, f"missing {role} field {name!r} in the header (columns: {header})"
                )
        line = reader.line_num + 1
        for row in reader:
            if row:  # csv yields [] for a blank line
                if len(row) != len(header):
                    raise DataError.at(
                        path,
                        line,
                        f"expected {len(header)} fields as in the header, got {len(row)}",
                    )
                yield line, dict(zip(header, row, strict=True))
            line = reader.line_num + 1
    except csv.Error as error:
        raise DataError.at(path, line, f"malformed CSV ({error})") from error


def _jsonl_records(path: Path, content: str) -> Iterator[tuple[int, dict[str, object]]]:
    # io.StringIO splits lines on \n, \r and \r\n only: a U+2028 inside a JSON string is text.
    for line, raw_line in enumerate(io.StringIO(content, newline=None), start=1):
        if not raw_line.strip():
            continue
        try:
            record = json.loads(raw_line)
        except json.JSONDecodeError as error:
            raise DataError.at(
                path, line, f"invalid JSON ({error.msg} at column {error.colno})"
            ) from error
        if not isinstance(record, dict):
            raise DataError.at(path, line, f"expected a JSON object, got {_kind(record)}")
        yield line, record


def load_file(
    path: str | Path,
    *,
    text_field: str = "text",
    label_field: str = "label",
    weight_field: str | None = None,
    file_format: FileFormat | None = None,
) -> Corpus:
    """Labelled examples from a CSV or JSONL file, deduplicated; DataError on any problem.

    The format comes from the suffix (.csv, .jsonl, .ndjson) unless `file_format` is given.
    Labels are strings (JSON integers are converted); `weight_field`, when given, must hold a
    positive number on every row. At least two distinct labels are required, since a
    classifier cannot be trained or scored on one.
    """
    path = Path(path)
    fields = _Fields(text_field, label_field, weight_field)
    resolved_format = _format_of(path, file_format)
    raw, content = _read(path)
    records: Iterable[tuple[int, Mapping[str, object]]]
    if resolved_format == "csv":
        records = _csv_records(path, content, fields)
    else:
        records = _jsonl_records(path, content)
    examples = [_example(path, line, record, fields) for line, record in records]
    if not examples:
        raise DataError.at(path, None, "no rows: the file holds no examples")
    labels = label_counts(examples)
    if len(labels) < 2:
        raise DataError.at(
            path,
            None,
            f"only one distinct label ({next(iter(labels))!r}); at least 2 are needed",
        )
    merged, duplicates, conflicts = deduplicate(examples)
    report = {
        "rows_read": len(examples),
        "duplicates_merged": duplicates,
        "label_conflicts": conflicts,
        "examples": len(merged),
    }
    return Corpus(merged, str(path), hashlib.sha256(raw).hexdigest(), report)


# --- Splitting -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Split:
    """Train, dev and test examples; each holds every label when there are enough examples."""

    train: list[Example]
    dev: list[Example]
    test: list[Example]

    def sizes(self) -> dict[str, dict[str, int]]:
        """Examples per split and label (every label listed in every split), for the model card."""
        labels = sorted({e.label for part in (self.train, self.dev, self.test) for e in part})
        sizes: dict[str, dict[str, int]] = {}
        for name, part in (("train", self.train), ("dev", self.dev), ("test", self.test)):
            counts = Counter(example.label for example in part)
            sizes[name] = {label: counts[label] for label in labels}
        return sizes


def _allocate(count: int, dev_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(dev, test) sizes for one label: rounded shares, at least one each while train keeps one."""
    dev = math.floor(count * dev_fraction + 0.5)
    test = math.floor(count * test_fraction + 0.5)
    if test_fraction > 0:
        test = max(test, 1)
    if dev_fraction > 0:
        dev = max(dev, 1)
    # Train keeps at least one example; test (what gets reported) is served before dev.
    while dev + test >= count and dev + test > 0:
        if dev >= test and dev > 0:
            dev -= 1
        else:
            test -= 1
    return dev, test


def stratified_split(
    examples: Sequence[Example],
    *,
    seed: int,
    dev_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> Split:
    """Seeded train/dev/test split that keeps each label's share in every part.

    The same examples and seed give the same split in every process: examples are put in a
    canonical order (by text) before a `random.Random(seed)` shuffle, so neither the input order
    nor hash randomisation matters. Each label with at least 3 examples appears in every part.
    Split only deduplicated examples (both loaders deduplicate), or copies of one text could
    land on both sides of the train/test line.
    """
    for name, fraction in (("dev_fraction", dev_fraction), ("test_fraction", test_fraction)):
        if not 0 <= fraction < 1:
            raise ValueError(f"{name} must be in [0, 1), got {fraction}")
    if dev_fraction + test_fraction >= 1:
        raise ValueError("dev_fraction + test_fraction must be below 1: training needs examples")
    if not examples:
        raise ValueError("cannot split an empty list of examples")
    by_label: defaultdict[str, list[Example]] = defaultdict(list)
    for example in examples:
        by_label[example.label].append(example)
    rng = random.Random(seed)  # reproducible shuffling, not cryptography
    train: list[Example] = []
    dev: list[Example] = []
    test: list[Example] = []
    for label in sorted(by_label):
        items = sorted(by_label[label], key=lambda e: (e.text, e.weight))
        rng.shuffle(items)
        dev_size, test_size = _allocate(len(items), dev_fraction, test_fraction)
        test += items[:test_size]
        dev += items[test_size : test_size + dev_size]
        train += items[test_size + dev_size :]
    for part in (train, dev, test):
        rng.shuffle(part)  # labels interleaved, not in blocks
    return Split(train, dev, test)
