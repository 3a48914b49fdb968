"""Settings, read once from the environment (prefix `APP_`) and validated at start-up.

Every knob the service has lives here, with its default and its reason. `get_settings()` is
cached; tests build `Settings(...)` directly and hand it to `create_app(settings)`.
The server's own address (`HOST`, `PORT`, `WORKERS`) is read without the prefix by
`ServerSettings`, because `make serve`, the Dockerfile and compose all speak those names.
"""

from __future__ import annotations

import ipaddress
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
LogFormat = Literal["auto", "json", "text"]


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


# Model names are folder names, and travel in URLs and metric labels: kept to a safe alphabet.
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MODEL_NAME_RULE = "letters, digits, '.', '_' and '-', at most 64, not starting with '.', '_' or '-'"


def parse_canary(value: str) -> tuple[str, float]:
    """`NAME:FRACTION` as (name, fraction), or ValueError saying what is wrong with it."""
    name, colon, fraction_text = value.partition(":")
    if not colon:
        raise ValueError(f"APP_CANARY: expected NAME:FRACTION, e.g. candidate:0.1, not {value!r}")
    if not re.fullmatch(MODEL_NAME_PATTERN, name):
        raise ValueError(f"APP_CANARY: {name!r} is not a model name ({MODEL_NAME_RULE})")
    try:
        fraction = float(fraction_text)
    except ValueError:
        fraction = math.nan
    if not 0.0 < fraction <= 1.0:  # NaN fails too
        raise ValueError(
            f"APP_CANARY: the fraction {fraction_text!r} is not a number above 0 and at most 1"
        )
    return name, fraction


