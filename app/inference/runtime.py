"""What the lifespan builds and the routes use: the predictor and the queues in front of it.

The event loop serves every request of a worker, so no request's CPU work may hold it for
long; two kinds of work can:

- Tokenizing. Its cost follows the characters (several microseconds per character for text
  dense in punctuation), and a request may carry 64 texts of 2,000 characters each. A request
  whose texts add up to at most `LOOP_TEXT_CHARS` characters is encoded on the loop: a thread
  hop would cost more than the work, and that is nearly all traffic. A larger one is encoded
  on a thread of its own (`encoder`, one call at a time behind a bounded waiting room: 503
  when full, like the model's queues). Python code there still takes turns with the loop for
  the GIL, but in slices of the interpreter's switch interval, not in one block.
  `text_work` and `tokenize` offer the same rule to routes that tokenize on their own.
- Forward passes, when the batcher runs them on the loop (the default). `pass_budget`
  measures the model at start-up, and texts too long for a full batch of them to run within
  `LOOP_PASS_S` go to the batcher's long lane (`app.inference.batching`), whose passes run on
  a thread of their own (`long_executor`) in full batches, while the loop goes on with short texts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import torch

from app.core.config import Settings
from app.core.errors import InvalidInputError, UnavailableError
from app.core.metrics import Metrics, ModelMetrics, label_shares_from_card
from app.inference.batching import (
    DeadlineExceededError,
    MicroBatcher,
    OverloadedError,
    PassBudget,
)
from app.inference.explain import Baseline, Explainer, Explanation, Replacement
from app.inference.predictor import Predictor
from app.inference.results import (
    EncodedText,
    HiddenStates,
    PredictionResult,
    TextRejectedError,
)
from app.inference.runner import SerialRunner
from training.checkpoint import Checkpoint, load_checkpoint
from training.tokenizer import Token
from training.tokenizer import tokenize as split_tokens

T = TypeVar("T")

_DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}

# Characters a request may tokenize on the event loop (module doc). At the worst cost per
# character the tokenizer has (text made of punctuation or of characters it skips), this many
# take a few milliseconds; ordinary sentences cost a small fraction of that.
LOOP_TEXT_CHARS = 1024
# How long one forward pass on the event loop may take, as measured at start-up; half the
# loop's allowance, for a machine busier then than when it was measured. Longer passes run
# on the long lane's thread.
LOOP_PASS_S = 0.025
# The passes `pass_budget` times: one text, then this many, of this many tokens each.
CALIBRATION_ROWS = 32
CALIBRATION_STEPS = 32


@dataclass(frozen=True, slots=True)
class ModelIdentity:
    """Which model computed an answer: the checkpoint's name and version (a prefix of its
    sha256). Every response names it (the API sends it as its `ModelRef`)."""

    name: str
    version: str


@dataclass
class Runtime:
    """One loaded model and its queues. `app.inference.slot.ModelSlot` builds it at start-up and for
    every reload; a request keeps the runtime it started with until it ends (`in_flight`)."""

    settings: Settings
    metrics: Metrics
    predictor: Predictor
    batcher: MicroBatcher[list[int], PredictionResult]
    tracer: SerialRunner
    executor: ThreadPoolExecutor | None
    explainer: Explainer
    ready: bool = False
    # Traces and explanations take milliseconds to seconds each: they run on a thread even
    # when the batcher runs on the event loop, so probes and /predict keep answering meanwhile.
    trace_executor: ThreadPoolExecutor | None = None
    # The batcher's long lane: passes too long for the loop (module doc).
    long_executor: ThreadPoolExecutor | None = None
    # The name the service serves it under (its store folder); the checkpoint's own by default.
    name: str | None = None
    # Its metrics, labelled with its name, resolved once (`Metrics.for_model`); made here
    # unless `load` made them first for the queues it builds.
    observer: ModelMetrics | None = None
    model: ModelIdentity = field(init=False)
    model_metrics: ModelMetrics = field(init=False)
    # Requests that took this runtime and have not finished: counted by `held`, and by hand on
    # the hot paths (the request middleware, the /predict fast path), where a context manager
    # would be a measurable share of a request.
    in_flight: int = field(default=0, init=False)
    # Large requests' tokenizing (module doc); the thread starts with the first such request.
    encode_executor: ThreadPoolExecutor = field(init=False)
    encoder: SerialRunner = field(init=False)

    def __post_init__(self) -> None:
        self.model = ModelIdentity(self.name or self.predictor.name, self.predictor.version)
        self.model_metrics = self.observer or self.metrics.for_model(
            self.model.name,
            self.predictor.labels,
            min_confidence=self.settings.min_confidence,
        )
        settings = self.settings
        self.encode_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode")
        self.encoder = SerialRunner(
            # A large request costs about a full batch's forward pass to encode: as many may
            # wait as the model's queue holds full batches.
            max_waiting=max(1, settings.queue_size // settings.max_batch_size),
            timeout_s=settings.request_timeout_s,
            executor=self.encode_executor,
            observer=self.model_metrics,
        )

    @property
    def memory_bytes(self) -> int:
        """Bytes of weights this model holds in memory: every copy its paths keep (the served
        model, the batched pass's copy in another dtype, the explainer's), each counted once."""
        seen: dict[int, int] = {}
        for module in (self.predictor.model, self.predictor.pass_model, self.explainer.model):
            for tensor in (*module.parameters(), *module.buffers()):
                storage = tensor.untyped_storage()
                seen[storage.data_ptr()] = storage.nbytes()
        return sum(seen.values())

    @classmethod
    def load(
        cls,
        settings: Settings,
        metrics: Metrics,
        checkpoint: Checkpoint | None = None,
        *,
        name: str | None = None,
    ) -> Runtime:
        """Build the predictor and queues for `checkpoint`, by default the default model's,
        loaded and verified here (raises `CheckpointError`), served as `name`."""
        if checkpoint is None:
            checkpoint = load_checkpoint(settings.model_dirs()[settings.default_model])
        predictor = predictor_for(settings, checkpoint)
        executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
            if settings.inference_thread
            else None
        )
        long_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="long-pass")
        observer = metrics.for_model(
            name or predictor.name,
            predictor.labels,
            min_confidence=settings.min_confidence,
        )
        batcher: MicroBatcher[list[int], PredictionResult] = MicroBatcher(
            predictor.predict_ids,
            max_batch_size=settings.max_batch_size,
            queue_size=settings.queue_size,
            timeout_s=settings.request_timeout_s,
            max_wait_s=settings.max_wait_ms / 1000,
            executor=executor,
            observer=observer,
            size_of=len,  # tokens: texts of very different lengths run in separate passes
            long_executor=long_executor,  # the budget that routes texts there is set at start
        )
        trace_executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="trace")
        tracer = SerialRunner(
            # A trace costs about as much as a full batch of predictions: allow as many waiting
            # traces as the queue holds full batches.
            max_waiting=max(1, settings.queue_size // settings.max_batch_size),
            timeout_s=settings.request_timeout_s,
            executor=trace_executor,
            observer=observer,
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
            long_executor=long_executor,
            name=name,
            observer=observer,
        )

    async def start(self, *, warm_up_off_loop: bool = False) -> None:
        """Start the batcher and warm every path up; then the runtime is ready.

        Warm-up runs on the inference thread when there is one; else on the event loop at
        start-up (nothing else is waiting), or on this runtime's trace thread when
        `warm_up_off_loop` (a reload: the event loop keeps serving the model in place).
        """
        self.batcher.start()
        measure = partial(pass_budget, self.predictor, LOOP_PASS_S)
        if self.executor is None and not warm_up_off_loop:
            self.predictor.warm_up()
            self.explainer.warm_up()
            budget = measure()
        else:
            loop = asyncio.get_running_loop()
            thread = self.executor or self.trace_executor
            await loop.run_in_executor(thread, self.predictor.warm_up)
            await loop.run_in_executor(thread, self.explainer.warm_up)
            budget = await loop.run_in_executor(thread, measure)
        self.batcher.budget = budget
        self.ready = True
        shares = label_shares_from_card(self.predictor.checkpoint.card, self.predictor.labels)
        if shares is not None:
            self.model_metrics.set_test_label_shares(shares)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Count one request in flight on this runtime while the block runs, so that a reload
        or unload of its model waits for it (`drain`)."""
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

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
        self.model_metrics.flush()
        self.model_metrics.clear_test_label_shares()
        await self.batcher.stop()
        threads = (self.executor, self.trace_executor, self.long_executor, self.encode_executor)
        for executor in set(threads):
            if executor is not None:
                executor.shutdown(wait=wait, cancel_futures=True)

    async def predict(self, texts: Sequence[str], *, field: str) -> list[PredictionResult]:
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
        # One short text, nearly all traffic, is told apart without a call.
        if (len(texts) == 1 and len(texts[0]) <= LOOP_TEXT_CHARS) or _tokenized_chars(
            texts, settings.max_text_chars
        ) <= LOOP_TEXT_CHARS:
            ids = _each_or_422(texts, field, encode)
        else:
            ids = await self._run_on(self.encoder, partial(_each_or_422, texts, field, encode))
        self.model_metrics.count_request("predict")
        try:
            results = await self.batcher.submit(ids)
        except (OverloadedError, DeadlineExceededError) as error:
            raise self.unavailable(error) from None
        observe = self.model_metrics.observe_prediction
        for result in results:
            observe(
                result.label, result.score, result.token_count, result.oov_ratio, result.truncated
            )
        return results

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
        """Encode `text` and trace it through the network (422/503 as ApiError): states,
        steps and prediction all from the one trace (`Predictor.hidden_states`)."""
        (encoded,) = await self.encode(
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
        self.model_metrics.count_request("trace")
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
        (encoded,) = await self.encode(
            [text], field="text", max_tokens=self.settings.max_explain_tokens
        )
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
        self.model_metrics.count_request("explain")
        # As heavy as a trace or heavier: it shares the traces' single-file queue.
        return encoded, await self._on_tracer(call)

    async def text_work(self, chars: int, call: Callable[[], T]) -> T:
        """`call()`, work on text that tokenizes `chars` characters: on the event loop up to
        `LOOP_TEXT_CHARS`, else on the encoding thread (module doc). Whatever `call` raises
        is raised here, and, as from `SerialRunner.run`, `OverloadedError` when too many
        calls wait for the thread, `DeadlineExceededError` past the request timeout.

        Check a text's character limit before counting it: a text refused for its length is
        never tokenized, so it should not count.
        """
        if chars <= LOOP_TEXT_CHARS:
            return call()
        return await self.encoder.run(call)

    async def tokenize(self, text: str) -> list[Token]:
        """The tokens of `text` (within the character limit: check it first), tokenized where
        `text_work` says (503 as ApiError)."""
        return await self._text_work_or_503(len(text), partial(split_tokens, text))

    async def _text_work_or_503(self, chars: int, call: Callable[[], T]) -> T:
        try:
            return await self.text_work(chars, call)
        except (OverloadedError, DeadlineExceededError) as error:
            raise self.unavailable(error) from None

    async def _on_tracer(self, call: Callable[[], T]) -> T:
        return await self._run_on(self.tracer, call)

    async def _run_on(self, runner: SerialRunner, call: Callable[[], T]) -> T:
        try:
            return await runner.run(call)
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

    async def encode(
        self, texts: Sequence[str], *, field: str, max_tokens: int
    ) -> list[EncodedText]:
        """Encode every text or raise one 422 listing each text that breaks a limit; on the
        encoding thread when the texts are large (module doc).

        `field` is the request field the texts came from ("text" or "texts"), for `loc`.
        """
        max_chars = self.settings.max_text_chars
        encode = partial(self.predictor.encode, max_chars=max_chars, max_tokens=max_tokens)
        return await self._text_work_or_503(
            _tokenized_chars(texts, max_chars), partial(_each_or_422, texts, field, encode)
        )


def predictor_for(settings: Settings, checkpoint: Checkpoint) -> Predictor:
    """`checkpoint` made ready to predict as `settings` say the service runs it (dtype of the
    batched pass, TorchScript)."""
    return Predictor(
        checkpoint, dtype=_DTYPES[settings.inference_dtype], torchscript=settings.torchscript
    )


def pass_budget(predictor: Predictor, seconds: float) -> PassBudget:
    """The budget that keeps `predictor`'s passes to about `seconds` each on this machine.

    A recurrent pass costs about `steps * (per_step + rows * per_cell)`: timing one text and
    `CALIBRATION_ROWS` texts of the same length gives both terms. Each is the fastest of a
    few runs, so that a busy moment at start-up does not shrink every pass that follows.
    """
    usable = max(1, len(predictor.vocab) - 2)
    steps = CALIBRATION_STEPS

    def fastest(rows: int) -> float:
        batch = [[(7 * i + 3 * j) % usable + 2 for j in range(steps)] for i in range(rows)]
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            predictor.predict_ids(batch)
            best = min(best, time.perf_counter() - started)
        return best

    one, many = fastest(1), fastest(CALIBRATION_ROWS)
    per_cell = (many - one) / ((CALIBRATION_ROWS - 1) * steps)
    if per_cell <= 0:  # timing noise swamped the difference: count every cost as rows'
        return PassBudget(seconds * CALIBRATION_ROWS * steps / max(many, 1e-9))
    per_step = max(0.0, one / steps - per_cell)
    return PassBudget(seconds / per_cell, step_rows=per_step / per_cell)


def _tokenized_chars(texts: Sequence[str], max_chars: int) -> int:
    """The characters encoding `texts` tokenizes: a text over `max_chars` is refused unread."""
    if len(texts) == 1:  # the common case, without a generator
        count = len(texts[0])
        return count if count <= max_chars else 0
    return sum(count for count in map(len, texts) if count <= max_chars)


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
