#!/usr/bin/env bash
# Container check, called by .ci/run after `make test`. Runs as root with no stdin.
#
#  1. static: hadolint, `docker compose config -q` (the Go binary), the compose-spec schema;
#  2. a real Docker engine (Debian's docker.io) started under a temp dir, no registry needed;
#  3. a stand-in for python:3.11-slim built with debootstrap (Debian's Python 3.11 under /usr;
#     cached as a rootfs tarball in $CACHE_DIR, so later runs skip this step);
#  4. the image built through compose + deploy/compose.ci.yaml (host network, torch from the
#     local CPU wheel copied into wheels/), run with a read-only root filesystem until its
#     HEALTHCHECK says healthy; it must run as non-root, carry no secrets
#     (.ci/image_secrets.py) and answer /predict exactly as the local service (`make serve`)
#     does on a fixed set of texts;
#     The image's baked store (/models) serves one model, `default`;
#  5. `docker compose up -d --wait` (a store of two models mounted read-only: the shipped
#     checkpoint as `default` and as `second`; APP_STREAM_SECRET from the environment as an
#     operator would pass it), a smoke call, /models listing both ready, /predict naming
#     `second` answered by it (with the same numbers: the same weights), a /stream read piece
#     by piece over new connections (either worker continues it), SIGHUP (both workers
#     reload both models, the service keeps answering), `docker compose down`.
#
# An image built on the stand-in proves the Dockerfile, not the official base: never publish it.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

IMAGE=rnn-sentiment:ci
PROJECT=rnn-sentiment-ci
CONTAINER=rnn-sentiment-ci
HEALTHY_WITHIN=120
# The second model deploy/compose.ci.yaml mounts into the store beside `default`.
SECOND_MODEL=second
MODELS_SERVED=2
COMPARE_TEXTS=(
    "I absolutely loved this movie, the acting was wonderful."
    "The food was cold and the waiter was rude. Never again."
    "The package arrived on Tuesday."
    "Not bad at all, better than I expected!"
    "This phone is a complete waste of money."
    "meh"
    "Service was slow but the pasta was great"
    "I can't say I enjoyed it."
)

CI_NAME=container
# shellcheck source=.ci/lib.sh
source .ci/lib.sh
ci_init

COMPOSE=(-p "$PROJECT" -f docker-compose.yml -f deploy/compose.ci.yaml)
# Made up for this run, never reused: deploy/compose.ci.yaml passes it to the service, which
# must then sign stream states with it (no value ever sits in a file or in the image).
APP_STREAM_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
export APP_STREAM_SECRET
SERVE_PID=""
cleanup() {
    local status=$?
    set +e
    if [[ -n $DOCKERD_PID ]]; then
        docker rm -f "$CONTAINER" >/dev/null 2>&1
        docker compose "${COMPOSE[@]}" down --volumes --timeout 5 >/dev/null 2>&1
    fi
    if [[ -n $SERVE_PID ]]; then
        kill -- "-$SERVE_PID" 2>/dev/null
        wait "$SERVE_PID" 2>/dev/null
    fi
    ci_cleanup "$status" "$W/serve.log"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. static checks --------------------------------------------------------------------------
say "static checks (hadolint, compose config, compose-spec schema)"
ci_tools
"$W/tools/bin/hadolint" --failure-threshold warning Dockerfile
docker compose -f docker-compose.yml config -q
docker compose "${COMPOSE[@]}" config -q
"$W/tools/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml deploy/compose.ci.yaml

# --- 2. engine ---------------------------------------------------------------------------------
ci_engine_start

# --- 3. python:3.11-slim stand-in --------------------------------------------------------------
ci_standin

# --- 4. build and run the image ----------------------------------------------------------------
ci_torch_wheel
ci_build_image "$IMAGE"

CONTAINER_PORT=$(free_port)
say "docker run --read-only --tmpfs /tmp on port $CONTAINER_PORT"
RUN_START=$SECONDS
docker run -d --name "$CONTAINER" --network host --read-only --tmpfs /tmp \
    -e PORT="$CONTAINER_PORT" "$IMAGE" >/dev/null
while :; do
    health=$(docker inspect -f '{{.State.Health.Status}}' "$CONTAINER")
    [[ $health == healthy ]] && break
    if [[ $health == unhealthy || $(docker inspect -f '{{.State.Running}}' "$CONTAINER") != true ]] \
        || ((SECONDS - RUN_START > HEALTHY_WITHIN)); then
        docker logs --tail 40 "$CONTAINER" >&2
        fail "container not healthy (status: $health) after $((SECONDS - RUN_START)) s"
    fi
    sleep 0.5
done
HEALTHY_SECONDS=$((SECONDS - RUN_START))
say "healthy ${HEALTHY_SECONDS}s after docker run"

uid=$(docker exec "$CONTAINER" id -u)
[[ $uid != 0 ]] || fail "the container runs as root"
say "runs as uid $uid on a read-only root filesystem"

say "no secrets in the image (.ci/image_secrets.py: its environment and files)"
mapfile -t IMAGE_ENV < <(docker image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
docker run --rm -i --user 0 --network none --entrypoint python "$IMAGE" - "${IMAGE_ENV[@]}" \
    <.ci/image_secrets.py 2>&1 | tee -a "$W/check.log"

SERVE_PORT=$(free_port)
say "local service (make serve) on port $SERVE_PORT"
HOST=127.0.0.1 PORT=$SERVE_PORT WORKERS=1 setsid make --no-print-directory serve \
    >"$W/serve.log" 2>&1 </dev/null &
SERVE_PID=$!
python3 - "$SERVE_PORT" "$SERVE_PID" <<'EOF' 2>&1 | tee -a "$W/check.log"
import os
import sys
import time
import urllib.request

port, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 300  # a first `make serve` may still create .venv
while time.monotonic() < deadline:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2)
        sys.exit(0)
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            sys.exit("make serve exited before it was ready")
        time.sleep(0.5)
sys.exit("make serve was not ready within 300 s")
EOF

say "comparing /predict: container vs local service on ${#COMPARE_TEXTS[@]} texts"
python3 - "$CONTAINER_PORT" "$SERVE_PORT" "${COMPARE_TEXTS[@]}" <<'EOF' 2>&1 | tee -a "$W/check.log"
import json
import math
import sys
import urllib.request

container_port, local_port, texts = sys.argv[1], sys.argv[2], sys.argv[3:]
TOLERANCE = 1e-6
# Fields that describe the request rather than the answer.
VOLATILE = {"latency_ms", "elapsed_ms", "duration_ms", "request_id", "timing"}


def predict(port, body):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/predict",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def compare(a, b, where, problems):
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) - VOLATILE != set(b) - VOLATILE:
            problems.append(f"{where}: keys {sorted(a)} != {sorted(b)}")
        for key in sorted((set(a) & set(b)) - VOLATILE):
            compare(a[key], b[key], f"{where}.{key}", problems)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            compare(x, y, f"{where}[{index}]", problems)
    elif isinstance(a, float) or isinstance(b, float):
        if not (isinstance(a, int | float) and isinstance(b, int | float)) or not math.isclose(
            a, b, rel_tol=0, abs_tol=TOLERANCE
        ):
            problems.append(f"{where}: {a!r} != {b!r}")
    elif a != b:
        problems.append(f"{where}: {a!r} != {b!r}")


