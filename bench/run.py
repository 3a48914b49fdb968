"""Serving benchmark (`make bench`): the service the production way, driven by wrk over loopback.

Starts `make serve` (WORKERS=2 by default) and the ceiling app (`bench/ceiling_app.py`: same
server, same workers, a constant answer) on free loopback ports, then for each concurrency runs
wrk against both, back to back (warm-up first, then a timed run), so the ratio /predict ÷ ceiling
is measured under the same machine conditions. Also measures: the overload behaviour (a probe
client's view of accepted requests and 503s, and recovery right after), one request with 64
texts, time to ready, CPU and RSS per worker, and the bare model's CPU paths
(`bench/cpu_paths.py`). Prints Markdown tables; saves JSON under bench/results/.

Figures from a shared machine swing; ratios measured back to back are what to compare.
This is not a test and asserts nothing about speed.

    .venv/bin/python bench/run.py [--duration 10] [--concurrency 1,16,64,512] [--workers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
LUA = BENCH / "post_bodies.lua"
SENTENCES = BENCH / "sentences.txt"
OVERLOAD_CONCURRENCY = 512
# What each serving setting is worth, measured against the ceiling in the same run.
DEFAULT_VARIANTS = (
    "float32=APP_INFERENCE_DTYPE=float32",
    "float64=APP_INFERENCE_DTYPE=float64",
    "thread=APP_INFERENCE_THREAD=true",
    "no-access-log=APP_ACCESS_LOG=false",
    "no-fast-path=APP_FAST_PATH=false",
    "small-queue@512=APP_QUEUE_SIZE=64",
)


# -- wrk ---------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    """Path of wrk; installed with apt-get when missing and running as root, else exit."""
    found = shutil.which("wrk")
    if found:
        return found
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        print("wrk is missing: installing it with apt-get", flush=True)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        installed = (
            subprocess.run(
                ["apt-get", "install", "-y", "-q", "wrk"], env=env, check=False
            ).returncode
            == 0
        )
        if not installed:
            subprocess.run(["apt-get", "update", "-q"], env=env, check=False)
            subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], env=env, check=False)
        found = shutil.which("wrk")
        if found:
            return found
    sys.exit(
        "bench: the load generator `wrk` is not installed. Install it (Debian/Ubuntu: "
        "`sudo apt-get install -y wrk`) and run `make bench` again."
    )


def run_wrk(
    wrk: str, url: str, bodies: Path, *, connections: int, seconds: float, out: Path,
    script: Path = LUA, extra_env: dict[str, str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    env = {**os.environ, "BENCH_BODIES": str(bodies), "BENCH_OUT": str(out), **(extra_env or {})}
    command = [
        wrk,
        "-t1",  # one load-generator thread: the other core stays with the server
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "15s",  # longer than the service's own deadline (10 s): its answer is what we see
        "-s",
        str(script),
        url,
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not out.exists():
        raise RuntimeError(f"wrk failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    data: dict[str, Any] = json.loads(out.read_text())
    out.unlink()
    return data


# -- the servers ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    started: float
    ready_s: float = 0.0  # process start -> first /readyz 200
    all_ready_s: float = 0.0  # process start -> every worker started
    workers: list[psutil.Process] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def start_server(
    name: str, command: list[str], env: dict[str, str], log: Path, cwd: Path = REPO
) -> Server:
    """Start `command` in `cwd` (bench/ab.py: another checkout); return once /readyz answers 200
    and every worker has started."""
    port = int(env["PORT"])
    expected = int(env["WORKERS"])
    with log.open("wb") as output:
        started = time.perf_counter()
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    server = Server(name, process, port, log, started)
    deadline = started + 120
    with httpx.Client(timeout=1) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {log}")
            if time.perf_counter() > deadline:
                server.stop()
                raise RuntimeError(f"{name} not ready after 120 s; see {log}")
            if not server.ready_s:
                with contextlib.suppress(httpx.TransportError):
                    if client.get(f"{server.url}/readyz").status_code == 200:
                        server.ready_s = time.perf_counter() - started
            # uvicorn logs this once per worker, after the app's lifespan (model load, warm-up).
            if server.ready_s and log.read_bytes().count(b"Application startup complete") >= (
                expected
            ):
                server.all_ready_s = time.perf_counter() - started
                break
            time.sleep(0.01)
    while not server.workers or len(server.workers) < expected:
        server.workers = listening_processes(process.pid, port)
        time.sleep(0.02)
    return server


def listening_processes(root_pid: int, port: int) -> list[psutil.Process]:
    """The processes under `root_pid` that have a socket listening on `port` (the workers)."""
    root = psutil.Process(root_pid)
    found = []
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            for conn in process.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
                    found.append(process)
                    break
    return found


# -- measurements --------------------------------------------------------------------------


def cpu_seconds(processes: list[psutil.Process]) -> list[float]:
    times = []
    for process in processes:
        try:
            cpu = process.cpu_times()
            times.append(cpu.user + cpu.system)
        except psutil.Error:
            times.append(float("nan"))
    return times


def memory(processes: list[psutil.Process]) -> list[dict[str, float]]:
    out = []
    for process in processes:
        try:
            info = process.memory_full_info()
            out.append({"rss_mb": info.rss / 2**20, "uss_mb": info.uss / 2**20})
        except psutil.Error:
            out.append({"rss_mb": float("nan"), "uss_mb": float("nan")})
    return out


class Probe(threading.Thread):
    """A polite client during overload: one request at a time, a new connection each time."""

    def __init__(self, url: str, texts: list[str]) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.texts = texts
        self.results: list[tuple[int, float, bool]] = []  # status, seconds, has Retry-After
        self.stop_event = threading.Event()

    def run(self) -> None:
        index = 0
        while not self.stop_event.is_set():
            text = self.texts[index % len(self.texts)]
            index += 1
            started = time.perf_counter()
            try:
                with httpx.Client(timeout=15) as client:
                    response = client.post(f"{self.url}/predict", json={"text": text})
                status, retry = response.status_code, "retry-after" in response.headers
            except httpx.TransportError:
                status, retry = 0, False
            self.results.append((status, time.perf_counter() - started, retry))
            self.stop_event.wait(0.05)

    def summary(self) -> dict[str, Any]:
        accepted = sorted(seconds for status, seconds, _ in self.results if status == 200)
        statuses: dict[str, int] = {}
        for status, _, _ in self.results:
            statuses[str(status)] = statuses.get(str(status), 0) + 1
        return {
            "requests": len(self.results),
            "status": statuses,
            "503_without_retry_after": sum(
                1 for status, _, retry in self.results if status == 503 and not retry
            ),
            "accepted_p50_ms": percentile(accepted, 50) * 1000 if accepted else None,
            "accepted_p99_ms": percentile(accepted, 99) * 1000 if accepted else None,
            "accepted_max_ms": accepted[-1] * 1000 if accepted else None,
        }


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[index]


def print_point(where: str, name: str, r: dict[str, Any]) -> None:
    print(
        f"{where:<6} {name:<8} {r['rps']:8,.0f} req/s  p50 "
        f"{ms(r['latency_us']['percentiles']['50'])} p99 "
        f"{ms(r['latency_us']['percentiles']['99'])} ms  errors {errors_text(r)}  statuses "
        f"{r['status']}",
        flush=True,
    )


def measure_pair(
    wrk: str, first: Server, second: Server, bodies: Path, connections: int,
    args: argparse.Namespace, work: Path, *, second_first: bool = False,
    keys: tuple[str, str] = ("predict", "ceiling"),
) -> dict[str, Any]:  # fmt: skip
    """Two servers (by default /predict and the ceiling; bench/ab.py: the current code and a
    baseline) at the same concurrency, back to back, `first` first unless `second_first`: the
    ratio of their req/s, first ÷ second, under the same machine conditions. The results are
    under `keys`."""
    point: dict[str, Any] = {"connections": connections}
    order = [(keys[0], first), (keys[1], second)]
    for key, server in order[::-1] if second_first else order:
        point[key] = measure_point(wrk, server, bodies, connections, args, work)
        print_point(f"c={connections}", server.name, point[key])
    point["ratio"] = point[keys[0]]["rps"] / point[keys[1]]["rps"]
    return point


def ratio_rounds(
    wrk: str, predict: Server, ceiling: Server, bodies: Path, args: argparse.Namespace,
    work: Path, connections: int = 64,
) -> dict[str, Any]:  # fmt: skip
    """/predict and the ceiling at c=64, `--ratio-rounds` more times, the order alternating:
    a single pair can land on a busy moment of the shared machine; the median of several
    says where the ratio really is."""
    rounds = []
    for index in range(args.ratio_rounds):
        point = measure_pair(
            wrk, predict, ceiling, bodies, connections, args, work, second_first=index % 2 == 0
        )
        rounds.append(
            {
                "predict_rps": point["predict"]["rps"],
                "ceiling_rps": point["ceiling"]["rps"],
                "ratio": point["ratio"],
                "predict_p99_ms": point["predict"]["latency_us"]["percentiles"]["99"] / 1000,
                "errors": errors_text(point["predict"]),
            }
        )
        print(f"c={connections} round {index + 1}: ratio {point['ratio']:.2f}", flush=True)
    return {
        "connections": connections,
        "rounds": rounds,
        "median_ratio": statistics.median(r["ratio"] for r in rounds) if rounds else None,
    }


def measure_variant(
    wrk: str, name: str, env: dict[str, str], ceiling: Server, bodies: Path,
    args: argparse.Namespace, work: Path,
) -> dict[str, Any]:  # fmt: skip
    """The service with other settings, against the ceiling again (back to back); at c=64
    unless the name ends in @CONNECTIONS."""
    base = server_env(args)
    base.update(env)
    connections = int(name.rpartition("@")[2]) if "@" in name else 64
    variant = start_server(name, make_serve(), base, work / f"{name}-server.log")
    try:
        point = measure_pair(wrk, variant, ceiling, bodies, connections, args, work)
    finally:
        variant.stop()
    point["name"] = name
    point["settings"] = env
    return point


def measure_point(
    wrk: str, server: Server, bodies: Path, connections: int, args: argparse.Namespace,
    work: Path, probe_texts: list[str] | None = None,
) -> dict[str, Any]:  # fmt: skip
    url = f"{server.url}/predict"
    out = work / "wrk.json"
    run_wrk(wrk, url, bodies, connections=connections, seconds=args.warmup, out=out)
    time.sleep(0.5)  # let a backlog from the warm-up drain
    before = cpu_seconds(server.workers)
    probe = Probe(server.url, probe_texts) if probe_texts else None
    if probe:
        probe.start()
    started = time.perf_counter()
    result = run_wrk(wrk, url, bodies, connections=connections, seconds=args.duration, out=out)
    elapsed = time.perf_counter() - started
    if probe:
        probe.stop_event.set()
        probe.join()
        result["probe"] = probe.summary()
    after = cpu_seconds(server.workers)
    result["cpu_percent_per_worker"] = [
        round(100 * (b - a) / elapsed, 1) for a, b in zip(before, after, strict=True)
    ]
    result["memory_per_worker"] = memory(server.workers)
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    # CPU time the workers spent per request: what the machine's other load disturbs least.
    cpu_s = sum(b - a for a, b in zip(before, after, strict=True))
    result["cpu_us_per_request"] = cpu_s / max(result["requests"], 1) * 1e6
    result["connections"] = connections
    return result


def recovery(wrk: str, server: Server, bodies: Path, work: Path) -> dict[str, Any]:
    """Right after overload: one connection for 3 s. Recovered = like an idle server's c=1."""
    return run_wrk(
        wrk, f"{server.url}/predict", bodies, connections=1, seconds=3, out=work / "wrk.json"
    )


