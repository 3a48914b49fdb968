"""Streaming: /stream and /stream/ws, the state codec, and the equality with /predict.

The guarantee under test: a text sent in pieces, cut anywhere (mid-word, mid-emoji, at spaces),
ends with the probabilities one-shot /predict gives the whole text, for every cell type; and
every update on the way gives those of the text so far.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from asgi_lifespan import LifespanManager
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.types import ASGIApp, Message

from app.api.schemas import STREAM_EXAMPLES, StreamRequest, StreamResponse
from app.core.config import Settings
from app.http.ratelimit import TokenBucket
from app.inference.predictor import BFLOAT16_TOLERANCE, Predictor
from app.main import create_app
from app.streaming.codec import (
    FORMAT_VERSION,
    MAX_STREAM_CHARS,
    StateCodec,
    StreamState,
    stream_secret,
)
from app.streaming.engine import StreamEngine
from app.streaming.errors import StreamError
from app.streaming.service import StreamService
from app.streaming.text import final_length
from app.streaming.websocket import origin_refusal
from tests.conftest import build_checkpoint
from training.checkpoint import load_checkpoint
from training.model import RecurrentState
from training.tokenizer import tokenize

SECRET = "a-test-secret-of-some-length"
API_KEY = "a-stream-test-key-0123456789"
STREAMING_KINDS = ["rnn", "lstm", "gru"]  # lstm is the 2-layer one
TEXT = (
    "Not bad at all :) but the ending didn't work for me 😀🏻 ❤️ #happy @shop "
    "https://x.io/a?b=1 sooo goood… 2nd!!! isnt it"
)
TOLERANCE = 1e-5

# Characters that exercise every tokenizer rule, and the whitespace that ends a token.
ALPHABET = [
    *"abdnstxDP'\u2019:;=8-o*^)(][}{<>|/\\3!?.…#@_0123456789,%",
    *[" ", "\t", "\n", "\u00a0", "\u2028", "\x1c", "\u200b", "\ufe0f", "é", "ß"],
    *["😀", "🏻", "❤", "♥", "n't", "dont", "http://a.b", "www.", "xD", ":-)", "</3", "<3"],
]
TEXTS = st.lists(st.sampled_from(ALPHABET) | st.characters(codec="utf-8"), max_size=30).map("".join)


def cuts(text: str, pattern: str) -> list[str]:
    """`text` cut into pieces by a named pattern."""
    if pattern == "one-piece":
        return [text]
    if pattern == "every-char":
        return list(text)
    if pattern == "at-spaces":
        pieces = text.split(" ")
        return [pieces[0]] + [" " + piece for piece in pieces[1:]]
    if pattern == "before-spaces":
        return [piece + " " for piece in text.split(" ")[:-1]] + [text.rsplit(" ", maxsplit=1)[-1]]
    if pattern == "mid-word":
        bounds = [0, 2, 5, 9, 23, 31, 34, 42, 49, 60, len(text)]
    elif pattern == "mid-emoji":
        emoji = text.index("😀")
        heart = text.index("❤")
        bounds = [0, emoji + 1, heart + 1, len(text)]  # 😀|🏻 and ❤|\ufe0f
    else:
        bounds = sorted({0, len(text), *random.Random(pattern).sample(range(len(text)), 12)})
    return [text[a:b] for a, b in itertools.pairwise(bounds)]


PATTERNS = ["one-piece", "every-char", "at-spaces", "before-spaces", "mid-word", "mid-emoji"]
PATTERNS += ["random-1", "random-2"]


@asynccontextmanager
async def started(
    make_settings: Any, kind: str = "lstm", **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, ASGIApp]]:
    """The app for `kind`, its lifespan run: an HTTP client and the ASGI app (for WebSockets)."""
    overrides.setdefault("stream_secret", SECRET)
    # The stream's continuity is checked against a float32 /predict pass, to float32's
    # precision; a bfloat16 pass agrees to its own (test_a_bfloat16_pass_...).
    overrides.setdefault("inference_dtype", "float32")
    app = create_app(make_settings(kind, **overrides))
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver"
        ) as client,
    ):
        yield client, manager.app


async def stream_pieces(
    client: httpx.AsyncClient, pieces: Sequence[str], *, final: bool = True
) -> list[dict[str, Any]]:
    state = None
    updates = []
    for piece in pieces:
        response = await client.post("/stream", json={"text": piece, "state": state})
        assert response.status_code == 200, response.text
        updates.append(response.json())
        state = updates[-1]["state"]
    if final:
        response = await client.post("/stream", json={"state": state, "final": True})
        assert response.status_code == 200, response.text
        updates.append(response.json())
    return updates


def assert_close(actual: dict[str, float], expected: dict[str, float]) -> None:
    assert actual.keys() == expected.keys()
    for label, value in expected.items():
        assert abs(actual[label] - value) <= TOLERANCE, (label, actual, expected)


# ---------------------------------------------------------------------------------------------
# The tokenizer claim the stream relies on


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


# ---------------------------------------------------------------------------------------------
# The engine, directly: any text, cut anywhere, equals /predict at every step


@pytest.fixture(scope="module")
def engines(checkpoints: dict[str, Path]) -> dict[str, StreamEngine]:
    built = {}
    for kind in STREAMING_KINDS:
        settings_ = Settings(model_dir=checkpoints[kind], stream_secret=SECRET, max_tokens=10_000)
        predictor = Predictor(load_checkpoint(checkpoints[kind]))
        built[kind] = StreamService.build(settings_, predictor, executor=None).engine
    return built


@pytest.mark.parametrize("kind", STREAMING_KINDS)
def test_any_text_cut_anywhere_matches_predict(engines: dict[str, StreamEngine], kind: str) -> None:
    engine = engines[kind]
    predictor = engine.predictor

    @given(text=TEXTS, data=st.data())
    @settings(max_examples=150, deadline=None, derandomize=True, database=None)
    def check(text: str, data: st.DataObject) -> None:
        points = data.draw(st.lists(st.integers(0, len(text)), max_size=8).map(sorted))
        bounds = [0, *points, len(text)]
        pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
        state = None
        tokens = []
        for index, piece in enumerate([*pieces, ""]):
            final = index == len(pieces)
            update = engine.compute(engine.prepare(piece, state, final=final))
            state = update.state
            tokens += update.tokens
            so_far = text[: update.position]
            expected = tokenize(so_far)
            if not expected:
                assert update.prediction is None
                continue
            (one_shot,) = predictor.predict_ids([predictor.vocab.encode(expected)])
            assert update.prediction is not None
            assert update.prediction.label == one_shot.label or (
                abs(update.prediction.score - one_shot.score) <= TOLERANCE
            )
            assert_close(update.prediction.probabilities, one_shot.probabilities)
            assert tokens + update.pending == expected
        assert update.final
        assert update.position == len(text)
        assert tokens == tokenize(text)

    check()


# ---------------------------------------------------------------------------------------------
# POST /stream


@pytest.mark.anyio
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("kind", STREAMING_KINDS)
async def test_pieces_end_where_predict_does(make_settings: Any, kind: str, pattern: str) -> None:
    async with started(make_settings, kind) as (client, _):
        one_shot = (await client.post("/predict", json={"text": TEXT})).json()
        updates = await stream_pieces(client, cuts(TEXT, pattern))
    last = updates[-1]
    assert last["final"] is True
    assert last["pending"] == []
    assert last["prediction"]["label"] == one_shot["label"]
    assert_close(last["prediction"]["probabilities"], one_shot["probabilities"])
    # Offsets count from the stream's start; together the pieces' tokens are the text's.
    tokens = [token for update in updates for token in update["tokens"]]
    assert [(t["text"], t["start"], t["end"]) for t in tokens] == [
        (t.text, t.start, t.end) for t in tokenize(TEXT)
    ]
    assert all(TEXT[t["start"] : t["end"]] == t["text"] for t in tokens)
    assert last["token_count"] == len(tokens)
    assert last["position"] == len(TEXT)
    assert last["model"] == one_shot["model"]
    for update in updates:
        assert len(update["steps"]) == len(update["tokens"])
        assert len(update["pending_steps"]) == len(update["pending"])
        StreamResponse.model_validate(update)


@pytest.mark.anyio
async def test_a_bfloat16_pass_agrees_with_the_stream_to_its_precision(make_settings: Any) -> None:
    # The stream reads in float32; /predict's batched pass here in bfloat16 (where native).
    async with started(make_settings, "lstm", inference_dtype="bfloat16") as (client, _):
        one_shot = (await client.post("/predict", json={"text": TEXT})).json()
        updates = await stream_pieces(client, cuts(TEXT, "at-spaces"))
    streamed = updates[-1]["prediction"]["probabilities"]
    assert streamed.keys() == one_shot["probabilities"].keys()
    for label, p in one_shot["probabilities"].items():
        assert abs(streamed[label] - p) <= BFLOAT16_TOLERANCE


@pytest.mark.anyio
async def test_every_update_predicts_the_text_so_far(make_settings: Any) -> None:
    pieces = ["I loved the fil", "m but the end", "ing was awf", "ul :", "("]
    async with started(make_settings, "gru") as (client, _):
        updates = await stream_pieces(client, pieces, final=False)
        text = ""
        for piece, update in zip(pieces, updates, strict=True):
            text += piece
            one_shot = (await client.post("/predict", json={"text": text})).json()
            assert_close(update["prediction"]["probabilities"], one_shot["probabilities"])
    assert [t["text"] for t in updates[1]["tokens"]] == ["film", "but", "the"]
    assert [t["text"] for t in updates[1]["pending"]] == ["end"]
    assert [t["text"] for t in updates[3]["pending"]] == [":"]
    assert updates[4]["pending"][0]["text"] == ":("


@pytest.mark.anyio
async def test_steps_are_the_predictions_after_each_token(make_settings: Any) -> None:
    async with started(make_settings, "rnn") as (client, _):
        (update,) = await stream_pieces(client, ["not bad at all "], final=False)
        hidden = (await client.post("/hidden-states", json={"text": "not bad at all"})).json()
    assert update["pending"] == []
    for ours, theirs in zip(update["steps"], hidden["steps"], strict=True):
        assert ours["label"] == theirs["label"]
        assert_close(ours["probabilities"], theirs["probabilities"])
    assert_close(update["prediction"]["probabilities"], update["steps"][-1]["probabilities"])


@pytest.mark.anyio
async def test_a_stream_without_tokens_has_no_prediction_yet(make_settings: Any) -> None:
    async with started(make_settings, "gru") as (client, _):
        updates = await stream_pieces(client, ["", "   ", "\n"], final=False)
        assert [update["prediction"] for update in updates] == [None, None, None]
        assert updates[-1]["position"] == 4
        ended = await client.post("/stream", json={"state": updates[-1]["state"], "final": True})
        later = await client.post("/stream", json={"text": "good", "state": updates[-1]["state"]})
    assert ended.json()["prediction"] is None
    assert ended.json()["token_count"] == 0
    good = later.json()
    assert good["prediction"] is not None
    assert good["pending"][0] == {"text": "good", "start": 4, "end": 8, "id": 1, "oov": True}


@pytest.mark.anyio
async def test_a_finished_stream_cannot_continue(make_settings: Any) -> None:
    async with started(make_settings, "gru") as (client, _):
        updates = await stream_pieces(client, ["good"])
        response = await client.post("/stream", json={"text": "s", "state": updates[-1]["state"]})
    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "invalid_state",
        "message": "body.state: the stream was ended with 'final'; start a new stream",
        "details": [
            {
                "loc": ["body", "state"],
                "msg": "the stream was ended with 'final'; start a new stream",
                "type": "stream_finished",
            }
        ],
    }


@pytest.mark.anyio
async def test_any_replica_with_the_same_secret_continues_the_stream(make_settings: Any) -> None:
    async with started(make_settings, "lstm") as (first, _):
        (update,) = await stream_pieces(first, ["The food was gre"], final=False)
    async with started(make_settings, "lstm") as (second, _):
        response = await second.post(
            "/stream", json={"text": "at.", "state": update["state"], "final": True}
        )
        one_shot = (await second.post("/predict", json={"text": "The food was great."})).json()
    assert response.status_code == 200
    assert [t["text"] for t in response.json()["tokens"]] == ["great", "."]
    assert_close(response.json()["prediction"]["probabilities"], one_shot["probabilities"])


@pytest.mark.anyio
async def test_a_state_signed_with_another_secret_is_refused(make_settings: Any) -> None:
    async with started(make_settings, "lstm") as (first, _):
        (update,) = await stream_pieces(first, ["The food was gre"], final=False)
    async with started(make_settings, "lstm", stream_secret="another-secret-entirely") as (
        second,
        _,
    ):
        response = await second.post("/stream", json={"text": "at", "state": update["state"]})
    assert response.status_code == 422
    (detail,) = response.json()["error"]["details"]
    assert detail == {
        "loc": ["body", "state"],
        "msg": (
            "the state was not issued by this service: it was altered or truncated, or signed "
            "with another APP_STREAM_SECRET"
        ),
        "type": "state_signature",
    }


@pytest.mark.anyio
async def test_a_state_from_another_model_is_a_conflict(
    make_settings: Any, tmp_path: Path, checkpoints: dict[str, Path]
) -> None:
    # Same architecture, other weights: only the checkpoint's identity tells them apart.
    other = build_checkpoint(tmp_path / "lstm-other", "lstm", seed=1)
    async with started(make_settings, "lstm") as (first, _):
        (update,) = await stream_pieces(first, ["The food was gre"], final=False)
    async with started(make_settings, "lstm", model_dir=other) as (second, _):
        response = await second.post("/stream", json={"text": "at", "state": update["state"]})
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "state_model_mismatch"
    assert error["details"][0]["type"] == "state_model_mismatch"
    assert "start a new stream" in error["message"]


@pytest.mark.anyio
async def test_tampered_and_truncated_states_are_refused(make_settings: Any) -> None:
    async with started(make_settings, "lstm") as (client, _):
        (update,) = await stream_pieces(client, ["The food was gre"], final=False)
        raw = bytearray(base64.urlsafe_b64decode(update["state"] + "=" * 4))
        # One flipped bit in the header's position, in the text tail, in a float, in the MAC.
        flips = {"position": 14, "tail": 31, "float": 40, "mac": len(raw) - 1}
        states = {}
        for name, index in flips.items():
            tampered = bytearray(raw)
            tampered[index] ^= 0x01
            states[name] = base64.urlsafe_b64encode(bytes(tampered)).rstrip(b"=").decode()
        states["truncated"] = update["state"][:-8]
        states["extended"] = update["state"] + "AAAA"
        states["short"] = update["state"][:40]
        states["not-base64"] = update["state"][:-2] + "!!"
        states["empty"] = ""
        version = bytearray(raw)
        version[0] = FORMAT_VERSION + 1
        states["version"] = base64.urlsafe_b64encode(bytes(version)).rstrip(b"=").decode()
        types = {}
        for name, state in states.items():
            response = await client.post("/stream", json={"text": "at", "state": state})
            assert response.status_code == 422, (name, response.text)
            assert response.json()["error"]["code"] == "invalid_state"
            (detail,) = response.json()["error"]["details"]
            types[name] = detail["type"]
    assert types == {
        "position": "state_signature",
        "tail": "state_signature",
        "float": "state_signature",
        "mac": "state_signature",
        "truncated": "state_signature",
        "extended": "state_signature",
        "short": "state_malformed",
        "not-base64": "state_malformed",
        "empty": "state_malformed",
        "version": "state_malformed",
    }


@pytest.mark.anyio
async def test_a_bidirectional_model_cannot_stream(make_settings: Any) -> None:
    async with started(make_settings, "bilstm") as (client, _):
        response = await client.post("/stream", json={"text": "good"})
    assert response.status_code == 409
    assert response.json()["error"] == {
        "code": "streaming_unsupported",
        "message": (
            "the model is bidirectional: its backward direction reads each text from its end, "
            "which a stream has not reached; use /predict with the whole text"
        ),
        "details": [],
    }


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("body", "loc", "type_", "msg"),
    [
        pytest.param(
            {"text": "a " * 6},
            ["body", "text"],
            "chunk_too_long",
            "the piece has 12 characters; the limit is 10",
            id="chunk",
        ),
        pytest.param(
            {"text": "abcdefgh"},
            ["body", "text"],
            "pending_too_long",
            "the stream has 8 characters since its last whitespace; the limit is 6",
            id="pending",
        ),
        pytest.param(
            {"text": "!?!.,:;"},
            ["body", "text"],
            "pending_too_long",
            "the stream has 7 characters since its last whitespace; the limit is 6",
            id="pending-punctuation",
        ),
        pytest.param(
            {"text": ". , ; :"},
            ["body", "text"],
            "too_many_tokens",
            "the piece brings 4 tokens to read; the limit is 3: send smaller pieces",
            id="tokens",
        ),
        pytest.param(
            {"text": "good", "extra": 1},
            ["body", "extra"],
            "extra_forbidden",
            "Extra inputs are not permitted",
            id="extra-field",
        ),
        pytest.param(
            {"text": "good", "final": "yes"},
            ["body", "final"],
            "bool_type",
            "Input should be a valid boolean",
            id="strict-bool",
        ),
    ],
)
async def test_limits_and_validation(
    make_settings: Any, body: dict[str, Any], loc: list[str], type_: str, msg: str
) -> None:
    limits = {"stream_max_chunk_chars": 10, "stream_max_pending_chars": 6, "max_tokens": 3}
    async with started(make_settings, "gru", **limits) as (client, _):
        response = await client.post("/stream", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"] == [{"loc": loc, "msg": msg, "type": type_}]


@pytest.mark.anyio
async def test_a_lone_surrogate_is_refused(make_settings: Any) -> None:
    async with started(make_settings, "gru") as (client, _):
        response = await client.post(
            "/stream",
            content=b'{"text": "\\ud83d"}',
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["type"] == "invalid_unicode"


@pytest.mark.anyio
async def test_stream_needs_the_api_key_when_keys_are_set(make_settings: Any) -> None:
    async with started(make_settings, "gru", api_keys=API_KEY) as (client, _):
        refused = await client.post("/stream", json={"text": "good"})
        allowed = await client.post(
            "/stream", json={"text": "good"}, headers={"authorization": f"Bearer {API_KEY}"}
        )
    assert refused.status_code == 401
    assert allowed.status_code == 200


@pytest.mark.anyio
async def test_openapi_documents_the_stream(make_settings: Any) -> None:
    async with started(make_settings, "gru", stream_max_chunk_chars=77) as (client, _):
        schema = (await client.get("/openapi.json")).json()
    operation = schema["paths"]["/stream"]["post"]
    assert set(operation["responses"]) == {"200", "400", "401", "409", "413", "415", "422", "503"}
    examples = operation["requestBody"]["content"]["application/json"]["examples"]
    assert examples.keys() == STREAM_EXAMPLES.keys()
    for example in examples.values():
        StreamRequest.model_validate(example["value"])
    components = schema["components"]["schemas"]
    assert components["StreamRequest"]["properties"]["text"]["maxLength"] == 77
    for example in components["StreamResponse"]["examples"]:
        StreamResponse.model_validate(example)
    assert "/stream/ws" not in schema["paths"]


# ---------------------------------------------------------------------------------------------
# The codec and the secret


def make_codec(model_sha256: str = "ab" * 32, **overrides: Any) -> StateCodec:
    values: dict[str, Any] = {
        "secret": b"k" * 32,
        "model_sha256": model_sha256,
        "num_layers": 2,
        "hidden_size": 3,
        "has_cell": True,
        "dtype": torch.float64,
        "ttl_s": 60,
        "max_tail_chars": 10,
    }
    values.update(overrides)
    return StateCodec(**values)


def sample_state(tail: str = "gre") -> StreamState:
    hidden = torch.arange(6, dtype=torch.float64).view(2, 3) / 7
    return StreamState(RecurrentState(hidden, -hidden), tail, 42, 7, finished=False)


def test_codec_round_trip_is_exact() -> None:
    codec = make_codec()
    state = sample_state("gré😀")
    decoded = codec.decode(codec.encode(state))
    assert decoded.tail == "gré😀"
    assert (decoded.position, decoded.token_count, decoded.finished) == (42, 7, False)
    assert torch.equal(decoded.recurrent.hidden, state.recurrent.hidden)
    assert decoded.recurrent.cell is not None
    assert state.recurrent.cell is not None
    assert torch.equal(decoded.recurrent.cell, state.recurrent.cell)
    # Header 31 + tail 8 (UTF-8) + 12 float64 + MAC 32 bytes, base64url without padding.
    assert len(codec.encode(state)) == -(-(31 + 8 + 96 + 32) * 4 // 3)


def test_codec_float32_state_is_half_the_size() -> None:
    small = make_codec(dtype=torch.float32)
    assert len(base64.urlsafe_b64decode(small.encode(sample_state()) + "==")) == 31 + 3 + 48 + 32


def test_states_expire() -> None:
    now = [1_000_000.0]
    codec = make_codec(clock=lambda: now[0])
    token = codec.encode(sample_state())
    now[0] += 60
    assert codec.decode(token).position == 42
    now[0] += 1
    with pytest.raises(StreamError, match=r"the state expired: it is 61 s old") as caught:
        codec.decode(token)
    assert caught.value.type == "state_expired"


def test_a_state_for_another_shape_or_model_is_refused() -> None:
    token = make_codec().encode(sample_state())
    with pytest.raises(StreamError) as other_model:
        make_codec("cd" * 32).decode(token)
    assert (other_model.value.status, other_model.value.type) == (409, "state_model_mismatch")
    with pytest.raises(StreamError) as other_secret:
        make_codec(secret=b"j" * 32).decode(token)
    assert other_secret.value.type == "state_signature"


def test_a_state_in_another_precision_is_a_conflict() -> None:
    # The same checkpoint served by a replica computing streams in float32: not converted.
    token = make_codec(dtype=torch.float64).encode(sample_state())
    with pytest.raises(StreamError) as caught:
        make_codec(dtype=torch.float32).decode(token)
    assert (caught.value.status, caught.value.type) == (409, "state_model_mismatch")
    assert "holds float64 numbers but this service computes streams in float32" in str(caught.value)


def test_states_issued_in_the_future_are_refused_beyond_the_skew() -> None:
    now = [1_000_000.0]
    codec = make_codec(clock=lambda: now[0])
    token = codec.encode(sample_state())
    now[0] -= 60  # another replica's clock, a minute ahead of this one's
    assert codec.decode(token).position == 42
    now[0] -= 2
    with pytest.raises(StreamError, match="issued 62 s in the future") as caught:
        codec.decode(token)
    assert caught.value.type == "state_malformed"


def test_a_stream_stops_at_its_length_cap(engines: dict[str, StreamEngine]) -> None:
    engine = engines["gru"]
    start = engine.compute(engine.prepare("good ", None, final=False))
    near = engine.codec.decode(start.state)
    at_cap = StreamState(near.recurrent, "", MAX_STREAM_CHARS - 3, near.token_count)
    state = engine.codec.encode(at_cap)
    with pytest.raises(StreamError, match="the stream would reach 1000000001 characters") as caught:
        engine.prepare("food", state, final=False)
    assert (caught.value.status, caught.value.type, caught.value.field) == (
        422,
        "stream_too_long",
        "text",
    )
    last = engine.compute(engine.prepare("bad", state, final=True))
    assert last.position == MAX_STREAM_CHARS
    assert engine.codec.decode(last.state).position == MAX_STREAM_CHARS


def test_the_secret_and_where_it_comes_from(make_settings: Any) -> None:
    configured = stream_secret(make_settings("gru", stream_secret=SECRET))
    assert configured == (SECRET.encode(), "APP_STREAM_SECRET")
    first, source = stream_secret(make_settings("gru"))
    assert source == "random"
    assert len(first) == 32
    assert first != stream_secret(make_settings("gru"))[0]
    # The API keys never enter it: the same keys give unrelated secrets.
    keyed = make_settings("gru", api_keys=API_KEY)
    with_keys = {stream_secret(keyed) for _ in range(2)}
    assert len(with_keys) == 2
    assert {source for _, source in with_keys} == {"random"}
    with pytest.raises(ValueError, match="APP_STREAM_SECRET: each value needs 16 or more"):
        make_settings("gru", stream_secret="short")


def stream_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "app.streaming" and r.levelno >= level]


@pytest.mark.anyio
async def test_one_worker_logs_nothing_above_info_without_a_secret(
    make_settings: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKERS", "1")
    caplog.set_level(logging.INFO, logger="app.streaming")
    async with started(make_settings, "gru", stream_secret=None):
        pass
    assert stream_records(caplog, logging.WARNING) == []
    (info,) = stream_records(caplog, logging.INFO)
    assert "random key made at start-up" in info.getMessage()
    caplog.clear()
    async with started(make_settings, "gru"):  # APP_STREAM_SECRET set: nothing to say
        pass
    assert stream_records(caplog, logging.DEBUG) == []


@pytest.mark.anyio
async def test_several_workers_warn_once_without_a_secret(
    make_settings: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKERS", "3")
    caplog.set_level(logging.INFO, logger="app.streaming")
    async with started(make_settings, "gru", stream_secret=None):
        pass
    (warning,) = stream_records(caplog, logging.WARNING)
    message = warning.getMessage()
    assert "shared by this server's 3 workers" in message
    assert "another replica, or this server after a restart, refuses" in message
    assert "python -c 'import secrets; print(secrets.token_hex(32))'" in message
    assert "\n" not in message
    caplog.clear()
    async with started(make_settings, "gru"):
        pass
    assert stream_records(caplog, logging.DEBUG) == []
    # A bad WORKERS is `python -m app`'s to refuse; building the app does not fail on it.
    monkeypatch.setenv("WORKERS", "many")
    assert stream_secret(make_settings("gru"))[1] == "random"


def test_the_per_connection_bucket_allows_bursts_then_the_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(2.0, 3, clock=lambda: now[0])
    assert [bucket.acquire() for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]
    now[0] += 0.5
    assert bucket.acquire() == 0.0
    assert bucket.acquire() == pytest.approx(0.5)
    now[0] += 10
    assert sum(bucket.acquire() == 0.0 for _ in range(10)) == 3
    with pytest.raises(ValueError, match="positive rate"):
        TokenBucket(0.0, 3)


# ---------------------------------------------------------------------------------------------
# /stream/ws, driven in process through the ASGI interface


class WebSocketSession:
    """A WebSocket client speaking ASGI to the app directly (httpx has no WebSocket support)."""

    def __init__(self, app: ASGIApp, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        self._incoming: asyncio.Queue[Message] = asyncio.Queue()
        self._outgoing: asyncio.Queue[Message] = asyncio.Queue()
        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "scheme": "ws",
            "path": "/stream/ws",
            "raw_path": b"/stream/ws",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"testserver"), *headers],
            "client": ("127.0.0.1", 50000),
            "server": ("testserver", 80),
            "subprotocols": [],
        }
        self._task = asyncio.ensure_future(app(scope, self._incoming.get, self._outgoing.put))

    async def connect(self) -> None:
        await self._incoming.put({"type": "websocket.connect"})
        assert (await self.receive())["type"] == "websocket.accept"

    async def receive(self) -> Message:
        return await asyncio.wait_for(self._outgoing.get(), timeout=10)

    async def send(self, payload: Any) -> None:
        await self.send_text(json.dumps(payload))

    async def send_text(self, text: str) -> None:
        await self._incoming.put({"type": "websocket.receive", "text": text})

    async def send_bytes(self, data: bytes) -> None:
        await self._incoming.put({"type": "websocket.receive", "bytes": data})

    async def receive_json(self) -> Any:
        message = await self.receive()
        assert message["type"] == "websocket.send", message
        return json.loads(message["text"])

    async def expect_close(self) -> tuple[int, str, dict[str, Any] | None]:
        """(close code, reason, the error message sent before it if any)."""
        message = await self.receive()
        error = None
        if message["type"] == "websocket.send":
            error = json.loads(message["text"])
            message = await self.receive()
        assert message["type"] == "websocket.close", message
        await asyncio.wait_for(self._task, timeout=10)
        return message["code"], message.get("reason", ""), error

    async def disconnect(self) -> None:
        if not self._task.done():
            await self._incoming.put({"type": "websocket.disconnect", "code": 1000})
            await asyncio.wait_for(self._task, timeout=10)


@asynccontextmanager
async def websocket(
    app: ASGIApp, headers: Sequence[tuple[bytes, bytes]] = ()
) -> AsyncIterator[WebSocketSession]:
    session = WebSocketSession(app, headers)
    await session.connect()
    try:
        yield session
    finally:
        await session.disconnect()


@pytest.mark.anyio
async def test_websocket_carries_the_same_messages(make_settings: Any) -> None:
    pieces = cuts(TEXT, "mid-word")
    async with started(make_settings, "lstm") as (client, app):
        over_http = await stream_pieces(client, pieces)
        async with websocket(app) as ws:
            state = None
            over_ws = []
            for piece in pieces:
                await ws.send({"text": piece, "state": state})
                over_ws.append(await ws.receive_json())
                state = over_ws[-1]["state"]
            await ws.send({"state": state, "final": True})
            over_ws.append(await ws.receive_json())
            # A finished stream does not end the connection: a new one can start on it.
            await ws.send({"text": "again", "state": None})
            assert (await ws.receive_json())["pending"][0]["text"] == "again"
    for ws_update, http_update in zip(over_ws, over_http, strict=True):
        ws_update.pop("state")
        http_update.pop("state")
        assert ws_update == http_update


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("send", "code", "reason"),
    [
        pytest.param(("bytes", b'{"text": "hi"}'), 1003, "unsupported_data", id="binary"),
        pytest.param(("text", '{"text": "hi"'), 1007, "malformed_json", id="not-json"),
        pytest.param(("text", json.dumps({"text": "x" * 2000})), 1009, "message_too_big", id="big"),
        pytest.param(("json", {"text": 3}), 1008, "validation_error", id="invalid"),
        pytest.param(("json", [1, 2]), 1008, "validation_error", id="not-an-object"),
        pytest.param(("json", {"text": "hi", "state": "AAAA"}), 1008, "invalid_state", id="state"),
        pytest.param(("json", {"text": "ab" * 200}), 1008, "validation_error", id="pending"),
    ],
)
async def test_websocket_closes_cleanly_on_bad_input(
    make_settings: Any, send: tuple[str, Any], code: int, reason: str
) -> None:
    limit = {"stream_ws_max_message_bytes": 1024}
    async with started(make_settings, "gru", **limit) as (_, app), websocket(app) as ws:
        kind, payload = send
        if kind == "bytes":
            await ws.send_bytes(payload)
        elif kind == "text":
            await ws.send_text(payload)
        else:
            await ws.send(payload)
        closed_with, closed_because, error = await ws.expect_close()
    assert (closed_with, closed_because) == (code, reason)
    assert error is not None
    assert error["error"]["code"] == reason
    assert error["error"]["message"]
    assert error["request_id"]


@pytest.mark.anyio
async def test_websocket_rate_limit(make_settings: Any) -> None:
    limits = {"stream_ws_rate": 0.001, "stream_ws_burst": 3}
    async with started(make_settings, "gru", **limits) as (_, app), websocket(app) as ws:
        for _ in range(3):
            await ws.send({"text": "good "})
            assert "state" in await ws.receive_json()
        await ws.send({"text": "good "})
        code, reason, error = await ws.expect_close()
    assert (code, reason) == (1008, "rate_limited")
    assert error is not None
    message = "More than 0.001 messages per second (bursts of 3); slow down."
    assert error["error"]["message"] == message


@pytest.mark.anyio
async def test_websocket_idle_connections_are_closed(make_settings: Any) -> None:
    async with (
        started(make_settings, "gru", stream_ws_idle_timeout_s=0.05) as (_, app),
        websocket(app) as ws,
    ):
        code, reason, error = await ws.expect_close()
    assert (code, reason, error) == (1001, "idle", None)


@pytest.mark.anyio
async def test_websocket_on_a_bidirectional_model(make_settings: Any) -> None:
    async with started(make_settings, "bilstm") as (_, app), websocket(app) as ws:
        await ws.send({"text": "good"})
        code, reason, error = await ws.expect_close()
    assert (code, reason) == (1008, "streaming_unsupported")
    assert error is not None
    assert "bidirectional" in error["error"]["message"]


@pytest.mark.anyio
async def test_websocket_authentication(make_settings: Any) -> None:
    key = API_KEY
    async with started(make_settings, "gru", api_keys=key) as (_, app):
        # On the handshake, as non-browser clients do.
        async with websocket(app, [(b"authorization", f"Bearer {key}".encode())]) as ws:
            await ws.send({"text": "good"})
            assert "state" in await ws.receive_json()
        async with websocket(app, [(b"authorization", b"Bearer wrong-key-1")]) as ws:
            code, reason, error = await ws.expect_close()
            assert (code, reason) == (1008, "unauthorized")
            assert error is not None
            assert "first message" in error["error"]["message"]
        # As the first message, as browsers must.
        async with websocket(app) as ws:
            await ws.send({"api_key": key})
            assert await ws.receive_json() == {"authenticated": True}
            await ws.send({"text": "good"})
            assert "state" in await ws.receive_json()
        async with websocket(app) as ws:
            await ws.send({"api_key": "wrong-key-1"})
            assert (await ws.expect_close())[:2] == (1008, "unauthorized")
        async with websocket(app) as ws:
            await ws.send({"text": "good"})
            assert (await ws.expect_close())[:2] == (1008, "unauthorized")


def handshake(
    origin: str | None, host: str, server: tuple[str, int] = ("10.0.0.5", 8000)
) -> dict[str, Any]:
    """What the Origin rule reads of a handshake: its Origin and Host, and where it arrived."""
    return {
        "origin_value": None if origin is None else origin.encode(),
        "host_value": host.encode(),
        "server": server,
    }


LOOPBACK = ("127.0.0.1", 8000)


@pytest.mark.parametrize(
    ("seen", "listed", "keyed", "accepted"),
    [
        pytest.param(handshake(None, "any.test"), (), False, True, id="no-origin"),
        pytest.param(
            handshake("http://svc.test:8000", "svc.test:8000"), (), False, True, id="same"
        ),
        pytest.param(handshake("https://svc.test", "svc.test"), (), False, True, id="default-port"),
        pytest.param(
            handshake("http://svc.test", "svc.test:443"), (), False, False, id="80-vs-443"
        ),
        pytest.param(handshake("https://svc.test", "svc.test:443"), (), False, True, id="443"),
        pytest.param(handshake("http://svc.test:8080", "svc.test:80"), (), False, False, id="port"),
        # A proxy may drop the port from Host (nginx's $host): the name is compared alone.
        pytest.param(handshake("http://svc.test:8080", "svc.test"), (), False, True, id="no-port"),
        pytest.param(
            handshake("http://SVC.test:8000", "svc.TEST:8000"), (), False, True, id="case"
        ),
        pytest.param(handshake("http://other.test", "svc.test"), (), False, False, id="foreign"),
        pytest.param(handshake("http://other.test", "svc.test"), ("*",), False, True, id="star"),
        pytest.param(
            handshake("http://[::1]:8000", "[::1]:8000", ("::1", 8000)), (), False, True, id="v6"
        ),
        pytest.param(handshake("http://a.test:8000", "a.test:8000", LOOPBACK), (), False, False),
        pytest.param(handshake("http://a.test:8000", "a.test:8000", LOOPBACK), (), True, True),
        pytest.param(
            handshake("http://a.test:8000", "a.test:8000", LOOPBACK),
            ("http://a.test:8000",),
            False,
            True,
            id="rebinding-guard-listed",
        ),
        pytest.param(
            handshake("http://a.test:8000", "a.test:8000", ("::ffff:127.0.0.1", 8000)),
            (),
            False,
            False,
            id="rebinding-guard-v4-mapped",
        ),
        pytest.param(
            handshake("http://localhost:8000", "localhost:8000", LOOPBACK), (), False, True
        ),
        pytest.param(handshake("http://svc.test", "svc.test:x"), (), False, False, id="bad-host"),
        pytest.param(handshake("http://svc.test", "u@svc.test"), (), False, False, id="userinfo"),
        pytest.param(handshake("http://u@svc.test", "svc.test"), (), False, False, id="userinfo2"),
    ],
)
def test_the_websocket_origin_rule(
    seen: dict[str, Any], listed: tuple[str, ...], keyed: bool, accepted: bool
) -> None:
    assert (origin_refusal(**seen, cors_origins=listed, keyed=keyed) is None) is accepted


# ---------------------------------------------------------------------------------------------
# The explorer page follows typing through the stream (a real browser; see test_explorer_page)


@pytest.mark.slow
def test_the_explorer_page_sends_only_new_characters(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    from tests.app.test_explorer_page import (
        CHROMIUM,
        CHROMIUM_ARGS,
        LOADED,
        PageWatch,
        uvicorn_server,
    )

    typed = " great :)"
    text = "The food was" + typed
    sent: list[dict[str, Any]] = []
    with (
        uvicorn_server(checkpoints["lstm"], tmp_path / "server.log") as base_url,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            watched = PageWatch(browser)
            page = watched.page
            page.on(
                "request",
                lambda request: (
                    sent.append(json.loads(request.post_data or "{}"))
                    if request.url.endswith("/stream")
                    else None
                ),
            )
            page.goto(f"{base_url}/?text=The%20food%20was")
            expect(page.locator("#status")).to_have_text(LOADED)
            assert sent == []  # nothing typed yet
            page.locator("#text").press("End")
            page.keyboard.type(typed, delay=40)
            deadline = time.monotonic() + 20
            while "".join(body["text"] for body in sent) != text and time.monotonic() < deadline:
                page.wait_for_timeout(50)
            expected = httpx.post(f"{base_url}/predict", json={"text": text}, timeout=10).json()
            expect(page.locator("#label")).to_have_text(expected["label"])
            expect(page.locator("#score")).to_have_text(
                f"{expected['score'] * 100:.1f}% probability"
            )
            watched.close()
        finally:
            browser.close()
    assert sent[0]["state"] is None
    assert all(body["state"] for body in sent[1:])
    assert len(sent) > 2  # keystrokes, not one request at the end
    # Each request carried only what was new: together, the text once.
    assert "".join(body["text"] for body in sent) == text
    assert watched.errors == []
    assert watched.console_errors() == []


@pytest.mark.slow
def test_the_workers_of_one_server_share_the_default_secret(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """`python -m app` with 2 workers and no APP_STREAM_SECRET: any worker continues a stream."""
    import sys

    from tests.app.test_server import free_port, running, server_env, wait_ready

    port = free_port()
    env = server_env(checkpoints["gru"], port, WORKERS="2", APP_ACCESS_LOG="false")
    base_url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    state = None
    with running([sys.executable, "-m", "app"], env, log) as process:
        wait_ready(base_url, process, log)
        # A new connection for every piece, so the kernel picks a worker for each one.
        for start in range(0, len(TEXT), 4):
            body = {"text": TEXT[start : start + 4], "state": state}
            response = httpx.post(f"{base_url}/stream", json=body, timeout=10)
            assert response.status_code == 200, response.text
            state = response.json()["state"]
        one_shot = httpx.post(f"{base_url}/predict", json={"text": TEXT}, timeout=10).json()
        last = httpx.post(f"{base_url}/stream", json={"state": state, "final": True}, timeout=10)
    assert_close(last.json()["prediction"]["probabilities"], one_shot["probabilities"])
    # Said once, by the arbiter that made the key before forking, not once per worker.
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    warnings = [line for line in lines if line["level"] == "WARNING"]
    assert len(warnings) == 1, warnings
    assert warnings[0]["logger"] == "app.streaming"
    assert "shared by this server's 2 workers" in warnings[0]["message"]
