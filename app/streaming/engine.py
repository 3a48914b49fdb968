"""Reading a stream piece by piece: `StreamEngine` checks a piece, cuts it and reads it.

`prepare` is cheap and raises `StreamError` for a piece the stream cannot take: it decodes the
previous state (`app.streaming.codec`), cuts the text where its tokens become final
(`app.streaming.text`) and tokenizes it. `compute` runs the model: it reads the final tokens
into the recurrent state, looks ahead through the tail for the prediction "if the text ended
here", and encodes the new state. `app.streaming.service` runs the two where they belong (the
first on or off the event loop by the piece's length, the second on the model's thread).

Length. A stream reads at most `MAX_STREAM_CHARS` characters (so at most that many tokens): a
piece that would take it further is a 422 (`stream_too_long`), and the client starts a new
stream. The cap keeps every counter far inside what the header holds (the token count is 32
bits), and offsets inside what every JSON reader represents exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from app.inference.predictor import Predictor
from app.inference.results import PredictionResult, prediction_from
from app.streaming.codec import MAX_STREAM_CHARS, StateCodec, StreamState
from app.streaming.errors import StreamError, invalid_state, too_much
from app.streaming.text import final_length, tokens_at
from training.model import RecurrentState
from training.tokenizer import Token

# One token's step: the label it leads to and every label's probability, after that token.
StreamStep = tuple[str, dict[str, float]]


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
    steps: list[StreamStep]
    pending: list[Token]
    pending_ids: list[int]
    pending_steps: list[StreamStep]
    prediction: PredictionResult | None  # None while the stream holds no token at all
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
            raise too_much(
                "chunk_too_long",
                f"the piece has {len(text)} characters; the limit is {self._max_chunk_chars}",
            )
        previous = None if state is None else self.codec.decode(state)
        if previous is not None and previous.finished:
            raise invalid_state(
                "stream_finished", "the stream was ended with 'final'; start a new stream"
            )
        tail = "" if previous is None else previous.tail
        position = 0 if previous is None else previous.position
        if position + len(text) > MAX_STREAM_CHARS:
            raise too_much(
                "stream_too_long",
                f"the stream would reach {position + len(text)} characters; a stream takes at "
                f"most {MAX_STREAM_CHARS}: start a new stream",
            )
        buffer = tail + text
        start = position - len(tail)  # where `buffer` begins in the stream
        cut = len(buffer) if final else final_length(buffer)
        if len(buffer) - cut > self._max_pending_chars:
            raise too_much(
                "pending_too_long",
                f"the stream has {len(buffer) - cut} characters since its last whitespace; "
                f"the limit is {self._max_pending_chars}",
            )
        tokens = tokens_at(buffer[:cut], start)
        pending = tokens_at(buffer[cut:], start + cut)
        if len(tokens) + len(pending) > self._max_tokens:
            raise too_much(
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

    def _steps(self, step_logits: torch.Tensor) -> list[StreamStep]:
        labels = self.predictor.labels
        steps: list[StreamStep] = []
        for row in self._probabilities(step_logits):
            best = max(range(len(row)), key=row.__getitem__)
            steps.append((labels[best], dict(zip(labels, row, strict=True))))
        return steps

    def _prediction(self, logits: torch.Tensor) -> PredictionResult:
        (row,) = self._probabilities(logits.unsqueeze(0))
        return prediction_from(self.predictor.labels, row)
