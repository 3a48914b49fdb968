"""The training run: data -> vocabulary -> model -> loop with early stopping -> checkpoint.

Every function takes what it uses as parameters; `train_model` wires them together from a
`TrainConfig`. Seeds are set once there, and with deterministic algorithms on, the same
config, data and thread count give the same checkpoint bit for bit.

Under `torchrun` the same code trains with DistributedDataParallel: the functions that take a
`dist` (a `training.distributed.DistributedContext`) shard batches and evaluation across the
processes and reduce the results; without one they run as a single process, unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from training import checkpoint
from training.calibration import REVIEWS_KEY, Measured, fit_and_apply, reviews_for
from training.calibration import plot_files as calibration_plots
from training.config import TrainConfig
from training.corpora import load_default_corpus
from training.data import (
    EVAL_DATA,
    Corpus,
    DataError,
    Example,
    Split,
    load_file,
    stratified_split,
)
from training.distributed import SINGLE_PROCESS, DistributedContext
from training.metrics import classification_metrics
from training.model import ModelConfig, SentimentRNN, pad_ids
from training.tokenizer import Vocabulary, tokenize

log = logging.getLogger(__name__)

# ids, lengths, labels, weights; when distilling, the teacher's logits and whether each text's
# label counts (1) or it is a variant learnt from the teacher alone (0); else None, None
Batch = tuple[
    torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None
]


@dataclass
class Encoded:
    """A split turned into token ids, label indices and loss weights, and the teacher's
    logits for each text when the student learns from one (`training.teacher`)."""

    ids: list[list[int]]
    labels: list[int]
    weights: list[float]
    teacher: list[list[float]] | None = None
    labelled: list[float] | None = None  # 0 for a variant without a label (training.augment)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class History:
    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    best_dev_macro_f1: float = -1.0


def load_corpus(config: TrainConfig) -> Corpus:
    if config.data == "default":
        return load_default_corpus()
    return load_file(
        Path(config.data),
        text_field=config.text_field,
        label_field=config.label_field,
        weight_field=config.weight_field,
    )


def split_examples(examples: Sequence[Example], config: TrainConfig) -> Split:
    """The train/dev/test split a config makes; seeded, so evaluation can rebuild it later."""
    return stratified_split(
        examples,
        seed=config.split_seed if config.split_seed is not None else config.seed,
        dev_fraction=config.dev_fraction,
        test_fraction=config.test_fraction,
    )


def order_labels(labels: Sequence[str]) -> tuple[str, ...]:
    """negative < neutral < positive when those are the labels, otherwise sorted."""
    known = ("negative", "neutral", "positive")
    present = set(labels)
    if present <= set(known):
        return tuple(label for label in known if label in present)
    return tuple(sorted(present))


def build_vocabulary(
    train: Sequence[Example], config: TrainConfig, pretrained_words: Sequence[str] = ()
) -> Vocabulary:
    """Corpus tokens seen `min_count` times (train split only), plus pretrained whole words."""
    counts: Counter[str] = Counter()
    for example in train:
        counts.update(token.norm for token in tokenize(example.text))
    return Vocabulary.build(
        dict(counts),
        min_count=config.min_count,
        max_size=config.max_vocab,
        extra=[word for word in pretrained_words if counts[word] < config.min_count],
    )


def encode(
    examples: Sequence[Example],
    vocab: Vocabulary,
    label_index: dict[str, int],
    max_tokens: int,
    use_weights: bool,
) -> Encoded:
    ids, labels, weights = [], [], []
    for example in examples:
        token_ids = vocab.encode(tokenize(example.text))[:max_tokens] or [vocab.unk_id]
        ids.append(token_ids)
        labels.append(label_index[example.label])
        weights.append(example.weight if use_weights else 1.0)
    return Encoded(ids, labels, weights)


def class_weights(labels: Sequence[int], num_labels: int, scheme: str) -> torch.Tensor:
    """Loss weight per class. "balanced" makes each class count as if classes were equal in
    size, so the model does not learn the corpus' 2.3:1 negative:positive prior and carry it
    to balanced text elsewhere; "sqrt" goes half way; "none" keeps the corpus prior."""
    counts = torch.bincount(torch.tensor(labels), minlength=num_labels).float().clamp(min=1)
    if scheme == "none":
        return torch.ones(num_labels)
    balanced = counts.sum() / (num_labels * counts)
    return balanced.sqrt() if scheme == "sqrt" else balanced


def length_batches(
    lengths: Sequence[int], batch_size: int, rng: random.Random | None
) -> list[list[int]]:
    """Index batches of items of similar length (less padding), in random order when `rng` is
    given (the items are shuffled first, then the batches)."""
    order = list(range(len(lengths)))
    if rng is not None:
        rng.shuffle(order)
    # Sort within windows of 50 batches: lengths group together, yet epochs still differ.
    window = batch_size * 50
    chunks: list[list[int]] = []
    for start in range(0, len(order), window):
        block = sorted(order[start : start + window], key=lengths.__getitem__)
        chunks.extend(block[i : i + batch_size] for i in range(0, len(block), batch_size))
    if rng is not None:
        rng.shuffle(chunks)
    return chunks


def make_batches(data: Encoded, batch_size: int, rng: random.Random | None) -> Iterator[Batch]:
    """Batches of similar length (less padding), in random order when `rng` is given."""
    for chunk in length_batches([len(ids) for ids in data.ids], batch_size, rng):
        ids, lengths = pad_ids([data.ids[i] for i in chunk])
        yield (
            ids,
            lengths,
            torch.tensor([data.labels[i] for i in chunk]),
            torch.tensor([data.weights[i] for i in chunk]),
            None if data.teacher is None else torch.tensor([data.teacher[i] for i in chunk]),
            None if data.labelled is None else torch.tensor([data.labelled[i] for i in chunk]),
        )


def weighted_loss(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, per_class: torch.Tensor
) -> torch.Tensor:
    """Cross-entropy weighted by class and by example, normalised by the total weight (0 for a
    batch whose weights are all 0: text variants that only the teacher labels)."""
    total = per_class[targets] * weights  # (B,)
    losses = nn.functional.cross_entropy(logits, targets, reduction="none")  # (B,)
    return (losses * total).sum() / total.sum().clamp(min=1e-12)


def distillation_loss(
    logits: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor, temperature: float
) -> torch.Tensor:
    """KL divergence from the teacher's softened distribution to the student's, both at
    `temperature`, times temperature² (so its gradients keep their scale as the temperature
    changes), weighted by example like the label loss."""
    student = nn.functional.log_softmax(logits / temperature, dim=-1)
    target = nn.functional.log_softmax(teacher / temperature, dim=-1)
    divergence = nn.functional.kl_div(student, target, reduction="none", log_target=True)
    return (divergence.sum(dim=-1) * weights).sum() / weights.sum() * temperature**2


def drop_tokens(ids: torch.Tensor, rate: float, unk_id: int, pad_id: int) -> torch.Tensor:
    """Replace a random `rate` of the real tokens by <unk>: the model learns to read the
    whole text instead of leaning on one word, and sees <unk> in context as it will in use."""
    if rate <= 0.0:
        return ids
    mask = (torch.rand(ids.shape) < rate) & (ids != pad_id)
    return ids.masked_fill(mask, unk_id)


def train_one_epoch(
    model: SentimentRNN,
    batches: Sequence[Batch],
    optimizer: torch.optim.Optimizer,
    per_class: torch.Tensor,
    clip_grad_norm: float,
    progress: Callable[[float], None],
    token_dropout: float = 0.0,
    *,
    network: nn.Module | None = None,
    distill_weight: float = 0.0,
    distill_temperature: float = 1.0,
) -> float:
    """One pass over `batches`; returns the mean training loss per example.

    `network` is what the batches go through, `model` wrapped in DistributedDataParallel when
    training on several processes (its backward pass averages the gradients across them).
    Batches that carry the teacher's logits mix the two losses: `distill_weight` of the
    distillation loss, the rest of the label loss."""
    forward = network if network is not None else model
    forward.train()
    device = per_class.device
    running, seen = 0.0, 0
    for batch_ids, lengths, batch_targets, batch_weights, batch_teacher, labelled in batches:
        ids = drop_tokens(batch_ids, token_dropout, Vocabulary.unk_id, model.config.pad_id)
        ids, targets, weights = ids.to(device), batch_targets.to(device), batch_weights.to(device)
        optimizer.zero_grad(set_to_none=True)
        logits = forward(ids, lengths)
        label_weights = weights if labelled is None else weights * labelled.to(device)
        loss = weighted_loss(logits, targets, label_weights, per_class)
        if batch_teacher is not None and distill_weight > 0.0:
            soft = distillation_loss(logits, batch_teacher.to(device), weights, distill_temperature)
            loss = (1.0 - distill_weight) * loss + distill_weight * soft
        loss.backward()  # type: ignore[no-untyped-call]
        # Backpropagation through time multiplies one Jacobian per step: gradients can
        # explode (or vanish) over long texts. Clipping the norm bounds each update, so one
        # unlucky batch cannot throw the weights far away; the gated cells (LSTM, GRU) are
        # what address the vanishing side.
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        optimizer.step()
        running += loss.item() * len(targets)
        seen += len(targets)
        progress(running / seen)
    return running / max(seen, 1)


@torch.inference_mode()
def predict_indices(model: SentimentRNN, data: Encoded, batch_size: int = 512) -> list[int]:
    model.eval()
    predictions = [0] * len(data)
    order = sorted(range(len(data)), key=lambda i: len(data.ids[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, lengths = pad_ids([data.ids[i] for i in chunk])
        logits = model(ids.to(model.embedding.weight.device), lengths)
        for index, guess in zip(chunk, logits.argmax(dim=-1).tolist(), strict=True):
            predictions[index] = guess
    return predictions


def evaluate_encoded(
    model: SentimentRNN,
    data: Encoded,
    labels: Sequence[str],
    dist: DistributedContext = SINGLE_PROCESS,
) -> dict[str, Any]:
    """Metrics over all of `data`. Distributed, each rank predicts its share and the shares
    are gathered: every rank then computes the same metrics over the whole set."""
    if not dist.enabled:
        return classification_metrics(data.labels, predict_indices(model, data), labels)
    share = dist.indices(len(data))
    guesses = predict_indices(model, subset(data, share))
    return classification_metrics(data.labels, dist.gather(len(data), share, guesses), labels)


def subset(data: Encoded, indices: Sequence[int]) -> Encoded:
    return Encoded(
        [data.ids[i] for i in indices],
        [data.labels[i] for i in indices],
        [data.weights[i] for i in indices],
        None if data.teacher is None else [data.teacher[i] for i in indices],
        None if data.labelled is None else [data.labelled[i] for i in indices],
    )


def fit(
    model: SentimentRNN,
    train: Encoded,
    dev: Encoded,
    labels: Sequence[str],
    config: TrainConfig,
    rng: random.Random,
    dist: DistributedContext = SINGLE_PROCESS,
) -> History:
    """Train with AdamW until dev macro-F1 stops improving; leaves the best weights loaded.

    Distributed (`dist`), `model` must already be on `dist.device`; every rank must call this
    with the same data and an `rng` in the same state, and leaves with the same weights."""
    per_class = class_weights(train.labels, len(labels), config.class_weighting).to(dist.device)
    # Pretrained embeddings, when trained at all, move slowly: words the corpus never shows
    # keep their pretrained place, so the words it does show must not drift far from them.
    embedding_scale = config.embedding_lr_scale if config.pretrained != "none" else 1.0
    rest = [p for n, p in model.named_parameters() if p.requires_grad and n != "embedding.weight"]
    groups: list[dict[str, Any]] = [{"params": rest, "lr": config.learning_rate}]
    if model.embedding.weight.requires_grad:
        groups.append(
            {
                "params": [model.embedding.weight],
                "lr": config.learning_rate * embedding_scale,
                "weight_decay": 0.0,
            }
        )
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    network = dist.wrap(model)
    if dist.enabled:
        # Dropout and word dropout draw from torch's generator: one stream per rank, or every
        # rank would drop the same positions of its (different) batches.
        torch.manual_seed(config.seed + dist.rank)
    history = History()
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    stale = 0
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        # The same `rng` on every rank gives every rank the same epoch order; each takes its share.
        batches = dist.shard(list(make_batches(train, config.batch_size, rng)))
        bar = tqdm(
            total=len(batches),
            desc=f"epoch {epoch}/{config.epochs}",
            unit="batch",
            disable=not dist.is_main,
        )

        def progress(loss: float, bar: tqdm = bar) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)

        train_loss = train_one_epoch(
            model,
            batches,
            optimizer,
            per_class,
            config.clip_grad_norm,
            progress,
            config.token_dropout,
            network=network,
            distill_weight=config.distill_weight if train.teacher is not None else 0.0,
            distill_temperature=config.distill_temperature,
        )
        if dist.enabled:
            examples = float(sum(len(batch[2]) for batch in batches))
            loss_sum, example_sum = dist.sum(train_loss * examples, examples)
            train_loss = loss_sum / example_sum
        dev_metrics = evaluate_encoded(model, dev, labels, dist)
        dev_loss = _mean_weighted_loss(model, dev, per_class, dist)
        bar.set_postfix(
            loss=f"{train_loss:.4f}",
            dev_f1=f"{dev_metrics['macro_f1']:.4f}",
            dev_acc=f"{dev_metrics['accuracy']:.4f}",
        )
        bar.close()
        record = {
            "epoch": epoch,
            "train_loss": round(train_loss, 5),
            "dev_loss": round(dev_loss, 5),
            "dev_accuracy": dev_metrics["accuracy"],
            "dev_macro_f1": dev_metrics["macro_f1"],
            "learning_rate": optimizer.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - started, 2),
        }
        history.epochs.append(record)
        # The metrics are equal on every rank already; taking rank 0's verdict makes sure.
        if dist.agree(dev_metrics["macro_f1"] > history.best_dev_macro_f1):
            history.best_dev_macro_f1 = dev_metrics["macro_f1"]
            history.best_epoch = epoch
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
            stale = 0
        else:
            stale += 1
            # Smaller steps once dev stops improving: the dev score then settles instead of
            # oscillating from epoch to epoch.
            for group in optimizer.param_groups:
                group["lr"] *= config.lr_decay
            if stale >= config.patience:
                log.info("early stop after epoch %d (best %d)", epoch, history.best_epoch)
                break
    model.load_state_dict(best_state)
    model.eval()
    dist.check_same("the trained weights", weights_digest(model))
    return history


def weights_digest(model: nn.Module) -> str:
    """sha256 of every tensor in the state dict, in order (equal weights, equal digest)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(
            tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    return digest.hexdigest()


@torch.inference_mode()
def _mean_weighted_loss(
    model: SentimentRNN,
    data: Encoded,
    per_class: torch.Tensor,
    dist: DistributedContext = SINGLE_PROCESS,
) -> float:
    model.eval()
    if dist.enabled:
        data = subset(data, dist.indices(len(data)))
    device = per_class.device
    total, weight = 0.0, 0.0
    for ids, lengths, batch_targets, batch_weights, _, _ in make_batches(data, 512, None):
        targets, weights = batch_targets.to(device), batch_weights.to(device)
        example_weight = per_class[targets] * weights
        logits = model(ids.to(device), lengths)
        losses = nn.functional.cross_entropy(logits, targets, reduction="none")
        total += float((losses * example_weight).sum())
        weight += float(example_weight.sum())
    total, weight = dist.sum(total, weight)
    return total / weight if weight else math.nan


def seed_everything(seed: int, threads: int) -> random.Random:
    """Seed every generator once; deterministic kernels so reruns reproduce the checkpoint."""
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    return random.Random(seed)


def library_versions() -> dict[str, str]:
    import safetensors  # noqa: PLC0415

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "safetensors": safetensors.__version__,
    }


