"""Temperature scaling: make a trained model's scores calibrated probabilities.

A network trained with cross-entropy (here also class-weighted) is usually over- or
under-confident: among texts scored 0.9, far more or fewer than 90% are right. Temperature
scaling divides the logits by one scalar T > 0 fitted on the dev split, the T that minimises
the dev negative log-likelihood. Dividing every logit of a text by the same positive number
never changes which is largest, so the predicted labels, accuracy and macro-F1 stay exactly as
they were; only the confidence moves.

The temperature lives in the model config (`ModelConfig.temperature`, applied by the head),
so everything that loads the checkpoint reads calibrated probabilities with no code of its own.
`fit_and_apply` runs at the end of training; `calibrate_checkpoint` does the same for a
checkpoint that already exists (`python -m training calibrate --model DIR`).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training import checkpoint
from training.config import TrainConfig
from training.data import EVAL_DATA, DataError, load_file
from training.metrics import calibration_metrics
from training.model import SentimentRNN, pad_ids

METHOD = "temperature_scaling"
RELIABILITY_PLOT = "reliability_diagram.png"
REVIEWS_KEY = "reviews_handwritten"
REVIEWS = EVAL_DATA / f"{REVIEWS_KEY}.jsonl"


# The temperatures a fit may return (see `fit_temperature`).
MIN_TEMPERATURE = 0.05
MAX_TEMPERATURE = 20.0
_LOG_MIN, _LOG_MAX = math.log(MIN_TEMPERATURE), math.log(MAX_TEMPERATURE)


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor, max_iter: int = 200) -> float:
    """The T > 0 minimising the mean NLL of softmax(logits / T) for `targets`.

    Optimised over log T (so T stays positive) with L-BFGS in float64: the loss is smooth and
    one-dimensional, so a few dozen steps reach the minimum. T is kept within
    [`MIN_TEMPERATURE`, `MAX_TEMPERATURE`]: when the dev split is perfectly separated (a tiny
    one can be) the loss only falls as T shrinks, and has no minimum to find.
    """
    if logits.ndim != 2 or logits.size(0) != targets.numel() or logits.size(0) == 0:
        raise ValueError("need logits (N, C) and N targets, N > 0")
    logits = logits.detach().double()
    targets = targets.detach().long()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        bounded = log_t.clamp(_LOG_MIN, _LOG_MAX)
        loss = torch.nn.functional.cross_entropy(logits / bounded.exp(), targets)
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    temperature = float(log_t.detach().clamp(_LOG_MIN, _LOG_MAX).exp())
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature fitting diverged ({temperature})")
    return temperature


def raw_logits(
    model: SentimentRNN, ids: Sequence[Sequence[int]], batch_size: int = 512
) -> torch.Tensor:
    """Logits (N, C) of every text before any temperature, in the order of `ids`.

    The model's temperature is set to 1 for the pass and restored after it: the same logits
    whether or not the model was calibrated before, so calibrating twice gives one T.
    """
    model.eval()
    kept = model.config.temperature
    model.set_temperature(1.0)
    try:
        with torch.inference_mode():
            out = torch.empty(len(ids), model.config.num_labels)
            order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                batch, lengths = pad_ids([ids[i] for i in chunk], model.config.pad_id)
                out[torch.tensor(chunk)] = model(batch, lengths).float()
    finally:
        model.set_temperature(kept)
    return out


@dataclass(frozen=True)
class Measured:
    """One labelled set's probabilities before and after calibration (rows of floats)."""

    targets: list[int]
    before: list[list[float]]
    after: list[list[float]]

    def card(self) -> dict[str, float]:
        before = calibration_metrics(self.before, self.targets)
        after = calibration_metrics(self.after, self.targets)
        return {
            f"{measure}_{when}": figures[measure]
            for measure in ("ece", "nll", "brier")
            for when, figures in (("before", before), ("after", after))
        }


def fit_and_apply(
    model: SentimentRNN,
    dev: tuple[Sequence[Sequence[int]], Sequence[int]],
    evaluations: Mapping[str, tuple[Sequence[Sequence[int]], Sequence[int]]],
) -> tuple[dict[str, Any], dict[str, Measured]]:
    """Fit T on `dev` (token ids, label indices), set it on `model`, and measure each set of
    `evaluations` before and after; returns the card's `calibration` section and the figures.

    Any temperature the model already had is replaced: the fit starts from the raw logits.
    """
    dev_ids, dev_targets = dev
    if not dev_ids:
        raise DataError("no dev split to fit the temperature on (dev_fraction is 0)")
    temperature = fit_temperature(raw_logits(model, dev_ids), torch.tensor(list(dev_targets)))
    measured: dict[str, Measured] = {}
    for name, (ids, targets) in evaluations.items():
        if not ids:
            continue  # an empty test split: nothing to measure
        logits = raw_logits(model, ids)
        measured[name] = Measured(
            list(targets),
            torch.softmax(logits, dim=-1).tolist(),
            torch.softmax(logits / temperature, dim=-1).tolist(),
        )
    model.set_temperature(temperature)
    section: dict[str, Any] = {
        "method": METHOD,
        "temperature": round(temperature, 6),
        "fitted_on": "dev",
        **{name: figures.card() for name, figures in measured.items()},
    }
    return section, measured


