"""The Open Inference Protocol (KServe v2, REST) routes, in process, over a store of models.

Real tiny checkpoints copied into a store (as in test_model_store.py); every answer is checked
against the native API's for the same texts, and every refusal for the protocol's error shape,
`{"error": "<message>"}`, with the status the native API would send (a 422 there is a 400 here).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.conftest import serve_app
from tests.app.test_model_store import make_store, store_settings
from tests.conftest import build_checkpoint

pytestmark = pytest.mark.anyio

TEXTS = ["the food was great", "the service was slow and rude", "it was fine"]
LABELS = ["negative", "neutral", "positive"]


@pytest.fixture
def store(tmp_path: Path, checkpoints: dict[str, Path]) -> Path:
    root = make_store(tmp_path / "store", checkpoints, default="lstm", tweets="gru")
    build_checkpoint(root / "reviews", "lstm", seed=7)
    return root


def request_for(texts: list[Any], **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}],
        **extra,
    }


def v2_error(response: httpx.Response, status: int) -> str:
    """The message of a v2 error answer, after checking its status and exact shape."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"], str)
    assert body["error"]
    message: str = body["error"]
    return message


async def test_server_metadata_and_health(store: Path) -> None:
    async with serve_app(store_settings(store)) as client:
        metadata = await client.get("/v2")
        live = await client.get("/v2/health/live")
        ready = await client.get("/v2/health/ready")
        native = await client.get("/readyz")
    assert metadata.status_code == 200
    assert metadata.json()["name"] == "rnn-sentiment"
    assert metadata.json()["extensions"] == ["binary_tensor_data"]
    assert isinstance(metadata.json()["version"], str)
    assert (live.status_code, live.json()) == (200, {"live": True})
    assert (ready.status_code, ready.json()) == (200, {"ready": True})
    assert native.status_code == 200


async def test_model_metadata_names_tensors_labels_and_version(store: Path) -> None:
    async with serve_app(store_settings(store)) as client:
        metadata = (await client.get("/v2/models/tweets")).json()
        native = (await client.get("/models/tweets")).json()
        by_version = await client.get(f"/v2/models/tweets/versions/{native['version']}")
        wrong_version = await client.get("/v2/models/tweets/versions/nope")
    assert metadata["name"] == "tweets"
    assert metadata["versions"] == [native["version"]]
    assert metadata["platform"] == "pytorch_safetensors"
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
    ]
    assert json.loads(metadata["parameters"]["labels"]) == native["labels"] == LABELS
    assert metadata["parameters"]["default"] is False
    assert by_version.json() == metadata
    assert "no version 'nope'" in v2_error(wrong_version, 404)


@pytest.mark.parametrize("model", ["default", "reviews", "tweets"])
async def test_infer_answers_the_native_probabilities(store: Path, model: str) -> None:
    async with serve_app(store_settings(store)) as client:
        answer = await client.post(f"/v2/models/{model}/infer", json=request_for(TEXTS, id="req-7"))
        native = await client.post("/predict", json={"texts": TEXTS, "model": model})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    predictions = native.json()["predictions"]
    assert body["model_name"] == model
    assert body["model_version"] == native.json()["model"]["version"]
    assert body["id"] == "req-7"
    probabilities, label = body["outputs"]
    assert probabilities["name"] == "probabilities"
    assert probabilities["datatype"] == "FP32"
    assert probabilities["shape"] == [3, 3]
    assert probabilities["data"] == [
        p["probabilities"][name] for p in predictions for name in LABELS
    ]
    assert label == {
        "name": "label",
        "datatype": "BYTES",
        "shape": [3],
        "data": [p["label"] for p in predictions],
    }


async def test_two_models_answer_differently(store: Path) -> None:
    async with serve_app(store_settings(store)) as client:
        default = await client.post("/v2/models/default/infer", json=request_for(TEXTS))
        reviews = await client.post("/v2/models/reviews/infer", json=request_for(TEXTS))
    assert default.json()["outputs"][0]["data"] != reviews.json()["outputs"][0]["data"]


