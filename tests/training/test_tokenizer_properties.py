"""Tokenizer properties over arbitrary unicode: never raises, spans slice the text, ordered."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from training.tokenizer import scan, token_norms, tokenize

# Every code point, surrogates included (a `str` may hold one), plus text shaped like tweets.
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=200)
TWEETISH = st.text(
    st.sampled_from(list("aZ'!?.:;()<3#@/-_ 0n't😀👍🏽\u200d\ufe0f\n\tÉé日本")), max_size=120
)
# Pieces that take each path of `tokenize`: plain words, laughs, negations, emoticons, URLs,
# separated by every kind of whitespace (and by characters that only look like it).
PIECES = st.lists(
    st.sampled_from(
        [
            *["good", "GREAT", "xD", "xxdd", "Xd", "dont", "isnt", "don't", "can\u2019t", "soooo"],
            *["a", "x", "d", "n", "t", "é", "ß", "日本", "²", "Ⅻ", "_", "1", "3", "#", "@", "<"],
            *[":", ";", "-", ")", "(", "'", "/", ".", ",", "!", "?", "…", "😀", "🏽", "♥", "❤"],
            *["️", "www", "http", "xd", "dont."],
            *["http://a.b", "www.", " ", "  ", "\t", "\n", "\u00a0", "\u2028", "\x1c"],
            *["\u200b", "\u3000", "\x00"],
        ]
    ),
    max_size=40,
).map("".join)
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


@settings(max_examples=1500, deadline=None, derandomize=True, database=None)
@given(st.one_of(TEXTS, PIECES))
def test_tokenize_gives_the_patterns_tokens(text: str) -> None:
    # tokenize cuts at whitespace and takes all-letter pieces as words without the full
    # pattern; `scan` runs the pattern over the whole text. They must never differ.
    assert tokenize(text) == scan(text)


@settings(max_examples=1500, deadline=None, derandomize=True, database=None)
@given(st.one_of(TEXTS, PIECES))
def test_token_norms_are_the_tokens_norms(text: str) -> None:
    # What predictions encode (no tokens made) against what every other route encodes.
    assert token_norms(text) == [token.norm for token in tokenize(text)]


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
