"""Streaming sentiment with no memory on the server: the client carries the state.

An RNN reads a text one token at a time and remembers it only through its recurrent state, so
a text can be sent in pieces as it is typed or transcribed: each call reads the new piece from
the state the previous call handed back, and returns the prediction so far and a new state.
Nothing is kept between calls, so any replica (any worker) can serve the next piece.

The state (`StateCodec`) is opaque to clients; it carries

- the recurrent state: every layer's hidden state, and the LSTM's cell state, as raw floats in
  the dtype the model runs in (`app.predictor`: float32 for a one-direction LSTM by default,
  else float64), so a stream reads on exactly where it stopped however many pieces it is cut
  into;
- the text not yet read: the characters after the last whitespace, which may be half a word,
  half an emoticon or half an emoji sequence (see "Cutting the text" below);
- the stream's position (characters received) and the number of tokens read;
- a format version byte, the first 8 bytes of the checkpoint's sha256 (a state from another
  model version is refused with a clear 409, never silently misread), and the time it was
  issued (states expire `APP_STREAM_STATE_TTL_S` after the call that issued them);
- an HMAC-SHA256 over all of that, keyed by the secret and the full checkpoint sha256, so a
  tampered, truncated or foreign state is refused instead of being read as hidden states.

Layout (little-endian, as on every platform torch ships for): header `<BB8sIQIBHH` (version,
flags, model tag, issued at, position, token count, layers, hidden size, tail bytes), the tail
in UTF-8, the hidden states (L x H floats) and cell states (L x H, LSTM only), then the 32-byte
MAC; base64url without padding. It is not compressed: floats do not compress. For a 1-layer
LSTM with 128 units that is about 1.5 KB of text in float32 (2.8 KB in float64).

A state is a capability, not a secret: whoever holds one can continue (or fork) that stream,
and it reveals the model's hidden state for the text so far, nothing more.

Cutting the text. No token of `training.tokenizer` spans whitespace, and its lookarounds see
at most one character past a token (tested against one-shot tokenization in
tests/app/test_stream.py). So the text up to and including its last whitespace character
tokenizes exactly as it would inside the whole text: those tokens are final and are read into
the recurrent state. The rest (the tail) is kept in the state as text, and is also read, from
a copy of the state, to give the prediction "if the text ended here". When the last piece is
sent with `final`, the tail is read for good and the stream is closed: every update's
`prediction` is `/predict`'s for the text so far, and the last one that of the whole text (to
about 1e-7 when `/predict` runs in float32: a stream reads one text at a time, `/predict` at
least four rows; within `BFLOAT16_TOLERANCE` under a bfloat16 pass, which streams do not use).

Secret. `APP_STREAM_SECRET` when set (set the same value on every replica). Otherwise it is
derived from `APP_API_KEYS` when those are set (shared by replicas that share keys; rotating
the keys ends the streams in flight), and else random, made when the app is built: the workers
`python -m app` forks from one app share it, other replicas do not, so behind a load balancer a
stream would fail on every replica but its own. Both fallbacks log a warning at start-up.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import struct
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch

from app.batching import BatchObserver, SerialRunner
from app.core.config import Settings
from app.predictor import Prediction, Predictor, prediction_from
from training.model import RecurrentState
from training.tokenizer import Token, tokenize

logger = logging.getLogger("app.streaming")

FORMAT_VERSION = 1
_HEADER = struct.Struct("<BB8sIQIBHH")
_MAC_BYTES = 32
_MODEL_TAG_BYTES = 8
_FINISHED = 0x01
_FLOAT64 = 0x02
_HAS_CELL = 0x04
_KEY_CONTEXT = b"rnn-sentiment stream state\x00"
_BASE64URL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

SecretSource = Literal["APP_STREAM_SECRET", "APP_API_KEYS", "random"]
Step = tuple[str, dict[str, float]]


class StreamError(Exception):
    """A piece the stream cannot take: HTTP-like `status`, stable `code` and `type`, a message.

    `field` is the request field at fault ("text" or "state"), or None for the whole request.
    """

    def __init__(
        self, status: int, code: str, type_: str, message: str, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.type = type_
        self.message = message
        self.field = field


def _invalid_state(type_: str, message: str) -> StreamError:
    return StreamError(422, "invalid_state", type_, message, "state")


def _too_much(type_: str, message: str) -> StreamError:
    return StreamError(422, "validation_error", type_, message, "text")


# ---------------------------------------------------------------------------------------------
# Cutting the text


def final_length(text: str) -> int:
    """Length of the part of `text` whose tokens are final: up to its last whitespace char."""
    for index in range(len(text) - 1, -1, -1):
        if text[index].isspace():
            return index + 1
    return 0


def tokens_at(text: str, offset: int) -> list[Token]:
    """`tokenize(text)` with offsets shifted by `offset` (where `text` starts in the stream)."""
    if not offset:
        return tokenize(text)
    return [Token(t.text, t.start + offset, t.end + offset, t.norm) for t in tokenize(text)]


# ---------------------------------------------------------------------------------------------
# The state and its codec


@dataclass(frozen=True, slots=True)
class StreamState:
    """Everything a stream remembers between two calls."""

    recurrent: RecurrentState
    tail: str  # the text after the last whitespace: not read for good yet
    position: int  # characters received so far
    token_count: int  # tokens read for good so far
    finished: bool = False


class StateCodec:
    """Serialises, signs and checks stream states for one model."""

    def __init__(
        self,
        *,
        secret: bytes,
        model_sha256: str,
        num_layers: int,
        hidden_size: int,
        has_cell: bool,
        dtype: torch.dtype,
        ttl_s: int,
        max_tail_chars: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        digest = bytes.fromhex(model_sha256)
        self._key = hmac.new(secret, _KEY_CONTEXT + digest, hashlib.sha256).digest()
        self._tag = digest[:_MODEL_TAG_BYTES]
        self._layers = num_layers
        self._hidden = hidden_size
        self._has_cell = has_cell
        self._dtype = dtype
        self._ttl_s = ttl_s
        self._max_tail_chars = max_tail_chars
        self._clock = clock

    def encode(self, state: StreamState) -> str:
        tail = state.tail.encode("utf-8")
        flags = (_FINISHED if state.finished else 0) | (_HAS_CELL if self._has_cell else 0)
        if self._dtype == torch.float64:
            flags |= _FLOAT64
        header = _HEADER.pack(
            FORMAT_VERSION,
            flags,
            self._tag,
            int(self._clock()),
            state.position,
            state.token_count,
            self._layers,
            self._hidden,
            len(tail),
        )
        tensors = [state.recurrent.hidden]
        if state.recurrent.cell is not None:
            tensors.append(state.recurrent.cell)
        values = torch.cat([tensor.reshape(-1) for tensor in tensors])  # (1 or 2 * L * H,)
        floats = bytearray(values.numel() * self._dtype.itemsize)
        # Copied straight into the bytes (numpy is not a serving dependency).
        torch.frombuffer(floats, dtype=self._dtype).copy_(values)
        body = header + tail + bytes(floats)
        mac = hmac.new(self._key, body, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(body + mac).rstrip(b"=").decode("ascii")

    def decode(self, token: str) -> StreamState:
        """The state in `token`, or `StreamError` saying why it cannot be used."""
        raw = self._unwrap(token)
        if raw[0] != FORMAT_VERSION:
            raise _invalid_state(
                "state_malformed",
                f"state format version {raw[0]} is not supported (this service writes "
                f"version {FORMAT_VERSION}); start a new stream",
            )
        _, flags, tag, issued_at, position, token_count, layers, hidden, tail_bytes = (
            _HEADER.unpack_from(raw)
        )
        if tag != self._tag:
            raise StreamError(
                409,
                "state_model_mismatch",
                "state_model_mismatch",
                "the state was made by another model version than the one this service runs; "
                "start a new stream",
                "state",
            )
        body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, hmac.new(self._key, body, hashlib.sha256).digest()):
            raise _invalid_state(
                "state_signature",
                "the state was not issued by this service: it was altered or truncated, or "
                "signed with another APP_STREAM_SECRET",
            )
        # Signed by this service for this model, so what follows only fails on a bug.
        dtype = torch.float64 if flags & _FLOAT64 else torch.float32
        has_cell = bool(flags & _HAS_CELL)
        size = layers * hidden * (2 if has_cell else 1) * (8 if flags & _FLOAT64 else 4)
        if (layers, hidden, has_cell) != (self._layers, self._hidden, self._has_cell) or len(
            body
        ) != _HEADER.size + tail_bytes + size:
            raise _invalid_state("state_malformed", "the state does not fit this model")
        age = self._clock() - issued_at
        if age > self._ttl_s:
            raise _invalid_state(
                "state_expired",
                f"the state expired: it is {int(age)} s old and states last "
                f"{self._ttl_s} s; start a new stream",
            )
        try:
            tail = body[_HEADER.size : _HEADER.size + tail_bytes].decode("utf-8")
        except UnicodeDecodeError:
            raise _invalid_state("state_malformed", "the state's text is not UTF-8") from None
        if len(tail) > self._max_tail_chars:
            raise _invalid_state("state_malformed", "the state's unfinished text is too long")
        floats = torch.frombuffer(bytearray(body[_HEADER.size + tail_bytes :]), dtype=dtype)
        states = floats.to(self._dtype).view(-1, layers, hidden)  # (1 or 2, L, H)
        if not bool(torch.isfinite(states).all()):
            raise _invalid_state("state_malformed", "the state holds non-finite numbers")
        recurrent = RecurrentState(states[0], states[1] if has_cell else None)
        return StreamState(recurrent, tail, position, token_count, bool(flags & _FINISHED))

    def _unwrap(self, token: str) -> bytes:
        malformed = _invalid_state(
            "state_malformed", "the state is not one this service issued (bad encoding or size)"
        )
        data = token.encode("ascii", errors="replace")
        if not data or not _BASE64URL.issuperset(data):
            raise malformed
        try:
            raw = base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))
        except (binascii.Error, ValueError):
            raise malformed from None
        if len(raw) < _HEADER.size + _MAC_BYTES:
            raise malformed
        return raw


def stream_secret(settings: Settings) -> tuple[bytes, SecretSource]:
    """The key that signs stream states, and where it came from (see the module doc).

    Call it once per app: a random key is a new one on every call.
    """
    if settings.stream_secret is not None:
        return settings.stream_secret.get_secret_value().encode("utf-8"), "APP_STREAM_SECRET"
    if settings.api_keys:
        keys = sorted(key.get_secret_value().encode("utf-8") for key in settings.api_keys)
        derived = hashlib.sha256(b"rnn-sentiment stream secret\x00" + b"\x00".join(keys))
        return derived.digest(), "APP_API_KEYS"
    return secrets.token_bytes(32), "random"


# ---------------------------------------------------------------------------------------------
# Reading pieces


@dataclass(frozen=True, slots=True)
class StreamJob:
    """One piece, checked and tokenized, ready for the model."""

    recurrent: RecurrentState | None  # None: the start of a stream
    tokens: list[Token]  # final tokens, offsets in the stream
    ids: list[int]
    pending: list[Token]  # the tail's tokens as they would be if the text ended here
    pending_ids: list[int]
    tail: str
    position: int
    token_count: int  # before this piece
    final: bool


@dataclass(frozen=True, slots=True)
class StreamUpdate:
    """What one piece changed, and the state to send with the next one."""

    state: str
    position: int
    token_count: int
    tokens: list[Token]
    ids: list[int]
    steps: list[Step]
    pending: list[Token]
    pending_ids: list[int]
    pending_steps: list[Step]
    prediction: Prediction | None  # None while the stream holds no token at all
    final: bool


class StreamEngine:
    """Checks pieces (`prepare`, cheap, on the event loop) and reads them (`compute`, torch)."""

    def __init__(
        self,
        predictor: Predictor,
        codec: StateCodec,
        *,
        max_chunk_chars: int,
        max_pending_chars: int,
        max_tokens: int,
    ) -> None:
        self.predictor = predictor
        self.codec = codec
        self.supported = not predictor.model.config.bidirectional
        self._max_chunk_chars = max_chunk_chars
        self._max_pending_chars = max_pending_chars
        self._max_tokens = max_tokens

    def prepare(self, text: str, state: str | None, *, final: bool) -> StreamJob:
        """Check the piece and the state, and cut and tokenize the text (`StreamError`)."""
        if not self.supported:
            raise StreamError(
                409,
                "streaming_unsupported",
                "streaming_unsupported",
                "the model is bidirectional: its backward direction reads each text from its "
                "end, which a stream has not reached; use /predict with the whole text",
            )
        if len(text) > self._max_chunk_chars:
            raise _too_much(
                "chunk_too_long",
                f"the piece has {len(text)} characters; the limit is {self._max_chunk_chars}",
            )
        previous = None if state is None else self.codec.decode(state)
        if previous is not None and previous.finished:
            raise _invalid_state(
                "stream_finished", "the stream was ended with 'final'; start a new stream"
            )
        tail = "" if previous is None else previous.tail
        position = 0 if previous is None else previous.position
        buffer = tail + text
        start = position - len(tail)  # where `buffer` begins in the stream
        cut = len(buffer) if final else final_length(buffer)
        if len(buffer) - cut > self._max_pending_chars:
            raise _too_much(
                "pending_too_long",
                f"the stream has {len(buffer) - cut} characters since its last whitespace; "
                f"the limit is {self._max_pending_chars}",
            )
        tokens = tokens_at(buffer[:cut], start)
        pending = tokens_at(buffer[cut:], start + cut)
        if len(tokens) + len(pending) > self._max_tokens:
            raise _too_much(
                "too_many_tokens",
                f"the piece brings {len(tokens) + len(pending)} tokens to read; the limit is "
                f"{self._max_tokens}: send smaller pieces",
            )
        encode = self.predictor.vocab.encode
        return StreamJob(
            recurrent=None if previous is None else previous.recurrent,
            tokens=tokens,
            ids=encode(tokens),
            pending=pending,
            pending_ids=encode(pending),
            tail=buffer[cut:],
            position=position + len(text),
            token_count=0 if previous is None else previous.token_count,
            final=final,
        )

    def compute(self, job: StreamJob) -> StreamUpdate:
        """Read the piece's final tokens into the state, and look ahead through the tail."""
        model = self.predictor.model
        with torch.inference_mode():
            read = model.step_from(torch.tensor(job.ids, dtype=torch.long), job.recurrent)
            ahead = model.step_from(torch.tensor(job.pending_ids, dtype=torch.long), read.state)
            steps = self._steps(read.step_logits)
            pending_steps = self._steps(ahead.step_logits)
            seen = job.token_count + len(job.ids) + len(job.pending_ids)
            prediction = None if not seen else self._prediction(ahead.logits)
            state = StreamState(
                recurrent=read.state,
                tail="" if job.final else job.tail,
                position=job.position,
                token_count=job.token_count + len(job.ids),
                finished=job.final,
            )
            encoded = self.codec.encode(state)
        return StreamUpdate(
            state=encoded,
            position=job.position,
            token_count=state.token_count,
            tokens=job.tokens,
            ids=job.ids,
            steps=steps,
            pending=job.pending,
            pending_ids=job.pending_ids,
            pending_steps=pending_steps,
            prediction=prediction,
            final=job.final,
        )

    def warm_up(self) -> None:
        if self.supported:
            first = self.compute(self.prepare("warm up ", None, final=False))
            self.compute(self.prepare("now", first.state, final=True))

    def _probabilities(self, logits: torch.Tensor) -> list[list[float]]:
        # Softmax in the model's dtype, then float32: the same rounding as /predict.
        rows: list[list[float]] = torch.softmax(logits, dim=-1).float().tolist()
        return rows

    def _steps(self, step_logits: torch.Tensor) -> list[Step]:
        labels = self.predictor.labels
        steps: list[Step] = []
        for row in self._probabilities(step_logits):
            best = max(range(len(row)), key=row.__getitem__)
            steps.append((labels[best], dict(zip(labels, row, strict=True))))
        return steps

    def _prediction(self, logits: torch.Tensor) -> Prediction:
        (row,) = self._probabilities(logits.unsqueeze(0))
        return prediction_from(self.predictor.labels, row)


