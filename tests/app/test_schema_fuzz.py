"""Requests generated from /openapi.json and from any Unicode: never a 5xx, never off-schema."""

from __future__ import annotations

import json
from typing import Any

import schemathesis
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.app.conftest import serve_app

CASES = 150
SCHEMA_CASES = 1000  # across every route; about 20 s here (what it proves: docs/reliability.md)


def test_generated_requests_never_get_a_5xx(make_settings: Any) -> None:
    # With admin keys, so that POST /admin/reload is in the schema too (the fuzzer has no key:
    # it gets the documented 401).
    app_settings = make_settings(
        "lstm", access_log=False, log_level="WARNING", admin_keys="fuzz-admin-key-0123"
    )
    # Hypothesis drives a synchronous test; the app and its lifespan run on an event loop in a
    # helper thread (anyio's blocking portal), reached through the same in-process client.
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(serve_app(app_settings)) as client,
    ):
        schema_response = portal.call(client.get, "/openapi.json")
        schema = schemathesis.openapi.from_dict(schema_response.json())
        seen: list[int] = []
        routes: set[str] = set()
        operations = {
            f"{method.upper()} {path}"
            for path, item in schema_response.json()["paths"].items()
            for method in item
        }

        @given(case=schema.as_strategy())
        @settings(
            max_examples=SCHEMA_CASES,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            kwargs = case.as_transport_kwargs(base_url="http://testserver")
            kwargs.pop("cookies", None)  # no route reads cookies
            if "data" in kwargs:  # requests' name for a raw body
                kwargs["content"] = kwargs.pop("data")
            response = portal.call(lambda: client.request(**kwargs))
            seen.append(response.status_code)
            routes.add(f"{case.method} {case.path}")
            assert response.status_code < 500, response.text
            # Schema-valid texts can still break a limit or hold no token: 422 is right there.
            case.validate_response(response, excluded_checks=[positive_data_acceptance])

        check()
    assert len(seen) >= SCHEMA_CASES
    assert routes == operations  # every route was tried
    assert 200 in seen
    assert 422 in seen


UNICODE = st.text(st.characters(codec=None, categories=None), max_size=40)


def test_any_unicode_text_gets_a_200_or_a_clean_4xx(make_settings: Any) -> None:
    app_settings = make_settings("gru", access_log=False, log_level="WARNING", max_tokens=8)
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(serve_app(app_settings)) as client,
    ):

        @given(text=UNICODE, path=st.sampled_from(["/predict", "/hidden-states"]))
        @settings(max_examples=CASES, deadline=None, derandomize=True, database=None)
        def check(text: str, path: str) -> None:
            # Serialised by hand: json.dumps escapes lone surrogates, which httpx would refuse.
            body = json.dumps({"text": text}).encode("ascii")
            response = portal.call(
                lambda: client.post(
                    path, content=body, headers={"content-type": "application/json"}
                )
            )
            assert response.status_code in (200, 422), response.text
            if response.status_code == 422:
                (detail,) = response.json()["error"]["details"]
                assert detail["type"] in {
                    "empty_text",
                    "no_tokens",
                    "too_many_tokens",
                    "invalid_unicode",
                }
            else:
                tokens = response.json().get("tokens", [])
                assert all(text[t["start"] : t["end"]] == t["text"] for t in tokens)

        check()
