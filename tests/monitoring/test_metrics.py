"""What /metrics exports for monitoring: the prefix, each model's test label shares, and the
signals of every text predicted, checked against the answers that carried them."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from app.core.config import Settings
from app.core.metrics import FLUSH_S, FLUSH_TEXTS, Metrics, _Tally, label_shares_from_card
from tests.app.conftest import serve_app
from tests.conftest import LABELS
from tests.monitoring.conftest import DASHBOARD, RULES, TEST_SPLIT, TRAINED_TOKENS

pytestmark = pytest.mark.anyio

# A series' name in a PromQL expression: what follows may be labels, a range or an operator.
_NAME = re.compile(r"(?<![\w:])(rnn_sentiment_[a-z_]+)")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def settings(model_dir: Path, **overrides: Any) -> Settings:
    return Settings(model_dir=model_dir, gc_freeze=False, **overrides)


def samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition: (name, labels) -> value."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(exposition: str, name: str, **labels: str) -> float:
    return samples(exposition)[(name, frozenset(labels.items()))]


def exported_names(exposition: str) -> set[str]:
    """The series names an exposition declares, sampled or not yet (a counter whose labels
    have not occurred yet, such as reloads before the first one): each family's name with
    the suffixes of its type."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.add(family.name)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ()))
    return names


def queried_names() -> set[str]:
    """Every series name the alert rules and the dashboard query (recorded names aside)."""
    rules = RULES.read_text()
    recorded = set(re.findall(r"record:\s*(\S+)", rules))
    names = set(_NAME.findall(rules))
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = [json.dumps(dashboard["templating"])]
    for panel in dashboard["panels"]:
        expressions += [target["expr"] for target in panel.get("targets", [])]
    for expression in expressions:
        names |= set(_NAME.findall(expression))
    return names - recorded


async def test_every_metric_takes_the_prefix(monitored_checkpoint: Path) -> None:
    async with serve_app(settings(monitored_checkpoint)) as client:
        await client.post("/predict", json={"text": "good"})
        exposition = (await client.get("/metrics")).text
    families = [family.name for family in text_string_to_metric_families(exposition)]
    assert len(families) > 20
    assert [name for name in families if not name.startswith("rnn_sentiment_")] == []


async def test_rules_and_dashboard_name_only_exported_metrics(
    monitored_checkpoint: Path,
) -> None:
    async with serve_app(settings(monitored_checkpoint)) as client:
        await client.post("/predict", json={"texts": ["good", "bad"]})
        exposition = (await client.get("/metrics")).text
    exported = exported_names(exposition)
    queried = queried_names()
    assert {"rnn_sentiment_predictions_total", "rnn_sentiment_test_label_share"} <= queried
    assert sorted(queried - exported) == []


async def test_test_label_shares_come_from_the_model_card(monitored_checkpoint: Path) -> None:
    async with serve_app(settings(monitored_checkpoint)) as client:
        exposition = (await client.get("/metrics")).text
    total = sum(TEST_SPLIT.values())
    shares = {
        label: value(exposition, "rnn_sentiment_test_label_share", model="default", label=label)
        for label in LABELS
    }
    assert shares == {label: TEST_SPLIT[label] / total for label in LABELS}


