"""Hostile texts cannot make tokenizing slow: every entry point is linear in the text's length.

A regular expression that backtracks can take time quadratic (or worse) in its input, and the
tokenizer runs on every request's text before any model work. For each adversarial shape of
text and each entry point (`tokenize`, `token_norms`, `scan`, and a vocabulary's
`encode_norms`), the call is timed on `N` and on `GROWTH * N` characters of that shape; linear
code takes about `GROWTH` times as long, quadratic code about `GROWTH**2` times, so the ratio
must stay under `MAX_RATIO`, halfway between the two on a log scale (`GROWTH**1.5`): a factor
of 4 from each, so that cache and allocator effects, which can double a linear call's ratio on
a busy machine, do not fail it, while a quadratic call fails by far.

In process, no server. Timed, hence these precautions, so that it holds on a busy machine:
- CPU time of this thread (`time.thread_time`), not wall time: on a loaded machine the
  scheduler takes turns away from a call, more often the longer the call, which would inflate
  the ratio of a linear call;
- each sample repeats the call enough times to last at least `MIN_SAMPLE_SECONDS` (the count
  found at `N` by doubling, the same count at `GROWTH * N`): a call of a few microseconds is
  not timed alone, where the clock's own cost and jitter would dominate;
- the two sizes are sampled in turn, `REPEATS` times, with the collector off, and the fastest
  of each size is kept;
- an over-the-limit ratio is measured again, up to `ATTEMPTS` times: a moment of load can
  spoil one measurement, but quadratic code is over the limit on every one.
"""

from __future__ import annotations

import gc
import math
import string
import time
import unicodedata
from collections.abc import Callable
from functools import partial

import pytest

from training.tokenizer import Vocabulary, scan, token_norms, tokenize

pytestmark = pytest.mark.slow

N = 1_000
GROWTH = 16
MAX_RATIO = GROWTH**1.5
REPEATS = 3
ATTEMPTS = 3
MIN_SAMPLE_SECONDS = 0.001

Generator = Callable[[int], str]


