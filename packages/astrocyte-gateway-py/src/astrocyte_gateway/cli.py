"""``astrocyte-gateway``: run the gateway under uvicorn. Flags override the ``ASTROCYTE_*`` env vars.

Everything that can be checked before serving is checked first (settings, ``astrocyte.yaml``, its
providers and sources, access control, the listening socket): a problem is one line on stderr and
exit code 2, never a traceback, and "listening" is printed only once the socket is bound and the app
has started.
"""

from __future__ import annotations

import argparse
import inspect
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Sequence

import uvicorn
from astrocyte.errors import AstrocyteError, ConfigError

from astrocyte_gateway.settings import Settings

EXIT_CONFIG = 2
EXIT_START_FAILED = 3
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
        _check_config(settings)
        sock = _bind(settings)
    except AstrocyteError as exc:
        print(f"astrocyte-gateway: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    logging.basicConfig(level=args.log_level.upper(), format="%(message)s")
    return _serve(settings, sock, args.log_level)


def _check_config(settings: Settings) -> None:
    """Build (not open) the engine: a missing file, an unknown key or an uninstalled driver fails
    here; then the same access-control rule the app enforces."""
    from astrocyte.ingest.config import validate_sources

    from astrocyte_gateway.engine import build_engine, check_access_control

    try:
        brain = build_engine(settings)
    except FileNotFoundError as exc:
        raise ConfigError(f"ASTROCYTE_CONFIG_PATH: no such file: {exc.filename}") from None
    validate_sources(brain.config.sources)
    check_access_control(settings, brain.config)


def _bind(settings: Settings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {_url_host(settings.host)}:{settings.port}: {exc.strerror}"
        ) from None
    sock.set_inheritable(True)
    return sock


def _serve(settings: Settings, sock: socket.socket, log_level: str) -> int:
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(
        "astrocyte_gateway.app:create_app",
        factory=True,
        workers=settings.workers,
        log_level=log_level,
        access_log=False,
        proxy_headers=False,
        http="astrocyte_gateway.server:GuardedH11Protocol",
        # Header blocks up to this size reach the gateway, which answers 431 over its own limit.
        h11_max_incomplete_event_size=4 * settings.max_header_bytes,
    )
    banner = _banner(settings)
    if settings.workers > 1:
        print(banner, flush=True)  # bound; each worker starts the app itself
        if "target" in inspect.signature(Multiprocess).parameters:  # older uvicorn takes the target
            Multiprocess(config, target=uvicorn.Server(config).run, sockets=[sock]).run()  # type: ignore[call-arg]
        else:
            Multiprocess(config, sockets=[sock]).run()
        return 0
    server = _AnnouncingServer(config, banner)
    server.run(sockets=[sock])
    if not server.started:
        print("astrocyte-gateway: the app did not start; see the log above", file=sys.stderr)
        return EXIT_START_FAILED
    return 0


class _AnnouncingServer(uvicorn.Server):
    """``uvicorn.Server`` that prints the banner once it is serving."""

    def __init__(self, config: uvicorn.Config, banner: str) -> None:
        super().__init__(config)
        self.banner = banner

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(self.banner, flush=True)


def _banner(settings: Settings) -> str:
    where = settings.config_path or f"embedded default ({settings.data_dir}/astrocyte.db)"
    return (
        f"Astrocyte gateway listening on http://{_url_host(settings.host)}:{settings.port} "
        f"(auth {settings.auth_mode}, {settings.workers} worker(s), config: {where})"
    )


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
