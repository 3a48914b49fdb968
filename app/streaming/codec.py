"""The stream state: its binary format, its signature and its checks; and the signing key.

`StateCodec` writes a `StreamState` as an opaque string for the client to send back, and reads
one back only when it is this service's, for this model, and sane.

Layout (little-endian, as on every platform torch ships for): header `<BB8sIQIBHH` (version,
flags, model tag, issued at, position, token count, layers, hidden size, tail bytes), the tail
in UTF-8, the hidden states (L x H floats) and cell states (L x H, LSTM only), then the 32-byte
MAC; base64url without padding. It is not compressed: floats do not compress. For a 1-layer
LSTM with 128 units that is about 1.5 KB of text in float32 (2.8 KB in float64). The model tag
is the first 8 bytes of the checkpoint's sha256, and the MAC an HMAC-SHA256 keyed by the secret
and the full checkpoint sha256.

Reading a state back. The signature proves the state was written by a service holding the
secret, not that its values are sane: a replica running other code, or anyone holding a leaked
secret, can sign anything. So every field is checked before it is used, and a value out of
range is a 422 `invalid_state` (`state_malformed`) naming the field, never a crash: no unknown
flag bits; the cell flag, layer count and hidden size those of the model, and the length of the
whole the one they imply; the dtype flag the one streams are computed in here (else 409
`state_model_mismatch`: the same checkpoint served in another precision); issued at most
`MAX_CLOCK_SKEW_S` in the future (replicas' clocks differ a little), and no older than the TTL
(`state_expired`); the tail valid UTF-8, at most `APP_STREAM_MAX_PENDING_CHARS` characters,
without whitespace (it is the text after the last whitespace, `app.streaming.text`), and empty
once the stream is finished; the position at most `MAX_STREAM_CHARS`, and the token count at
most the characters before the tail (every token is at least one character); every float
finite, and every hidden state within [-1, 1], as every cell's output is (a tanh, a tanh times
a gate, or a mix of two such values).

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import ValidationError

from app.core.config import ServerSettings, Settings
from app.inference.results import dtype_name
from app.streaming.errors import StreamError, invalid_state
from app.streaming.text import final_length
from training.model import RecurrentState

# The package's one logger name, whichever of its modules speaks: one name to filter on.
logger = logging.getLogger("app.streaming")

FORMAT_VERSION = 1
# version, flags, model tag, issued at, position, token count, layers, hidden size, tail bytes
STATE_HEADER = struct.Struct("<BB8sIQIBHH")
FLAG_FINISHED = 0x01
FLAG_FLOAT64 = 0x02
FLAG_HAS_CELL = 0x04
_KNOWN_FLAGS = FLAG_FINISHED | FLAG_FLOAT64 | FLAG_HAS_CELL
# The longest stream, in characters (see "Length" in `app.streaming.engine`).
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
            raise invalid_state(
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
            raise invalid_state(
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
            raise invalid_state(
                "state_malformed",
                f"the state's position ({position}) is out of range: a stream holds between "
                f"the length of its unfinished text and {MAX_STREAM_CHARS} characters",
            )
        if token_count > position - len(tail):
            raise invalid_state(
                "state_malformed",
                f"the state's token count ({token_count}) exceeds the characters read "
                f"({position - len(tail)}): every token is at least one character",
            )
        recurrent = self._recurrent(body[tail_start + tail_bytes :])
        return StreamState(recurrent, tail, position, token_count, finished)

    def _check_layout(self, flags: int, layers: int, hidden: int, float_bytes: int) -> None:
        """The flags and shape are this model's, and the floats' length the one they imply."""
        if flags & ~_KNOWN_FLAGS:
            raise invalid_state(
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
            raise invalid_state(
                "state_malformed",
                f"the state is shaped for {_shape(layers, hidden, has_cell)}; the model has "
                f"{_shape(self._layers, self._hidden, self._has_cell)}",
            )
        if float_bytes != self._float_bytes:
            raise invalid_state(
                "state_malformed", "the state's length does not match the sizes in its header"
            )

    def _check_age(self, issued_at: int) -> None:
        age = self._clock() - issued_at
        if age < -MAX_CLOCK_SKEW_S:
            raise invalid_state(
                "state_malformed",
                f"the state was issued {int(-age)} s in the future (clocks may differ by "
                f"{MAX_CLOCK_SKEW_S} s at most); start a new stream",
            )
        if age > self._ttl_s:
            raise invalid_state(
                "state_expired",
                f"the state expired: it is {int(age)} s old and states last "
                f"{self._ttl_s} s; start a new stream",
            )

    def _tail(self, data: bytes, finished: bool) -> str:
        """The unfinished text: what `encode` writes, and nothing a piece could not leave."""
        limit = self._max_tail_chars
        # Bytes first: no need to decode more than the longest valid tail can take.
        if len(data) > limit * _UTF8_MAX_BYTES:
            raise invalid_state(
                "state_malformed", f"the state's unfinished text exceeds {limit} characters"
            )
        try:
            tail = data.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid_state("state_malformed", "the state's text is not UTF-8") from None
        if len(tail) > limit:
            raise invalid_state(
                "state_malformed", f"the state's unfinished text exceeds {limit} characters"
            )
        if final_length(tail):
            raise invalid_state(
                "state_malformed",
                "the state's unfinished text contains whitespace (it is the text after the "
                "last whitespace)",
            )
        if finished and tail:
            raise invalid_state(
                "state_malformed", "the state is finished but holds unfinished text"
            )
        return tail

    def _recurrent(self, data: bytes) -> RecurrentState:
        states = torch.frombuffer(bytearray(data), dtype=self._dtype).view(
            -1, self._layers, self._hidden
        )  # (1 or 2, L, H)
        if not bool(torch.isfinite(states).all()):
            raise invalid_state("state_malformed", "the state holds non-finite numbers")
        if bool((states[0].abs() > _HIDDEN_BOUND).any()):
            raise invalid_state("state_malformed", "the state holds hidden states outside [-1, 1]")
        return RecurrentState(states[0], states[1] if self._has_cell else None)

    def _unwrap(self, token: str) -> bytes:
        malformed = invalid_state(
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
