"""Checkpoint format: round trip, and every way a checkpoint can be broken fails by name."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import build_checkpoint
from training.checkpoint import (
    Checkpoint,
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


# -- a checkpoint is read once, from one directory ----------------------------------------------


def point(link: Path, target: Path) -> None:
    """Flip the symlink `link` to `target` atomically, as an operator deploying a model does."""
    staging = link.with_name(link.name + ".new")
    staging.unlink(missing_ok=True)
    staging.symlink_to(target)
    staging.replace(link)  # rename(2): atomic


def damaged_copy(source: Path, target: Path) -> Path:
    """A copy of `source` with one weight byte flipped and the manifest left as it was."""
    shutil.copytree(source, target)
    weights = target / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x01
    weights.write_bytes(bytes(data))
    return target


def assert_is(loaded: Checkpoint, expected: Checkpoint) -> None:
    """`loaded` is `expected` in every part: identity, card, vocabulary, config and weights."""
    assert loaded.path == expected.path
    assert loaded.sha256 == expected.sha256
    assert loaded.card == expected.card
    assert loaded.vocab.to_json() == expected.vocab.to_json()
    assert loaded.config == expected.config
    assert loaded.labels == expected.labels
    state, wanted = loaded.model.state_dict(), expected.model.state_dict()
    assert state.keys() == wanted.keys()
    for name, tensor in wanted.items():
        assert torch.equal(state[name], tensor), name


class OpenedFiles:
    """Records every file the loader opens (by `os.open` or `io.open`, whichever it uses) and
    calls `after_open(count)` after each, so a test can act at a chosen moment of a load."""

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, after_open: Callable[[int], None] | None = None
    ) -> None:
        self.names: list[str] = []
        os_open, io_open = os.open, io.open

        def opened(path: Any) -> None:
            self.names.append(Path(path).name)
            if after_open is not None:
                after_open(len(self.names))

        def counted_os_open(path: Any, *args: Any, **kwargs: Any) -> int:
            fd = os_open(path, *args, **kwargs)
            opened(path)
            return fd

        def counted_io_open(path: Any, *args: Any, **kwargs: Any) -> Any:
            handle = io_open(path, *args, **kwargs)
            opened(path)
            return handle

        monkeypatch.setattr(os, "open", counted_os_open)
        monkeypatch.setattr(io, "open", counted_io_open)


@pytest.fixture
def version_a(tmp_path: Path) -> Path:
    return build_checkpoint(tmp_path / "store" / "v1", "lstm", seed=1)


@pytest.mark.parametrize("after", range(1, 6))
@pytest.mark.parametrize("other", ["same architecture", "other architecture", "damaged"])
def test_a_flip_while_loading_gives_the_version_named_when_loading_began(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version_a: Path, after: int, other: str
) -> None:
    """The link names version A when loading starts and B from the `after`-th file opened on
    (a deploy racing a reload): what comes back is A in every part, its verified files and
    nothing else, never B (verified or not) and never a mix of the two."""
    store = version_a.parent
    if other == "damaged":
        version_b = damaged_copy(version_a, store / "v2")
    else:
        kind = "lstm" if other == "same architecture" else "gru"
        version_b = build_checkpoint(store / "v2", kind, seed=2)
    expected = load_checkpoint(version_a)
    link = store / "current"
    link.symlink_to("v1")

    def flip(count: int) -> None:
        if count == after:
            point(link, Path("v2"))

    opened = OpenedFiles(monkeypatch, flip)
    loaded = load_checkpoint(link)
    monkeypatch.undo()

    assert len(opened.names) >= after, f"the link never flipped: the loader opened {opened.names}"
    assert link.resolve() == version_b.resolve()
    assert_is(loaded, expected)
    assert loaded.path == version_a.resolve()
    assert loaded.path != link


def test_every_file_is_opened_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Verified bytes are the parsed bytes: one open per file, plots included, none again."""
    write(tmp_path)
    (tmp_path / "curves.png").write_bytes(b"\x89PNG not really")
    original = load_checkpoint(tmp_path)
    save_checkpoint(
        tmp_path,
        model=original.model,
        labels=LABELS,
        vocab=original.vocab,
        card={"name": "tiny"},
        extra_files=["curves.png"],
    )
    opened = OpenedFiles(monkeypatch)
    load_checkpoint(tmp_path)
    monkeypatch.undo()
    assert Counter(opened.names) == {
        tmp_path.name: 1,
        "manifest.json": 1,
        "model.safetensors": 1,
        "config.json": 1,
        "vocab.json": 1,
        "model_card.json": 1,
        "curves.png": 1,
    }


