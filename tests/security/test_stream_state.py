"""Forged stream states against a real server: signed, so only the range checks stand between
each bad field and the model. Every one must be a 4xx in the common error shape, over HTTP
and over the WebSocket, and leave no traceback in the server's log.

The server runs with `APP_STREAM_SECRET` set, which the test also holds: it signs states
field by field with `app.streaming`'s own codec (`StateCodec.seal`), as a replica running
other code, or anyone who learnt the secret, could.
"""

from __future__ import annotations

import json
import math
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from app.streaming.codec import (
    FLAG_FINISHED,
    FLAG_FLOAT64,
    FLAG_HAS_CELL,
    FORMAT_VERSION,
    MAX_STREAM_CHARS,
    STATE_HEADER,
    StateCodec,
)
from tests.security.conftest import Server, StartServer

pytestmark = pytest.mark.slow

STREAM_SECRET = "hostile-stream-secret-7f3a9c2e51"
OTHER_SECRET = "another-stream-secret-0b8d4e6a19"
MAX_PENDING = 16
TTL_S = 600


@dataclass(frozen=True)
class Model:
    """What the server says it runs (GET /model): all a forger needs besides the secret."""

    sha256: str
    layers: int
    hidden: int
    has_cell: bool
    dtype: torch.dtype


class Forger:
    """Writes states field by field; `state()` alone is a valid one."""

    def __init__(self, model: Model, secret: str = STREAM_SECRET) -> None:
        self.model = model
        self.codec = StateCodec(
            secret=secret.encode(),
            model_sha256=model.sha256,
            num_layers=model.layers,
            hidden_size=model.hidden,
            has_cell=model.has_cell,
            dtype=model.dtype,
            ttl_s=TTL_S,
            max_tail_chars=MAX_PENDING,
        )

    @property
    def flags(self) -> int:
        """The flags of an unfinished state of this model."""
        model = self.model
        return (FLAG_HAS_CELL if model.has_cell else 0) | (
            FLAG_FLOAT64 if model.dtype == torch.float64 else 0
        )

    def state(self, **fields: Any) -> str:
        """A signed state: 12 characters read, 2 tokens, "gre" unfinished, unless `fields`
        (any header field, or `tail`, `hidden_states`, `cell_states`, `floats`) say otherwise."""
        model = self.model
        tail: bytes = fields.pop("tail", b"gre")
        layers = fields.get("layers", model.layers)
        hidden = fields.get("hidden", model.hidden)
        flags = fields.get("flags", self.flags)
        has_cell = bool(flags & FLAG_HAS_CELL)
        dtype = torch.float64 if flags & FLAG_FLOAT64 else torch.float32
        hidden_states = fields.pop("hidden_states", torch.full((layers, hidden), 0.25))
        cell_states = fields.pop("cell_states", torch.full((layers, hidden), -0.5))
        values = [hidden_states, cell_states] if has_cell else [hidden_states]
        floats: bytes = fields.pop(
            "floats", torch.cat([v.reshape(-1) for v in values]).to(dtype).numpy().tobytes()
        )
        header = {
            "version": FORMAT_VERSION,
            "flags": flags,
            "tag": bytes.fromhex(model.sha256)[:8],
            "issued_at": int(time.time()),
            "position": 12,
            "token_count": 2,
            "layers": layers,
            "hidden": hidden,
            "tail_bytes": len(tail),
        }
        unknown = set(fields) - set(header)
        assert not unknown, unknown
        header.update(fields)
        return self.codec.seal(STATE_HEADER.pack(*header.values()) + tail + floats)


def served_model(server: Server) -> Model:
    info = httpx.get(f"{server.base_url}/model", timeout=10).json()
    architecture = info["architecture"]
    return Model(
        sha256=info["sha256"],
        layers=architecture["num_layers"],
        hidden=architecture["hidden_size"],
        has_cell=architecture["cell"] == "lstm",
        dtype=getattr(torch, info["inference"]["state_dtype"]),
    )


