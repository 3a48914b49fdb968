"""What a prediction hands out, apart from the model that makes it: the values a `Predictor`
returns, why a text is refused, how closely its passes agree, and the small pure helpers that
build and name them.

Kept free of the model and its kernels, so that code which only reads or sends results (the
API's responses, the stream codec) need not import the predictor to name them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from training.tokenizer import Token


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a text cannot be served: a stable `type` and a message for people."""

    type: str
    msg: str


class TextRejectedError(ValueError):
    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.msg)
        self.rejection = rejection


@dataclass(frozen=True, slots=True)
class EncodedText:
    tokens: list[Token]
    ids: list[int]


@dataclass(frozen=True, slots=True)
class PredictionResult:
    """One text's most probable label, its probability and every label's (the API sends it
    as its `Prediction`), with what the text itself says about how far to trust them.

    The signals are taken from the ids the text was encoded to, in the pass that predicts it
    (`Predictor.predict_ids`), so they cost no second reading of the text: `token_count` is
    its number of tokens, `oov_ratio` the share of them the vocabulary does not know, and
    `truncated` whether it has more tokens than the model's training texts were cut to (the
    model reads them all, but past that length it reads beyond anything it learnt from).
    Results made otherwise (a trace's steps, a stream) leave them at their defaults.
    """

    label: str
    score: float
    probabilities: dict[str, float]
    token_count: int = 0
    oov_ratio: float = 0.0
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class LayerStateValues:
    """One layer's and direction's states after each token, as lists (the API sends them as
    its `LayerStates`)."""

    layer: int
    direction: Literal["forward", "backward"]
    hidden: list[list[float]]  # [T][H], or [T][len(units)] for a unit selection
    cell: list[list[float]] | None  # [T][H], LSTM on request
    gates: dict[str, list[list[float]]] | None = None  # name -> [T][H], on request
    units: list[int] | None = None  # the hidden units shown, when not all of them
    norm: list[float] = field(default_factory=list)  # [T] L2 norm of h_t (every unit)
    saturated: list[float] = field(default_factory=list)  # [T] share of |h_t| > threshold


@dataclass(frozen=True, slots=True)
class HiddenStates:
    layers: list[LayerStateValues]
    steps: list[tuple[str, dict[str, float]]]  # (label, probabilities) after each token
    steps_note: str | None
    prediction: PredictionResult
    flips: list[int] = field(default_factory=list)  # t where steps[t] != steps[t - 1] (label)


# How far a bfloat16 pass's probabilities may be from float32's. It keeps 8 significant bits
# of the recurrence; on the default model's test split the largest difference measured was
# 0.0052 (median 0.0002), and no label changed (`bench/cpu_paths.py`).
BFLOAT16_TOLERANCE = 0.01
# ...and how far a stream's (or a trace's step's) probabilities may be from /predict's when both
# compute in float32 (about 1e-7 measured: a stream reads one row, /predict at least four).
FLOAT_TOLERANCE = 1e-5


def stream_tolerance(pass_dtype: torch.dtype) -> float:
    """How far a stream's probabilities may be from those of a /predict pass in `pass_dtype`."""
    return BFLOAT16_TOLERANCE if pass_dtype == torch.bfloat16 else FLOAT_TOLERANCE


# A unit with |h| above this is pinned near tanh's (or the LSTM output's) bound of 1: it has
# stopped responding to its input for now.
SATURATION_THRESHOLD = 0.95


BIDIRECTIONAL_STEPS_NOTE = (
    "The model is bidirectional: its backward state at token t has already read every token "
    "after t, so there is no prediction 'if the text ended here'."
)


def prediction_from(labels: Sequence[str], row: list[float]) -> PredictionResult:
    """The label with the highest probability, its score and every label's probability."""
    best = max(range(len(row)), key=row.__getitem__)
    return PredictionResult(labels[best], row[best], dict(zip(labels, row, strict=True)))


# The codes of a prediction's `warnings`, in the order they are listed, each with its rule
# (docs/api/predict.md documents them; clients may rely on the spelling).
TRUNCATED = "truncated"  # more tokens than the model's training texts were cut to
MOSTLY_UNKNOWN_WORDS = "mostly_unknown_words"  # oov_ratio > MOSTLY_UNKNOWN_RATIO
VERY_SHORT = "very_short"  # token_count <= VERY_SHORT_TOKENS
LOW_CONFIDENCE = "low_confidence"  # score < the min_confidence in effect
WARNING_CODES = (TRUNCATED, MOSTLY_UNKNOWN_WORDS, VERY_SHORT, LOW_CONFIDENCE)
# More than half the tokens unknown: the label rests on fewer words than it ignores.
MOSTLY_UNKNOWN_RATIO = 0.5
# One or two tokens carry too little context for a recurrent model's reading of a sentence.
VERY_SHORT_TOKENS = 2


def warnings_of(result: PredictionResult, min_confidence: float | None) -> list[str]:
    """The warning codes that apply to `result`, in `WARNING_CODES` order; `low_confidence`
    only when a threshold applies (`min_confidence` not None)."""
    found: list[str] = []
    if result.truncated:
        found.append(TRUNCATED)
    if result.oov_ratio > MOSTLY_UNKNOWN_RATIO:
        found.append(MOSTLY_UNKNOWN_WORDS)
    if result.token_count <= VERY_SHORT_TOKENS:
        found.append(VERY_SHORT)
    if min_confidence is not None and result.score < min_confidence:
        found.append(LOW_CONFIDENCE)
    return found


def check_chars(text: str, max_chars: int) -> None:
    if len(text) > max_chars:
        raise TextRejectedError(
            Rejection("text_too_long", f"text has {len(text)} characters; the limit is {max_chars}")
        )


def check_tokens(count: int, max_tokens: int) -> None:
    if not count:
        raise TextRejectedError(
            Rejection(
                "no_tokens",
                "text contains no words, numbers, emoji or punctuation the model can read",
            )
        )
    if count > max_tokens:
        raise TextRejectedError(
            Rejection("too_many_tokens", f"text has {count} tokens; the limit is {max_tokens}")
        )


def dtype_name(dtype: torch.dtype) -> str:
    """'float32' for torch.float32."""
    return str(dtype).removeprefix("torch.")
