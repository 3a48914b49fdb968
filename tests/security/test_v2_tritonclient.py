"""The Open Inference Protocol against a real `python -m app`, through tritonclient.

A store of two models (copies of the tiny checkpoints) served by one process; tritonclient's
HTTP client reads it as it would a Triton or KServe server: health, metadata, inference in the
JSON form and in the binary tensor data form (its default), and errors as
`InferenceServerException`s carrying the server's status and message. Hostile bodies are sent
raw with httpx: each gets a 400 in the protocol's shape, and the server keeps serving.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient  # a dev dependency: missing, the tests fail, never skip
from tritonclient.utils import InferenceServerException

from tests.app.test_server import free_port, running, server_env, wait_ready
from tests.security.conftest import API_KEY, StartServer

pytestmark = pytest.mark.slow

TEXTS = ["the food was great", "the service was slow and rude", "it was fine, i suppose"]


@pytest.fixture(scope="module")
def base_url(
    checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """One server for the module, over a store of `default` (LSTM) and `tweets` (GRU)."""
    root = tmp_path_factory.mktemp("v2")
    store = root / "store"
    shutil.copytree(checkpoints["lstm"], store / "default")
    shutil.copytree(checkpoints["gru"], store / "tweets")
    port = free_port()
    env = server_env(checkpoints["lstm"], port, APP_MODEL_STORE=str(store))
    del env["APP_MODEL_DIR"]
    log = root / "server.log"
    with running([".venv/bin/python", "-m", "app"], env, log) as process:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, process, log)
        yield url


@pytest.fixture
def client(base_url: str) -> Iterator[Any]:
    triton = httpclient.InferenceServerClient(url=base_url.removeprefix("http://"))
    yield triton
    triton.close()


def text_input(texts: list[str], *, binary: bool = False, column: bool = False) -> Any:
    array = np.array(texts, dtype=object)
    if column:
        array = array.reshape(-1, 1)
    tensor = httpclient.InferInput("text", list(array.shape), "BYTES")
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def json_outputs() -> list[Any]:
    return [
        httpclient.InferRequestedOutput("probabilities", binary_data=False),
        httpclient.InferRequestedOutput("label", binary_data=False),
    ]


def native(base_url: str, texts: list[str], model: str) -> list[dict[str, Any]]:
    response = httpx.post(f"{base_url}/predict", json={"texts": texts, "model": model})
    assert response.status_code == 200, response.text
    predictions: list[dict[str, Any]] = response.json()["predictions"]
    return predictions


def server_error(call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as raised:
        call()
    error: InferenceServerException = raised.value
    return error


def test_health_and_server_metadata(client: Any) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "rnn-sentiment"
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata_and_readiness(client: Any) -> None:
    metadata = client.get_model_metadata("tweets")
    assert metadata["name"] == "tweets"
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in metadata["outputs"]] == ["probabilities", "label"]
    labels = json.loads(metadata["parameters"]["labels"])
    assert metadata["outputs"][0]["shape"] == [-1, len(labels)]
    (version,) = metadata["versions"]
    assert client.get_model_metadata("tweets", model_version=version) == metadata
    assert client.is_model_ready("tweets")
    assert client.is_model_ready("tweets", model_version=version)
    assert not client.is_model_ready("tweets", model_version="0" * 12)
    assert not client.is_model_ready("nope")
    error = server_error(lambda: client.get_model_metadata("nope"))
    assert error.status() == "404"
    assert "No model named 'nope'" in error.message()


@pytest.mark.parametrize("model", ["default", "tweets"])
@pytest.mark.parametrize("texts", [TEXTS[:1], TEXTS], ids=["one", "three"])
def test_infer_matches_native_predict(
    client: Any, base_url: str, model: str, texts: list[str]
) -> None:
    result = client.infer(model, [text_input(texts)], outputs=json_outputs(), request_id="r-1")
    expected = native(base_url, texts, model)
    labels = json.loads(client.get_model_metadata(model)["parameters"]["labels"])
    response = result.get_response()
    assert response["model_name"] == model
    assert response["id"] == "r-1"
    # The JSON carries the very numbers /predict sends...
    (probabilities,) = [o for o in response["outputs"] if o["name"] == "probabilities"]
    assert probabilities["data"] == [p["probabilities"][name] for p in expected for name in labels]
    # ...which tritonclient reads as the FP32 tensor the metadata announces.
    array = result.as_numpy("probabilities")
    assert array.dtype == np.float32
    assert array.shape == (len(texts), len(labels))
    assert np.array_equal(
        array,
        np.array([[p["probabilities"][name] for name in labels] for p in expected], np.float32),
    )
    # BYTES in JSON: tritonclient gives the strings as they are.
    assert list(result.as_numpy("label")) == [p["label"] for p in expected]


def test_two_models_answer_each_its_own(client: Any) -> None:
    default = client.infer("default", [text_input(TEXTS)], outputs=json_outputs())
    tweets = client.infer("tweets", [text_input(TEXTS)], outputs=json_outputs())
    assert default.get_response()["model_name"] == "default"
    assert tweets.get_response()["model_name"] == "tweets"
    assert not np.array_equal(default.as_numpy("probabilities"), tweets.as_numpy("probabilities"))


def test_tritonclient_defaults_binary_data_both_ways(client: Any) -> None:
    """Binary input and (no outputs named) binary outputs: tritonclient's defaults."""
    binary = client.infer("tweets", [text_input(TEXTS, binary=True)])
    plain = client.infer("tweets", [text_input(TEXTS)], outputs=json_outputs())
    assert all("data" not in o for o in binary.get_response()["outputs"])
    assert np.array_equal(binary.as_numpy("probabilities"), plain.as_numpy("probabilities"))
    # BYTES as binary data: tritonclient gives bytes, to be decoded as UTF-8.
    assert [label.decode() for label in binary.as_numpy("label")] == list(plain.as_numpy("label"))