def batch_of_64(server: Server, texts: list[str], repeats: int = 30) -> dict[str, float]:
    body = {"texts": [texts[i % len(texts)] for i in range(64)]}
    times = []
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for _ in range(5):
            client.post("/predict", json=body).raise_for_status()
        for _ in range(repeats):
            started = time.perf_counter()
            client.post("/predict", json=body).raise_for_status()
            times.append(time.perf_counter() - started)
    times.sort()
    return {
        "p50_ms": statistics.median(times) * 1000,
        "min_ms": times[0] * 1000,
        "p90_ms": percentile(times, 90) * 1000,
    }


# -- report --------------------------------------------------------------------------------


def ms(microseconds: float | None) -> str:
    return "-" if microseconds is None else f"{microseconds / 1000:.2f}"


def errors_text(result: dict[str, Any]) -> str:
    parts = [f"{key}x{value}" for key, value in sorted(result["error_codes"].items())]
    socket_errors = {k: v for k, v in result["socket_errors"].items() if v}
    parts += [f"socket {key}x{value}" for key, value in sorted(socket_errors.items())]
    if result["missing_retry_after"]:
        parts.append(f"503 without Retry-Afterx{result['missing_retry_after']}")
    return ", ".join(parts) or "0"


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| c | server | req/s | ÷ ceiling | p50 ms | p95 ms | p99 ms | errors | CPU % per worker "
        "| CPU µs/request | RSS MB per worker |",
        "|---:|---|---:|---:|---:|---:|---:|---|---|---:|---|",
    ]
    rows = [(point, "/predict") for point in results["points"]]
    rows += [
        (point, "/predict, " + ", ".join(f"{k}={v}" for k, v in point["settings"].items()))
        for point in results.get("variants", [])
    ]
    for point, label in rows:
        for name in ("predict", "ceiling"):
            result = point[name]
            p = result["latency_us"]["percentiles"]
            ratio = f"{point['ratio']:.2f}" if name == "predict" else ""
            cpu = " / ".join(f"{value:.0f}" for value in result["cpu_percent_per_worker"])
            rss = " / ".join(f"{m['rss_mb']:.0f}" for m in result["memory_per_worker"])
            lines.append(
                f"| {point['connections']} | {label if name == 'predict' else 'ceiling'} "
                f"| {result['rps']:,.0f} | {ratio} | {ms(p['50'])} | {ms(p['95'])} "
                f"| {ms(p['99'])} | {errors_text(result)} | {cpu} "
                f"| {result['cpu_us_per_request']:,.0f} | {rss} |"
            )
    overload = results.get("overload")
    if overload:
        p = overload["latency_us"]["percentiles"]
        cpu = " / ".join(f"{value:.0f}" for value in overload["cpu_percent_per_worker"])
        rss = " / ".join(f"{m['rss_mb']:.0f}" for m in overload["memory_per_worker"])
        lines.append(
            f"| {overload['connections']} | /predict (overload) | {overload['rps']:,.0f} | "
            f"| {ms(p['50'])} | {ms(p['95'])} | {ms(p['99'])} | {errors_text(overload)} "
            f"| {cpu} | {overload['cpu_us_per_request']:,.0f} | {rss} |"
        )
    return "\n".join(lines)


