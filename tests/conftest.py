"""Shared fixtures: tiny real checkpoints (one per cell type, and a bidirectional one).

The shipped default model is not needed by any test: each checkpoint here is a randomly
initialised `SentimentRNN` over a small vocabulary, saved with the real `save_checkpoint`, so
loading, verification and inference run exactly as in production, in milliseconds.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from training.checkpoint import save_checkpoint
from training.model import ModelConfig, SentimentRNN
from training.tokenizer import Vocabulary, tokenize

LABELS = ("negative", "neutral", "positive")
CORPUS = (
    "I love this film, it is great and wonderful :)",
    "The service was terrible and the food was awful :(",
    "It arrived on Tuesday in a brown box.",
    "Not bad at all, but the ending didn't work for me.",
    "Best purchase ever!!! Highly recommend @shop #happy",
    "Worst hotel I have stayed in, never again.",
    "The phone is fine, battery lasts 2 days.",
)
CHECKPOINT_KINDS = {
    "rnn": {"cell": "rnn", "num_layers": 1, "bidirectional": False},
    "lstm": {"cell": "lstm", "num_layers": 2, "bidirectional": False},
    "gru": {"cell": "gru", "num_layers": 1, "bidirectional": False},
    "bilstm": {"cell": "lstm", "num_layers": 1, "bidirectional": True},
}


def build_checkpoint(directory: Path, kind: str, seed: int = 0) -> Path:
    counts = Counter(token.norm for text in CORPUS for token in tokenize(text))
    vocab = Vocabulary.build(dict(counts))
    config = ModelConfig(
        vocab_size=len(vocab),
        num_labels=len(LABELS),
        embedding_dim=16,
        hidden_size=12,
        dropout=0.0,
        **CHECKPOINT_KINDS[kind],  # type: ignore[arg-type]
    )
    with torch.random.fork_rng():  # seeded weights, and other tests' random state untouched
        torch.manual_seed(seed)
        model = SentimentRNN(config).eval()
    card = {
        "name": f"tiny-{kind}",
        "data": {"source": "tests/conftest.py", "sha256": "0" * 64},
        "metrics": {"test": {"accuracy": 0.333, "macro_f1": 0.25}},
        "seed": seed,
    }
    save_checkpoint(directory, model=model, labels=LABELS, vocab=vocab, card=card)
    return directory


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """kind -> directory of a tiny saved checkpoint (rnn, lstm, gru, bilstm)."""
    root = tmp_path_factory.mktemp("checkpoints")
    return {kind: build_checkpoint(root / kind, kind) for kind in CHECKPOINT_KINDS}


@pytest.fixture(autouse=True)
def _restore_environ() -> Iterator[None]:
    """Tests may set APP_* variables; every test starts from the environment it found."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
