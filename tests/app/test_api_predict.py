"""POST /predict through the real app, in process."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.conftest import CHECKPOINT_KINDS, LABELS

pytestmark = pytest.mark.anyio

TEXTS = [
    "I love this film, it is great",
    "The service was terrible :(",
    "It arrived on Tuesday.",
    "zyxxy quorbl flimflam",
    "Not bad at all!!!",
]


def assert_prediction(body: dict[str, Any]) -> None:
    assert set(body) >= {"label", "score", "probabilities"}
    assert list(body["probabilities"]) == list(LABELS)
    assert body["label"] in LABELS
    assert (
        body["score"] == body["probabilities"][body["label"]] == max(body["probabilities"].values())
    )
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)


async def test_one_text(client: httpx.AsyncClient) -> None:
    response = await client.post("/predict", json={"text": "I love this film"})
    assert response.status_code == 200
    body = response.json()
    assert_prediction(body)
    assert body["model"]["name"] == "default"
    assert len(body["model"]["version"]) == 12


async def test_batch_in_order_and_equal_to_single(client: httpx.AsyncClient) -> None:
    singles = [(await client.post("/predict", json={"text": t})).json() for t in TEXTS]
    response = await client.post("/predict", json={"texts": TEXTS})
    assert response.status_code == 200
    body = response.json()
    assert len(body["predictions"]) == len(TEXTS)
    for single, batched in zip(singles, body["predictions"], strict=True):
        assert_prediction(batched)
        assert batched == {key: value for key, value in single.items() if key != "model"}
    assert body["model"] == singles[0]["model"]


@pytest.mark.parametrize("kind", list(CHECKPOINT_KINDS))
async def test_concurrent_requests_equal_single_requests(serve: Any, kind: str) -> None:
    async with serve(kind) as client:
        alone = [(await client.post("/predict", json={"text": t})).json() for t in TEXTS]
        # Sent at once, the texts are micro-batched with each other: same answers, exactly.
        responses = await asyncio.gather(
            *(client.post("/predict", json={"text": t}) for t in TEXTS * 4),
            client.post("/predict", json={"texts": TEXTS[::-1]}),
        )
    assert [r.status_code for r in responses] == [200] * (len(TEXTS) * 4 + 1)
    assert [r.json() for r in responses[:-1]] == alone * 4
    batch = responses[-1].json()["predictions"]
    assert batch == [{k: v for k, v in a.items() if k != "model"} for a in alone[::-1]]


async def test_float64_mode_serves_too(serve: Any) -> None:
    async with serve("rnn", inference_dtype="float64", inference_thread=False) as client:
        response = await client.post("/predict", json={"texts": TEXTS})
    assert response.status_code == 200
    for prediction in response.json()["predictions"]:
        assert_prediction(prediction)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("Great product 👍🏽🔥", id="emoji"),
        pytest.param("👨‍👩‍👧‍👦", id="zwj-family-emoji"),
        pytest.param("هذا المنتج رائع", id="arabic-rtl"),
        pytest.param("\u202eevil\u202c text", id="bidi-override"),
        pytest.param("zero\u200bwidth\u200cjoiners\u200d", id="zero-width-inside"),
        pytest.param("nul\x00byte", id="nul-inside"),
        pytest.param("e\u0301\u0301\u0301 combining", id="combining"),
        pytest.param("\ufeffBOM first", id="bom"),
        pytest.param("日本語のテキスト", id="cjk"),
        pytest.param("?", id="punctuation-only"),
        pytest.param("a" * 2000, id="longest-allowed-word"),
        pytest.param("\U0010ffff\U000e0001 x", id="astral-private"),
    ],
)
async def test_any_unicode_gets_a_prediction(client: httpx.AsyncClient, text: str) -> None:
    response = await client.post("/predict", json={"text": text})
    assert response.status_code == 200, response.text
    assert_prediction(response.json())


@pytest.mark.parametrize(
    ("text", "error_type"),
    [
        pytest.param("", "empty_text", id="empty"),
        pytest.param(" \t\n\u3000\u00a0", "empty_text", id="whitespace"),
        pytest.param("\u200b\u200c\u200d\u2060\ufeff", "no_tokens", id="zero-width-only"),
        pytest.param("\x00\x01\x7f", "no_tokens", id="control-only"),
    ],
)
async def test_texts_without_content_are_422(
    client: httpx.AsyncClient, text: str, error_type: str
) -> None:
    response = await client.post("/predict", json={"text": text})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert error["details"][0]["type"] == error_type
    assert error["details"][0]["loc"] == ["body", "text"]


async def test_lone_surrogate_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/predict",
        content=b'{"text": "broken \\ud800 half"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["type"] == "invalid_unicode"


async def test_batch_errors_name_each_bad_text(client: httpx.AsyncClient) -> None:
    texts = ["fine", "\u200b", "also fine", "x " * 300]
    response = await client.post("/predict", json={"texts": texts})
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert [(d["loc"], d["type"]) for d in details] == [
        (["body", "texts", 1], "no_tokens"),
        (["body", "texts", 3], "too_many_tokens"),
    ]
