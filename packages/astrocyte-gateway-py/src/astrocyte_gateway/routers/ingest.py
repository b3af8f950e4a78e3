"""``POST /v1/ingest/webhook/{source_id}``: signed deliveries, verified by the core's webhook driver.

Exempt from user auth (the HMAC signature is the credential); the memory is retained as the
source's configured principal by the source's sink. Stale and badly signed deliveries are refused
with 401, bad bodies with 400 ``webhook_payload_invalid``; a replay or a redelivery answers 200
``duplicate`` and writes nothing (the store remembers, on every replica).
"""

from __future__ import annotations

from typing import Annotated, Any

from astrocyte.errors import NotFoundError, ProviderUnavailableError, RateLimitedError, ValidationError
from fastapi import APIRouter, Path, Request, Response

from astrocyte_gateway.deps import body_bytes, json_response, runtime_of

router = APIRouter(prefix="/v1/ingest", tags=["ingest"])
SourceId = Annotated[str, Path(min_length=1, max_length=255)]


@router.post(
    "/webhook/{source_id}",
    summary="Receive a signed webhook delivery for a webhook source",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"type": "object", "properties": {"content": {"type": "string"}}}
                }
            },
        }
    },
)
async def webhook(source_id: SourceId, request: Request) -> Response:
    driver = _webhook_driver(request, source_id)
    request.state.principal = f"source:{source_id}"
    outcome = await driver.handle(request.headers, await body_bytes(request))
    if outcome.status in ("stored", "duplicate"):
        runtime_of(request).metrics.count_operation("webhook", outcome.status)
        return json_response({"status": outcome.status, "memory_id": outcome.memory_id})
    if outcome.status == "rejected":
        raise ValidationError(outcome.reason or "delivery rejected", code=outcome.code or "webhook_rejected")
    if outcome.retry_after:
        raise RateLimitedError(
            outcome.reason or "retry later", retry_after=outcome.retry_after, code=outcome.code
        )
    raise ProviderUnavailableError(
        outcome.reason or "delivery not stored; retry", code=outcome.code or "ingest_failed"
    )


def _webhook_driver(request: Request, source_id: str) -> Any:
    supervisor = runtime_of(request).supervisor
    if supervisor is None or source_id not in supervisor.source_ids:
        raise NotFoundError(f"no webhook source {source_id!r}", code="webhook_source_not_found")
    driver = supervisor.driver(source_id)
    if driver is None:
        raise ProviderUnavailableError("the webhook source is restarting; retry", code="source_restarting")
    if not hasattr(driver, "handle"):
        raise NotFoundError(f"no webhook source {source_id!r}", code="webhook_source_not_found")
    return driver