def train_model(
    config: TrainConfig,
    out: Path,
    *,
    name: str | None = None,
    command: Sequence[str] | None = None,
    extra_card: dict[str, Any] | None = None,
    dist: DistributedContext = SINGLE_PROCESS,
) -> dict[str, Any]:
    """Run one training from `config` and write the checkpoint to `out`; returns the card.

    Distributed, every rank calls this; they train together and only rank 0 writes `out` (the
    others return once it is written, with the same card less the baseline, fitted by rank 0)."""
    started = time.perf_counter()
    rng = seed_everything(config.seed, config.threads)
    corpus = load_corpus(config)
    dist.check_same("the corpus sha256 (each node must read the same data)", corpus.sha256)
    split = split_examples(corpus.examples, config)
    labels = order_labels([example.label for example in corpus.examples])
    label_index = {label: index for index, label in enumerate(labels)}

    table = None
    pretrained_words: Sequence[str] = ()
    if config.pretrained == "minilm":
        from training.embeddings import WordPieceTable, model_directory  # noqa: PLC0415

        table = WordPieceTable(model_directory())
        pretrained_words = table.whole_words[: config.pretrained_vocab]
    vocab = build_vocabulary(split.train, config, pretrained_words)

    model_config = ModelConfig(
        vocab_size=len(vocab),
        num_labels=len(labels),
        cell=config.cell,
        embedding_dim=config.embedding_dim,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        bidirectional=config.bidirectional,
        dropout=config.dropout,
        pad_id=vocab.pad_id,
    )
    model = SentimentRNN(model_config)
    pretrained_rows = 0
    if table is not None:
        from training.embeddings import pretrained_embeddings  # noqa: PLC0415

        vectors, pretrained_rows = pretrained_embeddings(
            vocab.itos, config.embedding_dim, table, config.seed
        )
        with torch.no_grad():
            model.embedding.weight.copy_(vectors)
        model.embedding.weight.requires_grad_(not config.freeze_embeddings)
    # The stored embedding table is float16; train on exactly the values that will be saved.
    checkpoint.round_half_precision(model)

    train_data, dev_data = (
        encode(part, vocab, label_index, config.max_tokens, config.use_example_weights)
        for part in (split.train, split.dev)
    )
    distillation = _distillation(config, split, labels, train_data, vocab, label_index)
    history = fit(model.to(dist.device), train_data, dev_data, labels, config, rng, dist)
    model.cpu()
    checkpoint.round_half_precision(model)
    training_seconds = time.perf_counter() - started

    # Judge the saved model on every test example exactly as it is, weight 1.
    test_plain = encode(split.test, vocab, label_index, config.max_tokens, use_weights=False)
    # Last step of the model itself: fit the temperature on dev (every rank, same result).
    calibration, calibrated = _calibrate(model, dev_data, test_plain, labels, vocab, config)
    metrics = {
        "dev": evaluate_encoded(model, dev_data, labels, dist),
        "test": evaluate_encoded(model, test_plain, labels, dist),
    }
    metrics.update(out_of_domain_metrics(model, vocab, labels))
    if config.baseline and dist.is_main:
        from training.baseline import tfidf_logistic_regression  # noqa: PLC0415

        metrics["baseline_tfidf_logreg"] = tfidf_logistic_regression(
            split.train, split.dev, split.test, labels, config.class_weighting
        )
    unseen = sum(1 for token in tokenize_all(split.test) if vocab.lookup(token) == vocab.unk_id)
    card: dict[str, Any] = {
        "name": name or out.name,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "description": (
            f"{model_config.num_layers}-layer {'bidirectional ' if config.bidirectional else ''}"
            f"{config.cell.upper()} sentiment classifier ({', '.join(labels)})"
        ),
        "command": list(command) if command else None,
        "labels": list(labels),
        "architecture": model.config.to_json(),
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": {
            "source": corpus.source,
            "sha256": corpus.sha256,
            "preparation": corpus.report,
            "split": split.sizes(),
            "split_seed": config.split_seed if config.split_seed is not None else config.seed,
        },
        "vocabulary": {
            "size": len(vocab),
            "pretrained_rows": pretrained_rows,
            "test_tokens_unknown": unseen,
        },
        "training": {
            "config": config.to_json(),
            "seed": config.seed,
            "epochs_run": len(history.epochs),
            "best_epoch": history.best_epoch,
            "history": history.epochs,
            "seconds": round(training_seconds, 1),
            "threads": config.threads,
            # processes that trained together (torchrun); effective batch = world_size * batch
            "distributed": dist.describe(),
            "class_weights": [
                round(w, 4)
                for w in class_weights(
                    train_data.labels, len(labels), config.class_weighting
                ).tolist()
            ],
        },
        "metrics": metrics,
        "calibration": calibration,
        "distillation": distillation,
        "library_versions": library_versions(),
    }
    if extra_card:
        card.update(extra_card)
    if dist.is_main:
        extra_files = _plots(out, history, metrics["test"], labels)
        if extra_files:
            extra_files += calibration_plots(out, calibrated)
        checkpoint.save_checkpoint(
            out, model=model, labels=labels, vocab=vocab, card=card, extra_files=extra_files
        )
    dist.barrier()  # no rank returns before the checkpoint exists
    return card


