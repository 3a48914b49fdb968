"""Who a caller is: the one place that reads credentials, content types and client addresses.

Every way in (the FastAPI routes, the fast /predict path, the WebSocket, /metrics and the
admin routes) asks this module the same three questions:

- Which key, if any, does the `Authorization` header carry? The scheme is matched in any case
  and may be followed by one or more spaces (RFC 7235, RFC 6750), so `Bearer K`, `bearer K`
  and `Bearer  K` are the same key. The offered key and every configured key are compared as
  SHA-256 digests of fixed length, each against all, so the time taken reveals neither a key,
  its length, nor which key matched.
- Is a body JSON (`application/json` or any `application/*+json`)?
- Which rate-limit bucket does a request count against? Its matched key when the service has
  keys (every spelling of one key is one bucket), else its client address: the peer, or the
  client a trusted proxy names (`APP_TRUSTED_PROXIES`, applied before the app by
  `ProxyHeadersMiddleware`). An IPv6 client is counted by its /64 network, since one host
  usually holds a whole /64 and could otherwise take a fresh bucket per address.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from app.core.errors import ApiError
from app.http.ratelimit import RateLimiter


def bearer_token(header: bytes | None) -> bytes | None:
    """The credentials of an `Authorization: Bearer <token>` header, or None.

    The scheme is case-insensitive and separated from the token by one or more spaces (tabs
    too); whitespace around the token is not part of it.
    """
    parts = (header or b"").split(None, 1)
    if len(parts) != 2 or parts[0].lower() != b"bearer":
        return None
    return parts[1].strip()


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


@dataclass(frozen=True, slots=True)
class KeyRing:
    """A set of keys, held as SHA-256 digests, matched in constant time."""

    digests: tuple[bytes, ...]

    @classmethod
    def of(cls, keys: Iterable[SecretStr]) -> KeyRing:
        return cls(tuple(_digest(key.get_secret_value().encode("utf-8")) for key in keys))

    def __bool__(self) -> bool:
        return bool(self.digests)

    def match(self, authorization: bytes | None) -> str | None:
        """The identity of the key an `Authorization` header carries (see `match_key`)."""
        token = bearer_token(authorization)
        return None if token is None else self.match_key(token)

    def match_key(self, key: bytes) -> str | None:
        """The matched key's identity (its digest in hex; never the key), or None.

        Every configured key is compared with the offered one, whatever matched first."""
        offered = _digest(key)
        matched: bytes | None = None
        for digest in self.digests:
            if hmac.compare_digest(offered, digest):
                matched = digest
        return matched.hex() if matched is not None else None


def header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of header `name` (lower case) in raw ASGI headers, as Starlette reads it."""
    for key, value in headers:
        if key == name:
            return value
    return None


def is_json(content_type: bytes | None) -> bool:
    """True for `application/json` and `application/*+json`, parameters and case aside."""
    if content_type is None:
        return False
    media_type = content_type.partition(b";")[0].strip().lower()
    return media_type == b"application/json" or (
        media_type.startswith(b"application/") and media_type.endswith(b"+json")
    )


def client_address(client: Any) -> str:
    """The rate-limit identity of a peer address: the address, or an IPv6 address's /64."""
    host = str(client[0]) if client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return host


def rate_identity(key_identity: str | None, client: Any) -> str:
    """The bucket a request counts against: its matched key, else its client address."""
    if key_identity is not None:
        return "key:" + key_identity
    return "addr:" + client_address(client)


def unauthorized(hint: str = "send 'Authorization: Bearer <key>'") -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        f"A valid API key is required: {hint}.",
        headers={"WWW-Authenticate": "Bearer"},
    )


def rate_limited(wait_s: float) -> ApiError:
    retry_after = max(1, math.ceil(wait_s))
    return ApiError(
        429,
        "rate_limited",
        f"Too many requests; retry after {retry_after} seconds.",
        headers={"Retry-After": str(retry_after)},
    )


@dataclass(frozen=True, slots=True)
class Gate:
    """What a family of routes requires of a caller: one of `keys` (when any are set), then a
    request from the caller's bucket in `limiter` (when there is one)."""

    keys: KeyRing
    limiter: RateLimiter | None = None

    def caller(self, headers: Iterable[tuple[bytes, bytes]], client: Any) -> str:
        """The caller's rate-limit identity ("" when nothing is limited); 401 (`ApiError`)
        without a valid key."""
        return self._identify(bearer_token(header(headers, b"authorization")), client)

    def caller_for_key(self, key: bytes, client: Any) -> str:
        """`caller` for a key offered in a message rather than a header: a browser cannot set
        `Authorization` on a WebSocket handshake, so it sends its key as the first message."""
        return self._identify(key, client)

    def _identify(self, key: bytes | None, client: Any) -> str:
        identity = None
        if self.keys:
            identity = None if key is None else self.keys.match_key(key)
            if identity is None:
                raise unauthorized()
        if self.limiter is None:
            return ""
        return rate_identity(identity, client)

    def admit(self, caller: str) -> None:
        """Take one request from the caller's bucket; 429 (`ApiError`) when it is empty."""
        if self.limiter is not None:
            wait_s = self.limiter.acquire(caller)
            if wait_s > 0:
                raise rate_limited(wait_s)

    def check(self, scope: Mapping[str, Any]) -> str:
        """`caller`, then `admit`, for an ASGI scope (HTTP or WebSocket)."""
        caller = self.caller(scope["headers"], scope.get("client"))
        self.admit(caller)
        return caller
