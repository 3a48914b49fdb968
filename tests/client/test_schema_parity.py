"""The client's models cannot drift from the server's schemas.

The client declares its own pydantic models (it must not import the server). Each is compared
with the server's OpenAPI component of the same name, from the real app's /openapi.json: the
same field names, the same required fields, and compatible types, recursively through nested
models. Compatible depends on the direction a body travels:

- a response (server to client): every value the server's schema allows, the client's model
  must accept (the client may be wider: `str` for an enum, `float` for an integer);
- a request (client to server): every value the client's model allows, the server's schema
  must accept. A None is never sent (the client leaves the field out, see `_Request.body`), so
  the client's null alternative is not compared.

Value constraints (lengths, bounds) are the service's to check and are not compared. Then,
against the app in process, every route the client calls must be documented, and every schema
it may answer with (successes and errors) must have a client model that these tests compare.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import BaseModel
from rnn_sentiment_client import AsyncSentimentClient, _models

from app.core.config import Settings
from app.main import create_app

Schema = dict[str, Any]
REF = "#/components/schemas/"
TEXT = "Not bad at all, but the ending didn't work for me."
CLIENT_MODELS: dict[str, type[BaseModel]] = {
    name: member
    for name, member in vars(_models).items()
    if inspect.isclass(member)
    and issubclass(member, BaseModel)
    and member.__module__ == _models.__name__
    and not name.startswith("_")
}


# ---------------------------------------------------------------------------------------------
# Reading JSON schemas


def component_name(ref: str) -> str:
    """`#/components/schemas/LayerStates-Output` -> `LayerStates`: FastAPI suffixes a model
    whose input and output schemas differ; the role is the same."""
    name = ref.removeprefix(REF)
    for suffix in ("-Input", "-Output"):
        name = name.removesuffix(suffix)
    return name


def alternatives(schema: Schema) -> list[Schema]:
    """A schema as the list of shapes it allows (`anyOf` / `oneOf` flattened)."""
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return [alt for part in schema[key] for alt in alternatives(part)]
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return alternatives(schema["allOf"][0])
    return [schema]


def describe(schema: Schema) -> str:
    """A schema in Python's spelling, for messages: `list[list[float]] | None`."""
    return " | ".join(_describe_one(alt) for alt in alternatives(schema))


def _describe_one(alt: Schema) -> str:
    if "$ref" in alt:
        return component_name(alt["$ref"])
    if "const" in alt:
        return f"Literal[{alt['const']!r}]"
    if "enum" in alt:
        return f"Literal[{', '.join(repr(value) for value in alt['enum'])}]"
    kind = alt.get("type")
    if kind == "array":
        return f"list[{describe(alt.get('items', {}))}]"
    if kind == "object":
        values = alt.get("additionalProperties", True)
        return f"dict[str, {'Any' if values is True else describe(values)}]"
    names = {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}
    if kind == "null":
        return "None"
    return names.get(kind, "Any") if isinstance(kind, str) else "Any"


def _values(alt: Schema) -> list[Any] | None:
    if "const" in alt:
        return [alt["const"]]
    enum = alt.get("enum")
    return None if enum is None else list(enum)


def _python_type(value: Any) -> str:
    return {str: "string", bool: "boolean", int: "integer", float: "number"}[type(value)]


def accepts(wide: Schema, narrow: Schema) -> bool:
    """Whether every value `narrow` allows is one `wide` allows (as far as types go)."""
    return all(any(_accepts_one(w, n) for w in alternatives(wide)) for n in alternatives(narrow))


def _accepts_one(wide: Schema, narrow: Schema) -> bool:
    if not wide or wide == {"additionalProperties": True}:  # Any
        return True
    if "$ref" in wide or "$ref" in narrow:
        # Nested models correspond by name; each is compared field by field on its own.
        wide_ref, narrow_ref = wide.get("$ref"), narrow.get("$ref")
        if wide_ref is None or narrow_ref is None:
            return False
        return component_name(wide_ref) == component_name(narrow_ref)
    wide_values, narrow_values = _values(wide), _values(narrow)
    if narrow_values is not None:
        if wide_values is not None:
            return set(narrow_values) <= set(wide_values)
        return all(_accepts_one(wide, {"type": _python_type(v)}) for v in narrow_values)
    if wide_values is not None:
        return False
    wide_type, narrow_type = wide.get("type"), narrow.get("type")
    if narrow_type is None:  # narrow is Any: only Any covers it
        return False
    if wide_type == narrow_type == "array":
        return accepts(wide.get("items", {}), narrow.get("items", {}))
    if wide_type == narrow_type == "object":
        wide_items = wide.get("additionalProperties", True)
        narrow_items = narrow.get("additionalProperties", True)
        if wide_items is True:
            return True
        return narrow_items is not True and accepts(wide_items, narrow_items)
    return wide_type == narrow_type or (wide_type, narrow_type) == ("number", "integer")