def _distillation(
    config: TrainConfig,
    split: Split,
    labels: Sequence[str],
    train: Encoded,
    vocab: Vocabulary,
    label_index: dict[str, int],
) -> dict[str, Any] | None:
    """Attach the teacher's logits to `train` when the config names a teacher; what the model
    card records about them (None without a teacher). DataError when they do not fit."""
    if config.teacher == "none":
        return None
    if config.teacher == "default" and config.data != "default":
        log.info("no teacher: the shipped teacher's logits are for the default corpus only")
        return None
    if not 0.0 <= config.distill_weight <= 1.0:
        raise DataError(f"distill_weight must be between 0 and 1, got {config.distill_weight}")
    if not (math.isfinite(config.distill_temperature) and config.distill_temperature > 0):
        raise DataError(f"distill_temperature must be positive, got {config.distill_temperature}")
    from training.teacher import teacher_targets  # noqa: PLC0415

    directory = DEFAULT_TEACHER if config.teacher == "default" else Path(config.teacher)
    try:
        rows, extra, extra_rows, summary = teacher_targets(
            directory, split.train, labels, config.augment
        )
    except ValueError as error:
        raise DataError(str(error)) from error
    train.teacher = rows
    train.labelled = [1.0] * len(train)
    if extra:
        more = encode(extra, vocab, label_index, config.max_tokens, config.use_example_weights)
        train.ids += more.ids
        train.labels += more.labels
        train.weights += more.weights
        train.teacher += extra_rows
        train.labelled += [0.0] * len(more)
    return {**summary, "weight": config.distill_weight, "temperature": config.distill_temperature}


