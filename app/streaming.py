"""Streaming sentiment with no memory on the server: the client carries the state.

An RNN reads a text one token at a time and remembers it only through its recurrent state, so
a text can be sent in pieces as it is typed or transcribed: each call reads the new piece from
the state the previous call handed back, and returns the prediction so far and a new state.
Nothing is kept between calls, so any replica (any worker) can serve the next piece.

The state (`StateCodec`) is opaque to clients; it carries

- the recurrent state: every layer's hidden state, and the LSTM's cell state, as raw floats in
  the dtype the model runs in (`app.inference.predictor`: float32 for a one-direction LSTM by
  default, else float64), so a stream reads on exactly where it stopped however many pieces it
  is cut into (a service computing streams in the other dtype refuses the state with a 409 rather
  than convert it);
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

Reading a state back. The signature proves the state was written by a service holding the
secret, not that its values are sane: a replica running other code, or anyone holding a leaked
secret, can sign anything. So every field is checked before it is used, and a value out of
range is a 422 `invalid_state` (`state_malformed`) naming the field, never a crash: no unknown
flag bits; the cell flag, layer count and hidden size those of the model, and the length of the
whole the one they imply; the dtype flag the one streams are computed in here (else 409
`state_model_mismatch`: the same checkpoint served in another precision); issued at most
`MAX_CLOCK_SKEW_S` in the future (replicas' clocks differ a little), and no older than the TTL
(`state_expired`); the tail valid UTF-8, at most `APP_STREAM_MAX_PENDING_CHARS` characters,
without whitespace (it is the text after the last whitespace), and empty once the stream is
finished; the position at most `MAX_STREAM_CHARS`, and the token count at most the characters
before the tail (every token is at least one character); every float finite, and every hidden
state within [-1, 1], as every cell's output is (a tanh, a tanh times a gate, or a mix of
two such values).

Length. A stream reads at most `MAX_STREAM_CHARS` characters (so at most that many tokens): a
piece that would take it further is a 422 (`stream_too_long`), and the client starts a new
stream. The cap keeps every counter far inside what the header holds (the token count is 32
bits), and offsets inside what every JSON reader represents exactly.

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

Secret. `APP_STREAM_SECRET` when set: set the same value on every replica, and streams move
freely between replicas and survive restarts (until their TTL). Unset, the key is random, made
when the app is built. With `WORKERS` > 1 the gunicorn arbiter builds the app before it forks
the workers, so every worker (a replacement for one that died too) signs with the same key and
a stream continues on whichever worker the kernel hands the next connection to; but another
replica, or this server after a restart, has another key and refuses the state (422
`state_signature`). That is logged once at start-up, as a warning, when there are several
workers (a sign of a scaled deployment); with one worker only an informational line says so.
The API keys never enter the signing key: every caller holds one, and a signing key derived
from the keys would let a caller of a one-key deployment sign states of its own making (and
rotating the keys would end every stream in flight).
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
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
from pydantic import ValidationError

from app.core.config import ServerSettings, Settings
from app.inference.batching import BatchObserver, SerialRunner
from app.inference.predictor import Prediction, Predictor, dtype_name, prediction_from
from training.model import RecurrentState
from training.tokenizer import Token, tokenize

logger = logging.getLogger("app.streaming")

FORMAT_VERSION = 1
# version, flags, model tag, issued at, position, token count, layers, hidden size, tail bytes
STATE_HEADER = struct.Struct("<BB8sIQIBHH")
FLAG_FINISHED = 0x01
FLAG_FLOAT64 = 0x02
FLAG_HAS_CELL = 0x04
_KNOWN_FLAGS = FLAG_FINISHED | FLAG_FLOAT64 | FLAG_HAS_CELL
# The longest stream, in characters (see "Length" in the module doc).
MAX_STREAM_CHARS = 1_000_000_000
# How far in the future a state's issue time may be: the clocks of replicas drift apart a little.
MAX_CLOCK_SKEW_S = 60
# Hidden states lie in [-1, 1]; the slack covers rounding in a GRU's mix of two of them.
_HIDDEN_BOUND = 1.0 + 1e-3
_MAC_BYTES = 32
_MODEL_TAG_BYTES = 8
_UTF8_MAX_BYTES = 4
_KEY_CONTEXT = b"rnn-sentiment stream state\x00"
_BASE64URL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
_STATE_DTYPES = (torch.float32, torch.float64)

SecretSource = Literal["APP_STREAM_SECRET", "random"]
Step = tuple[str, dict[str, float]]
# Runs a call that tokenizes a number of characters, on the loop or off it (`Runtime.text_work`).
TextWork = Callable[[int, Callable[[], "StreamJob"]], Awaitable["StreamJob"]]


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
        if dtype not in _STATE_DTYPES:
            raise ValueError(f"stream states hold float32 or float64 numbers, not {dtype}")
        digest = bytes.fromhex(model_sha256)
        self._key = hmac.new(secret, _KEY_CONTEXT + digest, hashlib.sha256).digest()
        self._tag = digest[:_MODEL_TAG_BYTES]
        self._layers = num_layers
        self._hidden = hidden_size
        self._has_cell = has_cell
        self._dtype = dtype
        self._float_bytes = num_layers * hidden_size * (2 if has_cell else 1) * dtype.itemsize
        self._ttl_s = ttl_s
        self._max_tail_chars = max_tail_chars
        self._clock = clock

    def encode(self, state: StreamState) -> str:
        tail = state.tail.encode("utf-8")
        flags = (FLAG_FINISHED if state.finished else 0) | (FLAG_HAS_CELL if self._has_cell else 0)
        if self._dtype == torch.float64:
            flags |= FLAG_FLOAT64
        header = STATE_HEADER.pack(
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
        return self.seal(header + tail + bytes(floats))

    def seal(self, body: bytes) -> str:
        """`body` (header, tail and floats, laid out as in the module doc) signed and wrapped
        as a state. `encode`'s last step, public so that a state can also be written field by
        field: the hostile-client tests sign states that `encode` never would."""
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
            STATE_HEADER.unpack_from(raw)
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
        # Signed with this service's secret, which proves where the state came from but not
        # that its values are sane: each field is checked before it is used (module doc).
        self._check_layout(flags, layers, hidden, len(body) - STATE_HEADER.size - tail_bytes)
        self._check_age(issued_at)
        finished = bool(flags & FLAG_FINISHED)
        tail_start = STATE_HEADER.size
        tail = self._tail(body[tail_start : tail_start + tail_bytes], finished)
        if position > MAX_STREAM_CHARS or len(tail) > position:
            raise _invalid_state(
                "state_malformed",
                f"the state's position ({position}) is out of range: a stream holds between "
                f"the length of its unfinished text and {MAX_STREAM_CHARS} characters",
            )
        if token_count > position - len(tail):
            raise _invalid_state(
                "state_malformed",
                f"the state's token count ({token_count}) exceeds the characters read "
                f"({position - len(tail)}): every token is at least one character",
            )
        recurrent = self._recurrent(body[tail_start + tail_bytes :])
        return StreamState(recurrent, tail, position, token_count, finished)

    def _check_layout(self, flags: int, layers: int, hidden: int, float_bytes: int) -> None:
        """The flags and shape are this model's, and the floats' length the one they imply."""
        if flags & ~_KNOWN_FLAGS:
            raise _invalid_state(
                "state_malformed", f"the state has flags this service does not know ({flags:#x})"
            )
        dtype = torch.float64 if flags & FLAG_FLOAT64 else torch.float32
        if dtype != self._dtype:
            # The same checkpoint, computed in another precision (another replica's settings):
            # the model cannot continue it exactly, as with a state from another model.
            raise StreamError(
                409,
                "state_model_mismatch",
                "state_model_mismatch",
                f"the state holds {dtype_name(dtype)} numbers but this service computes "
                f"streams in {dtype_name(self._dtype)}; start a new stream",
                "state",
            )
        has_cell = bool(flags & FLAG_HAS_CELL)
        if (layers, hidden, has_cell) != (self._layers, self._hidden, self._has_cell):
            raise _invalid_state(
                "state_malformed",
                f"the state is shaped for {_shape(layers, hidden, has_cell)}; the model has "
                f"{_shape(self._layers, self._hidden, self._has_cell)}",
            )
        if float_bytes != self._float_bytes:
            raise _invalid_state(
                "state_malformed", "the state's length does not match the sizes in its header"
            )

    def _check_age(self, issued_at: int) -> None:
        age = self._clock() - issued_at
        if age < -MAX_CLOCK_SKEW_S:
            raise _invalid_state(
                "state_malformed",
                f"the state was issued {int(-age)} s in the future (clocks may differ by "
                f"{MAX_CLOCK_SKEW_S} s at most); start a new stream",
            )
        if age > self._ttl_s:
            raise _invalid_state(
                "state_expired",
                f"the state expired: it is {int(age)} s old and states last "
                f"{self._ttl_s} s; start a new stream",
            )

    def _tail(self, data: bytes, finished: bool) -> str:
        """The unfinished text: what `encode` writes, and nothing a piece could not leave."""
        limit = self._max_tail_chars
        # Bytes first: no need to decode more than the longest valid tail can take.
        if len(data) > limit * _UTF8_MAX_BYTES:
            raise _invalid_state(
                "state_malformed", f"the state's unfinished text exceeds {limit} characters"
            )
        try:
            tail = data.decode("utf-8")
        except UnicodeDecodeError:
            raise _invalid_state("state_malformed", "the state's text is not UTF-8") from None
        if len(tail) > limit:
            raise _invalid_state(
                "state_malformed", f"the state's unfinished text exceeds {limit} characters"
            )
        if final_length(tail):
            raise _invalid_state(
                "state_malformed",
                "the state's unfinished text contains whitespace (it is the text after the "
                "last whitespace)",
            )
        if finished and tail:
            raise _invalid_state(
                "state_malformed", "the state is finished but holds unfinished text"
            )
        return tail

    def _recurrent(self, data: bytes) -> RecurrentState:
        states = torch.frombuffer(bytearray(data), dtype=self._dtype).view(
            -1, self._layers, self._hidden
        )  # (1 or 2, L, H)
        if not bool(torch.isfinite(states).all()):
            raise _invalid_state("state_malformed", "the state holds non-finite numbers")
        if bool((states[0].abs() > _HIDDEN_BOUND).any()):
            raise _invalid_state("state_malformed", "the state holds hidden states outside [-1, 1]")
        return RecurrentState(states[0], states[1] if self._has_cell else None)

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
        if len(raw) < STATE_HEADER.size + _MAC_BYTES:
            raise malformed
        return raw


def _shape(layers: int, hidden: int, has_cell: bool) -> str:
    cells = " with cell states" if has_cell else " without cell states"
    return f"{layers} layer(s) of {hidden} units{cells}"


def stream_secret(settings: Settings, *, workers: int | None = None) -> tuple[bytes, SecretSource]:
    """The key that signs stream states, and where it came from (see the module doc).

    Call it once per app, when the app is built: a random key is a new one on every call, and
    the warning it logs without `APP_STREAM_SECRET` on a server with several workers is meant
    to appear once per server (the gunicorn arbiter builds the app once, before forking).
    `workers`: the server's worker count; by default `WORKERS`, as `python -m app` reads it.
    """
    if settings.stream_secret is not None:
        return settings.stream_secret.get_secret_value().encode("utf-8"), "APP_STREAM_SECRET"
    workers = _configured_workers() if workers is None else workers
    if workers > 1:
        logger.warning(
            "APP_STREAM_SECRET is not set: stream states are signed with a random key made at "
            "start-up and shared by this server's %d workers, so a stream continues on any of "
            "them, but another replica, or this server after a restart, refuses its states "
            "(422 state_signature); set the same APP_STREAM_SECRET on every replica, for "
            "example one made with: python -c 'import secrets; print(secrets.token_hex(32))'",
            workers,
        )
    return secrets.token_bytes(32), "random"


def _configured_workers() -> int:
    try:
        return ServerSettings().workers
    except ValidationError:
        # Only `python -m app` acts on WORKERS, and it refuses a bad value before building
        # the app; an app run by another server has the one process it sees.
        return 1


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
        if position + len(text) > MAX_STREAM_CHARS:
            raise _too_much(
                "stream_too_long",
                f"the stream would reach {position + len(text)} characters; a stream takes at "
                f"most {MAX_STREAM_CHARS}: start a new stream",
            )
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

    def __init__(
        self, engine: StreamEngine, runner: SerialRunner, text_work: TextWork | None = None
    ) -> None:
        self.engine = engine
        self._runner = runner
        self._text_work = text_work

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
        text_work: TextWork | None = None,
    ) -> StreamService:
        """`secret`: `stream_secret(settings)`, made once per app (default: made here).
        `announce`: say at INFO where the signing key came from when it is not configured
        (once per process, at start-up; the warning, if any, came from `stream_secret`).
        `text_work`: where a piece's text is cut and tokenized (`Runtime.text_work`: a long
        piece off the event loop); default: where `advance` is called."""
        key, source = secret or stream_secret(settings)
        if announce and source == "random":
            logger.info(
                "APP_STREAM_SECRET is not set: stream states are signed with a random key made "
                "at start-up; a stream continues on this server's workers until it restarts, "
                "and on no other replica"
            )
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
        return cls(engine, runner, text_work)

    async def advance(self, text: str, state: str | None, *, final: bool) -> StreamUpdate:
        """Read one piece: `StreamError` for a bad piece or state, `OverloadedError` or
        `DeadlineExceededError` (from `app.inference.batching`) when the model is too busy."""
        prepare = partial(self.engine.prepare, text, state, final=final)
        job = prepare() if self._text_work is None else await self._text_work(len(text), prepare)
        return await self._runner.run(partial(self.engine.compute, job))
