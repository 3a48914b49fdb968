"""`StreamService`: the stream engine behind its own bounded queue; one per loaded model.

A piece is checked, cut and tokenized where `text_work` says (`Runtime.text_work`: a long
piece off the event loop, a short one on it), then read by the model on the model's thread,
in a line of its own (`SerialRunner`), so a crowd of streams waits there rather than in front
of `/predict` or the traces. The signing key is made once per app (`stream_secret`) and handed
to every service built for it: a reload of the same checkpoint keeps the streams in flight (a
new checkpoint refuses them, as its sha256 is in the key).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from functools import partial

from app.core.config import Settings
from app.inference.batching import BatchObserver
from app.inference.predictor import Predictor
from app.inference.runner import SerialRunner
from app.inference.runtime import Runtime
from app.streaming.codec import StateCodec, stream_secret
from app.streaming.engine import StreamEngine, StreamJob, StreamUpdate

# The package's one logger name (see `app.streaming.codec`).
logger = logging.getLogger("app.streaming")

# Runs a call that tokenizes a number of characters, on the loop or off it (`Runtime.text_work`).
TextWork = Callable[[int, Callable[[], StreamJob]], Awaitable[StreamJob]]


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


def streams_factory(
    settings: Settings, observer: BatchObserver | None, secret: tuple[bytes, str]
) -> Callable[[Runtime, bool], StreamService]:
    """What the model slot calls for each runtime it builds: the stream service on that
    runtime's predictor, queue thread and text work, signing with `secret` (one per app)."""

    def build(runtime: Runtime, first: bool) -> StreamService:
        return StreamService.build(
            settings,
            runtime.predictor,
            executor=runtime.executor,
            observer=runtime.model_metrics,
            secret=secret,
            announce=first,  # at start-up, not again at every reload
            text_work=runtime.text_work,
        )

    return build
