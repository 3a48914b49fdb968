"""Training configuration: one typed dataclass, overridden by a TOML file, then by CLI flags.

The defaults are the shipped recipe, `training/configs/default.toml` (the model in
`model_store/default`): `train` with no options makes that model's settings, and
tests/training/test_config.py keeps the two equal. The resolved configuration is written into
the model card, so every checkpoint says exactly how it was made.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal

from training.model import CellType

PretrainedSource = Literal["minilm", "none"]
ClassWeighting = Literal["balanced", "sqrt", "none"]


@dataclass(frozen=True)
class TrainConfig:
    # Data
    data: str = "default"  # "default" (the embedded tweet corpus) or a CSV/JSONL path
    text_field: str = "text"
    label_field: str = "label"
    weight_field: str | None = None  # optional per-example weight column (e.g. confidence)
    dev_fraction: float = 0.1
    test_fraction: float = 0.1
    max_tokens: int = 128  # longer texts are truncated in training (serving has its own limit)

    # Vocabulary and embeddings
    min_count: int = 2  # corpus words seen fewer times map to <unk> unless pretrained knows them
    max_vocab: int = 30_000
    pretrained: PretrainedSource = "minilm"  # initialise embeddings from all-MiniLM-L6-v2
    pretrained_vocab: int = 22_000  # pretrained whole words added beyond the corpus (all fit)
    freeze_embeddings: bool = True  # keeps unseen words in the same space as seen ones
    embedding_lr_scale: float = 0.1  # when not frozen: embeddings move this much slower

    # Network (see training.model.ModelConfig)
    cell: CellType = "lstm"
    embedding_dim: int = 160  # the pretrained vectors are PCA-reduced to this size
    hidden_size: int = 128
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.2
    token_dropout: float = 0.0  # share of training tokens replaced by <unk> (word dropout)

    # Optimisation
    epochs: int = 12
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    clip_grad_norm: float = 1.0
    patience: int = 3  # epochs without a better dev macro-F1 before stopping
    lr_decay: float = 0.5  # multiply the learning rate by this after an epoch with no gain
    class_weighting: ClassWeighting = "none"  # keep the corpus prior (see the recipe)
    use_example_weights: bool = True  # scale each example's loss by its weight (confidence)
    seed: int = 2  # initialisation and batch order (and the split when split_seed is None)
    split_seed: int | None = 13  # the split's own seed (None: `seed`): vary `seed` over one split
    threads: int = 1  # one thread: the same checkpoint bit for bit on any machine
    baseline: bool = True  # also fit TF-IDF + logistic regression on the split, for the card

    # Distillation (training/teacher.py): learn from a teacher's logits as well as the labels
    # "none"; "default": the shipped teacher's logits (training/teacher_logits), which are for the
    # default corpus and its split only; or a directory `python -m training teacher` wrote
    teacher: str = "default"
    distill_weight: float = 0.5  # share of the loss that is the teacher's, the rest the labels'
    distill_temperature: float = 2.0  # both distributions softened by it
    augment: int = 2  # variants per training text learnt from the teacher alone (its copies max)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def override(self, values: dict[str, Any]) -> TrainConfig:
        known = {field.name for field in fields(self)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training options: {', '.join(unknown)}")
        return replace(self, **values)

    @classmethod
    def from_card(cls, recorded: dict[str, Any]) -> TrainConfig:
        """The config a model card recorded. An option the card predates takes the value that
        meant what the run did then, not today's default: no split seed of its own (the split
        followed `seed`), no teacher, no variants."""
        return cls().override({**_BEFORE_RECORDED, **recorded})

    @classmethod
    def from_toml(cls, path: Path, base: TrainConfig | None = None) -> TrainConfig:
        with path.open("rb") as handle:
            values = tomllib.load(handle)
        return (base or cls()).override(values)


# Options added after checkpoints were first written, with the behaviour those had.
_BEFORE_RECORDED: dict[str, Any] = {"split_seed": None, "teacher": "none", "augment": 0}


@dataclass(frozen=True)
class TeacherConfig:
    """How the teacher is fine-tuned (the data and split come from a `TrainConfig`)."""

    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1  # of all steps, then linear decay to zero
    max_pieces: int = 64  # WordPiece tokens per text, [CLS] and [SEP] included
    dropout: float = 0.1
    seed: int = 13  # also the seed of the text variants (training.augment)
    threads: int = 2
    augment_copies: int = 2  # variants of each training text the teacher also labels
