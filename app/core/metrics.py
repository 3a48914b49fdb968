"""Prometheus metrics: requests by route and status, latencies, inference, batches, queue.

The inference metrics carry a `model` label: the name the store serves the model under (its
folder's name), so the label takes only the values the operator put in the store, never one a
client chose. A runtime resolves its model's labelled children once, when it is built
(`Metrics.for_model`), because prometheus_client's `labels()` costs microseconds per call:
the hot path only increments children it already holds. The HTTP metrics stay by route.

Every name starts with `rnn_sentiment_`, so the service's series are told apart from any other
exporter's in one Prometheus. Besides counting what each model predicts, they record what the
texts were like (tokens, share of unknown words, truncation, the top label's probability) and
each model's test-split label shares: the reference the drift alert of
`deploy/monitoring/alerts.yml` compares the live label shares with.

Those per-text observations are the one measurement made for every text, and three histogram
`observe` calls plus a counter cost about 6 µs: a few percent of a request's CPU. So a
model's `ModelMetrics` tallies them in plain integers (a bucket index and an addition each, on
the event loop that serves the request) and adds the tallies to the Prometheus children in one
go: when `/metrics` renders, after `FLUSH_S` at the latest, when `FLUSH_TEXTS` have piled up,
and when the model stops. With several workers another worker's latest texts may therefore
reach `/metrics` up to `FLUSH_S` late, well within a scrape interval.

Each app gets its own registry (tests build many apps in one process). With several worker
processes (`WORKERS` > 1) each would otherwise report only its own counts, so `python -m app`
points `PROMETHEUS_MULTIPROC_DIR` at a fresh directory before the workers start; prometheus
client then keeps every worker's values in files there and `/metrics` adds them up (gauges:
the live workers' sum). Set it yourself when running under another process manager.
"""

from __future__ import annotations