def summary_lines(results: dict[str, Any]) -> list[str]:
    lines = []
    overload = results.get("overload")
    if overload:
        probe = overload["probe"]
        lines.append(
            f"- Overload (c={OVERLOAD_CONCURRENCY}): statuses {overload['status']}; probe client "
            f"(1 request at a time, {probe['requests']} requests): statuses {probe['status']}, "
            f"accepted p50 {fmt(probe['accepted_p50_ms'])} ms, p99 "
            f"{fmt(probe['accepted_p99_ms'])} ms, 503 without Retry-After: "
            f"{probe['503_without_retry_after'] + overload['missing_retry_after']}."
        )
        rec = results["recovery"]
        lines.append(
            f"- Right after overload, c=1 for 3 s: p50 {ms(rec['latency_us']['percentiles']['50'])}"
            f" ms, p99 {ms(rec['latency_us']['percentiles']['99'])} ms, errors {errors_text(rec)}."
        )
    rounds = results.get("ratio_rounds")
    if rounds and rounds["rounds"]:
        ratios = ", ".join(f"{r['ratio']:.2f}" for r in rounds["rounds"])
        first = [p["ratio"] for p in results["points"] if p["connections"] == rounds["connections"]]
        lines.append(
            f"- /predict ÷ ceiling at c={rounds['connections']}, {len(rounds['rounds'])} more "
            f"rounds, order alternating: {ratios}; median of these and the table's "
            f"{statistics.median([*first, *(r['ratio'] for r in rounds['rounds'])]):.2f}."
        )
    batch = results["batch_of_64"]
    lines.append(
        f"- One request with 64 texts: p50 {batch['p50_ms']:.1f} ms (min {batch['min_ms']:.1f},"
        f" p90 {batch['p90_ms']:.1f}), {64 / batch['p50_ms'] * 1000:,.0f} texts/s."
    )
    lines.append(
        f"- Time to ready (process start → /readyz 200): /predict service "
        f"{results['ready_s']['predict']:.2f} s (`make serve`; every worker started: "
        f"{results['all_workers_ready_s']['predict']:.2f} s), ceiling "
        f"{results['ready_s']['ceiling']:.2f} s."
    )
    idle = results["memory_idle"]
    loaded = results["memory_after"]
    lines.append(
        "- Memory per worker (RSS / USS MB): after start "
        + ", ".join(f"{m['rss_mb']:.0f} / {m['uss_mb']:.0f}" for m in idle)
        + "; after the run "
        + ", ".join(f"{m['rss_mb']:.0f} / {m['uss_mb']:.0f}" for m in loaded)
        + "."
    )
    training = results.get("training_seconds")
    lines.append(
        f"- Training time of the served model: {training:.0f} s (model card)."
        if training is not None
        else "- Training time: not in the model card."
    )
    lines.append(
        f"- Load average before / after: {results['load_before']} / {results['load_after']}; "
        f"{results['machine']['cpus']} CPUs; {results['machine']['python']}."
    )
    return lines


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


