"""Prometheus metrics: requests by route and status, latencies, inference, batches, queue.

Each app gets its own registry (tests build many apps in one process). With several worker
processes (`WORKERS` > 1) each would otherwise report only its own counts, so `python -m app`
points `PROMETHEUS_MULTIPROC_DIR` at a fresh directory before the workers start; prometheus
client then keeps every worker's values in files there and `/metrics` adds them up (gauges:
the live workers' sum). Set it yourself when running under another process manager.
"""

from __future__ import annotations

import os

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
            "http_requests",
            "HTTP requests answered, by route template, method and status code.",
            ("route", "method", "status"),
            registry=registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Time from request start to the end of its response, by route template.",
            ("route", "method"),
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.inference = Histogram(
            "inference_batch_duration_seconds",
            "Time of one forward pass over a micro-batch.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "inference_batch_size",
            "Texts per forward pass.",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.queue_depth = Gauge(
            "inference_queue_depth",
            "Texts waiting for the model.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.rejections = Counter(
            "inference_rejections",
            "Requests refused with 503, by reason (overloaded, deadline).",
            ("reason",),
            registry=registry,
        )
        self.reloads = Counter(
            "model_reloads",
            "Checkpoint reloads (POST /admin/reload, SIGHUP), by outcome: reloaded, "
            "unchanged (the served checkpoint), failed (the served model stayed).",
            ("outcome",),
            registry=registry,
        )
        self.ready = Gauge(
            "app_ready",
            "1 when the model is loaded and warmed up (summed over live workers).",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.model_info = Gauge(
            "model_info",
            "The model being served (value 1).",
            ("name", "version"),
            registry=registry,
            multiprocess_mode="livemax",
        )
        if not multiprocess_mode():
            ProcessCollector(registry=registry)
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

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

    # BatchObserver
    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)

    def set_queue_depth(self, depth: int) -> None:
        self.queue_depth.set(depth)

    def count_rejection(self, reason: str) -> None:
        self.rejections.labels(reason).inc()

    def count_reload(self, outcome: str) -> None:
        self.reloads.labels(outcome).inc()

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
