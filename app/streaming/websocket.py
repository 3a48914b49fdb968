"""The /stream/ws protocol: its rules, its close codes and the reasons they are sent for.

Everything here is plain Python, testable without a socket or a web framework; the route
(`app.api.routes.stream`) speaks the protocol: it accepts and closes the socket, asks the
gate (`app.http.security`) about keys and rate limits, validates each message with the wire
schema, and answers it.

Messages. Every text message is a JSON object, the same as a `POST /stream` body; every answer
is the same as its response. A refused message gets one error message in the common shape, then
the connection is closed with a code and the error code as the reason: 1003 for a binary
message, 1007 for a message that is not JSON, 1008 for an invalid message or state, a missing
or wrong API key (`unauthorized`) or too many messages (`rate_limited`), 1013 when the model is
not ready or too busy or the worker holds too many connections (`too_many_connections`). Two
closes come without an error message: 1001 `idle` after `APP_STREAM_WS_IDLE_TIMEOUT_S` of
silence, and 1009 for a message over `APP_STREAM_WS_MAX_MESSAGE_BYTES`, which the server
(`app.http.server`: uvicorn's `ws_max_size`) refuses from its frame header, before buffering
it; the route checks the size again (1009 `message_too_big`, with the error message) in case it
runs under a server without that limit.

Authentication. With `APP_API_KEYS` set, a client sends `Authorization: Bearer <key>` on the
handshake, checked by `app.http.security` as on every HTTP route; or, since browsers cannot set
that header, `{"api_key": "<key>"}` as its first message, answered by `{"authenticated": true}`,
within `APP_STREAM_WS_AUTH_TIMEOUT_S` of the handshake. A wrong key, any other first message,
or none in time closes the connection with 1008 `unauthorized`. Keys are never read from the
URL: URLs end up in logs.

Rate limits. Every message after authentication counts against the caller's
`APP_RATE_LIMIT_PER_MINUTE` bucket as one HTTP request does: the same bucket as the caller's
HTTP requests (its key's, or its address's when the service has no keys). The authentication
message does not count, as a refused HTTP request does not. A message over the limit is not
read: the client gets `rate_limited` (its message says when to retry) and the connection is
closed with 1008. Keeping the connection open would not save the client anything: the piece
was not read, so it must be sent again from the same state after the wait anyway, and one rule
(a refused message ends the connection) is simpler to handle than two. Each connection also
has its own message rate (`APP_STREAM_WS_RATE`, bursts of `APP_STREAM_WS_BURST`), refused the
same way.

Connections. A worker holds at most `APP_STREAM_WS_MAX_CONNECTIONS` sockets. One past it is
accepted and at once closed with 1013 `too_many_connections`, after the error message. Refusing
it at the handshake would cost a little less, but a browser reports a refused handshake only
as close code 1006, the same as a network failure; 1013 "try again later" with a reason tells
every client what happened and what to do.

Origin. Browsers let any page open a WebSocket to any server, and send the page's origin with
the handshake (`Origin`); without a check, any site a user visits could use a service they can
reach and the site cannot, such as one on their own machine (cross-site WebSocket hijacking). A
handshake with an `Origin` is accepted when the origin is listed in `APP_CORS_ORIGINS` (scheme,
host and port; `*` lists every origin), or has the host and port of the handshake's `Host`: the
page is one the service serves itself. The scheme is not compared, as a TLS-terminating proxy
in front makes it differ; a `Host` without a port matches its name on any port, as a proxy may
drop the port (nginx's `$host` does), and to a browser another port of the same name is the
same site anyway (it shares its cookies). Anything else is refused at the handshake (HTTP 403)
and logged.
Clients that send no `Origin` (anything but a browser) are not affected.

DNS rebinding defeats the same-origin rule on its own: a page at `http://attacker.test:8000`
whose name the attacker then points at 127.0.0.1 sends `attacker.test:8000` as both `Origin` and
`Host`. With API keys set the page gets nowhere (it has no key to authenticate with). Without
keys, a connection that arrived on a loopback address, the usual target, passes the same-origin
rule only when `Host` names `localhost` or an IP address, which no DNS answer can re-point; a
page reached through a name (a proxy on the same machine, say) needs its origin listed in
`APP_CORS_ORIGINS`. Elsewhere (on another address, and on every HTTP route) a service without
keys answers whatever page or client reaches it: keys, or a proxy that accepts only the
service's own names, are what protect it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import orjson


class CloseCode:
    """The close codes the protocol sends (RFC 6455, section 7.4.1; 1013 from IANA's list)."""

    GOING_AWAY: Final = 1001
    UNSUPPORTED_DATA: Final = 1003
    INVALID_PAYLOAD: Final = 1007
    POLICY_VIOLATION: Final = 1008
    MESSAGE_TOO_BIG: Final = 1009
    TRY_AGAIN_LATER: Final = 1013


# The reason of the one close that comes without an error message (a silent connection).
IDLE = "idle"

UNAUTHORIZED = (
    "A valid API key is required: send 'Authorization: Bearer <key>' on the handshake, "
    'or {"api_key": "<key>"} as the first message.'
)
AUTHENTICATED = '{"authenticated":true}'


class RefusedError(Exception):
    """Close the connection with `code`, after an error message with `error_code`."""

    def __init__(self, code: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.error_code = error_code
        self.message = message


def not_ready() -> RefusedError:
    return RefusedError(
        CloseCode.TRY_AGAIN_LATER, "not_ready", "The model is not loaded yet; retry later."
    )


def unauthorized(waited_s: float | None = None) -> RefusedError:
    """No valid key: a wrong one, another first message, or none within `waited_s`."""
    message = UNAUTHORIZED
    if waited_s is not None:
        message = f"{UNAUTHORIZED} None arrived within {waited_s:g} seconds."
    return RefusedError(CloseCode.POLICY_VIOLATION, "unauthorized", message)


def policy_violation(error_code: str, message: str) -> RefusedError:
    """A message refused by a rule of the service (such as the caller's rate limit)."""
    return RefusedError(CloseCode.POLICY_VIOLATION, error_code, message)


class Connections:
    """The /stream/ws connections open in one worker (one event loop: no lock needed).

    `create_app` makes one per app, and each worker has its own app."""

    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open = 0

    def enter(self, limit: int) -> None:
        """Count one more connection, or `RefusedError` when `limit` are open already.

        Synchronous on purpose: the check and the count happen with no await between them, so
        no handshake can slip past the cap."""
        if self.open >= limit:
            raise RefusedError(
                CloseCode.TRY_AGAIN_LATER,
                "too_many_connections",
                f"This server holds {limit} WebSocket connections already; retry later.",
            )
        self.open += 1

    def leave(self) -> None:
        self.open -= 1


class Bucket(Protocol):
    """A connection's own message rate (`app.http.ratelimit.TokenBucket`)."""

    rate: float
    burst: float

    def acquire(self) -> float: ...


def text_of(message: Mapping[str, Any], max_bytes: int) -> str:
    """The text of a received ASGI message, or `RefusedError` for a binary or oversized one."""
    text = message.get("text")
    if text is None:
        raise RefusedError(
            CloseCode.UNSUPPORTED_DATA,
            "unsupported_data",
            "Send JSON objects as text messages, not binary ones.",
        )
    # Characters first: a str of n characters has at least n UTF-8 bytes.
    if len(text) > max_bytes or len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise RefusedError(
            CloseCode.MESSAGE_TOO_BIG,
            "message_too_big",
            f"The message exceeds the limit of {max_bytes} bytes.",
        )
    return str(text)


def pace(bucket: Bucket) -> None:
    """One message from the connection's own bucket, or `RefusedError`."""
    if bucket.acquire() > 0:
        raise policy_violation(
            "rate_limited",
            f"More than {bucket.rate:g} messages per second (bursts of {bucket.burst:g}); "
            "slow down.",
        )


def parse_json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise RefusedError(
            CloseCode.INVALID_PAYLOAD, "malformed_json", "The message is not valid JSON."
        ) from None


def offered_key(payload: Any) -> bytes | None:
    """The key of a first message `{"api_key": "<key>"}` and nothing else; None for any other."""
    offered = payload.get("api_key") if isinstance(payload, dict) else None
    if isinstance(offered, str) and len(payload) == 1:
        return offered.encode("utf-8", "surrogatepass")
    return None


# ---------------------------------------------------------------------------------------------
# Origin (see the module doc)

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_Origin = tuple[str, str, int]  # scheme, host (lower case, IPv6 without brackets), port


def origin_refusal(
    origin_value: bytes | None,
    host_value: bytes | None,
    server: Any,
    cors_origins: tuple[str, ...],
    *,
    keyed: bool,
) -> str | None:
    """Why a handshake is refused for its `Origin`, or None when it is accepted (or absent).

    `origin_value` and `host_value`: the handshake's `Origin` and `Host` headers; `server`: the
    address the connection arrived on (ASGI's `server`); `keyed`: the service has API keys."""
    if origin_value is None:
        return None
    value = origin_value.decode("latin-1")
    every, listed, listed_as_written = _listed(cors_origins)
    origin = _parse_origin(value)
    if every or origin in listed or value.strip().lower() in listed_as_written:
        return None
    host = None if host_value is None else _parse_host(host_value.decode("latin-1"))
    if origin is None or host is None or not _same_host(origin, host):
        return "the page's origin is neither this service's nor one in APP_CORS_ORIGINS"
    if not keyed and _on_loopback(server) and not _unrebindable(host[0]):
        return (
            "a page reached through a DNS name on a loopback address without API keys "
            "(possible DNS rebinding); list its origin in APP_CORS_ORIGINS"
        )
    return None


def _parse_origin(value: str) -> _Origin | None:
    """A serialised origin ("https://a.test:8443"), or None for "null" or anything else."""
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username is not None:
        return None
    return scheme, parts.hostname, _DEFAULT_PORTS[scheme] if port is None else port


def _parse_host(value: str) -> tuple[str, int | None] | None:
    """A `Host` header's name and port (None when it has none), or None if it is not one."""
    try:
        parts = urlsplit("//" + value.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None or parts.path or parts.query:
        return None
    return parts.hostname, port


@lru_cache(maxsize=8)
def _listed(origins: tuple[str, ...]) -> tuple[bool, frozenset[_Origin], frozenset[str]]:
    """`APP_CORS_ORIGINS` as (every origin listed, parsed origins, the rest as written)."""
    parsed = {origin: _parse_origin(origin) for origin in origins}
    return (
        "*" in origins,
        frozenset(value for value in parsed.values() if value is not None),
        frozenset(origin.strip().lower() for origin, value in parsed.items() if value is None),
    )


def _same_host(origin: _Origin, host: tuple[str, int | None]) -> bool:
    _, origin_name, origin_port = origin
    name, port = host
    return name == origin_name and (port is None or port == origin_port)


def _on_loopback(server: Any) -> bool:
    """Whether the connection arrived on a loopback address of this machine."""
    try:
        address = ipaddress.ip_address(str(server[0])) if server else None
    except ValueError:
        return False  # a Unix socket, or a name: not a TCP loopback address
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address is not None and address.is_loopback


def _unrebindable(name: str) -> bool:
    """Names no DNS answer can point elsewhere: IP addresses, and localhost (resolved locally)."""
    if name == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
