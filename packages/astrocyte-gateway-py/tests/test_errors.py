"""An unexpected crash still answers the JSON error shape with the request id."""

from __future__ import annotations

from typing import Any

from astrocyte_gateway.middleware.request_id import RequestIdMiddleware


async def test_unhandled_exception_becomes_json_500_with_request_id() -> None:
    async def crashing_app(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": "/x",
        "headers": [(b"x-request-id", b"req-9")],
    }
    await RequestIdMiddleware(crashing_app)(scope, receive, send)
    assert sent[0]["status"] == 500
    assert (b"x-request-id", b"req-9") in sent[0]["headers"]
    assert b'"code": "internal_error"' in sent[1]["body"] and b'"request_id": "req-9"' in sent[1]["body"]
    assert b"boom" not in sent[1]["body"]
