"""Cutting the text (`app.streaming.text`): the tokenizer claim the stream relies on."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from app.streaming.text import final_length
from tests.app.stream.conftest import TEXTS
from training.tokenizer import tokenize


def test_text_after_any_whitespace_tokenizes_on_its_own() -> None:
    @given(TEXTS, TEXTS)
    @settings(max_examples=1500, deadline=None, derandomize=True, database=None)
    def check(head: str, rest: str) -> None:
        text = head + " " + rest
        whole = [(t.text, t.start, t.end, t.norm) for t in tokenize(text)]
        for cut in [i + 1 for i, char in enumerate(text) if char.isspace()]:
            left = [(t.text, t.start, t.end, t.norm) for t in tokenize(text[:cut])]
            right = [(t.text, t.start + cut, t.end + cut, t.norm) for t in tokenize(text[cut:])]
            assert left + right == whole

    check()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", 0, id="empty"),
        pytest.param("gre", 0, id="no-space"),
        pytest.param("the gre", 4, id="half-word"),
        pytest.param("the great ", 10, id="ends-with-space"),
        pytest.param("a\u00a0b\u2028c", 4, id="unicode-whitespace"),
        pytest.param("a\u200bb", 0, id="zero-width-is-not-whitespace"),
    ],
)
def test_final_length(text: str, expected: int) -> None:
    assert final_length(text) == expected
