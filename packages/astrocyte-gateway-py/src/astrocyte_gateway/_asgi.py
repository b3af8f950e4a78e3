"""Tiny helpers shared by the pure-ASGI middleware: answer an error without touching the app."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def scope_state(scope: Scope) -> dict[str, Any]:
    """The per-request ``state`` dict Starlette exposes as ``request.state``."""
    state = scope.get("state")
    if state is None:
        state = scope["state"] = {}
    return state


def header(scope: Scope, name: bytes) -> bytes | None:
    """First value of a request header (``name`` lower-case)."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


async def send_error(
    send: Send,
    scope: Scope,
    status: int,
    code: str,
    detail: str,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send ``{"detail", "code", "request_id"}`` with ``status``."""
    body = json.dumps(
        {"detail": detail, "code": code, "request_id": scope_state(scope).get("request_id")}
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers.extend(extra_headers or ())
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
