"""The explorer's API through the real app: /tokenize, /hidden-states options, /explain, /model.

Tolerances: integrated gradients are computed in float32 on the tiny models; their attributions
must add up to logit(text) - logit(baseline) within IG_TOLERANCE (1e-4; the quadrature error on
these models is about 1e-7, see tests/app/test_explain.py for harder, sharpened models).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.api.routes.explorer import CONTENT_SECURITY_POLICY
from app.api.schemas import ErrorResponse
from app.inference.predictor import native_bfloat16
from app.inference.results import BFLOAT16_TOLERANCE, SATURATION_THRESHOLD
from app.main import create_app
from tests.conftest import CHECKPOINT_KINDS, build_checkpoint
from training.checkpoint import load_checkpoint, save_checkpoint

pytestmark = pytest.mark.anyio

HIDDEN_SIZE = 12  # tests/conftest.py
IG_TOLERANCE = 1e-4
TEXT = "I love this film but the ending was awful :( zyxxy"
GATES = {
    "rnn": set(),
    "lstm": {"input", "forget", "candidate", "output"},
    "bilstm": {"input", "forget", "candidate", "output"},
    "gru": {"reset", "update"},
}
SIGMOID_GATES = {"input", "forget", "output", "reset", "update"}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    ErrorResponse.model_validate(body)
    assert body["error"]["code"] == code
    assert body["request_id"] == response.headers["x-request-id"]
    error: dict[str, Any] = body["error"]
    return error


def detail_types(response: httpx.Response) -> set[str]:
    return {detail["type"] for detail in response.json()["error"]["details"]}


# --- /tokenize ---------------------------------------------------------------------------------


async def test_tokenize(client: httpx.AsyncClient) -> None:
    text = "Sooo GOOD, isn't it? zyxxy :)"
    response = await client.post("/tokenize", json={"text": text})
    assert response.status_code == 200, response.text
    body = response.json()
    tokens = body["tokens"]
    assert [(t["text"], t["norm"], t["oov"]) for t in tokens] == [
        ("Sooo", "sooo", True),
        ("GOOD", "good", True),
        (",", ",", False),
        ("is", "is", False),
        ("n't", "not", False),
        ("it", "it", False),
        ("?", "?", True),
        ("zyxxy", "zyxxy", True),
        (":)", "<smile>", False),
    ]
    assert all(text[t["start"] : t["end"]] == t["text"] for t in tokens)
    assert all((t["id"] == 1) == t["oov"] for t in tokens)
    assert body["count"] == len(tokens)
    assert body["oov_count"] == sum(t["oov"] for t in tokens)
    assert body["model"]["name"] == "default"
    hidden = (await client.post("/hidden-states", json={"text": text})).json()["tokens"]
    assert [{k: v for k, v in t.items() if k != "norm"} for t in tokens] == hidden


async def test_tokenize_limits(serve: Any) -> None:
    async with serve("rnn", max_text_chars=10, max_tokens=2) as client:
        too_long = await client.post("/tokenize", json={"text": "a" * 11})
        many_tokens = await client.post("/tokenize", json={"text": "a b c d e"})
        empty = await client.post("/tokenize", json={"text": "  "})
        invisible = await client.post("/tokenize", json={"text": "\u200b\u200b"})
    assert assert_error(too_long, 422, "validation_error")["details"] == [
        {
            "loc": ["body", "text"],
            "msg": "text has 11 characters; the limit is 10",
            "type": "text_too_long",
        }
    ]
    assert many_tokens.json()["count"] == 5  # it says how the text reads; the limit is /predict's
    assert detail_types(empty) == {"empty_text"}
    assert invisible.status_code == 200
    assert invisible.json()["tokens"] == []


# --- GET /model ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "setting", "predict_dtype", "state_dtype"),
    [
        ("lstm", "bfloat16", "bfloat16", "float32"),
        ("lstm", "float32", "float32", "float32"),
        ("lstm", "float64", "float64", "float64"),
        ("gru", "bfloat16", "float64", "float64"),  # other cells always run in float64
    ],
)
async def test_model_card_says_how_the_server_computes(
    serve: Any, kind: str, setting: str, predict_dtype: str, state_dtype: str
) -> None:
    async with serve(kind, inference_dtype=setting) as client:
        inference = (await client.get("/model")).json()["inference"]
    if predict_dtype == "bfloat16" and not native_bfloat16():
        predict_dtype = "float32"  # the documented fallback on CPUs without it
    assert inference == {
        "predict_dtype": predict_dtype,
        "state_dtype": state_dtype,
        "stream_tolerance": BFLOAT16_TOLERANCE if predict_dtype == "bfloat16" else 1e-5,
        "dtypes": {
            "predict": predict_dtype,
            "hidden_states": state_dtype,
            "explain": "float32",  # attributions run in float32 whatever the model's dtype
            "stream": state_dtype,
        },
    }


async def test_model_card_vocabulary_and_limits(serve: Any, tmp_path: Path) -> None:
    async with serve("gru") as client:
        plain = (await client.get("/model")).json()
    assert plain["vocabulary"] == {
        "size": plain["vocab_size"],
        "pretrained_rows": None,
        "test_tokens": None,
        "test_tokens_unknown": None,
        "test_coverage": None,
    }
    assert (
        plain["limits"]
        | {
            "max_response_bytes": 2_097_152,
            "max_explain_tokens": 256,
            "max_ig_steps": 128,
            "max_hidden_state_tokens": 256,
        }
        == plain["limits"]
    )

    checkpoint = load_checkpoint(build_checkpoint(tmp_path / "source", "gru"))
    card = checkpoint.card | {
        "vocabulary": {
            "size": 63,
            "pretrained_rows": 40,
            "test_tokens_unknown": 25,
            "test_tokens": 1000,
        }
    }
    save_checkpoint(
        tmp_path / "recorded",
        model=checkpoint.model,
        labels=checkpoint.labels,
        vocab=checkpoint.vocab,
        card=card,
    )
    async with serve("gru", model_dir=tmp_path / "recorded", max_ig_steps=9) as client:
        recorded = (await client.get("/model")).json()
    assert recorded["vocabulary"] == {
        "size": len(checkpoint.vocab),
        "pretrained_rows": 40,
        "test_tokens": 1000,
        "test_tokens_unknown": 25,
        "test_coverage": 0.975,
    }
    assert recorded["limits"]["max_ig_steps"] == 9


# --- /hidden-states: gates, summaries, units, size cap -----------------------------------------


@pytest.mark.parametrize("kind", list(CHECKPOINT_KINDS))
async def test_gates_per_cell(serve: Any, kind: str) -> None:
    async with serve(kind) as client:
        response = await client.post(
            "/hidden-states", json={"text": TEXT, "layers": "all", "include_gates": True}
        )
        without = await client.post("/hidden-states", json={"text": TEXT, "layers": "all"})
    assert response.status_code == 200, response.text
    body = response.json()
    steps = len(body["tokens"])
    for layer in body["layers"]:
        if not GATES[kind]:
            assert "gates" not in layer  # the plain RNN has none
            continue
        assert set(layer["gates"]) == GATES[kind]
        for name, values in layer["gates"].items():
            assert len(values) == steps
            assert {len(row) for row in values} == {HIDDEN_SIZE}
            low = 0.0 if name in SIGMOID_GATES else -1.0
            assert all(low <= value <= 1.0 for row in values for value in row), name
        assert "units" not in layer
    for layer in without.json()["layers"]:
        assert "gates" not in layer
    assert [layer["hidden"] for layer in body["layers"]] == [
        layer["hidden"] for layer in without.json()["layers"]
    ]


async def test_lstm_gates_are_the_ones_that_made_the_states(client: httpx.AsyncClient) -> None:
    body = (
        await client.post(
            "/hidden-states",
            json={
                "text": TEXT,
                "layers": "all",
                "include_gates": True,
                "include_cell_state": True,
                "full": True,
            },
        )
    ).json()
    for layer in body["layers"]:
        gates, cell, hidden = layer["gates"], layer["cell"], layer["hidden"]
        previous = [0.0] * HIDDEN_SIZE
        for t in range(len(hidden)):
            for u in range(HIDDEN_SIZE):
                c = (
                    gates["forget"][t][u] * previous[u]
                    + gates["input"][t][u] * gates["candidate"][t][u]
                )
                assert math.isclose(c, cell[t][u], abs_tol=1e-6)
                h = gates["output"][t][u] * math.tanh(cell[t][u])
                assert math.isclose(h, hidden[t][u], abs_tol=1e-6)
            previous = cell[t]


@pytest.mark.parametrize("kind", list(CHECKPOINT_KINDS))
async def test_summaries(serve: Any, kind: str) -> None:
    async with serve(kind) as client:
        body = (
            await client.post("/hidden-states", json={"text": TEXT, "layers": "all", "full": True})
        ).json()
        rounded = (
            await client.post("/hidden-states", json={"text": TEXT, "top_k": 2, "decimals": 2})
        ).json()
    assert body["saturation_threshold"] == SATURATION_THRESHOLD == 0.95
    for layer in body["layers"]:
        hidden = layer["hidden"]
        assert len(layer["norm"]) == len(layer["saturated"]) == len(hidden)
        for row, norm, saturated in zip(hidden, layer["norm"], layer["saturated"], strict=True):
            assert math.isclose(norm, math.sqrt(sum(v * v for v in row)), rel_tol=1e-6)
            share = sum(abs(v) > SATURATION_THRESHOLD for v in row) / len(row)
            assert math.isclose(saturated, share, abs_tol=1e-7)
    labels = [step["label"] for step in body["steps"]]
    assert body["flips"] == [t for t in range(1, len(labels)) if labels[t] != labels[t - 1]]
    if CHECKPOINT_KINDS[kind]["bidirectional"]:
        assert body["flips"] == []
    if kind == "rnn":
        assert body["flips"]  # this seeded model changes its mind on this text
    last = body["layers"][-len(rounded["layers"]) :]
    for full, small in zip(last, rounded["layers"], strict=True):
        assert small["norm"] == [round(value, 2) for value in full["norm"]]  # every unit's


async def test_units_pick_columns(client: httpx.AsyncClient) -> None:
    request = {
        "text": TEXT,
        "layers": "all",
        "include_gates": True,
        "include_cell_state": True,
        "full": True,
    }
    full = (await client.post("/hidden-states", json=request)).json()
    picked = (await client.post("/hidden-states", json=request | {"units": [7, 0, 11]})).json()
    for whole, part in zip(full["layers"], picked["layers"], strict=True):
        assert part["units"] == [7, 0, 11]
        assert part["hidden"] == [[row[7], row[0], row[11]] for row in whole["hidden"]]
        assert part["cell"] == [[row[7], row[0], row[11]] for row in whole["cell"]]
        for name, values in part["gates"].items():
            assert values == [[row[7], row[0], row[11]] for row in whole["gates"][name]]
        assert part["norm"] == whole["norm"]
    assert picked["steps"] == full["steps"]


async def test_top_k_picks_the_most_active_units(client: httpx.AsyncClient) -> None:
    request = {"text": TEXT, "layers": "all", "include_gates": True, "full": True}
    full = (await client.post("/hidden-states", json=request)).json()
    top = (await client.post("/hidden-states", json=request | {"top_k": 3})).json()
    for whole, part in zip(full["layers"], top["layers"], strict=True):
        activity = [
            sum(abs(row[u]) for row in whole["hidden"]) / len(whole["hidden"])
            for u in range(HIDDEN_SIZE)
        ]
        expected = sorted(range(HIDDEN_SIZE), key=lambda u: -activity[u])[:3]
        assert part["units"] == expected
        assert part["hidden"] == [[row[u] for u in expected] for row in whole["hidden"]]
        assert part["gates"]["forget"] == [
            [row[u] for u in expected] for row in whole["gates"]["forget"]
        ]
    everything = (await client.post("/hidden-states", json=request | {"top_k": 500})).json()
    assert len(everything["layers"][0]["units"]) == HIDDEN_SIZE  # at most hidden_size


@pytest.mark.parametrize(
    ("body", "error_type"),
    [
        pytest.param({"units": [1], "top_k": 2}, "units_or_top_k", id="both"),
        pytest.param({"units": [1, 1]}, "duplicate_units", id="duplicates"),
        pytest.param({"units": []}, "too_short", id="empty"),
        pytest.param({"units": [-1]}, "greater_than_equal", id="negative"),
        pytest.param({"units": [0, 12]}, "unit_out_of_range", id="out-of-range"),
        pytest.param({"top_k": 0}, "greater_than_equal", id="top-k-zero"),
        pytest.param({"include_gates": "yes"}, "bool_type", id="gates-not-bool"),
    ],
)
async def test_invalid_unit_choices_are_422(
    client: httpx.AsyncClient, body: dict[str, Any], error_type: str
) -> None:
    response = await client.post("/hidden-states", json={"text": TEXT} | body)
    assert_error(response, 422, "validation_error")
    assert error_type in detail_types(response)
    if error_type == "unit_out_of_range":
        assert response.json()["error"]["details"] == [
            {
                "loc": ["body", "units", 1],
                "msg": "unit 12 does not exist; the model has units 0-11",
                "type": "unit_out_of_range",
            }
        ]


async def test_response_size_cap(serve: Any) -> None:
    big = {"text": TEXT * 2, "layers": "all", "include_gates": True, "include_cell_state": True}
    small = {"text": TEXT * 2, "top_k": 2, "decimals": 2}
    async with serve("lstm", max_response_bytes=4096) as client:
        refused = await client.post("/hidden-states", json=big)
        fine = await client.post("/hidden-states", json=small)
    async with serve("lstm") as client:
        uncapped = await client.post("/hidden-states", json=big)
    error = assert_error(refused, 422, "validation_error")
    (detail,) = error["details"]
    assert detail["type"] == "response_too_large"
    assert detail["loc"] == ["body"]
    size = int(re.search(r"would be (\d+) bytes", detail["msg"])[1])  # type: ignore[index]
    assert size == len(uncapped.content)
    for hint in ("the limit is 4096", "APP_MAX_RESPONSE_BYTES", "'units'", "'top_k'", "'decimals'"):
        assert hint in detail["msg"]
    assert fine.status_code == 200
    assert len(fine.content) <= 4096
    assert fine.headers["content-type"] == "application/json"


async def test_hidden_states_take_up_to_256_tokens_by_default(client: httpx.AsyncClient) -> None:
    fine = await client.post("/hidden-states", json={"text": "good " * 256, "top_k": 1})
    too_many = await client.post("/hidden-states", json={"text": "good " * 257})
    assert fine.status_code == 200
    assert len(fine.json()["tokens"]) == 256
    assert detail_types(too_many) == {"too_many_tokens"}


# --- /explain ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(CHECKPOINT_KINDS))
async def test_explain_per_cell(serve: Any, kind: str) -> None:
    async with serve(kind) as client:
        response = await client.post("/explain", json={"text": TEXT})
        predicted = (await client.post("/predict", json={"text": TEXT})).json()
    assert response.status_code == 200, response.text
    body = response.json()
    steps = len(body["tokens"])
    assert body["tokens"][-1] == {"text": "zyxxy", "start": 45, "end": 50, "id": 1, "oov": True}
    assert body["prediction"] == {k: predicted[k] for k in ("label", "score", "probabilities")}
    assert body["label"] == predicted["label"]
    assert body["model"] == predicted["model"]
    ig = body["integrated_gradients"]
    assert len(ig["attributions"]) == steps
    assert (ig["baseline"], ig["steps"], ig["quadrature"]) == ("pad", 50, "gauss_legendre")
    difference = ig["logit"] - ig["baseline_logit"]
    assert abs(sum(ig["attributions"]) - difference) <= IG_TOLERANCE
    assert math.isclose(ig["delta"], sum(ig["attributions"]) - difference, abs_tol=1e-9)
    occlusion = body["occlusion"]
    assert occlusion["replacement"] == "unk"
    assert len(occlusion["attributions"]) == len(occlusion["probability_changes"]) == steps
    assert occlusion["attributions"][-1] == 0.0  # <unk> replaced by <unk>


async def test_explain_a_requested_label_with_options(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/explain",
        json={
            "text": "not bad at all",
            "label": "neutral",
            "methods": ["integrated_gradients"],
            "steps": 7,
            "baseline": "unk",
            "decimals": 3,
        },
    )
    body = response.json()
    assert response.status_code == 200, response.text
    assert body["label"] == "neutral"
    assert "occlusion" not in body
    ig = body["integrated_gradients"]
    assert (ig["baseline"], ig["steps"]) == ("unk", 7)
    assert all(round(value, 3) == value for value in ig["attributions"])
    assert round(body["prediction"]["score"], 3) == body["prediction"]["score"]
    dropped = (
        await client.post(
            "/explain", json={"text": "lovely", "methods": ["occlusion"], "occlusion": "drop"}
        )
    ).json()
    assert "integrated_gradients" not in dropped
    assert dropped["occlusion"]["replacement"] == "drop"
    assert len(dropped["occlusion"]["attributions"]) == 1


@pytest.mark.parametrize(
    ("body", "error_type"),
    [
        pytest.param({"label": "sarcastic"}, "unknown_label", id="label"),
        pytest.param({"steps": 129}, "too_many_steps", id="steps-over-limit"),
        pytest.param({"steps": 0}, "greater_than_equal", id="steps-zero"),
        pytest.param({"methods": []}, "too_short", id="no-methods"),
        pytest.param({"methods": ["occlusion", "occlusion"]}, "duplicate_methods", id="twice"),
        pytest.param({"methods": ["lime"]}, "literal_error", id="unknown-method"),
        pytest.param({"baseline": "mean"}, "literal_error", id="baseline"),
        pytest.param({"occlusion": "mask"}, "literal_error", id="occlusion"),
        pytest.param({"decimals": 9}, "less_than_equal", id="decimals"),
        pytest.param({"text": " "}, "empty_text", id="empty"),
        pytest.param({"text": "good " * 257}, "too_many_tokens", id="tokens"),
        pytest.param({"extra": 1}, "extra_forbidden", id="extra"),
    ],
)
async def test_invalid_explain_requests_are_422(
    client: httpx.AsyncClient, body: dict[str, Any], error_type: str
) -> None:
    response = await client.post("/explain", json={"text": TEXT} | body)
    assert_error(response, 422, "validation_error")
    assert error_type in detail_types(response)


async def test_explain_limits_are_settings(serve: Any) -> None:
    async with serve("gru", max_explain_tokens=3, max_ig_steps=5) as client:
        tokens = await client.post("/explain", json={"text": "a b c d"})
        default_steps = await client.post("/explain", json={"text": "a b c"})
        steps = await client.post("/explain", json={"text": "a b c", "steps": 6})
        both = await client.post("/explain", json={"text": "a b c", "steps": 6, "label": "x"})
        fine = await client.post("/explain", json={"text": "a b c", "steps": 5})
        schema = (await client.get("/openapi.json")).json()
    assert assert_error(tokens, 422, "validation_error")["details"] == [
        {
            "loc": ["body", "text"],
            "msg": "text has 4 tokens; the limit is 3",
            "type": "too_many_tokens",
        }
    ]
    assert assert_error(steps, 422, "validation_error")["details"] == [
        {"loc": ["body", "steps"], "msg": "6 steps; the limit is 5", "type": "too_many_steps"}
    ]
    assert detail_types(both) == {"too_many_steps", "unknown_label"}
    assert fine.status_code == 200
    assert default_steps.json()["integrated_gradients"]["steps"] == 5  # min(50, the limit)
    steps_schema = schema["components"]["schemas"]["ExplainRequest"]["properties"]["steps"]
    integer = next(option for option in steps_schema["anyOf"] if option["type"] == "integer")
    assert integer["maximum"] == 5


async def test_explain_deadline_is_503(serve: Any) -> None:
    async with serve("rnn", request_timeout_s=1e-9) as client:
        response = await client.post("/explain", json={"text": "hello"})
    assert_error(response, 503, "deadline_exceeded")
    assert response.headers["retry-after"] == "1"


# --- auth, readiness, the page -------------------------------------------------------------------


async def test_new_routes_need_a_key_when_keys_are_set(serve: Any) -> None:
    key = {"authorization": "Bearer first-key-1234567890"}
    async with serve("rnn", api_keys="first-key-1234567890") as client:
        for path in ("/tokenize", "/explain", "/hidden-states"):
            refused = await client.post(path, json={"text": "hi"})
            assert_error(refused, 401, "unauthorized")
            assert refused.headers["www-authenticate"] == "Bearer"
            assert (await client.post(path, json={"text": "hi"}, headers=key)).status_code == 200
        assert (await client.get("/")).status_code == 200  # the page is open; its calls are not
        assert (await client.get("/explorer/explorer.js")).status_code == 200


async def test_new_routes_are_503_before_the_model_is_ready(make_settings: Any) -> None:
    transport = httpx.ASGITransport(app=create_app(make_settings("rnn")))  # no lifespan
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for path in ("/tokenize", "/explain"):
            response = await client.post(path, json={"text": "hello"})
            assert_error(response, 503, "not_ready")
        assert (await client.get("/")).status_code == 200


async def test_the_page_and_its_assets_are_local(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    html = response.text
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing from elsewhere
    assets = re.findall(r"(?:src|href)=\"(/explorer/[^\"]+)\"", html)
    assert {"/explorer/explorer.js", "/explorer/explorer.css"} <= set(assets)
    for asset in assets:
        fetched = await client.get(asset)
        assert fetched.status_code == 200, asset
        text = fetched.text.replace('"http://www.w3.org/2000/svg"', "")  # a name, not a fetch
        assert "http://" not in text
        assert "https://" not in text
    assert (await client.get("/?text=not%20bad")).text == html  # the text is read by the page
