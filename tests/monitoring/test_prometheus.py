"""A real Prometheus scrapes a real `python -m app` (two workers, /metrics behind a key) with
the shipped scrape configuration and alert rules, while the service answers a short load;
the query API then returns the predictions counted by label, exactly as the answers gave them.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.app.test_server import free_port, running, server_env, wait_ready
from tests.conftest import CORPUS, LABELS
from tests.monitoring.conftest import RULES, SCRAPE_CONFIG, TEST_SPLIT

pytestmark = pytest.mark.slow

BY_LABEL = 'sum by (label) (rnn_sentiment_predictions_total{model="default"})'


def scrape_config(directory: Path, target: str, key: str) -> Path:
    """The shipped prometheus.yml with its rules, scraping `target` every second."""
    config: dict[str, Any] = yaml.safe_load(SCRAPE_CONFIG.read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [target]}]
    credentials = directory / job["authorization"]["credentials_file"]
    credentials.write_text(key + "\n")
    (directory / RULES.name).write_text(RULES.read_text())
    path = directory / SCRAPE_CONFIG.name
    path.write_text(yaml.safe_dump(config))
    return path


def query(base_url: str, expression: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{base_url}/api/v1/query", params={"query": expression}, timeout=10)
    response.raise_for_status()
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def by_label(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    return {series["metric"][label]: float(series["value"][1]) for series in result}


def test_prometheus_scrapes_the_service_and_counts_predictions_by_label(
    monitored_checkpoint: Path, prometheus: str, tmp_path: Path
) -> None:
    key = secrets.token_urlsafe(24)
    app_port, prometheus_port = free_port(), free_port()
    app_url = f"http://127.0.0.1:{app_port}"
    prometheus_url = f"http://127.0.0.1:{prometheus_port}"
    config = scrape_config(tmp_path, f"127.0.0.1:{app_port}", key)
    env = server_env(monitored_checkpoint, app_port, WORKERS="2", APP_METRICS_KEYS=key)
    command = [
        prometheus,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{prometheus_port}",
    ]
    app_log, prometheus_log = tmp_path / "app.log", tmp_path / "prometheus.log"
    with (
        running([".venv/bin/python", "-m", "app"], env, app_log) as app,
        running(command, {"PATH": "/usr/bin:/bin"}, prometheus_log) as server,
    ):
        wait_ready(app_url, app, app_log)
        assert httpx.get(f"{app_url}/metrics", timeout=5).status_code == 401
        labelled: Counter[str] = Counter()
        with httpx.Client(base_url=app_url, timeout=10) as client:
            for round_ in range(20):
                texts = [f"{text} {round_}" for text in CORPUS]
                response = client.post("/predict", json={"texts": texts})
                assert response.status_code == 200, response.text
                labelled.update(p["label"] for p in response.json()["predictions"])
        assert sum(labelled.values()) == 20 * len(CORPUS)

        # Every label the model has is a series, those it never chose at 0.
        expected = {label: float(labelled[label]) for label in LABELS}
        deadline = time.monotonic() + 60
        counted: dict[str, float] = {}
        while counted != expected and time.monotonic() < deadline:
            if server.poll() is not None:
                pytest.fail(f"prometheus exited:\n{prometheus_log.read_text()}")
            time.sleep(0.5)
            with contextlib.suppress(httpx.TransportError):  # not listening yet
                counted = by_label(query(prometheus_url, BY_LABEL), "label")
        assert counted == expected, (
            app_log.read_text()[-2000:],
            prometheus_log.read_text()[-2000:],
        )

        up = query(prometheus_url, 'up{job="rnn-sentiment"}')
        assert [float(series["value"][1]) for series in up] == [1.0]  # the key was accepted
        total = sum(TEST_SPLIT.values())
        shares = by_label(query(prometheus_url, "rnn_sentiment_test_label_share"), "label")
        assert shares == pytest.approx({label: n / total for label, n in TEST_SPLIT.items()})
        observed = by_label(
            query(prometheus_url, "sum by (model) (rnn_sentiment_text_tokens_count)"), "model"
        )
        assert observed == {"default": float(sum(labelled.values()))}

        # The shipped rules load and evaluate against the real series without error.
        evaluated = evaluated_rules(prometheus_url)
        source = RULES.read_text()
        assert len(evaluated) == source.count("- alert:") + source.count("- record:")
        assert [
            (rule["name"], rule.get("lastError")) for rule in evaluated if rule["health"] != "ok"
        ] == []
        # A short load of a random model may leave the drift alert pending; nothing fires.
        assert {rule["name"] for rule in evaluated if rule.get("state") == "firing"} == set()


def evaluated_rules(base_url: str, timeout_s: float = 30) -> list[dict[str, Any]]:
    """Every rule Prometheus loaded, once each has been evaluated at least once."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = httpx.get(f"{base_url}/api/v1/rules", timeout=10)
        groups = response.json()["data"]["groups"]
        rules: list[dict[str, Any]] = [rule for group in groups for rule in group["rules"]]
        if rules and not any(rule["lastEvaluation"].startswith("0001") for rule in rules):
            return rules
        assert time.monotonic() < deadline, rules
        time.sleep(0.5)
