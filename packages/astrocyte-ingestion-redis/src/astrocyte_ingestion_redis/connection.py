"""Building the Redis client of a source: URL, ACL credentials from the environment, TLS, timeouts.

The client's own retries are switched off: the driver owns reconnecting (with backoff and a
``degraded`` health state), so an outage is visible instead of hidden inside a command.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from astrocyte.errors import ConfigError
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from astrocyte_ingestion_redis.config import RedisStreamConfig


def credentials(config: RedisStreamConfig, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The ACL username and password, read from the environment variables the config names."""
    environ = os.environ if environ is None else environ
    found: dict[str, str] = {}
    if config.username:
        found["username"] = config.username
    for key, variable in (("username", config.username_env), ("password", config.password_env)):
        if variable is None:
            continue
        value = environ.get(variable)
        if not value:
            raise ConfigError(
                f"{key}_env names {variable}, which is not set in the environment",
                code="redis_credentials_missing",
                details={"path": f"{key}_env"},
            )
        found[key] = value
    return found


def tls_options(config: RedisStreamConfig) -> dict[str, Any]:
    """redis-py keyword arguments for the ``tls`` block (empty for plain ``redis://``)."""
    tls = config.tls
    if tls is None:
        return {}
    return {
        "ssl_ca_certs": tls.ca_file,
        "ssl_certfile": tls.cert_file,
        "ssl_keyfile": tls.key_file,
        "ssl_cert_reqs": "required" if tls.verify else "none",
        "ssl_check_hostname": tls.check_hostname and tls.verify,
    }


def build_client(config: RedisStreamConfig, client_name: str) -> Redis:
    """A client for the source (not connected yet; connections open on first use)."""
    # A blocking XREADGROUP legitimately waits block_ms; the socket timeout only catches a
    # connection that went silent (a partition) on top of that.
    options: dict[str, Any] = {
        "decode_responses": False,
        "socket_connect_timeout": config.connect_timeout_s,
        "socket_timeout": config.block_ms / 1000 + config.command_timeout_s,
        "socket_keepalive": True,
        "retry": Retry(NoBackoff(), 0),
        "client_name": client_name,
        **credentials(config),
        **tls_options(config),
    }
    return Redis.from_url(config.url, **options)


def default_consumer_name() -> str:
    """``<hostname>-<pid>-<random>``: unique per replica and per process start."""
    return f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