class StreamService:
    """The engine behind its own bounded queue on the model's thread; built once per process.

    A piece costs a few small matrix products per token, far less than a /hidden-states trace,
    so pieces wait in a line of their own (`APP_QUEUE_SIZE` long) rather than the traces'.
    """

    def __init__(self, engine: StreamEngine, runner: SerialRunner) -> None:
        self.engine = engine
        self._runner = runner

    @classmethod
    def build(
        cls,
        settings: Settings,
        predictor: Predictor,
        *,
        executor: Executor | None,
        observer: BatchObserver | None = None,
        secret: tuple[bytes, str] | None = None,
        announce: bool = True,
    ) -> StreamService:
        """`secret`: `stream_secret(settings)`, made once per app (default: made here).
        `announce`: log a warning when the secret is not configured (once per process)."""
        key, source = secret or stream_secret(settings)
        if announce:
            _warn_unset_secret(source)
        config = predictor.model.config
        codec = StateCodec(
            secret=key,
            model_sha256=predictor.checkpoint.sha256,
            num_layers=config.num_layers,
            hidden_size=config.hidden_size,
            has_cell=config.cell == "lstm",
            dtype=predictor.dtype,
            ttl_s=settings.stream_state_ttl_s,
            max_tail_chars=settings.stream_max_pending_chars,
        )
        engine = StreamEngine(
            predictor,
            codec,
            max_chunk_chars=settings.stream_max_chunk_chars,
            max_pending_chars=settings.stream_max_pending_chars,
            max_tokens=settings.max_tokens,
        )
        runner = SerialRunner(
            max_waiting=settings.queue_size,
            timeout_s=settings.request_timeout_s,
            executor=executor,
            observer=observer,
        )
        return cls(engine, runner)

    async def advance(self, text: str, state: str | None, *, final: bool) -> StreamUpdate:
        """Read one piece: `StreamError` for a bad piece or state, `OverloadedError` or
        `DeadlineExceededError` (from `app.batching`) when the model is too busy."""
        job = self.engine.prepare(text, state, final=final)
        return await self._runner.run(partial(self.engine.compute, job))


def _warn_unset_secret(source: str) -> None:
    """Say so when states are signed with a key APP_STREAM_SECRET did not give."""
    if source == "APP_API_KEYS":
        logger.warning(
            "APP_STREAM_SECRET is not set: stream states are signed with a key derived "
            "from APP_API_KEYS; set APP_STREAM_SECRET so rotating API keys does not end "
            "the streams in flight"
        )
    elif source == "random":
        logger.warning(
            "APP_STREAM_SECRET is not set: stream states are signed with a random key made "
            "at start-up, shared by this server's workers but by no other replica; set the "
            "same APP_STREAM_SECRET on every replica"
        )


class RateLimiter:
    """A token bucket: `rate` messages per second on average, bursts of up to `burst`."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()

    def allow(self) -> bool:
        """Take one message's token; False when the bucket is empty."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