def without_null(schema: Schema) -> Schema:
    kept = [alt for alt in alternatives(schema) if alt.get("type") != "null"]
    return kept[0] if len(kept) == 1 else {"anyOf": kept}


# ---------------------------------------------------------------------------------------------
# Comparing one client model with one server component


def client_schema(model: type[BaseModel]) -> Schema:
    return model.model_json_schema(ref_template=REF + "{model}")


def compare(model: type[BaseModel], server: Schema, *, request: bool) -> list[str]:
    """What differs between the client's `model` and the server's component, one line each."""
    name = model.__name__
    client = client_schema(model)
    client_fields: Schema = client.get("properties", {})
    server_fields: Schema = server.get("properties", {})
    client_required = set(client.get("required", []))
    server_required = set(server.get("required", []))
    problems = []
    for field in sorted(server_fields.keys() - client_fields.keys()):
        what = "accepts" if request else "sends"
        problems.append(
            f"{name}.{field}: the server {what} it ({describe(server_fields[field])}), "
            "the client's model has no such field"
        )
    for field in sorted(client_fields.keys() - server_fields.keys()):
        problems.append(f"{name}.{field}: the client's model has it, the server's schema does not")
    for field in sorted(client_fields.keys() & server_fields.keys()):
        ours, theirs = client_fields[field], server_fields[field]
        if (field in client_required) != (field in server_required):
            where = "the server" if field in server_required else "the client"
            problems.append(f"{name}.{field}: required by {where} only")
        if request and not accepts(theirs, without_null(ours)):
            problems.append(
                f"{name}.{field}: the client may send {describe(without_null(ours))}; "
                f"the server accepts {describe(theirs)}"
            )
        if not request and not accepts(ours, theirs):
            problems.append(
                f"{name}.{field}: the server sends {describe(theirs)}; "
                f"the client's model accepts {describe(ours)}"
            )
    return problems


# ---------------------------------------------------------------------------------------------
# The server's document


@pytest.fixture(scope="module")
def openapi(checkpoints: dict[str, Any]) -> Schema:
    """The app's /openapi.json, served in process (the app tests' default settings)."""
    app = create_app(Settings(model_dir=checkpoints["lstm"], gc_freeze=False))

    async def fetch() -> Schema:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            response = await http.get("/openapi.json")
        response.raise_for_status()
        document: Schema = response.json()
        return document

    return asyncio.run(fetch())


def components(openapi: Schema) -> dict[str, Schema]:
    return {
        component_name(REF + name): schema
        for name, schema in openapi["components"]["schemas"].items()
    }


def referenced(schema: Any) -> Iterator[str]:
    """Every component `schema` refers to, however deep."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            yield component_name(schema["$ref"])
        for value in schema.values():
            yield from referenced(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from referenced(value)


def request_components(openapi: Schema) -> set[str]:
    """Components a request body uses, directly or nested."""
    found: set[str] = set()
    todo = [
        name
        for operations in openapi["paths"].values()
        for operation in operations.values()
        for name in referenced(operation.get("requestBody", {}))
    ]
    schemas = components(openapi)
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo.extend(referenced(schemas[name]))
    return found


# ---------------------------------------------------------------------------------------------
# The tests


@pytest.mark.parametrize("model", CLIENT_MODELS.values(), ids=CLIENT_MODELS.keys())
def test_client_model_matches_the_server_schema(openapi: Schema, model: type[BaseModel]) -> None:
    schemas = components(openapi)
    name = model.__name__
    if name not in schemas:
        pytest.fail(
            f"the client's {name} has no server schema of that name; the server's are: "
            + ", ".join(sorted(schemas)),
            pytrace=False,
        )
    problems = compare(model, schemas[name], request=name in request_components(openapi))
    for nested in sorted(set(referenced(client_schema(model))) - set(schemas)):
        problems.append(f"{name}: refers to {nested}, which the server's schema does not have")
    if problems:
        pytest.fail(
            f"rnn_sentiment_client's {name} has drifted from the server's /openapi.json:\n  "
            + "\n  ".join(problems),
            pytrace=False,
        )


def test_the_comparison_reports_each_kind_of_drift() -> None:
    """The checker itself: a model with a renamed, a retyped and an extra field, compared with
    a server schema, is reported field by field, in both directions."""
    server = {
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "direction": {"type": "string", "enum": ["forward", "backward"]},
            "layers": {"type": "array", "items": {"$ref": REF + "LayerStates-Output"}},
            "ratio": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
        },
        "required": ["name", "version", "direction", "layers"],
    }

    class Drifted(BaseModel):
        name: int
        revision: str
        direction: str
        layers: list[_models.LayerStates]
        ratio: float | None

    assert compare(Drifted, server, request=False) == [
        "Drifted.version: the server sends it (str), the client's model has no such field",
        "Drifted.revision: the client's model has it, the server's schema does not",
        "Drifted.name: the server sends str; the client's model accepts int",
        "Drifted.ratio: required by the client only",
    ]
    assert compare(Drifted, server, request=True) == [
        "Drifted.version: the server accepts it (str), the client's model has no such field",
        "Drifted.revision: the client's model has it, the server's schema does not",
        "Drifted.direction: the client may send str; "
        "the server accepts Literal['forward', 'backward']",
        "Drifted.name: the client may send int; the server accepts str",
        "Drifted.ratio: required by the client only",
        "Drifted.ratio: the client may send float; the server accepts int | None",
    ]


class Recorder(httpx.AsyncBaseTransport):
    """Passes requests to the app, noting the method and path of each."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.routes: list[tuple[str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.routes.append((request.method, request.url.path))
        return await self.inner.handle_async_request(request)


