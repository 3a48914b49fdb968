"""Hot-swap benchmark: the served model reloaded again and again under load (docs/reliability.md).

Starts `make serve` (`WORKERS=2` unless `--workers`) with `APP_MODEL_DIR` a symlink to one of
two checkpoints: the default model and a re-saved copy of it under another name (same weights,
another manifest, so another version). wrk drives `/predict` at `--connections` for the whole
run; meanwhile, every `--every` seconds, the symlink is flipped to the other checkpoint and
`POST /admin/reload` is called, which reloads the worker that answers and, through the gunicorn
arbiter, every other worker. Half-way, one reload points at a damaged copy (a flipped byte in
the weights): it must be refused with 409 and change nothing.

Prints: requests served and every non-200 status wrk saw, each reload's outcome and time,
the version every worker answers with at the end, and worker RSS before and after the reloads.
A bounded script, not a test; exit status 1 when any request failed or a reload misbehaved.

    .venv/bin/python bench/reload.py [--reloads 10] [--every 3] [--connections 64]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (  # bench/ is not a package
    REPO,
    ensure_wrk,
    free_port,
    make_serve,
    memory,
    read_sentences,
    run_wrk,
    start_server,
    write_bodies,
)

from training.checkpoint import WEIGHTS_FILE, load_checkpoint, save_checkpoint


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "model_store" / "default")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--reloads", type=int, default=10)
    parser.add_argument("--every", type=float, default=3.0, help="seconds between reloads")
    return parser.parse_args()


def prepare(model: Path, work: Path) -> tuple[Path, Path, Path]:
    """The served model, a re-saved copy under another version, and a damaged copy."""
    checkpoint = load_checkpoint(model)
    twin = work / "twin"
    save_checkpoint(
        twin,
        model=checkpoint.model,
        labels=checkpoint.labels,
        vocab=checkpoint.vocab,
        card={**checkpoint.card, "name": f"{checkpoint.name}-twin"},
    )
    damaged = work / "damaged"
    shutil.copytree(twin, damaged)
    weights = bytearray((damaged / WEIGHTS_FILE).read_bytes())
    weights[len(weights) // 2] ^= 0xFF
    (damaged / WEIGHTS_FILE).write_bytes(bytes(weights))
    return model.resolve(), twin, damaged


def point(link: Path, target: Path) -> None:
    staging = link.with_name(link.name + ".new")
    staging.unlink(missing_ok=True)
    staging.symlink_to(target)
    staging.replace(link)


def versions_answering(url: str, requests: int = 40) -> dict[str, int]:
    """Model versions seen over `requests` new connections (spread over the workers)."""
    seen: dict[str, int] = {}
    for _ in range(requests):
        with httpx.Client(timeout=10) as client:  # a new connection each: any worker
            answer = client.post(f"{url}/predict", json={"text": "How is it now?"}).json()
        version = answer["model"]["version"]
        seen[version] = seen.get(version, 0) + 1
    return seen


def main() -> int:
    args = parse_args()
    wrk = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="rnn-sentiment-reload-"))
    admin_key = secrets.token_hex(16)
    try:
        served, twin, damaged = prepare(args.model, work)
        link = work / "current"
        link.symlink_to(served)
        env = {
            **{k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
            "HOST": "127.0.0.1",
            "PORT": str(free_port()),
            "WORKERS": str(args.workers),
            "APP_MODEL_DIR": str(link),
            "APP_ADMIN_KEYS": admin_key,
            "APP_ACCESS_LOG": "false",
        }
        server = start_server("reload", make_serve(), env, work / "server.log")
        try:
            return drive(
                args,
                wrk,
                server.url,
                server.workers,
                link,
                (served, twin),
                damaged,
                admin_key,
                work,
            )
        finally:
            server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def reload_once(
    url: str, headers: dict[str, str], to: str, number: int, workers: list[Any]
) -> dict[str, Any]:
    """POST /admin/reload; what it answered, how long it took, and the workers' RSS after."""
    started = time.perf_counter()
    response = httpx.post(f"{url}/admin/reload", headers=headers, timeout=60)
    wall = time.perf_counter() - started
    body = response.json()
    entry = {
        "to": to,
        "status": response.status_code,
        "wall_s": round(wall, 3),
        "outcome": body.get("status") or body["error"]["code"],
        "reload_s": body.get("seconds"),
    }
    rss = " ".join(f"{m['rss_mb']:.0f}" for m in memory(workers))
    print(
        f"  reload {number + 1:2d} -> {to:>12}: {response.status_code} {entry['outcome']}, "
        f"{wall:.2f}s; worker RSS MB {rss}",
        flush=True,
    )
    return entry


