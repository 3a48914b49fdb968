"""Variants of the training texts for the teacher to label: more text to distil from.

The teacher's logits are a target for any text, labelled or not. With no unlabelled corpus at
hand, the training texts themselves give more: each is varied `copies` times by dropping words
(each with probability `DROP_P`) or, one time in four, by keeping only a span of one to five
consecutive words. The label of such a variant is unknown (a fragment of a negative text may
be neutral), so the student learns it from the teacher's logits alone.

Deterministic: a variant depends only on the text, the copy number and the seed, so the
teacher (which labels them) and every later student run (which looks its logits up by
`training.teacher.text_key`) make the same texts without storing them. Plain Python, no torch.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from training.data import Example

DROP_P = 0.1  # chance of dropping each word
SPAN_P = 0.25  # chance of a variant being a span of consecutive words instead
MAX_SPAN = 5  # the longest such span, in words


def variant(text: str, copy: int, seed: int) -> str:
    """The `copy`-th variant of `text` (the text itself when it has fewer than two words)."""
    words = text.split()
    if len(words) < 2:
        return text
    rng = random.Random(f"{seed}:{copy}:{text}")  # a str seed is hashed with sha512: stable
    if rng.random() < SPAN_P:
        length = rng.randint(1, min(MAX_SPAN, len(words) - 1))
        start = rng.randrange(len(words) - length + 1)
        return " ".join(words[start : start + length])
    kept = [word for word in words if rng.random() >= DROP_P]
    return " ".join(kept or words[:1])


def variants(examples: Sequence[Example], copies: int, seed: int) -> Iterator[Example]:
    """`copies` variants of every example that differ from their text, keeping its label and
    weight (the label is only a placeholder: see the module doc)."""
    for example in examples:
        for copy in range(copies):
            text = variant(example.text, copy, seed)
            if text != example.text:
                yield Example(text, example.label, example.weight)