class Settings(BaseSettings):
    """The service's configuration; each field is the env var `APP_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="APP_", frozen=True, extra="ignore")

    model_store: Path = Field(
        Path("model_store"),
        description=(
            "Directory of checkpoints, one folder per model, named by its folder: every "
            "checkpoint in it is served (or those in APP_MODELS)."
        ),
    )
    models: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Comma-separated model names: serve only these from APP_MODEL_STORE.",
    )
    default_model: str = Field(
        "default",
        pattern=MODEL_NAME_PATTERN,
        description="The model that answers requests that name none; it must load to start.",
    )
    model_dir: Path | None = Field(
        None,
        description=(
            "One checkpoint directory to serve instead of a store, named APP_DEFAULT_MODEL "
            "(not with APP_MODEL_STORE)."
        ),
    )

    # Rolling out a new version (app/inference/rollout.py, docs/rollout.md): both name a model
    # of the store other than the default, checked when the settings are read.
    canary: str | None = Field(
        None,
        description=(
            "NAME:FRACTION, e.g. candidate:0.1: the model NAME answers that fraction (above 0, "
            "at most 1) of the requests that name no model on /predict, /tokenize, "
            "/hidden-states and /explain, chosen at random per request; streams stay on the "
            "default. The answer's model says which one answered."
        ),
    )
    shadow: str | None = Field(
        None,
        description=(
            "NAME: the model NAME also scores every text the default model answers on "
            "/predict, after the answer is sent; /metrics counts how often their labels agree "
            "and times NAME. Dropped, never queued, when NAME's queue is full."
        ),
    )

    # Request limits: each has its own clear 4xx.
    max_text_chars: int = Field(2000, ge=1, description="Characters per text.")
    max_tokens: int = Field(256, ge=1, description="Tokens per text (after tokenization).")
    max_texts: int = Field(64, ge=1, description="Texts per /predict request.")
    min_confidence: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description=(
            "/predict marks each prediction `confident` (score at least this) and warns "
            "`low_confidence` below it, unless a request sends its own min_confidence. Unset: "
            "only requests that send one get `confident`."
        ),
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Request body size; refused before it is read whole."
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0.0,
        description=(
            "Longest wait for the next piece of a request body; past it, 408 and the "
            "connection is closed (a slow or stalled client cannot hold a request open)."
        ),
    )
    body_deadline_s: float = Field(
        60.0,
        gt=0.0,
        description=(
            "Longest time a whole request body may take to arrive, however it trickles in; "
            "past it, 408 and the connection is closed."
        ),
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0.0,
        description=(
            "Longest time a request's line and headers may take to arrive; past it the "
            "connection is closed (slow-loris clients; see app/http/protocol.py)."
        ),
    )
    max_hidden_state_tokens: int = Field(
        256, ge=1, description="Tokens per /hidden-states text (its response grows with each)."
    )
    max_response_bytes: int = Field(
        2_097_152,
        ge=1024,
        description=(
            "Largest /hidden-states response; bigger ones get 422 asking for fewer units "
            "('units', 'top_k'), fewer decimals or fewer layers."
        ),
    )
    max_explain_tokens: int = Field(
        256, ge=1, description="Tokens per /explain text (each costs a forward per method)."
    )
    max_ig_steps: int = Field(
        128, ge=1, description="Integrated-gradients steps a /explain request may ask for."
    )

    # Logs: readable text on a terminal, one JSON object per line anywhere else (log shippers).
    log_level: LogLevel = Field("INFO", description="Log level of the app and uvicorn.")
    log_format: LogFormat = Field(
        "auto",
        description=(
            "json: one JSON object per line, for log shippers; text: a readable line per "
            "record; auto: text when stderr is a terminal, json otherwise."
        ),
    )
    access_log: bool = Field(True, description="One log line per request.")

    # Inference routes require `Authorization: Bearer <key>` when any key is set.
    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (), description="Comma-separated keys; when set, inference routes need one."
    )
    rate_limit_per_minute: int | None = Field(
        None,
        ge=1,
        description=(
            "Requests per minute per API key (per client address without keys) on the "
            "inference routes; over it, 429 with Retry-After. Counted in each worker process."
        ),
    )
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description=(
            "Comma-separated origins allowed by CORS, and the only origins a browser may open "
            "/stream/ws from; empty: no CORS headers, and browsers may open /stream/ws only "
            "from the service's own origin."
        ),
    )
    trusted_proxies: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description=(
            "Comma-separated addresses or networks (CIDR) of the proxies in front of the "
            "service. A request from one of them is attributed to the client named in its "
            "X-Forwarded-For (for rate limits and logs); empty: forwarded headers are ignored."
        ),
    )
    metrics_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (),
        description=(
            "Comma-separated keys for GET /metrics; when set, a scraper must send "
            "'Authorization: Bearer <key>'. Empty: /metrics is open."
        ),
    )

    # Reloading the checkpoint at model_dir in place (see app/inference/slot.py).
    admin_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (),
        description=(
            "Comma-separated keys for the admin routes (POST /admin/reload); "
            "empty: no admin routes."
        ),
    )
    reload_on_sighup: bool = Field(
        True, description="SIGHUP reloads the checkpoint at APP_MODEL_DIR, like /admin/reload."
    )

    # Micro-batching and load shedding (see app/inference/batching.py).
    max_batch_size: int = Field(64, ge=1, description="Texts per forward pass.")
    max_wait_ms: float = Field(
        0.0,
        ge=0.0,
        le=1000.0,
        description="Extra time to wait for a fuller batch; 0 takes what is queued at once.",
    )
    queue_size: int = Field(
        1024, ge=1, description="Texts waiting for the model before new requests get 503."
    )
    request_timeout_s: float = Field(
        10.0,
        gt=0.0,
        description="Deadline for a request's wait for the model; past it, 503 and no compute.",
    )
    retry_after_s: int = Field(1, ge=1, description="Retry-After sent with a 503.")
    inference_thread: bool = Field(
        False,
        description=(
            "Run forward passes in a dedicated thread instead of on the event loop "
            "(measured slower here, with 1 or 2 workers: thread hand-offs and GIL contention)."
        ),
    )
    inference_dtype: Literal["bfloat16", "float32", "float64"] = Field(
        "bfloat16",
        description=(
            "The dtype of /predict's batched pass; each gives a text the same result whatever "
            "its batch-mates. bfloat16 and float32 run the texts of a pass unpacked (every row "
            "every step), faster than float64 (packed), bfloat16 fastest, with the default "
            "model's test metrics unchanged; bfloat16 needs a CPU with native bfloat16 "
            "(AVX-512 BF16 or AMX), else float32 is used, and a dtype whose results would "
            "depend on the batch on this CPU falls back to the next. /hidden-states, "
            "streams and explanations compute in float32 under a bfloat16 pass. Only a "
            "one-direction LSTM runs unpacked; other cells and bidirectional models always "
            "run in float64."
        ),
    )
    torchscript: bool = Field(
        True,
        description=(
            "Run /predict's forward pass through a traced TorchScript graph of the same "
            "model (same weights and dtype, same answers, less Python per call). "
            "false: the eager module."
        ),
    )
    torch_threads: int = Field(1, ge=1, description="torch intra-op threads per worker.")
    gc_freeze: bool = Field(
        True, description="gc.freeze() after start-up: full collections skip the start-up heap."
    )
    fast_path: bool = Field(
        True,
        description=(
            "Answer valid POST /predict requests without FastAPI's routing, dependency and "
            "serialisation layers (same responses; anything else still goes through FastAPI)."
        ),
    )

    docs: bool = Field(True, description="Serve /docs, /redoc and /openapi.json.")
    explorer: bool = Field(True, description="Serve the hidden-state explorer page at /.")

    # Streaming (/stream, /stream/ws): the client carries a signed state (see app/streaming/).
    stream_secret: SecretStr | None = Field(
        None,
        description=(
            "Key signing stream states (16+ characters); set the same value on every replica. "
            "Unset: a random key made when the server starts, shared by its workers (WORKERS) "
            "but by no other replica, and a new one after every restart: a stream then "
            "continues only on the server that started it, until that server restarts."
        ),
    )
    stream_state_ttl_s: int = Field(
        3600, ge=1, description="A stream state expires this long after the call that issued it."
    )
    stream_max_chunk_chars: int = Field(2000, ge=1, description="Characters per stream piece.")
    stream_max_pending_chars: int = Field(
        256,
        ge=1,
        le=16383,
        description="Characters a stream may hold after its last whitespace (an unfinished word).",
    )
    stream_ws_max_message_bytes: int = Field(
        65536, ge=1024, description="Largest /stream/ws message; bigger ones close it with 1009."
    )
    stream_ws_rate: float = Field(
        20.0, gt=0.0, description="/stream/ws messages per second per connection, on average."
    )
    stream_ws_burst: int = Field(
        40, ge=1, description="/stream/ws messages a connection may send at once above the rate."
    )
    stream_ws_idle_timeout_s: float = Field(
        300.0, gt=0.0, description="/stream/ws connections silent this long are closed (1001)."
    )
    stream_ws_max_connections: int = Field(
        256,
        ge=1,
        description="Open /stream/ws connections per worker; past it, new ones are closed (1013).",
    )
    stream_ws_auth_timeout_s: float = Field(
        5.0,
        gt=0.0,
        description=(
            "With API keys set, a /stream/ws connection must authenticate within this time "
            "or is closed (1008)."
        ),
    )

    @field_validator("models", mode="before")
    @classmethod
    def _model_names(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("models")
    @classmethod
    def _valid_model_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if not re.fullmatch(MODEL_NAME_PATTERN, name):
                raise ValueError(f"APP_MODELS: {name!r} is not a model name ({MODEL_NAME_RULE})")
        return names

    @model_validator(mode="after")
    def _store_or_dir(self) -> Settings:
        if self.model_dir is not None and "model_store" in self.model_fields_set:
            raise ValueError(
                "set APP_MODEL_STORE (a directory of models) or APP_MODEL_DIR (one model), not both"
            )
        if self.models and self.default_model not in self.models:
            raise ValueError(f"APP_MODELS does not list APP_DEFAULT_MODEL ({self.default_model!r})")
        return self

    def model_dirs(self) -> dict[str, Path]:
        """Each model to serve by name, the default first: APP_MODEL_DIR alone, the models
        APP_MODELS lists, or every checkpoint folder in APP_MODEL_STORE (one holding a
        manifest.json; hidden folders are skipped)."""
        if self.model_dir is not None:
            return {self.default_model: self.model_dir}
        names = list(self.models)
        if not names and self.model_store.is_dir():
            names = sorted(
                entry.name
                for entry in self.model_store.iterdir()
                if re.fullmatch(MODEL_NAME_PATTERN, entry.name)
                and (entry / "manifest.json").is_file()
            )
        ordered = [self.default_model, *(name for name in names if name != self.default_model)]
        return {name: self.model_store / name for name in ordered}

    @field_validator("canary")
    @classmethod
    def _canary_served(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            _check_rollout_model("APP_CANARY", parse_canary(value)[0], info)
        return value

    @field_validator("shadow")
    @classmethod
    def _shadow_served(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            if not re.fullmatch(MODEL_NAME_PATTERN, value):
                raise ValueError(f"APP_SHADOW: {value!r} is not a model name ({MODEL_NAME_RULE})")
            _check_rollout_model("APP_SHADOW", value, info)
        return value

    def canary_split(self) -> tuple[str, float]:
        """APP_CANARY as (model name, fraction); call only when it is set."""
        if self.canary is None:
            raise ValueError("APP_CANARY is not set")
        return parse_canary(self.canary)

    @field_validator("stream_secret")
    @classmethod
    def _strong_stream_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None:
            _check_secret(secret.get_secret_value(), "APP_STREAM_SECRET")
        return secret

    @field_validator(
        "api_keys", "admin_keys", "metrics_keys", "cors_origins", "trusted_proxies", mode="before"
    )
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("api_keys", "admin_keys", "metrics_keys")
    @classmethod
    def _strong_keys(
        cls, keys: tuple[SecretStr, ...], info: ValidationInfo
    ) -> tuple[SecretStr, ...]:
        setting = f"APP_{(info.field_name or '').upper()}"
        for key in keys:
            secret = key.get_secret_value()
            if not (secret.isascii() and secret.isprintable()) or " " in secret:
                raise ValueError(f"each key in {setting} must be printable ASCII without spaces")
            _check_secret(secret, setting)
        return keys

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, proxies: tuple[str, ...]) -> tuple[str, ...]:
        for proxy in proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"APP_TRUSTED_PROXIES: {proxy!r} is not an IP address or network"
                ) from None
        return proxies


def _check_rollout_model(setting: str, name: str, info: ValidationInfo) -> None:
    """APP_CANARY and APP_SHADOW name a model served next to the default (ValueError naming
    `setting`): checked with the settings, so `python -m app` refuses a wrong name in one line
    before anything loads. The model settings are declared first, so they are in `info.data`
    (unless they failed themselves, reported on their own)."""
    store_fields = ("model_store", "models", "default_model", "model_dir")
    if any(field not in info.data for field in store_fields):
        return
    served = Settings.model_construct(**{f: info.data[f] for f in store_fields}).model_dirs()
    if name == info.data["default_model"]:
        raise ValueError(
            f"{setting} names the default model ({name!r}); name the candidate, another model "
            "of the store"
        )
    if name not in served:
        raise ValueError(
            f"{setting}: no model named {name!r} is served (served: {', '.join(served)})"
        )


# Values that ship in examples and templates: a deployment that kept one has no secret at all.
PLACEHOLDER_MARKS = ("change-me", "changeme", "example")
MIN_SECRET_CHARS = 16


def _check_secret(secret: str, setting: str) -> None:
    """Refuse a key or secret that is short or still a placeholder (ValueError naming it)."""
    if len(secret) < MIN_SECRET_CHARS:
        raise ValueError(f"{setting}: each value needs {MIN_SECRET_CHARS} or more characters")
    lowered = secret.lower()
    if any(mark in lowered for mark in PLACEHOLDER_MARKS):
        raise ValueError(f"{setting}: a placeholder value is not a secret; generate a real one")


class ServerSettings(BaseSettings):
    """Where `python -m app` listens: `HOST`, `PORT`, `WORKERS` (no prefix)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0: every interface).")
    port: int = Field(8000, ge=0, le=65535, description="TCP port to listen on.")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description=(
            "Worker processes, each with its own copy of the model; above 1 a gunicorn arbiter "
            "supervises uvicorn workers."
        ),
    )


# prometheus_client's own variable: the directory where each worker process keeps its metrics
# (app.core.metrics). Named here, away from prometheus_client, because it must be set before
# prometheus_client is first imported, which picks its multi-process mode then (app.__main__).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
