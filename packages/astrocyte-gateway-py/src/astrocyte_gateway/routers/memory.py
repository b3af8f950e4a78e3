"""``POST /v1/retain | /v1/recall | /v1/reflect | /v1/forget``: a thin translation into core calls."""

from __future__ import annotations

from typing import Annotated, Any

from astrocyte.types import AstrocyteContext
from fastapi import APIRouter, Depends, Header, Request, Response

from astrocyte_gateway.deps import brain_of, caller, json_response, runtime_of
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

router = APIRouter(prefix="/v1", tags=["memory"])
Caller = Annotated[AstrocyteContext, Depends(caller)]


def _note_bank(request: Request, bank_id: str | None, banks: list[str] | None) -> None:
    request.state.bank_id = bank_id if bank_id else ",".join(banks or ()) or None


def _done(request: Request, operation: str, payload: dict[str, Any]) -> Response:
    runtime_of(request).metrics.count_operation(operation, "ok")
    return json_response(payload)


@router.post("/retain", response_model=RetainResponse, summary="Remember a piece of text in a bank")
async def retain(
    body: RetainBody,
    request: Request,
    context: Caller,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None,
) -> Response:
    _note_bank(request, body.bank_id, None)
    result = await brain_of(request).retain(
        body.content,
        body.bank_id,
        metadata=body.metadata,
        tags=body.tags,
        occurred_at=body.occurred_at,
        source=body.source,
        idempotency_key=idempotency_key or body.idempotency_key,
        context=context,
    )
    return _done(request, "retain", result.to_dict())


@router.post("/recall", response_model=RecallResponse, summary="Find the memories relevant to a query")
async def recall(body: RecallBody, request: Request, context: Caller) -> Response:
    _note_bank(request, body.bank_id, body.banks)
    window = (body.time_range.start, body.time_range.end) if body.time_range else None
    result = await brain_of(request).recall(
        body.query,
        body.bank_id,
        banks=body.banks,
        max_results=body.max_results,
        max_tokens=body.max_tokens,
        tags=body.tags,
        time_range=window,
        context=context,
    )
    return _done(request, "recall", result.to_dict())


@router.post("/reflect", response_model=ReflectResponse, summary="Answer a question from a bank's memories")
async def reflect(body: ReflectBody, request: Request, context: Caller) -> Response:
    _note_bank(request, body.bank_id, body.banks)
    result = await brain_of(request).reflect(
        body.query,
        body.bank_id,
        banks=body.banks,
        max_tokens=body.max_tokens,
        include_sources=body.include_sources,
        context=context,
    )
    return _done(request, "reflect", result.to_dict())


@router.post("/forget", response_model=ForgetResponse, summary="Delete memories by id, tag, age, or all")
async def forget(body: ForgetBody, request: Request, context: Caller) -> Response:
    _note_bank(request, body.bank_id, None)
    result = await brain_of(request).forget(
        body.bank_id,
        memory_ids=body.memory_ids,
        tags=body.tags,
        before=body.before,
        scope=body.scope,
        context=context,
    )
    return _done(request, "forget", result.to_dict())
