"""`rnn-sentiment calibrate` as a person runs it: a tiny trained checkpoint calibrated in place
with a summary of the figures, and one line for each mistake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.conftest import assert_one_line_error, rnn_sentiment
from tests.conftest import build_checkpoint
from tests.training.test_train import tiny_config, write_corpus
from training.calibration import RELIABILITY_PLOT
from training.checkpoint import MANIFEST_FILE, load_checkpoint
from training.train import train_model


@pytest.mark.slow
def test_calibrates_a_checkpoint_in_place_and_says_what_changed(tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "tiny.jsonl")
    out = tmp_path / "tiny"
    train_model(tiny_config(data, "rnn", epochs=2), out)
    trained = load_checkpoint(out)
    manifest = (out / MANIFEST_FILE).read_bytes()

    result = rnn_sentiment("calibrate", "--model", str(out))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"calibrated {out}: temperature ")
    assert lines[1].split()[0] == "test"
    assert "ece" in lines[1]
    assert "->" in lines[1]
    assert lines[2].split()[0] == "reviews_handwritten"
    calibrated = load_checkpoint(out)
    # The same data, split and weights: the temperature training fitted, to the last bit. The
    # rewritten checkpoint is then the trained one byte for byte, plots pinned as before.
    assert calibrated.config == trained.config
    assert calibrated.card["calibration"] == trained.card["calibration"]
    assert (out / MANIFEST_FILE).read_bytes() == manifest
    assert RELIABILITY_PLOT in json.loads((out / MANIFEST_FILE).read_text())["files"]

    as_json = rnn_sentiment("calibrate", "--model", str(out), "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["method"] == "temperature_scaling"


def test_a_missing_checkpoint_is_one_line(tmp_path: Path) -> None:
    result = rnn_sentiment("calibrate", "--model", str(tmp_path / "nowhere"))
    assert_one_line_error(result, "nowhere", "does not exist")


def test_a_checkpoint_that_does_not_say_how_it_was_split_is_one_line(tmp_path: Path) -> None:
    directory = build_checkpoint(tmp_path / "handmade", "gru")
    before = (directory / MANIFEST_FILE).read_bytes()
    result = rnn_sentiment("calibrate", "--model", str(directory))
    assert_one_line_error(result, "no training config")
    assert (directory / MANIFEST_FILE).read_bytes() == before  # left as it was


def test_data_that_moved_away_is_one_line(tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "tiny.jsonl")
    out = tmp_path / "tiny"
    train_model(tiny_config(data, "gru", epochs=1), out)
    data.unlink()
    result = rnn_sentiment("calibrate", "--model", str(out))
    assert_one_line_error(result, "tiny.jsonl")


def test_help_lists_calibrate() -> None:
    result = rnn_sentiment("--help")
    assert result.returncode == 0
    assert "calibrate" in result.stdout
