"""`python -m app` (behind `make serve`): the production server.

Reads `HOST` (default 127.0.0.1), `PORT` (8000) and `WORKERS` (1) from the environment and
the `APP_*` settings (validated here first, so a typo fails before any worker starts). Each
worker process loads its own copy of the model: budget memory per worker.

With `WORKERS` > 1 a gunicorn arbiter supervises uvicorn workers, each on its own
SO_REUSEPORT socket so connections are spread evenly (see `app.http.server`).

The same command is `rnn-sentiment serve` (`rnn_sentiment.cli`): its flags (`--host`,
`--port`, `--workers`, `--model-dir`, `--log-level`, `--log-format`) each set their variable,
so a flag and the environment are one configuration, validated once.

Expected mistakes end in one line on stderr, `rnn-sentiment: ...`, and status 2, before any
structured log and before the model loads: each invalid setting (naming its variable), a
missing or incomplete checkpoint directory or one whose files do not match its manifest, and
a port that another process holds (checked without SO_REUSEPORT, which the workers bind with:
with it, a second server of the same user would share the port silently instead of failing).
A checkpoint that passes these checks and still cannot be loaded by the app (an incompatible
config, say) makes the server exit with status 3, its last line on stderr one plain line
saying why, printed once however many workers failed.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

# SIGHUP reloads the model once the app runs (app.inference.slot); until then, while torch and the
# app are imported and the model loads, it is ignored rather than fatal (its default action).
signal.signal(signal.SIGHUP, signal.SIG_IGN)
# oneDNN keeps a compiled kernel for every input shape it has seen (up to 1,024 by default), so
# over varied batch shapes a worker's memory keeps growing (bench/shapes.py measures it).
# Bounded before torch runs anything; the predictor rounds batch shapes so everyday traffic
# needs only a few of them. Set the variable to override.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "32")

from pydantic import ValidationError  # noqa: E402 - after the signal disposition above
from pydantic_settings import BaseSettings  # noqa: E402

from app.core.config import MULTIPROC_ENV, ServerSettings, Settings  # noqa: E402
from app.core.logging import configure_logging  # noqa: E402

APP = "app.main:app"
PROG = "rnn-sentiment"
# Exit status for settings that fail validation (the usual one for a usage error): nothing has
# been loaded or started yet, so a supervisor restarting the process cannot help.
INVALID_SETTINGS = 2

_Model = TypeVar("_Model", bound=BaseSettings)


def _validated(model: type[_Model], problems: dict[str, list[str]]) -> _Model | None:
    """`model()` read from the environment, or None with each problem added under its variable.

    pydantic's own report spans several lines per error and repeats the rejected input, which
    for a key or secret is the credential itself: log shippers would keep it. Only the
    variable's name and the validator's message are kept, never the value.
    """
    try:
        return model()
    except ValidationError as error:
        prefix = str(model.model_config.get("env_prefix") or "")
        for item in error.errors(include_url=False, include_context=False, include_input=False):
            loc = item["loc"]
            name = f"{prefix}{loc[0]}".upper() if loc else model.__name__
            message = item["msg"].removeprefix("Value error, ").removeprefix(f"{name}: ")
            message = " ".join(message.split())  # one line, whatever the validator wrote
            if message not in problems.setdefault(name, []):
                problems[name].append(message)
        return None


# Each flag of `serve` and the variable it sets; the variable's default is the setting's.
FLAGS: dict[str, tuple[str, type[BaseSettings], str]] = {
    "--host": ("HOST", ServerSettings, "host"),
    "--port": ("PORT", ServerSettings, "port"),
    "--workers": ("WORKERS", ServerSettings, "workers"),
    "--model-dir": ("APP_MODEL_DIR", Settings, "model_dir"),
    "--log-level": ("APP_LOG_LEVEL", Settings, "log_level"),
    "--log-format": ("APP_LOG_FORMAT", Settings, "log_format"),
}
_HELP = {
    "--host": "address to listen on (0.0.0.0: every interface)",
    "--port": "TCP port to listen on (0: any free port)",
    "--workers": "worker processes, each with its own copy of the model",
    "--model-dir": "checkpoint directory to serve (`rnn-sentiment train --out DIR` writes one)",
    "--log-level": "log level of the app and uvicorn",
    "--log-format": "log line format",
}
_DESCRIPTION = """\
Serve the sentiment API (`python -m app` and `rnn-sentiment serve` are one command).