# name -> (build the state, the piece sent with it, status, code, details type, message part)
Case = tuple[Callable[[Forger], str], str, int, str, str, str]
CASES: dict[str, Case] = {
    "position-beyond-the-cap": (
        lambda f: f.state(position=MAX_STREAM_CHARS + 1),
        "at ",
        422,
        "invalid_state",
        "state_malformed",
        "position (1000000001) is out of range",
    ),
    "token-count-near-2^32": (
        lambda f: f.state(position=2**32 + 5, token_count=2**32 - 1),
        "at ",
        422,
        "invalid_state",
        "state_malformed",
        "is out of range",
    ),
    "token-count-above-the-characters": (
        lambda f: f.state(position=12, token_count=10),
        "at ",
        422,
        "invalid_state",
        "state_malformed",
        "token count (10) exceeds the characters read (9)",
    ),
    "position-shorter-than-the-tail": (
        lambda f: f.state(position=2, token_count=0),
        "at ",
        422,
        "invalid_state",
        "state_malformed",
        "position (2) is out of range",
    ),
    "stream-at-its-cap": (
        lambda f: f.state(position=MAX_STREAM_CHARS - 2),
        "at ",
        422,
        "validation_error",
        "stream_too_long",
        "the stream would reach 1000000001 characters",
    ),
    "layers": (
        lambda f: f.state(layers=f.model.layers + 1),
        "at ",
        422,
        "invalid_state",
        "state_malformed",
        "the state is shaped for",
    ),
    "hidden-size": (
        lambda f: f.state(hidden=f.model.hidden + 3),
        "at ",
        422,
        "invalid_state",
        "state_malformed",
        "the state is shaped for",
    ),
    "cell-flag": (
        lambda f: f.state(flags=f.flags & ~FLAG_HAS_CELL),
        "at ",
        422,
        "invalid_state",
        "state_malformed",
        "without cell states",
    ),
    "dtype-flag": (
        lambda f: f.state(flags=f.flags ^ FLAG_FLOAT64),
        "at ",
        409,
        "state_model_mismatch",
        "state_model_mismatch",
        "start a new stream",
    ),
    "unknown-flags": (
        lambda f: f.state(flags=f.flags | 0x80),
        "at ",
        422,
        "invalid_state",
        "state_malformed",
        "flags this service does not know",
    ),
    "tail-too-long": (
        lambda f: f.state(tail=b"x" * (MAX_PENDING + 1), position=40),
        "",
        422,
        "invalid_state",
        "state_malformed",
        f"unfinished text exceeds {MAX_PENDING} characters",
    ),
    "tail-bytes-beyond-any-tail": (
        lambda f: f.state(tail="é".encode() * (2 * MAX_PENDING + 1), position=80),
        "",
        422,
        "invalid_state",
        "state_malformed",
        f"unfinished text exceeds {MAX_PENDING} characters",
    ),
    "tail-not-utf8": (
        lambda f: f.state(tail=b"gr\xff"),
        "at ",
        422,
        "invalid_state",
        "state_malformed",
        "not UTF-8",
    ),
    "tail-a-lone-surrogate": (
        lambda f: f.state(tail=b"\xed\xa0\xbd"),
        "at ",
        422,
        "invalid_state",
        "state_malformed",
        "not UTF-8",
    ),
    "tail-with-whitespace": (
        lambda f: f.state(tail=b"gr e"),
        "at ",
        422,
        "invalid_state",
        "state_malformed",
        "contains whitespace",
    ),
    "finished-with-a-tail": (
        lambda f: f.state(flags=f.flags | FLAG_FINISHED),
        "at ",
        422,
        "invalid_state",
        "state_malformed",
        "finished but holds unfinished text",
    ),
    "tail-bytes-past-the-payload": (
        lambda f: f.state(tail_bytes=200),
        "at ",
        422,
        "invalid_state",
        "state_malformed",
        "length does not match",
    ),
    "floats-missing": (
        lambda f: f.state(floats=b"\x00" * 8),
        "at ",
        422,
        "invalid_state",
        "state_malformed",
        "length does not match",
    ),
    "floats-extra": (
        lambda f: f.state(
            floats=torch.zeros(
                (2 if f.model.has_cell else 1) * f.model.layers * f.model.hidden + 1,
                dtype=f.model.dtype,
            )
            .numpy()
            .tobytes()
        ),
        "at ",
        422,
        "invalid_state",
        "state_malformed",
        "length does not match",
    ),
    "hidden-nan": (
        lambda f: f.state(hidden_states=torch.full((f.model.layers, f.model.hidden), math.nan)),
        "at ",
        422,
        "invalid_state",
        "state_malformed",
        "non-finite",
    ),
    "cell-infinite": (
        lambda f: f.state(cell_states=torch.full((f.model.layers, f.model.hidden), math.inf)),
        "at ",
        422,
        "invalid_state",
        "state_malformed",
        "non-finite",
    ),
    "hidden-out-of-range": (
        lambda f: f.state(hidden_states=torch.full((f.model.layers, f.model.hidden), 3e38)),
        "at ",
        422,
        "invalid_state",
        "state_malformed",
        "outside [-1, 1]",
    ),
    "issued-in-the-future": (
        lambda f: f.state(issued_at=int(time.time()) + 3600),
        "at ",
        422,
        "invalid_state",
        "state_malformed",
        "in the future",
    ),
    "issued-at-the-end-of-time": (
        lambda f: f.state(issued_at=2**32 - 1),
        "at ",
        422,
        "invalid_state",
        "state_malformed",
        "in the future",
    ),
    "expired": (
        lambda f: f.state(issued_at=int(time.time()) - TTL_S - 30),
        "at ",
        422,
        "invalid_state",
        "state_expired",
        "the state expired",
    ),
    "another-secret": (
        lambda f: Forger(f.model, OTHER_SECRET).state(),
        "at ",
        422,
        "invalid_state",
        "state_signature",
        "signed with another APP_STREAM_SECRET",
    ),
    "truncated": (
        lambda f: f.state()[:-10],
        "at ",
        422,
        "invalid_state",
        "state_signature",
        "altered or truncated",
    ),
    "header-only": (
        lambda f: f.state()[: 4 * STATE_HEADER.size // 3],
        "at ",
        422,
        "invalid_state",
        "state_malformed",
        "bad encoding or size",
    ),
    "another-model": (
        lambda f: Forger(replace(f.model, sha256="cd" * 32)).state(),
        "at ",
        409,
        "state_model_mismatch",
        "state_model_mismatch",
        "another model version",
    ),
}


def no_trouble_in(log: Path) -> None:
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    for line in text.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            assert record.get("status", 0) < 500, record
            assert record["level"] not in ("ERROR", "CRITICAL"), record


@pytest.fixture
def stream_server(start_server: StartServer) -> Server:
    return start_server(
        APP_STREAM_SECRET=STREAM_SECRET,
        APP_STREAM_STATE_TTL_S=str(TTL_S),
        APP_STREAM_MAX_PENDING_CHARS=str(MAX_PENDING),
    )


def test_the_forger_writes_states_the_server_accepts(stream_server: Server) -> None:
    """Without this, every refusal below could come from a forger that gets the layout wrong."""
    forger = Forger(served_model(stream_server))
    for state, piece in [
        (forger.state(), "at food "),
        (forger.state(tail=b"", position=9, token_count=9), "good"),
        (forger.state(position=MAX_STREAM_CHARS - 5, token_count=MAX_STREAM_CHARS - 8), "at"),
        (forger.state(issued_at=int(time.time()) + 30), "at"),
        (forger.state(issued_at=int(time.time()) - TTL_S + 30), "at"),
        (forger.state(hidden_states=torch.ones(forger.model.layers, forger.model.hidden)), ""),
    ]:
        response = httpx.post(
            f"{stream_server.base_url}/stream", json={"text": piece, "state": state}, timeout=10
        )
        assert response.status_code == 200, response.text
    body = response.json()
    assert body["position"] == 12
    assert [t["text"] for t in body["pending"]] == ["gre"]
    no_trouble_in(stream_server.log)


def test_every_forged_field_is_a_clear_4xx(stream_server: Server) -> None:
    forger = Forger(served_model(stream_server))
    expected: dict[str, tuple[int, str, str]] = {}
    seen: dict[str, tuple[int, str, str]] = {}
    with httpx.Client(base_url=stream_server.base_url, timeout=10) as client:
        for name, (build, piece, status, code, type_, fragment) in CASES.items():
            expected[name] = (status, code, type_)
            response = client.post("/stream", json={"text": piece, "state": build(forger)})
            body = response.json()
            error = body["error"]
            (detail,) = error["details"]
            seen[name] = (response.status_code, error["code"], detail["type"])
            assert fragment in detail["msg"], (name, detail)
            assert detail["loc"] == ["body", "state" if code != "validation_error" else "text"]
            assert error["message"].endswith(detail["msg"])
            assert body["request_id"] == response.headers["x-request-id"]
    assert seen == expected
    no_trouble_in(stream_server.log)


def test_every_forged_field_closes_the_websocket_cleanly(stream_server: Server) -> None:
    forger = Forger(served_model(stream_server))
    seen: dict[str, tuple[int | None, str | None, str]] = {}
    for name, (build, piece, _, code, _, _) in CASES.items():
        with connect(f"{stream_server.ws_url}/stream/ws", open_timeout=10) as ws:
            ws.send(json.dumps({"text": piece, "state": build(forger)}))
            error = json.loads(ws.recv(timeout=10))
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
        assert closed.value.rcvd is not None
        seen[name] = (closed.value.rcvd.code, closed.value.rcvd.reason, error["error"]["code"])
        assert seen[name] == (1008, code, code), name
    assert len(seen) == len(CASES)
    # The server is still serving.
    assert httpx.get(f"{stream_server.base_url}/readyz", timeout=10).status_code == 200
    no_trouble_in(stream_server.log)


def test_the_header_layout_is_the_one_forged_here() -> None:
    # The forger packs fields in this order; a change to the layout must change it too.
    assert STATE_HEADER.format == "<BB8sIQIBHH"
    assert struct.calcsize(STATE_HEADER.format) == STATE_HEADER.size == 31
