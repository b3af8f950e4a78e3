"""uvicorn's h11 protocol with the connection limits a public socket needs.

uvicorn bounds the idle time between requests (``timeout_keep_alive``) and the size of an incomplete
header block (``h11_max_incomplete_event_size``), but not the time a client may take to send its
headers or its body, nor how many connections one client may hold: 200 connections sending a header
byte a second, or bodies shorter than their ``Content-Length``, would pin the server's sockets.
:class:`GuardedH11Protocol` adds:

- ``ASTROCYTE_HEADER_TIMEOUT_SECONDS`` (default 10): the request line and headers must arrive within
  this time of the connection opening (or of the previous response); else 408 and close;
- ``ASTROCYTE_BODY_TIMEOUT_SECONDS`` (default 30): the body must then arrive within this time; else
  408 and close (the app sees the client as gone, and the access log records the 408);
- ``ASTROCYTE_MAX_CONNECTIONS_PER_CLIENT`` (default 64): further connections from the same peer
  address are answered 429 and closed. Peers in ``ASTROCYTE_TRUSTED_PROXIES`` are exempt (a proxy
  carries many clients; cap them at the proxy).

``astrocyte-gateway`` uses it; with plain uvicorn pass ``--http astrocyte_gateway.server:GuardedH11Protocol``.
The settings are read from the environment once per worker process.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from astrocyte_gateway.settings import Settings

log = logging.getLogger("astrocyte_gateway.server")


class _Limits:
    def __init__(self, settings: Settings) -> None:
        self.header_timeout = settings.header_timeout_seconds
        self.body_timeout = settings.body_timeout_seconds
        self.per_client = settings.max_connections_per_client
        self.trusted = settings.trusted_proxies
        self.open: dict[str, int] = {}  # peer address -> open connections (one event loop per process)

    def exempt(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.trusted)


def _response(status: int, reason: bytes, code: str, detail: str) -> bytes:
    body = json.dumps({"detail": detail, "code": code, "request_id": None}).encode()
    head = (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: %d\r\n\r\n"
        % (status, reason, len(body))
    )
    return head + body


_HEADER_TIMEOUT = _response(408, b"Request Timeout", "request_timeout", "the request headers took too long")
_BODY_TIMEOUT = _response(408, b"Request Timeout", "request_timeout", "the request body took too long")
_TOO_MANY = _response(
    429, b"Too Many Requests", "too_many_connections", "too many open connections from this client"
)


class GuardedH11Protocol(H11Protocol):
    limits: _Limits | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if GuardedH11Protocol.limits is None:
            GuardedH11Protocol.limits = _Limits(Settings.from_env())
        self._limits: _Limits = GuardedH11Protocol.limits
        self._peer: str | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peer = self.client[0] if self.client else None
        limits = self._limits
        if peer is not None and not limits.exempt(peer):
            if limits.open.get(peer, 0) >= limits.per_client:
                log.warning("connection refused: too many open connections from one client")
                transport.write(_TOO_MANY)
                transport.close()
                return
            limits.open[peer] = limits.open.get(peer, 0) + 1
            self._peer = peer
        self._arm(limits.header_timeout, self._headers_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._peer is not None:
            left = self._limits.open.get(self._peer, 1) - 1
            if left > 0:
                self._limits.open[self._peer] = left
            else:
                self._limits.open.pop(self._peer, None)
            self._peer = None
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm(self._limits.header_timeout, self._headers_late)  # the next request's headers

    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _headers_late(self) -> None:
        self._timer = None
        state = self.conn.their_state
        if state is h11.IDLE:
            self._close(_HEADER_TIMEOUT, "request headers not received in time")
        elif state is h11.SEND_BODY:  # headers arrived; the body has its own allowance from here
            self._arm(self._limits.body_timeout, self._body_late)

    def _body_late(self) -> None:
        self._timer = None
        if self.conn.their_state is not h11.SEND_BODY:
            return
        cycle = self.cycle
        answered = cycle is not None and cycle.response_started
        if cycle is not None:
            cycle.scope["state"]["timed_out"] = True  # for the access log: a 408, not a 499
        self._close(None if answered else _BODY_TIMEOUT, "request body not received in time")

    def _close(self, response: bytes | None, why: str) -> None:
        if self.transport.is_closing():
            return
        log.info("closing a connection: %s", why)
        if response is not None:
            self.transport.write(response)
        self.transport.close()
