"""The compose scale-out checks run by .ci/scale.sh against replicas behind nginx.

Standard library only (it runs on the CI host's python3). Every request goes to the load
balancer published on 127.0.0.1; every loop is bounded in count and in time.

    python3 .ci/scale_check.py URL LB_IP ID=IP [ID=IP ...]

0. edge: /metrics is not served through nginx; a client's own X-Forwarded-For is replaced by
   nginx, and the replica that answers logs the address nginx saw (it trusts nginx, LB_IP,
   and no one else), neither the forged one nor nginx's own;
1. spread: sequential /predict calls reach every replica (the `X-Served-By` header names
   the replica address nginx used) in a fair share;
2. stream: one /stream text read piece by piece, its pieces answered by different replicas,
   ends with the same prediction as /predict of the whole text;
3. stop: under a bounded load of concurrent clients, `docker stop` of one replica (SIGTERM:
   uvicorn finishes what it has in flight) and then `docker kill` of another (SIGKILL: its
   in-flight requests die with it). Only requests in flight at the killed replica may fail,
   so failures are bounded by the number of clients; nginx retries the rest elsewhere.
   Afterwards no request is served by a stopped replica.
"""

from __future__ import annotations

import http.client
import json
import math
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

CLIENTS = 4  # concurrent clients during the stop checks
PHASE_SECONDS = 6.0  # load before and after each stop
# A safety bound only: a client stops when its phase ends (`stop` event). It must never run out
# before that, or the requests after a stop would be too few to check (1,500 per client ran out
# within the phases on a quiet machine: 6,000 requests, only 720 of them after the stop).
MAX_REQUESTS_PER_CLIENT = 50_000
TEXTS = [
    "I absolutely loved this movie, the acting was wonderful.",
    "The food was cold and the waiter was rude. Never again.",
    "The package arrived on Tuesday.",
    "Not bad at all, better than I expected!",
    "Service was slow but the pasta was great",
]
# A documentation address (RFC 5737): what a client would forge to pass as someone else.
FORGED_CLIENT = "203.0.113.7"
LOG_WAIT_SECONDS = 10.0
STREAM_TEXT = (
    "The hotel room was small and the street was noisy, but the staff were lovely "
    "and breakfast was the best I have had in years."
)


@dataclass
class Outcome:
    started: float
    finished: float
    status: int  # 0: no HTTP answer at all
    served_by: str
    error: str = ""


