"""/openapi.json is a valid OpenAPI document and documents every body and error by example."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.openapi.utils import get_openapi
from openapi_spec_validator import validate
from pydantic import BaseModel

from app.api.schemas import (
    BatchPredictResponse,
    ErrorResponse,
    ExplainRequest,
    HiddenStatesRequest,
    PredictRequest,
    PredictResponse,
    TokenizeRequest,
)
from app.api.schemas.bounds import MARKER
from app.main import create_app
from app.openapi import resolve_limits

pytestmark = pytest.mark.anyio

REQUEST_MODELS: dict[str, type[BaseModel]] = {
    "/predict": PredictRequest,
    "/hidden-states": HiddenStatesRequest,
    "/tokenize": TokenizeRequest,
    "/explain": ExplainRequest,
}


@pytest.fixture
async def schema(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


async def test_schema_is_valid_openapi(schema: dict[str, Any]) -> None:
    validate(schema)
    assert set(schema["paths"]) == {
        "/predict",
        "/hidden-states",
        "/tokenize",
        "/explain",
        "/stream",
        "/model",
        "/models",
        "/models/{name}",
        "/healthz",
        "/readyz",
        "/metrics",
    }


async def test_every_request_body_has_examples_that_validate(schema: dict[str, Any]) -> None:
    for path, model in REQUEST_MODELS.items():
        body = schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        examples = body["examples"]
        assert len(examples) >= 2
        for example in examples.values():
            assert example["summary"]
            model.model_validate(example["value"])
        component = schema["components"]["schemas"][model.__name__]
        for example in component["examples"]:
            model.model_validate(example)


async def test_every_error_response_has_an_example_of_the_error_shape(
    schema: dict[str, Any],
) -> None:
    error_statuses = 0
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) < 400:
                    continue
                error_statuses += 1
                content = response["content"]["application/json"]
                assert content["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}, (
                    f"{method} {path} {status}"
                )
                example = ErrorResponse.model_validate(content["example"])
                assert example.error.code
    assert error_statuses >= 14


async def test_inference_routes_document_all_their_errors(schema: dict[str, Any]) -> None:
    for path in REQUEST_MODELS:
        statuses = set(schema["paths"][path]["post"]["responses"])
        assert statuses == {"200", "400", "401", "404", "413", "415", "422", "503"}
    assert "HTTPValidationError" not in schema["components"]["schemas"]


async def test_limits_in_the_schema_are_those_enforced(serve: Any) -> None:
    async with serve("rnn", max_text_chars=300, max_texts=7) as client:
        schema = (await client.get("/openapi.json")).json()
    predict = schema["components"]["schemas"]["PredictRequest"]["properties"]
    text = next(option for option in predict["text"]["anyOf"] if option.get("type") == "string")
    texts = next(option for option in predict["texts"]["anyOf"] if option.get("type") == "array")
    assert text["maxLength"] == 300
    assert texts["maxItems"] == 7
    assert texts["items"]["maxLength"] == 300
    for request in ("HiddenStatesRequest", "TokenizeRequest", "ExplainRequest"):
        assert schema["components"]["schemas"][request]["properties"]["text"]["maxLength"] == 300


async def test_security_scheme_only_with_api_keys(serve: Any, schema: dict[str, Any]) -> None:
    assert "securitySchemes" not in schema.get("components", {})
    async with serve("rnn", api_keys="some-long-key-0123456789") as client:
        secured = (await client.get("/openapi.json")).json()
    assert secured["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    assert secured["paths"]["/predict"]["post"]["security"] == [{"ApiKey": []}]
    assert "security" not in secured["paths"]["/healthz"]["get"]


def _markers(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every limit marker in a document, with the path to the schema that carries it."""
    if isinstance(node, dict):
        if MARKER in node:
            yield path, node[MARKER]
        for key, value in node.items():
            yield from _markers(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _markers(value, (*path, index))


def _at(document: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        document = document[key]
    return document


async def test_every_limit_marker_is_resolved_to_its_setting(make_settings: Any) -> None:
    settings = make_settings(
        "rnn", max_text_chars=300, max_texts=7, max_ig_steps=9, stream_max_chunk_chars=77
    )
    app = create_app(settings)
    # The document as FastAPI generates it, before the markers are resolved.
    declared = get_openapi(title=app.title, version=app.version, routes=app.routes)
    markers = list(_markers(declared))
    named = {name for _, bounds in markers for name in bounds.values()}
    assert named == {"max_text_chars", "max_texts", "max_ig_steps", "stream_max_chunk_chars"}
    served = app.openapi()
    assert app.openapi() is served  # resolved once, then cached
    assert list(_markers(served)) == []
    for path, bounds in markers:
        schema = _at(served, path)
        for keyword, name in bounds.items():
            assert schema[keyword] == getattr(settings, name), (path, keyword)


async def test_no_limit_marker_reaches_a_client(schema: dict[str, Any]) -> None:
    assert MARKER not in json.dumps(schema)


async def test_a_marker_naming_no_numeric_setting_is_an_error(make_settings: Any) -> None:
    for name in ("no_such_setting", "model_dir"):
        document = {"properties": {"text": {MARKER: {"maxLength": name}}}}
        with pytest.raises(ValueError, match=name):
            resolve_limits(document, make_settings("rnn"))


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "route"])
async def test_predict_answers_are_exactly_the_documented_models(
    serve: Any, fast_path: bool
) -> None:
    async with serve("lstm", fast_path=fast_path) as client:
        schema = (await client.get("/openapi.json")).json()
        one = (await client.post("/predict", json={"text": "I love this film"})).json()
        batch = (await client.post("/predict", json={"texts": ["great", "awful"]})).json()
    answer = schema["paths"]["/predict"]["post"]["responses"]["200"]
    assert answer["content"]["application/json"]["schema"]["anyOf"] == [
        {"$ref": "#/components/schemas/PredictResponse"},
        {"$ref": "#/components/schemas/BatchPredictResponse"},
    ]
    # Every documented field, and nothing else.
    assert PredictResponse.model_validate(one).model_dump() == one
    assert BatchPredictResponse.model_validate(batch).model_dump() == batch
