"""Every error path answers in the one error shape, with the right status and code."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.api.schemas import ErrorResponse
from app.main import create_app

pytestmark = pytest.mark.anyio


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    ErrorResponse.model_validate(body)
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    error: dict[str, Any] = body["error"]
    return error


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/predict", content=b'{"text": "unterminated', headers={"content-type": "application/json"}
    )
    error = assert_error(response, 400, "malformed_json")
    assert error["message"] == "The request body is not valid JSON."


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"[" * 200_000, id="deeply-nested"),
        pytest.param(b'{"text": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", id="nested-value"),
        pytest.param(b"", id="empty-body"),
    ],
)
async def test_hostile_json_is_a_clean_4xx(client: httpx.AsyncClient, content: bytes) -> None:
    response = await client.post(
        "/predict", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code in (400, 422)
    ErrorResponse.model_validate(response.json())


async def test_invalid_utf8_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/predict", content=b'{"text": "\xff\xfe"}', headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "malformed_json")


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"content-type": "text/plain"}, id="text-plain"),
        pytest.param({"content-type": "application/x-www-form-urlencoded"}, id="form"),
        pytest.param({"content-type": "multipart/form-data; boundary=x"}, id="multipart"),
        pytest.param({}, id="no-content-type"),
    ],
)
async def test_wrong_media_type_is_415(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    response = await client.post("/predict", content=b'{"text": "hi"}', headers=headers)
    assert_error(response, 415, "unsupported_media_type")


async def test_json_with_charset_and_vendor_type_are_accepted(client: httpx.AsyncClient) -> None:
    for content_type in ("application/json; charset=utf-8", "application/vnd.api+json"):
        response = await client.post(
            "/predict", content=b'{"text": "hi"}', headers={"content-type": content_type}
        )
        assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "error_type", "loc"),
    [
        pytest.param({}, "text_or_texts", ["body"], id="neither"),
        pytest.param({"text": "a", "texts": ["b"]}, "text_or_texts", ["body"], id="both"),
        pytest.param({"text": 5}, "string_type", ["body", "text"], id="number"),
        pytest.param({"text": ["a"]}, "string_type", ["body", "text"], id="list-as-text"),
        pytest.param({"texts": "a"}, "list_type", ["body", "texts"], id="string-as-texts"),
        pytest.param({"texts": []}, "too_short", ["body", "texts"], id="empty-batch"),
        pytest.param({"texts": ["ok", " "]}, "empty_text", ["body", "texts", 1], id="blank"),
        pytest.param({"text": "a", "extra": 1}, "extra_forbidden", ["body", "extra"], id="extra"),
        pytest.param([], "model_attributes_type", ["body"], id="array-body"),
        pytest.param(None, "missing", ["body"], id="null-body"),
    ],
)
async def test_invalid_bodies_are_422(
    client: httpx.AsyncClient, body: Any, error_type: str, loc: list[Any]
) -> None:
    response = await client.post("/predict", json=body)
    error = assert_error(response, 422, "validation_error")
    assert (error["details"][0]["type"], error["details"][0]["loc"]) == (error_type, loc)


@pytest.mark.parametrize(
    ("body", "error_type"),
    [
        pytest.param({"text": "x", "layers": "some"}, "literal_error", id="layers"),
        pytest.param({"text": "x", "decimals": 9}, "less_than_equal", id="decimals-high"),
        pytest.param({"text": "x", "decimals": -1}, "greater_than_equal", id="decimals-low"),
        pytest.param({"text": "x", "decimals": 1.5}, "int_type", id="decimals-float"),
        pytest.param({"text": "x", "include_cell_state": "yes"}, "bool_type", id="bool"),
        pytest.param({"texts": ["x"]}, "missing", id="batch-not-supported"),
    ],
)
async def test_invalid_hidden_state_requests_are_422(
    client: httpx.AsyncClient, body: dict[str, Any], error_type: str
) -> None:
    response = await client.post("/hidden-states", json=body)
    error = assert_error(response, 422, "validation_error")
    assert error_type in {detail["type"] for detail in error["details"]}


async def test_limits_are_422_with_their_numbers(serve: Any) -> None:
    async with serve("rnn", max_text_chars=20, max_tokens=3, max_texts=2) as client:
        chars = await client.post("/predict", json={"text": "a" * 21})
        tokens = await client.post("/predict", json={"text": "a b c d"})
        texts = await client.post("/predict", json={"texts": ["a", "b", "c"]})
        fine = await client.post("/predict", json={"texts": ["a b c", "a" * 20]})
    assert assert_error(chars, 422, "validation_error")["details"] == [
        {
            "loc": ["body", "text"],
            "msg": "text has 21 characters; the limit is 20",
            "type": "text_too_long",
        }
    ]
    assert assert_error(tokens, 422, "validation_error")["details"][0]["type"] == "too_many_tokens"
    assert assert_error(texts, 422, "validation_error")["details"] == [
        {
            "loc": ["body", "texts"],
            "msg": "3 texts; the limit is 2 per request",
            "type": "too_many_texts",
        }
    ]
    assert fine.status_code == 200


async def test_body_over_the_limit_by_content_length_is_413(serve: Any) -> None:
    async with serve("rnn", max_body_bytes=2048) as client:
        response = await client.post("/predict", json={"text": "a" * 3000})
    error = assert_error(response, 413, "body_too_large")
    assert error["message"] == "The request body exceeds the limit of 2048 bytes."


async def test_streamed_body_is_refused_before_it_is_read_whole(serve: Any) -> None:
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"text": "'
        for index in range(1000):
            sent.append(index)
            yield b"a" * 1024
        yield b'"}'

    async with serve("rnn", max_body_bytes=4096) as client:
        # No Content-Length: the body arrives chunked, and is counted as it streams in.
        response = await client.post(
            "/predict", content=chunks(), headers={"content-type": "application/json"}
        )
    assert_error(response, 413, "body_too_large")
    assert len(sent) < 10  # the rest was never read


PREDICT_BODY = 'send {"text": "..."} or {"texts": ["...", ...]}'


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize(
    ("body", "loc", "type_", "msg"),
    [
        pytest.param(
            {"sentence": "hi"},
            ["body", "sentence"],
            "extra_forbidden",
            f"unknown field: {PREDICT_BODY}; optional: 'model', 'min_confidence'",
            id="unknown-field",
        ),
        pytest.param(
            ["hi"],
            ["body"],
            "model_attributes_type",
            f"expected a JSON object, not an array: {PREDICT_BODY}",
            id="array",
        ),
        pytest.param(
            "hi",
            ["body"],
            "model_attributes_type",
            f"expected a JSON object, not a string: {PREDICT_BODY}",
            id="string",
        ),
        pytest.param(
            None,
            ["body"],
            "missing",
            f"expected a JSON object, not an empty body or null: {PREDICT_BODY}",
            id="null",
        ),
        pytest.param(
            {"texts": []},
            ["body", "texts"],
            "too_short",
            "'texts' is empty: send at least one text",
            id="empty-texts",
        ),
    ],
)
async def test_common_mistakes_are_answered_with_what_to_send(
    serve: Any, fast_path: bool, body: Any, loc: list[str], type_: str, msg: str
) -> None:
    async with serve("gru", fast_path=fast_path) as client:
        response = await client.post("/predict", json=body)
    error = assert_error(response, 422, "validation_error")
    assert error["details"] == [{"loc": loc, "msg": msg, "type": type_}]
    assert error["message"] == f"{'.'.join(loc)}: {msg}"


async def test_the_fast_path_and_the_route_give_the_same_errors(serve: Any) -> None:
    bodies: list[Any] = [
        {"sentence": "hi"},
        [],
        {"texts": []},
        {"text": "a", "texts": ["b"]},
        {"texts": ["ok", " ", 3]},
        {"text": "hi", "extra": 1, "more": 2},
    ]
    answers = []
    for fast_path in (True, False):
        async with serve("gru", fast_path=fast_path) as client:
            answers.append(
                [(await client.post("/predict", json=b)).json()["error"] for b in bodies]
            )
    assert answers[0] == answers[1]


@pytest.mark.parametrize(
    ("path", "body", "msg"),
    [
        pytest.param(
            "/hidden-states",
            {"text": "x", "colour": "red"},
            "unknown field: send {\"text\": \"...\"}; optional: 'model', 'layers', "
            "'include_cell_state', 'decimals', 'include_gates', 'units', 'top_k', 'full'",
            id="hidden-states",
        ),
        pytest.param(
            "/explain",
            {"text": "x", "method": "occlusion"},
            "unknown field: send {\"text\": \"...\"}; optional: 'model', 'label', 'methods', "
            "'steps', 'baseline', 'occlusion', 'decimals'",
            id="explain",
        ),
        pytest.param(
            "/tokenize",
            {"text": "x", "lang": "en"},
            'unknown field: send {"text": "..."}; optional: \'model\'',
            id="tokenize",
        ),
        pytest.param(
            "/stream",
            {"piece": "x"},
            'unknown field: send {"text": "...", "state": "...", "final": true, "model": "..."}',
            id="stream",
        ),
    ],
)
async def test_an_unknown_field_names_the_routes_fields(
    client: httpx.AsyncClient, path: str, body: dict[str, Any], msg: str
) -> None:
    error = assert_error(await client.post(path, json=body), 422, "validation_error")
    unknown = [detail for detail in error["details"] if detail["type"] == "extra_forbidden"]
    assert [detail["msg"] for detail in unknown] == [msg]


async def test_a_missing_field_and_an_empty_list_say_what_to_send(
    client: httpx.AsyncClient,
) -> None:
    missing = await client.post("/hidden-states", json={"texts": ["x"]})
    methods = await client.post("/explain", json={"text": "x", "methods": []})
    units = await client.post("/hidden-states", json={"text": "x", "units": []})
    array = await client.post("/tokenize", json=[{"text": "x"}])
    assert {
        (tuple(d["loc"]), d["msg"])
        for d in assert_error(missing, 422, "validation_error")["details"]
    } >= {(("body", "text"), 'required: send {"text": "..."}')}
    assert assert_error(methods, 422, "validation_error")["details"][0]["msg"] == (
        "'methods' is empty: send at least one method"
    )
    assert assert_error(units, 422, "validation_error")["details"][0]["msg"] == (
        "'units' is empty: send at least one unit"
    )
    assert assert_error(array, 422, "validation_error")["details"][0]["msg"] == (
        'expected a JSON object, not an array: send {"text": "..."}'
    )


async def test_other_validation_messages_are_left_as_they_are(client: httpx.AsyncClient) -> None:
    response = await client.post("/predict", json={"texts": ["fine", 3]})
    (detail,) = assert_error(response, 422, "validation_error")["details"]
    assert detail == {
        "loc": ["body", "texts", 1],
        "msg": "Input should be a valid string",
        "type": "string_type",
    }


async def test_unknown_route_is_404_with_the_docs_url(client: httpx.AsyncClient) -> None:
    response = await client.post("/foo", json={})
    error = assert_error(response, 404, "not_found")
    assert error["message"] == "No route POST /foo. The API reference is at /docs."
    assert error["details"] == [
        {"loc": ["path"], "msg": "No route POST /foo", "type": "not_found", "url": "/docs"}
    ]
    assert (await client.get(error["details"][0]["url"])).status_code == 200


async def test_a_missing_static_file_is_404_with_the_docs_url(client: httpx.AsyncClient) -> None:
    error = assert_error(await client.get("/static/nope.js"), 404, "not_found")
    assert error["message"] == "Nothing at GET /static/nope.js. The API reference is at /docs."


async def test_wrong_method_is_405(client: httpx.AsyncClient) -> None:
    response = await client.get("/predict")
    error = assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"
    assert (
        error["message"]
        == "GET is not allowed on /predict: use POST. The API reference is at /docs."
    )
    assert error["details"][0]["url"] == "/docs"


async def test_the_docs_url_follows_the_root_path(make_settings: Any) -> None:
    app = create_app(make_settings("rnn"))
    transport = httpx.ASGITransport(app=app, root_path="/sentiment")
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/sentiment/nope")
    error = assert_error(response, 404, "not_found")
    assert (
        error["message"] == "No route GET /sentiment/nope. The API reference is at /sentiment/docs."
    )
    assert error["details"][0]["url"] == "/sentiment/docs"


async def test_without_docs_the_404_says_they_are_off(serve: Any) -> None:
    async with serve("rnn", docs=False) as client:
        response = await client.get("/nope")
    error = assert_error(response, 404, "not_found")
    assert (
        error["message"]
        == "No route GET /nope. The API reference is turned off here (APP_DOCS=false)."
    )
    assert "url" not in error["details"][0]


async def test_a_long_path_is_cut_in_the_message(client: httpx.AsyncClient) -> None:
    error = assert_error(await client.get("/" + "a" * 5000), 404, "not_found")
    assert len(error["message"]) < 300
    assert "a" * 199 + "..." in error["message"]


async def test_not_ready_is_503_with_retry_after(make_settings: Any) -> None:
    app = create_app(make_settings("rnn"))
    # No lifespan: the model was never loaded.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        ready = await client.get("/readyz")
        predict = await client.post("/predict", json={"text": "hello"})
        health = await client.get("/healthz")
    for response in (ready, predict):
        assert_error(response, 503, "not_ready")
        assert response.headers["retry-after"] == "1"
    assert health.status_code == 200


async def test_overloaded_is_503_with_retry_after(serve: Any) -> None:
    async with serve("rnn", queue_size=2, retry_after_s=3) as client:
        response = await client.post("/predict", json={"texts": ["a", "b", "c"]})
        fine = await client.post("/predict", json={"texts": ["a", "b"]})
    error = assert_error(response, 503, "overloaded")
    assert "retry later" in error["message"]
    assert response.headers["retry-after"] == "3"
    assert fine.status_code == 200


async def test_deadline_is_503_with_retry_after(serve: Any) -> None:
    async with serve("rnn", request_timeout_s=1e-9) as client:
        predict = await client.post("/predict", json={"text": "hello"})
        hidden = await client.post("/hidden-states", json={"text": "hello"})
    for response in (predict, hidden):
        assert_error(response, 503, "deadline_exceeded")
        assert response.headers["retry-after"] == "1"


async def test_unexpected_exception_is_a_clean_500(serve: Any, monkeypatch: Any) -> None:
    from app.inference import runtime

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(runtime.Runtime, "predict", broken)
    async with serve("rnn") as client:
        response = await client.post("/predict", json={"text": "hello"})
    error = assert_error(response, 500, "internal_error")
    assert "secret" not in response.text
    assert error["message"] == "Internal server error."


class TestAuth:
    KEYS = "first-key-1234567890,second-key-4567890123"

    async def test_inference_routes_need_a_key(self, serve: Any) -> None:
        async with serve("rnn", api_keys=self.KEYS) as client:
            missing = await client.post("/predict", json={"text": "hi"})
            wrong = await client.post(
                "/predict", json={"text": "hi"}, headers={"authorization": "Bearer nope-nope-nope"}
            )
            basic = await client.post(
                "/hidden-states",
                json={"text": "hi"},
                headers={"authorization": "Basic Zm9vOmJhcg=="},
            )
            model = await client.get("/model")
        for response in (missing, wrong, basic, model):
            assert_error(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer"

    async def test_any_configured_key_works(self, serve: Any) -> None:
        async with serve("rnn", api_keys=self.KEYS) as client:
            for key in self.KEYS.split(","):
                headers = {"authorization": f"Bearer {key}"}
                assert (
                    await client.post("/predict", json={"text": "hi"}, headers=headers)
                ).status_code == 200
                assert (
                    await client.post("/hidden-states", json={"text": "hi"}, headers=headers)
                ).status_code == 200
                assert (await client.get("/model", headers=headers)).status_code == 200

    async def test_probes_metrics_and_docs_stay_open(self, serve: Any) -> None:
        async with serve("rnn", api_keys=self.KEYS) as client:
            for path in ("/healthz", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json"):
                assert (await client.get(path)).status_code == 200, path

    async def test_keys_are_never_logged(self, serve: Any, caplog: Any) -> None:
        caplog.set_level("DEBUG")
        async with serve("rnn", api_keys=self.KEYS, log_level="DEBUG") as client:
            await client.post(
                "/predict",
                json={"text": "hi"},
                headers={"authorization": "Bearer first-key-1234567890"},
            )
            await client.post(
                "/predict", json={"text": "hi"}, headers={"authorization": "Bearer guess-key-999"}
            )
        assert caplog.records
        assert "key-123" not in caplog.text
        assert "key-999" not in caplog.text

    async def test_no_keys_means_no_auth(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/predict", json={"text": "hi"}, headers={"authorization": "Bearer x"}
        )
        assert response.status_code == 200

    def test_short_keys_are_refused_at_start_up(self, make_settings: Any) -> None:
        with pytest.raises(ValueError, match="16 or more"):
            make_settings("rnn", api_keys="short")