# -- main ------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per timed run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per run")
    parser.add_argument(
        "--concurrency", default="1,16,64", help="connections per point (comma-separated)"
    )
    parser.add_argument(
        "--no-overload", action="store_true", help=f"skip the c={OVERLOAD_CONCURRENCY} run"
    )
    service_arguments(parser)
    parser.add_argument("--no-cpu-paths", action="store_true", help="skip bench/cpu_paths.py")
    parser.add_argument(
        "--ratio-rounds",
        type=int,
        default=4,
        help="extra /predict-and-ceiling rounds at c=64, order alternating (0: none)",
    )
    parser.add_argument(
        "--variant",
        type=parse_variant,
        action="append",
        default=None,
        metavar="NAME=APP_X=v[,APP_Y=w]",
        help="also measure the service with these settings, at c=64 or NAME@C (repeatable; "
        f"default: {' '.join(DEFAULT_VARIANTS)})",
    )
    parser.add_argument("--no-variants", action="store_true", help="skip the variants")
    args = parser.parse_args()
    if args.no_variants:
        args.variant = []
    elif args.variant is None:
        args.variant = [parse_variant(text) for text in DEFAULT_VARIANTS]
    return args


def service_arguments(parser: argparse.ArgumentParser) -> None:
    """--workers, --model and --out: shared with soak.py and faults.py."""
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--model",
        type=Path,
        default=Path(os.environ.get("APP_MODEL_DIR", "model_store/default")),
        help="checkpoint directory (default: $APP_MODEL_DIR or model_store/default)",
    )
    parser.add_argument("--out", type=Path, default=BENCH / "results")


