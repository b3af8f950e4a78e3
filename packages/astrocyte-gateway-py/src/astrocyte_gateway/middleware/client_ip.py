"""Decide who the client is: the direct peer, or the first ``X-Forwarded-For`` hop when (and only
when) the direct peer is a trusted proxy (``ASTROCYTE_TRUSTED_PROXIES``). The result is stored in
``request.state.client_ip`` for the rate limiter and the access log."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from astrocyte_gateway._asgi import ASGIApp, Receive, Scope, Send, header, scope_state

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ClientIpMiddleware:
    def __init__(self, app: ASGIApp, trusted_proxies: Sequence[Network]) -> None:
        self.app = app
        self.trusted = tuple(trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope_state(scope)["client_ip"] = self.client_of(scope)
        await self.app(scope, receive, send)

    def client_of(self, scope: Scope) -> str:
        client = scope.get("client")
        peer = client[0] if client else "unknown"
        if not self.trusted or not self._is_trusted(peer):
            return peer
        forwarded = header(scope, b"x-forwarded-for")
        if not forwarded:
            return peer
        first = forwarded.split(b",", 1)[0].strip().decode("latin-1")
        try:
            return str(ipaddress.ip_address(first))
        except ValueError:
            return peer  # garbage from the proxy: fall back to what we can see

    def _is_trusted(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.trusted)
