"""The Open Inference Protocol (KServe v2, REST) beside the native API, under /v2.

So that KServe, Triton and Seldon clients and tooling work unchanged, each model of the store
is also served as that protocol describes a model: one input, `text` (BYTES, shape [N]: one
string per text), and two outputs, `probabilities` (FP32, [N, labels], row-major, in the
label order its metadata gives) and `label` (BYTES, [N]). An inference goes through the same
runtime, limits and queues as POST /predict, and answers the same probabilities.

What this module decides where the protocol leaves a choice (docs/api/v2.md says the same):

- Health answers are 200 for true and 400 for false, as the protocol's health section asks
  ("a 4xx status code indicates false"), with a body saying which and, when false, why.
  A model that failed to load is not ready (400); a name the store does not hold is a 404.
- The server is ready when every model that passed its checks is: a model that failed to
  load does not hold the whole server back (GET /readyz and GET /models name it).
- Both the JSON form and the binary tensor data extension (`binary_tensor_data`, announced in
  GET /v2): the `text` input may come as binary data after the JSON (each string a 4-byte
  little-endian length, then its UTF-8 bytes), and each output may be asked for as binary
  data (`binary_data` on the output, or `binary_data_output` on the request), as
  tritonclient does by default. Shared memory and classification are refused with a 400.
- Every error has the protocol's shape, `{"error": "<message>"}` (`app.http.errors`).

The routes stay out of /openapi.json: that document describes the native API and its one
error shape, and the protocol has its own published description.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ConfigDict, TypeAdapter, ValidationError

from app.api.deps import RuntimeDep, serving_for
from app.api.schemas.common import Text
from app.api.schemas.v2 import (
    InferRequest,
    MetadataTensor,
    ModelMetadata,
    ModelReady,
    RequestInput,
    ServerLive,
    ServerMetadata,
    ServerReady,
)
from app.core.errors import ApiError, InvalidInputError, summarise
from app.core.logging import request_id_var
from app.http.errors import DEFAULT_MESSAGES, readable_details
from app.http.security import is_json
from app.inference.results import PredictionResult
from app.inference.runtime import Runtime
from app.inference.store import ModelStore, StoreEntry

# The routes that read or run models take the API's guards; the probes, like /healthz and
# /readyz, take none (app.main).
router = APIRouter(prefix="/v2", include_in_schema=False)
health_router = APIRouter(prefix="/v2", include_in_schema=False)

SERVER_NAME = "rnn-sentiment"
# "<project>_<format>", as the protocol names platforms: PyTorch weights in safetensors.
PLATFORM = "pytorch_safetensors"
INPUT = "text"
PROBABILITIES = "probabilities"
LABEL = "label"
OUTPUTS = (PROBABILITIES, LABEL)
EXTENSIONS = ["binary_tensor_data"]
# The header that gives the JSON's length when binary tensor data follows it.
HEADER_LENGTH = "inference-header-content-length"
_DIGITS = re.compile(r"[0-9]{1,12}")
_LENGTH = struct.Struct("<I")  # a BYTES element's length, in binary tensor data
_TEXTS: TypeAdapter[list[str]] = TypeAdapter(list[Text], config=ConfigDict(strict=True))
_SHOWN_CHARS = 100  # a value echoed in a message is cut to this many characters


def bad_request(message: str) -> ApiError:
    """A 400 in the protocol's words (rendered as `{"error": message}` under /v2)."""
    return ApiError(400, "bad_request", message)


def _store(request: Request) -> ModelStore:
    store: ModelStore = request.state.store
    return store


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."


def _entry(store: ModelStore, name: str, version: str | None) -> StoreEntry:
    """The model `name` (404 when the store has none), at `version` when one is named (404
    unless it is the version served now)."""
    entry = store.entry(name)
    if version is not None:
        serving = entry.slot.current
        served = serving.runtime.model.version if serving is not None else None
        if served != version:
            now = f"it serves version {served!r}" if served else "it serves no version now"
            raise ApiError(
                404,
                "version_not_found",
                f"Model {name!r} has no version {_shown(version)}: {now}.",
            )
    return entry


# -- health and metadata -----------------------------------------------------------------------


@health_router.get("/health/live")
async def server_live() -> ServerLive:
    """The process answers (says nothing about the models)."""
    return ServerLive(live=True)


