"""Rolling out a new model version: a canary answers part of the traffic, a shadow scores it.

Both name a candidate, another model of the store (`app.inference.store`), and both act only
on the *default model's traffic*: requests that name no model. A request that names a model
gets that model, always. The steps from a trained checkpoint to the new default are in
docs/rollout.md.

`APP_CANARY=NAME:FRACTION` (`Canary`): each request that names no model is answered by the
candidate with probability FRACTION, drawn per request from the process's `random` (no lock,
no system call; reseeded in every forked worker). Only the routes that answer one request
from one text follow it: /predict, /tokenize, /hidden-states and /explain. A stream never
does: its state is bound to the model version that began it, so a stream whose calls were
split between two models would be refused half-way (409); a stream meant for the candidate
names it. The answer's `model` says which model answered, and
`rnn_sentiment_canary_requests_total` counts the requests the candidate took. While the
candidate is not being served (it failed to load, or was removed), the default answers
everything.

`APP_SHADOW=NAME` (`Shadow`): every text of a /predict request the default model answered is
scored by the candidate too, after the answer has been sent. The caller never waits for it and
never sees it fail: the candidate's work is a task of its own, and when the candidate's queue
is full (or the shadow texts already waiting fill a queue's worth) the texts are dropped, not
queued. `/metrics` then holds, per text, whether the two labels agree
(`rnn_sentiment_shadow_predictions_total{model, outcome}`: agree, disagree, dropped, failed)
and the candidate's time per request, from the answer being sent to its own label
(`rnn_sentiment_shadow_prediction_duration_seconds{model}`). The candidate's work shares the
worker's CPU with the traffic: a shadow adds the candidate's forward passes to every /predict.

With neither setting, nothing here is built: the request paths check one attribute for None.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence

from prometheus_client import Counter, Histogram

from app.core.config import Settings
from app.core.errors import ApiError, UnavailableError
from app.core.metrics import Metrics
from app.inference.results import PredictionResult
from app.inference.runtime import Runtime
from app.inference.slot import Serving, StartupError
from app.inference.store import ModelStore

logger = logging.getLogger("app.inference.rollout")

# The candidate's time includes its queue, up to the request timeout (10 s by default).
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
OUTCOMES = ("agree", "disagree", "dropped", "failed")


class RolloutMetrics:
    """The canary's and the shadow's metrics, in the app's registry (`app.core.metrics`)."""

    def __init__(self, metrics: Metrics) -> None:
        registry = metrics.registry
        self.canary_requests = Counter(
            "rnn_sentiment_canary_requests",
            "Requests naming no model that the canary model answered (APP_CANARY).",
            ("model",),
            registry=registry,
        )
        self.shadow_predictions = Counter(
            "rnn_sentiment_shadow_predictions",
            "Texts the default model answered on /predict, by what the shadow model "
            "(APP_SHADOW) made of them: agree or disagree (same or other label), dropped "
            "(its queue was full or it was not being served), failed (it raised an error).",
            ("model", "outcome"),
            registry=registry,
        )
        self.shadow_latency = Histogram(
            "rnn_sentiment_shadow_prediction_duration_seconds",
            "The shadow model's time per /predict request, from the default's answer being "
            "sent to its own (queue included).",
            ("model",),
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )


