"""Exception handlers: every error leaves the gateway as ``{"detail", "code", "request_id"}``.

Status and code come from the core's ``AstrocyteError.http_status`` / ``code``; validation errors are
400 with ``code="validation_error"``; 429 carries ``Retry-After``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from astrocyte.errors import AstrocyteError, RateLimitedError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("astrocyte_gateway.errors")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "access_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


def error_body(request: Request, detail: str, code: str, **extra: Any) -> dict[str, Any]:
    """The one error shape."""
    body: dict[str, Any] = {
        "detail": detail,
        "code": code,
        "request_id": getattr(request.state, "request_id", None),
    }
    body.update(extra)
    return body


def retry_after_header(seconds: float) -> dict[str, str]:
    """``Retry-After`` in whole seconds, never 0 (a client would retry at once)."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


async def _astrocyte_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AstrocyteError)
    headers = retry_after_header(exc.retry_after) if isinstance(exc, RateLimitedError) else None
    if exc.http_status >= 500:
        log.warning("request failed: %s (%s)", exc.code, exc.message)
    extra = {"details": exc.details} if exc.details else {}
    return JSONResponse(error_body(request, exc.message, exc.code, **extra), exc.http_status, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors()[:10]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        problems.append(f"{where}: {err.get('msg', 'invalid')}")
    detail = "invalid request: " + "; ".join(problems)
    return JSONResponse(error_body(request, detail, "validation_error"), 400)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    if exc.status_code == 400:
        code = "validation_error"
    return JSONResponse(
        error_body(request, str(exc.detail), code), exc.status_code, headers=getattr(exc, "headers", None)
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``. Unexpected exceptions are answered by the request-id
    middleware, which catches them before Starlette's error middleware so the 500 keeps its id."""
    app.add_exception_handler(AstrocyteError, _astrocyte_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