def test_the_checkpoint_records_the_directory_it_was_read_from(tmp_path: Path) -> None:
    write(tmp_path / "v1")
    (tmp_path / "current").symlink_to("v1")
    loaded = load_checkpoint(tmp_path / "current")
    assert loaded.path == (tmp_path / "v1").resolve()
    assert loaded.name == "tiny"


@pytest.mark.parametrize("target", ["outside", "inside"])
def test_a_file_that_is_a_symlink_is_refused(tmp_path: Path, target: str) -> None:
    """A checkpoint is self-contained regular files: a symlinked file is refused, even one
    whose bytes match the manifest, so nothing outside the version directory (nor a second
    name inside it that can be changed on its own) is ever part of the model."""
    directory = tmp_path / "checkpoint"
    write(directory)
    weights = directory / "model.safetensors"
    copy = (tmp_path / "elsewhere.safetensors") if target == "outside" else directory / "w.bin"
    weights.rename(copy)
    weights.symlink_to(copy)
    assert weights.read_bytes()  # the link works: only the loader refuses it
    with pytest.raises(CheckpointError, match=r"model\.safetensors: is a symbolic link"):
        load_checkpoint(directory)


def test_a_file_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path: Path) -> None:
    write(tmp_path)
    (tmp_path / "vocab.json").unlink()
    os.mkfifo(tmp_path / "vocab.json")  # opening it for reading would wait for a writer
    with pytest.raises(CheckpointError, match=r"vocab\.json: not a regular file"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("name", ["..", ".", "../config.json", "sub/config.json", ""])
def test_a_manifest_naming_a_file_outside_the_directory_is_refused(
    tmp_path: Path, name: str
) -> None:
    write(tmp_path)
    path = tmp_path / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["files"][name] = {"sha256": "0" * 64, "bytes": 0}
    path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=r"manifest\.json: file name .* is not a plain name"):
        load_checkpoint(tmp_path)


def test_an_oversized_manifest_is_refused_before_it_is_read(tmp_path: Path) -> None:
    write(tmp_path)
    with (tmp_path / "manifest.json").open("r+b") as manifest:
        manifest.truncate(1 << 30)  # sparse: large, but costs no disk
    with pytest.raises(CheckpointError, match=r"manifest\.json: \d+ bytes, more than"):
        load_checkpoint(tmp_path)


def replace_consistently(directory: Path, name: str, data: bytes) -> None:
    """Give `name` new contents and the manifest their sha256 and size, as a forger would."""
    (directory / name).write_bytes(data)
    manifest_path = directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    manifest_path.write_text(json.dumps(manifest))


def safetensors_header(header: dict[str, Any]) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"not a safetensors file at all", id="garbage"),
        pytest.param(
            safetensors_header({"a": {"dtype": "F8_E8M0", "shape": [2], "data_offsets": [0, 2]}})
            + b"xx",
            id="dtype torch cannot take",
        ),
    ],
)
def test_weights_that_match_the_manifest_but_do_not_parse_are_named(
    tmp_path: Path, data: bytes
) -> None:
    write(tmp_path)
    replace_consistently(tmp_path, "model.safetensors", data)
    with pytest.raises(CheckpointError, match=r"model\.safetensors: unreadable weights"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    ("data", "problem"),
    [(b"\xff\xfe{}", "unreadable JSON"), (b"[1, 2]", "expected a JSON object")],
)
def test_a_card_that_matches_the_manifest_but_is_not_a_json_object_is_named(
    tmp_path: Path, data: bytes, problem: str
) -> None:
    write(tmp_path)
    replace_consistently(tmp_path, "model_card.json", data)
    with pytest.raises(CheckpointError, match=rf"model_card\.json: {problem}"):
        load_checkpoint(tmp_path)
