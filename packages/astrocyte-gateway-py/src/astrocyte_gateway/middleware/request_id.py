"""Give every request an id, echo it as ``X-Request-ID``, and turn an unexpected crash into a JSON 500
that still carries the id."""

from __future__ import annotations

import itertools
import logging
import re
import secrets

from astrocyte_gateway._asgi import ASGIApp, Message, Receive, Scope, Send, header, scope_state, send_error

log = logging.getLogger("astrocyte_gateway.request")

# Generated ids: a random per-process prefix and a counter, unique across replicas and far cheaper
# than a uuid4 per request.
_PREFIX = secrets.token_hex(8)
_COUNTER = itertools.count(1)
# A client-supplied id is reused only when it is short and plain, so it cannot inject into logs.
_SAFE_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        supplied = header(scope, b"x-request-id")
        request_id = (
            supplied.decode() if supplied and _SAFE_ID.match(supplied) else f"{_PREFIX}{next(_COUNTER):08x}"
        )
        scope_state(scope)["request_id"] = request_id
        raw_id = request_id.encode()
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", raw_id)]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error in request %s", request_id)
            if not started:
                await send_error(
                    send_with_id, scope, 500, "internal_error", "internal error; see gateway logs"
                )
