"""CORS for browser apps (``ASTROCYTE_CORS_ORIGINS``), answering refusals in the gateway's JSON
error shape. Only listed origins (or ``*``) get ``Access-Control-Allow-*`` headers; credentials
are never allowed with ``*``."""

from __future__ import annotations

from collections.abc import Sequence

from astrocyte_gateway._asgi import ASGIApp, Message, Receive, Scope, Send, header, send_error

ALLOWED_METHODS = b"GET, POST, DELETE, OPTIONS"
ALLOWED_HEADERS = frozenset(
    {"authorization", "content-type", "x-api-key", "idempotency-key", "x-request-id", "x-astrocyte-principal"}
)
MAX_AGE = b"600"


class CorsMiddleware:
    def __init__(self, app: ASGIApp, origins: Sequence[str]) -> None:
        self.app = app
        self.any_origin = "*" in origins
        self.origins = frozenset(o.rstrip("/") for o in origins if o != "*")

    def _allowed(self, origin: str) -> bool:
        return self.any_origin or origin in self.origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin_raw = header(scope, b"origin") if scope["type"] == "http" else None
        if origin_raw is None:
            await self.app(scope, receive, send)
            return
        origin = origin_raw.decode("latin-1")
        preflight = (
            scope["method"] == "OPTIONS" and header(scope, b"access-control-request-method") is not None
        )
        if preflight:
            await self._preflight(scope, send, origin)
            return
        if not self._allowed(origin):
            await self.app(scope, receive, send)  # no CORS headers: the browser blocks the response
            return
        allow = b"*" if self.any_origin else origin_raw

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"access-control-allow-origin", allow),
                    (b"access-control-expose-headers", b"X-Request-ID, Retry-After"),
                    (b"vary", b"Origin"),
                ]
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, scope: Scope, send: Send, origin: str) -> None:
        requested = (header(scope, b"access-control-request-headers") or b"").decode("latin-1")
        wanted = {h.strip().lower() for h in requested.split(",") if h.strip()}
        method = (header(scope, b"access-control-request-method") or b"").decode("latin-1").upper()
        if not self._allowed(origin):
            await send_error(
                send, scope, 403, "cors_origin_refused", "origin is not in ASTROCYTE_CORS_ORIGINS"
            )
            return
        if method.encode() not in ALLOWED_METHODS.split(b", ") or not wanted <= ALLOWED_HEADERS:
            await send_error(
                send, scope, 403, "cors_request_refused", "method or headers not allowed by CORS"
            )
            return
        headers = [
            (b"access-control-allow-origin", b"*" if self.any_origin else origin.encode("latin-1")),
            (b"access-control-allow-methods", ALLOWED_METHODS),
            (b"access-control-allow-headers", ", ".join(sorted(ALLOWED_HEADERS)).encode()),
            (b"access-control-max-age", MAX_AGE),
            (b"vary", b"Origin"),
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