def call(
    base: str,
    path: str,
    body: Any = None,
    timeout: float = 30,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - main() allows http://127.0.0.1 only
        base + path, data=data, headers={"content-type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, dict(response.headers), json.load(response)
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = raw.decode(errors="replace")
        return error.code, dict(error.headers), payload


def last_replica(served_by: str) -> str:
    """The address that answered: the last of those nginx tried."""
    return served_by.rsplit(",", maxsplit=1)[-1].strip()


def access_log_line(container: str, request_id: str) -> dict[str, Any]:
    """The replica's JSON access-log line for `request_id` (waits for it to be written)."""
    deadline = time.monotonic() + LOG_WAIT_SECONDS
    while True:
        # (docker from PATH, with the engine .ci/scale.sh started; ids from `docker compose ps`)
        logs = subprocess.run(  # noqa: S603
            ["docker", "logs", container],  # noqa: S607
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        for line in (logs.stdout + logs.stderr).splitlines():
            if request_id in line and line.startswith("{"):
                record: dict[str, Any] = json.loads(line)
                if record.get("request_id") == request_id and "client" in record:
                    return record
        if time.monotonic() > deadline:
            sys.exit(f"edge: no access-log line for request {request_id} in {container[:12]}")
        time.sleep(0.25)


def check_edge(base: str, lb_address: str, replicas: dict[str, str]) -> None:
    status, _, payload = call(base, "/metrics")
    code = payload.get("error", {}).get("code") if isinstance(payload, dict) else None
    if (status, code) != (404, "not_found"):
        sys.exit(f"edge: /metrics through nginx answered {status} {payload!r}; expected 404")
    request_id = f"scale-check-{uuid.uuid4().hex}"
    status, headers, payload = call(
        base,
        "/predict",
        {"text": TEXTS[0]},
        headers={"X-Forwarded-For": FORGED_CLIENT, "X-Request-ID": request_id},
    )
    if status != 200:
        sys.exit(f"edge: /predict answered {status}: {payload}")
    by_address = {f"{ip}:8000": container for container, ip in replicas.items()}
    served_by = last_replica(headers.get("X-Served-By", ""))
    if served_by not in by_address:
        sys.exit(f"edge: answered by {served_by!r}, not one of {sorted(by_address)}")
    client = access_log_line(by_address[served_by], request_id)["client"]
    print(
        f"  edge: /metrics 404 through nginx; a forged X-Forwarded-For {FORGED_CLIENT} was "
        f"logged by the replica as client {client} (nginx is {lb_address})"
    )
    if client == FORGED_CLIENT:
        sys.exit("edge: the replica believed the client's own X-Forwarded-For")
    if client == lb_address:
        sys.exit("edge: the replica logged nginx as the client: it does not trust nginx")


def check_spread(base: str, replicas: dict[str, str]) -> None:
    count = 30 * len(replicas)
    served: Counter[str] = Counter()
    for number in range(count):
        status, headers, payload = call(base, "/predict", {"text": TEXTS[number % len(TEXTS)]})
        if status != 200:
            sys.exit(f"spread: /predict answered {status}: {payload}")
        served[last_replica(headers.get("X-Served-By", ""))] += 1
    expected = {f"{ip}:8000" for ip in replicas.values()}
    print(f"  spread: {count} sequential /predict calls -> {dict(sorted(served.items()))}")
    if set(served) != expected:
        sys.exit(f"spread: answered by {sorted(served)}, replicas are {sorted(expected)}")
    fair = count / len(replicas)
    if min(served.values()) < fair / 2:
        sys.exit(f"spread: uneven (fair share {fair:.0f} each): {dict(served)}")


def check_stream(base: str) -> None:
    pieces = [STREAM_TEXT[start : start + 12] for start in range(0, len(STREAM_TEXT), 12)]
    state = None
    served = []
    final: dict[str, Any] = {}
    for number, piece in enumerate(pieces):
        body = {"text": piece, "state": state, "final": number == len(pieces) - 1}
        status, headers, payload = call(base, "/stream", body)
        if status != 200:
            sys.exit(f"stream: piece {number} answered {status}: {payload}")
        served.append(last_replica(headers.get("X-Served-By", "")))
        state, final = payload.get("state"), payload
    status, _, whole = call(base, "/predict", {"text": STREAM_TEXT})
    if status != 200:
        sys.exit(f"stream: /predict answered {status}: {whole}")
    status, _, card = call(base, "/model")
    if status != 200:
        sys.exit(f"stream: /model answered {status}: {card}")
    # A stream reads in float32; /predict may run in bfloat16: the service says how close.
    tolerance = card["inference"]["stream_tolerance"]
    streamed = final["prediction"]
    same = streamed["label"] == whole["label"] and all(
        math.isclose(streamed["probabilities"][label], p, rel_tol=0, abs_tol=tolerance)
        for label, p in whole["probabilities"].items()
    )
    print(
        f"  stream: {len(pieces)} pieces answered by {len(set(served))} replicas "
        f"({Counter(served).most_common()}); streamed {streamed['label']} "
        f"{streamed['score']:.6f}, /predict {whole['label']} {whole['score']:.6f}"
    )
    if len(set(served)) < 2:
        sys.exit("stream: every piece went to one replica; the check proves nothing")
    if not same:
        sys.exit(f"stream: {streamed} differs from /predict {whole}")


def load(base: str, stop: threading.Event, outcomes: list[Outcome], lock: threading.Lock) -> None:
    for number in range(MAX_REQUESTS_PER_CLIENT):
        if stop.is_set():
            return
        started = time.monotonic()
        try:
            status, headers, _ = call(base, "/predict", {"text": TEXTS[number % len(TEXTS)]}, 20)
            outcome = Outcome(started, time.monotonic(), status, headers.get("X-Served-By", ""))
        except (OSError, http.client.HTTPException, ValueError) as error:
            # No complete answer: refused or reset, or cut off mid-body (a killed replica had
            # sent its headers already, so nginx could not retry it elsewhere).
            outcome = Outcome(started, time.monotonic(), 0, "", repr(error))
        with lock:
            outcomes.append(outcome)


def check_stop(base: str, replicas: dict[str, str], victim: str, how: str) -> None:
    """Bounded load; `docker {how}` the victim mid-way; failures <= in-flight requests."""
    outcomes: list[Outcome] = []
    lock, stop = threading.Lock(), threading.Event()
    clients = [
        threading.Thread(target=load, args=(base, stop, outcomes, lock), daemon=True)
        for _ in range(CLIENTS)
    ]
    for client in clients:
        client.start()
    time.sleep(PHASE_SECONDS)
    stop_started = time.monotonic()
    # No restart policy for the victim: it must stay down for the rest of the check.
    # (docker from PATH, with the engine .ci/scale.sh started; ids from `docker compose ps`)
    update = ["docker", "update", "--restart=no", victim]
    subprocess.run(update, check=True, capture_output=True, timeout=60)  # noqa: S603
    command = ["docker", how, victim] if how == "kill" else ["docker", "stop", "-t", "15", victim]
    subprocess.run(command, check=True, capture_output=True, timeout=60)  # noqa: S603
    stopped = time.monotonic()
    time.sleep(PHASE_SECONDS)
    stop.set()
    for client in clients:
        client.join(timeout=30)

    victim_address = f"{replicas[victim]}:8000"
    failed = [o for o in outcomes if o.status != 200]
    after = [o for o in outcomes if o.started > stopped]
    served_after = Counter(last_replica(o.served_by) for o in after if o.status == 200)
    retried = sum(1 for o in outcomes if "," in o.served_by)
    slowest = max((o.finished - o.started for o in outcomes), default=0.0)
    print(
        f"  {how} {victim[:12]} ({victim_address}) under {CLIENTS} clients: "
        f"{len(outcomes)} requests, {len(failed)} failed, {retried} retried on another "
        f"replica, `docker {how}` took {stopped - stop_started:.1f}s, slowest request "
        f"{slowest:.2f}s; after it: {dict(served_after)}"
    )
    for outcome in failed[:10]:
        print(f"    failed: {outcome}")
    if len(outcomes) >= CLIENTS * MAX_REQUESTS_PER_CLIENT:
        sys.exit(f"{how}: the clients ran out of requests before the phase ended")
    if len(failed) > CLIENTS:
        sys.exit(f"{how}: {len(failed)} requests failed; at most {CLIENTS} were in flight")
    if victim_address in served_after:
        sys.exit(f"{how}: {victim_address} still answered after it was stopped")
    if sum(served_after.values()) < CLIENTS:
        sys.exit(f"{how}: almost nothing was served after the stop: {dict(served_after)}")


def main() -> None:
    base, lb_address = sys.argv[1], sys.argv[2]
    if not base.startswith("http://127.0.0.1:"):
        sys.exit(f"{base}: only the balancer published on 127.0.0.1 is a target")
    replicas = dict(pair.split("=", 1) for pair in sys.argv[3:])  # container id -> address
    if len(replicas) < 3:
        sys.exit(f"need 3 or more replicas, got {replicas}")
    status, _, ready = call(base, "/readyz")
    if status != 200:
        sys.exit(f"/readyz through the balancer: {status} {ready}")
    check_edge(base, lb_address, replicas)
    check_spread(base, replicas)
    check_stream(base)
    first, second = list(replicas)[:2]
    check_stop(base, replicas, first, "stop")
    check_stop(base, {k: v for k, v in replicas.items() if k != first}, second, "kill")


if __name__ == "__main__":
    main()
