"""``/v1/banks``: list the banks the caller may read, create one, read its stats, delete it."""

from __future__ import annotations

from typing import Annotated

from astrocyte.types import AstrocyteContext
from fastapi import APIRouter, Depends, Path, Request, Response

from astrocyte_gateway.deps import brain_of, caller, json_response
from astrocyte_gateway.schemas import (
    BankInfoResponse,
    BankListResponse,
    BankStatsResponse,
    CreateBankBody,
    ForgetResponse,
)

router = APIRouter(prefix="/v1/banks", tags=["banks"])
Caller = Annotated[AstrocyteContext, Depends(caller)]
BankId = Annotated[str, Path(min_length=1, max_length=255)]


@router.get("", response_model=BankListResponse, summary="Banks the caller may read")
async def list_banks(request: Request, context: Caller) -> Response:
    return json_response({"banks": await brain_of(request).list_banks(context=context)})


@router.post("", response_model=BankInfoResponse, status_code=201, summary="Create a bank")
async def create_bank(body: CreateBankBody, request: Request, context: Caller) -> Response:
    request.state.bank_id = body.bank_id
    info = await brain_of(request).create_bank(body.bank_id, context=context)
    return json_response(info, 201)


@router.get("/{bank_id}", response_model=BankStatsResponse, summary="A bank's statistics")
async def bank_stats(bank_id: BankId, request: Request, context: Caller) -> Response:
    request.state.bank_id = bank_id
    return json_response(await brain_of(request).bank_stats(bank_id, context=context))


@router.delete("/{bank_id}", response_model=ForgetResponse, summary="Delete a bank and its memories")
async def delete_bank(bank_id: BankId, request: Request, context: Caller) -> Response:
    request.state.bank_id = bank_id
    return json_response({"deleted_count": await brain_of(request).delete_bank(bank_id, context=context)})
