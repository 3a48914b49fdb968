"""`rnn-sentiment predict`: score a file (or stdin) offline, without a server.

The answers are the service's: the checkpoint is loaded and verified as the service loads it,
into the same `Predictor` with the same settings (`APP_INFERENCE_DTYPE`, `APP_TORCHSCRIPT`,
`APP_TORCH_THREADS` apply here too), and each output line is the body the service sends for a
single-text `POST /predict` (`app.api.responses.predict_body`), with the input's line number
in front: `{"line": 3, "label": ..., "score": ..., "probabilities": {...}, "model": {...}}`.
The predictor gives a text the same probabilities whatever it shares a pass with, so scoring
in batches (texts of similar length together, for less padding) changes no answer.

Input, one record per text:

- `lines` (the default): one text per line, as written (the line break removed). Blank
  lines (empty or only whitespace) are skipped: they hold no text, and a file often ends in
  one or separates paragraphs with them. Outputs keep the input's order, and `line` tells
  which line each answers.
- `csv`: a header row, then one text per row in the `--text-field` column.
- `jsonl`: one JSON object per line, the text under the `--text-field` key; blank lines are
  skipped.

A text the service would refuse because the model can read nothing in it (no words, numbers,
emoji or punctuation) gets `{"line": N, "error": {"code": "no_tokens", "message": ...}}`
instead, and the run goes on; its count is printed on stderr at the end. Unlike the service,
no length limit applies: a long text is read whole. A malformed input (a CSV without the
column, a JSONL line that is not an object with the key, bytes that are not UTF-8) stops the
run with one line naming the line, status 2; with `--out`, nothing is written then.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

if TYPE_CHECKING:  # the service's modules (and torch) are imported when a run needs them
    from app.inference.predictor import Predictor

InputFormat = Literal["lines", "csv", "jsonl"]
FORMATS: tuple[InputFormat, ...] = ("lines", "csv", "jsonl")
STDIN = "-"
# Texts read ahead and sorted by length before they are cut into batches: texts of similar
# length share a pass (less padding to compute) while memory stays bounded on any input.
WINDOW_BATCHES = 16
USAGE_ERROR = 2


# Told how many more texts have been written (the progress bar, or nothing).
Tracker = Callable[[int], None]


class InputError(Exception):
    """A malformed input or an unusable option; the message is one line."""


@dataclass(frozen=True, slots=True)
class Record:
    """One text to score and the line it starts on (1-based, as an editor shows it)."""

    line: int
    text: str


def build_parser(prog: str = "rnn-sentiment predict") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Score texts offline with a checkpoint, as the service's POST /predict would: "
            "one JSON object per text on stdout (or --out), in input order."
        ),
        epilog=(
            "Blank lines are skipped (each output names its input line). A text with nothing "
            "the model can read gets an error object instead of a prediction."
        ),
    )
    parser.add_argument("input", help="file to score, or - for stdin")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="lines",
        help="lines: one text per line; csv: a header row, the text in --text-field's column; "
        "jsonl: one object per line, the text under --text-field (default: lines)",
    )
    parser.add_argument(
        "--text-field",
        default="text",
        help="csv column or jsonl key holding the text (default: text)",
    )
    parser.add_argument(
        "--out", type=Path, help="write the JSON lines to this file instead of stdout"
    )
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument(
        "--model-dir",
        type=Path,
        help="checkpoint directory (default: APP_MODEL_DIR, else model_store/default)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=64,
        help="texts per forward pass (default: 64)",
    )
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "rnn-sentiment predict") -> int:
    args = build_parser(prog).parse_args(argv)
    if args.batch_size < 1:
        return _refuse("--batch-size must be at least 1")
    if args.input != STDIN and not Path(args.input).is_file():
        missing = "not a file" if Path(args.input).exists() else "no such file"
        return _refuse(f"{args.input}: {missing} (give a file to score, or - for stdin)")
    if args.out is not None:
        if args.out.exists() and not args.force:
            return _refuse(
                f"--out {args.out} already exists: pass --force to replace it, or choose "
                "another --out"
            )
        if not args.out.parent.is_dir():
            return _refuse(f"--out {args.out}: the directory {args.out.parent} does not exist")
    try:
        scorer = Scorer.load(args.model_dir)
    except InputError as error:
        return _refuse(str(error))
    try:
        with _input(args.input) as stream:
            records = read_records(stream, args.format, args.text_field, _name(args.input))
            with _output(args.out) as out, _progress() as advance:
                refused = scorer.write(records, out, args.batch_size, advance)
    except InputError as error:
        return _refuse(str(error))
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as command-line tools do.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as error:  # an unreadable input, a full disk under --out
        return _refuse(f"{error.filename or args.input}: {error.strerror}")
    if refused:
        print(
            f"rnn-sentiment: {refused} text(s) had nothing the model can read; their lines "
            'hold an "error" object instead of a prediction',
            file=sys.stderr,
        )
    return 0


def _refuse(message: str) -> int:
    print(f"rnn-sentiment: {' '.join(message.split())}", file=sys.stderr)
    return USAGE_ERROR


def _name(source: str) -> str:
    return "<stdin>" if source == STDIN else source


# --- reading ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _input(source: str) -> Iterator[IO[bytes]]:
    """The input's bytes: decoded line by line (`_decoded`), so a bad byte names its line."""
    if source == STDIN:
        yield sys.stdin.buffer
        return
    with Path(source).open("rb") as handle:
        yield handle


