"""Cutting the text: which tokens of a piece are final, and which wait for more text.

No token of `training.tokenizer` spans whitespace, and its lookarounds see at most one
character past a token (tested against one-shot tokenization in
tests/app/stream/test_text.py). So the text up to and including its last whitespace
character tokenizes exactly as it would inside the whole text: those tokens are final and are
read into the recurrent state. The rest (the tail) is kept in the state as text, and is also
read, from a copy of the state, to give the prediction "if the text ended here". When the last
piece is sent with `final`, the tail is read for good and the stream is closed: every update's
`prediction` is `/predict`'s for the text so far, and the last one that of the whole text (to
about 1e-7 when `/predict` runs in float32: a stream reads one text at a time, `/predict` at
least four rows; within `BFLOAT16_TOLERANCE` under a bfloat16 pass, which streams do not use).

The codec holds a state's tail to the same rule (`app.streaming.codec`), so the rule lives
here, below both.
"""

from __future__ import annotations

from training.tokenizer import Token, tokenize


def final_length(text: str) -> int:
    """Length of the part of `text` whose tokens are final: up to its last whitespace char."""
    for index in range(len(text) - 1, -1, -1):
        if text[index].isspace():
            return index + 1
    return 0


def tokens_at(text: str, offset: int) -> list[Token]:
    """`tokenize(text)` with offsets shifted by `offset` (where `text` starts in the stream)."""
    if not offset:
        return tokenize(text)
    return [Token(t.text, t.start + offset, t.end + offset, t.norm) for t in tokenize(text)]
