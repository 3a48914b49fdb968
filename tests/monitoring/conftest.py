"""Fixtures for the monitoring tests: the shipped rules and dashboard, the Prometheus tools,
and a tiny checkpoint whose model card records its test split.

`promtool` and `prometheus` come from Debian's package (`scripts/install-prometheus.sh`);
without them these tests fail, saying how to install them, rather than skip.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.conftest import CORPUS, LABELS
from training.checkpoint import save_checkpoint
from training.model import ModelConfig, SentimentRNN
from training.tokenizer import Vocabulary, tokenize

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy" / "monitoring"
RULES = MONITORING / "alerts.yml"
RULE_TESTS = MONITORING / "alerts_test.yml"
DASHBOARD = MONITORING / "dashboard.json"
SCRAPE_CONFIG = MONITORING / "prometheus.yml"

# The test split the card below records: 50 negative, 30 neutral, 20 positive texts.
TEST_SPLIT = {"negative": 50, "neutral": 30, "positive": 20}
# Training cut texts to this many tokens: a longer text is `truncated`.
TRAINED_TOKENS = 8


def tool(name: str, variable: str) -> str:
    """The path of `name` (or of $`variable`), or the test fails saying how to install it."""
    path = os.environ.get(variable) or shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} not found: run scripts/install-prometheus.sh (Debian's prometheus "
            f"package) or set {variable}=/path/to/{name}"
        )
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return tool("promtool", "PROMTOOL")


@pytest.fixture(scope="session")
def prometheus() -> str:
    return tool("prometheus", "PROMETHEUS")


def build_monitored_checkpoint(directory: Path) -> Path:
    """A tiny LSTM checkpoint whose card records its test split and training token limit."""
    counts = Counter(token.norm for text in CORPUS for token in tokenize(text))
    vocab = Vocabulary.build(dict(counts))
    config = ModelConfig(
        vocab_size=len(vocab), num_labels=len(LABELS), embedding_dim=16, hidden_size=12
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SentimentRNN(config).eval()
    card = {
        "name": "monitored",
        "data": {"source": "tests/monitoring", "split": {"test": TEST_SPLIT}},
        "training": {"config": {"max_tokens": TRAINED_TOKENS}},
        "metrics": {"test": {"accuracy": 0.5, "macro_f1": 0.4}},
    }
    save_checkpoint(directory, model=model, labels=LABELS, vocab=vocab, card=card)
    return directory


@pytest.fixture(scope="session")
def monitored_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_monitored_checkpoint(tmp_path_factory.mktemp("monitored") / "default")
