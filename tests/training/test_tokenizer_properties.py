"""Tokenizer properties over arbitrary unicode: never raises, spans slice the text, ordered,
and the same tokens as the backtracking pattern the tokenizer used before it was made linear."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training import tokenizer
from training.tokenizer import Token, scan, token_norms, tokenize

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


# The pattern as it was before every alternative was made linear: a run of brackets was walked
# again from each of its brackets. Kept as the reference the current pattern must agree with
# on every text; only the time it takes may differ.
REFERENCE_PATTERN = re.compile(
    r"""
    (?P<url>(?:https?://|www\.)[^\s<>"]+)
  | (?P<heart><3+|\u2665|\u2764\ufe0f?)
  | (?P<laugh>(?<![^\W\d_])x+d+(?![^\W\d_])|(?<![^\W\d_])[:;=8]-?d+(?![^\W\d_])|\^_*\^)
  | (?P<smile>[:;=8][-o*'^]?[)\]}>]+|\(+[-o*'^]?[:;=8])
  | (?P<sad>[:;=8]'?[-o*'^]?[(\[{<]+|[)\]]+[-o*'^]?[:;=8]|</3)
  | (?P<tongue>[:;=8][-o*'^]?[pPb](?![^\W\d_]))
  | (?P<neutralface>[:;=8][-o*'^]?[|/\\](?!/))
  | (?P<user>@\w+)
  | (?P<hashtag>\#[^\W\d_]\w*)
  | (?P<number>\d+(?:[.,:/]\d+)*(?:st|nd|rd|th|s|k|m|%)?)
  | (?P<negstem>[^\W\d_]+(?=n['\u2019]t(?![^\W\d_])))
  | (?P<neg>n['\u2019]t(?![^\W\d_]))
  | (?P<clitic>['\u2019](?:s|re|ve|ll|d|m)(?![^\W\d_]))
  | (?P<word>[^\W\d_]+)
  | (?P<bang>[!?]+)
  | (?P<dots>\.{2,}|\u2026+)
  | (?P<emoji>[\U0001F000-\U0001FAFF\u2600-\u27BF][\uFE0F\U0001F3FB-\U0001F3FF]*)
  | (?P<punct>[^\w\s\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\x00-\x1f\x7f])
    """,
    re.VERBOSE | re.IGNORECASE,
)
REFERENCE_LAUGH = re.compile(r"x+d+", re.IGNORECASE)
# Texts dense in what the pattern's alternatives start with and stop at: bracket runs with and
# without a face at their end, noses, eyes, laughs, carets, "n't", numbers with separators.
EMOTICONISH = st.lists(
    st.sampled_from(
        [
            *list("()[]{}<>:;=8-o*'^_|/\\pPbxXdD3n't\u2019!?.…1,#@ \t"),
            *["((((", "))))", "]]]]", ")])]", "[[[[", "^___", "xxxx", "dddd", ":-", "n't"],
            *["</3", "<333", "12.5", "1,,", "1st", "http://", "www.", "\u2764\ufe0f", "😀🏽"],
        ]
    ),
    max_size=40,
).map("".join)


def reference_outputs(text: str) -> tuple[list[Token], list[str], list[Token]]:
    """`tokenize`, `token_norms` and `scan` of `text` with the reference patterns in place."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tokenizer, "_PATTERN", REFERENCE_PATTERN)
        patch.setattr(tokenizer, "_LAUGH", REFERENCE_LAUGH)
        return tokenize(text), token_norms(text), scan(text)


@settings(max_examples=2000, deadline=None, derandomize=True, database=None)
@given(st.one_of(EMOTICONISH, TEXTS, PIECES))
def test_same_tokens_as_the_reference_pattern(text: str) -> None:
    assert (tokenize(text), token_norms(text), scan(text)) == reference_outputs(text)
