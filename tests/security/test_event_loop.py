"""Hostile requests cannot stall a worker's event loop: while they are in flight, a normal
/predict of one short text is still answered within `PROBE_LIMIT_S`.

Every route that reads text tokenizes it, and tokenizing costs several microseconds per
character for text made of punctuation or of characters the tokenizer skips; a /predict
request may carry 64 texts of 2,000 characters, and a pass over 64 long texts runs for
hundreds of milliseconds with a full-size model. Done on the event loop, that work makes
every other request of the worker wait for it. The attack here keeps requests of both kinds
outstanding on every text route, from several threads: texts within the limits that are slow
to tokenize (and, at 250 tokens, slow to run), and texts over the token limit, which only
tokenizing can tell.

Timed, against a real server on a machine that may be busy, hence: the probe waits until
every attacker has a request outstanding before it is sent, so the attack is in flight, and
the limit leaves a margin of several times what the loop should be held for at once (about
50 ms), while a loop held by the attack's work holds a probe for seconds. Two models: the
tiny test checkpoint (tokenizing dominates) and one of the default model's size (passes
matter too).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.conftest import CORPUS, LABELS
from tests.security.conftest import Server, StartServer
from training.checkpoint import save_checkpoint
from training.model import ModelConfig, SentimentRNN
from training.tokenizer import Vocabulary, tokenize

pytestmark = pytest.mark.slow

# Over the token limit (2,000 tokens), which only tokenizing tells.
INVALID = "(" * 2000
# Within the limits (250 tokens of 256), 2,000 characters: at each of the 1,750 invisible
# characters the tokenizer tries every pattern before skipping it.
VALID = ("\u200b" * 7 + "a") * 250
PROBE_BODY = json.dumps({"text": "I love this film, it is great"}).encode()
PROBE_LIMIT_S = 0.25
PROBES = 12
JSON_HEADERS = {"content-type": "application/json"}


@dataclass
class Attacker:
    """One thread sending `body` to `path` again as soon as each answer arrives."""

    name: str
    path: str
    body: dict[str, Any]
    did_work: int  # the status that shows the server tokenized (and ran) the whole request
    also: frozenset[int] = frozenset({503})  # shed under the load: allowed, but not enough
    statuses: Counter[int] = field(default_factory=Counter)
    outstanding: bool = False
    thread: threading.Thread | None = None

    def run(self, base_url: str, stop: threading.Event) -> None:
        content = json.dumps(self.body).encode()
        with httpx.Client(base_url=base_url, timeout=120) as client:
            while not stop.is_set():
                self.outstanding = True
                try:
                    response = client.post(self.path, content=content, headers=JSON_HEADERS)
                except httpx.TransportError:
                    if stop.is_set():  # the server is going away at the end of the test
                        return
                    raise
                finally:
                    self.outstanding = False
                self.statuses[response.status_code] += 1


@dataclass
class SocketAttacker(Attacker):
    """/stream/ws: one message after another, under the connection's rate limit; a refusal
    (which closes the connection) counts as shed, and the next message opens a new one."""

    def run(self, base_url: str, stop: threading.Event) -> None:
        message = json.dumps(self.body)
        url = base_url.replace("http://", "ws://", 1) + self.path
        while not stop.is_set():
            try:
                with connect(url, open_timeout=30, close_timeout=1) as socket:
                    while not stop.is_set():
                        self.outstanding = True
                        try:
                            socket.send(message)
                            answer = json.loads(socket.recv(timeout=120))
                        finally:
                            self.outstanding = False
                        self.statuses[200 if "state" in answer else 503] += 1
                        time.sleep(0.06)  # 20 messages a second are allowed on average
            except (ConnectionClosed, OSError):
                if stop.is_set():  # the server is going away at the end of the test
                    return
                self.statuses[503] += 1


def attackers() -> list[Attacker]:
    explain = {"methods": ["integrated_gradients", "occlusion"], "steps": 32}
    return [
        *[
            Attacker(f"predict-invalid-{n}", "/predict", {"texts": [INVALID] * 64}, 422)
            for n in range(2)
        ],
        *[
            Attacker(f"predict-valid-{n}", "/predict", {"texts": [VALID] * 64}, 200)
            for n in range(2)
        ],
        Attacker("tokenize", "/tokenize", {"text": INVALID}, 200),
        Attacker("hidden-states", "/hidden-states", {"text": VALID}, 200),
        Attacker("hidden-states-invalid", "/hidden-states", {"text": INVALID}, 422),
        Attacker("explain", "/explain", {"text": VALID, **explain}, 200),
        Attacker("stream", "/stream", {"text": VALID, "final": True}, 200),
        Attacker("stream-invalid", "/stream", {"text": INVALID, "final": True}, 422),
        SocketAttacker("stream-ws", "/stream/ws", {"text": VALID, "final": True}, 200),
    ]


@contextmanager
def under_attack(server: Server) -> Iterator[list[Attacker]]:
    """The attack running against `server`; every attacker has been answered at least once
    by the time the block has ended (its threads finish their last request)."""
    stop = threading.Event()
    army = attackers()
    for attacker in army:
        attacker.thread = threading.Thread(
            target=attacker.run, args=(server.base_url, stop), name=attacker.name, daemon=True
        )
        attacker.thread.start()
    try:
        yield army
    finally:
        stop.set()
        for attacker in army:
            assert attacker.thread is not None
            attacker.thread.join(timeout=180)
    assert not [attacker.name for attacker in army if attacker.thread.is_alive()]


def wait_until_all_outstanding(army: list[Attacker], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not all(attacker.outstanding for attacker in army):
        assert time.monotonic() < deadline, "the attackers never had requests out together"
        time.sleep(0.001)


def probe(client: httpx.Client) -> float:
    """Seconds for one short /predict."""
    started = time.perf_counter()
    response = client.post("/predict", content=PROBE_BODY, headers=JSON_HEADERS)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    return elapsed


@pytest.fixture(scope="module")
def full_size(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint with the default model's shape (random weights): its passes cost what the
    default model's do, which the tiny test model's do not."""
    vocab = Vocabulary.build({token.norm: 1 for text in CORPUS for token in tokenize(text)})
    config = ModelConfig(
        vocab_size=len(vocab),
        num_labels=len(LABELS),
        embedding_dim=160,
        hidden_size=128,
        num_layers=1,
        bidirectional=False,
        dropout=0.0,
        cell="lstm",
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = SentimentRNN(config).eval()
    card = {
        "name": "full-size-lstm",
        "data": {"source": "tests/security/test_event_loop.py", "sha256": "0" * 64},
        "metrics": {"test": {"accuracy": 0.333, "macro_f1": 0.25}},
        "seed": 0,
    }
    directory = tmp_path_factory.mktemp("full-size")
    save_checkpoint(directory, model=model, labels=LABELS, vocab=vocab, card=card)
    return directory


@pytest.mark.parametrize("size", ["tiny", "full-size"])
def test_a_short_prediction_is_answered_while_hostile_requests_are_in_flight(
    start_server: StartServer, full_size: Path, size: str
) -> None:
    env = {"APP_MODEL_DIR": str(full_size)} if size == "full-size" else {}
    server = start_server(**env)
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        probe(client)  # the connection open, the path warm
        times: list[float] = []
        with under_attack(server) as army:
            time.sleep(1.0)  # the first requests are being read, tokenized, computed
            for _ in range(PROBES):
                wait_until_all_outstanding(army)
                times.append(probe(client))
                time.sleep(0.05)
    # The attack was real: every attacker's requests were read to the end at least once (422
    # for texts over the limit, 200 for the others) and none failed otherwise.
    for attacker in army:
        assert attacker.statuses[attacker.did_work] > 0, (attacker.name, attacker.statuses)
        assert set(attacker.statuses) <= {attacker.did_work, *attacker.also}, (
            attacker.name,
            attacker.statuses,
        )
    assert max(times) < PROBE_LIMIT_S, [round(seconds, 3) for seconds in times]
    assert "Traceback" not in server.log.read_text()