import asyncio
import math
import os
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

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
# The top label's probability is at least 1/labels: 0.5 for two labels, 1/3 for three.
_CONFIDENCE_BUCKETS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99)
# 0 is a bucket of its own: most texts have no unknown word at all.
_OOV_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
_TOKEN_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# Tallied observations reach the Prometheus children after at most this long, or this many texts.
FLUSH_S = 1.0
FLUSH_TEXTS = 256
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
        self.confidence = Histogram(
            "rnn_sentiment_prediction_confidence",
            "The predicted label's probability (the answer's score), by model.",
            ("model",),
            buckets=_CONFIDENCE_BUCKETS,
            registry=registry,
        )
        self.oov_ratio = Histogram(
            "rnn_sentiment_oov_ratio",
            "Share of a text's tokens the model's vocabulary does not know, by model.",
            ("model",),
            buckets=_OOV_BUCKETS,
            registry=registry,
        )
        self.text_tokens = Histogram(
            "rnn_sentiment_text_tokens",
            "Tokens per text predicted, by model.",
            ("model",),
            buckets=_TOKEN_BUCKETS,
            registry=registry,
        )
        self.truncated = Counter(
            "rnn_sentiment_truncated_texts",
            "Texts longer than the model's training texts were cut to, by model.",
            ("model",),
            registry=registry,
        )
        self.low_confidence = Counter(
            "rnn_sentiment_low_confidence_predictions",
            "Texts whose predicted label's probability is below APP_MIN_CONFIDENCE, by model "
            "(never counts while the setting is unset).",
            ("model",),
            registry=registry,
        )
        self.test_label_share = Gauge(
            "rnn_sentiment_test_label_share",
            "Each label's share of the model's test split (from its model card), by model and "
            "label: the reference live label shares are compared with.",
            ("model", "label"),
            registry=registry,
            multiprocess_mode="livemax",
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
        # Which runtime's metrics set each model's test label shares: a reload's new runtime
        # sets them before the old one stops, and the old one must not clear them then.
        self._share_owners: dict[str, ModelMetrics] = {}
        # Models holding tallied observations not yet in their children (module doc).
        self._unflushed: set[ModelMetrics] = set()

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

    def for_model(
        self, model: str, labels: Sequence[str] = (), *, min_confidence: float | None = None
    ) -> ModelMetrics:
        """Model `model`'s inference metrics, its children resolved now: a runtime calls it
        once when it is built. `labels`: the model's labels, for `rnn_sentiment_predictions`;
        `min_confidence`: the threshold below which a prediction counts as low-confidence."""
        return ModelMetrics(self, model, labels, min_confidence=min_confidence)

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
        for model in list(self._unflushed):
            model.flush()
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

    def __init__(
        self,
        metrics: Metrics,
        model: str,
        labels: Sequence[str] = (),
        *,
        min_confidence: float | None = None,
    ) -> None:
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
        self._confidence = _Tally(metrics.confidence.labels(model))
        self._oov_ratio = _Tally(metrics.oov_ratio.labels(model))
        self._text_tokens = _Tally(metrics.text_tokens.labels(model))
        self._truncated = metrics.truncated.labels(model)
        self._low_confidence = metrics.low_confidence.labels(model)
        # Scores at or above it (and NaN) are never low: comparing with -inf is always False.
        self._min_confidence = -math.inf if min_confidence is None else min_confidence
        # Texts observed since the last flush, by label; how many were truncated or low.
        self._labelled: dict[str, int] = {}
        self._texts = 0
        self._truncations = 0
        self._lows = 0
        self._shares: dict[str, float] = {}

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

    def observe_prediction(
        self, label: str, score: float, token_count: int, oov_ratio: float, truncated: bool
    ) -> None:
        """A text this model labelled `label` with probability `score`, and what the text was
        like: its tokens, the share of them the vocabulary does not know, whether it was longer
        than the model's training texts. One call per text, on the hot path: tallied, and in
        the exported metrics after the next flush (module doc)."""
        labelled = self._labelled
        labelled[label] = labelled.get(label, 0) + 1
        self._confidence.observe(score)
        self._oov_ratio.observe(oov_ratio)
        self._text_tokens.observe(token_count)
        if truncated:
            self._truncations += 1
        if score < self._min_confidence:
            self._lows += 1
        self._texts += 1
        if self._texts == 1:
            self._flush_soon()
        elif self._texts >= FLUSH_TEXTS:
            self.flush()

    def _flush_soon(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the service's event loop (a script, a test)
            self.flush()
            return
        self._metrics._unflushed.add(self)
        loop.call_later(FLUSH_S, self.flush)

    def flush(self) -> None:
        """Add the tallied observations to the Prometheus children."""
        self._metrics._unflushed.discard(self)
        if not self._texts:
            return
        labelled, self._labelled = self._labelled, {}
        truncations, lows = self._truncations, self._lows
        self._texts = self._truncations = self._lows = 0
        for label, count in labelled.items():
            child = self._predictions.get(label)
            if child is None:
                child = self._predictions[label] = self._metrics.predictions.labels(
                    self.model, label
                )
            child.inc(count)
        self._confidence.flush()
        self._oov_ratio.flush()
        self._text_tokens.flush()
        if truncations:
            self._truncated.inc(truncations)
        if lows:
            self._low_confidence.inc(lows)

    def set_test_label_shares(self, shares: Mapping[str, float]) -> None:
        """Publish this model's test-split label shares (`label_shares_from_card`), replacing those
        a previous runtime of the same model published: from now on this runtime owns them."""
        metrics = self._metrics
        previous = metrics._share_owners.get(self.model)
        if previous is not None and previous is not self:
            previous._drop_shares(keep=shares.keys())
        for label, share in shares.items():
            metrics.test_label_share.labels(self.model, label).set(share)
        self._shares = dict(shares)
        metrics._share_owners[self.model] = self

    def clear_test_label_shares(self) -> None:
        """The model stops being served: its shares go, unless a newer runtime of the same
        model (a reload) owns them by now."""
        if self._metrics._share_owners.get(self.model) is self:
            del self._metrics._share_owners[self.model]
            self._drop_shares()

    def _drop_shares(self, keep: Iterable[str] = ()) -> None:
        # prometheus_client cannot remove a series from the files several workers share: there
        # an unloaded model's shares stay until the workers restart. Without traffic to that
        # model the drift rule has no live share to compare them with, so they stay quiet.
        kept = set(keep)
        if not multiprocess_mode():
            for label in self._shares.keys() - kept:
                self._metrics.test_label_share.remove(self.model, label)
        self._shares = {}

    def clear_queue_depth(self) -> None:
        """The model is unloaded: nothing waits for it any more."""
        self._queue_depth.set(0)


_REJECTION_REASONS = ("overloaded", "deadline")
_KINDS = ("predict", "trace", "explain")


class _Tally:
    """One histogram child's observations counted in plain numbers until `flush` adds them to
    it, one increment per bucket touched (module doc). It fills the child's own per-bucket
    values, as `Histogram.observe` does: a value goes to the first bucket whose upper bound it
    does not exceed."""

    __slots__ = ("_bounds", "_child", "_counts", "_sum")

    def __init__(self, child: Histogram) -> None:
        self._child = child
        self._bounds = list(child._upper_bounds)  # ascending, +Inf last
        if len(child._buckets) != len(self._bounds):  # a prometheus_client we do not know
            raise RuntimeError("prometheus_client's Histogram layout changed")
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def flush(self) -> None:
        counts, self._counts = self._counts, [0] * len(self._bounds)
        total, self._sum = self._sum, 0.0
        buckets = self._child._buckets
        for index, count in enumerate(counts):
            if count:
                buckets[index].inc(count)
        self._child._sum.inc(total)


def label_shares_from_card(
    card: Mapping[str, Any], labels: Sequence[str]
) -> dict[str, float] | None:
    """Each label's share of a model's test split, from its model card: the split's label
    counts (`data.split.test`), else the test metrics' per-class support
    (`metrics.test.per_class`), else the rows of the test confusion matrix. None when the card
    records none of them (the model then publishes no shares, and the drift rule skips it)."""
    counts = _test_counts(card, labels)
    if counts is None:
        return None
    total = sum(counts.values())
    if total <= 0:
        return None
    return {label: counts.get(label, 0) / total for label in labels}


def _test_counts(card: Mapping[str, Any], labels: Sequence[str]) -> dict[str, float] | None:
    split = _path(card, "data", "split", "test")
    if isinstance(split, Mapping) and _counts_for(split, labels):
        return {label: float(split[label]) for label in labels}
    per_class = _path(card, "metrics", "test", "per_class")
    if isinstance(per_class, Mapping):
        supports = {
            label: _path(per_class, label, "support") for label in labels if label in per_class
        }
        if _counts_for(supports, labels):
            return {label: float(supports[label]) for label in labels}
    matrix = _path(card, "metrics", "test", "confusion_matrix")
    if isinstance(matrix, Mapping):
        names, rows = matrix.get("labels"), matrix.get("rows_true_columns_predicted")
        if isinstance(names, list) and isinstance(rows, list) and len(names) == len(rows):
            sums: dict[str, Any] = {}
            for name, row in zip(names, rows, strict=True):
                if isinstance(row, list) and all(_is_count(value) for value in row):
                    sums[str(name)] = sum(row)
            if _counts_for(sums, labels):
                return {label: float(sums[label]) for label in labels}
    return None


def _path(mapping: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


def _is_count(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _counts_for(counts: Mapping[str, Any], labels: Sequence[str]) -> bool:
    """Whether `counts` holds a count for every label and nothing else."""
    return bool(labels) and set(counts) == set(labels) and all(map(_is_count, counts.values()))
