"""``dev`` mode: no credentials; the principal is ``X-Astrocyte-Principal`` (default ``user:dev``).

Allowed only while every socket this process listens on is loopback, checked against the sockets
actually bound (not the configured host), so ``uvicorn app --host 0.0.0.0`` is refused however the
server was started. The check runs on the first request (servers bind after the lifespan starts)
and each request's own ``server`` address is checked too.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import os

from astrocyte.errors import AccessDeniedError
from astrocyte.types import AstrocyteContext
from starlette.requests import Request

from astrocyte_gateway._asgi import header
from astrocyte_gateway.auth import PRINCIPAL_HEADER, checked_principal

log = logging.getLogger("astrocyte_gateway.auth.dev")

DEFAULT_PRINCIPAL = "user:dev"
_DEFAULT_CONTEXT = AstrocyteContext(principal=DEFAULT_PRINCIPAL)  # frozen: one shared instance
_PRINCIPAL_HEADER_RAW = PRINCIPAL_HEADER.encode()
_LISTEN = "0A"


class DevAuthenticator:
    def __init__(self) -> None:
        self._non_loopback: list[str] | None = None

    async def authenticate(self, request: Request) -> AstrocyteContext:
        if self._non_loopback is None:
            self._non_loopback = non_loopback_listeners()
            if self._non_loopback:
                log.error(
                    "dev auth refused: listening on %s; use api_key or jwt", ", ".join(self._non_loopback)
                )
        server = request.scope.get("server")
        if self._non_loopback or (server and not is_loopback(server[0])):
            raise AccessDeniedError(
                "dev auth mode is allowed only when the gateway listens on loopback; "
                "bind 127.0.0.1 or set ASTROCYTE_AUTH_MODE to api_key or jwt",
                code="dev_mode_not_loopback",
            )
        named = header(request.scope, _PRINCIPAL_HEADER_RAW)
        if not named:
            return _DEFAULT_CONTEXT
        return AstrocyteContext(principal=checked_principal(named.decode("latin-1"), "X-Astrocyte-Principal"))

    async def close(self) -> None:
        return None


@functools.lru_cache(maxsize=256)
def is_loopback(host: str) -> bool:
    """True for loopback IPs and for non-IP test transports (no socket at all)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in ("localhost", "testserver", "testclient")


def non_loopback_listeners() -> list[str]:
    """Addresses of this process's listening TCP sockets that are not loopback (Linux /proc)."""
    inodes = _socket_inodes()
    found: list[str] = []
    for table, width in (("/proc/self/net/tcp", 8), ("/proc/self/net/tcp6", 32)):
        for address, inode in _listening(table, width):
            if inode in inodes and not address.is_loopback and not _is_mapped_loopback(address):
                found.append(str(address))
    return found


def _socket_inodes() -> set[str]:
    inodes: set[str] = set()
    try:
        fds = os.listdir("/proc/self/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _listening(table: str, width: int) -> list[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, str]]:
    try:
        with open(table, encoding="ascii") as handle:
            rows = handle.read().splitlines()[1:]
    except OSError:
        return []
    result = []
    for row in rows:
        fields = row.split()
        if len(fields) < 10 or fields[3] != _LISTEN:
            continue
        hex_addr = fields[1].split(":")[0]
        result.append((_decode(hex_addr, width), fields[9]))
    return result


def _decode(hex_addr: str, width: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    # /proc prints each 32-bit word in host (little-endian) byte order.
    raw = b"".join(bytes.fromhex(hex_addr[i : i + 8])[::-1] for i in range(0, width, 8))
    return ipaddress.IPv4Address(raw) if width == 8 else ipaddress.IPv6Address(raw)


def _is_mapped_loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(mapped and mapped.is_loopback)
