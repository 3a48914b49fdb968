"""A/B serving benchmark (`make bench BASELINE=<commit>`): this working tree against a commit.

The baseline commit is checked out in a git worktree of its own, outside the repository's tree
(`$TMPDIR/rnn-sentiment-baseline-<sha>`, reused when it is already there and clean). Both
servers run on this machine at the same time, each on its own loopback port, with the same
command (this interpreter, `python -m app`, what `make serve` runs) started in its own tree, the
same environment (the caller's APP_* settings, `--workers`, the access log on as in production)
and each tree's own checkpoint (`--model`, relative to each tree). Before starting them, the
interpreter is asked, in each tree with that environment, where `app` and `training` come from:
the project is installed editable in .venv, which would otherwise resolve to this checkout.

Then `--pairs` pairs at `--connections`: wrk (one thread, `post_bodies.lua` cycling through
`sentences.txt`, like bench/run.py) against POST /predict of one server and then the other,
each a warm-up and a timed run, the order alternating from pair to pair (the baseline first in
the first pair). What counts is the median over the pairs of current ÷ baseline req/s: on a
shared machine a single run swings by ±20 %, but both sides of a pair see nearly the same
conditions. p99 latency of each side is the median over the pairs; their ratio as well.

Prints a Markdown table and the medians; writes bench/results/ab-<baseline>-<time>.json with
both commits (and whether this tree has uncommitted changes), the load average before and
after, and every pair's full wrk results. Not a test: asserts nothing about speed.

    .venv/bin/python bench/ab.py --baseline 9074866 [--pairs 5] [--connections 64]
        [--duration 10] [--warmup 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# bench/ is on sys.path when this file runs as a script; the helpers live in bench/run.py.
from run import (
    REPO,
    Server,
    ensure_wrk,
    errors_text,
    measure_pair,
    server_env,
    service_arguments,
    start_run,
    start_server,
    write_bodies,
)

# Asked of the interpreter in each tree, with the server's environment.
WHERE_FROM = "import app, training; print(app.__file__); print(training.__file__)"
# A frame of `py-spy dump --full-filenames`: "    function (/path/to/file.py:123)".
FRAME_FILE = re.compile(r"\((/[^()]+\.py):\d+\)")


# -- git -------------------------------------------------------------------------------------


def git(*args: str, cwd: Path = REPO) -> str:
    completed = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} (in {cwd}): {completed.stderr.strip()}")
    return completed.stdout.strip()


def resolve_commit(rev: str) -> str:
    try:
        return git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    except RuntimeError:
        sys.exit(f"ab: {rev!r} is not a commit of {REPO}")


def tree_state() -> dict[str, Any]:
    """HEAD, and what the working tree changes on top of it (the current server runs that)."""
    status = git("status", "--porcelain").splitlines()
    diff = subprocess.run(["git", "diff", "HEAD"], cwd=REPO, capture_output=True, check=True)
    return {
        "head": git("rev-parse", "HEAD"),
        "dirty": bool(status),
        "status": status,  # `git status --porcelain`: modified and untracked paths
        # Tells two runs on the same uncommitted changes from two on different ones.
        "diff_head_sha256": hashlib.sha256(diff.stdout).hexdigest(),
    }


def baseline_worktree(sha: str, where: Path | None) -> Path:
    """A clean checkout of `sha` in a worktree of its own: reused if there, else created."""
    path = (where or Path(tempfile.gettempdir()) / f"rnn-sentiment-baseline-{sha[:12]}").resolve()
    if path.is_relative_to(REPO) and path != REPO:
        ignored = subprocess.run(["git", "check-ignore", "-q", str(path)], cwd=REPO, check=False)
        if ignored.returncode != 0:
            sys.exit(f"ab: {path} is inside the repository and not git-ignored; choose another")
    if path.exists():
        try:
            top = Path(git("rev-parse", "--show-toplevel", cwd=path)).resolve()
            head = git("rev-parse", "HEAD", cwd=path)
            changes = git("status", "--porcelain", cwd=path)
        except RuntimeError as error:
            sys.exit(f"ab: {path} exists but is not a checkout: {error}")
        if top != path or head != sha or changes:
            sys.exit(
                f"ab: {path} is not a clean checkout of {sha[:12]} (top {top}, HEAD "
                f"{head[:12]}, changes: {changes or 'none'}); remove it with "
                f"`git worktree remove --force {path}`"
            )
        print(f"baseline worktree: {path} (reused, clean, HEAD {sha[:12]})", flush=True)
    else:
        # --force: /tmp may have been wiped while the worktree was still registered.
        git("worktree", "add", "--force", "--detach", str(path), sha)
        print(f"baseline worktree: {path} (created at {sha[:12]})", flush=True)
    return path


# -- the two servers -------------------------------------------------------------------------


def side_env(args: argparse.Namespace, tree: Path) -> dict[str, str]:
    """bench/run.py's server environment, with this tree's checkpoint and code first on the
    path (as `python -m app` in `tree` puts it anyway: explicit, in case PYTHONSAFEPATH is set)."""
    env = server_env(args)
    env.pop("PYTHONSAFEPATH", None)
    env["APP_MODEL_DIR"] = str(model_dir(args.model, tree))
    env["PYTHONPATH"] = str(tree)
    return env


def model_dir(model: Path, tree: Path) -> Path:
    return model if model.is_absolute() else tree / model


def imported_from(tree: Path, env: dict[str, str]) -> dict[str, str]:
    """Where this interpreter, started in `tree` with `env`, imports `app` and `training` from;
    exits unless both are the tree's own."""
    completed = subprocess.run(
        [sys.executable, "-c", WHERE_FROM],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        sys.exit(f"ab: cannot import the app in {tree}:\n{completed.stderr}")
    app_file, training_file = completed.stdout.split()
    found = {"app": app_file, "training": training_file}
    for name, file in found.items():
        print(f"  {tree}: {name} <- {file}", flush=True)
        if not Path(file).resolve().is_relative_to(tree):
            sys.exit(f"ab: in {tree}, {name} is imported from {file}, not from that tree")
    return found


def live_project_files(server: Server) -> list[str] | None:
    """The project's source files (app/, training/) on the running workers' stacks, from
    py-spy (.venv, bench extras): gunicorn preloads the app, so a worker's stack runs through
    app/__main__.py and app/http/server.py. None when py-spy is missing or not allowed to attach."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        return None
    files: set[str] = set()
    for worker in server.workers:
        dump = subprocess.run(
            [str(spy), "dump", "--full-filenames", "--pid", str(worker.pid)],
            capture_output=True,
            text=True,
            check=False,
        )
        if dump.returncode != 0:
            return None
        files.update(
            file
            for file in FRAME_FILE.findall(dump.stdout)
            if "site-packages" not in file and re.search(r"/(app|training)/", file)
        )
    return sorted(files)


def start_side(
    name: str, tree: Path, env: dict[str, str], work: Path
) -> tuple[Server, list[str] | None]:
    """The server of one side, started in `tree`; and the project files on its workers' stacks
    (checked to be the tree's own)."""
    server = start_server(
        name, [sys.executable, "-m", "app"], env, work / f"{name}-server.log", cwd=tree
    )
    cwds = {worker.cwd() for worker in server.workers}
    live = live_project_files(server)
    foreign = [file for file in live or [] if not Path(file).is_relative_to(tree)]
    if cwds != {str(tree)} or foreign:
        server.stop()
        sys.exit(f"ab: the {name} workers run in {cwds}, code from {foreign}, not from {tree}")
    print(
        f"{name}: ready in {server.ready_s:.2f} s (every worker {server.all_ready_s:.2f} s), "
        f"port {server.port}, workers {[w.pid for w in server.workers]} in {tree}",
        flush=True,
    )
    print(
        f"  {name} workers' stacks (py-spy): "
        + (", ".join(live) if live else "not available (py-spy missing or not allowed)"),
        flush=True,
    )
    return server, live


def side_info(
    server: Server, tree: Path, env: dict[str, str], imports: dict[str, str], live: list[str] | None
) -> dict[str, Any]:
    return {
        "tree": str(tree),
        "imports": imports,  # `python -c` in the tree, with the server's environment
        "workers_stack_files": live,  # py-spy on the running workers
        "workers_cwd": str(tree),
        "model_dir": env["APP_MODEL_DIR"],
        "ready_s": server.ready_s,
        "all_workers_ready_s": server.all_ready_s,
    }


# -- the pairs -------------------------------------------------------------------------------


def p99_ms(result: dict[str, Any]) -> float:
    return float(result["latency_us"]["percentiles"]["99"]) / 1000


def pair_summary(index: int, point: dict[str, Any], baseline_first: bool) -> dict[str, Any]:
    current, baseline = point["current"], point["baseline"]
    return {
        "pair": index + 1,
        "first": "baseline" if baseline_first else "current",
        "current_rps": current["rps"],
        "baseline_rps": baseline["rps"],
        "ratio": point["ratio"],
        "current_p99_ms": p99_ms(current),
        "baseline_p99_ms": p99_ms(baseline),
        "p99_ratio": p99_ms(current) / p99_ms(baseline),
        "current_p50_ms": current["latency_us"]["percentiles"]["50"] / 1000,
        "baseline_p50_ms": baseline["latency_us"]["percentiles"]["50"] / 1000,
        "current_cpu_us_per_request": current["cpu_us_per_request"],
        "baseline_cpu_us_per_request": baseline["cpu_us_per_request"],
        # The workers' CPU summed (200 = two cores busy): far below, the machine's other load,
        # not the server, set the rate of that run.
        "current_cpu_percent": sum(current["cpu_percent_per_worker"]),
        "baseline_cpu_percent": sum(baseline["cpu_percent_per_worker"]),
        "current_errors": errors_text(current),
        "baseline_errors": errors_text(baseline),
    }


def medians(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    def median(key: str) -> float:
        return float(statistics.median(pair[key] for pair in pairs))

    ratios = [pair["ratio"] for pair in pairs]
    return {
        "ratio": median("ratio"),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "current_faster_in": sum(ratio > 1 for ratio in ratios),
        "current_rps": median("current_rps"),
        "baseline_rps": median("baseline_rps"),
        "current_p99_ms": median("current_p99_ms"),
        "baseline_p99_ms": median("baseline_p99_ms"),
        # The ratio of the two medians above; the median of the per-pair ratios beside it.
        "p99_ratio": median("current_p99_ms") / median("baseline_p99_ms"),
        "p99_ratio_median_of_pairs": median("p99_ratio"),
        "current_cpu_us_per_request": median("current_cpu_us_per_request"),
        "baseline_cpu_us_per_request": median("baseline_cpu_us_per_request"),
        "current_cpu_percent": median("current_cpu_percent"),
        "baseline_cpu_percent": median("baseline_cpu_percent"),
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "| pair | first | current req/s | baseline req/s | ratio | current p99 ms "
        "| baseline p99 ms | p99 ratio | CPU µs/request current / baseline "
        "| workers' CPU % current / baseline | errors current / baseline |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for pair in results["pairs"]:
        lines.append(
            f"| {pair['pair']} | {pair['first']} | {pair['current_rps']:,.0f} "
            f"| {pair['baseline_rps']:,.0f} | {pair['ratio']:.3f} | {pair['current_p99_ms']:.2f} "
            f"| {pair['baseline_p99_ms']:.2f} | {pair['p99_ratio']:.3f} "
            f"| {pair['current_cpu_us_per_request']:,.0f} / "
            f"{pair['baseline_cpu_us_per_request']:,.0f} "
            f"| {pair['current_cpu_percent']:.0f} / {pair['baseline_cpu_percent']:.0f} "
            f"| {pair['current_errors']} / {pair['baseline_errors']} |"
        )
    m = results["median"]
    lines.append(
        f"| **median** | | {m['current_rps']:,.0f} | {m['baseline_rps']:,.0f} "
        f"| **{m['ratio']:.3f}** | {m['current_p99_ms']:.2f} | {m['baseline_p99_ms']:.2f} "
        f"| {m['p99_ratio']:.3f} | {m['current_cpu_us_per_request']:,.0f} / "
        f"{m['baseline_cpu_us_per_request']:,.0f} "
        f"| {m['current_cpu_percent']:.0f} / {m['baseline_cpu_percent']:.0f} | |"
    )
    return "\n".join(lines)


def summary_lines(results: dict[str, Any]) -> list[str]:
    m = results["median"]
    current, baseline = results["current"], results["baseline"]
    dirty = " + uncommitted changes" if current["dirty"] else ""
    lines = [
        f"- current {current['head'][:12]}{dirty} ÷ baseline {baseline['sha'][:12]}, "
        f"{len(results['pairs'])} pairs at c={results['connections']}, {results['duration_s']:g} s "
        f"each after {results['warmup_s']:g} s of warm-up, order alternating.",
        f"- req/s: median ratio {m['ratio']:.3f} (pairs {m['ratio_min']:.3f}-"
        f"{m['ratio_max']:.3f}; current faster in {m['current_faster_in']} of "
        f"{len(results['pairs'])}); medians {m['current_rps']:,.0f} vs {m['baseline_rps']:,.0f}.",
        f"- p99 (median over pairs): current {m['current_p99_ms']:.2f} ms, baseline "
        f"{m['baseline_p99_ms']:.2f} ms, ratio {m['p99_ratio']:.3f} (median of the per-pair "
        f"ratios {m['p99_ratio_median_of_pairs']:.3f}).",
        f"- Load average before / after: {results['load_before']} / {results['load_after']}; "
        f"{results['machine']['cpus']} CPUs.",
    ]
    if current["head_at_end"] != current["head"]:
        lines.append(
            f"- HEAD moved during the run to {current['head_at_end'][:12]}; the current server "
            f"ran the tree as it was at its start ({current['head'][:12]}{dirty})."
        )
    errors = [
        f"pair {p['pair']} {side} {p[side + '_errors']}"
        for p in results["pairs"]
        for side in ("current", "baseline")
        if p[side + "_errors"] != "0"
    ]
    if errors:
        lines.append(f"- ERRORS (req/s of a side with errors is not comparable): {errors}.")
    return lines


# -- main ------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="the baseline commit (any git rev)")
    parser.add_argument("--pairs", type=int, default=5, help="measured pairs (order alternating)")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per timed run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per run")
    parser.add_argument(
        "--worktree",
        type=Path,
        default=None,
        help="where to check the baseline out (default: $TMPDIR/rnn-sentiment-baseline-<sha>)",
    )
    # --workers, --model (a relative one is each tree's own) and --out, as bench/run.py's.
    service_arguments(parser)
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    return args


def main() -> int:
    args = parse_args()
    sha = resolve_commit(args.baseline)
    wrk = ensure_wrk()
    tree = baseline_worktree(sha, args.worktree)
    relative_model = args.model
    args.model = model_dir(relative_model, REPO)  # what start_run checks
    if not (model_dir(relative_model, tree) / "manifest.json").exists():
        sys.exit(f"ab: no checkpoint in {model_dir(relative_model, tree)}")
    texts, work, stamp = start_run(args, "ab")
    args.model = relative_model
    bodies = write_bodies(work / "bodies.jsonl", texts)

    results: dict[str, Any] = {
        "kind": "ab",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(["bench/ab.py", *sys.argv[1:]]),
        "python": sys.executable,
        "server_command": "python -m app (cwd: each tree)",
        "workers": args.workers,
        "connections": args.connections,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "settings": {k: v for k, v in os.environ.items() if k.startswith("APP_")},
        # .venv is installed from this tree's pyproject.toml; the baseline runs in it too.
        "pyproject_differs_from_baseline": bool(
            git("diff", sha, "--name-only", "--", "pyproject.toml")
        ),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }
    print(
        f"ab: baseline {sha[:12]} ({args.baseline}) vs this tree, {args.pairs} pairs at "
        f"c={args.connections}, {args.workers} workers each, load {results['load_before']}",
        flush=True,
    )
    envs = {"baseline": side_env(args, tree), "current": side_env(args, REPO)}
    print("where each side imports the project from:", flush=True)
    imports = {"baseline": imported_from(tree, envs["baseline"])}
    imports["current"] = imported_from(REPO, envs["current"])

    started: list[Server] = []
    try:
        baseline, baseline_live = start_side("baseline", tree, envs["baseline"], work)
        started.append(baseline)
        state = tree_state()  # the code the current server loads: the tree as it is now
        current, current_live = start_side("current", REPO, envs["current"], work)
        started.append(current)
        results["baseline"] = {
            "rev": args.baseline,
            "sha": sha,
            **side_info(baseline, tree, envs["baseline"], imports["baseline"], baseline_live),
        }
        results["current"] = {
            **state,
            **side_info(current, REPO, envs["current"], imports["current"], current_live),
        }
        results["pairs"] = []
        for index in range(args.pairs):
            baseline_first = index % 2 == 0
            point = measure_pair(
                wrk, current, baseline, bodies, args.connections, args, work,
                second_first=baseline_first, keys=("current", "baseline"),
            )  # fmt: skip
            summary = pair_summary(index, point, baseline_first)
            results["pairs"].append({**summary, "wrk": point})
            print(
                f"pair {index + 1}/{args.pairs}: ratio {summary['ratio']:.3f}, p99 "
                f"{summary['current_p99_ms']:.2f} vs {summary['baseline_p99_ms']:.2f} ms",
                flush=True,
            )
    finally:
        for server in started:
            server.stop()
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    results["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    results["current"]["head_at_end"] = git("rev-parse", "HEAD")
    results["median"] = medians(results["pairs"])

    path = args.out / f"ab-{sha[:7]}-{stamp}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    print()
    print(markdown(results))
    print()
    print("\n".join(summary_lines(results)))
    print(f"\nresults: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