async def test_infer_forms_clients_send(store: Path) -> None:
    """[N, 1] with nested or flat data, chosen outputs, the version path, no id."""
    async with serve_app(store_settings(store)) as client:
        version = (await client.get("/v2/models/default")).json()["versions"][0]
        nested = {
            "inputs": [
                {"name": "text", "datatype": "BYTES", "shape": [2, 1], "data": [["a"], ["b c"]]}
            ],
            "outputs": [{"name": "label", "parameters": {"binary_data": False}}],
        }
        flat = {
            "inputs": [
                {"name": "text", "datatype": "BYTES", "shape": [2, 1], "data": ["a", "b c"]}
            ],
            "outputs": [{"name": "label"}, {"name": "label"}],
        }
        first = await client.post(
            f"/v2/models/default/versions/{version}/infer",
            json=nested,
            headers={"X-Request-ID": "abc-123"},
        )
        second = await client.post(
            "/v2/models/default/infer",
            content=json.dumps(flat).encode(),  # no Content-Type, as tritonclient sends
        )
    assert first.status_code == 200, first.text
    assert first.json()["id"] == "abc-123"  # no id in the body: the request id
    assert [o["name"] for o in first.json()["outputs"]] == ["label"]
    assert second.status_code == 200, second.text
    assert second.json()["outputs"] == first.json()["outputs"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (request_for(["x"], outputs=[{"name": "score"}]), 400, "Unknown output 'score'"),
        (
            {"inputs": [{"name": "txt", "datatype": "BYTES", "shape": [1], "data": ["x"]}]},
            400,
            "one input, 'text'",
        ),
        (
            {"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]},
            400,
            "must be 'BYTES'",
        ),
        (request_for([]), 400, "is empty"),
        (request_for([""]), 400, "non-whitespace"),
        (request_for([7]), 400, "element 0 is a number"),
        (request_for(["a", None]), 400, "element 1 is null"),
        (request_for([["a", "b"]]), 400, "element 0 is an array"),
        (
            {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": ["a"]}]},
            400,
            "1 elements",
        ),
        (
            {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [10**12], "data": ["a"]}]},
            400,
            "the limit is 64",
        ),
        (
            {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [10**30], "data": ["a"]}]},
            400,
            "shape",
        ),
        (
            {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1], "data": ["a"]}]},
            400,
            "negative",
        ),
        (
            {
                "inputs": [
                    {"name": "text", "datatype": "BYTES", "shape": [1, 2], "data": ["a", "b"]}
                ]
            },
            400,
            "[N] or [N, 1]",
        ),
        ({"inputs": []}, 400, "inputs"),
        ({"inputs": "text"}, 400, "inputs"),
        ([1, 2], 400, "expected a JSON object"),
        (
            {"inputs": [{"name": "text", "datatype": "BYTES", "shape": ["1"], "data": ["a"]}]},
            400,
            "shape",
        ),
        (request_for(["x"], extra=1), 400, "unknown field"),
        (
            request_for(["x"], outputs=[{"name": "label", "parameters": {"classification": 2}}]),
            400,
            "classification extension is not supported",
        ),
        (
            {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1]}]},
            400,
            "has no data",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "text",
                        "datatype": "BYTES",
                        "shape": [1],
                        "parameters": {"binary_data_size": 5},
                    }
                ]
            },
            400,
            "but 0 bytes",
        ),
    ],
)
async def test_bad_requests_get_a_400_in_the_protocol_shape(
    client: httpx.AsyncClient, body: Any, status: int, words: str
) -> None:
    response = await client.post("/v2/models/default/infer", json=body)
    assert words in v2_error(response, status)


async def test_limits_are_those_of_predict(make_settings: Any) -> None:
    async with serve_app(make_settings(max_texts=2, max_text_chars=10)) as client:
        many = await client.post("/v2/models/default/infer", json=request_for(["a", "b", "c"]))
        long = await client.post("/v2/models/default/infer", json=request_for(["a", "b" * 11]))
        native = await client.post("/predict", json={"texts": ["a", "b" * 11]})
    assert "holds 3 texts; the limit is 2" in v2_error(many, 400)
    message = v2_error(long, 400)
    assert message.startswith("Input 'text': element 1: ")
    assert native.json()["error"]["details"][0]["msg"] in message


