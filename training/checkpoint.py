"""The checkpoint format, shared by training (which writes it) and serving (which reads it).

A checkpoint is a directory of plain data, never pickles:

    model.safetensors   weights (the embedding table may be stored as float16)
    config.json         format version, ModelConfig, label names
    vocab.json          the vocabulary, tagged with the tokenizer version it was built for
    model_card.json     how the model was made and how well it does
    manifest.json       sha256 and size of every file above (and of any plots)

`load_checkpoint` checks the manifest before reading anything else, so a missing, truncated
or altered file fails loudly with its name instead of serving a different model.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from training.model import ModelConfig, SentimentRNN
from training.tokenizer import Vocabulary

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
CARD_FILE = "model_card.json"
MANIFEST_FILE = "manifest.json"
REQUIRED_FILES = (WEIGHTS_FILE, CONFIG_FILE, VOCAB_FILE, CARD_FILE)
_HALF_PRECISION_WEIGHTS = ("embedding.weight",)


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message names the file and the problem."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class Checkpoint:
    """A loaded, verified checkpoint: the model in eval mode and everything that describes it."""

    path: Path
    config: ModelConfig
    labels: tuple[str, ...]
    vocab: Vocabulary
    model: SentimentRNN
    card: dict[str, Any]
    sha256: str  # sha256 of manifest.json, which pins every file: the checkpoint's identity

    @property
    def name(self) -> str:
        return str(self.card.get("name", self.path.name))

    @property
    def version(self) -> str:
        return self.sha256[:12]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def round_half_precision(model: SentimentRNN) -> None:
    """Round the weights stored as float16 in place, so the saved model is the evaluated one."""
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name in _HALF_PRECISION_WEIGHTS:
                tensor.copy_(tensor.half().float())


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def save_checkpoint(
    directory: Path,
    *,
    model: SentimentRNN,
    labels: Iterable[str],
    vocab: Vocabulary,
    card: dict[str, Any],
    extra_files: Iterable[str] = (),
) -> str:
    """Write a checkpoint into `directory`; returns its sha256 (that of the manifest).

    `extra_files` are names of files already in `directory` (plots) to pin in the manifest.
    Call `round_half_precision(model)` before evaluating a model you are about to save.
    """
    labels = tuple(labels)
    if len(labels) != model.config.num_labels:
        raise ValueError(f"{len(labels)} labels for a model with {model.config.num_labels}")
    if len(vocab) != model.config.vocab_size:
        raise ValueError(f"vocabulary of {len(vocab)} for a model with {model.config.vocab_size}")
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {
        name: (tensor.half() if name in _HALF_PRECISION_WEIGHTS else tensor).contiguous()
        for name, tensor in model.state_dict().items()
    }
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    (directory / WEIGHTS_FILE).chmod(0o644)  # safetensors writes 0600; services read as others
    _write_json(
        directory / CONFIG_FILE,
        {"format_version": FORMAT_VERSION, "model": model.config.to_json(), "labels": labels},
    )
    _write_json(directory / VOCAB_FILE, vocab.to_json())
    _write_json(directory / CARD_FILE, card)
    files = {}
    for name in (*REQUIRED_FILES, *extra_files):
        file = directory / name
        files[name] = {"sha256": sha256_file(file), "bytes": file.stat().st_size}
    _write_json(directory / MANIFEST_FILE, {"format_version": FORMAT_VERSION, "files": files})
    return sha256_file(directory / MANIFEST_FILE)


def verify_manifest(directory: Path) -> dict[str, Any]:
    """Check every file the manifest names; returns the manifest or raises CheckpointError."""
    manifest_path = directory / MANIFEST_FILE
    if not directory.is_dir():
        raise CheckpointError(directory, "checkpoint directory does not exist")
    manifest = _read_json(manifest_path)
    files = manifest.get("files")
    if manifest.get("format_version") != FORMAT_VERSION or not isinstance(files, dict):
        raise CheckpointError(manifest_path, f"not a format {FORMAT_VERSION} manifest")
    for name in REQUIRED_FILES:
        if name not in files:
            raise CheckpointError(manifest_path, f"does not list required file {name}")
    for name, expected in files.items():
        file = directory / name
        if Path(name).name != name:
            raise CheckpointError(manifest_path, f"file name {name!r} is not a plain name")
        if not file.is_file():
            raise CheckpointError(file, "missing (listed in manifest.json)")
        size = file.stat().st_size
        if size != expected.get("bytes"):
            raise CheckpointError(file, f"size {size} bytes, manifest says {expected.get('bytes')}")
        if sha256_file(file) != expected.get("sha256"):
            raise CheckpointError(file, "sha256 does not match manifest.json (file was altered)")
    return manifest


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(path, "missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(path, f"unreadable JSON ({error})") from error
    if not isinstance(data, dict):
        raise CheckpointError(path, "expected a JSON object")
    return data


def load_checkpoint(directory: Path | str) -> Checkpoint:
    """Verify and load a checkpoint; the model comes back in eval mode on the CPU."""
    directory = Path(directory)
    verify_manifest(directory)
    config_path = directory / CONFIG_FILE
    raw_config = _read_json(config_path)
    if raw_config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            config_path,
            f"format version {raw_config.get('format_version')}, expected {FORMAT_VERSION}",
        )
    try:
        config = ModelConfig.from_json(raw_config["model"])
        labels = tuple(str(label) for label in raw_config["labels"])
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(config_path, f"invalid model config ({error})") from error
    if len(labels) != config.num_labels or len(set(labels)) != len(labels):
        raise CheckpointError(config_path, "labels do not match num_labels or repeat")
    vocab_path = directory / VOCAB_FILE
    try:
        vocab = Vocabulary.from_json(_read_json(vocab_path))
    except ValueError as error:
        raise CheckpointError(vocab_path, str(error)) from error
    if len(vocab) != config.vocab_size:
        raise CheckpointError(vocab_path, f"{len(vocab)} entries, config says {config.vocab_size}")
    weights_path = directory / WEIGHTS_FILE
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(weights_path, f"unreadable weights ({error})") from error
    model = SentimentRNN(config)
    state = {name: tensor.float() for name, tensor in tensors.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first_line = str(error).splitlines()[0]
        raise CheckpointError(
            weights_path, f"weights do not fit the config ({first_line})"
        ) from error
    model.eval()
    card = _read_json(directory / CARD_FILE)
    return Checkpoint(
        path=directory,
        config=config,
        labels=labels,
        vocab=vocab,
        model=model,
        card=card,
        sha256=sha256_file(directory / MANIFEST_FILE),
    )