@health_router.get("/health/ready")
async def server_ready(request: Request) -> Response:
    """200 when every model that passed its checks is ready; 400 before that and while
    shutting down."""
    store: ModelStore | None = getattr(request.state, "store", None)
    waiting = ["(the store)"] if store is None else [e.name for e in store if e.status == "loading"]
    if waiting:
        answer = ServerReady(ready=False, error=f"Not ready yet: {', '.join(waiting)}.")
        return _json(answer.model_dump(), 400)
    return _json(ServerReady(ready=True).model_dump(exclude_none=True))


@router.get("")
async def server_metadata(request: Request) -> ServerMetadata:
    """The server's name, version and protocol extensions."""
    return ServerMetadata(name=SERVER_NAME, version=request.app.version, extensions=EXTENSIONS)


@router.get("/models/{name}")
async def model_metadata(name: str, request: Request) -> ModelMetadata:
    return _metadata(_entry(_store(request), name, None), _store(request))


@router.get("/models/{name}/versions/{version}")
async def model_version_metadata(name: str, version: str, request: Request) -> ModelMetadata:
    return _metadata(_entry(_store(request), name, version), _store(request))


@router.get("/models/{name}/ready")
async def model_ready(name: str, request: Request) -> Response:
    return _ready(_entry(_store(request), name, None))


@router.get("/models/{name}/versions/{version}/ready")
async def model_version_ready(name: str, version: str, request: Request) -> Response:
    return _ready(_entry(_store(request), name, version))


def _ready(entry: StoreEntry) -> Response:
    """200 `ready: true` for a model that serves; 400 `ready: false`, and why, otherwise."""
    status = entry.status
    if status == "ready":
        return _json(ModelReady(name=entry.name, ready=True).model_dump(exclude_none=True))
    why = f"it failed to load: {entry.failure}" if status == "failed" else "it is loading"
    answer = ModelReady(name=entry.name, ready=False, error=f"Model {entry.name!r}: {why}.")
    return _json(answer.model_dump(), 400)


def _metadata(entry: StoreEntry, store: ModelStore) -> ModelMetadata:
    """What the model takes and gives; its labels while it is loaded (else the label count
    is -1: unknown)."""
    serving = entry.slot.current
    labels = list(serving.runtime.predictor.labels) if serving is not None else None
    parameters: dict[str, str | int | float | bool] = {
        "status": entry.status,
        "default": entry.name == store.default_name,
    }
    if labels is not None:
        parameters["labels"] = orjson.dumps(labels).decode()
    return ModelMetadata(
        name=entry.name,
        versions=[serving.runtime.model.version] if serving is not None else [],
        platform=PLATFORM,
        inputs=[MetadataTensor(name=INPUT, datatype="BYTES", shape=[-1])],
        outputs=[
            MetadataTensor(
                name=PROBABILITIES,
                datatype="FP32",
                shape=[-1, len(labels) if labels is not None else -1],
            ),
            MetadataTensor(name=LABEL, datatype="BYTES", shape=[-1]),
        ],
        parameters=parameters,
    )


# -- inference ---------------------------------------------------------------------------------


@router.post("/models/{name}/infer")
async def infer(name: str, request: Request, runtime: RuntimeDep) -> Response:
    """The model's outputs for a batch of texts (module doc)."""
    return await _infer(request, runtime, name, None)


@router.post("/models/{name}/versions/{version}/infer")
async def infer_version(name: str, version: str, request: Request, runtime: RuntimeDep) -> Response:
    """`infer`, for the version served now only (404 for any other)."""
    return await _infer(request, runtime, name, version)


async def _infer(request: Request, runtime: Runtime, name: str, version: str | None) -> Response:
    _entry(_store(request), name, version)  # 404 before the body is read
    body, binary = await _read_request(request)
    texts = _texts(body.inputs, binary, runtime.settings.max_texts)
    wanted = _outputs(body)
    with serving_for(request, runtime, name) as serving:
        runtime = serving.runtime
        if version is not None and runtime.model.version != version:  # reloaded meanwhile
            _entry(_store(request), name, version)
        try:
            predictions = await runtime.predict(texts, field="texts")
        except InvalidInputError as error:
            raise bad_request(_text_problems(error.details)) from None
        labels = runtime.predictor.labels
        outputs = [_output(output, predictions, labels) for output in wanted]
        answer = {
            "model_name": runtime.model.name,
            "model_version": runtime.model.version,
            "id": body.id if body.id is not None else request_id_var.get(),
            "outputs": [output.tensor for output in outputs],
        }
    header = orjson.dumps(answer)
    blobs = [output.binary for output in outputs if output.binary is not None]
    if not blobs:
        return Response(header, media_type="application/json")
    return Response(
        b"".join([header, *blobs]),
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(len(header))},
    )