class Canary:
    """Sends a fraction of the requests that name no model to the candidate (module doc)."""

    def __init__(
        self,
        name: str,
        fraction: float,
        metrics: RolloutMetrics,
        *,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.name = name
        self.fraction = fraction
        self._draw = draw
        self._answered = metrics.canary_requests.labels(name)

    def pick(self, store: ModelStore) -> Serving | None:
        """The candidate, for this request's share of the traffic while it is being served;
        None: the default answers."""
        if self._draw() >= self.fraction:
            return None
        try:
            serving = store.serving(self.name)
        except ApiError:  # not being served: the caller asked for no model, the default answers
            return None
        self._answered.inc()
        return serving


class Shadow:
    """Scores the default model's /predict texts with the candidate, off the response path
    (module doc)."""

    def __init__(self, name: str, metrics: RolloutMetrics, settings: Settings) -> None:
        self.name = name
        self._queue_size = settings.queue_size
        self._counts = {
            outcome: metrics.shadow_predictions.labels(name, outcome) for outcome in OUTCOMES
        }
        self._latency = metrics.shadow_latency.labels(name)
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending = 0  # shadow texts launched and not yet scored
        self._told_failure = False

    @property
    def pending(self) -> int:
        """Texts launched and not yet scored, dropped or failed."""
        return self._pending

    def launch(
        self, store: ModelStore, texts: Sequence[str], answers: Sequence[PredictionResult]
    ) -> None:
        """Have the candidate score `texts`, which the default answered `answers`, in a task
        of its own; call it once the answer is sent. Never raises, never waits."""
        count = len(texts)
        try:
            runtime = store.serving(self.name).runtime
        except ApiError:
            self._counts["dropped"].inc(count)
            return
        if (
            self._pending + count > self._queue_size
            or runtime.batcher.queue_depth + count > self._queue_size
        ):
            self._counts["dropped"].inc(count)
            return
        self._pending += count
        labels = [answer.label for answer in answers]
        work = self._score(runtime, list(texts), labels, time.perf_counter())
        task = asyncio.get_running_loop().create_task(work, name="shadow")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _score(
        self, runtime: Runtime, texts: list[str], labels: list[str], started: float
    ) -> None:
        # Counted in flight like a request: a reload of the candidate waits for its answer.
        try:
            with runtime.held():
                results = await runtime.predict(texts, field="texts")
        except UnavailableError:  # its queue filled meanwhile, or its deadline passed
            self._counts["dropped"].inc(len(texts))
            return
        except Exception as error:
            self._counts["failed"].inc(len(texts))
            if not self._told_failure:  # once: /metrics keeps counting the rest
                self._told_failure = True
                logger.warning(
                    "the shadow model failed to score a request: %s: %s",
                    type(error).__name__,
                    error,
                    exc_info=not isinstance(error, ApiError),
                    extra={"model": self.name},
                )
            return
        finally:
            self._pending -= len(texts)
        self._latency.observe(time.perf_counter() - started)
        agree = sum(result.label == label for result, label in zip(results, labels, strict=True))
        if agree:
            self._counts["agree"].inc(agree)
        if agree < len(labels):
            self._counts["disagree"].inc(len(labels) - agree)

    async def stop(self) -> None:
        """Cancel the scoring still under way (at shutdown, before the models stop)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class Rollout:
    """The canary and the shadow the settings ask for, each None when unset."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.canary: Canary | None = None
        self.shadow: Shadow | None = None
        if settings.canary is None and settings.shadow is None:
            return
        rollout_metrics = RolloutMetrics(metrics)
        if settings.canary is not None:
            name, fraction = settings.canary_split()
            self.canary = Canary(name, fraction, rollout_metrics)
        if settings.shadow is not None:
            self.shadow = Shadow(settings.shadow, rollout_metrics, settings)

    def check(self, store: ModelStore) -> None:
        """`StartupError` unless the store holds each candidate (the settings checked the
        store's folders when they were read; this checks what the store was built from)."""
        for setting, candidate in (("APP_CANARY", self.canary), ("APP_SHADOW", self.shadow)):
            if candidate is not None and candidate.name not in store.names:
                reason = (
                    f"{setting}: no model named {candidate.name!r} is served "
                    f"(served: {', '.join(store.names)})"
                )
                # Logged here: the server drops the traceback of a StartupError as told.
                logger.error("cannot serve: %s", reason)
                raise StartupError(reason)

    def report(self, store: ModelStore) -> None:
        """Log, once the models are loaded, what each candidate does (or why it cannot)."""
        if self.canary is not None:
            self._report(
                store, self.canary.name, f"canary: {self.canary.fraction:g} of the traffic"
            )
        if self.shadow is not None:
            self._report(store, self.shadow.name, "shadow: scores the default's /predict texts")

    @staticmethod
    def _report(store: ModelStore, name: str, role: str) -> None:
        entry = store.entry(name)
        if entry.status == "ready":
            logger.info(role, extra={"model": name})
        else:
            logger.warning(
                "%s; but the model is not being served, so it takes no part until it loads "
                "(POST /admin/reload?model=%s)",
                role,
                name,
                extra={"model": name, "reason": entry.failure},
            )

    async def stop(self) -> None:
        if self.shadow is not None:
            await self.shadow.stop()