def read_sentences() -> list[str]:
    """The benchmark's texts: the non-empty lines of sentences.txt."""
    return [line.strip() for line in SENTENCES.read_text().splitlines() if line.strip()]


def write_bodies(path: Path, texts: list[str]) -> Path:
    """One /predict body per line (`{"text": ...}`), as post_bodies.lua reads them."""
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    return path


def start_run(args: argparse.Namespace, name: str) -> tuple[list[str], Path, str]:
    """What every script of bench/ starts with: the checkpoint must be there; the texts, a fresh
    work folder under --out, and the run's time stamp (for the results file)."""
    if not (args.model / "manifest.json").exists():
        sys.exit(f"{name}: no checkpoint in {args.model} (train one, or pass --model DIR)")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=args.out))
    return read_sentences(), work, stamp


def make_serve() -> list[str]:
    make = shutil.which("make")
    if make is None:
        sys.exit("bench: `make` is not installed")
    # `make serve` first brings .venv up to date with pyproject.toml: do that now, untimed,
    # so the time to ready measures the service starting, not pip.
    subprocess.run([make, "--no-print-directory", ".venv/.runtime"], cwd=REPO, check=True)
    return [make, "--no-print-directory", "serve"]


def server_env(args: argparse.Namespace) -> dict[str, str]:
    """The environment of `make serve`: the caller's APP_* settings, our address and model."""
    env = dict(os.environ)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        {
            "HOST": "127.0.0.1",
            "PORT": str(free_port()),
            "WORKERS": str(args.workers),
            "APP_MODEL_DIR": str(args.model),
        }
    )
    return env