def reviews_for(labels: Sequence[str]) -> list[tuple[str, str]] | None:
    """The handwritten review set as (text, label), or None when its labels are not the model's."""
    examples = load_file(REVIEWS, text_field="text", label_field="label").examples
    if not {example.label for example in examples} <= set(labels):
        return None
    return [(example.text, example.label) for example in examples]


def plot_files(out: Path, measured: Mapping[str, Measured]) -> list[str]:
    """The reliability diagram of the test split (before/after) written into `out`."""
    from training.plots import plot_reliability  # noqa: PLC0415

    test = measured.get("test")
    if test is None:
        return []
    plot_reliability(test.before, test.after, test.targets, out / RELIABILITY_PLOT)
    return [RELIABILITY_PLOT]


def calibrate_checkpoint(model_dir: Path) -> dict[str, Any]:
    """Fit the temperature of an existing checkpoint on its own dev split and rewrite it.

    The dev and test splits are rebuilt from the seed, fractions and data recorded in the card
    (the default corpus must be byte-identical to the one it was split from). The new version
    is written next to `model_dir` and renamed over it, so a reader never sees half of one.
    Returns the new `calibration` section.
    """
    from training.train import encode, load_corpus, split_examples  # noqa: PLC0415

    loaded = checkpoint.load_checkpoint(model_dir)
    recorded = loaded.card.get("training", {}).get("config")
    if not isinstance(recorded, dict):
        raise DataError(f"{model_dir}: the model card records no training config to split by")
    config = TrainConfig.from_card(recorded)
    corpus = load_corpus(config)
    expected = loaded.card.get("data", {}).get("sha256")
    if expected not in (None, corpus.sha256):
        raise DataError(f"{corpus.source}: differs from the data this model was split from")
    split = split_examples(corpus.examples, config)
    index = {label: i for i, label in enumerate(loaded.labels)}
    foreign = sorted({e.label for e in corpus.examples} - set(index))
    if foreign:
        raise DataError(f"{corpus.source}: labels {foreign} are not among {loaded.labels}")

    def encoded(examples: Sequence[Any]) -> tuple[list[list[int]], list[int]]:
        data = encode(examples, loaded.vocab, index, config.max_tokens, use_weights=False)
        return data.ids, data.labels

    evaluations = {"test": encoded(split.test)}
    reviews = reviews_for(loaded.labels)
    if reviews is not None:
        evaluations[REVIEWS_KEY] = _encode_texts(loaded, reviews, config.max_tokens)
    model = loaded.model
    section, measured = fit_and_apply(model, encoded(split.dev), evaluations)
    card = dict(loaded.card)
    card["calibration"] = section
    if isinstance(card.get("architecture"), dict):
        card["architecture"] = model.config.to_json()

    manifest = checkpoint.verify_manifest(loaded.path)
    kept = [
        name
        for name in manifest["files"]
        if name not in checkpoint.REQUIRED_FILES and name != RELIABILITY_PLOT
    ]
    target = Path(model_dir)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.calibrating-", dir=loaded.path.parent))
    try:
        for name in kept:
            shutil.copy2(loaded.path / name, staging / name)
        plots = plot_files(staging, measured)
        checkpoint.save_checkpoint(
            staging,
            model=model,
            labels=loaded.labels,
            vocab=loaded.vocab,
            card=card,
            extra_files=[*kept, *plots],
        )
        staging.chmod(0o755)  # mkdtemp makes it private; a checkpoint is read by services
        _replace(staging, loaded.path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return section


def _encode_texts(
    loaded: checkpoint.Checkpoint, examples: Sequence[tuple[str, str]], max_tokens: int
) -> tuple[list[list[int]], list[int]]:
    from training.tokenizer import tokenize  # noqa: PLC0415

    vocab = loaded.vocab
    ids = [vocab.encode(tokenize(text))[:max_tokens] or [vocab.unk_id] for text, _ in examples]
    return ids, [loaded.labels.index(label) for _, label in examples]


def _replace(staging: Path, version: Path) -> None:
    """Put `staging` where `version` (a real directory) is: rename the old one aside first."""
    aside = version.parent / f".{version.name}.uncalibrated-{os.getpid()}"
    version.rename(aside)
    try:
        staging.rename(version)
    except OSError:
        aside.rename(version)
        raise
    shutil.rmtree(aside)
