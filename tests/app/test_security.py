"""The Gate: a key sent in a message is judged exactly as the same key in `Authorization`."""

from __future__ import annotations

import hashlib

import pytest
from pydantic import SecretStr

from app.core.errors import ApiError
from app.http.ratelimit import RateLimiter
from app.http.security import Gate, KeyRing

KEY = "s3cret-key-for-the-tests"
OTHER_KEY = "another-key-0123456789"
CLIENT = ("2001:db8::7", 50000)


def gate(*keys: str, limited: bool = True) -> Gate:
    limiter = RateLimiter(60) if limited else None
    return Gate(KeyRing.of(SecretStr(key) for key in keys), limiter)


def bearer(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {key}".encode())]


@pytest.mark.parametrize("key", [KEY, OTHER_KEY])
def test_a_key_in_a_message_is_the_caller_its_header_would_be(key: str) -> None:
    keyed = gate(KEY, OTHER_KEY)
    caller = keyed.caller_for_key(key.encode(), CLIENT)
    assert caller == "key:" + hashlib.sha256(key.encode()).hexdigest()
    assert caller == keyed.caller(bearer(key), CLIENT)


@pytest.mark.parametrize(
    "key", [b"", b"wrong-key-1", KEY.encode() + b" ", b"Bearer " + KEY.encode()]
)
def test_a_wrong_key_in_a_message_is_the_same_401(key: bytes) -> None:
    keyed = gate(KEY)
    with pytest.raises(ApiError) as from_header:
        keyed.caller(bearer("wrong-key-1"), CLIENT)
    with pytest.raises(ApiError) as from_message:
        keyed.caller_for_key(key, CLIENT)
    refused = from_message.value
    assert (refused.status_code, refused.code, refused.message, refused.headers) == (
        from_header.value.status_code,
        from_header.value.code,
        from_header.value.message,
        from_header.value.headers,
    )
    assert (refused.status_code, refused.code) == (401, "unauthorized")


def test_without_a_limiter_a_valid_key_is_the_unlimited_caller() -> None:
    assert gate(KEY, limited=False).caller_for_key(KEY.encode(), CLIENT) == ""
    with pytest.raises(ApiError):
        gate(KEY, limited=False).caller_for_key(OTHER_KEY.encode(), CLIENT)


def test_without_keys_any_key_counts_against_the_client_address() -> None:
    open_gate = gate()
    # An IPv6 client is counted by its /64, as for every other request.
    assert open_gate.caller_for_key(b"anything", CLIENT) == "addr:2001:db8::/64"
    assert open_gate.caller_for_key(b"anything", CLIENT) == open_gate.caller([], CLIENT)
