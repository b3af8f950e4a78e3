"""The per-source health view behind ``/health/ingest``, and the ``astrocyte-ingest`` worker's probes.

One implementation of the view and its 503 rule, used by the gateway's ``/health/ingest`` and by
the worker's ``/health``: the body is :meth:`IngestHealth.to_dict` (error text and details only for
admins), the status 503 while a ``required`` source is not ``running``, 200 otherwise.

The worker serves, on its metrics port: ``/live`` (the process answers; touches nothing),
``/health`` and ``/health/ingest`` (the view above) and ``/metrics`` (Prometheus). The server runs in
a thread; the health snapshot is taken on the event loop, so it never races the supervisor.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app

from astrocyte.ingest.supervisor import IngestHealth, IngestSupervisor

log = logging.getLogger("astrocyte.ingest.probes")

ADMIN_HEADER = "X-Admin-Token"
SNAPSHOT_TIMEOUT_SECONDS = 5.0


def ingest_health_view(health: IngestHealth | None, *, include_errors: bool) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of ``/health/ingest``: 503 while a required source is unhealthy.

    ``health`` None (no sources configured) reads ready with no sources. Error text can hold
    internals (hosts, driver messages), so ``include_errors`` should be true only for admins."""
    if health is None:
        return 200, {"ready": True, "sources": {}}
    return (200 if health.ready else 503), health.to_dict(include_errors=include_errors)


def is_admin_token(expected: str | None, presented: str | None) -> bool:
    """True when an admin token is configured and ``presented`` matches it (constant time)."""
    return bool(expected and presented and hmac.compare_digest(expected.encode(), presented.encode()))


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes arrive every few seconds: no access log line for each."""


class WorkerProbes:
    """The worker's HTTP server: ``/live``, ``/health``, ``/health/ingest``, ``/metrics``.

    ``admin_token`` (the worker reads ``ASTROCYTE_ADMIN_TOKEN``) shows error text and details to a
    request carrying it in ``X-Admin-Token``, as the gateway does."""

    def __init__(
        self,
        supervisor: IngestSupervisor,
        loop: asyncio.AbstractEventLoop,
        *,
        admin_token: str | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._supervisor = supervisor
        self._loop = loop
        self._admin_token = admin_token
        self._metrics_app = make_wsgi_app(registry if registry is not None else REGISTRY)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    def start(self, host: str, port: int) -> None:
        """Bind and serve in a daemon thread (raises OSError when the port is taken)."""
        self._server = make_server(host, port, self._app, server_class=_Server, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="ingest-probes", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _json(start_response, 405, {"detail": "only GET", "code": "method_not_allowed"})
        if path == "/live":
            return _json(start_response, 200, {"status": "ok"})
        if path in ("/health", "/health/ingest"):
            admin = is_admin_token(self._admin_token, environ.get("HTTP_X_ADMIN_TOKEN"))
            status, body = self._health(include_errors=admin)
            return _json(start_response, status, body)
        if path == "/metrics":
            result: Iterable[bytes] = self._metrics_app(environ, start_response)
            return result
        return _json(start_response, 404, {"detail": f"no route {path}", "code": "not_found"})

    def _health(self, *, include_errors: bool) -> tuple[int, dict[str, Any]]:
        async def snapshot() -> IngestHealth:
            return self._supervisor.health()

        try:
            future = asyncio.run_coroutine_threadsafe(snapshot(), self._loop)
            health = future.result(timeout=SNAPSHOT_TIMEOUT_SECONDS)
        except Exception as exc:  # a stuck or closed loop: not ready, and say so
            log.warning("ingest health snapshot failed: %s", type(exc).__name__)
            return 503, {"ready": False, "sources": {}, "detail": "the worker did not answer in time"}
        return ingest_health_view(health, include_errors=include_errors)


_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


def _json(start_response: Callable[..., Any], status: int, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        f"{status} {_REASONS[status]}",
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [data]
