"""What the lifespan builds and the routes use: the predictor and the queues in front of it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import torch

from app.batching import DeadlineExceededError, MicroBatcher, OverloadedError, SerialRunner
from app.core.config import Settings
from app.errors import InvalidInputError, UnavailableError
from app.explain import Baseline, Explainer, Explanation, Replacement
from app.metrics import Metrics
from app.predictor import EncodedText, HiddenStates, Prediction, Predictor, TextRejectedError
from app.schemas import ModelRef
from training.checkpoint import Checkpoint, load_checkpoint

T = TypeVar("T")

_DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class Runtime:
    """One loaded model and its queues. `app.serving.ModelSlot` builds it at start-up and for
    every reload; a request keeps the runtime it started with until it ends (`in_flight`)."""

    settings: Settings
    metrics: Metrics
    predictor: Predictor
    batcher: MicroBatcher[list[int], Prediction]
    tracer: SerialRunner
    executor: ThreadPoolExecutor | None
    explainer: Explainer
    ready: bool = False
    # Traces and explanations take milliseconds to seconds each: they run on a thread even
    # when the batcher runs on the event loop, so probes and /predict keep answering meanwhile.
    trace_executor: ThreadPoolExecutor | None = None
    model: ModelRef = field(init=False)
    # Requests that took this runtime and have not finished (counted by the request middleware).
    in_flight: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.model = ModelRef(name=self.predictor.name, version=self.predictor.version)

    @classmethod
    def load(
        cls, settings: Settings, metrics: Metrics, checkpoint: Checkpoint | None = None
    ) -> Runtime:
        """Build the predictor and queues for `checkpoint`, by default the one at
        `settings.model_dir`, loaded and verified here (raises `CheckpointError`)."""
        checkpoint = checkpoint or load_checkpoint(settings.model_dir)
        predictor = Predictor(
            checkpoint,
            dtype=_DTYPES[settings.inference_dtype],
            torchscript=settings.torchscript,
        )
        executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
            if settings.inference_thread
            else None
        )
        batcher: MicroBatcher[list[int], Prediction] = MicroBatcher(
            predictor.predict_ids,
            max_batch_size=settings.max_batch_size,
            queue_size=settings.queue_size,
            timeout_s=settings.request_timeout_s,
            max_wait_s=settings.max_wait_ms / 1000,
            executor=executor,
            observer=metrics,
            size_of=len,  # tokens: texts of very different lengths run in separate passes
        )
        trace_executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="trace")
        tracer = SerialRunner(
            # A trace costs about as much as a full batch of predictions: allow as many waiting
            # traces as the queue holds full batches.
            max_waiting=max(1, settings.queue_size // settings.max_batch_size),
            timeout_s=settings.request_timeout_s,
            executor=trace_executor,
            observer=metrics,
        )
        return cls(
            settings,
            metrics,
            predictor,
            batcher,
            tracer,
            executor,
            Explainer(predictor),
            trace_executor=trace_executor,
        )

    async def start(self, *, warm_up_off_loop: bool = False) -> None:
        """Start the batcher and warm every path up; then the runtime is ready.

        Warm-up runs on the inference thread when there is one; else on the event loop at
        start-up (nothing else is waiting), or on this runtime's trace thread when
        `warm_up_off_loop` (a reload: the event loop keeps serving the model in place).
        """
        self.batcher.start()
        if self.executor is None and not warm_up_off_loop:
            self.predictor.warm_up()
            self.explainer.warm_up()
        else:
            loop = asyncio.get_running_loop()
            thread = self.executor or self.trace_executor
            await loop.run_in_executor(thread, self.predictor.warm_up)
            await loop.run_in_executor(thread, self.explainer.warm_up)
        self.ready = True

    async def drain(self, timeout_s: float) -> bool:
        """Wait until no request holds this runtime (True), or `timeout_s` passed (False)."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.in_flight > 0:
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    async def stop(self, *, wait: bool = True) -> None:
        """Refuse what is still queued (503) and release the threads; `wait`: until a call
        running on them returns (at shutdown), else let it finish on its own (a retired model:
        the event loop must not block on it while it serves the new one)."""
        self.ready = False
        await self.batcher.stop()
        for executor in {self.executor, self.trace_executor}:
            if executor is not None:
                executor.shutdown(wait=wait, cancel_futures=True)

    async def predict(self, texts: Sequence[str], *, field: str) -> list[Prediction]:
        """Check limits, encode, and predict through the micro-batcher (422/503 as ApiError)."""
        settings = self.settings
        if len(texts) > settings.max_texts:
            raise InvalidInputError(
                [
                    {
                        "loc": ["body", field],
                        "msg": f"{len(texts)} texts; the limit is {settings.max_texts} per request",
                        "type": "too_many_texts",
                    }
                ]
            )
        encode = partial(
            self.predictor.encode_ids,
            max_chars=settings.max_text_chars,
            max_tokens=settings.max_tokens,
        )
        ids = _each_or_422(texts, field, encode)
        try:
            return await self.batcher.submit(ids)
        except (OverloadedError, DeadlineExceededError) as error:
            raise self.unavailable(error) from None

    async def trace(
        self,
        text: str,
        *,
        all_layers: bool,
        include_cell: bool,
        decimals: int | None,
        include_gates: bool = False,
        units: Sequence[int] | None = None,
        top_k: int | None = None,
    ) -> tuple[EncodedText, HiddenStates]:
        """Encode `text` and trace it through the network (422/503 as ApiError)."""
        (encoded,) = self.encode(
            [text], field="text", max_tokens=self.settings.max_hidden_state_tokens
        )
        call = partial(
            self.predictor.hidden_states,
            encoded,
            all_layers=all_layers,
            include_cell=include_cell,
            decimals=decimals,
            include_gates=include_gates,
            units=units,
            top_k=top_k,
        )
        return encoded, await self._on_tracer(call)

    async def explain(
        self,
        text: str,
        *,
        label: str | None,
        methods: Sequence[str],
        steps: int,
        baseline: Baseline,
        replacement: Replacement,
        decimals: int | None,
    ) -> tuple[EncodedText, Explanation]:
        """Encode `text` and attribute its prediction to its tokens (422/503 as ApiError)."""
        (encoded,) = self.encode([text], field="text", max_tokens=self.settings.max_explain_tokens)
        call = partial(
            self.explainer.explain,
            encoded,
            label=label,
            methods=methods,
            steps=steps,
            baseline=baseline,
            replacement=replacement,
            decimals=decimals,
        )
        # As heavy as a trace or heavier: it shares the traces' single-file queue.
        return encoded, await self._on_tracer(call)

    async def _on_tracer(self, call: Callable[[], T]) -> T:
        try:
            return await self.tracer.run(call)
        except (OverloadedError, DeadlineExceededError) as error:
            raise self.unavailable(error) from None

    def unavailable(self, error: OverloadedError | DeadlineExceededError) -> UnavailableError:
        """The 503 a full queue or a missed deadline becomes, with `Retry-After`."""
        retry_after = self.settings.retry_after_s
        if isinstance(error, DeadlineExceededError):
            return UnavailableError(
                "deadline_exceeded", f"The request timed out ({error}); retry later.", retry_after
            )
        return UnavailableError(
            "overloaded", f"The service is overloaded ({error}); retry later.", retry_after
        )

    def encode(self, texts: Sequence[str], *, field: str, max_tokens: int) -> list[EncodedText]:
        """Encode every text or raise one 422 listing each text that breaks a limit.

        `field` is the request field the texts came from ("text" or "texts"), for `loc`.
        """
        encode = partial(
            self.predictor.encode, max_chars=self.settings.max_text_chars, max_tokens=max_tokens
        )
        return _each_or_422(texts, field, encode)


def _each_or_422(texts: Sequence[str], field: str, encode: Callable[[str], T]) -> list[T]:
    """`encode` of every text, or one 422 listing each text it rejected."""
    encoded: list[T] = []
    problems: list[dict[str, Any]] = []
    for index, text in enumerate(texts):
        try:
            encoded.append(encode(text))
        except TextRejectedError as rejected:
            loc: list[str | int] = ["body", field] + ([index] if field == "texts" else [])
            problems.append(
                {"loc": loc, "msg": rejected.rejection.msg, "type": rejected.rejection.type}
            )
    if problems:
        raise InvalidInputError(problems)
    return encoded
