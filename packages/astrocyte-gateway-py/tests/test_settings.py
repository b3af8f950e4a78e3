"""Settings: incomplete or wrong configuration stops start-up, naming the setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from astrocyte.errors import ConfigError
from astrocyte_gateway import create_app
from astrocyte_gateway.settings import Settings

JWT_BASE = {
    "ASTROCYTE_AUTH_MODE": "jwt",
    "ASTROCYTE_JWT_ISSUER": "https://idp/",
    "ASTROCYTE_JWT_AUDIENCE": "a",
}


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"ASTROCYTE_AUTH_MODE": "api_key"}, "ASTROCYTE_API_KEYS"),
        ({"ASTROCYTE_AUTH_MODE": "jwt", "ASTROCYTE_JWT_AUDIENCE": "a"}, "ASTROCYTE_JWT_ISSUER"),
        ({"ASTROCYTE_AUTH_MODE": "jwt", "ASTROCYTE_JWT_ISSUER": "https://idp/"}, "ASTROCYTE_JWT_AUDIENCE"),
        (JWT_BASE, "ASTROCYTE_JWT_JWKS_URL"),
        ({**JWT_BASE, "ASTROCYTE_JWT_ALGORITHMS": "HS256"}, "ASTROCYTE_JWT_SECRET"),
        (
            {**JWT_BASE, "ASTROCYTE_JWT_ALGORITHMS": "HS256,RS256", "ASTROCYTE_JWT_SECRET": "s"},
            "ASTROCYTE_JWT_ALGORITHMS",
        ),
        (
            {**JWT_BASE, "ASTROCYTE_JWT_ALGORITHMS": "none", "ASTROCYTE_JWT_SECRET": "s"},
            "ASTROCYTE_JWT_ALGORITHMS",
        ),
        ({"ASTROCYTE_AUTH_MODE": "magic"}, "ASTROCYTE_AUTH_MODE"),
        ({"ASTROCYTE_TRUSTED_PROXIES": "10.0.0.0/33"}, "ASTROCYTE_TRUSTED_PROXIES"),
        ({"ASTROCYTE_RATE_LIMIT_PER_SECOND": "fast"}, "ASTROCYTE_RATE_LIMIT_PER_SECOND"),
        (
            {"ASTROCYTE_RATE_LIMIT_BACKEND": "redis", "ASTROCYTE_RATE_LIMIT_PER_SECOND": "5"},
            "ASTROCYTE_RATE_LIMIT_REDIS_URL",
        ),
        ({"ASTROCYTE_MAX_REQUEST_BODY_BYTES": "0"}, "ASTROCYTE_MAX_REQUEST_BODY_BYTES"),
        ({"ASTROCYTE_PORT": "http"}, "ASTROCYTE_PORT"),
        ({"ASTROCYTE_AUTH_MODE": "api_key", "ASTROCYTE_API_KEYS": '{"k": "bob"}'}, "ASTROCYTE_API_KEYS"),
    ],
)
def test_bad_config_names_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env)
    assert setting in raised.value.message
    assert raised.value.details["setting"] == setting


def test_api_keys_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(
        json.dumps({"k1-0123456789abcdef": {"principal": "service:x", "trusted_service": True}}),
        encoding="utf-8",
    )
    settings = Settings.from_env({"ASTROCYTE_AUTH_MODE": "api_key", "ASTROCYTE_API_KEYS_FILE": str(path)})
    assert settings.api_keys["k1-0123456789abcdef"].trusted_service is True


def test_overrides_win_over_env() -> None:
    settings = Settings.from_env({"ASTROCYTE_PORT": "9000", "ASTROCYTE_WORKERS": "2"}, port=9100)
    assert (settings.port, settings.workers) == (9100, 2)


def test_create_app_refuses_incomplete_auth_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASTROCYTE_AUTH_MODE", "api_key")
    monkeypatch.delenv("ASTROCYTE_API_KEYS", raising=False)
    monkeypatch.delenv("ASTROCYTE_API_KEYS_FILE", raising=False)
    with pytest.raises(ConfigError, match="ASTROCYTE_API_KEYS"):
        create_app()
