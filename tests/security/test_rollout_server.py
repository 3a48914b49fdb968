"""Canary and shadow against a real `python -m app` process serving a store of models.

The store holds real tiny checkpoints: `twin` is the default's checkpoint under another name,
`other` has other weights. Requests go over HTTP, through the fast /predict path as clients'
requests do; /metrics is read as a scraper would.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.app.test_server import free_port, running, wait_ready
from tests.conftest import CORPUS, build_checkpoint

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"
TEXTS = [*CORPUS[:6], "the food was great but the service was slow", "awful", "love it"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rollout-server") / "store"
    build_checkpoint(root / "default", "lstm", seed=0)
    build_checkpoint(root / "twin", "lstm", seed=0)
    build_checkpoint(root / "other", "lstm", seed=2)
    return root


def store_env(store: Path, port: int, **settings: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("APP_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        {
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "WORKERS": "1",
            "APP_MODEL_STORE": str(store),
            "APP_LOG_FORMAT": "json",
            "APP_ACCESS_LOG": "false",
            **settings,
        }
    )
    return env


@contextmanager
def serving(store: Path, log: Path, **settings: str) -> Iterator[httpx.Client]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = store_env(store, port, **settings)
    with running([str(PYTHON), "-m", "app"], env, log) as process:
        wait_ready(base_url, process, log)
        with httpx.Client(base_url=base_url, timeout=30) as client:
            yield client


def shadow_counts(client: httpx.Client, model: str, total: int) -> dict[str, float]:
    """The shadow's counts in /metrics once `total` texts are accounted for."""
    deadline = time.monotonic() + 30
    while True:
        exposition = client.get("/metrics").text
        counts = {
            outcome: _sample(
                exposition,
                rf'rnn_sentiment_shadow_predictions_total\{{model="{model}",outcome="{outcome}"\}}',
            )
            for outcome in ("agree", "disagree", "dropped", "failed")
        }
        if sum(counts.values()) >= total or time.monotonic() > deadline:
            return counts
        time.sleep(0.05)


def _sample(exposition: str, pattern: str) -> float:
    match = re.search(rf"^{pattern} (\S+)$", exposition, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_a_canary_and_an_agreeing_shadow(store: Path, tmp_path: Path) -> None:
    settings = {"APP_CANARY": "other:0.25", "APP_SHADOW": "twin"}
    with serving(store, tmp_path / "server.log", **settings) as client:
        answers = [
            client.post("/predict", json={"text": TEXTS[i % len(TEXTS)]}).json() for i in range(400)
        ]
        named = [
            client.post("/predict", json={"text": text, "model": "default"}).json()
            for text in TEXTS
        ]
        streams = [client.post("/stream", json={"text": "the food was "}).json() for _ in range(20)]
        by_default = sum(answer["model"]["name"] == "default" for answer in answers)
        total = by_default + len(named)
        counts = shadow_counts(client, "twin", total)
        exposition = client.get("/metrics").text
    canaried = sum(answer["model"]["name"] == "other" for answer in answers)
    assert canaried + by_default == 400
    assert 60 <= canaried <= 140  # Binomial(400, 0.25): 100 give or take 4.6 deviations
    assert _sample(exposition, r'rnn_sentiment_canary_requests_total\{model="other"\}') == canaried
    assert {answer["model"]["name"] for answer in named} == {"default"}
    assert {stream["model"]["name"] for stream in streams} == {"default"}
    # Every text the default answered, named or not, and only those, agrees with its twin.
    assert counts == {"agree": total, "disagree": 0, "dropped": 0, "failed": 0}
    latency = r'rnn_sentiment_shadow_prediction_duration_seconds_count\{model="twin"\}'
    assert _sample(exposition, latency) == total


def test_a_shadow_with_other_weights_disagrees(store: Path, tmp_path: Path) -> None:
    with serving(store, tmp_path / "server.log", APP_SHADOW="other") as client:
        mine = [client.post("/predict", json={"text": text}).json() for text in TEXTS]
        batch = client.post("/predict", json={"texts": TEXTS}).json()
        theirs = [
            client.post("/predict", json={"text": text, "model": "other"}).json() for text in TEXTS
        ]
        counts = shadow_counts(client, "other", 2 * len(TEXTS))
    assert {answer["model"]["name"] for answer in mine} == {"default"}
    assert batch["model"]["name"] == "default"
    differ = sum(a["label"] != b["label"] for a, b in zip(mine, theirs, strict=True))
    assert differ > 0
    assert counts == {
        "agree": 2 * (len(TEXTS) - differ),
        "disagree": 2 * differ,
        "dropped": 0,
        "failed": 0,
    }


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("APP_CANARY", "other", "expected NAME:FRACTION, e.g. candidate:0.1"),
        ("APP_CANARY", "other:1.5", "the fraction '1.5' is not a number above 0 and at most 1"),
        (
            "APP_CANARY",
            "nope:0.1",
            "no model named 'nope' is served (served: default, other, twin)",
        ),
        ("APP_SHADOW", "nope", "no model named 'nope' is served (served: default, other, twin)"),
        ("APP_SHADOW", "default", "names the default model ('default')"),
    ],
)
def test_a_bad_candidate_setting_refuses_to_start_in_one_line(
    store: Path, variable: str, value: str, message: str
) -> None:
    result = subprocess.run(
        [str(PYTHON), "-m", "app"],
        cwd=REPO,
        env=store_env(store, 0, **{variable: value}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"rnn-sentiment: invalid setting {variable}: ")
    assert message in line
