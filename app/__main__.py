"""`python -m app` (behind `make serve`): the production server.

Reads `HOST` (default 127.0.0.1), `PORT` (8000) and `WORKERS` (1) from the environment and
the `APP_*` settings (validated here first, so a typo fails before any worker starts). Each
worker process loads its own copy of the model: budget memory per worker.

With `WORKERS` > 1 a gunicorn arbiter supervises uvicorn workers, each on its own
SO_REUSEPORT socket so connections are spread evenly (see `app.server`).

Exits non-zero when the app cannot start (for example a broken checkpoint), also with several
workers.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile

# SIGHUP reloads the model once the app runs (app.serving); until then, while torch and the
# app are imported and the model loads, it is ignored rather than fatal (its default action).
signal.signal(signal.SIGHUP, signal.SIG_IGN)
# oneDNN keeps a compiled kernel for every input shape it has seen, up to 1,024 by default,
# about 0.25 MB each for the shipped LSTM: over varied batch shapes a worker grew by ~300 MB
# (bench/shapes.py). Bounded before torch runs anything; the predictor rounds batch shapes so
# everyday traffic needs only a few of them. Set the variable to override.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "32")

from pydantic import ValidationError  # noqa: E402 - after the signal disposition above

from app.core.config import ServerSettings, Settings  # noqa: E402
from app.core.logging import configure_logging  # noqa: E402

APP = "app.main:app"
# prometheus_client's variable (see app.metrics). It must be set before prometheus_client is
# first imported, which picks its multi-process mode then; so app.server, which imports it
# (and the app, preloaded before the workers fork), is imported only after.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def main() -> int:
    try:
        server = ServerSettings()
        settings = Settings()
    except ValidationError as error:
        print(f"invalid settings:\n{error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    own_dir, arbiter_pid = None, os.getpid()
    if server.workers > 1 and not os.environ.get(MULTIPROC_ENV):
        # Several workers: prometheus_client keeps each one's values in files in this
        # directory, and /metrics adds them up.
        own_dir = tempfile.mkdtemp(prefix="rnn-sentiment-metrics-")
        os.environ[MULTIPROC_ENV] = own_dir
    try:
        from app.server import serve  # noqa: PLC0415 - after MULTIPROC_ENV (see above)

        return serve(APP, server)
    finally:
        if own_dir is not None and os.getpid() == arbiter_pid:  # not in a forked worker
            shutil.rmtree(own_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