async def test_every_text_predicted_is_observed_with_its_signals(
    monitored_checkpoint: Path,
) -> None:
    long_text = " ".join(["great"] * (TRAINED_TOKENS + 4))
    texts = ["good film", "zyxxy qwop blorf", long_text, "bad :("]
    async with serve_app(settings(monitored_checkpoint, min_confidence=0.6)) as client:
        batch = (await client.post("/predict", json={"texts": texts})).json()["predictions"]
        single = (await client.post("/predict", json={"text": "fine"})).json()
        exposition = (await client.get("/metrics")).text
    answers = [*batch, single]
    model = {"model": "default"}

    def observed(name: str) -> float:
        return value(exposition, name, **model)

    for label in LABELS:
        expected = sum(answer["label"] == label for answer in answers)
        got = value(exposition, "rnn_sentiment_predictions_total", label=label, **model)
        assert got == expected
    assert observed("rnn_sentiment_prediction_confidence_count") == len(answers)
    assert observed("rnn_sentiment_prediction_confidence_sum") == pytest.approx(
        sum(answer["score"] for answer in answers)
    )
    assert observed("rnn_sentiment_text_tokens_sum") == sum(a["token_count"] for a in answers)
    assert observed("rnn_sentiment_oov_ratio_sum") == pytest.approx(
        sum(answer["oov_ratio"] for answer in answers)
    )
    # The made-up words are unknown: the OOV histogram puts that text above the 0.5 bucket.
    assert batch[1]["oov_ratio"] == 1.0
    assert value(exposition, "rnn_sentiment_oov_ratio_bucket", le="0.5", **model) == 4
    assert [answer["truncated"] for answer in answers] == [False, False, True, False, False]
    assert observed("rnn_sentiment_truncated_texts_total") == 1
    low = sum(answer["score"] < 0.6 for answer in answers)
    assert low > 0  # a randomly initialised model is unsure of everything
    assert observed("rnn_sentiment_low_confidence_predictions_total") == low


async def test_no_low_confidence_count_without_a_threshold(monitored_checkpoint: Path) -> None:
    async with serve_app(settings(monitored_checkpoint)) as client:
        await client.post("/predict", json={"text": "good", "min_confidence": 0.99})
        exposition = (await client.get("/metrics")).text
    # A client's own threshold changes its answer, not the operator's count.
    assert value(exposition, "rnn_sentiment_low_confidence_predictions_total", model="default") == 0
    assert value(exposition, "rnn_sentiment_prediction_confidence_count", model="default") == 1


def shares_in(metrics: Metrics) -> dict[tuple[str, str], float]:
    exposition = metrics.render()[0].decode()
    return {
        (dict(labels)["model"], dict(labels)["label"]): share
        for (name, labels), share in samples(exposition).items()
        if name == "rnn_sentiment_test_label_share"
    }


def test_a_reload_keeps_the_shares_and_an_unload_clears_them() -> None:
    metrics = Metrics()
    old = metrics.for_model("tweets", ("negative", "positive"))
    old.set_test_label_shares({"negative": 0.5, "positive": 0.5})
    other = metrics.for_model("default", ("negative", "positive"))
    other.set_test_label_shares({"negative": 0.25, "positive": 0.75})
    # A reload: the new runtime publishes its shares, then the old one stops.
    new = metrics.for_model("tweets", ("negative", "neutral"))
    new.set_test_label_shares({"negative": 0.4, "neutral": 0.6})
    old.clear_test_label_shares()
    assert shares_in(metrics) == {
        ("tweets", "negative"): 0.4,
        ("tweets", "neutral"): 0.6,  # the retired checkpoint's "positive" went with it
        ("default", "negative"): 0.25,
        ("default", "positive"): 0.75,
    }
    new.clear_test_label_shares()  # unloaded
    assert shares_in(metrics) == {("default", "negative"): 0.25, ("default", "positive"): 0.75}


def test_label_shares_from_each_place_a_card_records_them() -> None:
    labels = ("negative", "positive")
    split = {"data": {"split": {"test": {"negative": 30, "positive": 10}}}}
    support = {
        "metrics": {
            "test": {
                "per_class": {
                    "negative": {"support": 1, "f1": 0.5},
                    "positive": {"support": 3, "f1": 0.5},
                }
            }
        }
    }
    matrix = {
        "metrics": {
            "test": {
                "confusion_matrix": {
                    "labels": ["positive", "negative"],
                    "rows_true_columns_predicted": [[6, 2], [1, 1]],
                }
            }
        }
    }
    assert label_shares_from_card(split, labels) == {"negative": 0.75, "positive": 0.25}
    assert label_shares_from_card(support, labels) == {"negative": 0.25, "positive": 0.75}
    assert label_shares_from_card(matrix, labels) == {"negative": 0.2, "positive": 0.8}
    # The split wins over the metrics when a card has both.
    assert label_shares_from_card(split | support, labels) == {"negative": 0.75, "positive": 0.25}