def drive(
    args: argparse.Namespace,
    wrk: str,
    url: str,
    workers: list[Any],
    link: Path,
    pair: tuple[Path, Path],
    damaged: Path,
    admin_key: str,
    work: Path,
) -> int:
    bodies = write_bodies(work / "bodies.jsonl", read_sentences())
    headers = {"Authorization": f"Bearer {admin_key}"}
    versions = {path: load_checkpoint(path).version for path in pair}
    # Warm-up at the same load, then the memory baseline.
    run_wrk(
        wrk,
        f"{url}/predict",
        bodies,
        connections=args.connections,
        seconds=5,
        out=work / "warmup.json",
    )
    rss_before = [m["rss_mb"] for m in memory(workers)]
    seconds = args.reloads * args.every + 2 * args.every
    result: dict[str, Any] = {}
    load = threading.Thread(
        target=lambda: result.update(
            run_wrk(
                wrk,
                f"{url}/predict",
                bodies,
                connections=args.connections,
                seconds=seconds,
                out=work / "load.json",
            )
        )
    )
    load.start()
    reloads: list[dict[str, Any]] = []
    misbehaved: list[str] = []
    time.sleep(args.every)
    target = pair[0]
    for number in range(args.reloads):
        bad = number == args.reloads // 2
        if not bad:
            target = pair[1] if target == pair[0] else pair[0]
        point(link, damaged if bad else target)
        entry = reload_once(url, headers, "damaged" if bad else versions[target], number, workers)
        reloads.append(entry)
        if entry["status"] != (409 if bad else 200):
            misbehaved.append(f"reload {number + 1}: {entry}")
        if bad:
            point(link, target)  # back to the model in place, as an operator would
        time.sleep(args.every)
    load.join()
    time.sleep(args.every)  # the other workers' background reloads
    final = versions_answering(url)
    rss_after = [m["rss_mb"] for m in memory(workers)]
    counts = result.get("status", {})
    served = counts.get("200", 0)
    failed = {status: n for status, n in counts.items() if status != "200"}
    socket_errors = {kind: n for kind, n in result.get("socket_errors", {}).items() if n}
    print()
    print(
        f"wrk c={args.connections}, {seconds:.0f}s: {served} answered 200, other statuses "
        f"{failed or 'none'}, socket errors {socket_errors or 'none'}"
    )
    good = [r["wall_s"] for r in reloads if r["status"] == 200]
    if good:
        print(
            f"reloads: {len(good)} swaps, each {min(good):.2f}-{max(good):.2f}s "
            f"(POST to answer); damaged checkpoint: "
            f"{[r['status'] for r in reloads if r['to'] == 'damaged']}"
        )
    print(
        f"versions answering at the end (40 new connections): {final}; expected {versions[target]}"
    )
    print(
        "worker RSS MB before -> after: "
        + ", ".join(f"{a:.0f} -> {b:.0f}" for a, b in zip(rss_before, rss_after, strict=True))
    )
    if failed or socket_errors:
        misbehaved.append(f"requests failed: {failed} {socket_errors}")
    if set(final) != {versions[target]}:
        misbehaved.append(f"not every worker serves {versions[target]}: {final}")
    for problem in misbehaved:
        print(f"PROBLEM: {problem}")
    return 1 if misbehaved else 0


if __name__ == "__main__":
    sys.exit(main())
