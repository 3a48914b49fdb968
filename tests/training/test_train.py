"""End-to-end training on a tiny corpus, for every cell, in seconds."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from training.__main__ import main
from training.checkpoint import load_checkpoint
from training.config import TrainConfig
from training.train import class_weights, train_model

WORDS = {
    "positive": ["great", "lovely", "excellent", "happy", "superb"],
    "negative": ["awful", "terrible", "broken", "sad", "horrible"],
    "neutral": ["tuesday", "table", "blue", "station", "box"],
}
FILLER = ["the", "it", "was", "a", "this", "really", "and"]


def write_corpus(path: Path, per_label: int = 40) -> Path:
    rng = random.Random(0)
    with path.open("w") as handle:
        for label, words in WORDS.items():
            for _ in range(per_label):
                text = [*rng.sample(FILLER, 3), rng.choice(words), *rng.sample(FILLER, 2)]
                handle.write(json.dumps({"review": " ".join(text), "stars": label}) + "\n")
    return path


def tiny_config(data: Path, cell: str, **changes: object) -> TrainConfig:
    return TrainConfig(
        data=str(data),
        text_field="review",
        label_field="stars",
        cell=cell,  # type: ignore[arg-type]
        pretrained="none",
        embedding_dim=16,
        hidden_size=16,
        min_count=1,
        epochs=20,
        patience=20,
        batch_size=16,
        learning_rate=0.02,
        lr_decay=1.0,
        dev_fraction=0.2,
        test_fraction=0.2,
        threads=1,
        baseline=False,
    ).override(dict(changes))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_trains_every_cell_to_a_loadable_checkpoint(tmp_path: Path, cell: str) -> None:
    data = write_corpus(tmp_path / "tiny.jsonl")
    out = tmp_path / "model"
    card = train_model(tiny_config(data, cell), out)
    assert card["metrics"]["test"]["accuracy"] >= 0.9  # the words decide the label
    assert card["metrics"]["test"]["macro_f1"] >= 0.9
    assert card["labels"] == ["negative", "neutral", "positive"]
    assert card["data"]["split"]  # sizes recorded
    assert card["training"]["seed"] == TrainConfig().seed
    assert card["library_versions"]["torch"] == torch.__version__
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"learning_curves.png", "confusion_matrix.png"} <= set(manifest["files"])
    loaded = load_checkpoint(out)
    assert loaded.config.cell == cell
    assert loaded.card["metrics"] == card["metrics"]


def test_same_seed_same_weights(tmp_path: Path) -> None:
    data = write_corpus(tmp_path / "tiny.jsonl")
    train_model(tiny_config(data, "gru", epochs=2), tmp_path / "a")
    train_model(tiny_config(data, "gru", epochs=2), tmp_path / "b")
    first = load_file(str(tmp_path / "a" / "model.safetensors"))
    second = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert first.keys() == second.keys()
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name


def test_pretrained_embeddings_cover_unseen_words(tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    data = write_corpus(tmp_path / "tiny.jsonl", per_label=15)
    config = tiny_config(
        data, "lstm", pretrained="minilm", embedding_dim=8, pretrained_vocab=500, epochs=1
    )
    card = train_model(config, tmp_path / "m")
    loaded = load_checkpoint(tmp_path / "m")
    assert card["vocabulary"]["pretrained_rows"] > 400
    assert "good" in loaded.vocab  # a pretrained word the corpus never used
    embedding = loaded.model.embedding.weight
    assert not torch.equal(embedding[loaded.vocab.lookup("good")], embedding[1])


def test_class_weights() -> None:
    weights = class_weights([0, 0, 0, 1], 2, "balanced")
    torch.testing.assert_close(weights, torch.tensor([4 / 6, 4 / 2]))
    assert torch.equal(class_weights([0, 1], 2, "none"), torch.ones(2))


def test_cli_train_then_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_corpus(tmp_path / "tiny.jsonl")
    toml = tmp_path / "tiny.toml"
    toml.write_text(
        'text_field = "review"\nlabel_field = "stars"\npretrained = "none"\n'
        "embedding_dim = 8\nhidden_size = 8\nmin_count = 1\nepochs = 2\nbaseline = false\n"
    )
    out = tmp_path / "cli-model"
    assert (
        main(
            [
                "train",
                "--data",
                str(data),
                "--config",
                str(toml),
                "--cell",
                "rnn",
                "--out",
                str(out),
                "--threads",
                "1",
            ]
        )
        == 0
    )
    assert "test accuracy" in capsys.readouterr().out
    assert load_checkpoint(out).card["training"]["config"]["embedding_dim"] == 8
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(out),
                "--data",
                str(data),
                "--text-field",
                "review",
                "--label-field",
                "stars",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["examples"] == 120
    assert set(report["per_class"]) == set(WORDS)


def test_cli_help_lists_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "training", "train", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for flag in ("--data", "--cell", "--epochs", "--out", "--config", "--pretrained"):
        assert flag in result.stdout


def test_unknown_config_option_is_refused(tmp_path: Path) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text("hiden_size = 3\n")
    with pytest.raises(ValueError, match="unknown training options: hiden_size"):
        TrainConfig.from_toml(toml)
