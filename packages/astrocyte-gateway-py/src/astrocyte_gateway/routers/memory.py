"""``POST /v1/retain | /v1/recall | /v1/reflect | /v1/forget``: a thin translation into core calls.

These are the hot routes, so they cost as little framework as they can, each measured per request:
they parse their body with pydantic's native JSON validation and authenticate inline rather than
through FastAPI's dependency solver (~20 µs); those taking only the request are called directly by
:class:`~astrocyte_gateway.direct_route.DirectRoute` (~20 µs); and :func:`install` adds them to the
app's own router rather than through an included ``APIRouter``, whose routes FastAPI matches twice
through its nested-router machinery (~10 µs). The OpenAPI document still describes the body and
response models and the security schemes.
"""

from __future__ import annotations

from typing import Any

from astrocyte.types import AstrocyteContext
from fastapi import FastAPI, Request, Response

from astrocyte_gateway._asgi import scope_state
from astrocyte_gateway.deps import (
    BodyT,
    OptionalHeader,
    authenticate,
    engine_of,
    json_response,
    read_body,
    runtime_of,
)
from astrocyte_gateway.direct_route import DirectRoute
from astrocyte_gateway.openapi import json_body
from astrocyte_gateway.runtime import GatewayRuntime
from astrocyte_gateway.schemas import (
    ForgetBody,
    ForgetResponse,
    RecallBody,
    RecallResponse,
    ReflectBody,
    ReflectResponse,
    RetainBody,
    RetainResponse,
)

IDEMPOTENCY_KEY = OptionalHeader("Idempotency-Key", max_length=255)  # or the body's idempotency_key


async def _begin(request: Request, model: type[BodyT]) -> tuple[GatewayRuntime, BodyT, AstrocyteContext]:
    """What every memory route does first: read the body, authenticate, note the bank(s) for the
    access log."""
    runtime = runtime_of(request)
    body = await read_body(request, model)
    context = await authenticate(request, runtime)
    # Every memory body names bank_id; recall and reflect may name banks instead.
    bank_id, banks = getattr(body, "bank_id", None), getattr(body, "banks", None)
    scope_state(request.scope)["bank_id"] = bank_id if bank_id else ",".join(banks or ()) or None
    return runtime, body, context


def _done(runtime: GatewayRuntime, operation: str, result: Any) -> Response:
    runtime.metrics.count_operation(operation, "ok")
    return json_response(result)


async def retain(request: Request) -> Response:
    idempotency_key = IDEMPOTENCY_KEY.read(request)
    runtime, body, context = await _begin(request, RetainBody)
    result = await engine_of(runtime).retain(
        body.content, body.bank_id, metadata=body.metadata, tags=body.tags, occurred_at=body.occurred_at,
        source=body.source, idempotency_key=idempotency_key or body.idempotency_key, context=context,
    )  # fmt: skip
    return _done(runtime, "retain", result)


async def recall(request: Request) -> Response:
    runtime, body, context = await _begin(request, RecallBody)
    window = (body.time_range.start, body.time_range.end) if body.time_range else None
    result = await engine_of(runtime).recall(
        body.query, body.bank_id, banks=body.banks, max_results=body.max_results, max_tokens=body.max_tokens,
        tags=body.tags, time_range=window, context=context,
    )  # fmt: skip
    return _done(runtime, "recall", result)


async def reflect(request: Request) -> Response:
    runtime, body, context = await _begin(request, ReflectBody)
    result = await engine_of(runtime).reflect(
        body.query, body.bank_id, banks=body.banks, max_tokens=body.max_tokens,
        include_sources=body.include_sources, context=context,
    )  # fmt: skip
    return _done(runtime, "reflect", result)


async def forget(request: Request) -> Response:
    runtime, body, context = await _begin(request, ForgetBody)
    result = await engine_of(runtime).forget(
        body.bank_id, memory_ids=body.memory_ids, tags=body.tags, before=body.before, scope=body.scope,
        context=context,
    )  # fmt: skip
    return _done(runtime, "forget", result)


def install(app: FastAPI) -> None:
    """Add the memory routes to ``app`` itself (before the included routers, so they match first)."""
    routes = (
        ("/v1/retain", retain, RetainBody, RetainResponse, "Remember a piece of text in a bank"),
        ("/v1/recall", recall, RecallBody, RecallResponse, "Find the memories relevant to a query"),
        ("/v1/reflect", reflect, ReflectBody, ReflectResponse, "Answer a question from a bank's memories"),
        ("/v1/forget", forget, ForgetBody, ForgetResponse, "Delete memories by id, tag, age, or all"),
    )
    for path, endpoint, body, response, summary in routes:
        extra = json_body(body)
        if endpoint is retain:
            extra["parameters"] = [IDEMPOTENCY_KEY.openapi()]
        app.router.add_api_route(
            path, endpoint, methods=["POST"], response_model=response, summary=summary, tags=["memory"],
            openapi_extra=extra, route_class_override=DirectRoute,
        )  # fmt: skip
