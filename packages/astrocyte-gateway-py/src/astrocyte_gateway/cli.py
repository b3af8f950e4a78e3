"""``astrocyte-gateway``: run the gateway under uvicorn. Flags override the ``ASTROCYTE_*`` env vars."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from collections.abc import Sequence

from astrocyte.errors import ConfigError

from astrocyte_gateway.settings import Settings

_FLAG_ENV = {
    "host": "ASTROCYTE_HOST",
    "port": "ASTROCYTE_PORT",
    "config": "ASTROCYTE_CONFIG_PATH",
    "workers": "ASTROCYTE_WORKERS",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="astrocyte-gateway", description="Run the Astrocyte HTTP gateway.")
    parser.add_argument("--host", help="address to bind (env ASTROCYTE_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to bind (env ASTROCYTE_PORT, default 8080)")
    parser.add_argument(
        "--config", help="astrocyte.yaml (env ASTROCYTE_CONFIG_PATH; default: embedded SQLite)"
    )
    parser.add_argument("--workers", type=int, help="worker processes (env ASTROCYTE_WORKERS, default 1)")
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = _parser().parse_args(argv)
    for flag, env_name in _FLAG_ENV.items():
        value = getattr(args, flag)
        if value is not None:
            os.environ[env_name] = str(value)  # worker processes read their settings from the env
    try:
        settings = Settings.from_env()
        _refuse_dev_off_loopback(settings)
    except ConfigError as exc:
        print(f"astrocyte-gateway: {exc.message}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(message)s")
    import uvicorn

    where = settings.config_path or f"embedded default ({settings.data_dir}/astrocyte.db)"
    print(
        f"Astrocyte gateway listening on http://{_url_host(settings.host)}:{settings.port} "
        f"(auth {settings.auth_mode}, {settings.workers} worker(s), config: {where})",
        flush=True,
    )
    uvicorn.run(
        "astrocyte_gateway.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=args.log_level,
        access_log=False,
        proxy_headers=False,
    )
    return 0


def _refuse_dev_off_loopback(settings: Settings) -> None:
    if settings.auth_mode != "dev":
        return
    try:
        loopback = settings.host == "localhost" or ipaddress.ip_address(settings.host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ConfigError(
            f"ASTROCYTE_AUTH_MODE: dev mode needs a loopback host, not {settings.host!r}; "
            "set ASTROCYTE_AUTH_MODE=api_key or jwt to listen elsewhere",
            code="gateway_config_invalid",
        )


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


if __name__ == "__main__":
    sys.exit(main())