async def _read_request(request: Request) -> tuple[InferRequest, bytes]:
    """The request body as an `InferRequest`, and the binary tensor data after its JSON
    (b"" when there is none); 400 (or 415) saying what is wrong."""
    headers = request.headers
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Compressed request bodies are not accepted (Content-Encoding: {encoding[:32]}): "
            "send the JSON as it is.",
        )
    # Clients of the protocol often send no Content-Type (tritonclient does not): the body is
    # then read as JSON, the protocol's one form here.
    content_type = headers.get("content-type")
    if content_type is not None and not is_json(content_type.encode("latin-1")):
        raise ApiError(415, "unsupported_media_type", DEFAULT_MESSAGES[415])
    content = await request.body()
    header_length = headers.get(HEADER_LENGTH)
    binary = b""
    if header_length is not None:
        digits = header_length.strip()
        length = int(digits) if _DIGITS.fullmatch(digits) else -1
        if not 0 <= length <= len(content):
            raise bad_request(
                f"Inference-Header-Content-Length must be the length of the JSON at the start "
                f"of the body: a whole number from 0 to {len(content)}."
            )
        content, binary = content[:length], content[length:]
    try:
        raw = orjson.loads(content)
    except orjson.JSONDecodeError:
        raise bad_request(DEFAULT_MESSAGES[400]) from None
    try:
        body = InferRequest.model_validate(raw)
    except ValidationError as error:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in error.errors(include_url=False)]
        raise bad_request(summarise(readable_details(errors, InferRequest))) from None
    return body, binary


def _texts(inputs: Sequence[RequestInput], binary: bytes, max_texts: int) -> list[str]:
    """The texts of the one input, `text`: BYTES, shape [N] or [N, 1], data one string per
    text (flat, or [[s], ...] for [N, 1]; or `binary`, its binary tensor data), at most
    `max_texts` of them. A 400 names the first thing that is wrong; the shape is checked
    before the data is looked at."""
    if len(inputs) != 1 or inputs[0].name != INPUT:
        names = ", ".join(_shown(tensor.name) for tensor in inputs)
        raise bad_request(
            f"The model takes one input, 'text' (BYTES, shape [N]); the request sends {names}."
        )
    tensor = inputs[0]
    if tensor.datatype != "BYTES":
        raise bad_request(
            f"Input 'text' has datatype {_shown(tensor.datatype)}: it must be 'BYTES', "
            "one string per text."
        )
    parameters = tensor.parameters or {}
    if parameters.get("shared_memory_region") is not None:
        raise bad_request("The shared memory extension is not supported: send the data.")
    shape = tensor.shape
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise bad_request(
            f"Input 'text' has shape {_shown(shape)}: it must be [N] or [N, 1], "
            "one string per text."
        )
    count = shape[0]
    if count < 0:
        raise bad_request("Input 'text' has a negative dimension in its shape.")
    if count == 0:
        raise bad_request("Input 'text' is empty: send at least one text.")
    if count > max_texts:
        raise bad_request(
            f"Input 'text' holds {_shown(count)} texts; the limit is {max_texts} per request."
        )
    data = _data(tensor, binary, count)
    if len(shape) == 2 and all(isinstance(row, list) and len(row) == 1 for row in data):
        data = [row[0] for row in data]
    if len(data) != count:
        raise bad_request(
            f"Input 'text' has shape {_shown(shape)} but {len(data)} elements in its data."
        )
    for index, value in enumerate(data):
        if not isinstance(value, str):
            raise bad_request(
                f"Input 'text' element {index} is {_json_kind(value)}, not a string: "
                "BYTES data is one string per text."
            )
    try:
        return _TEXTS.validate_python(data)
    except ValidationError as error:
        details = [{"loc": ["element", *e["loc"]], "msg": e["msg"]} for e in error.errors()]
        raise bad_request(f"Input 'text': {summarise(details)}.") from None


