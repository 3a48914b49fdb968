"""Tokenizer properties over arbitrary unicode: never raises, spans slice the text, ordered."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from training.tokenizer import tokenize

# Every code point, surrogates included (a `str` may hold one), plus text shaped like tweets.
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=200)
TWEETISH = st.text(
    st.sampled_from(list("aZ'!?.:;()<3#@/-_ 0n't😀👍🏽\u200d\ufe0f\n\tÉé日本")), max_size=120
)
TEXTS = st.one_of(ANY_TEXT, TWEETISH)
PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, database=None)


@PROPERTY_SETTINGS
@given(TEXTS)
def test_spans_slice_the_text_in_order_without_overlap(text: str) -> None:
    tokens = tokenize(text)
    previous_end = 0
    for token in tokens:
        assert text[token.start : token.end] == token.text
        assert previous_end <= token.start < token.end <= len(text)
        assert token.norm != ""
        previous_end = token.end


@PROPERTY_SETTINGS
@given(TEXTS)
def test_deterministic(text: str) -> None:
    assert tokenize(text) == tokenize(text)


@PROPERTY_SETTINGS
@given(TEXTS, TEXTS)
def test_text_between_tokens_is_skipped_not_lost(left: str, right: str) -> None:
    # Tokens of `left + " " + right` never cross the space: each lies in one part.
    text = left + " " + right
    boundary = len(left)
    for token in tokenize(text):
        assert token.end <= boundary or token.start > boundary
