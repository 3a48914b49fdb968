"""Probes, model card, metrics, request ids, logs, docs pages and CORS."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LABELS
from training.checkpoint import MANIFEST_FILE, sha256_file

pytestmark = pytest.mark.anyio


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_after_start_up(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "ready"
    assert response.json()["model"]["name"] == "default"


async def test_model_card(client: httpx.AsyncClient, checkpoints: dict[str, Path]) -> None:
    response = await client.get("/model")
    assert response.status_code == 200
    card = response.json()
    sha256 = sha256_file(checkpoints["lstm"] / MANIFEST_FILE)
    assert card["sha256"] == sha256
    assert card["version"] == sha256[:12]
    assert card["name"] == "default"
    assert card["labels"] == list(LABELS)
    assert card["vocab_size"] > 11
    assert card["architecture"] | {"parameters": 0} == {
        "cell": "lstm",
        "embedding_dim": 16,
        "hidden_size": 12,
        "num_layers": 2,
        "bidirectional": False,
        "dropout": 0.0,
        "parameters": 0,
    }
    assert card["architecture"]["parameters"] > 1000
    assert card["metrics"] == {"test": {"accuracy": 0.333, "macro_f1": 0.25}}
    assert card["card"]["seed"] == 0
    assert card["limits"]["max_texts"] == 64


async def test_metrics(client: httpx.AsyncClient) -> None:
    await client.post("/predict", json={"texts": ["good", "bad", "meh"]})
    await client.post("/predict", json={"text": ""})
    await client.get("/no/such/page")
    await client.get("/static/no/such/file.js")
    await client.get("/openapi.json")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert (
        'rnn_sentiment_http_requests_total{method="POST",route="/predict",status="200"} 1.0' in text
    )
    assert (
        'rnn_sentiment_http_requests_total{method="POST",route="/predict",status="422"} 1.0' in text
    )
    assert (
        'rnn_sentiment_http_requests_total{method="GET",route="<unmatched>",status="404"} 1.0'
        in text
    )
    assert (
        'rnn_sentiment_http_requests_total{method="GET",route="/static/{path}",status="404"} 1.0'
        in text
    )
    assert (
        'rnn_sentiment_http_requests_total{method="GET",route="/openapi.json",status="200"} 1.0'
        in text
    )
    assert (
        'rnn_sentiment_http_request_duration_seconds_bucket{le="0.005",method="POST",route="/predict"}'
        in text
    )
    assert 'rnn_sentiment_inference_batch_size_bucket{le="4.0",model="default"} 1.0' in text
    assert 'rnn_sentiment_inference_batch_duration_seconds_count{model="default"} 1.0' in text
    assert 'rnn_sentiment_inference_queue_depth{model="default"} 0.0' in text
    assert 'rnn_sentiment_inference_requests_total{kind="predict",model="default"} 1.0' in text
    predicted = re.findall(
        r'rnn_sentiment_predictions_total\{label="\w+",model="default"\} (\S+)', text
    )
    assert sum(float(count) for count in predicted) == 3  # the three texts of the batch
    assert re.search(
        r'rnn_sentiment_model_info\{name="default",version="[0-9a-f]{12}"\} 1\.0', text
    )
    assert "rnn_sentiment_ready 1.0" in text
    assert "rnn_sentiment_process_resident_memory_bytes" in text


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    given = await client.get("/healthz", headers={"x-request-id": "abc-123.def_456"})
    assert given.headers["x-request-id"] == "abc-123.def_456"
    made = await client.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{16}", made.headers["x-request-id"])
    hostile = await client.get("/healthz", headers={"x-request-id": 'a b"<script>' + "x" * 200})
    assert re.fullmatch(r"[0-9a-f]{16}", hostile.headers["x-request-id"])
    error = await client.post("/predict", json={}, headers={"x-request-id": "trace-1"})
    assert error.json()["request_id"] == "trace-1"


async def test_logs_are_json_lines_with_the_request_id(serve: Any, capfd: Any) -> None:
    async with serve("rnn") as client:
        await client.post("/predict", json={"text": "hi"}, headers={"x-request-id": "log-me-1"})
    lines = [
        json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")
    ]
    access = [line for line in lines if line["logger"] == "app.access"]
    assert access
    assert access[0]["request_id"] == "log-me-1"
    assert access[0]["status"] == 200
    assert access[0]["route"] == "/predict"
    assert {"time", "level", "message", "duration_ms"} <= set(access[0])
    assert any(line["message"] == "ready" for line in lines)


@pytest.mark.parametrize(
    ("page", "assets"),
    [
        ("/docs", ["/static/swagger-ui/swagger-ui-bundle.js", "/static/swagger-ui/swagger-ui.css"]),
        ("/redoc", ["/static/redoc/redoc.standalone.js"]),
    ],
)
async def test_docs_pages_use_only_local_assets(
    client: httpx.AsyncClient, page: str, assets: list[str]
) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    html = response.text
    assert "/openapi.json" in html
    assert not re.search(r"(src|href)=\"https?://", html)  # nothing from a CDN
    for asset in assets:
        assert asset in html
        fetched = await client.get(asset)
        assert fetched.status_code == 200
        assert len(fetched.content) > 10_000


async def test_docs_can_be_turned_off(serve: Any) -> None:
    async with serve("rnn", docs=False) as client:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert (await client.get(path)).status_code == 404


async def test_home_points_at_the_docs_without_the_explorer(serve: Any) -> None:
    async with serve("rnn", explorer=False) as client:
        response = await client.get("/")
    assert response.status_code == 307
    assert response.headers["location"] == "/docs"


async def test_cors(serve: Any) -> None:
    async with serve("rnn", cors_origins="https://app.example, https://admin.example") as client:
        preflight = await client.options(
            "/predict",
            headers={
                "origin": "https://app.example",
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type,authorization",
            },
        )
        simple = await client.post(
            "/predict", json={"text": "hi"}, headers={"origin": "https://admin.example"}
        )
        foreign = await client.post(
            "/predict", json={"text": "hi"}, headers={"origin": "https://evil.example"}
        )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert simple.headers["access-control-allow-origin"] == "https://admin.example"
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-origin" not in foreign.headers


async def test_no_cors_headers_by_default(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/predict", json={"text": "hi"}, headers={"origin": "https://app.example"}
    )
    assert "access-control-allow-origin" not in response.headers