def _data(tensor: RequestInput, binary: bytes, count: int) -> list[Any]:
    """The input's elements: its JSON `data`, or its binary tensor data decoded (at most
    `count` + 1 elements are read, enough to tell a mismatch)."""
    size = (tensor.parameters or {}).get("binary_data_size")
    if size is None:
        if tensor.data is None:
            raise bad_request("Input 'text' has no data: send 'data', or binary tensor data.")
        return tensor.data
    if tensor.data is not None:
        raise bad_request("Input 'text' has both 'data' and binary tensor data: send one.")
    if isinstance(size, bool) or not isinstance(size, int) or size != len(binary):
        raise bad_request(
            f"Input 'text' declares binary_data_size {_shown(size)}, but {len(binary)} bytes "
            "of binary tensor data follow the JSON."
        )
    elements: list[Any] = []
    offset = 0
    while offset < len(binary) and len(elements) <= count:
        if offset + _LENGTH.size > len(binary):
            raise bad_request("Input 'text' binary tensor data ends inside an element's length.")
        (length,) = _LENGTH.unpack_from(binary, offset)
        offset += _LENGTH.size
        if offset + length > len(binary):
            raise bad_request(
                f"Input 'text' binary element {len(elements)} is longer than the data left."
            )
        try:
            elements.append(binary[offset : offset + length].decode("utf-8"))
        except UnicodeDecodeError:
            raise bad_request(
                f"Input 'text' binary element {len(elements)} is not UTF-8."
            ) from None
        offset += length
    return elements


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    return "an object"


@dataclass(frozen=True, slots=True)
class _Wanted:
    name: str
    binary: bool


@dataclass(frozen=True, slots=True)
class _Output:
    tensor: dict[str, Any]  # the output's JSON
    binary: bytes | None  # its binary tensor data, when asked for so


def _outputs(body: InferRequest) -> list[_Wanted]:
    """The outputs to answer, in the order asked (each once; all of them when none is named),
    and whether each goes as binary data: its own `binary_data`, else the request's
    `binary_data_output`."""
    default = (body.parameters or {}).get("binary_data_output") is True
    if body.outputs is None:
        return [_Wanted(name, default) for name in OUTPUTS]
    wanted: dict[str, _Wanted] = {}
    for output in body.outputs:
        if output.name not in OUTPUTS:
            raise bad_request(
                f"Unknown output {_shown(output.name)}: the model gives 'probabilities' "
                "and 'label'."
            )
        parameters = output.parameters or {}
        if parameters.get("classification") not in (None, 0, False):
            raise bad_request("The classification extension is not supported.")
        if parameters.get("shared_memory_region") is not None:
            raise bad_request("The shared memory extension is not supported.")
        binary = parameters.get("binary_data")
        wanted.setdefault(
            output.name, _Wanted(output.name, default if binary is None else binary is True)
        )
    return list(wanted.values())


def _output(
    wanted: _Wanted, predictions: Sequence[PredictionResult], labels: Sequence[str]
) -> _Output:
    """One output tensor of the answer, its data flat in row-major order: in the JSON, or as
    binary data (FP32 little-endian; BYTES as 4-byte little-endian lengths, each followed by
    its UTF-8 bytes)."""
    if wanted.name == PROBABILITIES:
        shape = [len(predictions), len(labels)]
        values: list[Any] = [p.probabilities[label] for p in predictions for label in labels]
        datatype = "FP32"
    else:
        shape = [len(predictions)]
        values = [p.label for p in predictions]
        datatype = "BYTES"
    tensor: dict[str, Any] = {"name": wanted.name, "datatype": datatype, "shape": shape}
    if not wanted.binary:
        tensor["data"] = values
        return _Output(tensor, None)
    if datatype == "FP32":
        binary = struct.pack(f"<{len(values)}f", *values)
    else:
        encoded = [value.encode("utf-8") for value in values]
        binary = b"".join(_LENGTH.pack(len(item)) + item for item in encoded)
    tensor["parameters"] = {"binary_data_size": len(binary)}
    return _Output(tensor, binary)


def _text_problems(details: Sequence[Any]) -> str:
    """The runtime's refusal of some texts (a limit), told per element of the input."""
    parts = []
    for detail in details[:3]:
        where = detail.get("loc", [])[-1:]
        index = where[0] if where and isinstance(where[0], int) else None
        prefix = f"element {index}: " if index is not None else ""
        parts.append(prefix + str(detail.get("msg", "")))
    more = len(details) - 3
    return "Input 'text': " + "; ".join(parts) + (f" (and {more} more)" if more > 0 else "") + "."


def _json(content: dict[str, Any], status_code: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status_code, media_type="application/json")
