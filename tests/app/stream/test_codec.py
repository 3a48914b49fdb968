"""The state codec and the signing key (`app.streaming.codec`): exact round trips, expiry, the
refusals of a foreign or out-of-range state; where the secret comes from and what is logged.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch

from app.streaming.codec import StateCodec, StreamState, stream_secret
from app.streaming.errors import StreamError
from tests.app.stream.conftest import API_KEY, SECRET, TEXT, assert_close, started
from training.model import RecurrentState


def make_codec(model_sha256: str = "ab" * 32, **overrides: Any) -> StateCodec:
    values: dict[str, Any] = {
        "secret": b"k" * 32,
        "model_sha256": model_sha256,
        "num_layers": 2,
        "hidden_size": 3,
        "has_cell": True,
        "dtype": torch.float64,
        "ttl_s": 60,
        "max_tail_chars": 10,
    }
    values.update(overrides)
    return StateCodec(**values)


def sample_state(tail: str = "gre") -> StreamState:
    hidden = torch.arange(6, dtype=torch.float64).view(2, 3) / 7
    return StreamState(RecurrentState(hidden, -hidden), tail, 42, 7, finished=False)


def test_codec_round_trip_is_exact() -> None:
    codec = make_codec()
    state = sample_state("gré😀")
    decoded = codec.decode(codec.encode(state))
    assert decoded.tail == "gré😀"
    assert (decoded.position, decoded.token_count, decoded.finished) == (42, 7, False)
    assert torch.equal(decoded.recurrent.hidden, state.recurrent.hidden)
    assert decoded.recurrent.cell is not None
    assert state.recurrent.cell is not None
    assert torch.equal(decoded.recurrent.cell, state.recurrent.cell)
    # Header 31 + tail 8 (UTF-8) + 12 float64 + MAC 32 bytes, base64url without padding.
    assert len(codec.encode(state)) == -(-(31 + 8 + 96 + 32) * 4 // 3)


def test_codec_float32_state_is_half_the_size() -> None:
    small = make_codec(dtype=torch.float32)
    assert len(base64.urlsafe_b64decode(small.encode(sample_state()) + "==")) == 31 + 3 + 48 + 32


def test_states_expire() -> None:
    now = [1_000_000.0]
    codec = make_codec(clock=lambda: now[0])
    token = codec.encode(sample_state())
    now[0] += 60
    assert codec.decode(token).position == 42
    now[0] += 1
    with pytest.raises(StreamError, match=r"the state expired: it is 61 s old") as caught:
        codec.decode(token)
    assert caught.value.type == "state_expired"


def test_a_state_for_another_shape_or_model_is_refused() -> None:
    token = make_codec().encode(sample_state())
    with pytest.raises(StreamError) as other_model:
        make_codec("cd" * 32).decode(token)
    assert (other_model.value.status, other_model.value.type) == (409, "state_model_mismatch")
    with pytest.raises(StreamError) as other_secret:
        make_codec(secret=b"j" * 32).decode(token)
    assert other_secret.value.type == "state_signature"


def test_a_state_in_another_precision_is_a_conflict() -> None:
    # The same checkpoint served by a replica computing streams in float32: not converted.
    token = make_codec(dtype=torch.float64).encode(sample_state())
    with pytest.raises(StreamError) as caught:
        make_codec(dtype=torch.float32).decode(token)
    assert (caught.value.status, caught.value.type) == (409, "state_model_mismatch")
    assert "holds float64 numbers but this service computes streams in float32" in str(caught.value)


def test_states_issued_in_the_future_are_refused_beyond_the_skew() -> None:
    now = [1_000_000.0]
    codec = make_codec(clock=lambda: now[0])
    token = codec.encode(sample_state())
    now[0] -= 60  # another replica's clock, a minute ahead of this one's
    assert codec.decode(token).position == 42
    now[0] -= 2
    with pytest.raises(StreamError, match="issued 62 s in the future") as caught:
        codec.decode(token)
    assert caught.value.type == "state_malformed"


# ---------------------------------------------------------------------------------------------
# The secret, and what is said about it at start-up


def test_the_secret_and_where_it_comes_from(make_settings: Any) -> None:
    configured = stream_secret(make_settings("gru", stream_secret=SECRET))
    assert configured == (SECRET.encode(), "APP_STREAM_SECRET")
    first, source = stream_secret(make_settings("gru"))
    assert source == "random"
    assert len(first) == 32
    assert first != stream_secret(make_settings("gru"))[0]
    # The API keys never enter it: the same keys give unrelated secrets.
    keyed = make_settings("gru", api_keys=API_KEY)
    with_keys = {stream_secret(keyed) for _ in range(2)}
    assert len(with_keys) == 2
    assert {source for _, source in with_keys} == {"random"}
    with pytest.raises(ValueError, match="APP_STREAM_SECRET: each value needs 16 or more"):
        make_settings("gru", stream_secret="short")


def stream_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "app.streaming" and r.levelno >= level]


@pytest.mark.anyio
async def test_one_worker_logs_nothing_above_info_without_a_secret(
    make_settings: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKERS", "1")
    caplog.set_level(logging.INFO, logger="app.streaming")
    async with started(make_settings, "gru", stream_secret=None):
        pass
    assert stream_records(caplog, logging.WARNING) == []
    (info,) = stream_records(caplog, logging.INFO)
    assert "random key made at start-up" in info.getMessage()
    caplog.clear()
    async with started(make_settings, "gru"):  # APP_STREAM_SECRET set: nothing to say
        pass
    assert stream_records(caplog, logging.DEBUG) == []


@pytest.mark.anyio
async def test_several_workers_warn_once_without_a_secret(
    make_settings: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKERS", "3")
    caplog.set_level(logging.INFO, logger="app.streaming")
    async with started(make_settings, "gru", stream_secret=None):
        pass
    (warning,) = stream_records(caplog, logging.WARNING)
    message = warning.getMessage()
    assert "shared by this server's 3 workers" in message
    assert "another replica, or this server after a restart, refuses" in message
    assert "python -c 'import secrets; print(secrets.token_hex(32))'" in message
    assert "\n" not in message
    caplog.clear()
    async with started(make_settings, "gru"):
        pass
    assert stream_records(caplog, logging.DEBUG) == []
    # A bad WORKERS is `python -m app`'s to refuse; building the app does not fail on it.
    monkeypatch.setenv("WORKERS", "many")
    assert stream_secret(make_settings("gru"))[1] == "random"


@pytest.mark.slow
def test_the_workers_of_one_server_share_the_default_secret(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """`python -m app` with 2 workers and no APP_STREAM_SECRET: any worker continues a stream."""
    import sys

    from tests.app.test_server import free_port, running, server_env, wait_ready

    port = free_port()
    env = server_env(checkpoints["gru"], port, WORKERS="2", APP_ACCESS_LOG="false")
    base_url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    state = None
    with running([sys.executable, "-m", "app"], env, log) as process:
        wait_ready(base_url, process, log)
        # A new connection for every piece, so the kernel picks a worker for each one.
        for start in range(0, len(TEXT), 4):
            body = {"text": TEXT[start : start + 4], "state": state}
            response = httpx.post(f"{base_url}/stream", json=body, timeout=10)
            assert response.status_code == 200, response.text
            state = response.json()["state"]
        one_shot = httpx.post(f"{base_url}/predict", json={"text": TEXT}, timeout=10).json()
        last = httpx.post(f"{base_url}/stream", json={"state": state, "final": True}, timeout=10)
    assert_close(last.json()["prediction"]["probabilities"], one_shot["probabilities"])
    # Said once, by the arbiter that made the key before forking, not once per worker.
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    warnings = [line for line in lines if line["level"] == "WARNING"]
    assert len(warnings) == 1, warnings
    assert warnings[0]["logger"] == "app.streaming"
    assert "shared by this server's 2 workers" in warnings[0]["message"]
