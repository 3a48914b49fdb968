"""The production server behind `python -m app`: uvicorn, one process or several workers.

One worker: a plain uvicorn server. Several: a gunicorn arbiter supervising uvicorn workers
(restarting any that die), each worker with its own listening socket bound with SO_REUSEPORT,
so the kernel spreads new connections evenly over the workers. With one socket shared by every
worker (uvicorn's own `--workers`), whichever worker is awake first accepts, and keep-alive
connections can pile onto one worker while the other idles.

The arbiter imports the app before forking (gunicorn's preload: torch and FastAPI are imported
once and their pages shared); the app loads nothing at import. Every worker runs the same
uvicorn settings (`UVICORN_OPTIONS`), loads its own copy of the model in the app's lifespan, and
exits with `STARTUP_FAILURE` (3) when the app cannot start; the arbiter then stops with that
status too. SIGHUP to the arbiter is passed on to every worker, which reloads its model in place
(`app.inference.slot`); gunicorn's own restart-all-workers reload is not used. Every process
logs through the app's one root handler (`app.core.logging.configure_logging`).
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import socket
import sys
from typing import Any

import uvicorn
from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter
from gunicorn.errors import HaltServer
from gunicorn.glogging import Logger as GunicornLogger
from prometheus_client import multiprocess
from uvicorn.config import STARTUP_FAILURE
from uvicorn_worker import UvicornWorker

from app.core.config import ServerSettings, Settings, get_settings
from app.core.logging import configure_logging
from app.core.metrics import multiprocess_mode
from app.inference.slot import ARBITER_PID_ENV, StartupError

# The same for the single-process server and for every gunicorn worker.
UVICORN_OPTIONS: dict[str, Any] = {
    "loop": "auto",  # uvloop when installed
    # httptools, with a deadline for request headers (uvicorn has none: see app.http.protocol)
    "http": "app.http.protocol:HeaderTimeoutProtocol",
    "lifespan": "on",  # a lifespan that fails stops the worker instead of serving without a model
    "log_config": None,  # the app's own logging (app.core.logging) handles uvicorn's records
    "access_log": False,  # the app writes its own access log, with request ids
    "server_header": False,
    # Forwarded headers are applied by the app, and only from APP_TRUSTED_PROXIES (app.main);
    # uvicorn's own default would trust them from 127.0.0.1.
    "proxy_headers": False,
    # Compressed WebSocket messages could inflate far past the size they arrive at; messages
    # are small JSON, so compression buys nothing.
    "ws_per_message_deflate": False,
    "timeout_graceful_shutdown": 10,
    "timeout_keep_alive": 5,
}
GRACEFUL_TIMEOUT_S = 10


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """`UVICORN_OPTIONS` with the limits that come from the app's settings: a WebSocket
    message larger than the app accepts is refused by the transport, before it is buffered."""
    return {**UVICORN_OPTIONS, "ws_max_size": settings.stream_ws_max_message_bytes}


class _ToldStartupFailure(logging.Filter):
    """Drops uvicorn's copy of a start-up failure the app has reported itself.

    When the app's lifespan fails, uvicorn logs the exception's whole traceback as one error
    message. For a `StartupError` the app has already printed the reason on one line and
    logged it (`app.main`): the traceback would repeat it at length, once per worker.
    """

    _MARK = f"{StartupError.__module__}.{StartupError.__qualname__}:"

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg
        if not isinstance(message, str) or not message.startswith("Traceback"):
            return True
        last = message.rstrip().rpartition("\n")[2]
        return not last.startswith(self._MARK)


def serve(target: str, server: ServerSettings) -> int:
    """Serve the ASGI app `target` ("module:attribute") until stopped; the exit status."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    # On the logger itself: configure_logging replaces handlers, never a logger's filters,
    # and gunicorn's forked workers inherit it.
    logging.getLogger("uvicorn.error").addFilter(_ToldStartupFailure())
    options = uvicorn_options(settings)
    # SIGHUP reloads the checkpoint (app.inference.slot) once the app has started; until then it is
    # ignored rather than fatal (its default), in this process and in gunicorn's workers.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # (`python -m app` did it already, first thing)
    if server.workers == 1:
        single = uvicorn.Server(
            uvicorn.Config(target, host=server.host, port=server.port, **options)
        )
        try:
            single.run()
        except SystemExit as stop:  # how uvicorn leaves when the app fails to start
            return stop.code if isinstance(stop.code, int) else STARTUP_FAILURE
        return 0 if single.started else STARTUP_FAILURE
    arbiter_pid = os.getpid()
    port = server.port or _free_port(server.host)  # every worker must bind the same port
    os.environ[ARBITER_PID_ENV] = str(arbiter_pid)  # lets a worker's /admin/reload reach all
    # Returns in the arbiter only: a forked worker leaves through SystemExit, which propagates.
    try:
        _Application(target, server.host, port, server.workers).run()
    except SystemExit as stop:
        if os.getpid() != arbiter_pid:
            raise
        return stop.code if isinstance(stop.code, int) else 1
    except HaltServer as halt:
        # A second worker failing to boot while the arbiter halts for the first one raises
        # HaltServer again from inside gunicorn's halt(), past its own handler.
        if os.getpid() != arbiter_pid:
            raise
        return int(halt.exit_status)
    return 0