@contextlib.contextmanager
def servers(args: argparse.Namespace, work: Path) -> Iterator[tuple[Server, Server]]:
    ceiling_env = server_env(args)
    started: list[Server] = []
    try:
        predict = start_server(
            "predict", make_serve(), server_env(args), work / "predict-server.log"
        )
        started.append(predict)
        ceiling = start_server(
            "ceiling",
            [sys.executable, str(BENCH / "ceiling_app.py")],
            ceiling_env,
            work / "ceiling-server.log",
        )
        started.append(ceiling)
        yield predict, ceiling
    finally:
        for server in started:
            server.stop()


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """NAME=APP_X=1,APP_Y=2 -> (NAME, {APP_X: 1, APP_Y: 2})."""
    name, _, settings = text.partition("=")
    env = dict(item.split("=", 1) for item in settings.split(",") if item)
    if not name or not env or not all(key.startswith("APP_") for key in env):
        raise argparse.ArgumentTypeError(f"expected NAME=APP_SETTING=value[,...], got {text!r}")
    return name, env


def main() -> int:
    args = parse_args()
    wrk = ensure_wrk()
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    texts, work, stamp = start_run(args, "bench")
    bodies = write_bodies(work / "bodies.jsonl", texts)

    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["bench/run.py", *sys.argv[1:]]),
        "model_dir": str(args.model),
        "workers": args.workers,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": {k: v for k, v in os.environ.items() if k.startswith("APP_")},
        "points": [],
        "variants": [],
    }
    card = args.model / "model_card.json"
    if card.exists():
        results["training_seconds"] = (
            json.loads(card.read_text()).get("training", {}).get("seconds")
        )
    print(f"bench: model {args.model}, {args.workers} workers, load {results['load_before']}")
    with servers(args, work) as (predict, ceiling):
        results["ready_s"] = {"predict": predict.ready_s, "ceiling": ceiling.ready_s}
        results["all_workers_ready_s"] = {
            "predict": predict.all_ready_s,
            "ceiling": ceiling.all_ready_s,
        }
        results["memory_idle"] = memory(predict.workers)
        print(f"ready: /predict {predict.ready_s:.2f} s, ceiling {ceiling.ready_s:.2f} s")
        for connections in concurrencies:
            results["points"].append(
                measure_pair(wrk, predict, ceiling, bodies, connections, args, work)
            )
        if args.ratio_rounds:
            results["ratio_rounds"] = ratio_rounds(wrk, predict, ceiling, bodies, args, work)
        if not args.no_overload:
            results["overload"] = measure_point(
                wrk, predict, bodies, OVERLOAD_CONCURRENCY, args, work, probe_texts=texts
            )
            results["recovery"] = recovery(wrk, predict, bodies, work)
            print_point(f"c={OVERLOAD_CONCURRENCY}", "predict", results["overload"])
        results["batch_of_64"] = batch_of_64(predict, texts)
        results["memory_after"] = memory(predict.workers)
        for name, env in args.variant:
            results["variants"].append(measure_variant(wrk, name, env, ceiling, bodies, args, work))
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    if not args.no_cpu_paths:
        print("bare model CPU paths (bench/cpu_paths.py) ...", flush=True)
        completed = subprocess.run(
            [sys.executable, str(BENCH / "cpu_paths.py"), "--model", str(args.model), "--json"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode == 0:
            results["cpu_paths"] = json.loads(completed.stdout)
        else:
            print(completed.stderr, file=sys.stderr)

    path = args.out / f"bench-{stamp}.json"
    path.write_text(json.dumps(results, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    print()
    print(markdown(results))
    print()
    print("\n".join(summary_lines(results)))
    if "cpu_paths" in results:
        print()
        print(cpu_paths_markdown(results["cpu_paths"]))
    print(f"\nresults: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return 0


def cpu_paths_markdown(data: dict[str, Any]) -> str:
    lines = [
        "| bare model (1 thread) | batch 1 ms | batch 64 ms | texts/s at 64 | identical alone vs "
        "batched | test accuracy | macro-F1 | max abs. diff. from float32 |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for row in data["variants"]:
        acc = row.get("accuracy")
        f1 = row.get("macro_f1")
        diff = row.get("max_abs_diff_vs_float32")
        lines.append(
            f"| {row['name']} | {row['batch1_ms']:.3f} | {row['batch64_ms']:.2f} "
            f"| {64 / row['batch64_ms'] * 1000:,.0f} | {'yes' if row['batch_invariant'] else 'no'} "
            f"| {'-' if acc is None else f'{acc:.4f}'} | {'-' if f1 is None else f'{f1:.4f}'} "
            f"| {'-' if diff is None else f'{diff:.1e}'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
