"""The `rnn-sentiment-client` command line: call a running service from a shell.

    rnn-sentiment-client predict "Not bad at all!"
    printf 'great phone\nawful battery\n' | rnn-sentiment-client predict   # one per line
    rnn-sentiment-client --json stream --chunk-size 10 "The plot was predictable"
    rnn-sentiment-client models                       # the models served; * the default
    rnn-sentiment-client --model tweets predict "Not bad at all!"     # a model by name

Subcommands `predict` (no text: one text per stdin line, sent in batches), `stream`,
`tokenize`, `explain`, `model`, `models`, `ready`. The service's address and key come from
`--url` / `--api-key` or `RNN_SENTIMENT_URL` / `RNN_SENTIMENT_API_KEY`; `--model` (or
`RNN_SENTIMENT_MODEL`) names the model that answers, else the service's default does. Also
`python -m rnn_sentiment_client`, and `main(argv, prog)` for a command line that embeds this
one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TextIO

from rnn_sentiment_client._base import DEFAULT_TIMEOUT_S, DEFAULT_URL
from rnn_sentiment_client._models import Architecture, Prediction
from rnn_sentiment_client.client import SentimentClient
from rnn_sentiment_client.errors import APIConnectionError, APIError


def _format_probabilities(probabilities: dict[str, float]) -> str:
    return " ".join(f"{label}={p:.3f}" for label, p in probabilities.items())


def _print_prediction(
    out: TextIO, label: str, score: float, probabilities: dict[str, float], text: str
) -> None:
    out.write(f"{label:<9} {score:.3f}  {_format_probabilities(probabilities)}  {text}\n")


def _stdin_texts(stdin: TextIO) -> Iterator[str]:
    for line in stdin:
        text = line.rstrip("\r\n")
        if text.strip():
            yield text


def _batches(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _cut(text: str, size: int) -> list[str]:
    return [text[start : start + size] for start in range(0, len(text), size)] or [""]


def _predict(args: argparse.Namespace, client: SentimentClient, out: TextIO, stdin: TextIO) -> int:
    texts: Iterable[str] = args.texts
    if not args.texts or args.texts == ["-"]:
        texts = _stdin_texts(stdin)
    for batch in _batches(texts, args.batch_size):
        # One text goes alone, so an error about it names `text`, not `texts.0`.
        threshold = args.min_confidence
        predictions: Sequence[Prediction] = (
            [client.predict(batch[0], model=args.model, min_confidence=threshold)]
            if len(batch) == 1
            else client.predict(batch, model=args.model, min_confidence=threshold).predictions
        )
        for text, prediction in zip(batch, predictions, strict=True):
            if args.json:
                line = {"text": text, **prediction.model_dump()}
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
            else:
                _print_prediction(
                    out, prediction.label, prediction.score, prediction.probabilities, text
                )
    return 0


def _stream(args: argparse.Namespace, client: SentimentClient, out: TextIO, stdin: TextIO) -> int:
    text = stdin.read() if args.text in (None, "-") else args.text
    for update in client.stream(_cut(text, args.chunk_size), model=args.model):
        if args.json:
            out.write(update.model_dump_json(exclude={"state"}) + "\n")
            continue
        read = " ".join(token.text for token in update.tokens)
        pending = " ".join(token.text for token in update.pending)
        prediction = update.prediction
        guess = "-" if prediction is None else f"{prediction.label} {prediction.score:.3f}"
        where = "final" if update.final else f"{update.position:>5}"
        words = "  ".join(part for part in (read, f"~{pending}" if pending else "") if part)
        out.write(f"{where}  {guess:<16}  {words}".rstrip() + "\n")
    return 0


def _tokenize(args: argparse.Namespace, client: SentimentClient, out: TextIO, _: TextIO) -> int:
    tokens = client.tokenize(args.text, model=args.model)
    if args.json:
        out.write(tokens.model_dump_json() + "\n")
        return 0
    for token in tokens.tokens:
        unknown = "  (unknown)" if token.oov else ""
        out.write(f"{token.start:>5}-{token.end:<5} {token.text!r} -> {token.norm}{unknown}\n")
    return 0


def _explain(args: argparse.Namespace, client: SentimentClient, out: TextIO, _: TextIO) -> int:
    explanation = client.explain(args.text, label=args.label, model=args.model)
    if args.json:
        out.write(explanation.model_dump_json(exclude_none=True) + "\n")
        return 0
    prediction = explanation.prediction
    _print_prediction(out, prediction.label, prediction.score, prediction.probabilities, args.text)
    out.write(f"attributions toward {explanation.label}:\n")
    gradients = explanation.integrated_gradients
    occlusion = explanation.occlusion
    for index, token in enumerate(explanation.tokens):
        ig = (
            ""
            if gradients is None
            else f"  integrated gradients {gradients.attributions[index]:+.3f}"
        )
        occ = "" if occlusion is None else f"  occlusion {occlusion.attributions[index]:+.3f}"
        out.write(f"  {token.text:<16}{ig}{occ}\n")
    return 0


def _shape(arch: Architecture) -> str:
    direction = "bidirectional" if arch.bidirectional else "unidirectional"
    return (
        f"{arch.cell}, {arch.num_layers} layer(s) of {arch.hidden_size} units, {direction}, "
        f"{arch.parameters} weights"
    )


def _model(args: argparse.Namespace, client: SentimentClient, out: TextIO, _: TextIO) -> int:
    if args.model is not None:
        # The card (GET /model) is the default model's; a named one is described by
        # GET /models/{name}, which has no vocabulary figures.
        summary = client.get_model(args.model)
        if args.json:
            out.write(summary.model_dump_json() + "\n")
            return 0
        if summary.architecture is None or summary.labels is None:
            reason = f" ({summary.reason})" if summary.reason else ""
            out.write(f"{summary.name}: {summary.status}{reason}\n")
            return 0
        out.write(
            f"{summary.name} {summary.version}: {_shape(summary.architecture)}; "
            f"labels {', '.join(summary.labels)}\n"
        )
        return 0
    card = client.model_info()
    if args.json:
        out.write(card.model_dump_json() + "\n")
        return 0
    out.write(
        f"{card.name} {card.version}: {_shape(card.architecture)}; "
        f"labels {', '.join(card.labels)}; vocabulary {card.vocab_size}\n"
    )
    return 0


def _models(args: argparse.Namespace, client: SentimentClient, out: TextIO, _: TextIO) -> int:
    models = client.models().models
    if args.json:
        for summary in models:
            out.write(summary.model_dump_json() + "\n")
        return 0
    width = max((len(summary.name) for summary in models), default=0)
    for summary in models:
        mark = "*" if summary.default else " "
        line = f"{mark} {summary.name:<{width}}  {summary.status:<7}  {summary.version or '-'}"
        if summary.reason:
            line += f"  {summary.reason}"
        out.write(line + "\n")
    return 0


def _ready(args: argparse.Namespace, client: SentimentClient, out: TextIO, _: TextIO) -> int:
    ready = client.ready()
    if ready and args.model is not None:
        # /readyz answers for the service (its default model); a named one has its own status.
        ready = client.get_model(args.model).status == "ready"
    out.write(("ready" if ready else "not ready") + "\n")
    return 0 if ready else 1


_COMMANDS = {
    "predict": _predict,
    "stream": _stream,
    "tokenize": _tokenize,
    "explain": _explain,
    "model": _model,
    "models": _models,
    "ready": _ready,
}


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Call an rnn-sentiment service.")
    parser.add_argument(
        "--url",
        default=os.environ.get("RNN_SENTIMENT_URL", DEFAULT_URL),
        help="service address (env RNN_SENTIMENT_URL; default %(default)s)",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("RNN_SENTIMENT_API_KEY"),
        help="API key (env RNN_SENTIMENT_API_KEY)",
    )
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds (default %(default)s)"
    )
    parser.add_argument(
        "--model",
        # An empty variable is no name: the service's default model answers.
        default=os.environ.get("RNN_SENTIMENT_MODEL") or None,
        metavar="NAME",
        help="the model that answers (env RNN_SENTIMENT_MODEL; default: the service's default "
        "model; see the models command)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    commands = parser.add_subparsers(dest="command", required=True)
    predict = commands.add_parser(
        "predict", help="label texts: arguments, or one text per stdin line"
    )
    predict.add_argument("texts", nargs="*", help="texts; none or '-': read stdin lines")
    predict.add_argument(
        "--batch-size", type=int, default=32, help="texts per request (default %(default)s)"
    )
    predict.add_argument(
        "--min-confidence",
        type=float,
        metavar="P",
        help="mark each prediction confident when its score is at least P (0 to 1; --json "
        "shows it; default: the service's setting)",
    )
    stream = commands.add_parser("stream", help="send a text in pieces, print every update")
    stream.add_argument("text", nargs="?", help="the text; none or '-': read stdin")
    stream.add_argument(
        "--chunk-size", type=int, default=8, help="characters per piece (default %(default)s)"
    )
    tokenize = commands.add_parser("tokenize", help="show the tokens the model reads")
    tokenize.add_argument("text")
    explain = commands.add_parser("explain", help="per-token attributions")
    explain.add_argument("text")
    explain.add_argument("--label", help="label to explain (default: the predicted one)")
    commands.add_parser(
        "model", help="the model card (with --model: that model's architecture and labels)"
    )
    commands.add_parser(
        "models", help="the models the service holds: name, status, version (* the default)"
    )
    commands.add_parser(
        "ready", help="exit 0 when the service (with --model: that model) is ready, else 1"
    )
    return parser


def main(argv: list[str] | None = None, prog: str = "rnn-sentiment-client") -> int:
    """Run one command; the exit status: 0 done, 1 the service said no or could not be
    reached, 2 a usage mistake (argparse's message on stderr).

    `prog` is the name the usage line shows, for a command line that embeds this one.
    """
    try:
        args = _parser(prog).parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error: report its status, do not exit
        return exit_.code if isinstance(exit_.code, int) else 2
    try:
        with SentimentClient(args.url, api_key=args.api_key, timeout=args.timeout) as client:
            return _COMMANDS[args.command](args, client, sys.stdout, sys.stdin)
    except APIError as error:
        sys.stderr.write(f"error: {error}\n")
        for detail in error.details:
            location = ".".join(str(part) for part in detail.loc)
            sys.stderr.write(f"  {location}: {detail.msg} ({detail.type})\n")
        return 1
    except APIConnectionError as error:
        sys.stderr.write(f"error: cannot reach {args.url}: {error}\n")
        return 1
    except BrokenPipeError:
        # The reader stopped early (`| head`): not an error. Python's own flush of stdout at
        # exit would fail again, so stdout is pointed at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
