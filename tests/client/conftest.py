"""Fixtures for the client tests: the app tests' settings factory (the same tiny checkpoints).

The client is tested three ways: against `httpx.MockTransport` (retries, errors, bodies, the
CLI's output; see `mock.py`), against the app in process (the async client over ASGI), and
against real server processes over loopback (sync client, CLI, streams moving between
replicas).
"""

from tests.app.conftest import anyio_backend, make_settings

__all__ = ["anyio_backend", "make_settings"]
