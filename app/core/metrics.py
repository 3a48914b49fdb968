"""Prometheus metrics: requests by route and status, latencies, inference, batches, queue.

The inference metrics carry a `model` label: the name the store serves the model under (its
folder's name), so the label takes only the values the operator put in the store, never one a
client chose. A runtime resolves its model's labelled children once, when it is built
(`Metrics.for_model`), because prometheus_client's `labels()` costs microseconds per call:
the hot path only increments children it already holds. The HTTP metrics stay by route.

Each app gets its own registry (tests build many apps in one process). With several worker
processes (`WORKERS` > 1) each would otherwise report only its own counts, so `python -m app`
points `PROMETHEUS_MULTIPROC_DIR` at a fresh directory before the workers start; prometheus
client then keeps every worker's values in files there and `/metrics` adds them up (gauges:
the live workers' sum). Set it yourself when running under another process manager.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)

from app.core.config import MULTIPROC_ENV

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})


def multiprocess_mode() -> bool:
    return bool(os.environ.get(MULTIPROC_ENV))


class Metrics:
    """The service's metrics; also the batcher's `BatchObserver`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "rnn_sentiment_http_requests",
            "HTTP requests answered, by route template, method and status code.",
            ("route", "method", "status"),
            registry=registry,
        )
        self.latency = Histogram(
            "rnn_sentiment_http_request_duration_seconds",
            "Time from request start to the end of its response, by route template.",
            ("route", "method"),
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.inference = Histogram(
            "rnn_sentiment_inference_batch_duration_seconds",
            "Time of one forward pass over a micro-batch, by model.",
            ("model",),
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "rnn_sentiment_inference_batch_size",
            "Texts per forward pass, by model.",
            ("model",),
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "rnn_sentiment_inference_queue_depth",
            "Texts waiting for the model, by model.",
            ("model",),
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.rejections = Counter(
            "rnn_sentiment_inference_rejections",
            "Requests refused with 503, by model and reason (overloaded, deadline).",
            ("model", "reason"),
            registry=registry,
        )
        self.model_requests = Counter(
            "rnn_sentiment_inference_requests",
            "Requests handed to each model once their texts passed the limits (503s "
            "included), by model and kind (predict, trace, explain).",
            ("model", "kind"),
            registry=registry,
        )
        self.predictions = Counter(
            "rnn_sentiment_predictions",
            "Texts each model labelled through /predict, by model and predicted label.",
            ("model", "label"),
            registry=registry,
        )
        self.reloads = Counter(
            "rnn_sentiment_model_reloads",
            "Checkpoint reloads (POST /admin/reload, SIGHUP), by model and outcome: reloaded, "
            "unchanged (the served checkpoint), failed (the served model stayed).",
            ("model", "outcome"),
            registry=registry,
        )
        self.model_operations = Counter(
            "rnn_sentiment_model_operations",
            "Models loaded or unloaded at run time (POST and DELETE /admin/models/{name}), "
            "by model, operation (load, unload) and outcome (done, failed).",
            ("model", "operation", "outcome"),
            registry=registry,
        )
        self.ready = Gauge(
            "rnn_sentiment_ready",
            "1 when the model is loaded and warmed up (summed over live workers).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.model_info = Gauge(
            "rnn_sentiment_model_info",
            "The model being served (value 1).",
            ("name", "version"),
            registry=registry,
            multiprocess_mode="livemax",
        )
        if not multiprocess_mode():
            ProcessCollector(namespace="rnn_sentiment", registry=registry)
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        # Measurements made outside any one model's runtime (see `observe_batch`).
        self._unattributed: ModelMetrics | None = None

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        if method not in _METHODS:
            method = "OTHER"
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.requests.labels(route, method, str(status)),
                self.latency.labels(route, method),
            )
            self._request_children[key] = children
        counter, histogram = children
        counter.inc()
        histogram.observe(seconds)

    def for_model(self, model: str, labels: Sequence[str] = ()) -> ModelMetrics:
        """Model `model`'s inference metrics, its children resolved now: a runtime calls it
        once when it is built. `labels`: the model's labels, for `inference_predictions`."""
        return ModelMetrics(self, model, labels)

    # BatchObserver, for queues that do not say which model they serve: their measurements
    # count under model="" (each runtime's own queues report through `for_model`).
    def observe_batch(self, size: int, seconds: float) -> None:
        self._unattributed_metrics().observe_batch(size, seconds)

    def set_queue_depth(self, depth: int) -> None:
        self._unattributed_metrics().set_queue_depth(depth)

    def count_rejection(self, reason: str) -> None:
        self._unattributed_metrics().count_rejection(reason)

    def _unattributed_metrics(self) -> ModelMetrics:
        if self._unattributed is None:
            self._unattributed = self.for_model("")
        return self._unattributed

    def count_reload(self, model: str, outcome: str) -> None:
        self.reloads.labels(model, outcome).inc()

    def count_operation(self, model: str, operation: str, outcome: str) -> None:
        self.model_operations.labels(model, operation, outcome).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        if multiprocess_mode():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    @staticmethod
    def mark_process_dead() -> None:
        """Drop this worker's live gauges from the shared files (on shutdown)."""
        if multiprocess_mode():
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class ModelMetrics:
    """One model's inference metrics, with its labelled children resolved once (module doc);
    the `BatchObserver` of that model's queues.

    Rejection reasons and predicted labels outside the ones resolved up front still count,
    through `labels()` on first use.
    """

    def __init__(self, metrics: Metrics, model: str, labels: Sequence[str] = ()) -> None:
        self.model = model
        self._metrics = metrics
        self._batch_size = metrics.batch_size.labels(model)
        self._inference = metrics.inference.labels(model)
        self._queue_depth = metrics.queue_depth.labels(model)
        self._rejections = {
            reason: metrics.rejections.labels(model, reason) for reason in _REJECTION_REASONS
        }
        self._requests = {kind: metrics.model_requests.labels(model, kind) for kind in _KINDS}
        self._predictions = {label: metrics.predictions.labels(model, label) for label in labels}

    # BatchObserver
    def observe_batch(self, size: int, seconds: float) -> None:
        self._batch_size.observe(size)
        self._inference.observe(seconds)

    def set_queue_depth(self, depth: int) -> None:
        self._queue_depth.set(depth)

    def count_rejection(self, reason: str) -> None:
        child = self._rejections.get(reason)
        if child is None:
            child = self._rejections[reason] = self._metrics.rejections.labels(self.model, reason)
        child.inc()

    def count_request(self, kind: str) -> None:
        """A request of `kind` (predict, trace, explain) reached this model's queues."""
        self._requests[kind].inc()

    def count_prediction(self, label: str) -> None:
        """A text this model labelled `label`."""
        child = self._predictions.get(label)
        if child is None:
            child = self._predictions[label] = self._metrics.predictions.labels(self.model, label)
        child.inc()

    def clear_queue_depth(self) -> None:
        """The model is unloaded: nothing waits for it any more."""
        self._queue_depth.set(0)


_REJECTION_REASONS = ("overloaded", "deadline")
_KINDS = ("predict", "trace", "explain")