problems = []
bodies = [{"text": text} for text in texts] + [{"texts": texts}]
for body in bodies:
    container, local = predict(container_port, body), predict(local_port, body)
    compare(container, local, json.dumps(body)[:60], problems)
for text in texts:
    answer = predict(container_port, {"text": text})
    print(f"  {answer.get('label')!s:>9} {answer.get('score', float('nan')):.4f}  {text}")
if problems:
    print("container and local answers differ:", *problems[:20], sep="\n  ", file=sys.stderr)
    sys.exit(1)
print(f"  {len(bodies)} requests: same labels, numbers within {TOLERANCE}")
EOF
kill -- "-$SERVE_PID" 2>/dev/null || true
wait "$SERVE_PID" 2>/dev/null || true
SERVE_PID=""
say "the image's own store serves the one model it bakes"
python3 - "$CONTAINER_PORT" <<'EOF' 2>&1 | tee -a "$W/check.log"
import json
import sys
import urllib.request

with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/models", timeout=30) as response:
    models = json.load(response)["models"]
found = [(model["name"], model["status"], model["default"]) for model in models]
if found != [("default", "ready", True)]:
    sys.exit(f"the image's /models: expected only `default`, ready; got {found}")
print(f"  GET /models: {found}")
EOF
docker rm -f "$CONTAINER" >/dev/null

# --- 5. compose --------------------------------------------------------------------------------
COMPOSE_PORT=$(free_port)
say "docker compose up -d --wait (2 workers, a store of $MODELS_SERVED models mounted read-only, port $COMPOSE_PORT)"
COMPOSE_START=$SECONDS
IMAGE=$IMAGE HOST_PORT=$COMPOSE_PORT docker compose "${COMPOSE[@]}" up -d --no-build --wait \
    --wait-timeout "$HEALTHY_WITHIN" \
    || { docker compose "${COMPOSE[@]}" logs --tail 40 >&2; fail "compose service not healthy"; }
COMPOSE_SECONDS=$((SECONDS - COMPOSE_START))
python3 - "$COMPOSE_PORT" "$SECOND_MODEL" <<'EOF' 2>&1 | tee -a "$W/check.log"
import json
import math
import sys
import urllib.request

base, second = f"http://127.0.0.1:{sys.argv[1]}", sys.argv[2]