def _calibrate(
    model: SentimentRNN,
    dev: Encoded,
    test: Encoded,
    labels: Sequence[str],
    vocab: Vocabulary,
    config: TrainConfig,
) -> tuple[dict[str, Any], dict[str, Measured]]:
    """Temperature scaling on dev, measured on test and (labels allowing) the handwritten
    reviews; see `training.calibration`. The argmax, hence every metric above, is unchanged.
    Without a dev split (`dev_fraction = 0`) the scores stay as trained: T = 1."""
    if not dev.labels:
        return {"method": "none", "temperature": 1.0, "reason": "no dev split"}, {}
    evaluations = {"test": (test.ids, test.labels)}
    reviews = reviews_for(labels)
    if reviews is not None:
        index = {label: i for i, label in enumerate(labels)}
        encoded = encode(
            [Example(text, label) for text, label in reviews],
            vocab,
            index,
            config.max_tokens,
            use_weights=False,
        )
        evaluations[REVIEWS_KEY] = (encoded.ids, encoded.labels)
    return fit_and_apply(model, (dev.ids, dev.labels), evaluations)


# The hand-written sets (training.data.EVAL_DATA) every model card reports.
OUT_OF_DOMAIN_SETS = ("reviews_handwritten", "ood_handwritten")
# The shipped teacher's logits for the default corpus's training split (training/teacher.py).
DEFAULT_TEACHER = Path(__file__).resolve().parent / "teacher_logits"


