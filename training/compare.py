"""Plain RNN vs LSTM vs GRU on the same data, budget and seeds: the seed's claim, measured.

Besides accuracy and macro-F1, each run reports how much gradient reaches the first words of
a long text: the mean norm of dLoss/dx_t at t = 1 divided by that at the last step t = T,
over dev texts cut to exactly T tokens. The plain tanh recurrence multiplies one Jacobian per
step, so its ratio collapses toward 0 (vanishing gradient); the gates of LSTM and GRU keep a
path along which gradient survives.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from training.checkpoint import load_checkpoint
from training.config import TrainConfig
from training.model import SentimentRNN, pad_ids
from training.train import load_corpus, split_examples, train_model

GRADIENT_STEPS = 20  # T: texts are cut to this many tokens for the gradient measurement


def early_gradient_ratio(
    model: SentimentRNN, sequences: Sequence[Sequence[int]], targets: Sequence[int]
) -> float:
    """Mean ||dL/dx_1|| / mean ||dL/dx_T|| for same-length texts, in eval mode (no dropout)."""
    model.eval()
    ids, lengths = pad_ids(sequences)
    embedded = model.embedding(ids).detach().requires_grad_(True)  # (B, T, E)
    loss = nn.functional.cross_entropy(model.classify(embedded, lengths), torch.tensor(targets))
    (gradient,) = torch.autograd.grad(loss, embedded)  # (B, T, E)
    norms = gradient.norm(dim=-1).mean(dim=0)  # (T,)
    return float(norms[0] / norms[-1])


def compare_cells(
    config: TrainConfig, *, cells: Sequence[str], seeds: Sequence[int], out: Path
) -> str:
    """Train every cell with every seed; return a Markdown table of means (and spread)."""
    rows = []
    for cell in cells:
        runs = []
        for seed in seeds:
            run_config = replace(config, cell=cell, seed=seed)  # type: ignore[arg-type]
            started = time.perf_counter()
            card = train_model(run_config, out / f"{cell}-seed{seed}", name=f"{cell}-seed{seed}")
            elapsed = time.perf_counter() - started
            runs.append(
                (
                    card["metrics"]["test"]["accuracy"],
                    card["metrics"]["test"]["macro_f1"],
                    elapsed,
                    _gradient_figures(run_config, out / f"{cell}-seed{seed}"),
                )
            )
        rows.append((cell, runs))
    lines = [
        f"Same data, split, budget ({config.epochs} epochs max, patience {config.patience}) "
        f"and seeds {list(seeds)}; mean ± spread over seeds. Gradient ratio: "
        f"||dL/dx_1|| / ||dL/dx_{GRADIENT_STEPS}|| on dev texts of {GRADIENT_STEPS} tokens.",
        "",
        "| cell | test accuracy | test macro-F1 | training time (s) "
        "| gradient ratio at init | gradient ratio trained |",
        "|---|---|---|---|---|---|",
    ]
    for cell, runs in rows:
        accuracy = [r[0] for r in runs]
        macro_f1 = [r[1] for r in runs]
        seconds = [r[2] for r in runs]
        init = [r[3][0] for r in runs]
        trained = [r[3][1] for r in runs]
        lines.append(
            f"| {cell} | {_spread(accuracy, 4)} | {_spread(macro_f1, 4)} | "
            f"{_spread(seconds, 0)} | {_spread(init, 3, sci=True)} | "
            f"{_spread(trained, 3, sci=True)} |"
        )
    table = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(table + "\n")
    return table


def _gradient_figures(config: TrainConfig, directory: Path) -> tuple[float, float]:
    """Gradient ratio for a freshly initialised and for the trained model of one run."""
    loaded = load_checkpoint(directory)
    corpus = load_corpus(config)
    dev = split_examples(corpus.examples, config).dev
    from training.tokenizer import tokenize  # noqa: PLC0415

    label_index = {label: i for i, label in enumerate(loaded.labels)}
    sequences, targets = [], []
    for example in dev:
        ids = loaded.vocab.encode(tokenize(example.text))
        if len(ids) >= GRADIENT_STEPS:
            sequences.append(ids[:GRADIENT_STEPS])
            targets.append(label_index[example.label])
    if not sequences:
        return (float("nan"), float("nan"))
    torch.manual_seed(config.seed)
    fresh = SentimentRNN(loaded.config)
    fresh.embedding.load_state_dict(loaded.model.embedding.state_dict())
    return (
        early_gradient_ratio(fresh, sequences, targets),
        early_gradient_ratio(loaded.model, sequences, targets),
    )


def _spread(values: Sequence[float], digits: int, *, sci: bool = False) -> str:
    mean = statistics.fmean(values)
    half_range = (max(values) - min(values)) / 2
    if sci:
        return f"{mean:.{digits}g} ± {half_range:.1g}"
    return f"{mean:.{digits}f} ± {half_range:.{digits}f}"
