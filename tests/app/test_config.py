"""Settings: credentials that are short or still a placeholder are refused at start-up."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from app.core.config import MIN_SECRET_CHARS, Settings

KEY_FIELDS = ("api_keys", "admin_keys", "metrics_keys")
CREDENTIAL_FIELDS = (*KEY_FIELDS, "stream_secret")
REAL = "3b9f0e6c2a7d41f8b5c0e9a4d7f2b6c1"
PLACEHOLDERS = (
    "example-api-key-CHANGE-ME",
    "ChangeMe-please-0000",
    "my-stream-secret-EXAMPLE",
    "changeme-changeme-1",
    "please-change-me-today",
    "EXAMPLE.0123456789abcdef",
)


def _settings(**values: Any) -> Settings:
    return Settings(**values)


def _refusal(**values: Any) -> dict[str, Any]:
    with pytest.raises(ValidationError) as caught:
        _settings(**values)
    [error] = caught.value.errors()
    return dict(error)


@pytest.mark.parametrize("field", CREDENTIAL_FIELDS)
@pytest.mark.parametrize("value", PLACEHOLDERS)
def test_placeholder_credentials_are_refused_in_any_case(field: str, value: str) -> None:
    error = _refusal(**{field: value})
    assert error["loc"] == (field,)
    assert error["msg"] == (
        f"Value error, APP_{field.upper()}: a placeholder value is not a secret; "
        "generate a real one"
    )


@pytest.mark.parametrize("field", CREDENTIAL_FIELDS)
def test_credentials_need_sixteen_characters(field: str) -> None:
    error = _refusal(**{field: REAL[: MIN_SECRET_CHARS - 1]})
    assert error["loc"] == (field,)
    assert "16 or more characters" in error["msg"]
    accepted = _settings(**{field: REAL[:MIN_SECRET_CHARS]})
    value = getattr(accepted, field)
    secret = value[0] if isinstance(value, tuple) else value
    assert secret.get_secret_value() == REAL[:MIN_SECRET_CHARS]


@pytest.mark.parametrize("field", KEY_FIELDS)
def test_one_bad_key_in_a_list_refuses_the_setting(field: str) -> None:
    error = _refusal(**{field: f"{REAL}, {REAL[::-1]},example-0123456789abcdef"})
    assert error["loc"] == (field,)
    assert "placeholder" in error["msg"]


@pytest.mark.parametrize("field", KEY_FIELDS)
def test_keys_are_split_on_commas_and_kept_secret(field: str) -> None:
    keys = getattr(_settings(**{field: f" {REAL} ,{REAL[::-1]},"}), field)
    assert all(isinstance(key, SecretStr) for key in keys)
    assert [key.get_secret_value() for key in keys] == [REAL, REAL[::-1]]
    assert REAL not in repr(keys)


def test_keys_with_spaces_or_control_characters_are_refused() -> None:
    for value in (f"{REAL[:8]} {REAL[8:]}", f"{REAL}\x7f", f"{REAL}é"):
        error = _refusal(api_keys=(value,))
        assert "printable ASCII without spaces" in error["msg"]


def test_credentials_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_METRICS_KEYS", f"{REAL},{REAL.upper()}")
    monkeypatch.setenv("APP_STREAM_SECRET", REAL)
    settings = Settings()
    assert [key.get_secret_value() for key in settings.metrics_keys] == [REAL, REAL.upper()]
    assert settings.stream_secret is not None
    assert settings.stream_secret.get_secret_value() == REAL
    monkeypatch.setenv("APP_ADMIN_KEYS", "example-admin-key-0123")
    with pytest.raises(ValidationError, match="APP_ADMIN_KEYS: a placeholder value"):
        Settings()


def test_no_credentials_is_a_valid_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    for field in CREDENTIAL_FIELDS:
        monkeypatch.delenv(f"APP_{field.upper()}", raising=False)
    settings = Settings()
    assert settings.api_keys == settings.admin_keys == settings.metrics_keys == ()
    assert settings.stream_secret is None


def test_trusted_proxies_are_addresses_or_networks() -> None:
    settings = Settings(trusted_proxies="10.0.0.0/8, 172.30.0.2,fd00::/8")
    assert settings.trusted_proxies == ("10.0.0.0/8", "172.30.0.2", "fd00::/8")
    error = _refusal(trusted_proxies="10.0.0.0/8,nginx")
    assert error["loc"] == ("trusted_proxies",)
    assert "'nginx' is not an IP address or network" in error["msg"]