def out_of_domain_metrics(
    model: SentimentRNN, vocab: Vocabulary, labels: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Metrics on each hand-written set whose labels are the model's (none for other labels),
    with accuracy per domain where the set records one."""
    found: dict[str, dict[str, Any]] = {}
    label_index = {label: index for index, label in enumerate(labels)}
    for name in OUT_OF_DOMAIN_SETS:
        path = EVAL_DATA / f"{name}.jsonl"
        if not path.is_file():
            continue
        examples = load_file(path).examples
        if {e.label for e in examples} != set(labels):
            continue
        data = encode(examples, vocab, label_index, max_tokens=10_000, use_weights=False)
        guesses = predict_indices(model, data)
        result = classification_metrics(data.labels, guesses, labels)
        domains = _domains(path)
        if domains:
            right: Counter[str] = Counter()
            seen: Counter[str] = Counter()
            for example, truth, guess in zip(examples, data.labels, guesses, strict=True):
                domain = domains.get(example.text, "unknown")
                seen[domain] += 1
                right[domain] += int(truth == guess)
            result["accuracy_by_domain"] = {
                domain: round(right[domain] / seen[domain], 4) for domain in sorted(seen)
            }
        found[name] = result
    return found


def _domains(path: Path) -> dict[str, str]:
    """text -> domain for a JSONL set whose lines carry a `domain` (else empty)."""
    found: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            if isinstance(record.get("domain"), str):
                found[record["text"]] = record["domain"]
    return found


def tokenize_all(examples: Sequence[Example]) -> Iterator[str]:
    for example in examples:
        for token in tokenize(example.text):
            yield token.norm


def _plots(
    out: Path, history: History, test_metrics: dict[str, Any], labels: Sequence[str]
) -> list[str]:
    """Learning curves and confusion matrix as PNG; skipped (with a warning) without matplotlib."""
    try:
        from training.plots import plot_confusion, plot_history  # noqa: PLC0415
    except ImportError as error:  # pragma: no cover - matplotlib is in the train extra
        print(f"warning: no plots ({error})", file=sys.stderr)
        return []
    out.mkdir(parents=True, exist_ok=True)
    plot_history(history.epochs, out / "learning_curves.png")
    plot_confusion(
        test_metrics["confusion_matrix"]["rows_true_columns_predicted"],
        labels,
        out / "confusion_matrix.png",
    )
    return ["learning_curves.png", "confusion_matrix.png"]
