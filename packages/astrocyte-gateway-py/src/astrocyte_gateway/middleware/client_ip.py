"""Decide who the client is, for the rate limiter and the access log (``request.state.client_ip``).

The direct peer, unless it is a trusted proxy (``ASTROCYTE_TRUSTED_PROXIES``). Then the forwarded
chain is walked **from the right**: ``Forwarded`` (RFC 7239) when present, else ``X-Forwarded-For``;
each hop that is itself a trusted proxy is skipped, and the first hop that is not is the client.
A proxy that appends (nginx's ``$proxy_add_x_forwarded_for``, most cloud load balancers) keeps what
the client wrote on the left, so the leftmost hop is never believed; with one proxy that overwrites
the header this is the same address as the reference document's "first hop". A chain that is all
trusted proxies ends at its leftmost hop; an unparsable hop ends the walk at the last good one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from astrocyte_gateway._asgi import ASGIApp, Receive, Scope, Send, scope_state

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


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
        if not self.trusted or not self._is_trusted(_address(peer)):
            return peer
        hops = _forwarded_hops(scope)
        client_ip = peer
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                break  # garbage in the chain: stop at the last hop we could read
            client_ip = str(address)
            if not self._is_trusted(address):
                break
        return client_ip

    def _is_trusted(self, address: Address | None) -> bool:
        return address is not None and any(address in network for network in self.trusted)


def _forwarded_hops(scope: Scope) -> list[str]:
    """Every hop of the ``Forwarded`` headers (its ``for=`` values), else of ``X-Forwarded-For``,
    left to right across repeated headers."""
    forwarded: list[bytes] = []
    xff: list[bytes] = []
    for name, value in scope.get("headers", ()):
        if name == b"forwarded":
            forwarded.append(value)
        elif name == b"x-forwarded-for":
            xff.append(value)
    if forwarded:
        return [_for_value(element) for value in forwarded for element in value.decode("latin-1").split(",")]
    return [hop.strip() for value in xff for hop in value.decode("latin-1").split(",")]


def _for_value(element: str) -> str:
    """The node of one RFC 7239 element (``for=192.0.2.1;proto=https``, ``for="[2001:db8::1]:443"``);
    an element without ``for`` (or an obfuscated one) yields a value that does not parse."""
    for pair in element.split(";"):
        key, _, value = pair.strip().partition("=")
        if key.lower() == "for":
            value = value.strip().strip('"')
            if value.startswith("["):
                return value[1 : value.find("]")] if "]" in value else value
            return value.rsplit(":", 1)[0] if value.count(":") == 1 else value
    return ""


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