def call(path, body=None):
    request = urllib.request.Request(
        base + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, response.read()


_, raw = call("/predict", {"text": "The staff were friendly and the room was spotless."})
answer = json.loads(raw)
if "label" not in answer or "probabilities" not in answer:
    sys.exit(f"unexpected /predict answer through compose: {answer}")
print(f"  compose smoke call: {answer['label']} {answer.get('score')}")
default_answer = answer
if answer.get("model", {}).get("name") != "default":
    sys.exit(f"a request naming no model was not answered by `default`: {answer.get('model')}")
# The mounted store: both models listed, ready, the default first.
_, raw = call("/models")
found = [(model["name"], model["status"], model["default"]) for model in json.loads(raw)["models"]]
if found != [("default", "ready", True), (second, "ready", False)]:
    sys.exit(f"GET /models through compose: expected `default` and `{second}` ready, got {found}")
print(f"  GET /models: {found}")
# A request naming the second model is answered by it; the same weights, so the same numbers.
body = {"text": "The staff were friendly and the room was spotless.", "model": second}
_, raw = call("/predict", body)
answer = json.loads(raw)
if answer.get("model", {}).get("name") != second:
    sys.exit(f"/predict naming `{second}` was answered by {answer.get('model')}")
same = answer["label"] == default_answer["label"] and all(
    math.isclose(answer["probabilities"][label], value, rel_tol=0, abs_tol=1e-6)
    for label, value in default_answer["probabilities"].items()
)
if not same:
    sys.exit(f"`{second}` (the same checkpoint) answered differently: {answer} vs {default_answer}")
print(f"  /predict naming `{second}`: {answer['label']} {answer['score']}, by {second}")
# The mounted checkpoint's card, and the docs page with its assets from the installed wheel.
for path in ("/healthz", "/model", "/docs", "/static/swagger-ui/swagger-ui-bundle.js"):
    status, raw = call(path)
    print(f"  GET {path}: {status}, {len(raw)} bytes")
# Each piece on a new connection, so either worker may take it: both sign and check states
# with the one APP_STREAM_SECRET (a state another key signed would be a 422).
text = "The room was small, but the staff were lovely and breakfast was excellent."
pieces = [text[start : start + 10] for start in range(0, len(text), 10)]
state = None
for number, piece in enumerate(pieces):
    _, raw = call("/stream", {"text": piece, "state": state, "final": number == len(pieces) - 1})
    answer = json.loads(raw)
    state = answer.get("state")
print(f"  /stream in {len(pieces)} pieces: {answer['prediction']['label']}")
EOF
# Read whole first: `grep -q` stopping early would fail the pipeline (pipefail) on a match.
API_LOGS=$(IMAGE=$IMAGE docker compose "${COMPOSE[@]}" logs api 2>&1)
if grep -q 'APP_STREAM_SECRET is not set' <<<"$API_LOGS"; then
    fail "the compose service did not get APP_STREAM_SECRET from the environment"
fi
# docs/operations.md, "Deploying a new model without a restart": SIGHUP to the container reaches the server
# (PID 1), the arbiter passes it to both workers, each reloads every model of the store (the
# checkpoint is the one served: "nothing to do") and the service stays up.
RELOADS_EXPECTED=$((2 * MODELS_SERVED))
say "docker compose kill -s HUP api: both workers reload both models, the service keeps answering"
IMAGE=$IMAGE docker compose "${COMPOSE[@]}" kill -s HUP api >/dev/null
for _ in $(seq 1 60); do
    reloads=$(IMAGE=$IMAGE docker compose "${COMPOSE[@]}" logs api 2>&1 | grep -c 'the checkpoint is the one served' || true)
    ((reloads >= RELOADS_EXPECTED)) && break
    sleep 0.5
done
((reloads >= RELOADS_EXPECTED)) || {
    IMAGE=$IMAGE docker compose "${COMPOSE[@]}" logs --tail 40 api >&2
    fail "SIGHUP: $reloads of $RELOADS_EXPECTED reloads (2 workers x $MODELS_SERVED models) logged"
}
python3 -c 'import sys, urllib.request as u; u.urlopen(u.Request(sys.argv[1], data=b"{\"text\": \"Still serving?\"}", headers={"content-type": "application/json"}), timeout=30)' \
    "http://127.0.0.1:$COMPOSE_PORT/predict" || fail "no answer after SIGHUP"
[[ $(docker inspect -f '{{.State.Running}}' "$(IMAGE=$IMAGE docker compose "${COMPOSE[@]}" ps -q api)") == true ]] \
    || fail "the container stopped after SIGHUP"
say "SIGHUP: $reloads model reloads over 2 workers, still serving"
IMAGE=$IMAGE docker compose "${COMPOSE[@]}" down --timeout 10
say "compose service healthy in ${COMPOSE_SECONDS}s, stopped"

echo "container check passed: image ${IMAGE_MB} MB, build ${BUILD_SECONDS}s," \
    "healthy ${HEALTHY_SECONDS}s after docker run, compose healthy ${COMPOSE_SECONDS}s," \
    "total $((SECONDS - T0))s"
