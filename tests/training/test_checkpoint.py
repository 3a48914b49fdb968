"""Checkpoint format: round trip, and every way a checkpoint can be broken fails by name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from training.checkpoint import (
    CheckpointError,
    load_checkpoint,
    round_half_precision,
    save_checkpoint,
)
from training.model import ModelConfig, SentimentRNN, pad_ids
from training.tokenizer import Vocabulary

LABELS = ("negative", "neutral", "positive")


def write(directory: Path, cell: str = "lstm") -> SentimentRNN:
    torch.manual_seed(1)
    vocab = Vocabulary.build(dict.fromkeys(("good", "bad", "movie", "not"), 3))
    model = SentimentRNN(
        ModelConfig(vocab_size=len(vocab), num_labels=3, cell=cell, embedding_dim=8, hidden_size=6)  # type: ignore[arg-type]
    ).eval()
    round_half_precision(model)
    save_checkpoint(directory, model=model, labels=LABELS, vocab=vocab, card={"name": "tiny"})
    return model


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_round_trip_gives_identical_outputs(tmp_path: Path, cell: str) -> None:
    model = write(tmp_path, cell)
    loaded = load_checkpoint(tmp_path)
    ids, lengths = pad_ids([[2, 11, 12], [13, 14]])
    with torch.inference_mode():
        assert torch.equal(model(ids, lengths), loaded.model(ids, lengths))
    assert loaded.labels == LABELS
    assert loaded.name == "tiny"
    assert len(loaded.version) == 12
    assert not loaded.model.training
    weights = json.loads((tmp_path / "manifest.json").read_text())["files"]
    assert set(weights) == {"model.safetensors", "config.json", "vocab.json", "model_card.json"}


def test_embedding_is_stored_as_float16(tmp_path: Path) -> None:
    from safetensors import safe_open

    write(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as weights:
        assert weights.get_tensor("embedding.weight").dtype == torch.float16
        assert weights.get_tensor("head.weight").dtype == torch.float32


@pytest.mark.parametrize(
    "name", ["model.safetensors", "config.json", "vocab.json", "model_card.json"]
)
def test_missing_file_is_named(tmp_path: Path, name: str) -> None:
    write(tmp_path)
    (tmp_path / name).unlink()
    with pytest.raises(CheckpointError, match=f"{name}: missing"):
        load_checkpoint(tmp_path)


def test_truncated_weights_are_named(tmp_path: Path) -> None:
    write(tmp_path)
    path = tmp_path / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: size"):
        load_checkpoint(tmp_path)


def test_one_flipped_byte_is_named(tmp_path: Path) -> None:
    write(tmp_path)
    path = tmp_path / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: sha256 does not match"):
        load_checkpoint(tmp_path)


def test_missing_manifest(tmp_path: Path) -> None:
    write(tmp_path)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match=r"manifest\.json: missing"):
        load_checkpoint(tmp_path)


def test_manifest_that_omits_a_required_file(tmp_path: Path) -> None:
    write(tmp_path)
    path = tmp_path / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["files"]["vocab.json"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"does not list required file vocab\.json"):
        load_checkpoint(tmp_path)


def test_incompatible_config_is_refused(tmp_path: Path) -> None:
    """A config edited consistently with the manifest but not with the weights."""
    import hashlib

    write(tmp_path)
    config_path = tmp_path / "config.json"
    config = json.loads(config_path.read_text())
    config["model"]["hidden_size"] = 7
    config_path.write_text(json.dumps(config))
    manifest_path = tmp_path / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["config.json"] = {
        "sha256": hashlib.sha256(config_path.read_bytes()).hexdigest(),
        "bytes": config_path.stat().st_size,
    }
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: weights do not fit the config"):
        load_checkpoint(tmp_path)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