Each option sets the environment variable named in its help, and the variable is used when
the option is not given. Every other setting is an APP_* variable (see env.example).
"""


def build_parser(prog: str = "python -m app") -> argparse.ArgumentParser:
    """The options of `python -m app` / `rnn-sentiment serve`; `prog` names the command."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for flag, (variable, model, field) in FLAGS.items():
        info = model.model_fields[field]
        literal = get_origin(info.annotation) is Literal
        choices = get_args(info.annotation) if literal else None
        kind: Any = int if info.annotation is int else str
        metavar = None if choices else variable
        parser.add_argument(
            flag,
            type=kind,
            choices=choices,
            metavar=metavar,
            help=f"{_HELP[flag]} (sets {variable}; default: {info.default})",
        )
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "python -m app") -> int:
    args = build_parser(prog).parse_args(argv)
    from_flags: dict[str, str] = {}
    for flag, (variable, _, _) in FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None:
            os.environ[variable] = str(value)
            from_flags[variable] = flag
    # Both models are validated before either is used, so one run reports every bad setting.
    problems: dict[str, list[str]] = {}
    server = _validated(ServerSettings, problems)
    settings = _validated(Settings, problems)
    if server is None or settings is None:
        for name, messages in problems.items():
            shown = f"{name} (from {from_flags[name]})" if name in from_flags else name
            print(f"{PROG}: invalid setting {shown}: {'; '.join(messages)}", file=sys.stderr)
        return INVALID_SETTINGS
    # The cheap checks first: a wrong directory or a busy port is reported in a moment.
    # The default model must load for the service to start; the others are checked as they load.
    default_dir = settings.model_dirs()[settings.default_model]
    problem = model_dir_problem(default_dir) or port_problem(server.host, server.port)
    problem = problem or checkpoint_problem(default_dir)
    if problem is not None:
        print(f"{PROG}: {problem}", file=sys.stderr)
        return INVALID_SETTINGS
    configure_logging(settings.log_level, settings.log_format)
    # While a thread tokenizes a long request or runs a long pass, the event loop waits for the
    # GIL up to one switch interval before each step; a shorter interval keeps the other
    # requests' answers prompt (it changes nothing while the loop runs alone).
    sys.setswitchinterval(0.001)
    own_dir, arbiter_pid = None, os.getpid()
    # MULTIPROC_ENV must be set before prometheus_client is first imported, which picks its
    # multi-process mode then; so app.http.server, which imports it (and the app, preloaded
    # before the workers fork), is imported only after.
    if server.workers > 1 and not os.environ.get(MULTIPROC_ENV):
        # Several workers: prometheus_client keeps each one's values in files in this
        # directory, and /metrics adds them up.
        own_dir = tempfile.mkdtemp(prefix="rnn-sentiment-metrics-")
        os.environ[MULTIPROC_ENV] = own_dir
    try:
        from uvicorn.config import STARTUP_FAILURE  # noqa: PLC0415

        from app.http.server import serve  # noqa: PLC0415 - after MULTIPROC_ENV (see above)

        status = serve(APP, server)
        if status == STARTUP_FAILURE and os.getpid() == arbiter_pid:
            # Once, from the process the person started, however many workers failed.
            print(f"{PROG}: {startup_failure(default_dir)}", file=sys.stderr)
        return status
    finally:
        if own_dir is not None and os.getpid() == arbiter_pid:  # not in a forked worker
            shutil.rmtree(own_dir, ignore_errors=True)


_SET_MODEL_DIR = "set APP_MODEL_DIR= (or --model-dir) to a checkpoint directory"


def model_dir_problem(model_dir: Path) -> str | None:
    """Why `model_dir` cannot be a checkpoint at all (missing, not a directory), or None.

    Checked without importing torch or the checkpoint code, so the answer comes at once.
    """
    if not model_dir.exists():
        return (
            f"the model directory {model_dir} does not exist; {_SET_MODEL_DIR} "
            "(`rnn-sentiment train --out DIR` writes one)"
        )
    if not model_dir.is_dir():
        return f"the model directory {model_dir} is not a directory; {_SET_MODEL_DIR}"
    return None


def checkpoint_problem(model_dir: Path) -> str | None:
    """Why the checkpoint in `model_dir` cannot be served, or None: files missing from it, or
    not those its manifest lists (altered, truncated). Reads and hashes the files, runs no
    torch code: the process may still fork its workers."""
    from training.checkpoint import (  # noqa: PLC0415 - torch, only once the cheap checks pass
        MANIFEST_FILE,
        REQUIRED_FILES,
        CheckpointError,
        verify_manifest,
    )

    missing = [name for name in (MANIFEST_FILE, *REQUIRED_FILES) if not (model_dir / name).exists()]
    if missing:
        return (
            f"the model directory {model_dir} is not a complete checkpoint (missing "
            f"{', '.join(missing)}); {_SET_MODEL_DIR}"
        )
    try:
        verify_manifest(model_dir)
    except CheckpointError as error:
        return f"cannot serve the checkpoint in {model_dir}: {error}"
    return None


def startup_failure(model_dir: Path) -> str:
    """Why the app could not start, on one line, once its workers have stopped.

    The checkpoint passed the checks made before starting (`checkpoint_problem`) but the app
    could not load it: loading it again here names the reason (an incompatible config, say),
    now that no worker is left to fork from this process. When it loads (it was changed
    meanwhile, or something else failed), the log holds the reason.
    """
    from training.checkpoint import CheckpointError, load_checkpoint  # noqa: PLC0415

    try:
        load_checkpoint(model_dir)
    except CheckpointError as error:
        return f"cannot serve the checkpoint in {model_dir}: {' '.join(str(error).split())}"
    return f"the app could not start with the checkpoint in {model_dir}; the log above says why"


def port_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on `host`:`port`, or None (port 0: the system picks).

    Binds a socket there as the server will (SO_REUSEADDR: a port whose last connections are
    in TIME_WAIT is free) but without SO_REUSEPORT, which the workers use: with it, the bind
    would succeed next to another process's SO_REUSEPORT socket, and the two servers would
    share the port's connections instead of this one failing.
    """
    if port == 0:
        return None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except socket.gaierror:
            return f"cannot resolve the host {host!r}; set HOST= (or --host) to an address"
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is in use; set PORT= (or --port) to another"
            if error.errno == errno.EADDRNOTAVAIL:
                return (
                    f"{host} is not an address of this machine; set HOST= (or --host) to one "
                    "(127.0.0.1, or 0.0.0.0 for every interface)"
                )
            if error.errno == errno.EACCES:
                return (
                    f"port {port} on {host} needs privileges this process lacks; set PORT= "
                    "(or --port) to 1024 or above"
                )
            return f"cannot listen on {host}:{port} ({error.strerror}); set HOST= or PORT="
    return None


if __name__ == "__main__":
    sys.exit(main())
