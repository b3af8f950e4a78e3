"""Client options shared by the consumer, the dead-letter producer and the ledger reader:
bootstrap servers, security (TLS files, SASL credentials from the environment), timeouts."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from aiokafka.helpers import create_ssl_context  # type: ignore[import-untyped]
from astrocyte.errors import ConfigError

from astrocyte_ingestion_kafka.config import KafkaSourceConfig, Security


def _secret(variable: str, key: str, environ: Mapping[str, str]) -> str:
    value = environ.get(variable)
    if not value:
        raise ConfigError(
            f"security.{key} names {variable}, which is not set in the environment",
            code="kafka_credentials_missing",
            details={"path": f"security.{key}"},
        )
    return value


def security_options(security: Security, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """aiokafka keyword arguments for the ``security`` block; raises :class:`ConfigError` (fail
    closed) when a named environment variable is unset."""
    environ = os.environ if environ is None else environ
    options: dict[str, Any] = {"security_protocol": security.protocol}
    if security.protocol in ("SSL", "SASL_SSL"):
        password = security.key_password_env and _secret(
            security.key_password_env, "key_password_env", environ
        )
        context = create_ssl_context(
            cafile=security.ca_file,
            certfile=security.cert_file,
            keyfile=security.key_file,
            password=password or None,
        )
        context.check_hostname = security.check_hostname
        options["ssl_context"] = context
    if security.mechanism is not None:
        assert security.username_env and security.password_env  # the schema requires both
        options["sasl_mechanism"] = security.mechanism
        options["sasl_plain_username"] = _secret(security.username_env, "username_env", environ)
        options["sasl_plain_password"] = _secret(security.password_env, "password_env", environ)
    return options


def client_options(config: KafkaSourceConfig, source_id: str) -> dict[str, Any]:
    """Options every client of the source shares."""
    return {
        "bootstrap_servers": list(config.bootstrap_servers),
        "client_id": config.client_id or f"astrocyte-{source_id}-{socket.gethostname()}",
        "request_timeout_ms": config.request_timeout_ms,
        "retry_backoff_ms": 100,
        **security_options(config.security),
    }
