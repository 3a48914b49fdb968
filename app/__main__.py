"""`python -m app` (behind `make serve`): the production server.

Reads `HOST` (default 127.0.0.1), `PORT` (8000) and `WORKERS` (1) from the environment and
the `APP_*` settings (validated here first, so a typo fails before any worker starts). Each
worker process loads its own copy of the model: budget memory per worker.

With `WORKERS` > 1 a gunicorn arbiter supervises uvicorn workers, each on its own
SO_REUSEPORT socket so connections are spread evenly (see `app.http.server`).

Exits with status 2 and one line on stderr per invalid setting (naming its variable) before
anything is loaded; non-zero as well when the app cannot start (for example a broken
checkpoint), also with several workers.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from typing import TypeVar

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


def main() -> int:
    # Both models are validated before either is used, so one run reports every bad setting.
    problems: dict[str, list[str]] = {}
    server = _validated(ServerSettings, problems)
    settings = _validated(Settings, problems)
    if server is None or settings is None:
        for name, messages in problems.items():
            print(f"{PROG}: invalid setting {name}: {'; '.join(messages)}", file=sys.stderr)
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
        from app.http.server import serve  # noqa: PLC0415 - after MULTIPROC_ENV (see above)

        return serve(APP, server)
    finally:
        if own_dir is not None and os.getpid() == arbiter_pid:  # not in a forked worker
            shutil.rmtree(own_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