def cycle(unit: str, prefix: str = "", suffix: str = "") -> Generator:
    """Texts of exactly `size` characters: `prefix`, `unit` repeated (cut to fit), `suffix`."""

    def generate(size: int) -> str:
        fill = size - len(prefix) - len(suffix)
        return prefix + (unit * (fill // len(unit) + 1))[:fill] + suffix

    return generate


def punctuation_run(char: str) -> pytest.ParameterSet:
    name = unicodedata.name(char).lower().replace(" ", "-")
    return pytest.param(cycle(char), id=f"run-{name}")


GENERATORS = [
    # A long run of each ASCII punctuation character ("((((", "))))" were quadratic).
    *[punctuation_run(char) for char in string.punctuation],
    # Emoticon characters, alternating, and runs that almost make an emoticon.
    *[
        pytest.param(cycle(unit), id=f"emoticons-{label}")
        for label, unit in [
            ("smile-sad", ":(:("),
            ("open-eyes", "(:(:"),
            ("closing-brackets", ")]:)]"),
            ("hearts", "<3<3"),
            ("broken-hearts", "</3"),
            ("carets", "^_^_^_"),
            ("nosed", ":-))))"),
            ("nosed-sad", ":'(((("),
            ("reversed-nosed", "(-:)-:"),
            ("tongues", ":p;-b"),
            ("faces", ":/:|=\\"),
            ("laughs", ":d;-d8d"),
            ("open-brackets", "({[<"),
            ("mixed-brackets", "([)]"),
        ]
    ],
    pytest.param(cycle("(", suffix="-x"), id="open-brackets-then-nose"),
    pytest.param(cycle(")", suffix="-x"), id="closing-brackets-then-nose"),
    pytest.param(cycle("])", suffix="'"), id="closing-brackets-mixed"),
    pytest.param(cycle("(", suffix=":"), id="open-brackets-smile"),
    pytest.param(cycle("_", prefix="^"), id="caret-then-underscores"),
    pytest.param(cycle("d", prefix=":", suffix="a"), id="eyes-then-ds-then-letter"),
    pytest.param(cycle("x", prefix="1", suffix="da"), id="xs-then-d-then-letter"),
    pytest.param(cycle("x", suffix="d"), id="xs-then-d"),
    pytest.param(cycle("3", prefix="<"), id="long-heart"),
    # URLs, hashtags, mentions.
    pytest.param(cycle("a/", prefix="https://"), id="url-path"),
    pytest.param(cycle("www.", suffix="x"), id="url-www-repeated"),
    pytest.param(cycle("http:/"), id="url-almost"),
    pytest.param(cycle("a_1", prefix="#"), id="hashtag-long"),
    pytest.param(cycle("#a"), id="hashtags-many"),
    pytest.param(cycle("a_1", prefix="@"), id="mention-long"),
    pytest.param(cycle("@"), id="mentions-empty"),
    # Words: one 10,000-character word, words cut by marks, negations.
    pytest.param(cycle("a"), id="word"),
    pytest.param(cycle("a", suffix="!"), id="word-then-bang"),
    pytest.param(cycle("a", suffix="1"), id="word-then-digit"),
    pytest.param(cycle("a", suffix="n't"), id="word-then-negation"),
    pytest.param(cycle("a", suffix="n'tx"), id="word-then-almost-negation"),
    pytest.param(cycle("a", suffix="n\u2019t1"), id="word-then-curly-negation"),
    pytest.param(cycle("an't"), id="negations-chained"),
    pytest.param(cycle("n't"), id="negations-bare"),
    pytest.param(cycle("don't "), id="negations-spaced"),
    pytest.param(cycle("a'"), id="apostrophes"),
    pytest.param(cycle("'s'"), id="clitics"),
    pytest.param(cycle("go"), id="two-letter-cycle"),
    pytest.param(cycle("o", prefix="g", suffix="d"), id="elongated"),
    pytest.param(cycle("o", prefix="g", suffix="d!"), id="elongated-then-bang"),
    # Other scripts, emoji, combining marks, zero-width characters.
    pytest.param(cycle("a\u0416\u65e5\U0001f600\U0001f44d\U0001f3fd"), id="mixed-scripts"),
    pytest.param(cycle("\U0001f3fd", prefix="\U0001f44d"), id="skin-tones-run"),
    pytest.param(cycle("\u2764\ufe0f"), id="hearts-emoji"),
    pytest.param(cycle("\u0301", prefix="e"), id="combining-marks-run"),
    pytest.param(cycle("e\u0301"), id="combining-marks-alternating"),
    pytest.param(cycle("\u200b"), id="zero-width-run"),
    pytest.param(cycle("a\u200d"), id="zero-width-alternating"),
    pytest.param(cycle("\u0416"), id="cyrillic-word"),
    pytest.param(cycle("\u65e5\u672c"), id="cjk-word"),
    pytest.param(cycle("\u2026"), id="ellipsis-run"),
    # Numbers and separators.
    pytest.param(cycle("1"), id="digits"),
    pytest.param(cycle("1."), id="digits-dotted"),
    pytest.param(cycle("1.", suffix="."), id="digits-dotted-trailing"),
    pytest.param(cycle(",", prefix="1"), id="digit-then-commas"),
    pytest.param(cycle("1:2/"), id="digits-mixed-separators"),
    pytest.param(cycle("1st"), id="ordinals"),
    pytest.param(cycle("8-"), id="eight-nose"),
    pytest.param(cycle("\u0661\u0662"), id="arabic-indic-digits"),
    # Many tiny tokens and whitespace.
    pytest.param(cycle(" a"), id="spaced-letters"),
    pytest.param(cycle(" ", suffix="a"), id="spaces"),
    pytest.param(cycle("\t\n\u00a0\u3000"), id="whitespace-kinds"),
]

# A vocabulary from a text with the phenomena above: some norms found as written, some only
# after shortening an elongation, the rest unknown.
VOCAB = Vocabulary.build(
    dict.fromkeys(token_norms("good bad :) :( <3 xD #fun @you 12 don't ! ? ... ( ) a go"), 1)
)

# name -> the timed call on a text, made ready (whatever it needs, computed untimed).
ENTRY_POINTS: dict[str, Callable[[str], Callable[[], object]]] = {
    "tokenize": lambda text: partial(tokenize, text),
    "token_norms": lambda text: partial(token_norms, text),
    "scan": lambda text: partial(scan, text),
    "encode_norms": lambda text: partial(VOCAB.encode_norms, token_norms(text)),
}


def sample(call: Callable[[], object], loops: int) -> float:
    """CPU seconds per call over `loops` calls."""
    started = time.thread_time()
    for _ in range(loops):
        call()
    return (time.thread_time() - started) / loops


def loops_for(call: Callable[[], object]) -> int:
    """How many calls make a sample last `MIN_SAMPLE_SECONDS` (doubling, as `timeit` does)."""
    loops = 1
    while sample(call, loops) * loops < MIN_SAMPLE_SECONDS:
        loops *= 2
    return loops


def growth_ratio(small: Callable[[], object], large: Callable[[], object]) -> float:
    """Time of `large` over time of `small`, the fastest sample of each."""
    large()  # a first call warms caches up (`loops_for` does it for `small`)
    loops = loops_for(small)
    fastest_small = fastest_large = math.inf
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(REPEATS):
            fastest_small = min(fastest_small, sample(small, loops))
            fastest_large = min(fastest_large, sample(large, loops))
    finally:
        if gc_was_enabled:
            gc.enable()
    return fastest_large / fastest_small


@pytest.mark.parametrize("entry_point", list(ENTRY_POINTS))
@pytest.mark.parametrize("generate", GENERATORS)
def test_time_grows_linearly_with_the_text(generate: Generator, entry_point: str) -> None:
    small_text, large_text = generate(N), generate(GROWTH * N)
    assert (len(small_text), len(large_text)) == (N, GROWTH * N)
    small, large = ENTRY_POINTS[entry_point](small_text), ENTRY_POINTS[entry_point](large_text)
    ratios: list[float] = []
    for _ in range(ATTEMPTS):
        ratios.append(growth_ratio(small, large))
        if ratios[-1] <= MAX_RATIO:
            return
    pytest.fail(
        f"{entry_point}: {GROWTH}x the text took {', '.join(f'{r:.1f}' for r in ratios)}x "
        f"the time (linear is about {GROWTH}x, the limit {MAX_RATIO}x): {small_text[:40]!r}..."
    )
