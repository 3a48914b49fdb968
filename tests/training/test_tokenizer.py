"""Tokenizer: offsets, normalisation of tweet/review phenomena, odd unicode, vocabulary."""

from __future__ import annotations

import pytest

from training.tokenizer import (
    PAD,
    SPECIAL_TOKENS,
    UNK,
    Vocabulary,
    lookup_candidates,
    tokenize,
)


def norms(text: str) -> list[str]:
    return [token.norm for token in tokenize(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("I don't like it", ["i", "do", "not", "like", "it"], id="contraction"),
        pytest.param("It isn\u2019t good", ["it", "is", "not", "good"], id="curly-apostrophe"),
        pytest.param("can't won't", ["can", "not", "will", "not"], id="irregular-stems"),
        pytest.param("dont isnt", ["do", "not", "is", "not"], id="no-apostrophe"),
        pytest.param("I'm sure we'll", ["i", "'m", "sure", "we", "'ll"], id="clitics"),
        pytest.param("GREAT Movie", ["great", "movie"], id="casing"),
        pytest.param("see http://t.co/x1 now", ["see", "<url>", "now"], id="url"),
        pytest.param("@bob_1 hi", ["<user>", "hi"], id="mention"),
        pytest.param("#fail #SoHappy", ["fail", "sohappy"], id="hashtags"),
        pytest.param("wow!!! really???", ["wow", "!", "really", "?"], id="repeated-punct"),
        pytest.param("so... and\u2026", ["so", "...", "and", "..."], id="ellipsis"),
        pytest.param(
            ":) :-( <3 xD :P :/",
            ["<smile>", "<sad>", "<heart>", "<laugh>", "<tongue>", "<neutralface>"],
            id="emoticons",
        ),
        pytest.param("costs 12.50 for 3", ["costs", "<number>", "for", "<number>"], id="numbers"),
        pytest.param("\U0001f44d\U0001f3fd ok", ["\U0001f44d", "ok"], id="emoji-skin-tone"),
        pytest.param("caf\u00e9 na\u00efve", ["caf\u00e9", "na\u00efve"], id="accents"),
    ],
)
def test_normalisation(text: str, expected: list[str]) -> None:
    assert norms(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("((((:", ["<smile>"], id="open-run-then-eyes"),
        pytest.param("(((-:", ["<smile>"], id="open-run-nose-eyes"),
        pytest.param("((:(", ["<smile>", "("], id="open-run-face-then-bracket"),
        pytest.param("(((( x", ["(", "(", "(", "(", "x"], id="open-run-alone"),
        pytest.param("((((-x", ["(", "(", "(", "(", "-", "x"], id="open-run-nose-no-eyes"),
        pytest.param(")]):", ["<sad>"], id="closing-run-then-eyes"),
        pytest.param(")]:)]", ["<sad>", ")", "]"], id="closing-runs-one-face"),
        pytest.param("))]x", [")", ")", "]", "x"], id="closing-run-alone"),
        pytest.param(":))))", ["<smile>"], id="eyes-then-closing-run"),
        pytest.param(":((((", ["<sad>"], id="eyes-then-open-run"),
        pytest.param("^___^ ^___", ["<laugh>", "^"], id="carets"),
        pytest.param(":dddd :dddda", ["<laugh>", ":", "dddda"], id="eyes-then-ds"),
        pytest.param("xxxxd xxxxda 1xxxd", ["<laugh>", "xxxxda", "<number>", "<laugh>"], id="xd"),
    ],
)
def test_runs_that_may_start_an_emoticon(text: str, expected: list[str]) -> None:
    # A run is an emoticon only when the whole run is followed by the rest of the face;
    # otherwise each bracket is a token of its own.
    assert norms(text) == expected


def test_long_bracket_runs() -> None:
    # Each bracket of a long run is a token, and the same run before eyes is one emoticon.
    assert norms("(" * 20_000) == ["("] * 20_000
    assert norms("(" * 20_000 + ":") == ["<smile>"]
    assert norms("])" * 10_000 + "-:") == ["<sad>"]
    assert norms("])" * 10_000 + "-x") == ["]", ")"] * 10_000 + ["-", "x"]


@pytest.mark.parametrize(
    "text",
    [
        "I don't like it!!! :) soooo bad",
        "\x00\u200bzero\u200dwidth \u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd",
        "\U0001f600\U0001f44d\U0001f3fd\u2764\ufe0f",
        "a\tb\nc\r\nd",
        "",
        "   ",
        "Ünïcödé \u202etext\u202c",
    ],
)
def test_offsets_slice_the_text(text: str) -> None:
    for token in tokenize(text):
        assert text[token.start : token.end] == token.text
        assert token.start < token.end
    starts = [token.start for token in tokenize(text)]
    assert starts == sorted(starts)


def test_control_and_zero_width_characters_are_skipped() -> None:
    assert norms("\x00\u200b\u200d\ufeff") == []
    assert norms("good\u200bbad") == ["good", "bad"]


def test_deterministic() -> None:
    text = "Not bad at all :) #win http://x.y @z 10/10"
    assert tokenize(text) == tokenize(text)


def test_lookup_candidates_shorten_elongation() -> None:
    assert lookup_candidates("goood") == ("goood", "good", "god")
    assert lookup_candidates("good") == ("good", "god")
    assert lookup_candidates("bad") == ("bad",)


def test_vocabulary_ids_and_elongated_lookup() -> None:
    vocab = Vocabulary.build({"good": 5, "bad": 3, "rare": 1}, min_count=2)
    assert vocab.itos[:2] == (PAD, UNK)
    assert vocab.itos[: len(SPECIAL_TOKENS)] == SPECIAL_TOKENS
    assert "rare" not in vocab
    assert vocab.lookup("good") == vocab.stoi["good"]
    assert vocab.lookup("goooood") == vocab.stoi["good"]
    assert vocab.lookup("baaad") == vocab.stoi["bad"]
    assert vocab.lookup("zebra") == vocab.unk_id
    assert vocab.encode(tokenize("good zebra")) == [vocab.stoi["good"], vocab.unk_id]


def test_vocabulary_orders_extra_then_by_count() -> None:
    vocab = Vocabulary.build({"b": 2, "a": 2, "c": 9}, extra=["zz", "c"])
    assert vocab.itos[len(SPECIAL_TOKENS) :] == ("zz", "c", "a", "b")


def test_vocabulary_json_round_trip() -> None:
    vocab = Vocabulary.build({"good": 5})
    assert Vocabulary.from_json(vocab.to_json()).itos == vocab.itos


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"tokenizer_version": 99, "tokens": [PAD, UNK]}, "tokenizer version 99"),
        ({"tokenizer_version": 1, "tokens": [UNK, PAD]}, "must start with"),
        ({"tokenizer_version": 1, "tokens": [PAD, UNK, "a", "a"]}, "duplicate"),
        ({"tokenizer_version": 1, "tokens": "abc"}, "list of strings"),
    ],
)
def test_vocabulary_rejects_bad_json(data: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Vocabulary.from_json(data)