def _decoded(stream: IO[bytes], name: str) -> Iterator[str]:
    """Each line of `stream` as UTF-8 text, its line break kept; a BOM at the start dropped."""
    for number, raw in enumerate(stream, start=1):
        try:
            line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{name}:{number}: not valid UTF-8 (save the file as UTF-8)") from None
        yield line


def read_records(
    stream: IO[bytes], input_format: InputFormat, text_field: str, name: str
) -> Iterator[Record]:
    """The texts of `stream`, lazily; `InputError` naming the line for a malformed input."""
    lines = _decoded(stream, name)
    if input_format == "csv":
        return _csv_rows(lines, text_field, name)
    if input_format == "jsonl":
        return _jsonl_objects(lines, text_field, name)
    return _lines(lines)


def _lines(lines: Iterable[str]) -> Iterator[Record]:
    for number, raw in enumerate(lines, start=1):
        text = raw.removesuffix("\n").removesuffix("\r")
        if text.strip():
            yield Record(number, text)


def _csv_rows(lines: Iterable[str], text_field: str, name: str) -> Iterator[Record]:
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            raise InputError(f"{name}: the file is empty (a header row is required)")
        columns = [column.strip() for column in header]
        if text_field not in columns:
            raise InputError(
                f"{name}:1: no column {text_field!r} in the header (columns: {columns}); "
                "pass --text-field"
            )
        index = columns.index(text_field)
        start = reader.line_num + 1
        for row in reader:
            if row:  # [] for a blank line
                if len(row) != len(columns):
                    raise InputError(
                        f"{name}:{start}: expected {len(columns)} fields as in the header, "
                        f"got {len(row)}"
                    )
                yield Record(start, row[index])
            start = reader.line_num + 1
    except csv.Error as error:
        raise InputError(f"{name}:{reader.line_num}: malformed CSV ({error})") from None


def _jsonl_objects(lines: Iterable[str], text_field: str, name: str) -> Iterator[Record]:
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as error:
            raise InputError(
                f"{name}:{number}: invalid JSON ({error.msg} at column {error.colno})"
            ) from None
        if not isinstance(record, dict):
            raise InputError(f"{name}:{number}: expected a JSON object")
        if text_field not in record:
            raise InputError(
                f"{name}:{number}: no key {text_field!r} (keys: {sorted(record)}); "
                "pass --text-field"
            )
        text = record[text_field]
        if not isinstance(text, str):
            raise InputError(f"{name}:{number}: the {text_field!r} value is not a string")
        yield Record(number, text)


# --- scoring ---------------------------------------------------------------------------------


