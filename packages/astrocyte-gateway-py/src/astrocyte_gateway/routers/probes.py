"""``/live``, ``/health``, ``/health/ingest`` and ``/metrics`` (exempt from rate limits; ``/metrics`` asks
for the admin token outside dev mode unless ``ASTROCYTE_METRICS_ACCESS=open``)."""

from __future__ import annotations

import asyncio
import logging

from astrocyte.errors import AccessDeniedError
from astrocyte.ingest.probes import ingest_health_view  # the worker's /health shares the view
from fastapi import APIRouter, Request, Response

from astrocyte_gateway.deps import is_admin, json_response, runtime_of

log = logging.getLogger("astrocyte_gateway.probes")
router = APIRouter(tags=["probes"])
HEALTH_TIMEOUT_SECONDS = 5.0


@router.get("/live", summary="Liveness: the process answers (touches no dependency)")
async def live() -> Response:
    return json_response({"status": "ok"})


@router.get("/health", summary="Readiness: 503 when the store, embedder or LLM is down")
async def health(request: Request) -> Response:
    brain = runtime_of(request).brain
    if brain is None:
        return json_response({"healthy": False, "components": [], "detail": "engine not open"}, 503)
    try:
        report = await asyncio.wait_for(brain.health(), HEALTH_TIMEOUT_SECONDS)
    except Exception as exc:  # a probe must answer, whatever the dependency does
        log.warning("health check failed: %s", type(exc).__name__)
        return json_response({"healthy": False, "components": [], "detail": "health check failed"}, 503)
    body = report.to_dict()
    if not is_admin(request):  # details name paths and hosts: admins only
        for component in body.get("components", []):
            component["detail"] = None
    return json_response(body, 200 if report.healthy else 503)


@router.get("/health/ingest", summary="Ingest sources: 503 when a required source is unhealthy")
async def health_ingest(request: Request) -> Response:
    supervisor = runtime_of(request).supervisor
    # Error text can hold internals (hosts, driver messages): only admins see it.
    status, body = ingest_health_view(
        supervisor.health() if supervisor is not None else None, include_errors=is_admin(request)
    )
    return json_response(body, status)


@router.get("/metrics", summary="Prometheus metrics (the admin token unless ASTROCYTE_METRICS_ACCESS=open)")
async def metrics(request: Request) -> Response:
    runtime = runtime_of(request)
    if not runtime.settings.metrics_open and not is_admin(request, bearer=True):
        raise AccessDeniedError(
            "/metrics needs the admin token (X-Admin-Token or Authorization: Bearer); "
            "set ASTROCYTE_METRICS_ACCESS=open only on a private listener",
            code="metrics_token_required",
        )
    body = runtime.metrics.render()  # ingest metrics share this registry
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
