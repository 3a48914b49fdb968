"""The alert rules, their unit tests, the scrape configuration and the dashboard, checked by
Prometheus' own tool (`promtool`, from `scripts/install-prometheus.sh`)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.monitoring.conftest import DASHBOARD, RULE_TESTS, RULES, SCRAPE_CONFIG


def run(promtool: str, *args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_rules_are_valid(promtool: str) -> None:
    output = run(promtool, "check", "rules", str(RULES))
    assert "SUCCESS" in output


def test_each_alert_fires_on_its_unit_test_and_stays_quiet_on_normal_series(
    promtool: str,
) -> None:
    output = run(promtool, "test", "rules", str(RULE_TESTS))
    assert "SUCCESS" in output


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }
    fired = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    quiet = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if not case.get("exp_alerts")
    }
    assert len(alerts) >= 6
    assert alerts == fired == quiet


def test_a_broken_rule_fails_its_unit_test(promtool: str, tmp_path: Path) -> None:
    """The unit tests can fail: with the drift threshold raised past any share, the drift
    alert no longer fires and promtool says so."""
    rules = RULES.read_text()
    assert ") > 0.15\n" in rules
    (tmp_path / RULES.name).write_text(rules.replace(") > 0.15\n", ") > 0.99\n"))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    done = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "RnnSentimentLabelDrift" in done.stdout + done.stderr


def test_the_scrape_configuration_is_valid(promtool: str, tmp_path: Path) -> None:
    for source in (SCRAPE_CONFIG, RULES):
        shutil.copy(source, tmp_path / source.name)
    (tmp_path / "rnn-sentiment-metrics-key").write_text("a-metrics-key\n")
    output = run(promtool, "check", "config", SCRAPE_CONFIG.name, cwd=tmp_path)
    assert "SUCCESS" in output


def test_the_dashboard_is_a_grafana_dashboard_over_one_prometheus() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "rnn-sentiment"
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    panels = [panel for panel in dashboard["panels"] if panel["type"] != "row"]
    assert len(panels) >= 12
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), panel["title"]
