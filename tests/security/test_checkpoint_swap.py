"""A deploy racing a reload: the model link flips while a real server is loading through it.

The documented hot swap points `APP_MODEL_DIR` at a symlink and flips it to a new version
directory. Here the link flips between two valid versions as fast as it can while an operator
thread keeps calling POST /admin/reload and clients keep asking /predict and /model. Whatever
moment a flip lands at (before, during or after a load), the server must serve one verified
version whole: every answer names one of the two, and carries that version's card and that
version's predictions, never another's; nothing fails and nothing is logged as an error.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.app.test_server import free_port, running, server_env, wait_ready
from tests.conftest import build_checkpoint
from training.checkpoint import Checkpoint, load_checkpoint

pytestmark = pytest.mark.slow

ADMIN_KEY = "admin-key-for-swap-test-0123"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
TEXT = "What a wonderful film"
RELOADS = 30


def point(link: Path, target: str) -> None:
    """Flip `link` to `target` atomically (a new link renamed over the old one)."""
    staging = link.with_name(link.name + ".new")
    staging.unlink(missing_ok=True)
    staging.symlink_to(target)
    staging.replace(link)  # rename(2): atomic


@dataclass
class Recorder:
    """What the background threads saw; each problem as a readable line."""

    problems: list[str] = field(default_factory=list)
    versions: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)

    def saw(self, version: str) -> None:
        with self.lock:
            self.versions[version] += 1


def flip_continuously(link: Path, targets: tuple[str, str], halt: threading.Event) -> int:
    flips = 0
    while not halt.is_set():
        point(link, targets[flips % 2])
        flips += 1
        time.sleep(0.001)
    return flips


def predict_continuously(
    base_url: str,
    expected: dict[str, dict[str, float]],
    record: Recorder,
    halt: threading.Event,
) -> None:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        while not halt.is_set():
            response = client.post("/predict", json={"text": TEXT})
            if response.status_code != 200:
                record.problem(f"/predict {response.status_code}: {response.text}")
                continue
            body = response.json()
            version = body["model"]["version"]
            if version not in expected:
                record.problem(f"/predict named {version}, not one of {sorted(expected)}")
                continue
            record.saw(version)
            if body["probabilities"] != pytest.approx(expected[version], abs=1e-6):
                record.problem(
                    f"/predict from {version} answered {body['probabilities']}, "
                    f"that version answers {expected[version]}"
                )


def check_model_continuously(
    base_url: str, versions: dict[str, Checkpoint], record: Recorder, halt: threading.Event
) -> None:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        while not halt.is_set():
            response = client.get("/model")
            if response.status_code != 200:
                record.problem(f"/model {response.status_code}: {response.text}")
                continue
            body = response.json()
            checkpoint = versions.get(body["version"])
            if checkpoint is None:
                record.problem(f"/model named {body['version']}, not one of {sorted(versions)}")
            elif body["card"] != checkpoint.card or body["sha256"] != checkpoint.sha256:
                record.problem(
                    f"/model names {body['version']} with card {body['card']} "
                    f"and sha256 {body['sha256']}"
                )


def test_flipping_the_model_link_during_reloads_serves_only_whole_versions(
    tmp_path: Path,
) -> None:
    store = tmp_path / "store"
    # Same architecture, different weights and cards: a mix of the two would load silently,
    # so only the answers' contents can tell it apart.
    directories = {
        name: build_checkpoint(store / name, "lstm", seed) for name, seed in (("v1", 1), ("v2", 2))
    }
    loaded = {name: load_checkpoint(path) for name, path in directories.items()}
    versions = {checkpoint.version: checkpoint for checkpoint in loaded.values()}
    assert len(versions) == 2
    link = store / "current"
    link.symlink_to("v1")

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = server_env(link, port, APP_ADMIN_KEYS=ADMIN_KEY, APP_ACCESS_LOG="false")
    log = tmp_path / "server.log"
    with running([sys.executable, "-m", "app"], env, log) as process:
        wait_ready(base_url, process, log)
        with httpx.Client(base_url=base_url, timeout=60) as client:
            # Each version's own answer to TEXT, from the server with that version alone.
            expected: dict[str, dict[str, float]] = {}
            for name in ("v2", "v1"):
                point(link, name)
                reloaded = client.post("/admin/reload", headers=ADMIN)
                assert reloaded.status_code == 200, reloaded.text
                answer = client.post("/predict", json={"text": TEXT}).json()
                assert answer["model"]["version"] == loaded[name].version
                expected[loaded[name].version] = answer["probabilities"]
            first, second = expected.values()
            assert first != pytest.approx(second, abs=1e-4)  # else the check proves nothing

            halt = threading.Event()
            record = Recorder()
            flips: list[int] = []
            threads = [
                threading.Thread(
                    target=lambda: flips.append(flip_continuously(link, ("v2", "v1"), halt))
                ),
                threading.Thread(
                    target=predict_continuously, args=(base_url, expected, record, halt)
                ),
                threading.Thread(
                    target=check_model_continuously, args=(base_url, versions, record, halt)
                ),
            ]
            for thread in threads:
                thread.start()
            outcomes: Counter[str] = Counter()
            try:
                for _ in range(RELOADS):
                    response = client.post("/admin/reload", headers=ADMIN)
                    if response.status_code != 200:
                        record.problem(f"/admin/reload {response.status_code}: {response.text}")
                        continue
                    body = response.json()
                    outcomes[body["status"]] += 1
                    if body["model"]["version"] not in versions:
                        record.problem(f"/admin/reload named {body['model']}")
            finally:
                halt.set()
                for thread in threads:
                    thread.join(timeout=60)

            assert not record.problems, record.problems[:5]
            assert flips
            assert flips[0] > RELOADS  # the link flipped while reloads were running
            assert outcomes["reloaded"] > 0, outcomes
            assert set(record.versions) == set(versions), record.versions

            # The link at rest: a reload serves what it names, in every part.
            point(link, "v2")
            client.post("/admin/reload", headers=ADMIN).raise_for_status()
            model = client.get("/model").json()
            assert model["version"] == loaded["v2"].version
            assert model["card"] == loaded["v2"].card
        assert process.poll() is None

    output = log.read_text()
    assert "Traceback" not in output
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert [line for line in lines if line["level"] in {"ERROR", "CRITICAL"}] == []
    # Each reload logs the version directory it read and the version it found there.
    reloads = [line for line in lines if line["message"] == "reloaded"]
    assert len(reloads) >= outcomes["reloaded"]
    by_directory = {str(path.resolve()): loaded[name].version for name, path in directories.items()}
    for line in reloads:
        assert by_directory[line["model_dir"]] == line["version"], line
