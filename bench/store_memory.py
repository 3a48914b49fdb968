"""What a second model costs in memory: the real server with a store of 1, 2 and 4 models.

The store (`APP_MODEL_STORE`) loads every model into the same worker, each with its own runtime
(batcher, threads) on the process's one copy of Python, PyTorch and the app. This measures that
claim. For each store size it builds a temporary store of that many copies of the checkpoint in
`--model` (the shipped default unless told otherwise), each under its own name (`default`,
`copy-2`, `copy-3`, ...), starts `python -m app` on it (one worker, every other setting at its
default) and records, once `/readyz` answers 200 and every model is `ready` in `GET /models`:

- the worker's RSS and USS (psutil), and again after one /predict to every model;
- the bytes of weights each model says it holds (`memory_bytes` in `GET /models`);
- the time from process start to ready.

Each size runs `--rounds` times, in the order 1, 2, 4, 1, 2, 4, ... so that a drift of the
shared machine spreads over every size; the medians are compared. Printed as a Markdown table,
the cost per added model beside the weights it holds; `--out` saves the JSON.

    .venv/bin/python bench/store_memory.py [--sizes 1,2,4] [--rounds 3] [--out FILE]

Not a test; it asserts nothing. The same copy of one checkpoint is loaded N times: the service
does not share weights between models, so each copy costs what a different model of the same
shape would.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import REPO, free_port, memory, start_server  # bench/ is not a package

MIB = 2**20


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, default=REPO / "model_store" / "default")
    parser.add_argument(
        "--sizes",
        default="1,2,4",
        type=lambda text: [int(size) for size in text.split(",")],
        help="store sizes to measure, comma-separated (default 1,2,4)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="runs of each size (default 3)")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    return parser.parse_args()


def model_names(count: int) -> list[str]:
    return ["default", *(f"copy-{index}" for index in range(2, count + 1))]


def build_store(model: Path, root: Path, count: int) -> Path:
    """A store of `count` copies of the checkpoint in `model`, the first named `default`."""
    store = root / f"store-{count}"
    if not store.exists():
        for name in model_names(count):
            shutil.copytree(model, store / name)
    return store


def server_env(store: Path) -> dict[str, str]:
    """The environment of one run: the caller's, without any APP_* setting, plus the store."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("APP_") and name not in {"HOST", "PORT", "WORKERS"}
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        {"HOST": "127.0.0.1", "PORT": str(free_port()), "WORKERS": "1"},
        APP_MODEL_STORE=str(store),
    )
    return env


def measure(store: Path, count: int, log: Path) -> dict[str, Any]:
    """One run: the server on `store`, its worker's memory at ready and after one request each."""
    env = server_env(store)
    server = start_server(f"store of {count}", [sys.executable, "-m", "app"], env, log)
    try:
        [worker] = server.workers
        with httpx.Client(base_url=server.url, timeout=30) as client:
            models = client.get("/models").raise_for_status().json()["models"]
            statuses = {model["name"]: model["status"] for model in models}
            if statuses != dict.fromkeys(model_names(count), "ready"):
                raise RuntimeError(f"not every model is ready: {statuses}")
            time.sleep(1.0)  # let the start-up's last allocations settle before reading
            [at_ready] = memory([worker])
            for model in models:
                body = {"text": "The staff were lovely.", "model": model["name"]}
                answer = client.post("/predict", json=body).raise_for_status().json()
                if answer["model"]["name"] != model["name"]:
                    raise RuntimeError(f"{model['name']} was answered by {answer['model']}")
            [after_predict] = memory([worker])
        return {
            "models": count,
            "ready_s": round(server.ready_s, 2),
            "rss_mb": round(at_ready["rss_mb"], 1),
            "uss_mb": round(at_ready["uss_mb"], 1),
            "rss_after_predict_mb": round(after_predict["rss_mb"], 1),
            "uss_after_predict_mb": round(after_predict["uss_mb"], 1),
            "weights_mb_per_model": [
                round((model["memory_bytes"] or 0) / MIB, 2) for model in models
            ],
        }
    finally:
        server.stop()


def summarise(runs: list[dict[str, Any]], sizes: list[int]) -> list[dict[str, Any]]:
    """The median of each size's runs, and the cost of each model beyond the first."""
    rows = []
    for size in sizes:
        mine = [run for run in runs if run["models"] == size]
        row: dict[str, Any] = {"models": size, "runs": len(mine)}
        for key in ("rss_mb", "uss_mb", "rss_after_predict_mb", "uss_after_predict_mb", "ready_s"):
            row[key] = round(statistics.median(run[key] for run in mine), 1)
        row["weights_mb_per_model"] = mine[0]["weights_mb_per_model"][0]
        rows.append(row)
    base = next((row for row in rows if row["models"] == 1), None)
    for row in rows:
        if base is not None and row["models"] > 1:
            extra = row["models"] - 1
            row["rss_per_added_model_mb"] = round((row["rss_mb"] - base["rss_mb"]) / extra, 1)
            row["uss_per_added_model_mb"] = round((row["uss_mb"] - base["uss_mb"]) / extra, 1)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| models | RSS at ready | USS at ready | RSS after /predict to each | "
        "per added model (RSS / USS) | weights per model | ready after |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        added = (
            f"{row['rss_per_added_model_mb']:.1f} / {row['uss_per_added_model_mb']:.1f} MB"
            if "rss_per_added_model_mb" in row
            else "—"
        )
        lines.append(
            f"| {row['models']} | {row['rss_mb']:.0f} MB | {row['uss_mb']:.0f} MB | "
            f"{row['rss_after_predict_mb']:.0f} MB | {added} | "
            f"{row['weights_mb_per_model']:.2f} MB | {row['ready_s']:.1f} s |"
        )
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    if not (args.model / "manifest.json").is_file():
        sys.exit(f"store_memory: {args.model} holds no checkpoint (no manifest.json)")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="store-memory-") as scratch:
        root = Path(scratch)
        for round_number in range(1, args.rounds + 1):
            for size in args.sizes:
                store = build_store(args.model, root, size)
                run = measure(store, size, root / f"server-{size}-{round_number}.log")
                run["round"] = round_number
                runs.append(run)
                print(
                    f"round {round_number}, {size} model(s): RSS {run['rss_mb']:.0f} MB, "
                    f"USS {run['uss_mb']:.0f} MB, ready in {run['ready_s']:.1f} s",
                    flush=True,
                )
    rows = summarise(runs, args.sizes)
    print()
    print(markdown(rows))
    result = {
        "command": "bench/store_memory.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "model": str(args.model.resolve().relative_to(REPO))
        if args.model.resolve().is_relative_to(REPO)
        else str(args.model),
        "weights_file_mb": round((args.model / "model.safetensors").stat().st_size / MIB, 2),
        "summary": rows,
        "runs": runs,
    }
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
