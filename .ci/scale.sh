#!/usr/bin/env bash
# Scale-out check (docs/scaling.md), called by .ci/run after the container check. Root, no
# stdin. The same engine and stand-in recipe as .ci/container.sh (shared: .ci/lib.sh):
#
#  1. static: hadolint on deploy/nginx/Dockerfile; `docker compose config` of docker-compose.yml
#     + deploy/compose.scale.yaml, and the merged result against the compose-spec schema;
#  2. a real Docker engine and the python:3.11-slim stand-in (cached rootfs);
#  3. the serving image (as container.sh builds it) and the nginx image from deploy/nginx;
#  4. `docker compose -f docker-compose.yml -f deploy/compose.scale.yaml up -d --wait` with
#     3 replicas, then .ci/scale_check.py through nginx: /metrics refused at the edge, a
#     forged X-Forwarded-For replaced by nginx (the replicas trust nginx's address only),
#     requests spread over the replicas, a /stream continued across replicas, and
#     `docker stop` / `docker kill` of a replica under a bounded load losing no more than its
#     in-flight requests;
#  5. `docker compose down`.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

IMAGE=rnn-sentiment:ci
LB_IMAGE=rnn-sentiment-lb:ci
PROJECT=rnn-sentiment-scale
REPLICAS=3
HEALTHY_WITHIN=180

CI_NAME=scale
# shellcheck source=.ci/lib.sh
source .ci/lib.sh
ci_init

COMPOSE=(-p "$PROJECT" -f docker-compose.yml -f deploy/compose.scale.yaml)
# The replicas share this stream secret (made up for this run, never reused); the overlay
# requires it from the environment, as in production.
APP_STREAM_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
HOST_PORT=$(free_port)
export IMAGE LB_IMAGE APP_STREAM_SECRET HOST_PORT API_REPLICAS=$REPLICAS
cleanup() {
    local status=$?
    set +e
    if [[ -n $DOCKERD_PID ]]; then
        if ((status != 0)); then
            docker compose "${COMPOSE[@]}" ps -a >&2
            docker compose "${COMPOSE[@]}" logs --tail 15 >"$W/compose.log" 2>&1
        fi
        docker compose "${COMPOSE[@]}" down --volumes --timeout 5 >/dev/null 2>&1
    fi
    ci_cleanup "$status" "$W/compose.log"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. static checks --------------------------------------------------------------------------
say "static checks (hadolint, compose config, compose-spec schema of the merged files)"
ci_tools
"$W/tools/bin/hadolint" --failure-threshold warning deploy/nginx/Dockerfile
# The overlay uses compose's `!reset` tag, which the schema tool cannot parse: validate the
# merged model compose makes of the two files instead.
docker compose "${COMPOSE[@]}" config >"$W/merged.yaml"
"$W/tools/bin/check-jsonschema" --builtin-schema vendor.compose-spec "$W/merged.yaml"

# --- 2. engine and stand-in --------------------------------------------------------------------
ci_engine_start
ci_standin

# --- 3. images ---------------------------------------------------------------------------------
ci_torch_wheel
ci_build_image "$IMAGE"
say "building $LB_IMAGE (deploy/nginx)"
LB_START=$SECONDS
docker build --network host -t "$LB_IMAGE" deploy/nginx >"$W/lb-build.log" 2>&1 \
    || { tail -n 30 "$W/lb-build.log" >&2; fail "nginx image build failed"; }
say "nginx image built in $((SECONDS - LB_START))s"

# --- 4. replicas behind nginx ------------------------------------------------------------------
say "docker compose up: $REPLICAS replicas behind nginx on 127.0.0.1:$HOST_PORT"
UP_START=$SECONDS
docker compose "${COMPOSE[@]}" up -d --no-build --wait --wait-timeout "$HEALTHY_WITHIN" \
    || fail "the replicas or nginx did not become healthy"
UP_SECONDS=$((SECONDS - UP_START))
say "all healthy in ${UP_SECONDS}s"
[[ $(docker compose "${COMPOSE[@]}" exec -T lb id -u) != 0 ]] || fail "nginx runs as root"

REPLICA_ADDRESSES=()
for id in $(docker compose "${COMPOSE[@]}" ps -q api); do
    ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$id")
    REPLICA_ADDRESSES+=("$id=$ip")
done
((${#REPLICA_ADDRESSES[@]} == REPLICAS)) || fail "expected $REPLICAS replicas: ${REPLICA_ADDRESSES[*]}"
LB_ADDRESS=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' \
    "$(docker compose "${COMPOSE[@]}" ps -q lb)")
[[ -n $LB_ADDRESS ]] || fail "nginx has no address on the compose network"

say "checks through nginx (.ci/scale_check.py)"
CHECK_START=$SECONDS
python3 .ci/scale_check.py "http://127.0.0.1:$HOST_PORT" "$LB_ADDRESS" "${REPLICA_ADDRESSES[@]}" \
    2>&1 | tee "$W/check.log"
CHECK_SECONDS=$((SECONDS - CHECK_START))

# --- 5. down -----------------------------------------------------------------------------------
say "docker compose down"
docker compose "${COMPOSE[@]}" down --timeout 10
echo "scale check passed: $REPLICAS replicas behind nginx healthy in ${UP_SECONDS}s," \
    "checks ${CHECK_SECONDS}s, image build ${BUILD_SECONDS}s, total $((SECONDS - T0))s"
