"""One JSON line per request: request id, principal (and acting_for), bank, client, method, path, status, duration.

Principal and bank are whatever the routes put on ``request.state``; credentials never reach the
log (only the principal they resolved to). Prometheus request metrics are recorded here too, from the
same measurement, so the hot path times each request once.
"""

from __future__ import annotations

import json
import logging
import time

from starlette.requests import ClientDisconnect

from astrocyte_gateway._asgi import ASGIApp, Message, Receive, Scope, Send, scope_state
from astrocyte_gateway.metrics import GatewayMetrics

log = logging.getLogger("astrocyte_gateway.access")
#: nginx's status for "the client closed the connection before the answer": not a server error.
CLIENT_CLOSED = 499


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, metrics: GatewayMetrics, enabled: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_see(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_see)
        except ClientDisconnect:
            # Nobody is left to answer; a client going away is not a gateway failure. The server
            # protocol marks a body that did not arrive in time, which it answered 408 itself.
            if scope_state(scope).get("timed_out"):
                status = 408
            else:
                status = CLIENT_CLOSED
                log.info(
                    "client went away before its request was read (%s %s)", scope["method"], scope["path"]
                )
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(scope["method"], template, status, elapsed)
            if self.enabled and log.isEnabledFor(logging.INFO):
                log.info(_line(scope, status, elapsed))


def _line(scope: Scope, status: int, elapsed: float) -> str:
    state = scope_state(scope)
    return json.dumps(
        {
            "request_id": state.get("request_id"),
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "duration_ms": round(elapsed * 1000, 3),
            "client": state.get("client_ip"),
            "principal": state.get("principal"),
            "acting_for": state.get("acting_for"),
            "bank": state.get("bank_id"),
        },
        separators=(",", ":"),
    )
