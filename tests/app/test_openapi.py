"""/openapi.json is a valid OpenAPI document and documents every body and error by example."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from pydantic import BaseModel

from app.api.schemas import (
    ErrorResponse,
    ExplainRequest,
    HiddenStatesRequest,
    PredictRequest,
    TokenizeRequest,
)

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
        assert statuses == {"200", "400", "401", "413", "415", "422", "503"}
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
