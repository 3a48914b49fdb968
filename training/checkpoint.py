"""The checkpoint format, shared by training (which writes it) and serving (which reads it).

A checkpoint is a directory of plain data, never pickles:

    model.safetensors   weights (the embedding table may be stored as float16)
    config.json         format version, ModelConfig, label names
    vocab.json          the vocabulary, tagged with the tokenizer version it was built for
    model_card.json     how the model was made and how well it does
    manifest.json       sha256 and size of every file above (and of any plots)

`load_checkpoint` checks the manifest before using anything else, so a missing, truncated
or altered file fails loudly with its name instead of serving a different model. It reads
each file once, through one open descriptor of the directory, and parses the very bytes it
hashed: a checkpoint directory reached through a symlink that is flipped meanwhile (the hot
swap the service offers) still loads as the one version the link named when loading began.
Files must be regular files in that directory; symlinks among them are refused.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_weights
from safetensors.torch import save_file

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
# manifest.json is read before anything sizes it: a bound well above any real one (a few
# hundred bytes per file listed) keeps a huge or endless file from being read into memory.
_MAX_MANIFEST_BYTES = 1 << 20
_UNSIZED = object()  # `_read_file` of a file the manifest does not size (the manifest itself)


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message names the file and the problem."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class Checkpoint:
    """A loaded, verified checkpoint: the model in eval mode and everything that describes it."""

    path: Path  # the version directory it was read from, symlinks resolved (for logs)
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


def verify_manifest(directory: Path | str) -> dict[str, Any]:
    """Check every file the manifest names; returns the manifest or raises CheckpointError."""
    return _read_verified(Path(directory)).manifest


@dataclass(frozen=True)
class _Verified:
    """A checkpoint's bytes, each file read once and checked against the manifest read with
    them, all from one directory: what `load_checkpoint` parses is exactly what was hashed."""

    directory: Path  # the version directory, symlinks resolved
    manifest: dict[str, Any]
    sha256: str  # of manifest.json's bytes
    files: dict[str, bytes]  # the required files; plots are checked, not kept


def _read_verified(directory: Path) -> _Verified:
    """Open the directory once and read every file relative to it (`dir_fd`).

    The documented hot swap flips a symlink to a new version directory while the service may
    be loading through it. Resolving the link once and reading through a descriptor of the
    directory it named pins that version: a flip during the load cannot redirect a later read,
    so the result is the version named when the call began, never a mix of two and never a
    file that was not verified.
    """
    resolved = Path(os.path.realpath(directory))
    try:
        dir_fd = os.open(resolved, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise CheckpointError(directory, "checkpoint directory does not exist") from None
    except OSError as error:
        raise CheckpointError(directory, f"cannot open the directory ({error.strerror})") from None
    try:
        manifest_path = resolved / MANIFEST_FILE
        manifest_bytes = _read_file(
            dir_fd, manifest_path, missing="missing", limit=_MAX_MANIFEST_BYTES
        )
        manifest = _parse_json(manifest_path, manifest_bytes)
        files = manifest.get("files")
        if manifest.get("format_version") != FORMAT_VERSION or not isinstance(files, dict):
            raise CheckpointError(manifest_path, f"not a format {FORMAT_VERSION} manifest")
        for name in REQUIRED_FILES:
            if name not in files:
                raise CheckpointError(manifest_path, f"does not list required file {name}")
        kept: dict[str, bytes] = {}
        for name, expected in files.items():
            if not _is_plain_name(name):
                raise CheckpointError(manifest_path, f"file name {name!r} is not a plain name")
            if not isinstance(expected, dict):
                raise CheckpointError(manifest_path, f"entry for {name} is not an object")
            file = resolved / name
            data = _read_file(
                dir_fd,
                file,
                missing="missing (listed in manifest.json)",
                size=expected.get("bytes"),
            )
            if hashlib.sha256(data).hexdigest() != expected.get("sha256"):
                raise CheckpointError(
                    file, "sha256 does not match manifest.json (file was altered)"
                )
            if name in REQUIRED_FILES:
                kept[name] = data
    finally:
        os.close(dir_fd)
    return _Verified(resolved, manifest, hashlib.sha256(manifest_bytes).hexdigest(), kept)


def _is_plain_name(name: object) -> bool:
    """An entry of the directory itself: no path, not the directory or its parent, no NUL."""
    return isinstance(name, str) and name not in {"", ".", ".."} and not {"/", "\0"} & set(name)


def _read_file(
    dir_fd: int,
    path: Path,
    *,
    missing: str,
    size: object = _UNSIZED,
    limit: int | None = None,
) -> bytes:
    """The bytes of the regular file `path.name` in the directory `dir_fd`, read once.

    `size` is what the manifest says (checked before reading, so a wrong file costs no memory);
    `limit` bounds a file the manifest does not size.
    """
    # O_NOFOLLOW: a symlink is refused rather than followed out of the version directory (or
    # to a second name inside it that could change on its own). O_NONBLOCK: a FIFO in place
    # of a file is opened without waiting for a writer, then refused below.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path.name, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise CheckpointError(path, missing) from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise CheckpointError(
                path, "is a symbolic link (a checkpoint's files must be regular files in it)"
            ) from None
        raise CheckpointError(path, f"unreadable ({error.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CheckpointError(path, "not a regular file")
        if size is not _UNSIZED and info.st_size != size:
            raise CheckpointError(path, f"size {info.st_size} bytes, manifest says {size}")
        if limit is not None and info.st_size > limit:
            raise CheckpointError(path, f"{info.st_size} bytes, more than {limit}")
        data = _read_up_to(fd, info.st_size + 1)  # one byte more: a file still growing shows
    except OSError as error:
        raise CheckpointError(path, f"unreadable ({error.strerror})") from None
    finally:
        os.close(fd)
    if len(data) != info.st_size:
        raise CheckpointError(path, "changed while it was being read")
    return data


def _read_up_to(fd: int, count: int) -> bytes:
    """Read until `count` bytes or the end of the file, whichever comes first."""
    chunks: list[bytes] = []
    while count > 0:
        chunk = os.read(fd, count)
        if not chunk:
            break
        chunks.append(chunk)
        count -= len(chunk)
    # A regular file is nearly always read in one call: no copy then.
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _parse_json(path: Path, data: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(path, f"unreadable JSON ({error})") from error
    if not isinstance(parsed, dict):
        raise CheckpointError(path, "expected a JSON object")
    return parsed


def load_checkpoint(directory: Path | str) -> Checkpoint:
    """Verify and load a checkpoint; the model comes back in eval mode on the CPU.

    When `directory` is a symlink, the checkpoint is the version it names when the call
    begins, whole (see `_read_verified`); `Checkpoint.path` is that version's directory.
    """
    verified = _read_verified(Path(directory))
    root = verified.directory
    config_path = root / CONFIG_FILE
    raw_config = _parse_json(config_path, verified.files[CONFIG_FILE])
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
    vocab_path = root / VOCAB_FILE
    try:
        vocab = Vocabulary.from_json(_parse_json(vocab_path, verified.files[VOCAB_FILE]))
    except ValueError as error:
        raise CheckpointError(vocab_path, str(error)) from error
    if len(vocab) != config.vocab_size:
        raise CheckpointError(vocab_path, f"{len(vocab)} entries, config says {config.vocab_size}")
    weights_path = root / WEIGHTS_FILE
    try:
        tensors = load_weights(verified.files[WEIGHTS_FILE])
    except (SafetensorError, KeyError, ValueError, RuntimeError) as error:
        # KeyError: a dtype this safetensors cannot map to torch; ValueError, RuntimeError:
        # tensors torch cannot build from the buffer.
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
    card = _parse_json(root / CARD_FILE, verified.files[CARD_FILE])
    return Checkpoint(
        path=root,
        config=config,
        labels=labels,
        vocab=vocab,
        model=model,
        card=card,
        sha256=verified.sha256,
    )
