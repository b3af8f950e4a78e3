"""``/v1/admin/*`` behind ``X-Admin-Token``: ingest sources, every bank, the limiter's state."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response

from astrocyte_gateway.deps import brain_of, json_response, require_admin, runtime_of
from astrocyte_gateway.limiter import tracked_clients

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@router.get("/sources", summary="Every ingest source with its state and last error")
async def sources(request: Request) -> Response:
    supervisor = runtime_of(request).supervisor
    if supervisor is None:
        return json_response({"ready": True, "sources": {}})
    return json_response(supervisor.health().to_dict(include_errors=True))


@router.get("/banks", summary="Every bank with its statistics")
async def banks(request: Request) -> Response:
    # The operator holds the admin token, so this reads the store directly: bank grants are for
    # callers of the memory API, and an admin must see every bank even with access control on.
    store = brain_of(request).store
    return json_response({"banks": [await store.bank_stats(bank_id) for bank_id in await store.list_banks()]})


@router.get("/limiter", summary="The per-client rate limiter's configuration and state")
async def limiter(request: Request) -> Response:
    runtime = runtime_of(request)
    settings = runtime.settings
    state: dict[str, Any] = {
        "enabled": settings.rate_limit_per_second is not None,
        "backend": settings.rate_limit_backend,
        "per_second": settings.rate_limit_per_second,
        "burst": settings.rate_limit_burst,
        "max_clients": settings.rate_limit_max_clients,
    }
    if runtime.limiter is not None:
        state["tracked_clients"] = tracked_clients(runtime.limiter)
    return json_response(state)