class Worker(UvicornWorker):  # type: ignore[misc]
    """A gunicorn worker running uvicorn with `UVICORN_OPTIONS`, logging through the root."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = get_settings()
        # Read by UvicornWorker.__init__; gunicorn sets the keep-alive itself.
        self.CONFIG_KWARGS = {
            key: value
            for key, value in uvicorn_options(settings).items()
            if key != "timeout_keep_alive"
        }
        super().__init__(*args, **kwargs)
        # UvicornWorker points uvicorn's loggers at gunicorn's handlers: back to the root's.
        configure_logging(settings.log_level, settings.log_format)

    def init_signals(self) -> None:
        super().init_signals()
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the app handles it (see serve)


class _Arbiter(Arbiter):  # type: ignore[misc]
    """gunicorn's arbiter, except that SIGHUP reloads the model inside every worker.

    gunicorn's own SIGHUP starts new workers and stops the old ones, which drops a worker's
    capacity while its replacement loads, and halts the whole server if the new checkpoint
    is bad (a worker that fails to boot stops the arbiter). Each worker's reload
    (app.inference.slot) keeps serving throughout, and a bad checkpoint leaves the old model
    serving.
    """

    def handle_hup(self) -> None:
        self.log.info("SIGHUP: every worker reloads its model")
        for pid in list(self.WORKERS):
            self.kill_worker(pid, signal.SIGHUP)


class _RootLogger(GunicornLogger):  # type: ignore[misc]
    """gunicorn's logger, minus its own handlers: records go to the root (JSON or text)."""

    def setup(self, cfg: Any) -> None:
        self.cfg = cfg
        self._access_log_enabled = False
        self.error_log.handlers.clear()
        self.error_log.propagate = True
        self.error_log.setLevel(logging.getLogger().level)
        self.access_log.handlers.clear()
        self.access_log.propagate = False

    def access(self, *args: Any, **kwargs: Any) -> None:
        """The app writes its own access log."""


def _child_exit(arbiter: Arbiter, worker: Any) -> None:
    """Drop a dead worker's live gauges from the shared metrics (a clean exit did it already)."""
    if multiprocess_mode():
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


class _Application(BaseApplication):  # type: ignore[misc]
    def __init__(self, target: str, host: str, port: int, workers: int) -> None:
        self.target = target
        self.options = {
            "bind": [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"],
            "workers": workers,
            "worker_class": f"{Worker.__module__}.{Worker.__qualname__}",
            "reuse_port": True,
            "keepalive": UVICORN_OPTIONS["timeout_keep_alive"],
            "graceful_timeout": GRACEFUL_TIMEOUT_S,
            "timeout": 60,  # a worker silent this long (loop blocked) is replaced
            "logger_class": f"{_RootLogger.__module__}.{_RootLogger.__qualname__}",
            "child_exit": _child_exit,
            "proc_name": "rnn-sentiment",
            "preload_app": True,
            "control_socket_disable": True,  # no gunicorn control socket file in the work dir
        }
        super().__init__()

    def run(self) -> None:
        try:
            _Arbiter(self).run()
        except RuntimeError as error:  # as gunicorn's own run(): a configuration error
            print(f"\nError: {error}\n", file=sys.stderr)
            sys.exit(1)

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        # Called once in the arbiter (preload_app): the modules (torch, FastAPI, the app) are
        # imported once, before the fork, and their pages are shared by every worker. The app
        # loads nothing at import; each worker's lifespan loads its own model.
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
