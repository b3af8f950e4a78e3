"""Per-client rate limit (``ASTROCYTE_RATE_LIMIT_PER_SECOND``): 429 with ``Retry-After``.

The client is ``request.state.client_ip`` as decided by :mod:`client_ip` (so a forged
``X-Forwarded-For`` from an untrusted peer cannot pick its own bucket). Probes and ``/metrics`` are
exempt so orchestration never spends the API budget. State lives in the limiter given (in-process
with bounded memory, or Redis so replicas share one budget).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from astrocyte.errors import ProviderUnavailableError

from astrocyte_gateway._asgi import ASGIApp, Receive, Scope, Send, scope_state, send_error
from astrocyte_gateway.errors import retry_after_header

log = logging.getLogger("astrocyte_gateway.rate_limit")

EXEMPT_PATHS = frozenset({"/live", "/health", "/health/ingest", "/metrics"})


class Decision(Protocol):
    allowed: bool
    retry_after: float


class ClientLimiter(Protocol):
    """What the middleware needs from a limiter backend."""

    async def hit(self, key: str, rate: float, burst: int) -> Any: ...


class RateLimitMiddleware:
    def __init__(
        self, app: ASGIApp, limiter: ClientLimiter, per_second: float, burst: int | None = None
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.rate = per_second
        self.burst = burst or max(1, int(per_second))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        client = scope_state(scope).get("client_ip") or "unknown"
        try:
            decision = await self.limiter.hit(client, self.rate, self.burst)
        except ProviderUnavailableError:
            # Fail closed: a shared budget we cannot read is not a reason to serve unlimited.
            await send_error(send, scope, 503, "rate_limiter_unavailable", "rate limiter backend unavailable")
            return
        if decision.allowed:
            await self.app(scope, receive, send)
            return
        retry = retry_after_header(decision.retry_after)["Retry-After"]
        await send_error(
            send,
            scope,
            429,
            "rate_limited",
            f"too many requests from this client; retry after {retry} s",
            [(b"retry-after", retry.encode())],
        )
