"""POST /stream: pieces end where /predict does, and every refusal in the common error shape;
the explorer page follows typing through it.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.api.schemas import STREAM_EXAMPLES, StreamRequest, StreamResponse
from app.inference.results import BFLOAT16_TOLERANCE
from app.streaming.codec import FORMAT_VERSION
from tests.app.stream.conftest import (
    API_KEY,
    PATTERNS,
    STREAMING_KINDS,
    TEXT,
    assert_close,
    cuts,
    started,
    stream_pieces,
)
from tests.conftest import build_checkpoint
from training.tokenizer import tokenize


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
        hidden = (
            await client.post("/hidden-states", json={"text": "not bad at all", "full": True})
        ).json()
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
            'unknown field: send {"text": "...", "state": "...", "final": true, "model": "..."}',
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
    statuses = {"200", "400", "401", "404", "409", "413", "415", "422", "503"}
    assert set(operation["responses"]) == statuses
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