async def test_unknown_model_and_route_are_404s(client: httpx.AsyncClient) -> None:
    model = await client.post("/v2/models/nope/infer", json=request_for(["x"]))
    metadata = await client.get("/v2/models/nope")
    ready = await client.get("/v2/models/nope/ready")
    route = await client.get("/v2/nothing/here")
    method = await client.get("/v2/models/default/infer")
    assert "No model named 'nope'" in v2_error(model, 404)
    assert "Known models: default" in v2_error(metadata, 404)
    v2_error(ready, 404)
    v2_error(route, 404)
    assert "use POST" in v2_error(method, 405)


async def test_malformed_and_non_json_bodies(client: httpx.AsyncClient) -> None:
    url = "/v2/models/default/infer"
    malformed = await client.post(url, content=b"{", headers={"Content-Type": "application/json"})
    nested = await client.post(url, content=b"[" * 5000 + b"]" * 5000)
    text = await client.post(url, content=b"hello", headers={"Content-Type": "text/plain"})
    header = json.dumps(request_for(["x"])).encode()
    cut = await client.post(
        url, content=header + b"\x00\x01", headers={"Inference-Header-Content-Length": "10"}
    )
    beyond = await client.post(
        url, content=header, headers={"Inference-Header-Content-Length": "99999"}
    )
    not_a_number = await client.post(
        url, content=header, headers={"Inference-Header-Content-Length": b"\xb2"}
    )
    gzipped = await client.post(url, content=b"\x1f\x8b", headers={"Content-Encoding": "gzip"})
    assert "not valid JSON" in v2_error(malformed, 400)
    assert "not valid JSON" in v2_error(nested, 400)
    v2_error(text, 415)
    assert "not valid JSON" in v2_error(cut, 400)
    assert "Inference-Header-Content-Length must be" in v2_error(beyond, 400)
    assert "Inference-Header-Content-Length must be" in v2_error(not_a_number, 400)
    assert "Compressed" in v2_error(gzipped, 415)


def binary_request(texts: list[str], *, outputs_binary: bool = True) -> tuple[bytes, str]:
    """A request whose `text` input is binary tensor data, as tritonclient sends it by default:
    the body and its Inference-Header-Content-Length."""
    data = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)
    header = {
        "inputs": [
            {
                "name": "text",
                "datatype": "BYTES",
                "shape": [len(texts)],
                "parameters": {"binary_data_size": len(data)},
            }
        ],
        "parameters": {"binary_data_output": outputs_binary},
    }
    encoded = json.dumps(header).encode()
    return encoded + data, str(len(encoded))


def read_binary_answer(response: httpx.Response) -> dict[str, list[Any]]:
    """Each output's elements, from an answer whose outputs are binary tensor data."""
    length = int(response.headers["Inference-Header-Content-Length"])
    header = json.loads(response.content[:length])
    rest = response.content[length:]
    found: dict[str, list[Any]] = {}
    for output in header["outputs"]:
        size = output["parameters"]["binary_data_size"]
        chunk, rest = rest[:size], rest[size:]
        assert "data" not in output
        if output["datatype"] == "FP32":
            found[output["name"]] = list(struct.unpack(f"<{size // 4}f", chunk))
        else:
            items = []
            while chunk:
                (n,) = struct.unpack_from("<I", chunk)
                items.append(chunk[4 : 4 + n].decode())
                chunk = chunk[4 + n :]
            found[output["name"]] = items
    assert rest == b""
    return found