def test_column_shape_version_path_and_gzip(client: Any) -> None:
    version = client.get_model_metadata("default")["versions"][0]
    many = [f"text number {i} was good" for i in range(64)]
    result = client.infer(
        "default",
        [text_input(many, column=True)],
        model_version=version,
        outputs=json_outputs(),
        response_compression_algorithm="gzip",
    )
    assert result.as_numpy("probabilities").shape[0] == 64
    assert result.get_response()["model_version"] == version


@pytest.mark.parametrize(
    ("inputs", "status", "words"),
    [
        (lambda: [text_input(["x"])], "404", "No model named"),
        (
            lambda: [_tensor("text", np.array([1.0], np.float32), "FP32")],
            "400",
            "must be 'BYTES'",
        ),
        (lambda: [_tensor("sentence", np.array(["x"], object), "BYTES")], "400", "one input"),
        (lambda: [text_input([])], "400", "is empty"),
        (lambda: [text_input(["x"] * 65)], "400", "the limit is 64"),
        (lambda: [text_input(["word " * 500])], "400", "2000"),
        (lambda: [text_input(["   "])], "400", "non-whitespace"),
    ],
    ids=["unknown-model", "datatype", "input-name", "empty", "too-many", "too-long", "blank"],
)
def test_errors_reach_tritonclient(client: Any, inputs: Any, status: str, words: str) -> None:
    model = "nope" if status == "404" else "default"
    error = server_error(lambda: client.infer(model, inputs(), outputs=json_outputs()))
    assert error.status() == status
    assert words in error.message()


def _tensor(name: str, array: np.ndarray[Any, Any], datatype: str) -> Any:
    tensor = httpclient.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=False)
    return tensor


HOSTILE: dict[str, bytes] = {
    "huge-shape": json.dumps(
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2**62], "data": ["a"]}]}
    ).encode(),
    "shape-too-big-for-int64": b'{"inputs": [{"name": "text", "datatype": "BYTES", '
    b'"shape": [1' + b"0" * 400 + b'], "data": ["a"]}]}',
    "many-dimensions": json.dumps(
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1] * 10000, "data": ["a"]}]}
    ).encode(),
    "shape-data-mismatch": json.dumps(
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["a"] * 3}]}
    ).encode(),
    "deep-nesting": b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": '
    + b"[" * 100_000
    + b"]" * 100_000
    + b"}]}",
    "nested-data": json.dumps(
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [[[["a"]]]]}]}
    ).encode(),
    "object-data": json.dumps(
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [{"a": 1}]}]}
    ).encode(),
    "number-data": json.dumps(
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": [1, True]}]}
    ).encode(),
    "surrogate": b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], '
    b'"data": ["\\ud800"]}]}',
    "inputs-not-a-list": b'{"inputs": {"name": "text"}}',
    "many-inputs": json.dumps(
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}] * 500}
    ).encode(),
    "not-json": b"\xff\xfe\x00garbage",
    "null": b"null",
    "huge-id": json.dumps(
        {
            "id": "i" * 100_000,
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}],
        }
    ).encode(),
    "binary-length-past-the-end": json.dumps(
        {
            "inputs": [
                {
                    "name": "text",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": 8},
                }
            ]
        }
    ).encode()
    + b"\xff\xff\xff\x7fabcd",
}


@pytest.mark.parametrize("body", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_bodies_get_a_400_in_the_protocol_shape(
    base_url: str, client: Any, body: bytes
) -> None:
    headers = {}
    if body.endswith(b"abcd"):
        headers["Inference-Header-Content-Length"] = str(len(body) - 8)
    response = httpx.post(f"{base_url}/v2/models/default/infer", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert list(response.json()) == ["error"]
    assert len(response.content) < 2000  # nothing of the input is echoed at length
    assert client.is_server_ready()


def test_keys_and_rate_limit(start_server: StartServer) -> None:
    server = start_server(APP_API_KEYS=API_KEY, APP_RATE_LIMIT_PER_MINUTE="3")
    triton = httpclient.InferenceServerClient(url=server.base_url.removeprefix("http://"))
    auth = {"Authorization": f"Bearer {API_KEY}"}
    try:
        assert triton.is_server_live()  # the probes are open, as /healthz and /readyz are
        assert triton.is_server_ready()
        missing = server_error(lambda: triton.infer("default", [text_input(["x"])]))
        assert missing.status() == "401"
        assert "API key" in missing.message()
        metadata = server_error(lambda: triton.get_model_metadata("default"))
        assert metadata.status() == "401"
        for _ in range(3):
            triton.infer("default", [text_input(["x"])], headers=auth)
        limited = server_error(lambda: triton.infer("default", [text_input(["x"])], headers=auth))
        assert limited.status() == "429"
        assert "Too many requests" in limited.message()
    finally:
        triton.close()
