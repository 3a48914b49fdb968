"""Tokenizer cost per text on everyday sentences (bench/sentences.txt), in process.

Four paths, each timed as µs per text over all the sentences:
- `tokenize`: the tokens with their offsets (the routes that show tokens, streaming);
- `token_norms`: the normalised forms only (what /predict encodes);
- `token_norms` + `Vocabulary.encode_norms`: a prediction's whole text-to-ids step
  (`Predictor.encode_ids`), with the vocabulary of the checkpoint (`--model`, default
  model_store/default);
- `tokenize` + `Vocabulary.encode`: the same ids through the tokens (`Predictor.encode`), what
  a prediction would cost without `token_norms`.

Times are CPU time of this process (a shared machine's other processes would inflate wall
time), and each figure is the median over interleaved rounds. `--module PATH` (repeatable)
times other copies of tokenizer.py against the first, an A/B of a change: in each round the
copies run back to back on each path, and the change printed is the median of the rounds'
ratios, which a drift of the machine's load shifts far less than it shifts the times. Keep the
old file outside the repository (a copy in /tmp) and pass both:

    .venv/bin/python bench/tokenizer.py
    .venv/bin/python bench/tokenizer.py --module /tmp/old_tokenizer.py \\
        --module training/tokenizer.py
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from operator import truediv
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from run import read_sentences  # noqa: E402 - bench/run.py, beside this script

DEFAULT_MODULE = REPO / "training" / "tokenizer.py"
DEFAULT_MODEL = REPO / "model_store" / "default"


def load_module(path: Path, index: int) -> ModuleType:
    """A copy of tokenizer.py imported from `path`, under a name of its own."""
    spec = importlib.util.spec_from_file_location(f"bench_tokenizer_{index}", path)
    if spec is None or spec.loader is None:
        sys.exit(f"tokenizer bench: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def paths(module: ModuleType, vocab_json: dict[str, Any]) -> dict[str, Callable[[str], object]]:
    """name -> one text's work on that path, with `module`'s own vocabulary class."""
    vocab = module.Vocabulary.from_json(vocab_json)
    tokenize, token_norms = module.tokenize, module.token_norms
    return {
        "tokenize": tokenize,
        "token_norms": token_norms,
        "token_norms + encode_norms": lambda text: vocab.encode_norms(token_norms(text)),
        "tokenize + encode": lambda text: vocab.encode(tokenize(text)),
    }


def per_text_us(work: Callable[[str], object], texts: list[str], passes: int) -> float:
    """CPU µs per text for `passes` passes over `texts`, the collector off (as in timeit).

    CPU time of this process, not wall time: on a shared machine wall time also counts the
    time the other processes ran, which swamps a few-percent difference."""
    gc.disable()
    try:
        started = time.process_time()
        for _ in range(passes):
            for text in texts:
                work(text)
        elapsed = time.process_time() - started
    finally:
        gc.enable()
    return elapsed * 1e6 / (passes * len(texts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--module",
        type=Path,
        action="append",
        help="a tokenizer.py to time (repeatable; default: training/tokenizer.py)",
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="checkpoint folder")
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds (median)")
    parser.add_argument("--passes", type=int, default=20, help="passes over the texts a round")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()

    texts = read_sentences()
    vocab_json = json.loads((args.model / "vocab.json").read_text())
    files: list[Path] = args.module or [DEFAULT_MODULE]
    modules = [paths(load_module(path, index), vocab_json) for index, path in enumerate(files)]
    # A timing of code that gives other tokens would compare nothing: check first.
    reference = modules[0]
    for path, module in zip(files[1:], modules[1:], strict=True):
        for name, work in module.items():
            if [work(text) for text in texts] != [reference[name](text) for text in texts]:
                sys.exit(f"tokenizer bench: {path} differs from {files[0]} on {name}")

    samples: list[dict[str, list[float]]] = [{name: [] for name in reference} for _ in modules]
    for module in modules:  # warm-up: caches, the regular expressions' first use
        for work in module.values():
            per_text_us(work, texts, 1)
    order = list(range(len(modules)))
    for round_ in range(args.rounds):
        for name in reference:
            # The modules back to back on one path, every other round in reverse: no module
            # always runs first, and a swing of the machine's load hits both of a pair.
            for index in order if round_ % 2 == 0 else order[::-1]:
                samples[index][name].append(per_text_us(modules[index][name], texts, args.passes))

    medians = [{name: statistics.median(values) for name, values in s.items()} for s in samples]
    # Each round's ratio to the first module, then their median: steadier than the ratio of
    # the medians when the load drifts during the run.
    changes = [
        {
            name: 100 * (statistics.median(map(truediv, sample[name], samples[0][name])) - 1)
            for name in reference
        }
        for sample in samples
    ]
    if args.json:
        rows = [
            {"module": str(path), "us_per_text": result, "change_percent": change}
            for path, result, change in zip(files, medians, changes, strict=True)
        ]
        print(json.dumps({"texts": len(texts), "rounds": args.rounds, "results": rows}, indent=2))
        return
    print(f"{len(texts)} texts, {args.passes} passes a round, median of {args.rounds} rounds")
    print("| module | " + " | ".join(f"{name} (µs/text)" for name in reference) + " |")
    print("|---|" + "---:|" * len(reference))
    for path, result in zip(files, medians, strict=True):
        cells = " | ".join(f"{result[name]:.2f}" for name in reference)
        print(f"| {path} | {cells} |")
    for path, change in zip(files[1:], changes[1:], strict=True):
        cells = ", ".join(f"{name} {change[name]:+.1f}%" for name in reference)
        print(f"{path} against {files[0]} (median of the rounds' ratios): {cells}")


if __name__ == "__main__":
    main()
