"""Soak benchmark: the service under steady mixed load for minutes; errors, memory, tail latency.

Starts `make serve` (WORKERS=2 by default) on a free loopback port and measures two peaks
with wrk (c=64, one thread, like bench/run.py): single-text /predict (`post_bodies.lua`) and
the mix below, unpaced. Then runs the mix paced at `--fraction` (70 %) of the mix's peak
(`--peak-of predict`: of the /predict peak; the mix's requests cost more, so that is an
overload) for `--minutes` (10), as back-to-back wrk runs of `--window` seconds (60). The mix
(`mixed_bodies.lua`, bodies built here from `sentences.txt`): 65 % single-text /predict, 10 %
/predict with 8 `texts`, 10 % /tokenize, 10 % /stream (a whole text with `final`, or a first
piece), 5 % /hidden-states.

Per window: requests, achieved vs target rate, errors (non-2xx and socket errors), p50/p99,
and the total RSS of the service's processes (arbiter + workers) sampled at the window's end.
The start RSS is sampled after the warm-up (peak measurement + one mixed window of
`--warmup` seconds). Targets: 0 errors; RSS growth < 50 MB; p99 stable, defined as the median
p99 of the last third of the windows at most 2x the median p99 of the first third (a median, so
that one window slowed by another process on a shared machine does not decide it). Exits 1 when
a target is missed. Not a test: it never runs in CI. Results: bench/results/soak-*.json.

    .venv/bin/python bench/soak.py [--minutes 10] [--window 60] [--fraction 0.7]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import psutil

# bench/ is on sys.path when this file runs as a script; the helpers live in bench/run.py.
from run import (
    BENCH,
    REPO,
    Server,
    ensure_wrk,
    listening_processes,
    make_serve,
    memory,
    ms,
    run_wrk,
    server_env,
    service_arguments,
    start_run,
    start_server,
    write_bodies,
)

MIXED_LUA = BENCH / "mixed_bodies.lua"
PEAK_CONNECTIONS = 64
RSS_GROWTH_LIMIT_MB = 50.0
P99_STABLE_FACTOR = 2.0
BATCH_TEXTS = 8
# Requests per 20 of the mix: (kind, count).
MIX = (("predict", 13), ("predict-batch", 2), ("tokenize", 2), ("stream", 2), ("hidden", 1))


def mixed_lines(texts: list[str], count: int = 400) -> list[str]:
    """`count` "PATH<TAB>JSON" lines in the proportions of MIX, shuffled (seeded)."""
    kinds = [kind for kind, n in MIX for _ in range(n)]
    rng = random.Random(0)
    lines = []
    for number in range(count):
        kind = kinds[number % len(kinds)]
        text = texts[number % len(texts)]
        path: str
        body: dict[str, Any]
        if kind == "predict":
            path, body = "/predict", {"text": text}
        elif kind == "predict-batch":
            batch = [texts[(number + i) % len(texts)] for i in range(BATCH_TEXTS)]
            path, body = "/predict", {"texts": batch}
        elif kind == "tokenize":
            path, body = "/tokenize", {"text": text}
        elif kind == "stream":
            # Alternately a whole text in one final piece, and the first half of a new stream.
            final = number % 2 == 0
            piece = text if final else text[: max(1, len(text) // 2)]
            path, body = "/stream", {"text": piece, "final": final}
        else:
            path, body = "/hidden-states", {"text": text}
        lines.append(f"{path}\t{json.dumps(body)}")
    rng.shuffle(lines)
    return lines


def service_processes(server: Server) -> list[psutil.Process]:
    """The workers (listening on the port) and the arbiter that forked them (not `make`)."""
    workers = listening_processes(server.process.pid, server.port)
    found = {process.pid: process for process in workers}
    for worker in workers:
        with contextlib.suppress(psutil.Error):
            parent = worker.parent()
            if parent is not None and parent.name() != "make":
                found[parent.pid] = parent
    return [found[pid] for pid in sorted(found)]


def sample_memory(server: Server) -> dict[str, Any]:
    processes = service_processes(server)
    per_process = memory(processes)
    return {
        "pids": [process.pid for process in processes],
        "rss_mb_total": sum(m["rss_mb"] for m in per_process),
        "uss_mb_total": sum(m["uss_mb"] for m in per_process),
        "per_process": per_process,
    }


def errors_of(result: dict[str, Any]) -> int:
    return int(result["non_2xx"]) + sum(int(v) for v in result["socket_errors"].values())


def rate_of(result: dict[str, Any]) -> float:
    return float(result["requests"]) / (float(result["duration_us"]) / 1e6)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the mixed load")
    parser.add_argument("--window", type=float, default=60.0, help="seconds per wrk run")
    parser.add_argument("--fraction", type=float, default=0.7, help="share of the peak rate")
    parser.add_argument(
        "--connections", type=int, default=32, help="wrk connections of the mixed load"
    )
    parser.add_argument("--peak-seconds", type=float, default=10.0)
    parser.add_argument(
        "--peak-of",
        choices=("mixed", "predict"),
        default="mixed",
        help="the peak the fraction applies to: the mix's own (default), or single-text "
        "/predict's (heavier requests in the mix then make it an overload)",
    )
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of mixed warm-up")
    service_arguments(parser)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    wrk = ensure_wrk()
    texts, work, stamp = start_run(args, "soak")
    single = write_bodies(work / "bodies.jsonl", texts)
    mixed = work / "mixed.tsv"
    mixed.write_text("\n".join(mixed_lines(texts)) + "\n")
    windows = max(1, math.ceil(args.minutes * 60 / args.window))

    results: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["bench/soak.py", *sys.argv[1:]]),
        "workers": args.workers,
        "model_dir": str(args.model),
        "mix_per_20": dict(MIX),
        "connections": args.connections,
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "windows": [],
    }
    print(f"soak: {args.workers} workers, load {results['load_before']}", flush=True)
    server = start_server("predict", make_serve(), server_env(args), work / "server.log")
    try:
        url = server.url
        print(f"ready in {server.ready_s:.2f} s (all workers {server.all_ready_s:.2f} s)")
        out = work / "wrk.json"
        run_wrk(wrk, f"{url}/predict", single, connections=PEAK_CONNECTIONS, seconds=3, out=out)
        peak = run_wrk(
            wrk, f"{url}/predict", single, connections=PEAK_CONNECTIONS,
            seconds=args.peak_seconds, out=out,
        )  # fmt: skip
        mixed_peak = run_wrk(
            wrk, url, mixed, connections=PEAK_CONNECTIONS, seconds=args.peak_seconds, out=out,
            script=MIXED_LUA,
        )  # fmt: skip
        base = rate_of(mixed_peak) if args.peak_of == "mixed" else rate_of(peak)
        target = args.fraction * base
        results["peak"] = peak
        results["mixed_peak"] = mixed_peak
        results["peak_of"] = args.peak_of
        results["target_rps"] = target
        print(
            f"peak (c={PEAK_CONNECTIONS}, {args.peak_seconds:.0f} s): single-text /predict "
            f"{rate_of(peak):,.0f} req/s (errors {errors_of(peak)}), the mix "
            f"{rate_of(mixed_peak):,.0f} req/s (errors {errors_of(mixed_peak)}); target "
            f"{args.fraction:.0%} of the {args.peak_of} peak = {target:,.0f} req/s "
            f"({target / rate_of(peak):.0%} of the /predict peak) over {args.connections} "
            "connections",
            flush=True,
        )
        paced = {"BENCH_RATE": f"{target:.3f}"}
        warm = run_wrk(
            wrk, url, mixed, connections=args.connections, seconds=args.warmup, out=out,
            script=MIXED_LUA, extra_env=paced,
        )  # fmt: skip
        results["warmup"] = warm
        start_memory = sample_memory(server)
        results["memory_start"] = start_memory
        print(
            f"warm-up ({args.warmup:.0f} s mixed): {rate_of(warm):,.0f} req/s, errors "
            f"{errors_of(warm)}; RSS {start_memory['rss_mb_total']:.1f} MB "
            f"(pids {start_memory['pids']})"
        )
        soak_windows(wrk, server, mixed, args, paced, windows, results)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)

    summary = summarize(results)
    results["summary"] = summary
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    path = args.out / f"soak-{stamp}.json"
    path.write_text(json.dumps(results, indent=2))
    print_summary(summary)
    print(f"results: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return 0 if summary["passed"] else 1


def soak_windows(
    wrk: str, server: Server, mixed: Path, args: argparse.Namespace, paced: dict[str, str],
    windows: int, results: dict[str, Any],
) -> None:  # fmt: skip
    """Back-to-back paced wrk runs; one row per window, with the RSS sampled at its end."""
    target = results["target_rps"]
    out = mixed.parent / "wrk.json"
    url = server.url
    print(
        f"{'window':>6} {'requests':>9} {'req/s':>7} {'target':>7} {'errors':>6} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'RSS MB':>8} {'load':>5}",
        flush=True,
    )
    for number in range(1, windows + 1):
        result = run_wrk(
            wrk, url, mixed, connections=args.connections, seconds=args.window, out=out,
            script=MIXED_LUA, extra_env=paced,
        )  # fmt: skip
        result["memory"] = sample_memory(server)
        result["load"] = round(os.getloadavg()[0], 2)
        results["windows"].append(result)
        p = result["latency_us"]["percentiles"]
        print(
            f"{number:>6} {result['requests']:>9,} {rate_of(result):>7,.0f} {target:>7,.0f} "
            f"{errors_of(result):>6} {ms(p['50']):>7} {ms(p['99']):>7} "
            f"{result['memory']['rss_mb_total']:>8.1f} {result['load']:>5}",
            flush=True,
        )
        if errors_of(result):
            print(f"       statuses {result['status']}, errors {result['error_codes']}, "
                  f"socket {result['socket_errors']}")  # fmt: skip


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    windows = results["windows"]
    p99s = [w["latency_us"]["percentiles"]["99"] / 1000 for w in windows]
    requests = sum(w["requests"] for w in windows)
    seconds = sum(w["duration_us"] for w in windows) / 1e6
    rss_start = results["memory_start"]["rss_mb_total"]
    rss_end = windows[-1]["memory"]["rss_mb_total"]
    pids = {tuple(w["memory"]["pids"]) for w in windows} | {tuple(results["memory_start"]["pids"])}
    third = max(1, len(p99s) // 3)
    p99_early = statistics.median(p99s[:third])
    p99_late = statistics.median(p99s[-third:])
    summary: dict[str, Any] = {
        "windows": len(windows),
        "requests": requests,
        "errors": sum(errors_of(w) for w in windows),
        "achieved_rps": requests / seconds,
        "target_rps": results["target_rps"],
        "rss_start_mb": rss_start,
        "rss_end_mb": rss_end,
        "rss_growth_mb": rss_end - rss_start,
        "rss_max_mb": max(w["memory"]["rss_mb_total"] for w in windows),
        "p99_ms_per_window": p99s,
        "p99_first_ms": p99s[0],
        "p99_last_ms": p99s[-1],
        "p99_first_third_median_ms": p99_early,
        "p99_last_third_median_ms": p99_late,
        "processes_replaced": len(pids) > 1,
    }
    checks = {
        "0 errors": summary["errors"] == 0,
        f"RSS growth < {RSS_GROWTH_LIMIT_MB:.0f} MB": summary["rss_growth_mb"]
        < RSS_GROWTH_LIMIT_MB,
        f"p99 stable (last third <= {P99_STABLE_FACTOR:.0f}x first third)": p99_late
        <= P99_STABLE_FACTOR * p99_early,
    }
    summary["checks"] = checks
    summary["passed"] = all(checks.values())
    return summary


def print_summary(s: dict[str, Any]) -> None:
    p99s = s["p99_ms_per_window"]
    print()
    print(
        f"total: {s['requests']:,} requests in {s['windows']} windows, {s['errors']} errors "
        f"(non-2xx or socket); rate {s['achieved_rps']:,.0f} req/s achieved vs "
        f"{s['target_rps']:,.0f} target ({s['achieved_rps'] / s['target_rps']:.0%})"
    )
    print(
        f"RSS (arbiter + workers): {s['rss_start_mb']:.1f} MB after warm-up, "
        f"{s['rss_end_mb']:.1f} MB at the end, growth {s['rss_growth_mb']:+.1f} MB "
        f"(max {s['rss_max_mb']:.1f} MB); processes replaced during the run: "
        f"{'yes' if s['processes_replaced'] else 'no'}"
    )
    print(
        f"p99 per window: min {min(p99s):.2f} ms, max {max(p99s):.2f} ms, first "
        f"{p99s[0]:.2f} ms, last {p99s[-1]:.2f} ms; median of the first third of the windows "
        f"{s['p99_first_third_median_ms']:.2f} ms, of the last third "
        f"{s['p99_last_third_median_ms']:.2f} ms"
    )
    verdict = "; ".join(f"{name}: {'ok' if ok else 'MISSED'}" for name, ok in s["checks"].items())
    print(f"verdict: {'PASS' if s['passed'] else 'FAIL'} ({verdict})")


if __name__ == "__main__":
    sys.exit(main())
