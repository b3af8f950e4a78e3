"""``/live``, ``/health``, ``/health/ingest`` and ``/metrics`` (exempt from auth and rate limits)."""

from __future__ import annotations

import asyncio
import logging

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
    if not is_admin(request):
        for component in body.get("components", []):
            component["detail"] = None if not component.get("healthy") else component.get("detail")
    return json_response(body, 200 if report.healthy else 503)


@router.get("/health/ingest", summary="Ingest sources: 503 when a required source is unhealthy")
async def health_ingest(request: Request) -> Response:
    supervisor = runtime_of(request).supervisor
    # Error text can hold internals (hosts, driver messages): only admins see it.
    status, body = ingest_health_view(
        supervisor.health() if supervisor is not None else None, include_errors=is_admin(request)
    )
    return json_response(body, status)


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    runtime = runtime_of(request)
    body = runtime.metrics.render()  # ingest metrics share this registry
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