@pytest.mark.parametrize(
    "card",
    [
        {},
        {"metrics": {"test": {"accuracy": 0.5}}},
        {"data": {"split": {"test": {"negative": 3}}}},  # a label missing
        {"data": {"split": {"test": {"negative": 3, "positive": "two"}}}},
        {"data": {"split": {"test": {"negative": 0, "positive": 0}}}},
        {"data": {"split": {"test": {"negative": True, "positive": 1}}}},
        {"data": {"split": {"test": {"negative": -1, "positive": 2}}}},
        {"data": {"split": ["negative", "positive"]}},
    ],
)
def test_no_shares_when_the_card_records_no_usable_split(card: dict[str, Any]) -> None:
    assert label_shares_from_card(card, ("negative", "positive")) is None


def test_the_shipped_model_publishes_its_test_split() -> None:
    card = json.loads((Path("model_store/default/model_card.json")).read_text())
    shares = label_shares_from_card(card, card["labels"])
    assert shares is not None
    split = card["data"]["split"]["test"]
    assert shares == pytest.approx({label: n / sum(split.values()) for label, n in split.items()})
    assert sum(shares.values()) == pytest.approx(1.0)


async def test_tallied_observations_reach_the_children_within_the_flush_interval() -> None:
    """Another worker's /metrics reads the children without flushing this worker's tallies:
    they must get there on their own, within `FLUSH_S`."""
    metrics = Metrics()
    model = metrics.for_model("default", LABELS)
    model.observe_prediction("positive", 0.9, 5, 0.2, True)
    model.observe_prediction("positive", 0.7, 3, 0.0, False)

    def sample(name: str, **labels: str) -> float | None:
        value: float | None = metrics.registry.get_sample_value(
            name, {"model": "default", **labels}
        )
        return value

    assert sample("rnn_sentiment_predictions_total", label="positive") == 0  # tallied only
    await asyncio.sleep(FLUSH_S + 0.3)
    assert sample("rnn_sentiment_predictions_total", label="positive") == 2
    assert sample("rnn_sentiment_prediction_confidence_sum") == pytest.approx(1.6)
    assert sample("rnn_sentiment_text_tokens_bucket", le="4.0") == 1
    assert sample("rnn_sentiment_truncated_texts_total") == 1


async def test_a_full_tally_is_flushed_at_once() -> None:
    metrics = Metrics()
    model = metrics.for_model("default", LABELS)
    for _ in range(FLUSH_TEXTS):
        model.observe_prediction("negative", 0.5, 2, 0.0, False)
    got = metrics.registry.get_sample_value(
        "rnn_sentiment_predictions_total", {"model": "default", "label": "negative"}
    )
    assert got == FLUSH_TEXTS


def test_tallied_histograms_equal_observed_ones() -> None:
    """The tally fills the buckets exactly as `Histogram.observe` would, boundaries included."""
    buckets = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
    values = [0.0, 0.05, 0.050001, 0.1, 0.15, 0.2, 0.3, 0.31, 0.5, 0.75, 0.99, 1.0, 1.5, -0.1]
    tallied_registry, observed_registry = CollectorRegistry(), CollectorRegistry()
    tallied = Histogram("h", "h", ("m",), buckets=buckets, registry=tallied_registry)
    observed = Histogram("h", "h", ("m",), buckets=buckets, registry=observed_registry)
    tally = _Tally(tallied.labels("x"))
    for value in values:
        tally.observe(value)
        observed.labels("x").observe(value)
    tally.flush()

    def exposed(registry: CollectorRegistry) -> dict[Any, float]:
        exposition = generate_latest(registry).decode()
        return {key: v for key, v in samples(exposition).items() if key[0] != "h_created"}

    assert len(exposed(observed_registry)) == len(buckets) + 3  # +Inf, count, sum
    assert exposed(tallied_registry) == exposed(observed_registry)
