"""Refuse request bodies over ``ASTROCYTE_MAX_REQUEST_BODY_BYTES`` with 413.

A declared ``Content-Length`` over the limit is refused before reading. A body without one
(``Transfer-Encoding: chunked``) is counted as it streams and refused as soon as it passes the limit,
so a client cannot bypass the check by not declaring a length.
"""

from __future__ import annotations

from astrocyte_gateway._asgi import ASGIApp, Message, Receive, Scope, Send, header, send_error


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                await send_error(send, scope, 400, "validation_error", "Content-Length is not a number")
                return
            if too_big:
                await self._refuse(scope, send)
                return
            # The server enforces the declared length, so the body cannot grow past it.
            await self.app(scope, receive, send)
            return
        buffered = await self._read_counted(receive)
        if buffered is None:
            await self._refuse(scope, send)
            return
        await self.app(scope, _replay(buffered, receive), send)

    async def _read_counted(self, receive: Receive) -> list[Message] | None:
        """Read an undeclared-length body; None as soon as it passes the limit."""
        messages: list[Message] = []
        total = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages
            total += len(message.get("body", b""))
            if total > self.max_bytes:
                return None
            if not message.get("more_body", False):
                return messages

    async def _refuse(self, scope: Scope, send: Send) -> None:
        await send_error(
            send,
            scope,
            413,
            "request_too_large",
            f"request body is larger than the {self.max_bytes}-byte limit (ASTROCYTE_MAX_REQUEST_BODY_BYTES)",
            [(b"connection", b"close")],
        )


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