async def _streamed(client: AsyncSentimentClient) -> Any:
    return [update async for update in client.stream(["Not b", "ad"])][-1]


def operation_for(openapi: Schema, verb: str, path: str) -> Schema | None:
    """The operation documented for a request: its path, or a template it fills
    (`/models/default` is `/models/{name}`)."""
    segments = path.split("/")
    for template, operations in openapi["paths"].items():
        pattern = template.split("/")
        if len(pattern) == len(segments) and all(
            ours == theirs or (theirs.startswith("{") and theirs.endswith("}"))
            for ours, theirs in zip(segments, pattern, strict=True)
        ):
            operation: Schema | None = operations.get(verb.lower())
            return operation
    return None


# Every public method of the client, called at least once (/predict in each shape, and
# with a model named).
CALLS: dict[str, list[Callable[[AsyncSentimentClient], Awaitable[Any]]]] = {
    "predict": [
        lambda c: c.predict(TEXT),
        lambda c: c.predict([TEXT, "ok"]),
        lambda c: c.predict(TEXT, model="default"),
    ],
    "hidden_states": [lambda c: c.hidden_states(TEXT)],
    "tokenize": [lambda c: c.tokenize(TEXT)],
    "explain": [lambda c: c.explain(TEXT, steps=4)],
    "stream_update": [lambda c: c.stream_update(TEXT)],
    "stream": [_streamed],
    "model_info": [lambda c: c.model_info()],
    "models": [lambda c: c.models()],
    "get_model": [lambda c: c.get_model("default")],
    "ready": [lambda c: c.ready()],
    "wait_ready": [lambda c: c.wait_ready(timeout_s=5)],
}


@pytest.fixture
async def recorded(make_settings: Any) -> AsyncIterator[tuple[AsyncSentimentClient, Recorder]]:
    app = create_app(make_settings("lstm"))
    async with LifespanManager(app) as manager:
        recorder = Recorder(httpx.ASGITransport(app=manager.app))
        async with AsyncSentimentClient("http://testserver", transport=recorder) as client:
            yield client, recorder


@pytest.mark.anyio
async def test_every_schema_the_client_parses_is_covered(
    recorded: tuple[AsyncSentimentClient, Recorder], openapi: Schema
) -> None:
    """Call every method against the app: each route must be in /openapi.json, its request
    body and every response it documents (errors too) must have a client model, and the
    client must parse its success with the model the server documents for it."""
    client, recorder = recorded
    public = {
        name
        for name, _ in inspect.getmembers(AsyncSentimentClient, inspect.isfunction)
        if not name.startswith("_") and name != "aclose"
    }
    assert set(CALLS) == public, "a client method is not exercised here: add it to CALLS"
    problems: list[str] = []
    for method, calls in CALLS.items():
        for call in calls:
            first = len(recorder.routes)
            result = await call(client)
            (verb, path), *_ = recorder.routes[first:]
            operation = operation_for(openapi, verb, path)
            if operation is None:
                problems.append(f"{method}: {verb} {path} is not in the server's /openapi.json")
                continue
            sent = set(referenced(operation.get("requestBody", {})))
            for name in sorted(sent - CLIENT_MODELS.keys()):
                problems.append(f"{method}: {verb} {path} takes {name}; the client has no model")
            for status, answer in operation["responses"].items():
                names = set(referenced(answer.get("content", {})))
                for name in sorted(names - CLIENT_MODELS.keys()):
                    problems.append(
                        f"{method}: {verb} {path} answers {status} with {name}; "
                        "the client has no model for it"
                    )
                if status == "200" and isinstance(result, BaseModel):
                    parsed = type(result).__name__
                    if parsed not in names:
                        problems.append(
                            f"{method}: parses {verb} {path} as {parsed}; the server documents "
                            + " | ".join(sorted(names))
                        )
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)
    assert set(recorder.routes) >= {("POST", "/predict"), ("GET", "/readyz")}
