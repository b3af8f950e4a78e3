"""The app factory: it only wires settings, middleware, routers and the lifespan together."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from astrocyte_gateway import __version__
from astrocyte_gateway.auth import build_authenticator
from astrocyte_gateway.docs_ui import install_docs
from astrocyte_gateway.engine import build_engine, check_access_control
from astrocyte_gateway.errors import install_error_handlers
from astrocyte_gateway.ingest_runtime import start_ingest
from astrocyte_gateway.limiter import build_client_limiter
from astrocyte_gateway.metrics import GatewayMetrics, serve_metrics
from astrocyte_gateway.middleware.access_log import AccessLogMiddleware
from astrocyte_gateway.middleware.body_limit import BodyLimitMiddleware
from astrocyte_gateway.middleware.client_ip import ClientIpMiddleware
from astrocyte_gateway.middleware.cors import CorsMiddleware
from astrocyte_gateway.middleware.rate_limit import RateLimitMiddleware
from astrocyte_gateway.middleware.request_guard import RequestGuardMiddleware
from astrocyte_gateway.middleware.request_id import RequestIdMiddleware
from astrocyte_gateway.openapi import install_openapi
from astrocyte_gateway.routers import admin, banks, ingest, memory, probes
from astrocyte_gateway.runtime import GatewayRuntime
from astrocyte_gateway.settings import Settings

_FASTAPI_HAS_TELEMETRY = "telemetry" in inspect.signature(FastAPI).parameters


def create_app(settings: Settings | None = None, brain: Any | None = None) -> FastAPI:
    """Build the gateway. ``brain``: an ``Astrocyte`` the caller opens and closes itself; without
    one, the lifespan builds it from ``ASTROCYTE_CONFIG_PATH`` (or the embedded default) and owns it."""
    settings = settings or Settings.from_env()
    runtime = GatewayRuntime(
        settings=settings,
        metrics=GatewayMetrics(),
        authenticator=build_authenticator(settings),
        limiter=build_client_limiter(settings),
        brain=brain,
    )
    app = FastAPI(
        title="Astrocyte gateway",
        version=__version__,
        description="Long-term memory for AI agents over HTTP: retain, recall, reflect, forget.",
        lifespan=_lifespan(runtime, owns_brain=brain is None),
        docs_url=None,
        redoc_url=None,
        # No trailing-slash redirects: Starlette builds their Location from the client's Host.
        redirect_slashes=False,
        **_framework_telemetry(settings),
    )
    app.state.gateway = runtime
    install_error_handlers(app)
    memory.install(app)  # the hot routes: on the app's own router, matched first
    for module in (banks, ingest, admin, probes):
        app.include_router(module.router)
    install_docs(app)
    install_openapi(app)
    _add_middleware(app, runtime)
    return app


def _framework_telemetry(settings: Settings) -> dict[str, Any]:
    """FastAPI's own OpenTelemetry hooks (FastAPI >= 0.165) follow ``ASTROCYTE_OTEL_ENABLED``, like the
    gateway's tracing: left at FastAPI's defaults they look up the global providers on every request
    (measured: ~4 µs per request with nothing configured) and would trace as soon as any library in
    the process installs a provider."""
    if not _FASTAPI_HAS_TELEMETRY:
        return {}
    enabled = settings.otel_enabled
    return {"telemetry": {"tracing": enabled, "metrics": enabled, "logs": enabled}}


def _add_middleware(app: FastAPI, runtime: GatewayRuntime) -> None:
    # Added innermost first: the last one added runs first on the way in.
    settings = runtime.settings
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_body_bytes)
    if runtime.limiter is not None and settings.rate_limit_per_second:
        app.add_middleware(
            RateLimitMiddleware,
            limiter=runtime.limiter,
            per_second=settings.rate_limit_per_second,
            burst=settings.rate_limit_burst,
        )
    app.add_middleware(
        RequestGuardMiddleware,
        max_header_bytes=settings.max_header_bytes,
        max_credential_bytes=settings.max_credential_bytes,
        allowed_hosts=settings.allowed_hosts,
        allowed_origins=settings.cors_origins,
    )
    app.add_middleware(ClientIpMiddleware, trusted_proxies=settings.trusted_proxies)
    if settings.cors_origins:  # outside the guard: it answers preflights in its own words
        app.add_middleware(CorsMiddleware, origins=settings.cors_origins)
    app.add_middleware(AccessLogMiddleware, metrics=runtime.metrics, enabled=settings.access_log)
    if settings.otel_enabled:
        from astrocyte_gateway.middleware.tracing import TracingMiddleware

        app.add_middleware(TracingMiddleware)
    app.add_middleware(RequestIdMiddleware)


def _lifespan(runtime: GatewayRuntime, owns_brain: bool) -> Any:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            stack.push_async_callback(runtime.authenticator.close)
            if runtime.limiter is not None:
                await runtime.limiter.open()
                stack.push_async_callback(runtime.limiter.close)
            brain: Any = build_engine(runtime.settings) if owns_brain else runtime.brain
            check_access_control(runtime.settings, brain.config)  # before anything is opened
            if owns_brain:
                await stack.enter_async_context(brain)
                runtime.brain = brain
                stack.callback(setattr, runtime, "brain", None)
            await start_ingest(runtime, stack)
            if runtime.settings.metrics_port is not None:
                stack.callback(serve_metrics(runtime))
            yield

    return lifespan