async def test_binary_tensor_data_in_and_out(client: httpx.AsyncClient) -> None:
    texts = ["the food was great", "ok", "caf\u00e9 \U0001f600 awful"]
    body, length = binary_request(texts)
    answer = await client.post(
        "/v2/models/default/infer",
        content=body,
        headers={"Inference-Header-Content-Length": length},
    )
    plain = await client.post("/v2/models/default/infer", json=request_for(texts))
    body, length = binary_request(texts, outputs_binary=False)
    json_out = await client.post(
        "/v2/models/default/infer",
        content=body,
        headers={"Inference-Header-Content-Length": length},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "application/octet-stream"
    found = read_binary_answer(answer)
    expected = {o["name"]: o["data"] for o in plain.json()["outputs"]}
    assert found["label"] == expected["label"]
    # FP32 on the wire: the JSON answer's values rounded to single precision.
    rounded = [struct.unpack("<f", struct.pack("<f", v))[0] for v in expected["probabilities"]]
    assert found["probabilities"] == rounded
    assert json_out.json()["outputs"] == plain.json()["outputs"]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\x05\x00\x00\x00ab", "longer than the data left"),
        (b"\x01\x00", "ends inside an element's length"),
        (b"\x02\x00\x00\x00\xff\xfe", "is not UTF-8"),
        (b"\x01\x00\x00\x00a\x01\x00\x00\x00b", "but 2 elements"),
    ],
)
async def test_hostile_binary_tensor_data(
    client: httpx.AsyncClient, data: bytes, words: str
) -> None:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(data)},
                }
            ]
        }
    ).encode()
    response = await client.post(
        "/v2/models/default/infer",
        content=header + data,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert words in v2_error(response, 400)


async def test_a_model_that_failed_to_load(store: Path) -> None:
    weights = store / "tweets" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-7])
    async with serve_app(store_settings(store)) as client:
        ready = await client.get("/v2/models/tweets/ready")
        others = await client.get("/v2/models/reviews/ready")
        server = await client.get("/v2/health/ready")
        metadata = await client.get("/v2/models/tweets")
        infer = await client.post("/v2/models/tweets/infer", json=request_for(["x"]))
    assert ready.status_code == 400
    assert ready.json()["ready"] is False
    assert ready.json()["name"] == "tweets"
    assert "failed to load" in ready.json()["error"]
    assert (others.status_code, others.json()) == (200, {"name": "reviews", "ready": True})
    assert server.status_code == 200  # a failed model does not hold the server back
    assert metadata.status_code == 200
    assert metadata.json()["versions"] == []
    assert metadata.json()["parameters"]["status"] == "failed"
    assert metadata.json()["outputs"][0]["shape"] == [-1, -1]
    assert "not being served" in v2_error(infer, 503)
    assert infer.headers["Retry-After"]


async def test_keys_and_rate_limits_guard_v2_but_not_its_probes(make_settings: Any) -> None:
    key = "v2-test-key-0123456789abcdef"
    settings = make_settings(api_keys=key, rate_limit_per_minute=2)
    auth = {"Authorization": f"Bearer {key}"}
    async with serve_app(settings) as client:
        missing = await client.post("/v2/models/default/infer", json=request_for(["x"]))
        metadata = await client.get("/v2", headers=auth)
        first = await client.post("/v2/models/default/infer", json=request_for(["x"]), headers=auth)
        limited = await client.post(
            "/v2/models/default/infer", json=request_for(["x"]), headers=auth
        )
        live = await client.get("/v2/health/live")
        ready = await client.get("/v2/health/ready")
        native = await client.post("/predict", json={"text": "x"})
    assert "API key" in v2_error(missing, 401)
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert metadata.status_code == 200
    assert first.status_code == 200
    assert "Too many requests" in v2_error(limited, 429)
    assert int(limited.headers["Retry-After"]) >= 1
    assert live.status_code == ready.status_code == 200
    # The native API keeps its own error shape.
    assert native.status_code == 401
    assert native.json()["error"]["code"] == "unauthorized"


async def test_v2_routes_stay_out_of_the_native_openapi(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not [path for path in paths if path.startswith("/v2")]


async def test_answers_before_the_routes_take_the_protocol_shape(serve: Any) -> None:
    async with serve("lstm", max_body_bytes=1024) as client:
        response = await client.post(
            "/v2/models/default/infer",
            content=b"{" + b" " * 2000 + b"}",
            headers={"Content-Type": "application/json"},
        )
    assert response.status_code == 413
    assert set(response.json()) == {"error"}
