"""The Open Inference Protocol (KServe v2, REST): the bodies of the /v2 routes.

Field names and shapes are the protocol's, so that KServe, Triton and Seldon clients read them
unchanged. Requests are read strictly (a string is not a number, unknown fields are refused)
but accept the optional `parameters` objects the protocol allows at every level: clients send
them, and the route reads the binary tensor data extension's from them (`binary_data_size`,
`binary_data`, `binary_data_output`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# A parameter's value, as the protocol defines it: a string, a number or a boolean.
ParameterValue = str | int | float | bool
Parameters = dict[str, ParameterValue]

# Dimensions an input tensor may declare. The one input is a vector of texts, [N] or [N, 1]:
# more than this is refused with a message, not walked.
MAX_SHAPE_DIMS = 8


class MetadataTensor(BaseModel):
    """A tensor a model takes or gives: its name, element type and shape (-1: any size)."""

    name: str
    datatype: str
    shape: list[int]


class ServerMetadata(BaseModel):
    """GET /v2."""

    name: str
    version: str
    extensions: list[str] = Field(description="Protocol extensions this server implements.")


class ServerLive(BaseModel):
    """GET /v2/health/live."""

    live: bool


class ServerReady(BaseModel):
    """GET /v2/health/ready: 200 with `ready: true`, or 400 with `ready: false` and why."""

    ready: bool
    error: str | None = None


class ModelReady(BaseModel):
    """GET /v2/models/{name}/ready: 200 with `ready: true`, or 400 with `ready: false` and why."""

    name: str
    ready: bool
    error: str | None = None


class ModelMetadata(BaseModel):
    """GET /v2/models/{name}: what the model takes and gives."""

    name: str
    versions: list[str] = Field(
        description="The version it serves now (a prefix of its checkpoint's sha256); "
        "empty while it is not loaded."
    )
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]
    parameters: Parameters = Field(
        description="`labels`: its labels in output order, as a JSON array in a string "
        "(parameter values are strings, numbers or booleans); `status`, `default`."
    )


class RequestInput(BaseModel):
    """One input tensor of an inference request."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    shape: list[int] = Field(max_length=MAX_SHAPE_DIMS)
    datatype: str
    parameters: Parameters | None = None
    # Checked element by element by the route, which says which element is wrong and why.
    # None when the tensor comes as binary data after the JSON (`binary_data_size`).
    data: list[Any] | None = None


class RequestOutput(BaseModel):
    """One output a request asks for."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    parameters: Parameters | None = None


class InferRequest(BaseModel):
    """POST /v2/models/{name}/infer."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str | None = Field(None, max_length=256)
    parameters: Parameters | None = None
    inputs: list[RequestInput] = Field(min_length=1, max_length=MAX_SHAPE_DIMS)
    outputs: list[RequestOutput] | None = Field(None, max_length=MAX_SHAPE_DIMS)


class ResponseOutput(BaseModel):
    """One output tensor of an answer, its data flat in row-major order: in `data`, or, as
    binary data after the JSON, `parameters.binary_data_size` bytes of it."""

    name: str
    datatype: str
    shape: list[int]
    parameters: Parameters | None = None
    data: list[float] | list[str] | None = None


class InferResponse(BaseModel):
    """The answer to an inference request."""

    model_name: str
    model_version: str
    id: str = Field(description="The request's `id`, or this request's X-Request-ID.")
    outputs: list[ResponseOutput]
