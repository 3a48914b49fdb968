"""`python -m app` (behind `make serve`): the production server.

Reads `HOST` (default 127.0.0.1), `PORT` (8000) and `WORKERS` (1) from the environment and
the `APP_*` settings (validated here first, so a typo fails before any worker starts). Each
worker process loads its own copy of the model: budget memory per worker.

Exits non-zero when the app cannot start (for example a broken checkpoint), also with several
workers, where uvicorn's supervisor would otherwise stop quietly with status 0.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

import uvicorn
from pydantic import ValidationError
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from app.core.config import ServerSettings, Settings
from app.core.logging import configure_logging
from app.metrics import MULTIPROC_ENV


def main() -> int:
    try:
        server = ServerSettings()
        settings = Settings()
    except ValidationError as error:
        print(f"invalid settings:\n{error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    config = uvicorn.Config(
        "app.main:app",
        host=server.host,
        port=server.port,
        workers=server.workers,
        lifespan="on",
        log_config=None,  # the app's own JSON logging (configure_logging) handles uvicorn's
        access_log=False,  # the app writes its own access log, with request ids
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    if server.workers == 1:
        single = uvicorn.Server(config)
        single.run()
        return 0 if single.started else STARTUP_FAILURE
    return _run_workers(config)


def _run_workers(config: uvicorn.Config) -> int:
    """Several worker processes on one socket; metrics shared through a temporary directory."""
    own_dir = None
    if not os.environ.get(MULTIPROC_ENV):
        own_dir = tempfile.mkdtemp(prefix="rnn-sentiment-metrics-")
        os.environ[MULTIPROC_ENV] = own_dir
    try:
        supervisor = Multiprocess(config, sockets=[config.bind_socket()])
        supervisor.run()
        failed = any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes)
        return STARTUP_FAILURE if failed else 0
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
