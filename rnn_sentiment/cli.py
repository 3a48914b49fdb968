"""`rnn-sentiment`: one command for everything the project does.

    rnn-sentiment serve     the HTTP service (`python -m app`)
    rnn-sentiment train     train a checkpoint (`python -m training train`)
    rnn-sentiment evaluate  score a checkpoint on labelled data (`python -m training evaluate`)
    rnn-sentiment calibrate calibrate a checkpoint's scores (`python -m training calibrate`)
    rnn-sentiment compare   plain RNN vs LSTM vs GRU (`python -m training compare`)
    rnn-sentiment predict   score a file or stdin offline (`rnn_sentiment.predict`)
    rnn-sentiment client    call a running service (the `rnn_sentiment_client` package)

This module only dispatches: each subcommand's options, help and behaviour are those of the
module that implements it, imported when the subcommand runs. So `rnn-sentiment --help` loads
neither torch nor the service, and the service and the trainer stay independent of each other
(a serving install has no training extras, a client install has neither).

Expected mistakes end in one line on stderr, `rnn-sentiment: ...`, and status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

PROG = "rnn-sentiment"
USAGE_ERROR = 2
# Packages the training commands need beyond the service's own (the `train` extra).
TRAIN_EXTRA = frozenset({"sklearn", "matplotlib", "tqdm"})


def _serve(argv: list[str]) -> int:
    from app.__main__ import main  # noqa: PLC0415

    return main(argv, prog=f"{PROG} serve")


def _training(command: str) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        try:
            from training.__main__ import main  # noqa: PLC0415

            return main([command, *argv], prog=PROG)
        except ModuleNotFoundError as error:
            if (error.name or "").partition(".")[0] not in TRAIN_EXTRA:
                raise
            return _refuse(
                f"{command} needs the training extras ({error.name} is missing): "
                "pip install -e '.[train]' (or make install-train)"
            )

    return run


def _predict(argv: list[str]) -> int:
    from rnn_sentiment.predict import main  # noqa: PLC0415

    return main(argv, prog=f"{PROG} predict")


def _client(argv: list[str]) -> int:
    try:
        from rnn_sentiment_client import cli  # noqa: PLC0415
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] != "rnn_sentiment_client":
            raise
        return _refuse(
            "the client is not installed: pip install ./clients/python (or make install-client)"
        )
    return cli.main(argv, prog=f"{PROG} client")


# name -> (one-line summary, runner); the order of `rnn-sentiment --help`.
COMMANDS: dict[str, tuple[str, Callable[[list[str]], int]]] = {
    "serve": ("run the HTTP service (the same as python -m app)", _serve),
    "train": ("train a model and write a checkpoint directory", _training("train")),
    "evaluate": ("score a checkpoint on a labelled CSV/JSONL file", _training("evaluate")),
    "calibrate": (
        "calibrate a checkpoint's probabilities in place (temperature scaling)",
        _training("calibrate"),
    ),
    "compare": ("plain RNN vs LSTM vs GRU on the same data, several seeds", _training("compare")),
    "predict": ("score a file or stdin offline with a checkpoint (JSON lines out)", _predict),
    "client": ("call a running service (predict, stream, tokenize, explain, ...)", _client),
}


def build_parser() -> argparse.ArgumentParser:
    width = max(map(len, COMMANDS))
    listing = "\n".join(f"  {name:<{width}}  {summary}" for name, (summary, _) in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=f"{PROG} [-h] [--version] COMMAND [ARGS...]",
        description=f"Sentiment analysis with a recurrent network.\n\ncommands:\n{listing}",
        epilog=f"Each command has its own help: {PROG} COMMAND --help",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "command", choices=list(COMMANDS), metavar="COMMAND", help="one of the commands above"
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `rnn-sentiment ARGS` (default: the process's arguments); the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments and arguments[0] in COMMANDS:
        command, rest = arguments[0], arguments[1:]
    else:
        # Help, --version, or a missing or unknown command: argparse prints and exits.
        parser = build_parser()
        if not arguments:
            parser.error(f"a command is required: one of {', '.join(COMMANDS)}")
        parsed = parser.parse_args(arguments)
        command, rest = parsed.command, parsed.args
    return COMMANDS[command][1](rest)


def _refuse(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return USAGE_ERROR


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("rnn-sentiment")
    except PackageNotFoundError:
        return "unknown"
