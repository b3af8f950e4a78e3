"""Gateway settings, read from ``ASTROCYTE_*`` environment variables.

Everything is validated once at start-up: a bad or incomplete setting raises ``ConfigError`` naming
the variable, so a misconfigured gateway never starts serving.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from astrocyte.errors import ConfigError

AuthMode = Literal["dev", "api_key", "jwt"]
_AUTH_MODES = ("dev", "api_key", "jwt")
_HMAC_ALGS = ("HS256",)
_ASYMMETRIC_ALGS = ("RS256", "ES256", "PS256")
_PRINCIPAL_KINDS = ("user:", "agent:", "service:")
MIN_API_KEY_LENGTH = 16
_METRICS_ACCESS = ("open", "admin")


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One API key: the principal it authenticates as, and whether it may act for end users."""

    principal: str
    trusted_service: bool = False


@dataclass(frozen=True, slots=True)
class JwtSettings:
    algorithms: tuple[str, ...] = ("RS256",)
    secret: str | None = None
    jwks_url: str | None = None
    oidc_discovery_url: str | None = None
    issuer: str | None = None
    audience: str | None = None
    principal_claim: str = "sub"
    principal_prefix: str = "user:"
    service_claim: str = "azp"
    services: Mapping[str, str] = field(default_factory=dict)  # service_claim value -> service principal
    jwks_cache_seconds: float = 300.0
    jwks_refetch_cooldown_seconds: float = 10.0
    jwks_timeout_seconds: float = 3.0
    leeway_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway process needs besides ``astrocyte.yaml``."""

    host: str = "127.0.0.1"
    port: int = 8080
    config_path: str | None = None
    workers: int = 1
    auth_mode: AuthMode = "dev"
    api_keys: Mapping[str, ApiKey] = field(default_factory=dict)
    jwt: JwtSettings = field(default_factory=JwtSettings)
    cors_origins: tuple[str, ...] = ()
    max_request_body_bytes: int = 1_048_576
    admin_token: str | None = None
    rate_limit_per_second: float | None = None
    rate_limit_burst: int | None = None
    rate_limit_backend: Literal["memory", "redis"] = "memory"
    rate_limit_redis_url: str | None = None
    rate_limit_max_clients: int = 10_000
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    data_dir: str = "./data"
    access_log: bool = True
    otel_enabled: bool = False
    allowed_hosts: tuple[str, ...] = ()
    max_header_bytes: int = 16_384
    max_credential_bytes: int = 8_192
    metrics_access: Literal["open", "admin"] | None = None  # None: open in dev mode, admin otherwise
    metrics_port: int | None = None  # a second, unauthenticated listener serving only the metrics
    metrics_host: str = "127.0.0.1"
    header_timeout_seconds: float = 10.0
    body_timeout_seconds: float = 30.0
    max_connections_per_client: int = 64

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``); ``overrides`` win (CLI flags)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {
            "host": env.get("ASTROCYTE_HOST", "127.0.0.1"),
            "port": _int(env, "ASTROCYTE_PORT", 8080),
            "config_path": env.get("ASTROCYTE_CONFIG_PATH") or None,
            "workers": _int(env, "ASTROCYTE_WORKERS", 1),
            "auth_mode": env.get("ASTROCYTE_AUTH_MODE", "dev"),
            "api_keys": _api_keys(env),
            "jwt": _jwt(env),
            "cors_origins": _csv(env.get("ASTROCYTE_CORS_ORIGINS", "")),
            "max_request_body_bytes": _int(env, "ASTROCYTE_MAX_REQUEST_BODY_BYTES", 1_048_576),
            "admin_token": env.get("ASTROCYTE_ADMIN_TOKEN") or None,
            "rate_limit_per_second": _float_or_none(env, "ASTROCYTE_RATE_LIMIT_PER_SECOND"),
            "rate_limit_burst": _int(env, "ASTROCYTE_RATE_LIMIT_BURST", 0) or None,
            "rate_limit_backend": env.get("ASTROCYTE_RATE_LIMIT_BACKEND", "memory"),
            "rate_limit_redis_url": env.get("ASTROCYTE_RATE_LIMIT_REDIS_URL") or None,
            "rate_limit_max_clients": _int(env, "ASTROCYTE_RATE_LIMIT_MAX_CLIENTS", 10_000),
            "trusted_proxies": _networks(env.get("ASTROCYTE_TRUSTED_PROXIES", "")),
            "data_dir": env.get("ASTROCYTE_DATA_DIR", "./data"),
            "access_log": _flag(env, "ASTROCYTE_ACCESS_LOG", True),
            "otel_enabled": _flag(env, "ASTROCYTE_OTEL_ENABLED", False),
            "allowed_hosts": _csv(env.get("ASTROCYTE_ALLOWED_HOSTS", "")),
            "max_header_bytes": _int(env, "ASTROCYTE_MAX_HEADER_BYTES", 16_384),
            "max_credential_bytes": _int(env, "ASTROCYTE_MAX_CREDENTIAL_BYTES", 8_192),
            "metrics_access": env.get("ASTROCYTE_METRICS_ACCESS") or None,
            "metrics_port": _int(env, "ASTROCYTE_METRICS_PORT", 0) or None,
            "metrics_host": env.get("ASTROCYTE_METRICS_HOST", "127.0.0.1"),
            "header_timeout_seconds": _number(env, "ASTROCYTE_HEADER_TIMEOUT_SECONDS", 10.0),
            "body_timeout_seconds": _number(env, "ASTROCYTE_BODY_TIMEOUT_SECONDS", 30.0),
            "max_connections_per_client": _int(env, "ASTROCYTE_MAX_CONNECTIONS_PER_CLIENT", 64),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.validate()
        return settings

    @property
    def metrics_open(self) -> bool:
        """Whether ``/metrics`` is served without the admin token (the default only in dev mode)."""
        return (self.metrics_access or ("open" if self.auth_mode == "dev" else "admin")) == "open"

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with some fields replaced, validated again."""
        settings = replace(self, **{k: v for k, v in overrides.items() if v is not None})
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the setting that is missing or wrong."""
        if self.auth_mode not in _AUTH_MODES:
            raise _err(
                "ASTROCYTE_AUTH_MODE", f"must be one of {', '.join(_AUTH_MODES)}, got {self.auth_mode!r}"
            )
        if not 0 < self.port < 65536:
            raise _err("ASTROCYTE_PORT", "must be between 1 and 65535")
        if self.workers < 1:
            raise _err("ASTROCYTE_WORKERS", "must be at least 1")
        if self.max_request_body_bytes < 1:
            raise _err("ASTROCYTE_MAX_REQUEST_BODY_BYTES", "must be a positive number of bytes")
        if self.auth_mode == "api_key" and not self.api_keys:
            raise _err(
                "ASTROCYTE_API_KEYS", "auth mode api_key needs ASTROCYTE_API_KEYS or ASTROCYTE_API_KEYS_FILE"
            )
        if self.auth_mode == "jwt":
            _validate_jwt(self.jwt)
        if self.rate_limit_per_second is not None and self.rate_limit_per_second <= 0:
            raise _err("ASTROCYTE_RATE_LIMIT_PER_SECOND", "must be a positive number (unset it to disable)")
        if self.rate_limit_backend not in ("memory", "redis"):
            raise _err("ASTROCYTE_RATE_LIMIT_BACKEND", "must be memory or redis")
        if self.rate_limit_backend == "redis" and not self.rate_limit_redis_url:
            raise _err("ASTROCYTE_RATE_LIMIT_REDIS_URL", "the redis rate-limit backend needs a redis:// URL")
        if self.rate_limit_max_clients < 1:
            raise _err("ASTROCYTE_RATE_LIMIT_MAX_CLIENTS", "must be at least 1")
        if self.metrics_access is not None and self.metrics_access not in _METRICS_ACCESS:
            raise _err("ASTROCYTE_METRICS_ACCESS", "must be open or admin")
        if self.metrics_port is not None and not 0 < self.metrics_port < 65536:
            raise _err("ASTROCYTE_METRICS_PORT", "must be between 1 and 65535")
        if self.metrics_port is not None and self.workers > 1:
            raise _err("ASTROCYTE_METRICS_PORT", "one metrics listener per process: use it with one worker")
        if self.max_credential_bytes < 256 or self.max_header_bytes < self.max_credential_bytes:
            raise _err(
                "ASTROCYTE_MAX_HEADER_BYTES",
                "ASTROCYTE_MAX_CREDENTIAL_BYTES must be at least 256 and ASTROCYTE_MAX_HEADER_BYTES at least that",
            )
        for name, seconds in (
            ("ASTROCYTE_HEADER_TIMEOUT_SECONDS", self.header_timeout_seconds),
            ("ASTROCYTE_BODY_TIMEOUT_SECONDS", self.body_timeout_seconds),
        ):
            if seconds <= 0:
                raise _err(name, "must be a positive number of seconds")
        if self.max_connections_per_client < 1:
            raise _err("ASTROCYTE_MAX_CONNECTIONS_PER_CLIENT", "must be at least 1")
        if self.otel_enabled and importlib.util.find_spec("opentelemetry") is None:
            raise _err(
                "ASTROCYTE_OTEL_ENABLED", "needs OpenTelemetry: pip install 'astrocyte-gateway-py[otel]'"
            )


def _validate_jwt(jwt: JwtSettings) -> None:
    if not jwt.issuer:
        raise _err("ASTROCYTE_JWT_ISSUER", "auth mode jwt needs the expected issuer (iss)")
    if not jwt.audience:
        raise _err("ASTROCYTE_JWT_AUDIENCE", "auth mode jwt needs the expected audience (aud)")
    unknown = [a for a in jwt.algorithms if a not in _HMAC_ALGS + _ASYMMETRIC_ALGS]
    if unknown or not jwt.algorithms:
        raise _err("ASTROCYTE_JWT_ALGORITHMS", f"supported: {', '.join(_HMAC_ALGS + _ASYMMETRIC_ALGS)}")
    hmac_algs = [a for a in jwt.algorithms if a in _HMAC_ALGS]
    if hmac_algs and len(hmac_algs) != len(jwt.algorithms):
        # Mixing shared-secret and public-key algorithms is the classic algorithm-confusion setup.
        raise _err("ASTROCYTE_JWT_ALGORITHMS", "use either HS256 or RS/ES/PS256, not both")
    if hmac_algs and not jwt.secret:
        raise _err("ASTROCYTE_JWT_SECRET", "HS256 needs a shared secret")
    if not hmac_algs and not (jwt.jwks_url or jwt.oidc_discovery_url):
        raise _err(
            "ASTROCYTE_JWT_JWKS_URL",
            "RS/ES/PS256 need ASTROCYTE_JWT_JWKS_URL or ASTROCYTE_JWT_OIDC_DISCOVERY_URL",
        )


def _err(name: str, why: str) -> ConfigError:
    return ConfigError(f"{name}: {why}", code="gateway_config_invalid", details={"setting": name})


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise _err(name, f"must be an integer, got {raw!r}") from None


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise _err(name, f"must be true or false, got {raw!r}")


def _float_or_none(env: Mapping[str, str], name: str) -> float | None:
    raw = env.get(name)
    if raw in (None, ""):
        return None
    try:
        return float(raw)
    except ValueError:
        raise _err(name, f"must be a number, got {raw!r}") from None


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float_or_none(env, name)
    return default if value is None else value


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _networks(raw: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(part, strict=False) for part in _csv(raw))
    except ValueError as exc:
        raise _err("ASTROCYTE_TRUSTED_PROXIES", f"not a CIDR list ({exc})") from None


def _api_keys(env: Mapping[str, str]) -> dict[str, ApiKey]:
    """``ASTROCYTE_API_KEYS`` (JSON) or ``ASTROCYTE_API_KEYS_FILE`` (a JSON file), shaped
    ``{"<key>": "service:bot"}`` or ``{"<key>": {"principal": "...", "trusted_service": true}}``."""
    raw, name = env.get("ASTROCYTE_API_KEYS"), "ASTROCYTE_API_KEYS"
    path = env.get("ASTROCYTE_API_KEYS_FILE")
    if not raw and path:
        name = "ASTROCYTE_API_KEYS_FILE"
        try:
            raw = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise _err(name, f"cannot read {path}: {exc.strerror}") from None
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        raise _err(name, "must be a JSON object mapping keys to principals") from None
    if not isinstance(parsed, dict):
        raise _err(name, "must be a JSON object mapping keys to principals")
    short = [key for key in parsed if len(key) < MIN_API_KEY_LENGTH]
    if short:
        raise _err(
            name,
            f"{len(short)} key(s) shorter than {MIN_API_KEY_LENGTH} characters; "
            "use long random keys (for example: openssl rand -hex 32)",
        )
    return {key: _api_key(name, value) for key, value in parsed.items()}


def _api_key(name: str, value: Any) -> ApiKey:
    if isinstance(value, str):
        value = {"principal": value}
    if not isinstance(value, dict) or not isinstance(value.get("principal"), str):
        raise _err(name, "each key needs a principal such as 'service:my-bot'")
    if not value["principal"].startswith(_PRINCIPAL_KINDS):
        raise _err(name, "principals start with user:, agent: or service:")
    extra = set(value) - {"principal", "trusted_service"}
    if extra:
        raise _err(name, f"unknown key field(s): {', '.join(sorted(extra))}")
    return ApiKey(principal=value["principal"], trusted_service=bool(value.get("trusted_service", False)))


def _jwt_services(env: Mapping[str, str]) -> dict[str, str]:
    """``ASTROCYTE_JWT_SERVICES``: ``{"<service claim value>": "service:<id>"}``, the only way a token
    becomes a service principal."""
    name = "ASTROCYTE_JWT_SERVICES"
    raw = env.get(name)
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict) or not all(
        isinstance(v, str) and v.startswith(_PRINCIPAL_KINDS) for v in parsed.values()
    ):
        raise _err(name, 'must be a JSON object such as {"<client id>": "service:chat"}')
    return parsed


def _jwt(env: Mapping[str, str]) -> JwtSettings:
    def num(name: str, default: float) -> float:
        return _number(env, name, default)

    return JwtSettings(
        algorithms=_csv(env.get("ASTROCYTE_JWT_ALGORITHMS", "RS256")),
        secret=env.get("ASTROCYTE_JWT_SECRET") or None,
        jwks_url=env.get("ASTROCYTE_JWT_JWKS_URL") or None,
        oidc_discovery_url=env.get("ASTROCYTE_JWT_OIDC_DISCOVERY_URL") or None,
        issuer=env.get("ASTROCYTE_JWT_ISSUER") or None,
        audience=env.get("ASTROCYTE_JWT_AUDIENCE") or None,
        principal_claim=env.get("ASTROCYTE_JWT_PRINCIPAL_CLAIM", "sub"),
        principal_prefix=env.get("ASTROCYTE_JWT_PRINCIPAL_PREFIX", "user:"),
        service_claim=env.get("ASTROCYTE_JWT_SERVICE_CLAIM", "azp"),
        services=_jwt_services(env),
        jwks_cache_seconds=num("ASTROCYTE_JWT_JWKS_CACHE_SECONDS", 300.0),
        jwks_refetch_cooldown_seconds=num("ASTROCYTE_JWT_JWKS_REFETCH_COOLDOWN_SECONDS", 10.0),
        jwks_timeout_seconds=num("ASTROCYTE_JWT_JWKS_TIMEOUT_SECONDS", 3.0),
        leeway_seconds=num("ASTROCYTE_JWT_LEEWAY_SECONDS", 0.0),
    )