class Scorer:
    """The service's predictor for one checkpoint, and the service's answer for each text."""

    def __init__(self, predictor: Predictor, name: str) -> None:
        """`name`: the model's name as the service would serve it (APP_DEFAULT_MODEL)."""
        from app.inference.runtime import ModelIdentity  # noqa: PLC0415

        self.predictor = predictor
        self.model = ModelIdentity(name, predictor.version)

    @classmethod
    def load(cls, model_dir: Path | None) -> Scorer:
        """Load and verify the checkpoint as the service does (`InputError` if it cannot)."""
        import torch  # noqa: PLC0415
        from pydantic import ValidationError  # noqa: PLC0415

        from app.core.config import Settings  # noqa: PLC0415
        from app.inference.predictor import Predictor  # noqa: PLC0415
        from training.checkpoint import CheckpointError, load_checkpoint  # noqa: PLC0415

        try:
            settings = Settings() if model_dir is None else Settings(model_dir=model_dir)
        except ValidationError as error:
            first = error.errors(include_url=False, include_input=False)[0]
            setting = f"APP_{first['loc'][0]}".upper() if first["loc"] else "APP_*"
            raise InputError(f"invalid setting {setting}: {first['msg']}") from None
        try:
            checkpoint = load_checkpoint(settings.model_dirs()[settings.default_model])
        except CheckpointError as error:
            raise InputError(
                f"cannot load the checkpoint ({error}); pass --model-dir (or set "
                "APP_MODEL_DIR) to a checkpoint directory"
            ) from None
        torch.set_num_threads(settings.torch_threads)
        predictor = Predictor(
            checkpoint,
            dtype=getattr(torch, settings.inference_dtype),
            torchscript=settings.torchscript,
        )
        return cls(predictor, settings.default_model)

    def write(
        self, records: Iterable[Record], out: IO[bytes], batch_size: int, advance: Tracker
    ) -> int:
        """Score `records` in batches and write one JSON line each, in order; the number of
        texts refused (no readable token)."""
        refused = 0
        window: list[Record] = []
        for record in records:
            window.append(record)
            if len(window) == batch_size * WINDOW_BATCHES:
                refused += self._score_window(window, out, batch_size)
                advance(len(window))
                window = []
        if window:
            refused += self._score_window(window, out, batch_size)
            advance(len(window))
        return refused

    def _score_window(self, window: list[Record], out: IO[bytes], batch_size: int) -> int:
        from app.api.responses import predict_body  # noqa: PLC0415
        from app.inference.results import TextRejectedError  # noqa: PLC0415

        lines: list[bytes | None] = [None] * len(window)
        encoded: list[tuple[int, list[int]]] = []
        refused = 0
        for position, record in enumerate(window):
            text = record.text
            try:
                # No limits beyond the one every text meets: at least one token.
                ids = self.predictor.encode_ids(text, max_chars=len(text), max_tokens=len(text))
            except TextRejectedError as rejected:
                refused += 1
                error = {"code": rejected.rejection.type, "message": rejected.rejection.msg}
                lines[position] = json.dumps(
                    {"line": record.line, "error": error}, ensure_ascii=False
                ).encode()
                continue
            encoded.append((position, ids))
        encoded.sort(key=lambda item: len(item[1]))
        for start in range(0, len(encoded), batch_size):
            batch = encoded[start : start + batch_size]
            results = self.predictor.predict_ids([ids for _, ids in batch])
            for (position, _), result in zip(batch, results, strict=True):
                body = predict_body([result], self.model, batch=False)
                # The service's body, with the line it answers first: {"line": N, <body>}.
                lines[position] = b'{"line":%d,%s' % (window[position].line, body[1:])
        out.write(b"".join(line + b"\n" for line in lines if line is not None))
        return refused


# --- output ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _output(path: Path | None) -> Iterator[IO[bytes]]:
    """stdout, or a temporary file next to `path` renamed to it once every line is written
    (a run that fails leaves `path` as it was)."""
    if path is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - renamed or removed below
        "wb", dir=path.parent, prefix=f".{path.name}.", suffix=".partial", delete=False
    )
    try:
        with handle:
            yield handle
        Path(handle.name).replace(path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _progress() -> Iterator[Tracker]:
    """A progress bar on stderr when stderr is a terminal and tqdm is installed (it comes with
    the train extra); otherwise nothing is drawn."""
    if not sys.stderr.isatty():
        yield lambda count: None
        return
    try:
        from tqdm import tqdm  # noqa: PLC0415
    except ImportError:
        yield lambda count: None
        return
    with tqdm(unit=" texts", file=sys.stderr, dynamic_ncols=True) as bar:
        yield bar.update
